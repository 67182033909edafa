-- a finalize step whose pattern names no destination tensor (a misspelt name)
return plan {
  name = "finalize_missing", model = "qwen3_tiny",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", finalize = {
    { "mlp%.down_prj%.weight$", "engine", "repack" },
  } },
}
