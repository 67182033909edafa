-- Conformance: the destinations of each rank must equal vLLM 0.33's parameters for
-- tests/vllm/configs/qwen3 at TP1 (tests/test_conformance.sh).
return plan {
  name = "vllm_qwen3_bf16_tp1", model = "vllm_qwen3",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
