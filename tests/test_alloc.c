/* test_alloc.c: no allocation on the hot path. This program interposes malloc, calloc, realloc,
 * free and the aligned allocators for the whole process (libucp included), then runs the tiny GLM
 * plan over UCX loopback for several versions; each trainer counts allocations inside rf_push and
 * rf_progress, each receiver inside rf_version_poll (which runs the receive path, DONE handling,
 * completion and refresh), from version 2 on (version 1 may warm up transport pools). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "plans.h"

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void __libc_free(void *);

static inline void count(void)
{
  if (rf_loop_alloc_armed) rf_loop_alloc_count++;
}

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void free(void *p) { if (p) count(); __libc_free(p); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n)
{
  count();
  *out = __libc_memalign(a, n);
  return *out ? 0 : 12;
}

int main(void)
{
  int failed = 0;
  /* staged writes over tcp and shared memory; direct writes (one put per source range) over tcp */
  struct {
    const char *tls, *plan, *what;
    int direct;
  } cases[] = {{"tcp", "glm_tiny_demo", "tcp", 0},
               {"sm,tcp", "glm_tiny_demo", "sm,tcp", 0},
               {"tcp", "qwen3_tiny_tp2", "tcp, direct writes", 1}};
  const int n = sizeof cases / sizeof cases[0];
  for (int k = 0; k < n; k++) {
    rf_loop_opts o = {.plan = rf_plan_find(cases[k].plan), .versions = 4, .seed = (uint64_t)time(NULL), .token = 1,
                      .tls = cases[k].tls, .timeout_ms = 10000, .verify = 1, .kill_trainer = -1, .kill_receiver = -1,
                      .direct = cases[k].direct, .count_allocs = getenv("ALLOC_ALL") ? 2 : 1};
    /* the counter must see allocations at all: one armed malloc here */
    rf_loop_alloc_armed = 1;
    void *volatile probe = malloc(16);
    free(probe);
    rf_loop_alloc_armed = 0;
    int hook_works = rf_loop_alloc_count == 2;
    rf_loop_alloc_count = 0;
    rf_loop_result r;
    int rc = rf_loop_run(&o, &r);
    int ok = hook_works && rc == 0 && r.allocs == 0 && r.alloc_checked_calls > 100;
    for (int i = 0; rc == 0 && i < r.n; i++) ok &= r.v[i].complete == (int)o.plan->receivers && r.v[i].mismatches == 0;
    if (cases[k].direct) ok &= r.n > 0 && r.v[r.n - 1].direct_writes > 0;
    printf("%s %s (%s): %llu allocations in %llu hot-path calls over versions 2..4 (hook %s)%s%s\n",
           ok ? "ok  " : "FAIL", cases[k].what, cases[k].plan, (unsigned long long)r.allocs, (unsigned long long)r.alloc_checked_calls,
           hook_works ? "counts" : "BROKEN", rc ? ": " : "", rc ? r.error : "");
    failed += !ok;
  }
  printf("%d passed, %d failed\n", n - failed, failed);
  return failed != 0;
}
