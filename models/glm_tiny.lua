-- A GLM-5-shaped model small enough to move in milliseconds: one dense and two MoE layers, an MTP
-- layer, the DSA indexer, a shared expert, and a fused_qkv_a_proj of 256 + 192 rows whose last
-- 128-row FP8 block is partial.
return model {
  name = "glm_tiny", family = "glm_moe_dsa",
  hidden = 256,
  layers = 3, mtp_layers = 1,
  first_dense = 1,
  heads = 4,
  q_lora_rank = 256, kv_lora_rank = 128,
  qk_nope_head_dim = 64, qk_rope_head_dim = 64, v_head_dim = 64,
  index_heads = 4, index_head_dim = 128,
  experts = 8, shared_experts = 1, experts_per_token = 2,
  moe_intermediate = 256, intermediate = 512,
  vocab = 1024,
}
