return plan {
  name = "mg_dp_grid", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { tp = 2, ep = 2, dp = 1 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
