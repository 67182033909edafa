-- A Qwen3-MoE-shaped model whose router groups its experts (DeepSeek-V3's n_group), so that vLLM
-- honours round_robin expert placement for it.
return model {
  name = "qwen3_moe_grouped", family = "qwen3_moe",
  hidden = 256, layers = 1, heads = 4, kv_heads = 2, head_dim = 128,
  experts = 8, experts_per_token = 2, moe_intermediate = 128, expert_groups = 2,
  vocab = 1024, tie_word_embeddings = false,
}
