return plan { name = "trainer_unknown", model = "glm_tiny", inference = { tp = 2, replicas = 1 },
  trainer = { fsdp = 4, mpt = false } }
