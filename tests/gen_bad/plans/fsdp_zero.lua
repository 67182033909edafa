return plan { name = "fsdp_zero", model = "glm_tiny", trainer = { fsdp = 0 }, inference = { tp = 2, replicas = 1 } }
