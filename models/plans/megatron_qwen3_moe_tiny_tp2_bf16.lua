-- Megatron TP2 with bf16 parameters (norms stay fp32: WrappedTorchNorm) into one vLLM TP2 replica.
-- Trainer: Megatron-core (mg_qwen3_moe_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_moe_tiny_tp2_bf16", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { tp = 2 }, dtype = "bf16" },
  inference = { tp = 2, ep = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
