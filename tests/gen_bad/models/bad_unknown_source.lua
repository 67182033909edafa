return model { name = "bad_unknown_source", family = "bad_family", hidden = 256, mistake = "unknown_source" }
