-- A misspelt key inside a section: generated one replica, ignoring replicat, before keys were checked.
return plan { name = "key_replicat", model = "qwen3_tiny",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1,
    replicat = 2 },
  engine = { name = "vllm", version = "0.33" } }
