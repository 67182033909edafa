return plan { engine = { name = "vllm", version = "0.33" }, name = "fsdp_zero", model = "glm_tiny", trainer = { fsdp = 0 }, inference = { tp = 2, replicas = 1 } }
