return plan { name = "engine_sm100_trtllm", model = "qwen3_moe_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = "0.33", sm = 100, moe_backend = "flashinfer_trtllm" }, quant = { fp8 = true, scale_fmt = "ue8m0" } }
