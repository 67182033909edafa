-- load.lua: read model, family and plan descriptions (Lua data) with located errors.
local U = require("util")
local Engine = require("engine")
local M = { files = {} } -- every description file read, for the depfile

local roots = { "models" } -- searched in order for models, families and plans' models
function M.set_roots(list) roots = list end

local function find(rel)
  for _, r in ipairs(roots) do
    local path = r .. "/" .. rel
    local f = io.open(path, "rb")
    if f then f:close(); return path end
  end
  return roots[1] .. "/" .. rel
end

local function sandbox()
  local env = {
    ipairs = ipairs, pairs = pairs, math = math, string = string, table = table,
    tostring = tostring, tonumber = tonumber, type = type, error = error, assert = assert,
    select = select,
  }
  -- model { ... } / plan { ... } mark a description and remember where it was written.
  env.model = function(t) t.__kind, t.__site = "model", U.site(2); return t end
  env.plan = function(t) t.__kind, t.__site = "plan", U.site(2); return t end
  -- A description may build on another: include("qwen3") returns that family's table.
  env.include = function(name) return M.family(name) end
  return env
end

local function run_file(path, what)
  local f = io.open(path, "rb")
  if not f then U.fail(nil, "%s '%s' not found", what, path) end
  local text = f:read("a")
  f:close()
  M.files[#M.files + 1] = path
  local chunk, err = load(text, "@" .. path, "t", sandbox())
  if not chunk then error({ refit = err }, 0) end
  local ok, res = pcall(chunk)
  if not ok then
    if type(res) == "table" then error(res, 0) end
    error({ refit = tostring(res) }, 0)
  end
  -- `return model { ... }` is a tail call, so the site is found in the text instead.
  if type(res) == "table" and res.__kind then
    local at = text:find(res.__kind .. "%s*{") or 1
    local _, line = text:sub(1, at):gsub("\n", "")
    res.__site = { file = path, line = line + 1, text = text }
  end
  return res
end

local families = {}
function M.family(name)
  if not families[name] then
    local path = find(("families/%s.lua"):format(name))
    local fam = run_file(path, "family")
    if type(fam) ~= "table" or type(fam.build) ~= "function" then
      U.fail({ file = path, line = 1 },
        "family '%s' must return a table with a build function", name)
    end
    families[name] = fam
  end
  return families[name]
end

-- Check that t has every field in list, of the right type ("number" fields must be integers > 0
-- unless listed in zero_ok).
-- Where field `name` is set in a description (its declaration when not found).
local function field_site(site, name)
  if not site or not site.text then return site end
  local at = site.text:find("[%s{,]" .. name .. "%s*=")
  if not at then return site end
  local _, line = site.text:sub(1, at):gsub("\n", "")
  return { file = site.file, line = line + 1 }
end

function M.need(t, spec)
  for _, f in ipairs(spec) do
    local name, ty = f[1], f[2]
    local v = t[name]
    if v == nil then U.fail(t.__site, "%s '%s': missing field '%s'", t.__kind, t.name or "?", name) end
    local site = field_site(t.__site, name)
    if ty == "int" then
      if math.type(v) ~= "integer" or v < (f.min or 1) then
        U.fail(site, "%s '%s': field '%s' must be an integer >= %d, got %s",
          t.__kind, t.name or "?", name, f.min or 1, tostring(v))
      end
    elseif type(v) ~= ty then
      U.fail(site, "%s '%s': field '%s' must be a %s, got %s", t.__kind, t.name or "?", name, ty, type(v))
    end
  end
end

function M.model(name, from)
  local path = find(name .. ".lua")
  local f = io.open(path, "rb")
  if not f then
    U.fail(from, "model '%s' not found (looked for %s.lua in %s)", name, name, table.concat(roots, ", "))
  end
  f:close()
  local m = run_file(path, "model")
  if type(m) ~= "table" or m.__kind ~= "model" then
    U.fail({ file = path, line = 1 }, "must return model { ... }")
  end
  M.need(m, { { "name", "string" }, { "family", "string" } })
  if m.name ~= name then U.fail(m.__site, "model name '%s' does not match its file name '%s'", m.name, name) end
  m.__family = M.family(m.family)
  return m
end

-- The trainer section beyond its ranks: what the trainer's modules hold. Defaults are those of
-- FSDP2 over transformers >= 5 with fp32 master weights: fp32 parameters, fused 3-D experts, no
-- MTP layers (transformers does not load them).
local TRAINER_FIELDS = { "fsdp", "dp_replicate", "dtype", "dtype_except", "experts", "mtp" }
local function one_of(t, name, allowed)
  local v = t[name]
  for _, a in ipairs(allowed) do if v == a then return end end
  U.fail(field_site(t.__site, name), "%s '%s': field '%s' must be '%s', got %s", t.__kind, t.name, name,
    table.concat(allowed, "' or '"), type(v) == "string" and ("'" .. v .. "'") or tostring(v))
end

function M.trainer(t)
  for _, k in ipairs(U.sorted_keys(t)) do
    local known = type(k) ~= "string" or k:sub(1, 2) == "__" or k == "name"
    for _, f in ipairs(TRAINER_FIELDS) do known = known or k == f end
    if not known then
      U.fail(field_site(t.__site, k), "%s '%s': unknown field '%s' (known: %s)", t.__kind, t.name, k,
        table.concat(TRAINER_FIELDS, ", "))
    end
  end
  t.dtype = t.dtype or "fp32"
  t.experts = t.experts or "fused"
  if t.mtp == nil then t.mtp = false end
  t.dtype_except = t.dtype_except or {}
  one_of(t, "dtype", { "fp32", "bf16" })
  one_of(t, "experts", { "fused", "per_expert" })
  if type(t.mtp) ~= "boolean" then
    U.fail(field_site(t.__site, "mtp"), "%s '%s': field 'mtp' must be a boolean, got %s", t.__kind, t.name, type(t.mtp))
  end
  local site = field_site(t.__site, "dtype_except")
  if type(t.dtype_except) ~= "table" then
    U.fail(site, "%s '%s': field 'dtype_except' must be a list of { pattern, dtype }", t.__kind, t.name)
  end
  for k, e in ipairs(t.dtype_except) do
    if type(e) ~= "table" or type(e[1]) ~= "string" or (e[2] ~= "fp32" and e[2] ~= "bf16") or #e ~= 2 then
      U.fail(site, "%s '%s': dtype_except[%d] must be { pattern, 'fp32' or 'bf16' }", t.__kind, t.name, k)
    end
    e.site = site
  end
end

-- delta = { budget = B }: each (receiver, trainer) pair gets a patch area of B bytes per dense byte
-- (plus 48 per write), 0 < B <= 1, kept as parts per million (gen/delta.lua)
function M.delta(p)
  local d = p.delta
  if d == nil then return end
  local site = field_site(p.__site, "delta")
  if type(d) ~= "table" then
    U.fail(site, "plan '%s': delta must be a table { budget = B }, got %s", p.name, type(d))
  end
  for _, k in ipairs(U.sorted_keys(d)) do
    if k ~= "budget" then U.fail(field_site(p.__site, tostring(k)), "plan '%s': delta: unknown field '%s' (known: budget)", p.name, tostring(k)) end
  end
  local b = d.budget
  if type(b) ~= "number" or b ~= b or b <= 0 or b > 1 or math.floor(b * 1e6 + 0.5) < 1 then
    U.fail(field_site(p.__site, "budget"), "plan '%s': delta.budget must be a number in (0, 1] (patch area bytes per "
      .. "dense byte, at least 1e-6), got %s", p.name, tostring(b))
  end
  d.ppm = math.floor(b * 1e6 + 0.5)
end

function M.plan(path)
  local p = run_file(path, "plan")
  if type(p) ~= "table" or p.__kind ~= "plan" then U.fail({ file = path, line = 1 }, "must return plan { ... }") end
  M.need(p, { { "name", "string" }, { "model", "string" }, { "trainer", "table" }, { "inference", "table" } })
  local base = path:match("([^/]+)%.lua$")
  if p.name ~= base then U.fail(p.__site, "plan name '%s' does not match its file name '%s'", p.name, base) end
  local t, i = p.trainer, p.inference
  t.__kind, t.__site, t.name = "plan", p.__site, p.name .. ".trainer"
  i.__kind, i.__site, i.name = "plan", p.__site, p.name .. ".inference"
  t.dp_replicate = t.dp_replicate or 1
  i.ep = i.ep or 1
  M.need(t, { { "fsdp", "int" }, { "dp_replicate", "int" } })
  M.trainer(t)
  M.need(i, { { "tp", "int" }, { "ep", "int" }, { "replicas", "int" } })
  -- ep 1: experts split by TP; ep = tp: whole experts per TP rank; ep = k*tp: data-parallel
  -- attention over k groups of tp GPUs, experts spread over all ep GPUs of the replica.
  if i.ep ~= 1 and i.ep % i.tp ~= 0 then
    U.fail(p.__site, "plan '%s': ep %d must be 1 (experts split by TP) or a multiple of tp %d", p.name, i.ep, i.tp)
  end
  i.size = math.max(i.tp, i.ep)
  p.quant = p.quant or {}
  local q = p.quant
  q.fp8 = q.fp8 or false
  q.scale_fmt = q.scale_fmt or "fp32"
  if q.scale_fmt ~= "fp32" and q.scale_fmt ~= "ue8m0" then
    U.fail(p.__site, "plan '%s': quant.scale_fmt '%s' is not fp32 or ue8m0", p.name, tostring(q.scale_fmt))
  end
  q.exclude = q.exclude or {}
  q.unaligned = q.unaligned or "gather"
  if q.unaligned ~= "gather" and q.unaligned ~= "error" then
    U.fail(p.__site, "plan '%s': quant.unaligned must be 'gather' or 'error'", p.name)
  end
  p.gather_below = p.gather_below or 2 * 1024 * 1024 -- smaller tensors are gathered on one shard
  p.shard_min_piece = p.shard_min_piece or 1024 * 1024 -- and so are those whose shard pieces are smaller
  p.imbalance_warn = p.imbalance_warn or 1.10
  M.delta(p)
  p.__model = M.model(p.model, p.__site)
  Engine.check(p)
  return p
end

return M
