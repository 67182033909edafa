return plan { name = "trainer_mtp", model = "glm_tiny", trainer = { fsdp = 4, mtp = "no" }, inference = { tp = 2, replicas = 1 } }
