-- A Qwen3-MoE-shaped model for tests.
return model {
  name = "qwen3_moe_tiny", family = "qwen3_moe",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 128,
  experts = 8, experts_per_token = 2, moe_intermediate = 128,
  vocab = 1024, tie_word_embeddings = false,
}
