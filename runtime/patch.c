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

/* the patch area's state (rf_receiver's pa): only this file reads or writes it */
struct rf__patch {
  const rf_receiver *rv;
  const rf__mem *mem;        /* the area, statuses and digests come from it and go back to it */
  uint8_t *area;             /* [rv->patch_bytes] host or device, registered */
  void *area_memh;
  uint8_t *dir;              /* [16 x n] host, registered: per write u64 patch bytes, u64 digest */
  void *dir_memh;
  uint32_t n;                /* writes this receiver gets, in peer order then table order */
  const rf_recv_write *rw;   /* [n] the plan's recv_writes rows of this receiver (write id, peer), checked at open */
  uint32_t *first;           /* [peer_count + 1] each peer's first */
  rfk_delta_target *tgt;     /* [n] patch, dst, n, esize fixed at listen; len per version */
  rfk_delta_span *span;      /* [n] the destination ranges */
  rfk_delta_target *vt;      /* [n] this version's patches (len > 0) */
  rfk_delta_span *vs;        /* [n] this version's digested ranges */
  uint32_t *vt_i, *vs_i;     /* [n] their index into w */
  rfk_delta_status *st, *st_dev; /* [n] apply statuses (host; CUDA: and device) */
  uint64_t *dg, *dg_dev;     /* [n] digests */
  uint64_t bytes;            /* patch bytes of the last rf__patch_apply */
};

static uint64_t rd64(const uint8_t *b) { uint64_t v; memcpy(&v, b, 8); return v; }

rf_status rf__patch_open(rf_engine *e, const rf_receiver *rv, void *const *dst_ptr, rf__patch **out)
{
  const rf_plan *p = e->p;
  rf__patch *pa = calloc(1, sizeof *pa);
  if (!(*out = pa)) return rf__fail(e, RF_ERR_NOMEM, "patch area state");
  pa->rv = rv;
  pa->mem = e->mem;
  uint64_t dir = rf__dir_bytes(p, e->cfg.rank); /* an entry per write it receives */
  uint32_t n = rv->write_count, np = rv->peer_count;
  pa->n = n;
  pa->first = calloc(np + 1, sizeof *pa->first);
  pa->tgt = calloc(n ? n : 1, sizeof *pa->tgt);
  pa->vt = calloc(n ? n : 1, sizeof *pa->vt);
  pa->span = calloc(n ? n : 1, sizeof *pa->span);
  pa->vs = calloc(n ? n : 1, sizeof *pa->vs);
  pa->vt_i = calloc(n ? n : 1, sizeof *pa->vt_i);
  pa->vs_i = calloc(n ? n : 1, sizeof *pa->vs_i);
  if (!pa->first || !pa->tgt || !pa->vt || !pa->span || !pa->vs || !pa->vt_i ||
      !pa->vs_i)
    return rf__fail(e, RF_ERR_NOMEM, "patch area tables");
  /* the plan's list of them (recv_writes, gen/index.lua): peer order, then table order; each
   * checked to be a write to this receiver from that peer, with its patch slot inside the area */
  if ((uint64_t)rv->write_first + n > p->n_recv_writes)
    return rf__fail(e, RF_ERR_ARG, "plan %s: receiver %u's %u writes lie outside the table of received writes", p->name,
                    e->cfg.rank, n);
  const rf_recv_write *rw = pa->rw = &p->recv_writes[rv->write_first];
  for (uint32_t k = 0; k <= np; k++) {
    uint32_t f = k < np ? p->peers[rv->peer_first + k].write_first - rv->write_first : n;
    if (f > n || (k > 0 && f != pa->first[k - 1] + p->peers[rv->peer_first + k - 1].writes))
      return rf__fail(e, RF_ERR_ARG, "plan %s: receiver %u's peer %u does not start where the previous one's writes end",
                      p->name, e->cfg.rank, k);
    pa->first[k] = f;
  }
  for (uint32_t i = 0; i < n; i++) {
    uint32_t k = rw[i].peer, wi = rw[i].write;
    const rf_write *w = wi < p->n_writes ? &p->writes[wi] : NULL;
    const rf_rank *rk = k < np ? &p->ranks[p->peers[rv->peer_first + k].trainer] : NULL;
    if (!w || !rk || i < pa->first[k] || i >= pa->first[k + 1] || w->receiver != e->cfg.rank || wi < rk->write_first ||
        wi - rk->write_first >= rk->write_count || w->dst - rv->dst_first >= rv->dst_count ||
        w->patch_off + w->patch_cap > rv->patch_bytes)
      return rf__fail(e, RF_ERR_ARG, "plan %s: write %u listed for receiver %u is not its peer's write to it, or its patch "
                      "slot lies outside the patch area", p->name, wi, e->cfg.rank);
    const rf_dst_tensor *d = &p->dst[w->dst];
    uint8_t *dst = (uint8_t *)dst_ptr[w->dst - rv->dst_first] + w->dst_off;
    pa->span[i] = (rfk_delta_span){dst, w->len};
    pa->tgt[i] = (rfk_delta_target){.patch = NULL, .dst = dst, .n = w->len, .esize = (int)rf_dtype_size(d->dtype)};
  }
  const rf__mem *m = e->mem;
  size_t ns = (n ? n : 1) * sizeof *pa->st, nd = (n ? n : 1) * sizeof *pa->dg;
  RF_CHECK(m->alloc_reg(e, rv->patch_bytes, (void **)&pa->area, &pa->area_memh, "patch area"));
  RF_CHECK(m->alloc(e, ns, (void **)&pa->st_dev, "patch statuses"));
  RF_CHECK(m->alloc(e, nd, (void **)&pa->dg_dev, "region digests"));
  RF_CHECK(m->alloc_shared(e, ns, (void **)&pa->st, NULL, "patch statuses"));
  RF_CHECK(m->alloc_shared(e, nd, (void **)&pa->dg, NULL, "region digests"));
  if (n) RF_CHECK(m->warm(e, pa->st_dev, pa->st, pa->dg_dev, pa->dg));
  for (uint32_t i = 0; i < n; i++) pa->tgt[i].patch = pa->area + p->writes[pa->rw[i].write].patch_off;
  RF_CHECK(rf__ucx_alloc(e, dir ? dir : 16, (void **)&pa->dir, &pa->dir_memh));
  memset(pa->dir, 0, dir);
  return RF_OK;
}

void rf__patch_close(rf_engine *e, rf__patch *pa)
{
  if (!pa) return;
  if (e->ux && pa->area) pa->mem->free_reg(e, pa->area, pa->area_memh);
  if (e->ux && pa->dir_memh) rf__ucx_unmap(e, pa->dir_memh); /* frees the directory too */
  pa->mem->free(e, pa->st_dev);
  pa->mem->free(e, pa->dg_dev);
  pa->mem->free_shared(e, pa->st);
  pa->mem->free_shared(e, pa->dg);
  free(pa->first);
  free(pa->tgt);
  free(pa->vt);
  free(pa->span);
  free(pa->vs);
  free(pa->vt_i);
  free(pa->vs_i);
  free(pa);
}

void rf__patch_arm(rf__patch *pa)
{
  if (pa) memset(pa->dir, 0, 16 * (size_t)pa->n);
}

uint32_t rf__patch_write(const rf__patch *pa, uint32_t i) { return pa->rw[i].write; }
uint32_t rf__patch_first(const rf__patch *pa, uint32_t k) { return pa->first[k]; }
uint8_t *rf__patch_base(const rf__patch *pa) { return pa->area; }
uint8_t *rf__patch_dir(const rf__patch *pa) { return pa->dir; }

void rf__patch_areas(const rf__patch *pa, rf__blob_entry *area, void **area_memh, rf__blob_entry *dir, void **dir_memh)
{
  area->addr = (uint64_t)(uintptr_t)pa->area;
  area->bytes = pa->rv->patch_bytes;
  *area_memh = pa->area_memh;
  dir->addr = (uint64_t)(uintptr_t)pa->dir;
  dir->bytes = 16 * (uint64_t)pa->n;
  *dir_memh = pa->dir_memh;
}

/* "'name' (write 17, bytes [0, +4096))" */
static int where(const rf_engine *e, const rf__patch *pa, uint32_t i, char *buf, size_t n)
{
  const rf_write *w = &e->p->writes[pa->rw[i].write];
  return snprintf(buf, n, "'%s' (write %u, bytes [%llu, +%llu))", e->p->dst[w->dst].name, pa->rw[i].write,
                  (unsigned long long)w->dst_off, (unsigned long long)w->len);
}

int rf__patch_done(rf_engine *e, const rf__patch *pa, const rf_receiver *rv, uint32_t k, uint64_t version, uint64_t total,
                   uint64_t base, uint64_t complete, char *why, size_t n)
{
  uint32_t rank = e->p->peers[rv->peer_first + k].trainer;
  char at[200];
  if (!pa) {
    snprintf(why, n, "trainer rank %u sent version %llu as patches, but plan %s has no patch areas", rank,
             (unsigned long long)version, e->p->name);
    return -1;
  }
  if (base == 0 || base != complete) {
    snprintf(why, n, "trainer rank %u sent version %llu as patches to version %llu, but this receiver's complete version "
             "is %llu", rank, (unsigned long long)version, (unsigned long long)base, (unsigned long long)complete);
    return -1;
  }
  uint64_t sum = 0;
  for (uint32_t i = pa->first[k]; i < pa->first[k + 1]; i++) {
    uint64_t size = rd64(pa->dir + 16 * (size_t)i), cap = e->p->writes[pa->rw[i].write].patch_cap;
    if (size && (size < RFK_DELTA_HEADER || size > cap)) {
      where(e, pa, i, at, sizeof at);
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

int rf__patch_apply(rf_engine *e, rf__patch *pa, const uint8_t *peer_delta, uint64_t version, uint64_t *bytes,
                    uint32_t *bad, char *why, size_t n)
{
  const rf_plan *p = e->p;
  uint32_t nt = 0, ns = 0;
  pa->bytes = 0;
  for (uint32_t i = 0; i < pa->n; i++) {
    if (!peer_delta[pa->rw[i].peer]) continue;
    uint64_t size = rd64(pa->dir + 16 * (size_t)i);
    if (size) { /* a patch; 0: the region came dense, its digest is checked all the same */
      pa->vt[nt] = pa->tgt[i];
      pa->vt[nt].len = size;
      pa->vt_i[nt++] = i;
      pa->bytes += size;
    }
    pa->vs[ns] = pa->span[i];
    pa->vs_i[ns++] = i;
  }
  *bytes = pa->bytes;
  if (pa->mem->apply(e, pa->vt, nt, pa->st_dev, pa->st, pa->vs, ns, pa->dg_dev, pa->dg) != RF_OK) {
    *bad = RF_NONE;
    snprintf(why, n, "version %llu: %s", (unsigned long long)version, e->err);
    return -1;
  }
  char at[200], text[160];
  for (uint32_t j = 0; j < nt; j++) {
    if (pa->st[j].code == RFK_OK) continue;
    uint32_t i = pa->vt_i[j];
    *bad = pa->rw[i].peer;
    where(e, pa, i, at, sizeof at);
    rfk_delta_format(&pa->st[j], text, sizeof text);
    snprintf(why, n, "trainer rank %u's patch of version %llu for %s is malformed: %s",
             p->peers[pa->rv->peer_first + *bad].trainer, (unsigned long long)version, at, text);
    return -1;
  }
  for (uint32_t j = 0; j < ns; j++) {
    uint32_t i = pa->vs_i[j];
    uint64_t want = rd64(pa->dir + 16 * (size_t)i + 8);
    if (pa->dg[j] == want) continue;
    *bad = pa->rw[i].peer;
    where(e, pa, i, at, sizeof at);
    snprintf(why, n, "trainer rank %u's region %s of version %llu: digest %016llx after %s, the trainer's %016llx",
             p->peers[pa->rv->peer_first + *bad].trainer, at, (unsigned long long)version, (unsigned long long)pa->dg[j],
             rd64(pa->dir + 16 * (size_t)i) ? "the patch" : "its dense write", (unsigned long long)want);
    return -1;
  }
  return 0;
}

void rf__patch_changed(const rf_engine *e, const rf__patch *pa, const uint8_t *peer_delta, uint8_t *changed)
{
  for (uint32_t i = 0; i < pa->n; i++) {
    /* a patch rf__patch_apply accepted is its header alone exactly when no chunk changed (it then
     * wrote nothing); 0: the region came dense */
    uint64_t size = peer_delta[pa->rw[i].peer] ? rd64(pa->dir + 16 * (size_t)i) : 0;
    if (size != RFK_DELTA_HEADER) changed[e->p->writes[pa->rw[i].write].dst - pa->rv->dst_first] = 1;
  }
}
