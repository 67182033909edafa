-- Qwen3-30B-A3B block FP8 from 16 trainer ranks into 2 replicas of TP4/EP4.
-- Trainer: FSDP2 over transformers >= 5 with fp32 master weights (fused 3-D experts).
return plan {
  name = "qwen3_30b_a3b_fp8_ep4", model = "qwen3_30b_a3b",
  trainer = { fsdp = 16, dtype = "fp32", experts = "fused" },
  inference = { tp = 4, ep = 4, replicas = 2 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true, exclude = { "mlp%.gate%.weight$" } }, -- the FP8 release keeps the router bf16
  delta = { budget = 0.125 },
}
