/* refresh.h: rebuilding tensors an engine derives from its weights at load time.
 *
 * MLA absorption (vLLM MLAAttention.process_weights_after_loading), per layer and TP rank:
 *   W    = dequant(kv_b_proj)                 [h*(nope+v), lora] bf16, W = bf16_rne(f32(q) * scale)
 *   W_UK_T[n][i][l] = W[n*(nope+v) + i][l]        [h, nope, lora]  (i < nope)
 *   W_UV[n][l][j]   = W[n*(nope+v) + nope + j][l] [h, lora, v]     (j < v)
 * Both are views into one caller-provided bf16 (uint16_t) storage `out`, each with its own element
 * offset and strides (rfk_mla_layout, from the plan's derived tensors): element (a, b, c) of W_UK_T
 * is out[uk_off + a*uk_stride[0] + b*uk_stride[1] + c*uk_stride[2]], likewise W_UV. vLLM's layout
 * for an fp8 kv_b_proj is the storage W^T [lora, h*(nope+v)]: W_UK_T offset 0, strides
 * (nope+v, 1, h*(nope+v)); W_UV offset nope, strides (nope+v, h*(nope+v), 1). Storage elements no
 * view covers are left as they are. kv_b is fp8 e4m3fn with fp32 block scales
 * [ceil(rows/128), ceil(lora/128)] (row-major), or bf16 (scale NULL). */
#ifndef REFIT_REFRESH_H
#define REFIT_REFRESH_H

#include <stdint.h>

typedef struct rfk_mla_layout {
  int heads, nope, v, lora;
  int64_t elems;                  /* elements of the storage: every view element must lie below */
  int64_t uk_off, uk_stride[3];   /* W_UK_T [h, nope, lora] */
  int64_t uv_off, uv_stride[3];   /* W_UV [h, lora, v] */
} rfk_mla_layout;

typedef struct rfk_mla_absorb {
  const void *kv_b;      /* [h*(nope+v), lora], fp8 or bf16 */
  const float *scale;    /* fp8 only: [ceil(h*(nope+v)/128), ceil(lora/128)] */
  uint16_t *out;         /* the storage both views lie in, `elems` bf16 */
} rfk_mla_absorb;

/* 1 when the dims are positive, offsets and strides >= 0 and every element of both views lies
 * below elems (what every absorb call checks), else 0. */
static inline int rfk_mla_layout_inside(const rfk_mla_layout *y)
{
  if (!y || y->heads <= 0 || y->nope <= 0 || y->v <= 0 || y->lora <= 0 || y->uk_off < 0 || y->uv_off < 0)
    return 0;
  const int64_t uk[3] = {y->heads, y->nope, y->lora}, uv[3] = {y->heads, y->lora, y->v};
  int64_t uk_last = y->uk_off, uv_last = y->uv_off;
  for (int k = 0; k < 3; k++) {
    if (y->uk_stride[k] < 0 || y->uv_stride[k] < 0)
      return 0;
    uk_last += (uk[k] - 1) * y->uk_stride[k];
    uv_last += (uv[k] - 1) * y->uv_stride[k];
  }
  return uk_last < y->elems && uv_last < y->elems;
}

/* 0 when the layout is usable: positive dims, offsets and strides >= 0, both views inside `elems`
 * (the bounds the absorb calls check on every call), and no storage element written twice (two
 * view elements at one place: the views would race and depend on write order). 2 otherwise. This
 * last part walks every view element once over a bitmap of `elems` bits (malloc'd and freed): call
 * it once when binding, not per version. */
int rfk_mla_layout_check(const rfk_mla_layout *lay);

/* Every layer of a receiver in one call: n items with the same layout. Returns 0, or 2 (bad
 * argument) when a pointer is NULL, a dimension is not positive or a view leaves the storage. */
int rfk_ref_mla_absorb(const rfk_mla_absorb *items, int n, int kv_b_is_fp8, const rfk_mla_layout *lay);

float rfk_e4m3_to_f32(uint8_t q);
uint16_t rfk_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */

/* UE8M0 re-quantization (vLLM requant_weight_ue8m0_inplace), per item a [rows, cols] fp8 e4m3fn
 * weight q (contiguous) with fp32 block scales [ceil(rows/128), ceil(cols/128)] (contiguous):
 *   x = f32(q) * scale                      (one fp32 multiply, the dequantized weight)
 *   then the block quantizer of kernels.h with ue8m0 scales over x:
 *   scale' = 2^ceil(log2(max(amax(x), 1e-4) / 448)),  q' = e4m3_rne_satfinite(x * (1 / scale'))
 * written to q_out / scale_out, which may equal q / scale (in place). A block whose q holds a NaN
 * code or whose scale is not finite gets scale' = NaN and q' = 0x7f and the call returns
 * RFK_ERR_NONFINITE (1); the other blocks are done. Returns RFK_ERR_ARG (2) on NULL / negative size.
 * C reference in ref.c (libkernels.a). */
typedef struct rfk_requant {
  const uint8_t *q;     /* [rows, cols] fp8 */
  const float *scale;   /* [ceil(rows/128), ceil(cols/128)] */
  uint8_t *q_out;       /* [rows, cols] fp8, may be q */
  float *scale_out;     /* same shape as scale, may be scale */
} rfk_requant;

int rfk_ref_requant_ue8m0(const rfk_requant *items, int n, int64_t rows, int64_t cols);

/* UE8M0 pack: DeepGEMM's weight-scale layout on SM100 (vLLM 0.33
 * deepgemm_post_process_fp8_weight_block -> transform_sf_into_required_layout with recipe
 * (1, 128, 128), is_sfa False, UE8M0 cast on; the step after rfk_*_requant_ue8m0 on Blackwell).
 * In: `groups` contiguous fp32 block scales [groups, ceil(rows/128), ceil(cols/128)] of a weight
 * [groups, rows, cols] (a linear: groups 1; a MoE w13/w2: groups = local experts).
 * Out: int32, per group rfk_ue8m0_pack_words(rows, cols) words, groups contiguous; word
 *   out[g*words + p*mn + r] (mn = rfk_ue8m0_pack_mn(rows), p < ceil(ceil(cols/128)/4), r < mn)
 *   holds the UE8M0 codes of scale[g][r/128][4p+j] in bits 8j..8j+7 (j = 0..3, little end first);
 *   a K block past ceil(cols/128) is code 0, a row r >= rows (TMA padding) is the word 0.
 *   As a tensor: shape [groups, rows, ceil(ceil(cols/128)/4)], strides (words, 1, mn) int32:
 *   every row of a 128-row block repeats its block's scales (MN-major, "broadcast" per row).
 * Code of a scale s (rfk_ue8m0_code): the exponent byte of the smallest power of two >= s
 *   (rfk_ue8m0_ceil), i.e. bits 23..30 of it: exact for the power-of-two scales vLLM packs (its
 *   kernel traps on any other); +0 -> 0, a subnormal -> 1; a scale > 2^127, inf, NaN or with the
 *   sign bit set -> 0xff (UE8M0 NaN) and the call returns RFK_ERR_NONFINITE (1), all else written.
 * Returns RFK_ERR_ARG (2) on NULL pointers or negative sizes; groups, rows or cols 0 writes nothing.
 * vLLM's kernel leaves the padding rows of its fresh tensor unwritten; its PyTorch path (and refit)
 * zero them. */
static inline int64_t rfk_ue8m0_pack_mn(int64_t rows) { return (rows + 3) / 4 * 4; }
static inline int64_t rfk_ue8m0_pack_words(int64_t rows, int64_t cols)
{
  return ((cols + 127) / 128 + 3) / 4 * rfk_ue8m0_pack_mn(rows);
}
uint8_t rfk_ue8m0_code(float s);
int rfk_ref_ue8m0_pack(const float *scale, int32_t *out, int64_t groups, int64_t rows, int64_t cols);

/* Grouped UE8M0 pack: many tensors in one call (a receiver's finalize steps, all layers). Each item
 * is one rfk_ref_ue8m0_pack call {scale, out, groups, rows, cols}; `first` and `bx` are the CUDA
 * launch's block bookkeeping, filled by rfk_ue8m0_pack_prepare (the reference ignores them).
 * rfk_ue8m0_pack_prepare: checks every item (as the single call does: non-NULL 4-byte aligned
 * pointers, sizes >= 0, the single launch's limits) and numbers the blocks: item i owns blocks
 * [first, first + groups * pk * bx) of the grouped launch (pk = ceil(ceil(cols/128)/4), bx = the
 * 4096-row chunks of rfk_ue8m0_pack_mn(rows); empty items own none). Returns the total blocks, or
 * -1 (bad argument, *bad = the first bad item's index when bad is not NULL).
 * rfk_ref_ue8m0_pack_items: every item checked before any is written (RFK_ERR_ARG, nothing written),
 * then each packed; 1 (RFK_ERR_NONFINITE) when any item's pack returns 1, all else written. */
typedef struct rfk_ue8m0_item {
  const float *scale;
  int32_t *out;
  int64_t groups, rows, cols;
  int64_t first; /* prepare: the item's first block */
  int32_t bx;    /* prepare: blocks per (group, packed K column) */
  int32_t align; /* prepare: bit 0 out 16-byte aligned, bit 1 scale rows loadable as float4 */
} rfk_ue8m0_item;
#define RFK_PACK_ROWS_PER_BLOCK 4096 /* 256 threads x 4 quads x 4 rows */
int64_t rfk_ue8m0_pack_prepare(rfk_ue8m0_item *items, int n, int *bad);
int rfk_ref_ue8m0_pack_items(const rfk_ue8m0_item *items, int n);

/* CUDA versions (build/obj/libcuda.a, only when configure found nvcc). Device pointers inside the
 * items, items itself a HOST array (passed by value, all layers in one launch per 256 items);
 * stream is a cudaStream_t as void*. Bit-equal to the references. Return 0, 2 (bad argument) or
 * 3 (launch failed); requant sets *flag = 1 (device int) where the reference returns 1. */
int rfk_cuda_mla_absorb(const rfk_mla_absorb *items, int n, int kv_b_is_fp8, const rfk_mla_layout *lay, void *stream);
int rfk_cuda_requant_ue8m0(const rfk_requant *items, int n, int64_t rows, int64_t cols, int *flag, void *stream);
/* one launch for all groups; scale and out 4-byte aligned device pointers (16-byte aligned out is
 * written with 16-byte stores); *flag = 1 (flag may be NULL) where the reference returns 1 */
int rfk_cuda_ue8m0_pack(const float *scale, int32_t *out, int64_t groups, int64_t rows, int64_t cols, int *flag,
                        void *stream);

/* the grouped pack in one launch: items_d the DEVICE copy of n items prepared by
 * rfk_ue8m0_pack_prepare (which returned `blocks`, <= 2^31 - 1); *flag = 1 (flag may be NULL) where
 * the reference returns 1. Returns 0, 2 (n < 0, items_d NULL with blocks > 0, blocks out of range)
 * or 3. blocks 0 launches nothing. */
int rfk_cuda_ue8m0_pack_items(const rfk_ue8m0_item *items_d, int n, int64_t blocks, int *flag, void *stream);

#endif
