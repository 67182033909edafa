return plan {
  name = "mg_no_fsdp", model = "mg_qwen3_tiny",
  trainer = { dtype = "fp32" },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
