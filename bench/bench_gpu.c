/* bench_gpu.c: GPU -> GPU push of a multi-GB plan (trainer and receiver processes in RF_MEM_CUDA
 * mode) beside, in the same run, the copy bandwidth of the same bytes in the same chunk size
 * (cudaMemcpy on one GPU, cudaMemcpyPeer across two) and, with two GPUs, a NCCL broadcast of the
 * same bytes through torch.distributed (bench/nccl_bcast.py).
 *   bench_gpu PLAN [versions] [trainer_dev] [receiver_dev] [python] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "gpu_count.h"
#include "loop.h"
#include "plans.h"

int main(int argc, char **argv)
{
  const char *name = argc > 1 ? argv[1] : "qwen3_4b_bf16_1to1";
  int versions = argc > 2 ? atoi(argv[2]) : 3, tdev = argc > 3 ? atoi(argv[3]) : 0, rdev = argc > 4 ? atoi(argv[4]) : 0;
  const char *python = argc > 5 ? argv[5] : "python3";
  const rf_plan *p = rf_plan_find(name);
  int n = rf_gpu_count_forked();
  if (p && n == 0) {
    printf("bench_gpu: skipped: no CUDA device\n");
    return 0;
  }
  if (!p || tdev >= n || rdev >= n) {
    fprintf(stderr, "bench_gpu: %s\n", !p ? "no such plan" : "not enough CUDA devices");
    return 2;
  }
  rf_loop_opts o = {.plan = p, .versions = versions, .seed = 1, .token = 1, .timeout_ms = 60000, .verify = 0,
                    .fill_once = 1, .kill_trainer = -1, .kill_receiver = -1, .cuda = 1, .trainer_dev = tdev,
                    .receiver_dev = rdev, .direct = getenv("RF_STAGED") == NULL};
  rf_loop_result r;
  if (rf_loop_run(&o, &r)) {
    fprintf(stderr, "bench_gpu: %s\n", r.error);
    return 1;
  }
  printf("writes %s\n", o.direct ? "straight from the sources where no conversion is needed (rf_config.direct)"
                                 : "from the staged slot arena");
  uint64_t writes = 0;
  for (uint32_t t = 0; t < p->trainers; t++) writes += p->ranks[t].write_count;
  uint64_t chunk = p->total_bytes / (writes ? writes : 1);
  double best = 0, stage_ms = 0, push_ms = 0;
  for (int i = 0; i < r.n; i++) {
    rf_loop_version *v = &r.v[i];
    double gbps = v->bytes / (double)v->ns;
    printf("  version %llu: %.2f GB in %.1f ms = %.1f GB/s; staging kernels %.1f ms (GPU), push %.1f ms, %llu writes "
           "(%llu direct)\n",
           (unsigned long long)v->version, v->bytes / 1e9, v->ns / 1e6, gbps, v->stage_ns / 1e6, v->push_ns_max / 1e6,
           (unsigned long long)v->writes, (unsigned long long)v->direct_writes);
    if (v->complete != (int)p->receivers) {
      fprintf(stderr, "bench_gpu: version incomplete: %s %s\n", v->torn_reason, v->trainer_error);
      return 1;
    }
    if (gbps > best) best = gbps, stage_ms = v->stage_ns / 1e6, push_ms = v->push_ns_max / 1e6;
  }
  double copy1 = rf_gpu_copy_gbps(tdev, rdev, p->total_bytes, chunk, 1);
  double copy4 = rf_gpu_copy_gbps(tdev, rdev, p->total_bytes, chunk, 4);
  double nccl = 0;
  if (tdev != rdev) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s bench/nccl_bcast.py %llu %d %d", python, (unsigned long long)p->total_bytes, tdev, rdev);
    FILE *f = popen(cmd, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) sscanf(line, "nccl_gbps %lf", &nccl);
    if (f) pclose(f);
  }
  printf("plan %s: GPU %d -> GPU %d, %.2f GB per version, %llu writes (mean %.1f MB)\n", p->name, tdev, rdev,
         p->total_bytes / 1e9, (unsigned long long)writes, chunk / 1e6);
  printf("%-44s %8s %8s\n", "measure", "GB/s", "refit/x");
  printf("%-44s %8.1f %8s\n", "refit GPU -> GPU (best version)", best, "");
  const char *what = tdev == rdev ? "cudaMemcpy D2D" : "cudaMemcpyPeer";
  printf("%-30s same chunks, 1 stream  %8.1f %8.2f\n", what, copy1, copy1 > 0 ? best / copy1 : 0);
  printf("%-30s same chunks, 4 streams %8.1f %8.2f\n", what, copy4, copy4 > 0 ? best / copy4 : 0);
  if (tdev != rdev) printf("%-44s %8.1f %8.2f\n", "NCCL broadcast (torch.distributed)", nccl, nccl > 0 ? best / nccl : 0);
  uint32_t groups = 0;
  for (uint32_t t = 0; t < p->trainers; t++) groups += p->ranks[t].group_count;
  double copy = copy4 > copy1 ? copy4 : copy1, wire_ms = copy > 0 ? p->total_bytes / copy / 1e6 : 0;
  if (stage_ms > 0.01) {
    /* staging and writes overlap when the push takes less than their sum */
    double hidden = (stage_ms + wire_ms - push_ms) / stage_ms;
    hidden = hidden < 0 ? 0 : hidden > 1 ? 1 : hidden;
    printf("staging (cast/quantize+pack kernels): %.2f ms over %u groups (%.1f us per group); push %.2f ms; the "
           "same bytes at copy bandwidth %.2f ms; staging hidden behind writes: %.0f%%\n",
           stage_ms, groups, 1e3 * stage_ms / (groups ? groups : 1), push_ms, wire_ms, 100 * hidden);
  } else {
    printf("staging: none (every write goes straight from the sources); push %.2f ms\n", push_ms);
  }
  return 0;
}
