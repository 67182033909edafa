/* selfcheck.c: the plan-independent checks behind every build/gen/<plan>_check program.
 * Each check walks the tables as the runtime would and counts violations; the first few of each
 * kind are printed with the tensor, rank or receiver involved. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "selfcheck.h"

static int passed, failed, shown;

#define BAD(...) do { if (shown++ < 8) { printf("  "); printf(__VA_ARGS__); printf("\n"); } bad++; } while (0)

static void report(const char *what, long bad)
{
  if (bad == 0) {
    passed++;
    printf("ok   %s\n", what);
  } else {
    failed++;
    printf("FAIL %s (%ld problems)\n", what, bad);
  }
  shown = 0;
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

typedef struct { uint64_t a, b; uint32_t key, key2, op; uint8_t dtype; } span;

static int cmp_span(const void *x, const void *y)
{
  const span *s = x, *t = y;
  if (s->key != t->key) return s->key < t->key ? -1 : 1;
  if (s->key2 != t->key2) return s->key2 < t->key2 ? -1 : 1;
  if (s->a != t->a) return s->a < t->a ? -1 : 1;
  return (s->b > t->b) - (s->b < t->b);
}

static void check_counts(const rf_plan *p, const rf_expect *e)
{
  long bad = 0;
  uint64_t hf = 0, dst_bytes = 0;
  for (uint32_t i = 0; i < p->n_src; i++)
    hf += (uint64_t)(p->src[i].rows * p->src[i].cols) * rf_dtype_size(p->src[i].dtype);
  for (uint32_t i = 0; i < p->n_dst; i++)
    dst_bytes += p->dst[i].bytes;
  if (rf_plan_hash(p) != p->layout_hash) BAD("layout hash of the tables %016" PRIx64 " != emitted %016" PRIx64, rf_plan_hash(p), p->layout_hash);
  if (p->layout_hash != e->layout_hash) BAD("layout hash %016" PRIx64 " != generator's %016" PRIx64, p->layout_hash, e->layout_hash);
  if (p->n_src != e->hf_tensors) BAD("hf tensors %u != %" PRIu64, p->n_src, e->hf_tensors);
  if (hf != e->hf_bytes) BAD("hf bytes %" PRIu64 " != %" PRIu64, hf, e->hf_bytes);
  if (p->n_dst != e->dest_tensors_per_replica) BAD("dest tensors %u != %" PRIu64, p->n_dst, e->dest_tensors_per_replica);
  if (dst_bytes != e->dest_bytes_per_replica) BAD("dest bytes %" PRIu64 " != %" PRIu64, dst_bytes, e->dest_bytes_per_replica);
  if (p->n_writes != e->writes_total) BAD("writes %u != %" PRIu64, p->n_writes, e->writes_total);
  uint32_t size = p->ep > p->tp ? p->ep : p->tp;
  if (p->trainers != p->fsdp * p->dp_replicate || p->receivers != size * p->replicas)
    BAD("rank counts: trainers %u receivers %u", p->trainers, p->receivers);
  report("layout hash stable and totals match the generator", bad);
}

static void check_dst_shapes(const rf_plan *p)
{
  long bad = 0;
  char *scaled = calloc(p->n_dst ? p->n_dst : 1, 1);
  for (uint32_t i = 0; i < p->n_dst; i++)
    if (p->dst[i].weight < p->n_dst)
      scaled[p->dst[i].weight]++;
  for (uint32_t i = 0; i < p->n_dst; i++) {
    const rf_dst_tensor *d = &p->dst[i];
    uint64_t n = 1;
    for (int k = 0; k < d->ndim; k++)
      n *= (uint64_t)d->shape[k];
    if (d->ndim < 1 || d->ndim > 3 || n * rf_dtype_size(d->dtype) != d->bytes)
      BAD("dst %u '%s': dtype x shape != %" PRIu64 " bytes", i, d->name, d->bytes);
    int64_t st = 1; /* the writes assume row-major contiguous tensors */
    for (int k = d->ndim - 1; k >= 0 && k < 3; k--) {
      if (d->stride[k] != st) BAD("dst %u '%s': stride[%d] %" PRId64 ", contiguous is %" PRId64, i, d->name, k, d->stride[k], st);
      st *= d->shape[k];
    }
    if (d->pad_rows < 0 || d->pad_rows >= d->shape[0] || (d->pad_rows && (d->ndim != 2 || d->weight != RF_NONE || d->dtype == RF_FP8)))
      BAD("dst %u '%s': %" PRId64 " padding rows of %" PRId64 " (only 2-D bf16/fp32 weights are padded)", i, d->name,
          d->pad_rows, d->shape[0]);
    if (d->weight != RF_NONE) {
      const rf_dst_tensor *w = &p->dst[d->weight];
      int nd = w->ndim;
      int ok = d->dtype == RF_FP32 && w->dtype == RF_FP8 && d->ndim == nd && w->tp_rank == d->tp_rank &&
               d->shape[nd - 1] == cdiv(w->shape[nd - 1], RF_FP8_BLOCK) &&
               (nd == 1 || d->shape[nd - 2] == cdiv(w->shape[nd - 2], RF_FP8_BLOCK)) &&
               (nd < 3 || d->shape[0] == w->shape[0]);
      if (!ok) BAD("scale '%s' is not fp32 [ceil(r/128), ceil(c/128)] of '%s' (tp rank %u)", d->name, w->name, d->tp_rank);
    }
    if ((d->dtype == RF_FP8) != (scaled[i] == 1))
      BAD("tensor '%s' (dtype %u) has %d scale tensors", d->name, d->dtype, scaled[i]);
  }
  free(scaled);
  report("dtype x shape = bytes, strides contiguous, padding rows inside; scales are [ceil(r/128), ceil(c/128)] per TP/EP piece", bad);
}

/* Each source's 2-D view and FSDP2 chunk follow from its shape (refit_plan.h): cols the last dim,
 * rows the product of the others ([n] is [n, 1]), shard_rows = ceil(shape[0]/fsdp) whole dim-0
 * slices; bf16 or fp32; a gathered tensor has a designated shard, a sharded one none. */
static void check_src_shapes(const rf_plan *p)
{
  long bad = 0;
  for (uint32_t i = 0; i < p->n_src; i++) {
    const rf_src_tensor *s = &p->src[i];
    int64_t rows = 1, cols = 1;
    int ok = s->ndim >= 1 && s->ndim <= 3;
    for (int k = 0; ok && k < 3; k++) ok = k < s->ndim ? s->shape[k] > 0 : s->shape[k] == 0;
    if (!ok) {
      BAD("src %u '%s': ndim %u, shape [%" PRId64 ", %" PRId64 ", %" PRId64 "]", i, s->name, s->ndim, s->shape[0],
          s->shape[1], s->shape[2]);
      continue;
    }
    if (s->ndim == 1) rows = s->shape[0];
    else {
      for (int k = 0; k < s->ndim - 1; k++) rows *= s->shape[k];
      cols = s->shape[s->ndim - 1];
    }
    if (s->rows != rows || s->cols != cols)
      BAD("src %u '%s': view [%" PRId64 ", %" PRId64 "], its shape gives [%" PRId64 ", %" PRId64 "]", i, s->name, s->rows,
          s->cols, rows, cols);
    if (s->shard_rows != cdiv(s->shape[0], p->fsdp) * (rows / s->shape[0]))
      BAD("src %u '%s': shard_rows %" PRId64 " is not ceil(%" PRId64 "/%u) dim-0 slices of %" PRId64 " rows", i, s->name,
          s->shard_rows, s->shape[0], p->fsdp, rows / s->shape[0]);
    if (s->dtype != RF_BF16 && s->dtype != RF_FP32) BAD("src %u '%s': dtype %u is not bf16 or fp32", i, s->name, s->dtype);
    if (s->travel == RF_TRAVEL_SHARD ? s->shard != RF_NONE : s->travel != RF_TRAVEL_GATHER || s->shard >= p->fsdp)
      BAD("src %u '%s': travel %u with shard %u", i, s->name, s->travel, s->shard);
  }
  report("source views, FSDP2 chunks, dtypes and travel follow from their shapes", bad);
}

/* Every destination byte of every receiver is written exactly once per version. */
/* bytes of d that hold weights: all but its trailing padding rows */
static uint64_t weight_bytes(const rf_dst_tensor *d)
{
  return d->pad_rows ? d->bytes - d->bytes / (uint64_t)d->shape[0] * (uint64_t)d->pad_rows : d->bytes;
}

/* Every destination byte of every receiver is written exactly once per version, except padding
 * rows, which are never written. */
static void check_coverage(const rf_plan *p)
{
  long bad = 0;
  uint64_t padding = 0;
  span *s = malloc(sizeof *s * (p->n_writes ? p->n_writes : 1));
  for (uint32_t i = 0; i < p->n_writes; i++) {
    const rf_write *w = &p->writes[i];
    s[i] = (span){w->dst_off, w->dst_off + w->len, w->receiver, w->dst, 0, 0};
    if (w->receiver >= p->receivers || w->dst >= p->n_dst) {
      BAD("write %u: receiver %u / dst %u out of range", i, w->receiver, w->dst);
      s[i].key = UINT32_MAX;
      continue;
    }
    const rf_receiver *r = &p->recv[w->receiver];
    if (w->dst < r->dst_first || w->dst >= r->dst_first + r->dst_count)
      BAD("write %u: dst '%s' does not belong to receiver %u", i, p->dst[w->dst].name, w->receiver);
    if (w->len == 0 || w->dst_off + w->len > weight_bytes(&p->dst[w->dst]))
      BAD("write %u: [%" PRIu64 ", +%" PRIu64 ") outside the weights of '%s' (%" PRIu64 " bytes)", i, w->dst_off, w->len,
          p->dst[w->dst].name, weight_bytes(&p->dst[w->dst]));
  }
  qsort(s, p->n_writes, sizeof *s, cmp_span);
  uint32_t k = 0;
  for (uint32_t r = 0; r < p->receivers; r++) {
    const rf_receiver *rv = &p->recv[r];
    uint64_t recv_bytes = 0;
    for (uint32_t d = rv->dst_first; d < rv->dst_first + rv->dst_count; d++) {
      uint64_t at = 0;
      while (k < p->n_writes && s[k].key == r && s[k].key2 == d) {
        if (s[k].a != at) BAD("receiver %u '%s': bytes [%" PRIu64 ", %" PRIu64 ") written %s", r, p->dst[d].name,
                             s[k].a < at ? s[k].a : at, s[k].a < at ? at : s[k].a, s[k].a < at ? "twice" : "never");
        at = s[k].b > at ? s[k].b : at;
        k++;
      }
      uint64_t want = weight_bytes(&p->dst[d]);
      if (at != want) BAD("receiver %u '%s': written up to %" PRIu64 " of %" PRIu64 " weight bytes", r, p->dst[d].name, at, want);
      recv_bytes += want;
      padding += p->dst[d].bytes - want;
    }
    if (recv_bytes != rv->bytes) BAD("receiver %u: %" PRIu64 " bytes expected, tensors hold %" PRIu64, r, rv->bytes, recv_bytes);
    if (p->dst[rv->dst_first].tp_rank != rv->tp_rank) BAD("receiver %u: tp rank mismatch", r);
  }
  if (k != p->n_writes) BAD("%u writes go to no receiver's tensor in order", p->n_writes - k);
  free(s);
  char what[160];
  snprintf(what, sizeof what, "every destination byte of every receiver written exactly once (%" PRIu64
           " padding bytes never written)", padding);
  report(what, bad);
}

/* Op outputs of a rank never overlap, lie in the arena, and are exactly the bytes its writes send;
 * each write's bytes come from ops of the destination's dtype. */
static void check_slots(const rf_plan *p)
{
  long bad = 0, bad_src = 0, bad_dtype = 0;
  for (uint32_t t = 0; t < p->trainers; t++) {
    const rf_rank *rk = &p->ranks[t];
    size_t n = 0, cap = 16;
    span *o = malloc(sizeof *o * cap);
    for (uint32_t i = rk->op_first; i < rk->op_first + rk->op_count; i++) {
      const rf_op *op = &p->ops[i];
      for (uint32_t j = 0; j < op->count; j++) {
        if (n + 2 > cap) o = realloc(o, sizeof *o * (cap *= 2));
        uint64_t out = op->out + j * op->out_step;
        o[n++] = (span){out, out + (uint64_t)(op->rows * op->cols) * rf_dtype_size(op->dst_dtype), 0, 0, i, op->dst_dtype};
        if (rf_op_fp8(op)) {
          uint64_t sc = op->scale + j * op->scale_step;
          o[n++] = (span){sc, sc + (uint64_t)(cdiv(op->rows, RF_FP8_BLOCK) * cdiv(op->cols, RF_FP8_BLOCK)) * 4, 0, 0, i, RF_FP32};
        }
        uint32_t si = op->src + j * op->src_step;
        if (si >= p->n_src) { bad_src++; continue; }
        const rf_src_tensor *src = &p->src[si];
        int64_t r0 = op->row0 + j * op->row_step, c0 = op->col0 + j * op->col_step;
        int ok = r0 >= 0 && c0 >= 0 && r0 + op->rows <= src->rows && c0 + op->cols <= src->cols && op->src_dtype == src->dtype;
        if (src->travel == RF_TRAVEL_SHARD)
          ok = ok && r0 >= (int64_t)rk->shard * src->shard_rows && r0 + op->rows <= (int64_t)(rk->shard + 1) * src->shard_rows;
        else
          ok = ok && src->shard == rk->shard;
        if (!ok) {
          bad_src++;
          if (shown++ < 8) printf("  rank %u op %u: '%s' rows [%" PRId64 ", +%" PRId64 ") not held by shard %u\n", t, i, src->name, r0, op->rows, rk->shard);
        }
      }
    }
    qsort(o, n, sizeof *o, cmp_span);
    for (size_t i = 0; i < n; i++) {
      if (i && o[i].a < o[i - 1].b) BAD("rank %u: op outputs overlap at slot %" PRIu64, t, o[i].a);
      if (o[i].b > rk->arena_bytes) BAD("rank %u: op output past the arena (%" PRIu64 " > %" PRIu64 ")", t, o[i].b, rk->arena_bytes);
    }
    /* every write is covered by op outputs of its dtype; every op byte is sent */
    uint64_t sent = 0;
    char *used = calloc(n ? n : 1, 1);
    for (uint32_t w = rk->write_first; w < rk->write_first + rk->write_count; w++) {
      const rf_write *wr = &p->writes[w];
      sent += wr->len;
      if (wr->slot + wr->len > rk->arena_bytes) BAD("rank %u write %u past the arena", t, w);
      size_t lo = 0, hi = n;
      while (lo < hi) { size_t mid = (lo + hi) / 2; if (o[mid].b <= wr->slot) lo = mid + 1; else hi = mid; }
      uint64_t at = wr->slot;
      for (size_t i = lo; i < n && at < wr->slot + wr->len; i++) {
        if (o[i].a > at) break;
        if (o[i].dtype != p->dst[wr->dst].dtype) {
          bad_dtype++;
          if (shown++ < 8) printf("  rank %u write %u to '%s': slot bytes staged as dtype %u, tensor is %u\n", t, w, p->dst[wr->dst].name, o[i].dtype, p->dst[wr->dst].dtype);
        }
        used[i] = 1;
        at = o[i].b;
      }
      if (at < wr->slot + wr->len) BAD("rank %u write %u: slot bytes [%" PRIu64 ", %" PRIu64 ") staged by no op", t, w, at, wr->slot + wr->len);
    }
    for (size_t i = 0; i < n; i++)
      if (!used[i]) BAD("rank %u: op %u output at slot %" PRIu64 " is never sent", t, o[i].op, o[i].a);
    if (sent != rk->bytes_out) BAD("rank %u: writes send %" PRIu64 ", bytes_out says %" PRIu64, t, sent, rk->bytes_out);
    free(used);
    free(o);
  }
  report("op outputs disjoint, inside the arena, and exactly what the writes send", bad);
  failed += bad_src > 0, passed += bad_src == 0;
  printf("%s op sources inside the tensor rows the rank's FSDP shard holds (%ld problems)\n", bad_src ? "FAIL" : "ok  ", bad_src);
  failed += bad_dtype > 0, passed += bad_dtype == 0;
  printf("%s slot dtype equals destination dtype for every write (%ld problems)\n", bad_dtype ? "FAIL" : "ok  ", bad_dtype);
  shown = 0;
}

static void check_ranges(const rf_plan *p)
{
  long bad = 0;
  uint64_t total = 0;
  uint32_t g_at = 0, o_at = 0, w_at = 0;
  for (uint32_t t = 0; t < p->trainers; t++) {
    const rf_rank *r = &p->ranks[t];
    if (r->shard != t % p->fsdp || r->replicate != t / p->fsdp) BAD("rank %u: shard %u replicate %u", t, r->shard, r->replicate);
    if (r->group_first != g_at || r->op_first != o_at || r->write_first != w_at) BAD("rank %u: ranges not contiguous", t);
    for (uint32_t g = r->group_first; g < r->group_first + r->group_count; g++) {
      if (p->groups[g].op_first != o_at || p->groups[g].write_first != w_at) BAD("rank %u group %u: not in order", t, g);
      o_at += p->groups[g].op_count;
      w_at += p->groups[g].write_count;
    }
    if (o_at != r->op_first + r->op_count || w_at != r->write_first + r->write_count) BAD("rank %u: groups do not cover its ops/writes", t);
    g_at += r->group_count;
    total += r->bytes_out;
  }
  if (g_at != p->n_groups || o_at != p->n_ops || w_at != p->n_writes) BAD("ranks do not cover the tables");
  if (total != p->total_bytes) BAD("total bytes %" PRIu64 " != sum of ranks %" PRIu64, p->total_bytes, total);
  report("groups partition each rank's ops and writes; rank totals add up", bad);

  bad = 0;
  uint64_t *bytes = calloc(p->trainers, sizeof *bytes);
  uint32_t *writes = calloc(p->trainers, sizeof *writes);
  for (uint32_t r = 0; r < p->receivers; r++) {
    memset(bytes, 0, p->trainers * sizeof *bytes);
    memset(writes, 0, p->trainers * sizeof *writes);
    for (uint32_t w = 0; w < p->n_writes; w++)
      if (p->writes[w].receiver == r) {
        uint32_t t = 0;
        while (t + 1 < p->trainers && p->ranks[t + 1].write_first <= w) t++;
        bytes[t] += p->writes[w].len;
        writes[t]++;
      }
    const rf_receiver *rv = &p->recv[r];
    uint32_t expected = 0;
    for (uint32_t t = 0; t < p->trainers; t++) expected += writes[t] > 0;
    if (expected != rv->peer_count) BAD("receiver %u: %u trainers write to it, peers list %u", r, expected, rv->peer_count);
    for (uint32_t k = rv->peer_first; k < rv->peer_first + rv->peer_count; k++) {
      const rf_peer *q = &p->peers[k];
      if (q->trainer >= p->trainers || bytes[q->trainer] != q->bytes || writes[q->trainer] != q->writes)
        BAD("receiver %u: peer trainer %u expects %" PRIu64 " bytes in %u writes", r, q->trainer, q->bytes, q->writes);
    }
  }
  free(bytes);
  free(writes);
  report("each receiver's peer list is exactly the trainers that write to it, with their bytes", bad);
}

/* Every name a receiver position binds by (dst names, their aliases, derived views) is unique there. */
typedef struct { const char *s; size_t n; uint32_t rank; } name_ref;

static int cmp_name(const void *x, const void *y)
{
  const name_ref *a = x, *b = y;
  if (a->rank != b->rank) return a->rank < b->rank ? -1 : 1;
  int c = strncmp(a->s, b->s, a->n < b->n ? a->n : b->n);
  return c ? c : (a->n > b->n) - (a->n < b->n);
}

static void check_names(const rf_plan *p)
{
  long bad = 0;
  size_t n = 0, cap = 64;
  name_ref *v = malloc(sizeof *v * cap);
  for (uint32_t i = 0; i < p->n_dst + p->n_derived; i++) {
    const char *name = i < p->n_dst ? p->dst[i].name : p->derived[i - p->n_dst].name;
    const char *al = i < p->n_dst ? p->dst[i].aliases : "";
    uint32_t rank = i < p->n_dst ? p->dst[i].tp_rank : p->derived[i - p->n_dst].tp_rank;
    if (n + 1 >= cap) v = realloc(v, sizeof *v * (cap *= 2));
    v[n++] = (name_ref){name, strlen(name), rank};
    for (const char *a = al; *a;) {
      const char *end = strchr(a, ',');
      size_t len = end ? (size_t)(end - a) : strlen(a);
      if (len == 0) BAD("dst %u '%s': empty alias in '%s'", i, name, al);
      if (n + 1 >= cap) v = realloc(v, sizeof *v * (cap *= 2));
      v[n++] = (name_ref){a, len, rank};
      a += len + (end != NULL);
    }
  }
  qsort(v, n, sizeof *v, cmp_name);
  for (size_t i = 1; i < n; i++)
    if (cmp_name(&v[i - 1], &v[i]) == 0) BAD("position %u: name '%.*s' given twice", v[i].rank, (int)v[i].n, v[i].s);
  free(v);
  report("names and aliases unique per receiver position", bad);
}

/* Derived views come in pairs (W_UK_T, then W_UV) per storage, of one position, bf16, of matching
 * shapes [h, nope, lora] and [h, lora, v]. A pair in a dst tensor's memory lies in the bf16 kv_b_proj
 * [h*(nope+v), lora] of its position exactly as W_UK_T[n][i][l] = kv_b[n*(nope+v)+i][l],
 * W_UV[n][l][j] = kv_b[n*(nope+v)+nope+j][l] (offsets and strides are the affine map; equal maps,
 * equal elements). A pair in refit's own storage is filled by exactly one refresh step from an fp8
 * weight of its position with its scales; its views stay inside the storage and no two elements
 * coincide (element by element over a bitmap, once per distinct layout: written independently of
 * kernels/refresh_ref.c's check, which it verifies). */
static void check_refresh(const rf_plan *p)
{
  long bad = 0;
  char *refreshed = calloc(p->n_derived ? p->n_derived : 1, 1);
  for (uint32_t i = 0; i < p->n_refresh; i++) {
    const rf_refresh *r = &p->refresh[i];
    if (r->kind != RF_REFRESH_MLA_ABSORB || r->weight >= p->n_dst || r->scale >= p->n_dst || r->out0 >= p->n_derived ||
        r->out1 >= p->n_derived) {
      BAD("refresh %u: kind %u or ids out of range", i, r->kind);
      continue;
    }
    const rf_dst_tensor *w = &p->dst[r->weight];
    const rf_derived_tensor *uk = &p->derived[r->out0], *uv = &p->derived[r->out1];
    int ok = w->ndim == 2 && w->dtype == RF_FP8 && p->dst[r->scale].weight == r->weight &&
             w->shape[0] == (int64_t)r->heads * (r->qk_nope + r->v_head) && w->shape[1] == r->kv_lora &&
             uk->shape[0] == r->heads && uk->shape[1] == r->qk_nope && uk->shape[2] == r->kv_lora &&
             uv->shape[0] == r->heads && uv->shape[1] == r->kv_lora && uv->shape[2] == r->v_head &&
             w->tp_rank == r->tp_rank && uk->tp_rank == r->tp_rank && uv->tp_rank == r->tp_rank &&
             uk->storage == r->out0 && uv->storage == r->out0 && uk->dst == RF_NONE;
    if (!ok) BAD("refresh %u (%s): shapes, positions, storage or scale do not match", i, w->name);
    if (refreshed[r->out0]++) BAD("refresh %u: storage of '%s' filled twice", i, uk->name);
    if (i && r->tp_rank < p->refresh[i - 1].tp_rank) BAD("refresh %u: not ordered by position", i);
  }
  int64_t last[8];
  int have_last = 0;
  char *fin_out = calloc(p->n_derived ? p->n_derived : 1, 1); /* storages of finalize steps: check_finalize's */
  for (uint32_t i = 0; i < p->n_finalize; i++)
    if (p->finalize[i].out < p->n_derived) fin_out[p->finalize[i].out] = 1;
  for (uint32_t i = 0; i < p->n_derived; i += 2) {
    if (fin_out[i]) { /* one tensor, not a pair: go on at i + 1 */
      i--;
      continue;
    }
    const rf_derived_tensor *uk = &p->derived[i], *uv = i + 1 < p->n_derived ? &p->derived[i + 1] : NULL;
    if (!uv || uk->storage != i || uv->storage != i || uk->ndim != 3 || uv->ndim != 3 || uk->dtype != RF_BF16 ||
        uv->dtype != RF_BF16 || uk->tp_rank != uv->tp_rank || uk->dst != uv->dst || uk->bytes != uv->bytes) {
      BAD("derived %u '%s': not the first of a W_UK_T/W_UV pair of one bf16 storage", i, uk->name);
      continue;
    }
    int64_t h = uk->shape[0], nope = uk->shape[1], lora = uk->shape[2], v = uv->shape[2], per = nope + v;
    if (uv->shape[0] != h || uv->shape[1] != lora) BAD("derived '%s' / '%s': shapes do not pair", uk->name, uv->name);
    int64_t top = 0, t;
    t = uk->offset + (h - 1) * uk->stride[0] + (nope - 1) * uk->stride[1] + (lora - 1) * uk->stride[2], top = t > top ? t : top;
    t = uv->offset + (h - 1) * uv->stride[0] + (lora - 1) * uv->stride[1] + (v - 1) * uv->stride[2], top = t > top ? t : top;
    if (uk->offset < 0 || uv->offset < 0 || (uint64_t)(top + 1) * 2 > uk->bytes)
      BAD("derived '%s' / '%s': views leave their %" PRIu64 "-byte storage", uk->name, uv->name, uk->bytes);
    if (uk->dst != RF_NONE) {
      const rf_dst_tensor *d = uk->dst < p->n_dst ? &p->dst[uk->dst] : NULL;
      int ok = d && d->dtype == RF_BF16 && d->ndim == 2 && d->shape[0] == h * per && d->shape[1] == lora &&
               d->tp_rank == uk->tp_rank && d->bytes == uk->bytes && uk->offset == 0 &&
               uk->stride[0] == per * lora && uk->stride[1] == lora && uk->stride[2] == 1 && uv->offset == nope * lora &&
               uv->stride[0] == per * lora && uv->stride[1] == 1 && uv->stride[2] == lora;
      if (!ok) BAD("derived '%s' / '%s': not W_UK_T / W_UV of the kv_b_proj they view", uk->name, uv->name);
      continue;
    }
    if (!refreshed[i]) BAD("derived '%s': its storage is filled by no refresh step", uk->name);
    int64_t lay[8] = {uk->offset, uk->stride[0], uk->stride[1], uk->stride[2], uv->offset, uv->stride[0], uv->stride[1],
                      uv->stride[2]};
    if (have_last && memcmp(lay, last, sizeof lay) == 0) continue;
    memcpy(last, lay, sizeof lay), have_last = 1;
    uint8_t *seen = calloc((size_t)(top + 8) / 8, 1);
    long twice = 0;
    for (int64_t n = 0; n < h; n++)
      for (int64_t l = 0; l < lora; l++)
        for (int64_t k = 0; k < per; k++) {
          int64_t at = k < nope ? uk->offset + n * uk->stride[0] + k * uk->stride[1] + l * uk->stride[2]
                                : uv->offset + n * uv->stride[0] + l * uv->stride[1] + (k - nope) * uv->stride[2];
          if (at < 0 || at > top) continue;
          twice += (seen[at / 8] >> (at % 8)) & 1;
          seen[at / 8] |= (uint8_t)(1u << (at % 8));
        }
    free(seen);
    if (twice) BAD("derived '%s' / '%s': %ld storage elements named twice", uk->name, uv->name, twice);
  }
  free(refreshed);
  free(fin_out);
  report("derived views pair up inside their storage; refresh steps fill refit's storages, dst views match kv_b_proj", bad);
}

/* delta plans: each write's patch slot has the cap of refit_plan.h's formula and lies in its peer's
 * part of its receiver's area, the parts tile the area in peer order and the slots tile each part in
 * table order; a region (consecutive writes of one slot range) has one cap and one element size; a
 * rank's patch buffer is its regions' caps and its scratch holds its largest group's slot range.
 * Without delta every one of these fields is 0. */
static uint64_t al(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
static void check_patches(const rf_plan *p)
{
  long bad = 0;
  uint64_t ppm = p->delta_ppm;
  uint64_t *next = calloc((size_t)p->n_peers + 1, sizeof *next); /* the next slot of each part */
  for (uint32_t t = 0; t < p->trainers; t++) {
    const rf_rank *rk = &p->ranks[t];
    uint64_t buf = 0, scratch = 0;
    const rf_write *prev = NULL;
    for (uint32_t g = rk->group_first; g < rk->group_first + rk->group_count; g++) {
      const rf_group *G = &p->groups[g];
      uint64_t lo = UINT64_MAX, hi = 0;
      for (uint32_t i = G->write_first; i < G->write_first + G->write_count; i++) {
        const rf_write *w = &p->writes[i];
        uint64_t bound = 32 + al(w->len, 4) + 12 * cdiv((int64_t)w->len, 16384), cap = 0;
        if (ppm) {
          cap = al(48 + (w->len * ppm + 999999) / 1000000, 16);
          if (al(bound, 16) < cap) cap = al(bound, 16);
        }
        if (w->patch_cap != cap) BAD("write %u: patch_cap %" PRIu64 ", the formula gives %" PRIu64, i, w->patch_cap, cap);
        int region = !prev || prev->slot != w->slot || prev->len != w->len;
        if (region) buf += w->patch_cap;
        else if (p->dst[prev->dst].dtype != p->dst[w->dst].dtype)
          BAD("write %u: one slot range sent as two element sizes ('%s', '%s')", i, p->dst[prev->dst].name, p->dst[w->dst].name);
        prev = w;
        if (w->slot < lo) lo = w->slot;
        if (w->slot + w->len > hi) hi = w->slot + w->len;
        const rf_receiver *rv = &p->recv[w->receiver];
        uint32_t k = rv->peer_first;
        while (k < rv->peer_first + rv->peer_count && p->peers[k].trainer != t) k++;
        if (k == rv->peer_first + rv->peer_count) { BAD("write %u: rank %u is no peer of receiver %u", i, t, w->receiver); continue; }
        const rf_peer *q = &p->peers[k];
        if (ppm && w->patch_off != q->patch_off + next[k])
          BAD("write %u: patch slot at %" PRIu64 ", its part's next slot is at %" PRIu64, i, w->patch_off, q->patch_off + next[k]);
        if (!ppm && w->patch_off) BAD("write %u: patch_off %" PRIu64 " without delta", i, w->patch_off);
        next[k] += w->patch_cap;
        if (w->patch_off % 16) BAD("write %u: patch slot at %" PRIu64 " not 16-aligned", i, w->patch_off);
      }
      if (G->write_count && hi - lo > scratch) scratch = hi - lo;
    }
    if (!ppm) buf = scratch = 0;
    if (rk->patch_bytes != buf) BAD("rank %u: patch_bytes %" PRIu64 ", its regions' caps add up to %" PRIu64, t, rk->patch_bytes, buf);
    if (rk->scratch_bytes != scratch) BAD("rank %u: scratch_bytes %" PRIu64 ", its largest group spans %" PRIu64, t, rk->scratch_bytes, scratch);
  }
  for (uint32_t r = 0; r < p->receivers; r++) {
    const rf_receiver *rv = &p->recv[r];
    uint64_t at = 0;
    for (uint32_t k = rv->peer_first; k < rv->peer_first + rv->peer_count; k++) {
      const rf_peer *q = &p->peers[k];
      if (q->patch_off != at || q->patch_bytes != next[k])
        BAD("receiver %u peer rank %u: part [%" PRIu64 ", +%" PRIu64 "), expected [%" PRIu64 ", +%" PRIu64 ")", r, q->trainer,
            q->patch_off, q->patch_bytes, at, next[k]);
      at += next[k];
    }
    if (rv->patch_bytes != at) BAD("receiver %u: patch area %" PRIu64 " bytes, its parts add up to %" PRIu64, r, rv->patch_bytes, at);
  }
  free(next);
  report("delta patch slots: caps by the formula, parts tile each receiver's area, buffers and scratch sized", bad);
}

/* the index tables (gen/index.lua) are what the other tables give: each receiver's writes are its
 * peers' writes to it, peer by peer in table order, its directory in that order; each rank's targets
 * are the receivers it writes to, in receiver order, with where its directory parts start; each
 * group's regions are its runs of writes of one slot range, with their patch slots in the rank's
 * buffer in table order and the group's scratch image from its lowest slot (delta plans) */
static void check_index(const rf_plan *p)
{
  long bad = 0;
  uint32_t at = 0, tg = 0, rg = 0;
  for (uint32_t r = 0; r < p->receivers; r++) {
    const rf_receiver *rv = &p->recv[r];
    if (rv->write_first != at) BAD("receiver %u: writes from %u, the previous end at %u", r, rv->write_first, at);
    for (uint32_t k = 0; k < rv->peer_count; k++) {
      const rf_peer *q = &p->peers[rv->peer_first + k];
      const rf_rank *rk = &p->ranks[q->trainer];
      if (q->write_first != at) BAD("receiver %u peer %u: writes from %u, expected %u", r, k, q->write_first, at);
      for (uint32_t i = rk->write_first; i < rk->write_first + rk->write_count; i++) {
        if (p->writes[i].receiver != r) continue;
        if (at >= p->n_recv_writes || p->recv_writes[at].write != i || p->recv_writes[at].peer != k)
          BAD("receiver %u: entry %u is not write %u of peer %u", r, at, i, k);
        at++;
      }
    }
    if (rv->write_count != at - rv->write_first) BAD("receiver %u: %u writes, it receives %u", r, rv->write_count, at - rv->write_first);
  }
  if (at != p->n_recv_writes) BAD("%u received writes listed, %u received", p->n_recv_writes, at);
  for (uint32_t t = 0; t < p->trainers; t++) {
    const rf_rank *rk = &p->ranks[t];
    uint32_t dir = 0, n = 0;
    if (rk->target_first != tg) BAD("rank %u: targets from %u, expected %u", t, rk->target_first, tg);
    for (uint32_t r = 0; r < p->receivers; r++)
      for (uint32_t k = p->recv[r].peer_first; k < p->recv[r].peer_first + p->recv[r].peer_count; k++) {
        if (p->peers[k].trainer != t) continue;
        const rf_target *x = tg < p->n_targets ? &p->targets[tg] : NULL;
        if (!x || x->receiver != r || x->peer != k || x->dir_first != dir ||
            x->dir_off != 16 * (uint64_t)(p->peers[k].write_first - p->recv[r].write_first))
          BAD("rank %u: target %u is not receiver %u (peer %u, directory at %u)", t, tg, r, k, dir);
        dir += p->peers[k].writes;
        tg++, n++;
      }
    if (rk->target_count != n) BAD("rank %u: %u targets, it writes to %u receivers", t, rk->target_count, n);
    if (rk->region_first != rg) BAD("rank %u: regions from %u, expected %u", t, rk->region_first, rg);
    uint64_t off = 0;
    for (uint32_t g = rk->group_first; g < rk->group_first + rk->group_count; g++) {
      const rf_group *G = &p->groups[g];
      uint64_t lo = G->write_count && p->delta_ppm ? UINT64_MAX : 0;
      uint32_t first = rg;
      const rf_write *prev = NULL;
      for (uint32_t i = G->write_first; p->delta_ppm && i < G->write_first + G->write_count; i++) {
        const rf_write *w = &p->writes[i];
        if (w->slot < lo) lo = w->slot;
        if (!prev || prev->slot != w->slot || prev->len != w->len) {
          const rf_region *x = rg < p->n_regions ? &p->regions[rg] : NULL;
          uint32_t cnt = 1;
          while (i + cnt < G->write_first + G->write_count && p->writes[i + cnt].slot == w->slot && p->writes[i + cnt].len == w->len) cnt++;
          if (!x || x->slot != w->slot || x->len != w->len || x->patch_off != off || x->patch_cap != w->patch_cap ||
              x->write_first != i || x->write_count != cnt || x->esize != (int)rf_dtype_size(p->dst[w->dst].dtype))
            BAD("rank %u group %u: region %u is not writes %u..+%u", t, g, rg, i, cnt);
          off += w->patch_cap;
          rg++;
        }
        prev = w;
      }
      if (G->region_first != first || G->region_count != rg - first || G->scratch_lo != lo)
        BAD("group %u: regions %u+%u, scratch at %" PRIu64 "; expected %u+%u at %" PRIu64, g, G->region_first,
            G->region_count, G->scratch_lo, first, rg - first, lo);
    }
    if (rk->region_count != rg - rk->region_first) BAD("rank %u: %u regions, its groups have %u", t, rk->region_count, rg - rk->region_first);
  }
  if (tg != p->n_targets || rg != p->n_regions) BAD("%u targets and %u regions listed, the ranks have %u and %u", p->n_targets, p->n_regions, tg, rg);
  report("index tables: received writes, targets and regions are what the tables give", bad);
}

/* finalize steps (gen/engine.lua): each reads a dst of its position; a kernel step writes a storage
 * of its position that nothing else writes, UE8M0 pack from the fp32 scales of its fp8 weight
 * [groups, rows, cols] into int32 [groups, rows, ceil(ceil(cols/128)/4)] with MN aligned to 4, bytes
 * = both tensors'; an engine step names no output and counts its dst's bytes. Ordered by position,
 * then dst; the index gives each position its run (no rows without steps). */
static void check_finalize(const rf_plan *p)
{
  long bad = 0;
  uint32_t positions = p->replicas ? p->receivers / p->replicas : 0;
  char *written = calloc(p->n_derived ? p->n_derived : 1, 1);
  for (uint32_t i = 0; i < p->n_finalize; i++) {
    const rf_finalize *f = &p->finalize[i];
    if (f->dst >= p->n_dst || f->tp_rank >= positions || p->dst[f->dst].tp_rank != f->tp_rank) {
      BAD("finalize %u ('%s'): dst %u out of range or not of position %u", i, f->name, f->dst, f->tp_rank);
      continue;
    }
    const rf_dst_tensor *d = &p->dst[f->dst];
    if (i && (f->tp_rank < p->finalize[i - 1].tp_rank ||
              (f->tp_rank == p->finalize[i - 1].tp_rank && f->dst <= p->finalize[i - 1].dst)))
      BAD("finalize %u ('%s' of '%s'): not ordered by position, then dst", i, f->name, d->name);
    if (f->kind == RF_FIN_ENGINE) {
      if (f->out != RF_NONE || f->op != RF_FINOP_NONE || f->bytes != d->bytes || f->groups != 1)
        BAD("finalize %u ('%s' of '%s'): an engine step with an output, an op or %" PRIu64 " bytes (dst %" PRIu64 ")", i,
            f->name, d->name, f->bytes, d->bytes);
      continue;
    }
    const rf_derived_tensor *o = f->out < p->n_derived ? &p->derived[f->out] : NULL;
    const rf_dst_tensor *w = d->weight < p->n_dst ? &p->dst[d->weight] : NULL;
    if (f->kind != RF_FIN_KERNEL || f->op != RF_FINOP_UE8M0_PACK || !o || !w) {
      BAD("finalize %u ('%s' of '%s'): kind %u op %u out %u: not a UE8M0 pack of an fp8 weight's scales", i, f->name,
          d->name, f->kind, f->op, f->out);
      continue;
    }
    if (written[f->out]++) BAD("finalize %u ('%s' of '%s'): storage '%s' written twice", i, f->name, d->name, o->name);
    int64_t g = f->groups, rb = (f->rows + 127) / 128, kb = (f->cols + 127) / 128, mn = (f->rows + 3) / 4 * 4;
    int64_t kw = (kb + 3) / 4;
    int ok = o->storage == f->out && o->dst == RF_NONE && o->tp_rank == f->tp_rank && o->dtype == RF_I32 &&
             o->offset == 0 && o->bytes == (uint64_t)(g * mn * kw * 4) && d->dtype == RF_FP32 &&
             d->bytes == (uint64_t)(g * rb * kb * 4) && w->dtype == RF_FP8 && w->bytes == (uint64_t)(g * f->rows * f->cols) &&
             w->tp_rank == f->tp_rank && f->bytes == d->bytes + o->bytes &&
             (g == 1 ? o->ndim == 2 && o->shape[0] == f->rows && o->shape[1] == kw && o->stride[0] == 1 && o->stride[1] == mn
                     : o->ndim == 3 && o->shape[0] == g && o->shape[1] == f->rows && o->shape[2] == kw &&
                           o->stride[0] == mn * kw && o->stride[1] == 1 && o->stride[2] == mn);
    if (!ok) BAD("finalize %u ('%s' of '%s'): geometry, tensors or bytes do not match [%u, %lld, %lld]", i, f->name,
                 d->name, f->groups, (long long)f->rows, (long long)f->cols);
  }
  if (p->n_finalize == 0 ? p->n_fin_index != 0 : p->n_fin_index != positions)
    BAD("%u finalize index rows for %u steps over %u positions", p->n_fin_index, p->n_finalize, positions);
  for (uint32_t q = 0, at = 0; q < p->n_fin_index; q++) {
    const rf_fin_index *x = &p->fin_index[q];
    uint32_t n = 0;
    while (at + n < p->n_finalize && p->finalize[at + n].tp_rank == q) n++;
    if (x->first != at || x->count != n) BAD("position %u: finalize steps %u+%u, the table has %u+%u", q, x->first, x->count, at, n);
    at += n;
  }
  free(written);
  report("finalize steps read their position's tensors and write their own storages; the index covers them", bad);
}

int rf_selfcheck(const rf_plan *p, const rf_expect *e)
{
  printf("self-check %s (%s): %u trainers -> %u receivers, %u writes\n", p->name, p->model, p->trainers, p->receivers, p->n_writes);
  check_counts(p, e);
  check_src_shapes(p);
  check_dst_shapes(p);
  check_coverage(p);
  check_slots(p);
  check_ranges(p);
  check_names(p);
  check_refresh(p);
  check_patches(p);
  check_index(p);
  check_finalize(p);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
