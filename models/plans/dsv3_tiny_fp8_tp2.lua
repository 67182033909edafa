-- DeepSeek-V3 (tiny) as an FSDP2 trainer over transformers >= 5 holds it: fp32 master weights, fused
-- 3-D experts, no MTP layer (transformers does not load it: the engine's drafter keeps its layer's
-- weights, its embed_tokens and heads are the target's). One TP2 replica, experts split by TP, block FP8.
return plan {
  name = "dsv3_tiny_fp8_tp2", model = "dsv3_tiny",
  trainer = { fsdp = 2, dtype = "fp32", experts = "fused" },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
