/* refit plan: the predicted update time of a plan at cluster scale, from its tables. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plans.h"

static int usage(FILE *f, int rc)
{
  fprintf(f, "usage: refit plan <plan> [--nic-gbps N] [--nics-per-gpu N] [--write-overhead-us U] [--rtt-us U]\n"
                  "                  [--mem-gbs N] [--encode-gbs N] [--density D | --density fp8=D,bf16=D,fp32=D]\n"
                  "       refit plan --list\n"
                  "  --density: fraction of changed elements per version for the delta prediction (default: issue\n"
                  "  16's step at lr 1e-6, fp8=0.0034,bf16=0.033,fp32=0.004); one number sets all three\n");
  return rc;
}

enum { NONNEG, POSITIVE, COUNT }; /* what number() accepts: >= 0, > 0, a whole number >= 1 */

/* the value s given after flag as a number of that kind; prints why not (s NULL: flag came last) */
static int number(const char *flag, const char *s, int kind, double *out)
{
  static const char *const want[] = {"a non-negative number", "a positive number", "a whole number >= 1"};
  char *end;
  double v = s ? strtod(s, &end) : 0;
  if (!s) {
    fprintf(stderr, "refit plan: %s needs a value\n", flag);
    return 0;
  }
  int bad = end == s || *end || !(v >= 0) || (kind == POSITIVE && v == 0) ||
            (kind == COUNT && (v < 1 || v > 4294967295.0 || v != (double)(unsigned)v));
  if (bad) {
    fprintf(stderr, "refit plan: %s needs %s, got '%s'\n", flag, want[kind], s);
    return 0;
  }
  *out = v;
  return 1;
}

/* "D" (every dtype) or "fp8=D,bf16=D,fp32=D" (any of them, in any order); 0 <= D <= 1 */
static int density(const char *s, rf_density *d)
{
  char *end;
  if (!s) return 0;
  double v = strtod(s, &end);
  if (end != s && !*end) {
    if (v < 0 || v > 1) return 0;
    d->fp8 = d->bf16 = d->fp32 = v;
    return 1;
  }
  for (const char *at = s; *at;) {
    double *dst = strncmp(at, "fp8=", 4) == 0 ? &d->fp8 : strncmp(at, "bf16=", 5) == 0 ? &d->bf16
                : strncmp(at, "fp32=", 5) == 0 ? &d->fp32 : NULL;
    if (!dst) return 0;
    at = strchr(at, '=') + 1;
    v = strtod(at, &end);
    if (end == at || v < 0 || v > 1 || (*end && *end != ',')) return 0;
    *dst = v;
    at = *end ? end + 1 : end;
  }
  return 1;
}

int rf_cmd_plan(int argc, char **argv)
{
  rf_time_model m = RF_TIME_MODEL_DEFAULT;
  rf_density dn = RF_DENSITY_MEASURED;
  int dn_given = 0;
  const char *name = NULL;
  for (int i = 1; i < argc; i++) {
    double v;
    const char *a = argv[i];
    if (strcmp(a, "--list") == 0) {
      for (uint32_t k = 0; k < rf_plan_count(); k++)
        printf("%s\n", rf_plan_at(k)->name);
      return 0;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      return usage(stdout, 0);
    } else if (strcmp(a, "--nic-gbps") == 0) {
      if (!number(a, i + 1 < argc ? argv[++i] : NULL, POSITIVE, &v)) return usage(stderr, 2);
      m.nic_gbps = v;
    } else if (strcmp(a, "--nics-per-gpu") == 0) {
      if (!number(a, i + 1 < argc ? argv[++i] : NULL, COUNT, &v)) return usage(stderr, 2);
      m.nics_per_gpu = (unsigned)v;
    } else if (strcmp(a, "--write-overhead-us") == 0) {
      if (!number(a, i + 1 < argc ? argv[++i] : NULL, NONNEG, &v)) return usage(stderr, 2);
      m.write_overhead_us = v;
    } else if (strcmp(a, "--rtt-us") == 0) {
      if (!number(a, i + 1 < argc ? argv[++i] : NULL, NONNEG, &v)) return usage(stderr, 2);
      m.done_rtt_us = v;
    } else if (strcmp(a, "--mem-gbs") == 0) {
      if (!number(a, i + 1 < argc ? argv[++i] : NULL, POSITIVE, &v)) return usage(stderr, 2);
      m.mem_gbs = v;
    } else if (strcmp(a, "--encode-gbs") == 0) {
      if (!number(a, i + 1 < argc ? argv[++i] : NULL, POSITIVE, &v)) return usage(stderr, 2);
      m.encode_gbs = v;
    } else if (strcmp(a, "--density") == 0) {
      const char *d = i + 1 < argc ? argv[++i] : NULL;
      if (!d || !density(d, &dn)) {
        if (!d)
          fprintf(stderr, "refit plan: --density needs a value\n");
        else
          fprintf(stderr, "refit plan: --density needs D or fp8=D,bf16=D,fp32=D with 0 <= D <= 1, got '%s'\n", d);
        return usage(stderr, 2);
      }
      dn_given = 1;
    } else if (a[0] != '-' && !name) {
      name = a;
    } else {
      if (a[0] == '-')
        fprintf(stderr, "refit plan: unknown option '%s'\n", a);
      else
        fprintf(stderr, "refit plan: one plan at a time: '%s' after '%s'\n", a, name);
      return usage(stderr, 2);
    }
  }
  if (!name) {
    fprintf(stderr, "refit plan: which plan? (refit plan --list)\n");
    return usage(stderr, 2);
  }
  const rf_plan *p = rf_plan_find(name);
  if (!p) {
    fprintf(stderr, "refit plan: no plan '%s' (refit plan --list)\n", name);
    return 1;
  }
  rf_prediction r;
  rf_plan_predict(p, &m, &r);
  uint32_t size = p->receivers / p->replicas;
  printf("plan: %s (%s), %u trainer ranks -> %u replicas x %u GPUs\n", p->name, p->model, p->trainers, p->replicas, size);
  printf("model: %g Gb/s per NIC, %u NIC(s) per GPU, %g us per write, %g us DONE round trip\n", m.nic_gbps,
         m.nics_per_gpu, m.write_overhead_us, m.done_rtt_us);
  printf("bytes per version: %.3f GB in %u writes\n", p->total_bytes / 1e9, p->n_writes);
  printf("trainer side:  %.3f s (rank %u: %.3f GB, %u writes)\n", r.trainer_s, r.worst_trainer,
         p->ranks[r.worst_trainer].bytes_out / 1e9, p->ranks[r.worst_trainer].write_count);
  printf("receiver side: %.3f s (receiver %u: %.3f GB)\n", r.receiver_s, r.worst_receiver,
         p->recv[r.worst_receiver].bytes / 1e9);
  printf("lower bound:   %.3f s (max receiver bytes / receiver NIC rate)\n", r.lower_bound_s);
  printf("predicted:     %.3f s, bound by the %s side\n", r.seconds, r.bound_by_receiver ? "receiver" : "trainer");
  rf_delta_prediction d;
  rf_plan_predict_delta(p, &m, &dn, &d);
  printf("delta density: fp8 %g%%, bf16 %g%%, fp32 %g%% of the elements change per version (%s)\n", dn.fp8 * 100,
         dn.bf16 * 100, dn.fp32 * 100, dn_given ? "--density" : "issue 16: one step at lr 1e-6");
  printf("delta bytes:   %.3f GB (%.2f%% of dense: patches, regions sent dense, directories)%s\n", d.bytes / 1e9,
         p->total_bytes ? 100 * d.bytes / (double)p->total_bytes : 0.0,
         p->delta_ppm ? "" : "; this plan has no patch areas (plan option delta = { budget = B })");
  printf("delta trainer: %.3f s (rank %u; staging and encode %.3f s at %g GB/s, the encode at %g GB/s)\n",
         d.trainer_s, d.worst_trainer, d.stage_s, m.mem_gbs, m.encode_gbs);
  printf("delta receiver: %.3f s (receiver %u)\n", d.receiver_s, d.worst_receiver);
  printf("predicted delta: %.3f s, bound by the %s side (dense %.3f s)\n", d.seconds,
         d.bound_by_receiver ? "receiver" : "trainer", r.seconds);
  return 0;
}
