/* gpu_cuda.c: gpu.h over the CUDA runtime (driver calls through cudaGetDriverEntryPointByVersion). */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "gpu.h"

static cudaError_t last;

static int ok(cudaError_t c)
{
  if (c != cudaSuccess) last = c;
  return c == cudaSuccess ? 0 : -1;
}

const char *rf_gpu_error(void) { return cudaGetErrorString(last); }

int rf_gpu_devices(void)
{
  int n = 0;
  cudaError_t c = cudaGetDeviceCount(&n);
  if (c != cudaSuccess) {
    last = c;
    cudaGetLastError();
    return 0;
  }
  return n;
}

int rf_gpu_use(int dev) { return ok(cudaSetDevice(dev)); }

void *rf_gpu_malloc(size_t n)
{
  void *p = NULL;
  return ok(cudaMalloc(&p, n)) ? NULL : p;
}

void rf_gpu_free(void *p) { cudaFree(p); }
int rf_gpu_put(void *d, const void *h, size_t n) { return ok(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice)); }
int rf_gpu_get(void *h, const void *d, size_t n) { return ok(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost)); }
int rf_gpu_fill(void *d, int b, size_t n) { return ok(cudaMemset(d, b, n)); }

void *rf_gpu_stream(void)
{
  cudaStream_t s;
  return ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) ? NULL : s;
}

int rf_gpu_copy_async(void *d, const void *s, size_t n, void *st)
{
  return ok(cudaMemcpyAsync(d, s, n, cudaMemcpyDeviceToDevice, st));
}

int rf_gpu_busy(void *s)
{
  cudaError_t c = cudaStreamQuery(s);
  if (c == cudaErrorNotReady) return 1;
  return ok(c) ? -1 : 0;
}

int rf_gpu_sync(void *s) { return ok(cudaStreamSynchronize(s)); }
int rf_gpu_capture(void *s) { return ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed)); }

int rf_gpu_launch_capture(void *s)
{
  cudaGraph_t g;
  cudaGraphExec_t x;
  if (ok(cudaStreamEndCapture(s, &g))) return -1;
  if (ok(cudaGraphInstantiate(&x, g, 0))) return -1;
  int r = ok(cudaGraphLaunch(x, s));
  cudaGraphExecDestroy(x); /* released once the launch finishes */
  cudaGraphDestroy(g);
  return r;
}

void *rf_gpu_vmm_malloc(size_t n)
{
  typedef CUresult (*create_fn)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long);
  typedef CUresult (*reserve_fn)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
  typedef CUresult (*map_fn)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
  typedef CUresult (*access_fn)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
  typedef CUresult (*gran_fn)(size_t *, const CUmemAllocationProp *, CUmemAllocationGranularity_flags);
  create_fn create;
  reserve_fn reserve;
  map_fn map;
  access_fn access;
  gran_fn gran;
  enum cudaDriverEntryPointQueryResult q;
  if (cudaGetDriverEntryPointByVersion("cuMemCreate", (void **)&create, 12000, cudaEnableDefault, &q) ||
      cudaGetDriverEntryPointByVersion("cuMemAddressReserve", (void **)&reserve, 12000, cudaEnableDefault, &q) ||
      cudaGetDriverEntryPointByVersion("cuMemMap", (void **)&map, 12000, cudaEnableDefault, &q) ||
      cudaGetDriverEntryPointByVersion("cuMemSetAccess", (void **)&access, 12000, cudaEnableDefault, &q) ||
      cudaGetDriverEntryPointByVersion("cuMemGetAllocationGranularity", (void **)&gran, 12000, cudaEnableDefault, &q))
    return NULL;
  int dev = 0;
  cudaGetDevice(&dev);
  CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                              .location = {.type = CU_MEM_LOCATION_TYPE_DEVICE, .id = dev}};
  size_t g = 0;
  if (gran(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)) return NULL;
  size_t sz = (n + g - 1) / g * g;
  CUmemGenericAllocationHandle h;
  CUdeviceptr p;
  if (create(&h, sz, &prop, 0) || reserve(&p, sz, 0, 0, 0) || map(p, sz, 0, h, 0)) return NULL;
  CUmemAccessDesc a = {.location = prop.location, .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
  if (access(p, sz, &a, 1)) return NULL;
  return (void *)(uintptr_t)p;
}

double rf_gpu_copy_gbps(int src_dev, int dst_dev, size_t total, size_t chunk, int streams)
{
  /* the physical peer of a push: the same bytes, in the same chunks, from distinct source memory
   * (a reused source would be read from L2) into distinct destination memory */
  void *s = NULL, *d = NULL;
  cudaStream_t st[8] = {0};
  if (streams < 1) streams = 1;
  if (streams > 8) streams = 8;
  cudaSetDevice(src_dev);
  if (cudaMalloc(&s, total)) return 0;
  cudaMemset(s, 0x3c, total);
  cudaSetDevice(dst_dev);
  if (cudaMalloc(&d, total)) {
    cudaSetDevice(src_dev);
    cudaFree(s);
    return 0;
  }
  if (src_dev != dst_dev) {
    cudaDeviceEnablePeerAccess(src_dev, 0);
    cudaGetLastError();
  }
  for (int k = 0; k < streams; k++) cudaStreamCreateWithFlags(&st[k], cudaStreamNonBlocking);
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    int i = 0;
    cudaDeviceSynchronize();
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (size_t off = 0; off < total; off += chunk, i++) {
      size_t n = total - off < chunk ? total - off : chunk;
      cudaStream_t q = st[i % streams];
      if (src_dev == dst_dev) cudaMemcpyAsync((char *)d + off, (char *)s + off, n, cudaMemcpyDeviceToDevice, q);
      else cudaMemcpyPeerAsync((char *)d + off, dst_dev, (char *)s + off, src_dev, n, q);
    }
    cudaDeviceSynchronize();
    clock_gettime(CLOCK_MONOTONIC, &b);
    double t = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    if (total / t / 1e9 > best) best = total / t / 1e9;
  }
  for (int k = 0; k < streams; k++) cudaStreamDestroy(st[k]);
  cudaFree(d);
  cudaSetDevice(src_dev);
  cudaFree(s);
  return best;
}
