-- A string where a boolean belongs: "false" is true to Lua (refused as if EPLB were on).
return plan { name = "key_eplb_type", model = "qwen3_moe_tiny",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = "0.33", eplb = "false" } }
