return plan { name = "sglang_cpu_tp2", model = "vllm_qwen3", trainer = { fsdp = 2 }, inference = { tp = 2, replicas = 1 }, engine = { name = "sglang", version = "0.5.23", device = "cpu" } }
