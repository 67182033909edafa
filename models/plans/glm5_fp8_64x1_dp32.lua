-- GLM-5 block FP8 from 64 FSDP trainer ranks into one 32-GPU replica with data-parallel attention
-- (tp 1 x 32) and experts spread over all 32 GPUs (ep 32): each GPU holds 8 experts per layer.
-- Trainer: FSDP2 over transformers >= 5 with fp32 master weights (fused 3-D experts; transformers
-- does not load the MTP layer 78, so the engine's drafter keeps its weights).
return plan {
  name = "glm5_fp8_64x1_dp32", model = "glm5",
  trainer = { fsdp = 64, dtype = "fp32", experts = "fused", mtp = false },
  inference = { tp = 1, ep = 32, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
