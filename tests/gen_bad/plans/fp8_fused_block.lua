return plan { engine = { name = "vllm", version = "0.33" }, name = "fp8_fused_block", model = "glm_q_lora_200", trainer = { fsdp = 4 },
  inference = { tp = 2, ep = 2, replicas = 1 }, quant = { fp8 = true } }
