-- conform.lua: compare what the generator says each Megatron-core trainer rank holds with a parameter
-- dump of real megatron-core 0.16.1 (tests/megatron/dumps/<tag>/rank<r>.txt, README.md there), rank by
-- rank: the rank's coordinates (tp, pp, ep, etp), every parameter (P) and buffer (B) by name, dtype and
-- shape, none missing and none extra; and every source the tables send (gen/megatron.lua) is one of
-- its rank's dumped tensors with the same dtype and shape. Prints the first differences, then
-- "conforms (...)" or "differs".
--
--   lua5.4 tests/megatron/conform.lua PLAN DUMPDIR [max_shown]
package.path = "gen/?.lua;" .. package.path
local L = require("load")
local D = require("derive")
local Mg = require("megatron")

local plan_path, dir, max_shown = arg[1], arg[2], tonumber(arg[3] or "12")
local ok, plan = pcall(L.plan, plan_path)
if not ok then io.stderr:write(type(plan) == "table" and plan.refit or tostring(plan), "\n") os.exit(2) end
local model = D.derive(plan)
local mg = plan.trainer.megatron
local DT = { fp32 = "float32", bf16 = "bfloat16" }

local diffs = {}
local function diff(fmt, ...) diffs[#diffs + 1] = fmt:format(...) end

local function read_dump(r)
  local path = ("%s/rank%d.txt"):format(dir, r)
  local f = io.open(path, "rb")
  if not f then return nil, path end
  local t = { tensors = {}, order = {} }
  for line in f:lines() do
    local st = line:match("^# %S+ status: (%S+)")
    if st then t.status = st end
    local c = line:match("^# rank=(.*)$")
    if c then
      t.coords = {}
      for k, v in c:gmatch("([%w_]+)=(%d+)") do t.coords[k] = tonumber(v) end
    end
    local kind, name, dtype, shape = line:match("^([PB]) (%S+) (%S+) (%[[%d, ]*%])")
    if kind then
      if t.tensors[name] then diff("rank %d: '%s' listed twice in the dump", r, name) end
      t.tensors[name] = { kind = kind, dtype = dtype, shape = shape }
      t.order[#t.order + 1] = name
    end
  end
  f:close()
  return t, path
end

local params = 0
for r = 0, mg.world - 1 do
  local dump, path = read_dump(r)
  if not dump then diff("rank %d: %s missing (the plan has %d ranks)", r, path, mg.world)
  elseif dump.status ~= "OK" then diff("rank %d: the dump's status is %s", r, tostring(dump.status))
  else
    local c, dc = Mg.coords(mg, r), dump.coords or {}
    for _, k in ipairs({ "tp", "pp", "ep", "etp" }) do
      if c[k] ~= dc[k] then diff("rank %d: %s rank: megatron %s, plan %d", r, k, tostring(dc[k]), c[k]) end
    end
    for _, k in ipairs({ "tp", "pp", "ep", "etp" }) do
      if mg[k] ~= dc[k .. "_size"] then diff("rank %d: %s size: megatron %s, plan %d", r, k, tostring(dc[k .. "_size"]), mg[k]) end
    end
    local mine = {}
    for _, e in ipairs(model.mg_listing[r]) do
      local shape = "[" .. table.concat(e.shape, ", ") .. "]"
      if mine[e.name] then diff("rank %d: '%s' listed twice by the plan", r, e.name) end
      mine[e.name] = true
      local d = dump.tensors[e.name]
      if not d then diff("rank %d: '%s' (%s %s %s) is in the plan, not in megatron", r, e.name, e.kind, DT[e.dtype], shape)
      else
        if d.kind ~= e.kind then diff("rank %d: '%s': megatron %s, plan %s (P parameter, B buffer)", r, e.name, d.kind, e.kind) end
        if d.dtype ~= DT[e.dtype] then diff("rank %d: '%s' dtype: megatron %s, plan %s", r, e.name, d.dtype, DT[e.dtype]) end
        if d.shape ~= shape then diff("rank %d: '%s' shape: megatron %s, plan %s", r, e.name, d.shape, shape) end
        params = params + 1
      end
    end
    for _, name in ipairs(dump.order) do
      if not mine[name] then
        local d = dump.tensors[name]
        diff("rank %d: '%s' (%s %s %s) is in megatron, not in the plan", r, name, d.kind, d.dtype, d.shape)
      end
    end
    for _, s in ipairs(model.srcs) do
      if s.holder == r then
        local d = dump.tensors[s.name]
        local shape = "[" .. table.concat(s.shape, ", ") .. "]"
        if not d or d.dtype ~= DT[s.dtype] or d.shape ~= shape then
          diff("rank %d: source %d '%s' (%s %s) that the tables send is not what megatron holds (%s)", r, s.id, s.name,
            DT[s.dtype], shape, d and (d.dtype .. " " .. d.shape) or "absent")
        end
      end
    end
  end
end
if io.open(("%s/rank%d.txt"):format(dir, mg.world), "rb") then
  diff("%s/rank%d.txt exists: megatron ran more ranks than the plan's %d", dir, mg.world, mg.world)
end
for i = 1, math.min(#diffs, max_shown) do print(diffs[i]) end
if #diffs > 0 then
  print(("differs: %d differences"):format(#diffs))
  os.exit(1)
end
print(("conforms (tp %d pp %d ep %d etp %d: %d ranks, %d tensors, %d sent)"):format(mg.tp, mg.pp, mg.ep, mg.etp,
  mg.world, params, #model.srcs))
