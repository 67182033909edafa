/* quant.cu: rfk_cuda_run (kernels.h) - block FP8 e4m3fn quantization, bf16/fp32 casts and packing
 * copies of n same-shape regions in one launch per RFK_CUDA_CHUNK items. Bit-equal to ref.c.
 *
 * Layout: a CTA takes kTpc (RFK_TPC, default 1) 128x128 tiles side by side along the columns of
 * one item, 256 threads per tile (grid.x = tile groups of the region, grid.y = item in the chunk).
 * A thread owns one 16-byte column vector of its tile (VEC = 8 bf16 or 4 fp32) in 128 / RSTEP
 * rows: all its loads are issued before the first use, the block amax is a max over |x| bit
 * patterns (integers order like the floats, NaN above inf), then every thread scales and converts
 * its own registers, so the source is read once and the output written once. Tiles that are
 * partial or not 16-byte aligned take the same path with guarded scalar accesses.
 * Items travel by value in the kernel parameters (CUDA >= 12.1 allows 32 KB; 256 items = 6 KB).
 *
 * Test: build/test_kernels_gpu (tests/test_kernels_gpu.c, bit-for-bit against ref.c on odd sizes).
 * Bench: bench/kernels_bench.py (needs torch, triton; build/obj/libkernels_cuda.so). */
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "fp8_dev.cuh"
#include "kernels.h"

/* the launch status of this thread's last failed launch, kept for the caller's message (reading
 * it with cudaGetLastError clears it, so the launchers record it here) */
static __thread int last_cuda_error;
extern "C" int rfk__cuda_failed(void)
{
  cudaError_t c = cudaGetLastError();
  if (c != cudaSuccess) last_cuda_error = (int)c;
  return c != cudaSuccess;
}
extern "C" const char *rfk_cuda_last_error(void)
{
  return last_cuda_error ? cudaGetErrorString((cudaError_t)last_cuda_error) : "no CUDA error recorded";
}
}

namespace {

constexpr int kThreads = 256;

struct item_t {
  const void *src;
  void *out;
  float *scale;
};

struct params_t {
  int64_t rows, cols, src_ld, out_ld, scale_ld;
  int tiles_c;   /* tiles per row of tiles: ceil(cols / 128) */
  int ue8m0;
  int aligned;   /* every item's src rows 16-byte aligned and out rows VEC-element aligned */
  int *flag;
  item_t items[RFK_CUDA_CHUNK];
};

__device__ __forceinline__ float bits2f(uint32_t u) { return __uint_as_float(u); }

/* fp32 -> bf16, nearest even, NaN kept quiet with its sign and upper payload (ref.c to_bf16) */
__device__ __forceinline__ uint32_t f2bf(uint32_t u)
{
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (u >> 16) | 0x40;
  return (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
}

__device__ __forceinline__ float e4m3_f32(uint32_t one) { return e4m3x2_f32(one & 0xffu).x; }

/* two floats -> two e4m3 bytes (x in the low byte): cvt.rn.satfinite.e4m3x2.f32 */
__device__ __forceinline__ uint32_t e4m3x2(float x, float y)
{
  return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(x, y), __NV_SATFINITE, __NV_E4M3);
}

/* element j of a 16-byte vector, as fp32 bits (bf16: 8 per vector; fp32: 4) */
template <int VEC> __device__ __forceinline__ uint32_t elem(const uint4 &w, int j)
{
  const int i = VEC == 8 ? j / 2 : j;
  const uint32_t x = i == 0 ? w.x : i == 1 ? w.y : i == 2 ? w.z : w.w;
  return VEC == 8 ? (j & 1 ? x & 0xffff0000u : x << 16) : x;
}

/* Tuning switches (kernels/NOTES.md has the measurements of each):
 *   RFK_TPC: 128x128 tiles per CTA, side by side along the columns (256 threads each), so that a
 *     CTA reads TPC * 256 contiguous bytes of each bf16 row;
 *   RFK_LDHINT: 0 ld.global.cs (evict first), 1 ld.global.nc with an L2 256-byte prefetch hint,
 *     2 plain ld.global;
 *   RFK_ROWS_FIRST: walk a region's tiles down the rows first instead of along the columns. */
#ifndef RFK_TPC
#define RFK_TPC 1
#endif
#ifndef RFK_LDHINT
#define RFK_LDHINT 2
#endif
#ifndef RFK_ROWS_FIRST
#define RFK_ROWS_FIRST 0
#endif
/*   RFK_PIPE: 0 off; S >= 2: bf16 -> fp8 through a persistent grid of 256-thread CTAs, one tile
 *     at a time, the next S - 1 tiles' loads in flight (cp.async 16 B into S shared-memory stages,
 *     each thread reading back only its own vectors, so the one barrier per tile is the amax one);
 *   RFK_PIPE_CTAS: CTAs per SM of that grid (0: as many as the shared memory allows). */
#ifndef RFK_PIPE
#define RFK_PIPE 0
#endif
#ifndef RFK_PIPE_CTAS
#define RFK_PIPE_CTAS 0
#endif
constexpr int kTpc = RFK_TPC;

__device__ __forceinline__ uint4 load16(const void *ptr)
{
#if RFK_LDHINT == 1
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(ptr));
  return v;
#elif RFK_LDHINT == 2
  return *(const uint4 *)ptr;
#else
  return __ldcs((const uint4 *)ptr);
#endif
}

template <int SES> struct geom {
  static constexpr int VEC = 16 / SES, VPR = 128 / VEC, RSTEP = kThreads / VPR, NR = 128 / RSTEP;
};

struct tile_pos {
  const item_t *it;
  int tr, tc;
  int64_t r0, c0, col; /* col: first column of this thread's vector */
  int vr, lt;  /* lt: thread index within the tile's 256 */
  bool full, valid;
};

/* tile `tile` of the region (in units of kTpc tiles side by side) for this thread */
template <int SES, int TPC = kTpc>
__device__ __forceinline__ tile_pos locate(const params_t &p, int item, int tile, int tiles_r)
{
  using G = geom<SES>;
  const int tiles_cg = (p.tiles_c + TPC - 1) / TPC;
  tile_pos t;
  t.it = &p.items[item];
  if (RFK_ROWS_FIRST)
    t.tr = tile % tiles_r, t.tc = tile / tiles_r;
  else
    t.tr = tile / tiles_cg, t.tc = tile % tiles_cg;
  t.tc = t.tc * TPC + (int)threadIdx.x / kThreads;
  t.lt = threadIdx.x % kThreads;
  t.valid = t.tc < p.tiles_c;
  t.r0 = (int64_t)t.tr * 128, t.c0 = (int64_t)t.tc * 128;
  t.vr = t.lt / G::VPR;
  t.col = t.c0 + (t.lt % G::VPR) * G::VEC;
  t.full = p.aligned && t.r0 + 128 <= p.rows && t.c0 + 128 <= p.cols;
  return t;
}

/* the thread's NR vectors of VEC source elements, raw bits (zeros outside the region) */
template <int SES> __device__ __forceinline__ void load_tile(const params_t &p, const tile_pos &t, uint4 *v)
{
  using G = geom<SES>;
  const char *src = (const char *)t.it->src;
  if (t.full) {
#pragma unroll
    for (int k = 0; k < G::NR; k++)
      v[k] = load16(src + ((t.r0 + t.vr + k * G::RSTEP) * p.src_ld + t.col) * SES);
    return;
  }
#pragma unroll
  for (int k = 0; k < G::NR; k++) {
    int64_t r = t.r0 + t.vr + k * G::RSTEP;
    uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int j = 0; j < G::VEC; j++)
      if (t.valid && r < p.rows && t.col + j < p.cols) {
        if (SES == 2)
          w[j / 2] |= (uint32_t)((const uint16_t *)src)[r * p.src_ld + t.col + j] << (16 * (j & 1));
        else
          w[j] = ((const uint32_t *)src)[r * p.src_ld + t.col + j];
      }
    v[k] = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

/* block amax, scale, quantize and store one tile; red: [kTpc][8] words of shared memory */
template <int SES> __device__ __forceinline__ void fp8_tile(const params_t &p, const tile_pos &t, const uint4 *v,
                                                            uint32_t *red)
{
  using G = geom<SES>;
  constexpr int VEC = G::VEC;
  uint32_t amax = 0;
#pragma unroll
  for (int k = 0; k < G::NR; k++) {
    if (SES == 2) /* two bf16 per word: packed 16-bit max of |x| */
      amax = __vmaxu2(amax, __vmaxu2(__vmaxu2(v[k].x & 0x7fff7fffu, v[k].y & 0x7fff7fffu),
                                     __vmaxu2(v[k].z & 0x7fff7fffu, v[k].w & 0x7fff7fffu)));
    else
      amax = max(amax, max(max(v[k].x & 0x7fffffffu, v[k].y & 0x7fffffffu),
                           max(v[k].z & 0x7fffffffu, v[k].w & 0x7fffffffu)));
  }
  if (SES == 2)
    amax = max(amax & 0xffff0000u, amax << 16);
  amax = __reduce_max_sync(0xffffffffu, amax);
  if ((threadIdx.x & 31) == 0)
    red[threadIdx.x / 32] = amax;
  __syncthreads();
  if (!t.valid)
    return;
  red += threadIdx.x / kThreads * (kThreads / 32);
  amax = red[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; w++)
    amax = max(amax, red[w]);

  uint8_t *q = (uint8_t *)t.it->out;
  if (amax >= 0x7f800000u) { /* inf/NaN in the block: scale NaN, codes NaN, flag */
    if (t.lt == 0) {
      t.it->scale[(int64_t)t.tr * p.scale_ld + t.tc] = bits2f(0x7fc00000u);
      if (p.flag)
        *p.flag = 1;
    }
    for (int k = 0; k < G::NR; k++) {
      int64_t r = t.r0 + t.vr + k * G::RSTEP;
      for (int j = 0; j < VEC; j++)
        if (r < p.rows && t.col + j < p.cols)
          q[r * p.out_ld + t.col + j] = 0x7f;
    }
    return;
  }
  float a = fmaxf(bits2f(amax), 1e-4f), scale = __fdiv_rn(a, 448.0f), mul;
  if (p.ue8m0 == RFK_SCALE_UE8M0) {
    scale = pow2_ceil(scale);
    mul = __fdiv_rn(1.0f, scale);
  } else {
    mul = __fdiv_rn(448.0f, a);
  }
  /* RFK_SCALE_REQUANT: q = e4m3(x * mul) with the fp32 scale, then vLLM's re-quantization of the
   * block, x' = f32(q) * scale, q' = e4m3(x' * mul2). Its amax(x') needs no second reduction: |x| ->
   * e4m3(|x| * mul) -> f32(.) * scale are monotone, so the largest |x'| comes from the largest |x|
   * (the unclamped amax bits) */
  float mul2 = 0.0f;
  if (p.ue8m0 == RFK_SCALE_REQUANT) {
    float qmax = e4m3_f32(e4m3x2(__fmul_rn(bits2f(amax), mul), 0.0f) & 0xffu);
    float s2 = pow2_ceil(__fdiv_rn(fmaxf(__fmul_rn(qmax, scale), 1e-4f), 448.0f));
    mul2 = __fdiv_rn(1.0f, s2);
    if (t.lt == 0)
      t.it->scale[(int64_t)t.tr * p.scale_ld + t.tc] = s2;
  } else if (t.lt == 0) {
    t.it->scale[(int64_t)t.tr * p.scale_ld + t.tc] = scale;
  }
#pragma unroll
  for (int k = 0; k < G::NR; k++) {
    uint32_t packed[VEC / 4];
#pragma unroll
    for (int j = 0; j < VEC; j += 4) {
      float x0 = __fmul_rn(bits2f(elem<VEC>(v[k], j)), mul), x1 = __fmul_rn(bits2f(elem<VEC>(v[k], j + 1)), mul);
      float x2 = __fmul_rn(bits2f(elem<VEC>(v[k], j + 2)), mul), x3 = __fmul_rn(bits2f(elem<VEC>(v[k], j + 3)), mul);
      uint32_t lo = e4m3x2(x0, x1), hi = e4m3x2(x2, x3);
      if (p.ue8m0 == RFK_SCALE_REQUANT) {
        float2 a01 = e4m3x2_f32(lo), a23 = e4m3x2_f32(hi);
        lo = e4m3x2(__fmul_rn(__fmul_rn(a01.x, scale), mul2), __fmul_rn(__fmul_rn(a01.y, scale), mul2));
        hi = e4m3x2(__fmul_rn(__fmul_rn(a23.x, scale), mul2), __fmul_rn(__fmul_rn(a23.y, scale), mul2));
      }
      packed[j / 4] = lo | hi << 16;
    }
    int64_t r = t.r0 + t.vr + k * G::RSTEP;
    uint8_t *dst = q + r * p.out_ld + t.col;
    if (t.full) {
      if (VEC == 8)
        __stcs((uint2 *)dst, make_uint2(packed[0], packed[VEC / 4 - 1]));
      else
        __stcs((unsigned int *)dst, packed[0]);
    } else if (r < p.rows) {
#pragma unroll
      for (int j = 0; j < VEC; j++)
        if (t.col + j < p.cols)
          dst[j] = (uint8_t)(packed[j / 4] >> (8 * (j % 4)));
    }
  }
}

template <int SES, int OUT> __device__ __forceinline__ void cast_tile(const params_t &p, const tile_pos &t, const uint4 *v)
{
  using G = geom<SES>;
  constexpr int VEC = G::VEC;
  if (!t.valid)
    return;
#pragma unroll
  for (int k = 0; k < G::NR; k++) {
    int64_t r = t.r0 + t.vr + k * G::RSTEP;
    char *dst = (char *)t.it->out + (r * p.out_ld + t.col) * (OUT == RFK_BF16 ? 2 : 4);
    if (OUT == RFK_BF16 && SES == 2) { /* bf16 copy */
      if (t.full)
        __stcs((uint4 *)dst, v[k]);
      else if (r < p.rows)
        for (int j = 0; j < VEC; j++)
          if (t.col + j < p.cols)
            ((uint16_t *)dst)[j] = (uint16_t)(elem<VEC>(v[k], j) >> 16);
    } else if (OUT == RFK_BF16) { /* fp32 -> bf16 */
      uint2 o = make_uint2(f2bf(v[k].x) | f2bf(v[k].y) << 16, f2bf(v[k].z) | f2bf(v[k].w) << 16);
      if (t.full)
        __stcs((uint2 *)dst, o);
      else if (r < p.rows)
        for (int j = 0; j < VEC; j++)
          if (t.col + j < p.cols)
            ((uint16_t *)dst)[j] = (uint16_t)f2bf(elem<VEC>(v[k], j));
    } else if (SES == 4) { /* fp32 copy */
      if (t.full)
        __stcs((uint4 *)dst, v[k]);
      else if (r < p.rows)
        for (int j = 0; j < VEC; j++)
          if (t.col + j < p.cols)
            ((uint32_t *)dst)[j] = elem<VEC>(v[k], j);
    } else { /* bf16 -> fp32 */
      if (t.full) {
        __stcs((uint4 *)dst, make_uint4(elem<VEC>(v[k], 0), elem<VEC>(v[k], 1), elem<VEC>(v[k], 2), elem<VEC>(v[k], 3)));
        __stcs((uint4 *)dst + 1, make_uint4(elem<VEC>(v[k], 4), elem<VEC>(v[k], 5), elem<VEC>(v[k], 6), elem<VEC>(v[k], 7)));
      } else if (r < p.rows) {
        for (int j = 0; j < VEC; j++)
          if (t.col + j < p.cols)
            ((uint32_t *)dst)[j] = elem<VEC>(v[k], j);
      }
    }
  }
}

/* one CTA per kTpc tiles: grid.x = tile groups of the region, grid.y = item of the chunk */
template <int SES, int OUT>
__global__ void __launch_bounds__(kThreads * kTpc) tile_kernel(const __grid_constant__ params_t p, int tiles_r)
{
  __shared__ uint32_t red[kTpc * kThreads / 32];
  const tile_pos t = locate<SES>(p, blockIdx.y, blockIdx.x, tiles_r);
  uint4 v[geom<SES>::NR];
  load_tile<SES>(p, t, v);
  if (OUT == RFK_FP8)
    fp8_tile<SES>(p, t, v, red);
  else
    cast_tile<SES, OUT>(p, t, v);
}

#if RFK_PIPE
__device__ __forceinline__ void cp16(const void *smem, const void *gmem)
{
  const uint32_t sa = (uint32_t)__cvta_generic_to_shared(smem);
#if RFK_LDHINT == 1
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(sa), "l"(gmem) : "memory");
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa), "l"(gmem) : "memory");
#endif
}

/* persistent grid, bf16 -> fp8: CTA b takes tiles b, b + gridDim.x, ... of all items of the chunk
 * (item-major, tiles in the order of locate); tile g's full-tile loads go to stage g % RFK_PIPE */
__global__ void __launch_bounds__(kThreads) pipe_kernel(const __grid_constant__ params_t p, int tiles_r, int total)
{
  using G = geom<2>;
  extern __shared__ uint4 stage[]; /* [RFK_PIPE][NR][kThreads] */
  __shared__ uint32_t red[2][kThreads / 32];
  const int tiles = tiles_r * p.tiles_c, gs = (int)gridDim.x;
  auto issue = [&](int g, int s) {
    if (g < total) {
      const tile_pos t = locate<2, 1>(p, g / tiles, g % tiles, tiles_r);
      if (t.full) {
        const char *src = (const char *)t.it->src;
#pragma unroll
        for (int k = 0; k < G::NR; k++)
          cp16(&stage[(s * G::NR + k) * kThreads + threadIdx.x],
               src + ((t.r0 + t.vr + k * G::RSTEP) * p.src_ld + t.col) * 2);
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
#pragma unroll
  for (int j = 0; j < RFK_PIPE - 1; j++)
    issue((int)blockIdx.x + j * gs, j);
  int i = 0;
  for (int g = (int)blockIdx.x; g < total; g += gs, i++) {
    issue(g + (RFK_PIPE - 1) * gs, (i + RFK_PIPE - 1) % RFK_PIPE); /* the stage read in the last round */
    asm volatile("cp.async.wait_group %0;" ::"n"(RFK_PIPE - 1) : "memory");
    const tile_pos t = locate<2, 1>(p, g / tiles, g % tiles, tiles_r);
    uint4 v[G::NR];
    if (t.full) {
      const int s = i % RFK_PIPE;
#pragma unroll
      for (int k = 0; k < G::NR; k++)
        v[k] = stage[(s * G::NR + k) * kThreads + threadIdx.x];
    } else {
      load_tile<2>(p, t, v);
    }
    fp8_tile<2>(p, t, v, red[i & 1]);
  }
  asm volatile("cp.async.wait_group 0;" ::: "memory");
}

/* false where the pipelined path does not apply (then the tile kernel runs) */
bool launch_pipe(const params_t &p, int n, int tiles_r, cudaStream_t st)
{
  const int64_t total = (int64_t)n * tiles_r * p.tiles_c;
  if (total > 0x7fffffff - 4 * 1024 * 1024)
    return false;
  constexpr int smem = RFK_PIPE * geom<2>::NR * kThreads * 16;
  static int per_sm = 0, sms = 0;
  if (!per_sm) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaFuncSetAttribute(pipe_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, pipe_kernel, kThreads, smem) != cudaSuccess || per_sm < 1)
      return per_sm = 0, false;
    if (RFK_PIPE_CTAS && RFK_PIPE_CTAS < per_sm)
      per_sm = RFK_PIPE_CTAS;
  }
  int64_t grid = (int64_t)per_sm * sms;
  if (grid > total)
    grid = total;
  pipe_kernel<<<(unsigned)grid, kThreads, smem, st>>>(p, tiles_r, (int)total);
  return true;
}
#endif

int esize(int dtype) { return dtype == RFK_BF16 ? 2 : dtype == RFK_FP32 ? 4 : 1; }

bool aligned(const void *ptr, int64_t ld_bytes, int64_t a)
{
  return (uintptr_t)ptr % a == 0 && ld_bytes % a == 0;
}

template <int SES, int OUT> void launch(const params_t &p, int n, int tiles_r, cudaStream_t st)
{
  unsigned groups = (unsigned)tiles_r * (unsigned)((p.tiles_c + kTpc - 1) / kTpc);
  tile_kernel<SES, OUT><<<dim3(groups, (unsigned)n), kThreads * kTpc, 0, st>>>(p, tiles_r);
}

} /* namespace */

extern "C" int rfk_cuda_run(const rfk_shape *s, const rfk_item *items, int n, int *flag, void *stream)
{
  if (!s || n < 0 || (n > 0 && !items))
    return RFK_ERR_ARG;
  if ((s->src_dtype != RFK_BF16 && s->src_dtype != RFK_FP32) ||
      (s->out_dtype != RFK_BF16 && s->out_dtype != RFK_FP32 && s->out_dtype != RFK_FP8))
    return RFK_ERR_ARG;
  if (s->rows < 0 || s->cols < 0 || s->src_ld < s->cols || s->out_ld < s->cols ||
      (s->out_dtype == RFK_FP8 && (s->scale_ld < (s->cols + 127) / 128 || s->ue8m0 < RFK_SCALE_FP32 ||
                                   s->ue8m0 > RFK_SCALE_REQUANT)))
    return RFK_ERR_ARG;
  for (int i = 0; i < n; i++)
    if (!items[i].src || !items[i].out || (s->out_dtype == RFK_FP8 && !items[i].scale))
      return RFK_ERR_ARG;
  if (n == 0 || s->rows == 0 || s->cols == 0)
    return RFK_OK;
  int64_t tiles_r = (s->rows + 127) / 128, tiles_c = (s->cols + 127) / 128, tiles = tiles_r * tiles_c;
  if (tiles > 0x7fffffff)
    return RFK_ERR_ARG;
  cudaStream_t st = (cudaStream_t)stream;
  int ses = esize(s->src_dtype), oes = esize(s->out_dtype), vec = 16 / ses;
  for (int first = 0; first < n; first += RFK_CUDA_CHUNK) {
    int m = n - first < RFK_CUDA_CHUNK ? n - first : RFK_CUDA_CHUNK;
    params_t local, *pp = &local; /* 6 KB; the launch copies it into the parameter space */
    pp->rows = s->rows, pp->cols = s->cols, pp->src_ld = s->src_ld, pp->out_ld = s->out_ld;
    pp->scale_ld = s->scale_ld, pp->tiles_c = (int)tiles_c, pp->ue8m0 = s->ue8m0, pp->flag = flag;
    int al = 1;
    for (int i = 0; i < m; i++) {
      const rfk_item *it = &items[first + i];
      pp->items[i] = item_t{it->src, it->out, it->scale};
      al &= aligned(it->src, s->src_ld * ses, 16) && aligned(it->out, s->out_ld * oes, vec * oes);
    }
    pp->aligned = al;
    int o = s->out_dtype;
    int tr = (int)tiles_r;
#if RFK_PIPE
    if (s->src_dtype == RFK_BF16 && o == RFK_FP8 && launch_pipe(*pp, m, tr, st)) {
      if (rfk__cuda_failed())
        return RFK_ERR_CUDA;
      continue;
    }
#endif
    if (s->src_dtype == RFK_BF16)
      o == RFK_FP8 ? launch<2, RFK_FP8>(*pp, m, tr, st)
      : o == RFK_BF16 ? launch<2, RFK_BF16>(*pp, m, tr, st)
                      : launch<2, RFK_FP32>(*pp, m, tr, st);
    else
      o == RFK_FP8 ? launch<4, RFK_FP8>(*pp, m, tr, st)
      : o == RFK_BF16 ? launch<4, RFK_BF16>(*pp, m, tr, st)
                      : launch<4, RFK_FP32>(*pp, m, tr, st);
    if (rfk__cuda_failed())
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}
