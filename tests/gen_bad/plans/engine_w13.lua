return plan { name = "engine_w13", model = "qwen3_moe_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33", w13 = "gate" } }
