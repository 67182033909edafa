-- Megatron TP2 x EP2 with etp 1 into one vLLM TP2/EP2 replica (whole experts).
-- Trainer: Megatron-core (mg_qwen3_moe_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_qwen3_moe_tiny_tp2_ep2_etp1", model = "mg_qwen3_moe_tiny",
  trainer = { megatron = { tp = 2, ep = 2, etp = 1, dp = 2 } }, -- dp 2: the dump's 4 ranks (expert dp 2)
  inference = { tp = 2, ep = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
