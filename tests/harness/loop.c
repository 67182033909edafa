/* loop.c (tests/harness/): see loop.h. The coordinating process never touches UCX: it forks receivers (which
 * report their ports), then trainers, and drives versions through pipes. Children write fixed-size
 * records (< PIPE_BUF, so atomic) to one shared pipe. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gpu.h"
#include "kernels.h"
#include "loop.h"
#include "refresh.h"

volatile int rf_loop_alloc_armed;
volatile uint64_t rf_loop_alloc_count, rf_loop_alloc_ucx;

enum { CMD_PUSH = RF_CL_PUSH, CMD_WAIT = RF_CL_WAIT, CMD_DIE = 3, CMD_QUIT = 4, CMD_CONNECT = 5,
       CMD_VERIFY = RF_CL_VERIFY, CMD_CORRUPT = RF_CL_CORRUPT };
enum { CONNECT_ONCE = 1 }; /* CMD_CONNECT: one rf_connect / rf_import, its result as it is (rf_cl_reconnect) */
enum { REC_PORT = RF_CL_PORT, REC_READY = RF_CL_READY, REC_PUSHED = RF_CL_PUSHED, REC_RESULT = RF_CL_RESULT,
       REC_FATAL = RF_CL_FATAL, REC_ARMED = RF_CL_ARMED, REC_VERIFIED = RF_CL_VERIFIED };

typedef struct cmd {
  uint32_t kind, recv;   /* CMD_CONNECT: receiver to (re)connect to, at port */
  uint64_t version;
  uint32_t timeout_ms;   /* CMD_WAIT: give up waiting after this (0: until complete or torn);
                            CMD_PUSH: rf_wait's timeout (0: drive rf_progress until it ends) */
  uint32_t flags;        /* CMD_PUSH: RF_CL_EXIT_AFTER, RF_CL_DIE_HALF; CMD_WAIT: RF_CL_CLOSE_AFTER;
                            CMD_CONNECT: CONNECT_ONCE */
  uint16_t port;
} cmd;

typedef struct rec {
  uint32_t kind, who, is_trainer;
  int32_t pid;
  int32_t status;               /* rf_status */
  uint64_t version, ns, t_done, t_start, bytes, verified, mismatches, stage_ns, post_ns, writes, allocs, allocs_ucx, calls;
  uint64_t deltas, patch_bytes, overflows, apply_ns;
  uint16_t port;
  uint8_t stream_checked, stream_ok;
  uint64_t direct;
  char text[320];
} rec;

_Static_assert(sizeof(rec) < 512, "records must stay far below PIPE_BUF");

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------- data ------------------------------------------------- */

static uint64_t mix(uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* the view rows of source s that trainer `rank` holds (refit_plan.h rf_src_rows): first, count */
static int64_t first_row(const rf_plan *p, uint32_t rank, const rf_src_tensor *s)
{
  int64_t first, rows;
  rf_src_rows(s, p->ranks[rank].shard, &first, &rows);
  return first;
}

static int64_t held_rows(const rf_plan *p, uint32_t rank, const rf_src_tensor *s)
{
  int64_t first, rows;
  rf_src_rows(s, p->ranks[rank].shard, &first, &rows);
  return rows;
}

/* sparse mode: the version whose value element (row gr, col c) of source id holds at version v.
 * 0.5% of the elements change every version, 3% every 7th (each at its own phase), the rest keep
 * their first value; every third source changes whole at versions 4, 8, 12, ... (a burst: its
 * regions' patches overflow their slots). About 1% of a source's values change per version. */
static uint64_t sparse_version(uint64_t seed, uint32_t id, int64_t gr, int64_t c, uint64_t v)
{
  uint64_t h = mix(mix(seed ^ 0x5ba45e) ^ mix((uint64_t)id) ^ ((uint64_t)gr * 0x100000001b3ull) ^ (uint64_t)c);
  uint64_t u = 1, cls = h % 1000;
  if (cls < 5) u = v;
  else if (cls < 35) {
    uint64_t phase = (h >> 20) % 7;
    u = v + phase >= 7 ? v - (v + phase) % 7 : 1;
  }
  if (u < 1) u = 1;
  if (id % 3 == 0 && v / 4 * 4 > u) u = v / 4 * 4;
  return u;
}

const rf_plan *rf_loop_plan(const char *name)
{
  const rf_plan *p = rf_plan_find(name);
  if (!p) {
    printf("  no plan %s in this library\n", name);
    exit(1);
  }
  return p;
}

void rf_loop_fill(const rf_loop_opts *o, uint32_t rank, uint32_t id, uint64_t v, void *buf)
{
  const rf_plan *p = o->plan;
  const rf_src_tensor *s = &p->src[id];
  int64_t r0 = first_row(p, rank, s), rows = held_rows(p, rank, s);
  /* dense mode: every value and block magnitude new each version; sparse: magnitudes fixed */
  uint64_t base = mix(o->seed ^ mix(v * 0x51ed27 + id)), mag_base = o->sparse ? mix(o->seed ^ mix(id)) : base;
  for (int64_t r = 0; r < rows; r++) {
    int64_t gr = r0 + r;
    for (int64_t c = 0; c < s->cols; c++) {
      uint64_t blk = mix(mag_base ^ ((uint64_t)(gr / 128) << 32) ^ (uint64_t)(c / 128));
      uint64_t sv = o->sparse_only && !strstr(s->name, o->sparse_only) ? 1 : sparse_version(o->seed, id, gr, c, v);
      uint64_t b = o->sparse ? mix(o->seed ^ mix(sv * 0x51ed27 + id)) : base;
      uint64_t h = mix(b ^ ((uint64_t)gr * 0x100000001b3ull) ^ (uint64_t)c);
      float mag = (float)(1 << (blk % 12)) / 64.0f;           /* 2^-6 .. 2^5 per block */
      float x = ((float)(h >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * mag;
      size_t i = (size_t)r * (size_t)s->cols + (size_t)c;
      if (s->dtype == RF_FP32) ((float *)buf)[i] = x;
      else ((uint16_t *)buf)[i] = rfk_f32_to_bf16(x);
    }
  }
}

/* benchmark data (o->step): at version 0 every element of buf a finite value; at version v > 0 one
 * bf16 ulp flipped (bit 0 of a bf16, bit 16 of an fp32) in elements v*7919 mod step, + step, ... */
static void step_fill(const rf_loop_opts *o, uint8_t dtype, uint64_t v, void *buf, size_t bytes)
{
  size_t n = bytes / rf_dtype_size(dtype);
  if (v == 0) {
    for (size_t k = 0; k < n; k++) {
      uint64_t h = mix(o->seed ^ k);
      if (dtype == RF_FP32) ((uint32_t *)buf)[k] = 0x3c000000u + (uint32_t)(h & 0x3ffffff); /* [2^-7, 2^-5) */
      else ((uint16_t *)buf)[k] = (uint16_t)(0x3c00 + (h & 0x3ff));
    }
    return;
  }
  for (size_t k = (size_t)(v * 7919 % (uint64_t)o->step); k < n; k += (size_t)o->step) {
    if (dtype == RF_FP32) ((uint32_t *)buf)[k] ^= 0x10000u;
    else ((uint16_t *)buf)[k] ^= 1;
  }
}

/* ---------------------------------- pipes ------------------------------------------------ */

static int rec_fd = -1; /* child -> parent, shared */

static void send_rec(rec *r)
{
  ssize_t n;
  r->pid = (int32_t)getpid();
  do n = write(rec_fd, r, sizeof *r);
  while (n < 0 && errno == EINTR);
}

static void fatal(uint32_t who, int is_trainer, const char *what, const char *why)
{
  rec r = {.kind = REC_FATAL, .who = who, .is_trainer = (uint32_t)is_trainer};
  snprintf(r.text, sizeof r.text, "%s %u: %s: %s", is_trainer ? "trainer" : "receiver", who, what, why);
  send_rec(&r);
  _exit(3);
}

static int read_cmd(int fd, cmd *c, int block)
{
  if (!block) {
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 0) <= 0) return 0;
  }
  ssize_t n;
  do n = read(fd, c, sizeof *c);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof *c) _exit(0); /* parent gone */
  return 1;
}

static void nap(void)
{
  struct timespec ts = {0, 20000};
  nanosleep(&ts, NULL);
}

/* ---------------------------------- receiver --------------------------------------------- */

/* what trainer `rank` writes to receiver `me`, staged with the C reference from the seed */
static int expected(const rf_loop_opts *o, uint32_t me, uint64_t v, uint8_t **want, char *err, size_t errlen)
{
  const rf_plan *p = o->plan;
  const rf_receiver *rv = &p->recv[me];
  for (uint32_t k = 0; k < rv->peer_count; k++) {
    uint32_t t = p->peers[rv->peer_first + k].trainer;
    const rf_rank *rk = &p->ranks[t];
    uint8_t *arena = calloc(rk->arena_bytes ? rk->arena_bytes : 1, 1);
    void **src = calloc(p->n_src, sizeof *src);
    rfk_item *items = NULL;
    uint32_t cap = 0;
    if (!arena || !src) return snprintf(err, errlen, "out of memory"), -1;
    for (uint32_t i = 0; i < rk->op_count; i++) {
      const rf_op *op = &p->ops[rk->op_first + i];
      if (op->count > cap) {
        cap = op->count;
        items = realloc(items, cap * sizeof *items);
      }
      for (uint32_t j = 0; j < op->count; j++) {
        uint32_t sid = op->src + j * op->src_step;
        const rf_src_tensor *s = &p->src[sid];
        if (!src[sid]) {
          src[sid] = malloc((size_t)held_rows(p, t, s) * (size_t)s->cols * rf_dtype_size(s->dtype) + 1);
          rf_loop_fill(o, t, sid, v, src[sid]);
        }
        int64_t row = op->row0 + (int64_t)j * op->row_step - first_row(p, t, s);
        int64_t col = op->col0 + (int64_t)j * op->col_step;
        items[j].src = (uint8_t *)src[sid] + ((size_t)row * (size_t)s->cols + (size_t)col) * rf_dtype_size(s->dtype);
        items[j].out = arena + op->out + (uint64_t)j * op->out_step;
        items[j].scale = rf_op_fp8(op) ? (float *)(arena + op->scale + (uint64_t)j * op->scale_step) : NULL;
      }
      const rf_src_tensor *s0 = &p->src[op->src];
      rfk_shape sh = {.src_dtype = op->src_dtype, .out_dtype = rf_op_fp8(op) ? RFK_FP8 : op->dst_dtype,
                      .ue8m0 = op->kind == RF_OP_FP8_REQUANT ? RFK_SCALE_REQUANT : p->scale_fmt == RF_SCALE_UE8M0, .rows = op->rows, .cols = op->cols,
                      .src_ld = s0->cols, .out_ld = op->cols, .scale_ld = (op->cols + 127) / 128};
      int rc = rfk_ref_run(&sh, items, (int)op->count);
      if (rc) return snprintf(err, errlen, "reference staging of '%s': %s", s0->name, rfk_strerror(rc)), -1;
    }
    for (uint32_t i = 0; i < rk->write_count; i++) {
      const rf_write *w = &p->writes[rk->write_first + i];
      if (w->receiver != me) continue;
      memcpy(want[w->dst - rv->dst_first] + w->dst_off, arena + w->slot, w->len);
    }
    for (uint32_t i = 0; i < p->n_src; i++) free(src[i]);
    free(src);
    free(items);
    free(arena);
  }
  return 0;
}

static uint64_t compare(const uint8_t *got, const uint8_t *want, uint64_t n, uint64_t *first)
{
  uint64_t bad = 0;
  for (uint64_t i = 0; i < n; i++)
    if (got[i] != want[i]) {
      if (!bad) *first = i;
      bad++;
    }
  return bad;
}

/* the receiver's finalize hook for the plan's engine steps (refit.h rf_set_finalize): the engine's
 * code is not here, so it notes the version it ran for (verify checks it ran for each version: a
 * delta version calls it only when it changed an engine step's destination, which every version of
 * this harness does, sparse ones too) */
static uint64_t hook_version;
static int engine_steps(void *ctx, uint64_t v, const uint32_t *steps, uint32_t n, char *why, size_t why_len)
{
  (void)ctx, (void)steps, (void)n, (void)why, (void)why_len;
  hook_version = v;
  return 0;
}

/* compare receiver me's memory (host copies of its tensors, derived ones too) with version v's
 * expected bytes; want[] ends up holding them */
static void verify(const rf_loop_opts *o, uint32_t me, uint64_t v, uint8_t **mem, uint8_t **want, uint16_t **der, rec *res)
{
  const rf_plan *p = o->plan;
  const rf_receiver *rv = &p->recv[me];
      for (uint32_t i = 0; i < rv->dst_count; i++) memset(want[i], 0xa5, p->dst[rv->dst_first + i].bytes);
      if (expected(o, me, v, want, res->text, sizeof res->text)) fatal(me, 0, "expected", res->text);
      for (uint32_t i = 0; i < rv->dst_count; i++) {
        const rf_dst_tensor *d = &p->dst[rv->dst_first + i];
        uint64_t first = 0, bad = compare(mem[i], want[i], d->bytes, &first);
        if (bad && !res->mismatches)
          snprintf(res->text, sizeof res->text, "receiver %u: tensor '%s' differs at byte %llu of %llu (%llu bytes)", me,
                   d->name, (unsigned long long)first, (unsigned long long)d->bytes, (unsigned long long)bad);
        res->mismatches += bad;
        res->verified += d->bytes - bad;
      }
      /* derived storages: a fresh refresh of the expected weights */
      for (uint32_t k = 0; k < p->n_refresh; k++) {
        const rf_refresh *f = &p->refresh[k];
        if (f->tp_rank != rv->tp_rank) continue;
        const rf_derived_tensor *d0 = &p->derived[f->out0], *d1 = &p->derived[f->out1];
        uint16_t *a = malloc(d0->bytes);
        memset(a, 0xa5, d0->bytes); /* storage elements no view covers stay as bound (poisoned) */
        rfk_mla_layout y = {(int)f->heads, (int)f->qk_nope, (int)f->v_head, (int)f->kv_lora, (int64_t)(d0->bytes / 2),
                            d0->offset, {d0->stride[0], d0->stride[1], d0->stride[2]},
                            d1->offset, {d1->stride[0], d1->stride[1], d1->stride[2]}};
        rfk_mla_absorb it = {.kv_b = want[f->weight - rv->dst_first],
                             .scale = f->scale == RF_NONE ? NULL : (const float *)want[f->scale - rv->dst_first],
                             .out = a};
        rfk_ref_mla_absorb(&it, 1, f->scale != RF_NONE, &y);
        uint64_t first = 0, bad = compare((uint8_t *)der[f->out0], (uint8_t *)a, d0->bytes, &first);
        if (bad && !res->mismatches)
          snprintf(res->text, sizeof res->text, "receiver %u: derived '%s' / '%s' stale or wrong (%llu bytes)", me,
                   d0->name, d1->name, (unsigned long long)bad);
        res->mismatches += bad;
        res->verified += d0->bytes - bad;
        free(a);
      }
      /* finalize steps: kernels against the C reference over the expected bytes; the hook ran */
      int engine = 0;
      for (uint32_t k = 0; p->n_finalize && k < p->fin_index[rv->tp_rank].count; k++) {
        const rf_finalize *f = &p->finalize[p->fin_index[rv->tp_rank].first + k];
        engine |= f->kind == RF_FIN_ENGINE;
        if (f->kind != RF_FIN_KERNEL) continue;
        const rf_derived_tensor *d = &p->derived[f->out];
        int32_t *a = malloc(d->bytes);
        rfk_ref_ue8m0_pack((const float *)want[f->dst - rv->dst_first], a, f->groups, f->rows, f->cols);
        uint64_t first = 0, bad = compare((uint8_t *)der[f->out], (uint8_t *)a, d->bytes, &first);
        if (bad && !res->mismatches)
          snprintf(res->text, sizeof res->text, "receiver %u: finalize '%s' of '%s' stale or wrong (%llu bytes)", me,
                   f->name, p->dst[f->dst].name, (unsigned long long)bad);
        res->mismatches += bad;
        res->verified += d->bytes - bad;
        free(a);
      }
      if (engine && hook_version != v) {
        if (!res->mismatches)
          snprintf(res->text, sizeof res->text, "receiver %u: the finalize hook ran for version %llu, not %llu", me,
                   (unsigned long long)hook_version, (unsigned long long)v);
        res->mismatches++;
      }
}

static void receiver_main(const rf_loop_opts *o, uint32_t me, int cmd_fd, uint16_t want_port)
{
  const rf_plan *p = o->plan;
  const rf_receiver *rv = &p->recv[me];
  rf_config cfg = {.plan = p, .role = RF_RECEIVER, .rank = me, .token = o->token, .timeout_ms = o->timeout_ms,
                   .ucx_tls = o->tls, .no_peer_errors = o->no_peer_errors, .mem = o->cuda ? RF_MEM_CUDA : RF_MEM_HOST,
                   .cuda_device = o->receiver_dev, .auto_arm = o->auto_arm};
  if (o->cuda && rf_gpu_use(o->receiver_dev)) fatal(me, 0, "cudaSetDevice", rf_gpu_error());
  rf_engine *e;
  if (rf_open(&cfg, &e) != RF_OK) fatal(me, 0, "rf_open", rf_last_error(e));
  uint8_t **mem = calloc(rv->dst_count, sizeof *mem), **want = calloc(rv->dst_count, sizeof *want);
  void **dmem = calloc(rv->dst_count, sizeof *dmem); /* CUDA: the bound device tensors, mem[] their host copies */
  uint8_t *alias = NULL;
  if (o->alias_dst) {
    uint64_t big = 1;
    for (uint32_t i = 0; i < rv->dst_count; i++)
      if (p->dst[rv->dst_first + i].bytes > big) big = p->dst[rv->dst_first + i].bytes;
    alias = malloc(big);
    if (!alias) fatal(me, 0, "allocating", "aliased destination buffer");
    memset(alias, 0xa5, big);
  }
  uint8_t *region = NULL;
  uint64_t region_off = 0;
  if (o->engine_mem && !alias) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < rv->dst_count; i++) total += (p->dst[rv->dst_first + i].bytes + 255) / 256 * 256;
    if (rf_alloc(e, total, (void **)&region) != RF_OK) fatal(me, 0, "rf_alloc", rf_last_error(e));
  }
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    const rf_dst_tensor *d = &p->dst[rv->dst_first + i];
    if (region) {
      mem[i] = region + region_off;
      region_off += (d->bytes + 255) / 256 * 256;
      memset(mem[i], 0xa5, d->bytes);
      if (rf_bind_dst(e, rv->dst_first + i, mem[i], d->bytes) != RF_OK) fatal(me, 0, "rf_bind_dst", rf_last_error(e));
      want[i] = o->verify ? malloc(d->bytes) : NULL;
      continue;
    }
    if (alias) {
      if (rf_bind_dst(e, rv->dst_first + i, alias, d->bytes) != RF_OK) fatal(me, 0, "rf_bind_dst", rf_last_error(e));
      continue;
    }
    mem[i] = malloc(d->bytes);
    want[i] = o->verify ? malloc(d->bytes) : NULL;
    if (!mem[i] || (o->verify && !want[i])) fatal(me, 0, "allocating", d->name);
    memset(mem[i], 0xa5, d->bytes); /* poison: a byte never written shows up */
    if (o->cuda) {
      if (!(dmem[i] = rf_gpu_malloc(d->bytes)) || rf_gpu_fill(dmem[i], 0xa5, d->bytes)) fatal(me, 0, "cudaMalloc", d->name);
      if (rf_bind_dst(e, rv->dst_first + i, dmem[i], d->bytes) != RF_OK) fatal(me, 0, "rf_bind_dst", rf_last_error(e));
      continue;
    }
    if (rf_bind_dst(e, rv->dst_first + i, mem[i], d->bytes) != RF_OK) fatal(me, 0, "rf_bind_dst", rf_last_error(e));
  }
  uint16_t **der = calloc(p->n_derived ? p->n_derived : 1, sizeof *der);
  void **dder = calloc(p->n_derived ? p->n_derived : 1, sizeof *dder);
  for (uint32_t i = 0; i < p->n_derived; i++) /* each storage refit rebuilds, through its first view */
    if (p->derived[i].tp_rank == rv->tp_rank && p->derived[i].storage == i && p->derived[i].dst == RF_NONE) {
      der[i] = malloc(p->derived[i].bytes);
      memset(der[i], 0xa5, p->derived[i].bytes);
      void *b = der[i];
      if (o->cuda && (!(b = dder[i] = rf_gpu_malloc(p->derived[i].bytes)) || rf_gpu_fill(b, 0xa5, p->derived[i].bytes)))
        fatal(me, 0, "cudaMalloc", p->derived[i].name);
      if (rf_bind_derived(e, i, b, p->derived[i].bytes) != RF_OK) fatal(me, 0, "rf_bind_derived", rf_last_error(e));
    }
  /* CUDA: a copy of the first tensor, enqueued behind rf_stream_wait before the version arrives */
  void *stream = o->cuda ? rf_gpu_stream() : NULL, *probe = NULL;
  uint8_t *probe_h = NULL, *prev = NULL;
  if (o->cuda) {
    probe = rf_gpu_malloc(p->dst[rv->dst_first].bytes);
    probe_h = malloc(p->dst[rv->dst_first].bytes);
    prev = calloc(1, p->dst[rv->dst_first].bytes);
    if (!stream || !probe) fatal(me, 0, "stream probe", rf_gpu_error());
  }
  if (p->n_finalize && rf_set_finalize(e, engine_steps, NULL) != RF_OK) fatal(me, 0, "rf_set_finalize", rf_last_error(e));
  rec r = {.kind = REC_PORT, .who = me};
  /* a restarted receiver comes back on its old port when it is free, so trainers find it again */
  if ((!want_port || rf_listen(e, "127.0.0.1", want_port, &r.port) != RF_OK) &&
      rf_listen(e, "127.0.0.1", 0, &r.port) != RF_OK)
    fatal(me, 0, "rf_listen", rf_last_error(e));
  if (o->use_blob) {
    size_t len = 0;
    rf_export(e, NULL, 0, &len);
    uint8_t *b = malloc(len);
    if (rf_export(e, b, len, &len) != RF_OK) fatal(me, 0, "rf_export", rf_last_error(e));
    /* the blob reaches the parent through a file named after the port (it can exceed PIPE_BUF) */
    char path[64];
    snprintf(path, sizeof path, "/tmp/refit-blob-%d-%u", (int)getppid(), me);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, len, f) != len || fclose(f)) fatal(me, 0, "writing blob", path);
    free(b);
  }
  send_rec(&r);
  uint64_t allocs = 0, allocs_ucx = 0, calls = 0;
  int warm = 0; /* the newest version waited for: from count_allocs on, idle progress must not allocate either */
  for (;;) {
    cmd c;
    while (!read_cmd(cmd_fd, &c, 0)) {
      uint64_t base = rf_loop_alloc_count, base_ucx = rf_loop_alloc_ucx;
      rf_loop_alloc_armed = o->count_allocs && warm >= o->count_allocs;
      rf_progress(e); /* answer connecting trainers, take early BEGIN messages */
      rf_loop_alloc_armed = 0;
      allocs += rf_loop_alloc_count - base;
      allocs_ucx += rf_loop_alloc_ucx - base_ucx;
      nap();
    }
    if (c.kind == CMD_QUIT) break;
    if (c.kind == CMD_DIE) _exit(0);
    if (c.kind == CMD_CORRUPT) { /* a byte in the middle of every tensor changes behind the engine's back */
      for (uint32_t i = 0; i < rv->dst_count; i++) {
        uint64_t at = p->dst[rv->dst_first + i].bytes / 2;
        uint8_t b;
        if (o->cuda && (rf_gpu_get(&b, (uint8_t *)dmem[i] + at, 1) || (b ^= 0x5a, rf_gpu_put((uint8_t *)dmem[i] + at, &b, 1))))
          fatal(me, 0, "cudaMemcpy", rf_gpu_error());
        if (!o->cuda) mem[i][at] ^= 0x5a;
      }
      continue;
    }
    if (c.kind == CMD_VERIFY) { /* is the memory still exactly version v (nothing landed since)? */
      rec res = {.kind = REC_VERIFIED, .who = me, .version = c.version};
      if (o->cuda)
        for (uint32_t i = 0; i < rv->dst_count; i++)
          if (rf_gpu_get(mem[i], dmem[i], p->dst[rv->dst_first + i].bytes)) fatal(me, 0, "cudaMemcpy", rf_gpu_error());
      if (o->verify && c.version) verify(o, me, c.version, mem, want, der, &res);
      send_rec(&res);
      continue;
    }
    rec res = {.kind = REC_RESULT, .who = me, .version = c.version};
    int waiting = 0;
    if (o->cuda) { /* odd versions: a plain stream wait; even versions: captured in a CUDA graph */
      uint64_t n0 = p->dst[rv->dst_first].bytes;
      int graph = c.version % 2 == 0;
      if ((graph && rf_gpu_capture(stream)) || rf_stream_wait(e, c.version, stream) != RF_OK ||
          rf_gpu_copy_async(probe, dmem[0], n0, stream) || (graph && rf_gpu_launch_capture(stream)))
        fatal(me, 0, "stream wait", rf_last_error(e));
      waiting = rf_gpu_busy(stream) == 1;
      rec armed = {.kind = REC_ARMED, .who = me, .version = c.version};
      send_rec(&armed);
    }
    rf_version_state st;
    rf_counters k0, k1;
    rf_get_counters(e, &k0);
    int armed = o->count_allocs && c.version >= (uint64_t)o->count_allocs;
    uint64_t base = rf_loop_alloc_count, base_ucx = rf_loop_alloc_ucx;
    /* the engine stopped reading its weights: let the trainers write this version */
    rf_loop_alloc_armed = armed;
    rf_status as = o->auto_arm ? RF_OK : rf_arm(e, c.version);
    rf_loop_alloc_armed = 0;
    if (as != RF_OK) {
      res.status = as;
      snprintf(res.text, sizeof res.text, "rf_arm: %s", rf_last_error(e));
      send_rec(&res);
      continue;
    }
    uint64_t w0 = now_ns();
    int timed_out = 0;
    for (;;) {
      rf_loop_alloc_armed = armed;
      rf_version_poll(e, &st);
      rf_loop_alloc_armed = 0;
      calls++;
      if (st.complete >= c.version || st.torn >= c.version) break;
      if (c.timeout_ms && now_ns() - w0 > (uint64_t)c.timeout_ms * 1000000u) {
        timed_out = 1;
        break;
      }
      nap();
    }
    res.t_done = now_ns();
    rf_get_counters(e, &k1);
    if (c.flags & RF_CL_CLOSE_AFTER) rf_close(e), e = NULL;
    res.deltas = k1.deltas - k0.deltas;
    res.patch_bytes = k1.patch_bytes - k0.patch_bytes;
    res.apply_ns = k1.apply_ns - k0.apply_ns;
    if (armed) allocs += rf_loop_alloc_count - base, allocs_ucx += rf_loop_alloc_ucx - base_ucx;
    warm = (int)c.version;
    if (st.complete >= c.version) {
      res.status = RF_OK;
      res.bytes = rv->bytes;
    } else if (timed_out) {
      res.status = RF_ERR_TIMEOUT;
      snprintf(res.text, sizeof res.text, "receiver %u: version %llu neither complete nor torn after %u ms", me,
               (unsigned long long)c.version, c.timeout_ms);
    } else {
      res.status = RF_ERR_TORN;
      snprintf(res.text, sizeof res.text, "%s", st.torn_reason);
    }
    if (o->cuda && res.status == RF_OK) {
      uint64_t n0 = p->dst[rv->dst_first].bytes;
      for (uint32_t i = 0; i < rv->dst_count; i++)
        if (rf_gpu_get(mem[i], dmem[i], p->dst[rv->dst_first + i].bytes)) fatal(me, 0, "cudaMemcpy", rf_gpu_error());
      for (uint32_t i = 0; i < p->n_derived; i++)
        if (dder[i] && rf_gpu_get(der[i], dder[i], p->derived[i].bytes)) fatal(me, 0, "cudaMemcpy", rf_gpu_error());
      if (rf_gpu_sync(stream) || rf_gpu_get(probe_h, probe, n0)) fatal(me, 0, "stream probe", rf_gpu_error());
      /* the copy behind the wait saw this version's bytes, which differ from the last version's (sparse
       * versions may leave the probed tensor as it was: then only that it saw the final bytes) */
      res.stream_ok = waiting && memcmp(probe_h, mem[0], n0) == 0 && (o->sparse || memcmp(prev, mem[0], n0) != 0);
      res.stream_checked = 1;
      if (!res.stream_ok)
        snprintf(res.text, sizeof res.text, "receiver %u: stream wait: %s", me,
                 !waiting ? "the stream did not wait" : memcmp(probe_h, mem[0], n0) ? "the kernel after the wait read old bytes"
                                                                                  : "version equal to the last one");
      memcpy(prev, mem[0], n0);
    }
    if (res.status == RF_OK && o->verify) {
      verify(o, me, c.version, mem, want, der, &res);
    }
    res.allocs = allocs;
    res.allocs_ucx = allocs_ucx;
    res.calls = calls;
    send_rec(&res);
    if (!e) _exit(0);
  }
  rf_close(e);
  _exit(0);
}

/* ---------------------------------- trainer ---------------------------------------------- */

/* connect to receiver r once: at its port, or through the blob it exported */
static rf_status reach_once(rf_engine *e, const rf_loop_opts *o, uint32_t r, uint16_t port)
{
  if (!o->use_blob) return rf_connect(e, r, "127.0.0.1", port);
  char path[64];
  snprintf(path, sizeof path, "/tmp/refit-blob-%d-%u", (int)getppid(), r);
  FILE *f = fopen(path, "rb");
  if (!f) fatal(0, 1, "reading blob", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  rewind(f);
  uint8_t *b = malloc((size_t)len);
  if (fread(b, 1, (size_t)len, f) != (size_t)len) fatal(0, 1, "reading blob", path);
  fclose(f);
  rf_status s = rf_import(e, b, (size_t)len);
  free(b);
  return s;
}

/* connect to receiver r, again while the handshake times out or the transport drops it, until 60 s
 * passed: a loaded machine can keep a just-started receiver from answering HELLO within a test's
 * short timeout_ms, or the trainer from answering the challenge within the receiver's handshake_ms
 * (the receiver then closes the connection: "Connection reset by remote peer"). The harness sets up
 * a cluster here; it does not test how long a connect takes. A refusal ("rejected") is final. */
static rf_status reach(rf_engine *e, const rf_loop_opts *o, uint32_t r, uint16_t port)
{
  uint64_t t0 = now_ns();
  rf_status s;
  while (((s = reach_once(e, o, r, port)) == RF_ERR_TIMEOUT ||
          (s == RF_ERR_PEER && !strstr(rf_last_error(e), "rejected"))) &&
         now_ns() - t0 < 60000ull * 1000000u)
    usleep(100000);
  return s;
}

static void trainer_main(const rf_loop_opts *o, uint32_t me, const uint16_t *ports, int cmd_fd)
{
  const rf_plan *p = o->plan;
  rf_config cfg = {.plan = p, .role = RF_TRAINER, .rank = me, .token = o->token, .timeout_ms = o->timeout_ms,
                   .ucx_tls = o->tls, .no_peer_errors = o->no_peer_errors, .mem = o->cuda ? RF_MEM_CUDA : RF_MEM_HOST,
                   .cuda_device = o->trainer_dev, .direct = o->direct, .skip_down = o->skip_down, .delta = o->delta};
  if (o->cuda && rf_gpu_use(o->trainer_dev)) fatal(me, 1, "cudaSetDevice", rf_gpu_error());
  rf_engine *e;
  if (rf_open(&cfg, &e) != RF_OK) fatal(me, 1, "rf_open", rf_last_error(e));
  void **src = calloc(p->n_src, sizeof *src), **dsrc = calloc(p->n_src, sizeof *dsrc);
  uint8_t *alias = NULL;
  if (o->alias_src) {
    size_t big = 1;
    for (uint32_t i = 0; i < p->n_src; i++)
      if (rf_src_bytes(e, i) > big) big = rf_src_bytes(e, i);
    alias = malloc(big);
    if (!alias) fatal(me, 1, "allocating", "aliased source buffer");
    for (size_t k = 0; k < big / 2; k++) ((uint16_t *)alias)[k] = (uint16_t)(0x3c00 + (mix(k) & 0x3ff)); /* finite bf16 */
    if (o->cuda) {
      void *d = rf_gpu_malloc(big);
      if (!d || rf_gpu_put(d, alias, big)) fatal(me, 1, "cudaMalloc", rf_gpu_error());
      free(alias);
      alias = d;
    }
  }
  for (uint32_t i = 0; i < p->n_src; i++) {
    size_t n = rf_src_bytes(e, i);
    if (!n) continue;
    if (alias) {
      if (rf_bind_src(e, i, alias, n) != RF_OK) fatal(me, 1, "rf_bind_src", rf_last_error(e));
      continue;
    }
    if (o->cuda && o->fill_once) { /* benchmark: finite bf16/fp32 filled once on the device, no host copy */
      if (!(dsrc[i] = rf_gpu_malloc(n)) || rf_gpu_fill(dsrc[i], 0x3c, n)) fatal(me, 1, "cudaMalloc", p->src[i].name);
      if (rf_bind_src(e, i, dsrc[i], n) != RF_OK) fatal(me, 1, "rf_bind_src", rf_last_error(e));
      continue;
    }
    src[i] = malloc(n);
    if (!src[i]) fatal(me, 1, "allocating", p->src[i].name);
    memset(src[i], 0, n);
    if (o->step) step_fill(o, p->src[i].dtype, 0, src[i], n);
    if (o->cuda && !(dsrc[i] = rf_gpu_malloc(n))) fatal(me, 1, "cudaMalloc", p->src[i].name);
    if (rf_bind_src(e, i, o->cuda ? dsrc[i] : src[i], n) != RF_OK) fatal(me, 1, "rf_bind_src", rf_last_error(e));
  }
  for (uint32_t r = 0; r < p->receivers; r++) {
    int writes_to = 0;
    for (uint32_t k = 0; k < p->recv[r].peer_count; k++) writes_to |= p->peers[p->recv[r].peer_first + k].trainer == me;
    if (writes_to && reach(e, o, r, ports[r]) != RF_OK) fatal(me, 1, "connecting", rf_last_error(e));
  }
  rec ready = {.kind = REC_READY, .who = me, .is_trainer = 1};
  send_rec(&ready);
  uint64_t allocs = 0, allocs_ucx = 0, calls = 0;
  for (;;) {
    cmd c;
    read_cmd(cmd_fd, &c, 1);
    if (c.kind == CMD_QUIT) break;
    if (c.kind == CMD_CONNECT) { /* a receiver restarted: replace its connection */
      rec done = {.kind = REC_READY, .who = me, .is_trainer = 1};
      rf_status cs = c.flags & CONNECT_ONCE ? reach_once(e, o, c.recv, c.port) : reach(e, o, c.recv, c.port);
      if (cs != RF_OK) {
        done.status = cs;
        snprintf(done.text, sizeof done.text, "%s: %s", rf_strerror(cs), rf_last_error(e));
      }
      send_rec(&done);
      continue;
    }
    for (uint32_t i = 0; i < p->n_src; i++)
      if (src[i]) {
        if (o->step) step_fill(o, p->src[i].dtype, c.version, src[i], rf_src_bytes(e, i));
        else rf_loop_fill(o, me, i, c.version, src[i]);
        if (o->cuda && rf_gpu_put(dsrc[i], src[i], rf_src_bytes(e, i))) fatal(me, 1, "cudaMemcpy", rf_gpu_error());
      }
    rec res = {.kind = REC_PUSHED, .who = me, .is_trainer = 1, .version = c.version};
    rf_counters c0, c1;
    rf_get_counters(e, &c0);
    int armed = o->count_allocs && c.version >= (uint64_t)o->count_allocs;
    uint64_t base = rf_loop_alloc_count, base_ucx = rf_loop_alloc_ucx;
    uint64_t t0 = now_ns();
    rf_loop_alloc_armed = armed;
    res.t_start = t0;
    rf_status s = rf_push(e, c.version, NULL);
    rf_loop_alloc_armed = 0;
    calls++;
    if (s == RF_OK && (c.flags & (RF_CL_DIE_HALF | RF_CL_STOP_HALF))) {
      uint64_t half = p->ranks[me].write_count / 2;
      for (;;) {
        rf_counters now;
        rf_get_counters(e, &now);
        if (now.writes - c0.writes >= half) break;
        if ((s = rf_progress(e)) != RF_AGAIN) break;
        s = RF_OK;
      }
      if (c.flags & RF_CL_DIE_HALF) _exit(9); /* killed mid-push: no DONE, no goodbye */
      raise(SIGSTOP);                         /* frozen with writes in flight; goes on when continued */
    }
    if (s == RF_OK && c.timeout_ms) {
      rf_loop_alloc_armed = armed;
      s = rf_wait(e, c.timeout_ms);
      rf_loop_alloc_armed = 0;
      calls++;
    }
    while (s == RF_OK && !c.timeout_ms) {
      rf_loop_alloc_armed = armed;
      s = rf_progress(e);
      rf_loop_alloc_armed = 0;
      calls++;
      if (s != RF_AGAIN) break;
      s = RF_OK;
    }
    if (armed) allocs += rf_loop_alloc_count - base, allocs_ucx += rf_loop_alloc_ucx - base_ucx;
    res.ns = now_ns() - t0;
    res.status = s;
    if (s != RF_OK) snprintf(res.text, sizeof res.text, "%s: %s", rf_strerror(s), rf_last_error(e));
    rf_get_counters(e, &c1);
    res.stage_ns = c1.stage_ns - c0.stage_ns;
    res.post_ns = c1.post_ns - c0.post_ns;
    res.writes = c1.writes - c0.writes;
    res.direct = c1.direct_writes - c0.direct_writes;
    res.bytes = c1.bytes - c0.bytes;
    res.deltas = c1.deltas - c0.deltas;
    res.patch_bytes = c1.patch_bytes - c0.patch_bytes;
    res.overflows = c1.overflows - c0.overflows;
    res.allocs = allocs;
    res.allocs_ucx = allocs_ucx;
    res.calls = calls;
    send_rec(&res);
    if (c.flags & RF_CL_EXIT_AFTER) _exit(0); /* no rf_close, no goodbye: the version must stand */
  }
  rf_close(e);
  _exit(0);
}

/* ---------------------------------- coordinator ------------------------------------------ */

typedef struct child {
  pid_t pid;
  int cmd;  /* write end */
  int alive;
} child;

static pid_t spawn(int rec_w, int *cmd_w, void (*body)(const rf_loop_opts *, uint32_t, int, const uint16_t *),
                   const rf_loop_opts *o, uint32_t who, const uint16_t *ports)
{
  int cp[2];
  *cmd_w = -1;
  if (pipe(cp)) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    close(cp[0]);
    close(cp[1]);
    return -1;
  }
  if (pid == 0) {
    close(cp[1]);
    rec_fd = rec_w;
    body(o, who, cp[0], ports);
    _exit(0);
  }
  close(cp[0]);
  *cmd_w = cp[1];
  return pid;
}

static void recv_body(const rf_loop_opts *o, uint32_t who, int cmd_fd, const uint16_t *ports)
{
  receiver_main(o, who, cmd_fd, ports ? ports[who] : 0);
}

static void train_body(const rf_loop_opts *o, uint32_t who, int cmd_fd, const uint16_t *ports)
{
  trainer_main(o, who, ports, cmd_fd);
}

static void send_cmd(child *c, uint32_t kind, uint64_t v)
{
  cmd m = {.kind = kind, .version = v};
  if (c->alive && write(c->cmd, &m, sizeof m) != (ssize_t)sizeof m) c->alive = 0;
}

/* read one record, or -1 after timeout_ms (or when every writer is gone) */
static int get_rec(int fd, rec *r, uint32_t timeout_ms)
{
  struct pollfd pf = {.fd = fd, .events = POLLIN};
  int n = poll(&pf, 1, (int)timeout_ms);
  if (n <= 0) return -1;
  ssize_t k;
  do k = read(fd, r, sizeof *r);
  while (k < 0 && errno == EINTR);
  return k == (ssize_t)sizeof *r ? 0 : -1;
}

static void stop_all(child *c, uint32_t n, int quit)
{
  for (uint32_t i = 0; i < n; i++) {
    if (!c[i].pid) continue;
    if (quit) send_cmd(&c[i], CMD_QUIT, 0);
    close(c[i].cmd);
  }
  for (uint32_t i = 0; i < n; i++) {
    if (!c[i].pid) continue;
    int st, waited = 0;
    for (int k = 0; k < 300 && !(waited = waitpid(c[i].pid, &st, WNOHANG)); k++) usleep(10000);
    if (!waited) {
      kill(c[i].pid, SIGKILL);
      waitpid(c[i].pid, &st, 0);
    }
    c[i].pid = 0;
  }
}

int rf_loop_run(const rf_loop_opts *o, rf_loop_result *r)
{
  memset(r, 0, sizeof *r);
  const rf_plan *p = o->plan;
  if (o->versions < 1 || o->versions > RF_LOOP_MAX_VERSIONS)
    return snprintf(r->error, sizeof r->error, "versions must be 1..%d", RF_LOOP_MAX_VERSIONS), -1;
  int rp[2];
  if (pipe(rp)) return snprintf(r->error, sizeof r->error, "pipe: %s", strerror(errno)), -1;
  signal(SIGPIPE, SIG_IGN);
  uint32_t nr = p->receivers, nt = p->trainers;
  child *rc = calloc(nr, sizeof *rc), *tc = calloc(nt, sizeof *tc);
  uint16_t *ports = calloc(nr, sizeof *ports);
  uint32_t wait_ms = (o->timeout_ms ? o->timeout_ms : 10000) * 3 + 30000;
  int ret = -1;
  rec m;
  for (uint32_t i = 0; i < nr; i++) {
    rc[i].pid = spawn(rp[1], &rc[i].cmd, recv_body, o, i, NULL);
    rc[i].alive = 1;
  }
  for (uint32_t got = 0; got < nr;) {
    if (get_rec(rp[0], &m, wait_ms)) {
      snprintf(r->error, sizeof r->error, "receivers did not start within %u ms", wait_ms);
      goto out;
    }
    if (m.kind == REC_FATAL) {
      snprintf(r->error, sizeof r->error, "%s", m.text);
      goto out;
    }
    if (m.kind == REC_PORT) ports[m.who] = m.port, got++;
  }
  for (uint32_t i = 0; i < nt; i++) {
    tc[i].pid = spawn(rp[1], &tc[i].cmd, train_body, o, i, ports);
    tc[i].alive = 1;
  }
  for (uint32_t got = 0; got < nt;) {
    if (get_rec(rp[0], &m, wait_ms)) {
      snprintf(r->error, sizeof r->error, "trainers did not connect within %u ms", wait_ms);
      goto out;
    }
    if (m.kind == REC_FATAL) {
      snprintf(r->error, sizeof r->error, "%s", m.text);
      goto out;
    }
    if (m.kind == REC_READY) got++;
  }
  if (o->progress) fprintf(stderr, "refit: %u receivers listening, %u trainers connected\n", nr, nt);
  for (int vi = 0; vi < o->versions; vi++) {
    uint64_t v = (uint64_t)vi + 1;
    rf_loop_version *lv = &r->v[r->n++];
    lv->version = v;
    int dead_recv = o->kill_receiver >= 0 && v == o->kill_version ? o->kill_receiver : -1;
    if (dead_recv >= 0) {
      send_cmd(&rc[dead_recv], CMD_DIE, v);
      waitpid(rc[dead_recv].pid, NULL, 0);
      rc[dead_recv].pid = 0;
      rc[dead_recv].alive = 0;
    }
    uint64_t t0 = now_ns(), t_last = t0;
    for (uint32_t i = 0; i < nr; i++) send_cmd(&rc[i], CMD_WAIT, v);
    /* CUDA: receivers first enqueue their stream waits, so the waits are seen to hold */
    for (uint32_t armed = 0; o->cuda && armed < nr - (dead_recv >= 0 ? 1 : 0);) {
      if (get_rec(rp[0], &m, wait_ms) || m.kind == REC_FATAL) {
        snprintf(r->error, sizeof r->error, "version %llu: receivers not armed: %s", (unsigned long long)v,
                 m.kind == REC_FATAL ? m.text : "no answer");
        goto out;
      }
      if (m.kind == REC_ARMED) armed++;
    }
    t0 = t_last = now_ns();
    for (uint32_t i = 0; i < nt; i++) {
      /* a bounded wait: a BEGIN that reaches a receiver after it tore the version is held until a newer
       * version is armed (receiver.c), which this loop does only once every trainer answered */
      cmd c = {.kind = CMD_PUSH, .version = v, .timeout_ms = 2 * (o->timeout_ms ? o->timeout_ms : 10000),
               .flags = o->kill_trainer == (int)i && v == o->kill_version ? RF_CL_DIE_HALF : 0};
      if (tc[i].alive && write(tc[i].cmd, &c, sizeof c) != (ssize_t)sizeof c) tc[i].alive = 0;
    }
    int dying = o->kill_trainer >= 0 && v == o->kill_version;
    uint32_t want_t = nt - (dying ? 1 : 0), want_r = nr - (dead_recv >= 0 ? 1 : 0), got_t = 0, got_r = 0;
    uint64_t t_first = 0; /* the first rf_push (trainers fill their sources after the command, untimed) */
    while (got_t < want_t || got_r < want_r) {
      if (get_rec(rp[0], &m, wait_ms)) {
        snprintf(r->error, sizeof r->error, "version %llu: no answer from %u trainers / %u receivers within %u ms%s%.300s",
                 (unsigned long long)v, want_t - got_t, want_r - got_r, wait_ms,
                 lv->trainer_errors ? "; a trainer's push: " : "", lv->trainer_errors ? lv->trainer_error : "");
        goto out;
      }
      if (m.kind == REC_FATAL) {
        snprintf(r->error, sizeof r->error, "%s", m.text);
        goto out;
      }
      if (m.kind == REC_PUSHED) {
        got_t++;
        if (!t_first || m.t_start < t_first) t_first = m.t_start;
        lv->stage_ns += m.stage_ns;
        lv->post_ns += m.post_ns;
        lv->writes += m.writes;
        lv->direct_writes += m.direct;
        lv->sent += m.bytes;
        lv->deltas += m.deltas;
        lv->patch_bytes += m.patch_bytes;
        lv->overflows += m.overflows;
        if (m.ns > lv->push_ns_max) lv->push_ns_max = m.ns;
        if (m.status == RF_PARTIAL) lv->trainer_partial++;
        else if (m.status != RF_OK && !lv->trainer_errors++)
          snprintf(lv->trainer_error, sizeof lv->trainer_error, "%s", m.text);
        if (o->count_allocs && v == (uint64_t)o->versions)
          r->allocs += m.allocs, r->allocs_ucx += m.allocs_ucx, r->alloc_checked_calls += m.calls;
      } else if (m.kind == REC_RESULT) {
        got_r++;
        if (m.t_done > t_last) t_last = m.t_done; /* complete or torn: the receiver's answer */
        if (m.status == RF_OK) {
          lv->complete++;
          lv->bytes += m.bytes;
        } else if (!lv->torn++) {
          snprintf(lv->torn_reason, sizeof lv->torn_reason, "%s", m.text);
        }
        lv->verified += m.verified;
        lv->applied += m.deltas;
        lv->apply_ns += m.apply_ns;
        lv->stream_checked += m.stream_checked;
        lv->stream_ok += m.stream_ok;
        if (m.stream_checked && !m.stream_ok && !lv->stream_error[0])
          snprintf(lv->stream_error, sizeof lv->stream_error, "%s", m.text);
        if (m.mismatches && !lv->mismatches) snprintf(lv->mismatch, sizeof lv->mismatch, "%s", m.text);
        lv->mismatches += m.mismatches;
        if (o->count_allocs && v == (uint64_t)o->versions)
          r->allocs += m.allocs, r->allocs_ucx += m.allocs_ucx, r->alloc_checked_calls += m.calls;
        if (o->progress)
          fprintf(stderr, "refit: version %llu: receiver %u %s\n", (unsigned long long)v, m.who,
                  m.status == RF_OK ? (m.mismatches ? "complete, MISMATCH" : "complete, verified") : "TORN");
      }
    }
    lv->ns = t_last - (t_first > t0 && t_first < t_last ? t_first : t0);
    if (dead_recv >= 0 && !o->restart_receiver) {
      ret = 0; /* the run stops with the receiver gone */
      goto out;
    }
    if (dead_recv >= 0) {
      /* the receiver comes back on a new port; every trainer that writes to it reconnects */
      uint32_t k = (uint32_t)dead_recv;
      close(rc[k].cmd);
      rc[k].pid = spawn(rp[1], &rc[k].cmd, recv_body, o, k, NULL);
      rc[k].alive = 1;
      if (get_rec(rp[0], &m, wait_ms) || m.kind != REC_PORT) {
        snprintf(r->error, sizeof r->error, "restarted receiver %u did not listen: %s", k,
                 m.kind == REC_FATAL ? m.text : "no answer");
        goto out;
      }
      ports[k] = m.port;
      uint32_t asked = 0;
      for (uint32_t t = 0; t < nt; t++)
        for (uint32_t q = 0; q < p->recv[k].peer_count; q++)
          if (p->peers[p->recv[k].peer_first + q].trainer == t) {
            cmd c = {.kind = CMD_CONNECT, .recv = k, .port = m.port};
            if (write(tc[t].cmd, &c, sizeof c) == (ssize_t)sizeof c) asked++;
          }
      for (uint32_t got = 0; got < asked;) {
        if (get_rec(rp[0], &m, wait_ms) || m.kind == REC_FATAL) {
          snprintf(r->error, sizeof r->error, "trainers did not reconnect to receiver %u: %s", k,
                   m.kind == REC_FATAL ? m.text : "no answer");
          goto out;
        }
        if (m.kind != REC_READY) continue;
        if (m.status != RF_OK) {
          snprintf(r->error, sizeof r->error, "trainer %u could not reconnect to receiver %u: %s", m.who, k, m.text);
          goto out;
        }
        got++;
      }
      r->receiver_restarts++;
    }
    if (dying) {
      /* the killed trainer is gone; start it again and let it reconnect before the next version */
      uint32_t k = (uint32_t)o->kill_trainer;
      waitpid(tc[k].pid, NULL, 0);
      close(tc[k].cmd);
      tc[k].pid = spawn(rp[1], &tc[k].cmd, train_body, o, k, ports);
      tc[k].alive = 1;
      r->trainer_restarts++;
      if (get_rec(rp[0], &m, wait_ms) || m.kind != REC_READY) {
        snprintf(r->error, sizeof r->error, "restarted trainer %u did not reconnect: %s", k,
                 m.kind == REC_FATAL ? m.text : "no answer");
        goto out;
      }
    }
  }
  ret = 0;
out:
  /* receivers first: their last ACK is flushed to trainers that still listen (rf_close) */
  stop_all(rc, nr, ret == 0);
  stop_all(tc, nt, ret == 0);
  if (o->use_blob)
    for (uint32_t i = 0; i < nr; i++) {
      char path[64];
      snprintf(path, sizeof path, "/tmp/refit-blob-%d-%u", (int)getpid(), i);
      unlink(path);
    }
  close(rp[0]);
  close(rp[1]);
  free(rc);
  free(tc);
  free(ports);
  return ret;
}

/* ---------------------------------- cluster (fault tests) --------------------------------- */

#define CL_PROCS 96
#define CL_QUEUE 512

struct rf_cluster {
  rf_loop_opts o;
  int rp[2];
  uint16_t *ports;
  struct cl_proc {
    pid_t pid;
    int cmd, trainer, alive, stopped;
    uint32_t idx;
    uint8_t reconnect[64]; /* receivers it must reconnect to once it runs again */
  } proc[CL_PROCS];
  int n;
  int *rproc, *tproc;
  rec queue[CL_QUEUE];     /* records read while waiting for another one */
  uint32_t qh, qt;
};

static void cl_rec(const rec *m, rf_cl_rec *out)
{
  *out = (rf_cl_rec){.kind = (int)m->kind, .trainer = (int)m->is_trainer, .pid = m->pid, .status = m->status,
                     .who = m->who, .version = m->version, .verified = m->verified, .mismatches = m->mismatches,
                     .deltas = m->deltas, .overflows = m->overflows};
  snprintf(out->text, sizeof out->text, "%s", m->text);
}

/* the next record whose pid is `pid` and kind `kind` (others are queued), or -1 after ms */
static int cl_await(rf_cluster *c, pid_t pid, uint32_t kind, rec *m, uint32_t ms)
{
  uint64_t t0 = now_ns();
  for (;;) {
    uint64_t left = (uint64_t)ms * 1000000u - (now_ns() - t0);
    if (now_ns() - t0 >= (uint64_t)ms * 1000000u || get_rec(c->rp[0], m, (uint32_t)(left / 1000000u) + 1)) return -1;
    if (m->pid == pid && (m->kind == kind || m->kind == REC_FATAL)) return m->kind == kind ? 0 : -1;
    if (c->qt - c->qh < CL_QUEUE) c->queue[c->qt++ % CL_QUEUE] = *m;
  }
}

static int cl_add(rf_cluster *c, pid_t pid, int cmd_w, int trainer, uint32_t idx)
{
  int i = 0;
  while (i < c->n && (c->proc[i].alive || c->proc[i].pid)) i++; /* reuse the slot of a process that is gone */
  if (i == CL_PROCS) return -1;
  if (i == c->n) c->n++;
  c->proc[i] = (struct cl_proc){.pid = pid, .cmd = cmd_w, .trainer = trainer, .idx = idx, .alive = 1};
  return i;
}

static int writes_to(const rf_plan *p, uint32_t rank, uint32_t r)
{
  for (uint32_t k = 0; k < p->recv[r].peer_count; k++)
    if (p->peers[p->recv[r].peer_first + k].trainer == rank) return 1;
  return 0;
}

/* one child (a trainer rank or a receiver) up to its first record `kind`, then in the table; else
 * killed (nothing lives on untracked, holding a rank's connections) and -1 with err */
static int cl_spawn(rf_cluster *c, int trainer, uint32_t idx, uint32_t kind, rec *m, char *err, size_t errlen)
{
  int cw, i = -1;
  pid_t pid = spawn(c->rp[1], &cw, trainer ? train_body : recv_body, &c->o, idx, c->ports);
  const char *who = trainer ? "trainer rank" : "receiver";
  *m = (rec){0};
  if (pid < 0 || cl_await(c, pid, kind, m, 30000))
    snprintf(err, errlen, "%s %u %s: %s", who, idx, trainer ? "did not connect" : "did not start",
             m->kind == REC_FATAL ? m->text : "no answer");
  else if ((i = cl_add(c, pid, cw, trainer, idx)) < 0)
    snprintf(err, errlen, "%s %u: the cluster already tracks %d processes", who, idx, CL_PROCS);
  if (i >= 0) return i;
  if (pid > 0) kill(pid, SIGKILL), waitpid(pid, NULL, 0);
  if (cw >= 0) close(cw);
  return -1;
}

static int cl_spawn_receiver(rf_cluster *c, uint32_t r, char *err, size_t errlen)
{
  rec m;
  int i = cl_spawn(c, 0, r, REC_PORT, &m, err, errlen);
  if (i >= 0) c->ports[r] = m.port, c->rproc[r] = i;
  return i;
}

int rf_cl_spawn_trainer(rf_cluster *c, uint32_t rank, char *err, size_t errlen)
{
  rec m;
  int i = cl_spawn(c, 1, rank, REC_READY, &m, err, errlen);
  if (i >= 0) c->tproc[rank] = i;
  return i;
}

rf_cluster *rf_cl_start(const rf_loop_opts *o, char *err, size_t errlen)
{
  rf_cluster *c = calloc(1, sizeof *c);
  const rf_plan *p = o->plan;
  c->o = *o;
  c->ports = calloc(p->receivers, sizeof *c->ports);
  c->rproc = calloc(p->receivers, sizeof *c->rproc);
  c->tproc = calloc(p->trainers, sizeof *c->tproc);
  if (p->receivers > 64 || pipe(c->rp)) {
    snprintf(err, errlen, "cluster: at most 64 receivers; pipe: %s", strerror(errno));
    free(c);
    return NULL;
  }
  signal(SIGPIPE, SIG_IGN);
  for (uint32_t r = 0; r < p->receivers; r++)
    if (cl_spawn_receiver(c, r, err, errlen) < 0) goto fail;
  for (uint32_t t = 0; t < p->trainers; t++)
    if (rf_cl_spawn_trainer(c, t, err, errlen) < 0) goto fail;
  return c;
fail:
  rf_cl_end(c);
  return NULL;
}

void rf_cl_end(rf_cluster *c)
{
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    if (!c->proc[i].alive) continue;
    if (c->proc[i].stopped) kill(c->proc[i].pid, SIGKILL);
    else {
      cmd q = {.kind = CMD_QUIT};
      if (write(c->proc[i].cmd, &q, sizeof q) < 0) kill(c->proc[i].pid, SIGKILL);
    }
    close(c->proc[i].cmd);
  }
  for (int i = 0; i < c->n; i++) {
    if (!c->proc[i].alive) continue;
    int st, waited = 0;
    for (int k = 0; k < 300 && !(waited = waitpid(c->proc[i].pid, &st, WNOHANG)); k++) usleep(10000);
    if (!waited) {
      kill(c->proc[i].pid, SIGKILL);
      waitpid(c->proc[i].pid, &st, 0);
    }
  }
  if (c->o.use_blob)
    for (uint32_t r = 0; r < c->o.plan->receivers; r++) {
      char path[64];
      snprintf(path, sizeof path, "/tmp/refit-blob-%d-%u", (int)getpid(), r);
      unlink(path);
    }
  close(c->rp[0]);
  close(c->rp[1]);
  free(c->ports);
  free(c->rproc);
  free(c->tproc);
  free(c);
}

int rf_cl_receiver(const rf_cluster *c, uint32_t r) { return c->rproc[r]; }
int rf_cl_trainer(const rf_cluster *c, uint32_t rank) { return c->tproc[rank]; }
int rf_cl_port(const rf_cluster *c, uint32_t r) { return c->ports[r]; }
int rf_cl_pid(const rf_cluster *c, int proc) { return proc >= 0 && proc < c->n ? c->proc[proc].pid : -1; }
int rf_cl_alive(const rf_cluster *c, int proc) { return proc >= 0 && proc < c->n && c->proc[proc].alive; }

static void cl_connect(rf_cluster *c, int i, uint32_t r, uint32_t flags)
{
  cmd m = {.kind = CMD_CONNECT, .recv = r, .port = c->ports[r], .flags = flags};
  if (write(c->proc[i].cmd, &m, sizeof m) != (ssize_t)sizeof m) c->proc[i].alive = 0;
}

int rf_cl_reconnect(rf_cluster *c, int t, uint32_t r, char *text, size_t n)
{
  if (t < 0 || t >= c->n || !c->proc[t].alive || !c->proc[t].trainer) return -1;
  cl_connect(c, t, r, CONNECT_ONCE);
  rec m;
  if (cl_await(c, c->proc[t].pid, REC_READY, &m, 60000)) return snprintf(text, n, "no answer"), -1;
  snprintf(text, n, "%s", m.text);
  return m.status;
}

int rf_cl_respawn_receiver(rf_cluster *c, uint32_t r, char *err, size_t errlen)
{
  int old = c->rproc[r];
  if (c->proc[old].alive) rf_cl_signal(c, old, SIGKILL);
  c->proc[old].pid = 0;
  return cl_spawn_receiver(c, r, err, errlen);
}

int rf_cl_restart_receiver(rf_cluster *c, uint32_t r, char *err, size_t errlen)
{
  int i = rf_cl_respawn_receiver(c, r, err, errlen);
  if (i < 0) return -1;
  for (int t = 0; t < c->n; t++) {
    if (!c->proc[t].alive || !c->proc[t].trainer || !writes_to(c->o.plan, c->proc[t].idx, r)) continue;
    if (c->proc[t].stopped) {
      c->proc[t].reconnect[r] = 1;
      continue;
    }
    cl_connect(c, t, r, 0);
    rec m;
    if (cl_await(c, c->proc[t].pid, REC_READY, &m, 30000)) {
      snprintf(err, errlen, "trainer rank %u did not reconnect to receiver %u", c->proc[t].idx, r);
      return -1;
    }
  }
  return i;
}

void rf_cl_signal(rf_cluster *c, int i, int sig)
{
  if (i < 0 || i >= c->n || !c->proc[i].alive) return;
  kill(c->proc[i].pid, sig);
  if (sig == SIGKILL) {
    waitpid(c->proc[i].pid, NULL, 0);
    close(c->proc[i].cmd);
    c->proc[i].cmd = -1;
    c->proc[i].alive = 0;
    c->proc[i].stopped = 0;
    c->proc[i].pid = 0; /* reaped: its slot can take a new process (cl_add) */
  } else if (sig == SIGSTOP) {
    c->proc[i].stopped = 1;
  } else if (sig == SIGCONT) {
    c->proc[i].stopped = 0;
    for (uint32_t r = 0; r < c->o.plan->receivers; r++)
      if (c->proc[i].reconnect[r]) {
        c->proc[i].reconnect[r] = 0;
        cl_connect(c, i, r, 0);
      }
  }
}

int rf_cl_await_stop(rf_cluster *c, int i, uint32_t ms)
{
  if (i < 0 || i >= c->n || !c->proc[i].alive) return -1;
  uint64_t t0 = now_ns();
  for (;;) {
    int st;
    pid_t r = waitpid(c->proc[i].pid, &st, WUNTRACED | WNOHANG);
    if (r == c->proc[i].pid && WIFSTOPPED(st)) {
      c->proc[i].stopped = 1;
      return 0;
    }
    if (r == c->proc[i].pid) { /* it died instead */
      c->proc[i].alive = 0;
      return -1;
    }
    if (now_ns() - t0 > (uint64_t)ms * 1000000u) return -1;
    usleep(2000);
  }
}

int rf_cl_send(rf_cluster *c, int i, int kind, uint64_t version, uint32_t timeout_ms, uint32_t flags)
{
  if (i < 0 || i >= c->n || !c->proc[i].alive) return -1;
  cmd m = {.kind = (uint32_t)kind, .version = version, .timeout_ms = timeout_ms, .flags = flags};
  return write(c->proc[i].cmd, &m, sizeof m) == (ssize_t)sizeof m ? 0 : -1;
}

int rf_cl_next(rf_cluster *c, rf_cl_rec *out, uint32_t timeout_ms)
{
  rec m;
  if (c->qh != c->qt) m = c->queue[c->qh++ % CL_QUEUE];
  else if (get_rec(c->rp[0], &m, timeout_ms)) return -1;
  cl_rec(&m, out);
  return 0;
}
