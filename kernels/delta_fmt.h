/* delta_fmt.h: leaf functions of the patch format (delta.h), shared by delta_ref.c and delta.cu so
 * that the digest, the mode choice and every patch check have one definition. Internal: included
 * by those two files only. RFK_HD marks them host + device under nvcc. */
#ifndef REFIT_DELTA_FMT_H
#define REFIT_DELTA_FMT_H

#include <stdint.h>

#include "delta.h"

#ifdef __CUDACC__
#define RFK_HD __host__ __device__ __forceinline__
#else
#define RFK_HD static inline
#endif

#define RFK__PHI 0x9e3779b97f4a7c15ull
#define RFK__LEN_KEY 0x243f6a8885a308d3ull

RFK_HD uint64_t rfk__fmix64(uint64_t x)
{
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* digest term of word i (bytes 8i .. 8i+7 of the region) */
RFK_HD uint64_t rfk__term(uint64_t w, uint64_t i) { return rfk__fmix64(w + (i + 1) * RFK__PHI); }
RFK_HD uint64_t rfk__len_term(uint64_t n) { return rfk__fmix64(n + RFK__LEN_KEY); }

RFK_HD uint32_t rfk__rd32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
RFK_HD uint64_t rfk__rd64(const uint8_t *p) { return rfk__rd32(p) | (uint64_t)rfk__rd32(p + 4) << 32; }
RFK_HD void rfk__wr32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
RFK_HD void rfk__wr64(uint8_t *p, uint64_t v) { rfk__wr32(p, (uint32_t)v), rfk__wr32(p + 4, (uint32_t)(v >> 32)); }

RFK_HD uint64_t rfk__align4(uint64_t x) { return (x + 3) & ~(uint64_t)3; }
RFK_HD uint32_t rfk__nchunks(uint64_t n) { return (uint32_t)((n + RFK_DELTA_CHUNK - 1) / RFK_DELTA_CHUNK); }

/* elements of chunk c of an n-byte region */
RFK_HD uint32_t rfk__chunk_elems(uint64_t n, uint32_t e, uint32_t c)
{
  uint64_t left = n - (uint64_t)c * RFK_DELTA_CHUNK;
  return (uint32_t)((left < RFK_DELTA_CHUNK ? left : RFK_DELTA_CHUNK) / e);
}

RFK_HD uint32_t rfk__tiles(uint32_t elems) { return (elems + RFK_DELTA_TILE - 1) / RFK_DELTA_TILE; }
RFK_HD uint32_t rfk__tile_len(uint32_t elems, uint32_t t)
{
  uint32_t left = elems - t * RFK_DELTA_TILE;
  return left < RFK_DELTA_TILE ? left : RFK_DELTA_TILE;
}

/* bytes of a record of k changes in a chunk of `elems` elements; 0 for a mode that does not exist.
 * 32-bit arithmetic is exact: k < 2^24 (a directory entry's field), elems <= 16384, e <= 4. */
RFK_HD uint32_t rfk__record_size(uint32_t mode, uint32_t k, uint32_t elems, uint32_t e)
{
  switch (mode) {
  case RFK_DELTA_LIST: return k * (2 + e);
  case RFK_DELTA_TILES: return rfk__tiles(elems) + k * (1 + e);
  case RFK_DELTA_BITMAP: return (elems + 7) / 8 + k * e;
  case RFK_DELTA_DENSE: return elems * e;
  }
  return 0;
}

/* the encoder's mode: smallest record, ties to the lower mode; TILES only when no tile has 256
 * changes (max_tile: the largest count of a tile) */
RFK_HD uint32_t rfk__choose(uint32_t k, uint32_t max_tile, uint32_t elems, uint32_t e)
{
  uint32_t best = RFK_DELTA_LIST;
  uint32_t size = rfk__record_size(RFK_DELTA_LIST, k, elems, e);
  for (uint32_t m = RFK_DELTA_TILES; m <= RFK_DELTA_DENSE; m++) {
    uint32_t s = rfk__record_size(m, k, elems, e);
    if ((m != RFK_DELTA_TILES || max_tile < RFK_DELTA_TILE) && s < size)
      best = m, size = s;
  }
  return best;
}

RFK_HD uint64_t rfk__key(uint32_t entry_plus1, uint32_t code, uint32_t pos)
{
  return (uint64_t)entry_plus1 << 32 | (uint64_t)code << 24 | pos;
}

RFK_HD int rfk__fail(rfk_delta_status *st, uint32_t entry_plus1, uint32_t chunk, uint32_t code, uint32_t pos,
                     uint64_t got, uint64_t want)
{
  st->code = (int32_t)code;
  st->entry = entry_plus1 - 1; /* header: UINT32_MAX */
  st->chunk = chunk;
  st->pos = pos;
  st->got = got;
  st->want = want;
  st->key = rfk__key(entry_plus1, code, pos);
  return 1;
}

RFK_HD void rfk__ok(rfk_delta_status *st)
{
  st->code = 0, st->entry = 0, st->pos = 0, st->chunk = 0, st->got = 0, st->want = 0;
  st->key = ~(uint64_t)0;
}

/* header checks SHORT .. PAD in order; 1 and *st filled on the first failure */
RFK_HD int rfk__check_header(const uint8_t *p, uint64_t len, uint64_t n, uint32_t e, rfk_delta_status *st)
{
  const uint32_t H = 0, X = 0xffffffffu;
  if (len < RFK_DELTA_HEADER)
    return rfk__fail(st, H, X, RFK_DC_SHORT, 0, len, RFK_DELTA_HEADER);
  if (rfk__rd32(p) != RFK_DELTA_MAGIC)
    return rfk__fail(st, H, X, RFK_DC_MAGIC, 0, rfk__rd32(p), RFK_DELTA_MAGIC);
  if (p[4] != e)
    return rfk__fail(st, H, X, RFK_DC_ESIZE, 4, p[4], e);
  for (uint32_t b = 5; b < 8; b++)
    if (p[b])
      return rfk__fail(st, H, X, RFK_DC_RESERVED, b, p[b], 0);
  if (rfk__rd64(p + 8) != n)
    return rfk__fail(st, H, X, RFK_DC_REGION, 8, rfk__rd64(p + 8), n);
  uint32_t m = rfk__rd32(p + 16), P = rfk__rd32(p + 20);
  if (m > rfk__nchunks(n))
    return rfk__fail(st, H, X, RFK_DC_ENTRIES, 16, m, rfk__nchunks(n));
  uint64_t total = RFK_DELTA_HEADER + rfk__align4(P) + (uint64_t)RFK_DELTA_ENTRY * m;
  if (len != total)
    return rfk__fail(st, H, X, RFK_DC_LENGTH, 0, len, total);
  for (uint64_t b = RFK_DELTA_HEADER + (uint64_t)P; b < RFK_DELTA_HEADER + rfk__align4(P); b++)
    if (p[b])
      return rfk__fail(st, H, X, RFK_DC_PAD, (uint32_t)b, p[b], 0);
  return 0;
}

/* a directory entry, read from a patch whose header passed */
typedef struct rfk__entry {
  uint32_t chunk, off, mode, k, elems; /* elems: 0 when chunk is outside the region */
  uint64_t size;                       /* record bytes (0 for a bad mode) */
} rfk__entry;

RFK_HD rfk__entry rfk__read_entry(const uint8_t *p, uint64_t n, uint32_t e, uint32_t j)
{
  const uint8_t *d = p + RFK_DELTA_HEADER + rfk__align4(rfk__rd32(p + 20)) + (uint64_t)RFK_DELTA_ENTRY * j;
  rfk__entry r;
  uint32_t meta = rfk__rd32(d + 8);
  r.chunk = rfk__rd32(d), r.off = rfk__rd32(d + 4), r.mode = meta >> 24, r.k = meta & 0xffffffu;
  r.elems = r.chunk < rfk__nchunks(n) ? rfk__chunk_elems(n, e, r.chunk) : 0;
  r.size = rfk__record_size(r.mode, r.k, r.elems, e);
  return r;
}

/* entry checks CHUNK .. END of entry j (header passed); returns 1 and fills *st on the first
 * failure. *payload_ok = 1 when the payload checks of the entry may read its record: the entry
 * passed and its record lies inside the header's payload. */
RFK_HD int rfk__check_entry(const uint8_t *p, uint64_t n, uint32_t e, uint32_t j, rfk_delta_status *st, int *payload_ok)
{
  const uint32_t m = rfk__rd32(p + 16), P = rfk__rd32(p + 20), nch = rfk__nchunks(n);
  const rfk__entry r = rfk__read_entry(p, n, e, j);
  *payload_ok = 0;
  if (r.chunk >= nch)
    return rfk__fail(st, j + 1, r.chunk, RFK_DC_CHUNK, 0, r.chunk, nch);
  if (j > 0) {
    rfk__entry q = rfk__read_entry(p, n, e, j - 1);
    if (r.chunk <= q.chunk)
      return rfk__fail(st, j + 1, r.chunk, RFK_DC_ORDER, 0, r.chunk, q.chunk);
  }
  if (r.mode > RFK_DELTA_DENSE)
    return rfk__fail(st, j + 1, r.chunk, RFK_DC_MODE, 0, r.mode, RFK_DELTA_DENSE);
  if (r.k < 1 || r.k > r.elems)
    return rfk__fail(st, j + 1, r.chunk, RFK_DC_COUNT, 0, r.k, r.elems);
  uint64_t start = 0;
  if (j > 0) {
    rfk__entry q = rfk__read_entry(p, n, e, j - 1);
    start = q.off + q.size;
  }
  if (r.off != start)
    return rfk__fail(st, j + 1, r.chunk, RFK_DC_OFFSET, 0, r.off, start);
  uint64_t end = r.off + r.size, next = j + 1 < m ? rfk__read_entry(p, n, e, j + 1).off : P;
  if (end != next)
    return rfk__fail(st, j + 1, r.chunk, RFK_DC_END, 0, end, next);
  *payload_ok = end <= P;
  return 0;
}

/* record of a valid entry */
RFK_HD const uint8_t *rfk__record(const uint8_t *p, const rfk__entry *r) { return p + RFK_DELTA_HEADER + r->off; }

/* per-position payload checks (entry passed, payload_ok): TILE at tile `pos`, INDEX and
 * INCREASING at change `pos` (TILES records: `tile` is the tile of change pos and `first` the
 * number of changes in the tiles before it; otherwise both unused), BITPAD at the last bitmap
 * byte. Return 1 on failure with got / want. */
RFK_HD int rfk__check_pos(const uint8_t *rec, const rfk__entry *r, uint32_t code, uint32_t pos, uint32_t tile,
                          uint32_t first, uint64_t *got, uint64_t *want)
{
  if (code == RFK_DC_TILE) {
    uint32_t len = rfk__tile_len(r->elems, pos), lim = len < 255 ? len : 255;
    *got = rec[pos], *want = lim;
    return rec[pos] > lim;
  }
  if (code == RFK_DC_BITPAD) {
    uint32_t used = r->elems % 8;
    *got = rec[pos], *want = r->elems;
    return used && (rec[pos] >> used) != 0;
  }
  uint32_t idx, prev = 0, bound, has_prev = pos > 0;
  if (r->mode == RFK_DELTA_LIST) {
    idx = rec[2 * pos] | (uint32_t)rec[2 * pos + 1] << 8;
    if (has_prev)
      prev = rec[2 * pos - 2] | (uint32_t)rec[2 * pos - 1] << 8;
    bound = r->elems;
  } else { /* TILES: u8 indexes after the T counts; the previous one counts only in the same tile */
    const uint32_t T = rfk__tiles(r->elems);
    idx = rec[T + pos];
    has_prev = pos > first;
    if (has_prev)
      prev = rec[T + pos - 1];
    bound = rfk__tile_len(r->elems, tile);
  }
  if (code == RFK_DC_INDEX) {
    *got = idx, *want = bound;
    return idx >= bound;
  }
  *got = idx, *want = prev;
  return has_prev && idx <= prev;
}

/* the status of the check `key` names (a key some check of this patch produced): recomputes its
 * got / want with one thread. The GPU validation finds the first failing key in parallel; this
 * fills the status from it (delta_ref.c calls it too, so the CPU tests see these values). */
RFK_HD void rfk__explain(const uint8_t *p, uint64_t len, uint64_t n, uint32_t e, uint64_t key, rfk_delta_status *st)
{
  const uint32_t entry_plus1 = (uint32_t)(key >> 32), code = (uint32_t)(key >> 24) & 0xff, pos = (uint32_t)key & 0xffffff;
  int payload_ok;
  rfk__ok(st);
  if (key == ~(uint64_t)0)
    return;
  if (entry_plus1 == 0) {
    rfk__check_header(p, len, n, e, st);
    return;
  }
  const uint32_t j = entry_plus1 - 1;
  if (code < RFK_DC_TILE) {
    rfk__check_entry(p, n, e, j, st, &payload_ok);
    return;
  }
  const rfk__entry r = rfk__read_entry(p, n, e, j);
  const uint8_t *rec = rfk__record(p, &r);
  const uint32_t T = rfk__tiles(r.elems), B = (r.elems + 7) / 8;
  uint64_t got = 0, want = 0;
  if (code == RFK_DC_TILESUM) {
    for (uint32_t t = 0; t < T; t++)
      got += rec[t];
    want = r.k;
  } else if (code == RFK_DC_BITS) {
    for (uint32_t b = 0; b < B; b++)
      for (uint32_t v = rec[b]; v; v &= v - 1)
        got++;
    want = r.k;
  } else {
    uint32_t tile = 0, first = 0;
    if (r.mode == RFK_DELTA_TILES && (code == RFK_DC_INDEX || code == RFK_DC_INCREASING))
      while (pos >= first + rec[tile])
        first += rec[tile++];
    rfk__check_pos(rec, &r, code, pos, tile, first, &got, &want);
  }
  rfk__fail(st, entry_plus1, r.chunk, code, pos, got, want);
}

#endif
