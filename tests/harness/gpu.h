/* gpu.h: the few CUDA calls the loopback job and the GPU tests need, behind a C API that builds
 * without CUDA (gpu_none.c: no devices). Streams are cudaStream_t as void*. */
#ifndef REFIT_GPU_H
#define REFIT_GPU_H

#include <stddef.h>

int rf_gpu_devices(void);                        /* 0 without CUDA or devices */
int rf_gpu_use(int dev);                         /* 0 on success */
void *rf_gpu_malloc(size_t n);                   /* cudaMalloc, NULL on failure */
void rf_gpu_free(void *p);
int rf_gpu_put(void *dev, const void *host, size_t n);
int rf_gpu_get(void *host, const void *dev, size_t n);
int rf_gpu_fill(void *dev, int byte, size_t n);
void *rf_gpu_stream(void);                       /* a new non-blocking stream */
int rf_gpu_copy_async(void *dst, const void *src, size_t n, void *stream);
int rf_gpu_busy(void *stream);                   /* 1 while work is pending, 0 idle, -1 error */
int rf_gpu_sync(void *stream);
int rf_gpu_capture(void *stream);                /* begin capturing into a graph */
int rf_gpu_launch_capture(void *stream);         /* end the capture, launch the graph on the stream */
/* n bytes of CUDA virtual memory (cuMemCreate + cuMemMap), as PyTorch's expandable segments use */
void *rf_gpu_vmm_malloc(size_t n);
const char *rf_gpu_error(void);                  /* the last CUDA error, as text */
/* copy bandwidth in GB/s (bytes copied per second): `total` bytes in chunks of `chunk` bytes from
 * distinct source memory, issued round-robin on `streams` streams (1..8); cudaMemcpy on one
 * device, cudaMemcpyPeer between two */
double rf_gpu_copy_gbps(int src_dev, int dst_dev, size_t total, size_t chunk, int streams);

#endif
