/* test_refresh.c: the MLA absorption reference against a direct float64 computation from the
 * dequantized weights, on fresh random data (fp8 codes, block scales, odd row counts), written
 * into the strided views of one storage (vLLM's W^T layout, two contiguous views, a layout with
 * gaps that must stay untouched); the layout check against overlapping and escaping views. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mla_layouts.h"
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

/* One layer of shape (h, nope, v, lora) in layout `kind`: every view element equals the float64
 * dequantized weight rounded to bf16, give or take the one fp32 rounding before it (then it is a
 * neighbour, never further than half a bf16 ulp plus 2^-24 relative), read at the element the
 * view's offset and strides name, independently of the kernel's address arithmetic; every other
 * storage element keeps its poison. */
static void absorb_case(int fp8, int kind, int h, int nope, int v, int lora)
{
  int64_t rows = (int64_t)h * (nope + v), srows = (rows + 127) / 128, scols = (lora + 127) / 128;
  rfk_mla_layout y = mla_layout(kind, h, nope, v, lora);
  uint8_t *q = malloc(rows * lora);
  uint16_t *b = malloc(rows * lora * 2);
  float *scale = malloc(srows * scols * 4);
  uint16_t *out = malloc((size_t)y.elems * 2);
  uint8_t *covered = calloc((size_t)y.elems, 1);
  for (int64_t i = 0; i < rows * lora; i++) {
    uint8_t c = (uint8_t)rnd();
    if ((c & 0x7f) == 0x7f) c ^= 1; /* no NaN codes: 0x7f / 0xff */
    q[i] = c;
    b[i] = rfk_f32_to_bf16((float)((int)(rnd() % 2001) - 1000) / 977.0f);
  }
  for (int64_t i = 0; i < srows * scols; i++)
    scale[i] = ldexpf(1.0f + (float)(rnd() % 1000) / 1000.0f, (int)(rnd() % 20) - 18);
  memset(out, 0xff, (size_t)y.elems * 2); /* poison */
  rfk_mla_absorb it = {fp8 ? (const void *)q : (const void *)b, fp8 ? scale : NULL, out};
  int rc = rfk_ref_mla_absorb(&it, 1, fp8, &y);
  long bad = 0, exact = 0, total = 0, stray = 0;
  for (int64_t n = 0; n < h; n++)
    for (int64_t i = 0; i < nope + v; i++)
      for (int64_t l = 0; l < lora; l++) {
        int64_t row = n * (nope + v) + i;
        double w = fp8 ? (double)rfk_e4m3_to_f32(q[row * lora + l]) * (double)scale[(row / 128) * scols + l / 128]
                       : bf16_to_f64(b[row * lora + l]);
        int64_t at = i < nope ? y.uk_off + n * y.uk_stride[0] + i * y.uk_stride[1] + l * y.uk_stride[2]
                              : y.uv_off + n * y.uv_stride[0] + l * y.uv_stride[1] + (i - nope) * y.uv_stride[2];
        /* vLLM's formula, stated independently: the storage is W^T, element (l, row) at l*pitch + row */
        if (kind != MLA_SPLIT && at != y.uk_off + l * (y.elems - y.uk_off) / lora + row) bad++;
        covered[at] = 1;
        uint16_t got = out[at];
        double g = bf16_to_f64(got);
        double ulp = g == 0 ? ldexp(1, -133) : ldexp(1, ilogb(g) - 7);
        total++;
        if (g == w || fabs(g - w) <= 0.5 * ulp * (1 + ldexp(1, -15))) {
          exact += rfk_f32_to_bf16((float)w) == got || g == w;
        } else if (bad++ < 5) {
          printf("  h=%lld i=%lld l=%lld: got %.9g, float64 %.9g\n", (long long)n, (long long)i, (long long)l, g, w);
        }
      }
  for (int64_t e = 0; e < y.elems; e++)
    stray += !covered[e] && out[e] != 0xffff;
  int ok = rc == 0 && bad == 0 && stray == 0 && exact * 1000 >= total * 999 && rfk_mla_layout_check(&y) == 0;
  printf("%s mla absorb %s %s h=%d nope=%d v=%d lora=%d: %ld/%ld equal to float64 rounded once (%ld off, %ld "
         "uncovered elements written)\n", ok ? "ok  " : "FAIL", fp8 ? "fp8" : "bf16", mla_layout_name[kind], h, nope, v,
         lora, exact, total, bad, stray);
  ok ? passed++ : failed++;
  free(q), free(b), free(scale), free(out), free(covered);
}

static void bad_arguments(void)
{
  uint16_t x[64];
  rfk_mla_layout y = mla_layout(MLA_VLLM, 1, 2, 2, 4); /* 16 elements */
  rfk_mla_absorb it = {x, NULL, x};
  int ok = rfk_ref_mla_absorb(&it, 1, 1, &y) == 2 /* fp8 without scales */ && rfk_ref_mla_absorb(&it, 1, 0, NULL) == 2 &&
           rfk_ref_mla_absorb(NULL, 1, 0, &y) == 2 && rfk_ref_mla_absorb(&it, 1, 0, &y) == 0;
  rfk_mla_layout z = y;
  z.heads = 0;
  ok = ok && rfk_ref_mla_absorb(&it, 1, 0, &z) == 2;
  z = y, z.elems = 15; /* the last W_UV element is element 15 */
  ok = ok && rfk_ref_mla_absorb(&it, 1, 0, &z) == 2 && rfk_mla_layout_check(&z) == 2;
  z = y, z.uv_stride[0] = -4;
  ok = ok && rfk_ref_mla_absorb(&it, 1, 0, &z) == 2;
  printf("%s mla absorb rejects missing scales, empty shapes, NULL items and views leaving the storage\n", ok ? "ok  " : "FAIL");
  ok ? passed++ : failed++;
}

/* rfk_mla_layout_check: each documented layout passes; views that write one element twice fail */
static void layout_check(void)
{
  int ok = 1;
  for (int k = MLA_VLLM; k <= MLA_GAPPED; k++) {
    rfk_mla_layout x = mla_layout(k, 4, 192, 256, 512);
    ok = ok && rfk_mla_layout_check(&x) == 0;
  }
  rfk_mla_layout y = mla_layout(MLA_VLLM, 2, 64, 64, 128);
  rfk_mla_layout z = y;
  z.uv_off = 0; /* W_UV on top of W_UK_T */
  ok = ok && rfk_mla_layout_check(&z) == 2;
  z = y, z.uk_stride[0] = 1; /* heads of W_UK_T collide */
  ok = ok && rfk_mla_layout_check(&z) == 2;
  z = y, z.uv_stride[2] = 0; /* every j of a W_UV row at one element */
  ok = ok && rfk_mla_layout_check(&z) == 2 && rfk_mla_layout_check(NULL) == 2;
  printf("%s mla layout check: vllm, split and gapped layouts pass; overlapping views fail\n", ok ? "ok  " : "FAIL");
  ok ? passed++ : failed++;
}

int main(void)
{
  rng_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  printf("seed %llu\n", (unsigned long long)rng_state);
  for (int k = MLA_VLLM; k <= MLA_GAPPED; k++) {
    absorb_case(1, k, 2, 64, 64, 128);   /* glm_tiny per TP rank */
    absorb_case(1, k, 3, 40, 24, 200);   /* odd sizes: partial blocks in both dims */
    absorb_case(0, k, 2, 64, 64, 128);
  }
  absorb_case(1, MLA_VLLM, 1, 192, 256, 512); /* GLM-5 per-head shape */
  absorb_case(1, MLA_VLLM, 4, 128, 128, 512); /* DeepSeek-V3 shape, 4 local heads */
  bad_arguments();
  layout_check();
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
