-- Conformance: the destinations of each rank must equal vLLM 0.33's parameters for
-- tests/vllm/configs/qwen3moe at TP2 (tests/test_conformance.sh).
return plan {
  name = "vllm_qwen3moe_bf16_tp2", model = "vllm_qwen3moe",
  trainer = { fsdp = 2 },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
