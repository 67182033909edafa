return plan { name = "bad_shape", model = "bad_shape", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
