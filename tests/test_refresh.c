/* test_refresh.c: the MLA absorption reference against a direct float64 computation from the
 * dequantized weights, on fresh random data (fp8 codes, block scales, odd row counts). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "refresh.h"

static int passed, failed;

static double bf16_to_f64(uint16_t b)
{
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}

/* One layer of shape (h, nope, v, lora): every output element equals the float64 dequantized weight
 * rounded to bf16, give or take the one fp32 rounding before it (then it is a neighbour, never
 * further than half a bf16 ulp plus 2^-24 relative). */
static void absorb_case(int fp8, int h, int nope, int v, int lora)
{
  int64_t rows = (int64_t)h * (nope + v), srows = (rows + 127) / 128, scols = (lora + 127) / 128;
  uint8_t *q = malloc(rows * lora);
  uint16_t *b = malloc(rows * lora * 2);
  float *scale = malloc(srows * scols * 4);
  uint16_t *uk = malloc((size_t)h * nope * lora * 2), *uv = malloc((size_t)h * lora * v * 2);
  for (int64_t i = 0; i < rows * lora; i++) {
    uint8_t c = (uint8_t)rnd();
    if ((c & 0x7f) == 0x7f) c ^= 1; /* no NaN codes: 0x7f / 0xff */
    q[i] = c;
    b[i] = rfk_f32_to_bf16((float)((int)(rnd() % 2001) - 1000) / 977.0f);
  }
  for (int64_t i = 0; i < srows * scols; i++)
    scale[i] = ldexpf(1.0f + (float)(rnd() % 1000) / 1000.0f, (int)(rnd() % 20) - 18);
  memset(uk, 0xff, (size_t)h * nope * lora * 2); /* poison */
  memset(uv, 0xff, (size_t)h * lora * v * 2);
  rfk_mla_absorb it = {fp8 ? (const void *)q : (const void *)b, fp8 ? scale : NULL, uk, uv};
  int rc = rfk_ref_mla_absorb(&it, 1, fp8, h, nope, v, lora);
  long bad = 0, exact = 0, total = 0;
  for (int64_t n = 0; n < h; n++)
    for (int64_t i = 0; i < nope + v; i++)
      for (int64_t l = 0; l < lora; l++) {
        int64_t row = n * (nope + v) + i;
        double w = fp8 ? (double)rfk_e4m3_to_f32(q[row * lora + l]) * (double)scale[(row / 128) * scols + l / 128]
                       : bf16_to_f64(b[row * lora + l]);
        uint16_t got = i < nope ? uk[(n * nope + i) * lora + l] : uv[(n * lora + l) * v + (i - nope)];
        double g = bf16_to_f64(got);
        double ulp = g == 0 ? ldexp(1, -133) : ldexp(1, ilogb(g) - 7);
        total++;
        if (g == w || fabs(g - w) <= 0.5 * ulp * (1 + ldexp(1, -15))) {
          exact += rfk_f32_to_bf16((float)w) == got || g == w;
        } else if (bad++ < 5) {
          printf("  h=%lld i=%lld l=%lld: got %.9g, float64 %.9g\n", (long long)n, (long long)i, (long long)l, g, w);
        }
      }
  int ok = rc == 0 && bad == 0 && exact * 1000 >= total * 999;
  printf("%s mla absorb %s h=%d nope=%d v=%d lora=%d: %ld/%ld equal to float64 rounded once (%ld off)\n",
         ok ? "ok  " : "FAIL", fp8 ? "fp8" : "bf16", h, nope, v, lora, exact, total, bad);
  ok ? passed++ : failed++;
  free(q), free(b), free(scale), free(uk), free(uv);
}

static void bad_arguments(void)
{
  uint16_t x[4];
  rfk_mla_absorb it = {x, NULL, x, x};
  int ok = rfk_ref_mla_absorb(&it, 1, 1, 1, 1, 1, 1) == 2 /* fp8 without scales */ &&
           rfk_ref_mla_absorb(&it, 1, 0, 0, 1, 1, 1) == 2 && rfk_ref_mla_absorb(NULL, 1, 0, 1, 1, 1, 1) == 2;
  printf("%s mla absorb rejects missing scales, empty shapes and NULL items\n", ok ? "ok  " : "FAIL");
  ok ? passed++ : failed++;
}

int main(void)
{
  rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  printf("seed %llu\n", (unsigned long long)rng_state);
  absorb_case(1, 2, 64, 64, 128);   /* glm_tiny per TP rank */
  absorb_case(1, 3, 40, 24, 200);   /* odd sizes: partial blocks in both dims */
  absorb_case(1, 1, 192, 256, 512); /* GLM-5 per-head shape */
  absorb_case(0, 2, 64, 64, 128);
  bad_arguments();
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
