/* test_runtime.c: the transfer engine with real processes over UCX loopback (TCP and shared
 * memory): plans N trainers -> M receivers with replicas and dp_replicate 2, every byte checked;
 * a trainer killed mid-push; a receiver that dies; wrong token, wrong layout hash, corrupted and
 * truncated metadata blobs; bad bindings. Each test runs in its own process. */
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

static uint64_t derived_bytes(const rf_plan *p)
{
  uint64_t n = 0;
  for (uint32_t i = 0; i < p->n_derived; i++) /* the storages refit rebuilds, once each */
    if (p->derived[i].storage == i && p->derived[i].dst == RF_NONE) n += p->derived[i].bytes * p->replicas;
  return n;
}

static rf_loop_opts opts(const char *name, int versions, const char *tls)
{
  return (rf_loop_opts){.plan = rf_loop_plan(name), .versions = versions, .seed = (uint64_t)time(NULL) ^ (uint64_t)getpid(),
                        .token = 0x5ec2e7, .tls = tls, .timeout_ms = 30000, .verify = 1, .kill_trainer = -1,
                        .kill_receiver = -1};
}
/* Timeouts here only catch hangs: on a loaded machine a handshake or a version can take seconds
 * (4000 ms gave 'no answer to HELLO within 4000 ms'), so runs that expect every version complete
 * wait 30 s; tests that need a timeout to fire set a short one themselves and assert no upper bound
 * on elapsed time tighter than HANG_MS. */
#define HANG_MS 60000

/* every version complete on every receiver, every byte (and derived tensor) equal to the reference */
static void expect_all_verified(const rf_loop_opts *o, const rf_loop_result *r, int first, int last)
{
  const rf_plan *p = o->plan;
  for (int i = first; i <= last; i++) {
    const rf_loop_version *v = &r->v[i];
    EXPECT(v->complete == (int)p->receivers, "%s v%llu: %d of %u receivers complete (torn: %s)", p->name,
           (unsigned long long)v->version, v->complete, p->receivers, v->torn_reason);
    EXPECT(v->trainer_errors == 0, "%s v%llu: trainer error: %s", p->name, (unsigned long long)v->version, v->trainer_error);
    EXPECT(v->mismatches == 0, "%s v%llu: %llu bytes differ: %s", p->name, (unsigned long long)v->version,
           (unsigned long long)v->mismatches, v->mismatch);
    EXPECT(v->bytes == p->total_bytes, "%s v%llu: %llu bytes received, plan says %llu", p->name,
           (unsigned long long)v->version, (unsigned long long)v->bytes, (unsigned long long)p->total_bytes);
    EXPECT(v->verified == p->total_bytes + derived_bytes(p), "%s v%llu: %llu bytes verified, want %llu", p->name,
           (unsigned long long)v->version, (unsigned long long)v->verified,
           (unsigned long long)(p->total_bytes + derived_bytes(p)));
    EXPECT(v->writes > 0 && v->stage_ns > 0, "%s v%llu: counters stayed zero (writes %llu, stage %llu ns)", p->name,
           (unsigned long long)v->version, (unsigned long long)v->writes, (unsigned long long)v->stage_ns);
  }
}

static void run_plan(const char *name, int versions, const char *tls, int use_blob)
{
  rf_loop_opts o = opts(name, versions, tls);
  o.use_blob = use_blob;
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "%s: run failed: %s", name, r.error);
  if (rc) return;
  EXPECT(r.n == versions, "%s: %d versions ran", name, r.n);
  expect_all_verified(&o, &r, 0, r.n - 1);
  uint64_t writes = 0;
  for (uint32_t t = 0; t < o.plan->trainers; t++) writes += o.plan->ranks[t].write_count;
  EXPECT(r.v[0].writes == writes, "%s: %llu writes posted, tables have %llu", name, (unsigned long long)r.v[0].writes,
         (unsigned long long)writes);
}

static void test_glm_demo_tcp(void) { run_plan("glm_tiny_demo", 3, "tcp", 0); }
static void test_glm_rep2_default_tls(void) { run_plan("glm_tiny_rep2", 2, NULL, 0); }
static void test_qwen3_tp2_shm(void)
{
  /* shared memory without CMA: under ASan, UCX 1.22's CMA reachability probe (process_vm_readv of a
   * peer address) trips the sanitizer's interceptor */
  rf_loop_opts o = opts("qwen3_tiny_tp2", 2, "posix,sysv,tcp");
  o.no_peer_errors = 1; /* lets UCX pick shared memory */
  o.engine_mem = 1;     /* receivers' tensors in rf_alloc memory */
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "run failed: %s", r.error);
  if (rc == 0) expect_all_verified(&o, &r, 0, r.n - 1);
}
static void test_qwen3_moe_ep2_blob(void) { run_plan("qwen3_moe_tiny_ep2", 2, "tcp", 1); }
static void test_qwen3_fp8_tp4(void) { run_plan("qwen3_tiny_fp8_tp4", 1, "tcp", 0); }

/* finalize steps across processes, dense then delta: every receiver's UE8M0-packed scales equal the C
 * reference over the expected scales, its hook ran for each version (tests/harness/loop.c verify) */
static void test_finalize_loopback(void)
{
  rf_loop_opts o = opts("qwen3_tiny_finalize", 3, "tcp");
  o.delta = 1;
  o.sparse = 1;
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "run failed: %s", r.error);
  if (rc) return;
  EXPECT(r.n == 3, "%d versions ran", r.n);
  expect_all_verified(&o, &r, 0, r.n - 1);
  EXPECT(r.v[1].deltas > 0 && r.v[2].deltas > 0, "versions 2 and 3 went dense (%llu, %llu receivers as patches)",
         (unsigned long long)r.v[1].deltas, (unsigned long long)r.v[2].deltas);
}

/* SM100 plans (tests/vllm/SM100.md): every DeepGEMM linear's fp32 scales, as refit writes them, packed by
 * a ue8m0_pack step into the engine's int32 weight_scale_inv; each receiver's packed scales equal the C
 * reference pack of the fp32 scales it received (tests/harness/loop.c verify), version after version.
 * With moe_backend deep_gemm the experts' scales are packed too, one group per expert. */
static void test_finalize_sm100(void)
{
  const char *plans[] = {"vllm_qwen3_fp8_tp1_sm100", "vllm_qwen3moe_fp8_tp1_sm100_deepgemm"};
  const uint32_t steps[] = {8, 8}, groups[] = {1, 4};
  for (int i = 0; i < 2; i++) {
    rf_loop_opts o = opts(plans[i], 2, "tcp");
    const rf_plan *p = o.plan;
    uint32_t max_groups = 0;
    for (uint32_t k = 0; k < p->n_finalize; k++) {
      const rf_finalize *f = &p->finalize[k];
      EXPECT(f->kind == RF_FIN_KERNEL && f->op == RF_FINOP_UE8M0_PACK && f->out != RF_NONE &&
                 strcmp(f->name, "ue8m0_pack") == 0 && p->derived[f->out].dtype == RF_I32,
             "%s: finalize step %u is not a ue8m0_pack into an int32 tensor", p->name, k);
      if (f->groups > max_groups) max_groups = f->groups;
    }
    EXPECT(p->n_finalize == steps[i] && max_groups == groups[i], "%s: %u finalize steps of up to %u groups, want %u of %u",
           p->name, p->n_finalize, max_groups, steps[i], groups[i]);
    rf_loop_result r;
    int rc = rf_loop_run(&o, &r);
    EXPECT(rc == 0, "%s: run failed: %s", p->name, r.error);
    if (rc) continue;
    EXPECT(r.n == 2, "%s: %d versions ran", p->name, r.n);
    expect_all_verified(&o, &r, 0, r.n - 1);
  }
}

/* writes of unconverted tensors straight from the sources: same bytes arrive */
static void test_direct(void)
{
  /* glm_tiny_demo quantizes every weight to FP8: only bf16/fp32 tensors (norms, router, embeddings)
   * go direct. qwen3_tiny_tp2 is bf16: column-split tensors go direct, fused ones (qkv, gate_up) as
   * one put per source part; row-split ones (o_proj, down_proj: strided columns) are staged.
   * qwen3_moe_tiny_bf16's fused experts go direct too: with ep 2 each trainer's FSDP2 chunk of
   * gate_up_proj / down_proj is whole experts, contiguous rows of one tensor (its fp32 router is cast). */
  const char *plans[] = {"glm_tiny_demo", "qwen3_tiny_tp2", "qwen3_moe_tiny_bf16"};
  const unsigned long long want[] = {216, 56, 34};
  for (int i = 0; i < 3; i++) {
    rf_loop_opts o = opts(plans[i], 2, "tcp");
    o.direct = 1;
    rf_loop_result r;
    int rc = rf_loop_run(&o, &r);
    EXPECT(rc == 0, "%s: run failed: %s", plans[i], r.error);
    if (rc == 0) expect_all_verified(&o, &r, 0, r.n - 1);
    EXPECT(rc || (r.v[0].direct_writes == want[i] && r.v[0].direct_writes < r.v[0].writes),
           "%s: %llu of %llu writes direct, want %llu", plans[i], (unsigned long long)r.v[0].direct_writes,
           (unsigned long long)r.v[0].writes, want[i]);
    if (rc == 0)
      printf("  %s: %llu of %llu writes straight from the sources\n", plans[i], (unsigned long long)r.v[0].direct_writes,
             (unsigned long long)r.v[0].writes);
  }
}

static void test_trainer_killed(void)
{
  rf_loop_opts o = opts("glm_tiny_demo", 3, "tcp");
  o.kill_trainer = 1;
  o.kill_version = 2;
  o.timeout_ms = 3000;
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "run failed: %s", r.error);
  if (rc) return;
  const rf_plan *p = o.plan;
  uint32_t victims = 0; /* receivers trainer 1 writes to */
  for (uint32_t i = 0; i < p->receivers; i++)
    for (uint32_t k = 0; k < p->recv[i].peer_count; k++) victims += p->peers[p->recv[i].peer_first + k].trainer == 1;
  expect_all_verified(&o, &r, 0, 0);
  EXPECT(r.v[1].torn == (int)victims && r.v[1].complete == (int)(p->receivers - victims),
         "v2: %d torn, %d complete; trainer 1 writes to %u receivers", r.v[1].torn, r.v[1].complete, victims);
  EXPECT(strstr(r.v[1].torn_reason, "version 2 torn") && strstr(r.v[1].torn_reason, "trainer rank") &&
             strstr(r.v[1].torn_reason, "1"),
         "v2 torn reason does not name version and trainer: '%s'", r.v[1].torn_reason);
  EXPECT(r.v[1].ns < (3ull * o.timeout_ms + HANG_MS) * 1000000u, "v2 took %.1f s to be reported", r.v[1].ns / 1e9);
  EXPECT(r.trainer_restarts == 1, "%d restarts", r.trainer_restarts);
  expect_all_verified(&o, &r, 2, 2);
  printf("  torn as reported: %s\n", r.v[1].torn_reason);
}

static void test_receiver_dies(void)
{
  rf_loop_opts o = opts("glm_tiny_demo", 3, "tcp");
  o.kill_receiver = 0;
  o.kill_version = 2;
  o.timeout_ms = 3000;
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "run failed: %s", r.error);
  if (rc) return;
  EXPECT(r.n == 2, "%d versions ran, the run should stop at version 2", r.n);
  expect_all_verified(&o, &r, 0, 0);
  const rf_plan *p = o.plan;
  EXPECT(r.v[1].trainer_errors == (int)p->recv[0].peer_count, "v2: %d trainers saw an error, %u write to receiver 0",
         r.v[1].trainer_errors, p->recv[0].peer_count);
  EXPECT(strstr(r.v[1].trainer_error, "receiver 0"), "trainer error does not name receiver 0: '%s'", r.v[1].trainer_error);
  printf("  trainer saw: %s\n", r.v[1].trainer_error);
}

/* ---- a receiver in a child process, for the bad-peer tests ---- */

typedef struct server {
  pid_t pid;
  uint16_t port;
  int done_fd;  /* parent writes one byte: check the memory and exit */
  int info_fd;  /* child writes its refusal count and last error before it exits */
  char last_error[512];
  uint64_t refused;
} server;

/* receiver `me` of p: poisons its memory, listens, serves until told, exits 0 if no byte changed */
static server serve_arming(const rf_plan *p, uint32_t me, uint64_t token, uint32_t arm_after_ms);
static server serve(const rf_plan *p, uint32_t me, uint64_t token) { return serve_arming(p, me, token, 0); }

/* receiver `me` of p; with arm_after_ms it arms version 1 that long after it started listening */
static server serve_arming(const rf_plan *p, uint32_t me, uint64_t token, uint32_t arm_after_ms)
{
  int pp[2], dp[2], ip[2];
  server s = {0};
  if (pipe(pp) || pipe(dp) || pipe(ip)) exit(1);
  s.pid = fork();
  if (s.pid == 0) {
    close(pp[0]);
    close(dp[1]);
    close(ip[0]);
    rf_config cfg = {.plan = p, .role = RF_RECEIVER, .rank = me, .token = token, .ucx_tls = "tcp",
                     .timeout_ms = HANG_MS};
    rf_engine *e;
    if (rf_open(&cfg, &e) != RF_OK) _exit(10);
    const rf_receiver *rv = &p->recv[me];
    uint8_t **mem = calloc(rv->dst_count, sizeof *mem);
    for (uint32_t i = 0; i < rv->dst_count; i++) {
      mem[i] = malloc(p->dst[rv->dst_first + i].bytes);
      memset(mem[i], 0x5a, p->dst[rv->dst_first + i].bytes);
      if (rf_bind_dst(e, rv->dst_first + i, mem[i], p->dst[rv->dst_first + i].bytes)) _exit(11);
    }
    for (uint32_t i = 0; i < p->n_derived; i++)
      if (p->derived[i].tp_rank == rv->tp_rank && p->derived[i].storage == i &&
          rf_bind_derived(e, i, malloc(p->derived[i].bytes), p->derived[i].bytes))
        _exit(12);
    uint16_t port;
    if (rf_listen(e, "127.0.0.1", 0, &port)) _exit(13);
    if (write(pp[1], &port, sizeof port) != sizeof port) _exit(14);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int armed = 0;;) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
      if (arm_after_ms && !armed && ms >= (long)arm_after_ms) armed = rf_arm(e, 1) == RF_OK;
      rf_version_state vs; /* rf_progress takes messages only; the poll completes a version */
      rf_version_poll(e, &vs);
      struct timespec ts = {0, 50000};
      nanosleep(&ts, NULL);
      char c;
      struct timeval tv = {0, 0};
      fd_set fs;
      FD_ZERO(&fs);
      FD_SET(dp[0], &fs);
      if (select(dp[0] + 1, &fs, NULL, NULL, &tv) > 0 && read(dp[0], &c, 1) >= 0) break;
    }
    rf_version_state st;
    rf_version_poll(e, &st);
    char info[520];
    memcpy(info, &st.refused, 8);
    snprintf(info + 8, sizeof info - 8, "%s", rf_last_error(e));
    if (write(ip[1], info, sizeof info) != (ssize_t)sizeof info) _exit(15);
    if (!arm_after_ms) /* nothing was armed, so nothing may have been written */
      for (uint32_t i = 0; i < rv->dst_count; i++)
        for (uint64_t k = 0; k < p->dst[rv->dst_first + i].bytes; k++)
          if (mem[i][k] != 0x5a) _exit(20);
    rf_close(e);
    _exit(0);
  }
  close(pp[1]);
  close(dp[0]);
  close(ip[1]);
  s.info_fd = ip[0];
  if (read(pp[0], &s.port, sizeof s.port) != sizeof s.port) s.port = 0;
  close(pp[0]);
  s.done_fd = dp[1];
  return s;
}

static int finish(server *s)
{
  char c = 1;
  if (write(s->done_fd, &c, 1) != 1) return -1;
  char info[520] = {0};
  if (read(s->info_fd, info, sizeof info) == (ssize_t)sizeof info) {
    memcpy(&s->refused, info, 8);
    snprintf(s->last_error, sizeof s->last_error, "%s", info + 8);
  }
  close(s->info_fd);
  int st;
  waitpid(s->pid, &st, 0);
  close(s->done_fd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static rf_engine *trainer(const rf_plan *p, uint32_t rank, uint64_t token)
{
  /* a refusal or an unreachable port ends a connect long before this; it only bounds a hang */
  rf_config cfg = {.plan = p, .role = RF_TRAINER, .rank = rank, .token = token, .ucx_tls = "tcp", .timeout_ms = 20000};
  rf_engine *e;
  rf_status s = rf_open(&cfg, &e);
  EXPECT(s == RF_OK, "trainer open: %s", rf_last_error(e));
  return e;
}

/* wrong token, wrong plan: the trainer is told only "rejected"; the receiver keeps the reason */
static void test_wrong_token_and_hash(void)
{
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  server s = serve(p, 0, 1234);
  EXPECT(s.port != 0, "receiver did not start");
  rf_engine *t = trainer(p, 0, 999);
  rf_status st = rf_connect(t, 0, "127.0.0.1", s.port);
  EXPECT(st == RF_ERR_PEER && strstr(rf_last_error(t), "rejected trainer rank 0"), "wrong token: %s '%s'",
         rf_strerror(st), rf_last_error(t));
  EXPECT(!strstr(rf_last_error(t), "token") || strstr(rf_last_error(t), "wrong receiver, port, token"),
         "the trainer learned more than 'rejected': '%s'", rf_last_error(t));
  rf_close(t);
  /* a trainer compiled from another plan: its layout hash differs */
  const rf_plan *q = rf_loop_plan("glm_tiny_rep2");
  t = trainer(q, 0, 1234);
  st = rf_connect(t, 0, "127.0.0.1", s.port);
  EXPECT(st == RF_ERR_PEER && strstr(rf_last_error(t), "rejected trainer rank 0") &&
             !strstr(rf_last_error(t), "glm_tiny_demo"),
         "wrong hash: %s '%s' (must not name the receiver's plan)", rf_strerror(st), rf_last_error(t));
  rf_close(t);
  /* the right trainer gets in; nothing was written by the refused ones */
  t = trainer(p, 0, 1234);
  st = rf_connect(t, 0, "127.0.0.1", s.port);
  EXPECT(st == RF_OK, "right token and hash refused: %s", rf_last_error(t));
  rf_close(t);
  int rc = finish(&s);
  EXPECT(rc == 0, "receiver exit %d (20: bytes were written)", rc);
  EXPECT(s.refused == 2, "receiver counted %llu refusals, want 2", (unsigned long long)s.refused);
  EXPECT(strstr(s.last_error, "refused a connection") && strstr(s.last_error, "layout hash"),
         "receiver's own record of the last refusal: '%s'", s.last_error);
}

uint64_t rf__mac(const void *k, const void *data, size_t n); /* runtime/util.c: SipHash-2-4, key 16 bytes */

static void test_bad_blobs(void)
{
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  server s = serve(p, 0, 7);
  /* get a real blob: a receiver in this process (no fork after this point) */
  rf_config rc = {.plan = p, .role = RF_RECEIVER, .rank = 0, .token = 7, .ucx_tls = "tcp"};
  rf_engine *r;
  EXPECT(rf_open(&rc, &r) == RF_OK, "open: %s", rf_last_error(r));
  const rf_receiver *rv = &p->recv[0];
  uint8_t *mem = calloc(1, rv->bytes + p->n_dst * 64 + 65536);
  uint64_t off = 0;
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    EXPECT(rf_bind_dst(r, rv->dst_first + i, mem + off, p->dst[rv->dst_first + i].bytes) == RF_OK, "%s", rf_last_error(r));
    off += (p->dst[rv->dst_first + i].bytes + 63) / 64 * 64;
  }
  for (uint32_t i = 0; i < p->n_derived; i++)
    if (p->derived[i].tp_rank == 0 && p->derived[i].storage == i)
      rf_bind_derived(r, i, mem + off, p->derived[i].bytes), off += p->derived[i].bytes;
  EXPECT(rf_listen(r, "127.0.0.1", 0, NULL) == RF_OK, "listen: %s", rf_last_error(r));
  size_t len = 0;
  EXPECT(rf_export(r, NULL, 0, &len) == RF_ERR_SIZE && len > 64, "export size query: %zu", len);
  uint8_t *blob = malloc(len), *bad = malloc(len);
  EXPECT(rf_export(r, blob, len, &len) == RF_OK, "export: %s", rf_last_error(r));
  rf_engine *t = trainer(p, 0, 7);
  struct {
    const char *what;
    size_t at, len;
    uint8_t x;
    const char *msg;
  } cases[] = {
    {"truncated to 10 bytes", 0, 10, 0, "shorter than"},
    {"truncated by one byte", 0, len - 1, 0, "MAC mismatch"},
    {"truncated to half", 0, len / 2, 0, "MAC mismatch"},
    {"flipped byte in a key", len / 2, len, 0x40, "MAC mismatch"},
    {"flipped magic", 0, len, 0x01, "bad magic"},
    {"empty", 0, 0, 0, "shorter than"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memcpy(bad, blob, len);
    bad[cases[i].at] ^= cases[i].x;
    rf_status st = rf_import(t, bad, cases[i].len);
    EXPECT(st == RF_ERR_BLOB && strstr(rf_last_error(t), cases[i].msg), "%s: %s '%s'", cases[i].what, rf_strerror(st),
           rf_last_error(t));
  }
  /* signed with the token after the edit (a token holder's blob, or one a fuzzer re-signs): the
   * worker address reaches the checks, and one UCX would abort on is refused before UCX sees it
   * (UCX: "address.c:1141 Assertion '*addr_version == UCP_OBJECT_VERSION_V2' failed") */
  struct {
    const char *what;
    uint8_t b0, b1;
    const char *msg;
  } addr[] = {
    {"worker address format 3", 0x03, 0, "worker address format 3 (byte 0 = 0x03)"},
    {"worker address format 15", 0x3f, 0, "worker address format 15"},
    {"v2 worker address with flags 0xf0", 0x01, 0xf0, "worker address flags 0xf0"},
  };
  uint64_t tk[2] = {7, ~7ull ^ 0x5265666974546f6bull}; /* the token's key (util.c rf__token_key) */
  for (size_t i = 0; i < sizeof addr / sizeof addr[0]; i++) {
    memcpy(bad, blob, len);
    bad[32] = addr[i].b0; /* the worker address starts at offset 32 (blob.c) */
    if (addr[i].b1) bad[33] = addr[i].b1;
    uint64_t mac = rf__mac(tk, bad, len - 8);
    memcpy(bad + len - 8, &mac, 8);
    rf_status st = rf_import(t, bad, len);
    EXPECT(st == RF_ERR_BLOB && strstr(rf_last_error(t), addr[i].msg) && strstr(rf_last_error(t), "receiver 0"),
           "token-signed blob, %s: %s '%s'", addr[i].what, rf_strerror(st), rf_last_error(t));
  }
  rf_close(t);
  /* a receiver of another plan: its blob names another layout */
  t = trainer(rf_loop_plan("glm_tiny_rep2"), 0, 7);
  rf_status st = rf_import(t, blob, len);
  EXPECT(st == RF_ERR_BLOB && strstr(rf_last_error(t), "layout hash"), "other plan's blob: %s '%s'", rf_strerror(st),
         rf_last_error(t));
  rf_close(t);
  rf_close(r);
  free(blob);
  free(bad);
  free(mem);
  int rcode = finish(&s);
  EXPECT(rcode == 0, "receiver exit %d", rcode);
}

/* a blob-mode HELLO captured and replayed: each copy is answered with a CHALLENGE and nothing is
 * kept (challenged counts them; the receiver refuses nobody and holds no connection for them), and
 * messages of strangers that never authenticated are counted as ignored (they were dropped uncounted:
 * the receivers showed ignored=0 refused=0 under 20,000 replayed HELLOs) */
static int run_stranger(rf_engine *r, const char *args, char *line, size_t n)
{
  char cmd[512], out[64];
  snprintf(out, sizeof out, "/tmp/refit-stranger-%d", (int)getpid());
  snprintf(cmd, sizeof cmd, "./build/stranger %s > %s 2>&1 &", args, out);
  unlink(out);
  if (system(cmd) != 0) return -1;
  line[0] = 0;
  for (uint64_t t0 = (uint64_t)time(NULL); !strstr(line, "stranger:") && (uint64_t)time(NULL) - t0 < 60;) {
    rf_progress(r); /* the receiver answers while the stranger runs */
    FILE *f = fopen(out, "r");
    if (f && !fgets(line, (int)n, f)) line[0] = 0;
    if (f) fclose(f);
    usleep(1000);
  }
  for (int i = 0; i < 200; i++) rf_progress(r), usleep(1000);
  unlink(out);
  return strstr(line, "stranger:") ? 0 : -1;
}

static void test_blob_hello_replay_counted(void)
{
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  rf_config rc = {.plan = p, .role = RF_RECEIVER, .rank = 0, .token = 7, .ucx_tls = "tcp"};
  rf_engine *r;
  EXPECT(rf_open(&rc, &r) == RF_OK, "open: %s", rf_last_error(r));
  const rf_receiver *rv = &p->recv[0];
  uint8_t *mem = calloc(1, rv->bytes + p->n_dst * 64 + 65536);
  uint64_t off = 0;
  for (uint32_t i = 0; i < rv->dst_count; i++) {
    EXPECT(rf_bind_dst(r, rv->dst_first + i, mem + off, p->dst[rv->dst_first + i].bytes) == RF_OK, "%s", rf_last_error(r));
    off += (p->dst[rv->dst_first + i].bytes + 63) / 64 * 64;
  }
  for (uint32_t i = 0; i < p->n_derived; i++)
    if (p->derived[i].tp_rank == 0 && p->derived[i].storage == i)
      rf_bind_derived(r, i, mem + off, p->derived[i].bytes), off += p->derived[i].bytes;
  EXPECT(rf_listen(r, "127.0.0.1", 0, NULL) == RF_OK, "listen: %s", rf_last_error(r));
  size_t len = 0;
  rf_export(r, NULL, 0, &len);
  uint8_t *blob = malloc(len);
  EXPECT(rf_export(r, blob, len, &len) == RF_OK, "export: %s", rf_last_error(r));
  char path[64], args[256], line[256];
  snprintf(path, sizeof path, "/tmp/refit-replay-blob-%d", (int)getpid());
  FILE *f = fopen(path, "wb");
  EXPECT(f && fwrite(blob, 1, len, f) == len && fclose(f) == 0, "writing %s", path);
  uint32_t rank = p->peers[rv->peer_first].trainer;
  snprintf(args, sizeof args, "replay %s 7 %u 1500", path, rank);
  EXPECT(run_stranger(r, args, line, sizeof line) == 0, "replayer: '%s'", line);
  unsigned long sent = 0, answers = 0, type = 0;
  EXPECT(sscanf(line, "stranger: replayed one HELLO %lu times, %lu answer(s), first type %lu", &sent, &answers, &type) == 3 &&
             sent > 10 && answers > 0 && type == 2 /* CHALLENGE */,
         "replayer: '%s'", line);
  rf_counters c;
  rf_version_state vs;
  rf_get_counters(r, &c);
  rf_version_poll(r, &vs);
  EXPECT(c.challenged >= answers && c.challenged <= sent, "challenged %llu, the replayer sent %lu and got %lu answers",
         (unsigned long long)c.challenged, sent, answers);
  EXPECT(vs.refused == 0 && c.ignored == 0, "refused %llu ignored %llu after replayed HELLOs",
         (unsigned long long)vs.refused, (unsigned long long)c.ignored);
  /* forged DONEs through the blob: counted, nothing else */
  snprintf(args, sizeof args, "done %s %u 100", path, rank);
  EXPECT(run_stranger(r, args, line, sizeof line) == 0 && strstr(line, "sent 4 forged DONE"), "stranger: '%s'", line);
  rf_get_counters(r, &c);
  EXPECT(c.ignored >= 1 && c.ignored <= 4, "ignored %llu after 4 forged DONEs", (unsigned long long)c.ignored);
  printf("  challenged %llu replayed HELLOs, then ignored %llu forged DONEs\n", (unsigned long long)c.challenged,
         (unsigned long long)c.ignored);
  unlink(path);
  rf_close(r);
  free(blob);
  free(mem);
}

static void test_bad_bindings(void)
{
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  rf_config rc = {.plan = p, .role = RF_RECEIVER, .rank = 1, .ucx_tls = "tcp"};
  rf_engine *r;
  EXPECT(rf_open(&rc, &r) == RF_OK, "open: %s", rf_last_error(r));
  const rf_receiver *rv = &p->recv[1];
  const rf_dst_tensor *d = &p->dst[rv->dst_first];
  uint8_t *buf = malloc(d->bytes + 16);
  rf_status s = rf_bind_dst(r, rv->dst_first, buf, d->bytes - 2);
  EXPECT(s == RF_ERR_SIZE && strstr(rf_last_error(r), d->name) && strstr(rf_last_error(r), "the table says"),
         "short binding: %s '%s'", rf_strerror(s), rf_last_error(r));
  s = rf_bind_dst(r, 0, buf, p->dst[0].bytes);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(r), "not a tensor of receiver 1"), "foreign dst: %s '%s'", rf_strerror(s),
         rf_last_error(r));
  /* derived: a storage is bound once, through its first view, with the storage's bytes */
  uint32_t uk = RF_NONE;
  for (uint32_t i = 0; i < p->n_derived && uk == RF_NONE; i++)
    if (p->derived[i].tp_rank == rv->tp_rank && p->derived[i].storage == i) uk = i;
  EXPECT(uk != RF_NONE && p->derived[uk + 1].storage == uk, "no W_UK_T/W_UV pair on receiver 1");
  s = rf_bind_derived(r, uk + 1, buf, p->derived[uk].bytes);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(r), "lies in the storage of") && strstr(rf_last_error(r), p->derived[uk].name),
         "second view bound: %s '%s'", rf_strerror(s), rf_last_error(r));
  s = rf_bind_derived(r, uk, buf, p->derived[uk].bytes / 2);
  EXPECT(s == RF_ERR_SIZE && strstr(rf_last_error(r), "derived storage of") && strstr(rf_last_error(r), "the table says"),
         "half a storage bound: %s '%s'", rf_strerror(s), rf_last_error(r));
  EXPECT(rf_bind_dst(r, rv->dst_first, buf, d->bytes) == RF_OK, "right binding refused: %s", rf_last_error(r));
  s = rf_listen(r, "127.0.0.1", 0, NULL);
  EXPECT(s == RF_ERR_UNBOUND && strstr(rf_last_error(r), p->dst[rv->dst_first + 1].name), "listen with unbound: %s '%s'",
         rf_strerror(s), rf_last_error(r));
  rf_close(r);
  free(buf);
  /* views of a bf16 kv_b_proj are its memory: nothing to bind */
  const rf_plan *b = rf_loop_plan("vllm_glm5_bf16_tp1");
  rf_config bc = {.plan = b, .role = RF_RECEIVER, .rank = 0, .ucx_tls = "tcp"};
  EXPECT(b->n_derived > 0 && b->derived[0].dst != RF_NONE && rf_open(&bc, &r) == RF_OK, "open vllm_glm5_bf16_tp1");
  uint8_t one[8];
  s = rf_bind_derived(r, 0, one, sizeof one);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(r), "is a view of") && strstr(rf_last_error(r), "kv_b_proj.weight") &&
         strstr(rf_last_error(r), "nothing to bind"), "view of a dst bound: %s '%s'", rf_strerror(s), rf_last_error(r));
  rf_close(r);
  /* trainer side */
  rf_config tc = {.plan = p, .role = RF_TRAINER, .rank = 2, .ucx_tls = "tcp"};
  rf_engine *t;
  EXPECT(rf_open(&tc, &t) == RF_OK, "open: %s", rf_last_error(t));
  uint32_t mine = RF_NONE, other = RF_NONE;
  for (uint32_t i = 0; i < p->n_src; i++) {
    if (rf_src_bytes(t, i) && p->src[i].travel == RF_TRAVEL_SHARD && mine == RF_NONE) mine = i;
    if (!rf_src_bytes(t, i) && other == RF_NONE) other = i;
  }
  EXPECT(mine != RF_NONE && other != RF_NONE, "plan has no shard/foreign source for rank 2");
  size_t n = rf_src_bytes(t, mine);
  EXPECT(n == (size_t)p->src[mine].shard_rows * (size_t)p->src[mine].cols * 2 || p->src[mine].dtype != RF_BF16,
         "shard bytes %zu", n);
  void *sb = malloc(n * 2);
  s = rf_bind_src(t, mine, sb, n * 2);
  EXPECT(s == RF_ERR_SIZE && strstr(rf_last_error(t), p->src[mine].name), "whole tensor bound for a shard: %s '%s'",
         rf_strerror(s), rf_last_error(t));
  s = rf_bind_src(t, other, sb, 8);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(t), "reads nothing of it"), "foreign source: %s '%s'", rf_strerror(s),
         rf_last_error(t));
  s = rf_push(t, 1, NULL);
  EXPECT(s == RF_ERR_UNBOUND, "push with nothing bound: %s '%s'", rf_strerror(s), rf_last_error(t));
  s = rf_connect(t, p->receivers + 3, "127.0.0.1", 1);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(t), "does not write to receiver"), "bad receiver: %s '%s'",
         rf_strerror(s), rf_last_error(t));
  rf_close(t);
  free(sb);
  /* CUDA memory in a host build, or a plan edited by hand */
  rf_plan edited = *p;
  edited.total_bytes++;
  rf_config ec = {.plan = &edited, .role = RF_TRAINER, .rank = 0};
  s = rf_open(&ec, &t);
  EXPECT(s == RF_ERR_HASH && strstr(rf_last_error(t), "edited"), "edited tables: %s '%s'", rf_strerror(s), rf_last_error(t));
  rf_close(t);
  EXPECT(strcmp(rf_strerror(RF_ERR_TORN), "version torn") == 0, "rf_strerror: %s", rf_strerror(RF_ERR_TORN));
}


/* the engine's NIC choice goes into its own UCX configuration and wins over the environment,
 * which stays as it was */
static void test_nic_choice_beats_env(void)
{
  setenv("UCX_NET_DEVICES", "bogus9:1", 1);
  setenv("UCX_MAX_RNDV_RAILS", "1", 1);
  setenv("UCX_MAX_RMA_RAILS", "1", 1);
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  struct {
    const char *mode, *gpu, *devices, *rails;
  } cases[] = {
    {"auto", "0000:18:00.0", "mlx5_0:1,mlx5_1:1", "2"},
    {"auto", "0000:3a:00.0", "mlx5_2:1", "1"},
    {"stripe", NULL, "mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_6:1,mlx5_7:1", "7"},
    {"mlx5_3:1,mlx5_7", NULL, "mlx5_3:1,mlx5_7:1", "2"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    rf_config c = {.plan = p, .role = RF_TRAINER, .rank = 0, .nic_mode = cases[i].mode, .gpu_bdf = cases[i].gpu,
                   .sysfs_root = "tests/fixtures/sysfs/dgx8"};
    rf_engine *e;
    rf_status s = rf_open(&c, &e);
    EXPECT(s == RF_OK, "%s: open: %s", cases[i].mode, rf_last_error(e));
    char dev[256] = "", rails[32] = "";
    EXPECT(rf_ucx_setting(e, "NET_DEVICES", dev, sizeof dev) == RF_OK && strcmp(dev, cases[i].devices) == 0,
           "%s: engine NET_DEVICES '%s', want '%s'", cases[i].mode, dev, cases[i].devices);
    EXPECT(rf_ucx_setting(e, "MAX_RNDV_RAILS", rails, sizeof rails) == RF_OK &&
               strcmp(rails, cases[i].rails) == 0,
           "%s: engine MAX_RNDV_RAILS '%s', want '%s'", cases[i].mode, rails, cases[i].rails);
    /* newer UCX lists MAX_RMA_RAILS on its own (puts); 1.13 only as an alias of the one above */
    if (rf_ucx_setting(e, "MAX_RMA_RAILS", rails, sizeof rails) == RF_OK)
      EXPECT(strcmp(rails, cases[i].rails) == 0, "%s: engine MAX_RMA_RAILS '%s', want '%s'", cases[i].mode, rails,
             cases[i].rails);
    rf_close(e);
  }
  EXPECT(strcmp(getenv("UCX_NET_DEVICES"), "bogus9:1") == 0, "environment changed: %s", getenv("UCX_NET_DEVICES"));
  EXPECT(strcmp(getenv("UCX_MAX_RNDV_RAILS"), "1") == 0, "environment changed: %s", getenv("UCX_MAX_RNDV_RAILS"));
  EXPECT(strcmp(getenv("UCX_MAX_RMA_RAILS"), "1") == 0, "environment changed: %s", getenv("UCX_MAX_RMA_RAILS"));
  /* mode off leaves UCX to the environment; a DOWN NIC named explicitly is an error naming it */
  rf_config off = {.plan = p, .role = RF_TRAINER, .rank = 0, .nic_mode = "off"};
  rf_engine *e;
  EXPECT(rf_open(&off, &e) == RF_OK, "off: %s", rf_last_error(e));
  char dev[64] = "";
  rf_ucx_setting(e, "NET_DEVICES", dev, sizeof dev);
  EXPECT(strcmp(dev, "bogus9:1") == 0, "off: NET_DEVICES '%s'", dev);
  rf_close(e);
  rf_config down = {.plan = p, .role = RF_TRAINER, .rank = 0, .nic_mode = "mlx5_5:1", .sysfs_root = "tests/fixtures/sysfs/dgx8"};
  rf_status s = rf_open(&down, &e);
  EXPECT(s == RF_ERR_NIC && strstr(rf_last_error(e), "mlx5_5"), "DOWN NIC: %s '%s'", rf_strerror(s), rf_last_error(e));
  rf_close(e);
  rf_config none = {.plan = p, .role = RF_TRAINER, .rank = 0, .nic_mode = "auto", .gpu_bdf = "0000:03:00.0",
                    .sysfs_root = "tests/fixtures/sysfs/slowside", .nic_min_gbps = 1000};
  s = rf_open(&none, &e);
  EXPECT(s == RF_ERR_NIC, "no NIC fast enough: %s '%s'", rf_strerror(s), rf_last_error(e));
  rf_close(e);
}


/* f9: the smaller findings, each with its message */
static uint64_t ms_since(const struct timespec *t0)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

static void test_f9_bad_arguments(void)
{
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  rf_engine *t = trainer(p, 0, 1);
  rf_status s = rf_connect(t, 0, NULL, 1234);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(t), "no address"), "rf_connect(ip=NULL): %s '%s'", rf_strerror(s),
         rf_last_error(t));
  /* nobody listens there: an error naming the receiver and its address, within the timeout */
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  s = rf_connect(t, 0, "127.0.0.1", 1);
  EXPECT(s != RF_OK && strstr(rf_last_error(t), "receiver 0 (127.0.0.1:1)"), "connect to a closed port: %s '%s'",
         rf_strerror(s), rf_last_error(t));
  EXPECT(ms_since(&t0) < HANG_MS, "connect to a closed port took %llu ms", (unsigned long long)ms_since(&t0));
  rf_close(t);
  /* a UCX setting longer than the engine keeps is refused, not cut */
  char tls[301];
  memset(tls, 'x', 300);
  tls[300] = 0;
  rf_config c = {.plan = p, .role = RF_TRAINER, .rank = 0, .ucx_tls = tls};
  s = rf_open(&c, &t);
  EXPECT(s == RF_ERR_ARG && strstr(rf_last_error(t), "ucx_tls") && strstr(rf_last_error(t), "longer than 255"),
         "300-character ucx_tls: %s '%s'", rf_strerror(s), rf_last_error(t));
  rf_close(t);
  /* a blob whose old-style checksum is right but whose worker address is garbage: refused by its MAC
   * before UCX parses the address (which used to abort inside UCX) */
  uint8_t blob[256] = {0};
  uint32_t magic = 0x54494652u, fmt = 3, n = p->recv[0].dst_count, alen = 64; /* the current format (blob.c) */
  memcpy(blob, &magic, 4);
  memcpy(blob + 4, &fmt, 4);
  memcpy(blob + 8, &p->layout_hash, 8);
  memcpy(blob + 20, &n, 4);
  memcpy(blob + 24, &alen, 4);
  memset(blob + 32, 0xee, alen);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < sizeof blob - 8; i++) h = (h ^ blob[i]) * 0x100000001b3ull;
  memcpy(blob + sizeof blob - 8, &h, 8);
  t = trainer(p, 0, 1);
  s = rf_import(t, blob, sizeof blob);
  EXPECT(s == RF_ERR_BLOB && strstr(rf_last_error(t), "MAC mismatch"), "garbage address, FNV checksum: %s '%s'",
         rf_strerror(s), rf_last_error(t));
  rf_close(t);
}

/* dialling another receiver's port is refused at once, not after a timeout */
static void test_f9_wrong_port(void)
{
  const rf_plan *p = rf_loop_plan("glm_tiny_demo");
  server s = serve(p, 0, 7);
  /* refused at once, not at the timeout: the timeout is far beyond what load can stretch a refusal to */
  rf_config c = {.plan = p, .role = RF_TRAINER, .rank = 0, .token = 7, .ucx_tls = "tcp", .timeout_ms = 3 * HANG_MS};
  rf_engine *t;
  EXPECT(rf_open(&c, &t) == RF_OK, "open: %s", rf_last_error(t));
  uint32_t other = p->recv[1].peer_count ? 1 : 2; /* a receiver rank 0 writes to, but not receiver 0 */
  for (uint32_t r = 1; r < p->receivers; r++)
    for (uint32_t k = 0; k < p->recv[r].peer_count; k++)
      if (p->peers[p->recv[r].peer_first + k].trainer == 0) other = r;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  rf_status st = rf_connect(t, other, "127.0.0.1", s.port);
  EXPECT(st == RF_ERR_PEER && strstr(rf_last_error(t), "rejected"), "wrong receiver's port: %s '%s'", rf_strerror(st),
         rf_last_error(t));
  EXPECT(ms_since(&t0) < HANG_MS, "the refusal took %llu ms (timeout %u)", (unsigned long long)ms_since(&t0),
         c.timeout_ms);
  rf_close(t);
  int rc = finish(&s);
  EXPECT(rc == 0 && strstr(s.last_error, "asked for receiver"), "receiver exit %d, its record: '%s'", rc, s.last_error);
}

/* rf_wait(e, 0) waits the engine's timeout (it used to drop the push); rf_bind_src during a push
 * is refused; a second trainer with its own progress thread waits thread-safely */
static rf_engine *bound_trainer(const rf_plan *p, uint32_t rank, uint16_t port, int progress_thread, uint8_t **buf)
{
  rf_config c = {.plan = p, .role = RF_TRAINER, .rank = rank, .token = 9, .ucx_tls = "tcp", .timeout_ms = HANG_MS,
                 .skip_down = 1, .progress_thread = progress_thread};
  rf_engine *t;
  EXPECT(rf_open(&c, &t) == RF_OK, "open: %s", rf_last_error(t));
  for (uint32_t i = 0; i < p->n_src; i++) {
    size_t n = rf_src_bytes(t, i);
    if (!n) continue;
    buf[i] = calloc(1, n);
    EXPECT(rf_bind_src(t, i, buf[i], n) == RF_OK, "bind: %s", rf_last_error(t));
  }
  EXPECT(rf_connect(t, 0, "127.0.0.1", port) == RF_OK, "connect: %s", rf_last_error(t));
  return t;
}

static void test_f9_wait_zero_and_bind_during_push(void)
{
  const rf_plan *p = rf_loop_plan("qwen3_tiny_tp2"); /* 2 trainer ranks, both write to receivers 0 and 1 */
  /* receiver 0 only; it arms version 1 2.5 s after it listens (the two trainers open and connect
   * first: 700 ms was not enough on a loaded machine) */
  server s = serve_arming(p, 0, 9, 2500);
  uint8_t *buf0[256] = {0}, *buf1[256] = {0};
  if (p->n_src > 256 || p->trainers != 2) return;
  rf_engine *t0 = bound_trainer(p, 0, s.port, 0, buf0), *t1 = bound_trainer(p, 1, s.port, 1, buf1);
  EXPECT(rf_push(t1, 1, NULL) == RF_OK, "push rank 1: %s", rf_last_error(t1));
  EXPECT(rf_push(t0, 1, NULL) == RF_OK, "push rank 0: %s", rf_last_error(t0));
  uint32_t first = 0;
  while (first < p->n_src && !buf0[first]) first++;
  rf_status b = rf_bind_src(t0, first, buf0[first], rf_src_bytes(t0, first));
  EXPECT(b == RF_ERR_STATE && strstr(rf_last_error(t0), "during the push"), "rf_bind_src during a push: %s '%s'",
         rf_strerror(b), rf_last_error(t0));
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  rf_status w = rf_wait(t0, 0);
  uint64_t took = ms_since(&start);
  /* receiver 1 is not connected: skipped; receiver 0 armed after 2.5 s and completed, so the wait
   * lasted until then (no lower bound on `took`: under load the receiver may arm before the wait) */
  EXPECT(w == RF_PARTIAL, "rf_wait(e, 0): %s after %llu ms '%s'", rf_strerror(w), (unsigned long long)took,
         rf_last_error(t0));
  EXPECT(rf_wait(t1, 0) == RF_PARTIAL, "rank 1 (progress thread): %s", rf_last_error(t1));
  rf_target_state ts;
  EXPECT(rf_target_report(t0, 0, &ts) == RF_OK && ts.status == RF_TARGET_COMPLETE && ts.complete == 1,
         "receiver 0: status %d complete %llu (%s)", ts.status, (unsigned long long)ts.complete, ts.reason);
  EXPECT(rf_target_report(t0, 1, &ts) == RF_OK && ts.status == RF_TARGET_SKIPPED && strstr(ts.reason, "not connected"),
         "receiver 1: status %d '%s'", ts.status, ts.reason);
  EXPECT(rf_resume_version(t0) == 2, "resume version %llu", (unsigned long long)rf_resume_version(t0));
  rf_close(t0);
  rf_close(t1);
  finish(&s);
  for (uint32_t i = 0; i < 256; i++) free(buf0[i]), free(buf1[i]);
}

/* SipHash-2-4 test vector (key 00..0f, message 00..0e): the MAC is the published function */
static void test_mac_vector(void)
{
  uint8_t key[16], msg[15];
  for (int i = 0; i < 16; i++) key[i] = (uint8_t)i;
  for (int i = 0; i < 15; i++) msg[i] = (uint8_t)i;
  uint64_t m = rf__mac(key, msg, sizeof msg);
  EXPECT(m == 0xa129ca6149be45e5ull, "siphash-2-4 of the reference vector: %016llx", (unsigned long long)m);
}

static const expect_test tests[] = {
  {"glm_tiny_demo 4 -> 2x(TP2/EP2), TCP, 3 versions", test_glm_demo_tcp},
  {"replayed blob-mode HELLOs answered without state and counted; forged DONEs counted", test_blob_hello_replay_counted},
  {"glm_tiny_rep2 dp_replicate 2, default transports", test_glm_rep2_default_tls},
  {"qwen3_tiny_tp2 over shared memory, engine-allocated tensors", test_qwen3_tp2_shm},
  {"qwen3_moe_tiny_ep2 through exported blobs", test_qwen3_moe_ep2_blob},
  {"qwen3_tiny_fp8_tp4", test_qwen3_fp8_tp4},
  {"qwen3_tiny_finalize: kernel and engine finalize steps, dense then delta, every byte", test_finalize_loopback},
  {"vLLM SM100 plans: UE8M0 pack steps equal the C reference pack of the received fp32 scales", test_finalize_sm100},
  {"direct writes from the sources (glm_tiny_demo, qwen3_tiny_tp2, qwen3_moe_tiny_bf16)", test_direct},
  {"trainer killed mid-push: torn, then complete", test_trainer_killed},
  {"receiver dies: trainers get an error", test_receiver_dies},
  {"wrong token, wrong layout hash", test_wrong_token_and_hash},
  {"corrupted and truncated blobs", test_bad_blobs},
  {"bad bindings", test_bad_bindings},
  {"NIC choice wins over UCX_NET_DEVICES in the environment", test_nic_choice_beats_env},
  {"f9 NULL address, closed port, long ucx_tls, blob with a checksum but no MAC", test_f9_bad_arguments},
  {"f9 another receiver's port: refused at once", test_f9_wrong_port},
  {"f9 rf_wait(e, 0) waits the engine's timeout; rf_bind_src refused during a push", test_f9_wait_zero_and_bind_during_push},
  {"the MAC is SipHash-2-4 (reference vector)", test_mac_vector},
};

int main(int argc, char **argv)
{
  return run_tests(tests, sizeof tests / sizeof tests[0], argc > 1 ? argv[1] : NULL, 120);
}
