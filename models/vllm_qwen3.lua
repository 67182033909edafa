-- Qwen3's architecture at the size of tests/vllm/configs/qwen3 (hidden 256, 2 layers, 4 heads of 64,
-- 2 KV heads), the model of the vLLM conformance plans (tests/vllm/README.md).
return model {
  name = "vllm_qwen3", family = "qwen3",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 64,
  intermediate = 512, vocab = 1024, tie_word_embeddings = false,
}
