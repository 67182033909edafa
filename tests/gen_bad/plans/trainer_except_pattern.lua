return plan { name = "trainer_except_pattern", model = "glm_tiny", inference = { tp = 2, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  trainer = { fsdp = 4, dtype_except = { { "norm[", "fp32" } } } }
