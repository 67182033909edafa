-- Qwen3-0.6B (its config.json: hidden 1024, 28 layers, 16 query and 8 KV heads of 128, MLP 3072,
-- vocabulary 151936, tied embeddings): the mid-size plan of the delta benchmarks (1.2 GB in bf16).
return model {
  name = "qwen3_0_6b", family = "qwen3",
  hidden = 1024, layers = 28, heads = 16, kv_heads = 8, head_dim = 128,
  intermediate = 3072, vocab = 151936, tie_word_embeddings = true,
}
