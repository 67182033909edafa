-- A misspelt engine option: built for the default triton layout although the plan asks for Marlin,
-- which repacks the weights after loading (gen/engine.lua refuses it when spelt right).
return plan { name = "key_moe_backnd", model = "qwen3_moe_tiny",
  trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 },
  engine = { name = "vllm", version = "0.33",
    moe_backnd = "marlin" } }
