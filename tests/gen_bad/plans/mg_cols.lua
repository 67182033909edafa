return plan {
  name = "mg_cols", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 2 } },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
