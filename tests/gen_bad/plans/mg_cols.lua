return plan {
  name = "mg_cols", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { tp = 4, ep = 1 } },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true, exclude = { "qkv_proj" } },
}
