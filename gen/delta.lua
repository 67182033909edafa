-- delta.lua: the patch areas of delta pushes (rf_config.delta, DESIGN.md section 5c), decided here
-- once for the tables, and the predicted cost of a delta push at a stated density.
--
-- A region is one distinct slot range of a trainer rank: the writes of one run (pack.lua), which
-- send the same slot bytes to every replica and twin; the trainer encodes it once and puts its patch
-- to each of those writes. Every write gets a patch slot in its receiver's patch area:
--   cap(n) = min(align16(bound(n)), align16(48 + ceil(n * budget)))
-- with bound(n) = 32 + align4(n) + 12 ceil(n / 16384) the largest patch of an n-byte region
-- (kernels/delta.h) and 48 bytes for the header, one directory entry and the padding. A receiver's
-- patch area is its peers' parts in peer order, a part the peer's writes to it in table order.
-- A trainer rank's patch buffer holds one patch per region (caps in table order); its staging
-- scratch holds the new encoding of its largest group.
--
-- Sets patch_off and patch_cap on every write row and patch_bytes / scratch_bytes on
-- ranks, patch_bytes on receivers, patch_off / patch_bytes on peers (all 0 without delta), and
-- packed.delta_regions.
local U = require("util")
local S = require("schema")
local WC = S.col.writes
local M = {}

local CHUNK, TILE, HEADER, ENTRY = 16384, 256, 32, 12
local function align(x, a) return (x + a - 1) // a * a end

function M.bound(n) return HEADER + align(n, 4) + ENTRY * U.ceil_div(n, CHUNK) end

function M.cap(n, ppm)
  if ppm == 0 then return 0 end
  return math.min(align(M.bound(n), 16), align(48 + (n * ppm + 999999) // 1000000, 16))
end

function M.layout(plan, model, packed)
  local ppm = plan.delta and plan.delta.ppm or 0
  local W, dsts = packed.writes, model.dsts
  for _, w in ipairs(W) do w[WC.patch_off], w[WC.patch_cap] = 0, 0 end
  for _, r in ipairs(packed.ranks) do r.patch_bytes, r.scratch_bytes = 0, 0 end
  for _, r in ipairs(packed.recv) do r.patch_bytes = 0 end
  for _, q in ipairs(packed.peers) do q.patch_off, q.patch_bytes = 0, 0 end
  if ppm == 0 then return end
  -- a part per (receiver, trainer): its writes' caps, in table order (a region's writes share one
  -- cap); offsets relative to the part first, the scratch from each group's slot range
  local part, nt, regions = {}, #packed.ranks, 0
  for t, rk in ipairs(packed.ranks) do
    local prev, cap
    for g = rk.group_first + 1, rk.group_first + rk.group_count do
      local G = packed.groups[g]
      local lo, hi = math.huge, 0
      for i = G.write_first + 1, G.write_first + G.write_count do
        local w = W[i]
        local slot, len = w[WC.slot], w[WC.len]
        if not prev or prev[WC.slot] ~= slot or prev[WC.len] ~= len then
          if len >= 1 << 32 then
            U.fail(plan.__site, "plan '%s': delta: a write of %d bytes to '%s' is not below 2^32 bytes, the patch "
              .. "format's largest region", plan.name, len, dsts[w[WC.dst] + 1].name)
          end
          regions = regions + 1
          cap = M.cap(len, ppm)
          rk.patch_bytes = rk.patch_bytes + cap
        end
        prev = w
        if slot < lo then lo = slot end
        if slot + len > hi then hi = slot + len end
        local key = w[WC.receiver] * nt + (t - 1)
        local at = part[key] or 0
        w[WC.patch_off], w[WC.patch_cap] = at, cap
        part[key] = at + cap
      end
      if G.write_count > 0 and hi - lo > rk.scratch_bytes then rk.scratch_bytes = hi - lo end
    end
  end
  packed.delta_regions = regions
  -- parts in peer order within each receiver's area; offsets become absolute
  local base = {}
  for r, rv in ipairs(packed.recv) do
    local off = 0
    for k = rv.peer_first + 1, rv.peer_first + rv.peer_count do
      local q = packed.peers[k]
      local key = (r - 1) * nt + q.trainer
      q.patch_off, q.patch_bytes = off, part[key] or 0
      base[key] = off
      off = off + q.patch_bytes
    end
    rv.patch_bytes = off
  end
  for t, rk in ipairs(packed.ranks) do
    for i = rk.write_first + 1, rk.write_first + rk.write_count do
      local w = W[i]
      w[WC.patch_off] = w[WC.patch_off] + base[w[WC.receiver] * nt + (t - 1)]
    end
  end
end

-- ---- predicted cost of a delta push (the same arithmetic as rf_plan_predict_delta in plan.c) ----

-- The measured densities the reports state: issue 16's one step at lr 1e-6 (2048x4096 weights):
-- 3.3% of bf16 values, 0.34% of FP8 codes, 0.4% of block scales (fp32 tensors at the scales' rate).
M.DENSITY = { fp8 = 0.0034, bf16 = 0.033, fp32 = 0.004 }
M.MEM_GBS = 3000 -- device memory, GB/s of bytes moved (H100 copy rate, kernels/NOTES.md)
-- the encode kernel, GB/s of the bytes it reads: 0.8 of MEM_GBS, its rate against a copy measured on
-- an H200 at the stated densities (kernels/NOTES.md, delta encode v4: 0.85 FP8 at 0.3%, 0.82 FP8
-- experts, 0.66 bf16 at 3%, where the sectors old := new writes put the byte floor at 0.82)
M.ENCODE_GBS = 2400

-- Expected patch bytes of an n-byte region of element size e at density d (changes uniform at
-- random): per 16 KB chunk q = P(it changed) entries of 12 bytes plus the smallest record
-- (kernels/delta.h modes) at k = d * C changes.
function M.estimate(n, e, d)
  local size = HEADER
  local full, last = n // CHUNK, n % CHUNK
  for pass = 1, 2 do
    local bytes, count = pass == 1 and CHUNK or last, pass == 1 and full or (last > 0 and 1 or 0)
    if count > 0 then
      local c = bytes // e
      local k = d * c
      local q = 1.0 - (1.0 - d) ^ c
      local list = k * (2 + e)
      local tiles = q * U.ceil_div(c, TILE) + k * (1 + e)
      local bitmap = q * U.ceil_div(c, 8) + k * e
      local dense = q * c * e
      local rec = math.min(list, tiles, bitmap, dense)
      size = size + count * (q * ENTRY + rec)
    end
  end
  return size
end

local SIZE = { fp8 = 1, bf16 = 2, fp32 = 4 }
local ID_SIZE = { 2, 4, 1 } -- by dtype id (enum rf_dtype): bf16, fp32, fp8

-- { seconds, trainer_s, receiver_s, stage_s (of the worst trainer), bytes (patches, regions sent dense and
-- directories, all receivers), worst_trainer, worst_receiver, bound }
function M.predict(plan, model, packed, m, density)
  local rate = m.nic_gbps * m.nics * 1e9 / 8
  local mem = m.mem_gbs * 1e9
  local W, dsts, ops, srcs = packed.writes, model.dsts, packed.ops, model.srcs
  local nr = #packed.recv
  local r_in, r_apply = {}, {}
  for r = 1, nr do r_in[r], r_apply[r] = 0.0, 0.0 end
  local p = { trainer_s = 0, receiver_s = 0, stage_s = 0, worst_trainer = 0, worst_receiver = 0 }
  local bytes = 0.0
  local cache = {} -- estimate by length and dtype: experts share a few lengths
  for t, rk in ipairs(packed.ranks) do
    local sent, targets, ntg = 0.0, {}, 0
    local prev, b, apply
    for i = rk.write_first + 1, rk.write_first + rk.write_count do
      local w = W[i]
      if not prev or prev[WC.slot] ~= w[WC.slot] or prev[WC.len] ~= w[WC.len] then
        local dt = dsts[w[WC.dst] + 1].dtype
        local key = w[WC.len] * 4 + SIZE[dt]
        local est = cache[key]
        if not est then est = M.estimate(w[WC.len], SIZE[dt], density[dt]); cache[key] = est end
        local cap = w[WC.patch_cap] > 0 and w[WC.patch_cap] or w[WC.len]
        if est <= cap then b, apply = est, 2 * est + w[WC.len] -- a patch
        else b, apply = w[WC.len], w[WC.len] end                  -- or the region dense
      end
      prev = w
      sent = sent + b
      local r = w[WC.receiver] + 1
      r_in[r] = r_in[r] + b + 16 -- and its directory entry
      r_apply[r] = r_apply[r] + apply
      bytes = bytes + b + 16
      if not targets[r] then targets[r] = true; ntg = ntg + 1 end
    end
    -- staging: sources read, the new encoding written to the scratch; encode: it read with the old one
    local moved, enc = 0, 0
    for o = rk.op_first + 1, rk.op_first + rk.op_count do
      local op = ops[o]
      local out = op.rows * op.cols * ID_SIZE[op.dst_dtype]
      if op.kind ~= 1 then out = op.rows * op.cols + U.ceil_div(op.rows, U.BLOCK) * U.ceil_div(op.cols, U.BLOCK) * 4 end
      moved = moved + op.count * (op.rows * op.cols * ID_SIZE[op.src_dtype] + out)
      enc = enc + op.count * 2 * out
    end
    local stage = moved / mem + enc / (m.encode_gbs * 1e9)
    local s = stage + (sent + 16 * rk.write_count) / rate + (rk.write_count + ntg) * m.write_us * 1e-6
    if s > p.trainer_s then p.trainer_s, p.worst_trainer, p.stage_s = s, t - 1, stage end
  end
  for r = 1, nr do
    local s = r_in[r] / rate + r_apply[r] / mem
    if s > p.receiver_s then p.receiver_s, p.worst_receiver = s, r - 1 end
  end
  p.bytes = bytes
  p.bound = p.trainer_s > p.receiver_s and "trainer" or "receiver"
  p.seconds = math.max(p.trainer_s, p.receiver_s) + m.rtt_us * 1e-6
  return p
end

return M
