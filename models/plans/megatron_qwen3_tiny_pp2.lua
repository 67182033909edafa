-- Megatron PP2 into one vLLM TP1 replica.
-- Trainer: Megatron-core (mg_qwen3_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_tiny_pp2", model = "mg_qwen3_tiny",
  trainer = { megatron = { pp = 2 } },
  inference = { tp = 1, ep = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
