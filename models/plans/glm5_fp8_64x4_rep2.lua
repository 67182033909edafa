-- As glm5_fp8_64x4 with HSDP: 2 replicate groups of 32 FSDP shards, each feeding 2 replicas.
-- Trainer: FSDP2 over transformers >= 5, fp32 masters, fused experts, no MTP layer (as glm5_fp8_64x4).
return plan {
  name = "glm5_fp8_64x4_rep2", model = "glm5",
  trainer = { fsdp = 32, dp_replicate = 2, dtype = "fp32", experts = "fused", mtp = false },
  inference = { tp = 8, ep = 8, replicas = 4 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
