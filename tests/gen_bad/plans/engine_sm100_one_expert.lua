return plan { name = "engine_sm100_one_expert", model = "qwen3_moe_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, ep = 8, replicas = 1 },
  engine = { name = "vllm", version = "0.33", sm = 100, moe_backend = "deep_gemm" }, quant = { fp8 = true, scale_fmt = "ue8m0" } }
