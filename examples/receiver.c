/* examples/receiver.c: one refit receiver, the C API end to end. Host buffers stand in for an
 * inference engine's weights (an engine binds its own parameters instead).
 *
 *   example_receiver PLAN INDEX [PORT] [VERSIONS]
 *
 * Binds every destination tensor (and derived storage) of receiver INDEX, listens on 127.0.0.1:PORT
 * (0: any; the port is printed), then per version: the engine would pause serving here, arms the
 * version, waits until it is complete (every byte from every trainer that writes to it) or torn,
 * and would resume serving. Start one per receiver index, then the trainers (example_trainer). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "refit.h"

#define TOKEN 0x5ec2e7 /* the secret trainers and receivers share */

static int fail(rf_engine *e, const char *what, rf_status s)
{
  fprintf(stderr, "receiver: %s: %s: %s\n", what, rf_strerror(s), rf_last_error(e));
  rf_close(e);
  return 1;
}

int main(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: %s PLAN INDEX [PORT] [VERSIONS]\n", argv[0]);
    return 2;
  }
  const rf_plan *p = rf_plan_find(argv[1]);
  uint32_t index = (uint32_t)atoi(argv[2]);
  uint16_t port = argc > 3 ? (uint16_t)atoi(argv[3]) : 0;
  uint64_t versions = argc > 4 ? strtoull(argv[4], NULL, 10) : 3;
  if (!p) {
    fprintf(stderr, "receiver: no plan '%s' in this library\n", argv[1]);
    return 2;
  }
  rf_config cfg = {.plan = p, .role = RF_RECEIVER, .rank = index, .token = TOKEN, .ucx_tls = "tcp"};
  rf_engine *e;
  rf_status s = rf_open(&cfg, &e);
  if (s != RF_OK) return fail(e, "rf_open", s);

  /* every destination tensor of this receiver: its table id, name and size come from the plan */
  uint32_t n;
  rf_list(p, RF_SIDE_DST, index, NULL, 0, &n);
  rf_tensor_info *t = calloc(n, sizeof *t);
  rf_list(p, RF_SIDE_DST, index, t, n, &n);
  for (uint32_t i = 0; i < n; i++)
    if ((s = rf_bind_dst(e, t[i].id, calloc(1, t[i].bytes), t[i].bytes)) != RF_OK) return fail(e, t[i].name, s);
  /* storages the receiver rebuilds after each version (MLA's W_UK_T and W_UV of FP8 plans are two
   * strided views of one storage): each bound once, through its first view */
  for (uint32_t i = 0; i < p->n_derived; i++) {
    const rf_derived_tensor *d = &p->derived[i];
    if (d->tp_rank != p->recv[index].tp_rank || d->storage != i || d->dst != RF_NONE) continue;
    if ((s = rf_bind_derived(e, i, calloc(1, d->bytes), d->bytes)) != RF_OK) return fail(e, d->name, s);
  }

  if ((s = rf_listen(e, "127.0.0.1", port, &port)) != RF_OK) return fail(e, "rf_listen", s);
  printf("receiver %u of %s listening on 127.0.0.1:%u\n", index, p->name, port);
  fflush(stdout);

  for (uint64_t v = 1; v <= versions; v++) {
    /* the engine has stopped reading its weights: trainers may write version v now */
    if ((s = rf_arm(e, v)) != RF_OK) return fail(e, "rf_arm", s);
    s = rf_version_wait(e, v, 60000);
    if (s == RF_ERR_TORN) { /* memory is undefined until a later version completes: arm again */
      printf("version %" PRIu64 " torn: %s\n", v, rf_last_error(e));
      continue;
    }
    if (s != RF_OK) return fail(e, "rf_version_wait", s);
    rf_counters c;
    rf_get_counters(e, &c);
    printf("version %" PRIu64 " complete: %" PRIu64 " bytes so far\n", v, c.bytes);
    fflush(stdout);
    /* the engine resumes serving here */
  }
  rf_close(e);
  return 0;
}
