-- Qwen3-0.6B bf16, one trainer into one engine: dense against delta pushes in one benchmark run
-- (bench/bench_delta.c), host and GPU.
return plan {
  name = "qwen3_0_6b_bf16_1to1", model = "qwen3_0_6b",
  trainer = { fsdp = 1, dtype = "bf16" },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  delta = { budget = 0.125 },
}
