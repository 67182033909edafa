return plan { name = "trainer_no_mtp_layers", model = "qwen3_tiny", trainer = { fsdp = 2, mtp = true },
  inference = { tp = 2, replicas = 1 }, engine = { name = "vllm", version = "0.33" } }
