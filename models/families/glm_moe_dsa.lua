-- GlmMoeDsaForCausalLM (GLM-5): MLA attention with a DSA indexer, first_dense dense MLP layers,
-- then MoE layers (routed experts + shared experts, sigmoid router with an fp32 correction bias),
-- and mtp_layers multi-token-prediction layers after the last decoder layer (T.layer(l, true)).
-- Source: the trainer's modules (the plan's trainer section). Destination: vLLM 0.33's parameters as
-- loaded (tests/vllm/dumps): routed experts under mlp.experts.routed_experts, the router and shared
-- experts registered twice (aliases), vocabulary rows padded to a multiple of 64, MTP layers in the
-- drafter model (drafter.model.layers.L.mtp_block.*), MLA's W_UK_T/W_UV as views (gen/derive.lua).
-- deepseek_v3 (DeepSeek-V3, Kimi-K2): F.build(..., true), no indexer, MTP embed_tokens +
-- shared_head.head; vLLM's DeepseekV2 attention there also registers its tensors under
-- self_attn.mla_attn.
-- SGLang 0.5.23 (engine profile sglang, tests/sglang/dumps): [q_a; kv_a] is
-- fused_qkv_a_proj_with_mqa, no aliases (no mla_attn, router and shared experts once), routed
-- experts under mlp.experts, the indexer's wk / weights_proj apart, no drafter (engine.mtp = false,
-- gen/engine.lua). Its MLA w_kc / w_vc are copies in storages of their own that SGLang's
-- post_load_weights rebuilds from kv_b_proj (refit's MLA refresh writes both views into one storage,
-- so the tables leave them out): each kv_b_proj gets an engine finalize step (sglang_mla_post_load)
-- that runs post_load_weights for its layer before the version is complete (refit.sglang).
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
  local sgl = engine.name == "sglang"
  local mla_attn = deepseek_v3 and not sgl -- vLLM's DeepseekV2 attention (DeepSeek-V3, Kimi-K2): an mla_attn wrapper
  local drafter = m.mtp_layers > 0 and engine.mtp ~= false
  local w13 = engine.w13 == "up_gate" and { "up_proj.weight", "gate_proj.weight" }
    or { "gate_proj.weight", "up_proj.weight" } -- FusedMoE w13 halves, as the engine profile orders them

  T.layer(nil)
  T.src("model.embed_tokens.weight", { m.vocab, H })
  T.dst("model.embed_tokens.weight", { split = "col", dtype = "bf16", pad_to = 64,
    aliases = drafter and { "drafter.model.embed_tokens.weight" } or nil, parts = { "model.embed_tokens.weight" } })

  for l = 0, m.layers + m.mtp_layers - 1 do
    local p = ("model.layers.%d."):format(l)
    local a = p .. "self_attn."
    local moe = l >= m.first_dense
    local mtp = l >= m.layers
    local send = not mtp or engine.mtp ~= false
    -- destination names: the drafter holds an MTP layer's decoder block under mtp_block
    local dh = ("drafter.model.layers.%d."):format(l)
    local dp = mtp and dh .. "mtp_block." or p
    local da = dp .. "self_attn."
    local function mla(name) -- the attention's own name, plus its mla_attn registrations
      if not mla_attn then return nil end
      local al = { da .. "mla_attn." .. name }
      if name == "kv_b_proj.weight" then al[2] = da .. "mla_attn.mla_attn." .. name end
      return al
    end
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
      T.dst(da .. (sgl and "fused_qkv_a_proj_with_mqa.weight" or "fused_qkv_a_proj.weight"), { split = "rep", dtype = "weight", aliases = mla("fused_qkv_a_proj.weight"),
        parts = { a .. "q_a_proj.weight", a .. "kv_a_proj_with_mqa.weight" } })
      T.dst(da .. "q_a_layernorm.weight", { split = "rep", dtype = "bf16", aliases = mla("q_a_layernorm.weight"),
        parts = { a .. "q_a_layernorm.weight" } })
      T.dst(da .. "q_b_proj.weight", { split = "col", dtype = "weight", aliases = mla("q_b_proj.weight"),
        parts = { { src = a .. "q_b_proj.weight", heads = N } } })
      T.dst(da .. "kv_a_layernorm.weight", { split = "rep", dtype = "bf16", aliases = mla("kv_a_layernorm.weight"),
        parts = { a .. "kv_a_layernorm.weight" } })
      T.dst(da .. "kv_b_proj.weight", { split = "col", dtype = "weight", aliases = mla("kv_b_proj.weight"),
        parts = { { src = a .. "kv_b_proj.weight", heads = N } },
        -- the engine keeps W_UK_T / W_UV derived from kv_b_proj: views (bf16) or rebuilt after every update (fp8)
        derived = (not sgl or nil) and { kind = "mla_absorb", prefix = mla_attn and da .. "mla_attn.mla_attn." or da,
          qk_nope = m.qk_nope_head_dim, v_head = m.v_head_dim, kv_lora = m.kv_lora_rank } })
      T.dst(da .. "o_proj.weight", { split = "row", dtype = "weight", aliases = mla("o_proj.weight"),
        parts = { a .. "o_proj.weight" } })
      if not indexer then
        -- no DSA indexer
      elseif engine.indexer_fusion ~= false and not sgl then
        T.dst(da .. "indexer.wq_b.weight", { split = "rep", dtype = "weight", parts = { a .. "indexer.wq_b.weight" } })
        -- newer vLLM: [wk; weights_proj] as one unquantized bf16 tensor
        T.dst(da .. "indexer.wk_weights_proj.weight", { split = "rep", dtype = "bf16",
          parts = { a .. "indexer.wk.weight", a .. "indexer.weights_proj.weight" } })
      else
        T.dst(da .. "indexer.wq_b.weight", { split = "rep", dtype = "weight", parts = { a .. "indexer.wq_b.weight" } })
        T.dst(da .. "indexer.wk.weight", { split = "rep", dtype = "weight", parts = { a .. "indexer.wk.weight" } })
        T.dst(da .. "indexer.weights_proj.weight", { split = "rep", dtype = "bf16",
          parts = { a .. "indexer.weights_proj.weight" } })
      end
      if indexer then
        -- the indexer's k_norm is a LayerNorm whose affine parameters the engine keeps in fp32
        T.dst(da .. "indexer.k_norm.weight", { split = "rep", dtype = "fp32", parts = { a .. "indexer.k_norm.weight" } })
        T.dst(da .. "indexer.k_norm.bias", { split = "rep", dtype = "fp32", parts = { a .. "indexer.k_norm.bias" } })
      end
      T.dst(dp .. "input_layernorm.weight", { split = "rep", dtype = "bf16", parts = { p .. "input_layernorm.weight" } })
      T.dst(dp .. "post_attention_layernorm.weight", { split = "rep", dtype = "bf16",
        parts = { p .. "post_attention_layernorm.weight" } })
      if not moe then
        T.dst(dp .. "mlp.gate_up_proj.weight", { split = "col", dtype = "weight",
          parts = { p .. "mlp.gate_proj.weight", p .. "mlp.up_proj.weight" } })
        T.dst(dp .. "mlp.down_proj.weight", { split = "row", dtype = "weight", parts = { p .. "mlp.down_proj.weight" } })
      else
        -- vLLM 0.33's MoE layer registers the router and shared experts again inside mlp.experts
        local function again(...) if not sgl then return { ... } end end
        local experts = sgl and dp .. "mlp.experts." or dp .. "mlp.experts.routed_experts."
        T.dst(dp .. "mlp.gate.weight", { split = "rep", dtype = "bf16", aliases = again(dp .. "mlp.experts.gate.weight"),
          parts = { p .. "mlp.gate.weight" } })
        T.dst(dp .. "mlp.gate.e_score_correction_bias", { split = "rep", dtype = "fp32",
          aliases = again(dp .. "mlp.experts.gate.e_score_correction_bias", dp .. "mlp.experts.routed_experts.e_score_correction_bias"),
          parts = { p .. "mlp.gate.e_score_correction_bias" } })
        T.expert_dst(experts .. "w13_weight", p .. "mlp.experts", m.experts,
          { split = "col", dtype = "weight", parts = w13 })
        T.expert_dst(experts .. "w2_weight", p .. "mlp.experts", m.experts,
          { split = "row", dtype = "weight", parts = { "down_proj.weight" } })
        T.dst(dp .. "mlp.shared_experts.gate_up_proj.weight", { split = "col", dtype = "weight",
          aliases = again(dp .. "mlp.experts._shared_experts._layer.gate_up_proj.weight"),
          parts = { p .. "mlp.shared_experts.gate_proj.weight", p .. "mlp.shared_experts.up_proj.weight" } })
        T.dst(dp .. "mlp.shared_experts.down_proj.weight", { split = "row", dtype = "weight",
          aliases = again(dp .. "mlp.experts._shared_experts._layer.down_proj.weight"),
          parts = { p .. "mlp.shared_experts.down_proj.weight" } })
      end
      if mtp then
        T.dst(dh .. "eh_proj.weight", { split = "rep", dtype = "bf16", parts = { p .. "eh_proj.weight" } })
        for _, n in ipairs({ "enorm.weight", "hnorm.weight", "shared_head.norm.weight" }) do
          T.dst(dh .. n, { split = "rep", dtype = "bf16", parts = { p .. n } })
        end
      end
    end
    if mtp and deepseek_v3 then
      -- DeepSeek-V3's MTP layer carries its own embedding and output head (copies of the model's: the
      -- MTP module shares them by design). vLLM's drafter registers the target's embed_tokens and
      -- lm_head under those names (one storage, aliases below), so nothing is written from these.
      for _, n in ipairs({ "embed_tokens.weight", "shared_head.head.weight" }) do T.src(p .. n, { m.vocab, H }) end
    end
  end

  T.layer(nil)
  T.src("model.norm.weight", { H })
  T.src("lm_head.weight", { m.vocab, H })
  T.dst("model.norm.weight", { split = "rep", dtype = "bf16", parts = { "model.norm.weight" } })
  -- the drafter's heads are the target's lm_head (GLM-5's MTP layer has no head of its own)
  local heads = {}
  if drafter then
    for l = m.layers, m.layers + m.mtp_layers - 1 do
      heads[#heads + 1] = ("drafter.model.layers.%d.shared_head.head.weight"):format(l)
    end
    heads[#heads + 1] = "drafter.lm_head.weight"
  end
  T.dst("lm_head.weight", { split = "col", dtype = "bf16", pad_to = 64, aliases = heads, parts = { "lm_head.weight" } })
end

return F
