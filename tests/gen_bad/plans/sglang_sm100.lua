return plan { name = "sglang_sm100", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 },
  engine = { name = "sglang", version = "0.5.23", sm = 100 }, quant = { fp8 = true, scale_fmt = "ue8m0" } }
