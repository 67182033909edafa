-- MLA + MoE + MTP: Megatron TP2 x EP2 into one vLLM TP2 replica (the drafter too).
-- Trainer: Megatron-core (mg_dsv3_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_dsv3_tiny_tp2_ep2", model = "mg_dsv3_tiny",
  trainer = { megatron = { tp = 2, ep = 2 }, mtp = true },
  inference = { tp = 2, ep = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
