-- GLM-5 block FP8 from a Megatron-core mesh of 128 GPUs (TP4 x PP8 x DP4; EP16 with expert TP 1, the
-- Transformer Engine spec) into 4 replicas of vLLM TP8/EP8 (32 inference GPUs): every Megatron rank
-- sends its own shards, nothing is gathered. 78 layers over 8 stages: 9 on the first and last, 10 on
-- each other. Compare with glm5_fp8_64x4 (FSDP2, 64 ranks). Like it, the trainer holds no MTP layer.
return plan {
  name = "megatron_glm5_fp8_128x4", model = "glm5",
  trainer = { megatron = { tp = 4, pp = 8, ep = 16, etp = 1, spec = "te", first_stage_layers = 9,
    last_stage_layers = 9 }, dtype = "fp32", mtp = false },
  inference = { tp = 8, ep = 8, replicas = 4 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
