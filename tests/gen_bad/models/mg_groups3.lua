-- 6 query heads in 3 KV groups: tp 2 divides the heads but neither divides the other with the groups.
return model {
  name = "mg_groups3", family = "qwen3",
  hidden = 256, layers = 2, heads = 6, kv_heads = 3, head_dim = 64,
  intermediate = 512, vocab = 1024, tie_word_embeddings = false,
}
