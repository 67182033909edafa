return plan { engine = { name = "vllm", version = "0.33" }, name = "scale_fmt", model = "glm_tiny", trainer = { fsdp = 4 }, inference = { tp = 2, replicas = 1 },
  quant = { fp8 = true, scale_fmt = "e5m2" } }
