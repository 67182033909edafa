-- Megatron TP4 (2 query groups: a TP chunk holds q heads or a group's k and v) into one vLLM TP4 replica.
-- Trainer: Megatron-core (mg_qwen3_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_tiny_tp4", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 4 } },
  inference = { tp = 4, ep = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
