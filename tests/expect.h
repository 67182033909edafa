/* expect.h: the check of the test programs. EXPECT(cond, fmt, ...) counts a failure of the running
 * test in cur_failed (which the including file defines) and prints file:line and the message for
 * the first 8 failures of that test. run_forked runs one test in a child process (so a crash or a
 * hang, cut by alarm, fails that test alone) and prints its ok/FAIL line; run_tests runs a table of
 * them and prints the "N passed, N failed" line. */
#ifndef REFIT_TESTS_EXPECT_H
#define REFIT_TESTS_EXPECT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXPECT(cond, ...)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      if (cur_failed++ < 8) {                              \
        printf("  %s:%d: ", __FILE__, __LINE__);           \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
      }                                                    \
    }                                                      \
  } while (0)

static int cur_failed;

/* 1 when fn passed in a child process within alarm_s seconds */
static inline int run_forked(const char *name, void (*fn)(void), unsigned alarm_s)
{
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(alarm_s);
    fn();
    fflush(stdout);
    _exit(cur_failed ? 1 : 0);
  }
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) < 0) st = 0x7f00; /* no child: counts as a failure */
  int ok = pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  if (pid > 0 && WIFSIGNALED(st)) printf("  killed by signal %d\n", WTERMSIG(st));
  printf("%s %s\n", ok ? "ok  " : "FAIL", name);
  return ok;
}

typedef struct expect_test {
  const char *name;
  void (*fn)(void);
} expect_test;

/* every test of t[0..n) whose name contains filter (NULL: all), each forked; the exit status */
static inline int run_tests(const expect_test *t, size_t n, const char *filter, unsigned alarm_s)
{
#if defined(__SANITIZE_ADDRESS__)
  /* under ASan, UCX 1.22's CMA reachability probe (process_vm_readv of a peer's address) trips the
   * sanitizer's interceptor: sanitized test programs leave CMA out of UCX's default transports */
  setenv("UCX_TLS", "^cma", 0);
#endif
  int ok = 0, bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (filter && !strstr(t[i].name, filter)) continue;
    run_forked(t[i].name, t[i].fn, alarm_s) ? ok++ : bad++;
  }
  printf("%d passed, %d failed\n", ok, bad);
  return bad != 0;
}

#endif
