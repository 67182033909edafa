return plan { engine = { name = "vllm", version = "0.33" }, name = "vocab_tp", model = "glm_tiny", trainer = { fsdp = 4 }, inference = { tp = 3, replicas = 1 } }
