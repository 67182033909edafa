return model { name = "bad_dtype", family = "bad_family", hidden = 256, mistake = "dtype" }
