/* refit.h: the public API of librefit.a, the transfer engine that replays a plan's tables.
 *
 * One engine per process and role. A trainer rank stages its source tensors into one slot arena
 * (already in the receivers' format) and writes it with one-sided RDMA puts; a receiver binds its
 * engine's destination tensors by table id and reports a version complete only when every byte of
 * it arrived (DONE from exactly the expected trainer ranks with exactly the expected byte counts).
 *
 *   receiver: rf_open -> rf_bind_dst (every dst of this receiver) [-> rf_bind_derived] -> rf_listen
 *             -> loop { rf_progress; rf_version_poll } or rf_version_wait            -> rf_close
 *   trainer:  rf_open -> rf_bind_src (every source this rank reads) -> rf_connect (each receiver
 *             it writes to) or rf_import (blob) -> per version { rf_push; rf_wait }   -> rf_close
 *
 * Everything that allocates happens in rf_open, rf_bind_*, rf_listen, rf_connect and rf_import.
 * rf_push, rf_progress, rf_wait, rf_version_poll and rf_version_wait allocate nothing.
 * Every call returns an rf_status; rf_last_error() gives the context (peer, tensor, version).
 * The engine is single-threaded: call it from one thread at a time. */
#ifndef REFIT_H
#define REFIT_H

#include <stddef.h>
#include <stdint.h>

#include "refit_plan.h"

#define RF_STATUS_LIST(X)                                                   \
  X(RF_OK, "ok")                                                            \
  X(RF_ERR_ARG, "invalid argument")                                         \
  X(RF_ERR_STATE, "call not valid in this state")                           \
  X(RF_ERR_NOMEM, "out of memory")                                          \
  X(RF_ERR_SIZE, "buffer size does not match the table")                    \
  X(RF_ERR_UNBOUND, "a tensor the plan needs is not bound")                 \
  X(RF_ERR_MEMORY, "memory cannot be registered safely")                    \
  X(RF_ERR_UCX, "transport error")                                          \
  X(RF_ERR_PEER, "peer rejected or failed")                                 \
  X(RF_ERR_HASH, "layout hash mismatch")                                    \
  X(RF_ERR_TOKEN, "token mismatch")                                         \
  X(RF_ERR_BLOB, "malformed metadata blob")                                 \
  X(RF_ERR_TIMEOUT, "timed out")                                            \
  X(RF_ERR_TORN, "version torn")                                            \
  X(RF_ERR_KERNEL, "staging kernel failed")                                 \
  X(RF_ERR_CUDA, "CUDA error")                                              \
  X(RF_ERR_NIC, "NIC selection failed")                                     \
  X(RF_AGAIN, "not finished yet")                                          \
  X(RF_ERR_TYPE, "tensor does not match the table")

typedef enum rf_status {
#define RF__ENUM(name, text) name,
  RF_STATUS_LIST(RF__ENUM)
#undef RF__ENUM
} rf_status;

const char *rf_strerror(rf_status s);

typedef struct rf_engine rf_engine;

enum rf_role { RF_TRAINER = 1, RF_RECEIVER = 2 };
enum rf_mem { RF_MEM_HOST = 0, RF_MEM_CUDA = 1 };

typedef struct rf_config {
  const rf_plan *plan;
  int role;              /* enum rf_role */
  uint32_t rank;         /* trainer rank, or receiver index (replica * size + position) */
  uint64_t token;        /* shared secret; a trainer presenting another one is refused */
  int mem;               /* enum rf_mem: where slots (trainer) and bound tensors live */
  int cuda_device;       /* RF_MEM_CUDA: device ordinal */
  uint32_t max_inflight; /* puts in flight per trainer; 0 = 64 */
  uint32_t timeout_ms;   /* connect, DONE and wait deadline; 0 = 10000 */
  /* UCX configuration of this engine only (the process environment is never changed) */
  const char *ucx_tls;   /* e.g. "tcp" or "sm,tcp"; NULL = UCX default */
  const char *nic_mode;  /* "auto" | "stripe" | "off" | "mlx5_0:1,..."; NULL = "off" */
  const char *gpu_bdf;   /* PCI bus id of this engine's GPU, for nic_mode "auto" */
  const char *sysfs_root;/* NULL = "/sys" */
  double nic_min_gbps;   /* NICs below this rate are skipped; 0 = no filter */
  /* Endpoints without UCX peer-failure handling. UCX 1.13's shared-memory transports lack it, so
   * processes on one host only get shared memory (instead of TCP) with this set; a dead peer is
   * then found by the timeout (receiver: no DONE; trainer: rf_wait) instead of at once. */
  int no_peer_errors;
  /* Trainer: writes of tensors that need no conversion (same dtype, whole rows, one slot piece per
   * write) go straight from the bound source memory instead of a staged copy in the slot arena,
   * halving memory traffic for bf16 plans. The sources must then stay unchanged until rf_wait
   * returns, and the transport may register them on first use. */
  int direct;
} rf_config;

rf_status rf_open(const rf_config *cfg, rf_engine **out);
void rf_close(rf_engine *e);
const char *rf_last_error(const rf_engine *e);

/* ---- receiver ---- */
/* Bind destination tensor `id` (absolute table id, one of this receiver's) at `ptr`; bytes must
 * equal the table's size. The memory stays owned by the caller and must outlive the engine. */
rf_status rf_bind_dst(rf_engine *e, uint32_t id, void *ptr, size_t bytes);
/* Bind a derived tensor (plan->derived[id]) the receiver rebuilds after each complete version. */
rf_status rf_bind_derived(rf_engine *e, uint32_t id, void *ptr, size_t bytes);
/* Memory the transport reaches fastest: on the host, UCX-allocated memory that peers on the same
 * machine write through shared memory (memory from malloc is written over a network transport
 * there). Tensors bound inside it share its registration. Freed by rf_close; at most 16 per engine. */
rf_status rf_alloc(rf_engine *e, size_t bytes, void **ptr);
/* Register the bound tensors and listen on ip:port (port 0 = any); *port_out gets the port. */
rf_status rf_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out);
/* The receiver's metadata (worker address, tensor addresses, remote keys) as an opaque blob for
 * engines with their own rendezvous. Call after rf_listen. *len gets the size; a NULL buf or a
 * short cap returns RF_ERR_SIZE with the size needed in *len. */
rf_status rf_export(rf_engine *e, void *buf, size_t cap, size_t *len);

typedef struct rf_version_state {
  uint64_t complete;     /* newest complete version (0 = none yet) */
  uint64_t torn;         /* newest torn version (0 = none) */
  uint64_t in_progress;  /* version being received (0 = none) */
  char torn_reason[256]; /* peer and reason for `torn` */
} rf_version_state;

rf_status rf_version_poll(rf_engine *e, rf_version_state *st);
/* Progress until version >= v is complete (RF_OK), v is torn (RF_ERR_TORN, reason in
 * rf_last_error) or timeout_ms passes (RF_ERR_TIMEOUT). */
rf_status rf_version_wait(rf_engine *e, uint64_t v, uint32_t timeout_ms);
/* CUDA mode: make `stream` (cudaStream_t) wait, on the GPU, until version >= v is complete; no CPU
 * thread blocks. Usable while capturing a CUDA graph. */
rf_status rf_stream_wait(rf_engine *e, uint64_t v, void *stream);

/* ---- trainer ---- */
/* Bind source tensor `id` as this rank holds it: its FSDP rows for RF_TRAVEL_SHARD, the whole
 * tensor for the expert / gathered tensors this rank owns; row-major, dtype as in the table. */
rf_status rf_bind_src(rf_engine *e, uint32_t id, const void *ptr, size_t bytes);
/* Bytes of source `id` this rank must bind (0 when it reads nothing of it). */
size_t rf_src_bytes(const rf_engine *e, uint32_t id);
/* Connect to receiver `recv` at ip:port: present hash, rank and token, receive its keys. */
rf_status rf_connect(rf_engine *e, uint32_t recv, const char *ip, uint16_t port);
/* Same, from a blob the receiver exported (its worker address is in the blob). */
rf_status rf_import(rf_engine *e, const void *blob, size_t len);
/* Start pushing `version` (greater than the last one pushed). `stream` (CUDA mode) is the stream
 * the trainer's tensors are ready on; NULL in host mode. Returns at once; rf_progress/rf_wait
 * drive it. */
rf_status rf_push(rf_engine *e, uint64_t version, void *stream);
/* Drive transfers and control messages; never blocks. RF_AGAIN while a push is under way. */
rf_status rf_progress(rf_engine *e);
/* Progress until the push finished (every write flushed, DONE delivered) or failed. */
rf_status rf_wait(rf_engine *e, uint32_t timeout_ms);

/* ---- counters (all roles) ---- */
typedef struct rf_counters {
  uint64_t versions;     /* pushed (trainer) or completed (receiver) */
  uint64_t torn;         /* receiver: versions torn */
  uint64_t bytes;        /* trainer: bytes written; receiver: bytes of completed versions */
  uint64_t writes;       /* trainer: puts posted */
  uint64_t direct_writes;/* trainer: of those, sent straight from the sources (rf_config.direct) */
  uint64_t stage_ns;     /* trainer: time in staging kernels */
  uint64_t post_ns;      /* trainer: CPU time inside the put calls (ns per write = post_ns / writes) */
  uint64_t push_ns;      /* trainer: rf_push to last DONE delivered, summed over versions */
  uint64_t refresh_ns;   /* receiver: time rebuilding derived tensors */
  uint64_t last_push_ns; /* trainer: the last version only */
} rf_counters;

void rf_get_counters(const rf_engine *e, rf_counters *c);
/* The value this engine's UCX context uses for a UCX setting (e.g. "NET_DEVICES"), as UCX prints
 * it; lets callers check that the engine's choice won over the environment. */
rf_status rf_ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len);

/* ---- discovery and typed binding (runtime/lookup.c) ----
 * Plans of this library by name, tensors by name, what a rank binds, and binding by dtype, shape
 * and strides. Built over the tables and the calls above only; nothing else in the runtime calls
 * these. None of them spins, starts a thread or allocates beyond a temporary in rf_list. */

/* Bumped when a declaration or a struct of refit.h or refit_plan.h changes incompatibly; code
 * built against another RF_ABI_VERSION must not use this library (the Python module checks). */
#define RF_ABI_VERSION 1
uint32_t rf_abi_version(void);

/* The plans linked into this library: librefit.so holds the set ./configure --plans chose; a
 * program linking librefit.a links one plan set (build/obj/libplans.a: every plan). */
uint32_t rf_plan_count(void);
const rf_plan *rf_plan_at(uint32_t i);         /* NULL when i >= rf_plan_count() */
const rf_plan *rf_plan_find(const char *name); /* NULL when this library has no such plan */

/* The configuration the engine was opened with (its plan, role, rank, mem, cuda_device). */
const rf_config *rf_engine_config(const rf_engine *e);

/* Which table a tensor id indexes: plan->src (trainers), plan->dst or plan->derived (receivers). */
enum rf_side { RF_SIDE_SRC = 1, RF_SIDE_DST = 2, RF_SIDE_DERIVED = 3 };

typedef struct rf_tensor_info {
  const char *name;
  uint32_t id;          /* index into the side's table */
  uint8_t side, dtype;  /* enum rf_side, enum rf_dtype */
  uint8_t ndim, travel; /* travel: sources only (enum rf_travel), else 0 */
  int64_t shape[3];     /* the whole tensor: a source as the trainer's module holds it (e.g. [E, 2I, H]
                           for fused experts), a destination as the engine holds it on its rank */
  int64_t row0, rows;   /* what `rank` binds: dim-0 indices [row0, row0 + rows) of shape, row-major
                           contiguous; FSDP2 shard s of a SHARD source is torch.chunk's s-th chunk of
                           dim 0; EXPERT / GATHER sources and destinations are bound whole */
  uint64_t bytes;       /* bytes `rank` binds; 0: it binds nothing of this tensor */
  uint32_t owner;       /* EXPERT / GATHER sources: the FSDP shard that binds all of it; else RF_NONE */
} rf_tensor_info;

/* `rank` is a trainer rank for RF_SIDE_SRC, a receiver index for RF_SIDE_DST / RF_SIDE_DERIVED.
 * rf_find: the id of the tensor named `name` (sources: the same for every rank, whether or not
 * `rank` binds it; destination and derived tensors: those of receiver `rank`), RF_NONE when there is
 * none. Linear in the tensor count: to bind everything, walk rf_list instead.
 * rf_describe: RF_ERR_ARG when side, rank or id is out of range (or the id is another receiver's).
 * rf_list: every tensor `rank` binds, in id order: *n gets the count, out (may be NULL with cap 0)
 * the first min(cap, *n) of them. */
uint32_t rf_find(const rf_plan *p, int side, uint32_t rank, const char *name);
rf_status rf_describe(const rf_plan *p, int side, uint32_t rank, uint32_t id, rf_tensor_info *out);
rf_status rf_list(const rf_plan *p, int side, uint32_t rank, rf_tensor_info *out, uint32_t cap, uint32_t *n);

/* A tensor as the caller holds it, described like DLPack's DLTensor (a DLManagedTensor's dl_tensor
 * converts field by field: data + byte_offset, device, dtype, ndim, shape, strides). */
typedef struct rf_tensor {
  void *data;              /* first element */
  int32_t device_type;     /* DLDeviceType: 1 CPU, 2 CUDA, 3 CUDA host (pinned); 0 = not checked */
  int32_t device_id;
  uint8_t dtype_code;      /* DLDataTypeCode: 0 int, 1 uint, 2 float, 4 bfloat, 10 float8_e4m3fn, ... */
  uint8_t dtype_bits;      /* fp32 = {2, 32}, bf16 = {4, 16}, fp8 e4m3fn = {10, 8} */
  uint16_t dtype_lanes;    /* 1 */
  int32_t ndim;
  const int64_t *shape;    /* [ndim] */
  const int64_t *strides;  /* [ndim], in elements; NULL = row-major contiguous */
  int64_t row0;            /* sources: the dim-0 index of the whole tensor where this piece starts (a
                              DTensor shard's offset); -1 = not checked */
  int readonly;            /* the memory may not be written: refused for destination and derived tensors */
} rf_tensor;

/* Check t against tensor `id` of `side` as cfg's plan and rank bind it (rf_describe): side fits
 * cfg->role, this rank binds the tensor, dtype, shape (so the whole tensor or another rank's shard
 * is refused), row-major contiguity (a transposed or strided view is refused), the shard's row
 * offset when t->row0 >= 0, the device (cfg->mem, cfg->cuda_device) unless t->device_type is 0,
 * and writability for receivers. RF_OK, or RF_ERR_TYPE (RF_ERR_ARG for a bad id or side) with the
 * reason in err: the tensor's name and id, the rank, what the table expects and what t is. */
rf_status rf_check(const rf_config *cfg, int side, uint32_t id, const rf_tensor *t, char *err, size_t errlen);
/* rf_check against rf_engine_config(e), then rf_bind_src / rf_bind_dst / rf_bind_derived with the
 * bytes rf_describe gives. On failure err gets the reason (rf_last_error's text when the engine
 * refused). */
rf_status rf_bind(rf_engine *e, int side, uint32_t id, const rf_tensor *t, char *err, size_t errlen);

#endif
