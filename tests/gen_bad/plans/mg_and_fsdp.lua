return plan {
  name = "mg_and_fsdp", model = "mg_qwen3_tiny",
  trainer = { fsdp = 2, megatron = { tp = 2 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
