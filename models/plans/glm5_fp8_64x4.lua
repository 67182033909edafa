-- GLM-5 block FP8 from 64 FSDP trainer ranks into 4 replicas of TP8/EP8 (32 inference GPUs).
return plan {
  name = "glm5_fp8_64x4", model = "glm5",
  trainer = { fsdp = 64 },
  inference = { tp = 8, ep = 8, replicas = 4 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
}
