return plan { engine = { name = "vllm", version = "0.33" }, name = "bad_ep", model = "glm_tiny", trainer = { fsdp = 4 }, inference = { tp = 2, ep = 3, replicas = 1 } }
