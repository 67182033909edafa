-- MoE with expert parallelism: 2 trainer ranks into one TP2/EP2 replica, block FP8.
-- Trainer: FSDP2 over transformers >= 5 with fp32 master weights (fused 3-D experts).
return plan {
  name = "qwen3_moe_tiny_ep2", model = "qwen3_moe_tiny",
  trainer = { fsdp = 2, dtype = "fp32", experts = "fused" },
  inference = { tp = 2, ep = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
