-- Conformance: the destinations of each rank must equal vLLM 0.33's parameters on SM100 (B200,
-- --moe-backend deep_gemm) for tests/vllm/configs/qwen3moe-fp8 at TP1
-- (tests/vllm/dumps/qwen3moe_fp8_tp1_sm100_deepgemm, tests/test_conformance.sh): the linears' and the
-- experts' scales packed into UE8M0 int32 by finalize steps, one group per local expert
-- (tests/vllm/SM100.md section 2).
return plan {
  name = "vllm_qwen3moe_fp8_tp1_sm100_deepgemm", model = "vllm_qwen3moe",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", sm = 100, moe_backend = "deep_gemm" },
  quant = { fp8 = true, scale_fmt = "ue8m0" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
