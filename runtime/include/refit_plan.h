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
 *   finalize[] steps that turn what refit wrote into what the engine reads, per receiver position
 *            (kernels run by the receiver, or the engine's own post-load code through a hook)
 * Index tables the runtime reads at open (gen/index.lua derives them from the tables above):
 *   recv_writes[] per receiver: the writes it receives, peer order then table order (its directory)
 *   targets[] per trainer rank: the receivers it writes to, with where its directory parts start
 *   regions[] delta plans, per trainer rank: its regions (below), group by group
 *   fin_index[] plans with finalize steps, per receiver position: its steps
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

enum rf_dtype { RF_BF16 = 1, RF_FP32 = 2, RF_FP8 = 3 /* e4m3fn */, RF_I32 = 4 /* derived tensors of finalize kernels */ };
enum rf_travel {
  RF_TRAVEL_SHARD = 2,  /* each FSDP shard sends from its own dim-0 chunk */
  RF_TRAVEL_GATHER = 3  /* the full tensor, gathered onto one designated shard */
};
enum rf_op_kind {
  RF_OP_CAST = 1, /* copy with dtype conversion (bf16/fp32 -> bf16/fp32) */
  RF_OP_FP8 = 2,  /* block FP8 e4m3fn, 128x128, fp32 scale_inv = amax/448 (or UE8M0: the plan's scale_fmt) */
  RF_OP_FP8_REQUANT = 3 /* block FP8 as RF_OP_FP8 with fp32 scales, then re-quantized to power-of-two scales as
                           vLLM does after loading on SM100 (kernels.h RFK_SCALE_REQUANT) */
};
enum rf_scale_fmt { RF_SCALE_FP32 = 0, RF_SCALE_UE8M0 = 1 /* fp32 rounded up to 2^k */ };

enum rf_refresh_kind {
  RF_REFRESH_MLA_ABSORB = 1 /* fp8 kv_b_proj [h*(nope+v), lora] + scales -> the bf16 storage that
                               the views W_UK_T [h, nope, lora] and W_UV [h, lora, v] lie in:
                               W_UK_T[n][i][l] = W[n*(nope+v) + i][l], W_UV[n][l][j] = W[n*(nope+v) + nope + j][l],
                               each element at its view's offset + index . stride */
};

/* Finalize steps (rf_finalize, DESIGN.md 5d): what a receiver runs after the last byte of a version
 * and before it reports it complete. */
enum rf_fin_kind {
  RF_FIN_KERNEL = 1, /* a refit kernel, run by the receiver (C reference on the host, CUDA in CUDA mode) */
  RF_FIN_ENGINE = 2  /* the engine's own post-load code, called through the finalize hook (rf_set_finalize) */
};
enum rf_finop {
  RF_FINOP_NONE = 0,      /* engine steps */
  RF_FINOP_UE8M0_PACK = 1 /* fp32 block scales -> UE8M0 packed 4 per int32, MN-major, TMA-aligned (DeepGEMM on SM100) */
};

/* The tables' structs, one per table (rf_src_tensor, rf_dst_tensor, rf_op, rf_write, rf_piece,
 * rf_group, rf_rank, rf_receiver, rf_peer, rf_derived_tensor, rf_refresh, rf_finalize, ...) and the plan head
 * rf_plan, each field with its comment, are generated from gen/schema.lua, the one list of every
 * table's columns: */
#include "refit_tables.h"

/* Small facts every user of the tables needs, written once (runtime/plan.c; Python: refit._refit):
 * rf_dtype_size: bytes per element of enum rf_dtype dt (bf16 2, fp32 4, fp8 1), 0 for no dtype.
 * rf_shard_rows: FSDP2's shard `shard` of `shards` along a dim 0 of `rows` rows, as torch.chunk cuts
 *   it: ceil(rows / shards) rows each, the trailing shards short or empty; its first row and row count
 *   (an empty shard, or shard >= shards: first = rows, count 0).
 * rf_src_rows: the view rows [first, first + count) of source s that FSDP shard `shard` holds: its
 *   chunk of s->shard_rows rows (RF_TRAVEL_SHARD, as rf_shard_rows over dim 0), else the whole tensor.
 * rf_fp8_scale_bytes: the fp32 scales block FP8 writes for [rows, cols] elements,
 *   ceil(rows / 128) x ceil(cols / 128) x 4 bytes.
 * rf_op_fp8: 1 when op o writes block FP8 (codes and scales: RF_OP_FP8 or RF_OP_FP8_REQUANT), else 0. */
size_t rf_dtype_size(int dt);
void rf_shard_rows(int64_t rows, uint32_t shards, uint32_t shard, int64_t *first, int64_t *count);
void rf_src_rows(const rf_src_tensor *s, uint32_t shard, int64_t *first, int64_t *count);
uint64_t rf_fp8_scale_bytes(int64_t rows, int64_t cols);
int rf_op_fp8(const rf_op *o);

/* FNV-1a over 64-bit words (h = (h ^ w) * 0x100000001b3, from 0xcbf29ce484222325): the head
 * values RF_HEAD_COLUMNS lists, then every row of each table of RF_TABLES in that order, column by
 * column in declaration order (gen/schema.lua), an array element by element. A string hashes as
 * 8-byte little-endian words (the last zero-padded), then its length. The generator computes the
 * same value in Lua. */
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
