return plan { name = "no_model", model = "glm6", trainer = { fsdp = 4 }, inference = { tp = 2, replicas = 1 } }
