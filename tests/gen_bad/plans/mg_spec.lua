return plan {
  name = "mg_spec", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 2, spec = "transformer_engine" } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
