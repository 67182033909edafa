return plan {
  name = "mg_key", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 2, ppp = 2 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
