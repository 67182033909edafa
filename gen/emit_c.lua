-- emit_c.lua: the plan as C tables (build/gen/<plan>.{c,h}) and its self-check program.
local U = require("util")
local S = require("schema")
local E = {}

local NONE = 0xFFFFFFFF
local GLOBAL_LAYER = 0xFFFF
local TRAVEL = { shard = 2, gather = 3 }

-- Each table's rows by name, from the derived model and the packed plan (gen/schema.lua orders the
-- columns). writes and pieces come positional from pack.lua / direct.lua / delta.lua, which build
-- them through schema.col.
local ROWS = {
  src = function(model) return model.srcs end, dst = function(model) return model.dsts end,
  ops = function(_, p) return p.ops end, groups = function(_, p) return p.groups end,
  ranks = function(_, p) return p.ranks end, recv = function(_, p) return p.recv end,
  peers = function(_, p) return p.peers end, derived = function(model) return model.derived end,
  refresh = function(model) return model.refresh end,
  recv_writes = function(_, p) return p.recv_writes end, targets = function(_, p) return p.targets end,
  regions = function(_, p) return p.regions end,
  finalize = function(model) return model.finalize or {} end, fin_index = function(_, p) return p.fin_index end,
}
local NAMED = {
  src = function(s)
    return { name = s.name, rows = s.rows, cols = s.cols, shard_rows = s.chunk,
      shard = s.travel == "shard" and NONE or s.shard, layer = s.layer or GLOBAL_LAYER, dtype = U.dtypes[s.dtype].id,
      travel = TRAVEL[s.travel], ndim = #s.shape, shape = { s.shape[1], s.shape[2] or 0, s.shape[3] or 0 } }
  end,
  dst = function(d)
    local st = E.contiguous(d.shape)
    return { name = d.name, aliases = table.concat(d.aliases, ","), shape = { d.shape[1] or 0, d.shape[2] or 0,
      d.shape[3] or 0 }, stride = { st[1] or 0, st[2] or 0, st[3] or 0 }, pad_rows = d.pad_rows, bytes = d.bytes,
      weight = d.weight and d.weight.id or NONE, tp_rank = d.tp_rank, ndim = #d.shape, dtype = U.dtypes[d.dtype].id }
  end,
  ops = function(o)
    local st = o.steps
    return { src = o.src, count = o.count, src_step = st.src, kind = o.kind, src_dtype = o.src_dtype,
      dst_dtype = o.dst_dtype, row0 = o.row0, col0 = o.col0, rows = o.rows, cols = o.cols, row_step = st.row,
      col_step = st.col, out = o.out, out_step = st.out, scale = o.scale or 0, scale_step = st.scale,
      direct = o.direct or 0 }
  end,
  groups = function(g)
    return { op_first = g.op_first, op_count = g.op_count, write_first = g.write_first, write_count = g.write_count,
      layer = g.layer < 0 and GLOBAL_LAYER or g.layer, region_first = g.region_first, region_count = g.region_count,
      scratch_lo = g.scratch_lo }
  end,
  ranks = function(r)
    return { arena_bytes = r.arena, bytes_out = r.bytes_out, shard = r.shard, replicate = r.replicate,
      group_first = r.group_first, group_count = r.group_count, op_first = r.op_first, op_count = r.op_count,
      write_first = r.write_first, write_count = r.write_count, patch_bytes = r.patch_bytes,
      scratch_bytes = r.scratch_bytes, target_first = r.target_first, target_count = r.target_count,
      region_first = r.region_first, region_count = r.region_count }
  end,
  recv = function(r)
    return { bytes = r.bytes, replica = r.replica, tp_rank = r.tp_rank, dst_first = r.dst_first,
      dst_count = r.dst_count, peer_first = r.peer_first, peer_count = r.peer_count, patch_bytes = r.patch_bytes,
      write_first = r.write_first, write_count = r.write_count }
  end,
  peers = function(q)
    return { bytes = q.bytes, trainer = q.trainer, writes = q.writes, patch_off = q.patch_off,
      patch_bytes = q.patch_bytes, write_first = q.write_first }
  end,
  derived = function(d)
    return { name = d.name, shape = { d.shape[1], d.shape[2], d.shape[3] },
      stride = { d.stride[1], d.stride[2], d.stride[3] }, offset = d.offset, bytes = d.bytes, storage = d.storage,
      dst = d.dst and d.dst.id or NONE, tp_rank = d.tp_rank, ndim = d.ndim or 3, dtype = d.dtype_id or U.dtypes[d.dtype].id }
  end,
  recv_writes = function(x) return x end, targets = function(x) return x end, regions = function(x) return x end,
  fin_index = function(x) return x end,
  finalize = function(f)
    return { name = f.name, dst = f.dst.id, out = f.out_id, rows = f.rows, cols = f.cols, groups = f.groups, bytes = f.bytes,
      tp_rank = f.tp_rank, kind = f.kind, op = f.op }
  end,
  refresh = function(r)
    return { kind = r.kind, weight = r.weight.id, scale = r.scale and r.scale.id or NONE, out0 = r.uk.id,
      out1 = r.uv.id, heads = r.heads, qk_nope = r.qk_nope, v_head = r.v_head, kv_lora = r.kv_lora,
      tp_rank = r.tp_rank, layer = r.layer or GLOBAL_LAYER }
  end,
}

-- Every table's positional rows (schema order) and the head's values by name.
function E.tables(plan, model, packed)
  local t = { writes = packed.writes, pieces = packed.pieces }
  for _, tb in ipairs(S.tables) do
    if not t[tb.name] then
      local list, named = {}, NAMED[tb.name]
      for i, x in ipairs(ROWS[tb.name](model, packed)) do list[i] = S.row(tb.name, named(x)) end
      t[tb.name] = list
    end
  end
  local tr, inf = plan.trainer, plan.inference
  t.head = { name = plan.name, model = plan.model, total_bytes = packed.total, fsdp = tr.fsdp,
    dp_replicate = tr.dp_replicate, trainers = tr.fsdp * tr.dp_replicate, tp = inf.tp, ep = inf.ep,
    replicas = inf.replicas, receivers = inf.replicas * inf.size, scale_fmt = plan.quant.scale_fmt == "ue8m0" and 1 or 0,
    delta_ppm = plan.delta and plan.delta.ppm or 0 }
  return t
end

-- Strides in elements of a row-major contiguous tensor of this shape.
function E.contiguous(shape)
  local st, n = {}, 1
  for k = #shape, 1, -1 do st[k] = n; n = n * shape[k] end
  return st
end

-- rf_plan_hash() over the same values (runtime/plan.c): the head's hashed values, then each table
-- row by row, column by column as the schema lists them; strings as strings, arrays element-wise.
function E.hash(t)
  local PRIME, mix_str = 0x100000001b3, U.mix_str
  local h = U.HASH0
  for _, f in ipairs(S.head.fields) do
    if f.hash then h = (h ~ t.head[f[1]]) * PRIME end
  end
  for _, tb in ipairs(S.tables) do
    local list, kinds, flat = t[tb.name], {}, true
    for k, f in ipairs(tb.fields) do
      kinds[k] = S.is_str(f) and "s" or f.n and "a" or "i"
      if kinds[k] ~= "i" then flat = false end
    end
    for i = 1, #list do
      local row = list[i]
      if flat then
        for k = 1, #kinds do h = (h ~ row[k]) * PRIME end
      else
        for k = 1, #kinds do
          local v, kd = row[k], kinds[k]
          if kd == "s" then h = mix_str(h, v)
          elseif kd == "a" then for j = 1, #v do h = (h ~ v[j]) * PRIME end
          else h = (h ~ v) * PRIME end
        end
      end
    end
  end
  return h
end

local function cstr(s)
  if s:find('[\\"]') then s = s:gsub('[\\"]', "\\%0") end
  return '"' .. s .. '"'
end

-- Tables whose rows carry their index as a comment.
local INDEXED = { src = true, dst = true, ranks = true, recv = true, derived = true }

-- A table as C: a macro R that turns its values, in schema order, into a designated initializer
-- (#define R(a1, ...) {.slot = a1, ...}), then one call per row (R is short: a plan has millions).
local function emit_table(c, tb, list)
  local params, inits, n = {}, {}, 0
  for _, f in ipairs(tb.fields) do
    if f.n then
      local el = {}
      for _ = 1, f.n do n = n + 1; params[n] = "a" .. n; el[#el + 1] = "a" .. n end
      inits[#inits + 1] = (".%s = {%s}"):format(f[1], table.concat(el, ", "))
    else
      n = n + 1
      params[n] = "a" .. n
      inits[#inits + 1] = (".%s = a%d"):format(f[1], n)
    end
  end
  local m = "R"
  c[#c + 1] = ("#define %s(%s) {%s}\n"):format(m, table.concat(params, ", "), table.concat(inits, ", "))
  c[#c + 1] = ("static const %s %s[] = {\n"):format(tb.ctype, tb.name)
  if #list == 0 then c[#c + 1] = "  {0}\n" end
  local kinds = {}
  for k, f in ipairs(tb.fields) do kinds[k] = S.is_str(f) and "s" or f.n and "a" or "i" end
  local pre = "  " .. m .. "("
  for i, row in ipairs(list) do
    local v = {}
    for k = 1, #kinds do
      local x, kd = row[k], kinds[k]
      if kd == "s" then v[#v + 1] = cstr(x)
      elseif kd == "a" then for j = 1, #x do v[#v + 1] = ("%d"):format(x[j]) end
      else v[#v + 1] = ("%d"):format(x) end
    end
    c[#c + 1] = (INDEXED[tb.name] and ("  /* %d */ %s("):format(i - 1, m) or pre) .. table.concat(v, ", ") .. "),\n"
  end
  c[#c + 1] = "};\n#undef R\n\n"
end

function E.emit(plan, t, hash, header_line)
  local id = plan.name
  local c = { header_line, ('#include "%s.h"\n\n'):format(id) }
  for _, tb in ipairs(S.tables) do emit_table(c, tb, t[tb.name]) end
  c[#c + 1] = ("const rf_plan rf_plan_%s = {\n"):format(id)
  for _, f in ipairs(S.head.fields) do
    local name, v = f[1], nil
    if f.rows then v = f.rows
    elseif f.count then v = ("%d"):format(#t[f.count])
    elseif name == "layout_hash" then v = ("0x%016xull"):format(hash)
    elseif S.is_str(f) then v = cstr(t.head[name])
    else v = ("%d"):format(t.head[name]) end
    c[#c + 1] = ("  .%s = %s,\n"):format(name, v)
  end
  c[#c + 1] = "};\n"

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
