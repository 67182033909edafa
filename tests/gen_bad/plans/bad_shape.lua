return plan { engine = { name = "vllm", version = "0.33" }, name = "bad_shape", model = "bad_shape", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
