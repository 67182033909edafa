return model { name = "bad_duplicate", family = "bad_family", hidden = 256, mistake = "duplicate" }
