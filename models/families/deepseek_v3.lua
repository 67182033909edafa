-- DeepseekV3ForCausalLM (DeepSeek-V3, Kimi-K2): glm_moe_dsa's layout without the DSA indexer; its MTP
-- layers (model.layers.<layers>) carry their own embed_tokens and shared_head.head.
local G = include("glm_moe_dsa")
return { build = function(m, T, engine) return G.build(m, T, engine, true) end }
