-- DeepSeek-V3 has no DSA indexer: its family reads no index_heads, so setting it is an error.
return model {
  name = "dsv3_index_heads", family = "deepseek_v3",
  hidden = 256, layers = 3, mtp_layers = 1, first_dense = 1, heads = 4,
  q_lora_rank = 256, kv_lora_rank = 512,
  qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128,
  index_heads = 4,
  experts = 4, shared_experts = 1, experts_per_token = 2,
  moe_intermediate = 256, intermediate = 512,
  vocab = 1024,
}
