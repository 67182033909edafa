/* test_delta_gpu.c: the CUDA delta kernels (delta.cu) equal the C reference (delta_ref.c) bit for
 * bit: encode (patch bytes over the whole capacity plus a guard, results, old after the call) on
 * groups of regions of every element size, sizes that are not multiples of the chunk, densities 0
 * to 100%, clustered changes, unaligned pointers, overflow, cap 0, empty regions, 300 regions (two
 * launches) and a 96 MiB region (6144 chunks, 96 group sums); apply (dst bytes and statuses) of valid
 * patches, of every kind of malformed patch and of randomly corrupted ones; digest of odd spans.
 * Device buffers are poisoned first and compared whole. Without a device: "skipped", 0 passed,
 * 0 failed. Seed: time ^ pid, printed; RFK_SEED=<seed> reproduces. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "delta.h"
#include "kernels.h"

/* ASan reserves the shadow gap the CUDA driver maps into; let it */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0:detect_leaks=0"; }

static int passed, failed;

static uint64_t rng_state;
static uint32_t rnd(void)
{
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
static double unif(void) { return rnd() / 2147483648.0; } /* rnd() has 31 bits */

static int cuda_ok(cudaError_t e, const char *what)
{
  if (e == cudaSuccess)
    return 1;
  printf("  %s: %s\n", what, cudaGetErrorString(e));
  return 0;
}

static void *dev_copy(const void *h, size_t n)
{
  void *d = NULL;
  if (!cuda_ok(cudaMalloc(&d, n ? n : 1), "cudaMalloc"))
    return NULL;
  cudaMemcpy(d, h, n, cudaMemcpyHostToDevice);
  return d;
}

static size_t compare(const char *what, const uint8_t *gpu, const uint8_t *ref, size_t n)
{
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (gpu[i] != ref[i] && bad++ < 4)
      printf("  %s: byte %zu: gpu 0x%02x, ref 0x%02x\n", what, i, gpu[i], ref[i]);
  return bad;
}

static void report(int ok, const char *fmt, const char *name)
{
  printf("%s %s%s\n", ok ? "ok  " : "FAIL", name, fmt);
  ok ? passed++ : failed++;
}

/* one region of an encode case: the host data, where it sits in its device buffers */
typedef struct rcase {
  uint64_t n, cap;
  int e, shift; /* shift: bytes added to next/old (unaligned when not a multiple of 16) */
  double density;
  int clustered;
} rcase;

typedef struct built {
  uint8_t *old0, *next, *hold, *hpatch; /* host: old (ref updates it), patch (ref) */
  uint8_t *dnext_buf, *dold_buf, *dpatch_buf;
  uint64_t buf; /* bytes of each buffer: n + shift */
} built;

/* Encodes `cases` on both sides in one call each; compares everything; then applies the patches
 * (both sides) onto copies of the old bytes and compares dst and statuses. */
static void encode_case(const char *name, const rcase *cs, int count)
{
  built *b = calloc(count, sizeof *b);
  rfk_delta_region *hr = calloc(count, sizeof *hr), *dr = calloc(count, sizeof *dr);
  rfk_delta_out *ho = calloc(count, sizeof *ho), *go = calloc(count, sizeof *go), *dout = NULL;
  void *scratch = NULL;
  int ok = 1;
  size_t bad_patch = 0, bad_old = 0, bad_out = 0, bad_dst = 0, bad_st = 0;
  for (int i = 0; i < count; i++) {
    const rcase *c = &cs[i];
    const uint64_t n = c->n, el = n / c->e;
    b[i].buf = n + c->shift;
    b[i].old0 = malloc(b[i].buf + 1), b[i].next = malloc(b[i].buf + 1);
    for (uint64_t k = 0; k < b[i].buf; k++)
      b[i].old0[k] = (uint8_t)rnd();
    memcpy(b[i].next, b[i].old0, b[i].buf);
    uint8_t *o = b[i].old0 + c->shift, *x = b[i].next + c->shift;
    for (uint64_t k = 0; k < el; k++) {
      int ch = c->clustered ? (k / 128) % 7 == 0 || unif() < c->density : unif() < c->density;
      if (c->density >= 1 || ch)
        do
          for (int bb = 0; bb < c->e; bb++)
            x[k * c->e + bb] = (uint8_t)rnd();
        while (!memcmp(x + k * c->e, o + k * c->e, c->e));
    }
    b[i].hold = malloc(b[i].buf + 1), b[i].hpatch = malloc(c->cap + 64);
    memcpy(b[i].hold, b[i].old0, b[i].buf);
    memset(b[i].hpatch, 0x5a, c->cap + 64);
    b[i].dnext_buf = dev_copy(b[i].next, b[i].buf), b[i].dold_buf = dev_copy(b[i].old0, b[i].buf);
    b[i].dpatch_buf = dev_copy(b[i].hpatch, c->cap + 64);
    if (!b[i].dnext_buf || !b[i].dold_buf || !b[i].dpatch_buf)
      ok = 0;
    hr[i] = (rfk_delta_region){b[i].next + c->shift, b[i].hold + c->shift, n, c->e, c->cap ? b[i].hpatch : NULL, c->cap};
    dr[i] = (rfk_delta_region){b[i].dnext_buf + c->shift, b[i].dold_buf + c->shift, n, c->e,
                               c->cap ? b[i].dpatch_buf : NULL, c->cap};
  }
  uint64_t sb = rfk_delta_scratch_bytes(dr, count);
  ok &= cuda_ok(cudaMalloc(&scratch, sb), "cudaMalloc scratch") &&
        cuda_ok(cudaMalloc((void **)&dout, sizeof *dout * count), "cudaMalloc out");
  if (!ok)
    goto done;
  cudaMemset(scratch, 0xee, sb); /* the encoder must not need it zeroed */
  cudaMemset(dout, 0xcc, sizeof *dout * count);
  int rref = rfk_ref_delta_encode(hr, count, ho);
  int rgpu = rfk_cuda_delta_encode(dr, count, dout, scratch, sb, NULL);
  ok &= cuda_ok(cudaDeviceSynchronize(), "encode kernels") && rref == RFK_OK && rgpu == RFK_OK;
  cudaMemcpy(go, dout, sizeof *go * count, cudaMemcpyDeviceToHost);
  bad_out = compare("out", (uint8_t *)go, (uint8_t *)ho, sizeof *go * count);
  for (int i = 0; i < count && ok; i++) {
    uint8_t *g = malloc(cs[i].cap + 64 > b[i].buf ? cs[i].cap + 64 : b[i].buf);
    cudaMemcpy(g, b[i].dpatch_buf, cs[i].cap + 64, cudaMemcpyDeviceToHost);
    bad_patch += compare("patch", g, b[i].hpatch, cs[i].cap + 64);
    cudaMemcpy(g, b[i].dold_buf, b[i].buf, cudaMemcpyDeviceToHost);
    bad_old += compare("old", g, b[i].hold, b[i].buf);
    free(g);
  }
  /* apply the patches that fit onto the old bytes, both sides */
  {
    rfk_delta_target *ht = calloc(count, sizeof *ht), *dt = calloc(count, sizeof *dt);
    rfk_delta_status *hs = calloc(count, sizeof *hs), *gs = calloc(count, sizeof *gs), *ds = NULL;
    uint8_t **hdst = calloc(count, sizeof *hdst), **ddst = calloc(count, sizeof *ddst);
    int m = 0;
    for (int i = 0; i < count; i++) {
      if (ho[i].status != RFK_OK)
        continue;
      hdst[m] = malloc(b[i].buf + 1);
      memcpy(hdst[m], b[i].old0, b[i].buf);
      ddst[m] = dev_copy(b[i].old0, b[i].buf);
      ht[m] = (rfk_delta_target){b[i].hpatch, ho[i].size, hdst[m] + cs[i].shift, cs[i].n, cs[i].e};
      dt[m] = (rfk_delta_target){b[i].dpatch_buf, ho[i].size, ddst[m] + cs[i].shift, cs[i].n, cs[i].e};
      m++;
    }
    cudaMalloc((void **)&ds, sizeof *ds * (m ? m : 1));
    int aref = rfk_ref_delta_apply(ht, m, hs);
    int agpu = rfk_cuda_delta_apply(dt, m, ds, NULL);
    ok &= cuda_ok(cudaDeviceSynchronize(), "apply kernels") && aref == RFK_OK && agpu == RFK_OK;
    cudaMemcpy(gs, ds, sizeof *gs * (m ? m : 1), cudaMemcpyDeviceToHost);
    bad_st = compare("status", (uint8_t *)gs, (uint8_t *)hs, sizeof *gs * m);
    for (int i = 0, j = 0; i < count; i++) {
      if (ho[i].status != RFK_OK)
        continue;
      uint8_t *g = malloc(b[i].buf + 1);
      cudaMemcpy(g, ddst[j], b[i].buf, cudaMemcpyDeviceToHost);
      bad_dst += compare("dst", g, hdst[j], b[i].buf) + compare("dst == next", g, b[i].next, b[i].buf);
      free(g), free(hdst[j]), cudaFree(ddst[j]);
      j++;
    }
    cudaFree(ds);
    free(ht), free(dt), free(hs), free(gs), free(hdst), free(ddst);
  }
  ok &= !bad_out && !bad_patch && !bad_old && !bad_dst && !bad_st;
  {
    char tail[160];
    snprintf(tail, sizeof tail, ": %d regions, rc %d/%d, %zu out / %zu patch / %zu old / %zu dst / %zu status bytes differ",
             count, rref, rgpu, bad_out, bad_patch, bad_old, bad_dst, bad_st);
    report(ok, tail, name);
  }
  goto cleanup;
done:
  report(0, ": setup failed", name);
cleanup:
  for (int i = 0; i < count; i++) {
    free(b[i].old0), free(b[i].next), free(b[i].hold), free(b[i].hpatch);
    cudaFree(b[i].dnext_buf), cudaFree(b[i].dold_buf), cudaFree(b[i].dpatch_buf);
  }
  cudaFree(scratch), cudaFree(dout);
  free(b), free(hr), free(dr), free(ho), free(go);
}

static void test_encode(void)
{
  static const double dens[] = {0, 1e-4, 3e-3, 0.03, 0.1, 0.3, 0.95, 1};
  rcase cs[64];
  int m = 0;
  for (int e = 1; e <= 4; e *= 2)
    for (int d = 0; d < 8; d++) {
      uint64_t n = (uint64_t)(3 * 16384 + 1000 + 8 * (rnd() % 2000)) / e * e;
      cs[m++] = (rcase){n, rfk_delta_bound(n), e, 0, dens[d], 0};
    }
  encode_case("encode 24 regions: esize 1/2/4 x densities 0..100%, aligned", cs, m);
  m = 0;
  for (int e = 1; e <= 4; e *= 2) {
    uint64_t n = (uint64_t)(2 * 16384 + 777 * e) / e * e;
    cs[m++] = (rcase){n, rfk_delta_bound(n), e, e, 0.02, 0};       /* unaligned by e */
    cs[m++] = (rcase){n, rfk_delta_bound(n), e, 16 + e, 0.4, 1};   /* clustered runs of 128 */
    cs[m++] = (rcase){n, 200, e, 0, 0.05, 0};                      /* overflow */
    cs[m++] = (rcase){n, 0, e, 0, 0.05, 0};                        /* cap 0: old and digest only */
    cs[m++] = (rcase){0, 64, e, 0, 0, 0};                          /* empty region */
    cs[m++] = (rcase){(uint64_t)e * 5, 64, e, 0, 1, 0};            /* 5 elements */
    cs[m++] = (rcase){16384, rfk_delta_bound(16384), e, 0, 0.5, 0}; /* exactly one chunk */
  }
  encode_case("encode 21 regions: unaligned, clustered, overflow, cap 0, empty, tiny, one chunk", cs, m);
  rcase *many = malloc(sizeof *many * 300);
  for (int i = 0; i < 300; i++) {
    int e = 1 << (i % 3);
    uint64_t n = (uint64_t)(rnd() % 40000) / e * e;
    many[i] = (rcase){n, i % 17 == 5 ? 100 : rfk_delta_bound(n), e, 0, 0.01 * (i % 11), 0};
  }
  encode_case("encode 300 regions (two launches of 256)", many, 300);
  free(many);
  rcase big[2] = {{96ull << 20, rfk_delta_bound(96ull << 20), 2, 0, 0.03, 0}, {32ull << 20, (32ull << 20) / 20, 1, 0, 0.003, 0}};
  encode_case("encode 96 MiB bf16 at 3% + 32 MiB fp8 at 0.3% (6144 + 2048 chunks)", big, 2);
}

/* malformed and corrupted patches: statuses and dst equal to the reference */
static void test_malformed(void)
{
  const uint64_t n = 3 * 16384 + 1001;
  uint8_t *old = malloc(n), *next = malloc(n), *o = malloc(n), *patch = malloc(rfk_delta_bound(n));
  for (uint64_t i = 0; i < n; i++)
    old[i] = next[i] = (uint8_t)rnd();
  for (uint64_t i = 0; i < n; i++) /* LIST, TILES, BITMAP, TILES chunks as in test_delta.c */
    if ((i < 16384 && i % 37 == 5 && i < 740) || (i >= 16384 && i < 32768 && i % 53 == 1) ||
        (i >= 32768 && i < 49152 && i % 4 == 0 && i < 32768 + 16000) || (i >= 49152 && i % 25 == 0) || i == n - 1)
      next[i] ^= 0x41;
  memcpy(o, old, n);
  rfk_delta_region g = {next, o, n, 1, patch, rfk_delta_bound(n)};
  rfk_delta_out out;
  rfk_ref_delta_encode(&g, 1, &out);
  enum { M = 400 };
  const uint64_t len = out.size;
  uint8_t *pp = malloc(len * M), *hd = malloc(n * M), *gd = malloc(n * M);
  uint64_t *lens = malloc(sizeof *lens * M);
  for (int k = 0; k < M; k++) { /* 0: intact; 1..: 1-3 flipped bits, some in the header/directory */
    uint8_t *p = pp + len * k;
    memcpy(p, patch, len);
    lens[k] = len;
    int flips = k ? 1 + (int)(rnd() % 3) : 0;
    for (int f = 0; f < flips; f++) {
      uint64_t at = k % 4 == 1 ? rnd() % 32 : k % 4 == 2 ? len - 1 - rnd() % (12 * out.entries) : rnd() % len;
      p[at] ^= (uint8_t)(1u << (rnd() % 8));
    }
    if (k % 50 == 3)
      lens[k] = len - 1 - rnd() % 40; /* truncated */
    memcpy(hd + n * k, old, n);
  }
  uint8_t *dp = dev_copy(pp, len * M), *dd = dev_copy(hd, n * M);
  rfk_delta_target *ht = malloc(sizeof *ht * M), *dt = malloc(sizeof *dt * M);
  rfk_delta_status *hs = malloc(sizeof *hs * M), *gs = malloc(sizeof *gs * M), *ds = NULL;
  cudaMalloc((void **)&ds, sizeof *ds * M);
  for (int k = 0; k < M; k++) {
    ht[k] = (rfk_delta_target){pp + len * k, lens[k], hd + n * k, n, 1};
    dt[k] = (rfk_delta_target){dp + len * k, lens[k], dd + n * k, n, 1};
  }
  int rr = rfk_ref_delta_apply(ht, M, hs), rg = rfk_cuda_delta_apply(dt, M, ds, NULL);
  int ok = cuda_ok(cudaDeviceSynchronize(), "apply kernels");
  cudaMemcpy(gs, ds, sizeof *gs * M, cudaMemcpyDeviceToHost);
  cudaMemcpy(gd, dd, n * M, cudaMemcpyDeviceToHost);
  size_t bs = compare("status", (uint8_t *)gs, (uint8_t *)hs, sizeof *gs * M), bd = compare("dst", gd, hd, n * M);
  int refused = 0;
  for (int k = 0; k < M; k++)
    refused += hs[k].code != RFK_OK;
  for (int k = 0, shown = 0; k < M && shown < 3; k++)
    if (memcmp(&gs[k], &hs[k], sizeof gs[k])) {
      char a[160], b2[160];
      rfk_delta_format(&gs[k], a, sizeof a), rfk_delta_format(&hs[k], b2, sizeof b2);
      printf("  patch %d: gpu '%s', ref '%s'\n", k, a, b2), shown++;
    }
  ok &= rr == RFK_DELTA_MALFORMED && rg == RFK_OK && hs[0].code == RFK_OK && refused > M / 4 && !bs && !bd;
  char tail[160];
  snprintf(tail, sizeof tail, ": %d patches, %d refused; rc %d/%d, %zu status / %zu dst bytes differ", M, refused, rr, rg, bs, bd);
  report(ok, tail, "apply corrupted patches (header, directory, records, truncated)");
  cudaFree(dp), cudaFree(dd), cudaFree(ds);
  free(old), free(next), free(o), free(patch), free(pp), free(hd), free(gd), free(lens), free(ht), free(dt), free(hs), free(gs);
}

static void test_digest(void)
{
  enum { S = 300 };
  const uint64_t total = 3u << 20;
  uint8_t *h = malloc(total);
  for (uint64_t i = 0; i < total; i++)
    h[i] = (uint8_t)rnd();
  uint8_t *d = dev_copy(h, total);
  rfk_delta_span *hs = malloc(sizeof *hs * S), *dsp = malloc(sizeof *dsp * S);
  uint64_t *hr = malloc(8 * S), *gr = malloc(8 * S), *dr = NULL;
  cudaMalloc((void **)&dr, 8 * S);
  for (int i = 0; i < S; i++) {
    uint64_t off = rnd() % (total / 2), n = i == 0 ? 0 : i == 1 ? total / 2 : rnd() % 70000;
    hs[i] = (rfk_delta_span){h + off, n}, dsp[i] = (rfk_delta_span){d + off, n};
  }
  int rr = rfk_ref_delta_digest(hs, S, hr), rg = rfk_cuda_delta_digest(dsp, S, dr, NULL);
  int ok = cuda_ok(cudaDeviceSynchronize(), "digest kernel");
  cudaMemcpy(gr, dr, 8 * S, cudaMemcpyDeviceToHost);
  size_t bad = compare("digest", (uint8_t *)gr, (uint8_t *)hr, 8 * S);
  ok &= rr == RFK_OK && rg == RFK_OK && !bad;
  char tail[120];
  snprintf(tail, sizeof tail, ": rc %d/%d, %zu bytes differ", rr, rg, bad);
  report(ok, tail, "digest of 300 spans (odd offsets and lengths, empty, 1.5 MiB; two launches)");
  cudaFree(d), cudaFree(dr);
  free(h), free(hs), free(dsp), free(hr), free(gr);
}

static void test_args(void)
{
  uint64_t x = 0;
  rfk_delta_region r = {&x, &x, 3, 2, NULL, 0};
  rfk_delta_target t = {NULL, 4, &x, 8, 1};
  rfk_delta_span s = {NULL, 1};
  rfk_delta_out *o = (rfk_delta_out *)&x;
  int ok = rfk_cuda_delta_encode(&r, 1, o, &x, 64, NULL) == RFK_ERR_ARG &&
           rfk_cuda_delta_apply(&t, 1, (rfk_delta_status *)&x, NULL) == RFK_ERR_ARG &&
           rfk_cuda_delta_digest(&s, 1, &x, NULL) == RFK_ERR_ARG;
  r.n = 8;
  ok &= rfk_cuda_delta_encode(&r, 1, o, &x, rfk_delta_scratch_bytes(&r, 1) - 1, NULL) == RFK_ERR_ARG;
  report(ok, ": RFK_ERR_ARG before any launch (bad esize/size, NULL patch, small scratch)", "bad arguments");
}

int main(void)
{
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("test_delta_gpu: skipped: no CUDA device\n0 passed, 0 failed\n");
    return 0;
  }
  const char *env = getenv("RFK_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  rng_state = seed;
  struct cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  printf("test_delta_gpu: %s, seed %llu (RFK_SEED=%llu reproduces)\n", prop.name, (unsigned long long)seed,
         (unsigned long long)seed);
  test_args();
  test_encode();
  test_malformed();
  test_digest();
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
