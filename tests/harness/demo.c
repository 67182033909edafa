/* refit-demo (`refit demo` runs it): the tiny GLM plan as real processes over UCX on this machine.
 * 4 trainer ranks push three versions of random weights into 2 replicas of TP2/EP2 receivers; every
 * receiver checks every byte (and its derived MLA tensors) against the C reference from the same
 * seed. A program of the test harness (tests/harness/loop.c), so build/refit carries none of it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "plans.h"

static int usage(FILE *f, int rc)
{
  fprintf(f, "usage: refit demo [--plan NAME] [--versions N] [--tls UCX_TLS]\n");
  return rc;
}

int main(int argc, char **argv)
{
  const char *plan = "glm_tiny_demo", *tls = NULL;
  int versions = 3;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return usage(stdout, 0);
    int known = strcmp(a, "--plan") == 0 || strcmp(a, "--versions") == 0 || strcmp(a, "--tls") == 0;
    if (!known || i + 1 >= argc) {
      fprintf(stderr, "refit demo: %s '%s'\n", known ? "missing value after" : "unknown option", a);
      return usage(stderr, 2);
    }
    const char *v = argv[++i];
    if (strcmp(a, "--plan") == 0) plan = v;
    else if (strcmp(a, "--tls") == 0) tls = v;
    else {
      char *end;
      long n = strtol(v, &end, 10);
      if (end == v || *end || n < 1 || n > RF_LOOP_MAX_VERSIONS) {
        fprintf(stderr, "refit demo: --versions '%s' is not a count from 1 to %d\n", v, RF_LOOP_MAX_VERSIONS);
        return usage(stderr, 2);
      }
      versions = (int)n;
    }
  }
  const rf_plan *p = rf_plan_find(plan);
  if (!p) {
    fprintf(stderr, "refit demo: no plan '%s' (refit plan --list)\n", plan);
    return 2;
  }
  rf_loop_opts o = {.plan = p, .versions = versions, .seed = (uint64_t)time(NULL), .token = 0x7e57c0de,
                    .tls = tls, .timeout_ms = 10000, .verify = 1, .progress = 1, .kill_trainer = -1,
                    .kill_receiver = -1};
  printf("demo: plan %s (model %s): %u trainer ranks -> %u replicas x %u receivers, %llu bytes per version, seed %llu\n",
         p->name, p->model, p->trainers, p->replicas, p->receivers / p->replicas, (unsigned long long)p->total_bytes,
         (unsigned long long)o.seed);
  fflush(stdout);
  rf_loop_result r;
  if (rf_loop_run(&o, &r)) {
    fprintf(stderr, "demo: failed: %s\n", r.error);
    return 1;
  }
  printf("%8s %12s %12s %10s %8s %10s %10s\n", "version", "bytes", "verified", "time_ms", "GB/s", "stage_ms", "writes");
  uint64_t bytes = 0, verified = 0, ns = 0;
  int bad = 0;
  for (int i = 0; i < r.n; i++) {
    rf_loop_version *v = &r.v[i];
    printf("%8llu %12llu %12llu %10.2f %8.2f %10.2f %10llu\n", (unsigned long long)v->version,
           (unsigned long long)v->bytes, (unsigned long long)v->verified, v->ns / 1e6, v->bytes / (double)v->ns,
           v->stage_ns / 1e6, (unsigned long long)v->writes);
    if (v->complete != (int)p->receivers || v->mismatches || v->trainer_errors) {
      bad = 1;
      fprintf(stderr, "demo: version %llu: %d complete, %d torn%s%s, %llu mismatched bytes%s%s\n",
              (unsigned long long)v->version, v->complete, v->torn, v->torn ? ": " : "", v->torn_reason,
              (unsigned long long)v->mismatches, v->mismatches ? ": " : "", v->mismatch);
    }
    bytes += v->bytes;
    verified += v->verified;
    ns += v->ns;
  }
  printf("demo: %d versions, %u receivers, %llu bytes verified, %.2f GB/s\n", r.n, p->receivers,
         (unsigned long long)verified, bytes / (double)(ns ? ns : 1));
  return bad;
}
