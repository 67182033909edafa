-- The MoE GPT of the Megatron-core dumps (tests/megatron/dumps moe_seq_*): mg_qwen3_tiny's attention,
-- both layers MoE with 4 experts of 128 (top 2), no shared expert, no expert bias.
return model {
  name = "mg_qwen3_moe_tiny", family = "qwen3_moe",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 64,
  experts = 4, experts_per_token = 2, moe_intermediate = 128,
  vocab = 1024, tie_word_embeddings = false,
}
