/* test_finalize.c: finalize steps (DESIGN.md 5d, refit.h rf_set_finalize) over TCP loopback in one
 * process: both receivers of plan qwen3_tiny_finalize (TP2; per position a UE8M0 pack of the qkv
 * scales, a refit kernel, and an engine step on the down_proj weights) and its two trainer ranks,
 * every engine with a progress thread. Checked: rf_listen refuses engine steps without a hook
 * (naming the step); the hook runs once per version after every byte is in and the kernel steps
 * ran (it sees the bytes the version ends with, and the kernels' output equals the C reference),
 * and each trainer's rf_wait returns only after every receiver's hook returned; delta pushes run
 * the steps too; a hook that fails tears the version on its receiver (rf_version_wait and the
 * trainers' rf_wait say RF_ERR_TORN with the step's name and the hook's text) and the next version
 * completes; the hook's calls into its own engine are refused, not deadlocked; the counters. */
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

typedef struct hook {
  rf_engine *r;
  const rf_plan *p;
  uint32_t recv, pos;
  void **dst;                /* [dst_count] bound destination tensors */
  void **der;                /* [n_derived] bound derived storages (this position's) */
  uint64_t fail_version;     /* the hook fails this version */
  _Atomic uint64_t returned; /* the newest version the hook returned for */
  uint64_t calls, sum, kernels_ok, kernels_checked, steps_ok;
  rf_status reentry;         /* what rf_arm from inside the hook returned */
  char reentry_err[200];
  uint64_t counter_versions; /* rf_get_counters from inside the hook: versions complete before this one */
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

/* the position's kernel steps: their storages equal the C reference over what the dst holds now
 * (and are not all zero); returns the steps checked, counting mismatches in *bad */
static uint32_t check_kernels(const hook *k, uint64_t *bad)
{
  const rf_plan *p = k->p;
  const rf_fin_index *x = &p->fin_index[k->pos];
  uint32_t n = 0;
  for (uint32_t i = x->first; i < x->first + x->count; i++) {
    const rf_finalize *f = &p->finalize[i];
    if (f->kind != RF_FIN_KERNEL) continue;
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
  const rf_plan *p = k->p;
  k->calls++;
  /* exactly this position's engine steps, in table order */
  const rf_fin_index *x = &p->fin_index[k->pos];
  uint32_t want = 0, ok = 1;
  for (uint32_t i = x->first; i < x->first + x->count; i++)
    if (p->finalize[i].kind == RF_FIN_ENGINE) ok &= want < n && steps[want++] == i;
  k->steps_ok += ok && want == n;
  k->sum = checksum(k);
  uint64_t bad = 0;
  k->kernels_checked = check_kernels(k, &bad);
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
              .der = calloc(p->n_derived, sizeof(void *))};
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    uint32_t id = rv->dst_first + i;
    k->dst[i] = calloc(1, p->dst[id].bytes);
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

static void open_trainer(world *w, uint32_t t)
{
  rf_config c = {.plan = w->p, .role = RF_TRAINER, .rank = t, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 20000,
                 .progress_thread = 1, .delta = 1};
  rf_engine *e;
  EXPECT(rf_open(&c, &e) == RF_OK, "trainer %u open: %s", t, rf_last_error(e));
  for (uint32_t i = 0; i < w->p->n_src && i < 64; i++) {
    size_t n = rf_src_bytes(e, i);
    if (!n) continue;
    w->src[t][i] = calloc(1, n);
    EXPECT(rf_bind_src(e, i, w->src[t][i], n) == RF_OK, "bind src: %s", rf_last_error(e));
  }
  for (uint32_t r = 0; r < 2; r++)
    EXPECT(rf_connect(e, r, "127.0.0.1", w->port[r]) == RF_OK, "connect: %s", rf_last_error(e));
  w->t[t] = e;
}

/* push version v from both trainers (sources as rf_loop_fill gives them); each trainer's rf_wait
 * status and error */
static void push(world *w, uint64_t v, rf_status st[2], char err[2][400])
{
  for (uint32_t t = 0; t < 2; t++)
    for (uint32_t i = 0; i < w->p->n_src && i < 64; i++)
      if (w->src[t][i]) rf_loop_fill(&w->o, t, i, v, w->src[t][i]);
  for (uint32_t r = 0; r < 2; r++) EXPECT(rf_arm(w->r[r], v) == RF_OK, "arm %llu: %s", (unsigned long long)v, rf_last_error(w->r[r]));
  for (uint32_t t = 0; t < 2; t++) EXPECT(rf_push(w->t[t], v, NULL) == RF_OK, "push: %s", rf_last_error(w->t[t]));
  for (uint32_t t = 0; t < 2; t++) {
    st[t] = rf_wait(w->t[t], 0);
    snprintf(err[t], 400, "%s", st[t] == RF_OK ? "" : rf_last_error(w->t[t]));
  }
}

/* receiver r completed v: its hook saw the bytes it ends with, the kernels had run and match the C
 * reference (checked again now), the counters */
static void expect_complete(world *w, uint32_t r, uint64_t v, uint64_t versions_before)
{
  hook *k = &w->k[r];
  rf_status st = rf_version_wait(w->r[r], v, 0);
  EXPECT(st == RF_OK, "receiver %u version %llu: %s '%s'", r, (unsigned long long)v, rf_strerror(st), rf_last_error(w->r[r]));
  EXPECT(atomic_load(&k->returned) == v, "receiver %u: the hook returned for version %llu, not %llu", r,
         (unsigned long long)atomic_load(&k->returned), (unsigned long long)v);
  EXPECT(k->sum == checksum(k), "receiver %u version %llu: the hook saw other bytes than the version ends with", r,
         (unsigned long long)v);
  EXPECT(k->kernels_ok && k->kernels_checked == 2, "receiver %u version %llu: when the hook ran, %llu kernel steps, "
         "their output %s the C reference", r, (unsigned long long)v, (unsigned long long)k->kernels_checked,
         k->kernels_ok ? "equal to" : "not equal to");
  uint64_t bad = 0;
  EXPECT(check_kernels(k, &bad) == 2 && bad == 0, "receiver %u version %llu: kernel output differs from the C reference",
         r, (unsigned long long)v);
  EXPECT(k->reentry == RF_ERR_STATE && strstr(k->reentry_err, "rf_arm from inside this engine's finalize hook"),
         "rf_arm from the hook: %s '%s'", rf_strerror(k->reentry), k->reentry_err);
  EXPECT(k->counter_versions == versions_before, "rf_get_counters in the hook: %llu versions, want %llu",
         (unsigned long long)k->counter_versions, (unsigned long long)versions_before);
  EXPECT(k->steps_ok == k->calls, "receiver %u: the hook was given other steps than its position's engine steps", r);
}

static void test_finalize_steps(void)
{
  world *w = calloc(1, sizeof *w);
  w->p = rf_loop_plan(PLAN);
  w->o = (rf_loop_opts){.plan = w->p, .seed = 24, .sparse = 1};
  EXPECT(w->p->receivers == 2 && w->p->trainers == 2 && w->p->n_fin_index == 2, "plan %s: not 2 x 2 with steps", PLAN);
  for (uint32_t r = 0; r < 2; r++) open_receiver(w, r);
  for (uint32_t t = 0; t < 2; t++) open_trainer(w, t);
  rf_status st[2];
  char err[2][400];

  /* 1: dense. Each trainer's rf_wait returns after both hooks returned */
  push(w, 1, st, err);
  for (uint32_t t = 0; t < 2; t++) {
    EXPECT(st[t] == RF_OK, "trainer %u version 1: %s '%s'", t, rf_strerror(st[t]), err[t]);
  }
  uint64_t returned0 = atomic_load(&w->k[0].returned), returned1 = atomic_load(&w->k[1].returned);
  EXPECT(returned0 == 1 && returned1 == 1, "the trainers' rf_wait returned before the hooks did (they returned for "
         "versions %llu, %llu)", (unsigned long long)returned0, (unsigned long long)returned1);
  uint64_t sum1[2];
  for (uint32_t r = 0; r < 2; r++) {
    expect_complete(w, r, 1, 0);
    sum1[r] = w->k[r].sum;
  }
  rf_counters c;
  rf_get_counters(w->r[0], &c);
  EXPECT(c.finalize_steps == 4 && c.finalize_ns > 0 && c.last_finalize_ns > 0 && c.finalize_ns >= c.last_finalize_ns,
         "receiver 0 counters: %llu steps, %llu ns, last %llu ns", (unsigned long long)c.finalize_steps,
         (unsigned long long)c.finalize_ns, (unsigned long long)c.last_finalize_ns);

  /* 2: a delta push (the receivers hold version 1, the trainers' base): the steps run after the patches */
  push(w, 2, st, err);
  for (uint32_t t = 0; t < 2; t++) EXPECT(st[t] == RF_OK, "trainer %u version 2: %s '%s'", t, rf_strerror(st[t]), err[t]);
  for (uint32_t r = 0; r < 2; r++) {
    expect_complete(w, r, 2, 1);
    EXPECT(w->k[r].sum != sum1[r], "receiver %u: version 2 left the bytes of version 1", r);
    rf_get_counters(w->r[r], &c);
    EXPECT(c.deltas == 2 && c.versions == 2 && c.finalize_steps == 8, "receiver %u: %llu peers' patches applied, %llu "
           "versions, %llu finalize steps", r, (unsigned long long)c.deltas, (unsigned long long)c.versions,
           (unsigned long long)c.finalize_steps);
  }

  /* 3: receiver 0's hook fails: torn there (naming the step the hook named and its text), complete on
   * receiver 1; each trainer's rf_wait says torn */
  w->k[0].fail_version = 3;
  push(w, 3, st, err);
  const rf_plan *p = w->p;
  const rf_fin_index *x = &p->fin_index[w->k[0].pos];
  const rf_finalize *second = NULL;
  for (uint32_t i = x->first, n = 0; i < x->first + x->count; i++)
    if (p->finalize[i].kind == RF_FIN_ENGINE && ++n == 2) second = &p->finalize[i];
  char want[300];
  snprintf(want, sizeof want, "version 3 torn: finalize step '%s' of '%s' failed: boom at version 3", second->name,
           p->dst[second->dst].name);
  for (uint32_t t = 0; t < 2; t++)
    EXPECT(st[t] == RF_ERR_TORN && strstr(err[t], want), "trainer %u version 3: %s '%s', want '%s'", t,
           rf_strerror(st[t]), err[t], want);
  rf_status v3 = rf_version_wait(w->r[0], 3, 0);
  EXPECT(v3 == RF_ERR_TORN && strstr(rf_last_error(w->r[0]), want), "receiver 0 version 3: %s '%s', want '%s'",
         rf_strerror(v3), rf_last_error(w->r[0]), want);
  rf_version_state vs;
  EXPECT(rf_version_poll(w->r[0], &vs) == RF_OK && vs.complete == 2 && vs.torn == 3 && vs.armed == 0,
         "receiver 0 after the failed hook: complete %llu torn %llu armed %llu", (unsigned long long)vs.complete,
         (unsigned long long)vs.torn, (unsigned long long)vs.armed);
  rf_get_counters(w->r[0], &c);
  EXPECT(c.torn == 1 && c.versions == 2, "receiver 0: %llu torn, %llu complete", (unsigned long long)c.torn,
         (unsigned long long)c.versions);
  expect_complete(w, 1, 3, 2);

  /* 4: the next version completes everywhere (receiver 0 dense again: it never completed 3) */
  push(w, 4, st, err);
  for (uint32_t t = 0; t < 2; t++) EXPECT(st[t] == RF_OK, "trainer %u version 4: %s '%s'", t, rf_strerror(st[t]), err[t]);
  expect_complete(w, 0, 4, 2);
  expect_complete(w, 1, 4, 3);

  for (uint32_t t = 0; t < 2; t++) rf_close(w->t[t]);
  for (uint32_t r = 0; r < 2; r++) rf_close(w->r[r]);
  for (uint32_t r = 0; r < 2; r++) {
    for (uint32_t i = 0; i < p->recv[r].dst_count; i++) free(w->k[r].dst[i]);
    for (uint32_t i = 0; i < p->n_derived; i++) free(w->k[r].der[i]);
    free(w->k[r].dst);
    free(w->k[r].der);
  }
  for (uint32_t t = 0; t < 2; t++)
    for (uint32_t i = 0; i < 64; i++) free(w->src[t][i]);
  free(w);
}

static const expect_test tests[] = {
  {"finalize steps: kernels then the hook, before complete and ACK; a failing hook tears; delta too", test_finalize_steps},
};

int main(int argc, char **argv)
{
  return run_tests(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, 120);
}
