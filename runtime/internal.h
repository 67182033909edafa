/* internal.h: the engine's state, shared by engine.c (tables, staging, versions), blob.c
 * (metadata blob), ucx.c (the only UCX user) and cuda.c (device memory, events, stream waits).
 * Public names are rf_, internal ones rf__. */
#ifndef REFIT_INTERNAL_H
#define REFIT_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#include "kernels.h"
#include "refresh.h"
#include "refit.h"

/* record a status with its context; returns the status so callers can `return RF_ERR(...)` */
rf_status rf__fail(rf_engine *e, rf_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define RF_CHECK(call)                       \
  do {                                       \
    rf_status rf__s = (call);                \
    if (rf__s != RF_OK) return rf__s;        \
  } while (0)

uint64_t rf__now_ns(void);

/* ---- control messages (trainer -> receiver, fixed size, little-endian hosts only) ---- */
#define RF__MAGIC 0x54494652u /* "RFIT" */
enum rf__msg_type { RF__HELLO = 1, RF__BEGIN = 2, RF__DONE = 3, RF__KEYS = 4, RF__REJECT = 5 };
typedef struct rf__msg {
  uint32_t magic, type;
  uint64_t hash, token, version, bytes;
  uint32_t rank, recv;
  char text[160];  /* REJECT: why */
} rf__msg;

/* ---- metadata blob (receiver -> trainer): see blob.c for the format ---- */
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
  const uint8_t *entries; /* parse one at a time with rf__blob_entry_at */
  uint32_t n;
} rf__blob_view;

/* Fully validate a blob against the plan; on success `v` points into `buf`. Writes a reason into
 * err (naming the field and offset) on failure. Never reads outside [buf, buf+len). */
rf_status rf__blob_parse(const rf_plan *p, const void *buf, size_t len, rf__blob_view *v, char *err,
                         size_t errlen);
/* entry i of a parsed view (i < v->n); entries were bounds-checked by rf__blob_parse */
void rf__blob_entry_at(const rf__blob_view *v, uint32_t i, rf__blob_entry *out);
/* size of a blob with these parts, and its encoder (buf must hold rf__blob_size bytes) */
size_t rf__blob_size(uint32_t worker_addr_len, uint32_t n, const uint32_t *rkey_len);
size_t rf__blob_write(uint8_t *buf, const rf_plan *p, uint32_t recv, const void *worker_addr,
                      uint32_t worker_addr_len, uint32_t n, const rf__blob_entry *entries);

/* ---- per receiver this trainer writes to ---- */
typedef struct rf__target {
  uint32_t recv;           /* receiver index */
  uint32_t peer;           /* index into plan->peers */
  uint32_t last_write;     /* the rank's last write to this receiver (absolute index) */
  int connected, failed;
  int flushing, flushed, done_pending, done_sent;
  void *ep;                /* ucp_ep_h */
  uint64_t *raddr;         /* [dst_count] remote base address of each destination tensor */
  void **rkey;             /* [dst_count] ucp_rkey_h */
  uint8_t *keys;           /* KEYS blob as received (owned) */
  size_t keys_len;
  int keys_state;          /* 0 waiting, 1 arrived, -1 rejected */
  rf__msg begin, done;     /* message buffers live until their sends complete */
  rf__msg reject;
  char where[64];          /* "ip:port" or "blob" for messages */
} rf__target;

/* ---- per accepted connection on a receiver ---- */
typedef struct rf__conn {
  void *ep;
  int used, dead, hello_ok;
  uint32_t rank;
  rf_status dead_status;
  char dead_reason[96];
  rf__msg reply;           /* REJECT text lives here until sent */
} rf__conn;

#define RF__QUEUE 1024
typedef struct rf__queued {
  uint32_t conn;
  rf__msg msg;
} rf__queued;

struct rf__ucx;
struct rf__cuda;

struct rf_engine {
  rf_config cfg;
  const rf_plan *p;
  char err[512];
  rf_counters ctr;
  struct rf__ucx *ux;
  struct rf__cuda *cu;
  uint32_t max_inflight, timeout_ms;
  char tls[64], nic_mode[256], gpu_bdf[32], sysfs[256];

  /* trainer */
  const rf_rank *rk;
  uint8_t *arena;           /* slot arena (host or device), arena_bytes */
  void *arena_memh;
  const void **src_ptr;     /* [n_src] bound source pointers */
  uint8_t *src_need;        /* [n_src] 1 when this rank's ops read it */
  rfk_item *items;          /* [max op count] scratch for one staged op */
  /* direct writes (cfg.direct): a write of this rank whose slot bytes are all plain copies of
   * source rows is sent from the sources, as pieces wpiece[w]..wpiece[w+1]-1 (one per source
   * range it covers); a write with no pieces is sent from the slot arena. Per op of this rank,
   * op_skip is 1 when staging it is skipped. Sized at open: pieces <= items + writes. */
  uint32_t *wpiece;         /* [write_count + 1] */
  struct rf__piece { const uint8_t *from; uint64_t off, len; uint32_t src; } *pieces;
  uint8_t *op_skip;
  struct rf__item_ref { uint64_t out, len; uint32_t op, item; } *by_slot; /* identity items by slot */
  uint32_t n_by_slot;
  int direct_dirty;
  rf__target *tg;           /* [n_tg] */
  uint32_t n_tg;
  uint32_t *recv_tg;        /* [receivers] index into tg, or RF_NONE */
  /* push state */
  int pushing;
  rf_status push_status;
  uint64_t version, last_version, push_t0;
  uint32_t g_next, w_next, w_end; /* next group to stage; writes ready to post: [w_next, w_end) */
  uint32_t inflight, flush_pending, done_pending, targets_done;
  uint32_t g_posted;        /* groups whose writes are posted or being posted */
  /* host mode: a staging thread runs the reference kernels group by group while this thread
   * posts the writes of groups already staged (DESIGN.md section 3, step 2) */
  pthread_t stager;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stager_on, stager_quit;
  uint64_t stage_version;   /* version the stager works on (0 = idle) */
  _Atomic uint32_t g_staged;/* groups of this push staged so far */
  _Atomic int stage_failed;
  _Atomic uint64_t stage_ns;
  char stage_err[512];

  /* receiver */
  const rf_receiver *rv;
  uint32_t pos;             /* position in the replica (rv->tp_rank) */
  void **dst_ptr;           /* [dst_count] */
  void **dst_memh;          /* [dst_count] */
  struct { uint8_t *ptr; size_t bytes; void *memh; } region[16]; /* rf_alloc */
  uint32_t n_regions;
  void **der_ptr;           /* [n_derived] (only this position's are used) */
  uint32_t der_need;        /* derived tensors this receiver must bind */
  uint32_t ref_first, ref_count; /* refresh steps of this position */
  rfk_mla_absorb *absorb;   /* [ref_count] scratch */
  rfk_mla_layout absorb_layout; /* the views of every refresh step of this position */
  uint8_t *blob;            /* exported metadata */
  size_t blob_len;
  rf__conn *conns;
  uint32_t n_conns;
  rf__queued *queue;        /* ring of received messages, handled outside UCX callbacks */
  uint32_t q_head, q_tail;
  int q_overflow;
  /* version state */
  uint64_t v_complete, v_torn, v_cur;
  int cur_torn;
  uint64_t cur_t0;
  uint8_t *peer_done;       /* [peer_count] */
  uint32_t peers_done;
  char torn_reason[256];
  volatile uint32_t *host_flag;  /* CUDA: host-mapped word holding the newest complete version */
  int listening;
};

/* kernel shape and e->items for op o (pointers into the bound sources and the arena) */
void rf__op_items(rf_engine *e, const rf_op *o, rfk_shape *sh);

/* ---- engine.c callbacks for ucx.c ---- */
void rf__on_message(rf_engine *e, uint32_t conn, const void *data, size_t len); /* receiver */
void rf__on_conn_error(rf_engine *e, uint32_t conn, const char *why);         /* receiver */
void rf__on_keys(rf_engine *e, rf__target *t, const void *data, size_t len);   /* trainer */
void rf__on_target_error(rf_engine *e, rf__target *t, const char *why);        /* trainer */
void rf__on_put_done(rf_engine *e, int ok, const char *why);
void rf__on_flush_done(rf_engine *e, rf__target *t, int ok, const char *why);
void rf__on_done_sent(rf_engine *e, rf__target *t, int ok, const char *why);

/* ---- ucx.c ---- */
rf_status rf__ucx_open(rf_engine *e);
void rf__ucx_close(rf_engine *e);
void rf__ucx_progress(rf_engine *e);
rf_status rf__ucx_map(rf_engine *e, void *ptr, size_t len, void **memh);
rf_status rf__ucx_alloc(rf_engine *e, size_t len, void **ptr, void **memh);
void rf__ucx_unmap(rf_engine *e, void *memh);
rf_status rf__ucx_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out);
/* the receiver's blob: worker address plus every bound tensor's address and packed key */
rf_status rf__ucx_build_blob(rf_engine *e);
rf_status rf__ucx_connect(rf_engine *e, rf__target *t, const char *ip, uint16_t port);
rf_status rf__ucx_connect_addr(rf_engine *e, rf__target *t, const void *addr, size_t len);
rf_status rf__ucx_rkey(rf_engine *e, rf__target *t, const void *buf, size_t len, void **rkey);
rf_status rf__ucx_send(rf_engine *e, rf__target *t, rf__msg *m, int what); /* what: 0 plain, 1 DONE */
rf_status rf__ucx_reply(rf_engine *e, uint32_t conn, const void *buf, size_t len);
rf_status rf__ucx_put(rf_engine *e, rf__target *t, const void *local, size_t len, uint64_t raddr,
                      void *rkey);
rf_status rf__ucx_flush(rf_engine *e, rf__target *t);
rf_status rf__ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len);

/* ---- cuda.c (or its stand-in without CUDA) ---- */
rf_status rf__cuda_open(rf_engine *e);
void rf__cuda_close(rf_engine *e);
rf_status rf__cuda_alloc_arena(rf_engine *e, size_t bytes, uint8_t **out);
rf_status rf__cuda_check_memory(rf_engine *e, const void *ptr, size_t bytes, const char *what);
/* stage group g's ops on the push stream and record its event */
rf_status rf__cuda_stage(rf_engine *e, uint32_t g, void *stream);
/* 1 when group g's kernels finished, 0 not yet; errors set e->push_status */
int rf__cuda_group_ready(rf_engine *e, uint32_t g);
rf_status rf__cuda_publish(rf_engine *e, uint64_t v);
rf_status rf__cuda_stream_wait(rf_engine *e, uint64_t v, void *stream);
rf_status rf__cuda_refresh(rf_engine *e);

#endif
