-- A misspelt top-level key: generated with the default 2 MiB before keys were checked.
return plan { name = "key_gather_bellow", model = "qwen3_tiny",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  gather_bellow = 64 * 1024 }
