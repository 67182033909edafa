-- Qwen3ForCausalLM: GQA attention with per-head q/k RMSNorm, dense SwiGLU MLP.
-- Source: the trainer's modules (plan trainer section). Destination: vLLM 0.33's parameters as loaded
-- (qkv_proj, gate_up_proj; vocabulary rows padded to a multiple of 64; a tied lm_head is embed_tokens).
-- qwen3_moe builds on attention() and globals() below.
local F = {}

function F.attention(m, T, p)
  local H, hd = m.hidden, m.head_dim
  local a = p .. "self_attn."
  T.src(a .. "q_proj.weight", { m.heads * hd, H }, { fp8 = true })
  T.src(a .. "k_proj.weight", { m.kv_heads * hd, H }, { fp8 = true })
  T.src(a .. "v_proj.weight", { m.kv_heads * hd, H }, { fp8 = true })
  T.src(a .. "o_proj.weight", { H, m.heads * hd }, { fp8 = true })
  T.src(a .. "q_norm.weight", { hd })
  T.src(a .. "k_norm.weight", { hd })
  T.src(p .. "input_layernorm.weight", { H })
  T.src(p .. "post_attention_layernorm.weight", { H })
  -- per TP rank [q_r; k_r; v_r]; KV heads are replicated when tp exceeds their count
  T.dst(a .. "qkv_proj.weight", { split = "col", dtype = "weight", parts = {
    { src = a .. "q_proj.weight", heads = m.heads },
    { src = a .. "k_proj.weight", heads = m.kv_heads, replicate = true },
    { src = a .. "v_proj.weight", heads = m.kv_heads, replicate = true } } })
  T.dst(a .. "o_proj.weight", { split = "row", dtype = "weight", parts = {
    { src = a .. "o_proj.weight", heads = m.heads } } })
  T.dst(a .. "q_norm.weight", { split = "rep", dtype = "bf16", parts = { a .. "q_norm.weight" } })
  T.dst(a .. "k_norm.weight", { split = "rep", dtype = "bf16", parts = { a .. "k_norm.weight" } })
  T.dst(p .. "input_layernorm.weight", { split = "rep", dtype = "bf16", parts = { p .. "input_layernorm.weight" } })
  T.dst(p .. "post_attention_layernorm.weight", { split = "rep", dtype = "bf16",
    parts = { p .. "post_attention_layernorm.weight" } })
end

function F.embed(m, T)
  T.layer(nil)
  T.src("model.embed_tokens.weight", { m.vocab, m.hidden })
  T.dst("model.embed_tokens.weight", { split = "col", dtype = "bf16", pad_to = 64,
    aliases = m.tie_word_embeddings and { "lm_head.weight" } or nil, parts = { "model.embed_tokens.weight" } })
end

function F.head(m, T)
  T.layer(nil)
  T.src("model.norm.weight", { m.hidden })
  T.dst("model.norm.weight", { split = "rep", dtype = "bf16", parts = { "model.norm.weight" } })
  if not m.tie_word_embeddings then -- tied: the engine's lm_head is embed_tokens
    T.src("lm_head.weight", { m.vocab, m.hidden })
    T.dst("lm_head.weight", { split = "col", dtype = "bf16", pad_to = 64, parts = { "lm_head.weight" } })
  end
end

function F.common(m, T)
  T.need(m, { "hidden", "layers", "heads", "kv_heads", "head_dim", "vocab" })
  T.optional(m, "tie_word_embeddings", "boolean")
end

function F.build(m, T)
  F.common(m, T)
  T.need(m, { "intermediate" })
  F.embed(m, T)
  for l = 0, m.layers - 1 do
    local p = ("model.layers.%d."):format(l)
    T.layer(l)
    F.attention(m, T, p)
    T.src(p .. "mlp.gate_proj.weight", { m.intermediate, m.hidden }, { fp8 = true })
    T.src(p .. "mlp.up_proj.weight", { m.intermediate, m.hidden }, { fp8 = true })
    T.src(p .. "mlp.down_proj.weight", { m.hidden, m.intermediate }, { fp8 = true })
    T.dst(p .. "mlp.gate_up_proj.weight", { split = "col", dtype = "weight",
      parts = { p .. "mlp.gate_proj.weight", p .. "mlp.up_proj.weight" } })
    T.dst(p .. "mlp.down_proj.weight", { split = "row", dtype = "weight", parts = { p .. "mlp.down_proj.weight" } })
  end
  F.head(m, T)
end

return F
