return plan { name = "key_model_typo", model = "qwen3_tie_typo",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" } }
