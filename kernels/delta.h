/* delta.h: sparse delta patches of encoded regions (issue 16, DESIGN.md section 5c).
 * C API, no CUDA headers: delta_ref.c implements rfk_ref_delta_* (bit-exact C reference, always
 * built), delta.cu implements rfk_cuda_delta_* (only when configure found nvcc). The C reference and
 * CUDA write the same patch bytes, sizes, digests, statuses and applied bytes.
 *
 * A region is n bytes of one encoded tensor range (FP8 codes: esize 1, bf16: 2, fp32 or FP8
 * scales: 4), n a multiple of esize and below 2^32. An element "changed" when any of its esize
 * bytes differ (bytes are compared, never floats: -0.0 vs 0.0 and NaN payloads are changes).
 *
 * ---- Digest (64 bit, order-aware, parallel) ----
 * Over the n bytes b[0..n): words w_i = b[8i] | b[8i+1] << 8 | ... | b[8i+7] << 56 (little endian,
 * bytes past n read as 0), i = 0 .. ceil(n/8) - 1;
 *   digest = fmix64(n + 0x243f6a8885a308d3) + sum_i fmix64(w_i + (i + 1) * 0x9e3779b97f4a7c15)
 * in uint64 arithmetic (mod 2^64), where fmix64 is MurmurHash3's finalizer, a bijection of uint64:
 *   x ^= x >> 33; x *= 0xff51afd7ed558ccd; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53; x ^= x >> 33.
 * The terms add in any order, so chunks are hashed in parallel and added atomically. A change
 * inside one 8-byte word always changes the digest (bijection); any other difference (several
 * words, swapped or shifted bytes, a different length) leaves it equal with probability ~2^-64 for
 * data that is not built to collide. Not a cryptographic hash.
 *
 * ---- Patch format (all integers little endian) ----
 * The region is cut into chunks of RFK_DELTA_CHUNK = 16384 bytes (the last one partial):
 * C_c = elements of chunk c = min(16384, n - 16384 c) / esize. A chunk with k >= 1 changed
 * elements becomes one directory entry and one payload record in one of four modes; the encoder
 * takes the smallest (ties: the lower mode number):
 *   0 LIST    k * (2 + esize) bytes: k u16 element indexes within the chunk, increasing, then the
 *             k new element values (esize bytes each) in the same order.
 *   1 TILES   T_c + k * (1 + esize) bytes, T_c = ceil(C_c / 256) tiles of 256 elements: T_c u8
 *             counts (changes per tile), then k u8 indexes within their tile (increasing within a
 *             tile, tiles in order), then the k values. Only when no tile has 256 changes.
 *   2 BITMAP  ceil(C_c / 8) + k * esize bytes: bit (i % 8) of byte i / 8 set when element i of the
 *             chunk changed (bits past C_c zero), then the k values in element order.
 *   3 DENSE   C_c * esize bytes: the chunk's new bytes.
 * Layout of a patch (size = 32 + align4(P) + 12 m bytes):
 *   [0, 32)    header: u32 magic RFK_DELTA_MAGIC ("RFD1"), u8 esize, 3 zero bytes, u64 n,
 *              u32 m (entries), u32 P (payload bytes), u64 digest of the new bytes
 *   [32, 32+P) payload: the records of the entries, in entry order, back to back (no alignment)
 *              then zero bytes up to a multiple of 4
 *   then       m entries of 12 bytes, chunk indexes increasing: u32 chunk, u32 offset of its
 *              record from byte 32, u32 (mode << 24 | k)
 * Unchanged chunks have no entry; an unchanged region is a 32-byte patch. The largest patch of an
 * n-byte region is rfk_delta_bound(n) (every chunk dense).
 *
 * ---- Encode (trainer): per region, reads new and old once ----
 * Writes the patch into patch[0, cap), copies the changed bytes of new into old (old := new),
 * and fills out[i]. Capacity: when out.size > cap the region overflows (status
 * RFK_DELTA_OVERFLOW): nothing at or past patch + cap is written, the bytes below it are
 * unspecified (records that fit are there, header and directory are not), while old := new and
 * the digest are done as always; the caller sends that region dense (the digest still checks it).
 * cap may be 0 (patch NULL): an update of old and a digest only.
 *
 * ---- Apply (receiver): per target, in place, work proportional to the patch ----
 * Validates the whole patch of a target before writing anything to its dst (patches arrive over
 * the network): a malformed patch leaves dst untouched and sets its status to the failing check.
 * Checks are made in the order of RFK_DELTA_CHECKS below, header first, then entry by entry; the
 * reported one is the first failure by (entry, check, position). An entry's payload checks are made
 * only when its record lies inside the header's payload (otherwise a later END check fails).
 * Every element index is checked against its chunk (or tile) and region, so a valid patch never
 * writes outside [dst, dst + n). A valid patch whose base bytes were not the encoder's old bytes
 * is applied anyway: the digest is the check of that. */
#ifndef REFIT_DELTA_H
#define REFIT_DELTA_H

#include <stddef.h>
#include <stdint.h>

#define RFK_DELTA_CHUNK 16384u
#define RFK_DELTA_TILE 256u
#define RFK_DELTA_HEADER 32u
#define RFK_DELTA_ENTRY 12u
#define RFK_DELTA_MAGIC 0x31444652u /* bytes "RFD1" */
enum { RFK_DELTA_LIST = 0, RFK_DELTA_TILES = 1, RFK_DELTA_BITMAP = 2, RFK_DELTA_DENSE = 3 };

/* return / status codes beside kernels.h's RFK_OK, RFK_ERR_ARG, RFK_ERR_CUDA */
enum { RFK_DELTA_OVERFLOW = 4, RFK_DELTA_MALFORMED = 5 };

/* Patch checks of apply, in the order they are made: X(code, name, message, arguments...), the
 * message a printf format over the status fields got, want, pos (unsigned long long). */
#define RFK_DELTA_CHECKS(X)                                                                               \
  X(16, SHORT, "patch of %llu bytes is shorter than its %llu-byte header", got, want)                    \
  X(17, MAGIC, "magic 0x%08llx, expected 0x%08llx", got, want)                                           \
  X(18, ESIZE, "element size %llu, expected %llu", got, want)                                            \
  X(19, RESERVED, "header byte %llu is 0x%02llx, expected 0", pos, got)                                  \
  X(20, REGION, "patch of a %llu-byte region, expected %llu", got, want)                                 \
  X(21, ENTRIES, "%llu entries for a region of %llu chunks", got, want)                                  \
  X(22, LENGTH, "%llu bytes received, the header describes %llu", got, want)                             \
  X(23, PAD, "padding byte %llu is 0x%02llx, expected 0", pos, got)                                      \
  X(32, CHUNK, "chunk %llu outside the region's %llu chunks", got, want)                                 \
  X(33, ORDER, "chunk %llu not after the previous entry's chunk %llu", got, want)                        \
  X(34, MODE, "mode %llu, expected 0..%llu", got, want)                                                  \
  X(35, COUNT, "%llu changes in a chunk of %llu elements", got, want)                                    \
  X(36, OFFSET, "record at %llu, expected %llu (after the previous record)", got, want)                  \
  X(37, END, "record ends at %llu, expected %llu (the next record or the payload end)", got, want)       \
  X(48, TILE, "tile %llu holds %llu changes, at most %llu", pos, got, want)                              \
  X(49, TILESUM, "tile counts add up to %llu, the entry says %llu", got, want)                           \
  X(50, BITPAD, "bitmap byte %llu is 0x%02llx: bits past the chunk's %llu elements set", pos, got, want)  \
  X(51, BITS, "bitmap has %llu bits set, the entry says %llu", got, want)                                \
  X(52, INDEX, "element index %llu at position %llu not below %llu", got, pos, want)                     \
  X(53, INCREASING, "element index %llu at position %llu not above the previous %llu", got, pos, want)

#define RFK_DELTA_ENUM_(code, name, ...) RFK_DC_##name = code,
enum { RFK_DELTA_CHECKS(RFK_DELTA_ENUM_) };
#undef RFK_DELTA_ENUM_

/* ---- encode ---- */
typedef struct rfk_delta_region {
  const void *next; /* n bytes: the new encoding */
  void *old;        /* n bytes: the previous version's encoding; becomes equal to next */
  uint64_t n;       /* bytes, a multiple of esize, < 2^32 */
  int esize;        /* 1, 2 or 4 */
  void *patch;      /* cap bytes, written by the encoder (NULL when cap is 0) */
  uint64_t cap;
} rfk_delta_region;

typedef struct rfk_delta_out {
  uint64_t digest;  /* of the n bytes of next (the digest above) */
  uint64_t size;    /* bytes of the patch, 32 + align4(P) + 12 m (also when it did not fit) */
  uint64_t changed; /* elements that changed */
  uint32_t entries; /* m: chunks that changed */
  int32_t status;   /* RFK_OK, or RFK_DELTA_OVERFLOW when size > cap */
} rfk_delta_out;

/* bytes of the largest patch of an n-byte region: 32 + align4(n) + 12 ceil(n / 16384) */
uint64_t rfk_delta_bound(uint64_t n);

/* C reference: every region in order. Returns RFK_OK (overflows are per region, in out[i].status)
 * or RFK_ERR_ARG (nothing written): NULL pointer, esize not 1/2/4, n not a multiple of esize or
 * >= 2^32, next/old not aligned to esize, cap > 0 with patch NULL. */
int rfk_ref_delta_encode(const rfk_delta_region *r, int count, rfk_delta_out *out);

/* CUDA: same semantics and bytes. next/old/patch are device pointers, r a HOST array (passed by
 * value, RFK_CUDA_CHUNK regions per launch); out: count results in device memory (or host memory
 * mapped into the device), valid once the stream reached the end of this call's work. scratch:
 * device memory of rfk_delta_scratch_bytes(r, count) bytes (8-byte aligned; about 1/8 of the
 * regions' bytes, a 2 KB record slot per 16 KB chunk), not shared with a concurrent call; its
 * contents need not be anything. Returns RFK_ERR_ARG (nothing launched), RFK_ERR_CUDA (a launch
 * failed), else RFK_OK. Fastest with next/old 16-byte aligned. */
uint64_t rfk_delta_scratch_bytes(const rfk_delta_region *r, int count);
int rfk_cuda_delta_encode(const rfk_delta_region *r, int count, rfk_delta_out *out, void *scratch,
                          uint64_t scratch_bytes, void *stream);

/* ---- apply ---- */
typedef struct rfk_delta_target {
  const void *patch; /* len bytes: the patch as it arrived */
  uint64_t len;
  void *dst;         /* n bytes, the region's live bytes (aligned to esize), patched in place */
  uint64_t n;
  int esize;
} rfk_delta_target;

typedef struct rfk_delta_status {
  int32_t code;   /* RFK_OK, or the RFK_DC_* check that failed */
  uint32_t entry; /* directory entry of the failure (header checks: UINT32_MAX) */
  uint32_t pos;   /* position within the entry's tiles / indexes, or the header byte */
  uint32_t chunk; /* chunk of that entry (header checks: UINT32_MAX) */
  uint64_t got, want;
  uint64_t key;   /* the failing check as (entry + 1) << 32 | code << 24 | pos; UINT64_MAX if none */
} rfk_delta_status;

/* C reference: validates and applies every target. Returns RFK_OK when all were applied,
 * RFK_DELTA_MALFORMED when any was refused (those are untouched, the others applied), or
 * RFK_ERR_ARG (nothing done): NULL pointer (patch may be NULL when len is 0), bad esize, n not a
 * multiple of esize or >= 2^32, dst not aligned to esize. */
int rfk_ref_delta_apply(const rfk_delta_target *t, int count, rfk_delta_status *st);

/* CUDA: same; t a HOST array, patch/dst device pointers, st: count statuses in device memory.
 * Launches: one status reset, then validate + apply per RFK_CUDA_CHUNK targets. Returns
 * RFK_ERR_ARG, RFK_ERR_CUDA or RFK_OK (malformed patches show in st[i].code). */
int rfk_cuda_delta_apply(const rfk_delta_target *t, int count, rfk_delta_status *st, void *stream);

/* "entry 5 (chunk 7): element index 16390 at position 12 not below 16384"; "ok" for RFK_OK.
 * Returns what snprintf returns. */
int rfk_delta_format(const rfk_delta_status *st, char *buf, size_t size);

/* ---- digest (the receiver's check after apply or a dense push) ---- */
typedef struct rfk_delta_span {
  const void *p;
  uint64_t n;
} rfk_delta_span;

/* out[i] = digest of s[i]. Returns RFK_OK or RFK_ERR_ARG (NULL pointer). CUDA: p device pointers,
 * s a HOST array, out device memory. */
int rfk_ref_delta_digest(const rfk_delta_span *s, int count, uint64_t *out);
int rfk_cuda_delta_digest(const rfk_delta_span *s, int count, uint64_t *out, void *stream);

/* CUDA: load every kernel of this file into the current context now (CUDA loads kernels lazily, at
 * first use, and a load can wait for the whole context: behind a stream that waits on the host, as a
 * receiver's engine stream does until its version completes, the first launch would never return).
 * Returns RFK_OK or RFK_ERR_CUDA. */
int rfk_cuda_delta_load(void);

#endif
