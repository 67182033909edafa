return plan { engine = { name = "vllm", version = "0.33" }, name = "tp_heads", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 8, replicas = 1 } }
