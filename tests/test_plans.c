/* test_plans.c: regression tests, on generated tables, for failure classes that weight-transfer
 * systems are known for: offsets from the global rank instead of the FSDP shard index, fp32
 * destinations filled with bf16, fused tensors laid out as a slice of the global concatenation,
 * and the partial 128-row FP8 block of GLM's fused_qkv_a_proj; and for the trainer side: sources in
 * the trainer's dtype, fused 3-D experts chunked by FSDP2 into whole experts, per-expert modules
 * split row-wise, trainers without MTP layers, DeepSeek-V3's MTP embedding and head. */
#include <stdio.h>
#include <string.h>

#include "dsv3_tiny_mtp.h"
#include "glm5_fp8_64x4_rep2.h"
#include "glm_tiny_demo.h"
#include "glm_tiny_rep2.h"
#include "qwen3_moe_tiny_bf16.h"
#include "qwen3_moe_tiny_ep2.h"
#include "qwen3_moe_tiny_per_expert.h"
#include "qwen3_tiny_fp8_tp4.h"

static int passed, failed;

#include "expect.h"

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static uint32_t find_dst(const rf_plan *p, const char *name, uint32_t tp_rank)
{
  for (uint32_t i = 0; i < p->n_dst; i++)
    if (p->dst[i].tp_rank == tp_rank && strcmp(p->dst[i].name, name) == 0)
      return i;
  return RF_NONE;
}

static uint32_t find_src(const rf_plan *p, const char *name)
{
  for (uint32_t i = 0; i < p->n_src; i++)
    if (strcmp(p->src[i].name, name) == 0)
      return i;
  return RF_NONE;
}

/* What staged byte `at` of destination d on receiver rcv: the op, item, and whether it is the
 * op's scale output; *row is the op-relative row (weights) or scale row. Returns 0 if none. */
typedef struct { const rf_op *op; uint32_t item, src, trainer; int scale; int64_t row; } producer;

static int produced_by(const rf_plan *p, uint32_t rcv, uint32_t d, uint64_t at, producer *out)
{
  for (uint32_t w = 0; w < p->n_writes; w++) {
    const rf_write *wr = &p->writes[w];
    if (wr->receiver != rcv || wr->dst != d || at < wr->dst_off || at >= wr->dst_off + wr->len)
      continue;
    uint32_t t = 0;
    while (t + 1 < p->trainers && p->ranks[t + 1].write_first <= w) t++;
    uint64_t slot = wr->slot + (at - wr->dst_off);
    const rf_rank *rk = &p->ranks[t];
    for (uint32_t i = rk->op_first; i < rk->op_first + rk->op_count; i++) {
      const rf_op *op = &p->ops[i];
      for (uint32_t j = 0; j < op->count; j++) {
        uint64_t o = op->out + j * op->out_step, n = (uint64_t)(op->rows * op->cols) * rf_dtype_size(op->dst_dtype);
        uint64_t s = op->scale + j * op->scale_step, sn = (uint64_t)(cdiv(op->rows, 128) * cdiv(op->cols, 128)) * 4;
        if (slot >= o && slot < o + n) {
          *out = (producer){op, j, op->src + j * op->src_step, t, 0, (int64_t)((slot - o) / (op->cols * rf_dtype_size(op->dst_dtype)))};
          return 1;
        }
        if (rf_op_fp8(op) && slot >= s && slot < s + sn) {
          *out = (producer){op, j, op->src + j * op->src_step, t, 1, (int64_t)((slot - s) / (cdiv(op->cols, 128) * 4))};
          return 1;
        }
      }
    }
  }
  return 0;
}

/* HSDP: rank = replicate*fsdp + shard; every rank of a replicate group stages exactly what the
 * rank with the same shard index in group 0 stages; shard rows come from the FSDP shard count. */
static void rep2_uses_shard_index(const rf_plan *p)
{
  EXPECT(p->dp_replicate == 2 && p->trainers == 2 * p->fsdp, "plan %s is not dp_replicate 2", p->name);
  for (uint32_t t = p->fsdp; t < p->trainers; t++) {
    const rf_rank *a = &p->ranks[t], *b = &p->ranks[t - p->fsdp];
    EXPECT(a->shard == t - p->fsdp && a->replicate == 1, "rank %u: shard %u replicate %u", t, a->shard, a->replicate);
    EXPECT(a->arena_bytes == b->arena_bytes, "rank %u arena %llu != rank %u arena %llu", t,
           (unsigned long long)a->arena_bytes, t - p->fsdp, (unsigned long long)b->arena_bytes);
    EXPECT(a->op_count == b->op_count, "rank %u: %u ops, rank %u: %u", t, a->op_count, t - p->fsdp, b->op_count);
    for (uint32_t i = 0; i < a->op_count && i < b->op_count; i++)
      EXPECT(memcmp(&p->ops[a->op_first + i], &p->ops[b->op_first + i], sizeof(rf_op)) == 0,
             "rank %u op %u differs from its group-0 twin", t, i);
    for (uint32_t w = a->write_first; w < a->write_first + a->write_count; w++)
      EXPECT(p->recv[p->writes[w].receiver].replica % 2 == 1, "rank %u writes to replica %u of the other group", t,
             p->recv[p->writes[w].receiver].replica);
  }
  for (uint32_t i = 0; i < p->n_src; i++) {
    const rf_src_tensor *s = &p->src[i];
    EXPECT(s->shard_rows == cdiv(s->shape[0], p->fsdp) * (s->rows / s->shape[0]),
           "'%s': shard_rows %lld, dim 0 of %lld over fsdp %u", s->name, (long long)s->shard_rows, (long long)s->shape[0],
           p->fsdp);
  }
  /* shard-travelling sources: rank (g, s) reads rows of shard s, never of shard g*fsdp+s */
  uint32_t shard_ops = 0;
  for (uint32_t t = 0; t < p->trainers; t++)
    for (uint32_t i = p->ranks[t].op_first; i < p->ranks[t].op_first + p->ranks[t].op_count; i++) {
      const rf_op *op = &p->ops[i];
      const rf_src_tensor *s = &p->src[op->src];
      if (s->travel != RF_TRAVEL_SHARD) continue;
      shard_ops++;
      int64_t lo = (int64_t)(t % p->fsdp) * s->shard_rows;
      EXPECT(op->row0 >= lo && op->row0 + op->rows <= lo + s->shard_rows, "rank %u reads '%s' rows [%lld, +%lld)", t,
             s->name, (long long)op->row0, (long long)op->rows);
    }
  EXPECT(shard_ops > 0, "no shard-travelling ops to check in %s", p->name);
}

/* fp32 destinations (router correction bias, indexer LayerNorm) are staged as fp32. */
static void fp32_destinations(const rf_plan *p)
{
  uint32_t seen = 0;
  for (uint32_t d = 0; d < p->n_dst; d++) {
    const char *n = p->dst[d].name;
    size_t len = strlen(n);
    int want = (len > 22 && strcmp(n + len - 22, "e_score_correction_bias") == 0) || strstr(n, "indexer.k_norm.") != NULL;
    if (!want) continue;
    seen++;
    EXPECT(p->dst[d].dtype == RF_FP32, "'%s' is dtype %u, not fp32", n, p->dst[d].dtype);
    producer pr;
    for (uint32_t r = 0; r < p->receivers; r++) {
      if (p->recv[r].tp_rank != p->dst[d].tp_rank) continue;
      EXPECT(produced_by(p, r, d, 0, &pr) && pr.op->dst_dtype == RF_FP32 && pr.op->kind == RF_OP_CAST,
             "'%s' on receiver %u not staged as fp32", n, r);
      break;
    }
  }
  EXPECT(seen > 0, "no fp32 destinations found in %s", p->name);
}

/* A merged column-parallel tensor on TP rank r is [gate_r; up_r] (or [q_r; k_r; v_r]), not rows
 * [r*n, (r+1)*n) of the global concatenation. */
static void fused_per_rank(const rf_plan *p, const char *dst, const char *const *parts, int nparts)
{
  for (uint32_t r = 0; r < p->tp; r++) {
    uint32_t d = find_dst(p, dst, r);
    EXPECT(d != RF_NONE, "no '%s' on tp rank %u", dst, r);
    if (d == RF_NONE) return;
    int64_t cols = p->dst[d].shape[1], at_row = 0;
    for (int k = 0; k < nparts; k++) {
      uint32_t s = find_src(p, parts[k]);
      int64_t part_rows = 0;
      /* walk the rows this part fills on rank r: they must be a contiguous slice of the part */
      producer pr;
      int ok = produced_by(p, r, d, (uint64_t)(at_row * cols) * rf_dtype_size(p->dst[d].dtype), &pr) && pr.src == s && !pr.scale;
      EXPECT(ok, "'%s' rank %u row %lld: not from '%s'", dst, r, (long long)at_row, parts[k]);
      if (!ok) return;
      int64_t first = pr.op->row0 + pr.item * pr.op->row_step + pr.row;
      int64_t total = p->src[s].rows;
      /* the slice of rank r: heads or rows split evenly, or a replicated KV head */
      int64_t per = 0;
      while (at_row + per < p->dst[d].shape[0] &&
             produced_by(p, r, d, (uint64_t)((at_row + per) * cols) * rf_dtype_size(p->dst[d].dtype), &pr) && pr.src == s)
        per++;
      part_rows = per;
      EXPECT(first % part_rows == 0 && (first / part_rows == r || total / part_rows < p->tp),
             "'%s' rank %u: part '%s' starts at source row %lld (slice of %lld rows)", dst, r, parts[k], (long long)first,
             (long long)part_rows);
      if (total / part_rows >= p->tp) EXPECT(first == r * part_rows, "'%s' rank %u: '%s' rows from %lld, want %lld", dst, r,
                                             parts[k], (long long)first, (long long)(r * part_rows));
      at_row += part_rows;
    }
    EXPECT(at_row == p->dst[d].shape[0], "'%s' rank %u: parts fill %lld of %lld rows", dst, r, (long long)at_row,
           (long long)p->dst[d].shape[0]);
  }
}

/* GLM's fused_qkv_a_proj = [q_a (q_lora rows); kv_a (kv_lora + rope rows)]: the kv_a half starts on
 * a block boundary and its last scale row covers a partial block of (rows % 128) real rows. */
static void fused_qkv_a_partial_block(const rf_plan *p, int64_t q_rows, int64_t kv_rows, int64_t hidden)
{
  uint32_t d = find_dst(p, "model.layers.0.self_attn.fused_qkv_a_proj.weight", 0);
  uint32_t sd = find_dst(p, "model.layers.0.self_attn.fused_qkv_a_proj.weight_scale_inv", 0);
  uint32_t kv = find_src(p, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight");
  EXPECT(d != RF_NONE && sd != RF_NONE && kv != RF_NONE, "fused_qkv_a_proj or its scale missing");
  if (d == RF_NONE || sd == RF_NONE || kv == RF_NONE) return;
  EXPECT(p->dst[d].shape[0] == q_rows + kv_rows && p->dst[d].shape[1] == hidden && p->dst[d].dtype == RF_FP8,
         "fused shape [%lld, %lld]", (long long)p->dst[d].shape[0], (long long)p->dst[d].shape[1]);
  int64_t srows = cdiv(q_rows + kv_rows, 128), scols = cdiv(hidden, 128);
  EXPECT(p->dst[sd].shape[0] == srows && p->dst[sd].shape[1] == scols, "scale [%lld, %lld], want [%lld, %lld]",
         (long long)p->dst[sd].shape[0], (long long)p->dst[sd].shape[1], (long long)srows, (long long)scols);
  producer pr;
  /* first kv_a row */
  int ok = produced_by(p, 0, d, (uint64_t)(q_rows * hidden), &pr);
  EXPECT(ok && pr.src == kv && !pr.scale && pr.op->row0 + pr.row == 0, "row %lld not kv_a row 0", (long long)q_rows);
  /* last scale row: from the kv_a op, whose block count is ceil(kv_rows/128) with a partial tail */
  ok = produced_by(p, 0, sd, (uint64_t)((srows - 1) * scols) * 4, &pr);
  EXPECT(ok && pr.src == kv && pr.scale, "last scale row not from kv_a's quantization");
  if (ok) {
    EXPECT(pr.op->kind == RF_OP_FP8 && pr.op->row0 + pr.op->rows == kv_rows, "kv_a op covers rows [%lld, +%lld)",
           (long long)pr.op->row0, (long long)pr.op->rows);
    EXPECT(pr.row == cdiv(pr.op->rows, 128) - 1, "last scale row is row %lld of the op", (long long)pr.row);
    EXPECT(kv_rows % 128 != 0, "kv_a rows %lld fill whole blocks: the test would not test the partial block", (long long)kv_rows);
  }
  /* the q_a/kv_a boundary scale row comes from kv_a, not q_a */
  ok = produced_by(p, 0, sd, (uint64_t)((q_rows / 128) * scols) * 4, &pr);
  EXPECT(ok && pr.src == kv && pr.scale && pr.row == 0, "scale row %lld not kv_a's first", (long long)(q_rows / 128));
}

/* How many op items of trainer rank t (every rank when t is RF_NONE) read source `src`. */
static uint32_t reads(const rf_plan *p, uint32_t t, uint32_t src)
{
  uint32_t n = 0;
  for (uint32_t r = 0; r < p->trainers; r++) {
    if (t != RF_NONE && r != t) continue;
    for (uint32_t i = p->ranks[r].op_first; i < p->ranks[r].op_first + p->ranks[r].op_count; i++)
      for (uint32_t j = 0; j < p->ops[i].count; j++) n += p->ops[i].src + j * p->ops[i].src_step == src;
  }
  return n;
}

/* Every source in the trainer's dtype: `want`, except names ending in `suffix`, which are `other`. */
static void src_dtypes(const rf_plan *p, uint8_t want, const char *suffix, uint8_t other)
{
  uint32_t others = 0;
  for (uint32_t i = 0; i < p->n_src; i++) {
    const char *n = p->src[i].name;
    size_t len = strlen(n), sl = suffix ? strlen(suffix) : 0;
    int is_other = suffix && len >= sl && strcmp(n + len - sl, suffix) == 0;
    others += is_other;
    EXPECT(p->src[i].dtype == (is_other ? other : want), "'%s' is dtype %u, want %u", n, p->src[i].dtype,
           is_other ? other : want);
  }
  EXPECT(!suffix || others > 0, "no source ends in '%s'", suffix);
}

/* A trainer without MTP layers: no source of MTP layer `layer` (nothing to bind), and no destination
 * of it written (the engine's drafter keeps them). */
static void no_mtp_tensors(const rf_plan *p, unsigned layer)
{
  char prefix[40];
  snprintf(prefix, sizeof prefix, "model.layers.%u.", layer);
  for (uint32_t i = 0; i < p->n_src; i++)
    EXPECT(p->src[i].layer != layer && strncmp(p->src[i].name, prefix, strlen(prefix)) != 0, "source '%s' of MTP layer %u",
           p->src[i].name, layer);
  for (uint32_t i = 0; i < p->n_dst; i++)
    EXPECT(strncmp(p->dst[i].name, prefix, strlen(prefix)) != 0, "destination '%s' of MTP layer %u", p->dst[i].name, layer);
  /* the layer before is there: the check looks at the right names */
  snprintf(prefix, sizeof prefix, "model.layers.%u.input_layernorm.weight", layer - 1);
  EXPECT(find_src(p, prefix) != RF_NONE, "no '%s'", prefix);
}

/* A trainer with MTP layers: each named source of the MTP layer exists with its shape, and is read
 * by some op when `read`; where `dst` is 1 (replicated) or 2 (column-split by TP) the destination
 * `dst_name` (the engine's drafter names it) is on every TP rank with that shape. */
typedef struct { const char *name; int64_t rows, cols; int read, dst; const char *dst_name; } mtp_tensor;

static void mtp_tensors(const rf_plan *p, const mtp_tensor *m, int n)
{
  for (int k = 0; k < n; k++) {
    uint32_t s = find_src(p, m[k].name);
    EXPECT(s != RF_NONE, "no source '%s'", m[k].name);
    if (s == RF_NONE) continue;
    EXPECT(p->src[s].ndim == (m[k].cols ? 2 : 1) && p->src[s].shape[0] == m[k].rows && p->src[s].shape[1] == m[k].cols,
           "'%s': ndim %u [%lld, %lld], want [%lld, %lld]", m[k].name, p->src[s].ndim, (long long)p->src[s].shape[0],
           (long long)p->src[s].shape[1], (long long)m[k].rows, (long long)m[k].cols);
    EXPECT((reads(p, RF_NONE, s) > 0) == m[k].read, "'%s' is read by %s op", m[k].name, m[k].read ? "no" : "an");
    for (uint32_t r = 0; m[k].dst && r < p->tp; r++) {
      uint32_t d = find_dst(p, m[k].dst_name, r);
      int64_t rows = m[k].dst == 2 ? m[k].rows / p->tp : m[k].rows;
      EXPECT(d != RF_NONE && p->dst[d].shape[0] == rows && p->dst[d].shape[1] == m[k].cols,
             "'%s' on tp rank %u: want [%lld, %lld]", m[k].dst_name, r, (long long)rows, (long long)m[k].cols);
    }
  }
}

/* Fused experts (transformers >= 5): gate_up_proj [E, 2I, H] (gate rows first) and down_proj
 * [E, H, I], FSDP2 dim-0 chunks of ceil(E/fsdp) whole experts. On every receiver (EP rank q, ep =
 * receivers per replica), local expert j = global expert e: w13 row i comes from gate_up_proj row
 * e*2I + i and w2 row h from down_proj row e*H + h, staged by the trainer rank whose chunk holds e. */
static void fused_experts(const rf_plan *p, unsigned layer, int64_t E, int64_t I, int64_t H)
{
  char gu[80], dn[80], w13[80], w2[80];
  snprintf(gu, sizeof gu, "model.layers.%u.mlp.experts.gate_up_proj", layer);
  snprintf(dn, sizeof dn, "model.layers.%u.mlp.experts.down_proj", layer);
  snprintf(w13, sizeof w13, "model.layers.%u.mlp.experts.routed_experts.w13_weight", layer);
  snprintf(w2, sizeof w2, "model.layers.%u.mlp.experts.routed_experts.w2_weight", layer);
  uint32_t sg = find_src(p, gu), sd = find_src(p, dn);
  EXPECT(sg != RF_NONE && sd != RF_NONE, "no '%s' or '%s'", gu, dn);
  if (sg == RF_NONE || sd == RF_NONE) return;
  const rf_src_tensor *g = &p->src[sg], *d = &p->src[sd];
  int64_t per = cdiv(E, p->fsdp);
  EXPECT(g->ndim == 3 && g->shape[0] == E && g->shape[1] == 2 * I && g->shape[2] == H && g->rows == E * 2 * I &&
             g->cols == H && g->shard_rows == per * 2 * I && g->travel == RF_TRAVEL_SHARD,
         "'%s': ndim %u [%lld, %lld, %lld], view [%lld, %lld], shard_rows %lld, travel %u", gu, g->ndim,
         (long long)g->shape[0], (long long)g->shape[1], (long long)g->shape[2], (long long)g->rows, (long long)g->cols,
         (long long)g->shard_rows, g->travel);
  EXPECT(d->ndim == 3 && d->shape[0] == E && d->shape[1] == H && d->shape[2] == I && d->shard_rows == per * H,
         "'%s': ndim %u [%lld, %lld, %lld], shard_rows %lld", dn, d->ndim, (long long)d->shape[0], (long long)d->shape[1],
         (long long)d->shape[2], (long long)d->shard_rows);
  uint32_t ep = p->receivers / p->replicas;
  for (uint32_t q = 0; q < ep; q++) {
    uint32_t a = find_dst(p, w13, q), b = find_dst(p, w2, q);
    EXPECT(a != RF_NONE && b != RF_NONE, "no expert tensors on receiver %u", q);
    if (a == RF_NONE || b == RF_NONE) return;
    int64_t local = p->dst[a].shape[0], first = q * (E / ep) + (q < E % ep ? q : E % ep);
    uint64_t es = rf_dtype_size(p->dst[a].dtype);
    for (int64_t j = 0; j < local; j++) {
      int64_t e = first + j;
      const int64_t rows13[] = {0, I - 1, I, 2 * I - 1}, rows2[] = {0, H - 1};
      producer pr;
      for (int k = 0; k < 4; k++) {
        int64_t i = rows13[k];
        int ok = produced_by(p, q, a, (uint64_t)((j * 2 * I + i) * H) * es, &pr) && pr.src == sg && !pr.scale;
        EXPECT(ok && pr.op->row0 + pr.item * pr.op->row_step + pr.row == e * 2 * I + i && pr.trainer % p->fsdp == e / per,
               "receiver %u expert %lld w13 row %lld: source row %lld of '%s' from trainer %u", q, (long long)e,
               (long long)i, ok ? (long long)(pr.op->row0 + pr.item * pr.op->row_step + pr.row) : -1LL,
               ok ? p->src[pr.src].name : "?", ok ? pr.trainer : 0);
      }
      for (int k = 0; k < 2; k++) {
        int64_t h = rows2[k];
        int ok = produced_by(p, q, b, (uint64_t)((j * H + h) * I) * es, &pr) && pr.src == sd && !pr.scale;
        EXPECT(ok && pr.op->row0 + pr.item * pr.op->row_step + pr.row == e * H + h, "receiver %u expert %lld w2 row %lld",
               q, (long long)e, (long long)h);
      }
    }
  }
}

/* Per-expert modules (transformers 4.x), each sharded row-wise by FSDP2 across all ranks: a part
 * whose shard cut splits an FP8 block is gathered on one shard, one whose cut falls on a block goes
 * shard by shard, every shard sending its own rows. */
static void per_expert(const rf_plan *p, const char *gathered, const char *sharded)
{
  uint32_t g = find_src(p, gathered), s = find_src(p, sharded);
  EXPECT(g != RF_NONE && s != RF_NONE, "no '%s' or '%s'", gathered, sharded);
  if (g == RF_NONE || s == RF_NONE) return;
  EXPECT(p->src[g].ndim == 2 && p->src[g].travel == RF_TRAVEL_GATHER && p->src[g].shard_rows % 128 != 0,
         "'%s': ndim %u travel %u shard_rows %lld", gathered, p->src[g].ndim, p->src[g].travel,
         (long long)p->src[g].shard_rows);
  EXPECT(p->src[s].ndim == 2 && p->src[s].travel == RF_TRAVEL_SHARD && p->src[s].shard_rows % 128 == 0,
         "'%s': ndim %u travel %u shard_rows %lld", sharded, p->src[s].ndim, p->src[s].travel,
         (long long)p->src[s].shard_rows);
  for (uint32_t t = 0; t < p->trainers; t++) {
    EXPECT(reads(p, t, s) > 0, "trainer %u sends none of '%s'", t, sharded);
    EXPECT((reads(p, t, g) > 0) == (t % p->fsdp == p->src[g].shard), "trainer %u and gathered '%s' (shard %u)", t,
           gathered, p->src[g].shard);
  }
}

/* bf16 sources into bf16 experts with ep > 1: every op on fused experts copies whole source rows
 * unconverted (the runtime's direct writes can skip it), and each rank's ops on a fused tensor read
 * exactly its FSDP2 chunk, so its experts leave as contiguous source rows. */
static void fused_experts_direct(const rf_plan *p, const char *name)
{
  uint32_t s = find_src(p, name);
  EXPECT(s != RF_NONE, "no '%s'", name);
  if (s == RF_NONE) return;
  const rf_src_tensor *src = &p->src[s];
  for (uint32_t t = 0; t < p->trainers; t++) {
    int64_t lo = (int64_t)(t % p->fsdp) * src->shard_rows, hi = lo + src->shard_rows, at = lo;
    for (uint32_t i = p->ranks[t].op_first; i < p->ranks[t].op_first + p->ranks[t].op_count; i++) {
      const rf_op *o = &p->ops[i];
      if (o->src != s) continue;
      EXPECT(o->kind == RF_OP_CAST && o->src_dtype == RF_BF16 && o->dst_dtype == RF_BF16 && o->col0 == 0 &&
                 o->col_step == 0 && o->cols == src->cols && o->src_step == 0,
             "trainer %u op %u on '%s' is not a whole-row bf16 copy", t, i, name);
      EXPECT(o->row0 == at && (o->count == 1 || o->row_step == o->rows), "trainer %u op %u: rows [%lld, ...) not from %lld",
             t, i, (long long)o->row0, (long long)at);
      at = o->row0 + (int64_t)o->count * o->rows;
    }
    if (hi > src->rows) hi = src->rows;
    EXPECT(at == hi, "trainer %u stages '%s' rows [%lld, %lld), its chunk is [%lld, %lld)", t, name, (long long)lo,
           (long long)at, (long long)lo, (long long)hi);
  }
}

/* The time model on a plan small enough to compute by hand: 2 trainers, 2 receivers.
 * trainer 0 sends 3e9 bytes in 3 writes, trainer 1 sends 1e9 bytes in 1000 writes;
 * receiver 0 takes 2.5e9 bytes, receiver 1 takes 1.5e9. At 400 Gb/s (5e10 B/s), 1 us a write:
 * trainer 0: 0.06 + 3e-6 s, trainer 1: 0.02 + 1e-3 s; receiver 0: 0.05 s, receiver 1: 0.03 s.
 * Trainer 0 bounds it: 0.060003 s + 10 us = 0.060013 s; lower bound 0.05 s. With two NICs per GPU
 * the trainer term halves to 0.030003 s, still above receiver 0's 0.025 s; with 100 us a write
 * trainer 1 takes 0.02 + 0.1 = 0.12 s and bounds it. */
static void time_model_by_hand(void)
{
  static const rf_rank ranks[2] = {{.bytes_out = 3000000000u, .write_count = 3}, {.bytes_out = 1000000000u, .write_count = 1000}};
  static const rf_receiver recv[2] = {{.bytes = 2500000000u}, {.bytes = 1500000000u}};
  const rf_plan p = {.trainers = 2, .receivers = 2, .ranks = ranks, .recv = recv};
  rf_time_model m = RF_TIME_MODEL_DEFAULT;
  rf_prediction r;
#define NEAR(a, b) ((a) - (b) < 1e-12 && (b) - (a) < 1e-12)
  rf_plan_predict(&p, &m, &r);
  EXPECT(NEAR(r.trainer_s, 0.060003) && r.worst_trainer == 0, "trainer_s %.9f (rank %u)", r.trainer_s, r.worst_trainer);
  EXPECT(NEAR(r.receiver_s, 0.05) && r.worst_receiver == 0, "receiver_s %.9f", r.receiver_s);
  EXPECT(NEAR(r.lower_bound_s, 0.05), "lower bound %.9f", r.lower_bound_s);
  EXPECT(NEAR(r.seconds, 0.060013) && !r.bound_by_receiver, "predicted %.9f, bound by receiver %d", r.seconds, r.bound_by_receiver);
  m.nics_per_gpu = 2;
  rf_plan_predict(&p, &m, &r);
  EXPECT(NEAR(r.trainer_s, 0.030003) && NEAR(r.receiver_s, 0.025) && NEAR(r.seconds, 0.030013), "2 NICs: %.9f %.9f %.9f",
         r.trainer_s, r.receiver_s, r.seconds);
  m = RF_TIME_MODEL_DEFAULT;
  m.write_overhead_us = 100;
  rf_plan_predict(&p, &m, &r);
  EXPECT(NEAR(r.trainer_s, 0.12) && r.worst_trainer == 1 && NEAR(r.seconds, 0.12001), "100 us a write: %.9f rank %u",
         r.trainer_s, r.worst_trainer);
  m = RF_TIME_MODEL_DEFAULT;
  m.nic_gbps = 100; /* 1.25e10 B/s: receiver 0 takes 0.2 s, trainer 0 0.24 + 3e-6 s */
  rf_plan_predict(&p, &m, &r);
  EXPECT(NEAR(r.trainer_s, 0.240003) && NEAR(r.receiver_s, 0.2), "100 Gb/s: %.9f %.9f", r.trainer_s, r.receiver_s);
}

#define RUN(name, call)                                         \
  do {                                                          \
    cur_failed = 0;                                             \
    call;                                                       \
    if (cur_failed) failed++, printf("FAIL %s\n", name);        \
    else passed++, printf("ok   %s\n", name);                   \
  } while (0)

int main(void)
{
  static const char *const tiny_gate_up[] = {"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"};
  static const char *const glm5_shared[] = {"model.layers.3.mlp.shared_experts.gate_proj.weight",
                                            "model.layers.3.mlp.shared_experts.up_proj.weight"};
  static const mtp_tensor glm_mtp[] = {
    {"model.layers.3.eh_proj.weight", 256, 512, 1, 1, "drafter.model.layers.3.eh_proj.weight"},
    {"model.layers.3.self_attn.kv_b_proj.weight", 512, 128, 1, 2, "drafter.model.layers.3.mtp_block.self_attn.kv_b_proj.weight"}};
  /* DeepSeek-V3's MTP embed_tokens / shared_head.head: the engine's drafter shares the target's (aliases) */
  static const mtp_tensor dsv3_mtp[] = {{"model.layers.3.embed_tokens.weight", 1024, 256, 0, 0, NULL},
                                        {"model.layers.3.shared_head.head.weight", 1024, 256, 0, 0, NULL},
                                        {"model.layers.3.eh_proj.weight", 256, 512, 1, 1, "drafter.model.layers.3.eh_proj.weight"},
                                        {"model.layers.3.mlp.experts.3.down_proj.weight", 256, 256, 1, 0, NULL}};
  static const char *const qkv[] = {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                                    "model.layers.1.self_attn.v_proj.weight"};
  RUN("glm_tiny_rep2: HSDP offsets and slot sizes use the FSDP shard index and count", rep2_uses_shard_index(&rf_plan_glm_tiny_rep2));
  RUN("glm5_fp8_64x4_rep2: HSDP offsets and slot sizes use the FSDP shard index and count", rep2_uses_shard_index(&rf_plan_glm5_fp8_64x4_rep2));
  RUN("glm_tiny_demo: fp32 destinations are staged as fp32", fp32_destinations(&rf_plan_glm_tiny_demo));
  RUN("glm5_fp8_64x4_rep2: fp32 destinations are staged as fp32", fp32_destinations(&rf_plan_glm5_fp8_64x4_rep2));
  RUN("glm_tiny_demo: gate_up_proj is [gate_r; up_r] on each TP rank",
      fused_per_rank(&rf_plan_glm_tiny_demo, "model.layers.0.mlp.gate_up_proj.weight", tiny_gate_up, 2));
  RUN("glm5_fp8_64x4_rep2: shared_experts.gate_up_proj is [gate_r; up_r] on each TP rank",
      fused_per_rank(&rf_plan_glm5_fp8_64x4_rep2, "model.layers.3.mlp.shared_experts.gate_up_proj.weight", glm5_shared, 2));
  RUN("qwen3_tiny_fp8_tp4: qkv_proj is [q_r; k_h; v_h], KV heads replicated over TP ranks",
      fused_per_rank(&rf_plan_qwen3_tiny_fp8_tp4, "model.layers.1.self_attn.qkv_proj.weight", qkv, 3));
  RUN("glm_tiny_demo: fused_qkv_a_proj [256+192] keeps its partial FP8 block",
      fused_qkv_a_partial_block(&rf_plan_glm_tiny_demo, 256, 192, 256));
  RUN("glm5_fp8_64x4_rep2: fused_qkv_a_proj [2048+576] keeps its partial FP8 block",
      fused_qkv_a_partial_block(&rf_plan_glm5_fp8_64x4_rep2, 2048, 576, 6144));
  RUN("time model arithmetic on a hand-computed plan", time_model_by_hand());
  RUN("glm_tiny_rep2: fp32 master weights: every source fp32", src_dtypes(&rf_plan_glm_tiny_rep2, RF_FP32, NULL, 0));
  RUN("glm_tiny_demo: bf16 trainer: every source bf16 but the fp32 router bias",
      src_dtypes(&rf_plan_glm_tiny_demo, RF_BF16, "e_score_correction_bias", RF_FP32));
  RUN("qwen3_moe_tiny_bf16: bf16 trainer with the router in fp32 (dtype_except)",
      src_dtypes(&rf_plan_qwen3_moe_tiny_bf16, RF_BF16, "mlp.gate.weight", RF_FP32));
  RUN("glm_tiny_rep2: a trainer without MTP layers binds nothing of layer 3", no_mtp_tensors(&rf_plan_glm_tiny_rep2, 3));
  RUN("glm5_fp8_64x4_rep2: a trainer without MTP layers binds nothing of layer 78",
      no_mtp_tensors(&rf_plan_glm5_fp8_64x4_rep2, 78));
  RUN("glm_tiny_demo: a trainer with the MTP layer sends it",
      mtp_tensors(&rf_plan_glm_tiny_demo, glm_mtp, 2));
  RUN("dsv3_tiny_mtp: DeepSeek-V3's MTP layer has its own embed_tokens and shared_head.head",
      mtp_tensors(&rf_plan_dsv3_tiny_mtp, dsv3_mtp, 4));
  RUN("qwen3_moe_tiny_ep2: fused experts [E, 2I, H] / [E, H, I], whole experts per FSDP2 chunk",
      fused_experts(&rf_plan_qwen3_moe_tiny_ep2, 1, 8, 128, 256));
  RUN("glm_tiny_demo: fused experts, 2 experts per FSDP2 chunk into 4 per EP rank",
      fused_experts(&rf_plan_glm_tiny_demo, 2, 8, 256, 256));
  RUN("qwen3_moe_tiny_per_expert: per-expert modules split row-wise: gathered or shard by shard",
      per_expert(&rf_plan_qwen3_moe_tiny_per_expert, "model.layers.1.mlp.experts.5.gate_proj.weight",
                 "model.layers.1.mlp.experts.5.down_proj.weight"));
  RUN("dsv3_tiny_mtp: per-expert modules of 256 rows go shard by shard",
      per_expert(&rf_plan_dsv3_tiny_mtp, "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                 "model.layers.2.mlp.experts.3.up_proj.weight"));
  RUN("qwen3_moe_tiny_bf16: fused bf16 experts are whole-row copies of each rank's chunk",
      fused_experts_direct(&rf_plan_qwen3_moe_tiny_bf16, "model.layers.0.mlp.experts.gate_up_proj"));
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
