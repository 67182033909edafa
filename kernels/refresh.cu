/* refresh.cu: CUDA versions of the refresh kernels (refresh.h), bit-equal to refresh_ref.c / ref.c.
 *
 * rfk_cuda_mla_absorb: every layer of a receiver in one launch per RFK_CUDA_CHUNK layers. A CTA of
 *   32x8 threads takes a 32x32 tile of kv_b [h*(nope+v), lora] (grid: lora tiles, row tiles, layer),
 *   dequantizes it (fp32 code value times block scale, one multiply, then bf16 nearest even) into
 *   shared memory, then writes each element into its view (W_UK_T for rows i < nope of a head, W_UV
 *   after) at offset + index . stride in the storage. A view whose lora stride is 1 is written with
 *   threadIdx.x walking lora, any other (vLLM's W^T storage: the row index has stride 1) with
 *   threadIdx.x walking the rows, so that either layout is written coalesced.
 * rfk_cuda_requant_ue8m0: one CTA of 256 threads per 128x128 block of one item, like quant.cu: the
 *   thread loads 4 x 16 fp8 codes, dequantizes with the old scale, the CTA reduces amax, then every
 *   thread re-quantizes its registers with the power-of-two scale. The whole block is in registers
 *   before anything is written, so q_out == q (in place) is safe.
 * rfk_cuda_ue8m0_pack: a thread writes 4 MN-adjacent words of one (group, packed K column) at a
 *   time, which lie in one 128-row block (mn and 128 are multiples of 4) and so are one word: one
 *   float4 (or up to 4 scalar) scale loads, shared by the 32 threads of the block's rows through L1,
 *   then one 16-byte store; a warp stores 512 contiguous bytes. It loops over RFK_PACK_QUADS such
 *   quads, 1024 rows apart, so the per-(group, column) index math is paid once per 64 bytes. The op
 *   writes ~32x the bytes it reads: it runs at the device's write rate if the instructions per
 *   byte stay low (about 25 per warp and 512 bytes).
 * Test: build/test_kernels_gpu. */
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "fp8_dev.cuh"
#include "kernels.h"
#include "refresh.h"
}

namespace {

struct absorb_params {
  int heads, nope, v, lora, fp8, tiles_c;
  int uk_lfast, uv_lfast; /* the view's lora stride is 1: write it along lora */
  int64_t uk_off, uk_s0, uk_s1, uk_s2, uv_off, uv_s0, uv_s1, uv_s2;
  rfk_mla_absorb items[RFK_CUDA_CHUNK];
};

/* e4m3 code -> fp32 bits, exact (rfk_e4m3_to_f32); NaN codes give 0x7fc00000 like the reference */
__device__ __forceinline__ float e4m3_f32(uint32_t c)
{
  uint32_t e = (c >> 3) & 15, m = c & 7, s = (c & 0x80) << 24;
  if ((c & 0x7f) == 0x7f)
    return __uint_as_float(0x7fc00000u);
  if (e == 0) /* m * 2^-9, exact as an integer times a power of two */
    return __uint_as_float(s | __float_as_uint(__fmul_rn((float)m, 1.0f / 512.0f)));
  return __uint_as_float(s | (e + 120) << 23 | m << 20);
}

__device__ __forceinline__ uint16_t f2bf(uint32_t u)
{
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* q * s as the x86-64 reference computes it, NaN results included: a NaN operand propagates
 * (the code's NaN first, quieted), an invalid product (0 * inf) is the default NaN 0xffc00000. */
__device__ __forceinline__ uint32_t mul_x86(float q, float s)
{
  float p = __fmul_rn(q, s);
  if (!isnan(p))
    return __float_as_uint(p);
  if (isnan(q))
    return __float_as_uint(q) | 0x400000u;
  if (isnan(s))
    return __float_as_uint(s) | 0x400000u;
  return 0xffc00000u;
}

__global__ void __launch_bounds__(256) absorb_kernel(const __grid_constant__ absorb_params p)
{
  __shared__ uint16_t tile[32][33];
  const rfk_mla_absorb &it = p.items[blockIdx.z];
  const int per = p.nope + p.v, rows = p.heads * per, lora = p.lora;
  const int r0 = blockIdx.y * 32, c0 = blockIdx.x * 32, tx = threadIdx.x, ty = threadIdx.y;
  const int scols = (lora + 127) / 128;
  for (int rr = ty; rr < 32; rr += 8) {
    int r = r0 + rr, c = c0 + tx;
    if (r < rows && c < lora) {
      uint16_t w;
      if (p.fp8) {
        float q = e4m3_f32(((const uint8_t *)it.kv_b)[(int64_t)r * lora + c]);
        w = f2bf(mul_x86(q, it.scale[(r / 128) * scols + c / 128]));
      } else {
        w = ((const uint16_t *)it.kv_b)[(int64_t)r * lora + c];
      }
      tile[rr][tx] = w;
    }
  }
  __syncthreads();
  /* element (r = h*per + i, l) of W: W_UK_T[h][i][l] (i < nope) or W_UV[h][l][i - nope] */
  for (int rr = ty; rr < 32; rr += 8) { /* views with lora stride 1: threadIdx.x along lora */
    int r = r0 + rr, c = c0 + tx;
    if (r < rows && c < lora) {
      int h = r / per, i = r % per;
      if (i < p.nope && p.uk_lfast)
        it.out[p.uk_off + h * p.uk_s0 + i * p.uk_s1 + c * p.uk_s2] = tile[rr][tx];
      else if (i >= p.nope && p.uv_lfast)
        it.out[p.uv_off + h * p.uv_s0 + c * p.uv_s1 + (i - p.nope) * p.uv_s2] = tile[rr][tx];
    }
  }
  for (int cc = ty; cc < 32; cc += 8) { /* the others: threadIdx.x along the rows */
    int r = r0 + tx, c = c0 + cc;
    if (r < rows && c < lora) {
      int h = r / per, i = r % per;
      if (i < p.nope && !p.uk_lfast)
        it.out[p.uk_off + h * p.uk_s0 + i * p.uk_s1 + c * p.uk_s2] = tile[tx][cc];
      else if (i >= p.nope && !p.uv_lfast)
        it.out[p.uv_off + h * p.uv_s0 + c * p.uv_s1 + (i - p.nope) * p.uv_s2] = tile[tx][cc];
    }
  }
}

struct requant_params {
  int64_t rows, cols;
  int tiles_c;
  int aligned;
  int *flag;
  rfk_requant items[RFK_CUDA_CHUNK];
};

/* 256 threads, 128x128 block: a thread owns a 16-byte vector (16 codes) in 4 rows (step 32).
 * amax comes from the codes: e4m3 magnitudes order like their 7-bit codes (0x7f, NaN, on top) and
 * x -> fl(x * s) is monotonic, so max |fl(q * s)| = fl(max|q| * |s|): a byte max (__vmaxu4) and one
 * multiply per thread instead of a decode, a multiply and a max per code. */
__global__ void __launch_bounds__(256) requant_kernel(const __grid_constant__ requant_params p)
{
  const rfk_requant &it = p.items[blockIdx.y];
  const int tr = blockIdx.x / p.tiles_c, tc = blockIdx.x % p.tiles_c;
  const int64_t r0 = (int64_t)tr * 128, c0 = (int64_t)tc * 128, scols = p.tiles_c;
  const int vr = threadIdx.x / 8, vc = threadIdx.x % 8;
  const int64_t col = c0 + vc * 16;
  const bool full = p.aligned && r0 + 128 <= p.rows && c0 + 128 <= p.cols;
  const float s = it.scale[tr * scols + tc];
  uint32_t code[4][4]; /* 4 rows x 16 codes, byte j of word i = code 4i + j; 0 outside the weight */
  for (int k = 0; k < 4; k++) {
    int64_t r = r0 + vr + 32 * k;
    if (full) {
      uint4 v = *(const uint4 *)(it.q + r * p.cols + col);
      code[k][0] = v.x, code[k][1] = v.y, code[k][2] = v.z, code[k][3] = v.w;
    } else {
      for (int i = 0; i < 4; i++) {
        uint32_t w = 0;
        for (int j = 0; j < 4; j++)
          if (r < p.rows && col + 4 * i + j < p.cols)
            w |= (uint32_t)it.q[r * p.cols + col + 4 * i + j] << (8 * j);
        code[k][i] = w;
      }
    }
  }
  uint32_t m4 = 0;
#pragma unroll
  for (int k = 0; k < 4; k++)
#pragma unroll
    for (int i = 0; i < 4; i++)
      m4 = __vmaxu4(m4, code[k][i] & 0x7f7f7f7fu);
  const uint32_t mcode = max(max(m4 & 0xff, (m4 >> 8) & 0xff), max((m4 >> 16) & 0xff, m4 >> 24));
  uint32_t amax = __float_as_uint(__fmul_rn(e4m3_f32(mcode), s)) & 0x7fffffffu;
  if (mcode == 0x7f || !isfinite(s))
    amax = 0xffffffffu;
  __shared__ uint32_t red[8];
  amax = __reduce_max_sync(0xffffffffu, amax);
  if ((threadIdx.x & 31) == 0)
    red[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = red[0];
#pragma unroll
  for (int w = 1; w < 8; w++)
    amax = max(amax, red[w]);
  const bool bad = amax >= 0x7f800000u;
  float ns = __uint_as_float(0x7fc00000u), mul = 0.0f;
  if (!bad) {
    ns = pow2_ceil(__fdiv_rn(fmaxf(__uint_as_float(amax), 1e-4f), 448.0f));
    mul = __fdiv_rn(1.0f, ns);
  }
  if (threadIdx.x == 0) {
    it.scale_out[tr * scols + tc] = ns;
    if (bad && p.flag)
      *p.flag = 1;
  }
#pragma unroll
  for (int k = 0; k < 4; k++) {
    int64_t r = r0 + vr + 32 * k;
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      /* x = fl(q * s) (the dequantized weight), then fl(x * mul): two roundings, as the reference */
      float2 a = e4m3x2_f32(code[k][i]), b = e4m3x2_f32(code[k][i] >> 16);
      uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(__fmul_rn(__fmul_rn(a.x, s), mul), __fmul_rn(__fmul_rn(a.y, s), mul)),
                                             __NV_SATFINITE, __NV_E4M3);
      uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(__fmul_rn(__fmul_rn(b.x, s), mul), __fmul_rn(__fmul_rn(b.y, s), mul)),
                                             __NV_SATFINITE, __NV_E4M3);
      w[i] = bad ? 0x7f7f7f7fu : lo | hi << 16;
    }
    uint8_t *dst = it.q_out + r * p.cols + col;
    if (full) {
      *(uint4 *)dst = make_uint4(w[0], w[1], w[2], w[3]);
    } else if (r < p.rows) {
      for (int j = 0; j < 16; j++)
        if (col + j < p.cols)
          dst[j] = (uint8_t)(w[j / 4] >> (8 * (j % 4)));
    }
  }
}

struct pack_params {
  const float *scale;
  uint32_t *out;
  int *flag;
  int64_t rows, mn;   /* mn = rows aligned to 4: the words of one packed K column */
  int sk, sr, pk, gp; /* scale columns, scale rows, packed K columns, groups * pk */
  int vec, f4;        /* out 16-byte aligned; scale rows loadable as float4 (sk % 4 == 0, aligned) */
};

/* rfk_ue8m0_code on the bits: sign/inf/NaN -> 0xff; else the exponent of the power-of-two ceiling
 * (a mantissa bit carries into the exponent; > 2^127 carries into 0xff, a subnormal into 1) */
__device__ __forceinline__ uint32_t ue8m0_code(uint32_t u)
{
  return u >= 0x7f800000u ? 0xffu : (u + 0x7fffffu) >> 23;
}

/* the word of rows r..r+3 (one 128-row block) of one (group, packed K column): sg its first scale (row
 * block 0, K block 4k), n its K blocks (<= 4); rows at or past `rows` (TMA padding) give 0 */
__device__ __forceinline__ uint32_t pack_word(const float *sg, int64_t rows, int sk, int n, int f4, int *flag, int64_t r)
{
  if (r >= rows)
    return 0;
  const float *s = sg + (r >> 7) * sk;
  uint32_t u[4];
  if (f4) {
    float4 v = __ldg((const float4 *)s);
    u[0] = __float_as_uint(v.x), u[1] = __float_as_uint(v.y), u[2] = __float_as_uint(v.z), u[3] = __float_as_uint(v.w);
  } else {
    for (int j = 0; j < 4; j++) /* K blocks past sk are code 0 */
      u[j] = j < n ? __float_as_uint(__ldg(s + j)) : 0u;
  }
  uint32_t c0 = ue8m0_code(u[0]), c1 = ue8m0_code(u[1]), c2 = ue8m0_code(u[2]), c3 = ue8m0_code(u[3]);
  if ((c0 == 0xffu || c1 == 0xffu || c2 == 0xffu || c3 == 0xffu) && flag)
    *flag = 1;
  return c0 | c1 << 8 | c2 << 16 | c3 << 24;
}

/* rows r..r+3 of a packed column og: w on each real row, 0 on the padding */
__device__ __forceinline__ void store_quad(uint32_t *og, int64_t r, int64_t rows, uint32_t w, int vec)
{
  uint32_t w1 = r + 1 < rows ? w : 0, w2 = r + 2 < rows ? w : 0, w3 = r + 3 < rows ? w : 0;
  uint32_t *o = og + r;
  if (vec) { /* streaming store: the engine reads the packed scales only at its next GEMM */
    __stcs((uint4 *)o, make_uint4(w, w1, w2, w3));
  } else {
    o[0] = w, o[1] = w1, o[2] = w2, o[3] = w3;
  }
}

/* the quads r0, r0 + step, ... below mn of one (group, packed K column) */
__device__ __forceinline__ void pack_column(const float *sg, uint32_t *og, int64_t rows, int64_t mn, int sk, int n,
                                            int f4, int vec, int *flag, int64_t r0, int64_t step)
{
  for (int64_t r = r0; r < mn; r += step)
    store_quad(og, r, rows, pack_word(sg, rows, sk, n, f4, flag, r), vec);
}

/* grid (x: MN quads / (256 * RFK_PACK_QUADS), y: group * packed K column, strided past 65535) */
#define RFK_PACK_QUADS 4
static_assert(256 * RFK_PACK_QUADS * 4 == RFK_PACK_ROWS_PER_BLOCK, "refresh.h's block rows");
/* pack_column when a thread has at most RFK_PACK_QUADS quads (a grouped block: step * RFK_PACK_QUADS >= mn):
 * every load first, then the stores, so a thread waits for its scales once */
__device__ __forceinline__ void pack_column_few(const float *sg, uint32_t *og, int64_t rows, int64_t mn, int sk, int n,
                                                int f4, int vec, int *flag, int64_t r0, int64_t step)
{
  uint32_t w[RFK_PACK_QUADS];
#pragma unroll
  for (int i = 0; i < RFK_PACK_QUADS; i++)
    w[i] = pack_word(sg, rows, sk, n, f4, flag, r0 + i * step);
#pragma unroll
  for (int i = 0; i < RFK_PACK_QUADS; i++)
    if (r0 + i * step < mn)
      store_quad(og, r0 + i * step, rows, w[i], vec);
}

__global__ void __launch_bounds__(256) pack_kernel(const __grid_constant__ pack_params p)
{
  for (int gp = blockIdx.y; gp < p.gp; gp += gridDim.y) {
    int g = gp / p.pk, k = gp - g * p.pk, n = p.sk - 4 * k < 4 ? p.sk - 4 * k : 4;
    pack_column(p.scale + (int64_t)g * p.sr * p.sk + 4 * k, p.out + (int64_t)gp * p.mn, p.rows, p.mn, p.sk, n, p.f4,
                p.vec, p.flag, ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4, (int64_t)gridDim.x * blockDim.x * 4);
  }
}

/* grouped: the logical blocks of rfk_ue8m0_pack_prepare's numbering (block b of an item does what
 * pack_kernel's block (x, y) = (b % bx, b / bx) does for that item with gridDim.x = bx), RFK_PACK_RUN
 * consecutive ones per CTA: the CTA finds its first item by bisection over `first` once, then walks
 * forward (empty items share their next's first). Runs of 2 were fastest on an H100 (kernels/NOTES.md:
 * 0.90 of a copy for a DeepSeek-V3 layer set; 8: 0.86, 16: 0.82, 64: 0.72: more CTAs in flight beat
 * fewer searches) */
#ifndef RFK_PACK_RUN
#define RFK_PACK_RUN 2
#endif
__global__ void __launch_bounds__(256) pack_items_kernel(const rfk_ue8m0_item *__restrict__ items, int n,
                                                         int64_t blocks, int *flag)
{
  int64_t b = (int64_t)blockIdx.x * RFK_PACK_RUN, end = b + RFK_PACK_RUN < blocks ? b + RFK_PACK_RUN : blocks;
  int lo = 0, hi = n - 1; /* the last item whose first <= b */
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (items[mid].first <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  for (; b < end; b++) {
    while (lo + 1 < n && items[lo + 1].first <= b)
      lo++;
    /* the item's fields: the same addresses through a run (cache hits) */
    const rfk_ue8m0_item *it = &items[lo];
    int64_t first = it->first, rows = it->rows, mn = (rows + 3) / 4 * 4; /* rfk_ue8m0_pack_mn */
    int sk = (int)((it->cols + 127) / 128), sr = (int)((rows + 127) / 128), pk = (sk + 3) / 4, bx = it->bx;
    int al = it->align;
    const float *scale = it->scale;
    uint32_t *out = (uint32_t *)it->out;
    int64_t local = b - first;
    int gp = (int)(local / bx), x = (int)(local - (int64_t)gp * bx);
    int g = gp / pk, k = gp - g * pk, nk = sk - 4 * k < 4 ? sk - 4 * k : 4;
    pack_column_few(scale + (int64_t)g * sr * sk + 4 * k, out + (int64_t)gp * mn, rows, mn, sk, nk, (al >> 1) & 1,
                    al & 1, flag, ((int64_t)x * blockDim.x + threadIdx.x) * 4, (int64_t)bx * blockDim.x * 4);
  }
}

} /* namespace */

extern "C" int rfk_cuda_mla_absorb(const rfk_mla_absorb *items, int n, int kv_b_is_fp8, const rfk_mla_layout *y,
                                   void *stream)
{
  if (!items || n < 0 || !rfk_mla_layout_inside(y))
    return RFK_ERR_ARG;
  for (int i = 0; i < n; i++)
    if (!items[i].kv_b || !items[i].out || (kv_b_is_fp8 && !items[i].scale))
      return RFK_ERR_ARG;
  int64_t rows = (int64_t)y->heads * (y->nope + y->v);
  if (rows > 0x7fffffffll / 2 || (rows + 31) / 32 > 65535)
    return RFK_ERR_ARG;
  absorb_params p;
  p.heads = y->heads, p.nope = y->nope, p.v = y->v, p.lora = y->lora, p.fp8 = kv_b_is_fp8 != 0;
  p.tiles_c = (y->lora + 31) / 32;
  p.uk_lfast = y->uk_stride[2] == 1, p.uv_lfast = y->uv_stride[1] == 1;
  p.uk_off = y->uk_off, p.uk_s0 = y->uk_stride[0], p.uk_s1 = y->uk_stride[1], p.uk_s2 = y->uk_stride[2];
  p.uv_off = y->uv_off, p.uv_s0 = y->uv_stride[0], p.uv_s1 = y->uv_stride[1], p.uv_s2 = y->uv_stride[2];
  for (int first = 0; first < n; first += RFK_CUDA_CHUNK) {
    int m = n - first < RFK_CUDA_CHUNK ? n - first : RFK_CUDA_CHUNK;
    for (int i = 0; i < m; i++)
      p.items[i] = items[first + i];
    absorb_kernel<<<dim3(p.tiles_c, (unsigned)((rows + 31) / 32), m), dim3(32, 8), 0, (cudaStream_t)stream>>>(p);
    if (rfk__cuda_failed())
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}

extern "C" int rfk_cuda_requant_ue8m0(const rfk_requant *items, int n, int64_t rows, int64_t cols, int *flag,
                                      void *stream)
{
  if (n < 0 || (n > 0 && !items) || rows < 0 || cols < 0)
    return RFK_ERR_ARG;
  for (int i = 0; i < n; i++)
    if (!items[i].q || !items[i].scale || !items[i].q_out || !items[i].scale_out)
      return RFK_ERR_ARG;
  if (n == 0 || rows == 0 || cols == 0)
    return RFK_OK;
  int64_t tiles_c = (cols + 127) / 128, tiles = (rows + 127) / 128 * tiles_c;
  if (tiles > 0x7fffffff)
    return RFK_ERR_ARG;
  requant_params p;
  p.rows = rows, p.cols = cols, p.tiles_c = (int)tiles_c, p.flag = flag;
  for (int first = 0; first < n; first += RFK_CUDA_CHUNK) {
    int m = n - first < RFK_CUDA_CHUNK ? n - first : RFK_CUDA_CHUNK, al = cols % 16 == 0;
    for (int i = 0; i < m; i++) {
      p.items[i] = items[first + i];
      al &= (uintptr_t)items[first + i].q % 16 == 0 && (uintptr_t)items[first + i].q_out % 16 == 0;
    }
    p.aligned = al;
    requant_kernel<<<dim3((unsigned)tiles, m), 256, 0, (cudaStream_t)stream>>>(p);
    if (rfk__cuda_failed())
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}

extern "C" int rfk_cuda_ue8m0_pack(const float *scale, int32_t *out, int64_t groups, int64_t rows, int64_t cols,
                                   int *flag, void *stream)
{
  if (!scale || !out || groups < 0 || rows < 0 || cols < 0 || (uintptr_t)out % 4 || (uintptr_t)scale % 4)
    return RFK_ERR_ARG;
  if (groups == 0 || rows == 0 || cols == 0)
    return RFK_OK;
  int64_t sk = (cols + 127) / 128, sr = (rows + 127) / 128, pk = (sk + 3) / 4;
  if (groups * pk > 0x7fffffff || groups * sr * sk > ((int64_t)1 << 40))
    return RFK_ERR_ARG;
  pack_params p;
  p.scale = scale, p.out = (uint32_t *)out, p.flag = flag, p.rows = rows, p.mn = rfk_ue8m0_pack_mn(rows);
  p.sk = (int)sk, p.sr = (int)sr, p.pk = (int)pk, p.gp = (int)(groups * pk);
  p.vec = (uintptr_t)out % 16 == 0, p.f4 = sk % 4 == 0 && (uintptr_t)scale % 16 == 0;
  int64_t bx = (p.mn / 4 + 256 * RFK_PACK_QUADS - 1) / (256 * RFK_PACK_QUADS);
  unsigned by = p.gp < 65535 ? (unsigned)p.gp : 65535u;
  pack_kernel<<<dim3((unsigned)(bx < 65535 ? bx : 65535), by), 256, 0, (cudaStream_t)stream>>>(p);
  if (rfk__cuda_failed())
    return RFK_ERR_CUDA;
  return RFK_OK;
}

extern "C" int rfk_cuda_ue8m0_pack_items(const rfk_ue8m0_item *items_d, int n, int64_t blocks, int *flag, void *stream)
{
  if (n < 0 || blocks < 0 || blocks > 0x7fffffff || (blocks > 0 && (!items_d || n == 0)))
    return RFK_ERR_ARG;
  if (blocks == 0)
    return RFK_OK;
  pack_items_kernel<<<(unsigned)((blocks + RFK_PACK_RUN - 1) / RFK_PACK_RUN), 256, 0, (cudaStream_t)stream>>>(
      items_d, n, blocks, flag);
  if (rfk__cuda_failed())
    return RFK_ERR_CUDA;
  return RFK_OK;
}
