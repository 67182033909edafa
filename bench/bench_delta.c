/* bench_delta.c: delta pushes against dense pushes of the same plan, in one run (issue 16, item 5).
 * The same sparse versions (tests/harness/loop.c's step mode: each version moves every K-th source element
 * by one bf16 ulp, K = 30 by default: 3.3% of the values, issue 16's bf16 figure; FP8 codes and
 * scales then change far less) are pushed once by dense trainers (staged slots, rf_config.delta off)
 * and once by delta trainers, over host memory or, with --cuda, GPU -> GPU in RF_MEM_CUDA mode
 * (skipped cleanly without a device). Version 1 of the delta run is dense (no base yet). Prints each
 * version's time (push command to the last receiver's answer) and bytes put, then the best
 * steady-state version of each run and their ratios.
 *   bench_delta PLAN [versions] [--cuda TRAINER_DEV RECEIVER_DEV] [--step K] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_count.h"
#include "loop.h"
#include "plans.h"

typedef struct best { double s, bytes, stage_s, apply_s; uint64_t patch, overflows, deltas; } best;

static int run(const rf_loop_opts *o, const char *what, best *b)
{
  rf_loop_result r;
  if (rf_loop_run(o, &r)) {
    fprintf(stderr, "bench_delta: %s run: %s\n", what, r.error);
    return -1;
  }
  *b = (best){0};
  for (int i = 0; i < r.n; i++) {
    const rf_loop_version *v = &r.v[i];
    if (v->complete != (int)o->plan->receivers) {
      fprintf(stderr, "bench_delta: %s v%llu incomplete: %s %s\n", what, (unsigned long long)v->version, v->torn_reason,
              v->trainer_error);
      return -1;
    }
    double s = v->ns / 1e9;
    printf("  %-5s v%llu: %8.2f ms, %12llu bytes put (%6.2f%% of dense), %llu of %u receivers as patches (%llu patch "
           "bytes, %llu regions dense); staging+encode %.2f ms, apply+digest %.2f ms\n", what,
           (unsigned long long)v->version, s * 1e3, (unsigned long long)v->sent,
           100.0 * (double)v->sent / (double)o->plan->total_bytes, (unsigned long long)v->deltas, o->plan->receivers,
           (unsigned long long)v->patch_bytes, (unsigned long long)v->overflows, v->stage_ns / 1e6, v->apply_ns / 1e6);
    if (i == 0) continue; /* steady state: from version 2 (the delta run's first version has no base) */
    if (!b->s || s < b->s)
      *b = (best){s, (double)v->sent, v->stage_ns / 1e9, v->apply_ns / 1e9, v->patch_bytes, v->overflows, v->deltas};
  }
  return 0;
}

int main(int argc, char **argv)
{
  const char *name = argc > 1 ? argv[1] : "qwen3_0_6b_bf16_1to1";
  int versions = argc > 2 && argv[2][0] != '-' ? atoi(argv[2]) : 4, cuda = 0, tdev = 0, rdev = 0, step = 30;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--cuda") == 0 && i + 2 < argc) cuda = 1, tdev = atoi(argv[i + 1]), rdev = atoi(argv[i + 2]), i += 2;
    else if (strcmp(argv[i], "--step") == 0 && i + 1 < argc) step = atoi(argv[++i]);
  }
  const rf_plan *p = rf_plan_find(name);
  if (!p || versions < 2 || versions > RF_LOOP_MAX_VERSIONS || step < 1) {
    fprintf(stderr, "usage: bench_delta PLAN [versions 2..%d] [--cuda T R] [--step K] (%s)\n", RF_LOOP_MAX_VERSIONS,
            p ? "bad arguments" : "no such plan");
    return 2;
  }
  if (cuda) {
    int n = rf_gpu_count_forked();
    if (n == 0) {
      printf("bench_delta: skipped: no CUDA device\n");
      return 0;
    }
    if (tdev >= n || rdev >= n) {
      fprintf(stderr, "bench_delta: not enough CUDA devices\n");
      return 2;
    }
  }
  if (!p->delta_ppm) {
    fprintf(stderr, "bench_delta: plan %s has no patch areas\n", p->name);
    return 2;
  }
  rf_loop_opts o = {.plan = p, .versions = versions, .seed = 1, .token = 1, .timeout_ms = 60000, .verify = 0,
                    .tls = getenv("RF_TLS"), .engine_mem = !cuda, .no_peer_errors = !cuda && getenv("RF_PEER_ERRORS") == NULL,
                    .kill_trainer = -1, .kill_receiver = -1, .cuda = cuda, .trainer_dev = tdev, .receiver_dev = rdev,
                    .step = step};
  printf("plan %s: %u trainers -> %u receivers, %.3f GB per version dense, %s; each version moves 1 in %d source "
         "values by one bf16 ulp\n", p->name, p->trainers, p->receivers, p->total_bytes / 1e9,
         cuda ? "GPU -> GPU (RF_MEM_CUDA)" : "host memory", step);
  best dense, delta;
  if (run(&o, "dense", &dense)) return 1;
  o.delta = 1;
  if (run(&o, "delta", &delta)) return 1;
  printf("%-42s %10s %14s %10s\n", "best version from v2", "ms", "bytes put", "of dense");
  printf("%-42s %10.2f %14.0f %10s\n", "dense push (staged slots)", dense.s * 1e3, dense.bytes, "");
  printf("%-42s %10.2f %14.0f %10.4f\n", "delta push", delta.s * 1e3, delta.bytes, delta.bytes / dense.bytes);
  printf("delta / dense: time %.3f, bytes %.4f; delta: %llu receivers as patches, %llu patch bytes, %llu regions "
         "dense, staging+encode %.2f ms (dense staging %.2f ms), apply+digest %.2f ms\n", delta.s / dense.s,
         delta.bytes / dense.bytes, (unsigned long long)delta.deltas, (unsigned long long)delta.patch,
         (unsigned long long)delta.overflows, delta.stage_s * 1e3, dense.stage_s * 1e3, delta.apply_s * 1e3);
  return 0;
}
