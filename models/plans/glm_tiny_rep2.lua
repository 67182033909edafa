-- HSDP: 2 replicate groups of 2 FSDP shards; each group feeds one replica. UE8M0 scales.
-- Trainer: FSDP2 over transformers >= 5 with fp32 masters, fused experts, no MTP layer.
return plan {
  name = "glm_tiny_rep2", model = "glm_tiny",
  trainer = { fsdp = 2, dp_replicate = 2, dtype = "fp32", experts = "fused", mtp = false },
  inference = { tp = 2, ep = 2, replicas = 2 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true, scale_fmt = "ue8m0" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
