return plan { name = "bad_unknown_source", model = "bad_unknown_source", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 } }
