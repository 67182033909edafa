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
rf_status rf__cuda_alloc(rf_engine *e, size_t bytes, void **dev, const char *what)
{
  (void)bytes, (void)what;
  *dev = NULL;
  return rf__cuda_open(e);
}
rf_status rf__cuda_alloc_mapped(rf_engine *e, size_t bytes, void **host, void **dev, const char *what)
{
  (void)bytes, (void)dev, (void)what;
  *host = NULL;
  return rf__cuda_open(e);
}
rf_status rf__cuda_delta_scratch(rf_engine *e, const rfk_delta_region *r, const uint32_t *first, uint32_t groups)
{
  (void)r, (void)first, (void)groups;
  return rf__cuda_open(e);
}
rf_status rf__cuda_delta_encode(rf_engine *e, const rfk_delta_region *r, uint32_t n, rfk_delta_out *out, void *stream)
{
  (void)r, (void)n, (void)out, (void)stream;
  return rf__cuda_open(e);
}
rf_status rf__cuda_delta_apply(rf_engine *e, const rfk_delta_target *t, uint32_t nt, rfk_delta_status *st_d,
                               rfk_delta_status *st_h, const rfk_delta_span *s, uint32_t ns, uint64_t *dg_d,
                               uint64_t *dg_h)
{
  (void)t, (void)nt, (void)st_d, (void)st_h, (void)s, (void)ns, (void)dg_d, (void)dg_h;
  return rf__cuda_open(e);
}
rf_status rf__cuda_delta_warm(rf_engine *e, rfk_delta_status *st_d, rfk_delta_status *st_h, uint64_t *dg_d,
                              uint64_t *dg_h)
{
  (void)st_d, (void)st_h, (void)dg_d, (void)dg_h;
  return rf__cuda_open(e);
}
int rf__cuda_idle(rf_engine *e, uint32_t ms, char *err, size_t errlen)
{
  (void)e, (void)ms;
  snprintf(err, errlen, "librefit was built without CUDA");
  return -1;
}
