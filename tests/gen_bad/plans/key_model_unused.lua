return plan { name = "key_model_unused", model = "dsv3_index_heads",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" } }
