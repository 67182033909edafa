/* fp8_dev.cuh: device helpers shared by quant.cu and refresh.cu (both translation units include it;
 * inline, no state). */
#ifndef REFIT_FP8_DEV_CUH
#define REFIT_FP8_DEV_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

/* the smallest power of two >= s (s > 0 finite; rfk_ue8m0_ceil): a mantissa bit rounds the exponent up */
__device__ __forceinline__ float pow2_ceil(float s)
{
  uint32_t u = __float_as_uint(s);
  if (u & 0x7fffffu)
    u = (u & 0x7f800000u) + 0x800000u;
  return __uint_as_float(u);
}

/* two e4m3 codes (low 16 bits) -> fp32, exact: the hardware decode to f16 (every e4m3 value,
 * subnormals included, is an f16) and f16 -> f32. NaN codes give some NaN (callers never use them:
 * their block is written as NaN). */
__device__ __forceinline__ float2 e4m3x2_f32(uint32_t two)
{
  __half2 h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(two & 0xffffu), __NV_E4M3);
  return __half22float2(h);
}

#endif
