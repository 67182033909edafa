-- index.lua: the index tables the runtime reads at open instead of rebuilding them (refit_plan.h):
--   recv_writes  each receiver's writes, in peer order then table order, with their peer index; a
--                receiver's directory has one entry per row, in this order
--   targets      each trainer rank's receivers (receiver order): their peer row, where the rank's
--                part starts in the receiver's directory and in the rank's own directory buffer
--   regions      delta plans: each trainer rank's regions (distinct slot ranges of a group, in
--                table order) with their patch slot in the rank's patch buffer
--   fin_index    plans with finalize steps: each receiver position's steps (first, count)
-- and the first/count columns that point into them (ranks, recv, peers, groups). Runs after
-- pack.lua, direct.lua and delta.lua; checks that the tables agree with themselves.
local U = require("util")
local S = require("schema")
local WC = S.col.writes
local M = {}


function M.build(plan, model, packed)
  local W, nt = packed.writes, #packed.ranks
  -- receivers: every peer's writes to it, in table order
  local rw, by_key = {}, {}
  for t, rk in ipairs(packed.ranks) do
    for i = rk.write_first + 1, rk.write_first + rk.write_count do
      local key = W[i][WC.receiver] * nt + (t - 1)
      local l = by_key[key]
      if not l then l = {}; by_key[key] = l end
      l[#l + 1] = i - 1
    end
  end
  for r, rv in ipairs(packed.recv) do
    rv.write_first = #rw
    for k = 0, rv.peer_count - 1 do
      local q = packed.peers[rv.peer_first + k + 1]
      local l = by_key[(r - 1) * nt + q.trainer] or {}
      if #l ~= q.writes then
        U.fail(plan.__site, "plan '%s': trainer rank %d has %d writes to receiver %d, its peer row says %d", plan.name,
          q.trainer, #l, r - 1, q.writes)
      end
      q.write_first = #rw
      for _, w in ipairs(l) do rw[#rw + 1] = { write = w, peer = k } end
    end
    rv.write_count = #rw - rv.write_first
  end
  packed.recv_writes = rw
  -- trainer ranks: their receivers in receiver order
  local tg, of_rank = {}, {}
  for t = 1, nt do of_rank[t] = {} end
  for r, rv in ipairs(packed.recv) do
    for k = rv.peer_first + 1, rv.peer_first + rv.peer_count do
      local q = packed.peers[k]
      local l = of_rank[q.trainer + 1]
      l[#l + 1] = { receiver = r - 1, peer = k - 1, dir_off = 16 * (q.write_first - rv.write_first), dir_first = 0 }
    end
  end
  for t, rk in ipairs(packed.ranks) do
    rk.target_first = #tg
    local d = 0
    for _, x in ipairs(of_rank[t]) do
      x.dir_first = d
      d = d + packed.peers[x.peer + 1].writes
      tg[#tg + 1] = x
    end
    rk.target_count = #tg - rk.target_first
  end
  packed.targets = tg
  -- regions (delta plans), group by group
  local rg, delta = {}, plan.delta and plan.delta.ppm or 0
  for _, rk in ipairs(packed.ranks) do
    rk.region_first = #rg
    local at = 0
    for g = rk.group_first + 1, rk.group_first + rk.group_count do
      local G = packed.groups[g]
      G.region_first, G.scratch_lo = #rg, 0
      if delta > 0 and G.write_count > 0 then
        local lo, prev = math.huge, nil
        for i = G.write_first + 1, G.write_first + G.write_count do
          local w = W[i]
          if w[WC.slot] < lo then lo = w[WC.slot] end
          if not prev or prev[WC.slot] ~= w[WC.slot] or prev[WC.len] ~= w[WC.len] then
            rg[#rg + 1] = { slot = w[WC.slot], len = w[WC.len], patch_off = at, patch_cap = w[WC.patch_cap],
              write_first = i - 1, write_count = 0, esize = U.dtypes[model.dsts[w[WC.dst] + 1].dtype].size }
            at = at + w[WC.patch_cap]
          elseif w[WC.patch_cap] ~= rg[#rg].patch_cap then
            U.fail(plan.__site, "plan '%s': writes %d and %d send one slot range with patch slots of %d and %d bytes",
              plan.name, i - 2, i - 1, rg[#rg].patch_cap, w[WC.patch_cap])
          end
          rg[#rg].write_count = rg[#rg].write_count + 1
          prev = w
        end
        G.scratch_lo = lo
      end
      G.region_count = #rg - G.region_first
    end
    rk.region_count = #rg - rk.region_first
    if at ~= rk.patch_bytes then
      U.fail(plan.__site, "plan '%s': a rank's regions need %d patch bytes, its patch buffer has %d", plan.name, at,
        rk.patch_bytes)
    end
  end
  packed.regions = rg
  -- finalize steps (gen/engine.lua, ordered by position): each position's first/count, no rows
  -- when the plan has no steps
  local fi, steps = {}, model.finalize or {}
  if #steps > 0 then
    local n = {}
    for i, st in ipairs(steps) do
      if i > 1 and st.tp_rank < steps[i - 1].tp_rank then
        U.fail(plan.__site, "plan '%s': finalize steps are not ordered by position", plan.name)
      end
      n[st.tp_rank] = (n[st.tp_rank] or 0) + 1
    end
    local at = 0
    for q = 0, plan.inference.size - 1 do
      fi[q + 1] = { first = at, count = n[q] or 0 }
      at = at + (n[q] or 0)
    end
  end
  packed.fin_index = fi
end

return M
