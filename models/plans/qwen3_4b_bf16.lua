-- Qwen3-4B bf16 from 8 trainer ranks into 8 TP1 replicas.
-- Trainer: FSDP2 with fp32 master weights (cast to bf16 on the way).
return plan {
  name = "qwen3_4b_bf16", model = "qwen3_4b",
  trainer = { fsdp = 8, dtype = "fp32" },
  inference = { tp = 1, replicas = 8 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  delta = { budget = 0.125 },
}
