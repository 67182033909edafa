-- emit_c.lua: the plan as C tables (build/gen/<plan>.{c,h}) and its self-check program.
local U = require("util")
local E = {}

local NONE = 0xFFFFFFFF
local GLOBAL_LAYER = 0xFFFF
local TRAVEL = { shard = 2, gather = 3 }

-- Flatten the derived model and packed plan into the rows of every C table, in emission order.
function E.tables(plan, model, packed)
  local t = {}
  t.src = {}
  for i, s in ipairs(model.srcs) do
    t.src[i] = { s.name, s.rows, s.cols, s.chunk, s.travel == "shard" and NONE or s.shard,
      s.layer or GLOBAL_LAYER, U.dtypes[s.dtype].id, TRAVEL[s.travel], #s.shape, s.shape[1], s.shape[2] or 0,
      s.shape[3] or 0 }
  end
  t.dst = {}
  for i, d in ipairs(model.dsts) do
    local st = E.contiguous(d.shape)
    t.dst[i] = { d.name, table.concat(d.aliases, ","), d.shape[1] or 0, d.shape[2] or 0, d.shape[3] or 0,
      st[1] or 0, st[2] or 0, st[3] or 0, d.pad_rows, d.bytes, d.weight and d.weight.id or NONE, d.tp_rank,
      #d.shape, U.dtypes[d.dtype].id }
  end
  t.ops = {}
  for i, o in ipairs(packed.ops) do
    local st = o.steps
    t.ops[i] = { o.src, o.count, st.src, o.kind, o.src_dtype, o.dst_dtype, o.row0, o.col0, o.rows, o.cols,
      st.row, st.col, o.out, st.out, o.scale or 0, st.scale, o.direct or 0 }
  end
  t.writes = packed.writes
  t.pieces = packed.pieces
  t.groups = {}
  for i, g in ipairs(packed.groups) do
    t.groups[i] = { g.op_first, g.op_count, g.write_first, g.write_count, g.layer < 0 and GLOBAL_LAYER or g.layer }
  end
  t.ranks = {}
  for i, r in ipairs(packed.ranks) do
    t.ranks[i] = { r.arena, r.bytes_out, r.shard, r.replicate, r.group_first, r.group_count, r.op_first,
      r.op_count, r.write_first, r.write_count, r.patch_bytes, r.scratch_bytes }
  end
  t.recv = {}
  for i, r in ipairs(packed.recv) do
    t.recv[i] = { r.bytes, r.replica, r.tp_rank, r.dst_first, r.dst_count, r.peer_first, r.peer_count, r.patch_bytes }
  end
  t.peers = {}
  for i, p in ipairs(packed.peers) do t.peers[i] = { p.bytes, p.trainer, p.writes, p.patch_off, p.patch_bytes } end
  t.derived = {}
  for i, d in ipairs(model.derived) do
    t.derived[i] = { d.name, d.shape[1], d.shape[2], d.shape[3], d.stride[1], d.stride[2], d.stride[3], d.offset,
      d.bytes, d.storage, d.dst and d.dst.id or NONE, d.tp_rank, 3, U.dtypes[d.dtype].id }
  end
  t.refresh = {}
  for i, r in ipairs(model.refresh) do
    t.refresh[i] = { r.kind, r.weight.id, r.scale and r.scale.id or NONE, r.uk.id, r.uv.id, r.heads, r.qk_nope,
      r.v_head, r.kv_lora, r.tp_rank, r.layer or GLOBAL_LAYER }
  end
  local tr, inf = plan.trainer, plan.inference
  t.head = { packed.total, tr.fsdp, tr.dp_replicate, tr.fsdp * tr.dp_replicate, inf.tp, inf.ep,
    inf.replicas, inf.replicas * inf.size, plan.quant.scale_fmt == "ue8m0" and 1 or 0, plan.delta and plan.delta.ppm or 0 }
  return t
end

-- Strides in elements of a row-major contiguous tensor of this shape.
function E.contiguous(shape)
  local st, n = {}, 1
  for k = #shape, 1, -1 do st[k] = n; n = n * shape[k] end
  return st
end

-- rf_plan_hash() over the same rows (refit_plan.h documents the order): strings (names, aliases)
-- as strings, everything else as an integer.
function E.hash(t)
  local PRIME, mix_str = 0x100000001b3, U.mix_str
  local h = U.HASH0
  for _, v in ipairs(t.head) do h = (h ~ v) * PRIME end
  for _, name in ipairs({ "src", "dst", "ops", "writes", "groups", "ranks", "recv", "peers", "derived", "refresh",
    "pieces" }) do
    local list = t[name]
    local strings = name == "src" or name == "dst" or name == "derived"
    for i = 1, #list do
      local row = list[i]
      for k = 1, #row do
        local v = row[k]
        if strings and type(v) == "string" then h = mix_str(h, v) else h = (h ~ v) * PRIME end
      end
    end
  end
  return h
end

local function cstr(s)
  if s:find('[\\"]') then s = s:gsub('[\\"]', "\\%0") end
  return '"' .. s .. '"'
end

local function rows(buf, tname, ctype, list, fmt_row)
  buf[#buf + 1] = ("static const %s %s[] = {\n"):format(ctype, tname)
  if #list == 0 then buf[#buf + 1] = "  {0}\n" end
  for i, row in ipairs(list) do
    buf[#buf + 1] = fmt_row(i - 1, row)
  end
  buf[#buf + 1] = "};\n\n"
end

local function nums(row, from)
  local s = {}
  for i = from or 1, #row do s[#s + 1] = ("%d"):format(row[i]) end
  return table.concat(s, ", ")
end

function E.emit(plan, t, hash, header_line)
  local id = plan.name
  local c = { header_line, ('#include "%s.h"\n\n'):format(id) }
  rows(c, "src", "rf_src_tensor", t.src, function(i, r)
    return ("  /* %d */ {%s, %d, %d, %d, %d, %d, %d, %d, %d, {%d, %d, %d}},\n"):format(i, cstr(r[1]), r[2], r[3], r[4],
      r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12])
  end)
  c[#c + 1] = "/* name, aliases, shape, stride, pad_rows, bytes, weight, tp_rank, ndim, dtype */\n"
  rows(c, "dst", "rf_dst_tensor", t.dst, function(i, r)
    return ("  /* %d */ {%s, %s, {%d, %d, %d}, {%d, %d, %d}, %d, %d, %d, %d, %d, %d},\n"):format(i, cstr(r[1]),
      cstr(r[2]), table.unpack(r, 3))
  end)
  c[#c + 1] = "/* src, count, src_step, kind, src_dtype, dst_dtype, row0, col0, rows, cols, row_step, col_step,\n"
    .. "   out, out_step, scale, scale_step, direct */\n"
  local f17 = "  {%d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d},\n"
  rows(c, "ops", "rf_op", t.ops, function(_, r) return f17:format(table.unpack(r)) end)
  c[#c + 1] = "/* slot, dst_off, len, receiver, dst, piece_first, piece_count, patch_off, patch_cap */\n"
  rows(c, "writes", "rf_write", t.writes, function(_, r)
    return ("  {%d, %d, %d, %d, %d, %d, %d, %d, %d},\n"):format(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
  end)
  c[#c + 1] = "/* src_off, off, len, src */\n"
  rows(c, "pieces", "rf_piece", t.pieces, function(_, r) return "  {" .. nums(r) .. "},\n" end)
  c[#c + 1] = "/* op_first, op_count, write_first, write_count, layer */\n"
  rows(c, "groups", "rf_group", t.groups, function(_, r) return "  {" .. nums(r) .. "},\n" end)
  c[#c + 1] = "/* arena_bytes, bytes_out, shard, replicate, group_first, group_count, op_first, op_count,\n"
    .. "   write_first, write_count, patch_bytes, scratch_bytes */\n"
  rows(c, "ranks", "rf_rank", t.ranks, function(i, r) return ("  /* %d */ {%s},\n"):format(i, nums(r)) end)
  c[#c + 1] = "/* bytes, replica, tp_rank, dst_first, dst_count, peer_first, peer_count, patch_bytes */\n"
  rows(c, "recv", "rf_receiver", t.recv, function(i, r) return ("  /* %d */ {%s},\n"):format(i, nums(r)) end)
  c[#c + 1] = "/* bytes, trainer, writes, patch_off, patch_bytes */\n"
  rows(c, "peers", "rf_peer", t.peers, function(_, r) return "  {" .. nums(r) .. "},\n" end)
  c[#c + 1] = "/* name, shape, stride, offset, bytes (of the storage), storage, dst, tp_rank, ndim, dtype */\n"
  rows(c, "derived", "rf_derived_tensor", t.derived, function(i, r)
    return ("  /* %d */ {%s, {%d, %d, %d}, {%d, %d, %d}, %d, %d, %d, %d, %d, %d, %d},\n"):format(i, cstr(r[1]),
      table.unpack(r, 2))
  end)
  c[#c + 1] = "/* kind, weight, scale, out0, out1, heads, qk_nope, v_head, kv_lora, tp_rank, layer */\n"
  rows(c, "refresh", "rf_refresh", t.refresh, function(_, r) return "  {" .. nums(r) .. "},\n" end)
  local h = t.head
  c[#c + 1] = ("const rf_plan rf_plan_%s = {\n"):format(id)
  c[#c + 1] = ("  .name = %s,\n  .model = %s,\n  .layout_hash = 0x%016xull,\n  .total_bytes = %d,\n")
    :format(cstr(id), cstr(plan.model), hash, h[1])
  c[#c + 1] = ("  .fsdp = %d, .dp_replicate = %d, .trainers = %d, .tp = %d, .ep = %d, .replicas = %d, .receivers = %d,\n")
    :format(h[2], h[3], h[4], h[5], h[6], h[7], h[8])
  c[#c + 1] = ("  .n_src = %d, .n_dst = %d, .n_ops = %d, .n_writes = %d, .n_groups = %d, .n_peers = %d,\n")
    :format(#t.src, #t.dst, #t.ops, #t.writes, #t.groups, #t.peers)
  c[#c + 1] = ("  .scale_fmt = %s, .delta_ppm = %d,\n"):format(h[9] == 1 and "RF_SCALE_UE8M0" or "RF_SCALE_FP32", h[10])
  c[#c + 1] = "  .src = src, .dst = dst, .ops = ops, .writes = writes, .groups = groups, .ranks = ranks,\n"
  c[#c + 1] = ("  .recv = recv, .peers = peers,\n  .n_derived = %d, .n_refresh = %d, .derived = derived, .refresh = refresh,\n")
    :format(#t.derived, #t.refresh)
  c[#c + 1] = ("  .n_pieces = %d, .pieces = pieces,\n};\n"):format(#t.pieces)

  local guard = "REFIT_PLAN_" .. id:upper() .. "_H"
  local hdr = table.concat({ header_line, ("#ifndef %s\n#define %s\n\n#include \"refit_plan.h\"\n\n"):format(guard, guard),
    ("extern const rf_plan rf_plan_%s;\n\n#endif\n"):format(id) })
  return table.concat(c), hdr
end

function E.check(plan, expect, header_line)
  local id = plan.name
  return table.concat({ header_line, '#include "selfcheck.h"\n', ('#include "%s.h"\n\n'):format(id),
    "int main(void)\n{\n  static const rf_expect expect = {\n",
    ("    .layout_hash = 0x%016xull,\n"):format(expect.hash),
    ("    .hf_tensors = %d,\n    .hf_bytes = %d,\n"):format(expect.hf_tensors, expect.hf_bytes),
    ("    .dest_tensors_per_replica = %d,\n    .dest_bytes_per_replica = %d,\n"):format(expect.dest_tensors, expect.dest_bytes),
    ("    .writes_total = %d,\n"):format(expect.writes),
    ("  };\n  return rf_selfcheck(&rf_plan_%s, &expect);\n}\n"):format(id) })
end

-- A plan set: the plans a library or program links, behind refit.h's rf_plan_count / rf_plan_at /
-- rf_plan_find (at least one plan; names in the order given).
function E.registry(names, header_line)
  local c = { header_line, '#include <string.h>\n\n#include "plans.h"\n' }
  for _, n in ipairs(names) do c[#c + 1] = ('#include "%s.h"\n'):format(n) end
  c[#c + 1] = "\nstatic const rf_plan *const plans[] = {\n"
  for _, n in ipairs(names) do c[#c + 1] = ("  &rf_plan_%s,\n"):format(n) end
  c[#c + 1] = ("};\n\nuint32_t rf_plan_count(void) { return %d; }\n\n"):format(#names)
  c[#c + 1] = "const rf_plan *rf_plan_at(uint32_t i) { return i < rf_plan_count() ? plans[i] : NULL; }\n\n"
  c[#c + 1] = "const rf_plan *rf_plan_find(const char *name)\n{\n"
    .. "  for (uint32_t i = 0; name && i < rf_plan_count(); i++)\n"
    .. "    if (strcmp(plans[i]->name, name) == 0)\n      return plans[i];\n  return NULL;\n}\n"
  local h = header_line .. "#ifndef REFIT_PLANS_H\n#define REFIT_PLANS_H\n\n"
    .. "/* rf_plan_count, rf_plan_at and rf_plan_find (refit.h) over this plan set */\n"
    .. "#include \"refit.h\"\n\n#endif\n"
  return table.concat(c), h
end

return E
