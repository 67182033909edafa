/* receiver.c: the receiver's state machine (DESIGN.md section 3, version protocol v2).
 *
 * Connections: accepted by the listener, each in one of HELLO_WAIT -> CHALLENGED -> AUTHED, or
 * REJECTED (REJECT sent, closing); a connection that has not authenticated within handshake_ms is
 * closed. Blob mode (a trainer that reached the worker address: its messages come on an endpoint
 * UCX made, not ours) keeps nothing before the trainer proves the token and this receiver's nonce:
 * a HELLO is answered from inside the UCX callback (stranger()) with a CHALLENGE whose nonce is a
 * MAC, under a secret of this receiver, of the HELLO's session, nonce, rank and the time it was
 * issued (sent along, covered by the token MAC). Only an AUTH that proves the token over that nonce,
 * issued within handshake_ms, for a session not seen before, gets a connection slot and an endpoint
 * (to the address it carries) and is AUTHED at once. A replayed or forged HELLO or AUTH costs a
 * header at most and is counted (ignored). A newer authenticated connection for a trainer rank
 * replaces (closes) the older one.
 *
 * Versions: nothing armed -> rf_arm(v) (or a BEGIN v with auto_arm) -> each peer that asks for v
 * (BEGIN v) is granted it -> DONE from every peer with the table's byte count (or, from a peer that
 * sent patches, DONE delta: its base equals the complete version, its directory agrees; patch.c)
 * -> apply the patches, every patched region's digest equal to the trainer's -> refresh derived
 * tensors -> the finalize steps whose input changed (all of them unless the version is a delta one
 * right after a complete version) -> complete (ACK to every peer). Anything else tears v: the
 * endpoints of peers granted v and not done are closed (fenced), peers that were done get ACK
 * "torn". Either way nothing is armed afterwards, and no write of v can still be in flight: done
 * peers flushed before DONE, the others are fenced. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { C_FREE = 0, C_HELLO_WAIT, C_CHALLENGED, C_AUTHED, C_REJECTED };
#define REJECT_GRACE_MS 200

/* blob-mode handshakes (stranger(), on_blob_auth): the secret of the CHALLENGE nonces, and the
 * sessions that got a connection, so a replayed AUTH gets nothing. A full table evicts its oldest
 * entry and from then on refuses every nonce issued before it (floor). */
enum { SEEN = 64 };
struct rf__cookie {
  rf__key secret;
  uint64_t seen[SEEN], seen_ms[SEEN]; /* session, the issue time of its nonce (ms) */
  uint64_t floor_ms;
};

typedef struct rf__conn rf__conn;
struct rf__conn {
  rf__ep ep;
  int state;
  uint64_t t0;             /* accepted (handshake deadline), or REJECT sent */
  uint64_t session, nonce_t, nonce_r;
  rf__key key;             /* AUTHED: the connection's MAC key */
  uint32_t rank, peer;     /* claimed rank; peer index into this receiver's peers, or RF_NONE */
};

static int stranger(rf_engine *e, const rf__hdr *h, const void *payload, rf__hdr *reply);

/* the receiver's state (rf_engine.rx): only this file reads or writes it */
struct rf__receiver {
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
  struct rf__cookie *ck;     /* blob-mode handshakes without state */
  int listening;
  uint8_t *peer_delta;       /* [peer_count] the armed version's DONE from k came with patches */
  struct rf__patch *pa;      /* the patch area (patch.c), in delta plans once listening; else NULL */
  uint32_t fin_first, fin_count; /* this position's finalize steps (plan->finalize) */
  uint32_t *fin_engine, n_fin_engine; /* [fin_count] the indexes of its RF_FIN_ENGINE steps */
  uint32_t *fin_kernel, n_fin_kernel; /* [fin_count] the indexes of its RF_FIN_KERNEL steps, in order */
  void **fin_in, **fin_out;  /* [fin_count] per kernel step: its dst and its storage (set at rf_listen) */
  uint32_t *fin_ksel;        /* [fin_count] a version's kernel steps to run (indexes into plan->finalize) ... */
  void **fin_kin, **fin_kout; /* ... and their dsts and storages, compacted (fin_in / fin_out of those) */
  uint32_t *fin_run;         /* [fin_count] the hook's `steps`: those of fin_engine whose input changed */
  uint8_t *fin_changed;      /* [dst_count] a delta version wrote a byte of this dst (rf__patch_changed) */
  int fin_all;               /* the next version runs every step: none complete since rf_listen, or the
                                newest version was torn (its bytes and the engine's state are unknown) */
  rf_finalize_fn fin_fn;     /* rf_set_finalize */
  void *fin_ctx;
};

static const rf_peer *peer_row(const rf_engine *e, uint32_t k) { return &e->p->peers[e->rx->rv->peer_first + k]; }

static uint32_t peer_of_rank(const rf_engine *e, uint32_t rank)
{
  for (uint32_t k = 0; k < e->rx->rv->peer_count; k++)
    if (peer_row(e, k)->trainer == rank) return k;
  return RF_NONE;
}

/* this position's finalize steps (fin_index), each checked against the tables: its dst one of this
 * position's, a kernel step's op one this library runs and its out a storage refit writes here */
static rf_status open_finalize(rf_engine *e)
{
  const rf_plan *p = e->p;
  const rf_receiver *rv = e->rx->rv;
  if (!p->n_finalize) return RF_OK;
  uint32_t positions = p->replicas ? p->receivers / p->replicas : 0;
  if (p->n_fin_index != positions || e->rx->pos >= positions)
    return rf__fail(e, RF_ERR_ARG, "plan %s: %u finalize index rows for %u positions", p->name, p->n_fin_index, positions);
  const rf_fin_index *x = &p->fin_index[e->rx->pos];
  if (x->first > p->n_finalize || x->count > p->n_finalize - x->first)
    return rf__fail(e, RF_ERR_ARG, "plan %s: finalize steps %u+%u of position %u out of range", p->name, x->first,
                    x->count, e->rx->pos);
  e->rx->fin_first = x->first;
  e->rx->fin_count = x->count;
  size_t nc = x->count ? x->count : 1;
  e->rx->fin_all = 1;
  if (!(e->rx->fin_engine = calloc(nc, sizeof *e->rx->fin_engine)) || !(e->rx->fin_kernel = calloc(nc, sizeof(uint32_t))) ||
      !(e->rx->fin_in = calloc(nc, sizeof(void *))) || !(e->rx->fin_out = calloc(nc, sizeof(void *))) ||
      !(e->rx->fin_ksel = calloc(nc, sizeof(uint32_t))) || !(e->rx->fin_kin = calloc(nc, sizeof(void *))) ||
      !(e->rx->fin_kout = calloc(nc, sizeof(void *))) || !(e->rx->fin_run = calloc(nc, sizeof(uint32_t))) ||
      !(e->rx->fin_changed = calloc(rv->dst_count ? rv->dst_count : 1, 1)))
    return rf__fail(e, RF_ERR_NOMEM, "receiver tables");
  for (uint32_t i = x->first; i < x->first + x->count; i++) {
    const rf_finalize *f = &p->finalize[i];
    if (f->tp_rank != e->rx->pos || f->dst < rv->dst_first || f->dst >= rv->dst_first + rv->dst_count)
      return rf__fail(e, RF_ERR_ARG, "plan %s: finalize step %u ('%s') is not one of position %u's", p->name, i, f->name,
                      e->rx->pos);
    if (f->kind == RF_FIN_ENGINE) {
      e->rx->fin_engine[e->rx->n_fin_engine++] = i;
      continue;
    }
    if (f->kind != RF_FIN_KERNEL || f->op != RF_FINOP_UE8M0_PACK)
      return rf__fail(e, RF_ERR_ARG, "plan %s: finalize step %u ('%s' of '%s') has kind %u op %u, which this library "
                      "does not run", p->name, i, f->name, p->dst[f->dst].name, f->kind, f->op);
    if (f->out >= p->n_derived || p->derived[f->out].tp_rank != e->rx->pos || p->derived[f->out].storage != f->out ||
        p->derived[f->out].dst != RF_NONE)
      return rf__fail(e, RF_ERR_ARG, "plan %s: finalize step %u ('%s' of '%s') writes no storage of position %u", p->name,
                      i, f->name, p->dst[f->dst].name, e->rx->pos);
    e->rx->fin_kernel[e->rx->n_fin_kernel++] = i;
  }
  return RF_OK;
}

rf_status rf__receiver_open(rf_engine *e)
{
  const rf_plan *p = e->p;
  if (e->cfg.rank >= p->receivers)
    return rf__fail(e, RF_ERR_ARG, "receiver %u out of range (plan %s has %u receivers)", e->cfg.rank, p->name,
                    p->receivers);
  if (!(e->rx = calloc(1, sizeof *e->rx))) return rf__fail(e, RF_ERR_NOMEM, "receiver state");
  e->rx->rv = &p->recv[e->cfg.rank];
  e->rx->pos = e->rx->rv->tp_rank;
  uint32_t n = e->rx->rv->dst_count ? e->rx->rv->dst_count : 1, np = e->rx->rv->peer_count ? e->rx->rv->peer_count : 1;
  e->rx->dst_ptr = calloc(n, sizeof *e->rx->dst_ptr);
  e->rx->dst_memh = calloc(n, sizeof *e->rx->dst_memh);
  e->rx->der_ptr = calloc(p->n_derived ? p->n_derived : 1, sizeof *e->rx->der_ptr);
  e->rx->n_conns = 2 * e->rx->rv->peer_count + 16;
  e->rx->conns = calloc(e->rx->n_conns, sizeof *e->rx->conns);
  e->rx->peer_conn = malloc(np * sizeof *e->rx->peer_conn);
  e->rx->peer_begun = calloc(np, sizeof *e->rx->peer_begun);
  e->rx->peer_granted = calloc(np, 1);
  e->rx->peer_done = calloc(np, 1);
  e->rx->peer_delta = calloc(np, 1);
  if (!e->rx->dst_ptr || !e->rx->dst_memh || !e->rx->der_ptr || !e->rx->conns || !e->rx->peer_conn || !e->rx->peer_begun ||
      !e->rx->peer_granted || !e->rx->peer_done || !e->rx->peer_delta)
    return rf__fail(e, RF_ERR_NOMEM, "receiver tables");
  for (uint32_t k = 0; k < np; k++) e->rx->peer_conn[k] = RF_NONE;
  e->rx->ref_first = p->n_refresh;
  for (uint32_t i = 0; i < p->n_refresh; i++) {
    if (p->refresh[i].tp_rank != e->rx->pos) continue;
    if (p->refresh[i].kind != RF_REFRESH_MLA_ABSORB)
      return rf__fail(e, RF_ERR_ARG, "plan %s: refresh step %u has kind %u, which this library does not know", p->name,
                      i, p->refresh[i].kind);
    if (e->rx->ref_count && e->rx->ref_first + e->rx->ref_count != i)
      return rf__fail(e, RF_ERR_ARG, "plan %s: refresh steps of position %u are not contiguous", p->name, e->rx->pos);
    if (e->rx->ref_count == 0) e->rx->ref_first = i;
    e->rx->ref_count++;
  }
  RF_CHECK(open_finalize(e));
  e->rx->absorb = calloc(e->rx->ref_count ? e->rx->ref_count : 1, sizeof *e->rx->absorb);
  e->rx->layout = calloc(e->rx->ref_count ? e->rx->ref_count : 1, sizeof *e->rx->layout);
  e->rx->ck = calloc(1, sizeof *e->rx->ck);
  if (!e->rx->absorb || !e->rx->layout || !e->rx->ck) return rf__fail(e, RF_ERR_NOMEM, "receiver tables");
  e->rx->ck->secret = (rf__key){rf__random64(), rf__random64()};
  /* one endpoint per connection, and as many again closing */
  RF_CHECK(rf__ucx_open(e, 2 * e->rx->n_conns));
  rf__ucx_strangers(e, stranger);
  return RF_OK;
}

void rf__receiver_close(rf_engine *e)
{
  if (e->ux) rf__ucx_strangers(e, NULL); /* rf__ucx_close still progresses: nothing of ours is read then */
  if (!e->rx) return;
  rf__patch_close(e, e->rx->pa);
  if (e->ux) {
    for (uint32_t i = 0; e->rx->dst_memh && i < e->rx->rv->dst_count; i++) {
      int shared = 0;
      for (uint32_t k = 0; k < e->rx->n_regions; k++) shared |= e->rx->dst_memh[i] == e->rx->region[k].memh;
      if (e->rx->dst_memh[i] && !shared) rf__ucx_unmap(e, e->rx->dst_memh[i]);
    }
    for (uint32_t k = 0; k < e->rx->n_regions; k++) rf__ucx_unmap(e, e->rx->region[k].memh);
  }
  free(e->rx->dst_ptr);
  free(e->rx->dst_memh);
  free(e->rx->der_ptr);
  free(e->rx->conns);
  free(e->rx->peer_conn);
  free(e->rx->peer_begun);
  free(e->rx->peer_granted);
  free(e->rx->peer_done);
  free(e->rx->peer_delta);
  free(e->rx->absorb);
  free(e->rx->layout);
  free(e->rx->fin_engine);
  free(e->rx->fin_kernel);
  free(e->rx->fin_in);
  free(e->rx->fin_out);
  free(e->rx->fin_ksel);
  free(e->rx->fin_kin);
  free(e->rx->fin_kout);
  free(e->rx->fin_run);
  free(e->rx->fin_changed);
  free(e->rx->blob);
  free(e->rx->ck);
  free(e->rx);
  e->rx = NULL;
}

/* ---------------------------------- binding ----------------------------------------------- */

rf_status rf__receiver_bind(rf_engine *e, uint32_t id, void *ptr, size_t bytes)
{
  if (e->rx->listening) return rf__fail(e, RF_ERR_STATE, "rf_bind_dst after rf_listen");
  const rf_plan *p = e->p;
  if (id < e->rx->rv->dst_first || id >= e->rx->rv->dst_first + e->rx->rv->dst_count)
    return rf__fail(e, RF_ERR_ARG, "dst %u is not a tensor of receiver %u (its ids are %u..%u)", id, e->cfg.rank,
                    e->rx->rv->dst_first, e->rx->rv->dst_first + e->rx->rv->dst_count - 1);
  const rf_dst_tensor *d = &p->dst[id];
  if (!ptr) return rf__fail(e, RF_ERR_ARG, "tensor '%s': NULL pointer", d->name);
  if (bytes != d->bytes)
    return rf__fail(e, RF_ERR_SIZE, "tensor '%s' (dst %u): bound %zu bytes, the table says %llu", d->name, id, bytes,
                    (unsigned long long)d->bytes);
  RF_CHECK(e->mem->check(e, ptr, bytes, d->name));
  e->rx->dst_ptr[id - e->rx->rv->dst_first] = ptr;
  return RF_OK;
}

/* a storage refit rebuilds (derived tensors are views into storages: bound once, through the first) */
static int owned_storage(const rf_derived_tensor *d, uint32_t id) { return d->storage == id && d->dst == RF_NONE; }

rf_status rf__receiver_bind_derived(rf_engine *e, uint32_t id, void *ptr, size_t bytes)
{
  if (e->rx->listening) return rf__fail(e, RF_ERR_STATE, "rf_bind_derived after rf_listen");
  const rf_plan *p = e->p;
  if (id >= p->n_derived || p->derived[id].tp_rank != e->rx->pos)
    return rf__fail(e, RF_ERR_ARG, "derived %u is not a tensor of receiver %u", id, e->cfg.rank);
  const rf_derived_tensor *d = &p->derived[id];
  if (d->dst != RF_NONE)
    return rf__fail(e, RF_ERR_ARG, "derived tensor '%s' (derived %u) is a view of '%s' (dst %u): it changes with that "
                    "tensor, nothing to bind", d->name, id, p->dst[d->dst].name, d->dst);
  if (d->storage != id)
    return rf__fail(e, RF_ERR_ARG, "derived tensor '%s' (derived %u) lies in the storage of '%s' (derived %u): bind "
                    "that storage once, through '%s'", d->name, id, p->derived[d->storage].name, d->storage,
                    p->derived[d->storage].name);
  if (!ptr) return rf__fail(e, RF_ERR_ARG, "derived tensor '%s': NULL pointer", d->name);
  if (bytes != d->bytes)
    return rf__fail(e, RF_ERR_SIZE, "derived storage of '%s' (derived %u): bound %zu bytes, the table says %llu", d->name,
                    id, bytes, (unsigned long long)d->bytes);
  RF_CHECK(e->mem->check(e, ptr, bytes, d->name));
  e->rx->der_ptr[id] = ptr;
  return RF_OK;
}

rf_status rf__receiver_alloc(rf_engine *e, size_t bytes, void **ptr)
{
  if (e->mem->device) return rf__fail(e, RF_ERR_STATE, "rf_alloc: host engines only (bind cudaMalloc memory)");
  if (e->rx->n_regions == sizeof e->rx->region / sizeof e->rx->region[0])
    return rf__fail(e, RF_ERR_NOMEM, "rf_alloc: at most %zu regions per engine", sizeof e->rx->region / sizeof e->rx->region[0]);
  void *memh;
  RF_CHECK(rf__ucx_alloc(e, bytes, ptr, &memh));
  e->rx->region[e->rx->n_regions].ptr = *ptr;
  e->rx->region[e->rx->n_regions].bytes = bytes;
  e->rx->region[e->rx->n_regions++].memh = memh;
  return RF_OK;
}

static rf_status prepare_refresh(rf_engine *e)
{
  const rf_plan *p = e->p;
  for (uint32_t i = 0; i < p->n_derived; i++)
    if (p->derived[i].tp_rank == e->rx->pos && owned_storage(&p->derived[i], i) && !e->rx->der_ptr[i])
      return rf__fail(e, RF_ERR_UNBOUND,
                      "derived tensor '%s' (derived %u) is not bound: the receiver rebuilds its storage after every "
                      "version, bind the engine's storage with rf_bind_derived",
                      p->derived[i].name, i);
  for (uint32_t k = 0; k < e->rx->ref_count; k++) {
    const rf_refresh *r = &p->refresh[e->rx->ref_first + k];
    const rf_derived_tensor *uk = &p->derived[r->out0], *uv = &p->derived[r->out1];
    /* both views in the storage refit rebuilds, each element written once */
    e->rx->layout[k] = (rfk_mla_layout){(int)r->heads, (int)r->qk_nope, (int)r->v_head, (int)r->kv_lora,
                                    (int64_t)(uk->bytes / 2), uk->offset, {uk->stride[0], uk->stride[1], uk->stride[2]},
                                    uv->offset, {uv->stride[0], uv->stride[1], uv->stride[2]}};
    if (uk->storage != r->out0 || uv->storage != r->out0 || !owned_storage(uk, r->out0) ||
        rfk_mla_layout_check(&e->rx->layout[k]) != 0)
      return rf__fail(e, RF_ERR_ARG, "refresh of '%s': the views '%s' and '%s' do not lie in one storage refit rebuilds, "
                      "or leave or overlap it", p->dst[r->weight].name, uk->name, uv->name);
    rfk_mla_absorb *a = &e->rx->absorb[k];
    a->kv_b = e->rx->dst_ptr[r->weight - e->rx->rv->dst_first];
    a->scale = r->scale == RF_NONE ? NULL : e->rx->dst_ptr[r->scale - e->rx->rv->dst_first];
    a->out = e->rx->der_ptr[r->out0];
  }
  return RF_OK;
}

/* rebuild every derived storage of this position, each step with its own layout (runs of steps
 * with the same layout go in one call) */
static rf_status refresh(rf_engine *e)
{
  return e->mem->refresh(e, &e->p->refresh[e->rx->ref_first], e->rx->absorb, e->rx->layout, e->rx->ref_count);
}

static void unmap_all(rf_engine *e)
{
  for (uint32_t i = 0; i < e->rx->rv->dst_count; i++) {
    int shared = 0;
    for (uint32_t k = 0; k < e->rx->n_regions; k++) shared |= e->rx->dst_memh[i] == e->rx->region[k].memh;
    if (e->rx->dst_memh[i] && !shared) rf__ucx_unmap(e, e->rx->dst_memh[i]);
    e->rx->dst_memh[i] = NULL;
  }
}

/* the blob: worker address plus every bound tensor's address and packed key, then the patch area's
 * and the directory's (delta plans) */
static rf_status build_blob(rf_engine *e)
{
  const rf_plan *p = e->p;
  uint32_t nd = e->rx->rv->dst_count, n = nd + rf__blob_areas(p, e->cfg.rank);
  const void *addr;
  size_t alen;
  RF_CHECK(rf__ucx_worker_address(e, &addr, &alen));
  rf__blob_entry *en = calloc(n ? n : 1, sizeof *en);
  void **keys = calloc(n ? n : 1, sizeof *keys);
  uint32_t *klen = calloc(n ? n : 1, sizeof *klen);
  rf_status st = RF_OK;
  if (!en || !keys || !klen) st = rf__fail(e, RF_ERR_NOMEM, "metadata blob");
  rf__blob_entry area = {.id = RF__AREA_PATCH}, dir = {.id = RF__AREA_DIR};
  void *area_memh = NULL, *dir_memh = NULL;
  if (e->rx->pa) rf__patch_areas(e->rx->pa, &area, &area_memh, &dir, &dir_memh);
  for (uint32_t i = 0; i < n && st == RF_OK; i++) {
    size_t kl;
    void *memh = i < nd ? e->rx->dst_memh[i] : i == nd ? area_memh : dir_memh;
    if ((st = rf__ucx_pack_key(e, memh, &keys[i], &kl)) != RF_OK) {
      st = rf__fail(e, st, "packing the key of '%s': %s", i < nd ? p->dst[e->rx->rv->dst_first + i].name : "the patch area",
                    e->err);
      break;
    }
    klen[i] = (uint32_t)kl;
    if (i < nd)
      en[i] = (rf__blob_entry){.id = e->rx->rv->dst_first + i, .addr = (uint64_t)(uintptr_t)e->rx->dst_ptr[i],
                               .bytes = p->dst[e->rx->rv->dst_first + i].bytes, .rkey = keys[i], .rkey_len = klen[i]};
    else
      en[i] = i == nd ? area : dir;
    en[i].rkey = keys[i];
    en[i].rkey_len = klen[i];
  }
  if (st == RF_OK) {
    e->rx->blob_len = rf__blob_size((uint32_t)alen, n, klen);
    e->rx->blob = malloc(e->rx->blob_len);
    if (!e->rx->blob) st = rf__fail(e, RF_ERR_NOMEM, "metadata blob of %zu bytes", e->rx->blob_len);
    else rf__blob_write(e->rx->blob, p, &e->token_key, e->cfg.rank, addr, (uint32_t)alen, n, en);
  }
  for (uint32_t i = 0; keys && i < n; i++)
    if (keys[i]) rf__ucx_release_key(keys[i]);
  free(en);
  free(keys);
  free(klen);
  return st;
}

/* the end of the run of kernel steps from steps[k] (of n): the steps after it with the same op, which the
 * memory backend runs in one call (CUDA: one launch, one sync) */
static uint32_t fin_run(const rf_plan *p, const uint32_t *steps, uint32_t n, uint32_t k)
{
  uint32_t j = k + 1;
  while (j < n && p->finalize[steps[j]].op == p->finalize[steps[k]].op) j++;
  return j;
}

rf_status rf__receiver_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out)
{
  if (e->rx->listening) return rf__fail(e, RF_ERR_STATE, "rf_listen called twice");
  const rf_plan *p = e->p;
  for (uint32_t i = 0; i < e->rx->rv->dst_count; i++)
    if (!e->rx->dst_ptr[i])
      return rf__fail(e, RF_ERR_UNBOUND, "tensor '%s' (dst %u) of receiver %u is not bound",
                      p->dst[e->rx->rv->dst_first + i].name, e->rx->rv->dst_first + i, e->cfg.rank);
  RF_CHECK(prepare_refresh(e));
  if (e->rx->n_fin_engine && !e->rx->fin_fn) {
    const rf_finalize *f = &p->finalize[e->rx->fin_engine[0]];
    return rf__fail(e, RF_ERR_UNBOUND, "finalize step '%s' of '%s' (and %u more engine steps of receiver %u) runs the "
                    "engine's own post-load code: set a hook with rf_set_finalize before rf_listen", f->name,
                    p->dst[f->dst].name, e->rx->n_fin_engine - 1, e->cfg.rank);
  }
  /* CUDA: run the refresh once now, from the tensors as bound: it loads the refresh kernels while no
   * stream waits on a version (lazy module loading behind a stream wait can stall the context); the
   * finalize kernels likewise, into scratch memory */
  if (e->mem->device && e->rx->ref_count) RF_CHECK(refresh(e));
  for (uint32_t k = 0; k < e->rx->n_fin_kernel; k++) {
    const rf_finalize *f = &p->finalize[e->rx->fin_kernel[k]];
    e->rx->fin_in[k] = e->rx->dst_ptr[f->dst - e->rx->rv->dst_first];
    e->rx->fin_out[k] = e->rx->der_ptr[f->out];
  }
  for (uint32_t k = 0, j, bad; k < e->rx->n_fin_kernel; k = j) {
    j = fin_run(p, e->rx->fin_kernel, e->rx->n_fin_kernel, k);
    RF_CHECK(e->mem->finalize(e, e->rx->fin_kernel + k, j - k, e->rx->fin_in + k, e->rx->fin_out + k, 1, &bad));
  }
  rf_status st = RF_OK;
  for (uint32_t i = 0; i < e->rx->rv->dst_count && st == RF_OK; i++) {
    uint8_t *ptr = e->rx->dst_ptr[i];
    uint64_t n = p->dst[e->rx->rv->dst_first + i].bytes;
    void *shared = NULL; /* inside an rf_alloc region: its registration covers the tensor */
    for (uint32_t k = 0; k < e->rx->n_regions && !shared; k++)
      if (ptr >= e->rx->region[k].ptr && ptr + n <= e->rx->region[k].ptr + e->rx->region[k].bytes) shared = e->rx->region[k].memh;
    if (shared) e->rx->dst_memh[i] = shared;
    else st = rf__ucx_map(e, ptr, n, &e->rx->dst_memh[i]);
  }
  if (st == RF_OK && rf__blob_areas(p, e->cfg.rank)) st = rf__patch_open(e, e->rx->rv, e->rx->dst_ptr, &e->rx->pa);
  if (st == RF_OK) st = build_blob(e);
  if (st == RF_OK) st = rf__ucx_listen(e, ip, port, port_out);
  if (st != RF_OK) { /* leave nothing registered: rf_listen may be called again */
    unmap_all(e);
    rf__patch_close(e, e->rx->pa);
    e->rx->pa = NULL;
    free(e->rx->blob);
    e->rx->blob = NULL;
    e->rx->blob_len = 0;
    return st;
  }
  e->rx->listening = 1;
  return RF_OK;
}

/* ---------------------------------- messages ---------------------------------------------- */

static void send_msg(rf_engine *e, rf__conn *c, uint32_t type, uint64_t version, uint64_t value, const char *text)
{
  rf__hdr h = {.magic = RF__MAGIC, .type = type, .session = c->session, .version = version, .value = value,
               .rank = c->rank, .recv = e->cfg.rank, .len = text ? (uint32_t)strlen(text) : 0};
  h.mac = rf__msg_mac(&c->key, &h, text);
  rf__ucx_send(e, c->ep, &h, text); /* a failed send fails the endpoint: handled as its event */
}

static void close_conn(rf_engine *e, rf__conn *c)
{
  if (c->state == C_FREE) return;
  if (c->state == C_AUTHED && c->peer != RF_NONE && e->rx->peer_conn[c->peer] == (uint32_t)(c - e->rx->conns))
    e->rx->peer_conn[c->peer] = RF_NONE;
  rf__ucx_close_ep(e, c->ep);
  memset(c, 0, sizeof *c);
}

static void note_refusal(rf_engine *e, const char *fmt, va_list ap)
{
  vsnprintf(e->rx->refuse_reason, sizeof e->rx->refuse_reason, fmt, ap);
  snprintf(e->err, sizeof e->err, "refused a connection: %s", e->rx->refuse_reason);
  e->rx->refused++;
}

/* a refusal with no connection to answer on (blob mode): only the receiver's record */
static void refused(rf_engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refused(rf_engine *e, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  note_refusal(e, fmt, ap);
  va_end(ap);
}

static void refuse(rf_engine *e, rf__conn *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void refuse(rf_engine *e, rf__conn *c, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  note_refusal(e, fmt, ap);
  va_end(ap);
  /* the peer learns nothing about this receiver: an unkeyed REJECT, then the connection closes */
  rf__hdr h = {.magic = RF__MAGIC, .type = RF__REJECT, .session = c->session};
  rf__ucx_send(e, c->ep, &h, NULL);
  c->state = C_REJECTED;
  c->t0 = rf__now_ns();
}

/* tear the armed version: fence every peer granted it and not done, tell done ones */
static void tear(rf_engine *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tear(rf_engine *e, const char *fmt, ...)
{
  if (!e->rx->v_armed) return;
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(e->rx->torn_reason, sizeof e->rx->torn_reason, "version %llu torn: ", (unsigned long long)e->rx->v_armed);
  vsnprintf(e->rx->torn_reason + n, sizeof e->rx->torn_reason - (size_t)n, fmt, ap);
  va_end(ap);
  e->rx->v_torn = e->rx->v_torn_since_arm = e->rx->v_armed;
  e->rx->fin_all = 1;
  e->ctr.torn++;
  rf__changed(e);
  for (uint32_t k = 0; k < e->rx->rv->peer_count; k++) {
    uint32_t ci = e->rx->peer_conn[k];
    if (ci == RF_NONE) continue;
    if (e->rx->peer_granted[k] && !e->rx->peer_done[k]) { /* may still be writing: fence */
      close_conn(e, &e->rx->conns[ci]);
      e->ctr.fenced++;
    } else if (e->rx->peer_done[k]) {
      send_msg(e, &e->rx->conns[ci], RF__ACK, e->rx->v_armed, 0, e->rx->torn_reason);
    }
  }
  e->rx->v_armed = 0;
  e->mem->publish(e, e->rx->v_complete); /* unchanged: waits stay held */
}

static void grant(rf_engine *e, uint32_t k)
{
  e->rx->peer_granted[k] = 1;
  if (!e->rx->v_first_grant) e->rx->v_first_grant = rf__now_ns();
  send_msg(e, &e->rx->conns[e->rx->peer_conn[k]], RF__GRANT, e->rx->v_armed, 0, NULL);
}

static void refuse_version(rf_engine *e, uint32_t k, uint64_t v, const char *why)
{
  char text[200];
  snprintf(text, sizeof text, "receiver %u refuses version %llu: %s", e->cfg.rank, (unsigned long long)v, why);
  e->rx->peer_begun[k] = 0;
  send_msg(e, &e->rx->conns[e->rx->peer_conn[k]], RF__REFUSE, v, e->rx->v_complete, text);
}

static void arm(rf_engine *e, uint64_t v)
{
  if (e->rx->v_armed && e->rx->v_armed != v) {
    int writing = 0;
    for (uint32_t k = 0; k < e->rx->rv->peer_count; k++) writing |= e->rx->peer_granted[k];
    if (writing) tear(e, "superseded: version %llu was armed", (unsigned long long)v);
  }
  e->rx->v_armed = v;
  e->rx->v_torn_since_arm = 0;
  e->rx->v_first_grant = 0;
  e->rx->peers_done = 0;
  memset(e->rx->peer_granted, 0, e->rx->rv->peer_count);
  memset(e->rx->peer_done, 0, e->rx->rv->peer_count);
  memset(e->rx->peer_delta, 0, e->rx->rv->peer_count);
  /* no trainer writes before its grant: a directory entry this version does not write reads 0 bytes
   * with digest 0, which no region has (so nothing of an older version passes for this one) */
  rf__patch_arm(e->rx->pa);
  for (uint32_t k = 0; k < e->rx->rv->peer_count; k++) {
    if (e->rx->peer_conn[k] == RF_NONE || !e->rx->peer_begun[k]) continue;
    if (e->rx->peer_begun[k] == v) grant(e, k);
    else if (e->rx->peer_begun[k] < v) refuse_version(e, k, e->rx->peer_begun[k], "a newer version is armed");
  }
}

rf_status rf__receiver_arm(rf_engine *e, uint64_t v)
{
  if (!e->rx->listening) return rf__fail(e, RF_ERR_STATE, "rf_arm before rf_listen");
  if (v <= e->rx->v_complete)
    return rf__fail(e, RF_ERR_STALE, "rf_arm(%llu): not newer than the complete version %llu",
                    (unsigned long long)v, (unsigned long long)e->rx->v_complete);
  if (v != e->rx->v_armed) arm(e, v);
  return RF_OK;
}

rf_status rf__receiver_set_finalize(rf_engine *e, rf_finalize_fn fn, void *ctx)
{
  if (e->rx->listening && !fn && e->rx->n_fin_engine)
    return rf__fail(e, RF_ERR_STATE, "rf_set_finalize(NULL) after rf_listen: receiver %u has %u engine finalize steps",
                    e->cfg.rank, e->rx->n_fin_engine);
  e->rx->fin_fn = fn;
  e->rx->fin_ctx = ctx;
  return RF_OK;
}

/* every byte of the armed version is in: run this position's finalize steps whose input changed,
 * kernels first, then the engine's hook once for its steps (not at all when none changed). A step's
 * input changed unless the version is a delta one (some peer sent patches) after a complete version
 * (then the patches' base is the bytes the steps last ran on) and none of its writes wrote a byte of
 * the step's dst, the one tensor a step reads (gen/schema.lua finalize). 0, or -1 after tearing the
 * version (naming the step). */
static int finalize(rf_engine *e, uint64_t deltas)
{
  const rf_plan *p = e->p;
  const rf_receiver *rv = e->rx->rv;
  uint64_t t0 = rf__now_ns(), v = e->rx->v_armed;
  char why[200] = "";
  const rf_finalize *bad = NULL;
  uint8_t *changed = e->rx->fin_changed;
  int all = e->rx->fin_all || !deltas;
  if (!all) {
    memset(changed, 0, rv->dst_count);
    rf__patch_changed(e, e->rx->pa, e->rx->peer_delta, changed);
  }
  /* the kernel steps whose input changed, compacted (all of them: the lists as rf_listen made them) */
  const uint32_t *ks = e->rx->fin_kernel;
  void *const *kin = e->rx->fin_in, *const *kout = e->rx->fin_out;
  uint32_t nk = e->rx->n_fin_kernel;
  if (!all) {
    nk = 0;
    for (uint32_t k = 0; k < e->rx->n_fin_kernel; k++) {
      if (!changed[p->finalize[e->rx->fin_kernel[k]].dst - rv->dst_first]) continue;
      e->rx->fin_ksel[nk] = e->rx->fin_kernel[k], e->rx->fin_kin[nk] = e->rx->fin_in[k];
      e->rx->fin_kout[nk++] = e->rx->fin_out[k];
    }
    ks = e->rx->fin_ksel, kin = e->rx->fin_kin, kout = e->rx->fin_kout;
    e->ctr.finalize_skipped += e->rx->n_fin_kernel - nk;
  }
  for (uint32_t k = 0, j, b = 0; k < nk && !bad; k = j) {
    j = fin_run(p, ks, nk, k);
    if (e->mem->finalize(e, ks + k, j - k, kin + k, kout + k, 0, &b) != RF_OK) {
      snprintf(why, sizeof why, "%.199s", e->err);
      bad = &p->finalize[ks[k + (b < j - k ? b : 0)]];
    }
    e->ctr.finalize_steps += j - k;
  }
  uint32_t n_run = 0; /* the engine steps whose input changed: the hook's */
  for (uint32_t k = 0; k < e->rx->n_fin_engine; k++) {
    uint32_t i = e->rx->fin_engine[k];
    if (all || changed[p->finalize[i].dst - rv->dst_first]) e->rx->fin_run[n_run++] = i;
    else e->ctr.finalize_skipped++;
  }
  if (!bad && n_run) {
    atomic_store(&e->in_hook, rf__self());
    int rc = e->rx->fin_fn(e->rx->fin_ctx, v, e->rx->fin_run, n_run, why, sizeof why);
    atomic_store(&e->in_hook, (uintptr_t)0);
    why[sizeof why - 1] = 0;
    e->ctr.finalize_steps += n_run;
    if (rc) {
      bad = &p->finalize[e->rx->fin_run[rc > 0 && (uint32_t)rc <= n_run ? rc - 1 : 0]];
      if (!why[0]) snprintf(why, sizeof why, "the engine's finalize hook returned %d", rc);
    }
  }
  e->ctr.last_finalize_ns = rf__now_ns() - t0;
  e->ctr.finalize_ns += e->ctr.last_finalize_ns;
  if (!bad) return 0;
  tear(e, "finalize step '%s' of '%s' failed: %s", bad->name, p->dst[bad->dst].name, why);
  return -1;
}

static void complete(rf_engine *e)
{
  uint64_t t0 = rf__now_ns(), deltas = 0;
  for (uint32_t k = 0; k < e->rx->rv->peer_count; k++) deltas += e->rx->peer_delta[k];
  if (deltas) { /* every DONE is in: apply the patches, then every patched region's digest must match */
    char why[480];
    uint32_t bad = RF_NONE;
    uint64_t bytes = 0;
    if (rf__patch_apply(e, e->rx->pa, e->rx->peer_delta, e->rx->v_armed, &bytes, &bad, why, sizeof why) != 0) {
      if (bad != RF_NONE && e->rx->peer_conn[bad] != RF_NONE) { /* the peer at fault is out of protocol: fence it */
        close_conn(e, &e->rx->conns[e->rx->peer_conn[bad]]);
        e->ctr.fenced++;
      }
      tear(e, "%s", why);
      return;
    }
    e->ctr.apply_ns += rf__now_ns() - t0;
    e->ctr.deltas += deltas;
    e->ctr.patch_bytes += bytes;
    t0 = rf__now_ns();
  }
  if (e->rx->ref_count && refresh(e) != RF_OK) {
    char why[200];
    snprintf(why, sizeof why, "%.199s", e->err);
    tear(e, "rebuilding derived tensors failed: %s", why);
    return;
  }
  e->ctr.refresh_ns += rf__now_ns() - t0;
  if (e->rx->fin_count && finalize(e, deltas) != 0) return; /* torn */
  e->rx->v_complete = e->rx->v_armed;
  e->rx->fin_all = 0;
  e->rx->v_armed = 0;
  rf__changed(e);
  e->ctr.versions++;
  e->ctr.bytes += e->rx->rv->bytes;
  e->mem->publish(e, e->rx->v_complete);
  for (uint32_t k = 0; k < e->rx->rv->peer_count; k++) {
    e->rx->peer_begun[k] = 0;
    if (e->rx->peer_conn[k] != RF_NONE) send_msg(e, &e->rx->conns[e->rx->peer_conn[k]], RF__ACK, e->rx->v_complete, 1, NULL);
  }
}

static rf__conn *new_conn(rf_engine *e, rf__ep ep)
{
  for (uint32_t i = 0; i < e->rx->n_conns; i++)
    if (e->rx->conns[i].state == C_FREE) {
      rf__conn *c = &e->rx->conns[i];
      memset(c, 0, sizeof *c);
      c->ep = ep;
      c->state = C_HELLO_WAIT;
      c->t0 = rf__now_ns();
      c->peer = RF_NONE;
      return c;
    }
  return NULL;
}

static rf__conn *conn_of(rf_engine *e, rf__ep ep)
{
  for (uint32_t i = 0; ep && i < e->rx->n_conns; i++)
    if (e->rx->conns[i].state != C_FREE && e->rx->conns[i].ep == ep) return &e->rx->conns[i];
  return NULL;
}

/* a connection went away (failed, or closed by us): if its peer was writing, the version is torn */
static void lost(rf_engine *e, rf__conn *c, const char *why)
{
  if (c->state == C_AUTHED && c->peer != RF_NONE && e->rx->peer_conn[c->peer] == (uint32_t)(c - e->rx->conns)) {
    uint32_t k = c->peer;
    if (e->rx->v_armed && e->rx->peer_granted[k] && !e->rx->peer_done[k]) {
      char w[160];
      snprintf(w, sizeof w, "%s", why);
      close_conn(e, c);
      e->ctr.fenced++;
      tear(e, "trainer rank %u disconnected before DONE (%s)", peer_row(e, k)->trainer, w);
      return;
    }
    e->rx->peer_begun[k] = 0;
  }
  close_conn(e, c);
}

static void on_hello(rf_engine *e, rf__conn *c, const rf__hdr *h, const uint8_t *payload, rf__ep from)
{
  /* HELLO carries a mac keyed by the token: nothing of a stranger's HELLO is used, above all not
   * the worker address it may carry, which UCX would parse */
  int mac_ok = h->mac == rf__msg_mac(&e->token_key, h, payload);
  if (!c || c->state != C_HELLO_WAIT || from != c->ep) { /* blob-mode HELLOs are stranger()'s */
    e->ctr.ignored++;
    return;
  }
  c->session = h->session;
  c->nonce_t = h->nonce;
  c->rank = h->rank;
  uint32_t k = peer_of_rank(e, h->rank);
  if (!mac_ok) return refuse(e, c, "a HELLO claiming trainer rank %u did not carry this token's MAC (wrong token)", h->rank);
  if (h->recv != e->cfg.rank)
    return refuse(e, c, "trainer rank %u asked for receiver %u, this is receiver %u", h->rank, h->recv, e->cfg.rank);
  if (h->hash != e->p->layout_hash)
    return refuse(e, c, "trainer rank %u has layout hash %016llx, this receiver %016llx (plan %s)", h->rank,
                  (unsigned long long)h->hash, (unsigned long long)e->p->layout_hash, e->p->name);
  if (k == RF_NONE)
    return refuse(e, c, "trainer rank %u does not write to receiver %u in plan %s", h->rank, e->cfg.rank, e->p->name);
  c->peer = k;
  c->nonce_r = rf__random64();
  c->state = C_CHALLENGED;
  /* proves to the trainer that it reached this plan's receiver with its token: mac over both
   * nonces, the layout hash (not sent: the mac covers it) and the receiver index */
  rf__hdr r = {.magic = RF__MAGIC, .type = RF__CHALLENGE, .session = c->session, .value = c->nonce_t,
               .nonce = c->nonce_r, .hash = e->p->layout_hash, .rank = c->rank, .recv = e->cfg.rank};
  r.mac = rf__msg_mac(&e->token_key, &r, NULL);
  r.hash = 0;
  rf__ucx_send(e, c->ep, &r, NULL);
}

static void authed(rf_engine *e, rf__conn *c);

static void on_auth(rf_engine *e, rf__conn *c, const rf__hdr *h)
{
  if (c->state != C_CHALLENGED || h->session != c->session) return;
  rf__hdr want = {.magic = RF__MAGIC, .type = RF__AUTH, .session = c->session, .value = c->nonce_t,
                  .nonce = c->nonce_r, .hash = e->p->layout_hash, .rank = c->rank, .recv = e->cfg.rank};
  if (h->len || h->version || h->mac != rf__msg_mac(&e->token_key, &want, NULL))
    return refuse(e, c, "trainer rank %u did not prove the token (wrong token)", c->rank);
  authed(e, c);
}

/* c proved the token over this receiver's nonce: it becomes the connection of its rank */
static void authed(rf_engine *e, rf__conn *c)
{
  c->key = rf__session_key(&e->token_key, c->nonce_t, c->nonce_r);
  c->state = C_AUTHED;
  uint32_t k = c->peer, old = e->rx->peer_conn[k];
  if (old != RF_NONE) { /* a newer connection replaces the older one, which can never write again */
    rf__conn *o = &e->rx->conns[old];
    int writing = e->rx->v_armed && e->rx->peer_granted[k] && !e->rx->peer_done[k];
    close_conn(e, o);
    e->ctr.fenced++;
    if (writing) tear(e, "trainer rank %u was replaced by a newer connection while writing", c->rank);
  }
  e->rx->peer_conn[k] = (uint32_t)(c - e->rx->conns);
  e->rx->peer_begun[k] = 0;
  if (e->rx->v_armed) { /* the new connection writes its part of the armed version afresh */
    if (e->rx->peer_done[k]) e->rx->peers_done--;
    e->rx->peer_granted[k] = e->rx->peer_done[k] = e->rx->peer_delta[k] = 0;
  }
  rf__hdr w = {.magic = RF__MAGIC, .type = RF__WELCOME, .session = c->session, .version = e->rx->v_armed,
               .value = e->rx->v_complete, .rank = c->rank, .recv = e->cfg.rank, .len = (uint32_t)e->rx->blob_len};
  w.mac = rf__msg_mac(&c->key, &w, e->rx->blob);
  rf__ucx_send_ref(e, c->ep, &w, e->rx->blob);
}

/* ---------------------------------- blob-mode handshake ----------------------------------- */

static uint64_t now_ms(void) { return rf__now_ns() / 1000000u; }

/* the CHALLENGE nonce of a blob-mode HELLO: nothing is kept, the AUTH brings it all back */
static uint64_t cookie(const rf_engine *e, const rf__hdr *h, uint64_t issued_ms)
{
  uint64_t in[6] = {h->session, h->value, h->rank, h->recv, issued_ms, e->p->layout_hash};
  if (h->type == RF__HELLO) in[1] = h->nonce; /* HELLO: nonce_t in nonce; AUTH: in value */
  return rf__mac(&e->rx->ck->secret, in, sizeof in);
}

static int session_seen(const rf_engine *e, uint64_t session)
{
  for (uint32_t i = 0; i < e->rx->n_conns; i++)
    if (e->rx->conns[i].state != C_FREE && e->rx->conns[i].session == session) return 1;
  for (uint32_t i = 0; i < SEEN; i++)
    if (e->rx->ck->seen[i] == session) return 1;
  return 0;
}

/* an AUTH on an endpoint UCX made (blob mode): 1 when it proves the token over a nonce this receiver
 * issued within handshake_ms (and after floor_ms) for a session that has no connection yet */
static int blob_auth_ok(rf_engine *e, const rf__hdr *h, const void *payload)
{
  rf__hdr want = *h;
  want.hash = e->p->layout_hash;
  want.mac = 0;
  uint64_t now = now_ms();
  return h->mac == rf__msg_mac(&e->token_key, &want, payload) && h->recv == e->cfg.rank &&
         h->nonce == cookie(e, h, h->version) && h->version <= now && now - h->version <= e->handshake_ms &&
         h->version > e->rx->ck->floor_ms && !session_seen(e, h->session);
}

/* the stranger hook (ucx.c, inside its callback): HELLO and AUTH from trainers that connected with a
 * blob; anything else, or anything that fails its checks, is dropped and counted */
static int stranger(rf_engine *e, const rf__hdr *h, const void *payload, rf__hdr *r)
{
  if (h->type == RF__AUTH) {
    if (blob_auth_ok(e, h, payload)) return RF__STRANGER_QUEUE;
    e->ctr.ignored++;
    return RF__STRANGER_DROP;
  }
  if (h->type != RF__HELLO || h->mac != rf__msg_mac(&e->token_key, h, payload) || session_seen(e, h->session)) {
    e->ctr.ignored++;
    return RF__STRANGER_DROP;
  }
  *r = (rf__hdr){.magic = RF__MAGIC, .session = h->session};
  const char *why = h->recv != e->cfg.rank ? "asked for another receiver" : h->hash != e->p->layout_hash
                    ? "has another layout hash" : peer_of_rank(e, h->rank) == RF_NONE ? "does not write to it" : NULL;
  if (why) { /* the peer holds the token, so the refusal is its mistake: the receiver keeps the reason */
    refused(e, "trainer rank %u (blob, receiver %u, layout hash %016llx) %s: this is receiver %u of plan %s, layout hash "
            "%016llx", h->rank, h->recv, (unsigned long long)h->hash, why, e->cfg.rank, e->p->name,
            (unsigned long long)e->p->layout_hash);
    r->type = RF__REJECT;
    return RF__STRANGER_REPLY;
  }
  uint64_t issued = now_ms();
  *r = (rf__hdr){.magic = RF__MAGIC, .type = RF__CHALLENGE, .session = h->session, .version = issued,
                 .value = h->nonce, .nonce = cookie(e, h, issued), .hash = e->p->layout_hash, .rank = h->rank,
                 .recv = e->cfg.rank};
  r->mac = rf__msg_mac(&e->token_key, r, NULL);
  r->hash = 0;
  e->ctr.challenged++;
  return RF__STRANGER_REPLY;
}

/* remember a session that got a connection until its nonce expires; a full table raises the floor */
static void seen_add(rf_engine *e, uint64_t session, uint64_t issued_ms)
{
  struct rf__cookie *k = e->rx->ck;
  uint32_t at = 0;
  for (uint32_t i = 0; i < SEEN; i++) {
    if (!k->seen[i] || now_ms() - k->seen_ms[i] > e->handshake_ms) { /* free or expired: no floor needed */
      at = i;
      goto put;
    }
    if (k->seen_ms[i] < k->seen_ms[at]) at = i;
  }
  if (k->seen_ms[at] > k->floor_ms) k->floor_ms = k->seen_ms[at];
put:
  k->seen[at] = session;
  k->seen_ms[at] = issued_ms;
}

/* an AUTH that stranger() queued: checked again (a copy of it may have been queued twice), then a
 * slot, an endpoint to the address it carries, and the connection of its rank */
static void on_blob_auth(rf_engine *e, const rf__hdr *h, const uint8_t *payload, const void *from)
{
  char why[160];
  if (!blob_auth_ok(e, h, payload)) {
    e->ctr.ignored++;
    return;
  }
  uint32_t k = peer_of_rank(e, h->rank);
  if (k == RF_NONE) { /* a CHALLENGE never went to it */
    e->ctr.ignored++;
    return;
  }
  seen_add(e, h->session, h->version);
  if (rf__addr_check(payload, h->len, why, sizeof why)) return refused(e, "trainer rank %u (blob): %s", h->rank, why);
  rf__conn *c = NULL;
  for (uint32_t i = 0; !c && i < e->rx->n_conns; i++)
    if (e->rx->conns[i].state == C_FREE) c = &e->rx->conns[i];
  rf__ep ep = 0;
  if (!c) return refused(e, "trainer rank %u (blob): all %u connection slots are taken", h->rank, e->rx->n_conns);
  if (rf__ucx_connect_peer(e, payload, h->len, from, &ep) != RF_OK) {
    snprintf(why, sizeof why, "%.159s", e->err);
    return refused(e, "trainer rank %u (blob): %s", h->rank, why);
  }
  c = new_conn(e, ep);
  c->session = h->session;
  c->nonce_t = h->value;
  c->nonce_r = h->nonce;
  c->rank = h->rank;
  c->peer = k;
  authed(e, c);
}

static void on_begin(rf_engine *e, uint32_t k, uint64_t v)
{
  if (v <= e->rx->v_complete) return refuse_version(e, k, v, "not newer than the complete version");
  e->rx->peer_begun[k] = v;
  if (e->cfg.auto_arm && v > e->rx->v_armed) arm(e, v);
  if (v == e->rx->v_armed) {
    if (!e->rx->peer_granted[k]) grant(e, k);
  } else if (e->rx->v_armed && v < e->rx->v_armed) {
    refuse_version(e, k, v, "older than the armed version");
  } /* newer than armed: held until the engine arms it */
}

static void on_done(rf_engine *e, uint32_t k, const rf__hdr *h)
{
  uint32_t rank = peer_row(e, k)->trainer;
  rf__conn *c = &e->rx->conns[e->rx->peer_conn[k]];
  if (!e->rx->v_armed || h->version != e->rx->v_armed || !e->rx->peer_granted[k] || e->rx->peer_done[k]) {
    /* a DONE this receiver did not ask for: the peer is out of protocol */
    uint64_t v = h->version;
    close_conn(e, c);
    e->ctr.fenced++;
    tear(e, "trainer rank %u sent DONE for version %llu, which it was not granted", rank, (unsigned long long)v);
    return;
  }
  char why[480] = "";
  if (h->mode == RF__DONE_DELTA)
    rf__patch_done(e, e->rx->pa, e->rx->rv, k, h->version, h->value, h->hash, e->rx->v_complete, why, sizeof why);
  else if (h->mode != RF__DONE_DENSE) snprintf(why, sizeof why, "trainer rank %u sent DONE with mode %u", rank, h->mode);
  else if (h->value != peer_row(e, k)->bytes)
    snprintf(why, sizeof why, "trainer rank %u wrote %llu bytes, the table says %llu", rank, (unsigned long long)h->value,
             (unsigned long long)peer_row(e, k)->bytes);
  if (why[0]) {
    close_conn(e, c);
    e->ctr.fenced++;
    tear(e, "%s", why);
    return;
  }
  e->rx->peer_delta[k] = h->mode == RF__DONE_DELTA;
  e->rx->peer_done[k] = 1;
  e->rx->peers_done++; /* all in: the version completes in the next rf__receiver_step (not in rf_progress) */
}

/* every peer's DONE is in and checked: apply, refresh, complete */
static int settled(const rf_engine *e) { return e->rx->v_armed && e->rx->rv->peer_count && e->rx->peers_done == e->rx->rv->peer_count; }

static void on_msg(rf_engine *e, const rf__ev *ev)
{
  rf__hdr h;
  memcpy(&h, ev->msg, sizeof h);
  const uint8_t *payload = ev->msg + sizeof h;
  rf__conn *c = conn_of(e, ev->ep);
  if (!ev->ep && h.type == RF__AUTH) return on_blob_auth(e, &h, payload, ev->from);
  if (h.type == RF__HELLO) return on_hello(e, c, &h, payload, ev->ep);
  if (!c) return;
  if (h.type == RF__AUTH) return on_auth(e, c, &h);
  uint32_t ci = (uint32_t)(c - e->rx->conns);
  if (c->state != C_AUTHED || e->rx->peer_conn[c->peer] != ci || h.session != c->session ||
      h.mac != rf__msg_mac(&c->key, &h, payload)) {
    e->ctr.ignored++;
    return;
  }
  if (h.type == RF__BEGIN) on_begin(e, c->peer, h.version);
  else if (h.type == RF__DONE) on_done(e, c->peer, &h);
  else e->ctr.ignored++;
}

void rf__receiver_events(rf_engine *e)
{
  rf__ucx_progress(e);
  const rf__ev *ev;
  while (rf__ucx_next(e, &ev)) {
    rf__changed(e);
    if (ev->kind == RF__EV_CONN) {
      if (!new_conn(e, ev->ep)) rf__ucx_close_ep(e, ev->ep);
    } else if (ev->kind == RF__EV_MSG) {
      if (ev->len >= sizeof(rf__hdr)) on_msg(e, ev);
    } else if (ev->kind == RF__EV_FAILED) {
      rf__conn *c = conn_of(e, ev->ep);
      if (c) lost(e, c, ev->why);
      else rf__ucx_close_ep(e, ev->ep);
    }
  }
  for (uint32_t i = 0; i < e->rx->n_conns; i++) {
    rf__conn *c = &e->rx->conns[i];
    if (c->state == C_FREE || c->state == C_AUTHED) continue;
    /* handshakes end in handshake_ms; a REJECT gets a moment to reach the peer first (the close
     * that follows cancels what is still in flight, and a local completion says nothing of that) */
    uint32_t grace = e->handshake_ms < REJECT_GRACE_MS ? e->handshake_ms : REJECT_GRACE_MS;
    if (rf__past(c->t0, c->state == C_REJECTED ? grace : e->handshake_ms)) close_conn(e, c);
  }
  if (e->rx->v_armed && !settled(e) && e->rx->v_first_grant && rf__past(e->rx->v_first_grant, e->timeout_ms)) {
    char missing[128] = "";
    size_t n = 0;
    for (uint32_t k = 0; k < e->rx->rv->peer_count && n + 12 < sizeof missing; k++)
      if (!e->rx->peer_done[k])
        n += (size_t)snprintf(missing + n, sizeof missing - n, "%s%u", n ? "," : "", peer_row(e, k)->trainer);
    tear(e, "no DONE from trainer rank(s) %s within %u ms of the first grant", missing, e->timeout_ms);
  }
}

rf_status rf__receiver_step(rf_engine *e)
{
  rf__receiver_events(e);
  if (settled(e)) complete(e);
  return RF_OK;
}

int rf__receiver_settled(rf_engine *e)
{
  rf__lock(e);
  int s = settled(e);
  rf__unlock(e);
  return s;
}

static int version_settled(rf_engine *e, uint64_t v) { return e->rx->v_complete >= v || e->rx->v_torn_since_arm >= v; }

rf_status rf__receiver_wait(rf_engine *e, uint64_t v, uint32_t ms)
{
  if (!rf__drive_until(e, version_settled, v, ms))
    return rf__fail(e, RF_ERR_TIMEOUT, "version %llu not complete after %u ms (newest complete %llu, armed %llu)",
                    (unsigned long long)v, ms, (unsigned long long)e->rx->v_complete, (unsigned long long)e->rx->v_armed);
  if (e->rx->v_complete < v) return rf__fail(e, RF_ERR_TORN, "%s", e->rx->torn_reason);
  return RF_OK;
}

rf_status rf__receiver_export(rf_engine *e, void *buf, size_t cap, size_t *len)
{
  rf__held(e, "rf_export");
  if (!e->rx->blob) return rf__fail(e, RF_ERR_STATE, "rf_export before rf_listen");
  *len = e->rx->blob_len;
  if (!buf || cap < e->rx->blob_len) return rf__fail(e, RF_ERR_SIZE, "blob needs %zu bytes", e->rx->blob_len);
  memcpy(buf, e->rx->blob, e->rx->blob_len);
  return RF_OK;
}

void rf__receiver_state(const rf_engine *e, rf_version_state *st)
{
  st->complete = e->rx->v_complete;
  st->torn = e->rx->v_torn;
  st->armed = e->rx->v_armed;
  st->refused = e->rx->refused;
  memcpy(st->torn_reason, e->rx->torn_reason, sizeof st->torn_reason);
}
