/* refit.h: the public API of librefit, the transfer engine that replays a plan's tables.
 *
 * One engine per process and role. A trainer rank stages its source tensors into one slot arena
 * (already in the receivers' format) and writes it with one-sided RDMA puts; a receiver binds its
 * engine's destination tensors by table id.
 *
 * Version protocol (DESIGN.md section 3):
 *   receiver: rf_open -> rf_bind_dst (every dst of this receiver) [-> rf_bind_derived] -> rf_listen
 *             [-> rf_export] -> per version { pause serving; rf_arm(v); rf_version_wait(v) (or
 *             rf_stream_wait); resume } -> rf_close
 *   trainer:  rf_open -> rf_bind_src (every source this rank reads) -> rf_connect / rf_import (each
 *             receiver it writes to) -> per version { rf_push(v); rf_wait } -> rf_close
 * A receiver lets no trainer write a byte before it armed that version (rf_arm, once its engine
 * stopped reading the weights), and reports a version complete only when DONE arrived from exactly
 * the trainer ranks its table names, each with exactly the table's byte count (or, for a delta push,
 * with patches that apply and give every region the digest the trainer computed: rf_config.delta),
 * after every one of them flushed its writes; it then acknowledges each DONE, so rf_wait on a
 * trainer returns RF_OK only once every receiver it writes to reported the version complete (the
 * trainer may exit right after). Anything else tears the version: a peer error, a timeout, a byte
 * count that differs, a patch that is malformed, larger than its slot, made for another base than
 * the complete version or giving another digest, a newer connection for a rank that was writing.
 * A torn version is never reported complete; its memory is undefined until a later version
 * completes. Tearing fences: the receiver closes the endpoint of
 * every trainer that was still writing, so nothing in flight lands later (RDMA: the queue pair is
 * gone). Versions strictly increase per receiver; a trainer learns each receiver's newest complete
 * version when it connects (rf_resume_version), and a version not newer is refused before any write.
 *
 * Peers authenticate with a challenge and a MAC keyed by the shared token (the token never crosses
 * the wire); a connection that has not authenticated within handshake_ms is closed, nothing it sends
 * is queued, and a refusal tells it only "rejected" (the receiver keeps the reason: rf_last_error,
 * rf_version_state.refused). A trainer that came through a blob gets no connection slot before it
 * proved the token over the receiver's nonce (replayed HELLOs: rf_counters.challenged). Exported
 * blobs carry a MAC keyed by the token; a forged or corrupted blob is refused before any of it is
 * parsed, and a worker address UCX could not have packed is refused even under a valid MAC.
 *
 * Memory and threads:
 *   - Everything that allocates happens in rf_open, rf_bind_*, rf_alloc, rf_listen, rf_export,
 *     rf_connect and rf_import (and in a reconnect that rf_push starts). rf_arm, rf_push,
 *     rf_progress, rf_wait, rf_version_poll, rf_version_wait and rf_stream_wait allocate nothing.
 *   - rf_open with RF_MEM_CUDA sets the calling thread's current CUDA device to cfg.cuda_device. A
 *     host-mode trainer starts one staging thread in rf_open; cfg.progress_thread starts one more.
 *   - rf_wait, rf_version_wait, rf_connect and rf_import spin a core polling the transport unless
 *     cfg.progress_thread is set (then they sleep until the engine's state changes, with the engine
 *     lock released, so other threads' calls go on meanwhile).
 *   - Without cfg.progress_thread the engine is single-threaded: call it from one thread at a time.
 *     With it, every call is thread-safe: each holds an engine-wide lock, and only its holder (a
 *     caller, or the progress thread) touches the transport. rf_last_error reads the newest error
 *     without the lock: read it from the thread whose call failed, before another call fails.
 *   - rf_progress never blocks. On a receiver it takes messages only; a version whose DONEs are all
 *     in (patches applied, derived tensors rebuilt, finalize steps run, the trainers acknowledged)
 *     completes in
 *     rf_version_poll, rf_version_wait or the progress thread.
 *   - A failed rf_open may still return an engine (with the reason in rf_last_error): rf_close it.
 *   - Memory bound to an engine must stay allocated and registered memory must not move until
 *     rf_close returns.
 * Every call returns an rf_status; rf_last_error() gives the context (peer, tensor, version).
 * Shared memory between the processes of one host (cfg.no_peer_errors with UCX "sm") cannot be
 * fenced: a stopped peer keeps the receiver's memory mapped and writes on when it resumes. Use it
 * only between processes that live and die together. */
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
  X(RF_AGAIN, "not finished yet")                                           \
  X(RF_ERR_STALE, "version not newer than a receiver's complete version")   \
  X(RF_PARTIAL, "pushed to every live receiver, skipped those down")        \
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
  uint64_t token;        /* shared secret; a peer that cannot prove it is refused */
  int mem;               /* enum rf_mem: where slots (trainer) and bound tensors live */
  int cuda_device;       /* RF_MEM_CUDA: device ordinal */
  uint32_t max_inflight; /* puts in flight per trainer; 0 = 64 */
  uint32_t timeout_ms;   /* connect, grant-to-DONE and default wait deadline; 0 = 10000 */
  uint32_t handshake_ms; /* receiver: an unauthenticated connection is closed after this; 0 = 2000 */
  /* UCX configuration of this engine only (the process environment is never changed) */
  const char *ucx_tls;   /* e.g. "tcp" or "sm,tcp"; NULL = UCX default; at most 255 characters */
  const char *nic_mode;  /* "auto" | "stripe" | "off" | "mlx5_0:1,..."; NULL = "off" */
  const char *gpu_bdf;   /* PCI bus id of this engine's GPU, for nic_mode "auto" */
  const char *sysfs_root;/* NULL = "/sys" */
  double nic_min_gbps;   /* NICs below this rate are skipped; 0 = no filter */
  /* Endpoints without UCX peer-failure handling. UCX 1.13's shared-memory transports lack it, so
   * processes on one host only get shared memory (instead of TCP) with this set; a dead peer is
   * then found by the timeout instead of at once, and see the note on fencing above. */
  int no_peer_errors;
  /* Trainer: writes of tensors that need no conversion go straight from the bound source memory
   * (the generator decided which, per write) instead of a staged copy in the slot arena, halving
   * memory traffic for bf16 plans. The sources must then stay unchanged until rf_wait returns. */
  int direct;
  /* Receiver: arm every version a trainer asks for (BEGIN) that is newer than the complete one.
   * For tests and demos: UNSAFE while an engine serves, since writes then land while it reads. */
  int auto_arm;
  /* Trainer: a push skips receivers that are down (no connection, or the reconnect fails) instead
   * of failing; rf_wait then returns RF_PARTIAL and rf_target_report says which were skipped. */
  int skip_down;
  /* An engine-owned thread drives the transport: waits sleep instead of polling, and every call
   * becomes thread-safe. */
  int progress_thread;
  /* Trainer, delta plans (plan option delta = { budget = B }; DESIGN.md section 5c): push only what
   * changed. Every slot keeps its region's previous encoding (a region: one distinct slot range,
   * sent to each replica and twin of it); staging writes a group's new encoding to a scratch area,
   * then the encode kernel writes each region's patch (kernels/delta.h) and updates the slot. A
   * receiver whose newest complete version (learned at connect and from every ACK) is the version
   * the slots hold gets patches: each region's patch into its slot of the receiver's patch area
   * (a region whose patch overflows its slot goes dense: its new bytes straight into the tensor),
   * then this trainer's directory part (per write: patch bytes, digest of the new bytes), flush,
   * DONE (delta, patch bytes, base version). Every other receiver gets a dense push from the slots,
   * as without delta. The receiver applies the patches once every DONE of the version arrived and
   * reports it complete only if every region's digest matches. Slots count as a base only once a
   * push staged every group; an abandoned or failed push leaves receivers that did not complete it
   * with a complete version older than the slots, so they get dense pushes. Memory beside the slot
   * arena: the plan's patch buffer and staging scratch per rank (rf_rank.patch_bytes,
   * scratch_bytes, in the plan report) and 16 bytes per write of host memory. rf_open refuses it
   * with cfg.direct: a write sent straight from the sources leaves its slot without the previous
   * version; under delta every write is staged, so the slot the arena already reserves for it is its
   * shadow copy (no extra memory; the cost is the staging copy direct writes avoid).
   * Receivers need no setting: in a delta plan each allocates and registers its patch area (device
   * memory in RF_MEM_CUDA mode) and a host directory at rf_listen. */
  int delta;
} rf_config;

rf_status rf_open(const rf_config *cfg, rf_engine **out);
/* Delivers what was already handed to the transport (a receiver's last ACK, a trainer's DONE) for at
 * most one second, then closes every connection and frees the engine. */
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
/* Register the bound tensors and listen on ip:port (port 0 = any); *port_out gets the port. A
 * failed rf_listen leaves nothing registered and may be called again. */
rf_status rf_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out);
/* The receiver's metadata (worker address, tensor addresses, remote keys) as an opaque blob with a
 * MAC keyed by the token, for engines with their own rendezvous. Call after rf_listen. *len gets
 * the size; a NULL buf or a short cap returns RF_ERR_SIZE with the size needed in *len. */
rf_status rf_export(rf_engine *e, void *buf, size_t cap, size_t *len);
/* The engine has stopped reading its weights: trainers may now write version v (> the newest
 * complete version). Arming a newer version while v is in progress tears v and fences its writers. */
rf_status rf_arm(rf_engine *e, uint64_t v);

typedef struct rf_version_state {
  uint64_t complete;     /* newest complete version (0 = none yet) */
  uint64_t torn;         /* newest torn version (0 = none) */
  uint64_t armed;        /* version armed and not yet complete or torn (0 = none) */
  uint64_t refused;      /* connections refused so far (wrong token, plan, rank or receiver) */
  char torn_reason[256]; /* peer and reason for `torn` */
} rf_version_state;

/* The version state, after taking messages and completing a version whose DONEs are all in (its
 * patch apply and refresh run here, or in the progress thread). */
rf_status rf_version_poll(rf_engine *e, rf_version_state *st);
/* Progress until version >= v is complete (RF_OK), v is torn since it was last armed (RF_ERR_TORN,
 * reason in rf_last_error) or timeout_ms passes (RF_ERR_TIMEOUT; 0 = the engine's timeout). */
rf_status rf_version_wait(rf_engine *e, uint64_t v, uint32_t timeout_ms);
/* Finalize steps (plan->finalize, DESIGN.md 5d): once every byte of a version is in (patches applied,
 * derived tensors rebuilt) and before it is reported complete or acknowledged, the receiver runs its
 * position's steps whose input changed, in table order: the RF_FIN_KERNEL ones itself (host: the C
 * reference kernels; RF_MEM_CUDA: the CUDA kernels, done before the version is published), then,
 * when any of its RF_FIN_ENGINE steps is to run, the hook once with the indexes (into
 * plan->finalize) of those steps. Every step runs in a version sent dense (no trainer sent patches),
 * the first version after rf_listen and the version after a torn one; in a delta version only the
 * steps whose dst got a byte written (a region sent dense, or patched with a change) run, the others
 * keep what they made from the same bytes before (rf_counters.finalize_skipped). A step's input is
 * its dst alone: engine code that reads several destinations (a layer's weight and its scales) needs
 * a step on each, and runs once for the layer when it is given any of them. A
 * kernel that fails or a hook that returns non-zero tears the version: it is never reported
 * complete, every trainer's rf_wait gets RF_ERR_TORN and rf_version_wait RF_ERR_TORN with
 * "finalize step '<name>' of '<tensor>' failed: <why>" (the hook names the failed step by returning
 * its 1-based position in `steps`; any other non-zero return names the first; `why` is its text,
 * why_len bytes with the terminating zero). A later version runs the steps afresh.
 * The hook runs on whichever thread completes the version (the progress thread, or the caller of
 * rf_version_poll / rf_version_wait) with the engine lock held: it must not call this engine
 * (such a call returns RF_ERR_STATE; rf_get_counters and rf_last_error are answered), and its time
 * counts in every trainer's rf_wait deadline. Set it before rf_listen (rf_listen refuses a plan
 * whose position has engine steps and no hook, naming the first step); fn NULL clears it before
 * rf_listen. Time and steps: rf_counters.finalize_ns, last_finalize_ns, finalize_steps,
 * finalize_skipped. */
typedef int (*rf_finalize_fn)(void *ctx, uint64_t version, const uint32_t *steps, uint32_t n, char *why,
                              size_t why_len);
rf_status rf_set_finalize(rf_engine *e, rf_finalize_fn fn, void *ctx);
/* CUDA mode: make `stream` (cudaStream_t) wait, on the GPU, until version >= v is complete; no CPU
 * thread blocks. Usable while capturing a CUDA graph. A torn v never releases the stream: arm a
 * newer version (the wait is for ">= v"). */
rf_status rf_stream_wait(rf_engine *e, uint64_t v, void *stream);

/* ---- trainer ---- */
/* Bind source tensor `id` as this rank holds it: its FSDP rows for RF_TRAVEL_SHARD, the whole
 * tensor for the gathered tensors this rank owns; row-major, dtype as in the table. Not during a
 * push. */
rf_status rf_bind_src(rf_engine *e, uint32_t id, const void *ptr, size_t bytes);
/* Bytes of source `id` this rank must bind (0 when it reads nothing of it). */
size_t rf_src_bytes(const rf_engine *e, uint32_t id);
/* Connect to receiver `recv` at ip:port: authenticate, receive its keys and its newest complete
 * version. A receiver already connected is reconnected (its old connection is closed first), e.g.
 * after it restarted. Blocks until done or timeout_ms. */
rf_status rf_connect(rf_engine *e, uint32_t recv, const char *ip, uint16_t port);
/* Same, from a blob the receiver exported (its worker address is in the blob). */
rf_status rf_import(rf_engine *e, const void *blob, size_t len);
/* The version a (restarted) trainer pushes next: one more than the newest complete version of
 * any receiver it is connected to, and than any version it pushed. */
uint64_t rf_resume_version(const rf_engine *e);
/* Start pushing `version`: newer than every connected receiver's complete version (else
 * RF_ERR_STALE before any write); equal to a version that failed is allowed (a retry). `stream`
 * (CUDA mode) is the stream the trainer's tensors are ready on; NULL in host mode. Staging starts at
 * once; each receiver's writes go out once it granted the version. Receivers that are down are
 * reconnected in the background when their address is known. Returns at once; rf_progress/rf_wait
 * drive it. */
rf_status rf_push(rf_engine *e, uint64_t version, void *stream);
/* Drive transfers and control messages; never blocks. Trainer: RF_AGAIN while a push is under way,
 * then the push's result once (as rf_wait). Receiver: takes messages only (see "Memory and threads"). */
rf_status rf_progress(rf_engine *e);
/* Progress until the push ended: RF_OK when every receiver acknowledged it complete, RF_PARTIAL
 * when every live one did and cfg.skip_down skipped others, RF_ERR_TORN / RF_ERR_PEER /
 * RF_ERR_STALE with the receiver and reason otherwise. After timeout_ms (0 = the engine's timeout)
 * the push is abandoned: endpoints with work in flight are closed (so nothing of it lands later)
 * and RF_ERR_TIMEOUT is returned; the next rf_push first waits for those operations to finish. */
rf_status rf_wait(rf_engine *e, uint32_t timeout_ms);

enum rf_target_status {
  RF_TARGET_DOWN = 0,     /* not connected */
  RF_TARGET_CONNECTING,   /* handshake under way */
  RF_TARGET_IDLE,         /* connected, no push */
  RF_TARGET_WAITING,      /* asked for the version, not granted yet */
  RF_TARGET_WRITING,      /* granted: writes going out */
  RF_TARGET_FLUSHING,     /* all writes posted, flush / DONE under way */
  RF_TARGET_COMPLETE,     /* acknowledged complete */
  RF_TARGET_FAILED,       /* this push failed for this receiver (reason) */
  RF_TARGET_SKIPPED       /* down, skipped (cfg.skip_down) */
};
typedef struct rf_target_state {
  int status;            /* enum rf_target_status */
  uint64_t complete;     /* the receiver's newest complete version, as last heard */
  char where[64];        /* "ip:port" or "blob" */
  char reason[256];      /* FAILED / SKIPPED / DOWN: why */
} rf_target_state;
/* The state of this trainer's connection and push to receiver `recv`. */
rf_status rf_target_report(const rf_engine *e, uint32_t recv, rf_target_state *out);

/* ---- counters (all roles) ---- */
typedef struct rf_counters {
  uint64_t versions;     /* pushed (trainer) or completed (receiver) */
  uint64_t torn;         /* receiver: versions torn */
  uint64_t bytes;        /* trainer: bytes put by successful pushes; receiver: bytes of complete versions */
  uint64_t writes;       /* trainer: puts posted */
  uint64_t direct_writes;/* trainer: of those, sent straight from the sources (rf_config.direct) */
  uint64_t stage_ns;     /* trainer: time in staging kernels */
  uint64_t post_ns;      /* trainer: CPU time inside the put calls (ns per write = post_ns / writes) */
  uint64_t push_ns;      /* trainer: rf_push to last acknowledgement, summed over versions */
  uint64_t refresh_ns;   /* receiver: time rebuilding derived tensors */
  uint64_t last_push_ns; /* trainer: the last version only */
  uint64_t fenced;       /* endpoints closed to fence writers (receiver) or abandon a push (trainer) */
  uint64_t ignored;      /* control messages dropped: unauthenticated, bad MAC, out of protocol */
  /* delta pushes (rf_config.delta); trainer bytes above count what was put: patches, regions sent
   * dense, directories */
  uint64_t deltas;       /* receivers pushed as patches (trainer) or peers whose patches applied (receiver) */
  uint64_t patch_bytes;  /* patch bytes put (trainer) or applied in complete versions (receiver) */
  uint64_t overflows;    /* trainer: regions of delta pushes whose patch overflowed its slot, sent dense */
  uint64_t apply_ns;     /* receiver: applying patches and checking digests */
  uint64_t challenged;   /* receiver: blob-mode HELLOs answered with a CHALLENGE and nothing kept (a
                            replayed HELLO counts here; its AUTH never comes, or comes again and is
                            ignored) */
  uint64_t finalize_ns;  /* receiver: running finalize steps (kernels and the hook), complete and torn versions */
  uint64_t last_finalize_ns; /* receiver: of the last version that ran them */
  uint64_t finalize_steps; /* receiver: steps run (kernel steps, and each engine step the hook was given) */
  uint64_t finalize_skipped; /* receiver: steps not run because a delta version left their input as it was */
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
#define RF_ABI_VERSION 7 /* 2: version protocol v2 (rf_arm, ...); 3: rf_tensor.offset, rf_tensor_info strides,
                            aliases, padding and derived storages; delta pushes (tables, config, counters);
                            4: rf_time_model.encode_gbs; 5: the index tables (recv_writes, targets, regions);
                            6: finalize steps (tables finalize, fin_index; rf_set_finalize; counters; RF_I32);
                            7: op kind RF_OP_FP8_REQUANT (a runtime before it would cast such an op wrongly);
                               rf_counters.finalize_skipped */
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
                           for fused experts), a destination as the engine holds it on its rank (padding
                           rows included) */
  int64_t stride[3];    /* elements, what a bound tensor must have: a destination's or derived view's
                           strides as the engine holds it; sources: row-major over what `rank` binds */
  int64_t row0, rows;   /* what `rank` binds: dim-0 indices [row0, row0 + rows) of shape, row-major
                           contiguous; FSDP2 shard s of a SHARD source is torch.chunk's s-th chunk of
                           dim 0; GATHER sources and destinations are bound whole */
  uint64_t bytes;       /* bytes `rank` binds; 0: it binds nothing of this tensor (a derived view whose
                           storage is bound through its first view, or a view of a destination tensor) */
  uint32_t owner;       /* GATHER sources: the FSDP shard that binds all of it; else RF_NONE */
  /* destinations */
  const char *aliases;  /* other names the engine registers this same tensor under, comma-separated; "" */
  int64_t pad_rows;     /* trailing rows of dim 0 that hold no weight and are never written (vocabulary
                           padding); part of shape and bytes */
  /* derived views (RF_SIDE_DERIVED) */
  int64_t offset;       /* elements from the start of its storage (torch: storage_offset()) */
  uint32_t storage;     /* the derived id of its storage's first view, which binds the storage (itself
                           for that view); RF_NONE for a view of a destination tensor */
  uint32_t view_of;     /* the dst id whose memory it views (it changes with that tensor: nothing to
                           bind), else RF_NONE */
} rf_tensor_info;

/* `rank` is a trainer rank for RF_SIDE_SRC, a receiver index for RF_SIDE_DST / RF_SIDE_DERIVED.
 * rf_find: the id of the tensor named `name` (sources: the same for every rank, whether or not
 * `rank` binds it; destination and derived tensors: those of receiver `rank`, a destination also by
 * any of its aliases), RF_NONE when there is none. Linear in the tensor count: to bind everything,
 * walk rf_list instead.
 * rf_describe: RF_ERR_ARG when side, rank or id is out of range (or the id is another receiver's).
 * rf_list: in id order, every source `rank` binds, or every destination or derived tensor of
 * receiver `rank` (derived views that bind nothing included, with bytes 0): *n gets the count, out
 * (may be NULL with cap 0) the first min(cap, *n) of them. */
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
  int64_t offset;          /* derived views: elements from the start of the storage the tensor lies in to
                              data (torch: storage_offset()); its storage is bound at data - offset
                              elements. Not read for sources and destinations */
  int readonly;            /* the memory may not be written: refused for destination and derived tensors */
} rf_tensor;

/* Check t against tensor `id` of `side` as cfg's plan and rank bind it (rf_describe): side fits
 * cfg->role, this rank binds the tensor, dtype, shape (so the whole tensor or another rank's shard
 * is refused), strides (sources and destinations row-major contiguous, so a transposed or strided
 * view is refused; a derived view the strides of the engine's view), a derived view's storage offset
 * (t->offset), the shard's row offset when t->row0 >= 0, the device (cfg->mem, cfg->cuda_device)
 * unless t->device_type is 0, and writability for receivers. RF_OK, or RF_ERR_TYPE (RF_ERR_ARG for
 * a bad id or side) with the reason in err: the tensor's name and id, the rank, what the table
 * expects and what t is. A derived view binds nothing when its storage is bound through an earlier
 * view or is a destination tensor's memory: it is checked all the same (the caller checks that it
 * lies in that storage, which the table cannot see). */
rf_status rf_check(const rf_config *cfg, int side, uint32_t id, const rf_tensor *t, char *err, size_t errlen);
/* rf_check against rf_engine_config(e), then rf_bind_src / rf_bind_dst with the bytes rf_describe
 * gives, or for the first view of a derived storage rf_bind_derived with the storage (t->data - offset
 * elements, its bytes). A derived view that binds nothing returns RF_OK with err saying why. On
 * failure err gets the reason (rf_last_error's text when the engine refused). */
rf_status rf_bind(rf_engine *e, int side, uint32_t id, const rf_tensor *t, char *err, size_t errlen);

#endif
