/* test_kernels.c: the C reference of kernels.h (and the UE8M0 re-quantization of refresh.h) against
 * independent computations: an e4m3 encoder that searches the table of all codes (float64), block
 * scales computed in float64, every e4m3 code and every round-to-nearest-even tie, and (when
 * python3 has ml_dtypes) ml_dtypes.float8_e4m3fn on fresh random data via tests/kernels_mldtypes.py.
 * UE8M0 requant + pack (SM100 finalize) against vLLM 0.33's own post-processing: the vectors in
 * tests/fixtures/ue8m0 always, and tests/vllm/ue8m0_vectors.py run now on fresh inputs when a python
 * with vllm is found (VLLM_PYTHON, else ~/.cache/refit/vllm-0.33.0/bin/python).
 * Seed: time ^ pid, printed; rerun with RFK_SEED=<seed> to reproduce. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels.h"
#include "refresh.h"

#ifndef RFK_PYTHON
#define RFK_PYTHON "python3"
#endif
#ifndef RFK_HAVE_MLDTYPES
#define RFK_HAVE_MLDTYPES 0
#endif

static int passed, failed;

#define CHECK(cond, ...)                                                                                     \
  do {                                                                                                       \
    if (cond) {                                                                                              \
      passed++;                                                                                              \
    } else {                                                                                                 \
      failed++;                                                                                              \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                            \
      printf(__VA_ARGS__);                                                                                   \
      printf("\n");                                                                                          \
    }                                                                                                        \
  } while (0)

static uint64_t rng_state;
static uint32_t rnd(void)
{
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

static uint32_t f2u(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float u2f(uint32_t u)
{
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ---- independent e4m3: decode by formula, encode by nearest-code search in float64 ---- */
static double e4m3_value(int code) /* code 0..255 except 0x7f/0xff */
{
  int e = (code >> 3) & 15, m = code & 7;
  double v = e == 0 ? m / 512.0 : ldexp(1.0 + m / 8.0, e - 7);
  return code & 0x80 ? -v : v;
}

static uint8_t e4m3_search(double x) /* nearest, ties to even code, saturating at 448 */
{
  double a = fabs(x);
  int best = 0;
  for (int c = 1; c <= 0x7e; c++) {
    double d = fabs(e4m3_value(c) - a), db = fabs(e4m3_value(best) - a);
    if (d < db || (d == db && !(c & 1)))
      best = c;
  }
  if (a >= 448)
    best = 0x7e;
  return (uint8_t)(best | (signbit(x) ? 0x80 : 0));
}

static void test_e4m3_codes(void)
{
  int bad = 0;
  for (int c = 0; c < 256; c++) {
    if ((c & 0x7f) == 0x7f)
      continue;
    float v = (float)e4m3_value(c);
    if (rfk_f32_to_e4m3(v) != c && bad++ < 5)
      printf("  code 0x%02x (%g) encodes to 0x%02x\n", c, v, rfk_f32_to_e4m3(v));
    if (rfk_e4m3_to_f32((uint8_t)c) != v && bad++ < 5)
      printf("  code 0x%02x decodes to %g, expected %g\n", c, rfk_e4m3_to_f32((uint8_t)c), v);
  }
  CHECK(bad == 0, "all 254 finite e4m3 codes round-trip (%d bad)", bad);
  /* ties: midpoint of two neighbours goes to the even code, one fp32 ulp either side does not */
  bad = 0;
  for (int sgn = 0; sgn < 2; sgn++)
    for (int c = 0; c < 0x7e; c++) {
      int lo = c | (sgn << 7), hi = (c + 1) | (sgn << 7);
      float mid = (float)((e4m3_value(lo) + e4m3_value(hi)) / 2); /* exact: 5 significant bits */
      int even = (c & 1) ? hi : lo;
      float up = nextafterf(mid, sgn ? -INFINITY : INFINITY), dn = nextafterf(mid, 0.0f);
      if (rfk_f32_to_e4m3(mid) != even || rfk_f32_to_e4m3(up) != hi || rfk_f32_to_e4m3(dn) != lo) {
        if (bad++ < 5)
          printf("  tie %g: got 0x%02x 0x%02x 0x%02x, expected 0x%02x 0x%02x 0x%02x\n", mid, rfk_f32_to_e4m3(dn),
                 rfk_f32_to_e4m3(mid), rfk_f32_to_e4m3(up), lo, even, hi);
      }
    }
  CHECK(bad == 0, "252 round-to-nearest-even ties and their fp32 neighbours (%d bad)", bad);
  CHECK(rfk_f32_to_e4m3(448.0f) == 0x7e && rfk_f32_to_e4m3(463.9f) == 0x7e && rfk_f32_to_e4m3(464.0f) == 0x7e &&
            rfk_f32_to_e4m3(1e30f) == 0x7e && rfk_f32_to_e4m3(-INFINITY) == 0xfe,
        "saturation: 448, 463.9, 464, 1e30 -> 0x7e, -inf -> 0xfe");
  CHECK(rfk_f32_to_e4m3(NAN) == 0x7f && rfk_f32_to_e4m3(u2f(0xffc00001u)) == 0x7f, "NaN -> 0x7f");
  CHECK(rfk_f32_to_e4m3(ldexpf(1, -10)) == 0x00 && rfk_f32_to_e4m3(ldexpf(3, -10)) == 0x02 &&
            rfk_f32_to_e4m3(ldexpf(15, -10)) == 0x08 && rfk_f32_to_e4m3(u2f(1)) == 0 &&
            rfk_f32_to_e4m3(-u2f(1)) == 0x80 && rfk_f32_to_e4m3(-0.0f) == 0x80,
        "subnormal ties 2^-10 -> 0, 3*2^-10 -> 2, 15*2^-10 -> 0x08, fp32 denormal -> +-0");
  /* random fp32 against the search encoder */
  bad = 0;
  for (int i = 0; i < 20000; i++) {
    float x = ldexpf((float)(rnd() & 0xffffff) / 16777216.0f, (int)(rnd() % 24) - 14);
    if (rnd() & 1)
      x = -x;
    if (rfk_f32_to_e4m3(x) != e4m3_search(x) && bad++ < 5)
      printf("  %a: 0x%02x, search 0x%02x\n", x, rfk_f32_to_e4m3(x), e4m3_search(x));
  }
  CHECK(bad == 0, "20000 random fp32 values encode like the table search (%d bad)", bad);
  CHECK(rfk_ue8m0_ceil(1.0f) == 1.0f && rfk_ue8m0_ceil(u2f(0x3f800001u)) == 2.0f &&
            rfk_ue8m0_ceil(0.75f) == 1.0f && rfk_ue8m0_ceil(ldexpf(1.5f, -30)) == ldexpf(1, -29),
        "ue8m0 ceiling: 1 -> 1, 1+ulp -> 2, 0.75 -> 1, 1.5*2^-30 -> 2^-29");
}

/* ---- casts ---- */
static void test_casts(void)
{
  uint32_t in[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x7f800001u, 0xffa00000u, 0x7f800000u,
                   0x7f7fffffu, 0x00000001u, 0x80000000u, 0xc0490fdbu};
  uint16_t want[] = {0x3f80, 0x3f82, 0x3f81, 0x7fc0, 0xffe0, 0x7f80, 0x7f80, 0x0000, 0x8000, 0xc049};
  uint16_t out[2][12];
  memset(out, 0x5a, sizeof out);
  int rc = rfk_ref_cast(in, RFK_FP32, 5, out, RFK_BF16, 12, 2, 5);
  int ok = rc == 0;
  for (int i = 0; i < 10; i++)
    ok &= out[i / 5][i % 5] == want[i];
  ok &= out[0][5] == 0x5a5a && out[1][11] == 0x5a5a;
  CHECK(ok, "fp32 -> bf16: ties to even, NaN quiet with sign, overflow to inf, pitch untouched (rc %d)", rc);
  float back[10];
  rc = rfk_ref_cast(want, RFK_BF16, 10, back, RFK_FP32, 10, 1, 10);
  ok = rc == 0;
  for (int i = 0; i < 10; i++)
    ok &= f2u(back[i]) == (uint32_t)want[i] << 16;
  CHECK(ok, "bf16 -> fp32 exact (rc %d)", rc);
  uint16_t cp[3][4];
  memset(cp, 0, sizeof cp);
  rc = rfk_ref_cast(want, RFK_BF16, 3, cp, RFK_BF16, 4, 3, 3);
  CHECK(rc == 0 && cp[1][0] == want[3] && cp[2][2] == want[8] && cp[0][3] == 0, "bf16 copy with pitches");
  uint32_t cp32[2];
  rc = rfk_ref_cast(in + 3, RFK_FP32, 1, cp32, RFK_FP32, 1, 2, 1);
  CHECK(rc == 0 && cp32[0] == 0x7f800001u && cp32[1] == 0xffa00000u, "fp32 copy keeps NaN payloads");
}

/* ---- block FP8 against float64 + table search ---- */
static float gen_value(int kind, int blockexp)
{
  uint32_t r = rnd();
  switch (kind) {
  case 0: return ldexpf((float)(int)(r % 2000001 - 1000000) / 1e6f, blockexp); /* ordinary */
  case 1: return u2f(rnd() & 0x807fffffu);                                    /* fp32 denormals */
  case 2: return u2f((rnd() & 0x8000ffffu) | (uint32_t)(rnd() % 3) << 16);    /* bf16-sized denormals */
  default: return ldexpf(1.0f - ldexpf(1, -(int)(r % 24) - 1), blockexp);   /* near the block max */
  }
}

static uint16_t to_bf16_bits(float f) { return rfk_f32_to_bf16(f); }

typedef struct fp8_case {
  int src_dtype, ue8m0;
  int64_t rows, cols, src_ld, out_ld, scale_ld;
} fp8_case;

/* Fills src, runs rfk_ref_fp8, checks every q and scale against the float64 model and the
 * padding against poison. Returns the number of mismatches; writes src/q/scale for Python. */
static long check_fp8(const fp8_case *k, void *src, uint8_t *q, float *scale, int nonfinite_block)
{
  int64_t sr = (k->rows + 127) / 128, sc = (k->cols + 127) / 128, esz = k->src_dtype == RFK_BF16 ? 2 : 4;
  for (int64_t bi = 0; bi < sr; bi++)
    for (int64_t bj = 0; bj < sc; bj++) {
      int kind = (int)(rnd() % 6), bexp = (int)(rnd() % 60) - 40;
      for (int64_t r = bi * 128; r < (bi + 1) * 128 && r < k->rows; r++)
        for (int64_t c = bj * 128; c < (bj + 1) * 128 && c < k->cols; c++) {
          float x = kind == 5 ? 0.0f : gen_value(kind > 3 ? 0 : kind, bexp);
          if (kind == 4 && rnd() % 50 == 0)
            x = ldexpf(rnd() & 1 ? 1.0f : -1.0f, bexp); /* exact block max, several times */
          if (esz == 2)
            ((uint16_t *)src)[r * k->src_ld + c] = to_bf16_bits(x);
          else
            ((float *)src)[r * k->src_ld + c] = x;
        }
    }
  if (nonfinite_block) { /* block (0,0) gets +inf, the last block a NaN */
    float vals[2] = {INFINITY, NAN};
    int64_t pos[2] = {0, ((sr - 1) * 128) * k->src_ld + (sc - 1) * 128};
    for (int i = 0; i < 2; i++) {
      if (esz == 2)
        ((uint16_t *)src)[pos[i]] = to_bf16_bits(vals[i]);
      else
        ((float *)src)[pos[i]] = vals[i];
    }
  }
  memset(q, 0xab, (size_t)(k->rows * k->out_ld));
  for (int64_t i = 0; i < sr * k->scale_ld; i++)
    scale[i] = -7.0f;
  int rc = rfk_ref_fp8(src, k->src_dtype, k->src_ld, k->rows, k->cols, q, k->out_ld, scale, k->scale_ld, k->ue8m0);
  long bad = 0;
  if (rc != (nonfinite_block ? RFK_ERR_NONFINITE : RFK_OK)) {
    printf("  rc %d (%s)\n", rc, rfk_strerror(rc));
    bad++;
  }
  for (int64_t bi = 0; bi < sr; bi++)
    for (int64_t bj = 0; bj < sc; bj++) {
      int64_t r1 = (bi + 1) * 128 < k->rows ? (bi + 1) * 128 : k->rows, c1 = (bj + 1) * 128 < k->cols ? (bj + 1) * 128 : k->cols;
      double amax = 0;
      int nf = 0;
      for (int64_t r = bi * 128; r < r1; r++)
        for (int64_t c = bj * 128; c < c1; c++) {
          double x = esz == 2 ? (double)u2f((uint32_t)((uint16_t *)src)[r * k->src_ld + c] << 16)
                              : (double)((float *)src)[r * k->src_ld + c];
          nf |= !isfinite(x);
          amax = fabs(x) > amax ? fabs(x) : amax;
        }
      float got = scale[bi * k->scale_ld + bj];
      if (nf) {
        int ok = f2u(got) == 0x7fc00000u;
        for (int64_t r = bi * 128; r < r1; r++)
          for (int64_t c = bj * 128; c < c1; c++)
            ok &= q[r * k->out_ld + c] == 0x7f;
        if (!ok && bad++ < 5)
          printf("  non-finite block (%lld,%lld): scale %08x, q not all 0x7f\n", (long long)bi, (long long)bj, f2u(got));
        continue;
      }
      if (amax < 1e-4f)
        amax = 1e-4f;
      float want = (float)(amax / 448.0), mul = (float)(448.0 / amax);
      if (k->ue8m0) {
        int e;
        double m = frexp(want, &e);
        want = (float)(m == 0.5 ? want : ldexp(1.0, e));
        mul = (float)(1.0 / want);
      }
      if (f2u(got) != f2u(want) && bad++ < 5)
        printf("  block (%lld,%lld) scale %a, expected %a\n", (long long)bi, (long long)bj, got, want);
      for (int64_t r = bi * 128; r < r1; r++)
        for (int64_t c = bj * 128; c < c1; c++) {
          double x = esz == 2 ? (double)u2f((uint32_t)((uint16_t *)src)[r * k->src_ld + c] << 16)
                              : (double)((float *)src)[r * k->src_ld + c];
          uint8_t w = e4m3_search((double)(float)(x * mul)), g = q[r * k->out_ld + c];
          if (g != w && bad++ < 5)
            printf("  q[%lld][%lld] = 0x%02x, expected 0x%02x (x %a)\n", (long long)r, (long long)c, g, w, x);
        }
    }
  for (int64_t r = 0; r < k->rows; r++)
    for (int64_t c = k->cols; c < k->out_ld; c++)
      if (q[r * k->out_ld + c] != 0xab && bad++ < 5)
        printf("  padding q[%lld][%lld] written\n", (long long)r, (long long)c);
  for (int64_t bi = 0; bi < sr; bi++)
    for (int64_t bj = sc; bj < k->scale_ld; bj++)
      if (scale[bi * k->scale_ld + bj] != -7.0f && bad++ < 5)
        printf("  padding scale[%lld][%lld] written\n", (long long)bi, (long long)bj);
  return bad;
}

static int python_ok = -1; /* -1 unknown, 0 absent, 1 present */

static void write_file(const char *path, const void *p, size_t n)
{
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite(p, 1, n, f);
    fclose(f);
  }
}

/* Hands one case to tests/kernels_mldtypes.py; returns 1 pass, 0 fail, -1 skipped. */
static int check_python(const fp8_case *k, const void *src, const uint8_t *q, const float *scale)
{
  if (!RFK_HAVE_MLDTYPES || python_ok == 0)
    return -1;
  char dir[] = "/tmp/rfk_test_XXXXXX", path[128], cmd[512];
  if (!mkdtemp(dir))
    return -1;
  int64_t sr = (k->rows + 127) / 128, esz = k->src_dtype == RFK_BF16 ? 2 : 4;
  snprintf(path, sizeof path, "%s/src", dir);
  write_file(path, src, (size_t)(k->rows * k->src_ld * esz));
  snprintf(path, sizeof path, "%s/q", dir);
  write_file(path, q, (size_t)(k->rows * k->out_ld));
  snprintf(path, sizeof path, "%s/scale", dir);
  write_file(path, scale, (size_t)(sr * k->scale_ld * 4));
  snprintf(cmd, sizeof cmd, "%s tests/kernels_mldtypes.py %s %s %d %lld %lld %lld %lld %lld", RFK_PYTHON, dir,
           esz == 2 ? "bf16" : "fp32", k->ue8m0, (long long)k->rows, (long long)k->cols, (long long)k->src_ld,
           (long long)k->out_ld, (long long)k->scale_ld);
  fflush(stdout);
  int st = system(cmd);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    printf("  could not remove %s\n", dir);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 3) { /* the script says: no ml_dtypes */
    python_ok = 0;
    return -1;
  }
  python_ok = 1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void test_fp8_cases(void)
{
  fp8_case cases[] = {
      {RFK_BF16, 0, 1, 1, 1, 1, 1},          {RFK_BF16, 0, 127, 129, 131, 133, 3},
      {RFK_FP32, 0, 128, 128, 128, 128, 1},  {RFK_FP32, 0, 300, 257, 260, 257, 4},
      {RFK_BF16, 1, 129, 700, 704, 701, 6},  {RFK_FP32, 1, 257, 131, 131, 136, 2},
      {RFK_BF16, 0, 384, 256, 256, 256, 2},  {RFK_BF16, 1, 5, 1000, 1000, 1000, 8},
  };
  int ncases = (int)(sizeof cases / sizeof cases[0]);
  for (int i = 0; i < ncases + 2; i++) {
    fp8_case k = cases[i % ncases];
    int nonfinite = i >= ncases;
    if (nonfinite)
      k.src_dtype = i == ncases ? RFK_BF16 : RFK_FP32;
    int64_t sr = (k.rows + 127) / 128, esz = k.src_dtype == RFK_BF16 ? 2 : 4;
    void *src = malloc((size_t)(k.rows * k.src_ld * esz));
    uint8_t *q = malloc((size_t)(k.rows * k.out_ld));
    float *scale = malloc((size_t)(sr * k.scale_ld * 4));
    long bad = check_fp8(&k, src, q, scale, nonfinite);
    CHECK(bad == 0, "fp8 %s ue8m0=%d [%lld x %lld] ld %lld/%lld/%lld%s: %ld mismatches", esz == 2 ? "bf16" : "fp32",
          k.ue8m0, (long long)k.rows, (long long)k.cols, (long long)k.src_ld, (long long)k.out_ld,
          (long long)k.scale_ld, nonfinite ? " with inf/NaN" : "", bad);
    if (!nonfinite) {
      int py = check_python(&k, src, q, scale);
      if (py >= 0)
        CHECK(py == 1, "ml_dtypes agrees on fp8 case %d", i);
    }
    free(src), free(q), free(scale);
  }
  if (python_ok != 1)
    printf("note: ml_dtypes check skipped (have_mldtypes=%d); the table checks above still ran\n", RFK_HAVE_MLDTYPES);
}

/* grouped items (experts with their own src, constant out steps) and TP packing (one src, column
 * offsets, one contiguous piece per rank) equal the single-region calls */
/* the grouped UE8M0 pack's block numbering (what the CUDA launch bisects) and its reference */
static void test_pack_items(void)
{
  static float sc[3 * 2 * 56 + 4] __attribute__((aligned(16)));
  static int32_t out[2][40000] __attribute__((aligned(16)));
  for (int i = 0; i < (int)(sizeof sc / sizeof sc[0]); i++)
    sc[i] = ldexpf(1.0f, i % 50 - 25);
  rfk_ue8m0_item it[4] = {
      {sc, out[0], 3, 256, 7168, 0, 0, 0},        /* 3 groups x 14 packed K x 1 chunk = 42 blocks */
      {sc + 1, out[0] + 10752 + 1, 0, 5, 5, 0, 0, 0}, /* empty: no blocks, shares the next's first */
      {sc + 1, out[0] + 10752 + 1, 1, 4097, 300, 0, 0, 0}, /* 1 x 1 x 2 chunks (mn 4100 > 4096) = 2 */
      {sc, out[0] + 20000, 2, 1, 1, 0, 0, 0},     /* 2 x 1 x 1 = 2 */
  };
  int bad = -1;
  int64_t blocks = rfk_ue8m0_pack_prepare(it, 4, &bad);
  CHECK(blocks == 46 && it[0].first == 0 && it[0].bx == 1 && it[0].align == 3 && it[1].first == 42 && it[2].first == 42 &&
            it[2].bx == 2 && it[2].align == 0 && it[3].first == 44 && it[3].align == 1 && bad == -1,
        "ue8m0 pack prepare: 46 blocks, firsts 0/42/42/44, bx 1/2, alignment bits (got %lld, %lld %lld %lld %lld)",
        (long long)blocks, (long long)it[0].first, (long long)it[1].first, (long long)it[2].first, (long long)it[3].first);
  rfk_ue8m0_item b = it[3];
  b.out = (int32_t *)((char *)b.out + 2);
  rfk_ue8m0_item two[2] = {it[0], b};
  CHECK(rfk_ue8m0_pack_prepare(two, 2, &bad) == -1 && bad == 1, "ue8m0 pack prepare: a misaligned out names item 1 (%d)",
        bad);
  two[1] = it[3], two[1].scale = NULL;
  CHECK(rfk_ue8m0_pack_prepare(two, 2, &bad) == -1 && bad == 1 && rfk_ref_ue8m0_pack_items(two, 2) == RFK_ERR_ARG,
        "ue8m0 pack items: a NULL scale is refused before anything is written");
  two[1] = it[3], two[1].groups = 1 << 15, two[1].rows = (int64_t)4096 << 17; /* 2^32 blocks */
  CHECK(rfk_ue8m0_pack_prepare(two, 2, &bad) == -1 && bad == 1, "ue8m0 pack prepare: blocks past 2^31 - 1 refused");
  /* the reference over the items equals one call per item, word for word */
  it[3].scale = sc + 7; /* 3 * 2 * 56 scales in all; the last item reads 2 */
  memset(out, 0x5a, sizeof out);
  int rc = rfk_ref_ue8m0_pack_items(it, 4);
  for (int i = 0; i < 4; i++)
    it[i].out = out[1] + (it[i].out - out[0]);
  memset(out[1], 0x5a, sizeof out[1]);
  int rs = 0;
  for (int i = 0; i < 4; i++)
    rs |= rfk_ref_ue8m0_pack(it[i].scale, it[i].out, it[i].groups, it[i].rows, it[i].cols);
  CHECK(rc == 0 && rs == 0 && !memcmp(out[0], out[1], sizeof out[0]) && out[0][20000] != 0x5a5a5a5a,
        "ue8m0 pack items: the reference equals one call per item (rc %d)", rc);
  sc[7 + 1] = NAN;
  CHECK(rfk_ref_ue8m0_pack_items(it, 4) == RFK_ERR_NONFINITE && rfk_ref_ue8m0_pack_items(it, 0) == 0 &&
            rfk_ref_ue8m0_pack_items(NULL, 1) == RFK_ERR_ARG && rfk_ue8m0_pack_prepare(NULL, 0, NULL) == 0,
        "ue8m0 pack items: NaN -> 1, no items -> 0, NULL items -> 2");
}

static void test_grouped(void)
{
  enum { E = 5, R = 130, C = 260, TP = 4 };
  uint16_t *src = malloc(sizeof(uint16_t) * E * R * C);
  for (int i = 0; i < E * R * C; i++)
    src[i] = to_bf16_bits(gen_value(0, (int)(rnd() % 8) - 4));
  int64_t sr = 2, sc = 3;
  uint8_t *q = malloc(E * R * C), *q1 = malloc(R * C);
  float *s = malloc(sizeof(float) * E * sr * sc), s1[6];
  rfk_item items[E];
  for (int e = 0; e < E; e++)
    items[e] = (rfk_item){src + (size_t)e * R * C, q + (size_t)e * R * C, s + e * sr * sc};
  rfk_shape sh = {RFK_BF16, RFK_FP8, 0, R, C, C, C, sc};
  int rc = rfk_ref_run(&sh, items, E), ok = rc == 0;
  for (int e = 0; e < E; e++) {
    ok &= rfk_ref_fp8(src + (size_t)e * R * C, RFK_BF16, C, R, C, q1, C, s1, sc, 0) == 0;
    ok &= memcmp(q1, q + (size_t)e * R * C, R * C) == 0 && memcmp(s1, s + e * sr * sc, sizeof s1) == 0;
  }
  CHECK(ok, "grouped: %d experts in one call equal %d single calls (rc %d)", E, E, rc);
  /* TP pack along dim 1: item t = columns [t*C/TP, +C/TP) of expert 0, piece t contiguous */
  int64_t w = C / TP, psc = (w + 127) / 128;
  for (int t = 0; t < TP; t++)
    items[t] = (rfk_item){src + t * w, q + (size_t)t * R * w, s + t * sr * psc};
  rfk_shape tp = {RFK_BF16, RFK_FP8, 1, R, w, C, w, psc};
  rc = rfk_ref_run(&tp, items, TP);
  ok = rc == 0;
  for (int t = 0; t < TP; t++) {
    ok &= rfk_ref_fp8(src + t * w, RFK_BF16, C, R, w, q1, w, s1, psc, 1) == 0;
    ok &= memcmp(q1, q + (size_t)t * R * w, (size_t)(R * w)) == 0 && memcmp(s1, s + t * sr * psc, sizeof(float) * sr * psc) == 0;
  }
  CHECK(ok, "TP pack: %d column pieces of one source equal single calls (rc %d)", TP, rc);
  free(src), free(q), free(q1), free(s);
}

static void test_args(void)
{
  uint16_t x[4] = {0};
  uint8_t q[4] = {1, 2, 3, 4};
  float s[1] = {5};
  rfk_shape sh = {RFK_BF16, RFK_FP8, 0, 1, 4, 4, 4, 1};
  rfk_item it = {x, q, s};
  rfk_shape bad_dtype = sh, bad_ld = sh, bad_sld = sh;
  bad_dtype.src_dtype = RFK_FP8;
  bad_ld.out_ld = 3;
  bad_sld.scale_ld = 0;
  rfk_item no_scale = {x, q, NULL};
  CHECK(rfk_ref_run(&bad_dtype, &it, 1) == RFK_ERR_ARG && rfk_ref_run(&bad_ld, &it, 1) == RFK_ERR_ARG &&
            rfk_ref_run(&bad_sld, &it, 1) == RFK_ERR_ARG && rfk_ref_run(&sh, &no_scale, 1) == RFK_ERR_ARG &&
            rfk_ref_run(NULL, &it, 1) == RFK_ERR_ARG && rfk_ref_run(&sh, NULL, 1) == RFK_ERR_ARG &&
            rfk_ref_cast(x, RFK_BF16, 4, q, RFK_FP8, 4, 1, 4) == RFK_ERR_ARG,
        "bad dtype, pitch, scale pitch, NULL scale/shape/items: RFK_ERR_ARG");
  CHECK(q[0] == 1 && q[3] == 4 && s[0] == 5, "nothing written on RFK_ERR_ARG");
  CHECK(rfk_ref_run(&sh, &it, 0) == RFK_OK && q[0] == 1, "n = 0 is a no-op");
  CHECK(!strcmp(rfk_strerror(RFK_ERR_NONFINITE), "non-finite value (inf or NaN) in FP8 quantizer input") &&
            !strcmp(rfk_strerror(RFK_ERR_CUDA), "CUDA launch failed") && !strcmp(rfk_strerror(99), "unknown kernels error"),
        "rfk_strerror texts");
}

/* ---- UE8M0 re-quantization ---- */
static void test_requant(void)
{
  enum { R = 200, C = 300, N = 3 };
  int64_t sr = 2, sc = 3;
  uint8_t *q = malloc(N * R * C), *q0 = malloc(N * R * C), *qo = malloc(N * R * C);
  float *s = malloc(sizeof(float) * N * sr * sc), *s0 = malloc(sizeof(float) * N * sr * sc), *so = malloc(sizeof(float) * N * sr * sc);
  for (int i = 0; i < N * R * C; i++) {
    q[i] = (uint8_t)rnd();
    if ((q[i] & 0x7f) == 0x7f)
      q[i] ^= 1;
  }
  for (int i = 0; i < N * sr * sc; i++)
    s[i] = ldexpf(1.0f + (float)(rnd() % 1000) / 1000.0f, (int)(rnd() % 30) - 25);
  s[4] = ldexpf(1.0f, -20); /* already a power of two */
  memcpy(q0, q, N * R * C);
  memcpy(s0, s, sizeof(float) * N * sr * sc);
  rfk_requant it[N];
  for (int i = 0; i < N; i++)
    it[i] = (rfk_requant){q + i * R * C, s + i * sr * sc, qo + i * R * C, so + i * sr * sc};
  int rc = rfk_ref_requant_ue8m0(it, N, R, C);
  long bad = 0;
  for (int i = 0; i < N; i++)
    for (int64_t bi = 0; bi < sr; bi++)
      for (int64_t bj = 0; bj < sc; bj++) {
        double amax = 0, os = s0[i * sr * sc + bi * sc + bj];
        for (int64_t r = bi * 128; r < (bi + 1) * 128 && r < R; r++)
          for (int64_t c = bj * 128; c < (bj + 1) * 128 && c < C; c++) {
            double x = (float)(e4m3_value(q0[i * R * C + r * C + c]) * os);
            amax = fabs(x) > amax ? fabs(x) : amax;
          }
        if (amax < 1e-4f)
          amax = 1e-4f;
        int e;
        double w = (float)(amax / 448.0), m = frexp(w, &e);
        w = m == 0.5 ? w : ldexp(1.0, e);
        if (so[i * sr * sc + bi * sc + bj] != w && bad++ < 5)
          printf("  requant scale %g, expected %g\n", so[i * sr * sc + bi * sc + bj], w);
        for (int64_t r = bi * 128; r < (bi + 1) * 128 && r < R; r++)
          for (int64_t c = bj * 128; c < (bj + 1) * 128 && c < C; c++) {
            double x = (float)(e4m3_value(q0[i * R * C + r * C + c]) * os);
            uint8_t want = e4m3_search((float)(x / w)), got = qo[i * R * C + r * C + c];
            if (got != want && bad++ < 5)
              printf("  requant q 0x%02x, expected 0x%02x\n", got, want);
          }
      }
  CHECK(rc == 0 && bad == 0 && !memcmp(q, q0, N * R * C), "requant ue8m0 %d x [%d x %d]: %ld mismatches, input kept", N, R, C, bad);
  for (int i = 0; i < N; i++) /* in place gives the same bytes */
    it[i] = (rfk_requant){q + i * R * C, s + i * sr * sc, q + i * R * C, s + i * sr * sc};
  rc = rfk_ref_requant_ue8m0(it, N, R, C);
  CHECK(rc == 0 && !memcmp(q, qo, N * R * C) && !memcmp(s, so, sizeof(float) * N * sr * sc), "requant in place equals out of place");
  /* again: power-of-two scales already; the dequantized values stay exactly the same (a block
   * whose max code is 224 halves its scale and doubles its codes) */
  rc = rfk_ref_requant_ue8m0(it, N, R, C);
  long moved = 0;
  for (int i = 0; i < N * R * C; i++) {
    int64_t e = i / (R * C), r = (i % (R * C)) / C, c = i % C, b = e * sr * sc + (r / 128) * sc + c / 128;
    moved += e4m3_value(q[i]) * s[b] != e4m3_value(qo[i]) * so[b];
  }
  CHECK(rc == 0 && moved == 0, "requant of ue8m0 data keeps every dequantized value (%ld moved, rc %d)", moved, rc);
  memcpy(q0, q, N * R * C);
  memcpy(s0, s, sizeof(float) * N * sr * sc);
  q[5] = 0xff; /* NaN code in block (0,0) of item 0 */
  s[sr * sc + 5] = INFINITY; /* item 1 block (1,2) */
  rc = rfk_ref_requant_ue8m0(it, N, R, C);
  CHECK(rc == RFK_ERR_NONFINITE && f2u(s[0]) == 0x7fc00000u && q[0] == 0x7f && q[127 * C + 127] == 0x7f &&
            q[128] == q0[128] && f2u(s[sr * sc + 5]) == 0x7fc00000u && q[R * C + 199 * C + 299] == 0x7f &&
            f2u(s[1]) == f2u(s0[1]) && f2u(s[2 * sr * sc]) == f2u(s0[2 * sr * sc]),
        "requant: NaN code / inf scale blocks become NaN, others unchanged (rc %d)", rc);
  CHECK(rfk_ref_requant_ue8m0(NULL, 1, R, C) == RFK_ERR_ARG && rfk_ref_requant_ue8m0(it, 1, -1, C) == RFK_ERR_ARG,
        "requant bad arguments");
  free(q), free(q0), free(qo), free(s), free(s0), free(so);
}

/* RFK_SCALE_REQUANT (the trainer's cast for vLLM on SM100): bit-exact with the fp32-scale quantizer
 * followed by rfk_ref_requant_ue8m0 (the step vLLM runs after loading), bf16 and fp32 sources, a
 * source pitch wider than the region, partial edge blocks, an all-zero block, blocks whose
 * re-quantization moves codes (max |x| / scale near 224) and a NaN block; and not the same bytes as
 * quantizing straight to UE8M0 scales (RFK_SCALE_UE8M0), which is why the mode exists */
static void test_requant_mode(void)
{
  enum { R = 300, C = 389, LD = 397 };
  int64_t sr = 3, sc = 4, n = (int64_t)R * LD;
  for (int dt = 0; dt < 3; dt++) {
    int src_dtype = dt == 1 ? RFK_FP32 : RFK_BF16, nonfinite = dt == 2;
    int64_t esz = src_dtype == RFK_BF16 ? 2 : 4;
    uint8_t *src = malloc((size_t)(n * esz)), *q = malloc(R * C), *q2 = malloc(R * C), *q1 = malloc(R * C);
    float *s = malloc(sizeof(float) * sr * sc), *s2 = malloc(sizeof(float) * sr * sc), *s1 = malloc(sizeof(float) * sr * sc);
    for (int64_t i = 0; i < n; i++) {
      int64_t r = i / LD, c = i % LD;
      /* per block its own magnitude; block (0, 1) all zero; block (1, 2) with a max that lands q at 224 */
      int e = (int)((r / 128) * 7 + (c / 128) * 3) % 19 - 12;
      float x = ldexpf((float)((int32_t)rnd() % 100000) / 100000.0f, e);
      if (r < 128 && c >= 128 && c < 256) x = 0.0f;
      if (r >= 128 && r < 256 && c >= 256 && c < 384) x = ldexpf((float)((int32_t)rnd() % 100000) / 100000.0f * 0.5f, e);
      if (nonfinite && r == 200 && c == 10) x = NAN;
      if (src_dtype == RFK_BF16) {
        uint16_t h = (uint16_t)(f2u(x) >> 16);
        memcpy(src + i * 2, &h, 2);
      } else {
        memcpy(src + i * 4, &x, 4);
      }
    }
    /* block (1, 2): its largest element right below 224/448 of the block max, so q rounds to 224 */
    {
      float big = ldexpf(0.75f, (int)((1 * 7 + 2 * 3) % 19 - 12)), edge = big * (227.0f / 448.0f);
      for (int k = 0; k < 2; k++) {
        int64_t i = (int64_t)(130 + k) * LD + 300;
        float x = k == 0 ? big : edge;
        if (src_dtype == RFK_BF16) {
          uint16_t h = (uint16_t)(f2u(x) >> 16);
          memcpy(src + i * 2, &h, 2);
        } else {
          memcpy(src + i * 4, &x, 4);
        }
      }
    }
    int rc = rfk_ref_fp8(src, src_dtype, LD, R, C, q, C, s, sc, RFK_SCALE_REQUANT);
    int rc0 = rfk_ref_fp8(src, src_dtype, LD, R, C, q2, C, s2, sc, RFK_SCALE_FP32);
    rfk_requant it = {q2, s2, q2, s2};
    int rcq = rfk_ref_requant_ue8m0(&it, 1, R, C);
    int rc1 = rfk_ref_fp8(src, src_dtype, LD, R, C, q1, C, s1, sc, RFK_SCALE_UE8M0);
    long differ = 0, vs_ue8m0 = 0;
    for (int64_t i = 0; i < R * C; i++) {
      differ += q[i] != q2[i];
      vs_ue8m0 += q[i] != q1[i];
    }
    for (int64_t i = 0; i < sr * sc; i++)
      differ += f2u(s[i]) != f2u(s2[i]);
    int want = nonfinite ? RFK_ERR_NONFINITE : RFK_OK;
    CHECK(rc == want && rc0 == want && rcq == want && rc1 == want && differ == 0,
          "fp8 requant mode %s [%d x %d] ld %d%s: %ld bytes differ from the fp32-scale quantizer + "
          "rfk_ref_requant_ue8m0 (rc %d, %d/%d)", src_dtype == RFK_BF16 ? "bf16" : "fp32", R, C, LD,
          nonfinite ? " with NaN" : "", differ, rc, rc0, rcq);
    if (!nonfinite)
      CHECK(vs_ue8m0 > 0, "fp8 requant mode %s: %ld codes differ from quantizing straight to UE8M0 scales",
            src_dtype == RFK_BF16 ? "bf16" : "fp32", vs_ue8m0);
    free(src), free(q), free(q2), free(q1), free(s), free(s2), free(s1);
  }
  float x = 1.0f, sc1;
  uint8_t q1;
  CHECK(rfk_ref_fp8(&x, RFK_FP32, 1, 1, 1, &q1, 1, &sc1, 1, 3) == RFK_ERR_ARG &&
            rfk_ref_fp8(&x, RFK_FP32, 1, 1, 1, &q1, 1, &sc1, 1, -1) == RFK_ERR_ARG,
        "fp8: a scale mode other than fp32 / ue8m0 / requant is a bad argument");
}

/* ---- UE8M0 pack (and requant) against vLLM 0.33's own post-processing (tests/vllm/ue8m0_vectors.py) ---- */
static void test_ue8m0_codes(void)
{
  CHECK(rfk_ue8m0_code(1.0f) == 127 && rfk_ue8m0_code(u2f(0x3f800001u)) == 128 && rfk_ue8m0_code(0.75f) == 127 &&
            rfk_ue8m0_code(ldexpf(1, -20)) == 107 && rfk_ue8m0_code(ldexpf(1, 127)) == 254 && rfk_ue8m0_code(0.0f) == 0 &&
            rfk_ue8m0_code(u2f(1)) == 1,
        "ue8m0 codes: 1 -> 127, 1+ulp -> 128, 0.75 -> 127, 2^-20 -> 107, 2^127 -> 254, 0 -> 0, subnormal -> 1");
  CHECK(rfk_ue8m0_code(u2f(0x7f000001u)) == 0xff && rfk_ue8m0_code(INFINITY) == 0xff && rfk_ue8m0_code(NAN) == 0xff &&
            rfk_ue8m0_code(-1.0f) == 0xff && rfk_ue8m0_code(-0.0f) == 0xff,
        "ue8m0 codes: > 2^127, inf, NaN, negative, -0 -> 0xff");
  /* one block row, 5 K blocks: words (p 0: blocks 0..3, p 1: block 4 then zeros), rows 3..3 padding */
  float sc[5] = {1.0f, 2.0f, 0.5f, 3.0f, ldexpf(1, -10)};
  int32_t out[8];
  memset(out, 0x55, sizeof out);
  int rc = rfk_ref_ue8m0_pack(sc, out, 1, 3, 600);
  uint32_t w0 = 127u | 128u << 8 | 126u << 16 | 129u << 24, w1 = 117u;
  CHECK(rc == 0 && rfk_ue8m0_pack_words(3, 600) == 8 && (uint32_t)out[0] == w0 && (uint32_t)out[2] == w0 &&
            out[3] == 0 && (uint32_t)out[4] == w1 && (uint32_t)out[6] == w1 && out[7] == 0,
        "ue8m0 pack [3 x 600]: words %08x %08x, padding %08x %08x (rc %d)", (unsigned)out[0], (unsigned)out[4],
        (unsigned)out[3], (unsigned)out[7], rc);
  sc[1] = NAN;
  rc = rfk_ref_ue8m0_pack(sc, out, 1, 3, 600);
  CHECK(rc == RFK_ERR_NONFINITE && ((uint32_t)out[1] >> 8 & 0xff) == 0xff && (uint32_t)out[4] == w1,
        "ue8m0 pack: a NaN scale is code 0xff, the rest written, rc 1 (rc %d)", rc);
  CHECK(rfk_ref_ue8m0_pack(NULL, out, 1, 1, 1) == RFK_ERR_ARG && rfk_ref_ue8m0_pack(sc, out, 1, -1, 1) == RFK_ERR_ARG &&
            rfk_ref_ue8m0_pack(sc, NULL, 1, 1, 1) == RFK_ERR_ARG && rfk_ref_ue8m0_pack(sc, out, 0, 5, 5) == RFK_OK,
        "ue8m0 pack bad arguments");
}

/* The identities the CUDA kernels rest on (refresh.cu), checked here where they can be:
 * - rfk_cuda_ue8m0_pack computes a code as u >= 0x7f800000 ? 0xff : (u + 0x7fffff) >> 23; it must
 *   equal rfk_ue8m0_code for every sign and exponent, at the mantissa edges and at random ones;
 * - rfk_cuda_requant_ue8m0 (v2) takes a block's amax as fl(max|q| * |s|) from the largest 7-bit
 *   code: that needs x -> fl(e4m3(c) * s) nondecreasing in c over 0x00..0x7e for every scale. */
static void test_cuda_identities(void)
{
  long bad_code = 0, bad_mono = 0;
  static const uint32_t mants[] = {0, 1, 2, 0x3fffff, 0x400000, 0x400001, 0x7ffffe, 0x7fffff};
  for (uint32_t se = 0; se < 512; se++)
    for (int k = 0; k < 16; k++) {
      uint32_t u = se << 23 | (k < 8 ? mants[k] : rnd() & 0x7fffffu);
      uint32_t cuda = u >= 0x7f800000u ? 0xffu : (u + 0x7fffffu) >> 23;
      if (cuda != rfk_ue8m0_code(u2f(u)) && bad_code++ < 3)
        printf("  code of %08x: formula %02x, rfk_ue8m0_code %02x\n", (unsigned)u, (unsigned)cuda,
               rfk_ue8m0_code(u2f(u)));
    }
  CHECK(bad_code == 0, "the CUDA pack's code formula equals rfk_ue8m0_code on 8192 scales (%ld differ)", bad_code);
  for (int i = 0; i < 20000; i++) {
    /* positive scales over the whole range: subnormal to near overflow */
    float sc = u2f(i < 254 ? (uint32_t)(i + 1) << 23 | (rnd() & 0x7fffffu) : 1u + rnd() % 0x7f7fffffu);
    float prev = 0.0f;
    for (int c = 0; c <= 0x7e; c++) {
      float v = (float)e4m3_value(c) * sc; /* e4m3 values are exact in float; one fp32 rounding */
      if (v < prev && bad_mono++ < 3)
        printf("  scale %a: code %02x gives %a < %a\n", sc, c, v, prev);
      prev = v;
    }
  }
  CHECK(bad_mono == 0, "fl(e4m3(c) * s) is nondecreasing in the code for 20000 scales (%ld breaks)", bad_mono);
}

/* the LCG of ue8m0_vectors.py */
static uint32_t lcg(uint64_t *st)
{
  *st = *st * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(*st >> 33);
}

static int read_all(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

/* One vector file: rebuilds the inputs from its seed, runs rfk_ref_requant_ue8m0 (kind 1) and
 * rfk_ref_ue8m0_pack, compares every byte with vLLM's. Returns 1 when equal. */
static int check_ue8m0_file(const char *path, const char *name)
{
  FILE *f = fopen(path, "rb");
  char magic[8];
  int64_t h[6], geo[6];
  if (!f || !read_all(f, magic, 8) || memcmp(magic, "RFUE8M01", 8) || !read_all(f, h, sizeof h)) {
    printf("  %s: cannot read a vector header\n", path);
    if (f)
      fclose(f);
    return 0;
  }
  uint64_t st = (uint64_t)h[0];
  int64_t G = h[1], R = h[2], C = h[3], kind = h[4], sr = (R + 127) / 128, sk = (C + 127) / 128;
  int64_t words = rfk_ue8m0_pack_words(R, C), nq = G * R * C, ns = G * sr * sk;
  uint8_t *q = malloc((size_t)nq + 1), *wq = malloc((size_t)nq + 1);
  float *s = malloc(sizeof *s * (size_t)ns), *ws = malloc(sizeof *ws * (size_t)ns);
  int32_t *out = malloc(sizeof *out * (size_t)(G * words)), *want = malloc(sizeof *want * (size_t)(G * words));
  if (kind == 1) {
    for (int64_t i = 0; i < nq; i++) {
      uint32_t c = lcg(&st) & 0xff;
      q[i] = (uint8_t)((c & 0x7f) == 0x7f ? c ^ 1 : c);
    }
    for (int64_t r = 0; r < (R < 128 ? R : 128); r++)
      for (int64_t c = 0; c < (C < 128 ? C : 128); c++)
        q[r * C + c] &= 0x80;
  }
  for (int64_t i = 0; i < ns; i++) {
    if (kind == 1) {
      uint32_t e = 127 - 8 - lcg(&st) % 6;
      s[i] = u2f(e << 23 | (lcg(&st) & 0x7fffffu));
    } else {
      s[i] = u2f((100 + lcg(&st) % 40) << 23);
    }
  }
  int ok = 1, rc = 0;
  if (kind == 1) {
    ok = read_all(f, wq, (size_t)nq) && read_all(f, ws, sizeof *ws * (size_t)ns);
    rfk_requant *it = malloc(sizeof *it * (size_t)G);
    for (int64_t g = 0; g < G; g++)
      it[g] = (rfk_requant){q + g * R * C, s + g * sr * sk, q + g * R * C, s + g * sr * sk};
    rc = rfk_ref_requant_ue8m0(it, (int)G, R, C);
    free(it);
  }
  ok = ok && read_all(f, want, sizeof *want * (size_t)(G * words)) && read_all(f, geo, sizeof geo);
  fclose(f);
  int rp = rfk_ref_ue8m0_pack(s, out, G, R, C);
  long bq = 0, bs = 0, bw = 0;
  if (ok) {
    for (int64_t i = 0; kind == 1 && i < nq; i++)
      if (q[i] != wq[i] && bq++ < 3)
        printf("  %s: weight byte %lld: 0x%02x, vLLM 0x%02x\n", name, (long long)i, q[i], wq[i]);
    for (int64_t i = 0; kind == 1 && i < ns; i++)
      if (f2u(s[i]) != f2u(ws[i]) && bs++ < 3)
        printf("  %s: scale %lld: %g, vLLM %g\n", name, (long long)i, s[i], ws[i]);
    for (int64_t i = 0; i < G * words; i++)
      if (out[i] != want[i] && bw++ < 3)
        printf("  %s: packed word %lld: %08x, vLLM %08x\n", name, (long long)i, (unsigned)out[i], (unsigned)want[i]);
  }
  int64_t mn = rfk_ue8m0_pack_mn(R), pk = (sk + 3) / 4;
  int geo_ok = ok && geo[0] == G && geo[1] == R && geo[2] == pk && geo[3] == words && geo[4] == 1 && geo[5] == mn;
  printf("  %s: groups %lld [%lld x %lld] -> vLLM int32 [%lld, %lld, %lld] strides (%lld, %lld, %lld): %ld weight, %ld "
         "scale, %ld packed words differ\n", name, (long long)G, (long long)R, (long long)C, (long long)geo[0],
         (long long)geo[1], (long long)geo[2], (long long)geo[3], (long long)geo[4], (long long)geo[5], bq, bs, bw);
  free(q), free(wq), free(s), free(ws), free(out), free(want);
  return ok && geo_ok && rc == 0 && rp == 0 && bq == 0 && bs == 0 && bw == 0;
}

static int check_ue8m0_dir(const char *dir, const char *what)
{
  static const char *names[] = {"linear_256x256", "linear_301x300", "experts_3x130x200", "experts_2x130x520",
                                "tiny_7x130", "pack_2x250x7168", "pack_4x1x1"};
  int all = 1;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.bin", dir, names[i]);
    int ok = check_ue8m0_file(path, names[i]);
    CHECK(ok, "%s: %s equals vLLM 0.33 (requant + transform_sf_into_required_layout)", what, names[i]);
    all &= ok;
  }
  return all;
}

/* The committed vectors always; vLLM's function itself on fresh inputs when a python with vllm is
 * found (VLLM_PYTHON, else ~/.cache/refit/vllm-0.33.0/bin/python). */
static void test_ue8m0_vllm(uint64_t seed)
{
  check_ue8m0_dir("tests/fixtures/ue8m0", "committed vector");
  char py[512], cmd[1024], dir[] = "/tmp/rfk_ue8m0_XXXXXX";
  const char *env = getenv("VLLM_PYTHON"), *home = getenv("HOME");
  if (env && *env)
    snprintf(py, sizeof py, "%s", env);
  else
    snprintf(py, sizeof py, "%s/.cache/refit/vllm-0.33.0/bin/python", home ? home : "");
  snprintf(cmd, sizeof cmd, "%s -c 'import importlib.util as u, sys; sys.exit(u.find_spec(\"vllm\") is None)' 2>/dev/null",
           py);
  if (!(env && *env) && (access(py, X_OK) != 0 || system(cmd) != 0)) {
    printf("  vLLM's function not run: no vllm in %s (set VLLM_PYTHON); the committed vectors were checked\n", py);
    return;
  }
  if (!mkdtemp(dir))
    return;
  snprintf(cmd, sizeof cmd, "%s tests/vllm/ue8m0_vectors.py %s %llu > %s/log 2>&1", py, dir,
           (unsigned long long)(seed % 1000000), dir);
  fflush(stdout);
  int st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s tests/vllm/ue8m0_vectors.py ran (see %s/log)", py, dir);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && check_ue8m0_dir(dir, "vLLM now, fresh inputs")) {
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
      printf("  could not remove %s\n", dir);
  }
}

int main(void)
{
  const char *env = getenv("RFK_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  rng_state = seed;
  printf("test_kernels: seed %llu (RFK_SEED=%llu reproduces)\n", (unsigned long long)seed, (unsigned long long)seed);
  test_e4m3_codes();
  test_casts();
  test_fp8_cases();
  test_grouped();
  test_pack_items();
  test_args();
  test_requant();
  test_requant_mode();
  test_ue8m0_codes();
  test_cuda_identities();
  test_ue8m0_vllm(seed);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
