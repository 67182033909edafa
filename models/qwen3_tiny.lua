-- A Qwen3-shaped dense model for tests: tied embeddings, GQA with fewer KV heads than some TP sizes.
return model {
  name = "qwen3_tiny", family = "qwen3",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 128,
  intermediate = 512, vocab = 1024, tie_word_embeddings = true,
}
