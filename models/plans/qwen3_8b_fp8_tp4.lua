-- Qwen3-8B block FP8 from 8 trainer ranks into 2 replicas of TP4.
-- Trainer: FSDP2 with fp32 master weights.
return plan {
  name = "qwen3_8b_fp8_tp4", model = "qwen3_8b",
  trainer = { fsdp = 8, dtype = "fp32" },
  inference = { tp = 4, replicas = 2 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
