/* ref.c: bit-exact C reference of the kernels (kernels.h) and of the UE8M0 re-quantization
 * (refresh.h). The CUDA kernels must produce the same bytes; tests/test_kernels.c checks this file
 * against ml_dtypes and an exhaustive e4m3 table, tests/test_kernels_gpu.c checks CUDA against it.
 * All arithmetic is plain IEEE fp32 (x86-64 SSE: no excess precision, no FMA contraction here). */
#include <math.h>
#include <string.h>

#include "delta.h"
#include "kernels.h"
#include "refresh.h"

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

const char *rfk_strerror(int err)
{
  switch (err) {
  case RFK_OK: return "ok";
  case RFK_ERR_NONFINITE: return "non-finite value (inf or NaN) in FP8 quantizer input";
  case RFK_ERR_ARG: return "bad argument (NULL pointer, unknown dtype, or shape/pitch out of range)";
  case RFK_ERR_CUDA: return "CUDA launch failed";
  case RFK_DELTA_OVERFLOW: return "delta patch larger than its capacity (send the region dense)";
  case RFK_DELTA_MALFORMED: return "malformed delta patch (nothing of that region applied)";
  }
  return "unknown kernels error";
}

/* e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no inf; 0x7f/0xff NaN; max 448 = 0x7e.
 * Normal codes: |x| in [2^-6, 448]; subnormals: m * 2^-9, m = 1..7. */
uint8_t rfk_f32_to_e4m3(float x)
{
  uint32_t u = f2u(x), sign = (u >> 24) & 0x80, a = u & 0x7fffffffu;
  if (a > 0x7f800000u)
    return 0x7f;
  if (a >= 0x43e00000u) /* |x| >= 448: saturate (inf included) */
    return (uint8_t)(sign | 0x7e);
  if (a < 0x3c800000u) { /* |x| < 2^-6: subnormal grid 2^-9, x * 2^9 is exact */
    float m = rintf(u2f(a) * 512.0f); /* default rounding mode: nearest even; 8 = 2^-6 = code 0x08 */
    return (uint8_t)(sign | (uint32_t)m);
  }
  /* normal: round the 23-bit mantissa to 3 bits, nearest even; a carry moves into the exponent */
  uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1)) >> 20; /* (exp8 << 3) | mant3 */
  r -= (127 - 7) << 3;
  if (r > 0x7e)
    r = 0x7e; /* 448 < |x| < 464 rounds to 448 anyway; satfinite keeps it there */
  return (uint8_t)(sign | r);
}

float rfk_ue8m0_ceil(float s)
{
  uint32_t u = f2u(s);
  if (u & 0x7fffffu)
    u = (u & 0x7f800000u) + 0x800000u;
  return u2f(u);
}

static float load(const void *p, int dtype, int64_t i)
{
  if (dtype == RFK_BF16)
    return u2f((uint32_t)((const uint16_t *)p)[i] << 16);
  return ((const float *)p)[i];
}

static uint16_t to_bf16(uint32_t u)
{
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static void cast_region(const rfk_shape *s, const rfk_item *it)
{
  for (int64_t r = 0; r < s->rows; r++) {
    int64_t si = r * s->src_ld, oi = r * s->out_ld;
    if (s->src_dtype == s->out_dtype) {
      size_t esz = s->src_dtype == RFK_BF16 ? 2 : 4;
      memcpy((char *)it->out + oi * esz, (const char *)it->src + si * esz, (size_t)s->cols * esz);
    } else if (s->out_dtype == RFK_FP32) { /* bf16 -> fp32, exact */
      for (int64_t c = 0; c < s->cols; c++)
        ((float *)it->out)[oi + c] = load(it->src, RFK_BF16, si + c);
    } else { /* fp32 -> bf16 */
      for (int64_t c = 0; c < s->cols; c++)
        ((uint16_t *)it->out)[oi + c] = to_bf16(f2u(((const float *)it->src)[si + c]));
    }
  }
}

static float e4m3_to_f32(uint8_t q)
{
  int e = (q >> 3) & 15, m = q & 7;
  float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), e - 10);
  return q & 0x80 ? -v : v;
}

/* UE8M0 re-quantization of one block (refresh.h rfk_ref_requant_ue8m0): rows [r0, r1), cols [c0, c1)
 * of q (row pitch ld) with the block's scale *s: x = f32(q) * scale (one fp32 multiply), then the
 * block FP8 quantizer with ue8m0 scales over x, written to q_out (same pitch) and *so. In place when
 * q_out == q and so == s (each element is read before it is written). Returns 1 for a NaN code or a
 * scale that is not finite (the block becomes NaN). */
static int requant_block_to(const uint8_t *q, uint8_t *q_out, int64_t ld, const float *s, float *so, int64_t r0,
                            int64_t r1, int64_t c0, int64_t c1)
{
  float sv = *s;
  uint32_t amax_bits = 0;
  int nonfinite = !isfinite(sv);
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      uint8_t b = q[r * ld + c];
      uint32_t a = f2u(e4m3_to_f32(b) * sv) & 0x7fffffffu;
      nonfinite |= (b & 0x7f) == 0x7f;
      amax_bits = a > amax_bits ? a : amax_bits;
    }
  if (nonfinite || amax_bits >= 0x7f800000u) {
    *so = u2f(0x7fc00000u);
    for (int64_t r = r0; r < r1; r++)
      memset(q_out + r * ld + c0, 0x7f, (size_t)(c1 - c0));
    return 1;
  }
  float ns = rfk_ue8m0_ceil(fmaxf(u2f(amax_bits), 1e-4f) / 448.0f), mul = 1.0f / ns;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++)
      q_out[r * ld + c] = rfk_f32_to_e4m3(e4m3_to_f32(q[r * ld + c]) * sv * mul);
  *so = ns;
  return 0;
}

static int requant_block(uint8_t *q, int64_t ld, float *s, float *so, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
  return requant_block_to(q, q, ld, s, so, r0, r1, c0, c1);
}

/* One 128x128 block: rows [r0, r1), cols [c0, c1) of the region. Returns 1 when it held inf/NaN. */
static int fp8_block(const rfk_shape *s, const rfk_item *it, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
  uint8_t *q = it->out;
  uint32_t amax_bits = 0; /* max of |x| bit patterns: orders like the floats, NaN above inf */
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      uint32_t a = f2u(load(it->src, s->src_dtype, r * s->src_ld + c)) & 0x7fffffffu;
      amax_bits = a > amax_bits ? a : amax_bits;
    }
  float *sc = &it->scale[(r0 / 128) * s->scale_ld + c0 / 128];
  if (amax_bits >= 0x7f800000u) {
    *sc = u2f(0x7fc00000u);
    for (int64_t r = r0; r < r1; r++)
      memset(q + r * s->out_ld + c0, 0x7f, (size_t)(c1 - c0));
    return 1;
  }
  float amax = fmaxf(u2f(amax_bits), 1e-4f), scale = amax / 448.0f, mul;
  if (s->ue8m0 == RFK_SCALE_UE8M0) {
    scale = rfk_ue8m0_ceil(scale);
    mul = 1.0f / scale;
  } else {
    mul = 448.0f / amax;
  }
  *sc = scale;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++)
      q[r * s->out_ld + c] = rfk_f32_to_e4m3(load(it->src, s->src_dtype, r * s->src_ld + c) * mul);
  if (s->ue8m0 == RFK_SCALE_REQUANT) /* the fp32-scale block, then vLLM's re-quantization of it */
    return requant_block(q, s->out_ld, sc, sc, r0, r1, c0, c1);
  return 0;
}

static int check_shape(const rfk_shape *s, const rfk_item *items, int n)
{
  if (!s || n < 0 || (n > 0 && !items))
    return RFK_ERR_ARG;
  if (s->src_dtype != RFK_BF16 && s->src_dtype != RFK_FP32)
    return RFK_ERR_ARG;
  if (s->out_dtype != RFK_BF16 && s->out_dtype != RFK_FP32 && s->out_dtype != RFK_FP8)
    return RFK_ERR_ARG;
  if (s->rows < 0 || s->cols < 0 || s->src_ld < s->cols || s->out_ld < s->cols)
    return RFK_ERR_ARG;
  if (s->out_dtype == RFK_FP8 && (s->scale_ld < (s->cols + 127) / 128 || s->ue8m0 < RFK_SCALE_FP32 ||
                                   s->ue8m0 > RFK_SCALE_REQUANT))
    return RFK_ERR_ARG;
  for (int i = 0; i < n; i++)
    if (!items[i].src || !items[i].out || (s->out_dtype == RFK_FP8 && !items[i].scale))
      return RFK_ERR_ARG;
  return RFK_OK;
}

int rfk_ref_run(const rfk_shape *s, const rfk_item *items, int n)
{
  int rc = check_shape(s, items, n), bad = 0;
  if (rc != RFK_OK)
    return rc;
  for (int i = 0; i < n; i++) {
    if (s->out_dtype != RFK_FP8) {
      cast_region(s, &items[i]);
      continue;
    }
    for (int64_t r0 = 0; r0 < s->rows; r0 += 128)
      for (int64_t c0 = 0; c0 < s->cols; c0 += 128)
        bad |= fp8_block(s, &items[i], r0, r0 + 128 < s->rows ? r0 + 128 : s->rows, c0,
                         c0 + 128 < s->cols ? c0 + 128 : s->cols);
  }
  return bad ? RFK_ERR_NONFINITE : RFK_OK;
}

int rfk_ref_cast(const void *src, int src_dtype, int64_t src_ld, void *out, int out_dtype, int64_t out_ld,
                 int64_t rows, int64_t cols)
{
  if (out_dtype == RFK_FP8)
    return RFK_ERR_ARG;
  rfk_shape s = {src_dtype, out_dtype, 0, rows, cols, src_ld, out_ld, 0};
  rfk_item it = {src, out, NULL};
  return rfk_ref_run(&s, &it, 1);
}

int rfk_ref_fp8(const void *src, int src_dtype, int64_t src_ld, int64_t rows, int64_t cols, uint8_t *q,
                int64_t q_ld, float *scale, int64_t scale_ld, int ue8m0)
{
  rfk_shape s = {src_dtype, RFK_FP8, ue8m0, rows, cols, src_ld, q_ld, scale_ld};
  rfk_item it = {src, q, scale};
  return rfk_ref_run(&s, &it, 1);
}


/* UE8M0 re-quantization (refresh.h): requant_block_to over every block of every item */
int rfk_ref_requant_ue8m0(const rfk_requant *items, int n, int64_t rows, int64_t cols)
{
  if (n < 0 || (n > 0 && !items) || rows < 0 || cols < 0)
    return RFK_ERR_ARG;
  for (int i = 0; i < n; i++)
    if (!items[i].q || !items[i].scale || !items[i].q_out || !items[i].scale_out)
      return RFK_ERR_ARG;
  int64_t scols = (cols + 127) / 128;
  int bad = 0;
  for (int i = 0; i < n; i++) {
    const rfk_requant *it = &items[i];
    for (int64_t r0 = 0; r0 < rows; r0 += 128)
      for (int64_t c0 = 0; c0 < cols; c0 += 128) {
        int64_t r1 = r0 + 128 < rows ? r0 + 128 : rows, c1 = c0 + 128 < cols ? c0 + 128 : cols, k = (r0 / 128) * scols + c0 / 128;
        bad |= requant_block_to(it->q, it->q_out, cols, &it->scale[k], &it->scale_out[k], r0, r1, c0, c1);
      }
  }
  return bad ? RFK_ERR_NONFINITE : RFK_OK;
}

uint8_t rfk_ue8m0_code(float s)
{
  uint32_t u = f2u(s);
  if (u >= 0x7f800000u) /* inf, NaN, any sign bit */
    return 0xff;
  return (uint8_t)(f2u(rfk_ue8m0_ceil(s)) >> 23); /* > 2^127 rounds up to inf: 0xff */
}

int rfk_ref_ue8m0_pack(const float *scale, int32_t *out, int64_t groups, int64_t rows, int64_t cols)
{
  if (!scale || !out || groups < 0 || rows < 0 || cols < 0)
    return RFK_ERR_ARG;
  if (groups == 0 || rows == 0 || cols == 0)
    return RFK_OK;
  int64_t sk = (cols + 127) / 128, sr = (rows + 127) / 128, pk = (sk + 3) / 4, mn = rfk_ue8m0_pack_mn(rows);
  int bad = 0;
  for (int64_t g = 0; g < groups; g++)
    for (int64_t p = 0; p < pk; p++)
      for (int64_t r = 0; r < mn; r++) {
        uint32_t w = 0;
        for (int j = 0; j < 4 && r < rows && 4 * p + j < sk; j++) {
          uint8_t c = rfk_ue8m0_code(scale[(g * sr + r / 128) * sk + 4 * p + j]);
          bad |= c == 0xff;
          w |= (uint32_t)c << (8 * j);
        }
        out[g * pk * mn + p * mn + r] = (int32_t)w;
      }
  return bad ? RFK_ERR_NONFINITE : RFK_OK;
}

/* Grouped UE8M0 pack (refresh.h): the block numbering of the CUDA launch, and the reference. */
int64_t rfk_ue8m0_pack_prepare(rfk_ue8m0_item *items, int n, int *bad)
{
  if (n < 0 || (n > 0 && !items)) {
    if (bad)
      *bad = 0;
    return -1;
  }
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    rfk_ue8m0_item *it = &items[i];
    int64_t sk = (it->cols + 127) / 128, sr = (it->rows + 127) / 128, pk = (sk + 3) / 4;
    if (!it->scale || !it->out || it->groups < 0 || it->rows < 0 || it->cols < 0 || (uintptr_t)it->out % 4 ||
        (uintptr_t)it->scale % 4 || it->groups * pk > 0x7fffffff || it->groups * sr * sk > ((int64_t)1 << 40)) {
      if (bad)
        *bad = i;
      return -1;
    }
    int64_t bx = (rfk_ue8m0_pack_mn(it->rows) + RFK_PACK_ROWS_PER_BLOCK - 1) / RFK_PACK_ROWS_PER_BLOCK;
    it->first = total;
    it->bx = (int32_t)bx;
    it->align = ((uintptr_t)it->out % 16 == 0) | (sk % 4 == 0 && (uintptr_t)it->scale % 16 == 0) << 1;
    total += it->groups * pk * bx; /* rows 0 or cols 0: sk or bx is 0, no blocks */
    if (total > 0x7fffffff) {
      if (bad)
        *bad = i;
      return -1;
    }
  }
  return total;
}

int rfk_ref_ue8m0_pack_items(const rfk_ue8m0_item *items, int n)
{
  if (n < 0 || (n > 0 && !items))
    return RFK_ERR_ARG;
  for (int i = 0; i < n; i++)
    if (!items[i].scale || !items[i].out || items[i].groups < 0 || items[i].rows < 0 || items[i].cols < 0)
      return RFK_ERR_ARG;
  int bad = 0;
  for (int i = 0; i < n; i++) {
    int rc = rfk_ref_ue8m0_pack(items[i].scale, items[i].out, items[i].groups, items[i].rows, items[i].cols);
    if (rc == RFK_ERR_NONFINITE)
      bad = 1;
    else if (rc)
      return rc;
  }
  return bad ? RFK_ERR_NONFINITE : RFK_OK;
}
