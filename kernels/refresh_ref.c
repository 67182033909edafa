/* refresh_ref.c: C reference of the refresh kernels (refresh.h). Bit-exact contract for the CUDA
 * versions: dequantize in fp32 (one multiply), round once to bf16. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "refresh.h"

float rfk_e4m3_to_f32(uint8_t q)
{
  int s = q >> 7, e = (q >> 3) & 15, m = q & 7;
  float v;
  if (e == 15 && m == 7)
    return NAN;
  if (e == 0)
    v = ldexpf((float)m, -9); /* subnormal: m/8 * 2^-6 */
  else
    v = ldexpf((float)(8 + m), e - 10); /* (1 + m/8) * 2^(e-7) */
  return s ? -v : v;
}

uint16_t rfk_f32_to_bf16(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

int rfk_mla_layout_check(const rfk_mla_layout *y)
{
  if (!rfk_mla_layout_inside(y))
    return 2;
  uint8_t *seen = calloc((size_t)(y->elems + 7) / 8, 1);
  if (!seen)
    return 2;
  int rc = 0;
  for (int64_t h = 0; h < y->heads && !rc; h++)
    for (int64_t l = 0; l < y->lora && !rc; l++)
      for (int64_t i = 0; i < y->nope + y->v && !rc; i++) {
        int64_t at = i < y->nope ? y->uk_off + h * y->uk_stride[0] + i * y->uk_stride[1] + l * y->uk_stride[2]
                                 : y->uv_off + h * y->uv_stride[0] + l * y->uv_stride[1] + (i - y->nope) * y->uv_stride[2];
        if (seen[at / 8] & (1u << (at % 8)))
          rc = 2;
        seen[at / 8] |= (uint8_t)(1u << (at % 8));
      }
  free(seen);
  return rc;
}

int rfk_ref_mla_absorb(const rfk_mla_absorb *items, int n, int kv_b_is_fp8, const rfk_mla_layout *y)
{
  if (!items || n < 0 || !rfk_mla_layout_inside(y))
    return 2;
  const int64_t nope = y->nope, lora = y->lora, per = nope + y->v, scols = (lora + 127) / 128;
  for (int k = 0; k < n; k++) {
    const rfk_mla_absorb *it = &items[k];
    if (!it->kv_b || !it->out || (kv_b_is_fp8 && !it->scale))
      return 2;
    for (int64_t h = 0; h < y->heads; h++)
      for (int64_t i = 0; i < per; i++) {
        int64_t row = h * per + i;
        for (int64_t l = 0; l < lora; l++) {
          uint16_t w;
          if (kv_b_is_fp8) {
            float q = rfk_e4m3_to_f32(((const uint8_t *)it->kv_b)[row * lora + l]);
            w = rfk_f32_to_bf16(q * it->scale[(row / 128) * scols + l / 128]);
          } else {
            w = ((const uint16_t *)it->kv_b)[row * lora + l];
          }
          if (i < nope)
            it->out[y->uk_off + h * y->uk_stride[0] + i * y->uk_stride[1] + l * y->uk_stride[2]] = w;
          else
            it->out[y->uv_off + h * y->uv_stride[0] + l * y->uv_stride[1] + (i - nope) * y->uv_stride[2]] = w;
        }
      }
  }
  return 0;
}
