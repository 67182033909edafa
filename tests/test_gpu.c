/* test_gpu.c: the GPU path end to end (run on a machine with CUDA devices; without one it says
 * so and passes nothing). Trainers and receivers are real processes in RF_MEM_CUDA mode: slots in
 * a cudaMalloc arena staged by the CUDA kernels, writes into cudaMalloc tensors, every byte copied
 * back and compared with the C reference, derived MLA tensors rebuilt by the GPU refresh and
 * compared with the C reference refresh, and a copy enqueued behind rf_stream_wait (plain and in
 * a CUDA graph) that must hold until the version completes and then read the new bytes. Delta
 * pushes (rf_config.delta) on the GPU: encode kernels on the trainer's stream, patches into device
 * patch areas, apply and digest kernels on the receivers, every byte equal to a dense push.
 *   test_gpu [filter]     RF_GPU_BIG=0 skips the multi-GB plan */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gpu.h"
#include "gpu_count.h"
#include "loop.h"
#include "plans.h"
#include "refit.h"

static int ndev;

#include "expect.h"

static uint64_t derived_bytes(const rf_plan *p)
{
  uint64_t n = 0;
  for (uint32_t i = 0; i < p->n_derived; i++) /* the storages refit rebuilds, once each */
    if (p->derived[i].storage == i && p->derived[i].dst == RF_NONE) n += p->derived[i].bytes * p->replicas;
  return n;
}

static void run_opt(const char *name, int versions, int tdev, int rdev, int kill, int direct, int delta);
static void run(const char *name, int versions, int tdev, int rdev, int kill)
{
  run_opt(name, versions, tdev, rdev, kill, 0, 0);
}

/* delta: sparse versions (tests/harness/loop.c) pushed as patches from version 2 on, v4 overflowing */
static const char *sparse_only; /* run_opt's delta versions change only these sources (rf_loop_opts) */
static void run_opt(const char *name, int versions, int tdev, int rdev, int kill, int direct, int delta)
{
  const rf_plan *p = rf_plan_find(name);
  rf_loop_opts o = {.sparse_only = sparse_only, .plan = p, .versions = versions, .seed = (uint64_t)time(NULL) ^ (uint64_t)getpid(), .token = 3,
                    .timeout_ms = 20000, .verify = 1, .kill_trainer = -1, .kill_receiver = -1, .cuda = 1,
                    .trainer_dev = tdev, .receiver_dev = rdev, .progress = getenv("RF_PROGRESS") != NULL,
                    .direct = direct, .delta = delta, .sparse = delta};
  if (delta) o.timeout_ms = 8000; /* a version that hangs fails in under a minute */
  if (kill) {
    o.kill_trainer = 0;
    o.kill_version = 2;
    o.timeout_ms = 5000;
  }
  rf_loop_result r;
  int rc = rf_loop_run(&o, &r);
  EXPECT(rc == 0, "%s: %s", name, r.error);
  if (rc) return;
  for (int i = 0; i < r.n; i++) {
    rf_loop_version *v = &r.v[i];
    if (kill && v->version == 2) {
      EXPECT(v->torn > 0 && strstr(v->torn_reason, "trainer rank 0"), "killed trainer: %d torn, '%s'", v->torn,
             v->torn_reason);
      printf("  v2 torn as reported: %s\n", v->torn_reason);
      continue;
    }
    EXPECT(v->complete == (int)p->receivers && v->mismatches == 0 && v->trainer_errors == 0,
           "%s v%llu: %d/%u complete, %llu bytes differ (%s), torn: %s, trainer: %s", name, (unsigned long long)v->version,
           v->complete, p->receivers, (unsigned long long)v->mismatches, v->mismatch, v->torn_reason, v->trainer_error);
    EXPECT(v->verified == p->total_bytes + derived_bytes(p), "%s v%llu: %llu bytes verified of %llu", name,
           (unsigned long long)v->version, (unsigned long long)v->verified,
           (unsigned long long)(p->total_bytes + derived_bytes(p)));
    EXPECT(v->stream_checked == (int)p->receivers && v->stream_ok == v->stream_checked,
           "%s v%llu: stream wait held and read the new version on %d of %d receivers: %s", name,
           (unsigned long long)v->version, v->stream_ok, v->stream_checked, v->stream_error);
    if (delta && v->version > 1 && !(kill && v->version == 3))
      EXPECT(v->deltas > 0 && v->deltas == v->applied && v->sent < p->total_bytes / (v->version == 4 ? 1 : 4),
             "%s v%llu: %llu pairs as patches, %llu applied, %llu of %llu bytes put", name, (unsigned long long)v->version,
             (unsigned long long)v->deltas, (unsigned long long)v->applied, (unsigned long long)v->sent,
             (unsigned long long)p->total_bytes);
    printf("  %s v%llu: %.3f GB in %.3f s (%.2f GB/s), staging %.2f ms GPU, %d receivers verified, stream waits held; "
           "%llu pairs as patches (%llu bytes put, %llu regions dense, apply %.2f ms)\n",
           name, (unsigned long long)v->version, v->bytes / 1e9, v->ns / 1e9, v->bytes / (double)v->ns,
           v->stage_ns / 1e6, v->complete, (unsigned long long)v->deltas, (unsigned long long)v->sent,
           (unsigned long long)v->overflows, v->apply_ns / 1e6);
  }
}

static void test_tiny_one_gpu(void) { run("glm_tiny_demo", 3, 0, 0, 0); }
static void test_fp8_tp4_one_gpu(void) { run("qwen3_tiny_fp8_tp4", 2, 0, 0, 0); }
/* finalize steps on the GPU: the UE8M0 pack by the CUDA kernel equals the C reference */
static void test_finalize_one_gpu(void) { run("qwen3_tiny_finalize", 2, 0, 0, 0); }
/* vLLM on SM100: the CUDA pack of every DeepGEMM linear's scales and, one group per expert, of the
 * experts' (moe_backend deep_gemm) equals the C reference */
static void test_finalize_sm100_gpu(void) { run("vllm_qwen3moe_fp8_tp1_sm100_deepgemm", 2, 0, 0, 0); }
/* ... with fp32 scales: the CUDA trainer casts the requant ops (RFK_SCALE_REQUANT), dense then delta,
 * every byte against the C reference's staging */
/* delta versions that change layer 0 only, then layer 1 only: the receiver runs a part of its run of
 * UE8M0 packs (the first step alone, then the second), so the CUDA backend's prepared items of the
 * whole run must not be reused for a part (its block count and `first` numbers differ) */
static void test_finalize_part_gpu(void)
{
  sparse_only = "layers.0.";
  run_opt("qwen3_tiny_finalize", 3, 0, 0, 0, 0, 1);
  sparse_only = "layers.1.";
  run_opt("qwen3_tiny_finalize", 3, 0, 0, 0, 0, 1);
  sparse_only = NULL;
}
static void test_requant_sm100_gpu(void) { run_opt("vllm_qwen3moe_fp8_tp1_sm100_deepgemm_requant", 4, 0, 0, 0, 0, 1); }
static void test_rep2_one_gpu(void) { run("glm_tiny_rep2", 2, 0, 0, 0); }
static void test_killed_trainer(void) { run("glm_tiny_demo", 3, 0, 0, 1); }
static void test_big_one_gpu(void) { run("qwen3_4b_bf16_1to1", 2, 0, 0, 0); }
static void test_direct_one_gpu(void)
{
  run_opt("glm_tiny_demo", 2, 0, 0, 0, 1, 0);
  run_opt("qwen3_tiny_tp2", 2, 0, 0, 0, 1, 0);
}
static void test_delta_one_gpu(void)
{
  run_opt("glm_tiny_demo", 6, 0, 0, 0, 0, 1);
  run_opt("qwen3_tiny_fp8_tp4", 5, 0, 0, 0, 0, 1);
  run_opt("qwen3_moe_tiny_bf16", 5, 0, 0, 0, 0, 1);
}
static void test_delta_killed(void) { run_opt("glm_tiny_demo", 5, 0, 0, 1, 0, 1); }
static void test_delta_two_gpus(void) { run_opt("glm_tiny_rep2", 5, 0, 1, 0, 0, 1); }
static void test_tiny_two_gpus(void) { run("glm_tiny_demo", 2, 0, 1, 0); }
static void test_big_two_gpus(void) { run("qwen3_4b_bf16_1to1", 2, 0, 1, 0); }

static void test_refused_memory(void)
{
  const rf_plan *p = rf_plan_find("glm_tiny_demo");
  rf_config c = {.plan = p, .role = RF_RECEIVER, .rank = 0, .mem = RF_MEM_CUDA};
  rf_engine *e;
  rf_gpu_use(0);
  EXPECT(rf_open(&c, &e) == RF_OK, "open: %s", rf_last_error(e));
  const rf_dst_tensor *d = &p->dst[p->recv[0].dst_first];
  void *vmm = rf_gpu_vmm_malloc(d->bytes);
  EXPECT(vmm != NULL, "cuMemCreate/cuMemMap failed: %s", rf_gpu_error());
  rf_status s = rf_bind_dst(e, p->recv[0].dst_first, vmm, d->bytes);
  EXPECT(s == RF_ERR_MEMORY && strstr(rf_last_error(e), "virtual memory") && strstr(rf_last_error(e), d->name) &&
             strstr(rf_last_error(e), "cudaMalloc"),
         "VMM memory: %s '%s'", rf_strerror(s), rf_last_error(e));
  printf("  VMM refused: %s\n", rf_last_error(e));
  uint8_t *small = rf_gpu_malloc(d->bytes / 2);
  s = rf_bind_dst(e, p->recv[0].dst_first, small, d->bytes);
  EXPECT(s == RF_ERR_MEMORY && strstr(rf_last_error(e), "past the end of its allocation"), "spanning: %s '%s'",
         rf_strerror(s), rf_last_error(e));
  void *host = malloc(d->bytes);
  s = rf_bind_dst(e, p->recv[0].dst_first, host, d->bytes);
  EXPECT(s == RF_ERR_MEMORY && strstr(rf_last_error(e), "not device memory"), "host memory: %s '%s'", rf_strerror(s),
         rf_last_error(e));
  void *good = rf_gpu_malloc(d->bytes);
  EXPECT(rf_bind_dst(e, p->recv[0].dst_first, good, d->bytes) == RF_OK, "cudaMalloc memory refused: %s", rf_last_error(e));
  rf_close(e);
}

/* a staging failure in rf_push (here an op the kernels refuse: rows < 0) is the push's result:
 * rf_push returns it and rf_wait reports it again (push_status was left RF_OK) */
static rf_op bad_ops[4096];
static void test_stage_failure(void)
{
  const rf_plan *p = rf_plan_find("qwen3_tiny_tp2");
  if (!p || p->n_ops > sizeof bad_ops / sizeof bad_ops[0]) return;
  rf_plan q = *p;
  memcpy(bad_ops, p->ops, p->n_ops * sizeof *bad_ops);
  bad_ops[p->ranks[0].op_first].rows = -1;
  q.ops = bad_ops;
  q.layout_hash = rf_plan_hash(&q);
  rf_gpu_use(0);
  rf_config c = {.plan = &q, .role = RF_TRAINER, .rank = 0, .token = 5, .ucx_tls = "tcp", .skip_down = 1,
                 .mem = RF_MEM_CUDA};
  rf_engine *t;
  EXPECT(rf_open(&c, &t) == RF_OK, "open: %s", rf_last_error(t));
  void *buf[1024] = {0};
  for (uint32_t i = 0; i < p->n_src && i < 1024; i++) {
    size_t n = rf_src_bytes(t, i);
    if (n && !(buf[i] = rf_gpu_malloc(n))) EXPECT(0, "cudaMalloc of %zu bytes", n);
    if (n) EXPECT(rf_bind_src(t, i, buf[i], n) == RF_OK, "bind: %s", rf_last_error(t));
  }
  void *stream = rf_gpu_stream();
  const char *name = p->src[p->ops[p->ranks[0].op_first].src].name;
  rf_status push = rf_push(t, 1, stream), w = rf_wait(t, 0), prog = rf_progress(t);
  EXPECT(push == RF_ERR_KERNEL && w == RF_ERR_KERNEL && strstr(rf_last_error(t), name),
         "push %s, then rf_wait %s (want the staging error twice), '%s'", rf_strerror(push), rf_strerror(w),
         rf_last_error(t));
  EXPECT(prog == RF_OK, "rf_progress after rf_wait reported the push: %s", rf_strerror(prog));
  rf_close(t);
  for (uint32_t i = 0; i < 1024; i++) rf_gpu_free(buf[i]);
}

static const struct {
  const char *name;
  void (*fn)(void);
  int gpus, big;
} tests[] = {
  {"a staging failure in rf_push is what rf_wait reports", test_stage_failure, 1, 0},
  {"glm_tiny_demo GPU -> GPU, one GPU, 3 versions", test_tiny_one_gpu, 1, 0},
  {"qwen3_tiny_fp8_tp4 GPU -> GPU, one GPU", test_fp8_tp4_one_gpu, 1, 0},
  {"qwen3_tiny_finalize GPU -> GPU: CUDA finalize kernels and the hook", test_finalize_one_gpu, 1, 0},
  {"vllm_qwen3moe_fp8_tp1_sm100_deepgemm GPU -> GPU: CUDA UE8M0 packs, experts in groups", test_finalize_sm100_gpu, 1, 0},
  {"vllm_qwen3moe_fp8_tp1_sm100_deepgemm_requant GPU -> GPU: CUDA requant casts, dense and delta", test_requant_sm100_gpu, 1, 0},
  {"qwen3_tiny_finalize GPU -> GPU, deltas of one layer: a part of a run of packs", test_finalize_part_gpu, 1, 0},
  {"glm_tiny_rep2 (dp_replicate 2) GPU -> GPU", test_rep2_one_gpu, 1, 0},
  {"killed trainer on the GPU path: torn, then complete", test_killed_trainer, 1, 0},
  {"VMM, spanning and host memory refused", test_refused_memory, 1, 0},
  {"direct writes from device sources", test_direct_one_gpu, 1, 0},
  {"delta pushes on the GPU: glm_tiny_demo, qwen3_tiny_fp8_tp4, qwen3_moe_tiny_bf16, exact", test_delta_one_gpu, 1, 0},
  {"delta pushes with a killed trainer on the GPU: torn, then exact", test_delta_killed, 1, 0},
  {"qwen3_4b_bf16_1to1 (8 GB) GPU -> GPU, one GPU", test_big_one_gpu, 1, 1},
  {"glm_tiny_demo GPU 0 -> GPU 1", test_tiny_two_gpus, 2, 0},
  {"delta pushes glm_tiny_rep2 GPU 0 -> GPU 1", test_delta_two_gpus, 2, 0},
  {"qwen3_4b_bf16_1to1 (8 GB) GPU 0 -> GPU 1", test_big_two_gpus, 2, 1},
};

int main(int argc, char **argv)
{
  ndev = rf_gpu_count_forked();
  if (ndev == 0) {
    printf("skipped: no CUDA device\n");
    printf("0 passed, 0 failed\n");
    return 0;
  }
  int passed = 0, failed = 0, big = !getenv("RF_GPU_BIG") || atoi(getenv("RF_GPU_BIG"));
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
    if (tests[i].gpus > ndev || (tests[i].big && !big)) {
      printf("skip %s (needs %d GPUs%s)\n", tests[i].name, tests[i].gpus, tests[i].big ? ", RF_GPU_BIG" : "");
      continue;
    }
    run_forked(tests[i].name, tests[i].fn, 300) ? passed++ : failed++;
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
