/* ucx.c: the only file that speaks UCX. One context and one worker per engine, configured per engine
 * (TLS, NET_DEVICES, MAX_RNDV_RAILS, MAX_RMA_RAILS and CM_REUSEADDR through ucp_config_modify; the process
 * environment is never changed). Calls used exist in UCX 1.13 through 1.22.
 *
 * It owns every endpoint, in a table of slots named by (generation, slot): a slot is reused only
 * after its endpoint closed and every request on it completed or failed, under a new generation.
 * UCX callbacks never call the engine: they update the slot (requests in flight, failure) and append
 * event records (connection accepted, message, failure, flush done) to a ring that the engine drains
 * with rf__ucx_next outside UCX. Listener connection requests are taken in the callback and answered
 * (endpoint or reject) after ucp_worker_progress returns; endpoints are never closed inside a
 * callback.
 *
 * Messages are active messages on one id: the 72-byte rf__hdr as the AM header, the payload as
 * data, always with the reply flag so the peer's handler knows the endpoint. Messages that arrive
 * on an endpoint this engine does not own (a trainer that connected with a blob) go to the engine's
 * stranger hook (rf__ucx_strangers) inside the callback: it answers without state (a reply header
 * sent on the endpoint the message came on, from a small pool, nothing kept per peer), queues the
 * message as an event (an AUTH that proved the token and the receiver's nonce: the receiver then
 * makes its own endpoint to the address it carries, which UCX pairs with the trainer's), or drops
 * it. Without a hook they are dropped. Nothing an endpoint sends is queued beyond a few events: an
 * endpoint with more pending is failed as flooding. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ucp/api/ucp.h>

#include "internal.h"
#include "refit_nic.h"

enum { AM_ID = 17 };
enum { SLOT_FREE = 0, SLOT_OPEN, SLOT_CLOSING };
enum { SENDBUFS = 8 };         /* control messages in flight per endpoint */
enum { PENDING_PER_EP = 8 };   /* messages an endpoint may have waiting in the ring */
enum { STRANGER_EVENTS = 8 };  /* HELLOs from endpoints we do not own, waiting in the ring */
enum { CONN_REQS = 16 };       /* listener requests taken in one progress call */
enum { REPLIES = 32 };
enum { PROGRESS_MS = 2 };      /* rf__ucx_progress returns after this long even while UCX is busy */
enum { PAIR_TRIES = 8 };       /* endpoints made to pair with a stranger's (rf__ucx_connect_peer) */ /* ucp_worker_progress calls per rf__ucx_progress at most */         /* stateless replies to strangers in flight; more are dropped */
#define BIG_MAX (256u << 20)   /* largest message a trainer accepts (a receiver's metadata) */
#define RF__CLOSE_DRAIN_MS 1000 /* rf_close waits this long at most for messages and puts in flight */

typedef struct slot slot;
typedef struct send_ctx {
  struct rf__ucx *u;
  uint32_t slot, gen, idx;
} send_ctx;

struct slot {
  ucp_ep_h h;
  uint32_t gen;
  int state, failed;
  uint32_t ops;            /* requests in flight: puts, flushes, sends */
  int said;                /* a message went out since the peer's last one arrived */
  void *drain_req;         /* rf_close's flush of this endpoint */
  uint32_t pending;        /* events of this endpoint in the ring */
  uint32_t sendbuf_used;   /* bitmask of SENDBUFS */
  uint8_t *sendbuf;        /* SENDBUFS x RF__MSG_MAX */
  send_ctx sctx[SENDBUFS];
  send_ctx octx;           /* puts and flushes */
  int flushing;
  uint64_t flush_tag;
  void *close_req;
  struct rf__ucx *u;       /* error handler context */
};

typedef struct reply_ctx {   /* a stateless reply in flight (its header buffer) */
  struct rf__ucx *u;
  void *req;
  ucp_ep_h ep;               /* compared, never used: one reply in flight per endpoint */
  rf__hdr h;
} reply_ctx;

typedef struct big_ctx {   /* a large message being received (rendezvous) */
  struct rf__ucx *u;
  rf__ep ep;
  rf__hdr h;
  uint8_t *buf;
  size_t len;
} big_ctx;

struct rf__ucx {
  rf_engine *e;
  ucp_config_t *config;
  ucp_context_h ctx;
  ucp_worker_h worker;
  ucp_listener_h listener;
  slot *slots;
  uint32_t n_slots;
  rf__ev *ring;            /* n_ring events */
  uint32_t n_ring, head, tail, strangers;
  uint8_t *last_big;       /* the big buffer of the event handed out last */
  ucp_conn_request_h reqs[CONN_REQS];
  uint32_t n_reqs;
  ucp_address_t *addr;
  size_t addr_len;
  int efd;
  int n_rails;
  char net_devices[512];
  rf__stranger_fn stranger;
  reply_ctx replies[REPLIES];
  uint32_t replies_used;   /* bitmask of replies */
  uint32_t fail_rkey;      /* tests (rf__ucx_fail_rkey): the fail_rkey-th remote-key unpack from now fails */
};

/* tests (rf__ucx_live_rkeys): remote keys unpacked and not yet destroyed, in this process */
static _Atomic int64_t live_rkeys;

static const char *ustr(ucs_status_t s) { return ucs_status_string(s); }
static rf__ep ep_id(const struct rf__ucx *u, uint32_t i) { return (uint64_t)u->slots[i].gen << 32 | i; }

/* the slot of a live id, or NULL (a stale id names a closed endpoint) */
static slot *slot_of(struct rf__ucx *u, rf__ep ep)
{
  uint32_t i = (uint32_t)ep;
  if (!ep || i >= u->n_slots || u->slots[i].gen != (uint32_t)(ep >> 32) || u->slots[i].state == SLOT_FREE) return NULL;
  return &u->slots[i];
}

/* ------------------------------------ events ------------------------------------------- */

/* a free event in the ring for slot s (NULL: a stranger), or NULL when that would flood */
static rf__ev *ev_new(struct rf__ucx *u, slot *s, uint32_t kind)
{
  if (u->tail - u->head >= u->n_ring) return NULL;
  if (s && s->pending >= PENDING_PER_EP && kind == RF__EV_MSG) return NULL;
  if (!s && u->strangers >= STRANGER_EVENTS) return NULL;
  rf__ev *ev = &u->ring[u->tail % u->n_ring];
  ev->kind = kind;
  ev->ok = 1;
  ev->ep = s ? ep_id(u, (uint32_t)(s - u->slots)) : 0;
  ev->tag = 0;
  ev->len = 0;
  ev->big = NULL;
  ev->from = NULL;
  ev->why[0] = 0;
  u->tail++;
  if (s) s->pending++;
  else u->strangers++;
  return ev;
}

/* the endpoint failed: one FAILED event; the engine closes it */
static void fail_slot(struct rf__ucx *u, slot *s, const char *what, const char *why)
{
  if (s->failed || s->state != SLOT_OPEN) return;
  s->failed = 1;
  /* the ring holds every endpoint's share (messages, one CONN, FLUSHED and FAILED each), so this
   * never overflows; were it full, the engine still sees the endpoint dead (rf__ucx_ep_alive) */
  if (u->tail - u->head >= u->n_ring) return;
  rf__ev *ev = &u->ring[u->tail % u->n_ring];
  memset(ev, 0, offsetof(rf__ev, msg));
  ev->kind = RF__EV_FAILED;
  ev->ep = ep_id(u, (uint32_t)(s - u->slots));
  snprintf(ev->why, sizeof ev->why, "%s: %s", what, why);
  u->tail++;
  s->pending++;
}

int rf__ucx_next(rf_engine *e, const rf__ev **out)
{
  struct rf__ucx *u = e->ux;
  free(u->last_big);
  u->last_big = NULL;
  if (u->head == u->tail) return 0;
  rf__ev *ev = &u->ring[u->head % u->n_ring];
  u->head++;
  slot *s = NULL;
  uint32_t i = (uint32_t)ev->ep;
  if (ev->ep && i < u->n_slots && u->slots[i].gen == (uint32_t)(ev->ep >> 32)) s = &u->slots[i];
  if (s && s->pending) s->pending--;
  else if (!ev->ep && u->strangers) u->strangers--;
  u->last_big = ev->big;
  *out = ev;
  return 1;
}

/* ------------------------------------ setup -------------------------------------------- */

static rf_status modify(rf_engine *e, const char *name, const char *value)
{
  ucs_status_t s = ucp_config_modify(e->ux->config, name, value);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "UCX setting %s=%s refused: %s", name, value, ustr(s));
  return RF_OK;
}

static rf_status apply_nics(rf_engine *e)
{
  if (strcmp(e->nic_mode, "off") == 0) return RF_OK;
  rf_nic_result *r = calloc(1, sizeof *r);
  if (!r) return rf__fail(e, RF_ERR_NOMEM, "NIC selection");
  rf_status st = RF_OK;
  if (rf_nic_select(e->sysfs, e->cfg.gpu_bdf, e->nic_mode, e->cfg.nic_min_gbps, r) != 0) {
    st = rf__fail(e, RF_ERR_NIC, "NIC selection (mode %s, GPU %s): %s", e->nic_mode, e->gpu_bdf[0] ? e->gpu_bdf : "-",
                  r->error);
  } else if (r->n_chosen == 0) {
    st = rf__fail(e, RF_ERR_NIC, "NIC selection (mode %s, GPU %s): no usable NIC (%d skipped%s%s)", e->nic_mode,
                  e->gpu_bdf[0] ? e->gpu_bdf : "-", r->n_skipped, r->n_skipped ? ", first: " : "",
                  r->n_skipped ? r->skipped[0].why : "");
  } else if (rf_nic_net_devices(r, e->ux->net_devices, sizeof e->ux->net_devices) < 0) {
    st = rf__fail(e, RF_ERR_NIC, "NIC selection: device list too long");
  } else {
    e->ux->n_rails = r->n_chosen;
    st = modify(e, "NET_DEVICES", e->ux->net_devices);
    if (st == RF_OK && r->n_chosen > 1) {
      char n[16];
      snprintf(n, sizeof n, "%d", r->n_chosen);
      /* rails for puts (MAX_RMA_RAILS: its own setting in newer UCX, default 1; in 1.13 an alias
       * of the rendezvous one) and for rendezvous (MAX_RNDV_RAILS); both names exist in 1.13..1.22 */
      st = modify(e, "MAX_RNDV_RAILS", n);
      if (st == RF_OK) st = modify(e, "MAX_RMA_RAILS", n);
    }
  }
  free(r);
  return st;
}

static ucs_status_t on_msg(void *arg, const void *header, size_t header_length, void *data, size_t length,
                           const ucp_am_recv_param_t *param);

rf_status rf__ucx_open(rf_engine *e, uint32_t n_eps)
{
  struct rf__ucx *u = calloc(1, sizeof *u);
  if (!u) return rf__fail(e, RF_ERR_NOMEM, "UCX state");
  e->ux = u;
  u->e = e;
  u->efd = -1;
  u->n_slots = n_eps;
  u->slots = calloc(n_eps, sizeof *u->slots);
  u->n_ring = n_eps * (PENDING_PER_EP + 3) + STRANGER_EVENTS;
  u->ring = calloc(u->n_ring, sizeof *u->ring);
  if (!u->slots || !u->ring) return rf__fail(e, RF_ERR_NOMEM, "UCX endpoint table (%u endpoints)", n_eps);
  for (uint32_t i = 0; i < n_eps; i++) {
    u->slots[i].u = u;
    u->slots[i].sendbuf = malloc((size_t)SENDBUFS * RF__MSG_MAX);
    if (!u->slots[i].sendbuf) return rf__fail(e, RF_ERR_NOMEM, "UCX send buffers");
  }
  ucs_status_t s = ucp_config_read(NULL, NULL, &u->config);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_config_read: %s", ustr(s));
  if (e->cfg.ucx_tls) RF_CHECK(modify(e, "TLS", e->cfg.ucx_tls));
  /* a restarted receiver takes its port back at once, past the TIME_WAIT sockets of its dead
   * predecessor's connections (else bind fails for about 60 s). The connection managers' setting:
   * the name relative to their table, which 1.13 and 1.22 both apply (UCX_TCP_CM_REUSEADDR in the
   * environment) */
  if (e->cfg.role == RF_RECEIVER) RF_CHECK(modify(e, "CM_REUSEADDR", "y"));
  RF_CHECK(apply_nics(e));
  ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
                         .features = UCP_FEATURE_RMA | UCP_FEATURE_AM |
                                     (e->cfg.progress_thread ? UCP_FEATURE_WAKEUP : 0),
                         .name = e->cfg.role == RF_TRAINER ? "refit-trainer" : "refit-receiver"};
  s = ucp_init(&params, u->config, &u->ctx);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_init: %s", ustr(s));
  ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE, .thread_mode = UCS_THREAD_MODE_SINGLE};
  s = ucp_worker_create(u->ctx, &wp, &u->worker);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_create: %s", ustr(s));
  ucp_am_handler_param_t hp = {.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                                             UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
                               .id = AM_ID, .cb = on_msg, .arg = u, .flags = UCP_AM_FLAG_WHOLE_MSG};
  s = ucp_worker_set_am_recv_handler(u->worker, &hp);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_set_am_recv_handler: %s", ustr(s));
  s = ucp_worker_get_address(u->worker, &u->addr, &u->addr_len);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_get_address: %s", ustr(s));
  if (e->cfg.progress_thread) {
    s = ucp_worker_get_efd(u->worker, &u->efd);
    if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_get_efd: %s", ustr(s));
  }
  return RF_OK;
}

static void wait_req(struct rf__ucx *u, void *req, uint32_t ms)
{
  if (req == NULL || UCS_PTR_IS_ERR(req)) return;
  uint64_t t0 = rf__now_ns();
  while (ucp_request_check_status(req) == UCS_INPROGRESS && !rf__past(t0, ms)) ucp_worker_progress(u->worker);
  ucp_request_free(req);
}

void rf__ucx_drain(rf_engine *e)
{
  struct rf__ucx *u = e->ux;
  if (!u || !u->worker) return;
  /* deliver what was already handed to UCX (a receiver's last ACK, a trainer's DONE) before the
   * forced close cancels it: sends done, and every endpoint that sent a message the peer has not
   * answered flushed (a send that completed may still sit in the transport's buffers); at most
   * RF__CLOSE_DRAIN_MS: a stopped peer cannot hold rf_close. Without peer error handling the close
   * itself flushes. */
  for (uint32_t i = 0; i < u->n_slots; i++) {
    slot *s = &u->slots[i];
    if (s->state != SLOT_OPEN || s->failed || !s->said || e->cfg.no_peer_errors) continue;
    ucp_request_param_t p = {0};
    void *r = ucp_ep_flush_nbx(s->h, &p);
    s->drain_req = UCS_PTR_IS_PTR(r) ? r : NULL;
  }
  for (uint64_t t0 = rf__now_ns(); !rf__past(t0, RF__CLOSE_DRAIN_MS);) {
    int busy = 0;
    for (uint32_t i = 0; i < u->n_slots; i++) {
      slot *s = &u->slots[i];
      busy |= s->state == SLOT_OPEN && !s->failed && s->ops;
      busy |= s->drain_req && ucp_request_check_status(s->drain_req) == UCS_INPROGRESS;
    }
    if (!busy) break;
    ucp_worker_progress(u->worker);
  }
  for (uint32_t i = 0; i < u->n_slots; i++)
    if (u->slots[i].drain_req) ucp_request_free(u->slots[i].drain_req), u->slots[i].drain_req = NULL;
}

void rf__ucx_close(rf_engine *e)
{
  struct rf__ucx *u = e->ux;
  if (!u) return;
  if (u->worker) {
    for (uint32_t i = 0; i < u->n_reqs; i++) ucp_listener_reject(u->listener, u->reqs[i]);
    u->n_reqs = 0;
    for (uint32_t i = 0; i < u->n_slots; i++)
      if (u->slots[i].state != SLOT_FREE) rf__ucx_close_ep(e, ep_id(u, i));
    for (uint32_t i = 0; i < u->n_slots; i++)
      if (u->slots[i].close_req) {
        wait_req(u, u->slots[i].close_req, 1000);
        u->slots[i].close_req = NULL;
      }
    /* stateless replies still in flight: their buffers live in u */
    for (uint64_t t0 = rf__now_ns(); u->replies_used && !rf__past(t0, 1000);) ucp_worker_progress(u->worker);
    for (uint32_t k = 0; k < REPLIES; k++)
      if (u->replies_used >> k & 1) ucp_request_cancel(u->worker, u->replies[k].req);
    for (uint64_t t0 = rf__now_ns(); u->replies_used && !rf__past(t0, 1000);) ucp_worker_progress(u->worker);
    if (u->listener) ucp_listener_destroy(u->listener);
    if (u->addr) ucp_worker_release_address(u->worker, u->addr);
    ucp_worker_destroy(u->worker);
  }
  if (u->ctx) ucp_cleanup(u->ctx);
  if (u->config) ucp_config_release(u->config);
  for (uint32_t i = 0; u->slots && i < u->n_slots; i++) free(u->slots[i].sendbuf);
  for (uint32_t k = u->head; u->ring && k != u->tail; k++) free(u->ring[k % u->n_ring].big);
  free(u->last_big);
  free(u->slots);
  free(u->ring);
  free(u);
  e->ux = NULL;
}

/* ------------------------------------ endpoints ---------------------------------------- */

static void on_ep_err(void *arg, ucp_ep_h ep, ucs_status_t status)
{
  slot *s = arg;
  if (s->h == ep) fail_slot(s->u, s, "connection failed", ustr(status));
}

static slot *new_slot(struct rf__ucx *u)
{
  for (uint32_t i = 0; i < u->n_slots; i++)
    if (u->slots[i].state == SLOT_FREE) {
      slot *s = &u->slots[i];
      s->gen = s->gen + 1 ? s->gen + 1 : 1;
      s->failed = 0;
      s->ops = s->pending = s->sendbuf_used = 0;
      s->said = 0;
      s->close_req = NULL;
      s->h = NULL;
      s->flushing = 0;
      s->octx = (send_ctx){u, i, s->gen, 0};
      return s;
    }
  return NULL;
}

static rf_status create_ep(rf_engine *e, ucp_ep_params_t *p, rf__ep *out, const char *what)
{
  struct rf__ucx *u = e->ux;
  slot *s = new_slot(u);
  if (!s) return rf__fail(e, RF_ERR_NOMEM, "%s: all %u endpoint slots in use", what, u->n_slots);
  p->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  p->err_mode = e->cfg.no_peer_errors ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER;
  p->err_handler.cb = on_ep_err;
  p->err_handler.arg = s;
  ucs_status_t st = ucp_ep_create(u->worker, p, &s->h);
  if (st != UCS_OK) {
    s->h = NULL;
    return rf__fail(e, RF_ERR_UCX, "%s: ucp_ep_create: %s", what, ustr(st));
  }
  s->state = SLOT_OPEN;
  *out = ep_id(u, (uint32_t)(s - u->slots));
  return RF_OK;
}

rf_status rf__ucx_connect(rf_engine *e, const char *ip, uint16_t port, rf__ep *out)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (!ip || inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
    return rf__fail(e, RF_ERR_ARG, "receiver address '%s' is not an IPv4 address", ip ? ip : "(null)");
  ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR,
                       .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
                       .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof sa}};
  char what[80];
  snprintf(what, sizeof what, "connecting to %s:%u", ip, port);
  return create_ep(e, &p, out, what);
}

rf_status rf__ucx_connect_addr(rf_engine *e, const void *addr, size_t len, rf__ep *out)
{
  (void)len; /* the address was authenticated (blob MAC or the handshake) before it gets here */
  ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS, .address = addr};
  return create_ep(e, &p, out, "connecting to a worker address");
}

rf_status rf__ucx_connect_peer(rf_engine *e, const void *addr, size_t len, const void *from, rf__ep *out)
{
  for (int i = 0; i < PAIR_TRIES; i++) {
    RF_CHECK(rf__ucx_connect_addr(e, addr, len, out));
    if (slot_of(e->ux, *out)->h == from) return RF_OK;
    rf__ucx_close_ep(e, *out);
  }
  *out = 0;
  return rf__fail(e, RF_ERR_PEER, "our endpoint did not pair with the peer's in %d tries", PAIR_TRIES);
}

void rf__ucx_close_ep(rf_engine *e, rf__ep ep)
{
  struct rf__ucx *u = e->ux;
  slot *s = slot_of(u, ep);
  if (!s || s->state != SLOT_OPEN) return;
  s->state = SLOT_CLOSING;
  /* force: cancel what is in flight (needs peer error handling; without it, flush first) */
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                           .flags = e->cfg.no_peer_errors ? 0 : UCP_EP_CLOSE_FLAG_FORCE};
  void *r = ucp_ep_close_nbx(s->h, &p);
  s->close_req = UCS_PTR_IS_PTR(r) ? r : NULL;
}

int rf__ucx_ep_alive(rf_engine *e, rf__ep ep)
{
  slot *s = slot_of(e->ux, ep);
  return s && s->state == SLOT_OPEN && !s->failed;
}

uint32_t rf__ucx_ops(rf_engine *e, rf__ep ep)
{
  slot *s = slot_of(e->ux, ep);
  return s ? s->ops : 0;
}

uint32_t rf__ucx_ops_all(rf_engine *e)
{
  uint32_t n = 0;
  for (uint32_t i = 0; i < e->ux->n_slots; i++) n += e->ux->slots[i].ops + (e->ux->slots[i].state == SLOT_CLOSING);
  return n;
}

/* listener requests and closing endpoints, outside UCX callbacks */
static void service(struct rf__ucx *u)
{
  rf_engine *e = u->e;
  for (uint32_t k = 0; k < u->n_reqs; k++) {
    ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST, .conn_request = u->reqs[k]};
    rf__ep ep;
    slot *s = NULL;
    int full = 1;
    for (uint32_t i = 0; full && i < u->n_slots; i++) full = u->slots[i].state != SLOT_FREE;
    /* no endpoint slot: refuse; a failed ucp_ep_create has released the request itself */
    if (full) ucp_listener_reject(u->listener, u->reqs[k]);
    else if (create_ep(e, &p, &ep, "accepting a connection") == RF_OK) s = slot_of(u, ep);
    if (s) {
      rf__ev *ev = ev_new(u, s, RF__EV_CONN);
      if (!ev) fail_slot(u, s, "accepting a connection", "event ring full");
    }
  }
  u->n_reqs = 0;
  for (uint32_t i = 0; i < u->n_slots; i++) {
    slot *s = &u->slots[i];
    if (s->state != SLOT_CLOSING || s->ops) continue;
    if (s->close_req) {
      if (ucp_request_check_status(s->close_req) == UCS_INPROGRESS) continue;
      ucp_request_free(s->close_req);
      s->close_req = NULL;
    }
    s->state = SLOT_FREE;
    s->h = NULL;
  }
}

void rf__ucx_progress(rf_engine *e)
{
  rf__held(e, "ucp_worker_progress");
  /* until idle, for PROGRESS_MS at most: a peer that sends without pause (a stranger's flood) cannot
   * keep the engine from its events and deadlines; the caller comes back for the rest */
  int any = 0;
  uint64_t t0 = rf__now_ns();
  while (ucp_worker_progress(e->ux->worker)) {
    any = 1;
    if (rf__now_ns() - t0 >= PROGRESS_MS * 1000000ull) break;
  }
  service(e->ux);
  if (any) rf__changed(e); /* requests completed: a wait for them may end */
}

int rf__ucx_arm(rf_engine *e)
{
  struct rf__ucx *u = e->ux;
  rf__held(e, "ucp_worker_arm");
  if (u->head != u->tail || u->n_reqs || u->efd < 0) return 0;
  return ucp_worker_arm(u->worker) == UCS_OK; /* BUSY: events are pending */
}

void rf__ucx_wait_fd(rf_engine *e, uint32_t ms)
{
  struct pollfd pf = {.fd = e->ux->efd, .events = POLLIN}; /* efd is fixed from rf__ucx_open on */
  poll(&pf, 1, (int)ms);
}

/* ------------------------------------ memory ------------------------------------------- */

rf_status rf__ucx_map(rf_engine *e, void *ptr, size_t len, void **memh)
{
  ucp_mem_map_params_t mp = {.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
                             .address = ptr, .length = len};
  ucp_mem_h h;
  ucs_status_t s = ucp_mem_map(e->ux->ctx, &mp, &h);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_MEMORY, "registering %zu bytes at %p: %s", len, ptr, ustr(s));
  *memh = h;
  return RF_OK;
}

rf_status rf__ucx_alloc(rf_engine *e, size_t len, void **ptr, void **memh)
{
  ucp_mem_map_params_t mp = {.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                                           UCP_MEM_MAP_PARAM_FIELD_FLAGS,
                             .address = NULL, .length = len, .flags = UCP_MEM_MAP_ALLOCATE};
  ucp_mem_h h;
  ucs_status_t s = ucp_mem_map(e->ux->ctx, &mp, &h);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_NOMEM, "allocating %zu bytes of transport memory: %s", len, ustr(s));
  ucp_mem_attr_t a = {.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS};
  s = ucp_mem_query(h, &a);
  if (s != UCS_OK) {
    ucp_mem_unmap(e->ux->ctx, h);
    return rf__fail(e, RF_ERR_UCX, "ucp_mem_query: %s", ustr(s));
  }
  *ptr = a.address;
  *memh = h;
  return RF_OK;
}

void rf__ucx_unmap(rf_engine *e, void *memh) { ucp_mem_unmap(e->ux->ctx, memh); }

rf_status rf__ucx_pack_key(rf_engine *e, void *memh, void **key, size_t *len)
{
  ucs_status_t s = ucp_rkey_pack(e->ux->ctx, memh, key, len);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_rkey_pack: %s", ustr(s));
  return RF_OK;
}

void rf__ucx_release_key(void *key) { ucp_rkey_buffer_release(key); }

rf_status rf__ucx_worker_address(rf_engine *e, const void **addr, size_t *len)
{
  *addr = e->ux->addr;
  *len = e->ux->addr_len;
  return RF_OK;
}

rf_status rf__ucx_rkey(rf_engine *e, rf__ep ep, const void *buf, void **rkey)
{
  slot *s = slot_of(e->ux, ep);
  if (!s) return rf__fail(e, RF_ERR_STATE, "unpacking a remote key on a closed endpoint");
  if (e->ux->fail_rkey && --e->ux->fail_rkey == 0)
    return rf__fail(e, RF_ERR_BLOB, "remote key rejected: failed by the test hook rf__ucx_fail_rkey");
  ucp_rkey_h k;
  ucs_status_t st = ucp_ep_rkey_unpack(s->h, buf, &k);
  if (st != UCS_OK) return rf__fail(e, RF_ERR_BLOB, "remote key rejected: %s", ustr(st));
  *rkey = k;
  atomic_fetch_add(&live_rkeys, 1);
  return RF_OK;
}

void rf__ucx_rkey_destroy(void *rkey)
{
  ucp_rkey_destroy(rkey);
  atomic_fetch_sub(&live_rkeys, 1);
}

void rf__ucx_fail_rkey(rf_engine *e, uint32_t k) { e->ux->fail_rkey = k; }
int64_t rf__ucx_live_rkeys(void) { return atomic_load(&live_rkeys); }

/* ------------------------------------ listener ----------------------------------------- */

static void on_conn_request(ucp_conn_request_h req, void *arg)
{
  struct rf__ucx *u = arg;
  if (u->n_reqs == CONN_REQS) { /* more than we answer in one progress call: refuse */
    ucp_listener_reject(u->listener, req);
    return;
  }
  u->reqs[u->n_reqs++] = req;
}

rf_status rf__ucx_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out)
{
  struct rf__ucx *u = e->ux;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) return rf__fail(e, RF_ERR_ARG, "listen address '%s' is not IPv4", ip);
  ucp_listener_params_t lp = {.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
                              .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof sa},
                              .conn_handler = {.cb = on_conn_request, .arg = u}};
  ucs_status_t s = ucp_listener_create(u->worker, &lp, &u->listener);
  if (s != UCS_OK) {
    u->listener = NULL;
    return rf__fail(e, RF_ERR_UCX, "listening on %s:%u: %s", ip, port, ustr(s));
  }
  ucp_listener_attr_t la = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
  s = ucp_listener_query(u->listener, &la);
  if (s != UCS_OK) {
    ucp_listener_destroy(u->listener);
    u->listener = NULL;
    return rf__fail(e, RF_ERR_UCX, "ucp_listener_query: %s", ustr(s));
  }
  if (port_out) *port_out = ntohs(((struct sockaddr_in *)&la.sockaddr)->sin_port);
  return RF_OK;
}

/* ------------------------------------ messages ----------------------------------------- */

/* the slot of an endpoint handle (open or closing), or NULL: not ours */
static slot *slot_by_handle(struct rf__ucx *u, ucp_ep_h h)
{
  for (uint32_t i = 0; h && i < u->n_slots; i++)
    if (u->slots[i].h == h && u->slots[i].state != SLOT_FREE) return &u->slots[i];
  return NULL;
}

static void big_done(void *req, ucs_status_t status, size_t length, void *user)
{
  big_ctx *b = user;
  struct rf__ucx *u = b->u;
  slot *s = slot_of(u, b->ep);
  if (s) s->ops--;
  rf__ev *ev = s && status == UCS_OK && length == b->len ? ev_new(u, s, RF__EV_MSG) : NULL;
  if (ev) {
    memcpy(ev->msg, &b->h, sizeof b->h);
    ev->len = (uint32_t)(sizeof b->h + b->len);
    ev->big = b->buf;
  } else {
    if (s) fail_slot(u, s, "receiving a large message", status == UCS_OK ? "event ring full" : ustr(status));
    free(b->buf);
  }
  free(b);
  if (req) ucp_request_free(req);
}

void rf__ucx_strangers(rf_engine *e, rf__stranger_fn fn) { e->ux->stranger = fn; }

static void reply_done(void *req, ucs_status_t status, void *user)
{
  (void)status;
  reply_ctx *r = user;
  r->u->replies_used &= ~(1u << (uint32_t)(r - r->u->replies));
  ucp_request_free(req);
}

/* a header-only reply on an endpoint this engine does not own (inside the callback: the endpoint is
 * UCX's and valid only there); dropped when one to the same endpoint is still in flight (a peer that
 * floods and does not read holds one buffer, not the pool) or REPLIES are */
static void reply(struct rf__ucx *u, ucp_ep_h ep, const rf__hdr *h)
{
  uint32_t k = REPLIES;
  for (uint32_t i = 0; i < REPLIES; i++) {
    if (!(u->replies_used >> i & 1)) k = k == REPLIES ? i : k;
    else if (u->replies[i].ep == ep) return;
  }
  if (k == REPLIES) return;
  reply_ctx *r = &u->replies[k];
  r->u = u;
  r->ep = ep;
  r->h = *h;
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                                           UCP_OP_ATTR_FIELD_FLAGS,
                           .cb.send = reply_done, .user_data = r,
                           .flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER};
  ucs_status_ptr_t q = ucp_am_send_nbx(ep, AM_ID, &r->h, sizeof r->h, NULL, 0, &p);
  if (!UCS_PTR_IS_PTR(q)) return; /* sent, or failed: nothing in flight */
  r->req = q;
  u->replies_used |= 1u << k;
}

static ucs_status_t on_msg(void *arg, const void *header, size_t header_length, void *data, size_t length,
                           const ucp_am_recv_param_t *param)
{
  struct rf__ucx *u = arg;
  rf__hdr h;
  if (header_length != sizeof h) return UCS_OK;
  memcpy(&h, header, sizeof h);
  if (h.magic != RF__MAGIC || h.len != length) return UCS_OK;
  slot *s = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ? slot_by_handle(u, param->reply_ep) : NULL;
  if (s && (s->failed || s->state != SLOT_OPEN)) return UCS_OK; /* ours, closing: nothing more of it counts */
  int rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (!s) { /* not a peer of ours: the stranger hook decides, with the whole message at hand */
    if (!u->stranger || rndv || sizeof h + length > RF__MSG_MAX || !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
      return UCS_OK;
    rf__hdr r;
    int what = u->stranger(u->e, &h, data, &r);
    if (what == RF__STRANGER_REPLY) reply(u, param->reply_ep, &r);
    if (what != RF__STRANGER_QUEUE) return UCS_OK;
  }
  if (s) s->said = 0;
  if (sizeof h + length <= RF__MSG_MAX && !rndv) {
    rf__ev *ev = ev_new(u, s, RF__EV_MSG);
    if (!ev) {
      if (s) fail_slot(u, s, "control messages", "more pending than the protocol allows (flood)");
      return UCS_OK;
    }
    memcpy(ev->msg, &h, sizeof h);
    memcpy(ev->msg + sizeof h, data, length);
    ev->len = (uint32_t)(sizeof h + length);
    if (!s) ev->from = param->reply_ep;
    return UCS_OK;
  }
  /* large: only a trainer takes one (a receiver's metadata), on an endpoint it owns */
  if (!s || u->e->cfg.role != RF_TRAINER || length > BIG_MAX) {
    if (s) fail_slot(u, s, "control messages", "a message larger than the protocol allows");
    return UCS_OK;
  }
  big_ctx *b = calloc(1, sizeof *b);
  uint8_t *buf = malloc(length ? length : 1);
  if (!b || !buf) {
    free(b);
    free(buf);
    fail_slot(u, s, "receiving a large message", "out of memory");
    return UCS_OK;
  }
  *b = (big_ctx){.u = u, .ep = ep_id(u, (uint32_t)(s - u->slots)), .h = h, .buf = buf, .len = length};
  if (!rndv) {
    memcpy(buf, data, length);
    s->ops++;
    big_done(NULL, UCS_OK, length, b);
    return UCS_OK;
  }
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                           .cb.recv_am = big_done, .user_data = b};
  s->ops++;
  ucs_status_ptr_t r = ucp_am_recv_data_nbx(u->worker, data, buf, length, &p);
  if (UCS_PTR_IS_ERR(r)) big_done(NULL, UCS_PTR_STATUS(r), 0, b);
  else if (r == NULL) big_done(NULL, UCS_OK, length, b);
  return UCS_INPROGRESS;
}

static void send_cb(void *req, ucs_status_t status, void *user)
{
  send_ctx *c = user;
  slot *s = &c->u->slots[c->slot];
  if (s->gen == c->gen && s->state != SLOT_FREE) {
    s->ops--;
    s->sendbuf_used &= ~(1u << c->idx);
    if (status != UCS_OK) fail_slot(c->u, s, "sending a control message", ustr(status));
  }
  ucp_request_free(req);
}

static rf_status send_msg(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload, int ref)
{
  struct rf__ucx *u = e->ux;
  slot *s = slot_of(u, ep);
  if (!s || s->state != SLOT_OPEN || s->failed)
    return rf__fail(e, RF_ERR_PEER, "sending %s: the connection is closed", rf__msg_name(h->type));
  if (!ref && h->len > RF__MSG_MAX - sizeof *h)
    return rf__fail(e, RF_ERR_ARG, "sending %s: %u payload bytes, at most %zu", rf__msg_name(h->type), h->len,
                    RF__MSG_MAX - sizeof *h);
  uint32_t k = 0;
  while (k < SENDBUFS && (s->sendbuf_used >> k & 1)) k++;
  if (k == SENDBUFS) {
    fail_slot(u, s, "sending a control message", "more than 8 in flight");
    return rf__fail(e, RF_ERR_PEER, "sending %s: more than %d messages in flight", rf__msg_name(h->type), SENDBUFS);
  }
  uint8_t *buf = s->sendbuf + (size_t)k * RF__MSG_MAX;
  memcpy(buf, h, sizeof *h);
  const void *data = ref ? payload : buf + sizeof *h;
  if (!ref && h->len) memcpy(buf + sizeof *h, payload, h->len);
  uint32_t i = (uint32_t)(s - u->slots);
  s->sctx[k] = (send_ctx){u, i, s->gen, k};
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                                           UCP_OP_ATTR_FIELD_FLAGS,
                           .cb.send = send_cb, .user_data = &s->sctx[k],
                           .flags = UCP_AM_SEND_FLAG_REPLY | (ref ? 0 : UCP_AM_SEND_FLAG_EAGER)};
  ucs_status_ptr_t r = ucp_am_send_nbx(s->h, AM_ID, buf, sizeof *h, data, h->len, &p);
  s->said = 1;
  if (r == NULL) return RF_OK;
  if (UCS_PTR_IS_ERR(r)) {
    fail_slot(u, s, "sending a control message", ustr(UCS_PTR_STATUS(r)));
    return rf__fail(e, RF_ERR_PEER, "sending %s: %s", rf__msg_name(h->type), ustr(UCS_PTR_STATUS(r)));
  }
  s->sendbuf_used |= 1u << k;
  s->ops++;
  return RF_OK;
}

rf_status rf__ucx_send(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload)
{
  rf__held(e, "rf__ucx_send");
  return send_msg(e, ep, h, payload, 0);
}

rf_status rf__ucx_send_ref(rf_engine *e, rf__ep ep, const rf__hdr *h, const void *payload)
{
  return send_msg(e, ep, h, payload, 1);
}

/* ------------------------------------ puts, flush -------------------------------------- */

/* puts and flushes share the slot's op context: (slot, generation) is fixed until it drains */
static void op_cb(void *req, ucs_status_t status, void *user)
{
  send_ctx *c = user;
  slot *s = &c->u->slots[c->slot];
  if (s->gen == c->gen && s->state != SLOT_FREE) {
    s->ops--;
    if (status != UCS_OK) fail_slot(c->u, s, "a write", ustr(status));
  }
  ucp_request_free(req);
}

static void flush_cb(void *req, ucs_status_t status, void *user)
{
  send_ctx *c = user;
  struct rf__ucx *u = c->u;
  slot *s = &u->slots[c->slot];
  if (s->gen == c->gen && s->state != SLOT_FREE) {
    s->ops--;
    s->flushing = 0;
    if (status != UCS_OK) fail_slot(u, s, "flushing writes", ustr(status));
    else if (s->state == SLOT_OPEN && !s->failed) {
      rf__ev *ev = ev_new(u, s, RF__EV_FLUSHED);
      if (ev) ev->tag = s->flush_tag;
      else fail_slot(u, s, "flushing writes", "event ring full");
    }
  }
  ucp_request_free(req);
}

rf_status rf__ucx_put(rf_engine *e, rf__ep ep, const void *local, size_t len, uint64_t raddr, void *rkey)
{
  rf__held(e, "rf__ucx_put");
  struct rf__ucx *u = e->ux;
  slot *s = slot_of(u, ep);
  if (!s || s->state != SLOT_OPEN || s->failed) return rf__fail(e, RF_ERR_PEER, "write of %zu bytes: the connection is closed", len);
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                           .cb.send = op_cb, .user_data = &s->octx};
  ucs_status_ptr_t r = ucp_put_nbx(s->h, local, len, raddr, rkey, &p);
  if (r == NULL) return RF_OK;
  if (UCS_PTR_IS_ERR(r)) {
    fail_slot(u, s, "a write", ustr(UCS_PTR_STATUS(r)));
    return rf__fail(e, RF_ERR_PEER, "write of %zu bytes failed: %s", len, ustr(UCS_PTR_STATUS(r)));
  }
  s->ops++;
  return RF_OK;
}

rf_status rf__ucx_flush(rf_engine *e, rf__ep ep, uint64_t tag)
{
  rf__held(e, "rf__ucx_flush");
  struct rf__ucx *u = e->ux;
  slot *s = slot_of(u, ep);
  if (!s || s->state != SLOT_OPEN || s->failed) return rf__fail(e, RF_ERR_PEER, "flush: the connection is closed");
  if (s->flushing) return rf__fail(e, RF_ERR_STATE, "flush: one already in flight");
  s->flush_tag = tag;
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                           .cb.send = flush_cb, .user_data = &s->octx};
  ucs_status_ptr_t r = ucp_ep_flush_nbx(s->h, &p);
  if (UCS_PTR_IS_ERR(r)) {
    fail_slot(u, s, "flushing writes", ustr(UCS_PTR_STATUS(r)));
    return rf__fail(e, RF_ERR_PEER, "flush failed: %s", ustr(UCS_PTR_STATUS(r)));
  }
  if (r == NULL) {
    rf__ev *ev = ev_new(u, s, RF__EV_FLUSHED);
    if (!ev) return rf__fail(e, RF_ERR_PEER, "flush: event ring full");
    ev->tag = tag;
    return RF_OK;
  }
  s->flushing = 1;
  s->ops++;
  return RF_OK;
}

rf_status rf__ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len)
{
  char *text = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&text, &n);
  if (!f) return RF_ERR_NOMEM;
  ucp_config_print(e->ux->config, f, NULL, UCS_CONFIG_PRINT_CONFIG);
  fclose(f);
  char key[128];
  snprintf(key, sizeof key, "UCX_%s=", name);
  rf_status st = RF_ERR_ARG;
  for (char *line = text; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    if (strncmp(line, key, strlen(key)) == 0) {
      snprintf(buf, len, "%s", line + strlen(key));
      st = RF_OK;
      break;
    }
    line = nl ? nl + 1 : NULL;
  }
  free(text);
  return st;
}
