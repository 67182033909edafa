-- megatron.lua: the Megatron-core trainer profile (plan trainer.megatron = { tp, pp, ep, ... }). Each
-- trainer rank holds its own shard of every parameter under the name GPTModel registers it, and sends
-- it: nothing is gathered to one rank. The family still lists the model by its HF names (gen/family.lua);
-- this module maps each HF source row onto the Megatron parameter (and rank) that holds it and retargets
-- every destination segment to those per-rank parameters. Layout facts, checked against parameter dumps
-- of megatron-core 0.16.1 (tests/megatron/dumps, ../shared/megatron/README.md sections 3.1-3.7):
--   * ranks: dense grid tp = r % tp, dp = r // tp % dp, pp = r // (tp*dp); expert grid over the same
--     tp*dp ranks of a stage: etp = r % etp, ep = r // etp % ep (read from the expert grid, not from tp);
--   * layers: pp stages hold layers/pp consecutive layers each, named from decoder.layers.0 on every
--     stage; stage 0 has embedding.*, the last stage decoder.final_layernorm, output_layer and the
--     MTP block (mtp.layers.K.*), plus a copy of embedding.word_embeddings.weight when pp > 1 (a
--     duplicate: never sent);
--   * linear_qkv [G*(Q/G+2)*d, H] interleaved per query group [q_g; k_g; v_g], contiguous row chunks
--     per TP rank (a chunk may split a group when G < tp); linear_proj, linear_fc2: column chunks;
--   * linear_fc1 (dense, shared and routed experts) [gate; up] with stride 2: TP rank r holds
--     [gate chunk r; up chunk r];
--   * embedding / output_layer: rows padded to a multiple of vocab_divisible * tp (Megatron-LM's
--     _vocab_size_with_padding), contiguous chunks per TP rank; padding rows are never sent;
--   * routed experts: EP rank k holds global experts [k*E/ep, (k+1)*E/ep) as local_experts.0.. (local
--     spec) or linear_fc1.weight0.. (te spec, TEGroupedMLP), each split over the expert-TP group;
--   * router weight [E, H] replicated, params dtype; expert_bias a buffer [E], fp32 always, with the
--     non-persistent buffer local_tokens_per_expert [E] beside it;
--   * norms: separate modules in the local spec (fp32 under bf16: WrappedTorchNorm); the te spec fuses
--     input_layernorm into linear_qkv.layer_norm_weight and a dense layer's pre-MLP norm into
--     linear_fc1.layer_norm_weight (MLA: q/kv norms into linear_q_up_proj / linear_kv_up_proj);
--   * MLA: linear_q_down_proj, linear_kv_down_proj (column-parallel in the local spec, replicated in
--     the te spec), linear_q_up_proj, linear_kv_up_proj (per head, as HF q_b_proj / kv_b_proj);
--     mtp.layers.K.{enorm, hnorm, eh_proj [H, 2H] column-parallel, final_layernorm,
--     transformer_layer.*}. The DSA indexer's names (core_attention.indexer.*) follow FIELD.md 1.3
--     and are replicated; no dump checks them (megatron-core 0.16.1's local spec has no DSA).
-- Replicated pieces (norms, router, DP copies of anything) are sent by one of their holders, chosen
-- longest-first to balance bytes. FP8: a 128-row block of a destination that draws rows from two
-- Megatron shards cannot be quantized by either rank alone; it is refused naming the tensor (no
-- rank holds the whole tensor to gather it).
local U = require("util")
local M = {}

-- The mesh of plan.trainer.megatron, checked against the model; fills in etp, dp, world.
function M.mesh(plan, site_of)
  local mg = plan.trainer.megatron
  local tp, pp, ep = mg.tp, mg.pp, mg.ep
  mg.etp = mg.etp or tp
  local etp = mg.etp
  local function fail(key, fmt, ...)
    U.fail(site_of({ "trainer", "megatron", key }), "plan '%s': trainer.megatron." .. key .. ": " .. fmt, plan.name, ...)
  end
  -- the expert grid (etp x ep x edp) covers the tp x dp ranks of a stage
  local function gcd(a, b) while b ~= 0 do a, b = b, a % b end return a end
  local need = tp * ep * etp // gcd(tp, ep * etp) -- lcm(tp, ep*etp)
  if mg.vpp ~= 1 then fail("vpp", "virtual pipeline stages (vpp %d) are not supported yet", mg.vpp) end
  if mg.dp == nil then mg.dp = need // tp end
  if (tp * mg.dp) % (ep * etp) ~= 0 then
    fail("dp", "tp %d x dp %d = %d ranks per stage are not a multiple of ep %d x etp %d = %d", tp, mg.dp, tp * mg.dp,
      ep, etp, ep * etp)
  end
  mg.edp = tp * mg.dp // (ep * etp)
  mg.world = tp * pp * mg.dp
  if plan.trainer.dtype_except and #plan.trainer.dtype_except > 0 then
    fail("tp", "trainer.dtype_except names HF tensors; a Megatron trainer's dtypes follow its spec (unset it)")
  end
  return mg
end

-- Coordinates of global rank r.
local function coords(mg, r)
  local per_stage = mg.tp * mg.dp
  local w = r % per_stage
  return { pp = r // per_stage, tp = w % mg.tp, dp = w // mg.tp, etp = w % mg.etp, ep = (w // mg.etp) % mg.ep,
    edp = w // (mg.etp * mg.ep) }
end
M.coords = coords

-- Megatron tensors (MT): one per parameter of the unsharded model, global layer numbers. Fields: key
-- (a name with the global layer, unique), rows, cols, one_d, split ("col": row chunks, "fc1": [gate;
-- up] stride 2, "row": column chunks, "rep"), group ("tp", "etp" or nil), where ("first", "last",
-- "layer"), layer (global), mtp (K), expert (global id), kind ("P" or "B"), dtype, and name(local
-- layer, local expert) the rank-local name; runs: { hf, hf0, n, mt0 } HF rows that land in it.
local function builder(plan, m, mg)
  local tr = plan.trainer
  local te = mg.spec == "te"
  local norm_dt = te and tr.dtype or "fp32"
  local mla = m.q_lora_rank ~= nil
  local L = m.layers
  local per_stage = L // mg.pp
  local mts, by_key = {}, {}
  local B = {}
  function B.mt(key, t)
    local x = by_key[key]
    if x then return x end
    t.key, t.runs = key, {}
    t.kind = t.kind or "P"
    by_key[key] = t
    mts[#mts + 1] = t
    return t
  end
  -- where layer l lives and its local name prefix
  local function layer_at(l)
    if l >= L then return { where = "last", mtp = l - L, layer = l } end
    return { where = "layer", stage = l // per_stage, layer = l, loc = l % per_stage }
  end
  local function prefix(at, own) -- own: an MTP block's own module (enorm, eh_proj, ...)
    if at.mtp then return own and ("mtp.layers.%d."):format(at.mtp) or ("mtp.layers.%d.transformer_layer."):format(at.mtp) end
    return ("decoder.layers.%d."):format(at.loc)
  end
  local vp = U.align(m.vocab, mg.vocab_divisible * mg.tp)
  mg.padded_vocab = vp

  -- map one HF source (name, rows) to MT runs; returns nil for a tensor Megatron does not hold
  function B.map(s)
    local name = s.name
    if name == "model.embed_tokens.weight" or name == "lm_head.weight" then
      local first = name == "model.embed_tokens.weight"
      local mname = first and "embedding.word_embeddings.weight" or "output_layer.weight"
      local t = B.mt(mname, { rows = vp, cols = s.cols, split = "col", group = "tp", where = first and "first" or "last",
        dtype = tr.dtype, name = function() return mname end })
      return { { t = t, hf0 = 0, n = s.rows, mt0 = 0 } }
    end
    if name == "model.norm.weight" then
      local t = B.mt("decoder.final_layernorm.weight", { rows = s.rows, cols = 1, one_d = true, split = "rep",
        where = "last", dtype = norm_dt, name = function() return "decoder.final_layernorm.weight" end })
      return { { t = t, hf0 = 0, n = s.rows, mt0 = 0 } }
    end
    local l, rest = name:match("^model%.layers%.(%d+)%.(.+)$")
    if not l then return nil end
    l = tonumber(l)
    local at = layer_at(l)
    local moe = s.layer and m.experts and (m.first_dense == nil or l >= m.first_dense)
    local function mk(local_name, t, own)
      t.where, t.stage, t.layer, t.mtp = at.where, at.stage, l, at.mtp
      t.cols = t.cols or s.cols
      local pre = prefix(at, own)
      t.name = t.name or function() return pre .. local_name end
      return B.mt(("L%d.%s"):format(l, local_name), t)
    end
    local function whole(local_name, t, own)
      t.rows = t.rows or s.rows
      if t.one_d == nil then t.one_d = #s.shape == 1 end
      if t.one_d then t.cols = 1 end
      return { { t = mk(local_name, t, own), hf0 = 0, n = s.rows, mt0 = 0 } }
    end
    local function norm(local_name) return whole(local_name, { split = "rep", dtype = norm_dt }) end
    local a = rest:match("^self_attn%.(.+)$")
    if a then
      if a == "q_proj.weight" or a == "k_proj.weight" or a == "v_proj.weight" then
        local G, Q, d = m.kv_heads, m.heads, m.head_dim
        local qpg = Q // G
        local t = mk("self_attention.linear_qkv.weight", { rows = G * (qpg + 2) * d, split = "col", group = "tp",
          dtype = tr.dtype })
        local runs = {}
        for g = 0, G - 1 do
          local base = g * (qpg + 2) * d
          if a == "q_proj.weight" then runs[#runs + 1] = { t = t, hf0 = g * qpg * d, n = qpg * d, mt0 = base }
          elseif a == "k_proj.weight" then runs[#runs + 1] = { t = t, hf0 = g * d, n = d, mt0 = base + qpg * d }
          else runs[#runs + 1] = { t = t, hf0 = g * d, n = d, mt0 = base + (qpg + 1) * d } end
        end
        return runs
      end
      if a == "q_norm.weight" then return norm("self_attention.q_layernorm.weight") end
      if a == "k_norm.weight" then return norm("self_attention.k_layernorm.weight") end
      if a == "o_proj.weight" then
        return whole("self_attention.linear_proj.weight", { split = "row", group = "tp", dtype = tr.dtype })
      end
      local down = te and { split = "rep", dtype = tr.dtype } or { split = "col", group = "tp", dtype = tr.dtype }
      if a == "q_a_proj.weight" then return whole("self_attention.linear_q_down_proj.weight", down) end
      if a == "kv_a_proj_with_mqa.weight" then return whole("self_attention.linear_kv_down_proj.weight", down) end
      if a == "q_b_proj.weight" then
        return whole("self_attention.linear_q_up_proj.weight", { split = "col", group = "tp", dtype = tr.dtype })
      end
      if a == "kv_b_proj.weight" then
        return whole("self_attention.linear_kv_up_proj.weight", { split = "col", group = "tp", dtype = tr.dtype })
      end
      if a == "q_a_layernorm.weight" then
        return norm(te and "self_attention.linear_q_up_proj.layer_norm_weight" or "self_attention.q_layernorm.weight")
      end
      if a == "kv_a_layernorm.weight" then
        return norm(te and "self_attention.linear_kv_up_proj.layer_norm_weight" or "self_attention.kv_layernorm.weight")
      end
      local ix = a:match("^indexer%.(.+)$")
      if ix then
        local nm = ({ ["wq_b.weight"] = "linear_wq_b.weight", ["wk.weight"] = "linear_wk.weight",
          ["weights_proj.weight"] = "linear_weights_proj.weight", ["k_norm.weight"] = "k_norm.weight",
          ["k_norm.bias"] = "k_norm.bias" })[ix]
        if nm then
          return whole("self_attention.core_attention.indexer." .. nm,
            { split = "rep", dtype = nm:find("^k_norm") and norm_dt or tr.dtype })
        end
      end
      return nil
    end
    if rest == "input_layernorm.weight" then
      return norm((te and not mla) and "self_attention.linear_qkv.layer_norm_weight" or "input_layernorm.weight")
    end
    if rest == "post_attention_layernorm.weight" then
      return norm((te and not moe) and "mlp.linear_fc1.layer_norm_weight" or "pre_mlp_layernorm.weight")
    end
    local function fc1(local_name, group, I, half)
      local t = mk(local_name, { rows = 2 * I, split = "fc1", group = group, dtype = tr.dtype })
      return { { t = t, hf0 = 0, n = I, mt0 = half * I } }
    end
    if rest == "mlp.gate_proj.weight" then return fc1("mlp.linear_fc1.weight", "tp", s.rows, 0) end
    if rest == "mlp.up_proj.weight" then return fc1("mlp.linear_fc1.weight", "tp", s.rows, 1) end
    if rest == "mlp.down_proj.weight" then
      return whole("mlp.linear_fc2.weight", { split = "row", group = "tp", dtype = tr.dtype })
    end
    if rest == "mlp.shared_experts.gate_proj.weight" then return fc1("mlp.shared_experts.linear_fc1.weight", "tp", s.rows, 0) end
    if rest == "mlp.shared_experts.up_proj.weight" then return fc1("mlp.shared_experts.linear_fc1.weight", "tp", s.rows, 1) end
    if rest == "mlp.shared_experts.down_proj.weight" then
      return whole("mlp.shared_experts.linear_fc2.weight", { split = "row", group = "tp", dtype = tr.dtype })
    end
    if rest == "mlp.gate.weight" then return whole("mlp.router.weight", { split = "rep", dtype = tr.dtype }) end
    if rest == "mlp.gate.e_score_correction_bias" then
      local r = whole("mlp.router.expert_bias", { split = "rep", dtype = "fp32", kind = "B" })
      mk("mlp.router.local_tokens_per_expert", { rows = s.rows, cols = 1, one_d = true, split = "rep", dtype = "fp32",
        kind = "B", unsent = true })
      return r
    end
    local e, part = rest:match("^mlp%.experts%.(%d+)%.(.+)$")
    if e then
      e = tonumber(e)
      local per = m.experts // mg.ep
      local j = e % per
      local which = part == "down_proj.weight" and 2 or 1
      local local_name = te and ("mlp.experts.linear_fc%d.weight%d"):format(which, j)
        or ("mlp.experts.local_experts.%d.linear_fc%d.weight"):format(j, which)
      local key = ("mlp.experts.%d.linear_fc%d.weight"):format(e, which)
      local pre = prefix(at)
      local t = { group = "etp", dtype = tr.dtype, expert = e, ep = e // per,
        name = function() return pre .. local_name end }
      if which == 2 then
        t.split, t.rows = "row", s.rows
        return { { t = mk(key, t), hf0 = 0, n = s.rows, mt0 = 0 } }
      end
      t.split, t.rows = "fc1", 2 * s.rows
      return { { t = mk(key, t), hf0 = 0, n = s.rows, mt0 = part == "up_proj.weight" and s.rows or 0 } }
    end
    if at.mtp then
      if rest == "eh_proj.weight" then return whole("eh_proj.weight", { split = "col", group = "tp", dtype = tr.dtype }, true) end
      if rest == "enorm.weight" or rest == "hnorm.weight" then
        return whole(rest, { split = "rep", dtype = norm_dt }, true)
      end
      if rest == "shared_head.norm.weight" then
        return whole("final_layernorm.weight", { split = "rep", dtype = norm_dt }, true)
      end
    end
    return nil -- e.g. DeepSeek-V3's MTP embed_tokens / shared_head.head: Megatron shares the model's
  end
  B.mts = mts
  return B
end

-- The group size and rank of an MT on a rank.
local function group_of(mg, t)
  if t.group == "tp" then return mg.tp end
  if t.group == "etp" then return mg.etp end
  return 1
end

local function local_shape(mg, t)
  local g = group_of(mg, t)
  local rows, cols = t.rows, t.cols
  if t.split == "col" or t.split == "fc1" then rows = rows // g elseif t.split == "row" then cols = cols // g end
  if t.one_d then return { rows }, rows, 1 end
  return { rows, cols }, rows, cols
end

-- Shard and local row of MT row x, and the first MT row past the run of rows contiguous with it.
local function map_row(mg, t, x)
  local g = group_of(mg, t)
  if t.split == "col" then
    local per = t.rows // g
    return x // per, x % per, (x // per + 1) * per
  elseif t.split == "fc1" then
    local I = t.rows // 2
    local per = I // g
    local half, i = x // I, x % I
    return i // per, half * per + i % per, half * I + (i // per + 1) * per
  end
  return nil, x, t.rows
end

-- Ranks that hold shard `shard` of MT t.
local function holders(mg, t, shard)
  local out = {}
  local stage = t.where == "first" and 0 or (t.where == "last" and mg.pp - 1) or t.stage
  for r = 0, mg.world - 1 do
    local c = coords(mg, r)
    local ok = c.pp == stage
    if ok and t.group == "tp" then ok = c.tp == shard end
    if ok and t.group == "etp" then ok = c.etp == shard and c.ep == t.ep end
    if ok then out[#out + 1] = r end
  end
  return out
end

-- Check the mesh against the model (clear errors), before any mapping.
local function check_model(plan, m, mg, site_of)
  local function fail(key, fmt, ...)
    U.fail(site_of({ "trainer", "megatron", key }), "plan '%s': trainer.megatron." .. key .. ": " .. fmt, plan.name, ...)
  end
  local L = m.layers
  if L % mg.pp ~= 0 then fail("pp", "pp %d does not divide the %d layers of model '%s'", mg.pp, L, m.name) end
  if m.heads % mg.tp ~= 0 then fail("tp", "tp %d does not divide the %d attention heads of model '%s'", mg.tp, m.heads, m.name) end
  if m.kv_heads and m.kv_heads % mg.tp ~= 0 and mg.tp % m.kv_heads ~= 0 then
    fail("tp", "tp %d does not divide the %d query groups (kv_heads) of model '%s', nor they it", mg.tp, m.kv_heads, m.name)
  end
  if m.experts then
    if m.experts % mg.ep ~= 0 then fail("ep", "ep %d does not divide the %d experts of model '%s'", mg.ep, m.experts, m.name) end
    if m.moe_intermediate % mg.etp ~= 0 then
      fail("etp", "etp %d does not divide moe_intermediate %d of model '%s'", mg.etp, m.moe_intermediate, m.name)
    end
  elseif mg.ep ~= 1 or mg.etp ~= mg.tp then
    fail("ep", "model '%s' has no experts: ep must be 1 and etp unset", m.name)
  end
  if m.intermediate and m.intermediate % mg.tp ~= 0 then
    fail("tp", "tp %d does not divide intermediate %d of model '%s'", mg.tp, m.intermediate, m.name)
  end
  if m.q_lora_rank and mg.spec ~= "te" then
    if m.q_lora_rank % mg.tp ~= 0 or (m.kv_lora_rank + m.qk_rope_head_dim) % mg.tp ~= 0 then
      fail("tp", "the local spec splits linear_q_down_proj [%d] and linear_kv_down_proj [%d] rows over tp %d",
        m.q_lora_rank, m.kv_lora_rank + m.qk_rope_head_dim, mg.tp)
    end
  end
end

-- Retarget every destination segment from HF sources to the rank-local Megatron parameters; returns
-- the new source list (one per parameter shard that some destination reads, on its sending rank) and
-- the per-rank listing of everything each rank holds.
function M.retarget(plan, model, site_of)
  local m, mg = plan.__model, plan.trainer.megatron
  check_model(plan, m, mg, site_of)
  local B = builder(plan, m, mg)
  local runs_of = {}
  for _, s in ipairs(model.srcs) do runs_of[s] = B.map(s) or false end
  -- instances: one MT shard; created on first use
  local inst, inst_list = {}, {}
  local function get_inst(t, shard)
    local k = t.key .. "#" .. (shard or 0)
    local x = inst[k]
    if not x then
      x = { t = t, shard = shard or 0, w = 0, order = #inst_list }
      inst[k] = x
      inst_list[#inst_list + 1] = x
    end
    return x
  end
  for _, d in ipairs(model.dsts) do
    local out = {}
    local es = U.dtypes[d.dtype].size * #d.twins
    for _, seg in ipairs(d.segs) do
      local runs = runs_of[seg.src]
      if not runs then
        U.fail(seg.src.site, "plan '%s': tensor '%s' (read by '%s'): no Megatron-core parameter holds it", plan.name,
          seg.src.name, d.name)
      end
      local a, b = seg.srow0, seg.srow0 + seg.srows
      local new = {}
      for _, r in ipairs(runs) do
        local lo, hi = math.max(a, r.hf0), math.min(b, r.hf0 + r.n)
        local x = lo
        while x < hi do
          local t = r.t
          local mx = r.mt0 + (x - r.hf0)
          local shard, lrow, stop = map_row(mg, t, mx)
          local n = math.min(hi - x, stop - mx)
          local scol0 = seg.scol0
          if t.split == "row" then
            local per = t.cols // group_of(mg, t)
            shard = seg.scol0 // per
            if (seg.scol0 + seg.scols - 1) // per ~= shard then
              U.fail(site_of({ "trainer", "megatron", "tp" }), "plan '%s': tensor '%s' on receiver position %d: "
                .. "columns [%d, %d) of '%s' span Megatron %s ranks %d and %d (%d columns each); a destination row "
                .. "drawing on two trainer ranks is not supported (give the engine at least the trainer's split)",
                plan.name, d.name, d.tp_rank, seg.scol0, seg.scol0 + seg.scols, t.name(), t.group, shard,
                (seg.scol0 + seg.scols - 1) // per, per)
            end
            scol0 = seg.scol0 - shard * per
          end
          local x_inst = get_inst(t, shard)
          x_inst.w = x_inst.w + n * seg.scols * es
          new[#new + 1] = { inst = x_inst, srow0 = lrow, srows = n, scol0 = scol0, scols = seg.scols,
            irow0 = seg.irow0 + (x - a), item = seg.item, name = t.key, hf = seg.src.name }
          x = x + n
        end
      end
      table.sort(new, function(p, q) return p.irow0 < q.irow0 end)
      local covered = 0
      for _, p in ipairs(new) do covered = covered + p.srows end
      if covered ~= seg.srows then
        U.fail(seg.src.site, "plan '%s': tensor '%s': %d of its rows [%d, %d) map to Megatron parameters, not %d",
          plan.name, seg.src.name, covered, a, b, seg.srows)
      end
      -- FP8: a 128-row block of the destination must come from one Megatron shard
      if d.dtype == "fp8" then
        for k = 2, #new do
          local p, q = new[k - 1], new[k]
          if p.inst ~= q.inst and q.irow0 % U.BLOCK ~= 0 then
            U.fail(site_of({ "trainer", "megatron" }), "plan '%s': tensor '%s' on receiver position %d: rows %d.. come "
              .. "from '%s' (%s shard %d) and rows %d.. from '%s' (%s shard %d) inside one 128-row FP8 block; no "
              .. "Megatron rank holds both to quantize it (FSDP2 gathers such tensors on one rank; a Megatron trainer "
              .. "has no rank that holds the whole tensor)", plan.name, d.name, d.tp_rank, p.irow0, p.inst.t.name(),
              p.inst.t.group or "replicated", p.inst.shard, q.irow0, q.inst.t.name(), q.inst.t.group or "replicated",
              q.inst.shard)
          end
        end
      end
      for _, p in ipairs(new) do out[#out + 1] = p end
    end
    d.segs = out
  end
  -- holders, then the sending rank of each used instance: single holders first, then longest first
  local load = {}
  for r = 0, mg.world - 1 do load[r] = 0 end
  local multi = {}
  for _, x in ipairs(inst_list) do
    x.holders = holders(mg, x.t, x.shard)
    if #x.holders == 1 then x.rank = x.holders[1]; load[x.rank] = load[x.rank] + x.w
    else multi[#multi + 1] = x end
  end
  table.sort(multi, function(p, q) if p.w ~= q.w then return p.w > q.w end return p.order < q.order end)
  for _, x in ipairs(multi) do
    local best = x.holders[1]
    for _, r in ipairs(x.holders) do if load[r] < load[best] then best = r end end
    x.rank = best
    load[best] = load[best] + x.w
  end
  -- sources: by sending rank, then MT order, then shard
  local mt_order = {}
  for i, t in ipairs(B.mts) do mt_order[t] = i end
  table.sort(inst_list, function(p, q)
    if p.rank ~= q.rank then return p.rank < q.rank end
    if p.t ~= q.t then return mt_order[p.t] < mt_order[q.t] end
    return p.shard < q.shard
  end)
  local srcs = {}
  for _, x in ipairs(inst_list) do
    local t = x.t
    local shape, rows, cols = local_shape(mg, t)
    local loc = t.layer and t.layer % (m.layers // mg.pp)
    local name = t.name(loc)
    x.src = { name = name, shape = shape, rows = rows, cols = cols, dtype = t.dtype, layer = t.layer, id = #srcs,
      role = name:gsub("^decoder%.layers%.%d+%.", ""):gsub("^mtp%.layers%.%d+%.", "mtp."), holder = x.rank,
      expert = t.expert ~= nil, site = plan.__site, mg_shard = x.shard, mg_key = t.key }
    srcs[#srcs + 1] = x.src
  end
  for _, d in ipairs(model.dsts) do
    for _, seg in ipairs(d.segs) do seg.src = seg.inst.src; seg.name = seg.src.name; seg.inst = nil end
  end
  model.hf_srcs = model.srcs
  model.srcs = srcs
  model.mg_listing = M.listing(plan, B, mg)
  return srcs
end

-- Everything each rank holds: { [rank] = { { kind, name, dtype, shape }, ... } } in MT order.
function M.listing(plan, B, mg)
  local m = plan.__model
  local per = {}
  for r = 0, mg.world - 1 do per[r] = {} end
  local has_mtp = false
  for _, t in ipairs(B.mts) do
    has_mtp = has_mtp or t.mtp ~= nil
    local g = group_of(mg, t)
    for shard = 0, (t.group and g or 1) - 1 do
      for _, r in ipairs(holders(mg, t, shard)) do
        local shape = local_shape(mg, t)
        local loc = t.layer and t.layer % (m.layers // mg.pp)
        local l = per[r]
        l[#l + 1] = { kind = t.kind, name = t.name(loc), dtype = t.dtype, shape = shape }
      end
    end
  end
  -- the last stage of a pipeline with an MTP block holds a copy of the word embeddings
  if has_mtp and mg.pp > 1 then
    for r = 0, mg.world - 1 do
      local c = coords(mg, r)
      if c.pp == mg.pp - 1 then
        local l = per[r]
        l[#l + 1] = { kind = "P", name = "embedding.word_embeddings.weight", dtype = plan.trainer.dtype,
          shape = { mg.padded_vocab // mg.tp, m.hidden }, copy = true }
      end
    end
  end
  return per
end

-- The listing as text: "# rank R tp T pp P ep E etp X dp D" then "P|B name dtype [shape]" lines.
local DT = { fp32 = "float32", bf16 = "bfloat16" }
function M.listing_text(plan, model)
  local mg = plan.trainer.megatron
  local L = {}
  for r = 0, mg.world - 1 do
    local c = coords(mg, r)
    L[#L + 1] = ("# rank %d tp %d pp %d ep %d etp %d dp %d"):format(r, c.tp, c.pp, c.ep, c.etp, c.dp)
    for _, e in ipairs(model.mg_listing[r]) do
      L[#L + 1] = ("%s %s %s [%s]"):format(e.kind, e.name, DT[e.dtype], table.concat(e.shape, ", "))
    end
  end
  return table.concat(L, "\n") .. "\n"
end

return M
