-- util.lua: small helpers shared by the generator modules.
local M = {}

M.dtypes = {
  bf16 = { id = 1, size = 2, c = "RF_BF16" },
  fp32 = { id = 2, size = 4, c = "RF_FP32" },
  fp8 = { id = 3, size = 1, c = "RF_FP8" },
}
M.BLOCK = 128

function M.ceil_div(a, b) return (a + b - 1) // b end
function M.align(a, b) return M.ceil_div(a, b) * b end

-- Raise a located error: "file:line: message". Where is {file=, line=} or nil.
function M.fail(where, fmt, ...)
  local msg = fmt:format(...)
  if where and where.file then msg = ("%s:%d: %s"):format(where.file, where.line or 0, msg) end
  error({ refit = msg }, 0)
end

-- The caller's caller position inside a description file, for error messages.
function M.site(level)
  local info = debug.getinfo((level or 2) + 1, "Sl")
  local src = info and info.source or "?"
  if src:sub(1, 1) == "@" then src = src:sub(2) end
  return { file = src, line = info and info.currentline or 0 }
end

-- Sorted keys of a map, for deterministic iteration.
function M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) < type(b)
  end)
  return keys
end

-- Word-wise FNV-1a, identical to rf_plan_hash() in runtime/plan.c.
local PRIME = 0x100000001b3
M.HASH0 = -3750763034362895579 -- 0xcbf29ce484222325 as a signed 64-bit integer
function M.mix(h, w) return (h ~ w) * PRIME end
-- A string mixes as 8-byte little-endian words (the last one zero-padded), then its length.
local unpack = string.unpack
function M.mix_str(h, s)
  local n = #s
  local p = s .. "\0\0\0\0\0\0\0"
  for i = 1, n, 8 do h = (h ~ unpack("<i8", p, i)) * PRIME end
  return (h ~ n) * PRIME
end

function M.human(bytes)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local v, u = bytes, 1
  while v >= 1024 and u < #units do v, u = v / 1024, u + 1 end
  if u == 1 then return ("%d B"):format(bytes) end
  return ("%.2f %s"):format(v, units[u])
end

-- Write a file only when its content changed (keeps ninja from rebuilding what did not).
function M.write_if_changed(path, content)
  local f = io.open(path, "rb")
  if f then
    local old = f:read("a")
    f:close()
    if old == content then return false end
  end
  local tmp = path .. ".tmp"
  local out = assert(io.open(tmp, "wb"))
  out:write(content)
  out:close()
  assert(os.rename(tmp, path))
  return true
end

return M
