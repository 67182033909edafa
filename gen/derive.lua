-- derive.lua: run a model's family to list the source tensors (the trainer's parameters, HF
-- transformers names, in the dtype and shape the plan's trainer section gives) and the destination
-- tensors (engine kernel format) of every GPU of one replica (position q: TP rank q % tp, EP rank
-- q), with the segments that place source rows into each destination.
--
-- A source is addressed as a 2-D view [rows, cols] (cols = last dim). A destination part is a view
-- of rows of a source: the whole tensor, or one expert's gate/up/down rows of a fused [E, 2I, H] /
-- [E, H, I] tensor. A destination is items x [item_rows, cols] row-major (items = local experts, or
-- 1). A segment copies source rows [srow0, +srows), cols [scol0, +cols) to rows [irow0, +srows) of
-- item `item`.
local U = require("util")
local L = require("load")
local D = {}

local BLOCK = U.BLOCK

local function check_shape(site, name, shape, max_dims)
  if type(shape) ~= "table" or #shape < 1 or #shape > max_dims then
    U.fail(site, "tensor '%s': shape must have 1 to %d dimensions", name, max_dims)
  end
  for i, v in ipairs(shape) do
    if math.type(v) ~= "integer" or v < 1 then
      U.fail(site, "tensor '%s': dimension %d is %s, not a positive integer", name, i, tostring(v))
    end
  end
end

local function resolve_dtype(spec, parts, plan, site)
  local dt = spec.dtype
  if dt == "weight" then
    if not plan.quant.fp8 then return "bf16" end
    for _, p in ipairs(parts) do
      if not p.view.src.fp8 and not spec.fp8 then return "bf16" end -- spec.fp8: the engine quantizes it anyway
    end
    for _, pat in ipairs(plan.quant.exclude) do
      if spec.name:find(pat) then return "bf16" end
    end
    return "fp8"
  end
  if not U.dtypes[dt] or dt == "fp8" then
    U.fail(site, "tensor '%s': unknown dtype '%s' (bf16, fp32 or weight)", spec.name, tostring(dt))
  end
  return dt
end

-- Rows (or cols, for row splits) [a, a+n) of one part on TP rank r, and the rows the destination
-- has for it (more than n where the engine pads: vocabulary rows to a multiple of pad_to, vLLM's
-- VocabParallelEmbedding: the padded vocabulary is split evenly, the last ranks' tails are padding).
local function part_range(spec, part, len, r, tp, site)
  if spec.pad_to then
    local padded = U.align(len, spec.pad_to)
    if padded % tp ~= 0 then
      U.fail(site, "tensor '%s': %d rows padded to %d (a multiple of %d) are not divisible by tp %d", spec.name,
        len, padded, spec.pad_to, tp)
    end
    local per = padded // tp
    local a = r * per
    local n = math.min(len, a + per) - a
    if n <= 0 then U.fail(site, "tensor '%s': tp rank %d holds only padding rows", spec.name, r) end
    return a, n, per
  end
  if spec.split == "rep" or tp == 1 then return 0, len end
  if part.heads then
    local h = part.heads
    if len % h ~= 0 then U.fail(site, "tensor '%s': %d rows are not %d heads", part.view.name, len, h) end
    if h % tp == 0 then return r * (len // tp), len // tp end
    if part.replicate and tp % h == 0 then
      local head = r * h // tp
      return head * (len // h), len // h
    end
    U.fail(site, "tensor '%s': tp %d does not divide its %d heads", spec.name, tp, h)
  end
  if len % tp ~= 0 then
    U.fail(site, "tensor '%s': %d %s not divisible by tp %d", spec.name, len,
      spec.split == "row" and "columns" or "rows", tp)
  end
  return r * (len // tp), len // tp
end

-- Build the item list of one destination on TP rank r: { { {src,srow0,srows,scol0,scols}, ... } }.
local function items_of(spec, r, tp, ep, site, ep_rank, placement)
  local groups = {}
  if spec.expert then
    local E = spec.experts
    local first, n, step = 0, E, 1
    if ep > 1 then -- vLLM: E//ep each, the remainder to the first ranks
      local base, rem = E // ep, E % ep
      n = base + (ep_rank < rem and 1 or 0)
      if placement == "round_robin" then first, step = ep_rank, ep -- experts r, r+ep, ...
      else first = ep_rank * base + math.min(ep_rank, rem) end -- linear: a contiguous block
      if n == 0 then U.fail(site, "tensor '%s': ep %d exceeds %d experts", spec.name, ep, E) end
    end
    for e = first, first + (n - 1) * step, step do
      local parts = {}
      for i, p in ipairs(spec.parts) do parts[i] = { view = p.by_expert[e + 1], heads = p.heads } end
      groups[#groups + 1] = parts
    end
  else
    groups[1] = spec.parts
  end
  local split_tp = (spec.expert and ep > 1) and 1 or tp
  local items = {}
  for _, parts in ipairs(groups) do
    local segs = {}
    for _, p in ipairs(parts) do
      local v = p.view
      local seg = { src = v.src, name = v.name, srow0 = v.row0, srows = v.rows, scol0 = 0, scols = v.cols }
      if spec.split == "row" then
        seg.scol0, seg.scols = part_range(spec, p, v.cols, r, split_tp, site)
      else
        local a, n, drows = part_range(spec, p, v.rows, r, split_tp, site)
        seg.srow0, seg.srows, seg.drows = v.row0 + a, n, drows
      end
      segs[#segs + 1] = seg
    end
    items[#items + 1] = segs
  end
  return items, split_tp
end

function D.derive(plan)
  local m = plan.__model
  local tp, ep = plan.inference.tp, plan.inference.ep
  local size = plan.inference.size -- GPUs per replica: tp, or ep with data-parallel attention
  local tr = plan.trainer
  local srcs, by_name, specs = {}, {}, {}
  local expert_views = {} -- ["prefix.e.part"] = view of one expert's rows
  local kept = {}         -- destinations of MTP layers the trainer does not have: left as they are
  local layer, in_mtp, has_mtp = nil, false, false
  local except_used = {}
  local T = {}

  function T.need(t, fields, min)
    local spec = {}
    for i, f in ipairs(fields) do spec[i] = { f, "int", min = min } end
    t.__kind = "model"
    L.need(t, spec)
  end
  function T.fail(fmt, ...) U.fail(m.__site, "model '%s': " .. fmt, m.name, ...) end
  -- T.layer(l, mtp): what follows belongs to decoder layer l (nil: outside the layers); mtp marks a
  -- multi-token-prediction layer, which only a trainer with trainer.mtp = true holds.
  function T.layer(l, mtp) layer, in_mtp = l, mtp or false end

  -- The dtype the trainer holds a parameter in: the first dtype_except pattern that matches its
  -- name, else the family's fixed dtype (e.g. an fp32 router bias), else trainer.dtype.
  local function src_dtype(name, fixed, site)
    for k, e in ipairs(tr.dtype_except) do
      local ok, hit = pcall(string.find, name, e[1])
      if not ok then
        U.fail(e.site, "plan '%s': trainer.dtype_except[%d]: bad Lua pattern '%s' (%s)", plan.name, k, e[1],
          tostring(hit):gsub("^.-:%d+: ", ""))
      end
      if hit then except_used[k] = true; return e[2] end
    end
    if fixed ~= nil and (not U.dtypes[fixed] or fixed == "fp8") then
      U.fail(site, "tensor '%s': unknown dtype '%s' (bf16 or fp32)", name, tostring(fixed))
    end
    return fixed or tr.dtype
  end

  local function add_src(name, shape, opts, site, role)
    opts = opts or {}
    check_shape(site, name, shape, 3)
    if by_name[name] then
      U.fail(site, "duplicate tensor '%s' (first declared at %s:%d)", name, by_name[name].site.file,
        by_name[name].site.line)
    end
    local rows = shape[1]
    for k = 2, #shape - 1 do rows = rows * shape[k] end
    local s = {
      name = name, shape = shape, rows = rows, cols = #shape > 1 and shape[#shape] or 1,
      dtype = src_dtype(name, opts.dtype, site), fp8 = opts.fp8 or false, layer = layer, site = site,
      role = role or name:gsub("^model%.layers%.%d+%.", ""), mtp = in_mtp,
    }
    s.view = { src = s, name = name, row0 = 0, rows = s.rows, cols = s.cols, shape = shape }
    by_name[name] = s
    if in_mtp then has_mtp = true end
    if in_mtp and not tr.mtp then
      s.absent = true -- not in the trainer: destinations that read it are kept
    else
      s.id = #srcs
      srcs[#srcs + 1] = s
    end
    return s
  end

  function T.src(name, shape, opts) add_src(name, shape, opts, U.site(2)) end

  -- The experts prefix.<e>.<part> for e in [0, E). parts = { { name, shape, fused = fused_name }, ... }.
  -- trainer.experts "per_expert" (transformers 4.x modules): one tensor per expert and part, in
  -- checkpoint order (expert-major). "fused" (transformers >= 5): one tensor per fused name, parts
  -- of that name stacked along dim 1 in order: prefix.<fused> [E, sum of their rows, cols].
  function T.expert_srcs(prefix, E, parts, opts)
    local site = U.site(2)
    local role_prefix = prefix:gsub("^model%.layers%.%d+%.", "")
    local o = { fp8 = opts and opts.fp8, dtype = opts and opts.dtype }
    if tr.experts == "per_expert" then
      for e = 0, E - 1 do
        for _, part in ipairs(parts) do
          local name = ("%s.%d.%s"):format(prefix, e, part[1])
          local src = add_src(name, part[2], o, site, role_prefix .. "." .. part[1])
          src.expert, expert_views[name] = true, src.view
        end
      end
      return
    end
    local fused, order = {}, {}
    for _, part in ipairs(parts) do
      local f = part.fused
      if type(f) ~= "string" then U.fail(site, "expert part '%s' of '%s': missing field 'fused'", part[1], prefix) end
      check_shape(site, prefix .. "." .. part[1], part[2], 2)
      local g = fused[f]
      if not g then g = { rows = 0, cols = part[2][2] }; fused[f] = g; order[#order + 1] = f end
      if part[2][2] ~= g.cols then
        U.fail(site, "expert part '%s' has %d columns, '%s' has %d", part[1], part[2][2], f, g.cols)
      end
      part.off, g.rows = g.rows, g.rows + part[2][1]
    end
    for _, f in ipairs(order) do
      local g = fused[f]
      g.src = add_src(prefix .. "." .. f, { E, g.rows, g.cols }, o, site)
      g.src.expert = true
    end
    for e = 0, E - 1 do
      for _, part in ipairs(parts) do
        local g = fused[part.fused]
        expert_views[("%s.%d.%s"):format(prefix, e, part[1])] = { src = g.src, row0 = e * g.rows + part.off,
          rows = part[2][1], cols = g.cols, shape = part[2],
          name = ("%s[%d] (%s)"):format(g.src.name, e, part[1]) }
      end
    end
  end

  -- A destination every part of which the trainer holds is derived; one reading a part of an MTP
  -- layer the trainer lacks is kept as the engine has it.
  local function add_spec(name, spec, site)
    if spec.split ~= "col" and spec.split ~= "row" and spec.split ~= "rep" then
      U.fail(site, "tensor '%s': split must be col, row or rep", name)
    end
    if type(spec.parts) ~= "table" or #spec.parts == 0 then
      U.fail(site, "tensor '%s': missing field 'parts'", name)
    end
    spec.aliases = spec.aliases or {}
    for _, a in ipairs(spec.aliases) do
      if type(a) ~= "string" or a:find(",") then U.fail(site, "tensor '%s': alias '%s' is not a name", name, tostring(a)) end
    end
    if spec.pad_to and (spec.split ~= "col" or #spec.parts ~= 1 or spec.expert or spec.dtype ~= "bf16") then
      U.fail(site, "tensor '%s': pad_to needs one bf16 part split by rows (col)", name)
    end
    spec.name, spec.site, spec.layer = name, site, layer
    for _, p in ipairs(spec.parts) do
      if p.view.src.absent then
        spec.kept_dtype = resolve_dtype(spec, spec.parts, plan, site)
        kept[#kept + 1] = spec
        return
      end
    end
    specs[#specs + 1] = spec
  end

  function T.dst(name, spec)
    local site = U.site(2)
    local parts = {}
    for i, p in ipairs(spec.parts or {}) do
      if type(p) == "string" then p = { src = p } end
      local s = by_name[p.src]
      if not s then U.fail(site, "tensor '%s': unknown source tensor '%s'", name, tostring(p.src)) end
      parts[i] = { view = s.view, heads = p.heads, replicate = p.replicate }
    end
    spec.parts = parts
    add_spec(name, spec, site)
  end

  function T.expert_dst(name, prefix, E, spec)
    local site = U.site(2)
    local parts = {}
    for i, pname in ipairs(spec.parts or {}) do
      local by = {}
      for e = 0, E - 1 do
        local v = expert_views[("%s.%d.%s"):format(prefix, e, pname)]
        if not v then U.fail(site, "tensor '%s': unknown source tensor '%s.%d.%s'", name, prefix, e, pname) end
        by[e + 1] = v
      end
      parts[i] = { view = by[1], by_expert = by }
    end
    spec.parts, spec.expert, spec.experts = parts, true, E
    add_spec(name, spec, site)
  end

  local ok, err = pcall(m.__family.build, m, T, plan.engine)
  if not ok then error(err, 0) end
  for k, e in ipairs(tr.dtype_except) do
    if not except_used[k] then
      U.fail(e.site, "plan '%s': trainer.dtype_except[%d] pattern '%s' matches no tensor of model '%s'", plan.name, k,
        e[1], m.name)
    end
  end
  if tr.mtp and not has_mtp then
    U.fail(plan.__site, "plan '%s': trainer.mtp is true but model '%s' has no MTP layers", plan.name, m.name)
  end

  -- Expand every destination on every TP rank; scale tensors follow their weight.
  local dsts = {}
  -- With data-parallel attention (ep > tp) the non-expert tensors of position q equal those of
  -- position q % tp: those twins get no segments of their own; their canonical tensor's slots are
  -- written to every twin.
  local canon = {}
  for q = 0, size - 1 do
    local r = q % tp -- TP rank of position q; its EP rank is q
    for _, spec in ipairs(specs) do
      local site = spec.site
      local twin_of = (q >= tp and not spec.expert) and canon[spec][r] or nil
      local dt = resolve_dtype(spec, spec.parts, plan, site)
      local items, split_tp = items_of(spec, r, tp, ep, site, q, plan.engine.expert_placement)
      local cols
      local item_rows = 0
      for k, seg in ipairs(items[1]) do
        local c = seg.scols
        if cols and c ~= cols then
          U.fail(site, "tensor '%s': part '%s' has %d columns, part 1 has %d", spec.name, seg.name, c, cols)
        end
        cols = c
        seg.irow0 = item_rows
        item_rows = item_rows + seg.srows
        if dt == "fp8" and k < #items[1] and seg.srows % BLOCK ~= 0 then
          U.fail(site, "tensor '%s': fp8 part '%s' has %d rows per rank, not a multiple of %d "
            .. "(a 128x128 block would straddle two parts)", spec.name, seg.name, seg.srows, BLOCK)
        end
        if dt == "fp8" and split_tp > 1 and spec.split == "col" and seg.srows % BLOCK ~= 0 then
          U.fail(site, "tensor '%s': fp8 with tp %d gives %d rows per rank from '%s', not a multiple of %d",
            spec.name, tp, seg.srows, seg.name, BLOCK)
        end
        if dt == "fp8" and split_tp > 1 and spec.split == "row" and seg.scols % BLOCK ~= 0 then
          U.fail(site, "tensor '%s': fp8 with tp %d gives %d columns per rank, not a multiple of %d",
            spec.name, tp, seg.scols, BLOCK)
        end
      end
      for j = 2, #items do
        local off = 0
        for _, seg in ipairs(items[j]) do seg.irow0 = off; off = off + seg.srows end
      end
      local pad_rows = 0 -- trailing rows that hold no weight (never written)
      if spec.pad_to and items[1][1].drows then
        pad_rows = items[1][1].drows - item_rows
        item_rows = items[1][1].drows
      end
      local one_d = #spec.parts[1].view.shape == 1
      local shape
      if spec.expert then shape = { #items, item_rows, cols }
      elseif one_d then shape = { item_rows }
      else shape = { item_rows, cols } end
      local d = {
        name = spec.name, tp_rank = q, dtype = dt, shape = shape, items = #items, item_rows = item_rows,
        cols = cols, layer = spec.layer, spec = spec, derived = spec.derived, aliases = spec.aliases,
        pad_rows = pad_rows,
      }
      d.segs, d.twins = {}, { d }
      if twin_of then
        local tw = twin_of.twins
        tw[#tw + 1] = d
      else
        for j, segs in ipairs(items) do
          for _, seg in ipairs(segs) do
            seg.item = j - 1
            d.segs[#d.segs + 1] = seg
          end
        end
        if q < tp then
          canon[spec] = canon[spec] or {}
          canon[spec][r] = d
        end
      end
      d.bytes = d.items * d.item_rows * d.cols * U.dtypes[dt].size
      d.id = #dsts
      dsts[#dsts + 1] = d
      if dt == "fp8" then
        local sr, sc = U.ceil_div(item_rows, BLOCK), U.ceil_div(cols, BLOCK)
        local sname = spec.name:gsub("weight$", "weight_scale_inv")
        local sshape = spec.expert and { #items, sr, sc } or { sr, sc }
        local saliases = {}
        for i, a in ipairs(spec.aliases) do saliases[i] = (a:gsub("weight$", "weight_scale_inv")) end
        local s = {
          name = sname, tp_rank = q, dtype = "fp32", shape = sshape, items = #items, item_rows = sr,
          cols = sc, layer = spec.layer, weight = d, segs = {}, spec = spec, aliases = saliases, pad_rows = 0,
        }
        s.bytes = s.items * sr * sc * 4
        s.id = #dsts
        s.twins = { s }
        if twin_of then local tw = twin_of.scale.twins; tw[#tw + 1] = s end
        d.scale = s
        dsts[#dsts + 1] = s
      end
    end
  end
  -- Derived tensors: views the engine keeps of tensors it derives from destination tensors at load
  -- time. vLLM's MLA (MLAAttention.process_weights_after_loading) takes W = dequant(kv_b_proj).T,
  -- [lora, h*(nope+v)], views it as [lora, h, nope+v] and keeps W_UK_T = W[:, :, :nope].permute(1,2,0)
  -- [h, nope, lora] and W_UV = W[:, :, nope:].transpose(0,1) [h, lora, v]. For an fp8 kv_b_proj the
  -- dequantized W is a new bf16 storage, rebuilt by a refresh step after every complete version; for
  -- a bf16 kv_b_proj W is kv_b_proj itself (a transposed view), so the views change with its bytes.
  local derived, refresh = {}, {}
  for _, d in ipairs(dsts) do
    local dv = d.derived
    if dv and dv.kind == "mla_absorb" then
      local per_head = dv.qk_nope + dv.v_head
      if d.item_rows % per_head ~= 0 or d.cols ~= dv.kv_lora then
        U.fail(d.spec.site, "tensor '%s': [%d, %d] is not heads x (%d + %d) rows of %d columns", d.name,
          d.item_rows, d.cols, dv.qk_nope, dv.v_head, dv.kv_lora)
      end
      if plan.engine.name ~= "vllm" then
        U.fail(d.spec.site, "tensor '%s': no MLA layout for engine '%s'", d.name, plan.engine.name)
      end
      local h, nope, v, lora = d.item_rows // per_head, dv.qk_nope, dv.v_head, dv.kv_lora
      local rows = h * per_head
      local in_dst = d.dtype ~= "fp8"
      local storage -- derived id of the storage's first view
      local function add(name, shape, offset, stride)
        local t = { name = dv.prefix .. name, shape = shape, stride = stride, offset = offset, dtype = "bf16",
          tp_rank = d.tp_rank, id = #derived, layer = d.layer, bytes = rows * lora * 2,
          dst = in_dst and d or nil }
        storage = storage or t.id
        t.storage = storage
        derived[#derived + 1] = t
        return t
      end
      local uk, uv
      if in_dst then -- element (r, l) of kv_b_proj [rows, lora] at r*lora + l
        uk = add("W_UK_T", { h, nope, lora }, 0, { per_head * lora, lora, 1 })
        uv = add("W_UV", { h, lora, v }, nope * lora, { per_head * lora, 1, lora })
      else -- element (l, r) of W [lora, rows] at l*rows + r
        uk = add("W_UK_T", { h, nope, lora }, 0, { per_head, 1, rows })
        uv = add("W_UV", { h, lora, v }, nope, { per_head, rows, 1 })
        refresh[#refresh + 1] = { kind = 1, weight = d, scale = d.scale, uk = uk, uv = uv, heads = h,
          qk_nope = nope, v_head = v, kv_lora = lora, tp_rank = d.tp_rank, layer = d.layer }
      end
    end
  end
  return { srcs = srcs, dsts = dsts, specs = specs, src_by_name = by_name, derived = derived, refresh = refresh,
    kept = kept, has_mtp = has_mtp }
end

return D
