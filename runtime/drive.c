/* drive.c: the engine lock, the progress thread and the one wait (internal.h states the rule).
 *
 * Without cfg.progress_thread nothing here locks: the caller's thread is the only one, and a wait
 * drives the role's step itself until its predicate holds. With it, every entry point holds e->mu,
 * the progress thread holds it while it steps the role and arms the UCX worker, and sleeps on the
 * worker's event fd without it; a wait sleeps on e->changed (CLOCK_MONOTONIC, like its deadline)
 * and is woken when a lock holder changed the role's state (rf__changed) and let the lock go. */
#include <time.h>

#include "internal.h"

static uintptr_t me(void) { return rf__self(); }

/* wake the waiters when the holder changed what they wait for */
static void tell(rf_engine *e)
{
  if (e->changes == e->changes_told) return;
  e->changes_told = e->changes;
  pthread_cond_broadcast(&e->changed);
}

void rf__lock(rf_engine *e)
{
  if (!e->prog_on) return;
  pthread_mutex_lock(&e->mu);
  atomic_store(&e->owner, me());
}

void rf__unlock(rf_engine *e)
{
  if (!e->prog_on) return;
  tell(e);
  atomic_store(&e->owner, (uintptr_t)0);
  pthread_mutex_unlock(&e->mu);
}

int rf__drive_until(rf_engine *e, int (*done)(rf_engine *, uint64_t), uint64_t arg, uint32_t ms)
{
  uint64_t t0 = rf__now_ns();
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
  for (;;) {
    if (!e->prog_on) e->step(e);
    if (done(e, arg)) return 1;
    if (rf__past(t0, ms)) return 0;
    if (!e->prog_on) continue;
    tell(e);
    atomic_store(&e->owner, (uintptr_t)0);
    pthread_cond_timedwait(&e->changed, &e->mu, &until); /* the loop's clock check decides */
    atomic_store(&e->owner, me());
    e->wakeups++;
  }
}

static void *progress_main(void *arg)
{
  rf_engine *e = arg;
  rf__lock(e);
  while (!e->prog_quit) {
    e->step(e);
    int armed = rf__ucx_arm(e); /* only the lock holder touches the worker */
    rf__unlock(e);
    /* wakes on UCX activity; 1 ms bounds handshake and version deadlines */
    if (armed) rf__ucx_wait_fd(e, 1);
    rf__lock(e);
  }
  rf__unlock(e);
  return NULL;
}

rf_status rf__progress_start(rf_engine *e)
{
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC))
    return rf__fail(e, RF_ERR_NOMEM, "progress thread: condition variable clock");
  int bad = pthread_mutex_init(&e->mu, NULL) || pthread_cond_init(&e->changed, &ca);
  pthread_condattr_destroy(&ca);
  if (bad) return rf__fail(e, RF_ERR_NOMEM, "progress thread: mutex");
  e->prog_on = 1;
  if (pthread_create(&e->prog, NULL, progress_main, e)) {
    e->prog_on = 0;
    return rf__fail(e, RF_ERR_NOMEM, "progress thread");
  }
  return RF_OK;
}

void rf__progress_stop(rf_engine *e)
{
  if (!e->prog_on) return;
  rf__lock(e);
  e->prog_quit = 1;
  rf__unlock(e);
  pthread_join(e->prog, NULL);
  pthread_cond_destroy(&e->changed);
  pthread_mutex_destroy(&e->mu);
  e->prog_on = 0;
}

uint64_t rf__wakeups(rf_engine *e)
{
  rf__lock(e);
  uint64_t n = e->wakeups;
  rf__unlock(e);
  return n;
}

uint64_t rf__lock_misses(const rf_engine *e) { return atomic_load(&e->lock_misses); }
