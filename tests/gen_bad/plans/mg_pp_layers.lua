return plan {
  name = "mg_pp_layers", model = "mg_qwen3_tiny",
  trainer = { megatron = { pp = 3 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
