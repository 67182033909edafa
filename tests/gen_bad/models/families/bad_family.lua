-- A family whose model picks which mistake it makes.
local F = {}
function F.build(m, T)
  T.need(m, { "hidden" }); T.optional(m, "mistake", "string") -- the model picks the mistake
  T.layer(0)
  if m.mistake == "dtype" then
    T.src("model.layers.0.norm.weight", { m.hidden }, { dtype = "fp16" })
  elseif m.mistake == "duplicate" then
    T.src("model.layers.0.norm.weight", { m.hidden })
    T.src("model.layers.0.norm.weight", { m.hidden })
  elseif m.mistake == "unknown_source" then
    T.src("model.layers.0.norm.weight", { m.hidden })
    T.dst("model.layers.0.norm.weight", { split = "rep", dtype = "bf16", parts = { "model.layers.0.nrom.weight" } })
  elseif m.mistake == "shape" then
    T.src("model.layers.0.proj.weight", { m.hidden, 0 })
  elseif m.mistake == "split" then
    T.src("model.layers.0.proj.weight", { m.hidden, m.hidden })
    T.dst("model.layers.0.proj.weight", { split = "diagonal", dtype = "bf16", parts = { "model.layers.0.proj.weight" } })
  elseif m.mistake == "dst_dtype" then
    T.src("model.layers.0.proj.weight", { m.hidden, m.hidden })
    T.dst("model.layers.0.proj.weight", { split = "rep", dtype = "int4", parts = { "model.layers.0.proj.weight" } })
  elseif m.mistake == "expert_parts" then
    T.expert_srcs("model.layers.0.mlp.experts", 4, { { "gate_proj.weight", { 64, m.hidden }, fused = "gate_up_proj" },
      { "up_proj.weight", { 64, m.hidden } } })
  end
end
return F
