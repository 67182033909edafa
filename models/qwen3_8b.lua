-- Qwen3-8B (../shared/MODELS.md 5).
return model {
  name = "qwen3_8b", family = "qwen3",
  hidden = 4096, layers = 36, heads = 32, kv_heads = 8, head_dim = 128,
  intermediate = 12288, vocab = 151936, tie_word_embeddings = false,
}
