-- Kimi-K2 (DeepSeek-V3 architecture): 1 dense + 60 MoE layers, 384 routed + 1 shared experts.
-- qk/v head dims and the dense intermediate size are DeepSeek-V3's; no MTP layer is shipped.
return model {
  name = "kimi_k2", family = "deepseek_v3",
  hidden = 7168,
  layers = 61, mtp_layers = 0,
  first_dense = 1,
  heads = 64,
  q_lora_rank = 1536, kv_lora_rank = 512,
  qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128,
  experts = 384, shared_experts = 1, experts_per_token = 8,
  moe_intermediate = 2048, intermediate = 18432,
  vocab = 163840,
}
