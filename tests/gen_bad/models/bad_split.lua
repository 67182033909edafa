return model { name = "bad_split", family = "bad_family", hidden = 256, mistake = "split" }
