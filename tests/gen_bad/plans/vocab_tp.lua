return plan { name = "vocab_tp", model = "glm_tiny", trainer = { fsdp = 4 }, inference = { tp = 3, replicas = 1 } }
