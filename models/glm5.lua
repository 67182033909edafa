-- GLM-5 (GlmMoeDsaForCausalLM), shapes from its published config.json (../shared/MODELS.md 1-2).
return model {
  name = "glm5", family = "glm_moe_dsa",
  hidden = 6144,
  layers = 78, mtp_layers = 1,      -- the MTP layer is stored as model.layers.78
  first_dense = 3,                  -- layers 0-2 dense, then MoE
  heads = 64,
  q_lora_rank = 2048, kv_lora_rank = 512,
  qk_nope_head_dim = 192, qk_rope_head_dim = 64, v_head_dim = 256,
  index_heads = 32, index_head_dim = 128,
  experts = 256, shared_experts = 1, experts_per_token = 8,
  moe_intermediate = 2048, intermediate = 12288,
  vocab = 154880,
}
