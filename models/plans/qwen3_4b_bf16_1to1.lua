-- Qwen3-4B bf16, one trainer into one TP1 receiver (the host-memory benchmark's simplest shape).
-- Trainer: bf16 parameters, so every tensor can be written straight from the source (direct writes).
return plan {
  name = "qwen3_4b_bf16_1to1", model = "qwen3_4b",
  trainer = { fsdp = 1, dtype = "bf16" },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  delta = { budget = 0.125 },
}
