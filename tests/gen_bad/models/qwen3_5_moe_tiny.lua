-- A Qwen3-MoE-shaped model of a model type that vLLM excludes from DeepGEMM on Blackwell.
return model {
  name = "qwen3_5_moe_tiny", family = "qwen3_5_moe_text",
  hidden = 256, layers = 1, heads = 4, kv_heads = 2, head_dim = 128,
  experts = 4, experts_per_token = 2, moe_intermediate = 128,
  vocab = 1024, tie_word_embeddings = false,
}
