-- the UE8M0 pack on a tensor that is not the fp32 scales of an fp8 weight
return plan {
  name = "finalize_ue8m0_bf16", model = "qwen3_tiny",
  trainer = { fsdp = 2 },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", finalize = {
    { "mlp%.down_proj%.weight$", "ue8m0_pack" },
  } },
}
