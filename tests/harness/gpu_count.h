/* gpu_count.h: count CUDA devices in a child process, so that the caller, which forks trainer and
 * receiver processes afterwards, never initializes CUDA itself (a CUDA context does not survive
 * fork). Header-only: used by the GPU test and benchmark. */
#ifndef REFIT_GPU_COUNT_H
#define REFIT_GPU_COUNT_H

#include <sys/wait.h>
#include <unistd.h>

#include "gpu.h"

static inline int rf_gpu_count_forked(void)
{
  pid_t pid = fork();
  if (pid == 0) _exit(rf_gpu_devices() & 0x7f);
  int st = 0;
  if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st)) return 0;
  return WEXITSTATUS(st);
}

#endif
