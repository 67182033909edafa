-- DeepSeek-V3's architecture at the size of tests/vllm/configs/dsv3 (hidden 256, 1 dense + 2 MoE
-- layers, an MTP layer, 4 experts), the model of the vLLM conformance plans (tests/vllm/README.md).
return model {
  name = "vllm_dsv3", family = "deepseek_v3",
  hidden = 256,
  layers = 3, mtp_layers = 1,
  first_dense = 1,
  heads = 4,
  q_lora_rank = 256, kv_lora_rank = 512,
  qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128,
  experts = 4, shared_experts = 1, experts_per_token = 2,
  moe_intermediate = 256, intermediate = 512,
  vocab = 1024,
}
