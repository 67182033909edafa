return plan { name = "up_gate", model = "qwen3_moe_tiny", trainer = { fsdp = 2 }, inference = { tp = 2, replicas = 1 }, engine = { name = "vllm", version = "0.33", w13 = "up_gate" } }
