-- bf16 end to end with fused experts: each shard's experts are contiguous rows of
-- mlp.experts.gate_up_proj / down_proj, so with ep 2 they can be written straight from the source.
-- Trainer: bf16 parameters with the router kept in fp32 (cast to the engine's bf16 on the way).
return plan {
  name = "qwen3_moe_tiny_bf16", model = "qwen3_moe_tiny",
  trainer = { fsdp = 2, dtype = "bf16", dtype_except = { { "%.mlp%.gate%.weight$", "fp32" } }, experts = "fused" },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  inference = { tp = 2, ep = 2, replicas = 1 },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
