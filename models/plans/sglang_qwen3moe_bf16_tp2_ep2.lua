-- Conformance: the destinations of each rank must equal SGLang 0.5.23's parameters for
-- tests/vllm/configs/qwen3moe at TP2, EP2 (tests/test_conformance.sh, tests/sglang/dumps).
return plan {
  name = "sglang_qwen3moe_bf16_tp2_ep2", model = "vllm_qwen3moe",
  trainer = { fsdp = 2 },
  inference = { tp = 2, ep = 2, replicas = 1 },
  engine = { name = "sglang", version = "0.5.23" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
