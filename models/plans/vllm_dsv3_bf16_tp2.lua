-- Conformance: the destinations of each rank must equal vLLM 0.33's parameters for
-- tests/vllm/configs/dsv3 at TP2 (tests/test_conformance.sh).
return plan {
  name = "vllm_dsv3_bf16_tp2", model = "vllm_dsv3",
  trainer = { fsdp = 2, mtp = true }, -- a trainer with the MTP layer: the drafter is written too
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
