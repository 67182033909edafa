return plan { name = "trainer_except_shape", model = "glm_tiny", trainer = { fsdp = 4, dtype_except = { "norm" } },
  inference = { tp = 2, replicas = 1 } }
