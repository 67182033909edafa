/* cuda_none.c: the CUDA hooks of a build without CUDA. RF_MEM_CUDA engines are refused at open
 * with a clear error; nothing else here is reachable. */
#include "internal.h"

rf_status rf__cuda_open(rf_engine *e)
{
  return rf__fail(e, RF_ERR_CUDA, "RF_MEM_CUDA: librefit.a was built without CUDA (configure found no nvcc)");
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
rf_status rf__cuda_stage(rf_engine *e, uint32_t g, void *stream)
{
  (void)g, (void)stream;
  return rf__cuda_open(e);
}
int rf__cuda_group_ready(rf_engine *e, uint32_t g)
{
  (void)g;
  e->push_status = rf__cuda_open(e);
  return 0;
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
rf_status rf__cuda_refresh(rf_engine *e) { return rf__cuda_open(e); }
