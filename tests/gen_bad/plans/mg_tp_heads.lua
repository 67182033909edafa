return plan {
  name = "mg_tp_heads", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 8 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
