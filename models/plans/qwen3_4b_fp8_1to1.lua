-- Qwen3-4B block FP8, one trainer into one TP1 receiver: the GPU benchmark's quantize-and-send shape
-- (every weight quantized on the trainer GPU, group by group, while earlier groups travel).
-- Trainer: bf16 parameters, the input the kernel benchmark compares against.
return plan {
  name = "qwen3_4b_fp8_1to1", model = "qwen3_4b",
  trainer = { fsdp = 1, dtype = "bf16" },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
