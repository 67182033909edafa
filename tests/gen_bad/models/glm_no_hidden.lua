return model {
  name = "glm_no_hidden", family = "glm_moe_dsa",
  layers = 3, mtp_layers = 1, first_dense = 1, heads = 4, q_lora_rank = 256, kv_lora_rank = 128,
  qk_nope_head_dim = 64, qk_rope_head_dim = 64, v_head_dim = 64, index_heads = 4, index_head_dim = 128,
  experts = 8, shared_experts = 1, moe_intermediate = 256, intermediate = 512, vocab = 1024,
}
