return plan { engine = { name = "vllm", version = "0.33" }, name = "missing_model_field", model = "glm_no_hidden", trainer = { fsdp = 4 },
  inference = { tp = 2, ep = 2, replicas = 1 } }
