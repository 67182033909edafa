/* delta_ref.c: C reference of the delta patches (delta.h): encode, validate + apply, digest. The
 * CUDA kernels (delta.cu) must write the same bytes; tests/test_delta.c checks this file on its
 * own (round trips, every mode, malformed patches, digest), tests/test_kernels_gpu.c checks CUDA
 * against it. Leaf functions (digest terms, mode choice, patch checks) are in delta_fmt.h.
 * Encode reads next and old twice per chunk (sizes first, then records): the reference is
 * written for clarity; the single pass is delta.cu's. It is also the host runtime's encoder, so the
 * scans skip unchanged 8-byte words (most of a region, most of the time) and unchanged chunks. */
#include <stdio.h>
#include <string.h>

#include "delta_fmt.h"
#include "kernels.h"

uint64_t rfk_delta_bound(uint64_t n)
{
  return RFK_DELTA_HEADER + rfk__align4(n) + (uint64_t)RFK_DELTA_ENTRY * rfk__nchunks(n);
}

static int bad_region(const void *a, const void *b, uint64_t n, int e)
{
  return !a || (!b && n) || (e != 1 && e != 2 && e != 4) || n % (uint64_t)e || n >> 32 || (uintptr_t)a % e ||
         (uintptr_t)b % e;
}

static uint64_t digest(const uint8_t *p, uint64_t n)
{
  uint64_t d = rfk__len_term(n), i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  for (; 8 * i + 8 <= n; i++) { /* whole words: their little-endian value is the word */
    uint64_t w;
    memcpy(&w, p + 8 * i, 8);
    d += rfk__term(w, i);
  }
#endif
  for (; 8 * i < n; i++) {
    uint64_t w = 0;
    for (uint64_t b = 0; b < 8 && 8 * i + b < n; b++)
      w |= (uint64_t)p[8 * i + b] << (8 * b);
    d += rfk__term(w, i);
  }
  return d;
}

int rfk_ref_delta_digest(const rfk_delta_span *s, int count, uint64_t *out)
{
  if (count < 0 || (count > 0 && (!s || !out)))
    return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    if (!s[i].p && s[i].n)
      return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    out[i] = digest(s[i].p, s[i].n);
  return RFK_OK;
}

/* ---- encode ---- */
typedef struct chunk_info {
  uint32_t elems, k, max_tile, mode;
  uint64_t size;
} chunk_info;

/* n <= 8 bytes at p as a little-endian word (zero-padded) */
static uint64_t load_le(const uint8_t *p, size_t n)
{
  uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (n == 8)
    memcpy(&w, p, 8); /* a constant size: one load */
  else
    memcpy(&w, p, n);
#else
  for (size_t b = 0; b < n; b++)
    w |= (uint64_t)p[b] << (8 * b);
#endif
  return w;
}

/* one element of size e (fixed-size copies: no call per element) */
static void put_elem(uint8_t *d, const uint8_t *v, uint32_t e)
{
  if (e == 1)
    *d = *v;
  else if (e == 2)
    memcpy(d, v, 2);
  else
    memcpy(d, v, 4);
}

/* the elements (of size e) of a chunk where a and b differ, increasing, into idx; their count. 8
 * bytes are compared at a time and only a word that differs is split into its elements. */
static uint32_t changes(const uint8_t *a, const uint8_t *b, uint32_t elems, uint32_t e, uint16_t *idx)
{
  const size_t bytes = (size_t)elems * e;
  const uint32_t per = 8 / e;
  const uint64_t lane = e == 4 ? 0xffffffffull : e == 2 ? 0xffffull : 0xffull;
  uint32_t k = 0;
  for (size_t off = 0; off < bytes; off += 8) {
    size_t n = bytes - off < 8 ? bytes - off : 8;
    uint64_t x = load_le(a + off, n) ^ load_le(b + off, n);
    if (!x)
      continue;
    for (uint32_t j = 0; j < per; j++)
      if (x >> (8 * e * j) & lane)
        idx[k++] = (uint16_t)(off / e + j);
  }
  return k;
}

/* idx: room for the chunk's element count (at most RFK_DELTA_CHUNK), filled with its changes */
static chunk_info analyze(const uint8_t *nx, const uint8_t *old, uint64_t n, uint32_t e, uint32_t c, uint16_t *idx)
{
  chunk_info ci = {rfk__chunk_elems(n, e, c), 0, 0, 0, 0};
  const uint64_t base = (uint64_t)c * RFK_DELTA_CHUNK;
  if (!memcmp(nx + base, old + base, (size_t)ci.elems * e))
    return ci; /* unchanged */
  ci.k = changes(nx + base, old + base, ci.elems, e, idx);
  for (uint32_t q = 0, tile = 0, cur = UINT32_MAX; q < ci.k; q++) { /* tile = changes in tile `cur` so far */
    if (idx[q] / RFK_DELTA_TILE != cur)
      cur = idx[q] / RFK_DELTA_TILE, tile = 0;
    if (++tile > ci.max_tile)
      ci.max_tile = tile;
  }
  ci.mode = rfk__choose(ci.k, ci.max_tile, ci.elems, e);
  ci.size = ci.k ? rfk__record_size(ci.mode, ci.k, ci.elems, e) : 0;
  return ci;
}

/* the record of chunk c at rec (ci.size bytes) */
static void write_record(uint8_t *rec, const uint8_t *nx, uint32_t e, uint32_t c, const chunk_info *ci,
                         const uint16_t *idx)
{
  const uint8_t *a = nx + (uint64_t)c * RFK_DELTA_CHUNK;
  const uint32_t T = rfk__tiles(ci->elems), B = (ci->elems + 7) / 8, k = ci->k;
  uint8_t *vals = rec + (ci->mode == RFK_DELTA_LIST ? 2 * k : ci->mode == RFK_DELTA_TILES ? T + k : B);
  if (ci->mode == RFK_DELTA_DENSE) {
    memcpy(rec, a, (size_t)ci->elems * e);
    return;
  }
  if (ci->mode == RFK_DELTA_TILES)
    memset(rec, 0, T);
  if (ci->mode == RFK_DELTA_BITMAP)
    memset(rec, 0, B);
  for (uint32_t r = 0; r < k; r++) {
    uint32_t i = idx[r];
    if (ci->mode == RFK_DELTA_LIST)
      rec[2 * r] = (uint8_t)i, rec[2 * r + 1] = (uint8_t)(i >> 8);
    else if (ci->mode == RFK_DELTA_TILES)
      rec[i / RFK_DELTA_TILE]++, rec[T + r] = (uint8_t)(i % RFK_DELTA_TILE);
    else
      rec[i / 8] |= (uint8_t)(1u << (i % 8));
    put_elem(vals + (size_t)r * e, a + (size_t)i * e, e);
  }
}

static void encode_one(const rfk_delta_region *g, rfk_delta_out *o)
{
  const uint8_t *nx = g->next;
  uint8_t *old = g->old, *patch = g->patch;
  const uint32_t e = (uint32_t)g->esize, nch = rfk__nchunks(g->n);
  uint64_t P = 0, changed = 0;
  uint32_t m = 0;
  uint16_t idx[RFK_DELTA_CHUNK]; /* a chunk's changes */
  for (uint32_t c = 0; c < nch; c++) {
    chunk_info ci = analyze(nx, old, g->n, e, c, idx);
    P += ci.size, m += ci.k > 0, changed += ci.k;
  }
  const uint64_t dir = RFK_DELTA_HEADER + rfk__align4(P), size = dir + (uint64_t)RFK_DELTA_ENTRY * m;
  const int fits = size <= g->cap;
  o->digest = digest(nx, g->n);
  o->size = size, o->changed = changed, o->entries = m;
  o->status = fits ? RFK_OK : RFK_DELTA_OVERFLOW;
  uint64_t off = 0;
  uint32_t j = 0;
  for (uint32_t c = 0; c < nch; c++) {
    chunk_info ci = analyze(nx, old, g->n, e, c, idx);
    if (!ci.k)
      continue;
    if (RFK_DELTA_HEADER + off + ci.size <= g->cap) /* records that fit are written, as on the GPU */
      write_record(patch + RFK_DELTA_HEADER + off, nx, e, c, &ci, idx);
    if (fits) {
      uint8_t *d = patch + dir + (uint64_t)RFK_DELTA_ENTRY * j;
      rfk__wr32(d, c), rfk__wr32(d + 4, (uint32_t)off), rfk__wr32(d + 8, ci.mode << 24 | ci.k);
    }
    uint64_t b0 = (uint64_t)c * RFK_DELTA_CHUNK;
    memcpy(old + b0, nx + b0, (size_t)ci.elems * e);
    off += ci.size, j++;
  }
  if (!fits)
    return;
  memset(patch, 0, RFK_DELTA_HEADER);
  rfk__wr32(patch, RFK_DELTA_MAGIC);
  patch[4] = (uint8_t)e;
  rfk__wr64(patch + 8, g->n);
  rfk__wr32(patch + 16, m), rfk__wr32(patch + 20, (uint32_t)P);
  rfk__wr64(patch + 24, o->digest);
  memset(patch + RFK_DELTA_HEADER + P, 0, dir - RFK_DELTA_HEADER - P);
}

int rfk_ref_delta_encode(const rfk_delta_region *r, int count, rfk_delta_out *out)
{
  if (count < 0 || (count > 0 && (!r || !out)))
    return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    if (bad_region(r[i].next, r[i].old, r[i].n, r[i].esize) || (r[i].cap && !r[i].patch))
      return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    encode_one(&r[i], &out[i]);
  return RFK_OK;
}

/* ---- apply ---- */
/* every check of delta.h in order; 1 and *st on the first failure */
static int validate(const uint8_t *p, uint64_t len, uint64_t n, uint32_t e, rfk_delta_status *st)
{
  rfk__ok(st);
  if (rfk__check_header(p, len, n, e, st))
    return 1;
  const uint32_t m = rfk__rd32(p + 16);
  for (uint32_t j = 0; j < m; j++) {
    int payload_ok;
    if (rfk__check_entry(p, n, e, j, st, &payload_ok))
      return 1;
    if (!payload_ok)
      continue;
    const rfk__entry r = rfk__read_entry(p, n, e, j);
    const uint8_t *rec = rfk__record(p, &r);
    const uint32_t T = rfk__tiles(r.elems), B = (r.elems + 7) / 8;
    uint64_t got, want;
    if (r.mode == RFK_DELTA_TILES) {
      uint64_t sum = 0;
      for (uint32_t t = 0; t < T; t++) {
        if (rfk__check_pos(rec, &r, RFK_DC_TILE, t, 0, 0, &got, &want))
          return rfk__fail(st, j + 1, r.chunk, RFK_DC_TILE, t, got, want);
        sum += rec[t];
      }
      if (sum != r.k)
        return rfk__fail(st, j + 1, r.chunk, RFK_DC_TILESUM, 0, sum, r.k);
    }
    if (r.mode == RFK_DELTA_BITMAP) {
      if (rfk__check_pos(rec, &r, RFK_DC_BITPAD, B - 1, 0, 0, &got, &want))
        return rfk__fail(st, j + 1, r.chunk, RFK_DC_BITPAD, B - 1, got, want);
      uint64_t bits = 0;
      for (uint32_t b = 0; b < B; b++)
        bits += (uint64_t)__builtin_popcount(rec[b]);
      if (bits != r.k)
        return rfk__fail(st, j + 1, r.chunk, RFK_DC_BITS, 0, bits, r.k);
    }
    if (r.mode == RFK_DELTA_LIST || r.mode == RFK_DELTA_TILES)
      for (uint32_t code = RFK_DC_INDEX; code <= RFK_DC_INCREASING; code++) {
        uint32_t tile = 0, first = 0;
        for (uint32_t q = 0; q < r.k; q++) {
          if (r.mode == RFK_DELTA_TILES)
            while (q >= first + rec[tile]) /* the tile of change q (counts add up to k) */
              first += rec[tile++];
          if (rfk__check_pos(rec, &r, code, q, tile, first, &got, &want))
            return rfk__fail(st, j + 1, r.chunk, code, q, got, want);
        }
      }
  }
  return 0;
}

/* a patch that passed validate */
static void apply_valid(const uint8_t *p, uint8_t *dst, uint64_t n, uint32_t e)
{
  const uint32_t m = rfk__rd32(p + 16);
  for (uint32_t j = 0; j < m; j++) {
    const rfk__entry r = rfk__read_entry(p, n, e, j);
    const uint8_t *rec = rfk__record(p, &r);
    uint8_t *base = dst + (uint64_t)r.chunk * RFK_DELTA_CHUNK;
    const uint32_t T = rfk__tiles(r.elems), B = (r.elems + 7) / 8, k = r.k;
    if (r.mode == RFK_DELTA_DENSE) {
      memcpy(base, rec, (size_t)r.elems * e);
    } else if (r.mode == RFK_DELTA_LIST) {
      for (uint32_t q = 0; q < k; q++)
        put_elem(base + (size_t)(rec[2 * q] | rec[2 * q + 1] << 8) * e, rec + 2 * k + (size_t)q * e, e);
    } else if (r.mode == RFK_DELTA_TILES) {
      uint32_t tile = 0, first = 0;
      for (uint32_t q = 0; q < k; q++) {
        while (q >= first + rec[tile])
          first += rec[tile++];
        put_elem(base + ((size_t)tile * RFK_DELTA_TILE + rec[T + q]) * e, rec + T + k + (size_t)q * e, e);
      }
    } else {
      uint32_t q = 0;
      for (uint32_t i = 0; i < r.elems; i++)
        if (rec[i / 8] >> (i % 8) & 1)
          put_elem(base + (size_t)i * e, rec + B + (size_t)q++ * e, e);
    }
  }
}

int rfk_ref_delta_apply(const rfk_delta_target *t, int count, rfk_delta_status *st)
{
  if (count < 0 || (count > 0 && (!t || !st)))
    return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    if (bad_region(t[i].dst, t[i].dst, t[i].n, t[i].esize) || (!t[i].patch && t[i].len))
      return RFK_ERR_ARG;
  int rc = RFK_OK;
  for (int i = 0; i < count; i++) {
    if (validate(t[i].patch, t[i].len, t[i].n, (uint32_t)t[i].esize, &st[i])) {
      /* the status as the GPU fills it: from the key alone */
      rfk__explain(t[i].patch, t[i].len, t[i].n, (uint32_t)t[i].esize, st[i].key, &st[i]);
      rc = RFK_DELTA_MALFORMED;
    } else {
      apply_valid(t[i].patch, t[i].dst, t[i].n, (uint32_t)t[i].esize);
    }
  }
  return rc;
}

int rfk_delta_format(const rfk_delta_status *st, char *buf, size_t size)
{
  unsigned long long got = st->got, want = st->want, pos = st->pos;
  char where[48] = "";
  if (st->code == RFK_OK)
    return snprintf(buf, size, "ok");
  if (st->code >= RFK_DC_CHUNK)
    snprintf(where, sizeof where, "entry %u (chunk %u): ", st->entry, st->chunk);
  switch (st->code) {
#define RFK_DELTA_CASE_(code, name, msg, ...) \
  case code: return snprintf(buf, size, "%s" msg, where, __VA_ARGS__);
    RFK_DELTA_CHECKS(RFK_DELTA_CASE_)
#undef RFK_DELTA_CASE_
  }
  return snprintf(buf, size, "unknown patch check %d", st->code);
}
