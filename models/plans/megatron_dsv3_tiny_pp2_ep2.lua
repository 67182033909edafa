-- MLA + MoE + MTP: Megatron PP2 x EP2 into one vLLM TP1 replica (the drafter too).
-- Trainer: Megatron-core (mg_dsv3_tiny's dump config, tests/megatron/dumps), every rank sending its own shards.
return plan {
  name = "megatron_dsv3_tiny_pp2_ep2", model = "mg_dsv3_tiny",
  trainer = { megatron = { pp = 2, ep = 2 }, mtp = true },
  inference = { tp = 1, ep = 1, replicas = 1 },
  delta = { budget = 0.125 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
