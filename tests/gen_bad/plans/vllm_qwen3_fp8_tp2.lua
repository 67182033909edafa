return plan { name = "vllm_qwen3_fp8_tp2", model = "vllm_qwen3", trainer = { fsdp = 2 }, inference = { tp = 2, replicas = 1 }, engine = { name = "vllm", version = "0.33" }, quant = { fp8 = true } }
