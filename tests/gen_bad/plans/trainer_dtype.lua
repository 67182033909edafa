return plan { name = "trainer_dtype", model = "glm_tiny", inference = { tp = 2, replicas = 1 },
  trainer = { fsdp = 4, dtype = "fp16" } }
