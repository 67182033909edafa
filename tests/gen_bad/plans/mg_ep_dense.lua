return plan {
  name = "mg_ep_dense", model = "mg_qwen3_tiny",
  trainer = { megatron = { ep = 2 } },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
