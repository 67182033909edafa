-- vllm_qwen3 with a vocabulary of 1000 rows, not a multiple of 64 (tests/vllm/configs/qwen3-v1000):
-- vLLM pads it to 1024, 512 rows per rank at TP2, rank 1's last 24 rows padding.
return model {
  name = "vllm_qwen3_v1000", family = "qwen3",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 64,
  intermediate = 512, vocab = 1000, tie_word_embeddings = false,
}
