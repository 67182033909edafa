/* cuda_none.c: the CUDA hooks of a build without CUDA. RF_MEM_CUDA engines are refused at open
 * with a clear error; nothing else here is reachable. */
#include <stdio.h>

#include "internal.h"

rf_status rf__cuda_open(rf_engine *e)
{
  return rf__fail(e, RF_ERR_CUDA, "RF_MEM_CUDA: librefit was built without CUDA (configure found no nvcc)");
}
void rf__cuda_close(rf_engine *e) { (void)e; }
rf_status rf__cuda_alloc_arena(rf_engine *e, size_t bytes, uint8_t **out)
{
  (void)bytes;
  *out = NULL;
  return rf__cuda_open(e);
}
rf_status rf__cuda_check_memory(rf_engine *e, const void *ptr, size_t bytes, const char *what)
{
  (void)ptr, (void)bytes, (void)what;
  return rf__cuda_open(e);
}
rf_status rf__cuda_stage_op(rf_engine *e, const rfk_shape *sh, const rfk_item *items, int count, void *stream,
                            const char *what)
{
  (void)sh, (void)items, (void)count, (void)stream, (void)what;
  return rf__cuda_open(e);
}
rf_status rf__cuda_group_done(rf_engine *e, uint32_t k, void *stream)
{
  (void)k, (void)stream;
  return rf__cuda_open(e);
}
int rf__cuda_group_ready(rf_engine *e, uint32_t k, char *err, size_t errlen)
{
  (void)e, (void)k;
  snprintf(err, errlen, "librefit was built without CUDA");
  return -1;
}
rf_status rf__cuda_publish(rf_engine *e, uint64_t v)
{
  (void)v;
  return rf__cuda_open(e);
}
rf_status rf__cuda_stream_wait(rf_engine *e, uint64_t v, void *stream)
{
  (void)v, (void)stream;
  return rf__cuda_open(e);
}
rf_status rf__cuda_refresh(rf_engine *e, const rf_refresh *steps, const rfk_mla_absorb *items, const rfk_mla_layout *y,
                           uint32_t n)
{
  (void)steps, (void)items, (void)y, (void)n;
  return rf__cuda_open(e);
}
