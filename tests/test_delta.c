/* test_delta.c: the C reference of the delta patches (delta.h) on fresh random data: round trips
 * (encode, apply onto a copy of the old bytes, compare byte for byte) for every element size,
 * sizes that are not multiples of the chunk, densities 0 to 100% and clustered changes; sizes and
 * modes against an independent computation of the format's rule; NaN/inf/-0.0 bit patterns;
 * capacity overflow (nothing written at or past the capacity); every malformed-patch check with
 * its message, the region left untouched; random corruption of patches (refused, or caught by the
 * digest); the digest against an independent computation and its sensitivity.
 * Seed: time ^ pid, printed; RFK_SEED=<seed> reproduces. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "delta.h"
#include "expect.h"
#include "kernels.h"

static uint64_t rng_state;
static uint32_t rnd(void)
{
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
static double unif(void) { return rnd() / 2147483648.0; } /* rnd() has 31 bits */

static uint8_t *rand_bytes(uint64_t n)
{
  uint8_t *p = malloc(n ? n : 1);
  for (uint64_t i = 0; i < n; i++)
    p[i] = (uint8_t)rnd();
  return p;
}

static uint8_t *dup_bytes(const uint8_t *p, uint64_t n)
{
  uint8_t *q = malloc(n ? n : 1);
  memcpy(q, p, n);
  return q;
}

/* change element i of next (a copy of old): a random different value */
static void change(uint8_t *next, const uint8_t *old, uint64_t i, int e)
{
  do
    for (int b = 0; b < e; b++)
      next[i * e + b] = (uint8_t)rnd();
  while (!memcmp(next + i * e, old + i * e, e));
}

/* ---- independent digest: words by memcpy (little-endian host), own mixer ---- */
static uint64_t mix(uint64_t x)
{
  x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdull;
  x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static uint64_t digest_indep(const uint8_t *p, uint64_t n)
{
  uint64_t d = mix(n + 0x243f6a8885a308d3ull);
  for (uint64_t off = 0; off < n; off += 8) {
    uint64_t w = 0;
    memcpy(&w, p + off, n - off < 8 ? n - off : 8);
    d += mix(w + (off / 8 + 1) * 0x9e3779b97f4a7c15ull);
  }
  return d;
}

static uint64_t digest(const void *p, uint64_t n)
{
  rfk_delta_span s = {p, n};
  uint64_t d = 0;
  EXPECT(rfk_ref_delta_digest(&s, 1, &d) == RFK_OK, "digest rc");
  return d;
}

/* ---- independent patch size: the format's rule chunk by chunk ---- */
typedef struct expect_size {
  uint64_t size, changed;
  uint32_t entries, modes[4];
} expect_size;

static expect_size size_indep(const uint8_t *next, const uint8_t *old, uint64_t n, int e)
{
  expect_size x = {0, 0, 0, {0, 0, 0, 0}};
  uint64_t P = 0;
  for (uint64_t c0 = 0; c0 < n; c0 += 16384) {
    uint64_t bytes = n - c0 < 16384 ? n - c0 : 16384, el = bytes / e, k = 0, tmax = 0, tk = 0;
    for (uint64_t i = 0; i < el; i++) {
      if (i % 256 == 0)
        tk = 0;
      if (memcmp(next + c0 + i * e, old + c0 + i * e, e))
        k++, tk++, tmax = tk > tmax ? tk : tmax;
    }
    if (!k)
      continue;
    uint64_t s[4] = {k * (2 + e), (el + 255) / 256 + k * (1 + e), (el + 7) / 8 + k * e, el * e};
    int best = 0;
    for (int m = 1; m < 4; m++)
      if ((m != 1 || tmax < 256) && s[m] < s[best])
        best = m;
    P += s[best], x.entries++, x.changed += k, x.modes[best]++;
  }
  x.size = 32 + ((P + 3) & ~3ull) + 12ull * x.entries;
  return x;
}

/* modes used by a valid patch's entries */
static void count_modes(const uint8_t *patch, uint32_t *modes)
{
  uint32_t m, P;
  memcpy(&m, patch + 16, 4), memcpy(&P, patch + 20, 4);
  for (uint32_t j = 0; j < m; j++) {
    uint32_t meta;
    memcpy(&meta, patch + 32 + ((P + 3) & ~3u) + 12 * j + 8, 4);
    modes[meta >> 24 < 4 ? meta >> 24 : 0]++;
  }
}

/* One round trip: returns the patch size. Checks: status, size/changed/entries against the
 * independent rule, old == next after encode, digest, apply onto a copy of old == next. */
static uint64_t round_trip(const char *what, const uint8_t *old0, const uint8_t *next, uint64_t n, int e, uint32_t *modes)
{
  uint8_t *old = dup_bytes(old0, n), *dst = dup_bytes(old0, n);
  uint64_t bound = rfk_delta_bound(n);
  uint8_t *patch = malloc(bound);
  expect_size x = size_indep(next, old0, n, e);
  rfk_delta_region g = {next, old, n, e, patch, bound};
  rfk_delta_out o;
  memset(&o, 0xcc, sizeof o);
  int rc = rfk_ref_delta_encode(&g, 1, &o);
  EXPECT(rc == RFK_OK && o.status == RFK_OK, "%s: encode rc %d status %d", what, rc, o.status);
  EXPECT(o.size == x.size && o.changed == x.changed && o.entries == x.entries,
         "%s: size %llu changed %llu entries %u, expected %llu %llu %u", what, (unsigned long long)o.size,
         (unsigned long long)o.changed, o.entries, (unsigned long long)x.size, (unsigned long long)x.changed, x.entries);
  EXPECT(!memcmp(old, next, n), "%s: old is not next after encode", what);
  EXPECT(o.digest == digest_indep(next, n), "%s: digest", what);
  uint64_t hd;
  memcpy(&hd, patch + 24, 8);
  EXPECT(hd == o.digest, "%s: header digest", what);
  uint32_t seen[4] = {0, 0, 0, 0};
  count_modes(patch, seen);
  for (int m = 0; m < 4; m++) {
    EXPECT(seen[m] == x.modes[m], "%s: %u entries of mode %d, expected %u", what, seen[m], m, x.modes[m]);
    if (modes)
      modes[m] += seen[m];
  }
  rfk_delta_target t = {patch, o.size, dst, n, e};
  rfk_delta_status st;
  rc = rfk_ref_delta_apply(&t, 1, &st);
  char msg[160];
  rfk_delta_format(&st, msg, sizeof msg);
  EXPECT(rc == RFK_OK && st.code == RFK_OK, "%s: apply rc %d: %s", what, rc, msg);
  size_t bad = 0, first = 0;
  for (uint64_t i = 0; i < n; i++)
    if (dst[i] != next[i] && !bad++)
      first = i;
  EXPECT(!bad, "%s: %zu bytes differ after apply, first at %zu: 0x%02x, want 0x%02x", what, bad, first, dst[first],
         next[first]);
  free(old), free(dst), free(patch);
  return o.size;
}

static void test_round_trips(void)
{
  static const double dens[] = {0, 1e-4, 3e-3, 0.01, 0.03, 0.1, 0.3, 0.6, 0.9, 0.97, 1};
  static const uint64_t elems[] = {0, 1, 7, 255, 256, 257, 4096, 8192, 16384, 16385, 3 * 16384 + 1001};
  for (int e = 1; e <= 4; e *= 2) {
    uint32_t modes[4] = {0, 0, 0, 0};
    for (size_t si = 0; si < sizeof elems / sizeof *elems; si++)
      for (size_t di = 0; di < sizeof dens / sizeof *dens; di++) {
        uint64_t n = elems[si] * e;
        uint8_t *old = rand_bytes(n), *next = dup_bytes(old, n);
        for (uint64_t i = 0; i < elems[si]; i++)
          if (dens[di] >= 1 || unif() < dens[di])
            change(next, old, i, e);
        char what[96];
        snprintf(what, sizeof what, "esize %d, %llu elements, density %g", e, (unsigned long long)elems[si], dens[di]);
        uint64_t size = round_trip(what, old, next, n, e, modes);
        if (dens[di] == 0)
          EXPECT(size == 32, "%s: unchanged region's patch is %llu bytes, want 32", what, (unsigned long long)size);
        free(old), free(next);
      }
    for (int m = 0; m < 4; m++)
      EXPECT(modes[m] > 0, "esize %d: mode %d never chosen", e, m);
  }
}

/* clustered changes: whole chunks, a tile of 256 changes (TILES not allowed), runs of 128
 * elements (an FP8 block row), only the last partial chunk */
static void test_clusters(void)
{
  for (int e = 1; e <= 4; e *= 2) {
    uint64_t el = (5 * 16384 + 3000) / e, n = el * e;
    uint8_t *old = rand_bytes(n), *next = dup_bytes(old, n);
    for (uint64_t i = 0; i < 16384u / e; i++) /* chunk 0: all */
      change(next, old, i, e);
    for (uint64_t i = 0; i < 256; i++) /* chunk 1: one full tile and 3 more changes */
      change(next, old, 16384 / e + 512 + i, e);
    for (uint64_t i = 0; i < 3; i++)
      change(next, old, 16384 / e + 2000 + 7 * i, e);
    for (uint64_t r = 0; r < 40; r++) /* from chunk 2: runs of 128 every 160 elements */
      for (uint64_t i = 0; i < 128; i++)
        change(next, old, 2 * (16384 / e) + r * 160 + i, e);
    change(next, old, el - 1, e); /* last element of the partial chunk */
    char what[64];
    snprintf(what, sizeof what, "clusters esize %d", e);
    round_trip(what, old, next, n, e, NULL);
    /* chunk 1 alone: the full tile makes TILES ineligible whatever the sizes */
    uint8_t *next1 = dup_bytes(old, n);
    for (uint64_t i = 0; i < 256; i++)
      change(next1, old, 16384 / e + i, e);
    uint8_t *old1 = dup_bytes(old, n), *patch = malloc(rfk_delta_bound(n));
    rfk_delta_region g = {next1, old1, n, e, patch, rfk_delta_bound(n)};
    rfk_delta_out o;
    rfk_ref_delta_encode(&g, 1, &o);
    uint32_t meta;
    memcpy(&meta, patch + o.size - 12 + 8, 4); /* the one entry ends the patch */
    EXPECT(o.entries == 1 && meta >> 24 != RFK_DELTA_TILES && (meta & 0xffffff) == 256,
           "esize %d: a full tile gives mode %u (k %u), not TILES", e, meta >> 24, meta & 0xffffff);
    free(old), free(next), free(next1), free(old1), free(patch);
  }
}

/* -0.0 against 0.0, NaN payloads, inf, FP8 NaN codes: bytes, not values */
static void test_bit_patterns(void)
{
  uint16_t b_old[] = {0x0000, 0x7fc0, 0x7f80, 0xff80, 0x7fc1, 0x3f80, 0x8000};
  uint16_t b_new[] = {0x8000, 0x7fc1, 0xff80, 0x7f80, 0x7fc1, 0x3f80, 0x0000};
  uint32_t f_old[] = {0x00000000u, 0x7fc00000u, 0x7f800000u, 0x80000000u, 0xffc00001u, 0x3f800000u};
  uint32_t f_new[] = {0x80000000u, 0x7fc00001u, 0x7f800000u, 0x00000000u, 0x7fc00001u, 0x3f800001u};
  uint8_t q_old[] = {0x7f, 0xff, 0x00, 0x80, 0x7e, 0xfe};
  uint8_t q_new[] = {0xff, 0x7f, 0x80, 0x00, 0x7e, 0x7e};
  struct { const void *o, *x; uint64_t n; int e; uint64_t changed; } c[3] = {
      {b_old, b_new, sizeof b_old, 2, 5}, {f_old, f_new, sizeof f_old, 4, 5}, {q_old, q_new, sizeof q_old, 1, 5}};
  for (int i = 0; i < 3; i++) {
    uint8_t *old = dup_bytes(c[i].o, c[i].n), *dst = dup_bytes(c[i].o, c[i].n), patch[256];
    rfk_delta_region g = {c[i].x, old, c[i].n, c[i].e, patch, sizeof patch};
    rfk_delta_out o;
    int rc = rfk_ref_delta_encode(&g, 1, &o);
    rfk_delta_target t = {patch, o.size, dst, c[i].n, c[i].e};
    rfk_delta_status st;
    int rc2 = rfk_ref_delta_apply(&t, 1, &st);
    EXPECT(rc == RFK_OK && rc2 == RFK_OK && o.changed == c[i].changed && !memcmp(dst, c[i].x, c[i].n) &&
               !memcmp(old, c[i].x, c[i].n),
           "esize %d specials: rc %d/%d, %llu changed (want %llu), bytes %s", c[i].e, rc, rc2,
           (unsigned long long)o.changed, (unsigned long long)c[i].changed, memcmp(dst, c[i].x, c[i].n) ? "differ" : "equal");
    free(old), free(dst);
  }
}

static void test_overflow(void)
{
  const int e = 2;
  const uint64_t n = 2 * 16384 + 778;
  uint8_t *old0 = rand_bytes(n), *next = dup_bytes(old0, n);
  for (uint64_t i = 0; i < n / e; i++)
    if (unif() < 0.02)
      change(next, old0, i, e);
  uint64_t bound = rfk_delta_bound(n);
  uint8_t *full = malloc(bound), *old = dup_bytes(old0, n);
  rfk_delta_region g = {next, old, n, e, full, bound};
  rfk_delta_out ref;
  rfk_ref_delta_encode(&g, 1, &ref);
  uint32_t P;
  memcpy(&P, full + 20, 4);
  /* capacities: one byte short, only the payload fits, only the header, none */
  uint64_t caps[] = {ref.size - 1, 32 + P, 31, 0};
  for (int ci = 0; ci < 4; ci++) {
    uint64_t cap = caps[ci];
    uint8_t *buf = malloc(cap + 64);
    memset(buf, 0xa5, cap + 64);
    memcpy(old, old0, n);
    rfk_delta_region h = {next, old, n, e, cap ? buf : NULL, cap};
    rfk_delta_out o;
    int rc = rfk_ref_delta_encode(&h, 1, &o);
    int guard = 1, payload = 1;
    for (uint64_t b = cap; b < cap + 64; b++)
      guard &= buf[b] == 0xa5;
    if (cap >= 32 + P)
      payload = !memcmp(buf + 32, full + 32, P);
    EXPECT(rc == RFK_OK && o.status == RFK_DELTA_OVERFLOW && o.size == ref.size && o.digest == ref.digest &&
               o.changed == ref.changed && guard && payload && !memcmp(old, next, n),
           "cap %llu of %llu: rc %d status %d size %llu, guard %s, records %s, old %s", (unsigned long long)cap,
           (unsigned long long)ref.size, rc, o.status, (unsigned long long)o.size, guard ? "kept" : "WRITTEN",
           payload ? "as in the full patch" : "differ", memcmp(old, next, n) ? "not updated" : "updated");
    free(buf);
  }
  /* exactly the size fits */
  memcpy(old, old0, n);
  uint8_t *buf = malloc(ref.size);
  rfk_delta_region h = {next, old, n, e, buf, ref.size};
  rfk_delta_out o;
  rfk_ref_delta_encode(&h, 1, &o);
  EXPECT(o.status == RFK_OK && !memcmp(buf, full, ref.size), "cap == size: status %d, bytes %s", o.status,
         memcmp(buf, full, ref.size) ? "differ" : "equal");
  free(old0), free(next), free(full), free(old), free(buf);
}

/* ---- malformed patches ---- */
typedef struct fixture {
  uint64_t n;
  int e;
  uint8_t *old, *next, *patch;
  uint64_t len;
} fixture;

/* esize 1, 3 chunks + 1001 bytes, entries in modes LIST (chunk 0), TILES (chunk 1), BITMAP
 * (chunk 2) and TILES in the partial chunk 3 (4 tiles, the last of 233 elements) */
static fixture make_fixture(void)
{
  fixture f;
  f.e = 1, f.n = 3 * 16384 + 1001;
  f.old = rand_bytes(f.n), f.next = dup_bytes(f.old, f.n);
  for (int i = 0; i < 20; i++)
    change(f.next, f.old, 37 * i + 5, 1);
  for (int i = 0; i < 300; i++)
    change(f.next, f.old, 16384 + 53 * i + 1, 1);
  for (int i = 0; i < 4000; i++)
    change(f.next, f.old, 2 * 16384 + 4 * i, 1);
  for (int i = 0; i < 40; i++)
    change(f.next, f.old, 3 * 16384 + 25 * i, 1);
  change(f.next, f.old, f.n - 1, 1);
  uint8_t *o = dup_bytes(f.old, f.n);
  f.patch = malloc(rfk_delta_bound(f.n));
  rfk_delta_region g = {f.next, o, f.n, 1, f.patch, rfk_delta_bound(f.n)};
  rfk_delta_out out;
  rfk_ref_delta_encode(&g, 1, &out);
  f.len = out.size;
  free(o);
  return f;
}

static uint8_t *entry_at(const fixture *f, uint8_t *p, uint32_t j)
{
  uint32_t P;
  memcpy(&P, p + 20, 4);
  (void)f;
  return p + 32 + ((P + 3) & ~3u) + 12 * j;
}

static uint32_t rd32(const uint8_t *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* apply a mutated copy: expects refusal with exactly `want` as message, dst untouched */
static void refused(const fixture *f, const char *what, uint8_t *p, uint64_t len, int esize, uint64_t n, const char *want)
{
  uint8_t *exact = malloc(len ? len : 1), *dst = dup_bytes(f->old, f->n);
  memcpy(exact, p, len); /* exactly len bytes, so ASan sees any read past the patch */
  rfk_delta_target t = {exact, len, dst, n, esize};
  rfk_delta_status st;
  int rc = rfk_ref_delta_apply(&t, 1, &st);
  char msg[200];
  rfk_delta_format(&st, msg, sizeof msg);
  EXPECT(rc == RFK_DELTA_MALFORMED && !strcmp(msg, want), "%s: rc %d, message '%s', want '%s'", what, rc, msg, want);
  EXPECT(!memcmp(dst, f->old, f->n), "%s: dst changed by a refused patch", what);
  free(exact), free(dst);
}

static void test_malformed(void)
{
  fixture f = make_fixture();
  uint32_t P = rd32(f.patch + 20), m = rd32(f.patch + 16);
  uint32_t modes[4] = {0, 0, 0, 0};
  count_modes(f.patch, modes);
  EXPECT(m == 4 && modes[0] == 1 && modes[1] == 2 && modes[2] == 1 && P % 4 != 0,
         "fixture: %u entries, modes %u/%u/%u/%u, payload %u", m, modes[0], modes[1], modes[2], modes[3], P);
  { /* the fixture itself applies */
    uint8_t *dst = dup_bytes(f.old, f.n);
    rfk_delta_target t = {f.patch, f.len, dst, f.n, 1};
    rfk_delta_status st;
    EXPECT(rfk_ref_delta_apply(&t, 1, &st) == RFK_OK && !memcmp(dst, f.next, f.n), "fixture applies");
    free(dst);
  }
  uint8_t *p = malloc(f.len + 8);
  char want[200];
#define FRESH() memcpy(p, f.patch, f.len)
  FRESH();
  refused(&f, "short", p, 31, 1, f.n, "patch of 31 bytes is shorter than its 32-byte header");
  FRESH(), p[0] ^= 1;
  refused(&f, "magic", p, f.len, 1, f.n, "magic 0x31444653, expected 0x31444652");
  FRESH();
  refused(&f, "esize", p, f.len, 2, f.n - 1, "element size 1, expected 2");
  FRESH(), p[6] = 9;
  refused(&f, "reserved", p, f.len, 1, f.n, "header byte 6 is 0x09, expected 0");
  FRESH();
  snprintf(want, sizeof want, "patch of a %llu-byte region, expected %llu", (unsigned long long)f.n,
           (unsigned long long)f.n + 1);
  refused(&f, "region", p, f.len, 1, f.n + 1, want);
  FRESH(), wr32(p + 16, 5);
  refused(&f, "entries", p, f.len, 1, f.n, "5 entries for a region of 4 chunks");
  FRESH(), memset(p + f.len, 0, 8);
  snprintf(want, sizeof want, "%llu bytes received, the header describes %llu", (unsigned long long)f.len + 4,
           (unsigned long long)f.len);
  refused(&f, "length", p, f.len + 4, 1, f.n, want);
  FRESH(), p[32 + P] = 1;
  snprintf(want, sizeof want, "padding byte %u is 0x01, expected 0", 32 + P);
  refused(&f, "pad", p, f.len, 1, f.n, want);
  FRESH(), wr32(entry_at(&f, p, 3), 4);
  refused(&f, "chunk", p, f.len, 1, f.n, "entry 3 (chunk 4): chunk 4 outside the region's 4 chunks");
  FRESH(), wr32(entry_at(&f, p, 2), 1);
  refused(&f, "order", p, f.len, 1, f.n, "entry 2 (chunk 1): chunk 1 not after the previous entry's chunk 1");
  FRESH(), wr32(entry_at(&f, p, 1) + 8, 4u << 24 | 300);
  refused(&f, "mode", p, f.len, 1, f.n, "entry 1 (chunk 1): mode 4, expected 0..3");
  FRESH(), wr32(entry_at(&f, p, 0) + 8, 0);
  refused(&f, "count 0", p, f.len, 1, f.n, "entry 0 (chunk 0): 0 changes in a chunk of 16384 elements");
  FRESH(), wr32(entry_at(&f, p, 3) + 8, 1u << 24 | 1002);
  refused(&f, "count", p, f.len, 1, f.n, "entry 3 (chunk 3): 1002 changes in a chunk of 1001 elements");
  FRESH(), wr32(entry_at(&f, p, 0) + 4, 1); /* a later entry's offset fails its predecessor's END first */
  refused(&f, "offset", p, f.len, 1, f.n, "entry 0 (chunk 0): record at 1, expected 0 (after the previous record)");
  FRESH(), wr32(entry_at(&f, p, 1) + 4, 61);
  refused(&f, "offset of entry 1", p, f.len, 1, f.n,
          "entry 0 (chunk 0): record ends at 60, expected 61 (the next record or the payload end)");
  FRESH(), wr32(entry_at(&f, p, 0) + 8, 21);
  refused(&f, "end", p, f.len, 1, f.n, "entry 0 (chunk 0): record ends at 63, expected 60 (the next record or the payload end)");
  /* TILES record of chunk 3 (4 tiles: 256, 256, 256, 233 elements) at its offset */
  uint8_t *rec3 = p + 32 + rd32(f.patch + 32 + ((P + 3) & ~3u) + 36 + 4);
  uint8_t *rec1 = p + 32 + rd32(f.patch + 32 + ((P + 3) & ~3u) + 12 + 4);
  FRESH(), rec3[3] = 234;
  refused(&f, "tile", p, f.len, 1, f.n, "entry 3 (chunk 3): tile 3 holds 234 changes, at most 233");
  FRESH(), rec3[0]++;
  refused(&f, "tilesum", p, f.len, 1, f.n, "entry 3 (chunk 3): tile counts add up to 42, the entry says 41");
  FRESH(), rec3[4 + 40] = 233; /* the last change is in tile 3 (233 elements): index 233 is outside */
  refused(&f, "tile index", p, f.len, 1, f.n, "entry 3 (chunk 3): element index 233 at position 40 not below 233");
  FRESH(), rec1[64 + 2] = rec1[64 + 1]; /* changes 1 and 2 (elements 54, 107) are in tile 0 */
  refused(&f, "tile increasing", p, f.len, 1, f.n,
          "entry 1 (chunk 1): element index 54 at position 2 not above the previous 54");
  /* BITMAP record of chunk 2: popcount */
  uint8_t *rec2 = p + 32 + rd32(f.patch + 32 + ((P + 3) & ~3u) + 24 + 4);
  FRESH(), rec2[1] ^= 0x80;
  refused(&f, "bits", p, f.len, 1, f.n, "entry 2 (chunk 2): bitmap has 4001 bits set, the entry says 4000");
  /* LIST record of chunk 0: 20 u16 indexes */
  FRESH(), p[32 + 2 * 7] = 0x00, p[32 + 2 * 7 + 1] = 0x40;
  refused(&f, "list index", p, f.len, 1, f.n, "entry 0 (chunk 0): element index 16384 at position 7 not below 16384");
  FRESH(), p[32 + 2 * 7] = p[32 + 2 * 6], p[32 + 2 * 7 + 1] = p[32 + 2 * 6 + 1];
  snprintf(want, sizeof want, "entry 0 (chunk 0): element index %u at position 7 not above the previous %u",
           37 * 6 + 5, 37 * 6 + 5);
  refused(&f, "list increasing", p, f.len, 1, f.n, want);
  /* two faults: the first by (entry, check, position) is reported */
  FRESH(), rec3[0]++, p[32 + 2 * 9] = 0xff, p[32 + 2 * 9 + 1] = 0xff;
  refused(&f, "first fault", p, f.len, 1, f.n, "entry 0 (chunk 0): element index 65535 at position 9 not below 16384");
  FRESH(), p[32 + 2 * 9] = p[32 + 2 * 8], p[32 + 2 * 9 + 1] = p[32 + 2 * 8 + 1], p[32 + 2 * 12] = 0xff,
           p[32 + 2 * 12 + 1] = 0xff;
  refused(&f, "index before increasing", p, f.len, 1, f.n,
          "entry 0 (chunk 0): element index 65535 at position 12 not below 16384");
  /* records chained consistently past the payload (entry 2 claims 6000 changes, entry 3 follows
   * it): entry 2's record is not read, the END of the last entry reports it */
  FRESH(), wr32(entry_at(&f, p, 2) + 8, 2u << 24 | 6000), wr32(entry_at(&f, p, 3) + 4, 724 + 2048 + 6000);
  refused(&f, "record past payload", p, f.len, 1, f.n,
          "entry 3 (chunk 3): record ends at 8858, expected 6858 (the next record or the payload end)");
  /* BITPAD: a bitmap in a partial chunk of 1001 elements (not a multiple of 8) */
  {
    fixture g = f;
    g.next = dup_bytes(f.old, f.n);
    for (int i = 0; i < 300; i++)
      change(g.next, f.old, 3 * 16384 + 3 * i, 1);
    uint8_t *o = dup_bytes(f.old, f.n), *q = malloc(rfk_delta_bound(f.n));
    rfk_delta_region r = {g.next, o, f.n, 1, q, rfk_delta_bound(f.n)};
    rfk_delta_out out;
    rfk_ref_delta_encode(&r, 1, &out);
    uint32_t Pq = rd32(q + 20), meta = rd32(q + 32 + ((Pq + 3) & ~3u) + 8);
    EXPECT(out.entries == 1 && meta >> 24 == RFK_DELTA_BITMAP, "bitpad fixture: mode %u", meta >> 24);
    q[32 + 125] |= 0x80; /* byte 125 holds elements 1000..1007: only bit 0 is inside */
    refused(&g, "bitpad", q, out.size, 1, f.n,
            "entry 0 (chunk 3): bitmap byte 125 is 0x80: bits past the chunk's 1001 elements set");
    free(g.next), free(o), free(q);
  }
  /* several targets: the malformed one untouched, the others applied */
  {
    uint8_t *d0 = dup_bytes(f.old, f.n), *d1 = dup_bytes(f.old, f.n), *d2 = dup_bytes(f.old, f.n);
    FRESH(), p[0] = 0;
    rfk_delta_target t[3] = {{f.patch, f.len, d0, f.n, 1}, {p, f.len, d1, f.n, 1}, {f.patch, f.len, d2, f.n, 1}};
    rfk_delta_status st[3];
    int rc = rfk_ref_delta_apply(t, 3, st);
    EXPECT(rc == RFK_DELTA_MALFORMED && st[0].code == RFK_OK && st[1].code == RFK_DC_MAGIC && st[2].code == RFK_OK &&
               !memcmp(d0, f.next, f.n) && !memcmp(d1, f.old, f.n) && !memcmp(d2, f.next, f.n),
           "3 targets, the middle one malformed: rc %d codes %d %d %d", rc, st[0].code, st[1].code, st[2].code);
    free(d0), free(d1), free(d2);
  }
#undef FRESH
  free(p), free(f.old), free(f.next), free(f.patch);
}

/* random corruption: every mutated patch is refused (dst untouched) or applied; when applied,
 * dst equals next exactly when its digest equals next's */
static void test_corruption(void)
{
  fixture f = make_fixture();
  uint64_t dn = digest(f.next, f.n);
  uint8_t *p = malloc(f.len), *dst = malloc(f.n);
  int refused_n = 0, applied_wrong = 0, applied_right = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(p, f.patch, f.len);
    int flips = 1 + (int)(rnd() % 3);
    for (int k = 0; k < flips; k++)
      p[rnd() % f.len] ^= (uint8_t)(1u << (rnd() % 8));
    memcpy(dst, f.old, f.n);
    rfk_delta_target t = {p, f.len, dst, f.n, 1};
    rfk_delta_status st;
    int rc = rfk_ref_delta_apply(&t, 1, &st);
    if (rc == RFK_DELTA_MALFORMED) {
      refused_n++;
      EXPECT(!memcmp(dst, f.old, f.n), "mutation %d: refused patch changed dst", it);
      continue;
    }
    int same = !memcmp(dst, f.next, f.n);
    EXPECT(rc == RFK_OK && same == (digest(dst, f.n) == dn), "mutation %d: rc %d, bytes %s, digest %s", it, rc,
           same ? "equal" : "differ", digest(dst, f.n) == dn ? "equal" : "differs");
    same ? applied_right++ : applied_wrong++;
  }
  printf("  3000 corrupted patches: %d refused, %d applied and caught by the digest, %d applied harmlessly\n", refused_n,
         applied_wrong, applied_right);
  EXPECT(refused_n > 100 && applied_wrong > 100, "both outcomes occur (%d refused, %d caught)", refused_n, applied_wrong);
  free(p), free(dst), free(f.old), free(f.next), free(f.patch);
}

static void test_digest(void)
{
  /* known value: the empty region, and independent computation on odd lengths */
  EXPECT(digest("", 0) == mix(0x243f6a8885a308d3ull), "digest of nothing");
  for (uint64_t n = 0; n < 100; n += 1 + n / 3) {
    uint8_t *p = rand_bytes(n);
    EXPECT(digest(p, n) == digest_indep(p, n), "digest of %llu bytes", (unsigned long long)n);
    free(p);
  }
  const uint64_t n = 4099;
  uint8_t *p = rand_bytes(n + 1), *q = malloc(n + 1);
  uint64_t d = digest(p, n);
  int missed = 0;
  for (uint64_t b = 0; b < n * 8; b++) { /* every single flipped bit */
    memcpy(q, p, n);
    q[b / 8] ^= (uint8_t)(1u << (b % 8));
    missed += digest(q, n) == d;
  }
  EXPECT(!missed, "%d of %llu single bit flips missed", missed, (unsigned long long)n * 8);
  missed = 0;
  for (uint64_t i = 0; i + 1 < n; i++) { /* adjacent bytes swapped */
    if (p[i] == p[i + 1])
      continue;
    memcpy(q, p, n);
    q[i] = p[i + 1], q[i + 1] = p[i];
    missed += digest(q, n) == d;
  }
  EXPECT(!missed, "%d adjacent byte swaps missed", missed);
  missed = 0;
  for (int it = 0; it < 2000; it++) { /* two 8-byte words swapped */
    uint64_t i = rnd() % (n / 8), j = rnd() % (n / 8);
    if (!memcmp(p + 8 * i, p + 8 * j, 8))
      continue;
    memcpy(q, p, n);
    memcpy(q + 8 * i, p + 8 * j, 8), memcpy(q + 8 * j, p + 8 * i, 8);
    missed += digest(q, n) == d;
  }
  EXPECT(!missed, "%d word swaps missed", missed);
  memcpy(q + 1, p, n); /* the region shifted by one byte, by 8 bytes, one byte missing */
  q[0] = 0;
  EXPECT(digest(q, n) != d && digest(q + 1, n - 1) != d && digest(p, n - 1) != d && digest(p, n + 1) != d,
         "shifted / shorter / longer region");
  memset(q, 0, n);
  EXPECT(digest(q, n) != digest(q, n - 1) && digest(q, 8) != digest(q, 7), "zero regions of different lengths differ");
  free(p), free(q);
}

/* one call with many regions of mixed element sizes equals the calls one by one */
static void test_grouped(void)
{
  enum { R = 9 };
  rfk_delta_region g[R], h;
  rfk_delta_out o[R], o1;
  uint8_t *olds[R], *olds1[R], *nexts[R], *patches[R], *patches1[R];
  for (int i = 0; i < R; i++) {
    int e = 1 << (i % 3);
    uint64_t n = (uint64_t)(rnd() % 70000 / e * e);
    olds[i] = rand_bytes(n), nexts[i] = dup_bytes(olds[i], n), olds1[i] = dup_bytes(olds[i], n);
    for (uint64_t k = 0; k < n / e; k++)
      if (unif() < 0.05 * i)
        change(nexts[i], olds[i], k, e);
    patches[i] = malloc(rfk_delta_bound(n)), patches1[i] = malloc(rfk_delta_bound(n));
    memset(patches[i], 0, rfk_delta_bound(n)), memset(patches1[i], 0, rfk_delta_bound(n));
    g[i] = (rfk_delta_region){nexts[i], olds[i], n, e, patches[i], i == 4 ? 40 : rfk_delta_bound(n)};
  }
  EXPECT(rfk_ref_delta_encode(g, R, o) == RFK_OK, "grouped encode");
  for (int i = 0; i < R; i++) {
    h = g[i], h.old = olds1[i], h.patch = patches1[i];
    rfk_ref_delta_encode(&h, 1, &o1);
    EXPECT(!memcmp(&o1, &o[i], sizeof o1) && !memcmp(patches1[i], patches[i], rfk_delta_bound(g[i].n)),
           "region %d of %d: same result and bytes as alone", i, R);
    free(olds[i]), free(olds1[i]), free(nexts[i]), free(patches[i]), free(patches1[i]);
  }
}

static void test_args(void)
{
  _Alignas(16) uint8_t a[64];
  _Alignas(16) uint8_t b[64];
  rfk_delta_out o;
  rfk_delta_status st;
  uint64_t d;
  rfk_delta_region bad[] = {
      {a, b, 12, 3, a, 64}, {a, b, 13, 4, a, 64}, {NULL, b, 8, 1, a, 64}, {a, NULL, 8, 1, a, 64},
      {a, b, 1ull << 32, 1, a, 64}, {a + 1, b, 8, 2, a, 64}, {a, b, 8, 1, NULL, 64}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    EXPECT(rfk_ref_delta_encode(&bad[i], 1, &o) == RFK_ERR_ARG, "encode bad argument %zu", i);
  rfk_delta_target t[] = {{a, 32, b, 8, 3}, {a, 32, NULL, 8, 1}, {NULL, 32, b, 8, 1}, {a, 32, b + 1, 8, 4}, {a, 32, b, 1ull << 33, 1}};
  for (size_t i = 0; i < sizeof t / sizeof *t; i++)
    EXPECT(rfk_ref_delta_apply(&t[i], 1, &st) == RFK_ERR_ARG, "apply bad argument %zu", i);
  rfk_delta_span s = {NULL, 4};
  EXPECT(rfk_ref_delta_digest(&s, 1, &d) == RFK_ERR_ARG && rfk_ref_delta_encode(NULL, 1, &o) == RFK_ERR_ARG,
         "digest / encode NULL");
  EXPECT(rfk_ref_delta_encode(bad, 0, NULL) == RFK_OK && rfk_delta_bound(0) == 32 && rfk_delta_bound(16385) == 32 + 16388 + 24,
         "no regions; bound");
  EXPECT(!strcmp(rfk_strerror(RFK_DELTA_OVERFLOW), "delta patch larger than its capacity (send the region dense)") &&
             !strcmp(rfk_strerror(RFK_DELTA_MALFORMED), "malformed delta patch (nothing of that region applied)"),
         "rfk_strerror texts");
  rfk_delta_status ok = {0, 0, 0, 0, 0, 0, 0};
  char msg[16];
  rfk_delta_format(&ok, msg, sizeof msg);
  EXPECT(!strcmp(msg, "ok"), "format of ok: '%s'", msg);
}

int main(void)
{
  const char *env = getenv("RFK_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  rng_state = seed;
  printf("test_delta: seed %llu (RFK_SEED=%llu reproduces)\n", (unsigned long long)seed, (unsigned long long)seed);
  static const expect_test tests[] = {
      {"round trips: esize 1/2/4, 11 sizes, densities 0..100%, sizes and modes by the rule", test_round_trips},
      {"clustered changes; a full tile is never TILES", test_clusters},
      {"-0.0, NaN payloads, inf, FP8 NaN codes: bytes, not values", test_bit_patterns},
      {"capacity overflow: nothing written past cap, old updated, digest kept", test_overflow},
      {"malformed patches refused with their message, dst untouched", test_malformed},
      {"random corruption: refused, or caught by the digest", test_corruption},
      {"digest: independent value, bit flips, swaps, shifts, lengths", test_digest},
      {"grouped regions equal single calls", test_grouped},
      {"bad arguments, error texts", test_args},
  };
  return run_tests(tests, sizeof tests / sizeof *tests, NULL, 120);
}
