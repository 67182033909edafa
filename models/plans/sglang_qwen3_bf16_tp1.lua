-- Conformance: the destinations of each rank must equal SGLang 0.5.23's parameters for
-- tests/vllm/configs/qwen3 at TP1 (tests/test_conformance.sh, tests/sglang/dumps).
return plan {
  name = "sglang_qwen3_bf16_tp1", model = "vllm_qwen3",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "sglang", version = "0.5.23" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
