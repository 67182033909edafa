-- family.lua: the API a model family (models/families/*.lua) describes a model with, and the record
-- it leaves for gen/derive.lua. A family is a table with build(m, T, engine): m the model file's
-- table, engine the plan's engine section (gen/plan_keys.lua: w13, mtp, indexer_fusion, ...), T
-- the functions below. Every error names the family line that made the call.
--
--   T.need(m, fields, min)   model fields (names) that must be integers >= min (default 1); they
--                            become keys the model file may set
--   T.optional(m, name, ty)  an optional model field of Lua type ty (nil stays nil); a key too
--   T.fail(fmt, ...)         raise an error at the model's declaration: "model 'x': ..."
--   T.layer(l, mtp)          what follows belongs to decoder layer l (nil: outside the layers); mtp
--                            marks a multi-token-prediction layer, held only by a trainer with
--                            trainer.mtp = true
--   T.src(name, shape, opts) a source: one trainer parameter, shape of 1 to 3 dimensions (a 2-D
--                            view [rows, cols], cols the last); opts.fp8: a part the engine may
--                            hold in fp8 (T.dst "weight"); opts.dtype: its fixed dtype (bf16 or
--                            fp32, else trainer.dtype) unless trainer.dtype_except names it
--   T.expert_srcs(prefix, E, parts, opts)
--                            experts prefix.<e>.<part> for e in [0, E); parts = { { part, shape,
--                            fused = name }, ... }. trainer.experts "per_expert" (transformers 4.x):
--                            one source per expert and part, expert-major; "fused" (transformers >=
--                            5): one source prefix.<fused> [E, sum of its parts' rows, cols] per
--                            fused name, its parts stacked in order. opts as T.src
--   T.dst(name, spec)        a destination tensor (the engine's parameter): spec.parts = { source
--                            name or { src =, heads = H, replicate = bool }, ... } stacked along
--                            rows; spec.split "col" (rows split over TP; by heads where given),
--                            "row" (columns split) or "rep"; spec.dtype "bf16", "fp32" or "weight"
--                            (fp8 where quant.fp8 is set, every part is an fp8 source or spec.fp8
--                            is set, and no quant.exclude pattern names it; else bf16);
--                            optional spec.fp8 (quantized even from non-fp8 parts), spec.aliases
--                            (other names of the same storage), spec.pad_to (vocabulary rows padded
--                            to a multiple), spec.derived (views the engine derives, gen/derive.lua)
--   T.expert_dst(name, prefix, E, spec)
--                            a destination of E experts (items), each stacking the parts named in
--                            spec.parts of prefix.<e>; split over EP ranks when ep > 1, else TP
--
-- Record (F.build's result): srcs (the trainer's parameters, in declaration order, ids from 0),
-- src_by_name, specs (the destinations to derive, in declaration order), kept (destinations reading
-- an MTP layer the trainer lacks: left as the engine has them), has_mtp.
local U = require("util")
local Schema = require("keys")
local Keys = require("plan_keys")
local F = {}

function F.check_shape(site, name, shape, max_dims)
  if type(shape) ~= "table" or #shape < 1 or #shape > max_dims then
    U.fail(site, "tensor '%s': shape must have 1 to %d dimensions", name, max_dims)
  end
  for i, v in ipairs(shape) do
    if math.type(v) ~= "integer" or v < 1 then
      U.fail(site, "tensor '%s': dimension %d is %s, not a positive integer", name, i, tostring(v))
    end
  end
end

-- The dtype of destination `spec` reading `parts`: "weight" is fp8 where the plan quantizes, every
-- part is fp8 (or the spec asks for it) and no quant.exclude pattern names it; else bf16.
function F.dst_dtype(spec, parts, plan, site)
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

-- Where field `name` is set in the model file (its declaration when not found).
local function field_site(site, name)
  if not site or not site.text then return site end
  local at = site.text:find("[%s{,]" .. name .. "%s*=")
  if not at then return site end
  local _, line = site.text:sub(1, at):gsub("\n", "")
  return { file = site.file, line = line + 1 }
end

-- The API. Each function takes the record being built (b) and the site of the family's call.
local API = {}

function API.need(b, _, t, fields, min)
  for _, name in ipairs(fields) do
    if t == b.m then b.declared[#b.declared + 1] = name end
    local v = t[name]
    if v == nil then U.fail(t.__site, "model '%s': missing field '%s'", t.name or "?", name) end
    if math.type(v) ~= "integer" or v < (min or 1) then
      U.fail(field_site(t.__site, name), "model '%s': field '%s' must be an integer >= %d, got %s",
        t.name or "?", name, min or 1, tostring(v))
    end
  end
end

function API.optional(b, _, t, name, ty)
  if t == b.m then b.declared[#b.declared + 1] = name end
  if t[name] ~= nil and type(t[name]) ~= ty then
    U.fail(field_site(t.__site, name), "model '%s': field '%s' must be a %s", t.name or "?", name, ty)
  end
end

function API.fail(b, _, fmt, ...) U.fail(b.m.__site, "model '%s': " .. fmt, b.m.name, ...) end

function API.layer(b, _, l, mtp) b.layer, b.in_mtp = l, mtp or false end

-- The dtype the trainer holds a parameter in: the first dtype_except pattern that matches its
-- name, else the family's fixed dtype (e.g. an fp32 router bias), else trainer.dtype.
local function src_dtype(b, name, fixed, site)
  for k, e in ipairs(b.tr.dtype_except) do
    local ok, hit = pcall(string.find, name, e[1])
    if not ok then
      U.fail(e.site, "plan '%s': trainer.dtype_except[%d]: bad Lua pattern '%s' (%s)", b.plan.name, k, e[1],
        tostring(hit):gsub("^.-:%d+: ", ""))
    end
    if hit then b.except_used[k] = true; return e[2] end
  end
  if fixed ~= nil and (not U.dtypes[fixed] or fixed == "fp8") then
    U.fail(site, "tensor '%s': unknown dtype '%s' (bf16 or fp32)", name, tostring(fixed))
  end
  return fixed or b.tr.dtype
end

local function add_src(b, name, shape, opts, site, role)
  opts = opts or {}
  F.check_shape(site, name, shape, 3)
  local by_name = b.src_by_name
  if by_name[name] then
    U.fail(site, "duplicate tensor '%s' (first declared at %s:%d)", name, by_name[name].site.file,
      by_name[name].site.line)
  end
  local rows = shape[1]
  for k = 2, #shape - 1 do rows = rows * shape[k] end
  local s = {
    name = name, shape = shape, rows = rows, cols = #shape > 1 and shape[#shape] or 1,
    dtype = src_dtype(b, name, opts.dtype, site), fp8 = opts.fp8 or false, layer = b.layer, site = site,
    role = role or name:gsub("^model%.layers%.%d+%.", ""), mtp = b.in_mtp,
  }
  s.view = { src = s, name = name, row0 = 0, rows = s.rows, cols = s.cols, shape = shape }
  by_name[name] = s
  if b.in_mtp then b.has_mtp = true end
  if b.in_mtp and not b.tr.mtp then
    s.absent = true -- not in the trainer: destinations that read it are kept
  else
    s.id = #b.srcs
    b.srcs[#b.srcs + 1] = s
  end
  return s
end

function API.src(b, site, name, shape, opts) add_src(b, name, shape, opts, site) end

function API.expert_srcs(b, site, prefix, E, parts, opts)
  local role_prefix = prefix:gsub("^model%.layers%.%d+%.", "")
  local o = { fp8 = opts and opts.fp8, dtype = opts and opts.dtype }
  if b.tr.experts == "per_expert" then
    for e = 0, E - 1 do
      for _, part in ipairs(parts) do
        local name = ("%s.%d.%s"):format(prefix, e, part[1])
        local src = add_src(b, name, part[2], o, site, role_prefix .. "." .. part[1])
        src.expert, b.expert_views[name] = true, src.view
      end
    end
    return
  end
  local fused, order = {}, {}
  for _, part in ipairs(parts) do
    local f = part.fused
    if type(f) ~= "string" then U.fail(site, "expert part '%s' of '%s': missing field 'fused'", part[1], prefix) end
    F.check_shape(site, prefix .. "." .. part[1], part[2], 2)
    local g = fused[f]
    if not g then g = { rows = 0, cols = part[2][2] }; fused[f] = g; order[#order + 1] = f end
    if part[2][2] ~= g.cols then
      U.fail(site, "expert part '%s' has %d columns, '%s' has %d", part[1], part[2][2], f, g.cols)
    end
    part.off, g.rows = g.rows, g.rows + part[2][1]
  end
  for _, f in ipairs(order) do
    local g = fused[f]
    g.src = add_src(b, prefix .. "." .. f, { E, g.rows, g.cols }, o, site)
    g.src.expert = true
  end
  for e = 0, E - 1 do
    for _, part in ipairs(parts) do
      local g = fused[part.fused]
      b.expert_views[("%s.%d.%s"):format(prefix, e, part[1])] = { src = g.src, row0 = e * g.rows + part.off,
        rows = part[2][1], cols = g.cols, shape = part[2],
        name = ("%s[%d] (%s)"):format(g.src.name, e, part[1]) }
    end
  end
end

-- A destination every part of which the trainer holds is derived; one reading a part of an MTP
-- layer the trainer lacks is kept as the engine has it.
local function add_spec(b, name, spec, site)
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
  spec.name, spec.site, spec.layer = name, site, b.layer
  for _, p in ipairs(spec.parts) do
    if p.view.src.absent then
      spec.kept_dtype = F.dst_dtype(spec, spec.parts, b.plan, site)
      b.kept[#b.kept + 1] = spec
      return
    end
  end
  b.specs[#b.specs + 1] = spec
end

function API.dst(b, site, name, spec)
  local parts = {}
  for i, p in ipairs(spec.parts or {}) do
    if type(p) == "string" then p = { src = p } end
    local s = b.src_by_name[p.src]
    if not s then U.fail(site, "tensor '%s': unknown source tensor '%s'", name, tostring(p.src)) end
    parts[i] = { view = s.view, heads = p.heads, replicate = p.replicate }
  end
  spec.parts = parts
  add_spec(b, name, spec, site)
end

function API.expert_dst(b, site, name, prefix, E, spec)
  local parts = {}
  for i, pname in ipairs(spec.parts or {}) do
    local by = {}
    for e = 0, E - 1 do
      local v = b.expert_views[("%s.%d.%s"):format(prefix, e, pname)]
      if not v then U.fail(site, "tensor '%s': unknown source tensor '%s.%d.%s'", name, prefix, e, pname) end
      by[e + 1] = v
    end
    parts[i] = { view = by[1], by_expert = by }
  end
  spec.parts, spec.expert, spec.experts = parts, true, E
  add_spec(b, name, spec, site)
end

-- Run the plan's model's family and return its record (above), after the checks only the whole
-- model can answer: the model file sets no key its family does not read, every dtype_except pattern
-- names a parameter, trainer.mtp finds MTP layers.
function F.build(plan)
  local m = plan.__model
  local b = {
    plan = plan, m = m, tr = plan.trainer, declared = {},
    srcs = {}, src_by_name = {}, specs = {}, kept = {}, has_mtp = false,
    expert_views = {}, -- ["prefix.e.part"] = view of one expert's rows
    except_used = {}, layer = nil, in_mtp = false,
  }
  local T = {}
  for name, fn in pairs(API) do
    T[name] = function(...) return fn(b, U.site(2), ...) end -- U.site(2): the family line calling T.<name>
  end
  local ok, err = pcall(m.__family.build, m, T, plan.engine)
  if not ok then error(err, 0) end
  local known = {}
  for _, e in ipairs(Keys.model) do known[#known + 1] = e[1] end
  for _, k in ipairs(b.declared) do known[#known + 1] = k end
  Schema.unknown(m, known, m.__site, {}, ("model '%s' (family %s): "):format(m.name, m.family))
  for k, e in ipairs(b.tr.dtype_except) do
    if not b.except_used[k] then
      U.fail(e.site, "plan '%s': trainer.dtype_except[%d] pattern '%s' matches no tensor of model '%s'", plan.name, k,
        e[1], m.name)
    end
  end
  if b.tr.mtp and not b.has_mtp then
    U.fail(plan.__site, "plan '%s': trainer.mtp is true but model '%s' has no MTP layers", plan.name, m.name)
  end
  return b
end

return F
