-- GlmMoeDsaForCausalLM (GLM-5): MLA attention with a DSA indexer, first_dense dense MLP layers,
-- then MoE layers (routed experts + shared experts, sigmoid router with an fp32 correction bias),
-- and mtp_layers multi-token-prediction layers after the last decoder layer (T.layer(l, true)).
-- Source: the trainer's modules (the plan's trainer section). Destination: vLLM's DeepseekV2 format.
-- deepseek_v3 (DeepSeek-V3, Kimi-K2): F.build(..., true), no indexer, MTP embed_tokens + shared_head.head.
local F = {}

function F.build(m, T, engine, deepseek_v3)
  T.need(m, { "hidden", "layers", "first_dense", "heads", "q_lora_rank", "kv_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
    "experts", "shared_experts", "moe_intermediate", "intermediate", "vocab" })
  local indexer = not deepseek_v3
  if indexer then T.need(m, { "index_heads", "index_head_dim" }) end
  T.need(m, { "mtp_layers" }, 0)
  local H, N = m.hidden, m.heads
  local fp8 = { fp8 = true }

  T.layer(nil)
  T.src("model.embed_tokens.weight", { m.vocab, H })
  T.dst("model.embed_tokens.weight", { split = "col", dtype = "bf16", parts = { "model.embed_tokens.weight" } })

  for l = 0, m.layers + m.mtp_layers - 1 do
    local p = ("model.layers.%d."):format(l)
    local a = p .. "self_attn."
    local moe = l >= m.first_dense
    local mtp = l >= m.layers
    local send = not mtp or engine.mtp ~= false
    T.layer(l, mtp)

    T.src(a .. "q_a_proj.weight", { m.q_lora_rank, H }, fp8)
    T.src(a .. "q_a_layernorm.weight", { m.q_lora_rank })
    T.src(a .. "q_b_proj.weight", { N * (m.qk_nope_head_dim + m.qk_rope_head_dim), m.q_lora_rank }, fp8)
    T.src(a .. "kv_a_proj_with_mqa.weight", { m.kv_lora_rank + m.qk_rope_head_dim, H }, fp8)
    T.src(a .. "kv_a_layernorm.weight", { m.kv_lora_rank })
    T.src(a .. "kv_b_proj.weight", { N * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank }, fp8)
    T.src(a .. "o_proj.weight", { H, N * m.v_head_dim }, fp8)
    if indexer then
      T.src(a .. "indexer.wq_b.weight", { m.index_heads * m.index_head_dim, m.q_lora_rank }, fp8)
      T.src(a .. "indexer.wk.weight", { m.index_head_dim, H }, fp8)
      T.src(a .. "indexer.k_norm.weight", { m.index_head_dim })
      T.src(a .. "indexer.k_norm.bias", { m.index_head_dim })
      T.src(a .. "indexer.weights_proj.weight", { m.index_heads, H })
    end
    T.src(p .. "input_layernorm.weight", { H })
    T.src(p .. "post_attention_layernorm.weight", { H })
    if not moe then
      T.src(p .. "mlp.gate_proj.weight", { m.intermediate, H }, fp8)
      T.src(p .. "mlp.up_proj.weight", { m.intermediate, H }, fp8)
      T.src(p .. "mlp.down_proj.weight", { H, m.intermediate }, fp8)
    else
      T.src(p .. "mlp.gate.weight", { m.experts, H })
      T.src(p .. "mlp.gate.e_score_correction_bias", { m.experts }, { dtype = "fp32" })
      T.expert_srcs(p .. "mlp.experts", m.experts, {
        { "gate_proj.weight", { m.moe_intermediate, H }, fused = "gate_up_proj" },
        { "up_proj.weight", { m.moe_intermediate, H }, fused = "gate_up_proj" },
        { "down_proj.weight", { H, m.moe_intermediate }, fused = "down_proj" },
      }, fp8)
      local I = m.moe_intermediate * m.shared_experts
      T.src(p .. "mlp.shared_experts.gate_proj.weight", { I, H }, fp8)
      T.src(p .. "mlp.shared_experts.up_proj.weight", { I, H }, fp8)
      T.src(p .. "mlp.shared_experts.down_proj.weight", { H, I }, fp8)
    end
    if mtp then
      T.src(p .. "eh_proj.weight", { H, 2 * H })
      T.src(p .. "enorm.weight", { H })
      T.src(p .. "hnorm.weight", { H })
      T.src(p .. "shared_head.norm.weight", { H })
    end

    if send then
      -- [q_a; kv_a] along dim 0, replicated; kv_a's rows need not fill its last 128-row block.
      T.dst(a .. "fused_qkv_a_proj.weight", { split = "rep", dtype = "weight",
        parts = { a .. "q_a_proj.weight", a .. "kv_a_proj_with_mqa.weight" } })
      T.dst(a .. "q_a_layernorm.weight", { split = "rep", dtype = "bf16", parts = { a .. "q_a_layernorm.weight" } })
      T.dst(a .. "q_b_proj.weight", { split = "col", dtype = "weight",
        parts = { { src = a .. "q_b_proj.weight", heads = N } } })
      T.dst(a .. "kv_a_layernorm.weight", { split = "rep", dtype = "bf16", parts = { a .. "kv_a_layernorm.weight" } })
      T.dst(a .. "kv_b_proj.weight", { split = "col", dtype = "weight",
        parts = { { src = a .. "kv_b_proj.weight", heads = N } },
        -- the engine keeps W_UK_T / W_UV derived from kv_b_proj: rebuilt after every update
        derived = { kind = "mla_absorb", prefix = a, qk_nope = m.qk_nope_head_dim, v_head = m.v_head_dim,
          kv_lora = m.kv_lora_rank } })
      T.dst(a .. "o_proj.weight", { split = "row", dtype = "weight", parts = { a .. "o_proj.weight" } })
      if not indexer then
        -- no DSA indexer
      elseif engine.indexer_fusion ~= false then
        T.dst(a .. "indexer.wq_b.weight", { split = "rep", dtype = "weight", parts = { a .. "indexer.wq_b.weight" } })
        -- newer vLLM: [wk; weights_proj] as one unquantized bf16 tensor
        T.dst(a .. "indexer.wk_weights_proj.weight", { split = "rep", dtype = "bf16",
          parts = { a .. "indexer.wk.weight", a .. "indexer.weights_proj.weight" } })
      else
        T.dst(a .. "indexer.wq_b.weight", { split = "rep", dtype = "weight", parts = { a .. "indexer.wq_b.weight" } })
        T.dst(a .. "indexer.wk.weight", { split = "rep", dtype = "weight", parts = { a .. "indexer.wk.weight" } })
        T.dst(a .. "indexer.weights_proj.weight", { split = "rep", dtype = "bf16",
          parts = { a .. "indexer.weights_proj.weight" } })
      end
      if indexer then
        -- the indexer's k_norm is a LayerNorm whose affine parameters the engine keeps in fp32
        T.dst(a .. "indexer.k_norm.weight", { split = "rep", dtype = "fp32", parts = { a .. "indexer.k_norm.weight" } })
        T.dst(a .. "indexer.k_norm.bias", { split = "rep", dtype = "fp32", parts = { a .. "indexer.k_norm.bias" } })
      end
      T.dst(p .. "input_layernorm.weight", { split = "rep", dtype = "bf16", parts = { p .. "input_layernorm.weight" } })
      T.dst(p .. "post_attention_layernorm.weight", { split = "rep", dtype = "bf16",
        parts = { p .. "post_attention_layernorm.weight" } })
      if not moe then
        T.dst(p .. "mlp.gate_up_proj.weight", { split = "col", dtype = "weight",
          parts = { p .. "mlp.gate_proj.weight", p .. "mlp.up_proj.weight" } })
        T.dst(p .. "mlp.down_proj.weight", { split = "row", dtype = "weight", parts = { p .. "mlp.down_proj.weight" } })
      else
        T.dst(p .. "mlp.gate.weight", { split = "rep", dtype = "bf16", parts = { p .. "mlp.gate.weight" } })
        T.dst(p .. "mlp.gate.e_score_correction_bias", { split = "rep", dtype = "fp32",
          parts = { p .. "mlp.gate.e_score_correction_bias" } })
        T.expert_dst(p .. "mlp.experts.w13_weight", p .. "mlp.experts", m.experts,
          { split = "col", dtype = "weight", parts = { "gate_proj.weight", "up_proj.weight" } })
        T.expert_dst(p .. "mlp.experts.w2_weight", p .. "mlp.experts", m.experts,
          { split = "row", dtype = "weight", parts = { "down_proj.weight" } })
        T.dst(p .. "mlp.shared_experts.gate_up_proj.weight", { split = "col", dtype = "weight",
          parts = { p .. "mlp.shared_experts.gate_proj.weight", p .. "mlp.shared_experts.up_proj.weight" } })
        T.dst(p .. "mlp.shared_experts.down_proj.weight", { split = "row", dtype = "weight",
          parts = { p .. "mlp.shared_experts.down_proj.weight" } })
      end
      if mtp then
        T.dst(p .. "eh_proj.weight", { split = "rep", dtype = "bf16", parts = { p .. "eh_proj.weight" } })
        for _, n in ipairs({ "enorm.weight", "hnorm.weight", "shared_head.norm.weight" }) do
          T.dst(p .. n, { split = "rep", dtype = "bf16", parts = { p .. n } })
        end
      end
    end
    if mtp and deepseek_v3 then -- DeepSeek-V3's MTP layer: its own embedding and output head
      for _, n in ipairs({ "embed_tokens.weight", "shared_head.head.weight" }) do
        T.src(p .. n, { m.vocab, H })
        if send then T.dst(p .. n, { split = "col", dtype = "bf16", parts = { p .. n } }) end
      end
    end
  end

  T.layer(nil)
  T.src("model.norm.weight", { H })
  T.src("lm_head.weight", { m.vocab, H })
  T.dst("model.norm.weight", { split = "rep", dtype = "bf16", parts = { "model.norm.weight" } })
  T.dst("lm_head.weight", { split = "col", dtype = "bf16", parts = { "lm_head.weight" } })
end

return F
