-- qwen3_tiny with tie_word_embeddings misspelt: built untied (an lm_head of its own) before model
-- keys were checked against those the family reads.
return model {
  name = "qwen3_tie_typo", family = "qwen3",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 128,
  intermediate = 512, vocab = 1024,
  tie_word_embedding = true,
}
