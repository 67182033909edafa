-- Megatron TP2 with its vocabulary padded to 1536 (make_vocab_size_divisible_by 384 x tp 2): each rank holds 768
-- rows, rank 1 only 256 real ones; the padding is never sent. Into one vLLM TP2 replica (512 rows each).
-- Trainer: Megatron-core, every rank sending its own shards (no dump: tests/megatron/values.lua checks the rows).
return plan {
  name = "megatron_qwen3_tiny_tp2_vocab_pad", model = "mg_qwen3_tiny",
  trainer = { megatron = { tp = 2, vocab_divisible = 384 } },
  inference = { tp = 2, ep = 1, replicas = 1 },
  engine = { name = "vllm", version = ">=0.33,<0.34" },
}
