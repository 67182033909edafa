-- emit_dst.lua: a plan's destination tensors per receiver position as the engine should hold them,
-- in the line format of vLLM parameter dumps (tests/vllm/README.md), so that one replica's list can
-- be compared with the dump of that rank (tests/vllm/conform.lua) and read in review:
--   param NAME DTYPE shape=[..] stride=[..] off=ELEMENTS storage#K nbytes=B shared=OTHER,NAMES
-- A tensor appears once per name it has (its aliases share its storage); derived views follow,
-- in their storage (refit's own, or the destination tensor they view). A destination with a
-- finalize step of kind engine (the plan's finalize table) ends its lines with finalize=STEP: the engine transforms
-- it after loading (conform.lua accepts the engine's freed `weight` there).
local E = require("emit_c")
local M = {}

local TORCH = { bf16 = "bfloat16", fp32 = "float32", fp8 = "float8_e4m3fn", i32 = "int32" }

local function list(t) return "[" .. table.concat(t, ", ") .. "]" end

function M.listing(plan, model)
  local size, e = plan.inference.size, plan.engine
  local out = { ("# refit destinations of plan %s (%s), engine %s %s, %d positions per replica\n"):format(plan.name,
    plan.model, e.name, e.version, size) }
  local views_of = {} -- dst -> derived views in its memory
  for _, v in ipairs(model.derived) do
    if v.dst then
      local l = views_of[v.dst] or {}
      views_of[v.dst] = l
      l[#l + 1] = v
    end
  end
  -- a dst that a finalize kernel step transforms: the engine holds the step's output under the dst's
  -- names (vLLM's weight_scale_inv on SM100 is DeepGEMM's int32 tensor); the dst itself, in the
  -- loader's format, is a buffer the receiver keeps, not an engine tensor
  -- a dst an engine step transforms ends its lines with finalize=STEP
  local fin_out, fin_engine = {}, {}
  for _, st in ipairs(model.finalize or {}) do
    if st.out then fin_out[st.dst] = st.out else fin_engine[st.dst] = st end
  end
  for r = 0, size - 1 do
    out[#out + 1] = ("# rank %d/%d\n"):format(r, size)
    local lines, k = {}, 0
    local function group(entries, nbytes, fin) -- entries: torch views (name, dtype, shape, stride, offset)
      local names = {}
      for i, x in ipairs(entries) do names[i] = x.name end
      for i, x in ipairs(entries) do
        local others = {}
        for j, n in ipairs(names) do if j ~= i then others[#others + 1] = n end end
        lines[#lines + 1] = ("param %s %s shape=%s stride=%s off=%d storage#%d nbytes=%d shared=%s%s\n"):format(x.name,
          TORCH[x.dtype], list({ table.unpack(x.shape, 1, x.ndim or #x.shape) }),
          list({ table.unpack(x.stride, 1, x.ndim or #x.stride) }), x.offset, k, nbytes,
          #others > 0 and table.concat(others, ",") or "-", fin and " finalize=" .. fin.name or "")
      end
      k = k + 1
    end
    for _, d in ipairs(model.dsts) do
      local o = fin_out[d]
      if d.tp_rank == r and o then
        local g = { { name = d.name, dtype = o.dtype, shape = o.shape, stride = o.stride, offset = o.offset, ndim = o.ndim } }
        for _, a in ipairs(d.aliases) do
          g[#g + 1] = { name = a, dtype = o.dtype, shape = o.shape, stride = o.stride, offset = o.offset, ndim = o.ndim }
        end
        group(g, o.bytes)
      elseif d.tp_rank == r then
        local st = E.contiguous(d.shape)
        local g = { { name = d.name, dtype = d.dtype, shape = d.shape, stride = st, offset = 0 } }
        for _, a in ipairs(d.aliases) do g[#g + 1] = { name = a, dtype = d.dtype, shape = d.shape, stride = st, offset = 0 } end
        for _, v in ipairs(views_of[d] or {}) do g[#g + 1] = v end
        group(g, d.bytes, fin_engine[d])
      end
    end
    local own, by_storage = {}, {} -- refit's own storages, in order, and by their first view's id
    for _, v in ipairs(model.derived) do
      if v.tp_rank == r and not v.dst and not v.finalize then
        local g = by_storage[v.storage]
        if not g then g = { bytes = v.bytes }; by_storage[v.storage] = g; own[#own + 1] = g end
        g[#g + 1] = v
      end
    end
    for _, g in ipairs(own) do group(g, g.bytes) end
    out[#out + 1] = table.concat(lines)
  end
  return table.concat(out)
end

return M
