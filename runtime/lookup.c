/* lookup.c: tensors by name, what a rank binds, and binding by dtype, shape and strides (refit.h,
 * "discovery and typed binding"). Reads the plan tables and calls the public API only; nothing in
 * the runtime calls this file. The plan set itself (rf_plan_count/at/find) is generated with the
 * set (gen/emit_c.lua E.registry). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit.h"

uint32_t rf_abi_version(void) { return RF_ABI_VERSION; }

/* row-major contiguous strides over shape[0..ndim-1] */
static void row_major(const int64_t *shape, int ndim, int64_t *st)
{
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
}

/* 1 when op o reads source id (items read src + k * src_step, k < count) */
static int op_reads(const rf_op *o, uint32_t id)
{
  if (id < o->src) return 0;
  uint32_t d = id - o->src;
  return o->src_step == 0 ? d == 0 : d % o->src_step == 0 && d / o->src_step < o->count;
}

static int rank_reads(const rf_plan *p, uint32_t rank, uint32_t id)
{
  const rf_rank *rk = &p->ranks[rank];
  for (uint32_t i = 0; i < rk->op_count; i++)
    if (op_reads(&p->ops[rk->op_first + i], id)) return 1;
  return 0;
}

/* source id as trainer `rank` binds it, given whether its ops read it */
static void src_info(const rf_plan *p, uint32_t rank, uint32_t id, int reads, rf_tensor_info *t)
{
  const rf_src_tensor *s = &p->src[id];
  *t = (rf_tensor_info){.name = s->name, .id = id, .side = RF_SIDE_SRC, .dtype = s->dtype, .ndim = s->ndim,
                        .travel = s->travel, .owner = s->travel == RF_TRAVEL_SHARD ? RF_NONE : s->shard,
                        .aliases = "", .storage = RF_NONE, .view_of = RF_NONE};
  memcpy(t->shape, s->shape, sizeof t->shape);
  /* view rows [a, a + n), then dim-0 indices: every dim-0 index is `inner` rows of the view */
  int64_t a, n, inner = s->rows / s->shape[0];
  rf_src_rows(s, p->ranks[rank].shard, &a, &n);
  if (reads && n > 0) {
    t->row0 = a / inner;
    t->rows = n / inner;
    t->bytes = (uint64_t)n * (uint64_t)s->cols * rf_dtype_size(s->dtype);
  }
  int64_t bound[3] = {t->rows, s->shape[1], s->shape[2]};
  row_major(bound, s->ndim, t->stride);
}

static void dst_info(const rf_plan *p, uint32_t id, rf_tensor_info *t)
{
  const rf_dst_tensor *d = &p->dst[id];
  *t = (rf_tensor_info){.name = d->name, .id = id, .side = RF_SIDE_DST, .dtype = d->dtype, .ndim = d->ndim,
                        .rows = d->shape[0], .bytes = d->bytes, .owner = RF_NONE, .aliases = d->aliases,
                        .pad_rows = d->pad_rows, .storage = RF_NONE, .view_of = RF_NONE};
  memcpy(t->shape, d->shape, sizeof t->shape);
  memcpy(t->stride, d->stride, sizeof t->stride);
}

/* a derived view binds its storage when it is the storage's first view and refit rebuilds it */
static void derived_info(const rf_plan *p, uint32_t id, rf_tensor_info *t)
{
  const rf_derived_tensor *d = &p->derived[id];
  int binds = d->dst == RF_NONE && d->storage == id;
  *t = (rf_tensor_info){.name = d->name, .id = id, .side = RF_SIDE_DERIVED, .dtype = d->dtype, .ndim = d->ndim,
                        .rows = d->shape[0], .bytes = binds ? d->bytes : 0, .owner = RF_NONE, .aliases = "",
                        .offset = d->offset, .storage = d->dst == RF_NONE ? d->storage : RF_NONE, .view_of = d->dst};
  memcpy(t->shape, d->shape, sizeof t->shape);
  memcpy(t->stride, d->stride, sizeof t->stride);
}

/* 1 when `name` is one of the comma-separated names in list */
static int in_list(const char *list, const char *name)
{
  size_t n = strlen(name);
  for (const char *q = list; *q;) {
    const char *end = strchr(q, ',');
    size_t len = end ? (size_t)(end - q) : strlen(q);
    if (len == n && memcmp(q, name, n) == 0) return 1;
    if (!end) break;
    q = end + 1;
  }
  return 0;
}

static int rank_ok(const rf_plan *p, int side, uint32_t rank)
{
  if (!p) return 0;
  if (side == RF_SIDE_SRC) return rank < p->trainers;
  return (side == RF_SIDE_DST || side == RF_SIDE_DERIVED) && rank < p->receivers;
}

static int is_receivers(const rf_plan *p, int side, uint32_t recv, uint32_t id)
{
  const rf_receiver *rv = &p->recv[recv];
  if (side == RF_SIDE_DST) return id >= rv->dst_first && id - rv->dst_first < rv->dst_count;
  return id < p->n_derived && p->derived[id].tp_rank == rv->tp_rank;
}

uint32_t rf_find(const rf_plan *p, int side, uint32_t rank, const char *name)
{
  if (!rank_ok(p, side, rank) || !name) return RF_NONE;
  if (side == RF_SIDE_SRC) {
    /* Megatron plans list one name on several ranks (each its own shard, GATHER on its rank): the
     * rank's own entry first, else the first of that name */
    uint32_t first = RF_NONE;
    for (uint32_t i = 0; i < p->n_src; i++) {
      if (strcmp(p->src[i].name, name) != 0) continue;
      if (p->src[i].travel != RF_TRAVEL_GATHER || p->src[i].shard == p->ranks[rank].shard) return i;
      if (first == RF_NONE) first = i;
    }
    return first;
  } else if (side == RF_SIDE_DST) {
    const rf_receiver *rv = &p->recv[rank];
    for (uint32_t i = rv->dst_first; i < rv->dst_first + rv->dst_count; i++)
      if (strcmp(p->dst[i].name, name) == 0 || in_list(p->dst[i].aliases, name)) return i;
  } else {
    for (uint32_t i = 0; i < p->n_derived; i++)
      if (is_receivers(p, side, rank, i) && strcmp(p->derived[i].name, name) == 0) return i;
  }
  return RF_NONE;
}

rf_status rf_describe(const rf_plan *p, int side, uint32_t rank, uint32_t id, rf_tensor_info *out)
{
  if (!rank_ok(p, side, rank) || !out) return RF_ERR_ARG;
  if (side == RF_SIDE_SRC) {
    if (id >= p->n_src) return RF_ERR_ARG;
    src_info(p, rank, id, rank_reads(p, rank, id), out);
    return RF_OK;
  }
  if (!is_receivers(p, side, rank, id)) return RF_ERR_ARG;
  if (side == RF_SIDE_DST) dst_info(p, id, out);
  else derived_info(p, id, out);
  return RF_OK;
}

rf_status rf_list(const rf_plan *p, int side, uint32_t rank, rf_tensor_info *out, uint32_t cap, uint32_t *n)
{
  if (!rank_ok(p, side, rank) || !n || (cap && !out)) return RF_ERR_ARG;
  uint32_t k = 0;
  if (side == RF_SIDE_SRC) {
    uint8_t *reads = calloc(p->n_src ? p->n_src : 1, 1); /* one pass over the rank's ops */
    if (!reads) return RF_ERR_NOMEM;
    const rf_rank *rk = &p->ranks[rank];
    for (uint32_t i = 0; i < rk->op_count; i++) {
      const rf_op *o = &p->ops[rk->op_first + i];
      for (uint32_t j = 0; j < o->count; j++) reads[o->src + j * o->src_step] = 1;
    }
    for (uint32_t i = 0; i < p->n_src; i++) {
      if (!reads[i]) continue;
      rf_tensor_info t;
      src_info(p, rank, i, 1, &t);
      if (!t.bytes) continue;
      if (k < cap) out[k] = t;
      k++;
    }
    free(reads);
  } else if (side == RF_SIDE_DST) {
    const rf_receiver *rv = &p->recv[rank];
    for (uint32_t i = 0; i < rv->dst_count; i++, k++)
      if (k < cap) dst_info(p, rv->dst_first + i, &out[k]);
  } else {
    for (uint32_t i = 0; i < p->n_derived; i++) {
      if (!is_receivers(p, side, rank, i)) continue;
      if (k < cap) derived_info(p, i, &out[k]);
      k++;
    }
  }
  *n = k;
  return RF_OK;
}

/* ------------------------------------- typed binding -------------------------------------- */

static const char *dtype_name(int dt)
{
  return dt == RF_BF16 ? "bfloat16" : dt == RF_FP32 ? "float32" : dt == RF_FP8 ? "float8_e4m3fn" : dt == RF_I32 ? "int32"
                                                                                                   : "unknown";
}

/* DLPack's {code, bits} of each rf_dtype */
static int dl_is(const rf_tensor *t, int dt)
{
  if (t->dtype_lanes != 1) return 0;
  if (dt == RF_BF16) return t->dtype_code == 4 && t->dtype_bits == 16;
  if (dt == RF_FP32) return t->dtype_code == 2 && t->dtype_bits == 32;
  if (dt == RF_I32) return t->dtype_code == 0 && t->dtype_bits == 32;
  return dt == RF_FP8 && t->dtype_code == 10 && t->dtype_bits == 8;
}

static void dl_name(const rf_tensor *t, char *buf, size_t cap)
{
  static const char *const codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  static const char *const fp8[] = {"float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz", "float8_e4m3fn",
                                    "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"};
  if (t->dtype_code <= 6)
    snprintf(buf, cap, "%s%u", codes[t->dtype_code], (unsigned)t->dtype_bits);
  else if (t->dtype_code <= 14)
    snprintf(buf, cap, "%s", fp8[t->dtype_code - 7]);
  else
    snprintf(buf, cap, "DLPack type code %u, %u bits", (unsigned)t->dtype_code, (unsigned)t->dtype_bits);
  if (t->dtype_lanes != 1) {
    size_t n = strlen(buf);
    snprintf(buf + n, cap - n, " x%u lanes", (unsigned)t->dtype_lanes);
  }
}

static void dims(char *buf, size_t cap, const int64_t *v, int n)
{
  size_t k = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)v[i]);
  if (k < cap) snprintf(buf + k, cap - k, "]");
}

static rf_status fail(char *err, size_t errlen, rf_status s, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static rf_status fail(char *err, size_t errlen, rf_status s, const char *fmt, ...)
{
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return s;
}

static const char *const side_word[] = {"", "source", "dst", "derived"};

rf_status rf_check(const rf_config *cfg, int side, uint32_t id, const rf_tensor *t, char *err, size_t errlen)
{
  if (err && errlen) err[0] = 0;
  if (!cfg || !cfg->plan) return fail(err, errlen, RF_ERR_ARG, "no configuration or no plan");
  if (side != RF_SIDE_SRC && side != RF_SIDE_DST && side != RF_SIDE_DERIVED)
    return fail(err, errlen, RF_ERR_ARG, "side %d is not RF_SIDE_SRC, RF_SIDE_DST or RF_SIDE_DERIVED", side);
  const rf_plan *p = cfg->plan;
  const char *who = cfg->role == RF_TRAINER ? "trainer rank" : "receiver";
  if ((side == RF_SIDE_SRC) != (cfg->role == RF_TRAINER))
    return fail(err, errlen, RF_ERR_ARG, "%s tensors are bound by %s, this engine is a %s", side_word[side],
                side == RF_SIDE_SRC ? "trainers" : "receivers", cfg->role == RF_TRAINER ? "trainer" : "receiver");
  rf_tensor_info ti;
  if (rf_describe(p, side, cfg->rank, id, &ti) != RF_OK) {
    uint32_t n = side == RF_SIDE_SRC ? p->n_src : side == RF_SIDE_DST ? p->n_dst : p->n_derived;
    if (!rank_ok(p, side, cfg->rank))
      return fail(err, errlen, RF_ERR_ARG, "%s %u out of range (plan '%s' has %u)", who, cfg->rank, p->name,
                  side == RF_SIDE_SRC ? p->trainers : p->receivers);
    if (id >= n) return fail(err, errlen, RF_ERR_ARG, "%s %u out of range (%u in plan '%s')", side_word[side], id, n, p->name);
    const char *name = side == RF_SIDE_DST ? p->dst[id].name : p->derived[id].name;
    return fail(err, errlen, RF_ERR_ARG, "tensor '%s' (%s %u) is not a tensor of receiver %u", name, side_word[side], id,
                cfg->rank);
  }
  char at[320];
  snprintf(at, sizeof at, "tensor '%s' (%s %u, %s %u)", ti.name, side_word[side], id, who, cfg->rank);
  char want[200], got[200], whole[200], tmp[200];
  int64_t wshape[3] = {ti.rows, ti.shape[1], ti.shape[2]};
  dims(whole, sizeof whole, ti.shape, ti.ndim);
  dims(want, sizeof want, wshape, ti.ndim);
  if (side == RF_SIDE_SRC && !ti.bytes) {
    if (ti.travel == RF_TRAVEL_SHARD)
      return fail(err, errlen, RF_ERR_ARG, "%s: this rank binds nothing of it (its FSDP shard of %s is empty or "
                  "another replicate group sends it)", at, whole);
    return fail(err, errlen, RF_ERR_ARG, "%s: this rank binds nothing of it (FSDP shard %u binds it whole)", at, ti.owner);
  }
  if (!t) return fail(err, errlen, RF_ERR_ARG, "%s: no tensor", at);
  if (!t->data) return fail(err, errlen, RF_ERR_ARG, "%s: NULL data pointer", at);
  if (!dl_is(t, ti.dtype)) {
    dl_name(t, tmp, sizeof tmp);
    return fail(err, errlen, RF_ERR_TYPE, "%s: dtype %s, expected %s%s", at, tmp, dtype_name(ti.dtype),
                side == RF_SIDE_SRC ? " (the plan's source dtype)" : "");
  }
  if (t->ndim < 0 || t->ndim > 8 || (t->ndim && !t->shape))
    return fail(err, errlen, RF_ERR_ARG, "%s: %d dimensions without a shape", at, t->ndim);
  dims(got, sizeof got, t->shape, t->ndim);
  int same = t->ndim == ti.ndim;
  for (int i = 0; same && i < ti.ndim; i++) same = t->shape[i] == wshape[i];
  if (!same) {
    const char *hint = "";
    int whole_given = t->ndim == ti.ndim, swapped = t->ndim == 2 && ti.ndim == 2;
    for (int i = 0; i < t->ndim && i < 3; i++) whole_given &= t->shape[i] == ti.shape[i];
    if (swapped) swapped = t->shape[0] == wshape[1] && t->shape[1] == wshape[0];
    if (whole_given && ti.rows != ti.shape[0]) hint = ": the whole tensor, not this rank's shard";
    else if (swapped) hint = ": transposed";
    if (ti.rows != ti.shape[0])
      return fail(err, errlen, RF_ERR_TYPE, "%s: shape %s, expected %s (rows %lld..%lld of %s, FSDP shard %u of %u)%s",
                  at, got, want, (long long)ti.row0, (long long)(ti.row0 + ti.rows - 1), whole,
                  p->ranks[cfg->rank].shard, p->fsdp, hint);
    return fail(err, errlen, RF_ERR_TYPE, "%s: shape %s, expected %s%s", at, got, want, hint);
  }
  int64_t given[8];
  const int64_t *st = t->strides;
  if (!st) { /* NULL: row-major contiguous */
    row_major(t->shape, t->ndim, given);
    st = given;
  }
  int ok = 1;
  for (int i = 0; i < ti.ndim; i++) ok &= st[i] == ti.stride[i] || wshape[i] == 1;
  if (!ok) {
    dims(tmp, sizeof tmp, st, ti.ndim);
    dims(want, sizeof want, ti.stride, ti.ndim);
    if (side == RF_SIDE_DERIVED)
      return fail(err, errlen, RF_ERR_TYPE, "%s: strides %s (elements), expected %s: not the view of its storage "
                  "that the plan's engine profile describes", at, tmp, want);
    int transposed = ti.ndim == 2 && st[0] == 1 && st[1] == wshape[0];
    return fail(err, errlen, RF_ERR_TYPE, "%s: strides %s (elements), expected %s: %s", at, tmp, want,
                transposed ? "a transposed view; bind a row-major copy" : "not row-major contiguous; bind a contiguous copy");
  }
  if (side == RF_SIDE_DERIVED && t->offset != ti.offset)
    return fail(err, errlen, RF_ERR_TYPE, "%s: storage offset %lld (elements), expected %lld: not the view of its storage "
                "that the plan's engine profile describes", at, (long long)t->offset, (long long)ti.offset);
  if (side == RF_SIDE_SRC && t->row0 >= 0 && t->row0 != ti.row0)
    return fail(err, errlen, RF_ERR_TYPE, "%s: holds rows %lld..%lld of %s, this rank binds rows %lld..%lld (FSDP shard %u "
                "of %u): the wrong shard", at, (long long)t->row0, (long long)(t->row0 + ti.rows - 1), whole,
                (long long)ti.row0, (long long)(ti.row0 + ti.rows - 1), p->ranks[cfg->rank].shard, p->fsdp);
  if (t->device_type) {
    int host = t->device_type == 1 || t->device_type == 3;
    if (cfg->mem == RF_MEM_HOST && !host)
      return fail(err, errlen, RF_ERR_TYPE, "%s: on %s:%d, the engine binds host memory (mem = RF_MEM_HOST)", at,
                  t->device_type == 2 ? "cuda" : "device type", t->device_id);
    if (cfg->mem == RF_MEM_CUDA && (t->device_type != 2 || t->device_id != cfg->cuda_device))
      return fail(err, errlen, RF_ERR_TYPE, "%s: on %s:%d, the engine binds memory of cuda:%d (mem = RF_MEM_CUDA)", at,
                  host ? "cpu" : t->device_type == 2 ? "cuda" : "device type", host ? 0 : t->device_id, cfg->cuda_device);
  }
  if (side != RF_SIDE_SRC && t->readonly)
    return fail(err, errlen, RF_ERR_TYPE, "%s: read-only memory; the receiver's tensors are written by the trainers", at);
  return RF_OK;
}

rf_status rf_bind(rf_engine *e, int side, uint32_t id, const rf_tensor *t, char *err, size_t errlen)
{
  const rf_config *cfg = rf_engine_config(e);
  if (!cfg) return fail(err, errlen, RF_ERR_ARG, "no engine");
  rf_status s = rf_check(cfg, side, id, t, err, errlen);
  if (s != RF_OK) return s;
  rf_tensor_info ti;
  rf_describe(cfg->plan, side, cfg->rank, id, &ti);
  if (side == RF_SIDE_DERIVED && !ti.bytes) { /* checked; its storage is bound elsewhere */
    const rf_plan *p = cfg->plan;
    if (ti.view_of != RF_NONE)
      return fail(err, errlen, RF_OK, "tensor '%s' (derived %u): nothing to bind, a view of '%s' (dst %u) that changes "
                  "with that tensor", ti.name, id, p->dst[ti.view_of].name, ti.view_of);
    return fail(err, errlen, RF_OK, "tensor '%s' (derived %u): nothing to bind, it lies in the storage bound through "
                "'%s' (derived %u)", ti.name, id, p->derived[ti.storage].name, ti.storage);
  }
  void *base = (char *)t->data - ti.offset * (int64_t)rf_dtype_size(ti.dtype); /* a derived view's storage */
  s = side == RF_SIDE_SRC ? rf_bind_src(e, id, t->data, ti.bytes)
    : side == RF_SIDE_DST ? rf_bind_dst(e, id, t->data, ti.bytes)
                          : rf_bind_derived(e, id, base, ti.bytes);
  if (s != RF_OK) fail(err, errlen, s, "%s", rf_last_error(e));
  return s;
}
