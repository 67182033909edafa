-- Megatron TP2 x EP2 (etp 2) into one vLLM TP2 replica (experts split by TP).
-- Trainer: Megatron-core (mg_qwen3_moe_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_moe_tiny_tp2_ep2", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { tp = 2, ep = 2 } },
  inference = { tp = 2, ep = 1, replicas = 1 },
  delta = { budget = 0.125 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
