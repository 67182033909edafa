return plan { engine = { name = "vllm", version = "0.33" }, name = "bad_dst_dtype", model = "bad_dst_dtype", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
