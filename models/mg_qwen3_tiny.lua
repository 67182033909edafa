-- The dense GPT of the Megatron-core dumps (tests/megatron/dumps gpt_*): Qwen3-shaped, 2 KV groups of
-- 2 query heads, head_dim 64, SwiGLU, q/k RMSNorm, untied embeddings.
return model {
  name = "mg_qwen3_tiny", family = "qwen3",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 64,
  intermediate = 512, vocab = 1024, tie_word_embeddings = false,
}
