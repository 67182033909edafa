-- dsv3_tiny (DeepseekV3ForCausalLM), written by refit import-hf from tests/fixtures/hf/vllm/dsv3/config.json.
return model {
  name = "dsv3_tiny", family = "deepseek_v3",
  hidden = 256,                  -- hidden_size
  layers = 3,                    -- num_hidden_layers
  mtp_layers = 1,                -- num_nextn_predict_layers
  first_dense = 1,               -- first_k_dense_replace
  heads = 4,                     -- num_attention_heads
  q_lora_rank = 256,             -- q_lora_rank
  kv_lora_rank = 512,            -- kv_lora_rank
  qk_nope_head_dim = 128,        -- qk_nope_head_dim
  qk_rope_head_dim = 64,         -- qk_rope_head_dim
  v_head_dim = 128,              -- v_head_dim
  experts = 4,                   -- n_routed_experts
  shared_experts = 1,            -- n_shared_experts
  experts_per_token = 2,         -- num_experts_per_tok
  moe_intermediate = 256,        -- moe_intermediate_size
  intermediate = 512,            -- intermediate_size
  vocab = 1024,                  -- vocab_size
}
