/* examples/trainer.c: one refit trainer rank, the C API end to end. Host buffers filled with made-up
 * values stand in for the rank's FSDP shards (a trainer binds its own parameters instead).
 *
 *   example_trainer PLAN RANK VERSIONS RECEIVER=HOST:PORT ...    (every receiver of the plan)
 *
 * Binds every source tensor this rank reads (its FSDP rows of sharded tensors, whole gathered ones
 * it owns), connects to each receiver it writes to (the plan's peer lists say which), then pushes versions from rf_resume_version on
 * (a restarted trainer continues where the receivers are) and waits until every receiver
 * acknowledged each one complete. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit.h"

#define TOKEN 0x5ec2e7

static int fail(rf_engine *e, const char *what, rf_status s)
{
  fprintf(stderr, "trainer: %s: %s: %s\n", what, rf_strerror(s), rf_last_error(e));
  rf_close(e);
  return 1;
}

/* made-up weights of version v: finite bf16 / fp32 values */
static void fill(void *buf, const rf_tensor_info *t, uint64_t v)
{
  size_t n = t->bytes / rf_dtype_size(t->dtype);
  for (size_t i = 0; i < n; i++) {
    float x = (float)((i * 2654435761u + v * 40503u) % 2001) / 1000.0f - 1.0f;
    if (t->dtype == RF_FP32) ((float *)buf)[i] = x;
    else {
      uint32_t b;
      memcpy(&b, &x, 4);
      ((uint16_t *)buf)[i] = (uint16_t)(b >> 16);
    }
  }
}

int main(int argc, char **argv)
{
  if (argc < 5) {
    fprintf(stderr, "usage: %s PLAN RANK VERSIONS RECEIVER=HOST:PORT ...\n", argv[0]);
    return 2;
  }
  const rf_plan *p = rf_plan_find(argv[1]);
  uint32_t rank = (uint32_t)atoi(argv[2]);
  uint64_t versions = strtoull(argv[3], NULL, 10);
  if (!p) {
    fprintf(stderr, "trainer: no plan '%s' in this library\n", argv[1]);
    return 2;
  }
  rf_config cfg = {.plan = p, .role = RF_TRAINER, .rank = rank, .token = TOKEN, .ucx_tls = "tcp"};
  rf_engine *e;
  rf_status s = rf_open(&cfg, &e);
  if (s != RF_OK) return fail(e, "rf_open", s);

  /* the sources this rank binds, with their dtypes and this rank's rows */
  uint32_t n;
  rf_list(p, RF_SIDE_SRC, rank, NULL, 0, &n);
  rf_tensor_info *t = calloc(n, sizeof *t);
  void **buf = calloc(n, sizeof *buf);
  rf_list(p, RF_SIDE_SRC, rank, t, n, &n);
  for (uint32_t i = 0; i < n; i++)
    if ((s = rf_bind_src(e, t[i].id, buf[i] = malloc(t[i].bytes), t[i].bytes)) != RF_OK) return fail(e, t[i].name, s);

  for (int a = 4; a < argc; a++) { /* RECEIVER=HOST:PORT */
    char host[64];
    unsigned r, port;
    if (sscanf(argv[a], "%u=%63[^:]:%u", &r, host, &port) != 3 || r >= p->receivers) {
      fprintf(stderr, "trainer: '%s' is not RECEIVER=HOST:PORT of this plan\n", argv[a]);
      return 2;
    }
    int mine = 0; /* does this rank write to receiver r? */
    for (uint32_t k = 0; k < p->recv[r].peer_count; k++) mine |= p->peers[p->recv[r].peer_first + k].trainer == rank;
    if (mine && (s = rf_connect(e, r, host, (uint16_t)port)) != RF_OK) return fail(e, "rf_connect", s);
  }

  for (uint64_t v = rf_resume_version(e), last = v + versions - 1; v <= last; v++) {
    for (uint32_t i = 0; i < n; i++) fill(buf[i], &t[i], v); /* the optimizer step */
    if ((s = rf_push(e, v, NULL)) != RF_OK) return fail(e, "rf_push", s);
    s = rf_wait(e, 0); /* 0: the engine's timeout */
    if (s != RF_OK && s != RF_PARTIAL) return fail(e, "rf_wait", s);
    printf("version %" PRIu64 " %s\n", v, s == RF_OK ? "complete on every receiver" : rf_last_error(e));
    fflush(stdout);
  }
  rf_close(e);
  return 0;
}
