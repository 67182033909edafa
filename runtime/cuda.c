/* cuda.c: the engine's device side (RF_MEM_CUDA), built when configure found nvcc.
 *   trainer:  slot arena = one cudaMalloc, registered once; each group's kernels run on the
 *             caller's stream and record an event; its writes are posted once the event is done.
 *   receiver: bound tensors must be plain cudaMalloc memory (CUDA VMM, e.g. PyTorch expandable
 *             segments, and ranges spanning allocations are refused); the newest complete version
 *             lives in a host-mapped word that streams wait on with cuStreamWaitValue32; derived
 *             tensors are rebuilt on the GPU before a version is published.
 *   delta:    the trainer's scratch and patch buffer and the receiver's patch area are cudaMalloc
 *             memory; encode runs on the caller's stream after a group's staging, apply and digest
 *             on the refresh stream; results come back through mapped or pinned host memory.
 * Driver entry points come through cudaGetDriverEntryPointByVersion: no link against libcuda, so
 * programs start on machines without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "internal.h"

typedef CUresult (*ptr_attr_fn)(void *, CUpointer_attribute, CUdeviceptr);
typedef CUresult (*addr_range_fn)(CUdeviceptr *, size_t *, CUdeviceptr);
typedef CUresult (*wait32_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);

struct rf__cuda {
  ptr_attr_fn ptr_attr;
  addr_range_fn addr_range;
  wait32_fn wait32;
  cudaEvent_t *ev;             /* trainer: one per group of this rank (n_ev) */
  uint32_t n_ev;
  cudaEvent_t t0;
  int timed, timed_start;
  volatile int *flag_h;        /* trainer: set by kernels on non-finite input (host-mapped) */
  int *flag_d;
  volatile uint32_t *ver_h;    /* receiver: newest complete version (host-mapped) */
  CUdeviceptr ver_d;
  cudaStream_t rstream;        /* receiver: refresh, delta apply and digest, finalize kernels */
  volatile int *fin_flag_h;    /* receiver: set by finalize kernels on non-finite input (host-mapped) */
  int *fin_flag_d;
  rfk_ue8m0_item *fin_items_h; /* receiver: [n_finalize] the grouped pack's items, at each run's first step */
  rfk_ue8m0_item *fin_items_d; /* their device copy, [n_finalize + 1] (the last: rf_listen's warm-up item) */
  int64_t *fin_blocks;         /* [n_finalize] at a run's first step: the run's blocks ... */
  uint32_t *fin_steps;         /* ... and its number of steps; fin_owner: [n_finalize] the first step of
                                  the run whose prepared items a slot holds (their `first` numbers count
                                  from that run's start). A delta version runs a part of a run, so runs
                                  of other starts and lengths share slots: any mismatch prepares again */
  uint32_t *fin_owner;
  void *dev[16];               /* device buffers (alloc); what their owners did not free goes at close */
  void *host[16];              /* pinned mapped host buffers (alloc_shared) */
  int n_dev, n_host;
  void *dscratch;              /* trainer, delta: the encode kernels' scratch */
  uint64_t dscratch_bytes;
};

#define CU_TRY(e, call, what)                                                                           \
  do {                                                                                                  \
    cudaError_t rf__c = (call);                                                                         \
    if (rf__c != cudaSuccess)                                                                           \
      return rf__fail((e), RF_ERR_CUDA, "%s: %s (%s:%d)", (what), cudaGetErrorString(rf__c), __FILE__, __LINE__); \
  } while (0)

static rf_status entry(rf_engine *e, const char *sym, void **fn)
{
  enum cudaDriverEntryPointQueryResult q;
  cudaError_t c = cudaGetDriverEntryPointByVersion(sym, fn, 12000, cudaEnableDefault, &q);
  if (c != cudaSuccess || q != cudaDriverEntryPointSuccess || !*fn)
    return rf__fail(e, RF_ERR_CUDA, "CUDA driver has no %s (%s)", sym, cudaGetErrorString(c));
  return RF_OK;
}

rf_status rf__cuda_open(rf_engine *e)
{
  int n = 0;
  cudaError_t c = cudaGetDeviceCount(&n);
  if (c != cudaSuccess || n == 0)
    return rf__fail(e, RF_ERR_CUDA, "RF_MEM_CUDA: no CUDA device (%s)", c == cudaSuccess ? "none found" : cudaGetErrorString(c));
  if (e->cfg.cuda_device < 0 || e->cfg.cuda_device >= n)
    return rf__fail(e, RF_ERR_ARG, "cuda_device %d out of range (%d devices)", e->cfg.cuda_device, n);
  CU_TRY(e, cudaSetDevice(e->cfg.cuda_device), "cudaSetDevice");
  struct rf__cuda *cu = calloc(1, sizeof *cu);
  if (!cu) return rf__fail(e, RF_ERR_NOMEM, "CUDA state");
  e->cu = cu;
  RF_CHECK(entry(e, "cuPointerGetAttribute", (void **)&cu->ptr_attr));
  RF_CHECK(entry(e, "cuMemGetAddressRange", (void **)&cu->addr_range));
  RF_CHECK(entry(e, "cuStreamWaitValue32", (void **)&cu->wait32));
  if (e->cfg.role == RF_RECEIVER) {
    void *h;
    CU_TRY(e, cudaHostAlloc(&h, 64, cudaHostAllocMapped | cudaHostAllocPortable), "version word");
    cu->ver_h = h;
    *cu->ver_h = 0;
    void *d;
    CU_TRY(e, cudaHostGetDevicePointer(&d, h, 0), "version word device address");
    cu->ver_d = (CUdeviceptr)(uintptr_t)d;
    cu->fin_flag_h = (volatile int *)((char *)h + 32); /* the same 64 mapped bytes, its own line's half */
    cu->fin_flag_d = (int *)((char *)d + 32);
    CU_TRY(e, cudaStreamCreateWithFlags(&cu->rstream, cudaStreamNonBlocking), "refresh stream");
  } else {
    void *h;
    CU_TRY(e, cudaHostAlloc(&h, 64, cudaHostAllocMapped | cudaHostAllocPortable), "kernel flag");
    cu->flag_h = h;
    *cu->flag_h = 0;
    CU_TRY(e, cudaHostGetDevicePointer((void **)&cu->flag_d, h, 0), "kernel flag device address");
  }
  return RF_OK;
}

void rf__cuda_close(rf_engine *e)
{
  struct rf__cuda *cu = e->cu;
  if (!cu) return;
  if (cu->ev) {
    for (uint32_t i = 0; i < cu->n_ev; i++)
      if (cu->ev[i]) cudaEventDestroy(cu->ev[i]);
    free(cu->ev);
  }
  if (cu->t0) cudaEventDestroy(cu->t0);
  for (int i = 0; i < cu->n_dev; i++)
    if (cu->dev[i]) cudaFree(cu->dev[i]);
  for (int i = 0; i < cu->n_host; i++)
    if (cu->host[i]) cudaFreeHost(cu->host[i]);
  if (cu->flag_h) cudaFreeHost((void *)cu->flag_h);
  if (cu->ver_h) cudaFreeHost((void *)cu->ver_h);
  if (cu->rstream) cudaStreamDestroy(cu->rstream);
  if (cu->fin_items_d) cudaFree(cu->fin_items_d);
  free(cu->fin_items_h);
  free(cu->fin_blocks);
  free(cu->fin_steps);
  free(cu->fin_owner);
  free(cu);
  e->cu = NULL;
}

rf_status rf__cuda_groups(rf_engine *e, uint32_t groups)
{
  struct rf__cuda *cu = e->cu;
  cu->ev = calloc(groups ? groups : 1, sizeof *cu->ev);
  if (!cu->ev) return rf__fail(e, RF_ERR_NOMEM, "group events");
  cu->n_ev = groups;
  for (uint32_t i = 0; i < groups; i++)
    CU_TRY(e, cudaEventCreateWithFlags(&cu->ev[i], i + 1 == groups ? cudaEventDefault : cudaEventDisableTiming),
           "group event");
  CU_TRY(e, cudaEventCreate(&cu->t0), "timing event");
  return RF_OK;
}

static rf_status check_memory(rf_engine *e, const void *ptr, size_t bytes, const char *what)
{
  struct rf__cuda *cu = e->cu;
  struct cudaPointerAttributes a;
  cudaError_t c = cudaPointerGetAttributes(&a, ptr);
  if (c != cudaSuccess || a.type != cudaMemoryTypeDevice) {
    cudaGetLastError();
    return rf__fail(e, RF_ERR_MEMORY, "tensor '%s' at %p is not device memory (RF_MEM_CUDA binds cudaMalloc memory)", what, ptr);
  }
  int legacy = 0;
  CUresult r = cu->ptr_attr(&legacy, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, (CUdeviceptr)(uintptr_t)ptr);
  if (r != CUDA_SUCCESS) return rf__fail(e, RF_ERR_CUDA, "tensor '%s': cuPointerGetAttribute failed (%d)", what, (int)r);
  if (!legacy)
    return rf__fail(e, RF_ERR_MEMORY,
                    "tensor '%s' at %p is CUDA virtual memory (cuMemCreate/cuMemMap, e.g. PyTorch expandable segments): "
                    "the transport cannot register it safely; allocate it with cudaMalloc (in PyTorch set "
                    "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False for these tensors)",
                    what, ptr);
  CUdeviceptr base = 0;
  size_t size = 0;
  r = cu->addr_range(&base, &size, (CUdeviceptr)(uintptr_t)ptr);
  if (r != CUDA_SUCCESS) return rf__fail(e, RF_ERR_CUDA, "tensor '%s': cuMemGetAddressRange failed (%d)", what, (int)r);
  if ((uintptr_t)ptr + bytes > base + size)
    return rf__fail(e, RF_ERR_MEMORY,
                    "tensor '%s' [%p, +%zu) runs past the end of its allocation (%zu bytes at 0x%llx): one binding "
                    "must lie inside one cudaMalloc allocation",
                    what, ptr, bytes, size, (unsigned long long)base);
  return RF_OK;
}

rf_status rf__cuda_stage_op(rf_engine *e, const rfk_shape *sh, const rfk_item *items, int count, void *stream,
                            const char *what, uint64_t version)
{
  struct rf__cuda *cu = e->cu;
  if (!cu->timed_start) {
    *cu->flag_h = 0;
    CU_TRY(e, cudaEventRecord(cu->t0, (cudaStream_t)stream), "cudaEventRecord");
    cu->timed_start = 1;
    cu->timed = 0;
  }
  int rc = rfk_cuda_run(sh, items, count, cu->flag_d, stream);
  if (rc == RFK_ERR_CUDA)
    return rf__fail(e, RF_ERR_CUDA, "staging '%s' for version %llu: kernel launch failed: %s", what,
                    (unsigned long long)version, rfk_cuda_last_error());
  if (rc) return rf__fail(e, RF_ERR_KERNEL, "staging '%s' for version %llu: %s", what, (unsigned long long)version, rfk_strerror(rc));
  return RF_OK;
}

rf_status rf__cuda_group_done(rf_engine *e, uint32_t k, void *stream)
{
  CU_TRY(e, cudaEventRecord(e->cu->ev[k], (cudaStream_t)stream), "cudaEventRecord");
  if (k + 1 == e->cu->n_ev) e->cu->timed_start = 0;
  return RF_OK;
}

int rf__cuda_group_ready(rf_engine *e, uint32_t k, uint32_t gid, uint32_t layer, char *err, size_t errlen, uint64_t *stage_ns)
{
  struct rf__cuda *cu = e->cu;
  cudaError_t c = cudaEventQuery(cu->ev[k]);
  if (c == cudaErrorNotReady) return 0;
  if (c != cudaSuccess) {
    snprintf(err, errlen, "staging group %u: %s", gid, cudaGetErrorString(c));
    return -1;
  }
  if (*cu->flag_h) {
    snprintf(err, errlen, "non-finite values (inf/NaN) in the tensors of group %u (layer %u); nothing of this version "
             "is reported complete", gid, layer);
    return -1;
  }
  if (k + 1 == cu->n_ev && !cu->timed) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, cu->t0, cu->ev[k]) == cudaSuccess) *stage_ns += (uint64_t)(ms * 1e6);
    cu->timed = 1;
  }
  return 1;
}

static void publish(rf_engine *e, uint64_t v) { __atomic_store_n(e->cu->ver_h, (uint32_t)v, __ATOMIC_RELEASE); }

rf_status rf__cuda_stream_wait(rf_engine *e, uint64_t v, void *stream)
{
  /* wraps after 2^32 versions: the comparison is (int32_t)(word - v) >= 0 */
  CUresult r = e->cu->wait32((CUstream)stream, e->cu->ver_d, (cuuint32_t)v, CU_STREAM_WAIT_VALUE_GEQ);
  if (r != CUDA_SUCCESS)
    return rf__fail(e, RF_ERR_CUDA, "cuStreamWaitValue32 for version %llu failed (%d)", (unsigned long long)v, (int)r);
  return RF_OK;
}

static rf_status refresh(rf_engine *e, const rf_refresh *st, const rfk_mla_absorb *items, const rfk_mla_layout *y,
                           uint32_t n)
{
  /* one launch per run of steps with the same layout */
  for (uint32_t i = 0, j; i < n; i = j) {
    for (j = i + 1; j < n && !memcmp(&y[j], &y[i], sizeof y[i]) && (st[j].scale == RF_NONE) == (st[i].scale == RF_NONE); j++) {
    }
    int rc = rfk_cuda_mla_absorb(items + i, (int)(j - i), st[i].scale != RF_NONE, &y[i], e->cu->rstream);
    if (rc)
      return rf__fail(e, RF_ERR_CUDA, "refresh of layer %u: %s", st[i].layer,
                      rc == RFK_ERR_CUDA ? rfk_cuda_last_error() : rfk_strerror(rc));
  }
  CU_TRY(e, cudaStreamSynchronize(e->cu->rstream), "refresh");
  return RF_OK;
}

/* a run of finalize steps (all RF_FINOP_UE8M0_PACK, the only op) in one grouped launch on the refresh
 * stream, then one sync; a non-finite input is the flag's (mapped host word), and the steps then run
 * again one launch each to name the first bad one. Its items (rfk_ue8m0_item) are prepared in device
 * memory at rf_listen (warm) and uploaded again only if a pointer changed since. warm also loads both
 * pack kernels (a lazy load behind a stream wait can stall the context, as for the refresh), writing
 * a scratch buffer only. */
static rf_status fin_items(rf_engine *e, const uint32_t *steps, uint32_t n, void *const *in, void *const *out, int force,
                           uint32_t *bad)
{
  struct rf__cuda *cu = e->cu;
  uint32_t n_fin = e->p->n_finalize;
  if (!cu->fin_items_h) {
    cu->fin_items_h = calloc(n_fin ? n_fin : 1, sizeof *cu->fin_items_h);
    cu->fin_blocks = calloc(n_fin ? n_fin : 1, sizeof *cu->fin_blocks);
    cu->fin_steps = calloc(n_fin ? n_fin : 1, sizeof *cu->fin_steps);
    cu->fin_owner = calloc(n_fin ? n_fin : 1, sizeof *cu->fin_owner);
    if (!cu->fin_items_h || !cu->fin_blocks || !cu->fin_steps || !cu->fin_owner)
      return rf__fail(e, RF_ERR_NOMEM, "finalize items");
    for (uint32_t i = 0; i < n_fin; i++) cu->fin_owner[i] = RF_NONE;
    CU_TRY(e, cudaMalloc((void **)&cu->fin_items_d, (n_fin + 1) * sizeof *cu->fin_items_d), "finalize items");
  }
  if (steps[0] >= n_fin || n > n_fin - steps[0] || n > 0x7fffffff)
    return rf__fail(e, RF_ERR_ARG, "finalize run %u+%u out of the plan's %u steps", steps[0], n, n_fin);
  rfk_ue8m0_item *it = cu->fin_items_h + steps[0];
  int dirty = force || cu->fin_steps[steps[0]] != n;
  for (uint32_t i = 0; i < n; i++) {
    const rf_finalize *s = &e->p->finalize[steps[i]];
    rfk_ue8m0_item x = {.scale = in[i], .out = out[i], .groups = s->groups, .rows = s->rows, .cols = s->cols};
    if (x.scale != it[i].scale || x.out != it[i].out || x.groups != it[i].groups || x.rows != it[i].rows ||
        x.cols != it[i].cols || cu->fin_owner[steps[0] + i] != steps[0])
      it[i] = x, dirty = 1;
  }
  if (!dirty) return RF_OK;
  int b = 0;
  int64_t blocks = rfk_ue8m0_pack_prepare(it, (int)n, &b);
  if (blocks < 0) {
    const rf_finalize *s = &e->p->finalize[steps[b]];
    *bad = (uint32_t)b;
    it[b].scale = NULL; /* prepared again next time */
    return rf__fail(e, RF_ERR_CUDA, "kernel op %u over [%u, %lld, %lld]: %s (or the run's blocks past 2^31)", s->op,
                    s->groups, (long long)s->rows, (long long)s->cols, rfk_strerror(RFK_ERR_ARG));
  }
  cu->fin_blocks[steps[0]] = blocks;
  cu->fin_steps[steps[0]] = n;
  for (uint32_t i = 0; i < n; i++) cu->fin_owner[steps[0] + i] = steps[0];
  cudaError_t c = cudaMemcpyAsync(cu->fin_items_d + steps[0], it, n * sizeof *it, cudaMemcpyHostToDevice, cu->rstream);
  if (c != cudaSuccess) {
    it[0].scale = NULL;
    return rf__fail(e, RF_ERR_CUDA, "finalize items upload: %s", cudaGetErrorString(c));
  }
  return RF_OK;
}

static rf_status finalize(rf_engine *e, const uint32_t *steps, uint32_t n, void *const *in, void *const *out, int warm,
                          uint32_t *bad)
{
  struct rf__cuda *cu = e->cu;
  *bad = 0;
  if (!n) return RF_OK;
  for (uint32_t i = 0; i < n; i++)
    if (e->p->finalize[steps[i]].op != RF_FINOP_UE8M0_PACK) {
      *bad = i;
      return rf__fail(e, RF_ERR_CUDA, "kernel op %u: not a CUDA kernel here", e->p->finalize[steps[i]].op);
    }
  RF_CHECK(fin_items(e, steps, n, in, out, warm, bad));
  if (warm) {
    const rf_finalize *s = &e->p->finalize[steps[0]];
    void *scratch = NULL;
    CU_TRY(e, cudaMalloc(&scratch, (size_t)(s->groups * rfk_ue8m0_pack_words(s->rows, s->cols) * 4) + 16),
           "finalize kernel warm-up");
    rfk_ue8m0_item w = {.scale = in[0], .out = scratch, .groups = s->groups, .rows = s->rows, .cols = s->cols};
    int64_t blocks = rfk_ue8m0_pack_prepare(&w, 1, NULL);
    int rc = rfk_cuda_ue8m0_pack(in[0], scratch, s->groups, s->rows, s->cols, NULL, cu->rstream);
    cudaError_t c = cudaMemcpyAsync(cu->fin_items_d + e->p->n_finalize, &w, sizeof w, cudaMemcpyHostToDevice, cu->rstream);
    if (!rc && c == cudaSuccess)
      rc = rfk_cuda_ue8m0_pack_items(cu->fin_items_d + e->p->n_finalize, 1, blocks, NULL, cu->rstream);
    cudaError_t c2 = cudaStreamSynchronize(cu->rstream); /* also `w`'s upload and the run's items */
    cudaFree(scratch);
    if (c == cudaSuccess) c = c2;
    if (rc || c != cudaSuccess)
      return rf__fail(e, RF_ERR_CUDA, "finalize kernel warm-up (op %u): %s", s->op,
                      rc == RFK_ERR_CUDA ? rfk_cuda_last_error() : rc ? rfk_strerror(rc) : cudaGetErrorString(c));
    return RF_OK;
  }
  *cu->fin_flag_h = 0;
  int rc = rfk_cuda_ue8m0_pack_items(cu->fin_items_d + steps[0], (int)n, cu->fin_blocks[steps[0]], cu->fin_flag_d,
                                     cu->rstream);
  if (rc)
    return rf__fail(e, RF_ERR_CUDA, "kernel op %u over %u steps in one launch: %s", e->p->finalize[steps[0]].op, n,
                    rc == RFK_ERR_CUDA ? rfk_cuda_last_error() : rfk_strerror(rc));
  CU_TRY(e, cudaStreamSynchronize(cu->rstream), "finalize");
  if (!*cu->fin_flag_h) return RF_OK;
  for (uint32_t i = 0; i < n; i++) { /* which step: each alone (the run is torn anyway; same bytes again) */
    const rf_finalize *s = &e->p->finalize[steps[i]];
    *cu->fin_flag_h = 0;
    rc = rfk_cuda_ue8m0_pack(in[i], out[i], s->groups, s->rows, s->cols, cu->fin_flag_d, cu->rstream);
    CU_TRY(e, cudaStreamSynchronize(cu->rstream), "finalize");
    if (rc || *cu->fin_flag_h) {
      *bad = i;
      return rf__fail(e, rc ? RF_ERR_CUDA : RF_ERR_KERNEL, "kernel op %u over [%u, %lld, %lld]: %s", s->op, s->groups,
                      (long long)s->rows, (long long)s->cols,
                      rc == RFK_ERR_CUDA ? rfk_cuda_last_error() : rfk_strerror(rc ? rc : RFK_ERR_NONFINITE));
    }
  }
  return rf__fail(e, RF_ERR_KERNEL, "kernel op %u over %u steps in one launch: %s", e->p->finalize[steps[0]].op, n,
                  rfk_strerror(RFK_ERR_NONFINITE));
}

static rf_status alloc(rf_engine *e, size_t bytes, void **dev, const char *what)
{
  struct rf__cuda *cu = e->cu;
  int i = 0;
  while (i < cu->n_dev && cu->dev[i]) i++;
  if (i == (int)(sizeof cu->dev / sizeof cu->dev[0])) return rf__fail(e, RF_ERR_NOMEM, "%s: too many device buffers", what);
  CU_TRY(e, cudaMalloc(dev, bytes ? bytes : 16), what);
  cu->dev[i] = *dev;
  if (i == cu->n_dev) cu->n_dev++;
  CU_TRY(e, cudaMemset(*dev, 0, bytes ? bytes : 16), what);
  return RF_OK;
}

static void release(void **list, int n, void *p, int host)
{
  for (int i = 0; p && i < n; i++)
    if (list[i] == p) {
      if (host) cudaFreeHost(p);
      else cudaFree(p);
      list[i] = NULL;
    }
}

static void free_dev(rf_engine *e, void *ptr) { release(e->cu->dev, e->cu->n_dev, ptr, 0); }

static rf_status alloc_reg(rf_engine *e, size_t bytes, void **ptr, void **memh, const char *what)
{
  RF_CHECK(alloc(e, bytes, ptr, what));
  return rf__ucx_map(e, *ptr, bytes ? bytes : 16, memh);
}

static void free_reg(rf_engine *e, void *ptr, void *memh)
{
  if (memh) rf__ucx_unmap(e, memh);
  free_dev(e, ptr);
}

static rf_status alloc_shared(rf_engine *e, size_t bytes, void **host, void **dev, const char *what)
{
  struct rf__cuda *cu = e->cu;
  int i = 0;
  while (i < cu->n_host && cu->host[i]) i++;
  if (i == (int)(sizeof cu->host / sizeof cu->host[0])) return rf__fail(e, RF_ERR_NOMEM, "%s: too many host buffers", what);
  CU_TRY(e, cudaHostAlloc(host, bytes ? bytes : 16, cudaHostAllocMapped | cudaHostAllocPortable), what);
  cu->host[i] = *host;
  if (i == cu->n_host) cu->n_host++;
  memset(*host, 0, bytes ? bytes : 16);
  if (dev) CU_TRY(e, cudaHostGetDevicePointer(dev, *host, 0), what);
  return RF_OK;
}

static void free_shared(rf_engine *e, void *host) { release(e->cu->host, e->cu->n_host, host, 1); }

rf_status rf__cuda_delta_scratch(rf_engine *e, const rfk_delta_region *r, const uint32_t *first, uint32_t groups)
{
  uint64_t most = 8;
  for (uint32_t g = 0; g < groups; g++) {
    uint64_t b = rfk_delta_scratch_bytes(r + first[g], (int)(first[g + 1] - first[g]));
    if (b > most) most = b;
  }
  e->cu->dscratch_bytes = most;
  return alloc(e, most, &e->cu->dscratch, "delta encode scratch");
}

rf_status rf__cuda_delta_encode(rf_engine *e, const rfk_delta_region *r, uint32_t n, rfk_delta_out *out, void *stream,
                                uint64_t version)
{
  struct rf__cuda *cu = e->cu;
  int rc = rfk_cuda_delta_encode(r, (int)n, out, cu->dscratch, cu->dscratch_bytes, stream);
  if (rc == RFK_ERR_CUDA)
    return rf__fail(e, RF_ERR_CUDA, "delta encode for version %llu: kernel launch failed: %s", (unsigned long long)version,
                    rfk_cuda_last_error());
  if (rc) return rf__fail(e, RF_ERR_KERNEL, "delta encode for version %llu: %s", (unsigned long long)version, rfk_strerror(rc));
  return RF_OK;
}

static rf_status apply(rf_engine *e, const rfk_delta_target *t, uint32_t nt, rfk_delta_status *st_d,
                               rfk_delta_status *st_h, const rfk_delta_span *s, uint32_t ns, uint64_t *dg_d,
                               uint64_t *dg_h)
{
  cudaStream_t st = e->cu->rstream;
  int rc = rfk_cuda_delta_apply(t, (int)nt, st_d, st);
  if (rc == RFK_OK) rc = rfk_cuda_delta_digest(s, (int)ns, dg_d, st);
  if (rc)
    return rf__fail(e, rc == RFK_ERR_CUDA ? RF_ERR_CUDA : RF_ERR_KERNEL, "applying patches: %s",
                    rc == RFK_ERR_CUDA ? rfk_cuda_last_error() : rfk_strerror(rc));
  if (nt) CU_TRY(e, cudaMemcpyAsync(st_h, st_d, nt * sizeof *st_h, cudaMemcpyDeviceToHost, st), "patch statuses");
  if (ns) CU_TRY(e, cudaMemcpyAsync(dg_h, dg_d, ns * sizeof *dg_h, cudaMemcpyDeviceToHost, st), "region digests");
  CU_TRY(e, cudaStreamSynchronize(st), "applying patches");
  return RF_OK;
}

static rf_status warm(rf_engine *e, rfk_delta_status *st_d, rfk_delta_status *st_h, uint64_t *dg_d,
                              uint64_t *dg_h)
{
  if (rfk_cuda_delta_load() != RFK_OK)
    return rf__fail(e, RF_ERR_CUDA, "loading the delta kernels: %s", rfk_cuda_last_error());
  if (e->cfg.role != RF_RECEIVER) return RF_OK;
  /* one patch of 16 bytes end to end, on the refresh stream: validate, apply and digest run once
   * here, before any stream waits on a version, and must give the reference's bytes and digest */
  uint8_t next[16] = {0}, old[16] = {0}, patch[64], got[16];
  next[5] = 0x5a;
  rfk_delta_out o;
  rfk_delta_region r = {.next = next, .old = old, .n = 16, .esize = 1, .patch = patch, .cap = sizeof patch};
  if (rfk_ref_delta_encode(&r, 1, &o) != RFK_OK || o.status != RFK_OK)
    return rf__fail(e, RF_ERR_KERNEL, "the delta kernels' self-check: the reference encode failed");
  uint8_t *dev;
  RF_CHECK(alloc(e, 16 + sizeof patch, (void **)&dev, "delta self-check buffer")); /* zeroed: old */
  CU_TRY(e, cudaMemcpy(dev + 16, patch, o.size, cudaMemcpyHostToDevice), "delta self-check");
  rfk_delta_target t = {.patch = dev + 16, .len = o.size, .dst = dev, .n = 16, .esize = 1};
  rfk_delta_span sp = {dev, 16};
  RF_CHECK(apply(e, &t, 1, st_d, st_h, &sp, 1, dg_d, dg_h));
  CU_TRY(e, cudaMemcpy(got, dev, 16, cudaMemcpyDeviceToHost), "delta self-check");
  if (st_h[0].code != RFK_OK || dg_h[0] != o.digest || memcmp(got, next, 16))
    return rf__fail(e, RF_ERR_KERNEL, "the delta kernels' self-check on this GPU failed: status %d, digest %016llx "
                    "(want %016llx), bytes %s", (int)st_h[0].code, (unsigned long long)dg_h[0],
                    (unsigned long long)o.digest, memcmp(got, next, 16) ? "differ" : "equal");
  return RF_OK;
}

int rf__cuda_idle(rf_engine *e, uint32_t ms, char *err, size_t errlen)
{
  struct rf__cuda *cu = e->cu;
  if (!cu->ev || !cu->n_ev) return 0;
  uint64_t t0 = rf__now_ns();
  for (;;) {
    cudaError_t c = cudaEventQuery(cu->ev[cu->n_ev - 1]);
    if (c == cudaSuccess) return 0;
    if (c != cudaErrorNotReady) {
      snprintf(err, errlen, "the last push's staging: %s", cudaGetErrorString(c));
      return -1;
    }
    if (rf__past(t0, ms)) {
      snprintf(err, errlen, "the last push's staging is still running after %u ms", ms);
      return -1;
    }
  }
}

const rf__mem rf__mem_cuda = {.device = 1, .alloc = alloc, .free = free_dev, .alloc_reg = alloc_reg, .free_reg = free_reg,
                              .alloc_shared = alloc_shared, .free_shared = free_shared, .check = check_memory,
                              .refresh = refresh, .apply = apply, .warm = warm, .finalize = finalize,
                              .publish = publish};
