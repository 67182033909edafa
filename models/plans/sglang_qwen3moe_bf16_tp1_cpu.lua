-- SGLang 0.5.23's CPU platform (engine.device = "cpu": SGLANG_USE_CPU_ENGINE=1, a CPU without AMX) for
-- tests/vllm/configs/qwen3moe at TP1: the real-engine test (tests/test_sglang_engine.sh) loads a real engine
-- on the CPU, pushes through refit.sglang and compares tokens with a fresh load.
return plan {
  name = "sglang_qwen3moe_bf16_tp1_cpu", model = "vllm_qwen3moe",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "sglang", version = "0.5.23", device = "cpu" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
