return plan { name = "bad_dtype", model = "bad_dtype", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
