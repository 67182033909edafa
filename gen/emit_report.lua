-- emit_report.lua: the compact per-plan layout report that reviewers read in diffs.
local U = require("util")
local Dl = require("delta")
local Mg = require("megatron")
local R = {}

local function shape_str(shape) return "[" .. table.concat(shape, ", ") .. "]" end
-- a tensor's name without its layer prefix (an MTP layer's drafter prefix becomes "drafter ")
local function short(name)
  return (name:gsub("^model%.layers%.%d+%.", ""):gsub("^drafter%.model%.layers%.%d+%.", "drafter "))
end

local function max_mean(values)
  local mx, sum = 0, 0
  for _, v in ipairs(values) do mx = math.max(mx, v); sum = sum + v end
  if sum == 0 then return 0 end
  return mx / (sum / #values)
end

-- Consecutive equal signatures collapse into ranges: { {first, last, sig, lines} }.
local function collapse(keys, sig_of)
  local out = {}
  for _, k in ipairs(keys) do
    local sig, lines = sig_of(k)
    local last = out[#out]
    if last and last.sig == sig and type(k) == "number" and last.last == k - 1 then
      last.last = k
    else
      out[#out + 1] = { first = k, last = k, sig = sig, lines = lines }
    end
  end
  return out
end

local function per_line(items, n, indent)
  local lines = {}
  for i = 1, #items, n do
    local row = {}
    for j = i, math.min(#items, i + n - 1) do row[#row + 1] = items[j] end
    lines[#lines + 1] = indent .. table.concat(row, "  ")
  end
  return lines
end

function R.facts(plan, model, packed)
  local f = { hf_tensors = #model.srcs, hf_params = 0, hf_bytes = 0, dest_tensors = #model.dsts, dest_bytes = 0,
    writes = #packed.writes }
  for _, s in ipairs(model.srcs) do
    f.hf_params = f.hf_params + s.rows * s.cols
    f.hf_bytes = f.hf_bytes + s.rows * s.cols * U.dtypes[s.dtype].size
  end
  for _, d in ipairs(model.dsts) do f.dest_bytes = f.dest_bytes + d.bytes end
  local out, inb = {}, {}
  for i, r in ipairs(packed.ranks) do out[i] = r.bytes_out end
  for i, r in ipairs(packed.recv) do inb[i] = r.bytes end
  f.trainer_imbalance = max_mean(out)
  f.trainer_imbalance_rr = max_mean(packed.rr_rank_bytes)
  f.receiver_imbalance = max_mean(inb)
  return f
end

-- launch_us: one kernel launch and a stream sync on the receiver (a run of finalize steps): 12.8 us
-- measured on an H100 (a tiny rfk_cuda_ue8m0_pack + synchronize, median of 5 x 2000; kernels/NOTES.md)
R.DEFAULT_MODEL = { nic_gbps = 400, nics = 1, write_us = 1, rtt_us = 10, mem_gbs = Dl.MEM_GBS, encode_gbs = Dl.ENCODE_GBS,
  launch_us = 13 }

-- The same arithmetic as rf_plan_predict() in runtime/plan.c.
function R.predict(packed, m)
  local rate = m.nic_gbps * m.nics * 1e9 / 8 -- bytes per second per GPU
  local p = { trainer_s = 0, receiver_s = 0, worst_trainer = 0, worst_receiver = 0 }
  for i, rk in ipairs(packed.ranks) do
    local t = rk.bytes_out / rate + rk.write_count * m.write_us * 1e-6
    if t > p.trainer_s then p.trainer_s, p.worst_trainer = t, i - 1 end
  end
  for i, rv in ipairs(packed.recv) do
    local t = rv.bytes / rate
    if t > p.receiver_s then p.receiver_s, p.worst_receiver = t, i - 1 end
  end
  p.lower = p.receiver_s
  p.bound = p.trainer_s > p.receiver_s and "trainer" or "receiver"
  p.seconds = math.max(p.trainer_s, p.receiver_s) + m.rtt_us * 1e-6
  return p
end

-- Finalize steps (gen/engine.lua M.finalize): per kind and name, on the busiest position, and the
-- tensors of position 0; nothing for a plan without steps. Kernel steps are predicted at the device
-- copy rate of their bytes read + written; engine steps run the engine's code (measured per version).
function R.finalize(model, inf, add)
  local steps = model.finalize or {}
  if #steps == 0 then return end
  local per_pos, busiest = {}, 0
  for _, st in ipairs(steps) do
    local q = per_pos[st.tp_rank] or { kernel = 0, engine = 0, n = 0, launches = 0 }
    per_pos[st.tp_rank] = q
    q[st.kind == 1 and "kernel" or "engine"] = q[st.kind == 1 and "kernel" or "engine"] + st.bytes
    q.n = q.n + 1
    if st.kind == 1 and st.op ~= q.op then q.launches, q.op = q.launches + 1, st.op end -- a run of one op: one launch
    if not per_pos[busiest] or q.kernel > per_pos[busiest].kernel then busiest = st.tp_rank end
  end
  local b = per_pos[busiest]
  local mem, launch = R.DEFAULT_MODEL.mem_gbs, R.DEFAULT_MODEL.launch_us
  add("")
  add("finalize steps: %d over %d positions; position %d: %d steps, kernels %d bytes (%s), engine code %d bytes (%s)",
    #steps, inf.size, busiest, b.n, b.kernel, U.human(b.kernel), b.engine, U.human(b.engine))
  add("finalize_s: %.3e (kernel steps of position %d at %g GB/s, bytes read + written, plus %d launches x %g us: a "
    .. "launch and a stream sync per run of steps of one op; engine steps: measured per version)",
    b.kernel / (mem * 1e9) + b.launches * launch * 1e-6, busiest, mem, b.launches, launch)
  add("finalize on receiver position 0:")
  local groups, order = {}, {} -- per tensor name and step: its layers, in the order of their first step
  for _, st in ipairs(steps) do
    if st.tp_rank == 0 then
      local o = st.out
      local what = st.kind == 1 and ("kernel %s -> %s %s stride %s, %d bytes"):format(st.name,
        o.dtype == "i32" and "int32" or o.dtype, shape_str({ table.unpack(o.shape, 1, o.ndim) }),
        shape_str({ table.unpack(o.stride, 1, o.ndim) }), st.bytes) or ("engine %s, %d bytes"):format(st.name, st.bytes)
      local key = short(st.dst.name) .. "\0" .. what
      if not groups[key] then groups[key] = { name = short(st.dst.name), what = what, layers = {} }; order[#order + 1] = key end
      local l = groups[key].layers
      l[#l + 1] = st.dst.layer or -1
    end
  end
  for _, key in ipairs(order) do
    local g = groups[key]
    local l, where = g.layers, nil
    if l[1] < 0 then where = "global"
    elseif #l == 1 then where = ("layer %d"):format(l[1])
    elseif l[#l] - l[1] + 1 == #l then where = ("layers %d-%d"):format(l[1], l[#l])
    else where = "layers " .. table.concat(l, ",") end
    add("  %s: %-40s %s", where, g.name, g.what)
  end
end

function R.report(plan, model, packed, f, hash)
  local m, tr, inf, q = plan.__model, plan.trainer, plan.inference, plan.quant
  local L = {}
  local function add(fmt, ...) L[#L + 1] = fmt:format(...) end
  add("model: %s (%s)", m.name, m.family)
  add("plan: %s", plan.name)
  add("layout_hash: 0x%016x", hash)
  add("hf_tensors: %d", f.hf_tensors)
  add("hf_params: %d", f.hf_params)
  add("hf_bytes: %d (%s)", f.hf_bytes, U.human(f.hf_bytes))
  add("dest_tensors_per_replica: %d", f.dest_tensors)
  add("dest_bytes_per_replica: %d (%s)", f.dest_bytes, U.human(f.dest_bytes))
  add("writes_total: %d", f.writes)
  add("trainer_bytes_max_over_mean: %.3f", f.trainer_imbalance)
  add("")
  local mg = tr.megatron
  if mg then
    add("trainer: megatron-core tp %d x pp %d x dp %d (ep %d, etp %d, expert dp %d; %s spec) = %d ranks", mg.tp, mg.pp,
      mg.dp, mg.ep, mg.etp, mg.edp, mg.spec, mg.world)
    add("trainer_vocab: %d padded to %d (a multiple of %d x tp %d); padding rows are never sent", m.vocab,
      mg.padded_vocab, mg.vocab_divisible, mg.tp)
  else
    add("trainer: fsdp %d x dp_replicate %d = %d ranks", tr.fsdp, tr.dp_replicate, tr.fsdp * tr.dp_replicate)
  end
  local except = {}
  for _, e in ipairs(tr.dtype_except) do except[#except + 1] = ("'%s' %s"):format(e[1], e[2]) end
  add("trainer_dtype: %s%s", tr.dtype, #except > 0 and (" (except " .. table.concat(except, ", ") .. ")") or "")
  local has_experts = false
  for _, s in ipairs(model.srcs) do has_experts = has_experts or s.expert or false end
  if has_experts and mg then
    add("trainer_experts: %s", mg.spec == "te" and "TEGroupedMLP mlp.experts.linear_fc1.weight<j> (j local; global "
      .. "ep_rank * E/ep + j)" or "SequentialMLP mlp.experts.local_experts.<j> (j local; global ep_rank * E/ep + j)")
  elseif has_experts then
    add("trainer_experts: %s", tr.experts == "fused"
      and "fused (transformers >= 5: mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I]; FSDP2 shards whole experts)"
      or "per_expert (transformers 4.x: mlp.experts.<e>.*_proj.weight, FSDP2 shards each one row-wise)")
  end
  if model.has_mtp and mg then
    add("trainer_mtp: %s", tr.mtp and "yes (mtp.layers.K on the last pipeline stage)"
      or "no (the trainer builds no MTP block): the engine's drafter keeps its weights, see kept")
  elseif model.has_mtp then
    add("trainer_mtp: %s", tr.mtp and "yes (the trainer holds the MTP layers)"
      or (#model.kept > 0 and "no (transformers does not load MTP layers): the engine's drafter keeps its weights, see kept"
        or "no (transformers does not load MTP layers), nor has the engine"))
  end
  add("inference: tp %d, ep %d%s, %d replicas of %d GPUs = %d receivers", inf.tp, inf.ep,
    inf.ep > inf.tp and (" (attention data-parallel x%d)"):format(inf.ep // inf.tp) or "", inf.replicas, inf.size,
    inf.size * inf.replicas)
  add("quant: %s", q.fp8 and ("block fp8 e4m3 128x128, %s scales, unaligned shards %s"):format(q.scale_fmt,
    q.unaligned == "gather" and "gathered" or "are errors") or "none (bf16/fp32)")
  local rq, rq_bytes = 0, 0 -- weights the trainer casts as vLLM re-quantizes them after loading (SM100)
  for _, d in ipairs(model.dsts) do
    if d.requant then rq, rq_bytes = rq + 1, rq_bytes + d.bytes end
  end
  if rq > 0 then
    add("requant: %d fp8 weights (%d bytes, all positions) cast with fp32 scales then re-quantized to power-of-two "
      .. "scales on the trainer, as vLLM does after loading on SM100 (op kind RF_OP_FP8_REQUANT); the receiver "
      .. "packs their scales (finalize ue8m0_pack)", rq, rq_bytes)
  end
  local eng = plan.engine
  if eng.device == "cpu" then
    add("engine: %s %s on the CPU (%sw13 %s, moe_backend %s, mtp %s)", eng.name, eng.version,
      eng.name == "sglang" and "no AMX; " or "", eng.w13,
      eng.moe_backend, eng.mtp == false and "not sent" or "sent when the model has it")
  else
    add("engine: %s %s (w13 %s, moe_backend %s, sm %d, mtp %s)", eng.name, eng.version, eng.w13, eng.moe_backend,
      eng.sm, eng.mtp == false and "not sent" or "sent when the model has it")
  end
  add("gather_below: %d bytes; shard_min_piece: %d bytes", plan.gather_below, plan.shard_min_piece)
  add("bytes_per_version: %d (%s) in %d writes, %d stage ops", packed.total, U.human(packed.total), #packed.writes,
    #packed.ops)
  add("receiver_bytes_max_over_mean: %.3f", f.receiver_imbalance)
  add("trainer_bytes_max_over_mean_round_robin: %.3f (gathered tensors dealt in checkpoint order)",
    f.trainer_imbalance_rr)
  if f.trainer_imbalance > plan.imbalance_warn then
    add("warning: trainer max/mean %.3f above the plan bound %.2f", f.trainer_imbalance, plan.imbalance_warn)
  end

  -- Time model (README "Time model"): every GPU has its own NICs; a trainer's writes leave at line
  -- rate one after another, each costing a fixed overhead; a receiver takes in at line rate;
  -- the fabric is non-blocking; staging overlaps the writes; one DONE round trip ends the update.
  local tm = R.predict(packed, R.DEFAULT_MODEL)
  local dm = R.DEFAULT_MODEL
  add("")
  add("time model: %g Gb/s per NIC, %d NIC per GPU, %g us per write, %g us DONE round trip",
    dm.nic_gbps, dm.nics, dm.write_us, dm.rtt_us)
  add("predicted_update_s: %.3f (bound by %s)", tm.seconds, tm.bound)
  add("lower_bound_s: %.3f (max receiver bytes / receiver NIC rate)", tm.lower)
  add("trainer_s: %.3f (rank %d), receiver_s: %.3f (receiver %d)", tm.trainer_s, tm.worst_trainer, tm.receiver_s,
    tm.worst_receiver)

  -- Delta pushes (gen/delta.lua): the patch areas of this plan, and the predicted update at the
  -- measured density beside the dense one.
  add("")
  local d = plan.delta
  if d then
    local maxp, maxs, pt, st, area, maxa, ra, maxw, wa = 0, 0, 0, 0, 0, 0, 0, 0, 0
    for i, r in ipairs(packed.ranks) do
      if r.patch_bytes > maxp then maxp, pt = r.patch_bytes, i - 1 end
      if r.scratch_bytes > maxs then maxs, st = r.scratch_bytes, i - 1 end
    end
    for i, r in ipairs(packed.recv) do
      local writes = 0
      for k = r.peer_first + 1, r.peer_first + r.peer_count do writes = writes + packed.peers[k].writes end
      area = area + r.patch_bytes
      if r.patch_bytes > maxa then maxa, ra = r.patch_bytes, i - 1 end
      if writes > maxw then maxw, wa = writes, i - 1 end
    end
    local regions = packed.delta_regions
    add("delta: budget %g (patch area bytes per dense byte, plus 48 per write); %d regions in %d writes", d.budget,
      regions, #packed.writes)
    add("delta_receiver_patch_area: max %d (%s, receiver %d), all receivers %s; directory 16 B per write, max %s (receiver %d)",
      maxa, U.human(maxa), ra, U.human(area), U.human(16 * maxw), wa)
    add("delta_trainer_patch_buffer: max %d (%s, rank %d); staging scratch max %d (%s, rank %d)", maxp, U.human(maxp), pt,
      maxs, U.human(maxs), st)
  else
    add("delta: none (the plan option delta = { budget = B } gives every receiver a patch area)")
  end
  local dn = Dl.DENSITY
  local dp = Dl.predict(plan, model, packed, R.DEFAULT_MODEL, dn)
  add("predicted_delta_s: %.3f (bound by %s) at density fp8 %g%%, bf16 %g%%, fp32 %g%% (issue 16: one step at lr "
    .. "1e-6); dense %.3f", dp.seconds, dp.bound, dn.fp8 * 100, dn.bf16 * 100, dn.fp32 * 100, tm.seconds)
  add("delta_bytes_per_version: %.0f (%s, %.2f%% of dense): patches, regions sent dense, directories", dp.bytes,
    U.human(math.floor(dp.bytes)), 100 * dp.bytes / math.max(packed.total, 1))
  add("delta_trainer_s: %.3f (rank %d; staging and encode %.3f at %d GB/s, the encode at %d GB/s), "
    .. "delta_receiver_s: %.3f (receiver %d)", dp.trainer_s, dp.worst_trainer, dp.stage_s, R.DEFAULT_MODEL.mem_gbs,
    R.DEFAULT_MODEL.encode_gbs, dp.receiver_s, dp.worst_receiver)

  -- How sources travel, and which are gathered because a shard cut would split an FP8 block.
  local by = { shard = { n = 0, b = 0 }, small = { n = 0, b = 0 }, unaligned = { n = 0, b = 0 }, rank = { n = 0, b = 0 } }
  local ex = { shard = { n = 0, b = 0 }, gather = { n = 0, b = 0 } }
  local unaligned_roles, role_order = {}, {}
  local gathered_on = {}
  for k = 0, tr.fsdp - 1 do gathered_on[k] = 0 end
  for _, s in ipairs(model.srcs) do
    local k = s.travel == "gather" and s.why or s.travel
    by[k].n, by[k].b = by[k].n + 1, by[k].b + s.bytes
    if s.expert and not s.holder then ex[s.travel].n, ex[s.travel].b = ex[s.travel].n + 1, ex[s.travel].b + s.bytes end
    if s.travel == "gather" and not s.holder then gathered_on[s.shard] = gathered_on[s.shard] + s.bytes end
    if s.why == "unaligned" then
      if not unaligned_roles[s.role] then unaligned_roles[s.role] = 0; role_order[#role_order + 1] = s.role end
      unaligned_roles[s.role] = unaligned_roles[s.role] + 1
    end
  end
  add("")
  if mg then
    -- every source is one rank's own Megatron parameter shard; nothing is gathered
    add("travel (source tensors, trainer bytes): every rank sends its own parameter shards, nothing is gathered")
    add("  rank-local %7d  %s  (Megatron parameter shards read by some destination)", by.rank.n, U.human(by.rank.b))
    local held, sent = {}, {}
    for r = 0, mg.world - 1 do held[r], sent[r] = 0, 0 end
    for _, s in ipairs(model.srcs) do sent[s.holder] = sent[s.holder] + 1 end
    for r = 0, mg.world - 1 do held[r] = #model.mg_listing[r] end
    local items = {}
    for r = 0, mg.world - 1 do
      local c = Mg.coords(mg, r)
      items[#items + 1] = ("%3d tp%d pp%d ep%d: %d of %d"):format(r, c.tp, c.pp, c.ep, sent[r], held[r])
    end
    add("  parameters sent of those held, per rank:")
    for _, line in ipairs(per_line(items, 3, "  ")) do L[#L + 1] = line end
  else
    add("travel (source tensors, trainer bytes):")
    add("  shard      %7d  %s", by.shard.n, U.human(by.shard.b))
    add("  gathered   %7d  %s  (below gather_below or shard_min_piece)", by.small.n, U.human(by.small.b))
    add("  gathered   %7d  %s  (shard cut inside an fp8 block)", by.unaligned.n, U.human(by.unaligned.b))
    for _, role in ipairs(role_order) do add("    %s x%d", role, unaligned_roles[role]) end
    if has_experts then
      add("  experts: %d tensors shard by shard (%s), %d gathered (%s)", ex.shard.n, U.human(ex.shard.b), ex.gather.n,
        U.human(ex.gather.b))
    end
    local most = 0
    for k = 1, tr.fsdp - 1 do if gathered_on[k] > gathered_on[most] then most = k end end
    add("gathered_bytes_per_version: %d (%s), assembled whole on their shard before each push; most on shard %d: %s",
      by.small.b + by.unaligned.b, U.human(by.small.b + by.unaligned.b), most, U.human(gathered_on[most]))
  end

  -- Destination tensors of TP rank 0 (other ranks differ only in their slices), layers collapsed.
  add("")
  add("destination tensors on receiver 0 (%d per replica over %d GPUs):", f.dest_tensors, inf.size)
  local by_layer, keys = {}, {}
  for _, d in ipairs(model.dsts) do
    if d.tp_rank == 0 then
      local k = d.layer or -1
      if not by_layer[k] then by_layer[k] = {}; keys[#keys + 1] = k end
      local l = by_layer[k]
      l[#l + 1] = d
    end
  end
  local ranges = collapse(keys, function(k)
    local lines = {}
    for _, d in ipairs(by_layer[k]) do
      local extra = ""
      if d.pad_rows > 0 then extra = extra .. (" (%d padding rows)"):format(d.pad_rows) end
      if #d.aliases > 0 then extra = extra .. (" +%d alias%s"):format(#d.aliases, #d.aliases > 1 and "es" or "") end
      lines[#lines + 1] = ("    %-52s %-18s %s%s"):format(short(d.name), shape_str(d.shape), d.dtype, extra)
    end
    local s = table.concat(lines, "\n")
    return s, lines
  end)
  for _, rg in ipairs(ranges) do
    if rg.first == -1 then add("  global:")
    elseif rg.first == rg.last then add("  layer %d:", rg.first)
    else add("  layers %d-%d (%d):", rg.first, rg.last, rg.last - rg.first + 1) end
    for _, line in ipairs(rg.lines) do L[#L + 1] = line end
  end

  if #model.kept > 0 then
    add("")
    add("kept: the engine's MTP drafter tensors, which a trainer without MTP layers cannot write; they keep their")
    add("old values on every receiver position (%d names):", #model.kept)
    local by_l, ls = {}, {}
    for _, spec in ipairs(model.kept) do
      local k = spec.layer or -1
      if not by_l[k] then by_l[k] = {}; ls[#ls + 1] = k end
      local l = by_l[k]
      l[#l + 1] = spec
    end
    for _, k in ipairs(ls) do
      add(k == -1 and "  global:" or ("  layer %d:"):format(k))
      for _, spec in ipairs(by_l[k]) do
        add("    %-52s %s%s", spec.name:gsub("^model%.layers%.%d+%.", ""),
          spec.kept_dtype == "fp8" and "fp8 (+ weight_scale_inv fp32)" or spec.kept_dtype,
          spec.derived and " (+ the engine's derived W_UK_T, W_UV)" or "")
      end
    end
  end

  local mla = {} -- the MLA views (finalize steps' storages are listed with their steps)
  for _, t in ipairs(model.derived) do if not t.finalize then mla[#mla + 1] = t end end
  if #mla > 0 then
    add("")
    add("derived on receiver 0 (%d views, %d refresh steps over %d positions in all):", #mla,
      #model.refresh, inf.size)
    local first, last, uk0, uv0
    local function flush()
      if not uk0 then return end
      local where = uk0.dst and ("views of %s (bf16): written with it, nothing to rebuild"):format(short(uk0.dst.name))
        or ("refresh: MLA absorb into a %d-byte bf16 storage"):format(uk0.bytes)
      add("  layers %s: %s", first == last and tostring(first) or (first .. "-" .. last), where)
      for _, t in ipairs({ uk0, uv0 }) do
        add("    %-44s %-18s stride %s off %d", short(t.name), shape_str(t.shape), shape_str(t.stride), t.offset)
      end
    end
    for i = 1, #mla, 2 do
      local uk, uv = mla[i], mla[i + 1]
      if uk.tp_rank == 0 then
        if uk0 and uk.layer == last + 1 and (uk.dst == nil) == (uk0.dst == nil) then last = uk.layer
        else flush(); first, last, uk0, uv0 = uk.layer, uk.layer, uk, uv end
      end
    end
    flush()
  end
  R.finalize(model, inf, add)
  add("")
  add("trainer ranks: bytes out per version (writes, arena):")
  local items = {}
  for i, r in ipairs(packed.ranks) do
    items[#items + 1] = ("%3d %s (%d, %s)"):format(i - 1, U.human(r.bytes_out), r.write_count, U.human(r.arena))
  end
  for _, line in ipairs(per_line(items, 3, "  ")) do L[#L + 1] = line end
  add("")
  add("receivers: bytes in per version (trainer peers):")
  items = {}
  for i, r in ipairs(packed.recv) do
    items[#items + 1] = ("%3d %s (%d)"):format(i - 1, U.human(r.bytes), r.peer_count)
  end
  for _, line in ipairs(per_line(items, 4, "  ")) do L[#L + 1] = line end
  return table.concat(L, "\n") .. "\n"
end

return R
