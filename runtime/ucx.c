/* ucx.c: the only file that speaks UCX. One context and one worker per engine, configured per
 * engine (TLS, NET_DEVICES, MAX_RNDV_RAILS and MAX_RMA_RAILS through ucp_config_modify; the process environment is
 * never changed). Receivers listen and answer HELLO with their metadata blob; trainers connect,
 * put, flush, and send BEGIN / DONE as active messages. Calls used exist in UCX 1.13 through 1.22.
 *
 * Active messages: AM_CTRL trainer -> receiver (rf__msg, sent with the reply flag so the receiver
 * knows the connection), AM_REPLY receiver -> trainer (header: receiver index; body: blob or a
 * REJECT rf__msg). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ucp/api/ucp.h>

#include "internal.h"
#include "refit_nic.h"

enum { AM_CTRL = 17, AM_REPLY = 18 };

typedef struct cb_ctx {
  rf_engine *e;
  uint32_t idx; /* conn (receiver) or target (trainer) index */
} cb_ctx;

struct rf__ucx {
  ucp_config_t *config;
  ucp_context_h ctx;
  ucp_worker_h worker;
  ucp_listener_h listener;
  cb_ctx *conn_ctx; /* [n_conns] */
  cb_ctx *tg_ctx;   /* [n_tg] */
  int n_rails;
  char net_devices[512];
};

static const char *ustr(ucs_status_t s) { return ucs_status_string(s); }

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

static ucs_status_t on_ctrl(void *arg, const void *header, size_t header_length, void *data, size_t length,
                            const ucp_am_recv_param_t *param);
static ucs_status_t on_reply(void *arg, const void *header, size_t header_length, void *data, size_t length,
                             const ucp_am_recv_param_t *param);

rf_status rf__ucx_open(rf_engine *e)
{
  struct rf__ucx *u = calloc(1, sizeof *u);
  if (!u) return rf__fail(e, RF_ERR_NOMEM, "UCX state");
  e->ux = u;
  ucs_status_t s = ucp_config_read(NULL, NULL, &u->config);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_config_read: %s", ustr(s));
  if (e->cfg.ucx_tls) RF_CHECK(modify(e, "TLS", e->cfg.ucx_tls));
  RF_CHECK(apply_nics(e));
  ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
                         .features = UCP_FEATURE_RMA | UCP_FEATURE_AM,
                         .name = e->cfg.role == RF_TRAINER ? "refit-trainer" : "refit-receiver"};
  s = ucp_init(&params, u->config, &u->ctx);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_init: %s", ustr(s));
  ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE, .thread_mode = UCS_THREAD_MODE_SINGLE};
  s = ucp_worker_create(u->ctx, &wp, &u->worker);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_create: %s", ustr(s));
  ucp_am_handler_param_t hp = {.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                                             UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
                               .flags = UCP_AM_FLAG_WHOLE_MSG,
                               .arg = e};
  hp.id = e->cfg.role == RF_TRAINER ? AM_REPLY : AM_CTRL;
  hp.cb = e->cfg.role == RF_TRAINER ? on_reply : on_ctrl;
  s = ucp_worker_set_am_recv_handler(u->worker, &hp);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_set_am_recv_handler: %s", ustr(s));
  return RF_OK;
}

static void wait_req(rf_engine *e, void *req, uint32_t ms)
{
  if (req == NULL || UCS_PTR_IS_ERR(req)) return;
  uint64_t t0 = rf__now_ns();
  while (ucp_request_check_status(req) == UCS_INPROGRESS && rf__now_ns() - t0 < (uint64_t)ms * 1000000u)
    ucp_worker_progress(e->ux->worker);
  ucp_request_free(req);
}

static void close_ep(rf_engine *e, void *ep, int force)
{
  if (!ep) return;
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS, .flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0};
  wait_req(e, ucp_ep_close_nbx(ep, &p), 1000);
}

void rf__ucx_close(rf_engine *e)
{
  struct rf__ucx *u = e->ux;
  if (u->worker) {
    for (uint32_t i = 0; i < e->n_tg; i++) {
      rf__target *t = &e->tg[i];
      for (uint32_t k = 0; t->rkey && k < e->p->recv[t->recv].dst_count; k++)
        if (t->rkey[k]) ucp_rkey_destroy(t->rkey[k]);
      close_ep(e, t->ep, t->failed);
    }
    for (uint32_t i = 0; i < e->n_conns; i++)
      if (e->conns[i].used && e->conns[i].ep) close_ep(e, e->conns[i].ep, 1);
    if (u->listener) ucp_listener_destroy(u->listener);
    ucp_worker_destroy(u->worker);
  }
  if (u->ctx) ucp_cleanup(u->ctx);
  if (u->config) ucp_config_release(u->config);
  free(u->conn_ctx);
  free(u->tg_ctx);
  free(u);
  e->ux = NULL;
}

void rf__ucx_progress(rf_engine *e)
{
  while (ucp_worker_progress(e->ux->worker)) {
  }
}

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

rf_status rf__ucx_build_blob(rf_engine *e)
{
  const rf_plan *p = e->p;
  uint32_t n = e->rv->dst_count;
  ucp_address_t *addr;
  size_t alen;
  ucs_status_t s = ucp_worker_get_address(e->ux->worker, &addr, &alen);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_worker_get_address: %s", ustr(s));
  rf__blob_entry *en = calloc(n ? n : 1, sizeof *en);
  void **keys = calloc(n ? n : 1, sizeof *keys);
  uint32_t *klen = calloc(n ? n : 1, sizeof *klen);
  rf_status st = RF_OK;
  if (!en || !keys || !klen) st = rf__fail(e, RF_ERR_NOMEM, "metadata blob");
  for (uint32_t i = 0; i < n && st == RF_OK; i++) {
    size_t kl;
    s = ucp_rkey_pack(e->ux->ctx, e->dst_memh[i], &keys[i], &kl);
    if (s != UCS_OK) {
      st = rf__fail(e, RF_ERR_UCX, "packing the key of '%s': %s", p->dst[e->rv->dst_first + i].name, ustr(s));
      break;
    }
    klen[i] = (uint32_t)kl;
    en[i] = (rf__blob_entry){.id = e->rv->dst_first + i, .addr = (uint64_t)(uintptr_t)e->dst_ptr[i],
                             .bytes = p->dst[e->rv->dst_first + i].bytes, .rkey = keys[i], .rkey_len = klen[i]};
  }
  if (st == RF_OK) {
    e->blob_len = rf__blob_size((uint32_t)alen, n, klen);
    e->blob = malloc(e->blob_len);
    if (!e->blob) st = rf__fail(e, RF_ERR_NOMEM, "metadata blob of %zu bytes", e->blob_len);
    else rf__blob_write(e->blob, p, e->cfg.rank, addr, (uint32_t)alen, n, en);
  }
  for (uint32_t i = 0; keys && i < n; i++)
    if (keys[i]) ucp_rkey_buffer_release(keys[i]);
  ucp_worker_release_address(e->ux->worker, addr);
  free(en);
  free(keys);
  free(klen);
  return st;
}

/* ---------------------------------- receiver side ----------------------------------------- */

static void on_conn_err(void *arg, ucp_ep_h ep, ucs_status_t status)
{
  (void)ep;
  cb_ctx *c = arg;
  rf__on_conn_error(c->e, c->idx, ustr(status));
}

static uint32_t conn_slot(rf_engine *e, ucp_ep_h ep)
{
  uint32_t free_slot = RF_NONE;
  for (uint32_t i = 0; i < e->n_conns; i++) {
    if (e->conns[i].used && e->conns[i].ep == ep && !e->conns[i].dead) return i;
    if (!e->conns[i].used && free_slot == RF_NONE) free_slot = i;
  }
  return free_slot;
}

static void on_conn_request(ucp_conn_request_h req, void *arg)
{
  rf_engine *e = arg;
  uint32_t i = conn_slot(e, NULL);
  /* reuse slots of dead connections once every slot has been used */
  for (uint32_t k = 0; i == RF_NONE && k < e->n_conns; k++)
    if (e->conns[k].dead) {
      close_ep(e, e->conns[k].ep, 1);
      memset(&e->conns[k], 0, sizeof e->conns[k]);
      i = k;
    }
  if (i == RF_NONE) {
    ucp_listener_reject(e->ux->listener, req);
    return;
  }
  ucp_ep_params_t ep = {.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
                        .conn_request = req,
                        .err_mode = e->cfg.no_peer_errors ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER,
                        .err_handler = {.cb = on_conn_err, .arg = &e->ux->conn_ctx[i]}};
  ucp_ep_h h;
  if (ucp_ep_create(e->ux->worker, &ep, &h) != UCS_OK) return;
  memset(&e->conns[i], 0, sizeof e->conns[i]);
  e->conns[i].used = 1;
  e->conns[i].ep = h;
}

static ucs_status_t on_ctrl(void *arg, const void *header, size_t header_length, void *data, size_t length,
                            const ucp_am_recv_param_t *param)
{
  (void)header;
  (void)header_length;
  rf_engine *e = arg;
  if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV))
    return UCS_OK;
  uint32_t i = conn_slot(e, param->reply_ep);
  if (i == RF_NONE) return UCS_OK;
  if (!e->conns[i].used) { /* a trainer that connected with the blob: UCX made the endpoint */
    memset(&e->conns[i], 0, sizeof e->conns[i]);
    e->conns[i].used = 1;
    e->conns[i].ep = param->reply_ep;
  }
  rf__on_message(e, i, data, length);
  return UCS_OK;
}

rf_status rf__ucx_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out)
{
  struct rf__ucx *u = e->ux;
  u->conn_ctx = calloc(e->n_conns, sizeof *u->conn_ctx);
  if (!u->conn_ctx) return rf__fail(e, RF_ERR_NOMEM, "connection table");
  for (uint32_t i = 0; i < e->n_conns; i++) u->conn_ctx[i] = (cb_ctx){e, i};
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) return rf__fail(e, RF_ERR_ARG, "listen address '%s' is not IPv4", ip);
  ucp_listener_params_t lp = {.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
                              .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof sa},
                              .conn_handler = {.cb = on_conn_request, .arg = e}};
  ucs_status_t s = ucp_listener_create(u->worker, &lp, &u->listener);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "listening on %s:%u: %s", ip, port, ustr(s));
  ucp_listener_attr_t la = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
  s = ucp_listener_query(u->listener, &la);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "ucp_listener_query: %s", ustr(s));
  if (port_out) *port_out = ntohs(((struct sockaddr_in *)&la.sockaddr)->sin_port);
  return RF_OK;
}

static void reply_cb(void *req, ucs_status_t status, void *user)
{
  (void)status;
  (void)user;
  ucp_request_free(req);
}

rf_status rf__ucx_reply(rf_engine *e, uint32_t conn, const void *buf, size_t len)
{
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_FLAGS,
                           .cb.send = reply_cb,
                           .flags = UCP_AM_SEND_FLAG_EAGER};
  uint32_t hdr = e->cfg.rank;
  ucs_status_ptr_t r = ucp_am_send_nbx(e->conns[conn].ep, AM_REPLY, &hdr, sizeof hdr, buf, len, &p);
  if (UCS_PTR_IS_ERR(r)) return rf__fail(e, RF_ERR_UCX, "answering a trainer: %s", ustr(UCS_PTR_STATUS(r)));
  return RF_OK;
}

/* ---------------------------------- trainer side ------------------------------------------ */

static void on_tg_err(void *arg, ucp_ep_h ep, ucs_status_t status)
{
  (void)ep;
  cb_ctx *c = arg;
  rf__on_target_error(c->e, &c->e->tg[c->idx], ustr(status));
}

static ucs_status_t on_reply(void *arg, const void *header, size_t header_length, void *data, size_t length,
                             const ucp_am_recv_param_t *param)
{
  rf_engine *e = arg;
  uint32_t recv;
  if (header_length != sizeof recv || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) return UCS_OK;
  memcpy(&recv, header, sizeof recv);
  if (recv >= e->p->receivers || e->recv_tg[recv] == RF_NONE) return UCS_OK;
  rf__on_keys(e, &e->tg[e->recv_tg[recv]], data, length);
  return UCS_OK;
}

static rf_status tg_ctx(rf_engine *e)
{
  if (e->ux->tg_ctx) return RF_OK;
  e->ux->tg_ctx = calloc(e->n_tg ? e->n_tg : 1, sizeof *e->ux->tg_ctx);
  if (!e->ux->tg_ctx) return rf__fail(e, RF_ERR_NOMEM, "target table");
  for (uint32_t i = 0; i < e->n_tg; i++) e->ux->tg_ctx[i] = (cb_ctx){e, i};
  return RF_OK;
}

static rf_status create_ep(rf_engine *e, rf__target *t, ucp_ep_params_t *ep)
{
  RF_CHECK(tg_ctx(e));
  ep->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  ep->err_mode = e->cfg.no_peer_errors ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER;
  ep->err_handler.cb = on_tg_err;
  ep->err_handler.arg = &e->ux->tg_ctx[t - e->tg];
  ucp_ep_h h;
  ucs_status_t s = ucp_ep_create(e->ux->worker, ep, &h);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_UCX, "connecting to receiver %u (%s): %s", t->recv, t->where, ustr(s));
  t->ep = h;
  t->failed = 0;
  t->keys_state = 0;
  /* finish wireup before the first message: an early answer from the receiver can get lost otherwise */
  ucp_request_param_t fp = {.op_attr_mask = 0};
  void *fr = ucp_ep_flush_nbx(h, &fp);
  if (UCS_PTR_IS_ERR(fr))
    return rf__fail(e, RF_ERR_PEER, "connecting to receiver %u (%s): %s", t->recv, t->where, ustr(UCS_PTR_STATUS(fr)));
  wait_req(e, fr, e->timeout_ms);
  return RF_OK;
}

rf_status rf__ucx_connect(rf_engine *e, rf__target *t, const char *ip, uint16_t port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) return rf__fail(e, RF_ERR_ARG, "receiver address '%s' is not IPv4", ip);
  ucp_ep_params_t ep = {.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR,
                        .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
                        .sockaddr = {.addr = (const struct sockaddr *)&sa, .addrlen = sizeof sa}};
  return create_ep(e, t, &ep);
}

rf_status rf__ucx_connect_addr(rf_engine *e, rf__target *t, const void *addr, size_t len)
{
  (void)len;
  ucp_ep_params_t ep = {.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS, .address = addr};
  return create_ep(e, t, &ep);
}

rf_status rf__ucx_rkey(rf_engine *e, rf__target *t, const void *buf, size_t len, void **rkey)
{
  (void)len;
  ucp_rkey_h k;
  ucs_status_t s = ucp_ep_rkey_unpack(t->ep, buf, &k);
  if (s != UCS_OK) return rf__fail(e, RF_ERR_BLOB, "receiver %u (%s): remote key rejected: %s", t->recv, t->where, ustr(s));
  *rkey = k;
  return RF_OK;
}

static void ctrl_cb(void *req, ucs_status_t status, void *user)
{
  cb_ctx *c = user;
  if (status != UCS_OK) rf__on_target_error(c->e, &c->e->tg[c->idx], ustr(status));
  ucp_request_free(req);
}

static void done_cb(void *req, ucs_status_t status, void *user)
{
  cb_ctx *c = user;
  rf__on_done_sent(c->e, &c->e->tg[c->idx], status == UCS_OK, ustr(status));
  ucp_request_free(req);
}

rf_status rf__ucx_send(rf_engine *e, rf__target *t, rf__msg *m, int what)
{
  RF_CHECK(tg_ctx(e));
  cb_ctx *c = &e->ux->tg_ctx[t - e->tg];
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                                           UCP_OP_ATTR_FIELD_FLAGS,
                           .cb.send = what == 1 ? done_cb : ctrl_cb,
                           .user_data = c,
                           .flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER};
  ucs_status_ptr_t r = ucp_am_send_nbx(t->ep, AM_CTRL, NULL, 0, m, sizeof *m, &p);
  if (UCS_PTR_IS_ERR(r)) {
    t->failed = 1;
    return rf__fail(e, RF_ERR_PEER, "receiver %u (%s): sending %s failed: %s", t->recv, t->where,
                    m->type == RF__DONE ? "DONE" : m->type == RF__BEGIN ? "BEGIN" : "HELLO", ustr(UCS_PTR_STATUS(r)));
  }
  if (r == NULL && what == 1) rf__on_done_sent(e, t, 1, "");
  return RF_OK;
}

static void put_cb(void *req, ucs_status_t status, void *user)
{
  rf__on_put_done(user, status == UCS_OK, ustr(status));
  ucp_request_free(req);
}

rf_status rf__ucx_put(rf_engine *e, rf__target *t, const void *local, size_t len, uint64_t raddr, void *rkey)
{
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                           .cb.send = put_cb,
                           .user_data = e};
  ucs_status_ptr_t r = ucp_put_nbx(t->ep, local, len, raddr, rkey, &p);
  if (r == NULL) return RF_OK;
  if (UCS_PTR_IS_ERR(r))
    return rf__fail(e, RF_ERR_PEER, "receiver %u (%s): write of %zu bytes failed: %s", t->recv, t->where, len,
                    ustr(UCS_PTR_STATUS(r)));
  e->inflight++;
  return RF_OK;
}

static void flush_cb(void *req, ucs_status_t status, void *user)
{
  cb_ctx *c = user;
  rf__on_flush_done(c->e, &c->e->tg[c->idx], status == UCS_OK, ustr(status));
  ucp_request_free(req);
}

rf_status rf__ucx_flush(rf_engine *e, rf__target *t)
{
  cb_ctx *c = &e->ux->tg_ctx[t - e->tg];
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                           .cb.send = flush_cb,
                           .user_data = c};
  ucs_status_ptr_t r = ucp_ep_flush_nbx(t->ep, &p);
  if (r == NULL) {
    rf__on_flush_done(e, t, 1, "");
    return RF_OK;
  }
  if (UCS_PTR_IS_ERR(r))
    return rf__fail(e, RF_ERR_PEER, "receiver %u (%s): flush failed: %s", t->recv, t->where, ustr(UCS_PTR_STATUS(r)));
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
