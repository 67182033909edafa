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
-- The family API that lists them is gen/family.lua.
local U = require("util")
local Family = require("family")
local D = {}

local BLOCK = U.BLOCK

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
  local tp, ep = plan.inference.tp, plan.inference.ep
  local size = plan.inference.size -- GPUs per replica: tp, or ep with data-parallel attention
  local b = Family.build(plan)
  local specs = b.specs

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
      local dt = Family.dst_dtype(spec, spec.parts, plan, site)
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
  local model = { srcs = b.srcs, dsts = dsts, specs = specs, src_by_name = b.src_by_name, derived = derived,
    refresh = refresh, kept = b.kept, has_mtp = b.has_mtp }
  -- a Megatron trainer: segments read the rank-local Megatron parameters instead (gen/megatron.lua)
  if plan.trainer.megatron then require("megatron").retarget(plan, model, plan.__site_of) end
  return model
end

return D
