/* trainer.c: a trainer rank's state machine (DESIGN.md section 3, version protocol v2).
 *
 * Per receiver it writes to (a target), a connection: DOWN -> HELLO sent -> AUTH sent (the
 * receiver's CHALLENGE proved it holds the token, layout and index) -> UP (WELCOME: keys and the
 * receiver's newest complete version). Per push, per target: WAITING (BEGIN sent) -> WRITING
 * (GRANT arrived: writes of staged groups go out, a bounded number in flight) -> FLUSHING (all
 * posted: flush, then DONE) -> COMPLETE (ACK) or FAILED / SKIPPED. Staging runs from rf_push on,
 * whatever the grants: the host staging thread or the CUDA stream, group by group.
 *
 * Endpoints with writes in flight are closed when a push is abandoned (timeout) or fails locally
 * (a staging error after writes went out), so nothing of it can land later; the next push waits
 * until every request on them completed or failed before it touches the slot arena again.
 *
 * Delta (cfg.delta, refit.h): staging writes a group's new encoding to the scratch and the encode
 * makes its regions' patches and updates their slots, so once a group is ready its slots hold the
 * new bytes and its patches are made. A target goes as patches when, at the push's start (or when it
 * connects during the push), its complete version is the base: the version the slots held when the
 * push started, which counts only once a push staged every group. Per write it then puts the
 * region's patch into the write's slot of the receiver's patch area, or the slot bytes into the
 * tensor when the patch overflowed, filling its directory entry (patch bytes or 0, digest); after
 * its last write its directory part; then flush and DONE delta. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { T_DOWN = 0, T_HELLO, T_AUTH, T_UP };                             /* connection */
enum { P_IDLE = 0, P_WAITING, P_WRITING, P_FLUSHING, P_DONE_SENT, P_COMPLETE, P_FAILED, P_SKIPPED }; /* push */

typedef struct rf__target rf__target;
struct rf__target {
  uint32_t recv, peer;     /* receiver index; index into plan->peers */
  int conn, push;
  rf__ep ep;
  char where[64];          /* "ip:port" or "blob" */
  /* how to reach it again: ip:port, or the blob (owned) */
  char ip[64];
  uint16_t port;
  uint8_t *blob;
  size_t blob_len;
  uint64_t session, nonce_t, nonce_r, t0;
  rf__key key;
  uint64_t complete;       /* the receiver's newest complete version, as last heard */
  uint64_t *raddr;         /* [dst_count] remote base address of each destination tensor */
  void **rkey;             /* [dst_count] */
  int have_keys;
  const rf_recv_write *wl; /* this rank's writes to this receiver (the plan's, table order) */
  uint32_t nw, wcur;
  rf_status st;
  int refused;             /* the receiver refused us (not a transport failure): do not retry */
  int redialed;            /* this push dialed it again after its connection failed (redial) */
  char why[256];
  /* delta: the receiver's patch area and directory (from WELCOME), and this push's mode */
  uint64_t area_raddr, dir_raddr;
  void *area_rkey, *dir_rkey;
  uint64_t dir_off;        /* this rank's part of the receiver's directory (bytes) */
  uint32_t dir_first;      /* its first directory entry (delta_push.c), in wl order */
  int delta, dir_posted;   /* this push goes as patches; its directory part was put */
  uint64_t patch_sent;     /* this push: patch bytes put to it */
};

/* staging, chosen at open (rf__trainer_open): the host staging thread running the reference
 * kernels group by group, or every group's kernels on the caller's CUDA stream with an event each */
typedef struct stager {
  rf_status (*open)(rf_engine *e);
  rf_status (*settle)(rf_engine *e, uint64_t version); /* before a push: the last push's staging ended */
  rf_status (*start)(rf_engine *e, void *stream);       /* this push's groups */
  rf_status (*poll)(rf_engine *e);                      /* g_ready: groups whose slots are ready */
  int (*idle)(rf_engine *e);                            /* nothing of an earlier push stages */
} stager;

/* the trainer's state (rf_engine.tr): only this file reads or writes it */
typedef struct rf__trainer rf__trainer;
struct rf__trainer {
  const stager *stg;
  const rf_rank *rk;
  uint8_t *arena;            /* slot arena (host or device), arena_bytes */
  void *arena_memh;
  const void **src_ptr;      /* [n_src] bound source pointers */
  uint8_t *src_need;         /* [n_src] 1 when this rank's ops read it */
  rfk_item *items;           /* [max op count] scratch for one staged op */
  rf__target *tg;            /* [n_tg] */
  uint32_t n_tg;
  uint32_t *recv_tg;         /* [receivers] index into tg, or RF_NONE */
  int pushing, push_reported;  /* push_reported: its result went to rf_progress or rf_wait */
  rf_status push_status;
  uint64_t version, last_attempt, push_t0;
  uint32_t g_ready;          /* groups of this push whose slots are ready (absolute index bound) */
  /* host mode: a staging thread runs the reference kernels group by group while this thread posts
   * the writes of groups already staged (DESIGN.md section 3, step 2) */
  pthread_t stager;
  pthread_mutex_t smu;
  pthread_cond_t scv;
  int stager_on, stager_quit;
  uint64_t stage_version;    /* version the stager works on (0 = idle) */
  _Atomic uint32_t g_staged; /* groups of this push staged so far */
  _Atomic int stage_failed;
  _Atomic uint64_t stage_ns;
  char stage_err[512];

  rf__delta *dt;             /* delta_push.c, with cfg.delta; else NULL */
  uint64_t push_bytes;       /* this push: bytes put (patches, dense writes, directories) */

};

/* rows of source s this trainer holds: its FSDP chunk (SHARD) or the whole tensor (owner) */
static int64_t src_first_row(const rf_engine *e, const rf_src_tensor *s)
{
  int64_t first, rows;
  rf_src_rows(s, e->tr->rk->shard, &first, &rows);
  return first;
}

size_t rf__trainer_src_bytes(const rf_engine *e, uint32_t id)
{
  if (id >= e->p->n_src || !e->tr->src_need[id]) return 0;
  const rf_src_tensor *s = &e->p->src[id];
  int64_t first, rows;
  rf_src_rows(s, e->tr->rk->shard, &first, &rows);
  return (size_t)rows * (size_t)s->cols * rf_dtype_size(s->dtype);
}

/* ---------------------------------- staging ----------------------------------------------- */

/* kernel shape and e->tr->items of op o: pointers into the bound sources and into `dest`, which holds
 * the slot bytes from slot offset lo on (the arena from 0, or with delta the scratch image of o's
 * group) */
static void op_items(rf_engine *e, const rf_op *o, rfk_shape *sh, uint8_t *dest, uint64_t lo)
{
  const rf_plan *p = e->p;
  *sh = (rfk_shape){.src_dtype = o->src_dtype, .out_dtype = rf_op_fp8(o) ? RFK_FP8 : o->dst_dtype,
                    .ue8m0 = o->kind == RF_OP_FP8_REQUANT ? RFK_SCALE_REQUANT
                             : p->scale_fmt == RF_SCALE_UE8M0 ? RFK_SCALE_UE8M0 : RFK_SCALE_FP32, .rows = o->rows, .cols = o->cols,
                    .src_ld = p->src[o->src].cols, .out_ld = o->cols,
                    .scale_ld = (o->cols + RF_FP8_BLOCK - 1) / RF_FP8_BLOCK};
  for (uint32_t i = 0; i < o->count; i++) {
    uint32_t sid = o->src + i * o->src_step;
    const rf_src_tensor *s = &p->src[sid];
    int64_t row = o->row0 + (int64_t)i * o->row_step - src_first_row(e, s);
    int64_t col = o->col0 + (int64_t)i * o->col_step;
    e->tr->items[i].src = (const uint8_t *)e->tr->src_ptr[sid] + ((size_t)row * (size_t)s->cols + (size_t)col) * rf_dtype_size(s->dtype);
    e->tr->items[i].out = dest + (o->out + (uint64_t)i * o->out_step - lo);
    e->tr->items[i].scale = rf_op_fp8(o) ? (float *)(dest + (o->scale + (uint64_t)i * o->scale_step - lo)) : NULL;
  }
}

static int skip_op(const rf_engine *e, const rf_op *o) { return e->cfg.direct && o->direct; }

/* delta pushes with a base encode: their groups stage into the scratch, and the encode makes the
 * patches and updates the slots. Without a base every target goes dense: staging writes the slots. */
static int encoding(const rf_engine *e) { return rf__delta_base(e->tr->dt) != 0; }

/* where group k (relative to the rank) stages: the arena, or its scratch image when encoding */
static uint8_t *stage_dest(rf_engine *e, uint32_t k, uint64_t *lo)
{
  uint8_t *d = rf__delta_dest(e->tr->dt, k, lo);
  if (d) return d;
  *lo = 0;
  return e->tr->arena;
}

/* the staging thread: for each push, every group of this rank in order; errors stop it */
static void *stager_main(void *arg)
{
  rf_engine *e = arg;
  const rf_plan *p = e->p;
  pthread_mutex_lock(&e->tr->smu);
  for (;;) {
    while (!e->tr->stager_quit && e->tr->stage_version == 0) pthread_cond_wait(&e->tr->scv, &e->tr->smu);
    if (e->tr->stager_quit) break;
    pthread_mutex_unlock(&e->tr->smu);
    for (uint32_t i = 0; i < e->tr->rk->group_count && !atomic_load(&e->tr->stage_failed); i++) {
      const rf_group *gr = &p->groups[e->tr->rk->group_first + i];
      uint64_t t0 = rf__now_ns(), lo;
      uint8_t *dest = stage_dest(e, i, &lo);
      int rc = 0;
      for (uint32_t k = 0; k < gr->op_count && !rc; k++) {
        const rf_op *o = &p->ops[gr->op_first + k];
        if (skip_op(e, o)) continue;
        rfk_shape sh;
        op_items(e, o, &sh, dest, lo);
        if ((rc = rfk_ref_run(&sh, e->tr->items, (int)o->count)))
          snprintf(e->tr->stage_err, sizeof e->tr->stage_err, "staging tensor '%s'%s for version %llu: %s", p->src[o->src].name,
                   o->count > 1 ? " (or another of its group)" : "", (unsigned long long)e->tr->stage_version,
                   rfk_strerror(rc));
      }
      if (!rc && (rc = rf__delta_encode_host(e->tr->dt, i)))
        snprintf(e->tr->stage_err, sizeof e->tr->stage_err, "delta encode of group %u for version %llu: %s",
                 e->tr->rk->group_first + i, (unsigned long long)e->tr->stage_version, rfk_strerror(rc));
      atomic_fetch_add(&e->tr->stage_ns, rf__now_ns() - t0);
      if (rc) atomic_store(&e->tr->stage_failed, 1);
      else atomic_store(&e->tr->g_staged, i + 1);
    }
    pthread_mutex_lock(&e->tr->smu);
    e->tr->stage_version = 0;
  }
  pthread_mutex_unlock(&e->tr->smu);
  return NULL;
}

static rf_status start_stager(rf_engine *e)
{
  if (pthread_mutex_init(&e->tr->smu, NULL) || pthread_cond_init(&e->tr->scv, NULL))
    return rf__fail(e, RF_ERR_NOMEM, "staging thread: mutex");
  if (pthread_create(&e->tr->stager, NULL, stager_main, e)) return rf__fail(e, RF_ERR_NOMEM, "staging thread");
  e->tr->stager_on = 1;
  return RF_OK;
}

static void stop_stager(rf_engine *e)
{
  if (!e->tr->stager_on) return;
  pthread_mutex_lock(&e->tr->smu);
  e->tr->stager_quit = 1;
  pthread_cond_signal(&e->tr->scv);
  pthread_mutex_unlock(&e->tr->smu);
  pthread_join(e->tr->stager, NULL);
  pthread_cond_destroy(&e->tr->scv);
  pthread_mutex_destroy(&e->tr->smu);
  e->tr->stager_on = 0;
}

static int stager_idle(rf_engine *e)
{
  if (!e->tr->stager_on) return 1;
  pthread_mutex_lock(&e->tr->smu);
  int idle = e->tr->stage_version == 0;
  pthread_mutex_unlock(&e->tr->smu);
  return idle;
}

static rf_status host_start(rf_engine *e, void *stream)
{
  (void)stream;
  pthread_mutex_lock(&e->tr->smu);
  atomic_store(&e->tr->g_staged, 0);
  atomic_store(&e->tr->stage_failed, 0);
  e->tr->stage_version = e->tr->version;
  pthread_cond_signal(&e->tr->scv);
  pthread_mutex_unlock(&e->tr->smu);
  return RF_OK;
}

static rf_status host_poll(rf_engine *e)
{
  if (atomic_load(&e->tr->stage_failed)) return rf__fail(e, RF_ERR_KERNEL, "%s", e->tr->stage_err);
  e->tr->g_ready = e->tr->rk->group_first + atomic_load(&e->tr->g_staged);
  return RF_OK;
}

static rf_status host_settle(rf_engine *e, uint64_t version) { return (void)e, (void)version, RF_OK; }

static const stager stage_host = {.open = start_stager, .settle = host_settle, .start = host_start, .poll = host_poll,
                                  .idle = stager_idle};

static rf_status cuda_open(rf_engine *e) { return rf__cuda_groups(e, e->tr->rk->group_count); }

static rf_status cuda_settle(rf_engine *e, uint64_t version)
{
  char err[300];
  if (e->cfg.delta && rf__cuda_idle(e, e->timeout_ms, err, sizeof err))
    return rf__fail(e, RF_ERR_TIMEOUT, "version %llu: %s", (unsigned long long)version, err);
  return RF_OK;
}

/* every group goes onto the caller's stream at once; writes go out as their events complete */
static rf_status cuda_start(rf_engine *e, void *stream)
{
  const rf_plan *p = e->p;
  rf__trainer *tr = e->tr;
  for (uint32_t k = 0; k < tr->rk->group_count; k++) {
    const rf_group *gr = &p->groups[tr->rk->group_first + k];
    uint64_t lo;
    uint8_t *dest = stage_dest(e, k, &lo);
    for (uint32_t i = 0; i < gr->op_count; i++) {
      const rf_op *o = &p->ops[gr->op_first + i];
      if (skip_op(e, o)) continue;
      rfk_shape sh;
      op_items(e, o, &sh, dest, lo);
      RF_CHECK(rf__cuda_stage_op(e, &sh, tr->items, (int)o->count, stream, p->src[o->src].name, tr->version));
    }
    RF_CHECK(rf__delta_encode_cuda(e, tr->dt, k, stream, tr->version));
    RF_CHECK(rf__cuda_group_done(e, k, stream));
  }
  return RF_OK;
}

static rf_status cuda_poll(rf_engine *e)
{
  rf__trainer *tr = e->tr;
  uint32_t end = tr->rk->group_first + tr->rk->group_count;
  char err[300];
  for (int r; tr->g_ready < end; tr->g_ready++) {
    r = rf__cuda_group_ready(e, tr->g_ready - tr->rk->group_first, tr->g_ready, e->p->groups[tr->g_ready].layer, err,
                             sizeof err, &e->ctr.stage_ns);
    if (r == 0) break;
    if (r < 0) return rf__fail(e, RF_ERR_KERNEL, "version %llu: %s", (unsigned long long)tr->version, err);
  }
  return RF_OK;
}

static int cuda_idle(rf_engine *e) { return (void)e, 1; }

static const stager stage_cuda = {.open = cuda_open, .settle = cuda_settle, .start = cuda_start, .poll = cuda_poll,
                                  .idle = cuda_idle};

/* ---------------------------------- open / close ------------------------------------------ */

rf_status rf__trainer_open(rf_engine *e)
{
  const rf_plan *p = e->p;
  if (e->cfg.rank >= p->trainers)
    return rf__fail(e, RF_ERR_ARG, "trainer rank %u out of range (plan %s has %u trainers)", e->cfg.rank, p->name,
                    p->trainers);
  if (!(e->tr = calloc(1, sizeof *e->tr))) return rf__fail(e, RF_ERR_NOMEM, "trainer state");
  e->tr->rk = &p->ranks[e->cfg.rank];
  e->tr->src_ptr = calloc(p->n_src ? p->n_src : 1, sizeof *e->tr->src_ptr);
  e->tr->src_need = calloc(p->n_src ? p->n_src : 1, 1);
  e->tr->recv_tg = malloc((p->receivers ? p->receivers : 1) * sizeof *e->tr->recv_tg);
  if (!e->tr->src_ptr || !e->tr->src_need || !e->tr->recv_tg) return rf__fail(e, RF_ERR_NOMEM, "trainer tables");
  uint32_t max_count = 1;
  for (uint32_t i = 0; i < e->tr->rk->op_count; i++) {
    const rf_op *o = &p->ops[e->tr->rk->op_first + i];
    for (uint32_t k = 0; k < o->count; k++) {
      const rf_src_tensor *s = &p->src[o->src + k * o->src_step];
      /* one kernel call per op: every item must share the row pitch and dtype of the first */
      if (s->cols != p->src[o->src].cols || s->dtype != o->src_dtype)
        return rf__fail(e, RF_ERR_ARG, "plan %s: op %u mixes sources of different shape or dtype ('%s', '%s')", p->name,
                        e->tr->rk->op_first + i, p->src[o->src].name, s->name);
      /* sources read only by direct writes must be bound too: the writes read them */
      e->tr->src_need[o->src + k * o->src_step] = 1;
    }
    if (o->count > max_count) max_count = o->count;
  }
  for (uint32_t i = 0; i < e->tr->rk->write_count; i++) {
    const rf_write *w = &p->writes[e->tr->rk->write_first + i];
    for (uint32_t k = 0; k < w->piece_count; k++) e->tr->src_need[p->pieces[w->piece_first + k].src] = 1;
  }
  e->tr->items = calloc(max_count, sizeof *e->tr->items);
  e->tr->n_tg = e->tr->rk->target_count;
  e->tr->tg = calloc(e->tr->n_tg ? e->tr->n_tg : 1, sizeof *e->tr->tg);
  if (!e->tr->items || !e->tr->tg) return rf__fail(e, RF_ERR_NOMEM, "trainer tables");
  if ((uint64_t)e->tr->rk->target_first + e->tr->n_tg > p->n_targets)
    return rf__fail(e, RF_ERR_ARG, "plan %s: rank %u's targets lie outside the target table", p->name, e->cfg.rank);
  for (uint32_t r = 0; r < p->receivers; r++) e->tr->recv_tg[r] = RF_NONE;
  /* the plan's targets (gen/index.lua), each checked to be a peer row of this rank whose writes
   * are this rank's writes to that receiver */
  uint32_t dir = 0;
  for (uint32_t n = 0; n < e->tr->n_tg; n++) {
    const rf_target *x = &p->targets[e->tr->rk->target_first + n];
    const rf_peer *q = x->peer < p->n_peers ? &p->peers[x->peer] : NULL;
    if (x->receiver >= p->receivers || e->tr->recv_tg[x->receiver] != RF_NONE || !q || q->trainer != e->cfg.rank ||
        x->peer - p->recv[x->receiver].peer_first >= p->recv[x->receiver].peer_count || x->dir_first != dir ||
        (uint64_t)q->write_first + q->writes > p->n_recv_writes)
      return rf__fail(e, RF_ERR_ARG, "plan %s: target %u of rank %u is not one of its peer rows", p->name,
                      e->tr->rk->target_first + n, e->cfg.rank);
    rf__target *t = &e->tr->tg[n];
    t->recv = x->receiver;
    t->peer = x->peer;
    t->wl = &p->recv_writes[q->write_first];
    t->nw = q->writes;
    t->dir_off = x->dir_off;
    t->dir_first = x->dir_first;
    dir += t->nw;
    for (uint32_t k = 0; k < t->nw; k++) {
      uint32_t w = t->wl[k].write;
      if (w < e->tr->rk->write_first || w - e->tr->rk->write_first >= e->tr->rk->write_count ||
          p->writes[w].receiver != t->recv)
        return rf__fail(e, RF_ERR_ARG, "plan %s: write %u listed for receiver %u is not rank %u's write to it", p->name, w,
                        t->recv, e->cfg.rank);
    }
    uint32_t nd = p->recv[t->recv].dst_count ? p->recv[t->recv].dst_count : 1;
    t->raddr = calloc(nd, sizeof *t->raddr);
    t->rkey = calloc(nd, sizeof *t->rkey);
    if (!t->raddr || !t->rkey) return rf__fail(e, RF_ERR_NOMEM, "trainer tables");
    snprintf(t->where, sizeof t->where, "not connected");
    e->tr->recv_tg[t->recv] = n;
  }
  if (dir != e->tr->rk->write_count)
    return rf__fail(e, RF_ERR_ARG, "plan %s: rank %u's targets list %u writes, it has %u", p->name, e->cfg.rank, dir,
                    e->tr->rk->write_count);
  size_t bytes = e->tr->rk->arena_bytes ? e->tr->rk->arena_bytes : 256;
  RF_CHECK(rf__ucx_open(e, 2 * e->tr->n_tg + 2)); /* per target one endpoint, and one closing */
  RF_CHECK(e->mem->alloc(e, bytes, (void **)&e->tr->arena, "slot arena"));
  RF_CHECK(rf__ucx_map(e, e->tr->arena, bytes, &e->tr->arena_memh));
  if (e->cfg.delta) {
    RF_CHECK(rf__delta_open(e, e->tr->rk, e->tr->arena, &e->tr->dt));
  }
  e->tr->stg = e->mem->device ? &stage_cuda : &stage_host;
  return e->tr->stg->open(e);
}

static void drop_keys(rf_engine *e, rf__target *t)
{
  for (uint32_t k = 0; k < e->p->recv[t->recv].dst_count; k++)
    if (t->rkey[k]) {
      rf__ucx_rkey_destroy(t->rkey[k]);
      t->rkey[k] = NULL;
    }
  if (t->area_rkey) rf__ucx_rkey_destroy(t->area_rkey);
  if (t->dir_rkey) rf__ucx_rkey_destroy(t->dir_rkey);
  t->area_rkey = t->dir_rkey = NULL;
  t->have_keys = 0;
}

void rf__trainer_close(rf_engine *e)
{
  if (!e->tr) return;
  stop_stager(e);
  for (uint32_t i = 0; e->tr->tg && i < e->tr->n_tg; i++) {
    rf__target *t = &e->tr->tg[i];
    if (e->ux && t->rkey) drop_keys(e, t);
    free(t->raddr);
    free(t->rkey);
    free(t->blob);
  }
  if (e->ux && e->tr->arena_memh) rf__ucx_unmap(e, e->tr->arena_memh);
  e->mem->free(e, e->tr->arena);
  rf__delta_close(e, e->tr->dt);
  free(e->tr->tg);
  free(e->tr->recv_tg);
  free(e->tr->items);
  free(e->tr->src_ptr);
  free(e->tr->src_need);
  free(e->tr);
  e->tr = NULL;
}

rf_status rf__trainer_bind(rf_engine *e, uint32_t id, const void *ptr, size_t bytes)
{
  const rf_plan *p = e->p;
  if (e->tr->pushing) return rf__fail(e, RF_ERR_STATE, "rf_bind_src during the push of version %llu", (unsigned long long)e->tr->version);
  if (id >= p->n_src) return rf__fail(e, RF_ERR_ARG, "source %u out of range (%u sources)", id, p->n_src);
  const rf_src_tensor *s = &p->src[id];
  if (!e->tr->src_need[id])
    return rf__fail(e, RF_ERR_ARG, "tensor '%s': trainer rank %u reads nothing of it (owner shard %d)", s->name,
                    e->cfg.rank, s->shard == RF_NONE ? -1 : (int)s->shard);
  size_t want = rf__trainer_src_bytes(e, id);
  if (!ptr) return rf__fail(e, RF_ERR_ARG, "tensor '%s': NULL pointer", s->name);
  if (bytes != want)
    return rf__fail(e, RF_ERR_SIZE, "tensor '%s' (source %u): bound %zu bytes, rank %u holds %zu (%lld rows x %lld %s)",
                    s->name, id, bytes, e->cfg.rank, want, (long long)(want / ((size_t)s->cols * rf_dtype_size(s->dtype))),
                    (long long)s->cols, s->dtype == RF_FP32 ? "fp32" : "bf16");
  RF_CHECK(e->mem->check(e, ptr, bytes, s->name));
  e->tr->src_ptr[id] = ptr;
  return RF_OK;
}

/* ---------------------------------- connections ------------------------------------------- */

static void set_why(rf__target *t, rf_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_why(rf__target *t, rf_status st, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->why, sizeof t->why, fmt, ap);
  va_end(ap);
  t->st = st;
}

static int active(const rf__target *t) { return t->push >= P_WAITING && t->push <= P_DONE_SENT; }

static rf_status start_connect(rf_engine *e, rf__target *t);

/* a push whose connection to t failed before t granted it anything (a receiver restarted since the
 * last push: its old connection fails on BEGIN) dials it again, once, before t counts as down; 1
 * when the new connection is on its way */
static int redial(rf_engine *e, rf__target *t, rf_status st)
{
  if (!e->tr->pushing || t->redialed || t->refused || st != RF_ERR_PEER || (t->push != P_IDLE && t->push != P_WAITING) ||
      (!t->blob && !t->ip[0]))
    return 0;
  t->redialed = 1;
  t->push = P_IDLE; /* asks for the version again once WELCOME comes */
  return start_connect(e, t) == RF_OK;
}

/* the connection is gone: close it; a push to it fails (its writes, if any, are fenced) */
static void down(rf_engine *e, rf__target *t, rf_status st, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void down(rf_engine *e, rf__target *t, rf_status st, const char *fmt, ...)
{
  char why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  rf__changed(e);
  if (t->ep) {
    if (t->have_keys) drop_keys(e, t);
    rf__ucx_close_ep(e, t->ep);
    t->ep = 0;
  }
  t->conn = T_DOWN;
  if (redial(e, t, st)) return;
  if (active(t) || (e->tr->pushing && t->push == P_IDLE)) {
    t->push = e->cfg.skip_down && t->push <= P_WAITING ? P_SKIPPED : P_FAILED;
    set_why(t, st, "receiver %u (%s): %s", t->recv, t->where, why);
  } else {
    set_why(t, st, "receiver %u (%s): %s", t->recv, t->where, why);
  }
}

static void send_msg(rf_engine *e, rf__target *t, uint32_t type, uint64_t version, uint64_t value)
{
  rf__hdr h = {.magic = RF__MAGIC, .type = type, .session = t->session, .version = version, .value = value,
               .rank = e->cfg.rank, .recv = t->recv};
  h.mac = rf__msg_mac(&t->key, &h, NULL);
  if (rf__ucx_send(e, t->ep, &h, NULL) != RF_OK) down(e, t, RF_ERR_PEER, "sending %s failed: %s", rf__msg_name(type), e->err);
}

/* DONE of a push that went as patches: their bytes and the version they apply to */
static void send_done_delta(rf_engine *e, rf__target *t)
{
  rf__hdr h = {.magic = RF__MAGIC, .type = RF__DONE, .session = t->session, .version = e->tr->version,
               .value = t->patch_sent, .hash = rf__delta_base(e->tr->dt), .rank = e->cfg.rank, .recv = t->recv, .mode = RF__DONE_DELTA};
  h.mac = rf__msg_mac(&t->key, &h, NULL);
  if (rf__ucx_send(e, t->ep, &h, NULL) != RF_OK) down(e, t, RF_ERR_PEER, "sending DONE failed: %s", e->err);
}

/* start a handshake (non-blocking): an endpoint, then HELLO */
static rf_status start_connect(rf_engine *e, rf__target *t)
{
  if (t->ep) down(e, t, RF_ERR_PEER, "replaced by a new connection");
  rf_status st;
  const void *addr = NULL;
  size_t alen = 0;
  rf__blob_view v;
  if (t->blob) {
    char why[200];
    RF_CHECK(rf__blob_parse(e->p, &e->token_key, t->blob, t->blob_len, &v, why, sizeof why) == RF_OK
                 ? RF_OK : rf__fail(e, RF_ERR_BLOB, "metadata blob of receiver %u rejected: %s", t->recv, why));
    st = rf__ucx_connect_addr(e, v.worker_addr, v.worker_addr_len, &t->ep);
    if (st == RF_OK) st = rf__ucx_worker_address(e, &addr, &alen);
  } else {
    st = rf__ucx_connect(e, t->ip, t->port, &t->ep);
  }
  if (st != RF_OK) {
    t->ep = 0;
    return rf__fail(e, st, "receiver %u (%s): %s", t->recv, t->where, e->err);
  }
  t->session = rf__random64() | 1;
  t->nonce_t = rf__random64();
  t->t0 = rf__now_ns();
  t->conn = T_HELLO;
  rf__hdr h = {.magic = RF__MAGIC, .type = RF__HELLO, .session = t->session, .nonce = t->nonce_t,
               .hash = e->p->layout_hash, .rank = e->cfg.rank, .recv = t->recv, .len = (uint32_t)alen};
  h.mac = rf__msg_mac(&e->token_key, &h, addr);
  st = rf__ucx_send(e, t->ep, &h, addr);
  if (st != RF_OK) {
    down(e, t, st, "sending HELLO: %s", e->err);
    return rf__fail(e, st, "%s", t->why);
  }
  return RF_OK;
}

static void take_welcome(rf_engine *e, rf__target *t, const rf__hdr *h, const uint8_t *payload)
{
  rf__blob_view v;
  char why[200];
  if (rf__blob_parse(e->p, &e->token_key, payload, h->len, &v, why, sizeof why) != RF_OK)
    return down(e, t, RF_ERR_BLOB, "its metadata was rejected: %s", why);
  if (v.recv != t->recv) return down(e, t, RF_ERR_BLOB, "its metadata is for receiver %u", v.recv);
  t->have_keys = 1; /* from the first key on: a failure part way destroys the keys unpacked so far */
  for (uint32_t i = 0; i < v.n; i++) {
    rf__blob_entry en;
    rf__blob_entry_at(&v, i, &en);
    t->raddr[i] = en.addr;
    if (rf__ucx_rkey(e, t->ep, en.rkey, &t->rkey[i]) != RF_OK)
      return down(e, t, RF_ERR_BLOB, "remote key of '%s': %s", e->p->dst[en.id].name, e->err);
  }
  for (uint32_t i = v.n; i < v.n + v.n_areas; i++) { /* delta plans: the patch area, then the directory */
    rf__blob_entry en;
    rf__blob_entry_at(&v, i, &en);
    int area = en.id == RF__AREA_PATCH;
    *(area ? &t->area_raddr : &t->dir_raddr) = en.addr;
    if (rf__ucx_rkey(e, t->ep, en.rkey, area ? &t->area_rkey : &t->dir_rkey) != RF_OK)
      return down(e, t, RF_ERR_BLOB, "remote key of its %s: %s", area ? "patch area" : "directory", e->err);
  }
  t->complete = h->value;
  t->conn = T_UP;
  t->why[0] = 0;
  t->st = RF_OK;
  /* a push under way asks for its version now */
  if (e->tr->pushing && t->push == P_IDLE) {
    if (e->tr->version <= t->complete) {
      t->push = P_FAILED;
      set_why(t, RF_ERR_STALE, "receiver %u (%s): version %llu is not newer than its complete version %llu", t->recv,
              t->where, (unsigned long long)e->tr->version, (unsigned long long)t->complete);
      return;
    }
    t->push = P_WAITING;
    t->delta = encoding(e) && t->complete == rf__delta_base(e->tr->dt);
    send_msg(e, t, RF__BEGIN, e->tr->version, 0);
  }
}

static void on_msg(rf_engine *e, rf__target *t, const rf__hdr *h, const uint8_t *payload)
{
  /* a REJECT names only the session: the receiver tells an unauthenticated peer nothing else */
  if (h->session != t->session || (h->type != RF__REJECT && h->recv != t->recv)) {
    e->ctr.ignored++;
    return;
  }
  if (t->conn == T_HELLO) {
    if (h->type == RF__REJECT) t->refused = 1;
    if (h->type == RF__REJECT)
      return down(e, t, RF_ERR_PEER,
                  "rejected trainer rank %u (wrong receiver, port, token, plan or rank: the receiver's rf_last_error "
                  "says which)", e->cfg.rank);
    if (h->type != RF__CHALLENGE) return;
    rf__hdr want = *h;
    want.hash = e->p->layout_hash;
    want.mac = 0;
    if (h->value != t->nonce_t || h->len || h->mac != rf__msg_mac(&e->token_key, &want, NULL)) t->refused = 1;
    if (t->refused)
      return down(e, t, RF_ERR_PEER,
                  "did not prove it is receiver %u of plan %s with this token (wrong port, token or plan)", t->recv,
                  e->p->name);
    t->nonce_r = h->nonce;
    t->key = rf__session_key(&e->token_key, t->nonce_t, t->nonce_r);
    /* blob mode: the receiver kept nothing of our HELLO, so AUTH brings back what its nonce covers
     * (the issue time in version) and our worker address, for the endpoint it makes once we proved
     * the token over its nonce */
    const void *addr = NULL;
    size_t alen = 0;
    if (t->blob) rf__ucx_worker_address(e, &addr, &alen);
    rf__hdr a = {.magic = RF__MAGIC, .type = RF__AUTH, .session = t->session, .version = h->version,
                 .value = t->nonce_t, .nonce = t->nonce_r, .hash = e->p->layout_hash, .rank = e->cfg.rank,
                 .recv = t->recv, .len = (uint32_t)alen};
    a.mac = rf__msg_mac(&e->token_key, &a, addr);
    a.hash = 0;
    t->conn = T_AUTH;
    if (rf__ucx_send(e, t->ep, &a, addr) != RF_OK) down(e, t, RF_ERR_PEER, "sending AUTH: %s", e->err);
    return;
  }
  if (h->type == RF__REJECT && t->conn == T_AUTH) {
    t->refused = 1;
    return down(e, t, RF_ERR_PEER, "rejected trainer rank %u's proof of the token (wrong token)", e->cfg.rank);
  }
  if (h->mac != rf__msg_mac(&t->key, h, payload)) {
    e->ctr.ignored++;
    return;
  }
  if (t->conn == T_AUTH) {
    if (h->type == RF__WELCOME) take_welcome(e, t, h, payload);
    return;
  }
  char text[300];
  snprintf(text, sizeof text, "%.*s", (int)(h->len < sizeof text ? h->len : sizeof text - 1), (const char *)payload);
  if (h->type == RF__GRANT || h->type == RF__REFUSE || h->type == RF__ACK) {
    if (h->type == RF__REFUSE || h->type == RF__ACK) {
      if (h->type == RF__REFUSE && h->value > t->complete) t->complete = h->value;
      if (h->type == RF__ACK && h->value == 1 && h->version > t->complete) t->complete = h->version;
    }
    if (!e->tr->pushing || h->version != e->tr->version || !active(t)) return; /* about another version */
    if (h->type == RF__GRANT && t->push == P_WAITING) t->push = P_WRITING;
    else if (h->type == RF__REFUSE) {
      t->push = P_FAILED;
      set_why(t, RF_ERR_STALE, "%s (its complete version is %llu)", text, (unsigned long long)h->value);
    } else if (h->type == RF__ACK && t->push == P_DONE_SENT) {
      t->push = h->value == 1 ? P_COMPLETE : P_FAILED;
      if (h->value != 1) set_why(t, RF_ERR_TORN, "receiver %u (%s): %s", t->recv, t->where, text);
    }
  }
}

static rf__target *target_of_ep(rf_engine *e, rf__ep ep)
{
  for (uint32_t i = 0; ep && i < e->tr->n_tg; i++)
    if (e->tr->tg[i].ep == ep) return &e->tr->tg[i];
  return NULL;
}

static void events(rf_engine *e)
{
  rf__ucx_progress(e);
  const rf__ev *ev;
  while (rf__ucx_next(e, &ev)) {
    rf__target *t = target_of_ep(e, ev->ep);
    if (!t) continue; /* a closed endpoint's late news */
    rf__changed(e);
    if (ev->kind == RF__EV_FAILED) {
      down(e, t, RF_ERR_PEER, "%s", ev->why);
    } else if (ev->kind == RF__EV_MSG && ev->len >= sizeof(rf__hdr)) {
      rf__hdr h;
      memcpy(&h, ev->msg, sizeof h);
      on_msg(e, t, &h, ev->big ? ev->big : ev->msg + sizeof h);
    } else if (ev->kind == RF__EV_FLUSHED && t->push == P_FLUSHING && ev->tag == e->tr->version) {
      /* every write of this version to t is in the receiver's memory: tell it */
      t->push = P_DONE_SENT;
      if (t->delta) send_done_delta(e, t);
      else send_msg(e, t, RF__DONE, e->tr->version, e->p->peers[t->peer].bytes);
    }
  }
  for (uint32_t i = 0; i < e->tr->n_tg; i++) {
    rf__target *t = &e->tr->tg[i];
    if ((t->conn == T_HELLO || t->conn == T_AUTH) && rf__past(t->t0, e->timeout_ms))
      down(e, t, RF_ERR_TIMEOUT, "no answer to %s within %u ms", t->conn == T_HELLO ? "HELLO" : "AUTH", e->timeout_ms);
  }
}

/* connect and authenticate within timeout_ms. A connection the transport drops before the
 * handshake ends (the listener was full: strangers hold a slot until their handshake deadline) is
 * tried again; a receiver that refused us is not. */
static int handshake_over(rf_engine *e, uint64_t i) { return e->tr->tg[i].conn != T_HELLO && e->tr->tg[i].conn != T_AUTH; }
static int never(rf_engine *e, uint64_t unused) { return (void)e, (void)unused, 0; }

static rf_status connect_wait(rf_engine *e, rf__target *t)
{
  uint64_t t0 = rf__now_ns();
  for (;;) {
    t->refused = 0;
    RF_CHECK(start_connect(e, t));
    /* the lock is let go while this waits (other threads' calls go on); the HELLO deadline
     * (events) bounds it */
    while (!rf__drive_until(e, handshake_over, (uint64_t)(t - e->tr->tg), e->timeout_ms)) {
    }
    if (t->conn == T_UP) return RF_OK;
    if (t->refused || t->st == RF_ERR_TIMEOUT || rf__past(t0, e->timeout_ms))
      return rf__fail(e, t->st ? t->st : RF_ERR_PEER, "%s", t->why);
    rf__drive_until(e, never, 0, 50); /* let the failed endpoint drain */
  }
}

rf_status rf__trainer_connect(rf_engine *e, uint32_t recv, const char *ip, uint16_t port)
{
  if (e->tr->pushing) return rf__fail(e, RF_ERR_STATE, "rf_connect during a push");
  if (recv >= e->p->receivers || e->tr->recv_tg[recv] == RF_NONE)
    return rf__fail(e, RF_ERR_ARG, "trainer rank %u does not write to receiver %u", e->cfg.rank, recv);
  if (!ip) return rf__fail(e, RF_ERR_ARG, "rf_connect: no address for receiver %u", recv);
  rf__target *t = &e->tr->tg[e->tr->recv_tg[recv]];
  if (strlen(ip) >= sizeof t->ip) return rf__fail(e, RF_ERR_ARG, "rf_connect: address '%s' too long", ip);
  free(t->blob);
  t->blob = NULL;
  snprintf(t->ip, sizeof t->ip, "%s", ip);
  t->port = port;
  snprintf(t->where, sizeof t->where, "%s:%u", ip, port);
  return connect_wait(e, t);
}

rf_status rf__trainer_import(rf_engine *e, const void *blob, size_t len)
{
  if (e->tr->pushing) return rf__fail(e, RF_ERR_STATE, "rf_import during a push");
  rf__blob_view v;
  char why[200];
  if (!blob || rf__blob_parse(e->p, &e->token_key, blob, len, &v, why, sizeof why) != RF_OK)
    return rf__fail(e, RF_ERR_BLOB, "metadata blob rejected: %s", blob ? why : "NULL");
  if (e->tr->recv_tg[v.recv] == RF_NONE)
    return rf__fail(e, RF_ERR_ARG, "metadata blob is for receiver %u, which trainer rank %u does not write to", v.recv,
                    e->cfg.rank);
  rf__target *t = &e->tr->tg[e->tr->recv_tg[v.recv]];
  uint8_t *copy = malloc(len);
  if (!copy) return rf__fail(e, RF_ERR_NOMEM, "metadata blob copy");
  memcpy(copy, blob, len);
  free(t->blob);
  t->blob = copy;
  t->blob_len = len;
  snprintf(t->where, sizeof t->where, "blob");
  return connect_wait(e, t);
}

uint64_t rf__trainer_resume(rf_engine *e)
{
  rf__held(e, "rf_resume_version");
  uint64_t v = e->tr->last_attempt;
  for (uint32_t i = 0; i < e->tr->n_tg; i++)
    if (e->tr->tg[i].complete > v) v = e->tr->tg[i].complete;
  return v + 1;
}

/* ---------------------------------- push ---------------------------------------------------- */

/* no request of an earlier push in flight, its staging ended */
static int quiet(rf_engine *e, uint64_t unused) { return (void)unused, !rf__ucx_ops_all(e) && e->tr->stg->idle(e); }

/* staging could not start: the push ended before any write, and rf_wait / rf_progress say why */
static rf_status stage_failed(rf_engine *e, rf_status s)
{
  e->tr->pushing = 0;
  e->tr->push_status = s;
  rf__changed(e);
  return s;
}

rf_status rf__trainer_push(rf_engine *e, uint64_t version, void *stream)
{
  const rf_plan *p = e->p;
  if (e->tr->pushing)
    return rf__fail(e, RF_ERR_STATE, "rf_push while version %llu is still being pushed", (unsigned long long)e->tr->version);
  if (version == 0 || version < e->tr->last_attempt)
    return rf__fail(e, RF_ERR_STALE, "version %llu is older than the last one pushed (%llu)", (unsigned long long)version,
                    (unsigned long long)e->tr->last_attempt);
  for (uint32_t i = 0; i < e->tr->n_tg; i++)
    if (e->tr->tg[i].conn == T_UP && version <= e->tr->tg[i].complete)
      return rf__fail(e, RF_ERR_STALE,
                      "version %llu is not newer than receiver %u's complete version %llu (rf_resume_version says %llu)",
                      (unsigned long long)version, e->tr->tg[i].recv, (unsigned long long)e->tr->tg[i].complete,
                      (unsigned long long)rf__trainer_resume(e));
  for (uint32_t i = 0; i < p->n_src; i++)
    if (e->tr->src_need[i] && !e->tr->src_ptr[i])
      return rf__fail(e, RF_ERR_UNBOUND, "tensor '%s' (source %u) is not bound on trainer rank %u", p->src[i].name, i,
                      e->cfg.rank);
  /* the slot arena is reused only once no request of an earlier push can still read it */
  if (!rf__drive_until(e, quiet, 0, e->timeout_ms))
    return rf__fail(e, RF_ERR_TIMEOUT, "version %llu: %u operations of an abandoned push still outstanding after %u ms",
                    (unsigned long long)version, rf__ucx_ops_all(e), e->timeout_ms);
  RF_CHECK(e->tr->stg->settle(e, version));
  e->tr->version = version;
  e->tr->last_attempt = version;
  e->tr->pushing = 1;
  e->tr->push_reported = 0;
  e->tr->push_status = RF_OK;
  e->tr->push_t0 = rf__now_ns();
  e->tr->g_ready = e->tr->rk->group_first;
  e->tr->push_bytes = 0;
  if (e->cfg.delta) { /* the slots are a base only until this push starts rewriting them */
    rf__delta_begin(e->tr->dt);
  }
  rf_status st = e->tr->stg->start(e, stream);
  if (st != RF_OK) return stage_failed(e, st); /* nothing was written: the push ends here */
  for (uint32_t i = 0; i < e->tr->n_tg; i++) {
    rf__target *t = &e->tr->tg[i];
    t->wcur = 0;
    t->why[0] = 0;
    t->st = RF_OK;
    t->push = P_IDLE;
    t->patch_sent = 0;
    t->dir_posted = 0;
    t->redialed = 0;
    t->delta = encoding(e) && t->complete == rf__delta_base(e->tr->dt); /* decided again if it connects during the push */
    if (t->conn == T_UP) {
      t->push = P_WAITING;
      send_msg(e, t, RF__BEGIN, version, 0);
    } else if (t->conn == T_DOWN && (t->blob || t->ip[0])) {
      /* down: reconnect in the background; the version is asked for once it is up */
      if (start_connect(e, t) != RF_OK) {
        t->push = e->cfg.skip_down ? P_SKIPPED : P_FAILED;
        set_why(t, RF_ERR_PEER, "%s", e->err);
      }
    } else if (t->conn == T_DOWN) {
      t->push = e->cfg.skip_down ? P_SKIPPED : P_FAILED;
      set_why(t, RF_ERR_PEER, "receiver %u is not connected (rf_connect or rf_import it)", t->recv);
    }
  }
  return RF_OK;
}

/* groups whose slots are ready: CUDA events done, or staged by the host thread. Once every group
 * is, the slots hold this version (delta: the next push's base). */
static rf_status advance_staging(rf_engine *e)
{
  uint32_t end = e->tr->rk->group_first + e->tr->rk->group_count;
  RF_CHECK(e->tr->stg->poll(e));
  if (e->tr->g_ready == end) rf__delta_staged(e->tr->dt, e->tr->version);
  return RF_OK;
}

/* one write of t: its slot bytes (or, with direct writes, its source pieces) into the tensor; when t
 * goes as patches, the region's patch into the write's patch slot instead unless it overflowed, and
 * the write's directory entry */
static rf_status put_write(rf_engine *e, rf__target *t, uint32_t wi)
{
  const rf_plan *p = e->p;
  const rf_write *w = &p->writes[wi];
  uint32_t di = w->dst - p->recv[t->recv].dst_first;
  if (t->delta) {
    const void *patch;
    uint64_t size;
    if (rf__delta_patch(e->tr->dt, wi - e->tr->rk->write_first, t->dir_first + t->wcur, &patch, &size)) {
      t->patch_sent += size;
      e->tr->push_bytes += size;
      e->ctr.patch_bytes += size;
      return rf__ucx_put(e, t->ep, patch, size, t->area_raddr + w->patch_off, t->area_rkey);
    }
    e->ctr.overflows++; /* overflowed its slot: the region goes dense */
  } else if (e->cfg.direct && w->piece_count) {
    rf_status s = RF_OK;
    for (uint32_t k = 0; k < w->piece_count && s == RF_OK; k++) { /* from the sources: one put per range */
      const rf_piece *pc = &p->pieces[w->piece_first + k];
      s = rf__ucx_put(e, t->ep, (const uint8_t *)e->tr->src_ptr[pc->src] + pc->src_off, pc->len,
                      t->raddr[di] + w->dst_off + pc->off, t->rkey[di]);
    }
    e->ctr.direct_writes++;
    e->tr->push_bytes += w->len;
    return s;
  }
  e->tr->push_bytes += w->len;
  return rf__ucx_put(e, t->ep, e->tr->arena + w->slot, w->len, t->raddr[di] + w->dst_off, t->rkey[di]);
}

/* writes of staged groups to granted receivers, round robin, a bounded number in flight; a target
 * that goes as patches puts its directory part after its last write */
static void post(rf_engine *e)
{
  const rf_plan *p = e->p;
  uint32_t ready_end = e->tr->g_ready < e->tr->rk->group_first + e->tr->rk->group_count ? p->groups[e->tr->g_ready].write_first
                                                                             : e->tr->rk->write_first + e->tr->rk->write_count;
  for (int progress = 1; progress;) {
    progress = 0;
    for (uint32_t i = 0; i < e->tr->n_tg; i++) {
      rf__target *t = &e->tr->tg[i];
      if (t->push != P_WRITING) continue;
      if (t->wcur == t->nw && t->delta && !t->dir_posted) {
        if (rf__ucx_ops_all(e) >= e->max_inflight) continue;
        size_t n = 16 * (size_t)t->nw;
        t->dir_posted = 1;
        e->tr->push_bytes += n;
        if (rf__ucx_put(e, t->ep, rf__delta_dir(e->tr->dt, t->dir_first), n, t->dir_raddr + t->dir_off, t->dir_rkey) != RF_OK)
          down(e, t, RF_ERR_PEER, "the directory of version %llu failed: %s", (unsigned long long)e->tr->version, e->err);
        progress = 1;
        continue;
      }
      if (t->wcur == t->nw) {
        t->push = P_FLUSHING;
        if (rf__ucx_flush(e, t->ep, e->tr->version) != RF_OK) down(e, t, RF_ERR_PEER, "flush: %s", e->err);
        continue;
      }
      uint32_t wi = t->wl[t->wcur].write;
      if (wi >= ready_end || rf__ucx_ops_all(e) >= e->max_inflight) continue;
      uint64_t tp = rf__now_ns();
      rf_status s = put_write(e, t, wi);
      e->ctr.post_ns += rf__now_ns() - tp;
      e->ctr.writes++;
      if (s != RF_OK) {
        down(e, t, RF_ERR_PEER, "a write of version %llu failed: %s", (unsigned long long)e->tr->version, e->err);
        continue;
      }
      t->wcur++;
      progress = 1;
    }
  }
}

/* fence: close every endpoint of this push that may have writes in flight */
static void fence_active(rf_engine *e, rf_status st, const char *why)
{
  for (uint32_t i = 0; i < e->tr->n_tg; i++) {
    rf__target *t = &e->tr->tg[i];
    if (!active(t) && !(t->push == P_IDLE && t->conn != T_DOWN)) continue;
    e->ctr.fenced += t->push >= P_WRITING;
    down(e, t, st, "%s", why);
    t->push = P_FAILED;
  }
}

static void finish(rf_engine *e)
{
  rf_status st = RF_OK;
  const char *why = NULL;
  int skipped = 0;
  for (uint32_t i = 0; i < e->tr->n_tg; i++) {
    const rf__target *t = &e->tr->tg[i];
    if (t->push == P_SKIPPED) skipped++;
    if (t->push == P_FAILED && st == RF_OK) {
      st = t->st ? t->st : RF_ERR_PEER;
      why = t->why;
    }
  }
  uint64_t dt = rf__now_ns() - e->tr->push_t0;
  e->tr->pushing = 0;
  rf__changed(e);
  if (st != RF_OK) {
    e->tr->push_status = rf__fail(e, st, "version %llu: %s", (unsigned long long)e->tr->version, why);
    return;
  }
  e->ctr.versions++;
  e->ctr.push_ns += dt;
  e->ctr.last_push_ns = dt;
  e->ctr.bytes += e->tr->push_bytes;
  for (uint32_t i = 0; i < e->tr->n_tg; i++) e->ctr.deltas += e->tr->tg[i].push == P_COMPLETE && e->tr->tg[i].delta;
  if (skipped) {
    char list[160] = "";
    size_t n = 0;
    for (uint32_t i = 0; i < e->tr->n_tg && n + 12 < sizeof list; i++)
      if (e->tr->tg[i].push == P_SKIPPED) n += (size_t)snprintf(list + n, sizeof list - n, "%s%u", n ? "," : "", e->tr->tg[i].recv);
    e->tr->push_status = rf__fail(e, RF_PARTIAL, "version %llu: complete on every live receiver; skipped receiver(s) %s (down)",
                              (unsigned long long)e->tr->version, list);
    return;
  }
  e->tr->push_status = RF_OK;
}

rf_status rf__trainer_step(rf_engine *e)
{
  events(e);
  if (!e->tr->pushing) return RF_OK;
  rf_status s = advance_staging(e);
  if (s != RF_OK) { /* nothing of this version may count: writers already out are fenced */
    char why[512];
    snprintf(why, sizeof why, "%s", e->err);
    fence_active(e, s, why);
    atomic_store(&e->tr->stage_failed, 1);
    finish(e);
    /* the staging error is the push's result, whatever the targets say (all skipped: not PARTIAL) */
    e->tr->push_status = rf__fail(e, s, "%s", why);
    return e->tr->push_status;
  }
  post(e);
  for (uint32_t i = 0; i < e->tr->n_tg; i++)
    if (active(&e->tr->tg[i]) || (e->tr->tg[i].push == P_IDLE && e->tr->tg[i].conn != T_DOWN)) return RF_AGAIN;
  /* no target is left, but the push ends with its staging: a staging error is its result */
  if (e->tr->g_ready < e->tr->rk->group_first + e->tr->rk->group_count) return RF_AGAIN;
  finish(e);
  return e->tr->push_status;
}

rf_status rf__trainer_abort(rf_engine *e, const char *why)
{
  if (!e->tr->pushing) return RF_OK;
  fence_active(e, RF_ERR_TIMEOUT, why);
  atomic_store(&e->tr->stage_failed, 1); /* stop staging; the next push waits for the thread */
  finish(e);
  e->tr->push_status = rf__fail(e, RF_ERR_TIMEOUT, "version %llu: %s", (unsigned long long)e->tr->version, why);
  return e->tr->push_status;
}

void rf__trainer_counters(rf_engine *e, rf_counters *c)
{
  if (e->tr) c->stage_ns += atomic_load(&e->tr->stage_ns); /* the staging thread's share */
}

rf_status rf__trainer_progress(rf_engine *e)
{
  if (!e->prog_on) rf__trainer_step(e);
  if (e->tr->pushing) return RF_AGAIN;
  if (e->tr->push_reported) return RF_OK;
  e->tr->push_reported = 1; /* the push's result, once */
  return e->tr->push_status;
}

static int push_ended(rf_engine *e, uint64_t unused) { return (void)unused, !e->tr->pushing; }

rf_status rf__trainer_wait(rf_engine *e, uint32_t ms)
{
  rf_status s;
  if (!e->tr->pushing || rf__drive_until(e, push_ended, 0, ms)) {
    s = e->tr->push_status; /* ended: its result (again) */
  } else {
    char why[128];
    snprintf(why, sizeof why, "push not finished after %u ms: abandoned, endpoints with writes in flight closed", ms);
    s = rf__trainer_abort(e, why);
  }
  e->tr->push_reported = 1;
  return s;
}

rf_status rf__trainer_report(const rf_engine *e, uint32_t recv, rf_target_state *out)
{
  if (recv >= e->p->receivers || e->tr->recv_tg[recv] == RF_NONE) return RF_ERR_ARG;
  const rf__target *t = &e->tr->tg[e->tr->recv_tg[recv]];
  static const int by_push[] = {[P_WAITING] = RF_TARGET_WAITING, [P_WRITING] = RF_TARGET_WRITING,
                                [P_FLUSHING] = RF_TARGET_FLUSHING, [P_DONE_SENT] = RF_TARGET_FLUSHING,
                                [P_COMPLETE] = RF_TARGET_COMPLETE, [P_FAILED] = RF_TARGET_FAILED,
                                [P_SKIPPED] = RF_TARGET_SKIPPED};
  memset(out, 0, sizeof *out);
  if (t->push != P_IDLE) out->status = by_push[t->push];
  else out->status = t->conn == T_UP ? RF_TARGET_IDLE : t->conn == T_DOWN ? RF_TARGET_DOWN : RF_TARGET_CONNECTING;
  out->complete = t->complete;
  snprintf(out->where, sizeof out->where, "%s", t->where);
  snprintf(out->reason, sizeof out->reason, "%s", t->why);
  return RF_OK;
}
