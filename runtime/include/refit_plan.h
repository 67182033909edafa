/* refit_plan.h: the tables gen/refitgen.lua emits and the runtime replays.
 *
 * A plan fixes, ahead of time, every byte of one weight update:
 *   src[]    the trainer's parameters (HF transformers names) in the dtype and shape its modules
 *            hold them, with how FSDP2 shards them (dim 0) and how each travels
 *   dst[]    destination tensors in engine kernel format, per TP/EP rank of a replica
 *   ops[]    stage steps: a source region -> this rank's slot arena, already in destination layout
 *   writes[] one contiguous RDMA WRITE each: slot bytes -> (receiver, dst tensor, offset)
 *   pieces[] direct writes (rf_config.direct): the source ranges a write is sent from instead
 *   groups[] per trainer rank, in order: ops to run, then the writes they make ready
 *   ranks[]  per trainer rank: arena size, ranges into groups/ops/writes, bytes sent
 *   recv[]   per receiver (replica * size + tp_rank, size = max(tp, ep) GPUs per replica): its
 *            dst range and the peers it expects
 *   peers[]  per receiver, per trainer rank that writes to it: writes and bytes per version
 *   derived[] tensors the engine derives from destination tensors: strided views of a storage
 *            that refit rebuilds (bound by receivers) or of a destination tensor's memory
 *   refresh[] steps that rebuild derived tensors after a complete version, per receiver position
 * All indices are absolute into the plan's arrays.
 *
 * Delta plans (plan option delta = { budget = B }, delta_ppm = B in parts per million; DESIGN.md 5c,
 * gen/delta.lua) fix the patch areas too. A region is a distinct slot range of a trainer rank (the
 * writes of one slot range to every replica and twin are consecutive in writes[]): the trainer
 * encodes it once (kernels/delta.h) and puts its patch to each of those writes. Every write has a
 * patch slot of patch_cap bytes at patch_off in its receiver's patch area (16-aligned),
 *   patch_cap = min(align16(rfk_delta_bound(len)), align16(48 + ceil(len * delta_ppm / 1e6)));
 * a receiver's area is its peers' parts in peer order (peers[].patch_off, patch_bytes), each part
 * the peer's writes to it in table order. Beside it a receiver keeps a directory in host memory, 16
 * bytes per write it receives (peer order, then table order): u64 patch bytes (0: the region came
 * dense), u64 digest of the region's new bytes. A trainer rank holds a patch buffer (patch_bytes:
 * one patch slot per region, in table order) and a staging scratch (scratch_bytes: the largest
 * slot range of one of its groups). Without delta all of these are 0. */
#ifndef REFIT_PLAN_H
#define REFIT_PLAN_H

#include <stddef.h>
#include <stdint.h>

#define RF_NONE UINT32_MAX
#define RF_GLOBAL_LAYER UINT16_MAX
#define RF_FP8_BLOCK 128

enum rf_dtype { RF_BF16 = 1, RF_FP32 = 2, RF_FP8 = 3 /* e4m3fn */ };
enum rf_travel {
  RF_TRAVEL_SHARD = 2,  /* each FSDP shard sends from its own dim-0 chunk */
  RF_TRAVEL_GATHER = 3  /* the full tensor, gathered onto one designated shard */
};
enum rf_op_kind {
  RF_OP_CAST = 1, /* copy with dtype conversion (bf16/fp32 -> bf16/fp32) */
  RF_OP_FP8 = 2   /* block FP8 e4m3fn, 128x128, fp32 scale_inv = amax/448 */
};
enum rf_scale_fmt { RF_SCALE_FP32 = 0, RF_SCALE_UE8M0 = 1 /* fp32 rounded up to 2^k */ };

/* A parameter of the trainer's model. Its full shape is shape[0..ndim-1] (ndim 1..3, unused dims
 * 0), e.g. [H] for a norm, [out, in] for a linear, [E, 2I, H] for fused experts (transformers >= 5
 * mlp.experts.gate_up_proj). Ops and bindings address it as a row-major 2-D view [rows, cols]:
 * cols = shape[ndim-1] and rows = the product of the other dims (ndim 1: rows = shape[0], cols = 1).
 * FSDP2 chunks dim 0 as torch.chunk does: ceil(shape[0] / fsdp) per shard, trailing shards short or
 * empty; shard_rows is that chunk in view rows, ceil(shape[0] / fsdp) * (rows / shape[0]).
 * What trainer rank (replicate g, shard s) binds, contiguous, in `dtype`:
 *   SHARD:  its FSDP2 local shard, view rows [s*shard_rows, min(rows, (s+1)*shard_rows)), i.e. shape
 *           [max(0, min(c, shape[0] - s*c)), shape[1], ...] with c = ceil(shape[0] / fsdp);
 *   GATHER: on shard `shard` only, the full tensor (every rank of that shard index, in each
 *           replicate group); other shards bind nothing.
 * A rank binds only the sources its ops read (rf_src_bytes > 0). */
typedef struct rf_src_tensor {
  const char *name;
  int64_t rows, cols;  /* the 2-D view, elements */
  int64_t shard_rows;  /* FSDP2 dim-0 chunk in view rows (see above) */
  uint32_t shard;      /* GATHER: designated shard; SHARD: RF_NONE */
  uint16_t layer;      /* RF_GLOBAL_LAYER for embeddings, final norm, lm_head */
  uint8_t dtype;       /* enum rf_dtype the parameter (and so its FSDP2 shards) has: bf16 or fp32 */
  uint8_t travel;      /* enum rf_travel */
  uint8_t ndim;        /* dims of shape */
  int64_t shape[3];    /* the parameter's full shape, as the trainer's module holds it */
} rf_src_tensor;

/* Small facts every user of the tables needs, written once (runtime/plan.c; Python: refit._refit):
 * rf_dtype_size: bytes per element of enum rf_dtype dt (bf16 2, fp32 4, fp8 1), 0 for no dtype.
 * rf_shard_rows: FSDP2's shard `shard` of `shards` along a dim 0 of `rows` rows, as torch.chunk cuts
 *   it: ceil(rows / shards) rows each, the trailing shards short or empty; its first row and row count
 *   (an empty shard, or shard >= shards: first = rows, count 0).
 * rf_src_rows: the view rows [first, first + count) of source s that FSDP shard `shard` holds: its
 *   chunk of s->shard_rows rows (RF_TRAVEL_SHARD, as rf_shard_rows over dim 0), else the whole tensor.
 * rf_fp8_scale_bytes: the fp32 scales block FP8 writes for [rows, cols] elements,
 *   ceil(rows / 128) x ceil(cols / 128) x 4 bytes. */
size_t rf_dtype_size(int dt);
void rf_shard_rows(int64_t rows, uint32_t shards, uint32_t shard, int64_t *first, int64_t *count);
void rf_src_rows(const rf_src_tensor *s, uint32_t shard, int64_t *first, int64_t *count);
uint64_t rf_fp8_scale_bytes(int64_t rows, int64_t cols);

/* A destination tensor as the engine holds it after loading (its engine profile, plan.engine):
 * bind the engine's tensor of this name, or of any of its aliases (the same tensor). */
typedef struct rf_dst_tensor {
  const char *name;
  const char *aliases; /* other names the engine registers this same tensor under (one Parameter
                          object, e.g. vLLM's mlp.experts.gate.weight for mlp.gate.weight),
                          comma-separated; "" when none */
  int64_t shape[3];    /* unused dims are 0 */
  int64_t stride[3];   /* elements, as torch's Tensor.stride(); unused dims 0. Row-major contiguous */
  int64_t pad_rows;    /* trailing rows of dim 0 that hold no weight (vLLM's vocabulary padding):
                          part of the tensor and its bytes, never written */
  uint64_t bytes;      /* the whole tensor, padding included: what the receiver binds */
  uint32_t weight;     /* scale tensors: the weight they scale; else RF_NONE */
  uint16_t tp_rank;    /* position in the replica: TP rank tp_rank % tp, EP rank tp_rank (ep > 1) */
  uint8_t ndim, dtype;
} rf_dst_tensor;

/* Item i (0 <= i < count) reads source (src + i*src_step), region rows [row0 + i*row_step, +rows),
 * cols [col0 + i*col_step, +cols) in full-tensor coordinates, and writes it row-major with a row
 * pitch of cols elements at slot byte offset out + i*out_step. FP8 also writes its fp32 scales
 * [ceil(rows/128), ceil(cols/128)] row-major at scale + i*scale_step. */
typedef struct rf_op {
  uint32_t src, count, src_step;
  uint8_t kind, src_dtype, dst_dtype;
  int64_t row0, col0, rows, cols, row_step, col_step;
  uint64_t out, out_step, scale, scale_step;
  uint8_t direct;      /* 1: with direct writes every write of its slots goes from the sources, so it
                          is not staged (the generator decided: gen/direct.lua) */
} rf_op;

/* With direct writes, a write with pieces is sent as one put per piece from the bound sources;
 * without pieces (or without direct writes) from its slot bytes. */
typedef struct rf_write {
  uint64_t slot, dst_off, len; /* bytes */
  uint32_t receiver, dst;
  uint32_t piece_first, piece_count;
  uint64_t patch_off, patch_cap; /* delta plans: its patch slot in the receiver's patch area (bytes) */
} rf_write;

typedef struct rf_piece {
  uint64_t src_off;    /* bytes from the start of the source as this rank binds it (its shard) */
  uint64_t off, len;   /* bytes from the start of the write, length */
  uint32_t src;
} rf_piece;

typedef struct rf_group {
  uint32_t op_first, op_count, write_first, write_count;
  uint16_t layer;
} rf_group;

typedef struct rf_rank {
  uint64_t arena_bytes, bytes_out; /* bytes_out: sum of its writes' len per version */
  uint32_t shard, replicate;       /* FSDP shard index and replicate group; rank = replicate*fsdp + shard */
  uint32_t group_first, group_count, op_first, op_count, write_first, write_count;
  uint64_t patch_bytes, scratch_bytes; /* delta plans: its patch buffer and staging scratch (above) */
} rf_rank;

typedef struct rf_receiver {
  uint64_t bytes;                  /* bytes it receives per version */
  uint32_t replica, tp_rank, dst_first, dst_count, peer_first, peer_count;
  uint64_t patch_bytes;            /* delta plans: its patch area */
} rf_receiver;

typedef struct rf_peer {
  uint64_t bytes;                  /* bytes this trainer writes to the receiver per version */
  uint32_t trainer, writes;
  uint64_t patch_off, patch_bytes; /* delta plans: its part of the receiver's patch area */
} rf_peer;

enum rf_refresh_kind {
  RF_REFRESH_MLA_ABSORB = 1 /* fp8 kv_b_proj [h*(nope+v), lora] + scales -> the bf16 storage that
                               the views W_UK_T [h, nope, lora] and W_UV [h, lora, v] lie in:
                               W_UK_T[n][i][l] = W[n*(nope+v) + i][l], W_UV[n][l][j] = W[n*(nope+v) + nope + j][l],
                               each element at its view's offset + index . stride */
};

/* A tensor the engine derives from destination tensors at load time, as a strided view into a
 * storage (torch: Tensor.untyped_storage()). Views of one storage share `storage`, the id of its
 * first view. Two kinds:
 *   dst == RF_NONE: refit writes the storage (a refresh step, after every complete version). The
 *     receiver binds it once, through its first view (id == storage): the storage's base address
 *     (data_ptr() - offset * element size) and `bytes`; every view of it must have exactly this
 *     shape, stride and offset in the engine, or the binding is wrong.
 *   dst != RF_NONE: the view lies in that destination tensor's own memory (vLLM keeps W_UK_T/W_UV
 *     of a bf16 kv_b_proj as views of it): it changes with the tensor's bytes; nothing to bind or
 *     rebuild, but the engine's view must have this shape, stride and offset into that tensor. */
typedef struct rf_derived_tensor {
  const char *name;
  int64_t shape[3];
  int64_t stride[3];   /* elements */
  int64_t offset;      /* elements from the start of the storage (Tensor.storage_offset()) */
  uint64_t bytes;      /* bytes of the storage (the same for every view of it) */
  uint32_t storage;    /* derived id of the storage's first view (itself for the first) */
  uint32_t dst;        /* RF_NONE, or the dst tensor whose memory is the storage */
  uint16_t tp_rank;    /* receiver position, as rf_dst_tensor */
  uint8_t ndim, dtype;
} rf_derived_tensor;

typedef struct rf_refresh {
  uint32_t kind;       /* enum rf_refresh_kind */
  uint32_t weight, scale; /* dst ids: the fp8 weight and its scales */
  uint32_t out0, out1;    /* derived ids: W_UK_T (the storage's first view), W_UV */
  uint32_t heads, qk_nope, v_head, kv_lora;
  uint16_t tp_rank, layer;
} rf_refresh;

typedef struct rf_plan {
  const char *name, *model;
  uint64_t layout_hash;            /* rf_plan_hash() of everything below */
  uint64_t total_bytes;            /* all writes of one version */
  uint32_t fsdp, dp_replicate, trainers, tp, ep, replicas, receivers;
  uint32_t n_src, n_dst, n_ops, n_writes, n_groups, n_peers;
  uint8_t scale_fmt;
  uint32_t delta_ppm;              /* delta plans: patch area budget, parts per million; 0: no delta */
  const rf_src_tensor *src;
  const rf_dst_tensor *dst;
  const rf_op *ops;
  const rf_write *writes;
  const rf_group *groups;
  const rf_rank *ranks;
  const rf_receiver *recv;
  const rf_peer *peers;
  uint32_t n_derived, n_refresh;
  const rf_derived_tensor *derived;
  const rf_refresh *refresh;       /* ordered by tp_rank, then layer */
  uint32_t n_pieces;
  const rf_piece *pieces;
} rf_plan;

/* FNV-1a over 64-bit words (h = (h ^ w) * 0x100000001b3, from 0xcbf29ce484222325), in this
 * order: total_bytes, fsdp, dp_replicate, trainers, tp, ep, replicas, receivers, scale_fmt, delta_ppm;
 * each src: name, rows, cols, shard_rows, shard, layer, dtype, travel, ndim, shape[0..2]; each dst:
 * name, aliases, shape[0..2], stride[0..2], pad_rows, bytes, weight, tp_rank, ndim, dtype; each op:
 * every field in declaration order; each write, group, rank, receiver, peer, then each derived
 * tensor (name, shape[0..2], stride[0..2], offset, bytes, storage, dst, tp_rank, ndim, dtype),
 * refresh step and piece: every field in declaration order. A string hashes as 8-byte
 * little-endian words (the last zero-padded), then its length. The generator computes the same value in Lua. */
uint64_t rf_plan_hash(const rf_plan *p);

/* Cluster-scale time model (README "Time model"): each GPU has nics_per_gpu NICs of nic_gbps;
 * a trainer's writes leave at line rate one after another, each adding write_overhead_us; a
 * receiver takes in at line rate; the fabric is non-blocking; staging overlaps the writes; one
 * DONE round trip (done_rtt_us) ends the update. */
typedef struct rf_time_model {
  double nic_gbps, write_overhead_us, done_rtt_us;
  unsigned nics_per_gpu;
  double mem_gbs;       /* delta: device memory, GB/s of bytes moved (staging, apply, digest) */
  double encode_gbs;    /* delta: the encode kernel, GB/s of the bytes it reads (new and old encoding) */
} rf_time_model;

typedef struct rf_prediction {
  double seconds;       /* max(trainer_s, receiver_s) + DONE round trip */
  double lower_bound_s; /* max receiver bytes / receiver NIC rate */
  double trainer_s, receiver_s;
  uint32_t worst_trainer, worst_receiver;
  int bound_by_receiver;
} rf_prediction;

/* encode_gbs: 0.8 of mem_gbs, the encode's rate against a copy measured on an H200 at the densities
 * of RF_DENSITY_MEASURED (kernels/NOTES.md, delta encode v4: 0.85 FP8 at 0.3%, 0.82 FP8 experts,
 * 0.66 bf16 at 3%, where the sectors old := new writes put the byte floor at 0.82) */
#define RF_TIME_MODEL_DEFAULT                                                                     \
  ((rf_time_model){.nic_gbps = 400, .write_overhead_us = 1, .done_rtt_us = 10, .nics_per_gpu = 1,      \
                   .mem_gbs = 3000, .encode_gbs = 2400})

void rf_plan_predict(const rf_plan *p, const rf_time_model *m, rf_prediction *out);

/* Delta pushes at a density (fraction of changed elements per destination dtype, changes uniform at
 * random): each region's expected patch (kernels/delta.h's modes, per 16 KB chunk the smallest
 * record at k = density * elements, 12 bytes per entry weighted by the chance the chunk changed),
 * or its dense bytes when that exceeds its patch_cap (plans without delta: its own size), plus 16
 * directory bytes per write. Trainer: staging and encode in device memory (sources read and the new
 * encoding written, src + out bytes at mem_gbs; the encode reads it with the old one, 2 x out bytes
 * at encode_gbs), then its bytes at line rate and write_overhead_us per put (one per write and one
 * directory per receiver), not overlapped. Receiver: its bytes at line rate, then apply and digest
 * (each patch read twice, every region read once) at mem_gbs. seconds = max of the two +
 * done_rtt_us. gen/delta.lua computes the same for the reports. */
typedef struct rf_density { double fp8, bf16, fp32; } rf_density;
#define RF_DENSITY_MEASURED ((rf_density){.fp8 = 0.0034, .bf16 = 0.033, .fp32 = 0.004}) /* issue 16's step at lr 1e-6 */
typedef struct rf_delta_prediction {
  double seconds, trainer_s, receiver_s;
  double stage_s;       /* of the worst trainer */
  double bytes;         /* expected bytes on the wire, all receivers: patches, regions sent dense, directories */
  uint32_t worst_trainer, worst_receiver;
  int bound_by_receiver;
} rf_delta_prediction;
void rf_plan_predict_delta(const rf_plan *p, const rf_time_model *m, const rf_density *d, rf_delta_prediction *out);

#endif
