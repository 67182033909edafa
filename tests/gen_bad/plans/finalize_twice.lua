-- two finalize steps for one tensor
return plan {
  name = "finalize_twice", model = "qwen3_tiny",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", finalize = {
    { "down_proj%.weight$", "engine" },
    { "mlp%.down_proj", "engine" },
  } },
}
