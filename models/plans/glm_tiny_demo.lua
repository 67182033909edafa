-- The demo plan: 4 trainer ranks (FSDP) into 2 replicas of TP2/EP2, block FP8.
-- Trainer: bf16 parameters, fused experts, and the MTP layer (a trainer on modeling code that keeps
-- it), so the demo and the loopback tests cover the drafter's tensors and bf16 direct writes.
return plan {
  name = "glm_tiny_demo", model = "glm_tiny",
  trainer = { fsdp = 4, dtype = "bf16", experts = "fused", mtp = true },
  inference = { tp = 2, ep = 2, replicas = 2 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
