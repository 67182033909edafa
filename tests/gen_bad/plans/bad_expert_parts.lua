return plan { name = "bad_expert_parts", model = "bad_expert_parts", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "vllm", version = "0.33" } }
