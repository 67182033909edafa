-- A misspelt section: generated without FP8 before keys were checked.
return plan { name = "key_quant_", model = "qwen3_tiny",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  quant_ = { fp8 = true } }
