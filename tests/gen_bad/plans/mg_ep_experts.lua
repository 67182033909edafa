return plan {
  name = "mg_ep_experts", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { ep = 3 } },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
