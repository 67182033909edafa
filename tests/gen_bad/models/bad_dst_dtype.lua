return model { name = "bad_dst_dtype", family = "bad_family", hidden = 256, mistake = "dst_dtype" }
