-- schema.lua: every plan table's columns, once: name, C type, comment, in declaration order.
--
-- From this list come the C structs (runtime/include/refit_tables.h, generated and committed:
-- lua5.4 gen/schema.lua runtime/include/refit_tables.h), the designated initializers of every
-- emitted plan (gen/emit_c.lua), the Lua layout hash (emit_c.lua) and the C one (runtime/plan.c
-- walks the column lists refit_tables.h defines). Nothing else spells a table's columns: a row is
-- built by name (emit_c.lua) or, for the large positional rows the generator keeps (writes,
-- pieces), through the column numbers S.col gives.
--
-- A column is { name, C type, comment, n = elements of a fixed array }; "const char *" is a string
-- (the hash mixes its bytes). Tables are listed in hash order. The plan head (rf_plan) lists its own
-- fields: hash = true for the values the layout hash covers (in this order, before every table),
-- count = T for the row count of table T, rows = T for its array.
local S = {}

S.tables = {
  { name = "src", ctype = "rf_src_tensor", count = "n_src", doc = [[
A parameter of the trainer's model. Its full shape is shape[0..ndim-1] (ndim 1..3, unused dims
0), e.g. [H] for a norm, [out, in] for a linear, [E, 2I, H] for fused experts (transformers >= 5
mlp.experts.gate_up_proj). Ops and bindings address it as a row-major 2-D view [rows, cols]:
cols = shape[ndim-1] and rows = the product of the other dims (ndim 1: rows = shape[0], cols = 1).
FSDP2 chunks dim 0 as torch.chunk does: ceil(shape[0] / fsdp) per shard, trailing shards short or
empty; shard_rows is that chunk in view rows, ceil(shape[0] / fsdp) * (rows / shape[0]).
What trainer rank (replicate g, shard s) binds, contiguous, in `dtype`:
  SHARD:  its FSDP2 local shard, view rows [s*shard_rows, min(rows, (s+1)*shard_rows)), i.e. shape
          [max(0, min(c, shape[0] - s*c)), shape[1], ...] with c = ceil(shape[0] / fsdp);
  GATHER: on shard `shard` only, the full tensor (every rank of that shard index, in each
          replicate group); other shards bind nothing.
A rank binds only the sources its ops read (rf_src_bytes > 0).]],
    fields = {
      { "name", "const char *", "HF transformers name" },
      { "rows", "int64_t", "the 2-D view, elements" },
      { "cols", "int64_t", "" },
      { "shard_rows", "int64_t", "FSDP2 dim-0 chunk in view rows (see above)" },
      { "shard", "uint32_t", "GATHER: designated shard; SHARD: RF_NONE" },
      { "layer", "uint16_t", "RF_GLOBAL_LAYER for embeddings, final norm, lm_head" },
      { "dtype", "uint8_t", "enum rf_dtype the parameter (and so its FSDP2 shards) has: bf16 or fp32" },
      { "travel", "uint8_t", "enum rf_travel" },
      { "ndim", "uint8_t", "dims of shape" },
      { "shape", "int64_t", "the parameter's full shape, as the trainer's module holds it", n = 3 },
    } },
  { name = "dst", ctype = "rf_dst_tensor", count = "n_dst", doc = [[
A destination tensor as the engine holds it after loading (its engine profile, plan.engine):
bind the engine's tensor of this name, or of any of its aliases (the same tensor).]],
    fields = {
      { "name", "const char *", "" },
      { "aliases", "const char *", "other names the engine registers this same tensor under (one Parameter object, "
        .. "e.g. vLLM's mlp.experts.gate.weight for mlp.gate.weight), comma-separated; \"\" when none" },
      { "shape", "int64_t", "unused dims are 0", n = 3 },
      { "stride", "int64_t", "elements, as torch's Tensor.stride(); unused dims 0. Row-major contiguous", n = 3 },
      { "pad_rows", "int64_t", "trailing rows of dim 0 that hold no weight (vLLM's vocabulary padding): part of the "
        .. "tensor and its bytes, never written" },
      { "bytes", "uint64_t", "the whole tensor, padding included: what the receiver binds" },
      { "weight", "uint32_t", "scale tensors: the weight they scale; else RF_NONE" },
      { "tp_rank", "uint16_t", "position in the replica: TP rank tp_rank % tp, EP rank tp_rank (ep > 1)" },
      { "ndim", "uint8_t", "" },
      { "dtype", "uint8_t", "enum rf_dtype" },
    } },
  { name = "ops", ctype = "rf_op", count = "n_ops", doc = [[
Item i (0 <= i < count) reads source (src + i*src_step), region rows [row0 + i*row_step, +rows),
cols [col0 + i*col_step, +cols) in full-tensor coordinates, and writes it row-major with a row
pitch of cols elements at slot byte offset out + i*out_step. FP8 also writes its fp32 scales
[ceil(rows/128), ceil(cols/128)] row-major at scale + i*scale_step.]],
    fields = {
      { "src", "uint32_t", "" },
      { "count", "uint32_t", "" },
      { "src_step", "uint32_t", "" },
      { "kind", "uint8_t", "enum rf_op_kind" },
      { "src_dtype", "uint8_t", "" },
      { "dst_dtype", "uint8_t", "" },
      { "row0", "int64_t", "" },
      { "col0", "int64_t", "" },
      { "rows", "int64_t", "" },
      { "cols", "int64_t", "" },
      { "row_step", "int64_t", "" },
      { "col_step", "int64_t", "" },
      { "out", "uint64_t", "slot bytes" },
      { "out_step", "uint64_t", "" },
      { "scale", "uint64_t", "" },
      { "scale_step", "uint64_t", "" },
      { "direct", "uint8_t", "1: with direct writes every write of its slots goes from the sources, so it is not "
        .. "staged (the generator decided: gen/direct.lua)" },
    } },
  { name = "writes", ctype = "rf_write", count = "n_writes", doc = [[
With direct writes, a write with pieces is sent as one put per piece from the bound sources;
without pieces (or without direct writes) from its slot bytes.]],
    fields = {
      { "slot", "uint64_t", "bytes" },
      { "dst_off", "uint64_t", "bytes" },
      { "len", "uint64_t", "bytes" },
      { "receiver", "uint32_t", "" },
      { "dst", "uint32_t", "" },
      { "piece_first", "uint32_t", "" },
      { "piece_count", "uint32_t", "" },
      { "patch_off", "uint64_t", "delta plans: its patch slot in the receiver's patch area (bytes)" },
      { "patch_cap", "uint64_t", "" },
    } },
  { name = "groups", ctype = "rf_group", count = "n_groups", fields = {
      { "op_first", "uint32_t", "" },
      { "op_count", "uint32_t", "" },
      { "write_first", "uint32_t", "" },
      { "write_count", "uint32_t", "" },
      { "layer", "uint16_t", "" },
      { "region_first", "uint32_t", "delta plans: its regions (regions[])" },
      { "region_count", "uint32_t", "" },
      { "scratch_lo", "uint64_t", "delta plans: the slot offset its scratch image starts at (its writes' lowest slot)" },
    } },
  { name = "ranks", ctype = "rf_rank", count = "trainers", fields = {
      { "arena_bytes", "uint64_t", "" },
      { "bytes_out", "uint64_t", "sum of its writes' len per version" },
      { "shard", "uint32_t", "FSDP shard index" },
      { "replicate", "uint32_t", "replicate group; rank = replicate*fsdp + shard" },
      { "group_first", "uint32_t", "" },
      { "group_count", "uint32_t", "" },
      { "op_first", "uint32_t", "" },
      { "op_count", "uint32_t", "" },
      { "write_first", "uint32_t", "" },
      { "write_count", "uint32_t", "" },
      { "patch_bytes", "uint64_t", "delta plans: its patch buffer (above)" },
      { "scratch_bytes", "uint64_t", "delta plans: its staging scratch (above)" },
      { "target_first", "uint32_t", "the receivers it writes to (targets[])" },
      { "target_count", "uint32_t", "" },
      { "region_first", "uint32_t", "delta plans: its regions (regions[])" },
      { "region_count", "uint32_t", "" },
    } },
  { name = "recv", ctype = "rf_receiver", count = "receivers", fields = {
      { "bytes", "uint64_t", "bytes it receives per version" },
      { "replica", "uint32_t", "" },
      { "tp_rank", "uint32_t", "" },
      { "dst_first", "uint32_t", "" },
      { "dst_count", "uint32_t", "" },
      { "peer_first", "uint32_t", "" },
      { "peer_count", "uint32_t", "" },
      { "patch_bytes", "uint64_t", "delta plans: its patch area" },
      { "write_first", "uint32_t", "the writes it receives (recv_writes[]), one directory entry each" },
      { "write_count", "uint32_t", "" },
    } },
  { name = "peers", ctype = "rf_peer", count = "n_peers", fields = {
      { "bytes", "uint64_t", "bytes this trainer writes to the receiver per version" },
      { "trainer", "uint32_t", "" },
      { "writes", "uint32_t", "" },
      { "patch_off", "uint64_t", "delta plans: its part of the receiver's patch area" },
      { "patch_bytes", "uint64_t", "" },
      { "write_first", "uint32_t", "its writes to the receiver in recv_writes[] (writes of them)" },
    } },
  { name = "derived", ctype = "rf_derived_tensor", count = "n_derived", doc = [[
A tensor the engine derives from destination tensors at load time, as a strided view into a
storage (torch: Tensor.untyped_storage()). Views of one storage share `storage`, the id of its
first view. Two kinds:
  dst == RF_NONE: refit writes the storage (a refresh step, after every complete version). The
    receiver binds it once, through its first view (id == storage): the storage's base address
    (data_ptr() - offset * element size) and `bytes`; every view of it must have exactly this
    shape, stride and offset in the engine, or the binding is wrong.
  dst != RF_NONE: the view lies in that destination tensor's own memory (vLLM keeps W_UK_T/W_UV
    of a bf16 kv_b_proj as views of it): it changes with the tensor's bytes; nothing to bind or
    rebuild, but the engine's view must have this shape, stride and offset into that tensor.]],
    fields = {
      { "name", "const char *", "" },
      { "shape", "int64_t", "", n = 3 },
      { "stride", "int64_t", "elements", n = 3 },
      { "offset", "int64_t", "elements from the start of the storage (Tensor.storage_offset())" },
      { "bytes", "uint64_t", "bytes of the storage (the same for every view of it)" },
      { "storage", "uint32_t", "derived id of the storage's first view (itself for the first)" },
      { "dst", "uint32_t", "RF_NONE, or the dst tensor whose memory is the storage" },
      { "tp_rank", "uint16_t", "receiver position, as rf_dst_tensor" },
      { "ndim", "uint8_t", "" },
      { "dtype", "uint8_t", "" },
    } },
  { name = "refresh", ctype = "rf_refresh", count = "n_refresh", fields = {
      { "kind", "uint32_t", "enum rf_refresh_kind" },
      { "weight", "uint32_t", "dst id: the fp8 weight" },
      { "scale", "uint32_t", "dst id: its scales" },
      { "out0", "uint32_t", "derived id: W_UK_T (the storage's first view)" },
      { "out1", "uint32_t", "derived id: W_UV" },
      { "heads", "uint32_t", "" },
      { "qk_nope", "uint32_t", "" },
      { "v_head", "uint32_t", "" },
      { "kv_lora", "uint32_t", "" },
      { "tp_rank", "uint16_t", "" },
      { "layer", "uint16_t", "" },
    } },
  { name = "finalize", ctype = "rf_finalize", count = "n_finalize", doc = [[
Finalize steps (DESIGN.md 5d): per receiver position, in the order the receiver runs them (by
tp_rank, then dst), after every byte of a version is in, its patches applied and its derived
tensors rebuilt, and before it is reported complete. Step i reads dst tensor `dst` (what refit
wrote, in the format the engine's loader produced) and
  kind RF_FIN_KERNEL: runs kernel `op` (enum rf_finop) over [rows, cols], writing the storage of
    derived tensor `out` (a storage refit writes: dst RF_NONE, bound with rf_bind_derived);
  kind RF_FIN_ENGINE: the engine's own post-load code for this tensor, through the receiver's
    finalize hook (rf_set_finalize); out is RF_NONE, op 0.
A step that fails tears the version.]],
    fields = {
      { "name", "const char *", "the step as the report names it, e.g. \"ue8m0_pack\"" },
      { "dst", "uint32_t", "dst id it reads" },
      { "out", "uint32_t", "derived id of the storage it writes (RF_FIN_KERNEL); RF_NONE" },
      { "rows", "int64_t", "the geometry the op needs: RF_FINOP_UE8M0_PACK, the weight [groups, rows, cols] whose "
        .. "scales dst holds; engine steps, dst's 2-D view (groups 1)" },
      { "cols", "int64_t", "" },
      { "groups", "uint32_t", "" },
      { "bytes", "uint64_t", "bytes read + written (RF_FIN_ENGINE: the bytes of dst)" },
      { "tp_rank", "uint16_t", "receiver position" },
      { "kind", "uint8_t", "enum rf_fin_kind" },
      { "op", "uint8_t", "enum rf_finop; 0 for RF_FIN_ENGINE" },
    } },
  { name = "fin_index", ctype = "rf_fin_index", count = "n_fin_index", doc = [[
Plans with finalize steps: one row per receiver position p (row p), its steps
finalize[first, first + count). Plans without steps have no rows (so their layout hash is what it
was before finalize steps existed).]],
    fields = {
      { "first", "uint32_t", "" },
      { "count", "uint32_t", "" },
    } },
  { name = "pieces", ctype = "rf_piece", count = "n_pieces", fields = {
      { "src_off", "uint64_t", "bytes from the start of the source as this rank binds it (its shard)" },
      { "off", "uint64_t", "bytes from the start of the write" },
      { "len", "uint64_t", "length" },
      { "src", "uint32_t", "" },
    } },
  { name = "recv_writes", ctype = "rf_recv_write", count = "n_recv_writes", doc = [[
Per receiver (recv[].write_first, write_count), the writes it receives: its peers in peer order,
each peer's writes to it in table order. Its directory has one entry per row, in this order.]],
    fields = {
      { "write", "uint32_t", "writes[] id" },
      { "peer", "uint32_t", "its peer: index among the receiver's peers (0 .. peer_count - 1)" },
    } },
  { name = "targets", ctype = "rf_target", count = "n_targets", doc = [[
Per trainer rank (ranks[].target_first, target_count), the receivers it writes to, in receiver
order; its writes to one are recv_writes[peers[peer].write_first, + peers[peer].writes).]],
    fields = {
      { "receiver", "uint32_t", "" },
      { "peer", "uint32_t", "peers[] id of this rank in the receiver's peer list" },
      { "dir_off", "uint64_t", "bytes: where this rank's part of the receiver's directory starts" },
      { "dir_first", "uint32_t", "its first entry in the rank's own directory buffer (targets in this order, "
        .. "each its writes in table order)" },
    } },
  { name = "regions", ctype = "rf_region", count = "n_regions", doc = [[
Delta plans: per trainer rank (ranks[].region_first, region_count), its regions in table order,
group by group (groups[].region_first, region_count): a region is one slot range of a group,
sent by its consecutive writes write_first .. + write_count (to every replica and twin). The
trainer encodes it once into its patch slot.]],
    fields = {
      { "slot", "uint64_t", "bytes: the slot range in the rank's arena" },
      { "len", "uint64_t", "" },
      { "patch_off", "uint64_t", "bytes: its patch slot in the rank's patch buffer" },
      { "patch_cap", "uint64_t", "the patch_cap of each of its writes" },
      { "write_first", "uint32_t", "writes[] id" },
      { "write_count", "uint32_t", "" },
      { "esize", "uint8_t", "bytes per element of its destination's dtype" },
    } },
}

S.head = { ctype = "rf_plan", fields = {
  { "name", "const char *", "" },
  { "model", "const char *", "" },
  { "layout_hash", "uint64_t", "rf_plan_hash() of everything below" },
  { "total_bytes", "uint64_t", "all writes of one version", hash = true },
  { "fsdp", "uint32_t", "", hash = true },
  { "dp_replicate", "uint32_t", "", hash = true },
  { "trainers", "uint32_t", "", hash = true },
  { "tp", "uint32_t", "", hash = true },
  { "ep", "uint32_t", "", hash = true },
  { "replicas", "uint32_t", "", hash = true },
  { "receivers", "uint32_t", "", hash = true },
  { "n_src", "uint32_t", "", count = "src" },
  { "n_dst", "uint32_t", "", count = "dst" },
  { "n_ops", "uint32_t", "", count = "ops" },
  { "n_writes", "uint32_t", "", count = "writes" },
  { "n_groups", "uint32_t", "", count = "groups" },
  { "n_peers", "uint32_t", "", count = "peers" },
  { "scale_fmt", "uint8_t", "enum rf_scale_fmt", hash = true },
  { "delta_ppm", "uint32_t", "delta plans: patch area budget, parts per million; 0: no delta", hash = true },
  { "src", "const rf_src_tensor *", "", rows = "src" },
  { "dst", "const rf_dst_tensor *", "", rows = "dst" },
  { "ops", "const rf_op *", "", rows = "ops" },
  { "writes", "const rf_write *", "", rows = "writes" },
  { "groups", "const rf_group *", "", rows = "groups" },
  { "ranks", "const rf_rank *", "[trainers]", rows = "ranks" },
  { "recv", "const rf_receiver *", "[receivers]", rows = "recv" },
  { "peers", "const rf_peer *", "", rows = "peers" },
  { "n_derived", "uint32_t", "", count = "derived" },
  { "n_refresh", "uint32_t", "", count = "refresh" },
  { "derived", "const rf_derived_tensor *", "", rows = "derived" },
  { "refresh", "const rf_refresh *", "ordered by tp_rank, then layer", rows = "refresh" },
  { "n_pieces", "uint32_t", "", count = "pieces" },
  { "pieces", "const rf_piece *", "", rows = "pieces" },
  { "n_recv_writes", "uint32_t", "", count = "recv_writes" },
  { "n_targets", "uint32_t", "", count = "targets" },
  { "n_regions", "uint32_t", "", count = "regions" },
  { "recv_writes", "const rf_recv_write *", "", rows = "recv_writes" },
  { "targets", "const rf_target *", "", rows = "targets" },
  { "regions", "const rf_region *", "", rows = "regions" },
  { "n_finalize", "uint32_t", "", count = "finalize" },
  { "n_fin_index", "uint32_t", "0, or one per receiver position", count = "fin_index" },
  { "finalize", "const rf_finalize *", "ordered by tp_rank, then dst", rows = "finalize" },
  { "fin_index", "const rf_fin_index *", "", rows = "fin_index" },
} }

-- name -> table, and per table: name -> column number (1-based, arrays take one column)
S.by_name, S.col = {}, {}
for _, t in ipairs(S.tables) do
  S.by_name[t.name] = t
  local c = {}
  for k, f in ipairs(t.fields) do c[f[1]] = k end
  S.col[t.name] = c
end

local function is_str(f) return f[2] == "const char *" end
S.is_str = is_str

-- A row by name (every column given, no other) -> the positional row the emitter and hash walk.
-- S.maker(T) returns a compiled constructor for table T (the generator's hot paths); its first row
-- is checked in full (a missing or unknown column is an error), later ones are not. S.row(T, named)
-- checks every row.
local function check(tname, named)
  for _, f in ipairs(S.by_name[tname].fields) do
    if named[f[1]] == nil then error(("schema: table %s: row without column %s"):format(tname, f[1])) end
  end
  for key in pairs(named) do
    if not S.col[tname][key] then error(("schema: table %s has no column %s"):format(tname, key)) end
  end
end

function S.maker(tname)
  local vals = {}
  for k, f in ipairs(S.by_name[tname].fields) do vals[k] = "r." .. f[1] end
  local build = load("return function(r) return { " .. table.concat(vals, ", ") .. " } end", "=schema." .. tname)()
  local checked = false
  return function(named)
    if not checked then check(tname, named); checked = true end
    return build(named)
  end
end

local makers = {}
function S.row(tname, named)
  check(tname, named)
  local m = makers[tname]
  if not m then m = S.maker(tname); makers[tname] = m end
  return m(named)
end

---------------------------------------------------------------------------------------------------
-- refit_tables.h

local function ident(f) return f[1] .. (f.n and ("[" .. f.n .. "]") or "") end

local function comment_block(text, indent)
  local out = {}
  local lines = {}
  for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  for i, l in ipairs(lines) do
    local lead = i == 1 and "/* " or " * "
    out[#out + 1] = indent .. lead .. l .. (i == #lines and " */" or "") .. "\n"
  end
  return table.concat(out)
end

-- "  type name; /* comment */", comments wrapped at 110 columns under their start
local function field_line(f)
  local decl = ("  %s%s%s;"):format(f[2], f[2]:sub(-1) == "*" and "" or " ", ident(f))
  if f[3] == "" then return decl .. "\n" end
  local col = 40
  local pad = #decl < col and (" "):rep(col - #decl) or " "
  local start = #decl + #pad
  local width = 110 - start - 3
  local words, lines, cur = {}, {}, ""
  for w in f[3]:gmatch("%S+") do words[#words + 1] = w end
  for _, w in ipairs(words) do
    if cur ~= "" and #cur + 1 + #w > width then lines[#lines + 1] = cur; cur = w
    else cur = cur == "" and w or (cur .. " " .. w) end
  end
  lines[#lines + 1] = cur
  local out = { decl .. pad .. "/* " .. lines[1] }
  for i = 2, #lines do out[#out + 1] = "\n" .. (" "):rep(start + 3) .. lines[i] end
  return table.concat(out) .. " */\n"
end

local function struct(ctype, doc, fields)
  local s = {}
  if doc then s[#s + 1] = comment_block(doc, "") end
  s[#s + 1] = ("typedef struct %s {\n"):format(ctype)
  for _, f in ipairs(fields) do s[#s + 1] = field_line(f) end
  s[#s + 1] = ("} %s;\n\n"):format(ctype)
  return table.concat(s)
end

-- column list macro: S(name) a string, I(name) an integer, A(name, n) an integer array
local function columns(fields, keep)
  local s = {}
  for _, f in ipairs(fields) do
    if not keep or keep(f) then
      s[#s + 1] = is_str(f) and ("S(%s)"):format(f[1]) or f.n and ("A(%s, %d)"):format(f[1], f.n)
        or ("I(%s)"):format(f[1])
    end
  end
  return table.concat(s, " ")
end

local function macro(name, body)
  local lines, cur = {}, "#define " .. name .. " "
  for w in body:gmatch("%S+%b()") do
    if #cur + #w > 108 then lines[#lines + 1] = cur .. "\\"; cur = "  " end
    cur = cur .. w .. " "
  end
  lines[#lines + 1] = cur:gsub("%s+$", "")
  return table.concat(lines, "\n") .. "\n"
end

function S.header()
  local h = { "/* Code generated by gen/schema.lua. DO NOT EDIT. */\n",
    "/* refit_tables.h: the plan tables' structs (included by refit_plan.h, which documents them) and\n",
    " * their column lists in declaration order. */\n",
    "#ifndef REFIT_TABLES_H\n#define REFIT_TABLES_H\n\n#include <stdint.h>\n\n" }
  for _, t in ipairs(S.tables) do h[#h + 1] = struct(t.ctype, t.doc, t.fields) end
  h[#h + 1] = struct(S.head.ctype, nil, S.head.fields)
  h[#h + 1] = "/* Each table's columns in declaration order, for code that walks them (runtime/plan.c's\n"
    .. " * rf_plan_hash): COLS(S, I, A) names S(field) a string, I(field) an integer, A(field, n) an\n"
    .. " * integer array of n. RF_HEAD_COLUMNS: the head values the layout hash covers; RF_TABLES(T):\n"
    .. " * T(row type, array field, row count field, its column list), in hash order. */\n"
  h[#h + 1] = macro("RF_HEAD_COLUMNS(S, I, A)", columns(S.head.fields, function(f) return f.hash end))
  for _, t in ipairs(S.tables) do
    h[#h + 1] = macro(("RF_COLUMNS_%s(S, I, A)"):format(t.name:upper()), columns(t.fields))
  end
  local ts = {}
  for _, t in ipairs(S.tables) do
    ts[#ts + 1] = ("T(%s, %s, %s, RF_COLUMNS_%s)"):format(t.ctype, t.name, t.count, t.name:upper())
  end
  h[#h + 1] = macro("RF_TABLES(T)", table.concat(ts, " "))
  h[#h + 1] = "\n#endif\n"
  return table.concat(h)
end

-- As a program: write the header (only when it changed).
if arg and arg[0] and arg[0]:match("schema%.lua$") then
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. package.path
  local U = require("util")
  if not arg[1] then io.stderr:write("usage: lua5.4 gen/schema.lua OUT.h\n") os.exit(2) end
  U.write_if_changed(arg[1], S.header())
end

return S
