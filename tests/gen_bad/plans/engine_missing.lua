return plan { name = "engine_missing", model = "qwen3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 },  }
