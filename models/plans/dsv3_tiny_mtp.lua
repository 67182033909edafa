-- DeepSeek-V3 (tiny, from the config of the vLLM dumps) with its MTP layer 3: the trainer holds its own
-- embed_tokens and shared_head.head, which vLLM's drafter shares with the target (nothing written from them). Trainer: bf16 per-expert modules
-- (transformers 4.x style, or a trainer on modeling code that keeps the MTP layer): with 2 shards
-- of 128 rows every expert goes shard by shard. One TP2/EP2 replica, block FP8.
return plan {
  name = "dsv3_tiny_mtp", model = "dsv3_tiny",
  trainer = { fsdp = 2, dtype = "bf16", experts = "per_expert", mtp = true },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  inference = { tp = 2, ep = 2, replicas = 1 },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
