-- Megatron PP2 x EP2 into one vLLM TP1 replica.
-- Trainer: Megatron-core (mg_qwen3_moe_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_moe_tiny_pp2_ep2", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { pp = 2, ep = 2 } },
  inference = { tp = 1, ep = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
