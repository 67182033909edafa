-- keys.lua: check a description table against a key schema (gen/plan_keys.lua holds the data),
-- fill in its defaults, and place every error on the line of the description file that set the key.
--
-- A schema is an ordered list of entries, one per key: { key, type, ... } with
--   type      "string", "int" (an integer >= min, min defaults to 1), "number", "boolean",
--             "table" (a section: keys = its schema) or "list" (a sequence: item = { must, ok })
--   default   the value when the key is absent (tables are copied); without it the key is required
--             unless optional = true
--   values    the allowed values (strings), in the order the error message lists them
--   ok, must  a further check on the value and what it must be, for the error message
--   example   appended to the error of a missing key
-- Keys starting with "__" are the loader's own (site, kind) and never checked.
-- Errors: file:line: unknown key 'engine.moe_backnd' (did you mean 'moe_backend'?)
--         file:line: missing key 'inference.tp'
--         file:line: key 'trainer.dtype' must be 'fp32' or 'bf16', got 'fp16'
local U = require("util")
local M = {}

-- Optimal string alignment distance: insertions, deletions, substitutions and transpositions of
-- two neighbours ("bugdet" is one step from "budget").
function M.distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

-- The known key nearest to `key` (the first in schema order among equals).
function M.nearest(key, known)
  local best, bd
  for _, k in ipairs(known) do
    local dist = M.distance(key, k)
    if not bd or dist < bd then best, bd = k, dist end
  end
  return best
end

-- Where a key is set: a small Lua lexer finds the table constructor `kind { ... }` (kind: plan or
-- model) in the file's text, then each path component's `name =` at the top level of the table
-- before. A key the text does not spell (computed tables) falls back to its nearest enclosing one.
local function lex(text)
  local toks, i, line, n = {}, 1, 1, #text
  local function long_end(from, eqs) -- the end of a long bracket [==[ ... ]==]
    local _, e = text:find("]" .. eqs .. "]", from, true)
    e = e or n
    local _, nl = text:sub(from, e):gsub("\n", "")
    line = line + nl
    return e + 1
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == "\n" then line, i = line + 1, i + 1
    elseif c:find("%s") then i = i + 1
    elseif text:find("^%-%-", i) then
      local eqs = text:match("^%-%-%[(=*)%[", i)
      if eqs then i = long_end(i + 4 + #eqs, eqs)
      else i = (text:find("\n", i, true) or n + 1) end
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n and text:sub(j, j) ~= c do
        if text:sub(j, j) == "\\" then j = j + 1 end
        if text:sub(j, j) == "\n" then line = line + 1 end
        j = j + 1
      end
      toks[#toks + 1] = { s = "string", line = line }
      i = j + 1
    elseif text:match("^%[=*%[", i) then
      local eqs = text:match("^%[(=*)%[", i)
      toks[#toks + 1] = { s = "string", line = line }
      i = long_end(i + 2 + #eqs, eqs)
    elseif c:find("[%a_]") then
      local w = text:match("^[%w_]+", i)
      toks[#toks + 1] = { s = w, name = true, line = line }
      i = i + #w
    elseif c:find("%d") then
      i = i + #text:match("^[%w_%.]+", i)
    else
      local op = text:match("^[=~<>]=", i) or c
      toks[#toks + 1] = { s = op, line = line }
      i = i + #op
    end
  end
  return toks
end

local OPEN, CLOSE = { ["{"] = true, ["("] = true, ["["] = true }, { ["}"] = true, [")"] = true, ["]"] = true }

-- The keys `name = value` at the top level of the table constructor opened at toks[at]:
-- key -> { line = , at = index of the value's `{` when the value is a constructor }.
local function keys_of(toks, at)
  local keys, depth = {}, 0
  for j = at, #toks do
    local t = toks[j]
    if OPEN[t.s] then depth = depth + 1
    elseif CLOSE[t.s] then
      depth = depth - 1
      if depth == 0 then break end
    elseif depth == 1 and t.name and toks[j + 1] and toks[j + 1].s == "=" and not keys[t.s] then
      local prev = toks[j - 1].s
      if prev == "{" or prev == "," or prev == ";" then
        keys[t.s] = { line = t.line, at = toks[j + 2] and toks[j + 2].s == "{" and j + 2 or nil }
      end
    end
  end
  return keys
end

-- The site {file, line} of the key at `path` ({ "engine", "moe_backend" }) of the description whose
-- site is `root` (the loader's __site: file, line, text and kind).
function M.site(root, path)
  if not root or not root.text then return root end
  if not root.toks then root.toks = lex(root.text) end
  local toks, at, line = root.toks, nil, root.line
  for j = 1, #toks - 1 do
    if toks[j].s == root.kind and toks[j + 1].s == "{" then at, line = j + 1, toks[j].line; break end
  end
  for _, k in ipairs(path) do
    if not at or type(k) ~= "string" then break end
    local hit = keys_of(toks, at)[k]
    if not hit then break end
    line, at = hit.line, hit.at
  end
  return { file = root.file, line = line }
end

local function show(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "table" then return "a table" end
  return tostring(v)
end

local function join(path)
  local s = ""
  for _, k in ipairs(path) do
    if type(k) == "string" then s = s == "" and k or (s .. "." .. k) else s = s .. "[" .. tostring(k) .. "]" end
  end
  return s
end

local function with(path, k)
  local p = { table.unpack(path) }
  p[#p + 1] = k
  return p
end

local function must(e)
  if e.must then return e.must end
  if e.values then
    local q = {}
    for i, v in ipairs(e.values) do q[i] = "'" .. v .. "'" end
    return #q == 1 and q[1] or (table.concat(q, ", ", 1, #q - 1) .. " or " .. q[#q])
  end
  local ty = e[2]
  if ty == "int" then return ("an integer >= %d"):format(e.min or 1) end
  if ty == "boolean" then return "true or false" end
  return ty == "list" and "a list" or ("a " .. ty)
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy(x) end
  return c
end

local function is_list(v)
  if type(v) ~= "table" then return false end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  return n == #v
end

local function type_ok(e, v)
  local ty = e[2]
  if ty == "int" then return math.type(v) == "integer" and v >= (e.min or 1) end
  if ty == "number" then return type(v) == "number" and v == v end
  if ty == "list" then return is_list(v) end
  return type(v) == ty
end

-- Error on a key of `t` (at `path` under root) that `known` (key names, in schema order) lacks.
function M.unknown(t, known, root, path, prefix)
  local is_known = {}
  for _, k in ipairs(known) do is_known[k] = true end
  for _, k in ipairs(U.sorted_keys(t)) do
    if not (type(k) == "string" and (is_known[k] or k:sub(1, 2) == "__")) then
      local kp = with(path, k)
      local hint = type(k) == "string" and ("did you mean '%s'?"):format(M.nearest(k, known))
        or ("known: " .. table.concat(known, ", "))
      U.fail(M.site(root, kp), "%sunknown key '%s' (%s)", prefix or "", join(kp), hint)
    end
  end
end

-- Check table t (at `path`; {} for the description itself) against schema, filling in defaults.
-- open: keys the schema lacks are left for a later check (a model's family declares its keys).
function M.check(t, schema, root, path, open)
  path = path or {}
  if not open then
    local known = {}
    for i, e in ipairs(schema) do known[i] = e[1] end
    M.unknown(t, known, root, path)
  end
  for _, e in ipairs(schema) do
    local k = e[1]
    local kp = with(path, k)
    local v = t[k]
    if v == nil then
      if e.default ~= nil then v = copy(e.default); t[k] = v
      elseif not e.optional then
        U.fail(M.site(root, path), "missing key '%s'%s", join(kp), e.example and (" (e.g. " .. e.example .. ")") or "")
      end
    end
    if v ~= nil then
      local fine = type_ok(e, v)
      if fine and e.values then
        fine = false
        for _, a in ipairs(e.values) do fine = fine or v == a end
      end
      if fine and e.ok then fine = e.ok(v) end
      if not fine then U.fail(M.site(root, kp), "key '%s' must be %s, got %s", join(kp), must(e), show(v)) end
      if e.keys then M.check(v, e.keys, root, kp) end
      if e.item then
        for i, x in ipairs(v) do
          if not e.item.ok(x) then
            U.fail(M.site(root, kp), "key '%s' must be %s, got %s", join(with(kp, i)), e.item.must, show(x))
          end
        end
      end
    end
  end
end

return M
