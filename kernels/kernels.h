/* kernels.h: the trainer-side pass that writes tensors into the slot arena in the receiver's format.
 * C API, no CUDA headers: ref.c implements rfk_ref_* (bit-exact C reference, always built), the
 * *.cu files implement rfk_cuda_* (built only when configure found nvcc; build/obj/libcuda.a).
 *
 * One call = one batch of n items of the same shape (an rf_op of refit_plan.h): item i reads the
 * [rows, cols] region at items[i].src (row pitch src_ld elements of src_dtype) and writes it at
 * items[i].out (row pitch out_ld elements of out_dtype).
 *   out_dtype RFK_BF16 / RFK_FP32: cast or plain copy. bf16 -> fp32 exact, fp32 -> bf16 round to
 *     nearest even (NaN stays NaN: upper 16 bits with the quiet bit set), same dtype: bit copy.
 *   out_dtype RFK_FP8: block FP8 e4m3fn (DESIGN.md section 7). Blocks of 128x128 start at the
 *     region's (0,0), edge blocks are partial. Per block, in fp32:
 *       amax = max(max|x| over the block's real elements, 1e-4f)
 *       scale = amax / 448                     (stored, fp32; dequantization multiplies)
 *       q = e4m3_rne_satfinite(x * (448 / amax))   (448 / amax is one fp32 division)
 *     ue8m0 (enum rfk_scale_mode):
 *     RFK_SCALE_UE8M0: scale = amax / 448 rounded up to a power of two (2^ceil(log2)), and
 *       q = e4m3_rne_satfinite(x * (1 / scale)) (the reciprocal of a power of two is exact).
 *     RFK_SCALE_REQUANT: what vLLM holds after loading a checkpoint quantized as above with fp32
 *       scales on SM100 (DeepGEMM): the fp32-scale block (q, scale), then re-quantized as
 *       rfk_ref_requant_ue8m0 (refresh.h) does it: x' = f32(q) * scale,
 *       scale' = 2^ceil(log2(max(amax(x'), 1e-4) / 448)), q' = e4m3_rne_satfinite(x' * (1 / scale')).
 *       Bit-exact with running the two steps one after the other; one pass over the source.
 *     Scales: fp32 [ceil(rows/128), ceil(cols/128)] at items[i].scale, row pitch scale_ld floats.
 *     Inf/NaN input: every block that holds one gets scale = NaN (0x7fc00000) and all its q bytes
 *     0x7f (e4m3 NaN); all other blocks are quantized normally; the call returns
 *     RFK_ERR_NONFINITE (CUDA: sets *flag = 1). Casts never report non-finite values.
 * Shapes: rows, cols >= 1 (rows or cols 0 is an empty no-op), ld >= cols, scale_ld >= ceil(cols/128).
 * Pointers: aligned to their element size; the CUDA kernels are fastest with 16-byte aligned rows. */
#ifndef REFIT_KERNELS_H
#define REFIT_KERNELS_H

#include <stdint.h>

enum { RFK_OK = 0, RFK_ERR_NONFINITE = 1, RFK_ERR_ARG = 2, RFK_ERR_CUDA = 3 };
enum { RFK_BF16 = 1, RFK_FP32 = 2, RFK_FP8 = 3 }; /* same values as enum rf_dtype */
enum rfk_scale_mode { RFK_SCALE_FP32 = 0, RFK_SCALE_UE8M0 = 1, RFK_SCALE_REQUANT = 2 };

typedef struct rfk_shape {
  int src_dtype, out_dtype, ue8m0; /* ue8m0: enum rfk_scale_mode (FP8 only) */
  int64_t rows, cols, src_ld, out_ld, scale_ld; /* elements; scale_ld in floats */
} rfk_shape;

typedef struct rfk_item {
  const void *src;
  void *out;
  float *scale; /* FP8 only: [ceil(rows/128), ceil(cols/128)], row pitch scale_ld */
} rfk_item;

/* C reference: processes every item, returns RFK_OK, RFK_ERR_ARG (nothing written), or
 * RFK_ERR_NONFINITE (everything written, see above). */
int rfk_ref_run(const rfk_shape *s, const rfk_item *items, int n);

/* CUDA: same semantics; src/out/scale are device pointers; items is a HOST array, passed to the
 * kernel by value in chunks of RFK_CUDA_CHUNK items (one launch covers all experts of a layer).
 * flag: device int set to 1 on non-finite FP8 input (caller zeroes it, reads it after the stream
 * syncs; may be NULL for casts). stream: cudaStream_t as void*. Returns RFK_ERR_ARG on a bad shape,
 * RFK_ERR_CUDA when a launch fails (cudaGetLastError), else RFK_OK (errors inside the kernels
 * show only in *flag). */
#define RFK_CUDA_CHUNK 256
int rfk_cuda_run(const rfk_shape *s, const rfk_item *items, int n, int *flag, void *stream);
/* after a launcher returned RFK_ERR_CUDA: the CUDA error of that launch, as text (this thread) */
const char *rfk_cuda_last_error(void);
int rfk__cuda_failed(void); /* launchers: 1 when the last launch failed (records the error) */

/* convenience single-region forms of rfk_ref_run, also used by tests */
int rfk_ref_cast(const void *src, int src_dtype, int64_t src_ld, void *out, int out_dtype, int64_t out_ld,
                 int64_t rows, int64_t cols);
int rfk_ref_fp8(const void *src, int src_dtype, int64_t src_ld, int64_t rows, int64_t cols, uint8_t *q,
                int64_t q_ld, float *scale, int64_t scale_ld, int ue8m0);

const char *rfk_strerror(int err);

/* scalar building blocks of the reference (exported for tests and the refresh kernels) */
uint8_t rfk_f32_to_e4m3(float x);   /* round to nearest even, saturate to +-448; NaN -> 0x7f */
float rfk_ue8m0_ceil(float s);      /* s > 0 finite: smallest power of two >= s */

#endif
