/* cuda_none.c: the CUDA hooks of a build without CUDA. RF_MEM_CUDA engines are refused at open
 * (rf__cuda_open) with a clear error, so nothing else here, and nothing of rf__mem_cuda but its
 * device flag, is reachable. */
#include <stdio.h>

#include "internal.h"

rf_status rf__cuda_open(rf_engine *e)
{
  return rf__fail(e, RF_ERR_CUDA, "RF_MEM_CUDA: librefit was built without CUDA (configure found no nvcc)");
}
void rf__cuda_close(rf_engine *e) { (void)e; }
rf_status rf__cuda_groups(rf_engine *e, uint32_t groups)
{
  (void)groups;
  return rf__cuda_open(e);
}
rf_status rf__cuda_stage_op(rf_engine *e, const rfk_shape *sh, const rfk_item *items, int count, void *stream,
                            const char *what, uint64_t version)
{
  (void)sh, (void)items, (void)count, (void)stream, (void)what, (void)version;
  return rf__cuda_open(e);
}
rf_status rf__cuda_group_done(rf_engine *e, uint32_t k, void *stream)
{
  (void)k, (void)stream;
  return rf__cuda_open(e);
}
int rf__cuda_group_ready(rf_engine *e, uint32_t k, uint32_t gid, uint32_t layer, char *err, size_t errlen,
                         uint64_t *stage_ns)
{
  (void)e, (void)k, (void)gid, (void)layer, (void)stage_ns;
  snprintf(err, errlen, "librefit was built without CUDA");
  return -1;
}
rf_status rf__cuda_stream_wait(rf_engine *e, uint64_t v, void *stream)
{
  (void)v, (void)stream;
  return rf__cuda_open(e);
}
rf_status rf__cuda_delta_scratch(rf_engine *e, const rfk_delta_region *r, const uint32_t *first, uint32_t groups)
{
  (void)r, (void)first, (void)groups;
  return rf__cuda_open(e);
}
rf_status rf__cuda_delta_encode(rf_engine *e, const rfk_delta_region *r, uint32_t n, rfk_delta_out *out, void *stream,
                                uint64_t version)
{
  (void)r, (void)n, (void)out, (void)stream, (void)version;
  return rf__cuda_open(e);
}
int rf__cuda_idle(rf_engine *e, uint32_t ms, char *err, size_t errlen)
{
  (void)e, (void)ms;
  snprintf(err, errlen, "librefit was built without CUDA");
  return -1;
}
const rf__mem rf__mem_cuda = {.device = 1};
