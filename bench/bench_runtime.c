/* bench_runtime.c: host-memory push of a multi-GB plan over UCX loopback, beside two peers
 * measured in the same run: single-thread memcpy and ucx_perftest ucp_put_bw at the plan's mean
 * write size (same transports). Prints GB/s (1e9 bytes/s), ratios and CPU ns per posted write.
 *   bench_runtime PLAN [versions] [ucx_perftest path] [alias_dst]
 * The trainer binds every source to one buffer (no per-version fill) so the run fits in memory;
 * alias_dst=1 binds every destination of a receiver to one buffer too (for 8 -> 8 on one host). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "plans.h"

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double memcpy_gbps(void)
{
  size_t n = (size_t)1 << 30;
  char *a = malloc(n), *b = malloc(n);
  if (!a || !b) return 0;
  memset(a, 1, n);
  memset(b, 2, n);
  double best = 0;
  for (int i = 0; i < 4; i++) {
    double t = now_s();
    memcpy(b, a, n);
    t = now_s() - t;
    if (n / t / 1e9 > best) best = n / t / 1e9;
    a[i] = b[n - 1 - i]; /* keep the copies observable */
  }
  free(a);
  free(b);
  return best;
}

/* ucx_perftest ucp_put_bw between two processes on loopback; GB/s or 0 */
static double perftest_gbps(const char *tool, uint64_t size, const char *tls)
{
  if (!tool || !*tool || access(tool, X_OK)) return 0;
  int port = 20000 + getpid() % 20000;
  char cmd[512];
  if (tls) setenv("UCX_TLS", tls, 1);
  /* a UCX tree outside the system (the PyPI wheel in .ucx) ships ucx_perftest without an rpath:
   * point the loader at that tree's lib/ and libs/, or it measures the system's UCX instead */
  char dir[400], libpath[900];
  snprintf(dir, sizeof dir, "%s", tool);
  char *slash = strrchr(dir, '/');
  if (slash && slash - dir >= 4 && !strcmp(slash - 4, "/bin/ucx_perftest")) {
    slash[-4] = 0;
    snprintf(libpath, sizeof libpath, "%s/lib:%s/libs", dir, dir);
    setenv("LD_LIBRARY_PATH", libpath, 1);
  }
  fflush(NULL);
  pid_t srv = fork();
  if (srv == 0) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    freopen("/dev/null", "w", stdout);
    freopen("/dev/null", "w", stderr);
    execl(tool, tool, "-p", p, (char *)NULL);
    _exit(127);
  }
  usleep(500000);
  fflush(NULL);
  uint64_t iters = (8ull << 30) / size;
  if (iters < 20) iters = 20;
  snprintf(cmd, sizeof cmd, "%s 127.0.0.1 -p %d -t ucp_put_bw -s %llu -n %llu -w 10 2>/dev/null", tool, port,
           (unsigned long long)size, (unsigned long long)iters);
  FILE *f = popen(cmd, "r");
  double mbs = 0;
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    double it, a, b, c, bw;
    if (sscanf(line, "Final: %lf %lf %lf %lf %lf", &it, &a, &b, &c, &bw) == 5) mbs = bw;
  }
  if (f) pclose(f);
  waitpid(srv, NULL, 0);
  unsetenv("UCX_TLS");
  unsetenv("LD_LIBRARY_PATH");
  return mbs * 1048576.0 / 1e9; /* ucx_perftest MB = 2^20 bytes */
}

int main(int argc, char **argv)
{
  const char *name = argc > 1 ? argv[1] : "qwen3_4b_bf16_1to1";
  int versions = argc > 2 ? atoi(argv[2]) : 3;
  const char *tool = argc > 3 ? argv[3] : "ucx_perftest";
  int alias_dst = argc > 4 ? atoi(argv[4]) : 0;
  const rf_plan *p = rf_plan_find(name);
  if (!p) {
    fprintf(stderr, "bench_runtime: no plan %s\n", name);
    return 2;
  }
  rf_loop_opts o = {.plan = p, .versions = versions, .seed = 1, .token = 1, .timeout_ms = 60000, .verify = 0, .tls = getenv("RF_TLS"),
                    .alias_src = 1, .alias_dst = alias_dst, .engine_mem = !alias_dst, .no_peer_errors = getenv("RF_PEER_ERRORS") == NULL, .kill_trainer = -1, .kill_receiver = -1,
                    .direct = getenv("RF_STAGED") == NULL};
  rf_loop_result r;
  if (rf_loop_run(&o, &r)) {
    fprintf(stderr, "bench_runtime: %s\n", r.error);
    return 1;
  }
  uint64_t writes = 0;
  for (uint32_t t = 0; t < p->trainers; t++) writes += p->ranks[t].write_count;
  uint64_t mean_write = p->total_bytes / (writes ? writes : 1);
  double best = 0, ns_per_write = 0, stage_share = 0;
  for (int i = 0; i < r.n; i++) {
    rf_loop_version *v = &r.v[i];
    double gbps = v->bytes / (double)v->ns;
    printf("  version %llu: %llu bytes in %.3f s = %.2f GB/s, staging %.3f s (all trainers), %llu writes, %.0f ns CPU per write\n",
           (unsigned long long)v->version, (unsigned long long)v->bytes, v->ns / 1e9, gbps, v->stage_ns / 1e9,
           (unsigned long long)v->writes, v->post_ns / (double)(v->writes ? v->writes : 1));
    if (v->complete != (int)p->receivers) {
      fprintf(stderr, "bench_runtime: version %llu incomplete: %s\n", (unsigned long long)v->version, v->torn_reason);
      return 1;
    }
    if (gbps > best) {
      best = gbps;
      ns_per_write = v->post_ns / (double)(v->writes ? v->writes : 1);
      stage_share = v->stage_ns / (double)v->ns / p->trainers;
    }
  }
  double mc = memcpy_gbps();
  double pt = perftest_gbps(tool, mean_write, NULL);
  printf("plan %s: %u trainers -> %u receivers, %.2f GB per version, %llu writes (mean %.1f MB)%s\n", p->name, p->trainers,
         p->receivers, p->total_bytes / 1e9, (unsigned long long)writes, mean_write / 1e6,
         alias_dst ? ", destinations aliased per receiver" : "");
  printf("%-34s %8s %8s\n", "measure", "GB/s", "ratio");
  printf("%-34s %8.2f %8s\n", "refit push (best version)", best, "");
  printf("%-34s %8.2f %8.2f\n", "memcpy, one thread", mc, mc > 0 ? best / mc : 0);
  if (pt > 0) printf("%-34s %8.2f %8.2f\n", "ucx_perftest ucp_put_bw", pt, best / pt);
  else printf("%-34s %8s %8s\n", "ucx_perftest ucp_put_bw", "n/a", "");
  printf("cpu per posted write: %.0f ns (over shared memory the put itself copies the bytes); staging busy %.0f%% of "
         "the update per trainer; writes %s\n",
         ns_per_write, 100 * stage_share, o.direct ? "straight from the sources where no conversion is needed" : "staged");
  return 0;
}
