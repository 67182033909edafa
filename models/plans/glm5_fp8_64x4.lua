-- GLM-5 block FP8 from 64 FSDP trainer ranks into 4 replicas of TP8/EP8 (32 inference GPUs).
-- Trainer: FSDP2 over transformers >= 5 with fp32 master weights (fused 3-D experts; transformers
-- does not load the MTP layer 78, so the engine's drafter keeps its weights).
return plan {
  name = "glm5_fp8_64x4", model = "glm5",
  trainer = { fsdp = 64, dtype = "fp32", experts = "fused", mtp = false },
  inference = { tp = 8, ep = 8, replicas = 4 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
