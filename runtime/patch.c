/* patch.c: the receiver's patch area in delta plans (DESIGN.md section 5c, refit_plan.h).
 *
 * Each write this receiver gets has a patch slot in the area (host or device memory, the table's
 * patch_off and patch_cap) and an entry in the directory (host memory, peer order then table order:
 * u64 patch bytes, u64 digest of the region's new bytes). A trainer that pushes a version as patches
 * puts each region's patch into its slot (or, when the patch overflowed the slot, the region's new
 * bytes straight into the destination and 0 into the entry), its directory part, flushes, and sends
 * DONE { mode delta, value = patch bytes, hash = base version }. Nothing here is trusted: the DONE is
 * checked against the directory and the complete version when it arrives, every patch is validated
 * in full before any byte of its region is written (kernels/delta.h), and every region's bytes after
 * the apply must have the digest the trainer computed from its dense encoding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static uint64_t rd64(const uint8_t *b) { uint64_t v; memcpy(&v, b, 8); return v; }

rf_status rf__patch_open(rf_engine *e)
{
  const rf_plan *p = e->p;
  const rf_receiver *rv = e->rv;
  uint64_t dir = rf__dir_bytes(p, e->cfg.rank); /* an entry per write it receives */
  uint32_t n = rv->write_count, np = rv->peer_count;
  e->pa.n = n;
  e->pa.w = calloc(n ? n : 1, sizeof *e->pa.w);
  e->pa.peer = calloc(n ? n : 1, sizeof *e->pa.peer);
  e->pa.first = calloc(np + 1, sizeof *e->pa.first);
  e->pa.tgt = calloc(n ? n : 1, sizeof *e->pa.tgt);
  e->pa.vt = calloc(n ? n : 1, sizeof *e->pa.vt);
  e->pa.span = calloc(n ? n : 1, sizeof *e->pa.span);
  e->pa.vs = calloc(n ? n : 1, sizeof *e->pa.vs);
  e->pa.vt_i = calloc(n ? n : 1, sizeof *e->pa.vt_i);
  e->pa.vs_i = calloc(n ? n : 1, sizeof *e->pa.vs_i);
  if (!e->pa.w || !e->pa.peer || !e->pa.first || !e->pa.tgt || !e->pa.vt || !e->pa.span || !e->pa.vs || !e->pa.vt_i ||
      !e->pa.vs_i)
    return rf__fail(e, RF_ERR_NOMEM, "patch area tables");
  /* the plan's list of them (recv_writes, gen/index.lua): peer order, then table order; each
   * checked to be a write to this receiver from that peer, with its patch slot inside the area */
  if ((uint64_t)rv->write_first + n > p->n_recv_writes)
    return rf__fail(e, RF_ERR_ARG, "plan %s: receiver %u's %u writes lie outside the table of received writes", p->name,
                    e->cfg.rank, n);
  const rf_recv_write *rw = &p->recv_writes[rv->write_first];
  for (uint32_t k = 0; k <= np; k++) {
    uint32_t f = k < np ? p->peers[rv->peer_first + k].write_first - rv->write_first : n;
    if (f > n || (k > 0 && f != e->pa.first[k - 1] + p->peers[rv->peer_first + k - 1].writes))
      return rf__fail(e, RF_ERR_ARG, "plan %s: receiver %u's peer %u does not start where the previous one's writes end",
                      p->name, e->cfg.rank, k);
    e->pa.first[k] = f;
  }
  for (uint32_t i = 0; i < n; i++) {
    uint32_t k = rw[i].peer, wi = rw[i].write;
    const rf_write *w = wi < p->n_writes ? &p->writes[wi] : NULL;
    const rf_rank *rk = k < np ? &p->ranks[p->peers[rv->peer_first + k].trainer] : NULL;
    if (!w || !rk || i < e->pa.first[k] || i >= e->pa.first[k + 1] || w->receiver != e->cfg.rank || wi < rk->write_first ||
        wi - rk->write_first >= rk->write_count || w->dst - rv->dst_first >= rv->dst_count ||
        w->patch_off + w->patch_cap > rv->patch_bytes)
      return rf__fail(e, RF_ERR_ARG, "plan %s: write %u listed for receiver %u is not its peer's write to it, or its patch "
                      "slot lies outside the patch area", p->name, wi, e->cfg.rank);
    const rf_dst_tensor *d = &p->dst[w->dst];
    uint8_t *dst = (uint8_t *)e->dst_ptr[w->dst - rv->dst_first] + w->dst_off;
    e->pa.w[i] = wi;
    e->pa.peer[i] = k;
    e->pa.span[i] = (rfk_delta_span){dst, w->len};
    e->pa.tgt[i] = (rfk_delta_target){.patch = NULL, .dst = dst, .n = w->len, .esize = (int)rf_dtype_size(d->dtype)};
  }
  if (e->cfg.mem == RF_MEM_CUDA) {
    RF_CHECK(rf__cuda_alloc(e, rv->patch_bytes, (void **)&e->pa.area, "patch area (cudaMalloc)"));
    RF_CHECK(rf__cuda_alloc(e, (size_t)n * sizeof *e->pa.st, (void **)&e->pa.st_dev, "patch statuses"));
    RF_CHECK(rf__cuda_alloc(e, (size_t)n * 8, (void **)&e->pa.dg_dev, "region digests"));
    RF_CHECK(rf__cuda_alloc_mapped(e, (size_t)n * sizeof *e->pa.st, (void **)&e->pa.st, NULL, "patch statuses"));
    RF_CHECK(rf__cuda_alloc_mapped(e, (size_t)n * 8, (void **)&e->pa.dg, NULL, "region digests"));
    RF_CHECK(rf__ucx_map(e, e->pa.area, rv->patch_bytes, &e->pa.area_memh));
    if (n) RF_CHECK(rf__cuda_delta_warm(e, e->pa.st_dev, e->pa.st, e->pa.dg_dev, e->pa.dg));
  } else {
    e->pa.st = calloc(n ? n : 1, sizeof *e->pa.st);
    e->pa.dg = calloc(n ? n : 1, sizeof *e->pa.dg);
    if (!e->pa.st || !e->pa.dg) return rf__fail(e, RF_ERR_NOMEM, "patch statuses");
    RF_CHECK(rf__ucx_alloc(e, rv->patch_bytes, (void **)&e->pa.area, &e->pa.area_memh));
  }
  for (uint32_t i = 0; i < n; i++) e->pa.tgt[i].patch = e->pa.area + p->writes[e->pa.w[i]].patch_off;
  RF_CHECK(rf__ucx_alloc(e, dir ? dir : 16, (void **)&e->pa.dir, &e->pa.dir_memh));
  memset(e->pa.dir, 0, dir);
  return RF_OK;
}

void rf__patch_close(rf_engine *e)
{
  if (e->ux && e->pa.area_memh) rf__ucx_unmap(e, e->pa.area_memh); /* host: frees the area too */
  if (e->ux && e->pa.dir_memh) rf__ucx_unmap(e, e->pa.dir_memh);
  if (e->cfg.mem != RF_MEM_CUDA) { /* CUDA: cuda.c frees its buffers */
    free(e->pa.st);
    free(e->pa.dg);
  }
  free(e->pa.w);
  free(e->pa.peer);
  free(e->pa.first);
  free(e->pa.tgt);
  free(e->pa.vt);
  free(e->pa.span);
  free(e->pa.vs);
  free(e->pa.vt_i);
  free(e->pa.vs_i);
  memset(&e->pa, 0, sizeof e->pa);
}

/* "'name' (write 17, bytes [0, +4096))" */
static int where(const rf_engine *e, uint32_t i, char *buf, size_t n)
{
  const rf_write *w = &e->p->writes[e->pa.w[i]];
  return snprintf(buf, n, "'%s' (write %u, bytes [%llu, +%llu))", e->p->dst[w->dst].name, e->pa.w[i],
                  (unsigned long long)w->dst_off, (unsigned long long)w->len);
}

int rf__patch_done(rf_engine *e, uint32_t k, uint64_t version, uint64_t total, uint64_t base, char *why, size_t n)
{
  uint32_t rank = e->p->peers[e->rv->peer_first + k].trainer;
  char at[200];
  if (!e->pa.area) {
    snprintf(why, n, "trainer rank %u sent version %llu as patches, but plan %s has no patch areas", rank,
             (unsigned long long)version, e->p->name);
    return -1;
  }
  if (base == 0 || base != e->v_complete) {
    snprintf(why, n, "trainer rank %u sent version %llu as patches to version %llu, but this receiver's complete version "
             "is %llu", rank, (unsigned long long)version, (unsigned long long)base, (unsigned long long)e->v_complete);
    return -1;
  }
  uint64_t sum = 0;
  for (uint32_t i = e->pa.first[k]; i < e->pa.first[k + 1]; i++) {
    uint64_t size = rd64(e->pa.dir + 16 * (size_t)i), cap = e->p->writes[e->pa.w[i]].patch_cap;
    if (size && (size < RFK_DELTA_HEADER || size > cap)) {
      where(e, i, at, sizeof at);
      snprintf(why, n, "trainer rank %u's patch of version %llu for %s is %llu bytes, its slot holds %llu (at least %u)",
               rank, (unsigned long long)version, at, (unsigned long long)size, (unsigned long long)cap, RFK_DELTA_HEADER);
      return -1;
    }
    sum += size;
  }
  if (sum != total) {
    snprintf(why, n, "trainer rank %u's directory lists %llu patch bytes for version %llu, its DONE says %llu", rank,
             (unsigned long long)sum, (unsigned long long)version, (unsigned long long)total);
    return -1;
  }
  return 0;
}

int rf__patch_apply(rf_engine *e, uint64_t version, uint32_t *bad, char *why, size_t n)
{
  const rf_plan *p = e->p;
  uint32_t nt = 0, ns = 0;
  e->pa.bytes = 0;
  for (uint32_t i = 0; i < e->pa.n; i++) {
    if (!e->peer_delta[e->pa.peer[i]]) continue;
    uint64_t size = rd64(e->pa.dir + 16 * (size_t)i);
    if (size) { /* a patch; 0: the region came dense, its digest is checked all the same */
      e->pa.vt[nt] = e->pa.tgt[i];
      e->pa.vt[nt].len = size;
      e->pa.vt_i[nt++] = i;
      e->pa.bytes += size;
    }
    e->pa.vs[ns] = e->pa.span[i];
    e->pa.vs_i[ns++] = i;
  }
  if (e->cfg.mem == RF_MEM_CUDA) {
    if (rf__cuda_delta_apply(e, e->pa.vt, nt, e->pa.st_dev, e->pa.st, e->pa.vs, ns, e->pa.dg_dev, e->pa.dg) != RF_OK) {
      *bad = RF_NONE;
      snprintf(why, n, "%s", e->err);
      return -1;
    }
  } else {
    int rc = rfk_ref_delta_apply(e->pa.vt, (int)nt, e->pa.st);
    if (rc == RFK_OK || rc == RFK_DELTA_MALFORMED) rc = rfk_ref_delta_digest(e->pa.vs, (int)ns, e->pa.dg);
    if (rc != RFK_OK && rc != RFK_DELTA_MALFORMED) {
      *bad = RF_NONE;
      snprintf(why, n, "applying patches of version %llu: %s", (unsigned long long)version, rfk_strerror(rc));
      return -1;
    }
  }
  char at[200], text[160];
  for (uint32_t j = 0; j < nt; j++) {
    if (e->pa.st[j].code == RFK_OK) continue;
    uint32_t i = e->pa.vt_i[j];
    *bad = e->pa.peer[i];
    where(e, i, at, sizeof at);
    rfk_delta_format(&e->pa.st[j], text, sizeof text);
    snprintf(why, n, "trainer rank %u's patch of version %llu for %s is malformed: %s",
             p->peers[e->rv->peer_first + *bad].trainer, (unsigned long long)version, at, text);
    return -1;
  }
  for (uint32_t j = 0; j < ns; j++) {
    uint32_t i = e->pa.vs_i[j];
    uint64_t want = rd64(e->pa.dir + 16 * (size_t)i + 8);
    if (e->pa.dg[j] == want) continue;
    *bad = e->pa.peer[i];
    where(e, i, at, sizeof at);
    snprintf(why, n, "trainer rank %u's region %s of version %llu: digest %016llx after %s, the trainer's %016llx",
             p->peers[e->rv->peer_first + *bad].trainer, at, (unsigned long long)version, (unsigned long long)e->pa.dg[j],
             rd64(e->pa.dir + 16 * (size_t)i) ? "the patch" : "its dense write", (unsigned long long)want);
    return -1;
  }
  return 0;
}
