return plan {
  name = "mg_vpp", model = "mg_qwen3_tiny",
  trainer = { megatron = { pp = 2, vpp = 2 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
