/* engine.c: the public entry points. It checks arguments and roles, owns the engine's lifetime and
 * its optional progress thread, and hands each call to the role's state machine (trainer.c,
 * receiver.c). Nothing below calls back into this file.
 *
 * Every entry point holds the engine lock (drive.c; a no-op without cfg.progress_thread) and every
 * wait is rf__drive_until (internal.h states the threading rule). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define lock rf__lock
#define unlock rf__unlock

static rf_status copy_str(rf_engine *e, char *dst, size_t cap, const char *src, const char *what)
{
  if (src && strlen(src) >= cap)
    return rf__fail(e, RF_ERR_ARG, "rf_open: %s '%.40s...' is longer than %zu characters", what, src, cap - 1);
  snprintf(dst, cap, "%s", src ? src : "");
  return RF_OK;
}

rf_status rf_open(const rf_config *cfg, rf_engine **out)
{
  if (!out) return RF_ERR_ARG;
  *out = NULL;
  rf_engine *e = calloc(1, sizeof *e);
  if (!e) return RF_ERR_NOMEM;
  *out = e;
  if (!cfg || !cfg->plan) return rf__fail(e, RF_ERR_ARG, "rf_open: no plan");
  if (cfg->role != RF_TRAINER && cfg->role != RF_RECEIVER)
    return rf__fail(e, RF_ERR_ARG, "rf_open: role must be RF_TRAINER or RF_RECEIVER");
  if (cfg->mem != RF_MEM_HOST && cfg->mem != RF_MEM_CUDA)
    return rf__fail(e, RF_ERR_ARG, "rf_open: mem must be RF_MEM_HOST or RF_MEM_CUDA");
  e->cfg = *cfg;
  e->p = cfg->plan;
  uint64_t h = rf_plan_hash(e->p);
  if (h != e->p->layout_hash)
    return rf__fail(e, RF_ERR_HASH, "plan %s: tables hash to %016llx but say %016llx (tables edited by hand?)", e->p->name,
                    (unsigned long long)h, (unsigned long long)e->p->layout_hash);
  /* keep copies of the strings: the caller's may not outlive rf_open */
  RF_CHECK(copy_str(e, e->tls, sizeof e->tls, cfg->ucx_tls, "ucx_tls"));
  RF_CHECK(copy_str(e, e->nic_mode, sizeof e->nic_mode, cfg->nic_mode ? cfg->nic_mode : "off", "nic_mode"));
  RF_CHECK(copy_str(e, e->gpu_bdf, sizeof e->gpu_bdf, cfg->gpu_bdf, "gpu_bdf"));
  RF_CHECK(copy_str(e, e->sysfs, sizeof e->sysfs, cfg->sysfs_root ? cfg->sysfs_root : "/sys", "sysfs_root"));
  e->cfg.ucx_tls = cfg->ucx_tls ? e->tls : NULL;
  e->cfg.nic_mode = e->nic_mode;
  e->cfg.gpu_bdf = cfg->gpu_bdf ? e->gpu_bdf : NULL;
  e->cfg.sysfs_root = e->sysfs;
  e->max_inflight = cfg->max_inflight ? cfg->max_inflight : 64;
  e->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
  e->handshake_ms = cfg->handshake_ms ? cfg->handshake_ms : 2000;
  e->token_key = rf__token_key(cfg->token);
  e->mem = cfg->mem == RF_MEM_CUDA ? &rf__mem_cuda : &rf__mem_host;
  if (e->mem->device) RF_CHECK(rf__cuda_open(e));
  e->step = cfg->role == RF_TRAINER ? rf__trainer_step : rf__receiver_step;
  RF_CHECK(cfg->role == RF_TRAINER ? rf__trainer_open(e) : rf__receiver_open(e));
  return cfg->progress_thread ? rf__progress_start(e) : RF_OK;
}

void rf_close(rf_engine *e)
{
  if (!e) return;
  rf__progress_stop(e);
  rf__ucx_drain(e);                                    /* what was handed to UCX goes out first */
  if (e->cfg.role == RF_TRAINER) rf__trainer_close(e);
  else if (e->cfg.role == RF_RECEIVER) rf__receiver_close(e);
  rf__ucx_close(e);                                    /* endpoints, listener, worker, context */
  if (e->mem && e->mem->device) rf__cuda_close(e);   /* what cuda.c allocated for itself */
  free(e);
}

/* 1 on the thread running this engine's finalize hook, which holds the engine lock */
static int hooked(const rf_engine *e) { return atomic_load(&((rf_engine *)e)->in_hook) == rf__self(); }

void rf_get_counters(const rf_engine *e, rf_counters *c)
{
  if (!e || !c) return;
  rf_engine *m = (rf_engine *)e;
  int h = hooked(e); /* the hook's thread holds the lock already */
  if (!h) lock(m);
  *c = e->ctr;
  if (e->cfg.role == RF_TRAINER) rf__trainer_counters(m, c);
  if (!h) unlock(m);
}

const rf_config *rf_engine_config(const rf_engine *e) { return e ? &e->cfg : NULL; }

rf_status rf_ucx_setting(const rf_engine *e, const char *name, char *buf, size_t len)
{
  if (!e || !name || !buf || !len || !e->ux) return RF_ERR_ARG;
  return rf__ucx_setting(e, name, buf, len);
}

/* an entry point of one role: a NULL engine, the other role, or a call from inside this engine's
 * finalize hook (whose thread holds the lock) is an error that says so */
#define ROLE(e, r, name)                                                                                  \
  do {                                                                                                    \
    if (!(e)) return RF_ERR_ARG;                                                                          \
    if ((e)->cfg.role != (r))                                                                             \
      return rf__fail((e), RF_ERR_STATE, "%s on a %s", name, (e)->cfg.role == RF_TRAINER ? "trainer" : "receiver"); \
    if (hooked(e)) return rf__fail((e), RF_ERR_STATE, "%s from inside this engine's finalize hook", name);   \
  } while (0)

#define LOCKED(e, call)         \
  do {                          \
    lock(e);                    \
    rf_status rf__r = (call);   \
    unlock(e);                  \
    return rf__r;               \
  } while (0)

/* ---------------------------------- receiver ---------------------------------------------- */

rf_status rf_bind_dst(rf_engine *e, uint32_t id, void *ptr, size_t bytes)
{
  ROLE(e, RF_RECEIVER, "rf_bind_dst");
  LOCKED(e, rf__receiver_bind(e, id, ptr, bytes));
}

rf_status rf_bind_derived(rf_engine *e, uint32_t id, void *ptr, size_t bytes)
{
  ROLE(e, RF_RECEIVER, "rf_bind_derived");
  LOCKED(e, rf__receiver_bind_derived(e, id, ptr, bytes));
}

rf_status rf_alloc(rf_engine *e, size_t bytes, void **ptr)
{
  ROLE(e, RF_RECEIVER, "rf_alloc");
  if (!ptr || !bytes) return rf__fail(e, RF_ERR_ARG, "rf_alloc: no size or output");
  LOCKED(e, rf__receiver_alloc(e, bytes, ptr));
}

rf_status rf_listen(rf_engine *e, const char *ip, uint16_t port, uint16_t *port_out)
{
  ROLE(e, RF_RECEIVER, "rf_listen");
  LOCKED(e, rf__receiver_listen(e, ip ? ip : "0.0.0.0", port, port_out));
}

rf_status rf_export(rf_engine *e, void *buf, size_t cap, size_t *len)
{
  ROLE(e, RF_RECEIVER, "rf_export");
  if (!len) return rf__fail(e, RF_ERR_ARG, "rf_export: no length output");
  LOCKED(e, rf__receiver_export(e, buf, cap, len));
}

rf_status rf_arm(rf_engine *e, uint64_t v)
{
  ROLE(e, RF_RECEIVER, "rf_arm");
  LOCKED(e, rf__receiver_arm(e, v));
}

rf_status rf_version_poll(rf_engine *e, rf_version_state *st)
{
  ROLE(e, RF_RECEIVER, "rf_version_poll");
  if (!st) return rf__fail(e, RF_ERR_ARG, "rf_version_poll: no output");
  lock(e);
  if (!e->prog_on) rf__receiver_step(e); /* messages, then a version whose DONEs are all in completes */
  rf__receiver_state(e, st);
  unlock(e);
  return RF_OK;
}


rf_status rf_version_wait(rf_engine *e, uint64_t v, uint32_t timeout_ms)
{
  ROLE(e, RF_RECEIVER, "rf_version_wait");
  lock(e);
  rf_status s = rf__receiver_wait(e, v, timeout_ms ? timeout_ms : e->timeout_ms);
  unlock(e);
  return s;
}

rf_status rf_set_finalize(rf_engine *e, rf_finalize_fn fn, void *ctx)
{
  ROLE(e, RF_RECEIVER, "rf_set_finalize");
  LOCKED(e, rf__receiver_set_finalize(e, fn, ctx));
}

rf_status rf_stream_wait(rf_engine *e, uint64_t v, void *stream)
{
  ROLE(e, RF_RECEIVER, "rf_stream_wait");
  if (!e->mem->device) return rf__fail(e, RF_ERR_STATE, "rf_stream_wait needs a receiver in RF_MEM_CUDA mode");
  return rf__cuda_stream_wait(e, v, stream);
}

/* ----------------------------------- trainer ---------------------------------------------- */

rf_status rf_bind_src(rf_engine *e, uint32_t id, const void *ptr, size_t bytes)
{
  ROLE(e, RF_TRAINER, "rf_bind_src");
  LOCKED(e, rf__trainer_bind(e, id, ptr, bytes));
}

size_t rf_src_bytes(const rf_engine *e, uint32_t id)
{
  if (!e || e->cfg.role != RF_TRAINER) return 0;
  return rf__trainer_src_bytes(e, id);
}

rf_status rf_connect(rf_engine *e, uint32_t recv, const char *ip, uint16_t port)
{
  ROLE(e, RF_TRAINER, "rf_connect");
  LOCKED(e, rf__trainer_connect(e, recv, ip, port));
}

rf_status rf_import(rf_engine *e, const void *blob, size_t len)
{
  ROLE(e, RF_TRAINER, "rf_import");
  LOCKED(e, rf__trainer_import(e, blob, len));
}

uint64_t rf_resume_version(const rf_engine *e)
{
  if (!e || e->cfg.role != RF_TRAINER) return 0;
  rf_engine *m = (rf_engine *)e;
  lock(m);
  uint64_t v = rf__trainer_resume(m);
  unlock(m);
  return v;
}

rf_status rf_push(rf_engine *e, uint64_t version, void *stream)
{
  ROLE(e, RF_TRAINER, "rf_push");
  LOCKED(e, rf__trainer_push(e, version, stream));
}

rf_status rf_progress(rf_engine *e)
{
  if (!e) return RF_ERR_ARG;
  if (hooked(e)) return rf__fail(e, RF_ERR_STATE, "rf_progress from inside this engine's finalize hook");
  lock(e);
  rf_status s = RF_OK;
  if (e->cfg.role == RF_RECEIVER) {
    if (!e->prog_on) rf__receiver_events(e); /* messages only: completing a version is the waits' work */
  } else {
    s = rf__trainer_progress(e);
  }
  unlock(e);
  return s;
}

rf_status rf_wait(rf_engine *e, uint32_t timeout_ms)
{
  ROLE(e, RF_TRAINER, "rf_wait");
  lock(e);
  rf_status s = rf__trainer_wait(e, timeout_ms ? timeout_ms : e->timeout_ms);
  unlock(e);
  return s;
}

rf_status rf_target_report(const rf_engine *e, uint32_t recv, rf_target_state *out)
{
  if (!e || !out || e->cfg.role != RF_TRAINER) return RF_ERR_ARG;
  lock((rf_engine *)e);
  rf_status s = rf__trainer_report(e, recv, out);
  unlock((rf_engine *)e);
  return s;
}
