-- vllm_qwen3_fp8_tp1_sm100 with a checkpoint's fp32 block scales (scale_fmt "fp32"): vLLM on SM100
-- re-quantizes each DeepGEMM linear to power-of-two scales after loading, so the trainer casts those
-- weights the same way (op kind RF_OP_FP8_REQUANT) and the receiver packs the scales: the engine holds
-- a fresh load's bytes (tests/vllm/SM100.md). Conformance: tests/vllm/dumps/qwen3_fp8_tp1_sm100.
return plan {
  name = "vllm_qwen3_fp8_tp1_sm100_requant", model = "vllm_qwen3",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", sm = 100 },
  quant = { fp8 = true, scale_fmt = "fp32" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
