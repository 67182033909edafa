/* delta.cu: CUDA versions of the delta patches (delta.h), writing the same bytes as delta_ref.c.
 * The format's leaf functions (digest terms, mode choice, every patch check) are delta_fmt.h's.
 *
 * Encode, without waits between CTAs (reduce, scan, place): K1, a CTA of 256 threads per 16 KB
 * chunk, brings the chunk's next and old bytes into 32 KB of shared memory by cp.async (each thread
 * its own 16-byte pieces, piece p = q * 256 + thread, q = 0..3, and reads back only those); per piece
 * a mask of changed elements; warp scans of the packed counts (four 16-bit lanes, one per q) give the
 * rank of every change, the tile counts and the full-tile flags after one barrier; every thread picks
 * the mode (rfk__choose). Whole aligned chunks (all but a region's last) take a specialised path
 * with every bound a constant. A record of at most RFK_ENC_SLOT bytes is built over the old half and
 * copied to the chunk's scratch slot and the changed pieces go into old; a larger one is listed and
 * old left for K3. Digest terms and change counts are summed per CTA and added atomically into one of
 * 8 slots per region, 128 bytes apart (a sum mod 2^64: order-free); the chunk's (entry, record bytes)
 * word is added into its group's sum (64 chunks). K2, a CTA per region, scans the group sums. K3
 * encodes the listed chunks again straight into the patch, then, a CTA per group, scans the group's
 * words (one warp, two chunks per lane) into positions, writes the directory entries and copies the
 * records from their slots (8 chunks per warp), and writes each region's header and padding.
 * Apply: three launches per 256 targets: statuses reset; validation (the header by every CTA, one
 * warp per directory entry, up to 4096 CTAs per target, the first failure by atomicMin of its key);
 * then the apply itself, which skips a target whose key is set (one thread recomputes that status
 * with rfk__explain) and otherwise writes every record's elements, a warp per entry, so a malformed
 * patch writes nothing.
 * Digest: CTA per 128 KB of a span, 8 pieces in flight per thread, one atomicAdd per CTA.
 * Measurements and the versions before this one: kernels/NOTES.md.
 * Test: build/test_delta_gpu. Bench: bench/delta_bench.py (ninja bench_kernels). */
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
/* a chunk's or region's entries and record bytes in one word: entries in 42-61, bytes in 0-41 */
constexpr int kEntShift = 42;
constexpr uint64_t kBytes = (1ull << kEntShift) - 1;

struct enc_region {
  const uint8_t *next;
  uint8_t *old, *patch;
  uint64_t n, cap;
  uint32_t e, nch, chunk0, group0; /* first chunk and chunk group in the scratch arrays */
  uint32_t aligned;        /* next and old 16-byte aligned */
};

struct enc_params {
  int count;
  uint32_t *ticket, *njobs;      /* K3's next listed chunk; how many K1 listed */
  uint32_t *jobs;                /* chunks whose record is over kSlot bytes: region << 24 | chunk */
  uint64_t *pos;                 /* per chunk: entry << 42 | record bytes (K1) */
  uint64_t *gsum;                /* per kGroup chunks of a region: K1 adds their pos; K2 makes it the groups' before it */
  uint64_t *total;               /* per region: entries << 42 | record bytes */
  uint32_t *meta;                /* per chunk: mode << 24 | k */
  uint8_t *slots;                /* per chunk kSlot bytes: K1's record */
  unsigned long long *acc;       /* per region, kAccSlots slots of kAccStride: digest terms, changed elements */
  rfk_delta_out *out;
  uint32_t first[RFK_CUDA_CHUNK + 1];  /* chunks before region i */
  uint32_t gfirst[RFK_CUDA_CHUNK + 1]; /* groups before region i */
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

/* 16 bytes at off of an n-byte region at p (zeros past the end); one vector load when p is 16-byte
 * aligned and the piece lies inside */
__device__ __forceinline__ uint4 load16(const uint8_t *p, uint64_t off, uint64_t n, bool aligned)
{
  if (aligned && off + 16 <= n)
    return *(const uint4 *)(p + off);
  uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
  for (uint32_t b = 0; b < 16; b++)
    if (off + b < n)
      w[b / 4] |= (uint32_t)p[off + b] << (8 * (b % 4));
  return make_uint4(w[0], w[1], w[2], w[3]);
}

__device__ __forceinline__ uint32_t word(const uint4 &v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
__device__ __forceinline__ uint32_t byte_at(const uint4 &v, int b) { return word(v, b / 4) >> (8 * (b % 4)) & 0xff; }

/* bit l set when element l (esize E) of the piece differs. Per word d = x ^ y: the high bit of each
 * E-byte lane of ((d & lo) + lo) | d is set iff the lane is nonzero (no carry leaves a lane); one
 * multiply gathers those high bits into the top of the word (E 1: bits 7, 15, 23, 31 -> 28 .. 31,
 * E 2: bits 15, 31 -> 30, 31; the partial products never meet) */
template <int E> __device__ __forceinline__ uint32_t change_mask(const uint4 &a, const uint4 &b)
{
  if (E == 4)
    return (uint32_t)(a.x != b.x) | (uint32_t)(a.y != b.y) << 1 | (uint32_t)(a.z != b.z) << 2 | (uint32_t)(a.w != b.w) << 3;
  constexpr uint32_t lo = E == 1 ? 0x7f7f7f7fu : 0x7fff7fffu, mul = E == 1 ? 0x00204081u : 0x8001u;
  constexpr int sh = E == 1 ? 28 : 30, epw = 4 / E;
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const uint32_t d = word(a, i) ^ word(b, i), nz = (((d & lo) + lo) | d) & ~lo;
    m |= (nz * mul) >> sh << (epw * i);
  }
  return m;
}

/* digest terms of the two words of the piece v at byte offset off (a multiple of 16) of an n-byte
 * region; K = (off / 8 + 1) * PHI, so that callers step it by additions instead of multiplying */
template <bool Inside = false>
__device__ __forceinline__ uint64_t piece_terms(const uint4 &v, uint64_t off, uint64_t n, uint64_t K)
{
  uint64_t s = 0;
  if (Inside || off < n)
    s += rfk__fmix64((v.x | (uint64_t)v.y << 32) + K);
  if (Inside || off + 8 < n)
    s += rfk__fmix64((v.z | (uint64_t)v.w << 32) + K + RFK__PHI);
  return s;
}

__device__ __forceinline__ unsigned long long warp_sum(unsigned long long v)
{
  for (int o = 16; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* inclusive scan of v over the warp (lane: this thread's) */
template <typename T> __device__ __forceinline__ T warp_incl(T v, int lane)
{
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const T y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o)
      v += y;
  }
  return v;
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

/* ---- encode ---- */
/* Three kernels per launch, no waiting between CTAs (a chained scan's look-back,
 * the version before this one, held the encode at half the copy rate: kernels/NOTES.md).
 * K1, a CTA per chunk: the chunk's next and old bytes come into 32 KB of shared memory (cp.async:
 * no registers held while the loads are in flight, 6 CTAs per SM; each thread reads back only its
 * own pieces); masks, warp scans, counts, mode; digest terms. A record of at most kSlot bytes is
 * built over the old half and copied to the chunk's scratch slot, and the changed pieces go into
 * old. A larger one (dense or nearly) leaves old as it is and its chunk is listed for K3.
 * Each chunk's (entry, record bytes) word goes into pos and is added into its group's sum.
 * K2, a CTA per region: the exclusive scan of the region's group sums.
 * K3: the listed chunks are encoded again, a CTA each, straight to their place in the patch (and
 * old updated); then a CTA per group places its slots' records. */
#ifndef RFK_ENC_CTAS
#define RFK_ENC_CTAS 6
#endif
#ifndef RFK_ENC_SLOT
#define RFK_ENC_SLOT 2048 /* scratch bytes per chunk for its record: 1/8 of the region */
#endif
constexpr int kEncCtas = RFK_ENC_CTAS;
constexpr uint32_t kGroup = 64; /* chunks per group sum (K1 adds, K2 scans the sums, K3 adds the rest) */
__host__ __device__ constexpr uint32_t ngroups(uint32_t nch) { return (nch + kGroup - 1) / kGroup; }
constexpr uint32_t kSlot = RFK_ENC_SLOT;
constexpr int kAccSlots = 8; /* per region: digest and change-count sums, 128 bytes apart (chunk % 8) */
constexpr int kAccStride = 16; /* u64 per slot */
constexpr int kScanThreads = 256, kScanItems = 8;

__device__ __forceinline__ void cp_async16(uint4 *dst, const void *src)
{
  const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

/* whole 16 KB chunks of 16-byte aligned regions come in by cp.async */
__device__ __forceinline__ bool chunk_fast(const enc_region &R, uint32_t c)
{
  return R.aligned && R.n - (uint64_t)c * kChunk >= kChunk;
}
__device__ __forceinline__ void load_chunk(const enc_region &R, uint32_t c, uint4 *slot)
{
  const uint64_t at = (uint64_t)c * kChunk + 16 * threadIdx.x; /* piece q * 256 + t is 4 KB * q further */
  const uint8_t *nx = R.next + at, *od = R.old + at;
  uint4 *sl = slot + threadIdx.x;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    cp_async16(sl + q * kThreads, nx + 16 * kThreads * q);
    cp_async16(sl + (4 + q) * kThreads, od + 16 * kThreads * q);
  }
}

/* uint4 of a chunk in shared memory: pieces q * 256 + t of next at [q * 256 + t], of old at
 * [(4 + q) * 256 + t] */
constexpr uint32_t kStage = 8 * kThreads;
struct enc_shared {
  unsigned long long warp[8][2]; /* per warp, packed change counts (16 bits per q): inclusive scan at lanes 15, 31 */
  unsigned long long dig[8];     /* per warp: digest terms */
  uint32_t full[8];              /* per warp, bit q: its pieces at q form full tiles (esize 4: half tiles) */
  uint32_t job;                  /* K3: the listed chunk this CTA takes, and its position */
  uint64_t at;
  uint64_t at2[kGroup], w2[kGroup]; /* K3: a group's positions and words */
};

/* `size` bytes from rec (4-byte aligned, readable 20 bytes past size) to dst (any alignment) by
 * `lanes` threads (t: 0 .. lanes - 1): 16-byte stores in between, bytes at both ends; nothing
 * outside [dst, dst + size) */
__device__ __forceinline__ void copy_out(uint8_t *dst, const uint8_t *rec, uint32_t size, uint32_t t, uint32_t lanes)
{
  const uint32_t head = min((uint32_t)(-(uintptr_t)dst & 15), size);
  const uint32_t vecs = (size - head) / 16, tail = head + 16 * vecs;
  const uint32_t *r32 = (const uint32_t *)rec;
  for (uint32_t v = t; v < vecs; v += lanes) {
    const uint32_t o = head + 16 * v, w = o / 4, s = 8 * (o & 3);
    const uint32_t x0 = r32[w], x1 = r32[w + 1], x2 = r32[w + 2], x3 = r32[w + 3], x4 = r32[w + 4];
    *(uint4 *)(dst + o) = make_uint4(__funnelshift_r(x0, x1, s), __funnelshift_r(x1, x2, s), __funnelshift_r(x2, x3, s),
                                     __funnelshift_r(x3, x4, s));
  }
  for (uint32_t b = t; b < head; b += lanes)
    dst[b] = rec[b];
  for (uint32_t b = t; b < size - tail; b += lanes)
    dst[tail + b] = rec[tail + b];
}

/* Chunk c of region ri in shared memory at `slot`. K1 (Place false; the caller brought a fast chunk in):
 * counts, mode, digest; the record into the chunk's slot when it is at most kSlot bytes (old
 * updated), else the chunk listed (old left). K3 (Place true, a listed chunk): the record straight
 * to the patch at the chunk's position `at` when it fits, old updated.
 * Barriers: B after the warp scans, B2 after the record is built. */
template <int E, bool Place, bool Full>
__device__ __forceinline__ void encode_chunk(const enc_params &p, int ri, uint32_t c, uint4 *slot, enc_shared &sh, uint64_t at)
{
  const enc_region &R = p.r[ri];
  constexpr int EPP = 16 / E;                /* elements per piece */
  constexpr uint32_t FULL = (1u << EPP) - 1; /* mask of a piece whose elements all changed */
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  const uint64_t base = (uint64_t)c * kChunk;
  const uint32_t bytes = Full ? kChunk : (uint32_t)(R.n - base < kChunk ? R.n - base : kChunk), elems = bytes / E;
  if (Place && Full) { /* Full: the caller's chunk_fast(R, c) */
    load_chunk(R, c, slot);
    cp_async_wait_all();
  }
  uint32_t mask[4];
  uint64_t lanes = 0;
  unsigned long long terms = 0;
  uint64_t K = ((base >> 3) + 2 * t + 1) * RFK__PHI;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const uint32_t pc = q * kThreads + t, off = 16 * pc;
    uint4 a, b;
    if (Full) {
      a = slot[pc], b = slot[4 * kThreads + pc];
    } else { /* next kept in shared memory for the record, as on the fast path */
      a = load16(R.next + base, off, bytes, R.aligned), b = load16(R.old + base, off, bytes, R.aligned);
      slot[pc] = a;
    }
    mask[q] = change_mask<E>(a, b);
    lanes |= (uint64_t)__popc(mask[q]) << (16 * q);
    if (!Place)
      terms += piece_terms<Full>(a, base + off, R.n, K);
    K += 2 * kThreads * RFK__PHI; /* the next q: 512 words on */
  }
  /* warp scan of the packed counts (pieces in order p = q * 256 + t: lanes per q) */
  const uint64_t incl = warp_incl(lanes, lane);
  if (lane == 15)
    sh.warp[warp][0] = incl;
  if (lane == 31)
    sh.warp[warp][1] = incl;
  /* full tiles: 256 elements = 16 E pieces of one q (esize 1: half a warp, 2: a warp, 4: two warps) */
  uint32_t fb = 0;
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const uint32_t bal = __ballot_sync(0xffffffffu, mask[q] == FULL);
    const bool f = E == 1 ? (bal & 0xffffu) == 0xffffu || bal >> 16 == 0xffffu : bal == 0xffffffffu;
    fb |= (uint32_t)f << q;
  }
  if (!Place)
    terms = warp_sum(terms);
  if (lane == 0)
    sh.full[warp] = fb, sh.dig[warp] = terms;
  __syncthreads(); /* B */
  uint64_t pre = 0, tot = 0;
#pragma unroll
  for (int w = 0; w < 8; w++) {
    const uint64_t v = sh.warp[w][1];
    pre += w < warp ? v : 0;
    tot += v;
  }
  const uint32_t k = (uint32_t)((tot & 0xffff) + (tot >> 16 & 0xffff) + (tot >> 32 & 0xffff) + (tot >> 48));
  uint32_t anyfull = 0;
#pragma unroll
  for (int w = 0; w < 8; w++)
    anyfull |= E == 4 ? (w % 2 ? 0 : sh.full[w] & sh.full[w + 1]) : sh.full[w];
  /* rfk__choose compares the largest tile count with 256 only */
  const uint32_t mode = rfk__choose(k, anyfull ? RFK_DELTA_TILE : 0, elems, E);
  const uint32_t size = k ? rfk__record_size(mode, k, elems, E) : 0;
  const bool big = size > kSlot; /* K1 leaves it to K3 */
  if (!Place && t == 0) {
    unsigned long long d = 0;
#pragma unroll
    for (int w = 0; w < 8; w++)
      d += sh.dig[w];
    unsigned long long *acc = p.acc + ((uint64_t)ri * kAccSlots + c % kAccSlots) * kAccStride;
    atomicAdd(&acc[0], d);
    if (k)
      atomicAdd(&acc[1], (unsigned long long)k);
    p.meta[R.chunk0 + c] = mode << 24 | k;
    const uint64_t w = (uint64_t)(k > 0) << kEntShift | size;
    p.pos[R.chunk0 + c] = w;
    if (w)
      atomicAdd((unsigned long long *)&p.gsum[R.group0 + c / kGroup], (unsigned long long)w);
    if (big)
      p.jobs[atomicAdd(p.njobs, 1u)] = (uint32_t)ri << 24 | c;
  }
  if (!Place && big)
    return; /* old stays as it was for K3 */
  if (k) { /* old := next, changed pieces only (16-byte stores when aligned, else the changed elements) */
    uint8_t *ob = R.old + base + 16 * t; /* piece q * 256 + t is 4 KB * q further */
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const uint32_t pc = q * kThreads + t, off = 16 * pc;
      if (!mask[q])
        continue;
      const uint4 a = slot[pc];
      if (Full || (R.aligned && off + 16 <= bytes)) {
        *(uint4 *)(ob + 16 * kThreads * q) = a;
      } else {
        for (uint32_t m = mask[q]; m; m &= m - 1) {
          const int l = __ffs(m) - 1;
          for (int bb = 0; bb < E; bb++)
            R.old[base + off + l * E + bb] = (uint8_t)byte_at(a, l * E + bb);
        }
      }
    }
  }
  /* records that fit are written, as in delta_ref.c (K1: those that fit whatever comes before) */
  if (!k || RFK_DELTA_HEADER + at + size > R.cap)
    return;
  /* the record, over the old half of the shared chunk (every thread is done with old since B) */
  uint8_t *rec = (uint8_t *)(slot + 4 * kThreads);
  {
    const uint32_t T = rfk__tiles(elems), B = (elems + 7) / 8;
    const uint32_t vals = mode == RFK_DELTA_LIST ? 2 * k : mode == RFK_DELTA_TILES ? T + k : B;
    const uint64_t ex = pre + incl - lanes; /* per q: changes before this piece among pieces q * 256 + 0 .. */
    uint32_t qbase = 0;                      /* changes in the pieces of earlier q */
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const uint32_t pc = q * kThreads + t, e0 = pc * EPP;
      if (mode == RFK_DELTA_DENSE) {
        if (16 * pc < bytes)
          ((uint4 *)rec)[pc] = slot[pc];
      } else {
        if (mode == RFK_DELTA_BITMAP) {
          if (E == 4) { /* two pieces per bitmap byte: the even one writes it */
            const uint32_t other = __shfl_xor_sync(0xffffffffu, mask[q], 1);
            if (!(t & 1) && e0 / 8 < B)
              rec[e0 / 8] = (uint8_t)(mask[q] | other << 4);
          } else {
#pragma unroll
            for (int bb = 0; bb < EPP / 8; bb++)
              if (e0 / 8 + bb < B)
                rec[e0 / 8 + bb] = (uint8_t)(mask[q] >> (8 * bb));
          }
        }
        if (mask[q]) {
          const uint4 a = slot[pc];
          const uint64_t lo = a.x | (uint64_t)a.y << 32, hi = a.z | (uint64_t)a.w << 32;
          uint32_t r = qbase + (uint32_t)(ex >> (16 * q) & 0xffff);
          for (uint32_t m = mask[q]; m; m &= m - 1, r++) {
            const uint32_t l = __ffs(m) - 1, i = e0 + l, bo = l * E; /* the element's bytes: bo .. bo + E - 1 of a */
            const uint32_t v = (uint32_t)((bo < 8 ? lo : hi) >> (8 * (bo & 7)));
            if (mode == RFK_DELTA_LIST)
              *(uint16_t *)(rec + 2 * r) = (uint16_t)i;
            else if (mode == RFK_DELTA_TILES)
              rec[T + r] = (uint8_t)(i % RFK_DELTA_TILE);
            uint8_t *d = rec + vals + r * E;
#pragma unroll
            for (int bb = 0; bb < E; bb++)
              d[bb] = (uint8_t)(v >> (8 * bb));
          }
        }
      }
      qbase += (uint32_t)(tot >> (16 * q) & 0xffff);
    }
    if (mode == RFK_DELTA_TILES && (uint32_t)t < T) { /* tile j's count from the warp scans */
      uint64_t v;
      int q;
      if (E == 1) {
        q = t / 16;
        const int w = t % 16 / 2;
        v = t % 2 ? sh.warp[w][1] - sh.warp[w][0] : sh.warp[w][0];
      } else if (E == 2) {
        q = t / 8;
        v = sh.warp[t % 8][1];
      } else {
        q = t / 4;
        v = sh.warp[2 * (t % 4)][1] + sh.warp[2 * (t % 4) + 1][1];
      }
      rec[t] = (uint8_t)(v >> (16 * q));
    }
  }
  __syncthreads(); /* B2 */
  uint8_t *dst = Place ? R.patch + RFK_DELTA_HEADER + at : p.slots + (uint64_t)(R.chunk0 + c) * kSlot;
  copy_out(dst, rec, size, t, kThreads);
}

template <bool Place>
__device__ __forceinline__ void encode_any(const enc_params &p, int ri, uint32_t c, uint4 *slot, enc_shared &sh, uint64_t at)
{
  const uint32_t e = p.r[ri].e;
  if (chunk_fast(p.r[ri], c)) {
    if (e == 1)
      encode_chunk<1, Place, true>(p, ri, c, slot, sh, at);
    else if (e == 2)
      encode_chunk<2, Place, true>(p, ri, c, slot, sh, at);
    else
      encode_chunk<4, Place, true>(p, ri, c, slot, sh, at);
  } else {
    if (e == 1)
      encode_chunk<1, Place, false>(p, ri, c, slot, sh, at);
    else if (e == 2)
      encode_chunk<2, Place, false>(p, ri, c, slot, sh, at);
    else
      encode_chunk<4, Place, false>(p, ri, c, slot, sh, at);
  }
}

/* K1: a CTA per chunk */
__global__ void __launch_bounds__(kThreads, kEncCtas) encode_kernel(const __grid_constant__ enc_params p)
{
  __shared__ uint4 slot[kStage];
  __shared__ enc_shared sh;
  const uint32_t g = blockIdx.x;
  const int ri = find_region(p.first, p.count, g);
  if (chunk_fast(p.r[ri], g - p.first[ri]))
    load_chunk(p.r[ri], g - p.first[ri], slot);
  cp_async_wait_all();
  encode_any<false>(p, ri, g - p.first[ri], slot, sh, 0);
}

/* K2: region blockIdx.x's exclusive scan of its group sums (entry << 42 | record bytes per kGroup
 * chunks, in place); the sum into total */
__global__ void __launch_bounds__(kScanThreads) scan_kernel(const __grid_constant__ enc_params p)
{
  __shared__ unsigned long long wsum[kScanThreads / 32];
  const enc_region &R = p.r[blockIdx.x];
  uint64_t *v = p.gsum + R.group0;
  const uint32_t ng = ngroups(R.nch);
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  uint64_t carry = 0;
  for (uint32_t o = 0; o < ng; o += kScanThreads * kScanItems) {
    uint64_t x[kScanItems], s = 0;
#pragma unroll
    for (int j = 0; j < kScanItems; j++) {
      const uint32_t i = o + t * kScanItems + j;
      x[j] = i < ng ? v[i] : 0;
      s += x[j];
    }
    const uint64_t inc = warp_incl(s, lane); /* thread sums: warp scan, then the warps' sums */
    if (lane == 31)
      wsum[warp] = inc;
    __syncthreads();
    uint64_t before = carry, all = 0;
    for (int w = 0; w < kScanThreads / 32; w++) {
      before += w < warp ? wsum[w] : 0;
      all += wsum[w];
    }
    before += inc - s;
#pragma unroll
    for (int j = 0; j < kScanItems; j++) {
      const uint32_t i = o + t * kScanItems + j;
      if (i < ng)
        v[i] = before;
      before += x[j];
    }
    carry += all;
    __syncthreads(); /* wsum reused */
  }
  if (t == 0)
    p.total[blockIdx.x] = carry;
}

/* chunk c's (entries, record bytes) before it in region R: its group's from K2 and those of the
 * chunks before it in the group (by one warp; every lane gets it) */
__device__ __forceinline__ uint64_t chunk_pos(const enc_params &p, const enc_region &R, uint32_t c, uint32_t lane)
{
  const uint32_t g0 = c / kGroup * kGroup;
  unsigned long long s = 0;
  if (g0 + lane < c)
    s += p.pos[R.chunk0 + g0 + lane];
  if (g0 + 32 + lane < c)
    s += p.pos[R.chunk0 + g0 + 32 + lane];
  return p.gsum[R.group0 + c / kGroup] + warp_sum(s);
}

/* a region's patch size and entries from K2's total, and whether the patch fits its cap */
struct patch_size {
  uint64_t P, dir, size;
  uint32_t m;
  bool fits;
};
__device__ __forceinline__ patch_size sized(const enc_params &p, int ri)
{
  patch_size z;
  const uint64_t tot = p.total[ri];
  z.m = (uint32_t)(tot >> kEntShift);
  z.P = tot & kBytes, z.dir = RFK_DELTA_HEADER + rfk__align4(z.P), z.size = z.dir + (uint64_t)RFK_DELTA_ENTRY * z.m;
  z.fits = z.size <= p.r[ri].cap;
  return z;
}

/* K3: each region's result and, when its patch fits, header and padding (a thread per region); the
 * listed chunks, a CTA each (taken by ticket); then per group of 64 chunks, a CTA each: the records
 * from their slots to their places and the directory entries */
__global__ void __launch_bounds__(kThreads, kEncCtas) place_kernel(const __grid_constant__ enc_params p, uint32_t groups)
{
  __shared__ uint4 slot[kStage];
  __shared__ enc_shared sh;
  for (uint32_t ri = blockIdx.x * kThreads + threadIdx.x; ri < (uint32_t)p.count; ri += gridDim.x * kThreads) {
    const enc_region &R = p.r[ri];
    const patch_size z = sized(p, (int)ri);
    rfk_delta_out o;
    const unsigned long long *acc = p.acc + (uint64_t)ri * kAccSlots * kAccStride;
    o.digest = rfk__len_term(R.n), o.changed = 0;
    for (int j = 0; j < kAccSlots; j++)
      o.digest += acc[j * kAccStride], o.changed += acc[j * kAccStride + 1];
    o.size = z.size, o.entries = z.m;
    o.status = z.fits ? RFK_OK : RFK_DELTA_OVERFLOW;
    p.out[ri] = o;
    if (!z.fits)
      continue;
    uint8_t *h = R.patch;
    rfk__wr32(h, RFK_DELTA_MAGIC);
    h[4] = (uint8_t)R.e, h[5] = h[6] = h[7] = 0;
    rfk__wr64(h + 8, R.n);
    rfk__wr32(h + 16, z.m), rfk__wr32(h + 20, (uint32_t)z.P);
    rfk__wr64(h + 24, o.digest);
    for (uint64_t b = RFK_DELTA_HEADER + z.P; b < z.dir; b++)
      h[b] = 0;
  }
  const uint32_t jobs = *p.njobs;
  for (;;) {
    if (threadIdx.x == 0)
      sh.job = atomicAdd(p.ticket, 1u);
    __syncthreads();
    const uint32_t j = sh.job;
    if (j >= jobs)
      break;
    const uint32_t w = p.jobs[j];
    const int ri = (int)(w >> 24);
    if (threadIdx.x < 32) {
      const uint64_t at = chunk_pos(p, p.r[ri], w & 0xffffffu, threadIdx.x);
      if (threadIdx.x == 0)
        sh.at = at & kBytes;
    }
    __syncthreads();
    encode_any<true>(p, ri, w & 0xffffffu, slot, sh, sh.at);
    __syncthreads(); /* sh reused */
  }
  /* per group, a CTA: warp 0 finds the 64 chunks' positions (two per lane, one coalesced load
   * each) and writes their directory entries; then the warps copy the records, 8 chunks each */
  const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  for (uint32_t G = blockIdx.x; G < groups; G += gridDim.x) {
    const int ri = find_region(p.gfirst, p.count, G);
    const enc_region &R = p.r[ri];
    const uint32_t c0 = (G - p.gfirst[ri]) * kGroup;
    if (warp == 0) {
      const patch_size z = sized(p, ri);
      uint64_t w[2];
      uint32_t meta[2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const uint32_t c = c0 + 2 * lane + i;
        w[i] = c < R.nch ? p.pos[R.chunk0 + c] : 0;
        meta[i] = c < R.nch ? p.meta[R.chunk0 + c] : 0;
      }
      const uint64_t s = w[0] + w[1];
      uint64_t before = p.gsum[R.group0 + c0 / kGroup] + warp_incl(s, (int)lane) - s;
#pragma unroll
      for (int i = 0; i < 2; i++) {
        const uint32_t c = c0 + 2 * lane + i;
        sh.at2[2 * lane + i] = before, sh.w2[2 * lane + i] = w[i];
        if (z.fits && w[i] >> kEntShift) {
          uint8_t *d = R.patch + z.dir + (uint64_t)RFK_DELTA_ENTRY * (before >> kEntShift);
          rfk__wr32(d, c), rfk__wr32(d + 4, (uint32_t)(before & kBytes)), rfk__wr32(d + 8, meta[i]);
        }
        before += w[i];
      }
    }
    __syncthreads();
    for (uint32_t j = warp; j < kGroup; j += kThreads / 32) {
      const uint64_t w = sh.w2[j], at = sh.at2[j] & kBytes;
      const uint32_t size = (uint32_t)(w & kBytes), c = c0 + j;
      /* records that fit are written, as in delta_ref.c */
      if (w >> kEntShift && size <= kSlot && RFK_DELTA_HEADER + at + size <= R.cap)
        copy_out(R.patch + RFK_DELTA_HEADER + at, p.slots + (uint64_t)(R.chunk0 + c) * kSlot, size, lane, 32);
    }
    __syncthreads(); /* sh reused */
  }
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
  const uint32_t x = warp_incl(v, (int)(threadIdx.x & 31));
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
  uint32_t first[RFK_CUDA_CHUNK + 1]; /* CTAs (128 KB units, at least one) before span i */
  const uint8_t *p[RFK_CUDA_CHUNK];
  uint64_t n[RFK_CUDA_CHUNK];
};

/* CTA per 128 KB of a span (at least one per span): 8 pieces in flight per thread, terms summed per
 * thread, then per CTA; one atomic per CTA (per-warp atomics on one address were the limit) */
constexpr uint64_t kDigUnit = 8 * kChunk;

__global__ void __launch_bounds__(kThreads) digest_kernel(const __grid_constant__ dig_params p)
{
  __shared__ unsigned long long part[8];
  const int si = find_region(p.first, p.count, blockIdx.x);
  const uint32_t u = blockIdx.x - p.first[si], t = threadIdx.x;
  const uint8_t *src = p.p[si];
  const uint64_t n = p.n[si], base = (uint64_t)u * kDigUnit, end = n - base < kDigUnit ? n : base + kDigUnit;
  const bool aligned = ((uintptr_t)src & 15) == 0;
  unsigned long long s = 0;
  uint64_t K = ((base >> 3) + 2 * t + 1) * RFK__PHI;
  for (uint64_t o = base; o < end; o += 8 * 16 * kThreads) {
    uint4 v[8];
#pragma unroll
    for (int j = 0; j < 8; j++)
      v[j] = load16(src, o + 16 * (j * kThreads + t), n, aligned);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      s += piece_terms(v[j], o + 16 * (j * kThreads + t), n, K);
      K += 2 * kThreads * RFK__PHI;
    }
  }
  s = warp_sum(s);
  if ((t & 31) == 0)
    part[t >> 5] = s;
  __syncthreads();
  if (t == 0) {
    unsigned long long d = u == 0 ? rfk__len_term(n) : 0;
    for (int w = 0; w < 8; w++)
      d += part[w];
    atomicAdd(&p.out[si], d);
  }
}

int bad_region(const void *a, const void *b, uint64_t n, int e)
{
  return !a || (!b && n) || (e != 1 && e != 2 && e != 4) || n % (uint64_t)e || n >> 32 || (uintptr_t)a % e ||
         (uintptr_t)b % e;
}

struct scratch_layout {
  uint64_t tickets, acc, gsum, total, pos, meta, jobs, slots, bytes; /* zeroed: tickets, acc and gsum */
};

scratch_layout layout(const rfk_delta_region *r, int count)
{
  uint64_t chunks = 0, groups = 0;
  for (int i = 0; i < count; i++) {
    const uint64_t nch = rfk__nchunks(r[i].n);
    chunks += nch, groups += ngroups((uint32_t)nch);
  }
  const uint64_t subs = (uint64_t)(count + RFK_CUDA_CHUNK - 1) / RFK_CUDA_CHUNK;
  scratch_layout L;
  L.tickets = 0; /* ticket and njobs per launch */
  L.acc = 8 * subs;
  L.gsum = L.acc + 8ull * kAccSlots * kAccStride * count;
  L.total = L.gsum + 8 * groups;
  L.pos = L.total + 8ull * count;
  L.meta = L.pos + 8 * chunks;
  L.jobs = L.meta + 4 * chunks;
  L.slots = (L.jobs + 4 * chunks + 15) / 16 * 16;
  L.bytes = L.slots + (uint64_t)kSlot * chunks + 32; /* copy_out reads a few bytes past a record */
  return L;
}

} /* namespace */

extern "C" uint64_t rfk_delta_scratch_bytes(const rfk_delta_region *r, int count)
{
  return count > 0 && r ? layout(r, count).bytes : 0;
}

extern "C" int rfk_cuda_delta_load(void)
{
  const void *k[] = {(const void *)encode_kernel, (const void *)scan_kernel, (const void *)place_kernel, (const void *)status_init_kernel,
                     (const void *)validate_kernel, (const void *)apply_kernel, (const void *)digest_kernel};
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
    cudaFuncAttributes a;
    if (cudaFuncGetAttributes(&a, k[i]) != cudaSuccess)
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
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
  if (cudaMemsetAsync(s, 0, L.total, st) != cudaSuccess)
    return RFK_ERR_CUDA;
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return RFK_ERR_CUDA;
  /* 6 CTAs of 33 KB shared memory per SM need the largest carveout */
  if (cudaFuncSetAttribute(encode_kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) !=
          cudaSuccess ||
      cudaFuncSetAttribute(place_kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) !=
      cudaSuccess)
    return RFK_ERR_CUDA;
  uint32_t chunk0 = 0, group0 = 0;
  for (int first = 0, sub = 0; first < count; first += RFK_CUDA_CHUNK, sub++) {
    const int m = count - first < RFK_CUDA_CHUNK ? count - first : RFK_CUDA_CHUNK;
    enc_params local, *pp = &local; /* 18 KB; the launch copies it into the parameter space */
    pp->count = m;
    pp->ticket = (uint32_t *)(s + L.tickets) + 2 * sub;
    pp->njobs = pp->ticket + 1;
    pp->jobs = (uint32_t *)(s + L.jobs);
    pp->pos = (uint64_t *)(s + L.pos);
    pp->gsum = (uint64_t *)(s + L.gsum);
    pp->total = (uint64_t *)(s + L.total) + first;
    pp->slots = s + L.slots;
    pp->meta = (uint32_t *)(s + L.meta);
    pp->acc = (unsigned long long *)(s + L.acc) + (uint64_t)kAccSlots * kAccStride * first;
    pp->out = out + first;
    uint32_t chunks = 0, groups = 0;
    for (int i = 0; i < m; i++) {
      const rfk_delta_region *g = &r[first + i];
      const uint32_t nch = rfk__nchunks(g->n);
      pp->r[i] = enc_region{(const uint8_t *)g->next, (uint8_t *)g->old, (uint8_t *)g->patch, g->n, g->cap,
                            (uint32_t)g->esize, nch, chunk0, group0,
                            (uint32_t)(((uintptr_t)g->next | (uintptr_t)g->old) % 16 == 0)};
      pp->first[i] = chunks, pp->gfirst[i] = groups;
      chunks += nch, chunk0 += nch, groups += ngroups(nch), group0 += ngroups(nch);
    }
    pp->first[m] = chunks, pp->gfirst[m] = groups;
    /* K3: resident CTAs, at most one per chunk (each listed chunk takes a CTA; the groups stride) */
    const uint32_t grid = (uint32_t)sms * kEncCtas;
    if (chunks)
      encode_kernel<<<chunks, kThreads, 0, st>>>(*pp);
    scan_kernel<<<m, kScanThreads, 0, st>>>(*pp); /* every region's total (0 without chunks) */
    place_kernel<<<grid < chunks ? grid : chunks ? chunks : 1, kThreads, 0, st>>>(*pp, groups);
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
      const uint64_t units = (s[first + i].n + kDigUnit - 1) / kDigUnit;
      pp->p[i] = (const uint8_t *)s[first + i].p, pp->n[i] = s[first + i].n;
      pp->first[i] = ctas;
      ctas += units ? (uint32_t)units : 1;
    }
    pp->first[m] = ctas;
    digest_kernel<<<ctas, kThreads, 0, st>>>(*pp);
    if (cudaGetLastError() != cudaSuccess)
      return RFK_ERR_CUDA;
  }
  return RFK_OK;
}
