return plan { name = "sglang_version", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "sglang", version = ">=0.5.22,<0.5.24" } }
