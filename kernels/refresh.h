/* refresh.h: rebuilding tensors an engine derives from its weights at load time.
 *
 * MLA absorption (vLLM MLAAttention.process_weights_after_loading), per layer and TP rank:
 *   W    = dequant(kv_b_proj)                 [h*(nope+v), lora] bf16, W = bf16_rne(f32(q) * scale)
 *   W_UK_T[n][i][l] = W[n*(nope+v) + i][l]        [h, nope, lora]  (i < nope)
 *   W_UV[n][l][j]   = W[n*(nope+v) + nope + j][l] [h, lora, v]     (j < v)
 * kv_b is fp8 e4m3fn with fp32 block scales [ceil(rows/128), ceil(lora/128)] (row-major), or bf16
 * (scale NULL). Outputs are caller-provided bf16 (uint16_t) buffers. */
#ifndef REFIT_REFRESH_H
#define REFIT_REFRESH_H

#include <stdint.h>

typedef struct rfk_mla_absorb {
  const void *kv_b;      /* [h*(nope+v), lora], fp8 or bf16 */
  const float *scale;    /* fp8 only: [ceil(h*(nope+v)/128), ceil(lora/128)] */
  uint16_t *w_uk_t;      /* [h, nope, lora] bf16 */
  uint16_t *w_uv;        /* [h, lora, v] bf16 */
} rfk_mla_absorb;

/* Every layer of a receiver in one call: n items with the same shape. Returns 0, or 2 (bad
 * argument) when a pointer is NULL or a dimension is not positive. */
int rfk_ref_mla_absorb(const rfk_mla_absorb *items, int n, int kv_b_is_fp8, int heads, int nope, int v, int lora);

float rfk_e4m3_to_f32(uint8_t q);
uint16_t rfk_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

#endif
