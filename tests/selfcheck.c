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

static uint64_t dsize(uint8_t dt) { return dt == RF_BF16 ? 2 : dt == RF_FP32 ? 4 : dt == RF_FP8 ? 1 : 0; }
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
    hf += (uint64_t)(p->src[i].rows * p->src[i].cols) * dsize(p->src[i].dtype);
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
    if (d->ndim < 1 || d->ndim > 3 || n * dsize(d->dtype) != d->bytes)
      BAD("dst %u '%s': dtype x shape != %" PRIu64 " bytes", i, d->name, d->bytes);
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
  report("dtype x shape = bytes; scales are [ceil(r/128), ceil(c/128)] per TP/EP piece", bad);
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
static void check_coverage(const rf_plan *p)
{
  long bad = 0;
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
    if (w->len == 0 || w->dst_off + w->len > p->dst[w->dst].bytes)
      BAD("write %u: [%" PRIu64 ", +%" PRIu64 ") outside '%s' (%" PRIu64 " bytes)", i, w->dst_off, w->len,
          p->dst[w->dst].name, p->dst[w->dst].bytes);
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
      if (at != p->dst[d].bytes) BAD("receiver %u '%s': written up to %" PRIu64 " of %" PRIu64, r, p->dst[d].name, at, p->dst[d].bytes);
      recv_bytes += p->dst[d].bytes;
    }
    if (recv_bytes != rv->bytes) BAD("receiver %u: %" PRIu64 " bytes expected, tensors hold %" PRIu64, r, rv->bytes, recv_bytes);
    if (p->dst[rv->dst_first].tp_rank != rv->tp_rank) BAD("receiver %u: tp rank mismatch", r);
  }
  if (k != p->n_writes) BAD("%u writes go to no receiver's tensor in order", p->n_writes - k);
  free(s);
  report("every destination byte of every receiver written exactly once", bad);
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
        o[n++] = (span){out, out + (uint64_t)(op->rows * op->cols) * dsize(op->dst_dtype), 0, 0, i, op->dst_dtype};
        if (op->kind == RF_OP_FP8) {
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

/* Refresh steps read a destination weight of their position and fill derived tensors of the same
 * position whose shapes follow from the weight's: [h*(nope+v), lora] -> [h, nope, lora], [h, lora, v]. */
static void check_refresh(const rf_plan *p)
{
  long bad = 0;
  for (uint32_t i = 0; i < p->n_derived; i++) {
    const rf_derived_tensor *t = &p->derived[i];
    if ((uint64_t)(t->shape[0] * t->shape[1] * t->shape[2]) * dsize(t->dtype) != t->bytes || t->ndim != 3)
      BAD("derived '%s': dtype x shape != %" PRIu64 " bytes", t->name, t->bytes);
  }
  uint32_t last_rank = 0;
  for (uint32_t i = 0; i < p->n_refresh; i++) {
    const rf_refresh *r = &p->refresh[i];
    if (r->kind != RF_REFRESH_MLA_ABSORB || r->weight >= p->n_dst || r->out0 >= p->n_derived || r->out1 >= p->n_derived) {
      BAD("refresh %u: kind %u or ids out of range", i, r->kind);
      continue;
    }
    const rf_dst_tensor *w = &p->dst[r->weight];
    const rf_derived_tensor *uk = &p->derived[r->out0], *uv = &p->derived[r->out1];
    int ok = w->ndim == 2 && w->shape[0] == (int64_t)r->heads * (r->qk_nope + r->v_head) && w->shape[1] == r->kv_lora &&
             uk->shape[0] == r->heads && uk->shape[1] == r->qk_nope && uk->shape[2] == r->kv_lora &&
             uv->shape[0] == r->heads && uv->shape[1] == r->kv_lora && uv->shape[2] == r->v_head &&
             w->tp_rank == r->tp_rank && uk->tp_rank == r->tp_rank && uv->tp_rank == r->tp_rank &&
             (w->dtype == RF_FP8 ? r->scale < p->n_dst && p->dst[r->scale].weight == r->weight : r->scale == RF_NONE);
    if (!ok) BAD("refresh %u (%s): shapes, positions or scale do not match", i, w->name);
    if (r->tp_rank < last_rank) BAD("refresh %u: not ordered by position", i);
    last_rank = r->tp_rank;
  }
  report("refresh steps read their position's weight and fill derived tensors of matching shape", bad);
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
  check_refresh(p);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
