/* gpu_none.c: gpu.h without CUDA: no devices, every call fails. */
#include "gpu.h"

int rf_gpu_devices(void) { return 0; }
int rf_gpu_use(int dev) { (void)dev; return -1; }
void *rf_gpu_malloc(size_t n) { (void)n; return 0; }
void rf_gpu_free(void *p) { (void)p; }
int rf_gpu_put(void *d, const void *h, size_t n) { (void)d, (void)h, (void)n; return -1; }
int rf_gpu_get(void *h, const void *d, size_t n) { (void)d, (void)h, (void)n; return -1; }
int rf_gpu_fill(void *d, int b, size_t n) { (void)d, (void)b, (void)n; return -1; }
void *rf_gpu_stream(void) { return 0; }
int rf_gpu_copy_async(void *d, const void *s, size_t n, void *st) { (void)d, (void)s, (void)n, (void)st; return -1; }
int rf_gpu_busy(void *s) { (void)s; return -1; }
int rf_gpu_sync(void *s) { (void)s; return -1; }
int rf_gpu_capture(void *s) { (void)s; return -1; }
int rf_gpu_launch_capture(void *s) { (void)s; return -1; }
void *rf_gpu_vmm_malloc(size_t n) { (void)n; return 0; }
const char *rf_gpu_error(void) { return "built without CUDA"; }
double rf_gpu_copy_gbps(int a, int b, size_t t, size_t c, int s) { (void)a, (void)b, (void)t, (void)c, (void)s; return 0; }
