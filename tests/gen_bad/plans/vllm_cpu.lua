return plan { name = "vllm_cpu", model = "vllm_qwen3", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33", device = "cpu" } }
