-- Megatron TP2 x PP2 into one vLLM TP2 replica.
-- Trainer: Megatron-core (mg_qwen3_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_tiny_tp2_pp2", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 2, pp = 2 } },
  inference = { tp = 2, ep = 1, replicas = 1 },
  delta = { budget = 0.125 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
