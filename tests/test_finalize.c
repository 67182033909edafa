/* test_finalize.c: finalize steps (DESIGN.md 5d, refit.h rf_set_finalize) over TCP loopback in one
 * process: both receivers of plan qwen3_tiny_finalize (TP2; per position a UE8M0 pack of the qkv
 * scales, a refit kernel, and an engine step on the down_proj weights, each in layers 0 and 1) and
 * its two trainer ranks, every engine with a progress thread. Checked: rf_listen refuses engine steps
 * without a hook (naming the step); the hook runs once per version after every byte is in and the
 * kernel steps ran (it sees the bytes the version ends with, and the kernels' output equals the C
 * reference), and each trainer's rf_wait returns only after every receiver's hook returned; which
 * steps run: all of them in the first version, in a version sent dense (even one that changes no
 * byte) and after a torn version; in a delta version exactly those whose destination changed (a
 * delta that changes layer 1 only: the hook gets layer 1's engine step alone, only layer 1's kernel
 * step runs, layer 0's output is left as it was); a hook that fails tears the version on its
 * receiver (rf_version_wait and the trainers' rf_wait say RF_ERR_TORN with the step's name and the
 * hook's text) and the next version completes; the hook's calls into its own engine are refused, not
 * deadlocked; the counters (finalize_steps, finalize_skipped). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "plans.h"
#include "refresh.h"

#include "expect.h"

#define PLAN "qwen3_tiny_finalize"
#define TOKEN 0xf1a1
#define MAX_STEPS 16

typedef struct hook {
  rf_engine *r;
  const rf_plan *p;
  uint32_t recv, pos;
  void **dst;                /* [dst_count] bound destination tensors */
  void **der;                /* [n_derived] bound derived storages (this position's) */
  uint8_t **snap;            /* [dst_count] the destinations as the previous version left them */
  uint32_t poisoned;         /* a derived storage the test overwrote (its check is the caller's), or RF_NONE */
  uint64_t fail_version;     /* the hook fails this version */
  _Atomic uint64_t returned; /* the newest version the hook returned for */
  uint64_t calls, sum, kernels_ok, kernels_checked;
  uint32_t got[MAX_STEPS], n_got; /* the steps of the last call */
  rf_status reentry;         /* what rf_arm from inside the hook returned */
  char reentry_err[200];
  uint64_t counter_versions; /* rf_get_counters from inside the hook: versions complete before this one */
  uint64_t calls0;           /* calls and counters before the version under test */
  rf_counters c0;
} hook;

static uint64_t fnv(uint64_t h, const void *buf, size_t n)
{
  const uint8_t *b = buf;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

/* every byte of the receiver's destination tensors */
static uint64_t checksum(const hook *k)
{
  const rf_receiver *rv = &k->p->recv[k->recv];
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint32_t i = 0; i < rv->dst_count; i++) h = fnv(h, k->dst[i], k->p->dst[rv->dst_first + i].bytes);
  return h;
}

/* the position's kernel steps but `skip`'s: their storages equal the C reference over what the dst
 * holds now (and are not all zero); returns the steps checked, counting mismatches in *bad */
static uint32_t check_kernels(const hook *k, uint32_t skip, uint64_t *bad)
{
  const rf_plan *p = k->p;
  const rf_fin_index *x = &p->fin_index[k->pos];
  uint32_t n = 0;
  for (uint32_t i = x->first; i < x->first + x->count; i++) {
    const rf_finalize *f = &p->finalize[i];
    if (f->kind != RF_FIN_KERNEL || f->out == skip) continue;
    uint64_t bytes = p->derived[f->out].bytes;
    int32_t *want = calloc(1, bytes);
    int rc = rfk_ref_ue8m0_pack(k->dst[f->dst - p->recv[k->recv].dst_first], want, f->groups, f->rows, f->cols);
    int nonzero = 0;
    for (uint64_t w = 0; w < bytes / 4; w++) nonzero |= want[w] != 0;
    if (rc || !nonzero || memcmp(want, k->der[f->out], bytes)) ++*bad;
    free(want);
    n++;
  }
  return n;
}

static int on_finalize(void *ctx, uint64_t version, const uint32_t *steps, uint32_t n, char *why, size_t why_len)
{
  hook *k = ctx;
  k->calls++;
  k->n_got = n < MAX_STEPS ? n : MAX_STEPS;
  memcpy(k->got, steps, k->n_got * sizeof *steps);
  k->sum = checksum(k);
  uint64_t bad = 0;
  k->kernels_checked = check_kernels(k, k->poisoned, &bad);
  k->kernels_ok = bad == 0;
  k->reentry = rf_arm(k->r, version + 100);
  snprintf(k->reentry_err, sizeof k->reentry_err, "%s", rf_last_error(k->r));
  rf_counters c;
  rf_get_counters(k->r, &c);
  k->counter_versions = c.versions;
  struct timespec ts = {0, 100 * 1000000}; /* the engine's code takes a while: a trainer's wait must wait for it */
  nanosleep(&ts, NULL);
  atomic_store(&k->returned, version);
  if (version == k->fail_version) {
    snprintf(why, why_len, "boom at version %llu", (unsigned long long)version);
    return 2; /* the second of its steps failed */
  }
  return 0;
}

typedef struct world {
  const rf_plan *p;
  rf_loop_opts o;
  rf_engine *r[2], *t[2];
  hook k[2];
  uint16_t port[2];
  void *src[2][64];
} world;

static void open_receiver(world *w, uint32_t r)
{
  const rf_plan *p = w->p;
  rf_config c = {.plan = p, .role = RF_RECEIVER, .rank = r, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 20000,
                 .progress_thread = 1};
  rf_engine *e;
  EXPECT(rf_open(&c, &e) == RF_OK, "receiver %u open: %s", r, rf_last_error(e));
  hook *k = &w->k[r];
  const rf_receiver *rv = &p->recv[r];
  *k = (hook){.r = e, .p = p, .recv = r, .pos = rv->tp_rank, .dst = calloc(rv->dst_count, sizeof(void *)),
              .der = calloc(p->n_derived, sizeof(void *)), .snap = calloc(rv->dst_count, sizeof(void *)),
              .poisoned = RF_NONE};
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    uint32_t id = rv->dst_first + i;
    k->dst[i] = calloc(1, p->dst[id].bytes);
    k->snap[i] = calloc(1, p->dst[id].bytes);
    EXPECT(rf_bind_dst(e, id, k->dst[i], p->dst[id].bytes) == RF_OK, "bind dst: %s", rf_last_error(e));
  }
  for (uint32_t i = 0; i < p->n_derived; i++) {
    const rf_derived_tensor *d = &p->derived[i];
    if (d->tp_rank != k->pos || d->storage != i || d->dst != RF_NONE) continue;
    k->der[i] = calloc(1, d->bytes);
    EXPECT(rf_bind_derived(e, i, k->der[i], d->bytes) == RF_OK, "bind derived: %s", rf_last_error(e));
  }
  /* engine steps without a hook: refused, naming the first step; nothing registered, so again */
  rf_status st = rf_listen(e, "127.0.0.1", 0, &w->port[r]);
  char want[200];
  const rf_finalize *f0 = NULL;
  for (uint32_t i = p->fin_index[k->pos].first; !f0; i++)
    if (p->finalize[i].kind == RF_FIN_ENGINE) f0 = &p->finalize[i];
  snprintf(want, sizeof want, "finalize step '%s' of '%s' (and 1 more engine steps of receiver %u) runs the engine's own "
           "post-load code: set a hook with rf_set_finalize before rf_listen", f0->name, p->dst[f0->dst].name, r);
  EXPECT(st == RF_ERR_UNBOUND && strstr(rf_last_error(e), want), "rf_listen without a hook: %s '%s', want '%s'",
         rf_strerror(st), rf_last_error(e), want);
  EXPECT(rf_set_finalize(e, on_finalize, k) == RF_OK, "rf_set_finalize: %s", rf_last_error(e));
  EXPECT(rf_listen(e, "127.0.0.1", 0, &w->port[r]) == RF_OK, "listen: %s", rf_last_error(e));
  st = rf_set_finalize(e, NULL, NULL);
  EXPECT(st == RF_ERR_STATE, "rf_set_finalize(NULL) after rf_listen: %s", rf_strerror(st));
  w->r[r] = e;
}

/* trainer rank t with delta pushes, connected to both receivers; its sources are kept when it is
 * opened again (a restarted trainer: its first push goes dense) */
static void open_trainer(world *w, uint32_t t)
{
  rf_config c = {.plan = w->p, .role = RF_TRAINER, .rank = t, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 20000,
                 .progress_thread = 1, .delta = 1};
  rf_engine *e;
  EXPECT(rf_open(&c, &e) == RF_OK, "trainer %u open: %s", t, rf_last_error(e));
  for (uint32_t i = 0; i < w->p->n_src && i < 64; i++) {
    size_t n = rf_src_bytes(e, i);
    if (!n) continue;
    if (!w->src[t][i]) w->src[t][i] = calloc(1, n);
    EXPECT(rf_bind_src(e, i, w->src[t][i], n) == RF_OK, "bind src: %s", rf_last_error(e));
  }
  for (uint32_t r = 0; r < 2; r++)
    EXPECT(rf_connect(e, r, "127.0.0.1", w->port[r]) == RF_OK, "connect: %s", rf_last_error(e));
  w->t[t] = e;
}

/* double every 97th element of layer 1's sources (bf16 or fp32, exponent + 1) and every element of
 * its q_proj (so that each position's qkv block scales change): a sparse change of one layer */
static void change_layer1(world *w)
{
  for (uint32_t t = 0; t < 2; t++)
    for (uint32_t i = 0; i < w->p->n_src && i < 64; i++) {
      const rf_src_tensor *s = &w->p->src[i];
      if (!w->src[t][i] || s->layer != 1) continue;
      size_t n = rf_src_bytes(w->t[t], i), es = rf_dtype_size(s->dtype);
      size_t every = strstr(s->name, "self_attn.q_proj.weight") ? 1 : 97;
      for (size_t j = 0; j < n / es; j += every) {
        uint8_t *x = (uint8_t *)w->src[t][i] + j * es;
        if (es == 2) {
          uint16_t b;
          memcpy(&b, x, 2);
          uint32_t ex = (b >> 7) & 0xff;
          if (ex && ex < 0xfe) b = (uint16_t)(b + 0x80);
          memcpy(x, &b, 2);
        } else {
          uint32_t b;
          memcpy(&b, x, 4);
          uint32_t ex = (b >> 23) & 0xff;
          if (ex && ex < 0xfe) b += 1u << 23;
          memcpy(x, &b, 4);
        }
      }
    }
}

enum { FILL_ALL, FILL_LAYER1, FILL_NONE };

/* push version v from both trainers (FILL_ALL: sources as rf_loop_fill gives them; FILL_LAYER1: the
 * previous version's with change_layer1; FILL_NONE: the previous version's); each trainer's rf_wait
 * status and error. Before it, each receiver's destinations, hook calls and counters are kept. */
static void push(world *w, uint64_t v, int fill, rf_status st[2], char err[2][400])
{
  for (uint32_t r = 0; r < 2; r++) {
    hook *k = &w->k[r];
    const rf_receiver *rv = &w->p->recv[r];
    for (uint32_t i = 0; i < rv->dst_count; i++) memcpy(k->snap[i], k->dst[i], w->p->dst[rv->dst_first + i].bytes);
    k->calls0 = k->calls;
    rf_get_counters(w->r[r], &k->c0);
  }
  if (fill == FILL_ALL)
    for (uint32_t t = 0; t < 2; t++)
      for (uint32_t i = 0; i < w->p->n_src && i < 64; i++)
        if (w->src[t][i]) rf_loop_fill(&w->o, t, i, v, w->src[t][i]);
  if (fill == FILL_LAYER1) change_layer1(w);
  for (uint32_t r = 0; r < 2; r++) EXPECT(rf_arm(w->r[r], v) == RF_OK, "arm %llu: %s", (unsigned long long)v, rf_last_error(w->r[r]));
  for (uint32_t t = 0; t < 2; t++) EXPECT(rf_push(w->t[t], v, NULL) == RF_OK, "push: %s", rf_last_error(w->t[t]));
  for (uint32_t t = 0; t < 2; t++) {
    st[t] = rf_wait(w->t[t], 0);
    snprintf(err[t], 400, "%s", st[t] == RF_OK ? "" : rf_last_error(w->t[t]));
  }
}

/* the steps of receiver r that must run in the version just pushed: all of them, or (changed) those
 * whose destination's bytes differ from before the push; engine steps in eng[], kernel steps counted */
static uint32_t want_steps(const world *w, uint32_t r, int changed, uint32_t *eng, uint32_t *n_eng, uint32_t *n_kernel)
{
  const rf_plan *p = w->p;
  const hook *k = &w->k[r];
  const rf_fin_index *x = &p->fin_index[k->pos];
  *n_eng = *n_kernel = 0;
  for (uint32_t i = x->first; i < x->first + x->count; i++) {
    const rf_finalize *f = &p->finalize[i];
    uint32_t d = f->dst - p->recv[r].dst_first;
    if (changed && !memcmp(k->snap[d], k->dst[d], p->dst[f->dst].bytes)) continue;
    if (f->kind == RF_FIN_ENGINE) eng[(*n_eng)++] = i;
    else ++*n_kernel;
  }
  return x->count;
}

/* receiver r completed v, with every step run (changed 0) or exactly those whose destination changed:
 * the hook got those engine steps (or was not called when there are none), saw the bytes the version
 * ends with, the kernels had run and match the C reference (checked again now), the counters. Returns
 * the engine steps the hook got */
static uint32_t expect_complete(world *w, uint32_t r, uint64_t v, uint64_t versions_before, int changed)
{
  hook *k = &w->k[r];
  rf_status st = rf_version_wait(w->r[r], v, 0);
  EXPECT(st == RF_OK, "receiver %u version %llu: %s '%s'", r, (unsigned long long)v, rf_strerror(st), rf_last_error(w->r[r]));
  uint32_t eng[MAX_STEPS], n_eng, n_kernel, total = want_steps(w, r, changed, eng, &n_eng, &n_kernel);
  rf_counters c;
  rf_get_counters(w->r[r], &c);
  uint64_t ran = c.finalize_steps - k->c0.finalize_steps, skipped = c.finalize_skipped - k->c0.finalize_skipped;
  EXPECT(ran == n_eng + n_kernel && skipped == total - ran, "receiver %u version %llu: %llu steps ran, %llu skipped; want "
         "%u engine and %u kernel steps of %u", r, (unsigned long long)v, (unsigned long long)ran,
         (unsigned long long)skipped, n_eng, n_kernel, total);
  if (!n_eng) {
    EXPECT(k->calls == k->calls0, "receiver %u version %llu: the hook was called, none of its steps' inputs changed", r,
           (unsigned long long)v);
  } else {
    EXPECT(k->calls == k->calls0 + 1 && atomic_load(&k->returned) == v, "receiver %u: %llu hook calls, it returned for "
           "version %llu, not %llu", r, (unsigned long long)(k->calls - k->calls0),
           (unsigned long long)atomic_load(&k->returned), (unsigned long long)v);
    EXPECT(k->n_got == n_eng && !memcmp(k->got, eng, n_eng * sizeof *eng), "receiver %u version %llu: the hook got %u "
           "steps (first %u), want %u (first %u)", r, (unsigned long long)v, k->n_got, k->n_got ? k->got[0] : RF_NONE, n_eng,
           eng[0]);
    EXPECT(k->sum == checksum(k), "receiver %u version %llu: the hook saw other bytes than the version ends with", r,
           (unsigned long long)v);
    uint32_t kernels = 2 - (k->poisoned != RF_NONE);
    EXPECT(k->kernels_ok && k->kernels_checked == kernels, "receiver %u version %llu: when the hook ran, %llu kernel "
           "steps, their output %s the C reference", r, (unsigned long long)v, (unsigned long long)k->kernels_checked,
           k->kernels_ok ? "equal to" : "not equal to");
    EXPECT(k->reentry == RF_ERR_STATE && strstr(k->reentry_err, "rf_arm from inside this engine's finalize hook"),
           "rf_arm from the hook: %s '%s'", rf_strerror(k->reentry), k->reentry_err);
    EXPECT(k->counter_versions == versions_before, "rf_get_counters in the hook: %llu versions, want %llu",
           (unsigned long long)k->counter_versions, (unsigned long long)versions_before);
  }
  uint64_t bad = 0;
  EXPECT(check_kernels(k, k->poisoned, &bad) == 2 - (k->poisoned != RF_NONE) && bad == 0,
         "receiver %u version %llu: kernel output differs from the C reference", r, (unsigned long long)v);
  return n_eng;
}

/* receiver r's step of layer `layer` of kind `kind` (the plan has one of each per layer and position) */
static const rf_finalize *step_of(const world *w, uint32_t r, int layer, uint8_t kind)
{
  const rf_fin_index *x = &w->p->fin_index[w->k[r].pos];
  char at[32];
  snprintf(at, sizeof at, ".layers.%d.", layer);
  for (uint32_t i = x->first; i < x->first + x->count; i++)
    if (w->p->finalize[i].kind == kind && strstr(w->p->dst[w->p->finalize[i].dst].name, at)) return &w->p->finalize[i];
  return NULL;
}

/* overwrite the output of receiver r's layer-0 kernel step (the test checks it afterwards) */
static uint8_t *poison(world *w, uint32_t r)
{
  hook *k = &w->k[r];
  const rf_finalize *f = step_of(w, r, 0, RF_FIN_KERNEL);
  uint64_t n = w->p->derived[f->out].bytes;
  uint8_t *keep = malloc(n);
  memcpy(keep, k->der[f->out], n);
  memset(k->der[f->out], 0xa5, n);
  k->poisoned = f->out;
  return keep;
}

static int all_poison(const uint8_t *b, uint64_t n)
{
  for (uint64_t i = 0; i < n; i++)
    if (b[i] != 0xa5) return 0;
  return 1;
}

static void test_finalize_steps(void)
{
  world *w = calloc(1, sizeof *w);
  w->p = rf_loop_plan(PLAN);
  w->o = (rf_loop_opts){.plan = w->p, .seed = 24, .sparse = 1};
  const rf_plan *p = w->p;
  EXPECT(p->receivers == 2 && p->trainers == 2 && p->n_fin_index == 2, "plan %s: not 2 x 2 with steps", PLAN);
  for (uint32_t r = 0; r < 2; r++) {
    const rf_fin_index *x = &p->fin_index[p->recv[r].tp_rank];
    EXPECT(x->count == 4 && step_of(w, r, 0, RF_FIN_KERNEL) && step_of(w, r, 1, RF_FIN_KERNEL) &&
           step_of(w, r, 0, RF_FIN_ENGINE) && step_of(w, r, 1, RF_FIN_ENGINE),
           "plan %s position %u: not a kernel and an engine step in each of layers 0 and 1", PLAN, p->recv[r].tp_rank);
  }
  if (cur_failed) return;
  for (uint32_t r = 0; r < 2; r++) open_receiver(w, r);
  for (uint32_t t = 0; t < 2; t++) open_trainer(w, t);
  rf_status st[2];
  char err[2][400];
  rf_counters c;

  /* 1: dense, the first version: every step. Each trainer's rf_wait returns after both hooks returned */
  push(w, 1, FILL_ALL, st, err);
  for (uint32_t t = 0; t < 2; t++) {
    EXPECT(st[t] == RF_OK, "trainer %u version 1: %s '%s'", t, rf_strerror(st[t]), err[t]);
  }
  uint64_t returned0 = atomic_load(&w->k[0].returned), returned1 = atomic_load(&w->k[1].returned);
  EXPECT(returned0 == 1 && returned1 == 1, "the trainers' rf_wait returned before the hooks did (they returned for "
         "versions %llu, %llu)", (unsigned long long)returned0, (unsigned long long)returned1);
  for (uint32_t r = 0; r < 2; r++) EXPECT(expect_complete(w, r, 1, 0, 0) == 2, "receiver %u version 1", r);
  rf_get_counters(w->r[0], &c);
  EXPECT(c.finalize_steps == 4 && c.finalize_skipped == 0 && c.finalize_ns > 0 && c.last_finalize_ns > 0 &&
         c.finalize_ns >= c.last_finalize_ns, "receiver 0 counters: %llu steps, %llu skipped, %llu ns, last %llu ns",
         (unsigned long long)c.finalize_steps, (unsigned long long)c.finalize_skipped, (unsigned long long)c.finalize_ns,
         (unsigned long long)c.last_finalize_ns);

  /* 2: a delta push of every source (the receivers hold version 1, the trainers' base): the steps
   * whose destination the patches changed run after them */
  push(w, 2, FILL_ALL, st, err);
  for (uint32_t t = 0; t < 2; t++) EXPECT(st[t] == RF_OK, "trainer %u version 2: %s '%s'", t, rf_strerror(st[t]), err[t]);
  for (uint32_t r = 0; r < 2; r++) {
    expect_complete(w, r, 2, 1, 1);
    int same = 1;
    for (uint32_t i = 0; i < p->recv[r].dst_count; i++)
      same &= !memcmp(w->k[r].snap[i], w->k[r].dst[i], p->dst[p->recv[r].dst_first + i].bytes);
    EXPECT(!same, "receiver %u: version 2 left the bytes of version 1", r);
    rf_get_counters(w->r[r], &c);
    EXPECT(c.deltas == 2 && c.versions == 2, "receiver %u: %llu peers' patches applied, %llu versions", r,
           (unsigned long long)c.deltas, (unsigned long long)c.versions);
  }

  /* 3: a delta that changes layer 1 only: the hook gets layer 1's engine step alone, layer 1's kernel
   * step runs (its output equals the reference), layer 0's does not (its output stays as the test
   * overwrote it) */
  uint8_t *keep[2];
  for (uint32_t r = 0; r < 2; r++) keep[r] = poison(w, r);
  push(w, 3, FILL_LAYER1, st, err);
  for (uint32_t t = 0; t < 2; t++) EXPECT(st[t] == RF_OK, "trainer %u version 3: %s '%s'", t, rf_strerror(st[t]), err[t]);
  for (uint32_t r = 0; r < 2; r++) {
    hook *k = &w->k[r];
    const rf_finalize *e1 = step_of(w, r, 1, RF_FIN_ENGINE), *k0 = step_of(w, r, 0, RF_FIN_KERNEL);
    uint32_t eng[MAX_STEPS], n_eng, n_kernel;
    want_steps(w, r, 1, eng, &n_eng, &n_kernel);
    EXPECT(n_eng == 1 && eng[0] == (uint32_t)(e1 - p->finalize) && n_kernel == 1,
           "receiver %u version 3: change_layer1 changed %u engine and %u kernel steps' inputs, want layer 1's", r, n_eng,
           n_kernel);
    EXPECT(expect_complete(w, r, 3, 2, 1) == 1 && k->n_got == 1 && k->got[0] == (uint32_t)(e1 - p->finalize),
           "receiver %u version 3: the hook got %u steps, want '%s' of '%s' alone", r, k->n_got, e1->name,
           p->dst[e1->dst].name);
    EXPECT(all_poison(k->der[k0->out], p->derived[k0->out].bytes), "receiver %u version 3: layer 0's kernel step ran", r);
    memcpy(k->der[k0->out], keep[r], p->derived[k0->out].bytes);
    free(keep[r]);
    k->poisoned = RF_NONE;
    uint64_t bad = 0;
    EXPECT(check_kernels(k, RF_NONE, &bad) == 2 && bad == 0, "receiver %u version 3: kernel output", r);
    rf_get_counters(w->r[r], &c);
    EXPECT(c.finalize_skipped - k->c0.finalize_skipped == 2 && c.deltas == 4, "receiver %u version 3: %llu steps "
           "skipped, %llu peers' patches applied", r, (unsigned long long)(c.finalize_skipped - k->c0.finalize_skipped),
           (unsigned long long)c.deltas);
  }

  /* 4: restarted trainers push dense (their slots hold no base), bytes equal to version 3's: every
   * step runs all the same (layer 0's kernel output, overwritten again, is rebuilt) */
  for (uint32_t t = 0; t < 2; t++) rf_close(w->t[t]);
  for (uint32_t t = 0; t < 2; t++) open_trainer(w, t);
  for (uint32_t r = 0; r < 2; r++) keep[r] = poison(w, r);
  push(w, 4, FILL_NONE, st, err);
  for (uint32_t t = 0; t < 2; t++) EXPECT(st[t] == RF_OK, "trainer %u version 4: %s '%s'", t, rf_strerror(st[t]), err[t]);
  for (uint32_t r = 0; r < 2; r++) {
    hook *k = &w->k[r];
    EXPECT(expect_complete(w, r, 4, 3, 0) == 2, "receiver %u version 4: not every engine step", r);
    k->poisoned = RF_NONE;
    uint64_t bad = 0;
    EXPECT(check_kernels(k, RF_NONE, &bad) == 2 && bad == 0, "receiver %u version 4: layer 0's kernel step did not run", r);
    free(keep[r]);
    rf_get_counters(w->r[r], &c);
    EXPECT(c.deltas == 4 && c.versions == 4, "receiver %u version 4: %llu peers' patches applied, %llu versions", r,
           (unsigned long long)c.deltas, (unsigned long long)c.versions);
    const rf_receiver *rv = &p->recv[r];
    int same = 1;
    for (uint32_t i = 0; i < rv->dst_count; i++) same &= !memcmp(k->snap[i], k->dst[i], p->dst[rv->dst_first + i].bytes);
    EXPECT(same, "receiver %u version 4: the bytes differ from version 3's", r);
  }

  /* 5: a delta; receiver 0's hook fails: torn there (naming the step the hook named and its text),
   * complete on receiver 1; each trainer's rf_wait says torn */
  w->k[0].fail_version = 5;
  push(w, 5, FILL_ALL, st, err);
  const hook *k0 = &w->k[0];
  EXPECT(k0->calls == k0->calls0 + 1 && k0->n_got >= 1, "receiver 0 version 5: %llu hook calls",
         (unsigned long long)(k0->calls - k0->calls0));
  const rf_finalize *second = &p->finalize[k0->got[k0->n_got >= 2 ? 1 : 0]];
  char want[300];
  snprintf(want, sizeof want, "version 5 torn: finalize step '%s' of '%s' failed: boom at version 5", second->name,
           p->dst[second->dst].name);
  for (uint32_t t = 0; t < 2; t++)
    EXPECT(st[t] == RF_ERR_TORN && strstr(err[t], want), "trainer %u version 5: %s '%s', want '%s'", t,
           rf_strerror(st[t]), err[t], want);
  rf_status v5 = rf_version_wait(w->r[0], 5, 0);
  EXPECT(v5 == RF_ERR_TORN && strstr(rf_last_error(w->r[0]), want), "receiver 0 version 5: %s '%s', want '%s'",
         rf_strerror(v5), rf_last_error(w->r[0]), want);
  rf_version_state vs;
  EXPECT(rf_version_poll(w->r[0], &vs) == RF_OK && vs.complete == 4 && vs.torn == 5 && vs.armed == 0,
         "receiver 0 after the failed hook: complete %llu torn %llu armed %llu", (unsigned long long)vs.complete,
         (unsigned long long)vs.torn, (unsigned long long)vs.armed);
  rf_get_counters(w->r[0], &c);
  EXPECT(c.torn == 1 && c.versions == 4, "receiver 0: %llu torn, %llu complete", (unsigned long long)c.torn,
         (unsigned long long)c.versions);
  expect_complete(w, 1, 5, 4, 1);

  /* 6: the next version changes layer 1 only: on receiver 0, after its torn version (dense again: it
   * never completed 5), every step runs; receiver 1 takes it as a delta and runs layer 1's alone */
  push(w, 6, FILL_LAYER1, st, err);
  for (uint32_t t = 0; t < 2; t++) EXPECT(st[t] == RF_OK, "trainer %u version 6: %s '%s'", t, rf_strerror(st[t]), err[t]);
  EXPECT(expect_complete(w, 0, 6, 4, 0) == 2, "receiver 0 version 6: not every engine step after the torn version");
  EXPECT(expect_complete(w, 1, 6, 5, 1) == 1 && w->k[1].got[0] == (uint32_t)(step_of(w, 1, 1, RF_FIN_ENGINE) - p->finalize),
         "receiver 1 version 6: not layer 1's engine step alone");

  for (uint32_t t = 0; t < 2; t++) rf_close(w->t[t]);
  for (uint32_t r = 0; r < 2; r++) rf_close(w->r[r]);
  for (uint32_t r = 0; r < 2; r++) {
    for (uint32_t i = 0; i < p->recv[r].dst_count; i++) {
      free(w->k[r].dst[i]);
      free(w->k[r].snap[i]);
    }
    for (uint32_t i = 0; i < p->n_derived; i++) free(w->k[r].der[i]);
    free(w->k[r].dst);
    free(w->k[r].snap);
    free(w->k[r].der);
  }
  for (uint32_t t = 0; t < 2; t++)
    for (uint32_t i = 0; i < 64; i++) free(w->src[t][i]);
  free(w);
}

static const expect_test tests[] = {
  {"finalize steps: kernels then the hook, before complete and ACK; a delta runs the changed steps only; a failing "
   "hook tears", test_finalize_steps},
};

int main(int argc, char **argv)
{
  return run_tests(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, 120);
}
