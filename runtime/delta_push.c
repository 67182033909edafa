/* delta_push.c: a trainer rank's delta encode (cfg.delta; DESIGN.md section 5c, refit_plan.h).
 *
 * Every slot keeps its region's previous encoding. While a push encodes (its base is the version the
 * slots held when it started, nonzero), staging writes a group's new encoding to the group's image
 * in the scratch and the encode makes each region's patch and updates the slot; once a group is
 * ready its slots hold the new bytes and its patches are made. Regions are the rank's distinct slot
 * ranges, in table order. trainer.c decides which targets get patches and puts them: this file
 * owns the scratch, the patch buffer, the encode results and the directory entries. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* the rank's delta state (rf__trainer's dt): only this file reads or writes it */
struct rf__delta {
  const rf__mem *mem;        /* the buffers come from it and go back to it */
  uint8_t *scratch;          /* [rk->scratch_bytes] host or device */
  uint8_t *patch;            /* [rk->patch_bytes] host or device, registered: one patch slot per region */
  void *patch_memh;
  uint8_t *dir;              /* [16 x write_count] host, registered: the directory entries each target puts */
  void *dir_memh;
  rfk_delta_region *reg;     /* [n_reg]: next (in the scratch), old (the slot), its patch slot, cap (patch_cap) */
  uint32_t n_reg;
  uint32_t *of_write;        /* [write_count] region of each write of the rank */
  uint32_t *grp;             /* [group_count + 1] first region of each group */
  uint64_t *lo;              /* [group_count] slot offset of each group's scratch image */
  rfk_delta_out *out;        /* [n_reg] host (CUDA: mapped); a group's are valid once it is ready */
  void *out_dev;             /* CUDA: out as the device sees it */
  uint64_t slots_version;    /* the version every slot holds: 0 when unknown (none staged whole yet, or
                                the last push's staging did not finish) */
  uint64_t base;             /* this push: slots_version at its start; nonzero: its groups stage into the
                                scratch and are encoded, and targets whose complete version it is get patches */
};

/* the rank's regions (distinct slot ranges, table order), each group's scratch image, the patch
 * buffer and the directory entries; checks that the tables agree with themselves */
rf_status rf__delta_open(rf_engine *e, const rf_rank *rk, uint8_t *arena, rf__delta **dp)
{
  const rf_plan *p = e->p;
  if (!p->delta_ppm)
    return rf__fail(e, RF_ERR_ARG, "rf_config.delta: plan %s has no patch areas (its plan file sets no delta = { budget = B })",
                    p->name);
  if (e->cfg.direct)
    return rf__fail(e, RF_ERR_ARG, "rf_config.delta and rf_config.direct exclude each other: delta keeps every region's "
                    "previous version in its slot, which direct writes do not stage");
  uint32_t nw = rk->write_count ? rk->write_count : 1, ng = rk->group_count;
  rf__delta *d = calloc(1, sizeof *d);
  if (!(*dp = d)) return rf__fail(e, RF_ERR_NOMEM, "delta state");
  d->mem = e->mem;
  d->of_write = calloc(nw, sizeof *d->of_write);
  d->grp = calloc(ng + 1, sizeof *d->grp);
  d->lo = calloc(ng ? ng : 1, sizeof *d->lo);
  if (!d->of_write || !d->grp || !d->lo)
    return rf__fail(e, RF_ERR_NOMEM, "delta tables");
  size_t pbytes = rk->patch_bytes ? rk->patch_bytes : 16, sbytes = rk->scratch_bytes ? rk->scratch_bytes : 16;
  const rf__mem *m = e->mem;
  RF_CHECK(m->alloc(e, sbytes, (void **)&d->scratch, "delta staging scratch"));
  RF_CHECK(m->alloc_reg(e, pbytes, (void **)&d->patch, &d->patch_memh, "delta patch buffer"));
  RF_CHECK(m->alloc_shared(e, nw * sizeof *d->out, (void **)&d->out, &d->out_dev, "delta encode results"));
  RF_CHECK(m->warm(e, NULL, NULL, NULL, NULL));
  RF_CHECK(rf__ucx_alloc(e, 16 * (size_t)nw, (void **)&d->dir, &d->dir_memh));
  /* the plan's regions (gen/index.lua), checked to lie inside the rank's writes, arena, patch
   * buffer and each group's scratch image */
  uint32_t r0 = rk->region_first, nr = rk->region_count, next_write = rk->write_first, next_region = r0;
  if ((uint64_t)r0 + nr > p->n_regions)
    return rf__fail(e, RF_ERR_ARG, "plan %s: rank %u's regions lie outside the region table", p->name, e->cfg.rank);
  d->reg = calloc(nr ? nr : 1, sizeof *d->reg);
  if (!d->reg) return rf__fail(e, RF_ERR_NOMEM, "delta tables");
  for (uint32_t k = 0; k < ng; k++) {
    const rf_group *g = &p->groups[rk->group_first + k];
    uint64_t lo = g->scratch_lo;
    if (g->region_first != next_region || (uint64_t)g->region_first + g->region_count > (uint64_t)r0 + nr)
      return rf__fail(e, RF_ERR_ARG, "plan %s: group %u's regions are not the next of rank %u's", p->name,
                      rk->group_first + k, e->cfg.rank);
    /* every op of the group stages inside its scratch image */
    for (uint32_t j = g->op_first; j < g->op_first + g->op_count; j++) {
      const rf_op *o = &p->ops[j];
      uint64_t es = rf_op_fp8(o) ? 1 : rf_dtype_size(o->dst_dtype), cells = (uint64_t)(o->rows * o->cols);
      uint64_t sc = rf_fp8_scale_bytes(o->rows, o->cols);
      for (uint32_t c = 0; c < o->count; c++) {
        uint64_t out = o->out + (uint64_t)c * o->out_step, scale = o->scale + (uint64_t)c * o->scale_step;
        if (out < lo || out + cells * es - lo > rk->scratch_bytes ||
            (rf_op_fp8(o) && (scale < lo || scale + sc - lo > rk->scratch_bytes)))
          return rf__fail(e, RF_ERR_ARG, "plan %s: op %u of rank %u writes outside its group's scratch image", p->name, j,
                          e->cfg.rank);
      }
    }
    d->lo[k] = lo;
    d->grp[k] = g->region_first - r0;
    next_region += g->region_count;
    for (uint32_t j = g->region_first; j < g->region_first + g->region_count; j++) {
      const rf_region *x = &p->regions[j];
      if (x->write_first != next_write || !x->write_count ||
          (uint64_t)x->write_first + x->write_count > (uint64_t)rk->write_first + rk->write_count ||
          x->slot < lo || x->slot + x->len - lo > rk->scratch_bytes || x->slot + x->len > rk->arena_bytes ||
          x->patch_off + x->patch_cap > rk->patch_bytes)
        return rf__fail(e, RF_ERR_ARG, "plan %s: region %u of rank %u lies outside its writes, slots, scratch or patch "
                        "buffer", p->name, j, e->cfg.rank);
      d->reg[j - r0] = (rfk_delta_region){.next = d->scratch + (x->slot - lo), .old = arena + x->slot, .n = x->len,
                                          .esize = x->esize, .patch = d->patch + x->patch_off, .cap = x->patch_cap};
      for (uint32_t i = x->write_first; i < x->write_first + x->write_count; i++) d->of_write[i - rk->write_first] = j - r0;
      next_write += x->write_count;
    }
  }
  d->grp[ng] = d->n_reg = nr;
  if (next_region != r0 + nr || next_write != rk->write_first + rk->write_count)
    return rf__fail(e, RF_ERR_ARG, "plan %s: rank %u's regions do not cover its writes", p->name, e->cfg.rank);
  return m->device ? rf__cuda_delta_scratch(e, d->reg, d->grp, ng) : RF_OK;
}

void rf__delta_close(rf_engine *e, rf__delta *d)
{
  if (!d) return;
  if (e->ux && d->patch) d->mem->free_reg(e, d->patch, d->patch_memh);
  if (e->ux && d->dir_memh) rf__ucx_unmap(e, d->dir_memh); /* frees the directory too */
  d->mem->free(e, d->scratch);
  d->mem->free_shared(e, d->out);
  free(d->reg);
  free(d->of_write);
  free(d->grp);
  free(d->lo);
  free(d);
}

uint64_t rf__delta_begin(rf__delta *d)
{
  if (!d) return 0;
  d->base = d->slots_version; /* the slots are a base only until this push starts rewriting them */
  d->slots_version = 0;
  return d->base;
}

uint64_t rf__delta_base(const rf__delta *d) { return d ? d->base : 0; }

void rf__delta_staged(rf__delta *d, uint64_t version)
{
  if (d) d->slots_version = version;
}

uint8_t *rf__delta_dest(const rf__delta *d, uint32_t k, uint64_t *lo)
{
  if (!d || !d->base) return NULL;
  *lo = d->lo[k];
  return d->scratch;
}

int rf__delta_encode_host(rf__delta *d, uint32_t k)
{
  if (!d || !d->base || d->grp[k + 1] == d->grp[k]) return RFK_OK;
  return rfk_ref_delta_encode(d->reg + d->grp[k], (int)(d->grp[k + 1] - d->grp[k]), d->out + d->grp[k]);
}

rf_status rf__delta_encode_cuda(rf_engine *e, rf__delta *d, uint32_t k, void *stream, uint64_t version)
{
  if (!d || !d->base || d->grp[k + 1] == d->grp[k]) return RF_OK;
  return rf__cuda_delta_encode(e, d->reg + d->grp[k], d->grp[k + 1] - d->grp[k], (rfk_delta_out *)d->out_dev + d->grp[k],
                               stream, version);
}

static void wr64(uint8_t *b, uint64_t v) { memcpy(b, &v, 8); }

int rf__delta_patch(rf__delta *d, uint32_t w, uint32_t entry, const void **patch, uint64_t *size)
{
  uint32_t r = d->of_write[w];
  const rfk_delta_out *o = &d->out[r];
  uint8_t *en = d->dir + 16 * (size_t)entry;
  wr64(en + 8, o->digest);
  if (o->status != RFK_OK) { /* overflowed its slot: the region goes dense */
    wr64(en, 0);
    return 0;
  }
  wr64(en, o->size);
  *patch = d->reg[r].patch;
  *size = o->size;
  return 1;
}

const uint8_t *rf__delta_dir(const rf__delta *d, uint32_t entry) { return d->dir + 16 * (size_t)entry; }
