-- a finalize entry without its step
return plan {
  name = "finalize_shape", model = "qwen3_tiny",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", finalize = { "down_proj" } },
}
