-- vllm_qwen3moe_fp8_tp1_sm100_deepgemm with a checkpoint's fp32 block scales: the linears and the
-- experts (--moe-backend deep_gemm) are cast as vLLM re-quantizes them on SM100 (RF_OP_FP8_REQUANT),
-- their scales packed by finalize steps. Conformance: tests/vllm/dumps/qwen3moe_fp8_tp1_sm100_deepgemm.
return plan {
  name = "vllm_qwen3moe_fp8_tp1_sm100_deepgemm_requant", model = "vllm_qwen3moe",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", sm = 100, moe_backend = "deep_gemm" },
  quant = { fp8 = true, scale_fmt = "fp32" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 }, -- delta pushes too: the requant cast on the trainer keeps them byte-exact
}
