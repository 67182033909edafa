-- pack.lua: decide how each source tensor travels, assign gathered tensors to trainer shards
-- (longest-processing-time first), cut destinations into pieces per shard, pack each shard's slot
-- arena, and list ops, writes, groups, ranks, receivers and peers.
local U = require("util")
local write = require("schema").maker("writes")
local P = {}

local BLOCK = U.BLOCK
local SLOT_ALIGN = 256
local GLOBAL = -1 -- group key of tensors outside the decoder layers

-- Every destination segment that reads each source.
local function uses_of(dsts)
  local uses = {}
  for _, d in ipairs(dsts) do
    for _, seg in ipairs(d.segs) do
      local u = uses[seg.src.id]
      if not u then u = {}; uses[seg.src.id] = u end
      u[#u + 1] = { d = d, seg = seg }
    end
  end
  return uses
end

-- First shard boundary that cuts an FP8 block of some destination, or nil.
local function unaligned_cut(s, uses, chunk, fsdp)
  for _, u in ipairs(uses or {}) do
    if u.d.dtype == "fp8" and chunk > 0 then
      local a, b = u.seg.srow0, u.seg.srow0 + u.seg.srows
      for k = math.max(1, a // chunk + 1), math.min(fsdp - 1, (b - 1) // chunk) do -- the cuts inside (a, b)
        local cut = k * chunk
        if (u.seg.irow0 + cut - a) % BLOCK ~= 0 then return cut, u.d end
      end
    end
  end
  return nil
end

-- FSDP2 shards every parameter on dim 0 as torch.chunk does (ceil(dim 0 / fsdp) per shard, trailing
-- shards short or empty): fused experts [E, 2I, H] into whole experts, per-expert modules row-wise
-- like any linear. chunk is that share in 2-D view rows.
local function decide_travel(plan, srcs, uses)
  local fsdp = plan.trainer.fsdp
  local counts = { shard = 0, gather_small = 0, gather_unaligned = 0 }
  for _, s in ipairs(srcs) do
    s.chunk = U.ceil_div(s.shape[1], fsdp) * (s.rows // s.shape[1])
    s.bytes = s.rows * s.cols * U.dtypes[s.dtype].size
    if s.holder then -- a Megatron rank's own parameter shard: sent whole by the rank that holds it
      s.travel, s.why, s.shard = "gather", "rank", s.holder
      counts.rank = (counts.rank or 0) + 1
    elseif s.bytes < plan.gather_below or fsdp == 1 or s.chunk * s.cols * U.dtypes[s.dtype].size < plan.shard_min_piece then
      -- small tensors, and tensors whose per-shard pieces would be too small to be worth a write each
      s.travel, s.why = "gather", "small"
      counts.gather_small = counts.gather_small + 1
    else
      local cut, d = unaligned_cut(s, uses[s.id], s.chunk, fsdp)
      if cut then
        if plan.quant.unaligned == "error" then
          U.fail(plan.__site, "plan '%s': tensor '%s': FSDP shard boundary at row %d (fsdp %d, %d rows per "
            .. "shard) cuts a 128-row FP8 block of '%s' on receiver position %d", plan.name, s.name, cut, fsdp,
            s.chunk, d.name, d.tp_rank)
        end
        s.travel, s.why = "gather", "unaligned"
        counts.gather_unaligned = counts.gather_unaligned + 1
      else
        s.travel, s.shard = "shard", nil
        counts.shard = counts.shard + 1
      end
    end
  end
  return counts
end

-- Pieces of one segment: { shard, d, item, irow0, rows, src, srow0, scol0 } (+ scale piece).
local function cut_segment(d, seg, fsdp, out)
  local s = seg.src
  local function piece(shard, a, b)
    out[#out + 1] = {
      shard = shard, d = d, item = seg.item, irow0 = seg.irow0 + (a - seg.srow0), rows = b - a,
      src = s, srow0 = a, scol0 = seg.scol0, cols = seg.scols, dcol0 = seg.dcol0 or 0,
    }
  end
  if s.travel ~= "shard" then
    piece(s.shard, seg.srow0, seg.srow0 + seg.srows)
    return
  end
  local lo, hi = seg.srow0, seg.srow0 + seg.srows
  for k = lo // s.chunk, math.min(fsdp - 1, (hi - 1) // s.chunk) do
    local a, b = math.max(lo, k * s.chunk), math.min(hi, (k + 1) * s.chunk)
    if b > a then piece(k, a, b) end
  end
end

-- Bytes a piece puts on its trainer's NIC per replica served (its destination and twins).
local function piece_bytes(p)
  local d = p.d
  local b = p.rows * p.cols * U.dtypes[d.dtype].size
  if d.scale then b = b + U.ceil_div(p.rows, BLOCK) * U.ceil_div(p.cols, BLOCK) * 4 end
  return b * #d.twins
end

-- Longest-processing-time first: the largest gathered tensor goes to the least loaded shard.
-- pieces: every piece of the plan, gathered ones cut with a provisional shard.
local function balance(plan, srcs, pieces)
  local fsdp = plan.trainer.fsdp
  local load, weight = {}, {}
  for k = 0, fsdp - 1 do load[k] = 0 end
  for _, p in ipairs(pieces) do
    local s = p.src
    if s.travel == "gather" and not s.holder then weight[s] = (weight[s] or 0) + piece_bytes(p)
    else load[p.shard] = load[p.shard] + piece_bytes(p) end
  end
  local gathered = {}
  for _, s in ipairs(srcs) do
    if s.travel == "gather" and not s.holder then gathered[#gathered + 1] = { s = s, w = weight[s] or 0 } end
  end
  -- the baseline the report compares with: gathered tensors dealt round-robin in checkpoint order
  local rr = {}
  for k = 0, fsdp - 1 do rr[k] = load[k] end
  for i, g in ipairs(gathered) do rr[(i - 1) % fsdp] = rr[(i - 1) % fsdp] + g.w end
  table.sort(gathered, function(a, b)
    if a.w ~= b.w then return a.w > b.w end
    return a.s.id < b.s.id
  end)
  for _, g in ipairs(gathered) do
    local best = 0
    for k = 1, fsdp - 1 do if load[k] < load[best] then best = k end end
    g.s.shard = best
    load[best] = load[best] + g.w
  end
  for _, p in ipairs(pieces) do
    if p.src.travel == "gather" then p.shard = p.src.shard end
  end
  return rr
end

-- Merge ops of equal shape and role whose fields advance by constant steps (all experts of a
-- layer, or one shard's pieces for every TP rank) into one grouped op. One open run per shape and
-- role; runs are emitted in the order they were opened.
local function coalesce(ops)
  local out, open = {}, {}
  for _, o in ipairs(ops) do
    -- the open run of this role with the same shape, if any (few per role: a linear scan)
    local runs = open[o.role]
    if not runs then runs = {}; open[o.role] = runs end
    local run
    for _, r in ipairs(runs) do
      if r.kind == o.kind and r.rows == o.rows and r.cols == o.cols and r.src_dtype == o.src_dtype
        and r.dst_dtype == o.dst_dtype and (r.scale == nil) == (o.scale == nil) then
        run = r
        break
      end
    end
    local merged = false
    if run then
      local prev = run.last
      local st_src, st_row, st_col = o.src - prev.src, o.row0 - prev.row0, o.col0 - prev.col0
      local st_out, st_scale = o.out - prev.out, o.scale and (o.scale - prev.scale) or 0
      if st_src >= 0 and st_out > 0 and st_scale >= 0 then
        local s0 = run.steps
        if run.count == 1 then
          s0.src, s0.row, s0.col, s0.out, s0.scale = st_src, st_row, st_col, st_out, st_scale
          merged = true
        elseif s0.src == st_src and s0.row == st_row and s0.col == st_col and s0.out == st_out
          and s0.scale == st_scale then
          merged = true
        end
      end
      if merged then run.count, run.last = run.count + 1, o end
    end
    if not merged then
      o.count, o.last = 1, o
      o.steps = { src = 0, row = 0, col = 0, out = 0, scale = 0 }
      out[#out + 1] = o
      if run then
        for i, r in ipairs(runs) do if r == run then runs[i] = o end end
      else
        runs[#runs + 1] = o
      end
    end
  end
  return out
end

-- Slot layout of one shard: groups (by layer), runs of destination-contiguous pieces, ops.
local function layout_shard(pieces)
  local by_group, keys = {}, {}
  for _, p in ipairs(pieces) do
    local key = p.d.layer or GLOBAL
    if not by_group[key] then by_group[key] = {}; keys[#keys + 1] = key end
    local g = by_group[key]
    g[#g + 1] = p
  end
  table.sort(keys)
  local groups, off = {}, 0
  for _, key in ipairs(keys) do
    -- weight and scale pieces as destination byte ranges
    local ranges = {}
    for _, p in ipairs(by_group[key]) do
      local d = p.d
      local es = U.dtypes[d.dtype].size
      if p.cols < d.cols then
        -- narrower than its destination (a Megatron row-parallel shard into a wider engine slice):
        -- row by row, and so its scale rows
        for k = 0, p.rows - 1 do
          ranges[#ranges + 1] = { dst = d, off = ((p.item * d.item_rows + p.irow0 + k) * d.cols + p.dcol0) * es,
            len = p.cols * es, piece = p, row = k }
        end
        if d.scale then
          local s = d.scale
          for k = 0, U.ceil_div(p.rows, BLOCK) - 1 do
            ranges[#ranges + 1] = { dst = s, off = ((p.item * s.item_rows + p.irow0 // BLOCK + k) * s.cols
              + p.dcol0 // BLOCK) * 4, len = U.ceil_div(p.cols, BLOCK) * 4, piece = p, is_scale = true, row = k }
          end
        end
      else
      p.dst_off = ((p.item * d.item_rows + p.irow0) * d.cols) * es
      p.len = p.rows * d.cols * es
      ranges[#ranges + 1] = { dst = d, off = p.dst_off, len = p.len, piece = p }
      if d.scale then
        local s = d.scale
        local sr = U.ceil_div(p.rows, BLOCK)
        p.sdst_off = ((p.item * s.item_rows + p.irow0 // BLOCK) * s.cols) * 4
        ranges[#ranges + 1] = { dst = s, off = p.sdst_off, len = sr * s.cols * 4, piece = p, is_scale = true }
      end
      end
    end
    -- pieces arrive in destination order (tensor id, then offset); scale tensors follow their
    -- weight, so each weight's scale ranges go right after the weight's own.
    local ordered, pending = {}, {}
    local cur
    for _, r in ipairs(ranges) do
      if r.is_scale then pending[#pending + 1] = r
      else
        if cur ~= r.dst then
          for _, x in ipairs(pending) do ordered[#ordered + 1] = x end
          pending, cur = {}, r.dst
        end
        ordered[#ordered + 1] = r
      end
    end
    for _, x in ipairs(pending) do ordered[#ordered + 1] = x end
    ranges = ordered
    local runs = {}
    local run
    for _, r in ipairs(ranges) do
      if r.row then -- one row of a narrow piece: its own run, the piece's rows contiguous in the slot
        local key = r.is_scale and "scale_slot" or "slot"
        if r.row == 0 then off = U.align(off, SLOT_ALIGN); r.piece[key] = off end
        run = { dst = r.dst, off = r.off, len = r.len, slot = r.piece[key] + r.row * r.len, solo = true }
        runs[#runs + 1] = run
        off = run.slot + run.len
      elseif run and not run.solo and run.dst == r.dst and run.off + run.len == r.off then
        run.len = run.len + r.len
      else
        off = U.align(off, SLOT_ALIGN)
        run = { dst = r.dst, off = r.off, len = r.len, slot = off }
        runs[#runs + 1] = run
      end
      if not r.row then
        local at = run.slot + (r.off - run.off)
        if r.is_scale then r.piece.scale_slot = at else r.piece.slot = at end
        off = run.slot + run.len
      end
    end
    local ops = {}
    for _, p in ipairs(by_group[key]) do
      local d = p.d
      ops[#ops + 1] = {
        src = p.src.id, role = p.src.role, kind = d.dtype == "fp8" and (d.requant and 3 or 2) or 1, -- enum rf_op_kind
        src_dtype = U.dtypes[p.src.dtype].id, dst_dtype = U.dtypes[d.dtype].id,
        row0 = p.srow0, col0 = p.scol0, rows = p.rows, cols = p.cols, out = p.slot, scale = p.scale_slot,
      }
    end
    groups[#groups + 1] = { layer = key, runs = runs, ops = coalesce(ops) }
  end
  return groups, U.align(off, SLOT_ALIGN)
end

function P.pack(plan, model)
  local srcs, dsts = model.srcs, model.dsts
  local fsdp, rep = plan.trainer.fsdp, plan.trainer.dp_replicate
  local size, replicas = plan.inference.size, plan.inference.replicas
  local uses = uses_of(dsts)
  local travel = decide_travel(plan, srcs, uses)
  local all = {}
  for _, s in ipairs(srcs) do if s.travel == "gather" and not s.holder then s.shard = 0 end end
  for _, d in ipairs(dsts) do
    for _, seg in ipairs(d.segs) do cut_segment(d, seg, fsdp, all) end
  end
  local rr_load = balance(plan, srcs, all)
  local pieces = {}
  for k = 0, fsdp - 1 do pieces[k] = {} end
  for _, p in ipairs(all) do local l = pieces[p.shard]; l[#l + 1] = p end
  local shard_layout = {}
  for k = 0, fsdp - 1 do
    local groups, arena = layout_shard(pieces[k])
    shard_layout[k] = { groups = groups, arena = arena }
  end

  -- Ranks: replicate group g serves replicas g, g+rep, ...; its shards mirror group 0's layout.
  local out = { ops = {}, writes = {}, groups = {}, ranks = {}, travel = travel }
  local recv_peer = {} -- [receiver][trainer] = { bytes, writes }
  for g = 0, rep - 1 do
    local served = {}
    for k = g, replicas - 1, rep do served[#served + 1] = k end
    for s = 0, fsdp - 1 do
      local t = g * fsdp + s
      local lay = shard_layout[s]
      local rank = {
        shard = s, replicate = g, arena = lay.arena, bytes_out = 0,
        group_first = #out.groups, op_first = #out.ops, write_first = #out.writes,
      }
      local W = out.writes -- rows as emitted (gen/schema.lua); direct.lua and delta.lua fill in the rest
      for _, grp in ipairs(lay.groups) do
        local G = { layer = grp.layer, op_first = #out.ops, write_first = #W }
        for _, o in ipairs(grp.ops) do out.ops[#out.ops + 1] = o end
        local nw = #W
        for _, run in ipairs(grp.runs) do
          local slot, off, len = run.slot, run.off, run.len
          for _, k in ipairs(served) do
           for _, d in ipairs(run.dst.twins) do
            local rcv = k * size + d.tp_rank
            nw = nw + 1
            W[nw] = write({ slot = slot, dst_off = off, len = len, receiver = rcv, dst = d.id, piece_first = 0,
              piece_count = 0, patch_off = 0, patch_cap = 0 })
            rank.bytes_out = rank.bytes_out + len
            local rp = recv_peer[rcv]
            if not rp then rp = {}; recv_peer[rcv] = rp end
            local e = rp[t]
            if not e then e = { bytes = 0, writes = 0 }; rp[t] = e end
            e.bytes, e.writes = e.bytes + len, e.writes + 1
           end
          end
        end
        G.op_count, G.write_count = #out.ops - G.op_first, #out.writes - G.write_first
        out.groups[#out.groups + 1] = G
      end
      rank.group_count = #out.groups - rank.group_first
      rank.op_count = #out.ops - rank.op_first
      rank.write_count = #out.writes - rank.write_first
      out.ranks[#out.ranks + 1] = rank
    end
  end

  -- Receivers: replica k, position r; their destinations are the contiguous ids of position r.
  local first, count = {}, {}
  for _, d in ipairs(dsts) do
    local r = d.tp_rank
    if not first[r] then first[r] = d.id end
    count[r] = (count[r] or 0) + 1
  end
  out.recv, out.peers = {}, {}
  for k = 0, replicas - 1 do
    for r = 0, size - 1 do
      local id = k * size + r
      local rv = { replica = k, tp_rank = r, dst_first = first[r], dst_count = count[r], bytes = 0, peer_first = #out.peers }
      local rp = recv_peer[id] or {}
      for _, t in ipairs(U.sorted_keys(rp)) do
        out.peers[#out.peers + 1] = { trainer = t, bytes = rp[t].bytes, writes = rp[t].writes }
        rv.bytes = rv.bytes + rp[t].bytes
      end
      rv.peer_count = #out.peers - rv.peer_first
      out.recv[#out.recv + 1] = rv
    end
  end
  -- round-robin baseline per trainer rank (every replicate group mirrors group 0's shards)
  out.rr_rank_bytes = {}
  local served_of = {}
  for g = 0, rep - 1 do
    local n = 0
    for _ = g, replicas - 1, rep do n = n + 1 end
    served_of[g] = n
  end
  for t, r in ipairs(out.ranks) do out.rr_rank_bytes[t] = rr_load[r.shard] * served_of[r.replicate] end
  out.total = 0
  for _, r in ipairs(out.ranks) do out.total = out.total + r.bytes_out end
  return out
end

return P
