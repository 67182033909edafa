-- FP8 with TP4 over 2 KV heads: each KV head lands on two TP ranks.
-- Trainer: FSDP2 with fp32 master weights.
return plan {
  name = "qwen3_tiny_fp8_tp4", model = "qwen3_tiny",
  trainer = { fsdp = 4, dtype = "fp32" },
  inference = { tp = 4, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
