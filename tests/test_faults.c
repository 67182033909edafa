/* test_faults.c: the version protocol under faults (issue "Versions that cannot lie"). Each test
 * runs real receiver and trainer processes over UCX on loopback (tests/harness/loop.c's cluster), injects
 * one fault, and checks what every receiver reported: a version reported complete must be every
 * byte (each receiver verifies its memory, derived tensors included), and a fenced process must not
 * change a byte after it resumes (receivers verify again). Test names follow the findings:
 * f1..f10 of the issue. Each test runs in its own process. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "plans.h"
#include "refit.h"

#include "expect.h"

#define MS 1000000ull

static rf_loop_opts opts(const char *name)
{
  return (rf_loop_opts){.plan = rf_loop_plan(name), .versions = 1, .seed = (uint64_t)time(NULL) ^ (uint64_t)getpid(),
                        .token = 0x5ec2e7, .tls = "tcp", .timeout_ms = 3000, .verify = 1, .kill_trainer = -1,
                        .kill_receiver = -1};
}

static rf_cluster *start(const rf_loop_opts *o)
{
  char err[512];
  rf_cluster *c = rf_cl_start(o, err, sizeof err);
  EXPECT(c != NULL, "cluster: %s", err);
  if (!c) exit(1);
  return c;
}

/* what one version did: per receiver its result, per trainer process its push result */
typedef struct outcome {
  int complete, torn, timeout, other, wrong, pushed_ok, pushed_err, partial, stale;
  char torn_reason[320], push_error[320], wrong_text[320];
  int recv_status[64];
} outcome;

/* arm v on every live receiver and push it from every trainer process in `pushers` (-1 ends the
 * list; NULL: the current process of every rank); collect every answer within ms */
static outcome version(rf_cluster *c, const rf_plan *p, uint64_t v, const int *pushers, uint32_t push_timeout,
                       uint32_t ms, void (*during)(rf_cluster *, void *), void *arg)
{
  outcome out = {0};
  int want = 0;
  for (uint32_t r = 0; r < p->receivers; r++) {
    out.recv_status[r] = -1;
    if (rf_cl_send(c, rf_cl_receiver(c, r), RF_CL_WAIT, v, ms, 0) == 0) want++;
  }
  if (pushers) {
    for (int i = 0; pushers[i] >= 0; i++) want += rf_cl_send(c, pushers[i], RF_CL_PUSH, v, push_timeout, 0) == 0;
  } else {
    for (uint32_t t = 0; t < p->trainers; t++) want += rf_cl_send(c, rf_cl_trainer(c, t), RF_CL_PUSH, v, push_timeout, 0) == 0;
  }
  if (during) during(c, arg);
  uint64_t t0 = (uint64_t)time(NULL);
  for (int got = 0; got < want && (uint64_t)time(NULL) - t0 < ms / 1000 + 30;) {
    rf_cl_rec m;
    if (rf_cl_next(c, &m, 1000)) continue;
    if (m.kind == RF_CL_RESULT && m.version == v) {
      got++;
      out.recv_status[m.who] = m.status;
      if (m.status == RF_OK) out.complete++;
      else if (m.status == RF_ERR_TORN) out.torn++, snprintf(out.torn_reason, sizeof out.torn_reason, "%s", m.text);
      else if (m.status == RF_ERR_TIMEOUT) out.timeout++;
      else out.other++;
      if (m.mismatches) out.wrong++, snprintf(out.wrong_text, sizeof out.wrong_text, "%s", m.text);
    } else if (m.kind == RF_CL_PUSHED && m.version == v) {
      got++;
      if (m.status == RF_OK) out.pushed_ok++;
      else if (m.status == RF_PARTIAL) out.partial++;
      else {
        out.pushed_err++;
        out.stale += m.status == RF_ERR_STALE;
        snprintf(out.push_error, sizeof out.push_error, "%s", m.text);
      }
    } else if (m.kind == RF_CL_FATAL) {
      EXPECT(0, "a process failed: %s", m.text);
      got++;
    }
  }
  return out;
}

static void all_complete(const rf_plan *p, const outcome *o, uint64_t v)
{
  EXPECT(o->complete == (int)p->receivers && o->wrong == 0, "v%llu: %d of %u receivers complete, %d wrong (%s), torn: %s",
         (unsigned long long)v, o->complete, p->receivers, o->wrong, o->wrong_text, o->torn_reason);
  EXPECT(o->pushed_err == 0, "v%llu: a push failed: %s", (unsigned long long)v, o->push_error);
}

/* every receiver: is its memory still exactly version v? */
static void verify_all(rf_cluster *c, const rf_plan *p, uint64_t v, const char *when)
{
  int want = 0;
  for (uint32_t r = 0; r < p->receivers; r++) want += rf_cl_send(c, rf_cl_receiver(c, r), RF_CL_VERIFY, v, 0, 0) == 0;
  for (int got = 0; got < want;) {
    rf_cl_rec m;
    if (rf_cl_next(c, &m, 20000)) {
      EXPECT(0, "%s: receivers did not answer VERIFY", when);
      return;
    }
    if (m.kind != RF_CL_VERIFIED) continue;
    got++;
    EXPECT(m.mismatches == 0 && m.verified > 0, "%s: receiver %u holds %llu bytes that are not version %llu: %s", when,
           m.who, (unsigned long long)m.mismatches, (unsigned long long)v, m.text);
  }
}

static uint32_t writers_of(const rf_plan *p, uint32_t rank)
{
  uint32_t n = 0;
  for (uint32_t r = 0; r < p->receivers; r++)
    for (uint32_t k = 0; k < p->recv[r].peer_count; k++) n += p->peers[p->recv[r].peer_first + k].trainer == rank;
  return n;
}

/* ---- f1: a stopped receiver outlives the trainers' wait; nothing of it lands in a later version ---- */

typedef struct stop_arg { int proc; uint32_t delay_ms, hold_ms; } stop_arg;
static void stop_for_a_while(rf_cluster *c, void *a)
{
  stop_arg *s = a;
  usleep(s->delay_ms * 1000);
  rf_cl_signal(c, s->proc, SIGSTOP);
  usleep(s->hold_ms * 1000);
  rf_cl_signal(c, s->proc, SIGCONT);
}

static void stopped_receiver(const char *tcp_buf, uint32_t timeout_ms, uint32_t hold_ms)
{
  if (tcp_buf) { /* small socket buffers keep puts in flight long after they were posted */
    setenv("UCX_TCP_SNDBUF", tcp_buf, 1);
    setenv("UCX_TCP_RCVBUF", tcp_buf, 1);
  }
  rf_loop_opts o = opts("glm_tiny_demo");
  o.timeout_ms = timeout_ms;
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  /* v2: receiver 0 freezes 30 ms into the push, longer than its trainers wait (1 s) and than its
   * own deadline: their puts and flushes are still in flight when they give up */
  stop_arg s = {rf_cl_receiver(c, 0), 30, hold_ms};
  outcome b = version(c, p, 2, NULL, 1000, hold_ms + 5000, stop_for_a_while, &s);
  EXPECT(b.wrong == 0, "v2: a receiver reported complete with %d wrong: %s", b.wrong, b.wrong_text);
  EXPECT(b.recv_status[0] != RF_OK || b.pushed_err == 0, "v2: receiver 0 complete although its trainers gave up (%s)",
         b.push_error);
  EXPECT(b.pushed_err > 0 && strstr(b.push_error, "version 2") && strstr(b.push_error, "abandoned"),
         "v2: trainers' waits should time out and say so: '%s'", b.push_error);
  /* v3 and v4: every byte, on every receiver (the abandoned writes are fenced, counters start clean) */
  for (uint64_t v = 3; v <= 4; v++) {
    outcome n = version(c, p, v, NULL, 0, 10000, NULL, NULL);
    all_complete(p, &n, v);
  }
  printf("  v2: %d complete, %d torn, %d timed out (%s); trainers: %s\n", b.complete, b.torn, b.timeout, b.torn_reason,
         b.push_error);
  rf_cl_end(c);
}
static void test_f1_stopped_receiver(void) { stopped_receiver(NULL, 1500, 3000); }
/* 32 KiB: smaller ones slow loopback TCP to a crawl (a window below one loopback segment waits for
 * delayed ACKs), which tests nothing but patience */
static void test_f1_stopped_receiver_small_buffers(void) { stopped_receiver("32k", 5000, 6500); }

/* ---- f2: blob mode: a peer that never said HELLO sends DONE; a dead trainer's endpoint is gone ---- */
static void test_f2_blob_stranger_done(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  o.use_blob = 1;
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  /* trainer rank 0 dies: UCX may hand its endpoint's address to the next peer */
  rf_cl_signal(c, rf_cl_trainer(c, 0), SIGKILL);
  for (uint32_t r = 0; r < p->receivers; r++) rf_cl_send(c, rf_cl_receiver(c, r), RF_CL_WAIT, 2, 2500, 0);
  /* a stranger with receiver 0's blob claims DONE for every rank with the table's byte counts */
  char blob[64], ranks[64] = "", bytes[32];
  snprintf(blob, sizeof blob, "/tmp/refit-blob-%d-0", (int)getpid());
  size_t n = 0;
  for (uint32_t k = 0; k < p->recv[0].peer_count; k++)
    n += (size_t)snprintf(ranks + n, sizeof ranks - n, "%s%u", k ? "," : "", p->peers[p->recv[0].peer_first + k].trainer);
  snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)p->peers[p->recv[0].peer_first].bytes);
  char cmdline[512];
  snprintf(cmdline, sizeof cmdline, "./build/stranger done %s %s %s", blob, ranks, bytes);
  FILE *f = popen(cmdline, "r");
  char line[256] = "";
  if (f && !fgets(line, sizeof line, f)) line[0] = 0;
  if (f) pclose(f);
  EXPECT(strstr(line, "forged DONE"), "stranger did not run: '%s'", line);
  for (int got = 0; got < (int)p->receivers;) {
    rf_cl_rec m;
    if (rf_cl_next(c, &m, 10000)) break;
    if (m.kind != RF_CL_RESULT || m.version != 2) continue;
    got++;
    EXPECT(m.status != RF_OK, "receiver %u reported version 2 complete from forged DONEs", m.who);
  }
  printf("  %s", line);
  rf_cl_end(c);
}

/* ---- f3: a replaced trainer is fenced: when the old process resumes, nothing of it lands ---- */
static void test_f3_replaced_trainer_fenced(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  /* v2: trainer rank 1 freezes with half its writes posted */
  int old = rf_cl_trainer(c, 1);
  for (uint32_t r = 0; r < p->receivers; r++) rf_cl_send(c, rf_cl_receiver(c, r), RF_CL_WAIT, 2, 4000, 0);
  for (uint32_t t = 0; t < p->trainers; t++)
    rf_cl_send(c, rf_cl_trainer(c, t), RF_CL_PUSH, 2, 0, t == 1 ? RF_CL_STOP_HALF : 0);
  EXPECT(rf_cl_await_stop(c, old, 10000) == 0, "trainer rank 1 did not stop itself mid-push");
  /* a new process for rank 1 connects while the old one is frozen: receivers fence the old one */
  char err[256];
  int fresh = rf_cl_spawn_trainer(c, 1, err, sizeof err);
  EXPECT(fresh >= 0, "second process for rank 1: %s", err);
  int results = 0, torn = 0;
  while (results < (int)p->receivers) {
    rf_cl_rec m;
    if (rf_cl_next(c, &m, 10000)) break;
    if (m.kind == RF_CL_RESULT && m.version == 2) {
      results++;
      torn += m.status == RF_ERR_TORN;
      EXPECT(m.mismatches == 0, "v2 complete with wrong bytes: %s", m.text);
    }
  }
  EXPECT(torn == (int)writers_of(p, 1), "v2: %d receivers torn, rank 1 writes to %u", torn, writers_of(p, 1));
  /* v3 from the new process and the others: complete everywhere */
  int pushers[16], k = 0;
  for (uint32_t t = 0; t < p->trainers; t++) pushers[k++] = rf_cl_trainer(c, t);
  pushers[k] = -1;
  outcome b = version(c, p, 3, pushers, 0, 10000, NULL, NULL);
  EXPECT(b.complete == (int)p->receivers && b.wrong == 0, "v3: %d complete, %d wrong (%s)", b.complete, b.wrong,
         b.wrong_text);
  /* the old process goes on with its writes of version 2: its endpoints are closed, so nothing lands */
  rf_cl_signal(c, old, SIGCONT);
  int old_failed = 0;
  for (uint64_t t0 = (uint64_t)time(NULL); (uint64_t)time(NULL) - t0 < 15;) {
    rf_cl_rec m;
    if (rf_cl_next(c, &m, 1000)) continue;
    if (m.kind == RF_CL_PUSHED && m.pid == rf_cl_pid(c, old)) {
      old_failed = m.status != RF_OK;
      printf("  the old process of rank 1 after it resumed: %s\n", m.text);
      break;
    }
  }
  EXPECT(old_failed, "the replaced trainer's push did not fail: two live processes of one rank went unnoticed");
  usleep(300000);
  verify_all(c, p, 3, "after the replaced trainer resumed");
  rf_cl_end(c);
}

/* ---- f4: a restarted trainer that starts again at version 1 is refused before any write ---- */
static void test_f4_restarted_trainer_stale(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  for (uint64_t v = 1; v <= 3; v++) {
    outcome a = version(c, p, v, NULL, 0, 10000, NULL, NULL);
    all_complete(p, &a, v);
  }
  rf_cl_signal(c, rf_cl_trainer(c, 0), SIGKILL);
  char err[256];
  int fresh = rf_cl_spawn_trainer(c, 0, err, sizeof err);
  EXPECT(fresh >= 0, "restart: %s", err);
  rf_cl_send(c, fresh, RF_CL_PUSH, 1, 0, 0);
  rf_cl_rec m;
  while (!rf_cl_next(c, &m, 10000) && m.kind != RF_CL_PUSHED) {
  }
  EXPECT(m.kind == RF_CL_PUSHED && m.status == RF_ERR_STALE && strstr(m.text, "not newer") &&
             strstr(m.text, "rf_resume_version says 4"),
         "stale version from a restarted trainer: status %d '%s'", m.status, m.text);
  verify_all(c, p, 3, "after the stale push");
  outcome b = version(c, p, 4, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &b, 4);
  rf_cl_end(c);
}

/* ---- f5: garbage on the listener port does not take a receiver down ---- */
static void test_f5_garbage_listener(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  for (uint32_t r = 0; r < p->receivers; r++) {
    char cmdline[128], line[256] = "";
    snprintf(cmdline, sizeof cmdline, "./build/stranger garbage %d 75", rf_cl_port(c, r));
    FILE *f = popen(cmdline, "r");
    if (f && !fgets(line, sizeof line, f)) line[0] = 0;
    if (f) pclose(f);
    EXPECT(strstr(line, "garbage to 75"), "receiver %u: garbage clients did not run: '%s'", r, line);
  }
  usleep(200000);
  for (uint32_t r = 0; r < p->receivers; r++)
    EXPECT(kill(rf_cl_pid(c, rf_cl_receiver(c, r)), 0) == 0, "receiver %u died of garbage", r);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  rf_cl_end(c);
}

static int listen_port(rf_cluster *c, uint32_t r) { return rf_cl_port(c, r); }

/* ---- f6: strangers cost nothing: idle connections, floods, and what a rejection says ---- */
static void test_f6_idle_strangers(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  int port = listen_port(c, 0);
  EXPECT(port > 0, "no listening port for receiver 0");
  /* 40 connections that never say HELLO, held for 60 s (longer than load can stretch a connect;
   * stopped at the end), then a trainer restarts and must get in while they are there */
  char cmdline[192], pidfile[64];
  snprintf(pidfile, sizeof pidfile, "/tmp/refit_f6_%d.pid", (int)getpid());
  snprintf(cmdline, sizeof cmdline, "./build/stranger idle %d 40 60000 > /dev/null 2>&1 & echo $! > %s", port, pidfile);
  EXPECT(system(cmdline) == 0, "stranger did not start");
  usleep(800000);
  rf_cl_signal(c, rf_cl_trainer(c, 0), SIGKILL);
  char err[256];
  uint64_t t0 = (uint64_t)time(NULL);
  int fresh = rf_cl_spawn_trainer(c, 0, err, sizeof err);
  EXPECT(fresh >= 0, "a trainer could not connect past 40 idle strangers: %s", err);
  EXPECT((uint64_t)time(NULL) - t0 < 60, "connecting took %llu s, as long as the strangers stayed",
         (unsigned long long)((uint64_t)time(NULL) - t0));
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  rf_cl_end(c);
  FILE *f = fopen(pidfile, "r");
  int spid = 0;
  if (f && fscanf(f, "%d", &spid) == 1 && spid > 0) kill(spid, SIGKILL);
  if (f) fclose(f);
  remove(pidfile);
}

typedef struct flood_arg { int port; } flood_arg;
static void flood(rf_cluster *c, void *a)
{
  (void)c;
  char cmdline[128];
  snprintf(cmdline, sizeof cmdline, "./build/stranger flood %d 5000 > /dev/null 2>&1", ((flood_arg *)a)->port);
  if (system(cmdline)) printf("  stranger flood failed\n");
}

static void test_f6_flood_during_push(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  flood_arg fa = {listen_port(c, 0)};
  EXPECT(fa.port > 0, "no listening port for receiver 0");
  outcome a = version(c, p, 1, NULL, 0, 10000, flood, &fa);
  all_complete(p, &a, 1);
  rf_cl_end(c);
}

static void test_f6_rejection_says_nothing(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  rf_cluster *c = start(&o);
  char cmdline[128], line[512] = "";
  snprintf(cmdline, sizeof cmdline, "./build/stranger hello %d 0", listen_port(c, 0));
  FILE *f = popen(cmdline, "r");
  if (f && !fgets(line, sizeof line, f)) line[0] = 0;
  if (f) pclose(f);
  /* one answer: REJECT (type 5), nothing in it but the echoed session */
  EXPECT(strstr(line, "1 answer(s), type 5, 72 bytes, version 0 value 0 hash 0 nonce 0 len 0 mac 0"),
         "the answer to a stranger's HELLO: '%s'", line);
  rf_cl_end(c);
}

/* ---- f7: a trainer that exits right after its push returned: the version stands ---- */
static void test_f7_exit_after_push(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  for (uint32_t r = 0; r < p->receivers; r++) rf_cl_send(c, rf_cl_receiver(c, r), RF_CL_WAIT, 1, 10000, 0);
  for (uint32_t t = 0; t < p->trainers; t++) rf_cl_send(c, rf_cl_trainer(c, t), RF_CL_PUSH, 1, 0, RF_CL_EXIT_AFTER);
  int complete = 0, pushed = 0;
  for (int got = 0; got < (int)(p->receivers + p->trainers);) {
    rf_cl_rec m;
    if (rf_cl_next(c, &m, 15000)) break;
    if (m.kind == RF_CL_RESULT) got++, complete += m.status == RF_OK && m.mismatches == 0;
    if (m.kind == RF_CL_PUSHED) got++, pushed += m.status == RF_OK;
  }
  EXPECT(pushed == (int)p->trainers, "%d of %u pushes returned RF_OK", pushed, p->trainers);
  EXPECT(complete == (int)p->receivers, "%d of %u receivers complete after their trainers exited", complete, p->receivers);
  rf_cl_end(c);
}

/* ---- f7: a receiver that closes right after its version completed: every push still ends RF_OK ----
 * rf_close used to force-close its endpoints at once, dropping the last ACK that was still in the
 * transport's buffers: the trainers' push failed with "connection reset" (tests/test_examples.sh
 * failed in 3 of 8 runs). Repeated, because the loss depended on timing. */
static void test_f7_receiver_closes_after_complete(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  const rf_plan *p = o.plan;
  for (int round = 0; round < 4; round++) {
    rf_cluster *c = start(&o);
    for (uint32_t r = 0; r < p->receivers; r++)
      rf_cl_send(c, rf_cl_receiver(c, r), RF_CL_WAIT, 1, 10000, RF_CL_CLOSE_AFTER);
    for (uint32_t t = 0; t < p->trainers; t++) rf_cl_send(c, rf_cl_trainer(c, t), RF_CL_PUSH, 1, 10000, 0);
    int complete = 0, pushed = 0;
    char why[320] = "";
    for (int got = 0; got < (int)(p->receivers + p->trainers);) {
      rf_cl_rec m;
      if (rf_cl_next(c, &m, 15000)) break;
      if (m.kind == RF_CL_RESULT) got++, complete += m.status == RF_OK && m.mismatches == 0;
      if (m.kind == RF_CL_PUSHED) got++, pushed += m.status == RF_OK;
      if (m.kind == RF_CL_PUSHED && m.status != RF_OK && !why[0]) snprintf(why, sizeof why, "%s", m.text);
    }
    EXPECT(complete == (int)p->receivers, "round %d: %d of %u receivers complete", round, complete, p->receivers);
    EXPECT(pushed == (int)p->trainers, "round %d: %d of %u pushes returned RF_OK (%s)", round, pushed, p->trainers, why);
    rf_cl_end(c);
  }
}

/* ---- f8: a dead receiver fails only itself; the restarted one is reconnected in place ---- */
static void receiver_restart(int skip_down)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  o.skip_down = skip_down;
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  rf_cl_signal(c, rf_cl_receiver(c, 0), SIGKILL);
  outcome b = version(c, p, 2, NULL, 0, 10000, NULL, NULL);
  uint32_t hit = p->recv[0].peer_count;
  EXPECT(b.complete == (int)p->receivers - 1 && b.wrong == 0, "v2: %d of %u live receivers complete (%s)", b.complete,
         p->receivers - 1, b.torn_reason);
  if (skip_down) {
    EXPECT(b.partial == (int)hit && b.pushed_err == 0, "v2: %d partial pushes, %d errors (%s); %u trainers write to it",
           b.partial, b.pushed_err, b.push_error, hit);
  } else {
    EXPECT(b.pushed_err == (int)hit && strstr(b.push_error, "receiver 0"), "v2: %d push errors (%s); %u write to it",
           b.pushed_err, b.push_error, hit);
  }
  char err[256];
  EXPECT(rf_cl_restart_receiver(c, 0, err, sizeof err) >= 0, "restart: %s", err);
  outcome d = version(c, p, 3, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &d, 3);
  printf("  v2 with receiver 0 down: %s\n", skip_down ? "RF_PARTIAL" : b.push_error);
  rf_cl_end(c);
}
static void test_f8_receiver_restart(void) { receiver_restart(0); }
static void test_f8_receiver_restart_skip(void) { receiver_restart(1); }

/* ---- f8: a receiver killed (SIGKILL) comes back on its port at once, and the next push reaches it
 * without being told: its old port was held for about 60 s by its dead connections (bind: address
 * in use), and the first push after the restart gave up on it (its stale connection failed on
 * BEGIN) ---- */
static void test_f8_receiver_same_port(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  o.timeout_ms = 10000; /* a restarted process on a loaded machine: only hangs should fail */
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  for (int round = 0; round < 2; round++) {
    uint64_t v = 1 + 2 * (uint64_t)round;
    outcome a = version(c, p, v, NULL, 0, 10000, NULL, NULL);
    all_complete(p, &a, v);
    int port = rf_cl_port(c, 0);
    char err[256];
    EXPECT(rf_cl_respawn_receiver(c, 0, err, sizeof err) >= 0, "round %d: restart of receiver 0: %s", round, err);
    EXPECT(rf_cl_port(c, 0) == port, "round %d: receiver 0 restarted on port %d, not its port %d", round,
           rf_cl_port(c, 0), port);
    outcome b = version(c, p, v + 1, NULL, 0, 10000, NULL, NULL);
    EXPECT(b.complete == (int)p->receivers && b.wrong == 0 && b.pushed_ok == (int)p->trainers,
           "round %d: v%llu after the restart: %d of %u receivers complete, %d of %u pushes ok (%s)", round,
           (unsigned long long)(v + 1), b.complete, p->receivers, b.pushed_ok, p->trainers, b.push_error);
  }
  rf_cl_end(c);
}

/* ---- f11: a captured blob-mode HELLO, replayed through the blob's worker address, locked a
 * restarting trainer out: each copy held a connection slot and an endpoint for handshake_ms and,
 * with all 2*peers+16 taken, the trainer's HELLO was dropped unseen (no answer to HELLO, the version
 * torn everywhere, ignored=0 refused=0). Receivers now answer a blob-mode HELLO without keeping
 * anything, and only an AUTH over their nonce gets a slot. ---- */
static void test_f11_hello_replay(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  o.use_blob = 1;
  o.timeout_ms = 10000; /* connecting beside four flooders on a loaded machine: only hangs should fail
                           (a HELLO the old code dropped is never answered, however long it waits) */
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  /* one replayer per receiver, each a HELLO of a trainer rank that writes to it, for 6 s */
  char cmdline[256], out[64];
  for (uint32_t r = 0; r < p->receivers; r++) {
    snprintf(out, sizeof out, "/tmp/refit-replay-%d-%u", (int)getpid(), r);
    snprintf(cmdline, sizeof cmdline, "./build/stranger replay /tmp/refit-blob-%d-%u %llu %u 6000 > %s 2>&1 &",
             (int)getpid(), r, (unsigned long long)o.token, p->peers[p->recv[r].peer_first].trainer, out);
    EXPECT(system(cmdline) == 0, "replayer for receiver %u did not start", r);
  }
  usleep(1500000); /* the copies are arriving (the old code's slots were all taken within this) */
  rf_cl_signal(c, rf_cl_trainer(c, 0), SIGKILL);
  char err[256];
  int fresh = rf_cl_spawn_trainer(c, 0, err, sizeof err);
  EXPECT(fresh >= 0, "the restarted trainer rank 0 could not connect through the replayed HELLOs: %s", err);
  for (uint32_t r = 0; r < p->receivers; r++) { /* each replayer ran to its end, answered with CHALLENGEs */
    snprintf(out, sizeof out, "/tmp/refit-replay-%d-%u", (int)getpid(), r);
    char line[256] = "";
    for (int i = 0; i < 600 && !strstr(line, "stranger:"); i++) {
      FILE *f = fopen(out, "r");
      if (f && !fgets(line, sizeof line, f)) line[0] = 0;
      if (f) fclose(f);
      if (!strstr(line, "stranger:")) usleep(100000);
    }
    unsigned long sent = 0, answers = 0, type = 0;
    EXPECT(sscanf(line, "stranger: replayed one HELLO %lu times, %lu answer(s), first type %lu", &sent, &answers,
                  &type) == 3 && sent > 100 && answers > 0 && type == 2 /* CHALLENGE */,
           "replayer of receiver %u: '%s'", r, line);
    if (r == 0) printf("  receiver 0: %s", line);
    unlink(out);
  }
  /* the version goes once the replayers are done (on a loaded machine they take the CPU a push needs
   * within the receivers' timeout): it must complete, the restarted trainer's part included */
  outcome b = version(c, p, 2, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &b, 2);
  rf_cl_end(c);
}

/* ---- f11: a blob-mode handshake the receiver never finished (it was stopped; the trainer gave
 * up) leaves an endpoint of the trainer's that UCX pairs with the receiver's next one: the
 * receiver must make its endpoint pair with the trainer's current one, or the trainer never hears
 * WELCOME again ---- */
static void test_f11_blob_handshake_abandoned(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  o.use_blob = 1;
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  int rp = rf_cl_receiver(c, 0), tp = -1;
  for (uint32_t t = 0; t < p->trainers && tp < 0; t++)
    if (p->peers[p->recv[0].peer_first].trainer == t) tp = rf_cl_trainer(c, t);
  char text[320];
  rf_cl_signal(c, rp, SIGSTOP);
  int st = rf_cl_reconnect(c, tp, 0, text, sizeof text);
  EXPECT(st == RF_ERR_TIMEOUT && strstr(text, "no answer to HELLO"), "reconnect to a stopped receiver: %d '%s'", st, text);
  rf_cl_signal(c, rp, SIGCONT);
  usleep(300000);
  for (int i = 0; i < 2; i++) {
    st = rf_cl_reconnect(c, tp, 0, text, sizeof text);
    EXPECT(st == RF_OK, "reconnect %d after the receiver resumed: %d '%s'", i + 1, st, text);
  }
  outcome b = version(c, p, 2, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &b, 2);
  rf_cl_end(c);
}

static void test_f8_blob_shm_restarts(void)
{
  rf_loop_opts o = opts("glm_tiny_demo");
  o.use_blob = 1;
  o.no_peer_errors = 1;
  o.tls = "posix,sysv,tcp"; /* shared memory; CMA is left out under ASan (see test_runtime.c) */
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  char err[256];
  for (int i = 0; i < 12; i++) {
    rf_cl_signal(c, rf_cl_trainer(c, 0), SIGKILL);
    int fresh = rf_cl_spawn_trainer(c, 0, err, sizeof err);
    EXPECT(fresh >= 0, "restart %d of trainer rank 0: %s", i + 1, err);
    if (fresh < 0) break;
  }
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  rf_cl_end(c);
}

/* ---- the cluster itself: more restarts than its process table holds (ninja soak gave up after
 * about 430 versions: killed processes kept their table slots, and a spawn that found no slot left
 * its process running untracked) ---- */
static void test_cluster_reuses_slots(void)
{
  rf_loop_opts o = opts("qwen3_tiny_tp2");
  const rf_plan *p = o.plan;
  rf_cluster *c = start(&o);
  char err[256] = "";
  int i = 0;
  for (; i < 100; i++) {
    rf_cl_signal(c, rf_cl_trainer(c, 1), SIGKILL);
    if (rf_cl_spawn_trainer(c, 1, err, sizeof err) < 0) break;
  }
  EXPECT(i == 100, "restart %d of trainer rank 1 failed: %s", i + 1, err);
  outcome a = version(c, p, 1, NULL, 0, 10000, NULL, NULL);
  all_complete(p, &a, 1);
  rf_cl_end(c);
}

/* ---- f10: every refresh step runs with its own shape ---- */
static void test_f10_refresh_shapes(void)
{
  /* glm_tiny_demo with one layer's derived tensors cut to one head: a step whose shape differs */
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  static rf_derived_tensor der[64];
  static rf_refresh ref[64];
  static rf_plan edited;
  if (p->n_derived > 64 || p->n_refresh > 64) return;
  memcpy(der, p->derived, p->n_derived * sizeof *der);
  memcpy(ref, p->refresh, p->n_refresh * sizeof *ref);
  edited = *p;
  edited.derived = der;
  edited.refresh = ref;
  uint32_t k = 1; /* the second step of position 0: not the first, which the old code replayed */
  EXPECT(ref[k].tp_rank == ref[0].tp_rank && ref[k].heads > 1, "unexpected refresh table");
  /* one head: the storage W^T [lora, nope+v] and vLLM's strides for h = 1 (derived tables: views
   * W_UK_T [1, nope, lora] at 0 and W_UV [1, lora, v] at nope) */
  int64_t w = ref[k].qk_nope + ref[k].v_head;
  ref[k].heads = 1;
  rf_derived_tensor *uk = &der[ref[k].out0], *uv = &der[ref[k].out1];
  uk->shape[0] = uv->shape[0] = 1;
  uk->bytes = uv->bytes = (uint64_t)(w * ref[k].kv_lora * 2);
  EXPECT(uk->dst == RF_NONE && uk->storage == ref[k].out0 && uv->offset == ref[k].qk_nope, "unexpected derived layout");
  uk->stride[0] = w, uk->stride[1] = 1, uk->stride[2] = w;
  uv->stride[0] = w, uv->stride[1] = w, uv->stride[2] = 1;
  edited.layout_hash = rf_plan_hash(&edited);
  rf_loop_opts o = opts("glm_tiny_demo");
  o.plan = &edited;
  o.versions = 2;
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "run: %s", r.error);
  for (int i = 0; rc == 0 && i < r.n; i++)
    EXPECT(r.v[i].complete == (int)p->receivers && r.v[i].mismatches == 0, "v%d: %d complete, %llu bytes wrong: %s",
           i + 1, r.v[i].complete, (unsigned long long)r.v[i].mismatches, r.v[i].mismatch);
  /* a step of a kind this library does not know is refused at open */
  ref[k].kind = 99;
  edited.layout_hash = rf_plan_hash(&edited);
  rf_config cfg = {.plan = &edited, .role = RF_RECEIVER, .rank = 0, .ucx_tls = "tcp"};
  rf_engine *e;
  rf_status s = rf_open(&cfg, &e);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(e), "kind 99"), "unknown refresh kind: %s '%s'", rf_strerror(s),
         rf_last_error(e));
  rf_close(e);
}

static const expect_test tests[] = {
  {"f1 stopped receiver outlives the trainers' wait; later versions exact", test_f1_stopped_receiver},
  {"f1 same with 32 KiB TCP buffers (puts long in flight)", test_f1_stopped_receiver_small_buffers},
  {"f2 blob mode: forged DONE from a peer that never authenticated", test_f2_blob_stranger_done},
  {"f3 replaced trainer fenced: nothing lands when the old process resumes", test_f3_replaced_trainer_fenced},
  {"f4 restarted trainer at version 1: refused before any write", test_f4_restarted_trainer_stale},
  {"f5 raw TCP garbage on every listener", test_f5_garbage_listener},
  {"f6 40 idle strangers do not lock a trainer out", test_f6_idle_strangers},
  {"f6 a stranger's flood during a push", test_f6_flood_during_push},
  {"f6 a rejection tells a stranger nothing", test_f6_rejection_says_nothing},
  {"f7 trainers exit right after their push: the version stands", test_f7_exit_after_push},
  {"f7 receivers close right after complete: every push ends RF_OK", test_f7_receiver_closes_after_complete},
  {"f8 dead receiver fails only itself; restarted one reconnected", test_f8_receiver_restart},
  {"f8 same with skip_down: RF_PARTIAL", test_f8_receiver_restart_skip},
  {"f8 killed receiver back on its port; the next push reaches it", test_f8_receiver_same_port},
  {"f8 blob mode over shared memory: 12 trainer restarts", test_f8_blob_shm_restarts},
  {"f10 refresh steps of different shapes; unknown refresh kind", test_f10_refresh_shapes},
  {"f11 a replayed blob-mode HELLO does not lock a restarting trainer out", test_f11_hello_replay},
  {"f11 blob mode: a handshake the receiver never finished does not break the next", test_f11_blob_handshake_abandoned},
  {"cluster: 100 trainer restarts, more than its process table holds", test_cluster_reuses_slots},
};

int main(int argc, char **argv)
{
  return run_tests(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, 150);
}
