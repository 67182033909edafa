-- A size given as text.
return plan { name = "key_gather_type", model = "qwen3_tiny",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  gather_below = "64K" }
