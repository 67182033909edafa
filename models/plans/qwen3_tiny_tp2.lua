-- bf16 dense model, 2 trainer ranks into 2 replicas of TP2.
-- Trainer: bf16 parameters, so unconverted tensors can be written straight from the sources (the
-- loopback tests count those direct writes).
return plan {
  name = "qwen3_tiny_tp2", model = "qwen3_tiny",
  trainer = { fsdp = 2, dtype = "bf16" },
  inference = { tp = 2, replicas = 2 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
