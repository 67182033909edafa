return plan {
  name = "mg_fp8_block", model = "dsv3_tiny",
  trainer = { megatron = { tp = 2 } },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
}
