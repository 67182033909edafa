return model { name = "bad_shape", family = "bad_family", hidden = 256, mistake = "shape" }
