return plan { engine = { name = "vllm", version = "0.33" }, name = "bad_split", model = "bad_split", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
