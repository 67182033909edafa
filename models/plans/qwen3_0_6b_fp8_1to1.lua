-- Qwen3-0.6B block FP8 from bf16 trainer weights, one trainer into one engine: dense against delta
-- pushes in one benchmark run (bench/bench_delta.c), host and GPU.
return plan {
  name = "qwen3_0_6b_fp8_1to1", model = "qwen3_0_6b",
  trainer = { fsdp = 1, dtype = "bf16" },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
