-- A string where a list of patterns belongs: ipairs over a string sees no items, so nothing was excluded.
return plan { name = "key_exclude_type", model = "qwen3_tiny",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" },
  quant = { fp8 = true,
    exclude = "mlp" } }
