-- Finalize steps (DESIGN.md 5d) for the loopback tests (tests/test_finalize.c, tests/test_python.py):
-- block FP8 with UE8M0 scales, 2 trainer ranks into one replica of TP2. Each position packs its
-- qkv_proj scales for DeepGEMM (a refit kernel, kernels/refresh.h rfk_*_ue8m0_pack) and hands its
-- down_proj weights to the engine's own post-load code (the receiver's finalize hook).
return plan {
  name = "qwen3_tiny_finalize", model = "qwen3_tiny",
  trainer = { fsdp = 2, dtype = "bf16" },
  inference = { tp = 2, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34", finalize = {
    { "self_attn%.qkv_proj%.weight_scale_inv$", "ue8m0_pack" },
    { "mlp%.down_proj%.weight$", "engine", "test_post_load" },
  } },
  quant = { fp8 = true, scale_fmt = "ue8m0" },
  gather_below = 64 * 1024, shard_min_piece = 16 * 1024,
  delta = { budget = 0.125 },
}
