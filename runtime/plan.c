/* plan.c: small facts about the tables (dtype sizes, FSDP shard rows, FP8 scale bytes), the layout
 * hash of a plan, recomputed from its tables, and the time model's predictions (see refit_plan.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "refit_plan.h"

size_t rf_dtype_size(int dt) { return dt == RF_BF16 ? 2 : dt == RF_FP32 ? 4 : dt == RF_FP8 ? 1 : 0; }

/* piece i of `rows` rows cut into pieces of `chunk` rows, the last short: [*first, *first + *count) */
static void chunk_rows(int64_t rows, int64_t chunk, uint32_t i, int64_t *first, int64_t *count)
{
  if (rows <= 0 || chunk <= 0 || (int64_t)i >= (rows + chunk - 1) / chunk) { /* past the end: empty */
    *first = rows > 0 ? rows : 0;
    *count = 0;
    return;
  }
  *first = (int64_t)i * chunk;
  *count = rows - *first < chunk ? rows - *first : chunk;
}

void rf_shard_rows(int64_t rows, uint32_t shards, uint32_t shard, int64_t *first, int64_t *count)
{
  chunk_rows(rows, shards && shard < shards ? (rows + shards - 1) / shards : 0, shard, first, count);
}

void rf_src_rows(const rf_src_tensor *s, uint32_t shard, int64_t *first, int64_t *count)
{
  if (s->travel == RF_TRAVEL_SHARD) chunk_rows(s->rows, s->shard_rows, shard, first, count);
  else *first = 0, *count = s->rows;
}

uint64_t rf_fp8_scale_bytes(int64_t rows, int64_t cols)
{
  return (uint64_t)((rows + RF_FP8_BLOCK - 1) / RF_FP8_BLOCK) * (uint64_t)((cols + RF_FP8_BLOCK - 1) / RF_FP8_BLOCK) * 4;
}

#define MIX(h, w) ((h) = ((h) ^ (uint64_t)(w)) * 0x100000001b3ull)

/* 8-byte little-endian words, the last zero-padded, then the length */
static uint64_t mix_str(uint64_t h, const char *s)
{
  size_t n = strlen(s);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = 0;
    for (size_t k = 0; k < 8 && i + k < n; k++)
      w |= (uint64_t)(unsigned char)s[i + k] << (8 * k);
    MIX(h, w);
  }
  MIX(h, n);
  return h;
}

uint64_t rf_plan_hash(const rf_plan *p)
{
  uint64_t h = 0xcbf29ce484222325ull;
  MIX(h, p->total_bytes);
  MIX(h, p->fsdp); MIX(h, p->dp_replicate); MIX(h, p->trainers); MIX(h, p->tp);
  MIX(h, p->ep); MIX(h, p->replicas); MIX(h, p->receivers); MIX(h, p->scale_fmt); MIX(h, p->delta_ppm);
  for (uint32_t i = 0; i < p->n_src; i++) {
    const rf_src_tensor *t = &p->src[i];
    h = mix_str(h, t->name);
    MIX(h, t->rows); MIX(h, t->cols); MIX(h, t->shard_rows); MIX(h, t->shard);
    MIX(h, t->layer); MIX(h, t->dtype); MIX(h, t->travel); MIX(h, t->ndim);
    MIX(h, t->shape[0]); MIX(h, t->shape[1]); MIX(h, t->shape[2]);
  }
  for (uint32_t i = 0; i < p->n_dst; i++) {
    const rf_dst_tensor *t = &p->dst[i];
    h = mix_str(h, t->name);
    h = mix_str(h, t->aliases);
    MIX(h, t->shape[0]); MIX(h, t->shape[1]); MIX(h, t->shape[2]);
    MIX(h, t->stride[0]); MIX(h, t->stride[1]); MIX(h, t->stride[2]); MIX(h, t->pad_rows);
    MIX(h, t->bytes); MIX(h, t->weight); MIX(h, t->tp_rank); MIX(h, t->ndim); MIX(h, t->dtype);
  }
  for (uint32_t i = 0; i < p->n_ops; i++) {
    const rf_op *o = &p->ops[i];
    MIX(h, o->src); MIX(h, o->count); MIX(h, o->src_step);
    MIX(h, o->kind); MIX(h, o->src_dtype); MIX(h, o->dst_dtype);
    MIX(h, o->row0); MIX(h, o->col0); MIX(h, o->rows); MIX(h, o->cols);
    MIX(h, o->row_step); MIX(h, o->col_step);
    MIX(h, o->out); MIX(h, o->out_step); MIX(h, o->scale); MIX(h, o->scale_step);
    MIX(h, o->direct);
  }
  for (uint32_t i = 0; i < p->n_writes; i++) {
    const rf_write *w = &p->writes[i];
    MIX(h, w->slot); MIX(h, w->dst_off); MIX(h, w->len); MIX(h, w->receiver); MIX(h, w->dst);
    MIX(h, w->piece_first); MIX(h, w->piece_count); MIX(h, w->patch_off); MIX(h, w->patch_cap);
  }
  for (uint32_t i = 0; i < p->n_groups; i++) {
    const rf_group *g = &p->groups[i];
    MIX(h, g->op_first); MIX(h, g->op_count); MIX(h, g->write_first); MIX(h, g->write_count);
    MIX(h, g->layer);
  }
  for (uint32_t i = 0; i < p->trainers; i++) {
    const rf_rank *r = &p->ranks[i];
    MIX(h, r->arena_bytes); MIX(h, r->bytes_out); MIX(h, r->shard); MIX(h, r->replicate);
    MIX(h, r->group_first); MIX(h, r->group_count); MIX(h, r->op_first); MIX(h, r->op_count);
    MIX(h, r->write_first); MIX(h, r->write_count); MIX(h, r->patch_bytes); MIX(h, r->scratch_bytes);
  }
  for (uint32_t i = 0; i < p->receivers; i++) {
    const rf_receiver *r = &p->recv[i];
    MIX(h, r->bytes); MIX(h, r->replica); MIX(h, r->tp_rank); MIX(h, r->dst_first);
    MIX(h, r->dst_count); MIX(h, r->peer_first); MIX(h, r->peer_count); MIX(h, r->patch_bytes);
  }
  for (uint32_t i = 0; i < p->n_peers; i++) {
    const rf_peer *q = &p->peers[i];
    MIX(h, q->bytes); MIX(h, q->trainer); MIX(h, q->writes); MIX(h, q->patch_off); MIX(h, q->patch_bytes);
  }
  for (uint32_t i = 0; i < p->n_derived; i++) {
    const rf_derived_tensor *t = &p->derived[i];
    h = mix_str(h, t->name);
    MIX(h, t->shape[0]); MIX(h, t->shape[1]); MIX(h, t->shape[2]);
    MIX(h, t->stride[0]); MIX(h, t->stride[1]); MIX(h, t->stride[2]); MIX(h, t->offset);
    MIX(h, t->bytes); MIX(h, t->storage); MIX(h, t->dst); MIX(h, t->tp_rank); MIX(h, t->ndim); MIX(h, t->dtype);
  }
  for (uint32_t i = 0; i < p->n_refresh; i++) {
    const rf_refresh *r = &p->refresh[i];
    MIX(h, r->kind); MIX(h, r->weight); MIX(h, r->scale); MIX(h, r->out0); MIX(h, r->out1);
    MIX(h, r->heads); MIX(h, r->qk_nope); MIX(h, r->v_head); MIX(h, r->kv_lora);
    MIX(h, r->tp_rank); MIX(h, r->layer);
  }
  for (uint32_t i = 0; i < p->n_pieces; i++) {
    const rf_piece *q = &p->pieces[i];
    MIX(h, q->src_off); MIX(h, q->off); MIX(h, q->len); MIX(h, q->src);
  }
  return h;
}

void rf_plan_predict(const rf_plan *p, const rf_time_model *m, rf_prediction *out)
{
  double rate = m->nic_gbps * m->nics_per_gpu * 1e9 / 8; /* bytes/s per GPU */
  *out = (rf_prediction){0};
  for (uint32_t t = 0; t < p->trainers; t++) {
    double s = p->ranks[t].bytes_out / rate + p->ranks[t].write_count * m->write_overhead_us * 1e-6;
    if (s > out->trainer_s) {
      out->trainer_s = s;
      out->worst_trainer = t;
    }
  }
  for (uint32_t r = 0; r < p->receivers; r++) {
    double s = p->recv[r].bytes / rate;
    if (s > out->receiver_s) {
      out->receiver_s = s;
      out->worst_receiver = r;
    }
  }
  out->lower_bound_s = out->receiver_s;
  out->bound_by_receiver = out->receiver_s >= out->trainer_s;
  out->seconds = (out->bound_by_receiver ? out->receiver_s : out->trainer_s) + m->done_rtt_us * 1e-6;
}

/* expected patch bytes of an n-byte region of element size e at density d (gen/delta.lua's
 * estimate, operation for operation) */
static double estimate(uint64_t n, uint64_t e, double d)
{
  const uint64_t chunk = 16384, tile = 256;
  double size = 32;
  uint64_t full = n / chunk, last = n % chunk;
  for (int pass = 1; pass <= 2; pass++) {
    uint64_t bytes = pass == 1 ? chunk : last, count = pass == 1 ? full : last > 0;
    if (!count) continue;
    uint64_t c = bytes / e;
    double k = d * (double)c, q = 1.0 - pow(1.0 - d, (double)c);
    double list = k * (double)(2 + e), tiles = q * (double)((c + tile - 1) / tile) + k * (double)(1 + e);
    double bitmap = q * (double)((c + 7) / 8) + k * (double)e, dense = q * (double)c * (double)e;
    double rec = list;
    if (tiles < rec) rec = tiles;
    if (bitmap < rec) rec = bitmap;
    if (dense < rec) rec = dense;
    size = size + (double)count * (q * 12 + rec);
  }
  return size;
}

void rf_plan_predict_delta(const rf_plan *p, const rf_time_model *m, const rf_density *dn, rf_delta_prediction *out)
{
  double rate = m->nic_gbps * m->nics_per_gpu * 1e9 / 8, mem = m->mem_gbs * 1e9;
  *out = (rf_delta_prediction){0};
  double *r_in = calloc(p->receivers ? p->receivers : 1, sizeof *r_in);
  double *r_apply = calloc(p->receivers ? p->receivers : 1, sizeof *r_apply);
  uint32_t *seen = calloc(p->receivers ? p->receivers : 1, sizeof *seen);
  if (!r_in || !r_apply || !seen) goto out;
  for (uint32_t t = 0; t < p->trainers; t++) {
    const rf_rank *rk = &p->ranks[t];
    double sent = 0, b = 0, apply = 0;
    uint32_t targets = 0;
    const rf_write *prev = NULL;
    for (uint32_t i = rk->write_first; i < rk->write_first + rk->write_count; i++) {
      const rf_write *w = &p->writes[i];
      if (!prev || prev->slot != w->slot || prev->len != w->len) { /* a new region */
        uint8_t dt = p->dst[w->dst].dtype;
        double est = estimate(w->len, rf_dtype_size(dt), dt == RF_FP8 ? dn->fp8 : dt == RF_BF16 ? dn->bf16 : dn->fp32);
        double cap = (double)(w->patch_cap ? w->patch_cap : w->len);
        if (est <= cap) b = est, apply = 2 * est + (double)w->len; /* a patch */
        else b = (double)w->len, apply = (double)w->len;           /* or the region dense */
      }
      prev = w;
      sent = sent + b;
      r_in[w->receiver] = r_in[w->receiver] + b + 16; /* and its directory entry */
      r_apply[w->receiver] = r_apply[w->receiver] + apply;
      out->bytes = out->bytes + b + 16;
      if (seen[w->receiver] != t + 1) seen[w->receiver] = t + 1, targets++;
    }
    double moved = 0, enc = 0; /* staging: sources read, the encoding written; encode: it and the old read */
    for (uint32_t o = rk->op_first; o < rk->op_first + rk->op_count; o++) {
      const rf_op *op = &p->ops[o];
      uint64_t cells = (uint64_t)(op->rows * op->cols), outb = cells * rf_dtype_size(op->dst_dtype);
      if (op->kind == RF_OP_FP8) outb = cells + rf_fp8_scale_bytes(op->rows, op->cols);
      moved = moved + (double)(op->count * (cells * rf_dtype_size(op->src_dtype) + outb));
      enc = enc + (double)(op->count * 2 * outb);
    }
    double stage = moved / mem + enc / (m->encode_gbs * 1e9);
    double s = stage + (sent + 16.0 * rk->write_count) / rate + (double)(rk->write_count + targets) * m->write_overhead_us * 1e-6;
    if (s > out->trainer_s) out->trainer_s = s, out->worst_trainer = t, out->stage_s = stage;
  }
  for (uint32_t r = 0; r < p->receivers; r++) {
    double s = r_in[r] / rate + r_apply[r] / mem;
    if (s > out->receiver_s) out->receiver_s = s, out->worst_receiver = r;
  }
  out->bound_by_receiver = out->receiver_s >= out->trainer_s;
  out->seconds = (out->bound_by_receiver ? out->receiver_s : out->trainer_s) + m->done_rtt_us * 1e-6;
out:
  free(r_in);
  free(r_apply);
  free(seen);
}
