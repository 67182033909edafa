return plan { engine = { name = "vllm", version = "0.33" }, name = "delta_budget", model = "glm_tiny", trainer = { fsdp = 4 },
  inference = { tp = 2, replicas = 1 },
  delta = { budget = 1.5 } }
