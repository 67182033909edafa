/* engine.c: the transfer engine's logic over the plan tables: binding, staging, posting writes,
 * DONE bookkeeping and receiver versions. Transport calls go through ucx.c, device work through
 * cuda.c. Nothing here allocates after rf_open / rf_bind_* / rf_listen / rf_connect / rf_import. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#include "internal.h"

static const char *const status_text[] = {
#define RF__TEXT(name, text) text,
  RF_STATUS_LIST(RF__TEXT)
#undef RF__TEXT
};

const char *rf_strerror(rf_status s)
{
  if ((unsigned)s >= sizeof status_text / sizeof status_text[0]) return "unknown status";
  return status_text[s];
}

rf_status rf__fail(rf_engine *e, rf_status s, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->err, sizeof e->err, fmt, ap);
  va_end(ap);
  return s;
}

const char *rf_last_error(const rf_engine *e) { return e ? e->err : "no engine"; }

uint64_t rf__now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static rf_status start_stager(rf_engine *e);
static void stop_stager(rf_engine *e);

static size_t dtype_size(int dt) { return dt == RF_FP32 ? 4 : dt == RF_BF16 ? 2 : 1; }

static void copy_str(char *dst, size_t cap, const char *src)
{
  snprintf(dst, cap, "%s", src ? src : "");
}

/* rows of source s this trainer holds: its FSDP chunk (SHARD) or the whole tensor (owner) */
static int64_t src_first_row(const rf_engine *e, const rf_src_tensor *s)
{
  return s->travel == RF_TRAVEL_SHARD ? (int64_t)e->rk->shard * s->shard_rows : 0;
}

size_t rf_src_bytes(const rf_engine *e, uint32_t id)
{
  if (!e || e->cfg.role != RF_TRAINER || id >= e->p->n_src || !e->src_need[id]) return 0;
  const rf_src_tensor *s = &e->p->src[id];
  int64_t rows = s->rows;
  if (s->travel == RF_TRAVEL_SHARD) {
    int64_t a = src_first_row(e, s), b = a + s->shard_rows;
    if (b > s->rows) b = s->rows;
    rows = b > a ? b - a : 0;
  }
  return (size_t)rows * (size_t)s->cols * dtype_size(s->dtype);
}

/* ------------------------------------------------------------------------------------------ */

/* an op whose slot bytes equal its source bytes: same dtype, whole contiguous rows */
static int identity_op(const rf_plan *p, const rf_op *o)
{
  return o->kind == RF_OP_CAST && o->src_dtype == o->dst_dtype && o->col0 == 0 && o->col_step == 0 &&
         o->cols == p->src[o->src].cols;
}

static int by_out(const void *a, const void *b)
{
  const struct rf__item_ref *x = a, *y = b;
  return x->out < y->out ? -1 : x->out > y->out;
}

static rf_status index_identity_items(rf_engine *e)
{
  const rf_plan *p = e->p;
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->rk->op_count; i++)
    if (identity_op(p, &p->ops[e->rk->op_first + i])) n += p->ops[e->rk->op_first + i].count;
  e->by_slot = calloc(n ? n : 1, sizeof *e->by_slot);
  e->wpiece = calloc((size_t)e->rk->write_count + 1, sizeof *e->wpiece);
  e->pieces = calloc((size_t)n + e->rk->write_count + 1, sizeof *e->pieces);
  e->op_skip = calloc(e->rk->op_count ? e->rk->op_count : 1, 1);
  if (!e->by_slot || !e->wpiece || !e->pieces || !e->op_skip)
    return rf__fail(e, RF_ERR_NOMEM, "direct write tables");
  for (uint32_t i = 0; i < e->rk->op_count; i++) {
    const rf_op *o = &p->ops[e->rk->op_first + i];
    if (!identity_op(p, o)) continue;
    for (uint32_t k = 0; k < o->count; k++)
      e->by_slot[e->n_by_slot++] = (struct rf__item_ref){.out = o->out + (uint64_t)k * o->out_step,
                                                         .len = (uint64_t)o->rows * o->cols * dtype_size(o->src_dtype),
                                                         .op = i, .item = k};
  }
  qsort(e->by_slot, e->n_by_slot, sizeof *e->by_slot, by_out);
  e->direct_dirty = 1;
  return RF_OK;
}

/* the last identity item starting at or before slot offset s, or RF_NONE */
static uint32_t item_at(const rf_engine *e, uint64_t s)
{
  uint32_t lo = 0, hi = e->n_by_slot;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (e->by_slot[mid].out <= s) lo = mid + 1;
    else hi = mid;
  }
  return lo ? lo - 1 : RF_NONE;
}

/* 1 when identity items of skipped ops cover every byte of write wr, without gaps */
static int write_covered(const rf_engine *e, const rf_write *wr)
{
  uint64_t at = wr->slot, end = wr->slot + wr->len;
  uint32_t k = item_at(e, at);
  if (k == RF_NONE) return 0;
  for (; at < end; k++) {
    if (k >= e->n_by_slot || e->by_slot[k].out > at || e->by_slot[k].out + e->by_slot[k].len <= at) return 0;
    if (!e->op_skip[e->by_slot[k].op]) return 0;
    at = e->by_slot[k].out + e->by_slot[k].len;
  }
  return 1;
}

/* where slot byte s of identity item k comes from in the bound source */
static const uint8_t *item_src(const rf_engine *e, uint32_t k, uint64_t s, uint32_t *src_id)
{
  const struct rf__item_ref *it = &e->by_slot[k];
  const rf_op *o = &e->p->ops[e->rk->op_first + it->op];
  uint32_t sid = *src_id = o->src + it->item * o->src_step;
  const rf_src_tensor *src = &e->p->src[sid];
  int64_t row = o->row0 + (int64_t)it->item * o->row_step - src_first_row(e, src);
  return (const uint8_t *)e->src_ptr[sid] + (size_t)row * (size_t)src->cols * dtype_size(src->dtype) + (s - it->out);
}

/* decide, for the bound sources, which writes go straight from them (no allocation): an identity
 * op is skipped unless a write touching one of its items must come from the arena; a write comes
 * from the sources when skipped ops' items cover it. Skipping shrinks until nothing changes. */
static void plan_direct(rf_engine *e)
{
  const rf_plan *p = e->p;
  for (uint32_t i = 0; i < e->rk->op_count; i++) e->op_skip[i] = identity_op(p, &p->ops[e->rk->op_first + i]);
  for (int changed = 1; changed;) {
    changed = 0;
    for (uint32_t w = 0; w < e->rk->write_count; w++) {
      const rf_write *wr = &p->writes[e->rk->write_first + w];
      if (write_covered(e, wr)) continue;
      uint32_t k = item_at(e, wr->slot);
      for (uint32_t j = k == RF_NONE ? 0 : k; j < e->n_by_slot && e->by_slot[j].out < wr->slot + wr->len; j++)
        if (e->by_slot[j].out + e->by_slot[j].len > wr->slot && e->op_skip[e->by_slot[j].op]) {
          e->op_skip[e->by_slot[j].op] = 0;
          changed = 1;
        }
    }
  }
  uint32_t np = 0;
  for (uint32_t w = 0; w < e->rk->write_count; w++) {
    const rf_write *wr = &p->writes[e->rk->write_first + w];
    e->wpiece[w] = np;
    if (!write_covered(e, wr)) continue;
    uint64_t at = wr->slot, end = wr->slot + wr->len;
    for (uint32_t k = item_at(e, at); at < end; k++) {
      uint64_t stop = e->by_slot[k].out + e->by_slot[k].len;
      if (stop > end) stop = end;
      uint32_t sid;
      const uint8_t *from = item_src(e, k, at, &sid);
      struct rf__piece *last = np > e->wpiece[w] ? &e->pieces[np - 1] : NULL;
      /* rows that follow on in the same source tensor join the piece before; two tensors never
       * share a put even when their memory happens to be adjacent (separate allocations) */
      if (last && last->src == sid && last->from + last->len == from) last->len += stop - at;
      else e->pieces[np++] = (struct rf__piece){.from = from, .off = at - wr->slot, .len = stop - at, .src = sid};
      at = stop;
    }
  }
  e->wpiece[e->rk->write_count] = np;
  e->direct_dirty = 0;
}

static rf_status open_trainer(rf_engine *e)
{
  const rf_plan *p = e->p;
  if (e->cfg.rank >= p->trainers)
    return rf__fail(e, RF_ERR_ARG, "trainer rank %u out of range (plan %s has %u trainers)", e->cfg.rank,
                    p->name, p->trainers);
  e->rk = &p->ranks[e->cfg.rank];
  e->src_ptr = calloc(p->n_src ? p->n_src : 1, sizeof *e->src_ptr);
  e->src_need = calloc(p->n_src ? p->n_src : 1, 1);
  e->recv_tg = malloc((p->receivers ? p->receivers : 1) * sizeof *e->recv_tg);
  if (!e->src_ptr || !e->src_need || !e->recv_tg) return rf__fail(e, RF_ERR_NOMEM, "trainer tables");
  uint32_t max_count = 1;
  for (uint32_t i = 0; i < e->rk->op_count; i++) {
    const rf_op *o = &p->ops[e->rk->op_first + i];
    for (uint32_t k = 0; k < o->count; k++) {
      const rf_src_tensor *s = &p->src[o->src + k * o->src_step];
      e->src_need[o->src + k * o->src_step] = 1;
      /* one kernel call per op: every item must share the row pitch and dtype of the first */
      if (s->cols != p->src[o->src].cols || s->dtype != o->src_dtype)
        return rf__fail(e, RF_ERR_ARG, "plan %s: op %u mixes sources of different shape or dtype ('%s', '%s')", p->name,
                        e->rk->op_first + i, p->src[o->src].name, s->name);
    }
    if (o->count > max_count) max_count = o->count;
  }
  e->items = calloc(max_count, sizeof *e->items);
  for (uint32_t r = 0; r < p->receivers; r++) e->recv_tg[r] = RF_NONE;
  /* targets: every receiver whose peer list names this rank */
  for (uint32_t r = 0; r < p->receivers; r++)
    for (uint32_t k = 0; k < p->recv[r].peer_count; k++)
      if (p->peers[p->recv[r].peer_first + k].trainer == e->cfg.rank) e->n_tg++;
  e->tg = calloc(e->n_tg ? e->n_tg : 1, sizeof *e->tg);
  if (!e->items || !e->tg) return rf__fail(e, RF_ERR_NOMEM, "trainer tables");
  uint32_t n = 0;
  for (uint32_t r = 0; r < p->receivers; r++)
    for (uint32_t k = 0; k < p->recv[r].peer_count; k++)
      if (p->peers[p->recv[r].peer_first + k].trainer == e->cfg.rank) {
        rf__target *t = &e->tg[n];
        t->recv = r;
        t->peer = p->recv[r].peer_first + k;
        t->last_write = RF_NONE;
        t->raddr = calloc(p->recv[r].dst_count ? p->recv[r].dst_count : 1, sizeof *t->raddr);
        t->rkey = calloc(p->recv[r].dst_count ? p->recv[r].dst_count : 1, sizeof *t->rkey);
        if (!t->raddr || !t->rkey) return rf__fail(e, RF_ERR_NOMEM, "trainer tables");
        e->recv_tg[r] = n++;
      }
  for (uint32_t i = 0; i < e->rk->write_count; i++) {
    uint32_t w = e->rk->write_first + i;
    uint32_t t = e->recv_tg[p->writes[w].receiver];
    if (t == RF_NONE)
      return rf__fail(e, RF_ERR_ARG, "plan %s: write %u of rank %u goes to receiver %u, which does not list it as a peer",
                      p->name, w, e->cfg.rank, p->writes[w].receiver);
    e->tg[t].last_write = w;
  }
  if (e->cfg.direct) RF_CHECK(index_identity_items(e));
  size_t bytes = e->rk->arena_bytes ? e->rk->arena_bytes : 256;
  if (e->cfg.mem == RF_MEM_CUDA) {
    RF_CHECK(rf__cuda_alloc_arena(e, bytes, &e->arena));
  } else {
    e->arena = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!e->arena) return rf__fail(e, RF_ERR_NOMEM, "slot arena of %zu bytes", bytes);
    memset(e->arena, 0, bytes);
  }
  RF_CHECK(rf__ucx_map(e, e->arena, bytes, &e->arena_memh));
  return e->cfg.mem == RF_MEM_HOST ? start_stager(e) : RF_OK;
}

static rf_status open_receiver(rf_engine *e)
{
  const rf_plan *p = e->p;
  if (e->cfg.rank >= p->receivers)
    return rf__fail(e, RF_ERR_ARG, "receiver %u out of range (plan %s has %u receivers)", e->cfg.rank,
                    p->name, p->receivers);
  e->rv = &p->recv[e->cfg.rank];
  e->pos = e->rv->tp_rank;
  uint32_t n = e->rv->dst_count ? e->rv->dst_count : 1;
  e->dst_ptr = calloc(n, sizeof *e->dst_ptr);
  e->dst_memh = calloc(n, sizeof *e->dst_memh);
  e->der_ptr = calloc(p->n_derived ? p->n_derived : 1, sizeof *e->der_ptr);
  e->peer_done = calloc(e->rv->peer_count ? e->rv->peer_count : 1, 1);
  e->n_conns = 2 * p->trainers + 8;
  e->conns = calloc(e->n_conns, sizeof *e->conns);
  e->queue = calloc(RF__QUEUE, sizeof *e->queue);
  if (!e->dst_ptr || !e->dst_memh || !e->der_ptr || !e->peer_done || !e->conns || !e->queue)
    return rf__fail(e, RF_ERR_NOMEM, "receiver tables");
  for (uint32_t i = 0; i < p->n_derived; i++)
    if (p->derived[i].tp_rank == e->pos && p->derived[i].storage == i && p->derived[i].dst == RF_NONE) e->der_need++;
  e->ref_first = p->n_refresh;
  for (uint32_t i = 0; i < p->n_refresh; i++)
    if (p->refresh[i].tp_rank == e->pos) {
      if (e->ref_count == 0) e->ref_first = i;
      e->ref_count++;
    }
  e->absorb = calloc(e->ref_count ? e->ref_count : 1, sizeof *e->absorb);
  if (!e->absorb) return rf__fail(e, RF_ERR_NOMEM, "receiver tables");
  return RF_OK;
}

rf_status rf_open(const rf_config *cfg, rf_engine **out)
{
  if (!out) return RF_ERR_ARG;
  *out = NULL;
  rf_engine *e = calloc(1, sizeof *e);
  if (!e) return RF_ERR_NOMEM;
  *out = e;
  if (!cfg || !cfg->plan) return rf__fail(e, RF_ERR_ARG, "rf_open: no plan");
  if (cfg->role != RF_TRAINER && cfg->role != RF_RECEIVER)
    return rf__fail(e, RF_ERR_ARG, "rf_open: role must be RF_TRAINER or RF_RECEIVER");
  if (cfg->mem != RF_MEM_HOST && cfg->mem != RF_MEM_CUDA)
    return rf__fail(e, RF_ERR_ARG, "rf_open: mem must be RF_MEM_HOST or RF_MEM_CUDA");
  e->cfg = *cfg;
  e->p = cfg->plan;
  uint64_t h = rf_plan_hash(e->p);
  if (h != e->p->layout_hash)
    return rf__fail(e, RF_ERR_HASH, "plan %s: tables hash to %016llx but say %016llx (tables edited by hand?)",
                    e->p->name, (unsigned long long)h, (unsigned long long)e->p->layout_hash);
  /* keep copies of the strings: the caller's may not outlive rf_open */
  copy_str(e->tls, sizeof e->tls, cfg->ucx_tls);
  copy_str(e->nic_mode, sizeof e->nic_mode, cfg->nic_mode ? cfg->nic_mode : "off");
  copy_str(e->gpu_bdf, sizeof e->gpu_bdf, cfg->gpu_bdf);
  copy_str(e->sysfs, sizeof e->sysfs, cfg->sysfs_root ? cfg->sysfs_root : "/sys");
  e->cfg.ucx_tls = cfg->ucx_tls ? e->tls : NULL;
  e->cfg.nic_mode = e->nic_mode;
  e->cfg.gpu_bdf = cfg->gpu_bdf ? e->gpu_bdf : NULL;
  e->cfg.sysfs_root = e->sysfs;
  e->max_inflight = cfg->max_inflight ? cfg->max_inflight : 64;
  e->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
  if (cfg->mem == RF_MEM_CUDA) RF_CHECK(rf__cuda_open(e));
  RF_CHECK(rf__ucx_open(e));
  return cfg->role == RF_TRAINER ? open_trainer(e) : open_receiver(e);
}

void rf_close(rf_engine *e)
{
  if (!e) return;
  stop_stager(e);
  if (e->ux) {
    if (e->dst_memh)
      for (uint32_t i = 0; i < (e->rv ? e->rv->dst_count : 0); i++) {
        int shared = 0;
        for (uint32_t k = 0; k < e->n_regions; k++) shared |= e->dst_memh[i] == e->region[k].memh;
        if (e->dst_memh[i] && !shared) rf__ucx_unmap(e, e->dst_memh[i]);
      }
    for (uint32_t k = 0; k < e->n_regions; k++) rf__ucx_unmap(e, e->region[k].memh);
    if (e->arena_memh) rf__ucx_unmap(e, e->arena_memh);
    rf__ucx_close(e); /* destroys rkeys, endpoints, listener, worker, context */
  }
  if (e->cfg.mem == RF_MEM_CUDA) rf__cuda_close(e); /* frees a device arena */
  else free(e->arena);
  for (uint32_t i = 0; i < e->n_tg; i++) {
    free(e->tg[i].raddr);
    free(e->tg[i].rkey);
    free(e->tg[i].keys);
  }
  free(e->tg);
  free(e->recv_tg);
  free(e->wpiece);
  free(e->pieces);
  free(e->op_skip);
  free(e->by_slot);
  free(e->items);
  free(e->src_ptr);
  free(e->src_need);
  free(e->dst_ptr);
  free(e->dst_memh);
  free(e->der_ptr);
  free(e->peer_done);
  free(e->conns);
  free(e->queue);
  free(e->absorb);
  free(e->blob);
  free(e);
}

void rf_get_counters(const rf_engine *e, rf_counters *c)
{
  if (!e || !c) return;
  *c = e->ctr;
  c->stage_ns += atomic_load(&((rf_engine *)e)->stage_ns);
}

rf_status rf_ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len)
{
  if (!e || !name || !buf || !len) return RF_ERR_ARG;
  return rf__ucx_setting(e, name, buf, len);
}

/* ---------------------------------- receiver ---------------------------------------------- */

rf_status rf_bind_dst(rf_engine *e, uint32_t id, void *ptr, size_t bytes)
{
  if (!e || e->cfg.role != RF_RECEIVER) return e ? rf__fail(e, RF_ERR_STATE, "rf_bind_dst on a trainer") : RF_ERR_ARG;
  if (e->listening) return rf__fail(e, RF_ERR_STATE, "rf_bind_dst after rf_listen");
  const rf_plan *p = e->p;
  if (id < e->rv->dst_first || id >= e->rv->dst_first + e->rv->dst_count)
    return rf__fail(e, RF_ERR_ARG, "dst %u is not a tensor of receiver %u (its ids are %u..%u)", id,
                    e->cfg.rank, e->rv->dst_first, e->rv->dst_first + e->rv->dst_count - 1);
  const rf_dst_tensor *d = &p->dst[id];
  if (!ptr) return rf__fail(e, RF_ERR_ARG, "tensor '%s': NULL pointer", d->name);
  if (bytes != d->bytes)
    return rf__fail(e, RF_ERR_SIZE, "tensor '%s' (dst %u): bound %zu bytes, the table says %llu", d->name, id,
                    bytes, (unsigned long long)d->bytes);
  if (e->cfg.mem == RF_MEM_CUDA) RF_CHECK(rf__cuda_check_memory(e, ptr, bytes, d->name));
  e->dst_ptr[id - e->rv->dst_first] = ptr;
  return RF_OK;
}

rf_status rf_bind_derived(rf_engine *e, uint32_t id, void *ptr, size_t bytes)
{
  if (!e || e->cfg.role != RF_RECEIVER) return e ? rf__fail(e, RF_ERR_STATE, "rf_bind_derived on a trainer") : RF_ERR_ARG;
  const rf_plan *p = e->p;
  if (id >= p->n_derived || p->derived[id].tp_rank != e->pos)
    return rf__fail(e, RF_ERR_ARG, "derived %u is not a tensor of receiver %u", id, e->cfg.rank);
  const rf_derived_tensor *d = &p->derived[id];
  if (d->dst != RF_NONE)
    return rf__fail(e, RF_ERR_ARG, "derived tensor '%s' (derived %u) is a view of '%s' (dst %u): it changes with that "
                    "tensor, nothing to bind", d->name, id, p->dst[d->dst].name, d->dst);
  if (d->storage != id)
    return rf__fail(e, RF_ERR_ARG, "derived tensor '%s' (derived %u) lies in the storage of '%s' (derived %u): bind "
                    "that storage once, through '%s'", d->name, id, p->derived[d->storage].name, d->storage,
                    p->derived[d->storage].name);
  if (!ptr) return rf__fail(e, RF_ERR_ARG, "derived tensor '%s': NULL pointer", d->name);
  if (bytes != d->bytes)
    return rf__fail(e, RF_ERR_SIZE, "derived storage of '%s' (derived %u): bound %zu bytes, the table says %llu",
                    d->name, id, bytes, (unsigned long long)d->bytes);
  if (e->cfg.mem == RF_MEM_CUDA) RF_CHECK(rf__cuda_check_memory(e, ptr, bytes, d->name));
  e->der_ptr[id] = ptr;
  return RF_OK;
}

static rf_status prepare_refresh(rf_engine *e)
{
  const rf_plan *p = e->p;
  for (uint32_t i = 0; i < p->n_derived; i++)
    if (p->derived[i].tp_rank == e->pos && p->derived[i].storage == i && p->derived[i].dst == RF_NONE && !e->der_ptr[i])
      return rf__fail(e, RF_ERR_UNBOUND,
                      "derived tensor '%s' (derived %u) is not bound: the receiver rebuilds its storage after every "
                      "version, bind the engine's storage with rf_bind_derived",
                      p->derived[i].name, i);
  /* one layout for all steps of this position (one batched launch); every view inside its storage */
  rfk_mla_layout *y = &e->absorb_layout;
  for (uint32_t k = 0; k < e->ref_count; k++) {
    const rf_refresh *r = &p->refresh[e->ref_first + k];
    const rf_derived_tensor *uk = &p->derived[r->out0], *uv = &p->derived[r->out1];
    rfk_mla_layout l = {(int)r->heads, (int)r->qk_nope, (int)r->v_head, (int)r->kv_lora, (int64_t)(uk->bytes / 2),
                        uk->offset, {uk->stride[0], uk->stride[1], uk->stride[2]},
                        uv->offset, {uv->stride[0], uv->stride[1], uv->stride[2]}};
    if (k == 0) *y = l;
    if (memcmp(&l, y, sizeof l) != 0 || uv->storage != r->out0 || uk->storage != r->out0)
      return rf__fail(e, RF_ERR_ARG, "refresh of '%s': its views differ from the first step's", p->dst[r->weight].name);
    rfk_mla_absorb *a = &e->absorb[k];
    a->kv_b = e->dst_ptr[r->weight - e->rv->dst_first];
    a->scale = r->scale == RF_NONE ? NULL : e->dst_ptr[r->scale - e->rv->dst_first];
    a->out = e->der_ptr[r->out0];
  }
  if (e->ref_count && rfk_mla_layout_check(y) != 0)
    return rf__fail(e, RF_ERR_ARG, "refresh of '%s': the views '%s' and '%s' leave or overlap their storage",
                    p->dst[p->refresh[e->ref_first].weight].name, p->derived[p->refresh[e->ref_first].out0].name,
                    p->derived[p->refresh[e->ref_first].out1].name);
  return RF_OK;
}

rf_status rf_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out)
{
  if (!e || e->cfg.role != RF_RECEIVER) return e ? rf__fail(e, RF_ERR_STATE, "rf_listen on a trainer") : RF_ERR_ARG;
  if (e->listening) return rf__fail(e, RF_ERR_STATE, "rf_listen called twice");
  const rf_plan *p = e->p;
  for (uint32_t i = 0; i < e->rv->dst_count; i++)
    if (!e->dst_ptr[i])
      return rf__fail(e, RF_ERR_UNBOUND, "tensor '%s' (dst %u) of receiver %u is not bound",
                      p->dst[e->rv->dst_first + i].name, e->rv->dst_first + i, e->cfg.rank);
  RF_CHECK(prepare_refresh(e));
  /* CUDA: run the refresh once now, from the tensors as bound: it loads the refresh kernels while no
   * stream waits on a version (lazy module loading behind a stream wait can stall the context) */
  if (e->cfg.mem == RF_MEM_CUDA && e->ref_count) RF_CHECK(rf__cuda_refresh(e));
  for (uint32_t i = 0; i < e->rv->dst_count; i++) {
    uint8_t *ptr = e->dst_ptr[i];
    uint64_t n = p->dst[e->rv->dst_first + i].bytes;
    void *shared = NULL; /* inside an rf_alloc region: its registration covers the tensor */
    for (uint32_t k = 0; k < e->n_regions && !shared; k++)
      if (ptr >= e->region[k].ptr && ptr + n <= e->region[k].ptr + e->region[k].bytes) shared = e->region[k].memh;
    if (shared) e->dst_memh[i] = shared;
    else RF_CHECK(rf__ucx_map(e, ptr, n, &e->dst_memh[i]));
  }
  RF_CHECK(rf__ucx_build_blob(e));
  RF_CHECK(rf__ucx_listen(e, ip ? ip : "0.0.0.0", port, port_out));
  e->listening = 1;
  return RF_OK;
}

rf_status rf_alloc(rf_engine *e, size_t bytes, void **ptr)
{
  if (!e || !ptr || !bytes) return e ? rf__fail(e, RF_ERR_ARG, "rf_alloc: no size or output") : RF_ERR_ARG;
  if (e->cfg.mem != RF_MEM_HOST) return rf__fail(e, RF_ERR_STATE, "rf_alloc: host engines only (bind cudaMalloc memory)");
  if (e->n_regions == sizeof e->region / sizeof e->region[0])
    return rf__fail(e, RF_ERR_NOMEM, "rf_alloc: at most %zu regions per engine", sizeof e->region / sizeof e->region[0]);
  void *memh;
  RF_CHECK(rf__ucx_alloc(e, bytes, ptr, &memh));
  e->region[e->n_regions].ptr = *ptr;
  e->region[e->n_regions].bytes = bytes;
  e->region[e->n_regions++].memh = memh;
  return RF_OK;
}

rf_status rf_export(rf_engine *e, void *buf, size_t cap, size_t *len)
{
  if (!e || !len) return RF_ERR_ARG;
  if (!e->blob) return rf__fail(e, RF_ERR_STATE, "rf_export before rf_listen");
  *len = e->blob_len;
  if (!buf || cap < e->blob_len) return rf__fail(e, RF_ERR_SIZE, "blob needs %zu bytes", e->blob_len);
  memcpy(buf, e->blob, e->blob_len);
  return RF_OK;
}

static void tear(rf_engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tear(rf_engine *e, const char *fmt, ...)
{
  if (!e->v_cur || e->cur_torn) return;
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(e->torn_reason, sizeof e->torn_reason, "version %llu torn: ", (unsigned long long)e->v_cur);
  vsnprintf(e->torn_reason + n, sizeof e->torn_reason - (size_t)n, fmt, ap);
  va_end(ap);
  e->cur_torn = 1;
  e->v_torn = e->v_cur;
  e->ctr.torn++;
}

static uint32_t peer_index(const rf_engine *e, uint32_t rank)
{
  for (uint32_t k = 0; k < e->rv->peer_count; k++)
    if (e->p->peers[e->rv->peer_first + k].trainer == rank) return k;
  return RF_NONE;
}

static void start_version(rf_engine *e, uint64_t v)
{
  if (e->v_cur && !e->cur_torn && e->v_cur != v) tear(e, "superseded by version %llu", (unsigned long long)v);
  e->v_cur = v;
  e->cur_torn = 0;
  e->cur_t0 = rf__now_ns();
  memset(e->peer_done, 0, e->rv->peer_count);
  e->peers_done = 0;
}

static void complete_version(rf_engine *e)
{
  uint64_t t0 = rf__now_ns();
  if (e->ref_count) {
    int rc = 0;
    if (e->cfg.mem == RF_MEM_CUDA) {
      rc = rf__cuda_refresh(e) != RF_OK;
    } else {
      const rf_refresh *r = &e->p->refresh[e->ref_first];
      rc = rfk_ref_mla_absorb(e->absorb, (int)e->ref_count, r->scale != RF_NONE, &e->absorb_layout);
    }
    if (rc) {
      tear(e, "refresh of derived tensors failed (%s)", e->err);
      return;
    }
  }
  e->ctr.refresh_ns += rf__now_ns() - t0;
  e->v_complete = e->v_cur;
  e->v_cur = 0;
  e->ctr.versions++;
  e->ctr.bytes += e->rv->bytes;
  if (e->cfg.mem == RF_MEM_CUDA) rf__cuda_publish(e, e->v_complete);
}

static void handle(rf_engine *e, uint32_t ci, const rf__msg *m)
{
  rf__conn *c = &e->conns[ci];
  const rf_plan *p = e->p;
  if (m->type == RF__HELLO) {
    const char *why = NULL;
    char buf[160];
    if (m->hash != p->layout_hash) {
      snprintf(buf, sizeof buf, "layout hash %016llx does not match receiver's %016llx (plan %s)",
               (unsigned long long)m->hash, (unsigned long long)p->layout_hash, p->name);
      why = buf;
    } else if (m->token != e->cfg.token) {
      snprintf(buf, sizeof buf, "wrong token from trainer rank %u", m->rank);
      why = buf;
    } else if (m->recv != e->cfg.rank) {
      snprintf(buf, sizeof buf, "trainer rank %u asked for receiver %u, this is receiver %u", m->rank, m->recv, e->cfg.rank);
      why = buf;
    } else if (peer_index(e, m->rank) == RF_NONE) {
      snprintf(buf, sizeof buf, "trainer rank %u does not write to receiver %u in plan %s", m->rank, e->cfg.rank, p->name);
      why = buf;
    }
    if (why) {
      snprintf(e->err, sizeof e->err, "refused a trainer: %s", why);
      memset(&c->reply, 0, sizeof c->reply);
      c->reply.magic = RF__MAGIC;
      c->reply.type = RF__REJECT;
      snprintf(c->reply.text, sizeof c->reply.text, "%s", why);
      rf__ucx_reply(e, ci, &c->reply, sizeof c->reply);
      return;
    }
    /* a restarted trainer replaces its earlier connection */
    for (uint32_t k = 0; k < e->n_conns; k++)
      if (k != ci && e->conns[k].used && e->conns[k].hello_ok && e->conns[k].rank == m->rank) e->conns[k].hello_ok = 0;
    c->hello_ok = 1;
    c->rank = m->rank;
    rf__ucx_reply(e, ci, e->blob, e->blob_len);
    return;
  }
  if (!c->hello_ok) {
    snprintf(e->err, sizeof e->err, "message type %u before a valid HELLO ignored", m->type);
    return;
  }
  if (m->hash != p->layout_hash) return;
  uint32_t k = peer_index(e, c->rank);
  if (m->type == RF__BEGIN) {
    if (m->version <= e->v_complete) {
      snprintf(e->err, sizeof e->err, "trainer rank %u began version %llu, not newer than complete version %llu",
               c->rank, (unsigned long long)m->version, (unsigned long long)e->v_complete);
      return;
    }
    if (e->v_cur == 0 || m->version > e->v_cur || (m->version == e->v_cur && e->cur_torn)) start_version(e, m->version);
    return;
  }
  if (m->type == RF__DONE) {
    if (m->version != e->v_cur || e->cur_torn) return;
    if (m->bytes != p->peers[e->rv->peer_first + k].bytes) {
      tear(e, "trainer rank %u wrote %llu bytes, the table says %llu", c->rank, (unsigned long long)m->bytes,
           (unsigned long long)p->peers[e->rv->peer_first + k].bytes);
      return;
    }
    if (!e->peer_done[k]) {
      e->peer_done[k] = 1;
      e->peers_done++;
    }
    if (e->peers_done == e->rv->peer_count) complete_version(e);
  }
}

void rf__on_message(rf_engine *e, uint32_t conn, const void *data, size_t len)
{
  if (len != sizeof(rf__msg)) return; /* not ours: ignore, the checks below need the whole message */
  if ((uint32_t)(e->q_tail - e->q_head) >= RF__QUEUE) {
    e->q_overflow = 1;
    return;
  }
  rf__queued *q = &e->queue[e->q_tail % RF__QUEUE];
  q->conn = conn;
  memcpy(&q->msg, data, sizeof q->msg);
  if (q->msg.magic != RF__MAGIC) return;
  e->q_tail++;
}

void rf__on_conn_error(rf_engine *e, uint32_t conn, const char *why)
{
  rf__conn *c = &e->conns[conn];
  c->dead = 1;
  snprintf(c->dead_reason, sizeof c->dead_reason, "%s", why);
  if (!c->hello_ok) return;
  c->hello_ok = 0;
  uint32_t k = peer_index(e, c->rank);
  if (e->v_cur && !e->cur_torn && k != RF_NONE && !e->peer_done[k])
    tear(e, "trainer rank %u disconnected before DONE (%s)", c->rank, why);
}

static void receiver_poll(rf_engine *e)
{
  rf__ucx_progress(e);
  while (e->q_head != e->q_tail) {
    rf__queued *q = &e->queue[e->q_head % RF__QUEUE];
    handle(e, q->conn, &q->msg);
    e->q_head++;
  }
  if (e->q_overflow) {
    tear(e, "more than %d control messages queued", RF__QUEUE);
    e->q_overflow = 0;
  }
  if (e->v_cur && !e->cur_torn && rf__now_ns() - e->cur_t0 > (uint64_t)e->timeout_ms * 1000000u) {
    char missing[128] = "";
    size_t n = 0;
    for (uint32_t k = 0; k < e->rv->peer_count && n + 12 < sizeof missing; k++)
      if (!e->peer_done[k])
        n += (size_t)snprintf(missing + n, sizeof missing - n, "%s%u", n ? "," : "", e->p->peers[e->rv->peer_first + k].trainer);
    tear(e, "no DONE from trainer rank(s) %s within %u ms", missing, e->timeout_ms);
  }
}

rf_status rf_version_poll(rf_engine *e, rf_version_state *st)
{
  if (!e || !st) return RF_ERR_ARG;
  if (e->cfg.role != RF_RECEIVER) return rf__fail(e, RF_ERR_STATE, "rf_version_poll on a trainer");
  receiver_poll(e);
  st->complete = e->v_complete;
  st->torn = e->v_torn;
  st->in_progress = e->cur_torn ? 0 : e->v_cur;
  memcpy(st->torn_reason, e->torn_reason, sizeof st->torn_reason);
  return RF_OK;
}

rf_status rf_version_wait(rf_engine *e, uint64_t v, uint32_t timeout_ms)
{
  if (!e) return RF_ERR_ARG;
  if (e->cfg.role != RF_RECEIVER) return rf__fail(e, RF_ERR_STATE, "rf_version_wait on a trainer");
  uint64_t t0 = rf__now_ns();
  for (;;) {
    receiver_poll(e);
    if (e->v_complete >= v) return RF_OK;
    if (e->v_torn >= v) return rf__fail(e, RF_ERR_TORN, "%s", e->torn_reason);
    if (rf__now_ns() - t0 > (uint64_t)timeout_ms * 1000000u)
      return rf__fail(e, RF_ERR_TIMEOUT, "version %llu not complete after %u ms (newest complete %llu)",
                      (unsigned long long)v, timeout_ms, (unsigned long long)e->v_complete);
  }
}

rf_status rf_stream_wait(rf_engine *e, uint64_t v, void *stream)
{
  if (!e) return RF_ERR_ARG;
  if (e->cfg.role != RF_RECEIVER || e->cfg.mem != RF_MEM_CUDA)
    return rf__fail(e, RF_ERR_STATE, "rf_stream_wait needs a receiver in RF_MEM_CUDA mode");
  return rf__cuda_stream_wait(e, v, stream);
}

/* ----------------------------------- trainer ---------------------------------------------- */

rf_status rf_bind_src(rf_engine *e, uint32_t id, const void *ptr, size_t bytes)
{
  if (!e || e->cfg.role != RF_TRAINER) return e ? rf__fail(e, RF_ERR_STATE, "rf_bind_src on a receiver") : RF_ERR_ARG;
  const rf_plan *p = e->p;
  if (id >= p->n_src) return rf__fail(e, RF_ERR_ARG, "source %u out of range (%u sources)", id, p->n_src);
  const rf_src_tensor *s = &p->src[id];
  if (!e->src_need[id])
    return rf__fail(e, RF_ERR_ARG, "tensor '%s': trainer rank %u reads nothing of it (owner shard %d)", s->name,
                    e->cfg.rank, s->shard == RF_NONE ? -1 : (int)s->shard);
  size_t want = rf_src_bytes(e, id);
  if (!ptr) return rf__fail(e, RF_ERR_ARG, "tensor '%s': NULL pointer", s->name);
  if (bytes != want)
    return rf__fail(e, RF_ERR_SIZE, "tensor '%s' (source %u): bound %zu bytes, rank %u holds %zu", s->name, id, bytes,
                    e->cfg.rank, want);
  if (e->cfg.mem == RF_MEM_CUDA) RF_CHECK(rf__cuda_check_memory(e, ptr, bytes, s->name));
  e->src_ptr[id] = ptr;
  e->direct_dirty = 1;
  return RF_OK;
}

static rf_status take_keys(rf_engine *e, rf__target *t, const void *buf, size_t len)
{
  rf__blob_view v;
  char why[200];
  if (rf__blob_parse(e->p, buf, len, &v, why, sizeof why) != RF_OK)
    return rf__fail(e, RF_ERR_BLOB, "receiver %u (%s): metadata rejected: %s", t->recv, t->where, why);
  if (v.recv != t->recv)
    return rf__fail(e, RF_ERR_BLOB, "receiver %u (%s): metadata is for receiver %u", t->recv, t->where, v.recv);
  for (uint32_t i = 0; i < v.n; i++) {
    rf__blob_entry en;
    rf__blob_entry_at(&v, i, &en);
    t->raddr[i] = en.addr;
    RF_CHECK(rf__ucx_rkey(e, t, en.rkey, en.rkey_len, &t->rkey[i]));
  }
  t->connected = 1;
  return RF_OK;
}

void rf__on_keys(rf_engine *e, rf__target *t, const void *data, size_t len)
{
  (void)e;
  if (t->keys_state) return;
  if (len == sizeof(rf__msg)) { /* data may be unaligned: copy before looking */
    rf__msg m;
    memcpy(&m, data, sizeof m);
    if (m.magic == RF__MAGIC && m.type == RF__REJECT) {
      t->reject = m;
      t->reject.text[sizeof t->reject.text - 1] = 0;
      t->keys_state = -1;
      return;
    }
  }
  t->keys = malloc(len ? len : 1);
  if (!t->keys) return;
  memcpy(t->keys, data, len);
  t->keys_len = len;
  t->keys_state = 1;
}

void rf__on_target_error(rf_engine *e, rf__target *t, const char *why)
{
  t->failed = 1;
  if (e->pushing && e->push_status == RF_OK)
    e->push_status = rf__fail(e, RF_ERR_PEER, "receiver %u (%s) failed during version %llu: %s", t->recv, t->where,
                              (unsigned long long)e->version, why);
}

static rf_status hello(rf_engine *e, rf__target *t)
{
  rf__msg *m = &t->begin;
  memset(m, 0, sizeof *m);
  m->magic = RF__MAGIC;
  m->type = RF__HELLO;
  m->hash = e->p->layout_hash;
  m->token = e->cfg.token;
  m->rank = e->cfg.rank;
  m->recv = t->recv;
  RF_CHECK(rf__ucx_send(e, t, m, 2));
  uint64_t t0 = rf__now_ns();
  while (t->keys_state == 0 && !t->failed) {
    rf__ucx_progress(e);
    if (rf__now_ns() - t0 > (uint64_t)e->timeout_ms * 1000000u)
      return rf__fail(e, RF_ERR_TIMEOUT, "receiver %u (%s): no answer to HELLO within %u ms", t->recv, t->where,
                      e->timeout_ms);
  }
  if (t->failed) return rf__fail(e, RF_ERR_PEER, "receiver %u (%s): connection failed: %s", t->recv, t->where, e->err);
  if (t->keys_state < 0) {
    rf_status s = strstr(t->reject.text, "token") ? RF_ERR_TOKEN : strstr(t->reject.text, "hash") ? RF_ERR_HASH : RF_ERR_PEER;
    return rf__fail(e, s, "receiver %u (%s) refused trainer rank %u: %s", t->recv, t->where, e->cfg.rank, t->reject.text);
  }
  rf_status s = take_keys(e, t, t->keys, t->keys_len);
  free(t->keys);
  t->keys = NULL;
  return s;
}

static rf__target *target_of(rf_engine *e, uint32_t recv)
{
  if (recv >= e->p->receivers || e->recv_tg[recv] == RF_NONE) return NULL;
  return &e->tg[e->recv_tg[recv]];
}

rf_status rf_connect(rf_engine *e, uint32_t recv, const char *ip, uint16_t port)
{
  if (!e || e->cfg.role != RF_TRAINER) return e ? rf__fail(e, RF_ERR_STATE, "rf_connect on a receiver") : RF_ERR_ARG;
  if (e->pushing) return rf__fail(e, RF_ERR_STATE, "rf_connect during a push");
  rf__target *t = target_of(e, recv);
  if (!t) return rf__fail(e, RF_ERR_ARG, "trainer rank %u does not write to receiver %u", e->cfg.rank, recv);
  if (t->connected) return rf__fail(e, RF_ERR_STATE, "receiver %u already connected", recv);
  snprintf(t->where, sizeof t->where, "%s:%u", ip, port);
  RF_CHECK(rf__ucx_connect(e, t, ip, port));
  return hello(e, t);
}

rf_status rf_import(rf_engine *e, const void *blob, size_t len)
{
  if (!e || e->cfg.role != RF_TRAINER) return e ? rf__fail(e, RF_ERR_STATE, "rf_import on a receiver") : RF_ERR_ARG;
  if (e->pushing) return rf__fail(e, RF_ERR_STATE, "rf_import during a push");
  rf__blob_view v;
  char why[200];
  if (!blob || rf__blob_parse(e->p, blob, len, &v, why, sizeof why) != RF_OK)
    return rf__fail(e, RF_ERR_BLOB, "metadata blob rejected: %s", blob ? why : "NULL");
  rf__target *t = target_of(e, v.recv);
  if (!t) return rf__fail(e, RF_ERR_ARG, "metadata blob is for receiver %u, which trainer rank %u does not write to",
                          v.recv, e->cfg.rank);
  if (t->connected) return rf__fail(e, RF_ERR_STATE, "receiver %u already connected", v.recv);
  snprintf(t->where, sizeof t->where, "blob");
  RF_CHECK(rf__ucx_connect_addr(e, t, v.worker_addr, v.worker_addr_len));
  /* the receiver still checks hash, rank and token before it counts our DONE */
  return hello(e, t);
}

/* the kernel shape and item pointers of op `o` (host or device pointers, as bound) */
void rf__op_items(rf_engine *e, const rf_op *o, rfk_shape *sh)
{
  const rf_plan *p = e->p;
  *sh = (rfk_shape){.src_dtype = o->src_dtype, .out_dtype = o->kind == RF_OP_FP8 ? RFK_FP8 : o->dst_dtype,
                    .ue8m0 = p->scale_fmt == RF_SCALE_UE8M0, .rows = o->rows, .cols = o->cols,
                    .src_ld = p->src[o->src].cols, .out_ld = o->cols,
                    .scale_ld = (o->cols + RF_FP8_BLOCK - 1) / RF_FP8_BLOCK};
  for (uint32_t i = 0; i < o->count; i++) {
    uint32_t sid = o->src + i * o->src_step;
    const rf_src_tensor *s = &p->src[sid];
    int64_t row = o->row0 + (int64_t)i * o->row_step - src_first_row(e, s);
    int64_t col = o->col0 + (int64_t)i * o->col_step;
    e->items[i].src = (const uint8_t *)e->src_ptr[sid] + ((size_t)row * (size_t)s->cols + (size_t)col) * dtype_size(s->dtype);
    e->items[i].out = e->arena + o->out + (uint64_t)i * o->out_step;
    e->items[i].scale = o->kind == RF_OP_FP8 ? (float *)(e->arena + o->scale + (uint64_t)i * o->scale_step) : NULL;
  }
}

/* run op `o` into the host arena with the C reference */
static rf_status stage_op_host(rf_engine *e, const rf_op *o)
{
  const rf_plan *p = e->p;
  rfk_shape sh;
  rf__op_items(e, o, &sh);
  int rc = rfk_ref_run(&sh, e->items, (int)o->count);
  if (rc) { /* runs on the staging thread: the main thread copies stage_err into err */
    const rf_src_tensor *s = &p->src[o->src];
    snprintf(e->stage_err, sizeof e->stage_err, "staging tensor '%s'%s for version %llu: %s", s->name,
             o->count > 1 ? " (or another of its group)" : "", (unsigned long long)e->version, rfk_strerror(rc));
    return RF_ERR_KERNEL;
  }
  return RF_OK;
}

/* the staging thread: for each push, every group of this rank in order; errors stop it */
static void *stager_main(void *arg)
{
  rf_engine *e = arg;
  pthread_mutex_lock(&e->mu);
  for (;;) {
    while (!e->stager_quit && e->stage_version == 0) pthread_cond_wait(&e->cv, &e->mu);
    if (e->stager_quit) break;
    pthread_mutex_unlock(&e->mu);
    for (uint32_t i = 0; i < e->rk->group_count && !atomic_load(&e->stage_failed); i++) {
      const rf_group *gr = &e->p->groups[e->rk->group_first + i];
      uint64_t t0 = rf__now_ns();
      rf_status s = RF_OK;
      for (uint32_t k = 0; k < gr->op_count && s == RF_OK; k++)
        if (!e->op_skip || !e->op_skip[gr->op_first + k - e->rk->op_first]) s = stage_op_host(e, &e->p->ops[gr->op_first + k]);
      atomic_fetch_add(&e->stage_ns, rf__now_ns() - t0);
      if (s != RF_OK) atomic_store(&e->stage_failed, 1);
      else atomic_store(&e->g_staged, i + 1);
    }
    pthread_mutex_lock(&e->mu);
    e->stage_version = 0;
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

static rf_status start_stager(rf_engine *e)
{
  if (pthread_mutex_init(&e->mu, NULL) || pthread_cond_init(&e->cv, NULL))
    return rf__fail(e, RF_ERR_NOMEM, "staging thread: mutex");
  if (pthread_create(&e->stager, NULL, stager_main, e)) return rf__fail(e, RF_ERR_NOMEM, "staging thread");
  e->stager_on = 1;
  return RF_OK;
}

static void stop_stager(rf_engine *e)
{
  if (!e->stager_on) return;
  pthread_mutex_lock(&e->mu);
  e->stager_quit = 1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  pthread_join(e->stager, NULL);
  pthread_cond_destroy(&e->cv);
  pthread_mutex_destroy(&e->mu);
  e->stager_on = 0;
}

rf_status rf_push(rf_engine *e, uint64_t version, void *stream)
{
  if (!e || e->cfg.role != RF_TRAINER) return e ? rf__fail(e, RF_ERR_STATE, "rf_push on a receiver") : RF_ERR_ARG;
  if (e->pushing) return rf__fail(e, RF_ERR_STATE, "rf_push while version %llu is still being pushed",
                                  (unsigned long long)e->version);
  if (version <= e->last_version)
    return rf__fail(e, RF_ERR_ARG, "version %llu is not newer than the last pushed (%llu)", (unsigned long long)version,
                    (unsigned long long)e->last_version);
  const rf_plan *p = e->p;
  for (uint32_t i = 0; i < p->n_src; i++)
    if (e->src_need[i] && !e->src_ptr[i])
      return rf__fail(e, RF_ERR_UNBOUND, "tensor '%s' (source %u) is not bound on trainer rank %u", p->src[i].name, i,
                      e->cfg.rank);
  for (uint32_t i = 0; i < e->n_tg; i++) {
    rf__target *t = &e->tg[i];
    if (!t->connected)
      return rf__fail(e, RF_ERR_STATE, "trainer rank %u is not connected to receiver %u", e->cfg.rank, t->recv);
    if (t->failed) return rf__fail(e, RF_ERR_PEER, "receiver %u (%s) has failed", t->recv, t->where);
  }
  if (e->cfg.direct && e->direct_dirty) plan_direct(e);
  e->version = version;
  e->pushing = 1;
  e->push_status = RF_OK;
  e->push_t0 = rf__now_ns();
  e->g_next = e->rk->group_first;
  e->g_posted = e->rk->group_first;
  e->w_next = e->w_end = 0;
  e->inflight = e->flush_pending = e->done_pending = e->targets_done = 0;
  if (e->cfg.mem == RF_MEM_CUDA) {
    /* all groups go onto the caller's stream at once; their writes are posted as events finish */
    for (uint32_t g = e->rk->group_first; g < e->rk->group_first + e->rk->group_count; g++) {
      rf_status s = rf__cuda_stage(e, g, stream);
      if (s != RF_OK) {
        e->pushing = 0;
        return s;
      }
    }
    e->g_next = e->rk->group_first + e->rk->group_count;
  } else {
    /* hand the version to the staging thread (idle by now: the last push ended after its staging) */
    pthread_mutex_lock(&e->mu);
    while (e->stage_version != 0) {
      pthread_mutex_unlock(&e->mu);
      sched_yield();
      pthread_mutex_lock(&e->mu);
    }
    atomic_store(&e->g_staged, 0);
    atomic_store(&e->stage_failed, 0);
    e->stage_version = version;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
  }
  for (uint32_t i = 0; i < e->n_tg; i++) {
    rf__target *t = &e->tg[i];
    t->flushing = t->flushed = t->done_pending = t->done_sent = 0;
    rf__msg *m = &t->begin;
    memset(m, 0, sizeof *m);
    m->magic = RF__MAGIC;
    m->type = RF__BEGIN;
    m->hash = p->layout_hash;
    m->version = version;
    m->rank = e->cfg.rank;
    m->recv = t->recv;
    rf_status s = rf__ucx_send(e, t, m, 0);
    if (s != RF_OK) {
      e->pushing = 0;
      return s;
    }
  }
  return RF_OK;
}

void rf__on_put_done(rf_engine *e, int ok, const char *why)
{
  e->inflight--;
  if (!ok && e->push_status == RF_OK)
    e->push_status = rf__fail(e, RF_ERR_UCX, "a write of version %llu failed: %s", (unsigned long long)e->version, why);
}

void rf__on_flush_done(rf_engine *e, rf__target *t, int ok, const char *why)
{
  e->flush_pending--;
  if (!ok) {
    if (e->push_status == RF_OK)
      e->push_status = rf__fail(e, RF_ERR_PEER, "receiver %u (%s): flush of version %llu failed: %s", t->recv, t->where,
                                (unsigned long long)e->version, why);
    return;
  }
  t->flushed = 1;
}

void rf__on_done_sent(rf_engine *e, rf__target *t, int ok, const char *why)
{
  e->done_pending--;
  if (!ok) {
    if (e->push_status == RF_OK)
      e->push_status = rf__fail(e, RF_ERR_PEER, "receiver %u (%s): DONE of version %llu failed: %s", t->recv, t->where,
                                (unsigned long long)e->version, why);
    return;
  }
  t->done_sent = 1;
  e->targets_done++;
}

static void send_done(rf_engine *e, rf__target *t)
{
  rf__msg *m = &t->done;
  memset(m, 0, sizeof *m);
  m->magic = RF__MAGIC;
  m->type = RF__DONE;
  m->hash = e->p->layout_hash;
  m->version = e->version;
  m->bytes = e->p->peers[t->peer].bytes;
  m->rank = e->cfg.rank;
  m->recv = t->recv;
  t->done_pending = 1;
  e->done_pending++;
  rf_status s = rf__ucx_send(e, t, m, 1);
  if (s != RF_OK && e->push_status == RF_OK) e->push_status = s;
}

static void finish_push(rf_engine *e)
{
  uint64_t dt = rf__now_ns() - e->push_t0;
  e->pushing = 0;
  e->last_version = e->version;
  e->ctr.versions++;
  e->ctr.push_ns += dt;
  e->ctr.last_push_ns = dt;
  e->ctr.bytes += e->rk->bytes_out;
}

/* one step of the push: post ready writes (bounded), stage the next group, start flushes */
static void trainer_step(rf_engine *e)
{
  const rf_plan *p = e->p;
  uint32_t g_end = e->rk->group_first + e->rk->group_count;
  while (e->push_status == RF_OK) {
    if (e->w_next < e->w_end) {
      if (e->inflight >= e->max_inflight) break;
      const rf_write *w = &p->writes[e->w_next];
      rf__target *t = &e->tg[e->recv_tg[w->receiver]];
      uint32_t di = w->dst - p->recv[w->receiver].dst_first;
      uint64_t tp = rf__now_ns();
      uint32_t wl = e->w_next - e->rk->write_first;
      uint32_t p0 = e->wpiece ? e->wpiece[wl] : 0, p1 = e->wpiece ? e->wpiece[wl + 1] : 0;
      rf_status s = RF_OK;
      if (p0 == p1) s = rf__ucx_put(e, t, e->arena + w->slot, w->len, t->raddr[di] + w->dst_off, t->rkey[di]);
      for (uint32_t k = p0; k < p1 && s == RF_OK; k++) /* from the sources: one put per source range */
        s = rf__ucx_put(e, t, e->pieces[k].from, e->pieces[k].len, t->raddr[di] + w->dst_off + e->pieces[k].off,
                        t->rkey[di]);
      e->ctr.post_ns += rf__now_ns() - tp;
      if (s != RF_OK) {
        e->push_status = s;
        break;
      }
      e->ctr.writes++;
      e->ctr.direct_writes += p0 != p1;
      if (e->w_next == t->last_write) {
        t->flushing = 1;
        e->flush_pending++;
        s = rf__ucx_flush(e, t);
        if (s != RF_OK) {
          e->push_status = s;
          break;
        }
      }
      e->w_next++;
      continue;
    }
    /* the writes of the staged groups are all posted: make the next group ready */
    if (e->cfg.mem == RF_MEM_CUDA) {
      if (e->g_posted >= g_end || !rf__cuda_group_ready(e, e->g_posted)) break;
      const rf_group *gr = &p->groups[e->g_posted++];
      e->w_next = gr->write_first;
      e->w_end = gr->write_first + gr->write_count;
      continue;
    }
    if (atomic_load(&e->stage_failed)) {
      e->push_status = rf__fail(e, RF_ERR_KERNEL, "%s", e->stage_err);
      break;
    }
    if (e->g_posted >= e->rk->group_first + atomic_load(&e->g_staged)) break; /* next group not staged yet */
    const rf_group *gr = &p->groups[e->g_posted++];
    e->w_next = gr->write_first;
    e->w_end = gr->write_first + gr->write_count;
  }
  for (uint32_t i = 0; i < e->n_tg && e->push_status == RF_OK; i++) {
    rf__target *t = &e->tg[i];
    if (t->failed && e->push_status == RF_OK)
      e->push_status = rf__fail(e, RF_ERR_PEER, "receiver %u (%s) failed during version %llu", t->recv, t->where,
                                (unsigned long long)e->version);
    if (t->flushed && !t->done_pending && !t->done_sent) send_done(e, t);
  }
}

rf_status rf_progress(rf_engine *e)
{
  if (!e) return RF_ERR_ARG;
  if (e->cfg.role == RF_RECEIVER) {
    receiver_poll(e);
    return RF_OK;
  }
  rf__ucx_progress(e);
  if (!e->pushing) return RF_OK;
  trainer_step(e);
  if (e->push_status != RF_OK) {
    atomic_store(&e->stage_failed, 1); /* stop staging */
    /* the push is over: drain what is in flight so buffers are free again */
    if (e->inflight || e->flush_pending || e->done_pending) return RF_AGAIN;
    e->pushing = 0;
    e->last_version = e->version;
    return e->push_status;
  }
  if (e->targets_done == e->n_tg) {
    finish_push(e);
    return RF_OK;
  }
  return RF_AGAIN;
}

rf_status rf_wait(rf_engine *e, uint32_t timeout_ms)
{
  if (!e || e->cfg.role != RF_TRAINER) return e ? rf__fail(e, RF_ERR_STATE, "rf_wait on a receiver") : RF_ERR_ARG;
  uint64_t t0 = rf__now_ns();
  int abandoned = 0;
  for (;;) {
    if (!e->pushing) return abandoned ? RF_ERR_TIMEOUT : RF_OK;
    rf_status s = rf_progress(e);
    if (s != RF_AGAIN) return s;
    if (rf__now_ns() - t0 > (uint64_t)timeout_ms * 1000000u) {
      if (!abandoned && e->push_status == RF_OK)
        e->push_status = rf__fail(e, RF_ERR_TIMEOUT, "version %llu: push not finished after %u ms (%u writes in flight, %u "
                                  "flushes, %u DONE pending)", (unsigned long long)e->version, timeout_ms, e->inflight,
                                  e->flush_pending, e->done_pending);
      abandoned = 1;
      /* give outstanding requests a bounded grace period, then report */
      if (rf__now_ns() - t0 > 2ull * timeout_ms * 1000000u) {
        e->pushing = 0;
        return RF_ERR_TIMEOUT;
      }
    }
  }
}
