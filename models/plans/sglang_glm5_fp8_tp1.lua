-- Conformance: the destinations of each rank must equal SGLang 0.5.23's parameters for
-- tests/vllm/configs/glm5-fp8 at TP1 (tests/test_conformance.sh, tests/sglang/dumps).
return plan {
  name = "sglang_glm5_fp8_tp1", model = "vllm_glm5",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "sglang", version = "0.5.23", mtp = false },
  quant = { fp8 = true },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
