return plan { name = "engine_sm", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33", sm = 120 } }
