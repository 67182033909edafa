return model { name = "bad_expert_parts", family = "bad_family", hidden = 256, mistake = "expert_parts" }
