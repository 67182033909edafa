-- vllm_dsv3_fp8_tp1_sm100 with a checkpoint's fp32 block scales: every DeepGEMM linear (kv_b_proj
-- included, so MLA's W_UK_T / W_UV come from its re-quantized values, as in vLLM) is cast as vLLM
-- re-quantizes it on SM100 (RF_OP_FP8_REQUANT); the routed experts (--moe-backend triton) keep fp32
-- scales. Conformance: tests/vllm/dumps/dsv3_fp8_tp1_mtp_sm100.
return plan {
  name = "vllm_dsv3_fp8_tp1_sm100_requant", model = "vllm_dsv3",
  trainer = { fsdp = 2, mtp = true },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", sm = 100 },
  quant = { fp8 = true, scale_fmt = "fp32" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
}
