-- a finalize step that is neither the engine's code nor a kernel refit has
return plan {
  name = "finalize_step", model = "qwen3_tiny",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", finalize = {
    { "mlp%.down_proj%.weight$", "marlin_repack" },
  } },
}
