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
 * payload: torn reason). After AUTH every message carries a mac keyed by the connection's key. */
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
/* close an endpoint (force: cancel what is in flight); its slot is freed once drained */
void rf__ucx_close_ep(rf_engine *e, rf__ep ep);
int rf__ucx_ep_alive(rf_engine *e, rf__ep ep);
uint32_t rf__ucx_ops(rf_engine *e, rf__ep ep);          /* requests in flight on ep */
uint32_t rf__ucx_ops_all(rf_engine *e);                 /* on every endpoint, closing ones included */
rf_status rf__ucx_rkey(rf_engine *e, rf__ep ep, const void *buf, void **rkey);
void rf__ucx_rkey_destroy(void *rkey);
/* a control message: header + payload are copied before this returns */
rf_status rf__ucx_send(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload);
/* a large message whose payload stays valid and unchanged while the endpoint lives (the blob) */
rf_status rf__ucx_send_ref(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload);
rf_status rf__ucx_put(rf_engine *e, rf__ep ep, const void *local, size_t len, uint64_t raddr, void *rkey);
rf_status rf__ucx_flush(rf_engine *e, rf__ep ep, uint64_t tag); /* RF__EV_FLUSHED when done */
rf_status rf__ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len);

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

/* ------------------------------------- cuda.c ------------------------------------------- */
rf_status rf__cuda_open(rf_engine *e);   /* sets the calling thread's current device */
void rf__cuda_close(rf_engine *e);
rf_status rf__cuda_alloc_arena(rf_engine *e, size_t bytes, uint8_t **out);
rf_status rf__cuda_check_memory(rf_engine *e, const void *ptr, size_t bytes, const char *what);
/* launch one op's kernels (items already point at device memory) on stream */
rf_status rf__cuda_stage_op(rf_engine *e, const rfk_shape *sh, const rfk_item *items, int count, void *stream,
                            const char *what);
rf_status rf__cuda_group_done(rf_engine *e, uint32_t k, void *stream); /* record group k's event */
int rf__cuda_group_ready(rf_engine *e, uint32_t k, char *err, size_t errlen); /* 1 done, 0 not yet, -1 err */
rf_status rf__cuda_publish(rf_engine *e, uint64_t v);
rf_status rf__cuda_stream_wait(rf_engine *e, uint64_t v, void *stream);
/* device memory and pinned host memory (mapped into the device), freed by rf__cuda_close */
rf_status rf__cuda_alloc(rf_engine *e, size_t bytes, void **dev, const char *what);
rf_status rf__cuda_alloc_mapped(rf_engine *e, size_t bytes, void **host, void **dev, const char *what);
/* delta, trainer: the encode of n regions (device pointers) on stream, out in mapped memory; scratch
 * for the largest of the calls is allocated once by rf__cuda_delta_scratch */
rf_status rf__cuda_delta_scratch(rf_engine *e, const rfk_delta_region *r, const uint32_t *first, uint32_t groups);
rf_status rf__cuda_delta_encode(rf_engine *e, const rfk_delta_region *r, uint32_t n, rfk_delta_out *out, void *stream);
/* delta, receiver: apply nt patches, then digest ns spans, on the refresh stream; statuses and
 * digests land in host memory (st_h, dg_h) through device buffers (st_d, dg_d); returns when done */
rf_status rf__cuda_delta_apply(rf_engine *e, const rfk_delta_target *t, uint32_t nt, rfk_delta_status *st_d,
                               rfk_delta_status *st_h, const rfk_delta_span *s, uint32_t ns, uint64_t *dg_d,
                               uint64_t *dg_h);
/* delta, at open: every delta kernel loaded (CUDA loads lazily; a load behind a stream that waits on
 * the host never ends); a receiver also runs one patch through apply and digest (st/dg: one entry
 * each) and checks its bytes and digest against the reference */
rf_status rf__cuda_delta_warm(rf_engine *e, rfk_delta_status *st_d, rfk_delta_status *st_h, uint64_t *dg_d,
                              uint64_t *dg_h);
/* wait (up to ms) until the stream work of the last push is done: 0, or -1 with err */
int rf__cuda_idle(rf_engine *e, uint32_t ms, char *err, size_t errlen);
/* rebuild derived storages: n steps, each with its items and layout (runs of equal layouts: one launch) */
rf_status rf__cuda_refresh(rf_engine *e, const rf_refresh *steps, const rfk_mla_absorb *items, const rfk_mla_layout *layouts,
                           uint32_t n);

/* ------------------------------------- engine state ------------------------------------- */
typedef struct rf__target rf__target;   /* trainer.c */
typedef struct rf__conn rf__conn;       /* receiver.c */
struct rf__ucx;
struct rf__cuda;

struct rf_engine {
  rf_config cfg;
  const rf_plan *p;
  char err[512];
  rf_counters ctr;
  struct rf__ucx *ux;
  struct rf__cuda *cu;
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

  /* ---- trainer (trainer.c) ---- */
  const rf_rank *rk;
  uint8_t *arena;            /* slot arena (host or device), arena_bytes */
  void *arena_memh;
  const void **src_ptr;      /* [n_src] bound source pointers */
  uint8_t *src_need;         /* [n_src] 1 when this rank's ops read it */
  rfk_item *items;           /* [max op count] scratch for one staged op */
  rf__target *tg;            /* [n_tg] */
  uint32_t n_tg;
  uint32_t *recv_tg;         /* [receivers] index into tg, or RF_NONE */
  int pushing, push_reported;  /* push_reported: its result went to rf_progress or rf_wait */
  rf_status push_status;
  uint64_t version, last_attempt, push_t0;
  uint32_t g_ready;          /* groups of this push whose slots are ready (absolute index bound) */
  /* host mode: a staging thread runs the reference kernels group by group while this thread posts
   * the writes of groups already staged (DESIGN.md section 3, step 2) */
  pthread_t stager;
  pthread_mutex_t smu;
  pthread_cond_t scv;
  int stager_on, stager_quit;
  uint64_t stage_version;    /* version the stager works on (0 = idle) */
  _Atomic uint32_t g_staged; /* groups of this push staged so far */
  _Atomic int stage_failed;
  _Atomic uint64_t stage_ns;
  char stage_err[512];

  /* delta pushes (cfg.delta, trainer.c): every slot keeps its region's previous encoding; staging
   * writes a group's new encoding to the scratch, the encode makes the region's patch and updates
   * the slot. Regions are the rank's distinct slot ranges (refit_plan.h), in table order. */
  struct {
    uint8_t *scratch;          /* [rk->scratch_bytes] host or device */
    uint8_t *patch;            /* [rk->patch_bytes] host or device, registered: one patch slot per region */
    void *patch_memh;
    uint8_t *dir;              /* [16 x write_count] host, registered: the directory entries each target puts */
    void *dir_memh;
    rfk_delta_region *reg;     /* [n_reg]: next (in the scratch), old (the slot), its patch slot, cap (patch_cap) */
    uint32_t n_reg;
    uint32_t *of_write;        /* [write_count] region of each write of the rank */
    uint32_t *grp;             /* [group_count + 1] first region of each group */
    uint64_t *lo;              /* [group_count] slot offset of each group's scratch image */
    rfk_delta_out *out;        /* [n_reg] host (CUDA: mapped); a group's are valid once it is ready */
    void *out_dev;             /* CUDA: out as the device sees it */
    uint64_t slots_version;    /* the version every slot holds: 0 when unknown (none staged whole yet, or
                                  the last push's staging did not finish) */
    uint64_t base;             /* this push: slots_version at its start; nonzero: its groups stage into the
                                  scratch and are encoded, and targets whose complete version it is get patches */
    uint64_t push_bytes;       /* this push: bytes put (patches, dense writes, directories) */
  } dt;

  /* ---- receiver (receiver.c) ---- */
  const rf_receiver *rv;
  uint32_t pos;              /* position in the replica (rv->tp_rank) */
  void **dst_ptr;            /* [dst_count] */
  void **dst_memh;           /* [dst_count] */
  struct { uint8_t *ptr; size_t bytes; void *memh; } region[16]; /* rf_alloc */
  uint32_t n_regions;
  void **der_ptr;            /* [n_derived] (only this position's are used) */
  uint32_t ref_first, ref_count; /* refresh steps of this position */
  rfk_mla_absorb *absorb;    /* [ref_count] */
  rfk_mla_layout *layout;    /* [ref_count] the views each refresh step writes */
  uint8_t *blob;             /* exported metadata */
  size_t blob_len;
  rf__conn *conns;
  uint32_t n_conns;
  uint64_t conn_seq;         /* authentication order */
  uint32_t *peer_conn;       /* [peer_count] the current connection of each peer, or RF_NONE */
  uint64_t *peer_begun;      /* [peer_count] the version each peer asked for (BEGIN), 0 = none */
  uint8_t *peer_granted, *peer_done; /* [peer_count] for the armed version */
  uint32_t peers_done;
  uint64_t v_complete, v_armed, v_torn, v_torn_since_arm, v_first_grant;
  uint64_t refused;          /* connections refused (wrong token, plan, rank, receiver) */
  char torn_reason[256];
  char refuse_reason[256];   /* the newest refusal, for the receiver's own log */
  int listening;
  uint8_t *peer_delta;       /* [peer_count] the armed version's DONE from k came with patches */
  /* the patch area (patch.c), in delta plans */
  struct {
    uint8_t *area;             /* [rv->patch_bytes] host or device, registered */
    void *area_memh;
    uint8_t *dir;              /* [16 x n] host, registered: per write u64 patch bytes, u64 digest */
    void *dir_memh;
    uint32_t n;                /* writes this receiver gets, in peer order then table order */
    uint32_t *w;               /* [n] absolute write ids */
    uint32_t *peer;            /* [n] peer index of each */
    uint32_t *first;           /* [peer_count + 1] each peer's first */
    rfk_delta_target *tgt;     /* [n] patch, dst, n, esize fixed at listen; len per version */
    rfk_delta_span *span;      /* [n] the destination ranges */
    rfk_delta_target *vt;      /* [n] this version's patches (len > 0) */
    rfk_delta_span *vs;        /* [n] this version's digested ranges */
    uint32_t *vt_i, *vs_i;     /* [n] their index into w */
    rfk_delta_status *st, *st_dev; /* [n] apply statuses (host; CUDA: and device) */
    uint64_t *dg, *dg_dev;     /* [n] digests */
    uint64_t bytes;            /* patch bytes of the last rf__patch_apply */
  } pa;
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
rf_status rf__trainer_progress(rf_engine *e); /* rf_progress: RF_AGAIN while pushing, then its result once */
rf_status rf__trainer_wait(rf_engine *e, uint32_t ms); /* rf_wait */
rf_status rf__trainer_report(const rf_engine *e, uint32_t recv, rf_target_state *out);

/* patch.c (receiver): the patch area is allocated and registered by rf__patch_open (at rf_listen,
 * after the tensors are registered); rf__patch_close undoes it. rf__patch_done checks peer k's
 * delta DONE (base, the directory's sizes against the slots and the DONE's total) and
 * rf__patch_apply applies the patches of every peer with e->peer_delta set, then compares each of
 * their regions' digests with the directory's. Both return 0, or -1 with the reason in why (naming
 * trainer rank, tensor, write and version) and *bad the peer at fault. */
rf_status rf__patch_open(rf_engine *e);
void rf__patch_close(rf_engine *e);
int rf__patch_done(rf_engine *e, uint32_t k, uint64_t version, uint64_t total, uint64_t base, char *why, size_t n);
int rf__patch_apply(rf_engine *e, uint64_t version, uint32_t *bad, char *why, size_t n);

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

#endif
