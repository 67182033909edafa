-- Conformance: the destinations of each rank must equal vLLM 0.33's parameters for
-- tests/vllm/configs/glm5-fp8 at TP1 (tests/test_conformance.sh).
return plan {
  name = "vllm_glm5_fp8_tp1", model = "vllm_glm5",
  trainer = { fsdp = 2, mtp = true }, -- a trainer with the MTP layer: the drafter is written too
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
