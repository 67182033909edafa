-- Per-expert modules (transformers 4.x), which FSDP2 shards row-wise across all ranks: with 2 shards
-- of 64 rows, gate/up_proj [128, 256] cut FP8 blocks and are gathered; down_proj [256, 128] goes
-- shard by shard. Trainer: fp32 master weights. One TP2/EP2 replica, block FP8.
return plan {
  name = "qwen3_moe_tiny_per_expert", model = "qwen3_moe_tiny",
  trainer = { fsdp = 2, dtype = "fp32", experts = "per_expert" },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  inference = { tp = 2, ep = 2, replicas = 1 },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
