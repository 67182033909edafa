-- Qwen3-MoE's architecture at the size of tests/vllm/configs/qwen3moe (hidden 256, 2 MoE layers of 4
-- experts), the model of the vLLM conformance plans (tests/vllm/README.md).
return model {
  name = "vllm_qwen3moe", family = "qwen3_moe",
  hidden = 256, layers = 2, heads = 4, kv_heads = 2, head_dim = 64,
  experts = 4, experts_per_token = 2, moe_intermediate = 256,
  vocab = 1024, tie_word_embeddings = false,
}
