return plan { engine = { name = "vllm", version = "0.33" }, name = "unaligned_fp8_shard", model = "glm_tiny", trainer = { fsdp = 4 },
  inference = { tp = 2, ep = 2, replicas = 1 }, quant = { fp8 = true, unaligned = "error" }, gather_below = 1024, shard_min_piece = 1024 }
