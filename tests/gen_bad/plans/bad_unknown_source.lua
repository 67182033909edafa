return plan { engine = { name = "vllm", version = "0.33" }, name = "bad_unknown_source", model = "bad_unknown_source", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
