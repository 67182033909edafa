return plan { engine = { name = "vllm", version = "0.33" }, name = "bad_dtype", model = "bad_dtype", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
