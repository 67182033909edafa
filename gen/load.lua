-- load.lua: read model, family and plan descriptions (Lua data) with located errors. Plans and the
-- keys every model has are checked against gen/plan_keys.lua, which also gives every default.
local U = require("util")
local Schema = require("keys")
local Keys = require("plan_keys")
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
    res.__site = { file = path, line = line + 1, text = text, kind = res.__kind }
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
  -- the keys every model has; those its family reads are checked when it is built (gen/family.lua)
  Schema.check(m, Keys.model, m.__site, {}, true)
  if m.name ~= name then U.fail(m.__site, "model name '%s' does not match its file name '%s'", m.name, name) end
  m.__family = M.family(m.family)
  return m
end

-- A plan: its keys against gen/plan_keys.lua (which sets every default), then the checks across
-- keys, its model, and the engine profile's refusals (gen/engine.lua).
function M.plan(path)
  local p = run_file(path, "plan")
  if type(p) ~= "table" or p.__kind ~= "plan" then U.fail({ file = path, line = 1 }, "must return plan { ... }") end
  Schema.check(p, Keys.plan, p.__site)
  local base = path:match("([^/]+)%.lua$")
  if p.name ~= base then U.fail(p.__site, "plan name '%s' does not match its file name '%s'", p.name, base) end
  local tr = p.trainer
  if tr.megatron then
    local function site_of(path) return Schema.site(p.__site, path) end
    if tr.fsdp then U.fail(site_of({ "trainer", "fsdp" }), "plan '%s': trainer.fsdp and trainer.megatron exclude each other", p.name) end
    if tr.dp_replicate ~= 1 then
      U.fail(site_of({ "trainer", "dp_replicate" }), "plan '%s': trainer.dp_replicate: a Megatron trainer's replicas are "
        .. "trainer.megatron.dp", p.name)
    end
    local mg = require("megatron").mesh(p, site_of)
    -- the tables see one trainer rank per Megatron rank (shard = global rank), each sending what it holds
    tr.fsdp, tr.experts, p.__site_of = mg.world, "per_expert", site_of
  elseif not tr.fsdp then
    U.fail(Schema.site(p.__site, { "trainer" }), "missing key 'trainer.fsdp' (an FSDP2 trainer; or trainer.megatron)")
  end
  local i = p.inference
  -- ep 1: experts split by TP; ep = tp: whole experts per TP rank; ep = k*tp: data-parallel
  -- attention over k groups of tp GPUs, experts spread over all ep GPUs of the replica.
  if i.ep ~= 1 and i.ep % i.tp ~= 0 then
    U.fail(Schema.site(p.__site, { "inference", "ep" }), "plan '%s': ep %d must be 1 (experts split by TP) or a "
      .. "multiple of tp %d", p.name, i.ep, i.tp)
  end
  i.size = math.max(i.tp, i.ep)
  local except_site = Schema.site(p.__site, { "trainer", "dtype_except" })
  for _, e in ipairs(p.trainer.dtype_except) do e.site = except_site end
  if p.delta then p.delta.ppm = math.floor(p.delta.budget * 1e6 + 0.5) end
  p.__model = M.model(p.model, p.__site)
  Engine.check(p)
  return p
end

return M
