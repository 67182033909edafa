/* loop.h (tests/): a plan run end to end on this machine as real processes over UCX loopback: one process
 * per trainer rank and per receiver, coordinated by the caller's process through pipes. Used by
 * `refit demo`, the loopback tests and the host benchmark.
 *
 * Source data is a pure function of (seed, version, source id, row, col), so every trainer shard,
 * gathered copy and receiver-side check agree; magnitudes change per 128x128 block so FP8 scales
 * differ. A receiver checks every byte it holds against what the C reference kernels produce
 * from that data for the trainers that write to it, and every derived tensor against a fresh
 * refresh of the expected weights. */
#ifndef REFIT_LOOP_H
#define REFIT_LOOP_H

#include <stdint.h>

#include "refit.h"

#define RF_LOOP_MAX_VERSIONS 16

typedef struct rf_loop_opts {
  const rf_plan *plan;
  int versions;            /* versions 1..versions, one after another */
  uint64_t seed;
  uint64_t token;
  const char *tls;         /* UCX_TLS of every engine; NULL = UCX default */
  uint32_t timeout_ms;     /* engine timeout (DONE, connect) */
  int verify;              /* receivers check every byte (0: benchmark) */
  int progress;            /* progress lines on stderr */
  int use_blob;            /* trainers import exported blobs instead of rf_connect */
  int kill_trainer;        /* -1, or a trainer rank that dies mid-push of kill_version and restarts */
  int kill_receiver;       /* -1, or a receiver that dies before kill_version is pushed */
  uint64_t kill_version;
  int restart_receiver;    /* the killed receiver restarts after kill_version and trainers reconnect to
                              it (rf_connect / rf_import again); else the run stops there */
  int auto_arm;            /* receivers arm what trainers ask for (rf_config.auto_arm); else each
                              receiver calls rf_arm(v) when told to wait for v, as an engine would */
  int skip_down;           /* rf_config.skip_down for trainers */
  int no_peer_errors;      /* rf_config.no_peer_errors for every engine */
  int direct;              /* rf_config.direct for trainers */
  int engine_mem;          /* receivers place their tensors in rf_alloc memory (shared memory on a host) */
  int alias_src;           /* benchmark: a trainer binds every source to one buffer (no per-version fill) */
  int alias_dst;           /* benchmark: a receiver binds every destination to one buffer */
  int fill_once;           /* benchmark, CUDA: sources filled once on the device at bind, never refilled */
  int cuda;                /* trainers and receivers in RF_MEM_CUDA mode, on these devices */
  int trainer_dev, receiver_dev;
  int count_allocs;        /* 1: children count allocations on hot paths from version 2; 2: from version 1 */
} rf_loop_opts;

typedef struct rf_loop_version {
  uint64_t version;
  int complete, torn, timeouts;   /* receivers */
  int trainer_errors;
  int trainer_partial;            /* trainers whose push returned RF_PARTIAL (skip_down) */
  uint64_t bytes;                 /* bytes received (complete receivers) */
  uint64_t verified;              /* bytes checked equal to the reference */
  uint64_t mismatches;            /* bytes that differ */
  uint64_t ns;                    /* push command to the last receiver's answer (complete or torn) */
  uint64_t stage_ns, post_ns, writes; /* summed over trainers */
  uint64_t push_ns_max;           /* slowest trainer's push */
  uint64_t direct_writes;         /* writes sent straight from sources */
  char torn_reason[320];          /* first receiver's */
  char trainer_error[320];        /* first trainer's */
  char mismatch[320];             /* first mismatch: receiver, tensor, offset */
  int stream_checked, stream_ok;  /* CUDA: receivers whose stream wait held and then saw this version */
  char stream_error[320];
} rf_loop_version;

typedef struct rf_loop_result {
  int n;
  rf_loop_version v[RF_LOOP_MAX_VERSIONS];
  int trainer_restarts, receiver_restarts;
  uint64_t allocs;                /* count_allocs: allocations seen on hot paths, all children */
  uint64_t alloc_checked_calls;   /* hot-path calls covered */
  char error[512];                /* set when the run itself failed (a child crashed, setup error) */
} rf_loop_result;

/* 0 when the run went as scripted (results say what happened), -1 with r->error otherwise. */
int rf_loop_run(const rf_loop_opts *o, rf_loop_result *r);

/* the source data of version v as trainer rank `rank` holds source `id` (its rows for a shard) */
void rf_loop_fill(const rf_plan *p, uint32_t rank, uint32_t id, uint64_t seed, uint64_t v, void *buf);

/* allocation counting hooks, set by a program that interposes malloc (tests/test_alloc.c) */
extern volatile int rf_loop_alloc_armed;
extern volatile uint64_t rf_loop_alloc_count;

#endif
