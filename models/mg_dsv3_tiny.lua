-- The MLA model of the Megatron-core dumps (tests/megatron/dumps mla_*): DeepSeek-V3-shaped, layer 0
-- dense (ffn 512), layer 1 MoE (4 experts of 128, one shared expert of 128, sigmoid router with an
-- expert bias), one MTP layer.
return model {
  name = "mg_dsv3_tiny", family = "deepseek_v3",
  hidden = 256, layers = 2, mtp_layers = 1, first_dense = 1, heads = 4,
  q_lora_rank = 96, kv_lora_rank = 64, qk_nope_head_dim = 32, qk_rope_head_dim = 16, v_head_dim = 32,
  experts = 4, shared_experts = 1, experts_per_token = 2, moe_intermediate = 128, intermediate = 512,
  vocab = 1024,
}
