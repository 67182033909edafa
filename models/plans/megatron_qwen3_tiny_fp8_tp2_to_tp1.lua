-- Block FP8 from Megatron TP2 into one vLLM TP1 replica (qwen3_tiny: head_dim 128, tied embeddings):
-- o_proj and down_proj rows arrive in two 128-column-aligned halves, each quantized by its own rank.
return plan {
  name = "megatron_qwen3_tiny_fp8_tp2_to_tp1", model = "qwen3_tiny",
  trainer = { megatron = { tp = 2 } },
  inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
  quant = { fp8 = true },
}
