-- Qwen3MoeForCausalLM: Qwen3 attention, every layer MoE (no shared expert); the router mlp.gate is
-- a replicated linear that vLLM 0.33 builds with the model's quant config (block FP8 unless the
-- plan excludes it, as checkpoints that keep it bf16 must) and registers again in mlp.experts;
-- routed experts live under mlp.experts.routed_experts. SGLang 0.5.23 (engine profile sglang) keeps
-- the router bf16 and unaliased and the experts directly under mlp.experts (tests/sglang/dumps).
local Q = include("qwen3")
local F = {}

function F.build(m, T, engine)
  Q.common(m, T)
  T.need(m, { "experts", "moe_intermediate" })
  Q.embed(m, T)
  local w13 = engine.w13 == "up_gate" and { "up_proj.weight", "gate_proj.weight" }
    or { "gate_proj.weight", "up_proj.weight" } -- FusedMoE w13 halves, as the engine profile orders them
  for l = 0, m.layers - 1 do
    local p = ("model.layers.%d."):format(l)
    T.layer(l)
    Q.attention(m, T, p)
    T.src(p .. "mlp.gate.weight", { m.experts, m.hidden })
    T.expert_srcs(p .. "mlp.experts", m.experts, {
      { "gate_proj.weight", { m.moe_intermediate, m.hidden }, fused = "gate_up_proj" },
      { "up_proj.weight", { m.moe_intermediate, m.hidden }, fused = "gate_up_proj" },
      { "down_proj.weight", { m.hidden, m.moe_intermediate }, fused = "down_proj" },
    }, { fp8 = true })
    local experts = p .. "mlp.experts.routed_experts."
    if engine.name == "sglang" then
      experts = p .. "mlp.experts."
      T.dst(p .. "mlp.gate.weight", { split = "rep", dtype = "bf16", parts = { p .. "mlp.gate.weight" } })
    else
      T.dst(p .. "mlp.gate.weight", { split = "rep", dtype = "weight", fp8 = true,
        aliases = { p .. "mlp.experts.gate.weight" }, parts = { p .. "mlp.gate.weight" } })
    end
    T.expert_dst(experts .. "w13_weight", p .. "mlp.experts", m.experts,
      { split = "col", dtype = "weight", parts = w13 })
    T.expert_dst(experts .. "w2_weight", p .. "mlp.experts", m.experts,
      { split = "row", dtype = "weight", parts = { "down_proj.weight" } })
  end
  Q.head(m, T)
end

return F
