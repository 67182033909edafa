/* refresh_ref.c: C reference of the refresh kernels (refresh.h). Bit-exact contract for the CUDA
 * versions: dequantize in fp32 (one multiply), round once to bf16. */
#include <math.h>
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

int rfk_ref_mla_absorb(const rfk_mla_absorb *items, int n, int kv_b_is_fp8, int heads, int nope, int v, int lora)
{
  if (!items || n < 0 || heads <= 0 || nope <= 0 || v <= 0 || lora <= 0)
    return 2;
  int64_t per = nope + v, scols = (lora + 127) / 128;
  for (int k = 0; k < n; k++) {
    const rfk_mla_absorb *it = &items[k];
    if (!it->kv_b || !it->w_uk_t || !it->w_uv || (kv_b_is_fp8 && !it->scale))
      return 2;
    for (int64_t h = 0; h < heads; h++)
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
            it->w_uk_t[(h * nope + i) * lora + l] = w;
          else
            it->w_uv[(h * lora + l) * v + (i - nope)] = w;
        }
      }
  }
  return 0;
}
