return plan { name = "engine_version", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = ">=0.32,<0.34" } }
