/* test_kernels_gpu.c: every CUDA operation (kernels.h, refresh.h) equals the C reference bit for
 * bit: casts, block FP8 (fp32 scales and UE8M0) from bf16 and fp32, 256 experts grouped in one call
 * (and 300, across the chunk boundary), TP packing along dim 0 and dim 1, inf/NaN input, unaligned
 * pointers, the MLA absorption and the UE8M0 re-quantization (also in place). Sizes are not
 * multiples of 128; device and host outputs are poisoned first and compared whole, padding
 * included, so a write outside the region shows. Without a device: "skipped", 0 passed, 0 failed.
 * Seed: time ^ pid, printed; RFK_SEED=<seed> reproduces. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"
#include "mla_layouts.h"
#include "refresh.h"

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

static float u2f(uint32_t u)
{
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint32_t f2u(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* random fp32 of mixed magnitude, with denormals, exact powers of two and zeros */
static float rand_value(void)
{
  uint32_t k = rnd() % 16;
  if (k == 0)
    return u2f(rnd() & 0x807fffffu);
  if (k == 1)
    return 0.0f;
  if (k == 2)
    return ldexpf(rnd() & 1 ? 1.0f : -1.0f, (int)(rnd() % 20) - 10);
  return ldexpf((float)((int)(rnd() % 2000001) - 1000000) / 1e6f, (int)(rnd() % 24) - 16);
}

static void fill(void *p, int dtype, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    float x = rand_value();
    if (dtype == RFK_BF16)
      ((uint16_t *)p)[i] = rfk_f32_to_bf16(x);
    else
      ((float *)p)[i] = x;
  }
}

static int cuda_ok(cudaError_t e, const char *what)
{
  if (e == cudaSuccess)
    return 1;
  printf("  %s: %s\n", what, cudaGetErrorString(e));
  return 0;
}

/* first mismatching bytes of two buffers, printed; returns the number of differing bytes */
static size_t compare(const char *what, const uint8_t *a, const uint8_t *b, size_t n)
{
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (a[i] != b[i] && bad++ < 4)
      printf("  %s: byte %zu: gpu 0x%02x, ref 0x%02x\n", what, i, a[i], b[i]);
  return bad;
}

/* One rfk_run case: `n` items of shape s, sources at src_off[i] elements into one source buffer of
 * src_elems, outputs at i*out_step bytes into an output buffer of out_bytes, scales at
 * i*scale_step floats. want_rc: RFK_OK or RFK_ERR_NONFINITE. */
typedef struct run_case {
  const char *name;
  rfk_shape s;
  int n;
  size_t src_elems, out_bytes, scale_floats;
  const int64_t *src_off; /* NULL: item i at i * src_step */
  int64_t src_step, out_step, scale_step;
  int nonfinite;           /* put inf in item 0 and NaN in the last item */
  int src_shift;           /* elements added to the source base: misaligns rows */
} run_case;

static void run_one(const run_case *c)
{
  int ses = c->s.src_dtype == RFK_BF16 ? 2 : 4;
  size_t sb = c->src_elems * ses, sfb = c->scale_floats * 4;
  uint8_t *hsrc = malloc(sb), *hout = malloc(c->out_bytes), *gout = malloc(c->out_bytes);
  float *hs = malloc(sfb + 4), *gs = malloc(sfb + 4);
  rfk_item *hi = malloc(sizeof(rfk_item) * c->n), *di = malloc(sizeof(rfk_item) * c->n);
  void *dsrc = NULL, *dout = NULL, *dsc = NULL;
  int *dflag = NULL, flag = 0, ok = 1;
  fill(hsrc, c->s.src_dtype, c->src_elems);
  if (c->nonfinite) {
    int64_t last = c->src_off ? c->src_off[c->n - 1] : (c->n - 1) * c->src_step;
    int64_t p0 = c->src_shift, p1 = c->src_shift + last + (c->s.rows - 1) * c->s.src_ld + c->s.cols - 1;
    if (ses == 2)
      ((uint16_t *)hsrc)[p0] = 0x7f80, ((uint16_t *)hsrc)[p1] = 0xffc1;
    else
      ((float *)hsrc)[p0] = INFINITY, ((uint32_t *)hsrc)[p1] = 0xffc00001u;
  }
  memset(hout, 0xab, c->out_bytes);
  for (size_t i = 0; i < c->scale_floats; i++)
    hs[i] = -3.0f;
  ok &= cuda_ok(cudaMalloc(&dsrc, sb), "cudaMalloc") && cuda_ok(cudaMalloc(&dout, c->out_bytes), "cudaMalloc") &&
        cuda_ok(cudaMalloc(&dsc, sfb + 4), "cudaMalloc") && cuda_ok(cudaMalloc((void **)&dflag, 4), "cudaMalloc");
  if (!ok)
    goto done;
  cudaMemcpy(dsrc, hsrc, sb, cudaMemcpyHostToDevice);
  cudaMemcpy(dout, hout, c->out_bytes, cudaMemcpyHostToDevice);
  cudaMemcpy(dsc, hs, sfb, cudaMemcpyHostToDevice);
  cudaMemset(dflag, 0, 4);
  for (int i = 0; i < c->n; i++) {
    int64_t so = c->src_shift + (c->src_off ? c->src_off[i] : i * c->src_step);
    hi[i] = (rfk_item){hsrc + so * ses, hout + i * c->out_step, hs + i * c->scale_step};
    di[i] = (rfk_item){(uint8_t *)dsrc + so * ses, (uint8_t *)dout + i * c->out_step, (float *)dsc + i * c->scale_step};
  }
  int rref = rfk_ref_run(&c->s, hi, c->n);
  int rgpu = rfk_cuda_run(&c->s, di, c->n, dflag, NULL);
  ok &= cuda_ok(cudaDeviceSynchronize(), "kernel");
  cudaMemcpy(gout, dout, c->out_bytes, cudaMemcpyDeviceToHost);
  cudaMemcpy(gs, dsc, sfb, cudaMemcpyDeviceToHost);
  cudaMemcpy(&flag, dflag, 4, cudaMemcpyDeviceToHost);
  int want = c->nonfinite ? RFK_ERR_NONFINITE : RFK_OK;
  size_t bq = compare("out", gout, hout, c->out_bytes), bs = compare("scale", (uint8_t *)gs, (uint8_t *)hs, sfb);
  ok &= rref == want && rgpu == RFK_OK && flag == (c->nonfinite != 0) && bq == 0 && bs == 0;
  printf("%s %s: %d items [%lld x %lld] ld %lld/%lld: ref rc %d, gpu rc %d flag %d, %zu out / %zu scale bytes differ\n",
         ok ? "ok  " : "FAIL", c->name, c->n, (long long)c->s.rows, (long long)c->s.cols, (long long)c->s.src_ld,
         (long long)c->s.out_ld, rref, rgpu, flag, bq, bs);
done:
  ok ? passed++ : failed++;
  cudaFree(dsrc), cudaFree(dout), cudaFree(dsc), cudaFree(dflag);
  free(hsrc), free(hout), free(gout), free(hs), free(gs), free(hi), free(di);
}

static void test_run_cases(void)
{
  /* casts: odd sizes, row pitches larger than the region, 3 items */
  int dts[2] = {RFK_BF16, RFK_FP32};
  for (int a = 0; a < 2; a++)
    for (int b = 0; b < 2; b++) {
      run_case c = {"cast", {dts[a], dts[b], 0, 131, 257, 263, 260, 0}, 3, 3 * 131 * 263, 0, 1, NULL, 131 * 263,
                    0, 0, 0, 0};
      c.out_step = 131 * 260 * (dts[b] == RFK_BF16 ? 2 : 4);
      c.out_bytes = 3 * c.out_step;
      char name[32];
      snprintf(name, sizeof name, "cast %s->%s", a ? "fp32" : "bf16", b ? "fp32" : "bf16");
      c.name = name;
      run_one(&c);
      /* aligned full tiles take the vector path */
      run_case d = {"cast", {dts[a], dts[b], 0, 256, 384, 384, 384, 0}, 2, 2 * 256 * 384, 0, 1, NULL, 256 * 384, 0, 0, 0, 0};
      d.out_step = 256 * 384 * (dts[b] == RFK_BF16 ? 2 : 4);
      d.out_bytes = 2 * d.out_step;
      snprintf(name, sizeof name, "cast %s->%s aligned", a ? "fp32" : "bf16", b ? "fp32" : "bf16");
      d.name = name;
      run_one(&d);
    }
  /* block FP8: odd sizes, fp32 / ue8m0 / requant scales, both sources, aligned and unaligned, inf/NaN */
  for (int a = 0; a < 2; a++)
    for (int ue = 0; ue < 3; ue++) {
      static const char *mode[] = {"", " ue8m0", " requant"};
      char name[48];
      snprintf(name, sizeof name, "fp8 %s%s odd", a ? "fp32" : "bf16", mode[ue]);
      run_case c = {name, {dts[a], RFK_FP8, ue, 300, 389, 397, 392, 5}, 2, 2 * 300 * 397, 2 * 300 * 392, 2 * 3 * 5,
                    NULL, 300 * 397, 300 * 392, 15, 0, 0};
      run_one(&c);
      snprintf(name, sizeof name, "fp8 %s%s aligned", a ? "fp32" : "bf16", mode[ue]);
      run_case d = {name, {dts[a], RFK_FP8, ue, 384, 640, 640, 640, 5}, 2, 2 * 384 * 640, 2 * 384 * 640, 2 * 3 * 5,
                    NULL, 384 * 640, 384 * 640, 15, 0, 0};
      run_one(&d);
      snprintf(name, sizeof name, "fp8 %s%s misaligned src", a ? "fp32" : "bf16", mode[ue]);
      d.name = name, d.src_shift = 1, d.src_elems += 1;
      run_one(&d);
      snprintf(name, sizeof name, "fp8 %s%s inf/NaN", a ? "fp32" : "bf16", mode[ue]);
      d.name = name, d.src_shift = 0, d.nonfinite = 1;
      run_one(&d);
    }
  /* grouped: 256 experts in one launch, and 300 (two chunks), constant out and scale steps */
  {
    run_case c = {"fp8 grouped 256 experts", {RFK_BF16, RFK_FP8, 0, 256, 384, 384, 384, 3}, 256,
                  (size_t)256 * 256 * 384, (size_t)256 * 256 * 384, 256 * 6, NULL, 256 * 384, 256 * 384, 6, 0, 0};
    run_one(&c);
    run_case d = {"fp8 grouped 300 experts ue8m0", {RFK_BF16, RFK_FP8, 1, 136, 200, 200, 200, 2}, 300,
                  (size_t)300 * 136 * 200, (size_t)300 * 136 * 200, 300 * 4, NULL, 136 * 200, 136 * 200, 4, 0, 0};
    run_one(&d);
    d.name = "fp8 grouped 300 experts requant", d.s.ue8m0 = RFK_SCALE_REQUANT;
    run_one(&d);
    run_case e = {"cast grouped 300 experts", {RFK_FP32, RFK_BF16, 0, 36, 130, 130, 130, 0}, 300,
                  (size_t)300 * 36 * 130, (size_t)300 * 36 * 130 * 2, 1, NULL, 36 * 130, 36 * 130 * 2, 0, 0, 0};
    run_one(&e);
  }
  /* TP pack: one [640, 2048] source. dim 1: 8 column pieces of 256 (row pitch 2048), each piece
   * contiguous [640, 256] with its scales [5, 2]; dim 0: 5 row pieces of 128 (odd 4th: 4 pieces of
   * 160 rows -> partial scale rows) */
  {
    static int64_t off1[8], off0[4];
    for (int i = 0; i < 8; i++)
      off1[i] = i * 256;
    for (int i = 0; i < 4; i++)
      off0[i] = (int64_t)i * 160 * 2048;
    run_case c = {"fp8 TP8 pack dim 1", {RFK_BF16, RFK_FP8, 0, 640, 256, 2048, 256, 2}, 8, 640 * 2048, 8 * 640 * 256,
                  8 * 10, off1, 0, 640 * 256, 10, 0, 0};
    run_one(&c);
    run_case d = {"fp8 TP4 pack dim 0", {RFK_BF16, RFK_FP8, 1, 160, 2048, 2048, 2048, 16}, 4, 640 * 2048,
                  4 * 160 * 2048, 4 * 32, off0, 0, 160 * 2048, 32, 0, 0};
    run_one(&d);
    run_case e = {"fp32 TP8 pack dim 1 (fp32 source)", {RFK_FP32, RFK_FP8, 0, 640, 256, 2048, 256, 2}, 8, 640 * 2048,
                  8 * 640 * 256, 8 * 10, off1, 0, 640 * 256, 10, 0, 0};
    run_one(&e);
  }
}

/* layers x one storage in layout `kind` (tests/mla_layouts.h), poisoned: every storage byte equal
 * to the C reference's, the untouched gaps included */
static void test_absorb(int fp8, int kind, int layers, int h, int nope, int v, int lora)
{
  int64_t rows = (int64_t)h * (nope + v), sr = (rows + 127) / 128, sc = (lora + 127) / 128;
  rfk_mla_layout y = mla_layout(kind, h, nope, v, lora);
  size_t kvb = (size_t)(rows * lora * (fp8 ? 1 : 2)), ob = (size_t)y.elems * 2, scb = (size_t)(sr * sc * 4);
  uint8_t *hk = malloc(kvb * layers), *ho = malloc(ob * layers), *go = malloc(ob * layers);
  float *hsc = malloc(scb * layers);
  void *dk, *dout, *dsc;
  for (size_t i = 0; i < kvb * layers; i++) {
    hk[i] = (uint8_t)rnd();
    if (fp8 && (hk[i] & 0x7f) == 0x7f)
      hk[i] ^= 2;
  }
  for (int64_t i = 0; i < sr * sc * layers; i++)
    hsc[i] = ldexpf(1.0f + (float)(rnd() % 4096) / 4096.0f, (int)(rnd() % 40) - 30);
  memset(ho, 0xcd, ob * layers);
  cudaMalloc(&dk, kvb * layers), cudaMalloc(&dout, ob * layers), cudaMalloc(&dsc, scb * layers);
  cudaMemcpy(dk, hk, kvb * layers, cudaMemcpyHostToDevice);
  cudaMemcpy(dsc, hsc, scb * layers, cudaMemcpyHostToDevice);
  cudaMemcpy(dout, ho, ob * layers, cudaMemcpyHostToDevice);
  rfk_mla_absorb *hi = malloc(sizeof *hi * layers), *di = malloc(sizeof *di * layers);
  for (int l = 0; l < layers; l++) {
    hi[l] = (rfk_mla_absorb){hk + kvb * l, hsc + sr * sc * l, (uint16_t *)(ho + ob * l)};
    di[l] = (rfk_mla_absorb){(uint8_t *)dk + kvb * l, (float *)dsc + sr * sc * l, (uint16_t *)((uint8_t *)dout + ob * l)};
  }
  int rr = rfk_ref_mla_absorb(hi, layers, fp8, &y);
  int rg = rfk_cuda_mla_absorb(di, layers, fp8, &y, NULL);
  int ok = cuda_ok(cudaDeviceSynchronize(), "absorb kernel");
  cudaMemcpy(go, dout, ob * layers, cudaMemcpyDeviceToHost);
  size_t b1 = compare("storage", go, ho, ob * layers);
  ok &= rr == 0 && rg == 0 && b1 == 0;
  printf("%s mla absorb %s %s %d layers h=%d nope=%d v=%d lora=%d: rc %d/%d, %zu storage bytes differ\n",
         ok ? "ok  " : "FAIL", fp8 ? "fp8" : "bf16", mla_layout_name[kind], layers, h, nope, v, lora, rr, rg, b1);
  ok ? passed++ : failed++;
  cudaFree(dk), cudaFree(dout), cudaFree(dsc);
  free(hk), free(ho), free(go), free(hsc), free(hi), free(di);
}

static void test_requant(int n, int64_t rows, int64_t cols, int in_place, int nonfinite)
{
  int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
  size_t qb = (size_t)(rows * cols), sb = (size_t)(sr * sc * 4);
  uint8_t *hq = malloc(qb * n), *hq2 = malloc(qb * n), *gq = malloc(qb * n);
  float *hs = malloc(sb * n), *hs2 = malloc(sb * n), *gs = malloc(sb * n);
  void *dq, *ds, *dq2, *ds2;
  int *dflag, flag = 0;
  for (size_t i = 0; i < qb * n; i++) {
    hq[i] = (uint8_t)rnd();
    if ((hq[i] & 0x7f) == 0x7f)
      hq[i] ^= 4;
  }
  for (int64_t i = 0; i < sr * sc * n; i++)
    hs[i] = ldexpf(1.0f + (float)(rnd() % 4096) / 4096.0f, (int)(rnd() % 40) - 30);
  if (nonfinite)
    hq[qb * n - 1] = 0xff, hs[0] = INFINITY;
  memset(hq2, 0xee, qb * n);
  for (int64_t i = 0; i < sr * sc * n; i++)
    hs2[i] = -1.0f;
  cudaMalloc(&dq, qb * n), cudaMalloc(&ds, sb * n), cudaMalloc(&dq2, qb * n), cudaMalloc(&ds2, sb * n);
  cudaMalloc((void **)&dflag, 4), cudaMemset(dflag, 0, 4);
  cudaMemcpy(dq, hq, qb * n, cudaMemcpyHostToDevice), cudaMemcpy(ds, hs, sb * n, cudaMemcpyHostToDevice);
  cudaMemcpy(dq2, hq2, qb * n, cudaMemcpyHostToDevice), cudaMemcpy(ds2, hs2, sb * n, cudaMemcpyHostToDevice);
  rfk_requant *hi = malloc(sizeof *hi * n), *di = malloc(sizeof *di * n);
  for (int i = 0; i < n; i++) {
    uint8_t *hqo = in_place ? hq + qb * i : hq2 + qb * i, *dqo = in_place ? (uint8_t *)dq + qb * i : (uint8_t *)dq2 + qb * i;
    float *hso = in_place ? hs + sr * sc * i : hs2 + sr * sc * i, *dso = in_place ? (float *)ds + sr * sc * i : (float *)ds2 + sr * sc * i;
    hi[i] = (rfk_requant){hq + qb * i, hs + sr * sc * i, hqo, hso};
    di[i] = (rfk_requant){(uint8_t *)dq + qb * i, (float *)ds + sr * sc * i, dqo, dso};
  }
  int rr = rfk_ref_requant_ue8m0(hi, n, rows, cols), rg = rfk_cuda_requant_ue8m0(di, n, rows, cols, dflag, NULL);
  int ok = cuda_ok(cudaDeviceSynchronize(), "requant kernel");
  cudaMemcpy(gq, in_place ? dq : dq2, qb * n, cudaMemcpyDeviceToHost);
  cudaMemcpy(gs, in_place ? ds : ds2, sb * n, cudaMemcpyDeviceToHost);
  cudaMemcpy(&flag, dflag, 4, cudaMemcpyDeviceToHost);
  size_t b1 = compare("q", gq, in_place ? hq : hq2, qb * n), b2 = compare("scale", (uint8_t *)gs, (uint8_t *)(in_place ? hs : hs2), sb * n);
  ok &= rr == (nonfinite ? RFK_ERR_NONFINITE : 0) && rg == 0 && flag == nonfinite && b1 == 0 && b2 == 0;
  printf("%s requant ue8m0 %d x [%lld x %lld]%s%s: rc %d/%d flag %d, %zu q / %zu scale bytes differ\n", ok ? "ok  " : "FAIL",
         n, (long long)rows, (long long)cols, in_place ? " in place" : "", nonfinite ? " inf/NaN" : "", rr, rg, flag, b1, b2);
  ok ? passed++ : failed++;
  cudaFree(dq), cudaFree(ds), cudaFree(dq2), cudaFree(ds2), cudaFree(dflag);
  free(hq), free(hq2), free(gq), free(hs), free(hs2), free(gs), free(hi), free(di);
}

/* UE8M0 pack: CUDA against rfk_ref_ue8m0_pack, every word of the output (padding rows included).
 * kind 0: power-of-two scales (what vLLM packs), 1: any positive scale (rounded up), 2: a NaN and an
 * inf scale (flag set). offset_words shifts the output off 16-byte alignment (the scalar store path). */
static void test_pack(int64_t groups, int64_t rows, int64_t cols, int kind, int offset_words)
{
  int64_t n = groups * ((rows + 127) / 128) * ((cols + 127) / 128), words = groups * rfk_ue8m0_pack_words(rows, cols);
  float *hs = malloc(sizeof *hs * (size_t)n);
  int32_t *want = malloc(4 * (size_t)words), *got = malloc(4 * (size_t)words);
  for (int64_t i = 0; i < n; i++)
    hs[i] = kind == 0 ? ldexpf(1.0f, (int)(rnd() % 60) - 40) : ldexpf(1.0f + (float)(rnd() % 4096) / 4096.0f, (int)(rnd() % 60) - 40);
  if (kind == 2)
    hs[0] = NAN, hs[n - 1] = INFINITY;
  void *ds, *dout;
  int *dflag, flag = 0;
  cudaMalloc(&ds, sizeof *hs * (size_t)n), cudaMalloc(&dout, 4 * (size_t)(words + offset_words));
  cudaMalloc((void **)&dflag, 4), cudaMemset(dflag, 0, 4), cudaMemset(dout, 0xee, 4 * (size_t)(words + offset_words));
  cudaMemcpy(ds, hs, sizeof *hs * (size_t)n, cudaMemcpyHostToDevice);
  int32_t *dst = (int32_t *)dout + offset_words;
  int rr = rfk_ref_ue8m0_pack(hs, want, groups, rows, cols), rg = rfk_cuda_ue8m0_pack((float *)ds, dst, groups, rows, cols, dflag, NULL);
  int ok = cuda_ok(cudaDeviceSynchronize(), "ue8m0 pack kernel");
  cudaMemcpy(got, dst, 4 * (size_t)words, cudaMemcpyDeviceToHost);
  cudaMemcpy(&flag, dflag, 4, cudaMemcpyDeviceToHost);
  size_t bad = compare("packed", (uint8_t *)got, (uint8_t *)want, 4 * (size_t)words);
  ok &= rr == (kind == 2 ? RFK_ERR_NONFINITE : 0) && rg == 0 && flag == (kind == 2) && bad == 0;
  printf("%s ue8m0 pack %lld x [%lld x %lld]%s%s: rc %d/%d flag %d, %zu bytes differ\n", ok ? "ok  " : "FAIL",
         (long long)groups, (long long)rows, (long long)cols, kind == 1 ? " any scales" : kind == 2 ? " NaN/inf" : "",
         offset_words ? " unaligned out" : "", rr, rg, flag, bad);
  ok ? passed++ : failed++;
  cudaFree(ds), cudaFree(dout), cudaFree(dflag);
  free(hs), free(want), free(got);
}

/* grouped UE8M0 pack: n items in one launch against rfk_ref_ue8m0_pack_items, bit for bit over the
 * whole output buffer (every item's words, and the 0xee gaps between items, which must stay).
 * shapes: n x {groups, rows, cols}; item i's scale starts (i % 3 == 1) one float and its output
 * (i % 2 == 1) one word past 16-byte alignment, so both load paths and both store paths run side by
 * side. nan_item >= 0: that item's last scale is NaN (flag set, reference returns 1). */
static void test_pack_items(const char *name, int n, const int64_t (*shape)[3], int nan_item)
{
  rfk_ue8m0_item *it = calloc((size_t)n + 1, sizeof *it);
  int64_t *soff = calloc((size_t)n + 1, sizeof *soff), *ooff = calloc((size_t)n + 1, sizeof *ooff), ns = 0, nw = 0;
  for (int i = 0; i < n; i++) {
    int64_t g = shape[i][0], r = shape[i][1], c = shape[i][2];
    soff[i] = ns + 4 + (i % 3 == 1), ooff[i] = nw + 4 + (i % 2 == 1); /* a gap of >= 4 before each */
    ns = soff[i] + g * ((r + 127) / 128) * ((c + 127) / 128), nw = ooff[i] + g * rfk_ue8m0_pack_words(r, c);
  }
  ns = (ns + 4) / 4 * 4 + 4, nw = (nw + 4) / 4 * 4 + 4;
  float *hs = malloc(sizeof *hs * (size_t)ns);
  int32_t *want = malloc(4 * (size_t)nw), *got = malloc(4 * (size_t)nw);
  for (int64_t i = 0; i < ns; i++)
    hs[i] = ldexpf(1.0f + (float)(rnd() % 4 == 0 ? rnd() % 4096 : 0) / 4096.0f, (int)(rnd() % 60) - 40);
  memset(want, 0xee, 4 * (size_t)nw);
  void *ds, *dout;
  int *dflag, flag = 0;
  cudaMalloc(&ds, sizeof *hs * (size_t)ns), cudaMalloc(&dout, 4 * (size_t)nw), cudaMalloc((void **)&dflag, 4);
  cudaMemset(dflag, 0, 4), cudaMemset(dout, 0xee, 4 * (size_t)nw);
  rfk_ue8m0_item *dit = NULL;
  cudaMalloc((void **)&dit, sizeof *it * ((size_t)n + 1));
  /* host items (the reference) and device items (the launch) with the same shapes */
  rfk_ue8m0_item *hit = calloc((size_t)n + 1, sizeof *hit);
  for (int i = 0; i < n; i++) {
    if (i == nan_item) {
      int64_t k = shape[i][0] * ((shape[i][1] + 127) / 128) * ((shape[i][2] + 127) / 128);
      if (k) hs[soff[i] + k - 1] = NAN;
    }
    it[i] = (rfk_ue8m0_item){(float *)ds + soff[i], (int32_t *)dout + ooff[i], shape[i][0], shape[i][1], shape[i][2], 0, 0, 0};
    hit[i] = (rfk_ue8m0_item){hs + soff[i], want + ooff[i], shape[i][0], shape[i][1], shape[i][2], 0, 0, 0};
  }
  cudaMemcpy(ds, hs, sizeof *hs * (size_t)ns, cudaMemcpyHostToDevice);
  int bi = -1;
  int64_t blocks = rfk_ue8m0_pack_prepare(it, n, &bi);
  cudaMemcpy(dit, it, sizeof *it * (size_t)(n ? n : 1), cudaMemcpyHostToDevice);
  int rr = rfk_ref_ue8m0_pack_items(hit, n), rg = rfk_cuda_ue8m0_pack_items(dit, n, blocks, dflag, NULL);
  int ok = cuda_ok(cudaDeviceSynchronize(), "grouped ue8m0 pack kernel");
  cudaMemcpy(got, dout, 4 * (size_t)nw, cudaMemcpyDeviceToHost);
  cudaMemcpy(&flag, dflag, 4, cudaMemcpyDeviceToHost);
  size_t bad = compare("packed", (uint8_t *)got, (uint8_t *)want, 4 * (size_t)nw);
  int nonfinite = nan_item >= 0 && shape[nan_item][0] && shape[nan_item][1] && shape[nan_item][2];
  ok &= blocks >= 0 && rr == (nonfinite ? RFK_ERR_NONFINITE : 0) && rg == 0 && flag == nonfinite && bad == 0;
  printf("%s grouped ue8m0 pack, %s: %d items, %lld blocks, rc %d/%d flag %d, %zu bytes differ\n", ok ? "ok  " : "FAIL",
         name, n, (long long)blocks, rr, rg, flag, bad);
  ok ? passed++ : failed++;
  cudaFree(ds), cudaFree(dout), cudaFree(dflag), cudaFree(dit);
  free(hs), free(want), free(got), free(it), free(hit), free(soff), free(ooff);
}

static void test_pack_groups(void)
{
  static const int64_t mix[][3] = {
      {1, 7168, 2048}, {3, 301, 700}, {2, 257, 130}, {0, 5, 5}, {1, 0, 128}, {4, 4, 128}, {32, 4096, 7168},
      {2, 1, 1},       {1, 129, 513}, {1, 5000, 256}, {3, 127, 1}, {1, 2, 0},  {8, 7168, 2048}, {1, 3, 384}};
  test_pack_items("a mix of shapes", (int)(sizeof mix / sizeof mix[0]), mix, -1);
  test_pack_items("a mix of shapes, NaN in one", (int)(sizeof mix / sizeof mix[0]), mix, 9);
  static int64_t small[300][3];
  for (int i = 0; i < 300; i++)
    small[i][0] = 1 + i % 3, small[i][1] = 1 + (int64_t)(rnd() % 300), small[i][2] = 1 + (int64_t)(rnd() % 1000);
  test_pack_items("300 small items", 300, (const int64_t(*)[3])small, -1);
  test_pack_items("300 small items, NaN in the last", 300, (const int64_t(*)[3])small, 299);
  static const int64_t empty[][3] = {{0, 4, 128}, {2, 0, 128}};
  test_pack_items("only empty items", 2, empty, -1);
  test_pack_items("no items", 0, empty, -1);
}

static void test_args(void)
{
  rfk_shape s = {RFK_BF16, RFK_FP8, 0, 4, 4, 4, 4, 0};
  rfk_item it = {&s, &s, NULL};
  rfk_mla_absorb a = {&s, NULL, NULL};
  rfk_mla_layout y = mla_layout(MLA_VLLM, 1, 1, 1, 1);
  int ok = rfk_cuda_run(&s, &it, 1, NULL, NULL) == RFK_ERR_ARG && rfk_cuda_run(NULL, &it, 1, NULL, NULL) == RFK_ERR_ARG &&
           rfk_cuda_mla_absorb(&a, 1, 0, &y, NULL) == RFK_ERR_ARG &&
           rfk_cuda_requant_ue8m0(NULL, 1, 1, 1, NULL, NULL) == RFK_ERR_ARG && rfk_cuda_run(&s, &it, 0, NULL, NULL) == RFK_ERR_ARG &&
           rfk_cuda_ue8m0_pack(NULL, (int32_t *)&s, 1, 1, 1, NULL, NULL) == RFK_ERR_ARG &&
           rfk_cuda_ue8m0_pack((float *)&s, (int32_t *)&s, 1, -1, 1, NULL, NULL) == RFK_ERR_ARG &&
           rfk_cuda_ue8m0_pack_items(NULL, 1, 5, NULL, NULL) == RFK_ERR_ARG &&
           rfk_cuda_ue8m0_pack_items((rfk_ue8m0_item *)&s, 1, (int64_t)1 << 31, NULL, NULL) == RFK_ERR_ARG;
  printf("%s bad arguments: RFK_ERR_ARG before any launch\n", ok ? "ok  " : "FAIL");
  ok ? passed++ : failed++;
}

int main(void)
{
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("test_kernels_gpu: skipped: no CUDA device\n0 passed, 0 failed\n");
    return 0;
  }
  const char *env = getenv("RFK_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  rng_state = seed;
  struct cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  printf("test_kernels_gpu: %s, seed %llu (RFK_SEED=%llu reproduces)\n", prop.name, (unsigned long long)seed,
         (unsigned long long)seed);
  (void)f2u;
  test_args();
  test_run_cases();
  for (int k = MLA_VLLM; k <= MLA_GAPPED; k++) {
    test_absorb(1, k, 3, 4, 192, 256, 512); /* GLM-5 shape, 4 local heads */
    test_absorb(1, k, 300, 3, 5, 7, 130);   /* odd, 300 layers: two launches */
    test_absorb(0, k, 2, 2, 192, 256, 512); /* bf16 kv_b */
  }
  test_absorb(1, MLA_VLLM, 4, 8, 128, 128, 512); /* DeepSeek-V3 / Kimi-K2 at TP8 */
  test_requant(3, 300, 259, 0, 0);
  test_requant(2, 256, 384, 1, 0);       /* aligned, in place */
  test_requant(2, 200, 131, 1, 1);       /* NaN code and inf scale */
  test_pack(1, 7168, 2048, 0, 0);        /* a linear, aligned */
  test_pack(3, 301, 700, 0, 0);          /* rows, cols not multiples of 128 (or of 4) */
  test_pack(256, 4096, 7168, 0, 0);      /* DeepSeek-V3 w13 of 256 experts */
  test_pack(2, 257, 130, 1, 1);          /* any scales, unaligned output */
  test_pack(70000, 4, 128, 0, 0);        /* group * packed K past 65535: strided grid y */
  test_pack(2, 130, 600, 2, 0);          /* NaN and inf */
  test_pack_groups();
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
