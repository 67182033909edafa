return plan { engine = { name = "vllm", version = "0.33" }, name = "no_model", model = "glm6", trainer = { fsdp = 4 }, inference = { tp = 2, replicas = 1 } }
