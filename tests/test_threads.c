/* test_threads.c: the engine's threading rule (runtime/internal.h) in one process, trainers and a
 * receiver over TCP loopback: waits with a progress thread sleep (they wake for changes, not in a
 * loop); only the lock holder touches the UCX worker and the roles' state (rf_resume_version,
 * rf_export); rf_connect lets the lock go while it waits; a staging failure is what rf_wait reports;
 * rf_progress on a receiver takes messages only, the version completes in rf_version_poll; a WELCOME
 * that fails part way leaves no remote key behind. Counts come from the engine's test hooks
 * (internal.h: rf__wakeups, rf__lock_misses, rf__receiver_settled, rf__ucx_fail_rkey,
 * rf__ucx_live_rkeys). Each test runs in its own process. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "loop.h"
#include "plans.h"

#include "expect.h"

#define PLAN "qwen3_tiny_tp2" /* 2 trainer ranks, both write to receiver 0 */
#define TOKEN 0x7e57

typedef struct side {
  rf_engine *r;          /* receiver 0 */
  rf_engine *t[8];       /* the trainer ranks that write to it */
  uint32_t n_t;
  uint16_t port;
  void *mem[4096];
  uint32_t n_mem;
} side;

static uint64_t now_ms(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void *zeros(side *s, size_t n)
{
  void *m = calloc(1, n ? n : 1);
  if (s->n_mem < sizeof s->mem / sizeof s->mem[0]) s->mem[s->n_mem++] = m;
  return m;
}

static rf_engine *open_receiver(side *s, const rf_plan *p, int progress_thread)
{
  rf_config c = {.plan = p, .role = RF_RECEIVER, .rank = 0, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 20000,
                 .progress_thread = progress_thread};
  rf_engine *r;
  EXPECT(rf_open(&c, &r) == RF_OK, "receiver open: %s", rf_last_error(r));
  const rf_receiver *rv = &p->recv[0];
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    uint32_t id = rv->dst_first + i;
    EXPECT(rf_bind_dst(r, id, zeros(s, p->dst[id].bytes), p->dst[id].bytes) == RF_OK, "bind dst: %s", rf_last_error(r));
  }
  EXPECT(rf_listen(r, "127.0.0.1", 0, &s->port) == RF_OK, "listen: %s", rf_last_error(r));
  s->r = r;
  return r;
}

static rf_engine *open_trainer(side *s, const rf_plan *p, uint32_t rank, int progress_thread)
{
  rf_config c = {.plan = p, .role = RF_TRAINER, .rank = rank, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 20000,
                 .skip_down = 1, .progress_thread = progress_thread};
  rf_engine *t;
  EXPECT(rf_open(&c, &t) == RF_OK, "trainer %u open: %s", rank, rf_last_error(t));
  for (uint32_t i = 0; i < p->n_src; i++) {
    size_t n = rf_src_bytes(t, i);
    if (n) EXPECT(rf_bind_src(t, i, zeros(s, n), n) == RF_OK, "bind src: %s", rf_last_error(t));
  }
  return t;
}

/* receiver 0 and every trainer rank that writes to it, all with progress threads, connected */
static void open_all(side *s, const rf_plan *p)
{
  open_receiver(s, p, 1);
  for (uint32_t k = 0; k < p->recv[0].peer_count && s->n_t < 8; k++) {
    rf_engine *t = open_trainer(s, p, p->peers[p->recv[0].peer_first + k].trainer, 1);
    EXPECT(rf_connect(t, 0, "127.0.0.1", s->port) == RF_OK, "connect: %s", rf_last_error(t));
    s->t[s->n_t++] = t;
  }
}

static void close_all(side *s)
{
  for (uint32_t i = 0; i < s->n_t; i++) rf_close(s->t[i]);
  rf_close(s->r);
  for (uint32_t i = 0; i < s->n_mem; i++) free(s->mem[i]);
}

/* 1. rf_version_wait and rf_wait with a progress thread sleep until something changes: a wait that
 * cannot end wakes a handful of times, not in a loop (a condition variable on the realtime clock
 * with a monotonic deadline returned at once, so each wait spun on the lock) */
static void test_waits_sleep(void)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  side s = {0};
  open_all(&s, p);
  uint64_t w0 = rf__wakeups(s.r), t0 = now_ms();
  rf_status st = rf_version_wait(s.r, 1, 300); /* nothing armed, nothing pushed */
  uint64_t woke = rf__wakeups(s.r) - w0, took = now_ms() - t0;
  EXPECT(took >= 300, "rf_version_wait(300 ms) returned after %llu ms", (unsigned long long)took);
  EXPECT(st == RF_ERR_TIMEOUT && strstr(rf_last_error(s.r), "version 1 not complete after 300 ms"),
         "rf_version_wait: %s '%s'", rf_strerror(st), rf_last_error(s.r));
  EXPECT(woke >= 1 && woke < 40, "rf_version_wait of 300 ms woke %llu times", (unsigned long long)woke);
  /* a push the receiver never grants (nothing armed): rf_wait sleeps until its timeout */
  EXPECT(rf_push(s.t[0], 1, NULL) == RF_OK, "push: %s", rf_last_error(s.t[0]));
  w0 = rf__wakeups(s.t[0]);
  t0 = now_ms();
  st = rf_wait(s.t[0], 300);
  woke = rf__wakeups(s.t[0]) - w0;
  took = now_ms() - t0;
  EXPECT(took >= 300, "rf_wait(300 ms) returned after %llu ms", (unsigned long long)took);
  EXPECT(st == RF_ERR_TIMEOUT && strstr(rf_last_error(s.t[0]), "push not finished after 300 ms"), "rf_wait: %s '%s'",
         rf_strerror(st), rf_last_error(s.t[0]));
  EXPECT(woke >= 1 && woke < 40, "rf_wait of 300 ms woke %llu times", (unsigned long long)woke);
  close_all(&s);
}

/* 2. only the lock holder touches the UCX worker: the progress thread arms it under the lock and
 * polls the event fd without it; rf_resume_version and rf_export take the lock */
static void test_worker_only_under_lock(void)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  side s = {0};
  open_all(&s, p);
  EXPECT(rf_arm(s.r, 1) == RF_OK, "arm: %s", rf_last_error(s.r));
  for (uint32_t i = 0; i < s.n_t; i++) EXPECT(rf_push(s.t[i], 1, NULL) == RF_OK, "push: %s", rf_last_error(s.t[i]));
  for (uint32_t i = 0; i < s.n_t; i++) {
    rf_status w = rf_wait(s.t[i], 0);
    EXPECT(w == RF_OK || w == RF_PARTIAL, "trainer %u wait: %s '%s'", i, rf_strerror(w), rf_last_error(s.t[i]));
  }
  EXPECT(rf_version_wait(s.r, 1, 0) == RF_OK, "version 1: %s", rf_last_error(s.r));
  struct timespec ts = {0, 100 * 1000000}; /* idle: the progress threads arm and sleep many times */
  nanosleep(&ts, NULL);
  EXPECT(rf_resume_version(s.t[0]) == 2, "resume version %llu", (unsigned long long)rf_resume_version(s.t[0]));
  size_t len = 0;
  EXPECT(rf_export(s.r, NULL, 0, &len) == RF_ERR_SIZE && len > 0, "export size: %zu", len);
  for (uint32_t i = 0; i < s.n_t; i++)
    EXPECT(rf__lock_misses(s.t[i]) == 0, "trainer %u: %llu calls touched the worker or its state without the lock", i,
           (unsigned long long)rf__lock_misses(s.t[i]));
  EXPECT(rf__lock_misses(s.r) == 0, "receiver: %llu calls touched the worker or its state without the lock",
         (unsigned long long)rf__lock_misses(s.r));
  close_all(&s);
}

/* 3. a staging failure is the push's result: an op the kernels refuse (rows < 0), pushed to no live
 * receiver (skip_down), makes rf_wait report the staging error, not RF_OK or RF_PARTIAL */
static rf_op bad_ops[4096];
static void stage_failure(int mem)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  if (p->n_ops > sizeof bad_ops / sizeof bad_ops[0]) return;
  rf_plan q = *p;
  memcpy(bad_ops, p->ops, p->n_ops * sizeof *bad_ops);
  bad_ops[p->ranks[0].op_first].rows = -1;
  q.ops = bad_ops;
  q.layout_hash = rf_plan_hash(&q);
  rf_config c = {.plan = &q, .role = RF_TRAINER, .rank = 0, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 20000,
                 .skip_down = 1, .mem = mem};
  rf_engine *t;
  rf_status st = rf_open(&c, &t);
  EXPECT(st == RF_OK, "open: %s", rf_last_error(t));
  if (st != RF_OK) return rf_close(t);
  void *buf[1024] = {0};
  for (uint32_t i = 0; i < p->n_src && i < 1024; i++) {
    size_t n = rf_src_bytes(t, i);
    if (n) buf[i] = calloc(1, n);
    if (n) EXPECT(rf_bind_src(t, i, buf[i], n) == RF_OK, "bind: %s", rf_last_error(t));
  }
  rf_status push = rf_push(t, 1, NULL);
  rf_status w = rf_wait(t, 0), again = rf_wait(t, 0);
  const char *name = p->src[p->ops[p->ranks[0].op_first].src].name;
  EXPECT(push == RF_OK || push == RF_ERR_KERNEL, "push: %s '%s'", rf_strerror(push), rf_last_error(t));
  EXPECT(w == RF_ERR_KERNEL && again == RF_ERR_KERNEL && strstr(rf_last_error(t), "staging") &&
             strstr(rf_last_error(t), name),
         "rf_wait after a failed staging: %s, then %s, '%s' (want the staging error naming '%s')", rf_strerror(w),
         rf_strerror(again), rf_last_error(t), name);
  rf_close(t);
  for (uint32_t i = 0; i < 1024; i++) free(buf[i]);
}
static void test_stage_failure_reported(void) { stage_failure(RF_MEM_HOST); }

/* 4. rf_connect lets the lock go while it waits: another thread's call is answered meanwhile (it
 * sees the handshake under way). The listener accepts TCP and never answers. */
typedef struct watcher {
  rf_engine *t;
  atomic_int done;
  int saw_connecting, calls;
} watcher;

static void *watch(void *arg)
{
  watcher *w = arg;
  while (!atomic_load(&w->done)) {
    rf_target_state ts;
    if (rf_target_report(w->t, 0, &ts) == RF_OK && ts.status == RF_TARGET_CONNECTING && !atomic_load(&w->done)) {
      w->saw_connecting = 1;
      break;
    }
    w->calls++;
  }
  return NULL;
}

static void test_connect_lets_lock_go(void)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  EXPECT(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
             getsockname(fd, (struct sockaddr *)&a, &al) == 0,
         "silent listener");
  side s = {0};
  rf_config c = {.plan = p, .role = RF_TRAINER, .rank = 0, .token = TOKEN, .ucx_tls = "tcp", .timeout_ms = 3000,
                 .progress_thread = 1};
  rf_engine *t;
  EXPECT(rf_open(&c, &t) == RF_OK, "open: %s", rf_last_error(t));
  watcher w = {.t = t};
  pthread_t th;
  pthread_create(&th, NULL, watch, &w);
  rf_status st = rf_connect(t, 0, "127.0.0.1", ntohs(a.sin_port));
  atomic_store(&w.done, 1);
  pthread_join(th, NULL);
  EXPECT(st != RF_OK && strstr(rf_last_error(t), "receiver 0 (127.0.0.1:"), "connect to a silent listener: %s '%s'",
         rf_strerror(st), rf_last_error(t));
  EXPECT(w.saw_connecting, "another thread's rf_target_report never ran while rf_connect waited (%d calls)", w.calls);
  /* rf_import goes the same way (connect_wait): a blob is checked first, so a bad one fails at once */
  EXPECT(rf__lock_misses(t) == 0, "%llu lock misses", (unsigned long long)rf__lock_misses(t));
  rf_close(t);
  close(fd);
  (void)s;
}

/* 6. rf_progress never blocks: on a receiver it takes messages only. With every DONE in, the
 * version waits (no patch apply, no refresh, no ACK) until rf_version_poll completes it. */
typedef struct driver {
  rf_engine *r;
  atomic_int stop;
  int settled_seen;
  uint64_t versions_after; /* the receiver's completed versions after 200 more rf_progress calls */
} driver;

static void *drive_receiver(void *arg)
{
  driver *d = arg;
  uint64_t t0 = (uint64_t)time(NULL);
  while (!atomic_load(&d->stop) && (uint64_t)time(NULL) - t0 < 60) {
    rf_progress(d->r);
    if (!rf__receiver_settled(d->r)) continue;
    d->settled_seen = 1;
    for (int i = 0; i < 200; i++) rf_progress(d->r);
    rf_counters k;
    rf_get_counters(d->r, &k);
    d->versions_after = k.versions;
    break;
  }
  return NULL;
}

static void test_progress_takes_messages_only(void)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  side s = {0};
  open_receiver(&s, p, 0); /* no progress thread: this test's driver thread is its only caller */
  driver d = {.r = s.r};
  pthread_t th;
  pthread_create(&th, NULL, drive_receiver, &d);
  for (uint32_t k = 0; k < p->recv[0].peer_count && s.n_t < 8; k++) {
    rf_engine *t = open_trainer(&s, p, p->peers[p->recv[0].peer_first + k].trainer, 1);
    EXPECT(rf_connect(t, 0, "127.0.0.1", s.port) == RF_OK, "connect: %s", rf_last_error(t));
    s.t[s.n_t++] = t;
  }
  /* arming is the driver's call too (one thread per engine without a progress thread): auto_arm
   * would need a config change, so the trainers push and the receiver grants on arm below */
  atomic_store(&d.stop, 1);
  pthread_join(th, NULL);
  EXPECT(rf_arm(s.r, 1) == RF_OK, "arm: %s", rf_last_error(s.r));
  d = (driver){.r = s.r};
  pthread_create(&th, NULL, drive_receiver, &d);
  for (uint32_t i = 0; i < s.n_t; i++) EXPECT(rf_push(s.t[i], 1, NULL) == RF_OK, "push: %s", rf_last_error(s.t[i]));
  pthread_join(th, NULL);
  EXPECT(d.settled_seen, "every DONE in, yet rf_progress had completed the version already (or no DONE came)");
  EXPECT(d.versions_after == 0, "rf_progress completed %llu versions", (unsigned long long)d.versions_after);
  rf_version_state vs;
  EXPECT(rf_version_poll(s.r, &vs) == RF_OK && vs.complete == 1 && vs.armed == 0,
         "rf_version_poll: complete %llu armed %llu torn '%s'", (unsigned long long)vs.complete,
         (unsigned long long)vs.armed, vs.torn_reason);
  for (uint32_t i = 0; i < s.n_t; i++) {
    rf_status w = rf_wait(s.t[i], 0);
    EXPECT(w == RF_OK || w == RF_PARTIAL, "trainer %u: %s '%s'", i, rf_strerror(w), rf_last_error(s.t[i]));
  }
  close_all(&s);
}

/* 5. the remote keys a WELCOME unpacked before one of its keys failed are destroyed with the endpoint
 * (issue 22 item 5: have_keys was set after the loop, so down() kept them; the retried WELCOME then
 * overwrote them and nothing destroyed them). The trainer's `fail_at`-th unpack fails; connect_wait
 * tries again and the second WELCOME takes every key: one WELCOME's keys live, none after rf_close. */
static void partial_welcome(uint32_t fail_at)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  side s = {0};
  open_receiver(&s, p, 1);
  uint32_t rank = p->peers[p->recv[0].peer_first].trainer;
  int64_t keys = (int64_t)p->recv[0].dst_count + rf__blob_areas(p, 0), live0 = rf__ucx_live_rkeys();
  EXPECT(fail_at >= 2 && fail_at <= keys, "fail unpack %u of %lld", fail_at, (long long)keys);
  rf_engine *t = open_trainer(&s, p, rank, 0); /* no progress thread: this thread alone unpacks */
  s.t[s.n_t++] = t;
  rf__ucx_fail_rkey(t, fail_at);
  rf_status st = rf_connect(t, 0, "127.0.0.1", s.port);
  EXPECT(st == RF_OK, "connect after a failed WELCOME: %s '%s'", rf_strerror(st), rf_last_error(t));
  int64_t live = rf__ucx_live_rkeys() - live0; /* this trainer's (an earlier case's leak left out) */
  EXPECT(live == keys, "after a WELCOME that failed at key %u and one that succeeded: %lld remote keys live, one "
         "WELCOME has %lld (%lld leaked)", fail_at, (long long)live, (long long)keys, (long long)(live - keys));
  rf_close(t);
  s.n_t = 0;
  live = rf__ucx_live_rkeys() - live0;
  EXPECT(live == 0, "after rf_close of the trainer: %lld remote keys live", (long long)live);
  close_all(&s);
}
static void test_partial_welcome_keys(void)
{
  const rf_plan *p = rf_loop_plan(PLAN);
  uint32_t tensors = p->recv[0].dst_count, areas = rf__blob_areas(p, 0);
  partial_welcome(2);       /* one tensor's key unpacked before the failure */
  partial_welcome(tensors); /* every tensor's key but the last */
  if (areas) partial_welcome(tensors + areas); /* a delta plan: every key but the directory's */
}

static const expect_test tests[] = {
  {"waits with a progress thread sleep: a 300 ms wait wakes a handful of times", test_waits_sleep},
  {"only the lock holder touches the UCX worker and the roles' state", test_worker_only_under_lock},
  {"a staging failure is what rf_wait reports (host)", test_stage_failure_reported},
  {"rf_connect lets the lock go while it waits", test_connect_lets_lock_go},
  {"a WELCOME that fails part way leaves no remote key behind", test_partial_welcome_keys},
  {"rf_progress on a receiver takes messages only; rf_version_poll completes", test_progress_takes_messages_only},
};

int main(int argc, char **argv)
{
  return run_tests(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, 120);
}
