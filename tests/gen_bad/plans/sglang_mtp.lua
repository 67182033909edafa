return plan { name = "sglang_mtp", model = "dsv3_tiny", trainer = { fsdp = 2 }, inference = { tp = 1, replicas = 1 }, engine = { name = "sglang", version = "0.5.23" } }
