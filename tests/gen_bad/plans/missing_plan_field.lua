return plan { engine = { name = "vllm", version = "0.33" }, name = "missing_plan_field", model = "glm_tiny", trainer = { fsdp = 4 },
  inference = { ep = 2, replicas = 1 } }
