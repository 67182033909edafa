-- Kimi-K2 block FP8 from 256 FSDP trainer ranks into 8 replicas of TP16/EP16 (128 inference GPUs),
-- the shape of the published 1.3 s update, whose trainer held bf16 parameters (fused experts;
-- Kimi-K2 ships no MTP layer).
return plan {
  name = "kimi_k2_fp8_256x8", model = "kimi_k2",
  trainer = { fsdp = 256, dtype = "bf16", experts = "fused", mtp = false },
  inference = { tp = 16, ep = 16, replicas = 8 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
  delta = { budget = 0.125 },
}
