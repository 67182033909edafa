/* mla_layouts.h: MLA view layouts the refresh tests run (rfk_mla_layout, kernels/refresh.h).
 *   vllm:   vLLM's storage for an fp8 kv_b_proj, W^T [lora, h*(nope+v)]: W_UK_T offset 0, strides
 *           (nope+v, 1, h*(nope+v)); W_UV offset nope, strides (nope+v, h*(nope+v), 1)
 *   split:  the two views contiguous one after the other (W_UK_T [h, nope, lora], then W_UV [h, lora, v])
 *   gapped: vLLM's layout with every lora row padded by 3 elements and the storage starting 5
 *           elements in: elements no view covers must stay as they were */
#ifndef REFIT_TESTS_MLA_LAYOUTS_H
#define REFIT_TESTS_MLA_LAYOUTS_H

#include "refresh.h"

enum { MLA_VLLM, MLA_SPLIT, MLA_GAPPED };
static const char *const mla_layout_name[] = {"vllm", "split", "gapped"};

static inline rfk_mla_layout mla_layout(int kind, int h, int nope, int v, int lora)
{
  int64_t per = nope + v, rows = (int64_t)h * per;
  rfk_mla_layout y = {h, nope, v, lora, 0, 0, {0, 0, 0}, 0, {0, 0, 0}};
  if (kind == MLA_SPLIT) {
    y.elems = rows * lora;
    y.uk_off = 0, y.uk_stride[0] = (int64_t)nope * lora, y.uk_stride[1] = lora, y.uk_stride[2] = 1;
    y.uv_off = (int64_t)h * nope * lora, y.uv_stride[0] = (int64_t)lora * v, y.uv_stride[1] = v, y.uv_stride[2] = 1;
    return y;
  }
  int64_t pitch = rows + (kind == MLA_GAPPED ? 3 : 0), base = kind == MLA_GAPPED ? 5 : 0;
  y.elems = base + pitch * lora;
  y.uk_off = base, y.uk_stride[0] = per, y.uk_stride[1] = 1, y.uk_stride[2] = pitch;
  y.uv_off = base + nope, y.uv_stride[0] = per, y.uv_stride[1] = pitch, y.uv_stride[2] = 1;
  return y;
}

#endif
