return plan { name = "trainer_except_unused", model = "glm_tiny", inference = { tp = 2, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  trainer = { fsdp = 4, dtype = "bf16",
    dtype_except = { { "norm%.weight$", "fp32" }, { "lm_haed", "fp32" } } } }
