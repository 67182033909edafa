return plan { name = "engine_name", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "trtllm", version = "1.2" } }
