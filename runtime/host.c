/* host.c: the memory backend of RF_MEM_HOST engines (internal.h, rf__mem). Buffers are host memory
 * (the ones peers reach come from UCX, so shared-memory transports can map them); the receiver's
 * patch apply, digests, refresh and finalize kernels run the C reference kernels on the calling thread. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static rf_status alloc(rf_engine *e, size_t bytes, void **ptr, const char *what)
{
  size_t n = (bytes ? bytes + 4095 : 4096) / 4096 * 4096;
  if (!(*ptr = aligned_alloc(4096, n))) return rf__fail(e, RF_ERR_NOMEM, "%s: %zu bytes", what, bytes);
  memset(*ptr, 0, n);
  return RF_OK;
}

static void free_host(rf_engine *e, void *ptr)
{
  (void)e;
  free(ptr);
}

static rf_status alloc_reg(rf_engine *e, size_t bytes, void **ptr, void **memh, const char *what)
{
  (void)what;
  RF_CHECK(rf__ucx_alloc(e, bytes ? bytes : 16, ptr, memh));
  memset(*ptr, 0, bytes);
  return RF_OK;
}

static void free_reg(rf_engine *e, void *ptr, void *memh)
{
  (void)ptr;
  if (memh) rf__ucx_unmap(e, memh); /* frees the memory UCX allocated */
}

static rf_status alloc_shared(rf_engine *e, size_t bytes, void **host, void **dev, const char *what)
{
  if (!(*host = calloc(1, bytes ? bytes : 16))) return rf__fail(e, RF_ERR_NOMEM, "%s: %zu bytes", what, bytes);
  if (dev) *dev = *host;
  return RF_OK;
}

static rf_status check(rf_engine *e, const void *ptr, size_t bytes, const char *what)
{
  (void)e, (void)ptr, (void)bytes, (void)what;
  return RF_OK;
}

static rf_status refresh(rf_engine *e, const rf_refresh *s, const rfk_mla_absorb *items, const rfk_mla_layout *y,
                         uint32_t n)
{
  for (uint32_t i = 0, j; i < n; i = j) {
    for (j = i + 1; j < n && !memcmp(&y[j], &y[i], sizeof y[i]) && (s[j].scale == RF_NONE) == (s[i].scale == RF_NONE); j++) {
    }
    int rc = rfk_ref_mla_absorb(items + i, (int)(j - i), s[i].scale != RF_NONE, &y[i]);
    if (rc) return rf__fail(e, RF_ERR_KERNEL, "refresh of layer %u's derived tensors: %s", s[i].layer, rfk_strerror(rc));
  }
  return RF_OK;
}

/* a malformed patch is not an error here: its status says so, and the caller names it */
static rf_status apply(rf_engine *e, const rfk_delta_target *t, uint32_t nt, rfk_delta_status *st_d,
                       rfk_delta_status *st_h, const rfk_delta_span *s, uint32_t ns, uint64_t *dg_d, uint64_t *dg_h)
{
  (void)st_d, (void)dg_d;
  int rc = rfk_ref_delta_apply(t, (int)nt, st_h);
  if (rc == RFK_OK || rc == RFK_DELTA_MALFORMED) rc = rfk_ref_delta_digest(s, (int)ns, dg_h);
  if (rc != RFK_OK && rc != RFK_DELTA_MALFORMED) return rf__fail(e, RF_ERR_KERNEL, "applying patches: %s", rfk_strerror(rc));
  return RF_OK;
}

static rf_status warm(rf_engine *e, rfk_delta_status *st_d, rfk_delta_status *st_h, uint64_t *dg_d, uint64_t *dg_h)
{
  (void)e, (void)st_d, (void)st_h, (void)dg_d, (void)dg_h;
  return RF_OK;
}

static rf_status finalize(rf_engine *e, const uint32_t *steps, uint32_t n, void *const *in, void *const *out, int warm,
                          uint32_t *bad)
{
  if (warm) return RF_OK; /* rf_listen: nothing to load */
  for (uint32_t i = 0; i < n; i++) { /* the reference, one step at a time: a failure names its step */
    const rf_finalize *s = &e->p->finalize[steps[i]];
    int rc = RFK_ERR_ARG;
    if (s->op == RF_FINOP_UE8M0_PACK) rc = rfk_ref_ue8m0_pack(in[i], out[i], s->groups, s->rows, s->cols);
    if (rc) {
      *bad = i;
      return rf__fail(e, RF_ERR_KERNEL, "kernel op %u over [%u, %lld, %lld]: %s", s->op, s->groups, (long long)s->rows,
                      (long long)s->cols, rfk_strerror(rc));
    }
  }
  return RF_OK;
}

static void publish(rf_engine *e, uint64_t v) { (void)e, (void)v; }

const rf__mem rf__mem_host = {.device = 0, .alloc = alloc, .free = free_host, .alloc_reg = alloc_reg, .free_reg = free_reg,
                              .alloc_shared = alloc_shared, .free_shared = free_host, .check = check, .refresh = refresh,
                              .apply = apply, .warm = warm, .finalize = finalize, .publish = publish};
