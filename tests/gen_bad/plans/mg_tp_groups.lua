return plan {
  name = "mg_tp_groups", model = "mg_groups3",
  trainer = { megatron = { tp = 2 } },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
