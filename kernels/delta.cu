/* delta.cu: CUDA versions of the delta patches (delta.h), writing the same bytes as delta_ref.c.
 * The format's leaf functions (digest terms, mode choice, every patch check) are delta_fmt.h's.
 *
 * Encode, one pass over next and old: a CTA of 256 threads takes one 16 KB chunk, each thread four
 * 16-byte pieces (piece p = q * 256 + thread, bytes [16p, 16p + 16): coalesced loads, all eight
 * issued before the first use). Per piece a mask of changed elements; one 64-bit block scan gives
 * the rank of every change in the chunk (four 16-bit lanes, one per q); tile counts by shared
 * atomics. Thread 0 picks the mode (rfk__choose) and finds where the record goes by decoupled
 * look-back (Merrill & Garland's single-pass scan): chunks take tickets in launch order, publish
 * their aggregate (entries, record bytes) at once, then walk back over predecessors of the same
 * region until one with an inclusive prefix, so the records of a region land back to back without
 * a second pass. Then the CTA writes its record (only when it ends within cap), copies the changed
 * pieces into old and adds its digest terms atomically (a sum mod 2^64: order-free). A second
 * kernel writes each region's header, padding and directory from the per-chunk scratch.
 * Apply: three launches per 256 targets: statuses reset; validation (the header by every CTA, one
 * warp per directory entry, up to 4096 CTAs per target, the first failure by atomicMin of its key);
 * then the apply itself, which skips a target whose key is set (one thread recomputes that status
 * with rfk__explain) and otherwise writes every record's elements, a warp per entry, so a malformed
 * patch writes nothing.
 * Digest: CTA per chunk, terms summed per warp, atomicAdd into out.
 * Test: build/test_kernels_gpu. Bench: bench/delta_bench.py (ninja bench_kernels). */
#include <cuda/atomic>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "delta.h"
#include "kernels.h"
}
#include "delta_fmt.h"

namespace {

constexpr int kThreads = 256;
constexpr uint32_t kChunk = RFK_DELTA_CHUNK;
/* look-back state of a chunk: flag in bits 62-63, entries in 42-61, record bytes in 0-41 */
constexpr uint64_t kFlagAgg = 1ull << 62, kFlagPre = 2ull << 62, kVal = (1ull << 62) - 1;
constexpr int kEntShift = 42;
constexpr uint64_t kBytes = (1ull << kEntShift) - 1;

struct enc_region {
  const uint8_t *next;
  uint8_t *old, *patch;
  uint64_t n, cap;
  uint32_t e, nch, chunk0; /* chunk0: first chunk in the scratch arrays */
  uint32_t aligned;        /* next and old 16-byte aligned */
};

struct enc_params {
  int count;
  uint32_t *ticket;
  uint64_t *state;               /* per chunk */
  uint32_t *meta;                /* per chunk: mode << 24 | k */
  unsigned long long *acc;       /* per region: digest terms, changed elements */
  rfk_delta_out *out;
  uint32_t first[RFK_CUDA_CHUNK + 1]; /* chunks (K1) or items (K2) before region i */
  enc_region r[RFK_CUDA_CHUNK];
};

__device__ __forceinline__ int find_region(const uint32_t *first, int count, uint32_t g)
{
  int lo = 0, hi = count - 1; /* largest i with first[i] <= g */
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (first[mid] <= g)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/* 16 bytes at off of a region of `bytes` bytes from base (zeros past the end) */
__device__ __forceinline__ uint4 load_piece(const uint8_t *base, uint32_t off, uint32_t bytes, bool fast)
{
  if (fast)
    return *(const uint4 *)(base + off);
  uint32_t w[4] = {0, 0, 0, 0};
  for (uint32_t b = 0; b < 16; b++)
    if (off + b < bytes)
      w[b / 4] |= (uint32_t)base[off + b] << (8 * (b % 4));
  return make_uint4(w[0], w[1], w[2], w[3]);
}

__device__ __forceinline__ uint32_t word(const uint4 &v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
__device__ __forceinline__ uint32_t byte_at(const uint4 &v, int b) { return word(v, b / 4) >> (8 * (b % 4)) & 0xff; }

/* bit l set when element l (esize E) of the piece differs */
template <int E> __device__ __forceinline__ uint32_t change_mask(const uint4 &a, const uint4 &b)
{
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    uint32_t x = word(a, i), y = word(b, i);
    if (E == 4)
      m |= (uint32_t)(x != y) << i;
    else if (E == 2)
      m |= ((uint32_t)((x ^ y) & 0xffff ? 1 : 0) | (uint32_t)((x ^ y) >> 16 ? 2 : 0)) << (2 * i);
    else {
      uint32_t d = __vcmpne4(x, y); /* 0xff per differing byte */
      m |= ((d >> 7 & 1) | (d >> 14 & 2) | (d >> 21 & 4) | (d >> 28 & 8)) << (4 * i);
    }
  }
  return m;
}

/* digest terms of the two words of a piece at byte offset off of an n-byte region */
__device__ __forceinline__ uint64_t piece_terms(const uint4 &v, uint64_t off, uint64_t n)
{
  uint64_t s = 0;
  if (off < n)
    s += rfk__term(v.x | (uint64_t)v.y << 32, off / 8);
  if (off + 8 < n)
    s += rfk__term(v.z | (uint64_t)v.w << 32, off / 8 + 1);
  return s;
}

__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v)
{
  for (int o = 16; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* exclusive scan of v over the 256 threads; *total: the sum. sm: 8 words of shared memory. */
__device__ __forceinline__ uint64_t block_scan(uint64_t v, uint64_t *total, uint64_t *sm)
{
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint64_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    uint64_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o)
      x += y;
  }
  if (lane == 31)
    sm[warp] = x;
  __syncthreads();
  if (warp == 0) {
    uint64_t w = lane < 8 ? sm[lane] : 0;
#pragma unroll
    for (int o = 1; o < 8; o *= 2) {
      uint64_t y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o)
        w += y;
    }
    if (lane < 8)
      sm[lane] = w;
  }
  __syncthreads();
  uint64_t before = warp ? sm[warp - 1] : 0;
  *total = sm[7];
  __syncthreads(); /* sm free again */
  return before + x - v;
}

__device__ __forceinline__ void put(uint8_t *dst, uint32_t v, int nbytes)
{
  for (int b = 0; b < nbytes; b++)
    dst[b] = (uint8_t)(v >> (8 * b));
}

/* value of element l (esize E) of a piece */
template <int E> __device__ __forceinline__ uint32_t elem(const uint4 &v, int l)
{
  if (E == 4)
    return word(v, l);
  if (E == 2)
    return word(v, l / 2) >> (16 * (l & 1)) & 0xffff;
  return word(v, l / 4) >> (8 * (l & 3)) & 0xff;
}

/* store an element of esize E at an E-aligned address */
template <int E> __device__ __forceinline__ void store_elem(uint8_t *dst, uint32_t v)
{
  if (E == 4)
    *(uint32_t *)dst = v;
  else if (E == 2)
    *(uint16_t *)dst = (uint16_t)v;
  else
    *dst = (uint8_t)v;
}

struct enc_shared {
  uint64_t scan[8];
  uint32_t tile[64]; /* changes per 256-element tile */
  uint32_t ticket, mode, k, write, tmax;
  uint64_t before; /* entries << 42 | record bytes of the region's earlier chunks */
};

template <int E> __device__ void encode_chunk(const enc_params &p, int ri, uint32_t c, enc_shared &sh)
{
  const enc_region &R = p.r[ri];
  constexpr int EPP = 16 / E; /* elements per piece */
  const int t = threadIdx.x;
  const uint64_t base = (uint64_t)c * kChunk;
  const uint32_t bytes = (uint32_t)(R.n - base < kChunk ? R.n - base : kChunk), elems = bytes / E;
  const bool fast = R.aligned && bytes == kChunk;
  uint4 a[4], b[4];
#pragma unroll
  for (int q = 0; q < 4; q++) {
    a[q] = load_piece(R.next + base, 16 * (q * kThreads + t), bytes, fast);
    b[q] = load_piece(R.old + base, 16 * (q * kThreads + t), bytes, fast);
  }
  if (t < 64)
    sh.tile[t] = 0;
  uint32_t mask[4];
  uint64_t lanes = 0;
  unsigned long long dsum = 0;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    mask[q] = change_mask<E>(a[q], b[q]);
    lanes |= (uint64_t)__popc(mask[q]) << (16 * q);
    dsum += piece_terms(a[q], base + 16 * (q * kThreads + t), R.n);
  }
  dsum = warp_sum(dsum);
  if ((t & 31) == 0)
    atomicAdd(&p.acc[2 * ri], dsum);
  uint64_t total;
  const uint64_t excl = block_scan(lanes, &total, sh.scan); /* also orders sh.tile's reset */
#pragma unroll
  for (int q = 0; q < 4; q++)
    if (mask[q])
      atomicAdd(&sh.tile[(q * kThreads + t) / (16 * E)], __popc(mask[q]));
  __syncthreads();
  const uint32_t k = (uint32_t)((total & 0xffff) + (total >> 16 & 0xffff) + (total >> 32 & 0xffff) + (total >> 48));
  uint32_t mx = 0; /* the largest tile count: warps 0 and 1, 64 tiles */
  if (t < 64) {
    mx = __reduce_max_sync(0xffffffffu, sh.tile[t]);
    if (t == 32)
      sh.tmax = mx;
  }
  /* old := next, changed pieces only (needs nothing of the look-back: in flight meanwhile) */
#pragma unroll
  for (int q = 0; q < 4; q++) {
    if (!mask[q])
      continue;
    const uint32_t off = 16 * (q * kThreads + t);
    if (fast) {
      *(uint4 *)(R.old + base + off) = a[q];
    } else {
      for (uint32_t m = mask[q]; m; m &= m - 1) {
        const int l = __ffs(m) - 1;
        for (int bb = 0; bb < E; bb++)
          R.old[base + off + l * E + bb] = (uint8_t)byte_at(a[q], l * E + bb);
      }
    }
  }
  __syncthreads();
  if (t == 0) {
    mx = max(mx, sh.tmax);
    const uint32_t mode = rfk__choose(k, mx, elems, E);
    const uint64_t size = k ? rfk__record_size(mode, k, elems, E) : 0;
    const uint64_t agg = (uint64_t)(k > 0) << kEntShift | size;
    uint64_t *st = p.state + R.chunk0;
    uint64_t before = 0;
    if (c == 0) {
      cuda::atomic_ref<uint64_t, cuda::thread_scope_device>(st[0]).store(kFlagPre | agg, cuda::memory_order_release);
    } else {
      cuda::atomic_ref<uint64_t, cuda::thread_scope_device>(st[c]).store(kFlagAgg | agg, cuda::memory_order_release);
      for (uint32_t pc = c - 1;; pc--) {
        uint64_t v;
        while (!((v = cuda::atomic_ref<uint64_t, cuda::thread_scope_device>(st[pc]).load(cuda::memory_order_acquire)) >> 62))
          __nanosleep(20);
        before += v & kVal;
        if (v >> 62 == 2)
          break;
      }
      cuda::atomic_ref<uint64_t, cuda::thread_scope_device>(st[c]).store(kFlagPre | (before + agg), cuda::memory_order_release);
    }
    p.meta[R.chunk0 + c] = mode << 24 | k;
    if (k)
      atomicAdd(&p.acc[2 * ri + 1], (unsigned long long)k);
    sh.mode = mode, sh.k = k, sh.before = before;
    sh.write = k && RFK_DELTA_HEADER + (before & kBytes) + size <= R.cap;
  }
  __syncthreads();
  if (!sh.k)
    return;
  const uint32_t mode = sh.mode, T = rfk__tiles(elems), B = (elems + 7) / 8;
  if (sh.write) {
    uint8_t *rec = R.patch + RFK_DELTA_HEADER + (sh.before & kBytes);
    const uint32_t vals = mode == RFK_DELTA_LIST ? 2 * k : mode == RFK_DELTA_TILES ? T + k : B;
    uint32_t rank = 0; /* changes in the pieces before q, over the whole chunk */
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const uint32_t pc = q * kThreads + t, e0 = pc * EPP; /* first element of the piece */
      if (mode == RFK_DELTA_DENSE) {
        for (uint32_t bb = 0; bb < 16 && 16 * pc + bb < bytes; bb++)
          rec[16 * pc + bb] = (uint8_t)byte_at(a[q], bb);
      } else {
        if (mode == RFK_DELTA_BITMAP) {
          if (E == 4) { /* two pieces per bitmap byte: the even one writes it */
            uint32_t other = __shfl_xor_sync(0xffffffffu, mask[q], 1);
            if (!(t & 1) && e0 / 8 < B)
              rec[e0 / 8] = (uint8_t)(mask[q] | other << 4);
          } else {
            for (int bb = 0; bb < (E == 1 ? 2 : 1); bb++) /* EPP / 8 bytes */
              if (e0 / 8 + bb < B)
                rec[e0 / 8 + bb] = (uint8_t)(mask[q] >> (8 * bb));
          }
        }
        if (mode == RFK_DELTA_TILES && pc % (16 * E) == 0 && pc / (16 * E) < T)
          rec[pc / (16 * E)] = (uint8_t)sh.tile[pc / (16 * E)];
        uint32_t r = rank + (uint32_t)(excl >> (16 * q) & 0xffff);
        for (uint32_t m = mask[q]; m; m &= m - 1, r++) {
          const int l = __ffs(m) - 1;
          const uint32_t i = e0 + l;
          if (mode == RFK_DELTA_LIST)
            put(rec + 2 * r, i, 2);
          else if (mode == RFK_DELTA_TILES)
            rec[T + r] = (uint8_t)(i % RFK_DELTA_TILE);
          put(rec + vals + (uint64_t)r * E, elem<E>(a[q], l), E);
        }
      }
      rank += (uint32_t)(total >> (16 * q) & 0xffff);
    }
  }
}

__global__ void __launch_bounds__(kThreads) encode_kernel(const __grid_constant__ enc_params p)
{
  __shared__ enc_shared sh;
  if (threadIdx.x == 0)
    sh.ticket = atomicAdd(p.ticket, 1u); /* launch order: predecessors are already running */
  __syncthreads();
  const uint32_t g = sh.ticket;
  const int ri = find_region(p.first, p.count, g);
  const uint32_t c = g - p.first[ri];
  const uint32_t e = p.r[ri].e;
  if (e == 1)
    encode_chunk<1>(p, ri, c, sh);
  else if (e == 2)
    encode_chunk<2>(p, ri, c, sh);
  else
    encode_chunk<4>(p, ri, c, sh);
}

/* item 0 of a region: out, header, padding; item 1 + c: directory entry of chunk c */
__global__ void __launch_bounds__(kThreads) finish_kernel(const __grid_constant__ enc_params p, uint32_t items)
{
  const uint32_t g = blockIdx.x * kThreads + threadIdx.x;
  if (g >= items)
    return;
  const int ri = find_region(p.first, p.count, g);
  const enc_region &R = p.r[ri];
  const uint32_t item = g - p.first[ri];
  const uint64_t tot = R.nch ? p.state[R.chunk0 + R.nch - 1] & kVal : 0;
  const uint32_t m = (uint32_t)(tot >> kEntShift);
  const uint64_t P = tot & kBytes, dir = RFK_DELTA_HEADER + rfk__align4(P), size = dir + (uint64_t)RFK_DELTA_ENTRY * m;
  const bool fits = size <= R.cap;
  if (item == 0) {
    rfk_delta_out o;
    o.digest = p.acc[2 * ri] + rfk__len_term(R.n);
    o.size = size, o.changed = p.acc[2 * ri + 1], o.entries = m;
    o.status = fits ? RFK_OK : RFK_DELTA_OVERFLOW;
    p.out[ri] = o;
    if (!fits)
      return;
    uint8_t *h = R.patch;
    rfk__wr32(h, RFK_DELTA_MAGIC);
    h[4] = (uint8_t)R.e, h[5] = h[6] = h[7] = 0;
    rfk__wr64(h + 8, R.n);
    rfk__wr32(h + 16, m), rfk__wr32(h + 20, (uint32_t)P);
    rfk__wr64(h + 24, o.digest);
    for (uint64_t b = RFK_DELTA_HEADER + P; b < dir; b++)
      h[b] = 0;
    return;
  }
  const uint32_t c = item - 1, meta = p.meta[R.chunk0 + c], k = meta & 0xffffffu;
  if (!fits || !k)
    return;
  const uint64_t own = 1ull << kEntShift | rfk__record_size(meta >> 24, k, rfk__chunk_elems(R.n, R.e, c), R.e);
  const uint64_t before = (p.state[R.chunk0 + c] & kVal) - own;
  uint8_t *d = R.patch + dir + (uint64_t)RFK_DELTA_ENTRY * (before >> kEntShift);
  rfk__wr32(d, c), rfk__wr32(d + 4, (uint32_t)(before & kBytes)), rfk__wr32(d + 8, meta);
}

/* ---- apply ---- */
struct app_target {
  const uint8_t *patch;
  uint8_t *dst;
  uint64_t len, n;
  uint32_t e, ctas;
};

struct app_params {
  int count;
  rfk_delta_status *st;
  uint32_t first[RFK_CUDA_CHUNK + 1]; /* CTAs before target i */
  app_target t[RFK_CUDA_CHUNK];
};

__global__ void status_init_kernel(rfk_delta_status *st, int count)
{
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count)
    rfk__ok(&st[i]);
}

__device__ __forceinline__ void fail_key(rfk_delta_status *st, uint64_t key)
{
  atomicMin((unsigned long long *)&st->key, (unsigned long long)key);
}

struct val_shared {
  uint32_t first[kThreads / 32][65]; /* per warp, TILES: changes in the tiles before t */
  int go;
};

/* exclusive scan of v over the warp; *total: the sum */
__device__ __forceinline__ uint32_t warp_excl(uint32_t v, uint32_t *total)
{
  const int lane = threadIdx.x & 31;
  uint32_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const uint32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o)
      x += y;
  }
  *total = __shfl_sync(0xffffffffu, x, 31);
  return x - v;
}

/* a TILES record's counts (T <= 64 tiles): first[t] = changes in the tiles before t, t < 64;
 * returns their sum. Lane l takes tiles l and 32 + l. */
__device__ __forceinline__ uint32_t tile_firsts(const uint8_t *rec, uint32_t T, uint32_t *first)
{
  const uint32_t lane = threadIdx.x & 31;
  uint32_t t0, t1;
  const uint32_t e0 = warp_excl(lane < T ? rec[lane] : 0, &t0);
  const uint32_t e1 = warp_excl(32 + lane < T ? rec[32 + lane] : 0, &t1);
  first[lane] = e0, first[32 + lane] = t0 + e1;
  __syncwarp();
  return t0 + t1;
}

/* the tile of change q: the largest t < T with first[t] <= q */
__device__ __forceinline__ uint32_t tile_of(const uint32_t *first, uint32_t T, uint32_t q)
{
  uint32_t lo = 0, hi = T - 1;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (first[mid] <= q)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/* Validation: one warp per directory entry (a target's warps stride over its entries; every CTA
 * checks the header first). Every check of the entry that can fail sets its key; atomicMin keeps
 * the first by (entry, check, position), the check delta_ref.c stops at. */
__global__ void __launch_bounds__(kThreads) validate_kernel(const __grid_constant__ app_params p)
{
  __shared__ val_shared sh;
  const int ti = find_region(p.first, p.count, blockIdx.x);
  const app_target &A = p.t[ti];
  const uint32_t local = blockIdx.x - p.first[ti], lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  rfk_delta_status *st = &p.st[ti];
  if (threadIdx.x == 0) {
    rfk_delta_status s;
    sh.go = !rfk__check_header(A.patch, A.len, A.n, A.e, &s);
    if (!sh.go && local == 0)
      fail_key(st, s.key);
  }
  __syncthreads();
  if (!sh.go)
    return;
  const uint32_t m = rfk__rd32(A.patch + 16), W = A.ctas * (kThreads / 32);
  uint32_t *first = sh.first[warp];
  for (uint32_t j = local * (kThreads / 32) + warp; j < m; j += W) {
    int payload_ok = 0;
    if (lane == 0) {
      rfk_delta_status s;
      if (rfk__check_entry(A.patch, A.n, A.e, j, &s, &payload_ok))
        fail_key(st, s.key), payload_ok = 0;
    }
    if (!__shfl_sync(0xffffffffu, payload_ok, 0))
      continue;
    const rfk__entry r = rfk__read_entry(A.patch, A.n, A.e, j);
    const uint8_t *rec = rfk__record(A.patch, &r);
    const uint32_t T = rfk__tiles(r.elems), B = (r.elems + 7) / 8;
    uint64_t got, want;
    bool index_ok = r.mode == RFK_DELTA_LIST;
    if (r.mode == RFK_DELTA_TILES) {
      bool bad = false;
      for (uint32_t t = lane; t < T; t += 32)
        if (rfk__check_pos(rec, &r, RFK_DC_TILE, t, 0, 0, &got, &want))
          fail_key(st, rfk__key(j + 1, RFK_DC_TILE, t)), bad = true;
      bad = __any_sync(0xffffffffu, bad);
      const uint32_t sum = tile_firsts(rec, T, first);
      if (lane == 0 && !bad && sum != r.k)
        fail_key(st, rfk__key(j + 1, RFK_DC_TILESUM, 0));
      index_ok = !bad && sum == r.k;
    }
    if (r.mode == RFK_DELTA_BITMAP) {
      if (lane == 0 && rfk__check_pos(rec, &r, RFK_DC_BITPAD, B - 1, 0, 0, &got, &want))
        fail_key(st, rfk__key(j + 1, RFK_DC_BITPAD, B - 1));
      uint32_t bits = 0;
      for (uint32_t b = lane; b < B; b += 32)
        bits += __popc(rec[b]);
      uint32_t total;
      warp_excl(bits, &total);
      if (lane == 0 && total != r.k)
        fail_key(st, rfk__key(j + 1, RFK_DC_BITS, 0));
    }
    if (index_ok)
      for (uint32_t q = lane; q < r.k; q += 32) {
        const uint32_t tile = r.mode == RFK_DELTA_TILES ? tile_of(first, T, q) : 0;
        for (uint32_t code = RFK_DC_INDEX; code <= RFK_DC_INCREASING; code++)
          if (rfk__check_pos(rec, &r, code, q, tile, r.mode == RFK_DELTA_TILES ? first[tile] : 0, &got, &want)) {
            fail_key(st, rfk__key(j + 1, code, q));
            break;
          }
      }
    __syncwarp(); /* first[] reused by the warp's next entry */
  }
}

/* element q's value (esize E) at vals, any alignment */
template <int E> __device__ __forceinline__ uint32_t rd_val(const uint8_t *vals, uint32_t q)
{
  uint32_t v = 0;
#pragma unroll
  for (int b = 0; b < E; b++)
    v |= (uint32_t)vals[q * E + b] << (8 * b);
  return v;
}

/* entry j of a valid patch, by one warp */
template <int E> __device__ void apply_entry(const app_target &A, uint32_t j, uint32_t *first)
{
  const rfk__entry r = rfk__read_entry(A.patch, A.n, E, j);
  const uint8_t *rec = rfk__record(A.patch, &r);
  uint8_t *base = A.dst + (uint64_t)r.chunk * kChunk;
  const uint32_t lane = threadIdx.x & 31, k = r.k, T = rfk__tiles(r.elems), B = (r.elems + 7) / 8;
  if (r.mode == RFK_DELTA_DENSE) {
    const uint32_t bytes = r.elems * E;
    if ((((uintptr_t)rec | (uintptr_t)base) & 15) == 0) {
      for (uint32_t i = lane; i < bytes / 16; i += 32)
        ((uint4 *)base)[i] = ((const uint4 *)rec)[i];
      for (uint32_t i = bytes / 16 * 16 + lane; i < bytes; i += 32)
        base[i] = rec[i];
    } else {
      for (uint32_t i = lane; i < bytes; i += 32)
        base[i] = rec[i];
    }
  } else if (r.mode == RFK_DELTA_LIST) {
    for (uint32_t q = lane; q < k; q += 32) {
      const uint32_t i = rec[2 * q] | (uint32_t)rec[2 * q + 1] << 8;
      store_elem<E>(base + (uint64_t)i * E, rd_val<E>(rec + 2 * k, q));
    }
  } else if (r.mode == RFK_DELTA_TILES) {
    tile_firsts(rec, T, first);
    for (uint32_t q = lane; q < k; q += 32) {
      const uint32_t tile = tile_of(first, T, q);
      store_elem<E>(base + ((uint64_t)tile * RFK_DELTA_TILE + rec[T + q]) * E, rd_val<E>(rec + T + k, q));
    }
  } else { /* BITMAP: lane l takes the bitmap bytes [l * L, (l + 1) * L) */
    const uint32_t L = (B + 31) / 32, b0 = lane * L, b1 = b0 + L < B ? b0 + L : B;
    uint32_t bits = 0, total;
    for (uint32_t b = b0; b < b1; b++)
      bits += __popc(rec[b]);
    uint32_t q = warp_excl(bits, &total);
    for (uint32_t b = b0; b < b1; b++)
      for (uint32_t m = rec[b]; m; m &= m - 1, q++)
        store_elem<E>(base + (uint64_t)(b * 8 + __ffs(m) - 1) * E, rd_val<E>(rec + B, q));
  }
}

__global__ void __launch_bounds__(kThreads) apply_kernel(const __grid_constant__ app_params p)
{
  __shared__ val_shared sh;
  const int ti = find_region(p.first, p.count, blockIdx.x);
  const app_target &A = p.t[ti];
  const uint32_t local = blockIdx.x - p.first[ti], warp = threadIdx.x >> 5;
  rfk_delta_status *st = &p.st[ti];
  const uint64_t key = st->key;
  if (key != ~0ull) {
    if (local == 0 && threadIdx.x == 0) { /* built aside: st->key must never read "none" meanwhile */
      rfk_delta_status s;
      rfk__explain(A.patch, A.len, A.n, A.e, key, &s);
      *st = s;
    }
    return;
  }
  const uint32_t m = rfk__rd32(A.patch + 16), W = A.ctas * (kThreads / 32);
  for (uint32_t j = local * (kThreads / 32) + warp; j < m; j += W) {
    if (A.e == 1)
      apply_entry<1>(A, j, sh.first[warp]);
    else if (A.e == 2)
      apply_entry<2>(A, j, sh.first[warp]);
    else
      apply_entry<4>(A, j, sh.first[warp]);
    __syncwarp(); /* first[] reused */
  }
}

/* ---- digest ---- */
struct dig_params {
  int count;
  unsigned long long *out;
  uint32_t first[RFK_CUDA_CHUNK + 1]; /* CTAs (chunks, at least one) before span i */
  const uint8_t *p[RFK_CUDA_CHUNK];
  uint64_t n[RFK_CUDA_CHUNK];
};

__global__ void __launch_bounds__(kThreads) digest_kernel(const __grid_constant__ dig_params p)
{
  const int si = find_region(p.first, p.count, blockIdx.x);
  const uint32_t c = blockIdx.x - p.first[si];
  const uint64_t n = p.n[si], base = (uint64_t)c * kChunk;
  const uint32_t bytes = n > base ? (uint32_t)(n - base < kChunk ? n - base : kChunk) : 0;
  const bool fast = ((uintptr_t)p.p[si] & 15) == 0 && bytes == kChunk;
  unsigned long long s = 0;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const uint32_t off = 16 * (q * kThreads + threadIdx.x);
    if (off < bytes)
      s += piece_terms(load_piece(p.p[si] + base, off, bytes, fast), base + off, n);
  }
  s = warp_sum(s);
  if (threadIdx.x == 0 && c == 0)
    s += rfk__len_term(n);
  if ((threadIdx.x & 31) == 0)
    atomicAdd(&p.out[si], s);
}

int bad_region(const void *a, const void *b, uint64_t n, int e)
{
  return !a || (!b && n) || (e != 1 && e != 2 && e != 4) || n % (uint64_t)e || n >> 32 || (uintptr_t)a % e ||
         (uintptr_t)b % e;
}

struct scratch_layout {
  uint64_t tickets, acc, state, meta, bytes;
};

scratch_layout layout(const rfk_delta_region *r, int count)
{
  uint64_t chunks = 0;
  for (int i = 0; i < count; i++)
    chunks += rfk__nchunks(r[i].n);
  const uint64_t subs = (uint64_t)(count + RFK_CUDA_CHUNK - 1) / RFK_CUDA_CHUNK;
  scratch_layout L;
  L.tickets = 0;
  L.acc = (4 * subs + 7) / 8 * 8;
  L.state = L.acc + 16ull * count;
  L.meta = L.state + 8 * chunks;
  L.bytes = L.meta + 4 * chunks;
  return L;
}

} /* namespace */

extern "C" uint64_t rfk_delta_scratch_bytes(const rfk_delta_region *r, int count)
{
  return count > 0 && r ? layout(r, count).bytes : 0;
}

extern "C" int rfk_cuda_delta_encode(const rfk_delta_region *r, int count, rfk_delta_out *out, void *scratch,
                                     uint64_t scratch_bytes, void *stream)
{
  if (count < 0 || (count > 0 && (!r || !out || !scratch)))
    return RFK_ERR_ARG;
  if (count == 0)
    return RFK_OK;
  for (int i = 0; i < count; i++)
    if (bad_region(r[i].next, r[i].old, r[i].n, r[i].esize) || (r[i].cap && !r[i].patch))
      return RFK_ERR_ARG;
  const scratch_layout L = layout(r, count);
  if (scratch_bytes < L.bytes || (uintptr_t)scratch % 8)
    return RFK_ERR_ARG;
  cudaStream_t st = (cudaStream_t)stream;
  uint8_t *s = (uint8_t *)scratch;
  if (cudaMemsetAsync(s, 0, L.bytes, st) != cudaSuccess)
    return RFK_ERR_CUDA;
  uint32_t chunk0 = 0;
  for (int first = 0, sub = 0; first < count; first += RFK_CUDA_CHUNK, sub++) {
    const int m = count - first < RFK_CUDA_CHUNK ? count - first : RFK_CUDA_CHUNK;
    enc_params local, *pp = &local; /* 15 KB; the launch copies it into the parameter space */
    pp->count = m;
    pp->ticket = (uint32_t *)(s + L.tickets) + sub;
    pp->state = (uint64_t *)(s + L.state);
    pp->meta = (uint32_t *)(s + L.meta);
    pp->acc = (unsigned long long *)(s + L.acc) + 2 * first;
    pp->out = out + first;
    uint32_t chunks = 0, items = 0;
    for (int i = 0; i < m; i++) {
      const rfk_delta_region *g = &r[first + i];
      const uint32_t nch = rfk__nchunks(g->n);
      pp->r[i] = enc_region{(const uint8_t *)g->next, (uint8_t *)g->old, (uint8_t *)g->patch, g->n, g->cap,
                            (uint32_t)g->esize, nch, chunk0,
                            (uint32_t)(((uintptr_t)g->next | (uintptr_t)g->old) % 16 == 0)};
      pp->first[i] = chunks;
      chunks += nch, chunk0 += nch;
    }
    pp->first[m] = chunks;
    if (chunks) {
      encode_kernel<<<chunks, kThreads, 0, st>>>(*pp);
      if (cudaGetLastError() != cudaSuccess)
        return RFK_ERR_CUDA;
    }
    for (int i = 0; i < m; i++) { /* K2 items: 1 + chunks per region */
      pp->first[i] = items;
      items += 1 + pp->r[i].nch;
    }
    pp->first[m] = items;
    finish_kernel<<<(items + kThreads - 1) / kThreads, kThreads, 0, st>>>(*pp, items);
    if (cudaGetLastError() != cudaSuccess)
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}

extern "C" int rfk_cuda_delta_apply(const rfk_delta_target *t, int count, rfk_delta_status *status, void *stream)
{
  if (count < 0 || (count > 0 && (!t || !status)))
    return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    if (bad_region(t[i].dst, t[i].dst, t[i].n, t[i].esize) || (!t[i].patch && t[i].len))
      return RFK_ERR_ARG;
  if (count == 0)
    return RFK_OK;
  cudaStream_t st = (cudaStream_t)stream;
  status_init_kernel<<<(count + kThreads - 1) / kThreads, kThreads, 0, st>>>(status, count);
  if (cudaGetLastError() != cudaSuccess)
    return RFK_ERR_CUDA;
  for (int first = 0; first < count; first += RFK_CUDA_CHUNK) {
    const int m = count - first < RFK_CUDA_CHUNK ? count - first : RFK_CUDA_CHUNK;
    app_params local, *pp = &local;
    pp->count = m;
    pp->st = status + first;
    uint32_t ctas = 0;
    for (int i = 0; i < m; i++) {
      const rfk_delta_target *g = &t[first + i];
      /* CTAs: a warp per possible entry, at most 4096 CTAs (warps then stride over the entries) */
      uint64_t most = g->len >= RFK_DELTA_HEADER ? (g->len - RFK_DELTA_HEADER) / RFK_DELTA_ENTRY : 0;
      uint32_t nch = rfk__nchunks(g->n), x = (uint32_t)(most < nch ? most : nch);
      x = (x + kThreads / 32 - 1) / (kThreads / 32);
      x = x < 1 ? 1 : x > 4096 ? 4096 : x;
      pp->t[i] = app_target{(const uint8_t *)g->patch, (uint8_t *)g->dst, g->len, g->n, (uint32_t)g->esize, x};
      pp->first[i] = ctas;
      ctas += x;
    }
    pp->first[m] = ctas;
    validate_kernel<<<ctas, kThreads, 0, st>>>(*pp);
    if (cudaGetLastError() != cudaSuccess)
      return RFK_ERR_CUDA;
    apply_kernel<<<ctas, kThreads, 0, st>>>(*pp);
    if (cudaGetLastError() != cudaSuccess)
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}

extern "C" int rfk_cuda_delta_digest(const rfk_delta_span *s, int count, uint64_t *out, void *stream)
{
  if (count < 0 || (count > 0 && (!s || !out)))
    return RFK_ERR_ARG;
  for (int i = 0; i < count; i++)
    if (!s[i].p && s[i].n)
      return RFK_ERR_ARG;
  if (count == 0)
    return RFK_OK;
  cudaStream_t st = (cudaStream_t)stream;
  if (cudaMemsetAsync(out, 0, 8ull * count, st) != cudaSuccess)
    return RFK_ERR_CUDA;
  for (int first = 0; first < count; first += RFK_CUDA_CHUNK) {
    const int m = count - first < RFK_CUDA_CHUNK ? count - first : RFK_CUDA_CHUNK;
    dig_params local, *pp = &local;
    pp->count = m;
    pp->out = (unsigned long long *)out + first;
    uint32_t ctas = 0;
    for (int i = 0; i < m; i++) {
      const uint32_t nch = rfk__nchunks(s[first + i].n);
      pp->p[i] = (const uint8_t *)s[first + i].p, pp->n[i] = s[first + i].n;
      pp->first[i] = ctas;
      ctas += nch ? nch : 1;
    }
    pp->first[m] = ctas;
    digest_kernel<<<ctas, kThreads, 0, st>>>(*pp);
    if (cudaGetLastError() != cudaSuccess)
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}
