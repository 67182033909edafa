-- Qwen3-4B (../shared/MODELS.md 5): tied embeddings, so the checkpoint has no lm_head.
return model {
  name = "qwen3_4b", family = "qwen3",
  hidden = 2560, layers = 36, heads = 32, kv_heads = 8, head_dim = 128,
  intermediate = 9728, vocab = 151936, tie_word_embeddings = true,
}
