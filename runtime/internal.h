/* internal.h: the engine's state and the interfaces between the runtime's files. Calls go one way:
 *
 *   engine.c (public entry points, progress thread)
 *     -> trainer.c (trainer state machine)   receiver.c (receiver state machine)
 *          -> patch.c (the receiver's patch area: its layout, the checks of delta DONEs and patches)
 *          -> ucx.c (the only UCX user: endpoints, requests, listener; hands completions back as
 *                    event records, never calls up)   cuda.c (device memory, staging, stream waits)
 *          -> blob.c (metadata blob)   nic.c (NIC selection, called by ucx.c)   plan.c (layout hash)
 *               -> util.c (errors, clock, MAC, random)
 *
 * drive.c (the engine lock, the progress thread, the one wait) and host.c / cuda.c (the memory
 * backend, internal.h rf__mem) sit beside them; drive.c calls the role only through e->step.
 *
 * State: struct rf_engine is the common head every file may read (config, plan, counters, the UCX
 * and CUDA handles, the lock); e->tr (struct rf__trainer, trainer.c) and e->rx (struct rf__receiver,
 * receiver.c) are private to their file, the patch area (struct rf__patch) to patch.c, UCX's state to
 * ucx.c, CUDA's to cuda.c. Other files ask through functions (rf__trainer_*, rf__receiver_*).
 *
 * Threads (the one rule; refit.h states it for callers):
 *   - Only the thread holding the engine lock touches the UCX worker or a role's state. Without
 *     cfg.progress_thread the lock is a no-op: the caller's one thread holds it by definition.
 *   - Every entry point takes the lock (rf__lock) for its whole call; a wait inside one (rf_wait,
 *     rf_version_wait, rf_connect, rf_import, rf_push's wait for an abandoned push) is
 *     rf__drive_until(pred, ms): without a progress thread it steps the role itself; with one it
 *     sleeps on e->changed (CLOCK_MONOTONIC, the clock of its deadline) with the lock released.
 *   - The progress thread steps the role and arms the worker under the lock, then polls the worker's
 *     event fd without it (ucx.c: rf__ucx_arm, rf__ucx_wait_fd).
 *   - A holder that changes what a wait may be waiting for calls rf__changed; releasing the lock
 *     then wakes the waiters. rf__held checks the rule where the worker is touched (tests count
 *     misses).
 *   - The host staging thread (trainer.c) touches neither: it reads the bound sources and writes the
 *     slots of the push it was given, and reports through atomics.
 *   - The receiver's finalize hook (rf_set_finalize) runs inside complete(), on whichever thread
 *     completes the version, with the lock held and e->in_hook naming that thread: engine.c refuses
 *     that thread's calls (RF_ERR_STATE) instead of letting it wait for itself; rf_get_counters
 *     answers without taking the lock again.
 *
 * Public names are rf_, internal ones rf__. Wire formats are little-endian. */
#ifndef REFIT_INTERNAL_H
#define REFIT_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "delta.h"
#include "kernels.h"
#include "refresh.h"
#include "refit.h"

/* ------------------------------------- util.c ------------------------------------------- */
/* record a status with its context; returns the status so callers can `return rf__fail(...)` */
rf_status rf__fail(rf_engine *e, rf_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define RF_CHECK(call)                       \
  do {                                       \
    rf_status rf__s = (call);                \
    if (rf__s != RF_OK) return rf__s;        \
  } while (0)
uint64_t rf__now_ns(void);
int rf__past(uint64_t t0_ns, uint32_t ms); /* 1 once more than ms have passed since t0 */
uint64_t rf__random64(void);
typedef struct rf__key { uint64_t k0, k1; } rf__key;
uint64_t rf__mac(const rf__key *k, const void *data, size_t n); /* SipHash-2-4 */
rf__key rf__token_key(uint64_t token);
rf__key rf__session_key(const rf__key *token_key, uint64_t nonce_t, uint64_t nonce_r);

/* ------------------------------- control messages ---------------------------------------- */
/* Every message is a 72-byte header and `len` payload bytes. Trainer -> receiver: HELLO (rank,
 * receiver, session id, trainer nonce, claimed layout hash; payload: the trainer's worker address in
 * blob mode), AUTH, BEGIN v, DONE v (mode 0, dense: value = bytes; mode 1, delta: value = patch bytes,
 * hash = the base version the patches apply to, sizes and digests in the receiver's directory).
 * Receiver -> trainer: CHALLENGE (receiver nonce;
 * mac keyed by the token over both nonces, the receiver index and the layout hash, so the trainer
 * knows it reached the right receiver), REJECT (no reason: the peer is not authenticated), WELCOME
 * (payload: metadata blob; value = newest complete version, version = armed version), GRANT v,
 * REFUSE v (value = newest complete version; payload: reason), ACK v (value = 1 complete, 0 torn;
 * payload: torn reason). After AUTH every message carries a mac keyed by the connection's key.
 * Blob mode (receiver.c): the CHALLENGE's version is the time its nonce was issued (ms, the
 * receiver's clock), which AUTH echoes along with the trainer's worker address as payload; the
 * receiver keeps nothing between the two. */
#define RF__MAGIC 0x54494652u /* "RFIT" */
#define RF__MSG_MAX 4096      /* a control message from a peer, header included; more is refused */
enum rf__msg_type {
  RF__HELLO = 1, RF__CHALLENGE, RF__AUTH, RF__WELCOME, RF__REJECT, RF__BEGIN, RF__GRANT, RF__REFUSE,
  RF__DONE, RF__ACK, RF__MSG_TYPES
};
typedef struct rf__hdr {
  uint32_t magic, type;
  uint64_t session;        /* the trainer's connection id: random, never reused */
  uint64_t version, value;
  uint64_t nonce, hash;    /* HELLO: trainer nonce, claimed layout hash; CHALLENGE: receiver nonce */
  uint32_t rank, recv, len, mode; /* mode: DONE's, RF__DONE_DENSE or RF__DONE_DELTA; else 0 */
  uint64_t mac;            /* over the header (mac = 0) and payload; see above for the key */
} rf__hdr;
_Static_assert(sizeof(rf__hdr) == 72, "wire header is 72 bytes");
enum { RF__DONE_DENSE = 0, RF__DONE_DELTA = 1 };
const char *rf__msg_name(uint32_t type);
/* mac of header + payload with h->mac taken as zero */
uint64_t rf__msg_mac(const rf__key *k, const rf__hdr *h, const void *payload);

/* ------------------------------------- blob.c ------------------------------------------- */
/* the receiver's metadata: worker address plus every destination tensor's address and packed key
 * and, in delta plans, its patch area's and directory's, with a MAC keyed by the token (see blob.c
 * for the format) */
#define RF__AREA_PATCH 0xfffffffeu /* entry ids of the areas, after the tensors */
#define RF__AREA_DIR 0xfffffffdu
typedef struct rf__blob_entry {
  uint32_t id;
  uint64_t addr, bytes;
  const uint8_t *rkey;
  uint32_t rkey_len;
} rf__blob_entry;
typedef struct rf__blob_view {
  uint32_t recv;
  const uint8_t *worker_addr;
  uint32_t worker_addr_len;
  const uint8_t *entries; /* parse one at a time with rf__blob_entry_at: n tensors, then n_areas areas */
  uint32_t n, n_areas;
} rf__blob_view;
/* Validate a blob against the plan and the token's key (MAC first, so nothing of a forged blob is
 * parsed further); on success `v` points into `buf`. Never reads outside [buf, buf+len). */
rf_status rf__blob_parse(const rf_plan *p, const rf__key *k, const void *buf, size_t len, rf__blob_view *v,
                         char *err, size_t errlen);
void rf__blob_entry_at(const rf__blob_view *v, uint32_t i, rf__blob_entry *out); /* i < n + n_areas */
/* 0 when a worker address has a header UCX 1.13..1.22 could have packed (UCX asserts on others);
 * else -1 with the reason. rf__blob_parse checks the blob's; the receiver checks a trainer's. */
int rf__addr_check(const uint8_t *a, uint32_t len, char *err, size_t errlen);
/* areas of receiver r's blob: 2 in delta plans (patch area, directory), else 0; the directory's bytes */
uint32_t rf__blob_areas(const rf_plan *p, uint32_t r);
uint64_t rf__dir_bytes(const rf_plan *p, uint32_t r);
/* n: every entry, tensors and areas */
size_t rf__blob_size(uint32_t worker_addr_len, uint32_t n, const uint32_t *rkey_len);
size_t rf__blob_write(uint8_t *buf, const rf_plan *p, const rf__key *k, uint32_t recv, const void *worker_addr,
                      uint32_t worker_addr_len, uint32_t n, const rf__blob_entry *entries);

/* ------------------------------------- ucx.c -------------------------------------------- */
/* Endpoints are slots in ucx.c's table named by rf__ep = generation << 32 | slot (0: none). A slot
 * is reused only after its endpoint closed and every request on it completed or failed, and then
 * under a new generation, so a late completion can never be taken for a newer peer's. */
typedef uint64_t rf__ep;
enum rf__ev_kind {
  RF__EV_CONN = 1,  /* listener: a connection was accepted on ep */
  RF__EV_MSG,       /* a control message arrived; ep = 0 when it came on an endpoint we do not own */
  RF__EV_FAILED,    /* ep failed (peer error, rejected, flooded, a request failed); why says what */
  RF__EV_FLUSHED,   /* a flush of ep completed; ok, tag */
};
typedef struct rf__ev {
  uint32_t kind;
  int ok;
  rf__ep ep;
  uint64_t tag;
  uint32_t len;            /* RF__EV_MSG: bytes in msg (or in big) */
  uint8_t *big;            /* a message larger than RF__MSG_MAX (trainer side, WELCOME): freed by
                              rf__ucx_next on the next call */
  const void *from;        /* ep = 0: the UCX endpoint it came on, to compare (rf__ucx_connect_peer) */
  char why[128];
  _Alignas(8) uint8_t msg[RF__MSG_MAX];
} rf__ev;

struct rf__ucx;
rf_status rf__ucx_open(rf_engine *e, uint32_t n_eps);  /* context, worker, endpoint table */
/* rf_close, before anything is unregistered: deliver sends in flight and flush endpoints whose last
 * message is unanswered, at most RF__CLOSE_DRAIN_MS (ucx.c) */
void rf__ucx_drain(rf_engine *e);
void rf__ucx_close(rf_engine *e);                      /* closes every endpoint, then the worker */
void rf__ucx_progress(rf_engine *e);
/* the next event, or 0; e->ux owns ev's storage until the next call */
int rf__ucx_next(rf_engine *e, const rf__ev **ev);
/* the progress thread's sleep, in two halves: rf__ucx_arm (lock held) arms the worker and returns 1
 * when nothing is pending; then rf__ucx_wait_fd (lock released, no worker call) polls its event fd
 * for up to ms */
int rf__ucx_arm(rf_engine *e);
void rf__ucx_wait_fd(rf_engine *e, uint32_t ms);
rf_status rf__ucx_map(rf_engine *e, void *ptr, size_t len, void **memh);
rf_status rf__ucx_alloc(rf_engine *e, size_t len, void **ptr, void **memh);
void rf__ucx_unmap(rf_engine *e, void *memh);
rf_status rf__ucx_pack_key(rf_engine *e, void *memh, void **key, size_t *len);
void rf__ucx_release_key(void *key);
rf_status rf__ucx_worker_address(rf_engine *e, const void **addr, size_t *len); /* valid until close */
rf_status rf__ucx_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out);
/* start an endpoint to a listener (ip:port) or a worker address; completes in the background */
rf_status rf__ucx_connect(rf_engine *e, const char *ip, uint16_t port, rf__ep *out);
rf_status rf__ucx_connect_addr(rf_engine *e, const void *addr, size_t len, rf__ep *out);
/* our endpoint to the worker address of a peer whose message came on UCX's endpoint `from` (an
 * event's from): UCX pairs an endpoint we make with one the peer made, in the order both were made;
 * an endpoint that pairs with an older one of the peer's (it gave up a handshake this side never
 * finished) is closed and the next made, a few times at most */
rf_status rf__ucx_connect_peer(rf_engine *e, const void *addr, size_t len, const void *from, rf__ep *out);
/* close an endpoint (force: cancel what is in flight); its slot is freed once drained */
void rf__ucx_close_ep(rf_engine *e, rf__ep ep);
int rf__ucx_ep_alive(rf_engine *e, rf__ep ep);
uint32_t rf__ucx_ops(rf_engine *e, rf__ep ep);          /* requests in flight on ep */
uint32_t rf__ucx_ops_all(rf_engine *e);                 /* on every endpoint, closing ones included */
rf_status rf__ucx_rkey(rf_engine *e, rf__ep ep, const void *buf, void **rkey);
void rf__ucx_rkey_destroy(void *rkey);
/* tests: the k-th remote-key unpack from now fails (0: none; set before the engine connects, on an
 * engine without a progress thread); the remote keys unpacked and not yet destroyed in this process */
void rf__ucx_fail_rkey(rf_engine *e, uint32_t k);
int64_t rf__ucx_live_rkeys(void);
/* a control message: header + payload are copied before this returns */
rf_status rf__ucx_send(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload);
/* a large message whose payload stays valid and unchanged while the endpoint lives (the blob) */
rf_status rf__ucx_send_ref(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload);
rf_status rf__ucx_put(rf_engine *e, rf__ep ep, const void *local, size_t len, uint64_t raddr, void *rkey);
rf_status rf__ucx_flush(rf_engine *e, rf__ep ep, uint64_t tag); /* RF__EV_FLUSHED when done */
rf_status rf__ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len);
/* messages on endpoints this engine does not own (blob mode): fn runs inside the UCX callback with
 * the whole message; it may read the engine and count, never call UCX. It returns what to do: drop,
 * send the header it wrote to *reply on the endpoint the message came on, or queue the message as
 * an event with ep = 0. Without a hook (trainers) such messages are dropped. */
enum { RF__STRANGER_DROP = 0, RF__STRANGER_REPLY, RF__STRANGER_QUEUE };
typedef int (*rf__stranger_fn)(rf_engine *e, const rf__hdr *h, const void *payload, rf__hdr *reply);
void rf__ucx_strangers(rf_engine *e, rf__stranger_fn fn);

/* ------------------------------------- drive.c ------------------------------------------ */
void rf__lock(rf_engine *e);   /* no-ops without a progress thread */
void rf__unlock(rf_engine *e); /* wakes the waiters when the holder called rf__changed */
/* the one wait: drive (no progress thread: e->step; else sleep on e->changed, lock released)
 * until done(e, arg) or ms pass; the caller holds the lock. 1 when done held. */
int rf__drive_until(rf_engine *e, int (*done)(rf_engine *, uint64_t), uint64_t arg, uint32_t ms);
rf_status rf__progress_start(rf_engine *e);
void rf__progress_stop(rf_engine *e);
/* tests: the waits' wakeups and the lock misses so far */
uint64_t rf__wakeups(rf_engine *e);
uint64_t rf__lock_misses(const rf_engine *e);

/* ------------------------------ memory backend (host.c, cuda.c) ---------------------------- */
/* What differs between RF_MEM_HOST and RF_MEM_CUDA engines, chosen once at rf_open (e->mem): where
 * the engine's own buffers live, what a bound pointer must be, and how a receiver applies patches,
 * rebuilds derived tensors and publishes a complete version. Whoever allocates through it frees
 * through it (the trainer its arena and delta buffers, patch.c its area). */
typedef struct rf__mem {
  int device; /* 1: the engine's buffers and bound tensors are device memory */
  /* a zeroed buffer of the engine's own (slot arena, delta scratch): aligned host memory or cudaMalloc */
  rf_status (*alloc)(rf_engine *e, size_t bytes, void **ptr, const char *what);
  void (*free)(rf_engine *e, void *ptr);
  /* the same, registered with UCX for peers to reach (patch buffers and areas): UCX-allocated host
   * memory, or cudaMalloc registered */
  rf_status (*alloc_reg)(rf_engine *e, size_t bytes, void **ptr, void **memh, const char *what);
  void (*free_reg)(rf_engine *e, void *ptr, void *memh);
  /* results kernels write and the host reads: *dev is the kernels' address (host: *host) */
  rf_status (*alloc_shared)(rf_engine *e, size_t bytes, void **host, void **dev, const char *what);
  void (*free_shared)(rf_engine *e, void *host);
  rf_status (*check)(rf_engine *e, const void *ptr, size_t bytes, const char *what); /* a bound tensor */
  /* receiver: rebuild derived storages, n steps with their items and layouts (runs of equal layouts:
   * one call); returns when done */
  rf_status (*refresh)(rf_engine *e, const rf_refresh *steps, const rfk_mla_absorb *items, const rfk_mla_layout *layouts,
                       uint32_t n);
  /* receiver, delta: apply nt patches, then digest ns spans; statuses and digests land in st_h, dg_h
   * (the device writes st_d, dg_d first); returns when done */
  rf_status (*apply)(rf_engine *e, const rfk_delta_target *t, uint32_t nt, rfk_delta_status *st_d, rfk_delta_status *st_h,
                     const rfk_delta_span *s, uint32_t ns, uint64_t *dg_d, uint64_t *dg_h);
  /* delta, at open: the kernels loaded; a receiver runs one patch through apply and digest (st/dg:
   * one entry each) and checks them against the reference (CUDA loads lazily: a load behind a
   * stream that waits on the host never ends) */
  rf_status (*warm)(rf_engine *e, rfk_delta_status *st_d, rfk_delta_status *st_h, uint64_t *dg_d, uint64_t *dg_h);
  /* receiver: a run of n RF_FIN_KERNEL finalize steps of one op (steps: indexes into plan->finalize),
   * step i reading in[i] (its dst tensor) and writing out[i] (its derived storage); returns when all
   * are done, RF_ERR_KERNEL / RF_ERR_CUDA with the reason otherwise, *bad = the failed step's index in
   * the run (0 when not known). warm (rf_listen): load the kernels and prepare the run (CUDA: its
   * items in device memory) without writing anything the engine reads */
  rf_status (*finalize)(rf_engine *e, const uint32_t *steps, uint32_t n, void *const *in, void *const *out, int warm,
                        uint32_t *bad);
  void (*publish)(rf_engine *e, uint64_t v); /* receiver: v is the newest complete version */
} rf__mem;
extern const rf__mem rf__mem_host; /* host.c: the C reference kernels */
extern const rf__mem rf__mem_cuda; /* cuda.c (cuda_none.c: refused at open) */

/* ------------------------------------- cuda.c ------------------------------------------- */
rf_status rf__cuda_open(rf_engine *e);   /* sets the calling thread's current device */
void rf__cuda_close(rf_engine *e);       /* frees what cuda.c allocated for itself */
/* trainer staging: one event per group of the rank */
rf_status rf__cuda_groups(rf_engine *e, uint32_t groups);
/* launch one op's kernels (items already point at device memory) on stream */
rf_status rf__cuda_stage_op(rf_engine *e, const rfk_shape *sh, const rfk_item *items, int count, void *stream,
                            const char *what, uint64_t version);
rf_status rf__cuda_group_done(rf_engine *e, uint32_t k, void *stream); /* record group k's event */
/* 1 done, 0 not yet, -1 err (gid, layer: the group's table index and layer, for the message); the
 * last group adds the staging time to *stage_ns */
int rf__cuda_group_ready(rf_engine *e, uint32_t k, uint32_t gid, uint32_t layer, char *err, size_t errlen,
                         uint64_t *stage_ns);
rf_status rf__cuda_stream_wait(rf_engine *e, uint64_t v, void *stream);
/* delta, trainer: the encode of n regions (device pointers) on stream, out in mapped memory; scratch
 * for the largest of the calls is allocated once by rf__cuda_delta_scratch */
rf_status rf__cuda_delta_scratch(rf_engine *e, const rfk_delta_region *r, const uint32_t *first, uint32_t groups);
rf_status rf__cuda_delta_encode(rf_engine *e, const rfk_delta_region *r, uint32_t n, rfk_delta_out *out, void *stream,
                                uint64_t version);
/* wait (up to ms) until the stream work of the last push is done: 0, or -1 with err */
int rf__cuda_idle(rf_engine *e, uint32_t ms, char *err, size_t errlen);

/* ------------------------------------- engine state ------------------------------------- */
struct rf__ucx;
struct rf__cuda;

struct rf_engine {
  rf_config cfg;
  const rf_plan *p;
  char err[512];
  rf_counters ctr;
  struct rf__ucx *ux;
  struct rf__cuda *cu;
  const rf__mem *mem;        /* host or CUDA backend, chosen at rf_open */
  rf__key token_key;
  uint32_t max_inflight, timeout_ms, handshake_ms;
  char tls[256], nic_mode[256], gpu_bdf[32], sysfs[256];
  /* threading (drive.c; the rule is at the top of this file) */
  rf_status (*step)(rf_engine *e); /* the role's step: what a wait or the progress thread drives */
  pthread_t prog;
  pthread_mutex_t mu;
  pthread_cond_t changed;    /* CLOCK_MONOTONIC: broadcast when a holder lets mu go after rf__changed */
  int prog_on, prog_quit;
  _Atomic uintptr_t owner;   /* the thread holding mu (rf__self), 0 when none */
  uint64_t changes, changes_told; /* rf__changed count; the count the waiters were last woken for */
  uint64_t wakeups;          /* times a wait woke up (tests: a waiter must sleep, not spin) */
  _Atomic uint64_t lock_misses; /* calls that touched the worker or role state without holding mu (tests) */
  _Atomic uintptr_t in_hook; /* the thread running the receiver's finalize hook (which holds mu), 0 when none:
                                its calls into this engine are refused, not deadlocked */

  /* the role's state: defined and written only by trainer.c / receiver.c (one of them is set) */
  struct rf__trainer *tr;
  struct rf__receiver *rx;
};

/* drive.c's helpers every file uses (inline: ucx.c sits below drive.c) */
static inline uintptr_t rf__self(void) { return (uintptr_t)pthread_self(); }
/* 1 when the caller may touch the worker and role state (no progress thread, or it holds the
 * lock); else counts a lock miss (tests read them: rf__lock_misses) and returns 0 */
static inline int rf__held(rf_engine *e, const char *what)
{
  (void)what;
  if (!e->prog_on || atomic_load(&e->owner) == rf__self()) return 1;
  atomic_fetch_add(&e->lock_misses, 1);
  return 0;
}
/* a role's state changed in a way a wait may be waiting for: the lock's release wakes the waiters */
static inline void rf__changed(rf_engine *e) { e->changes++; }

/* delta_push.c (trainer, cfg.delta): d is NULL in engines without delta, and then encodes nothing */
typedef struct rf__delta rf__delta;
rf_status rf__delta_open(rf_engine *e, const rf_rank *rk, uint8_t *arena, rf__delta **dp);
void rf__delta_close(rf_engine *e, rf__delta *d);
uint64_t rf__delta_begin(rf__delta *d);          /* a push starts: its base (0: it goes dense) */
uint64_t rf__delta_base(const rf__delta *d);     /* this push's base */
void rf__delta_staged(rf__delta *d, uint64_t v); /* every group staged: the slots hold v */
/* where group k (relative to the rank) stages while this push encodes (its scratch image, slot
 * offset *lo at its start); NULL: the slot arena */
uint8_t *rf__delta_dest(const rf__delta *d, uint32_t k, uint64_t *lo);
int rf__delta_encode_host(rf__delta *d, uint32_t k); /* group k's encode (reference): an rfk status */
rf_status rf__delta_encode_cuda(rf_engine *e, rf__delta *d, uint32_t k, void *stream, uint64_t version);
/* write w (relative to the rank) into directory entry `entry`: 1 and its patch when it goes as a
 * patch, 0 when its patch overflowed (entry size 0: the region goes dense) */
int rf__delta_patch(rf__delta *d, uint32_t w, uint32_t entry, const void **patch, uint64_t *size);
const uint8_t *rf__delta_dir(const rf__delta *d, uint32_t entry); /* 16 bytes per entry */

/* trainer.c */
rf_status rf__trainer_open(rf_engine *e);
void rf__trainer_close(rf_engine *e);
rf_status rf__trainer_step(rf_engine *e); /* drive connections and the push; RF_AGAIN while pushing */
rf_status rf__trainer_bind(rf_engine *e, uint32_t id, const void *ptr, size_t bytes);
size_t rf__trainer_src_bytes(const rf_engine *e, uint32_t id);
rf_status rf__trainer_connect(rf_engine *e, uint32_t recv, const char *ip, uint16_t port);
rf_status rf__trainer_import(rf_engine *e, const void *blob, size_t len);
rf_status rf__trainer_push(rf_engine *e, uint64_t version, void *stream);
rf_status rf__trainer_abort(rf_engine *e, const char *why); /* fence: close what is in flight */
uint64_t rf__trainer_resume(rf_engine *e);
void rf__trainer_counters(rf_engine *e, rf_counters *c); /* adds what the staging thread counts */
rf_status rf__trainer_progress(rf_engine *e); /* rf_progress: RF_AGAIN while pushing, then its result once */
rf_status rf__trainer_wait(rf_engine *e, uint32_t ms); /* rf_wait */
rf_status rf__trainer_report(const rf_engine *e, uint32_t recv, rf_target_state *out);

/* patch.c (receiver): the patch area is allocated and registered by rf__patch_open (at rf_listen,
 * after the tensors are registered); rf__patch_close undoes it. rf__patch_done checks peer k's
 * delta DONE (base, the directory's sizes against the slots and the DONE's total) and
 * rf__patch_apply applies the patches of every peer with peer_delta set, then compares each of
 * their regions' digests with the directory's. Both return 0, or -1 with the reason in why (naming
 * trainer rank, tensor, write and version) and *bad the peer at fault. */
typedef struct rf__patch rf__patch;
rf_status rf__patch_open(rf_engine *e, const rf_receiver *rv, void *const *dst_ptr, rf__patch **out);
void rf__patch_close(rf_engine *e, rf__patch *pa); /* NULL: nothing */
void rf__patch_arm(rf__patch *pa); /* a new version: every directory entry 0 */
/* the blob entries of the area and the directory (addr, bytes) and their registrations */
void rf__patch_areas(const rf__patch *pa, rf__blob_entry *area, void **area_memh, rf__blob_entry *dir, void **dir_memh);
/* tests: entry i's absolute write id, peer k's first entry, the area's and the directory's base */
uint32_t rf__patch_write(const rf__patch *pa, uint32_t i);
uint32_t rf__patch_first(const rf__patch *pa, uint32_t k);
uint8_t *rf__patch_base(const rf__patch *pa);
uint8_t *rf__patch_dir(const rf__patch *pa);
/* pa NULL: the plan has no patch areas; complete: the receiver's complete version */
int rf__patch_done(rf_engine *e, const rf__patch *pa, const rf_receiver *rv, uint32_t k, uint64_t version, uint64_t total,
                   uint64_t base, uint64_t complete, char *why, size_t n);
/* peer_delta[k]: peer k's DONE came with patches; *bytes: the patch bytes applied */
int rf__patch_apply(rf_engine *e, rf__patch *pa, const uint8_t *peer_delta, uint64_t version, uint64_t *bytes,
                    uint32_t *bad, char *why, size_t n);
/* after rf__patch_apply succeeded: changed[dst - rv->dst_first] = 1 for every destination a write of
 * this version wrote a byte to (every write of a peer that sent dense, a region a delta peer sent
 * dense or patched with changes); leaves the others as they are */
void rf__patch_changed(const rf_engine *e, const rf__patch *pa, const uint8_t *peer_delta, uint8_t *changed);

/* receiver.c */
rf_status rf__receiver_open(rf_engine *e);
void rf__receiver_close(rf_engine *e);
rf_status rf__receiver_step(rf_engine *e);  /* messages, then completing a version whose DONEs are in */
void rf__receiver_events(rf_engine *e);     /* messages only (rf_progress: never blocks) */
rf_status rf__receiver_export(rf_engine *e, void *buf, size_t cap, size_t *len);
rf_status rf__receiver_wait(rf_engine *e, uint64_t v, uint32_t ms); /* rf_version_wait */
int rf__receiver_settled(rf_engine *e); /* tests: every DONE in, the version not yet completed */
rf_status rf__receiver_bind(rf_engine *e, uint32_t id, void *ptr, size_t bytes);
rf_status rf__receiver_bind_derived(rf_engine *e, uint32_t id, void *ptr, size_t bytes);
rf_status rf__receiver_alloc(rf_engine *e, size_t bytes, void **ptr);
rf_status rf__receiver_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out);
rf_status rf__receiver_arm(rf_engine *e, uint64_t v);
void rf__receiver_state(const rf_engine *e, rf_version_state *st);
rf_status rf__receiver_set_finalize(rf_engine *e, rf_finalize_fn fn, void *ctx);

#endif
