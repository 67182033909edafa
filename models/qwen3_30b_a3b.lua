-- Qwen3-30B-A3B (../shared/MODELS.md 5): every layer MoE, 128 experts, no shared expert.
return model {
  name = "qwen3_30b_a3b", family = "qwen3_moe",
  hidden = 2048, layers = 48, heads = 32, kv_heads = 4, head_dim = 128,
  experts = 128, experts_per_token = 8, moe_intermediate = 768,
  vocab = 151936, tie_word_embeddings = false,
}
