-- Conformance: the destinations of each rank must equal vLLM 0.33's parameters on SM100 (B200,
-- --moe-backend triton) for tests/vllm/configs/dsv3-fp8 at TP1 (tests/vllm/dumps/dsv3_fp8_tp1_mtp_sm100,
-- tests/test_conformance.sh): each DeepGEMM linear's scales packed into UE8M0 int32 by a finalize step
-- (tests/vllm/SM100.md); power-of-two scales from the trainer, as vLLM re-quantizes on SM100.
return plan {
  name = "vllm_dsv3_fp8_tp1_sm100", model = "vllm_dsv3",
  trainer = { fsdp = 2, mtp = true }, -- a trainer with the MTP layer: the drafter is written too
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", sm = 100 },
  quant = { fp8 = true, scale_fmt = "ue8m0" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
