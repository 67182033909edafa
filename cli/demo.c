/* refit demo: runs refit-demo, the loopback demo program of the test harness (tests/harness/demo.c),
 * from the directory this program lives in, with the same arguments. The harness (forked trainer and
 * receiver processes, the C reference checks, the allocation hooks) stays out of the refit program and
 * the libraries; tests/test_layers.sh checks. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int rf_cmd_demo(int argc, char **argv)
{
  (void)argc;
  static const char prog[] = "refit-demo";
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path);
  char *slash = n > 0 && (size_t)n < sizeof path ? memrchr(path, '/', (size_t)n) : NULL;
  if (!slash || (size_t)(slash + 1 - path) + sizeof prog > sizeof path) {
    fprintf(stderr, "refit demo: cannot find the directory of this program (/proc/self/exe): %s\n",
            n < 0 ? strerror(errno) : "path too long");
    return 1;
  }
  memcpy(slash + 1, prog, sizeof prog);
  argv[0] = path;
  execv(path, argv);
  fprintf(stderr, "refit demo: cannot run %s: %s (ninja build/refit-demo builds it)\n", path, strerror(errno));
  return 1;
}
