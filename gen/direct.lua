-- direct.lua: which writes a trainer rank sends straight from its bound source tensors when the
-- runtime runs with direct writes (rf_config.direct), decided here once, for the tables.
--
-- An identity op copies whole source rows without conversion (cast to the same dtype, every
-- column): its slot bytes equal source bytes. A write can go from the sources when identity items
-- of skipped ops cover every byte of its slot range; an identity op is skipped (not staged) unless
-- a write that touches one of its items must come from the slot arena. Skipping shrinks until
-- nothing changes. A direct write becomes one piece per source range it covers: rows that follow
-- on in the same source tensor join one piece; two tensors never share a piece.
--
-- Sets op.direct (1: not staged under direct writes) and each write row's piece_first and
-- piece_count; returns the piece rows (gen/schema.lua: src_off from the start of the rank's bound
-- source, off from the start of the write).
local U = require("util")
local S = require("schema")
local WC, PC = S.col.writes, S.col.pieces
local piece = S.maker("pieces")
local M = {}

local function identity(o, srcs)
  return o.kind == 1 and o.src_dtype == o.dst_dtype and o.col0 == 0 and o.steps.col == 0
    and o.cols == srcs[o.src + 1].cols
end

-- rows of source s the rank of shard `shard` binds start here (RF_TRAVEL_SHARD: its chunk)
local function first_row(s, shard) return s.travel == "shard" and shard * s.chunk or 0 end

function M.decide(plan, model, packed)
  local srcs, ops, writes = model.srcs, packed.ops, packed.writes
  local pieces = {}
  local done = {} -- op tables are shared between replicate groups (same shard layout): decide once
  local by_shard = {} -- the ranks of one shard in every replicate group hold the same op tables
  for _, rk in ipairs(packed.ranks) do
    -- identity items of this rank, by slot offset (read only below)
    local items = by_shard[rk.shard]
    if not items then
      items = {}
      for i = rk.op_first, rk.op_first + rk.op_count - 1 do
        local o = ops[i + 1]
        if identity(o, srcs) then
          local es = U.dtypes[srcs[o.src + 1].dtype].size
          for k = 0, o.count - 1 do
            items[#items + 1] = { out = o.out + k * o.steps.out, len = o.rows * o.cols * es, op = o, k = k }
          end
        end
      end
      table.sort(items, function(a, b) return a.out < b.out end)
      by_shard[rk.shard] = items
    end
    -- the last item starting at or before slot offset s (binary search), or nil
    local function item_at(s)
      local lo, hi = 1, #items + 1
      while lo < hi do
        local mid = (lo + hi) // 2
        if items[mid].out <= s then lo = mid + 1 else hi = mid end
      end
      return lo > 1 and lo - 1 or nil
    end
    local skip = {}
    for _, it in ipairs(items) do skip[it.op] = true end
    -- whether items of skipped ops cover write w's slot range; k: item_at(w[WC.slot])
    local function covered(w, k)
      local at, stop = w[WC.slot], w[WC.slot] + w[WC.len]
      if not k then return false end
      while at < stop do
        local it = items[k]
        if not it or it.out > at or it.out + it.len <= at or not skip[it.op] then return false end
        at = it.out + it.len
        k = k + 1
      end
      return true
    end
    local first, last = rk.write_first + 1, rk.write_first + rk.write_count
    -- Skipping shrinks to its fixed point by a worklist: a write that cannot be covered even with
    -- every op skipped starts it; a write that must come from the arena unskips every op with an
    -- item it touches, and every write touching an item of an op so unskipped must come from the
    -- arena in turn.
    local touches, by_op, queue, at0 = {}, {}, {}, {}
    for j = first, last do
      local w = writes[j]
      local t = {}
      local k0 = item_at(w[WC.slot])
      at0[j] = k0
      local k = k0 or 1
      while k <= #items and items[k].out < w[WC.slot] + w[WC.len] do
        local it = items[k]
        if it.out + it.len > w[WC.slot] then
          t[#t + 1] = it.op
          local l = by_op[it.op]
          if not l then l = {}; by_op[it.op] = l end
          l[#l + 1] = j
        end
        k = k + 1
      end
      touches[j] = t
      if not covered(w, k0) then queue[#queue + 1] = j end -- every op still skipped here
    end
    local arena = {}
    for _, j in ipairs(queue) do arena[j] = true end
    local head = 1
    while head <= #queue do
      for _, op in ipairs(touches[queue[head]]) do
        if skip[op] then
          skip[op] = false
          for _, j in ipairs(by_op[op]) do
            if not arena[j] then arena[j] = true; queue[#queue + 1] = j end
          end
        end
      end
      head = head + 1
    end
    for _, it in ipairs(items) do
      if done[it.op] == nil then done[it.op] = skip[it.op] end
    end
    for j = first, last do
      local w = writes[j]
      local p0 = #pieces
      if covered(w, at0[j]) then
        local at, stop = w[WC.slot], w[WC.slot] + w[WC.len]
        local k = at0[j]
        while at < stop do
          local it = items[k]
          local o = it.op
          local sid = o.src + it.k * o.steps.src
          local s = srcs[sid + 1]
          local es = U.dtypes[s.dtype].size
          local row = o.row0 + it.k * o.steps.row - first_row(s, rk.shard)
          local from = row * s.cols * es + (at - it.out)
          local e = math.min(it.out + it.len, stop)
          local prev = #pieces > p0 and pieces[#pieces] or nil
          if prev and prev[PC.src] == sid and prev[PC.src_off] + prev[PC.len] == from then
            prev[PC.len] = prev[PC.len] + (e - at)
          else
            pieces[#pieces + 1] = piece({ src_off = from, off = at - w[WC.slot], len = e - at, src = sid })
          end
          at = e
          k = k + 1
        end
      end
      w[WC.piece_first], w[WC.piece_count] = p0, #pieces - p0
    end
  end
  for o, skipped in pairs(done) do o.direct = skipped and 1 or 0 end
  return pieces
end

return M
