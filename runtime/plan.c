/* plan.c: small facts about the tables (dtype sizes, FSDP shard rows, FP8 scale bytes), the layout
 * hash of a plan, recomputed from its tables, and the time model's predictions (see refit_plan.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "refit_plan.h"

size_t rf_dtype_size(int dt) { return dt == RF_BF16 ? 2 : dt == RF_FP32 || dt == RF_I32 ? 4 : dt == RF_FP8 ? 1 : 0; }

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

int rf_op_fp8(const rf_op *o) { return o->kind == RF_OP_FP8 || o->kind == RF_OP_FP8_REQUANT; }

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

/* the head's values, then every table row by row, each column as gen/schema.lua lists it
 * (refit_tables.h) */
uint64_t rf_plan_hash(const rf_plan *p)
{
  uint64_t h = 0xcbf29ce484222325ull;
#define STR(f) h = mix_str(h, r->f);
#define INT(f) MIX(h, r->f);
#define ARR(f, n) for (int k = 0; k < (n); k++) MIX(h, r->f[k]);
#define TABLE(type, rows, count, columns)        \
  for (uint32_t i = 0; i < p->count; i++) {     \
    const type *r = &p->rows[i];                \
    columns(STR, INT, ARR)                      \
  }
  {
    const rf_plan *r = p;
    RF_HEAD_COLUMNS(STR, INT, ARR)
  }
  RF_TABLES(TABLE)
#undef TABLE
#undef ARR
#undef INT
#undef STR
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
  if (!r_in || !r_apply) goto out;
  for (uint32_t t = 0; t < p->trainers; t++) {
    const rf_rank *rk = &p->ranks[t];
    double sent = 0, b = 0, apply = 0;
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
    }
    double moved = 0, enc = 0; /* staging: sources read, the encoding written; encode: it and the old read */
    for (uint32_t o = rk->op_first; o < rk->op_first + rk->op_count; o++) {
      const rf_op *op = &p->ops[o];
      uint64_t cells = (uint64_t)(op->rows * op->cols), outb = cells * rf_dtype_size(op->dst_dtype);
      if (rf_op_fp8(op)) outb = cells + rf_fp8_scale_bytes(op->rows, op->cols);
      moved = moved + (double)(op->count * (cells * rf_dtype_size(op->src_dtype) + outb));
      enc = enc + (double)(op->count * 2 * outb);
    }
    double stage = moved / mem + enc / (m->encode_gbs * 1e9);
    double s = stage + (sent + 16.0 * rk->write_count) / rate + (double)(rk->write_count + rk->target_count) * m->write_overhead_us * 1e-6;
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
}
