-- GLM-5 block FP8 from a Megatron-core mesh of 80 GPUs (TP4 x PP5 x DP4; EP16 with expert TP 1, the
-- Transformer Engine spec) into 4 replicas of vLLM TP8/EP8. The stages hold 15 MoE layers each (the
-- first also the 3 dense layers: 18 + 3 x 15 + 15 = 78), so every rank sends about the same bytes;
-- with PP8 (megatron_glm5_fp8_128x4) 75 MoE layers cannot split evenly over 8 stages.
return plan {
  name = "megatron_glm5_fp8_80x4", model = "glm5",
  trainer = { megatron = { tp = 4, pp = 5, ep = 16, etp = 1, spec = "te", first_stage_layers = 18,
    last_stage_layers = 15 }, dtype = "fp32", mtp = false },
  inference = { tp = 8, ep = 8, replicas = 4 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
