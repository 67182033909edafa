/* loop.h (tests/harness/): a plan run end to end on this machine as real processes over UCX loopback: one
 * process per trainer rank and per receiver, coordinated by the caller's process through pipes. Used by
 * build/refit-demo (`refit demo`), the loopback tests and the benchmarks; never linked into build/refit
 * or librefit (tests/test_layers.sh checks).
 *
 * Source data is a pure function of (seed, version, source id, row, col), so every trainer shard,
 * gathered copy and receiver-side check agree; magnitudes change per 128x128 block so FP8 scales
 * differ. In sparse mode a version changes about 1% of the previous version's values (an optimizer
 * step as delta pushes see it), with bursts that change whole tensors (rf_loop_fill). A receiver checks every byte it holds against what the C reference kernels produce
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
  int count_allocs;        /* > 0: children count allocations on hot paths from this version on (the
                              versions before warm the transport's pools) */
  int delta;               /* rf_config.delta for trainers */
  int sparse;              /* version v changes a deterministic sparse subset of v-1's values */
  const char *sparse_only; /* sparse: only sources whose name holds this text change after version 1 */
  int step;                /* benchmark: sources filled once with finite values, then each version moves
                              every step-th element by one bf16 ulp in place (a cheap sparse optimizer
                              step at density 1/step; not verifiable: verify 0) */
} rf_loop_opts;

typedef struct rf_loop_version {
  uint64_t version;
  int complete, torn, timeouts;   /* receivers */
  int trainer_errors;
  int trainer_partial;            /* trainers whose push returned RF_PARTIAL (skip_down) */
  uint64_t bytes;                 /* bytes received (complete receivers) */
  uint64_t verified;              /* bytes checked equal to the reference */
  uint64_t mismatches;            /* bytes that differ */
  uint64_t ns;                    /* the first trainer's rf_push to the last receiver's answer (complete or torn) */
  uint64_t stage_ns, post_ns, writes; /* summed over trainers */
  uint64_t push_ns_max;           /* slowest trainer's push */
  uint64_t direct_writes;         /* writes sent straight from sources */
  char torn_reason[320];          /* first receiver's */
  char trainer_error[320];        /* first trainer's */
  char mismatch[320];             /* first mismatch: receiver, tensor, offset */
  int stream_checked, stream_ok;  /* CUDA: receivers whose stream wait held and then saw this version */
  char stream_error[320];
  uint64_t sent;                  /* bytes trainers put (rf_counters.bytes of the push) */
  uint64_t deltas, patch_bytes, overflows; /* trainers: receivers pushed as patches, their bytes, regions sent dense */
  uint64_t applied, apply_ns;     /* receivers: peers whose patches applied, time applying */
} rf_loop_version;

typedef struct rf_loop_result {
  int n;
  rf_loop_version v[RF_LOOP_MAX_VERSIONS];
  int trainer_restarts, receiver_restarts;
  uint64_t allocs;                /* count_allocs: allocations on hot paths, all children, not from UCX */
  uint64_t allocs_ucx;            /* count_allocs: those from inside UCX (its pools grow lazily) */
  uint64_t alloc_checked_calls;   /* hot-path calls covered */
  char error[512];                /* set when the run itself failed (a child crashed, setup error) */
} rf_loop_result;

/* the plan of this name in the library; exits the test program with a line naming it when absent */
const rf_plan *rf_loop_plan(const char *name);

/* 0 when the run went as scripted (results say what happened), -1 with r->error otherwise. */
int rf_loop_run(const rf_loop_opts *o, rf_loop_result *r);

/* the source data of version v as trainer rank `rank` holds source `id` (its rows for a shard):
 * o->plan, o->seed, o->sparse */
void rf_loop_fill(const rf_loop_opts *o, uint32_t rank, uint32_t id, uint64_t v, void *buf);

/* ---- a cluster for fault tests: the same processes, driven one command at a time ----
 * Receivers and trainers are child processes; the coordinator (the caller) sends commands and reads
 * their records. Every record names the process (pid) and its receiver index or trainer rank. A
 * receiver that reports a version complete has verified every byte of it (o->verify). */
/* RF_CL_CORRUPT (receiver): flip one byte in the middle of every destination tensor, as an engine
 * that wrote its weights would; the next delta push to it must tear on a digest */
enum { RF_CL_PUSH = 1, RF_CL_WAIT = 2, RF_CL_VERIFY = 6, RF_CL_CORRUPT = 7 };             /* commands */
enum { RF_CL_PORT = 1, RF_CL_READY = 2, RF_CL_PUSHED = 3, RF_CL_RESULT = 4, RF_CL_FATAL = 5, RF_CL_ARMED = 6,
       RF_CL_VERIFIED = 7 };                                           /* records */
/* RF_CL_PUSH flags: exit right after reporting the push; die (_exit) after posting half its writes;
 * stop itself (SIGSTOP) after posting half its writes, to go on where it was when continued.
 * RF_CL_WAIT flag: rf_close and exit as soon as the version is complete or torn (an engine that
 * shuts down right after its last version), then report it */
enum { RF_CL_EXIT_AFTER = 1, RF_CL_DIE_HALF = 2, RF_CL_STOP_HALF = 4, RF_CL_CLOSE_AFTER = 8 };

typedef struct rf_cl_rec {
  int kind, trainer, pid, status;  /* status: rf_status of the push / the version / the connect */
  uint32_t who;                    /* receiver index or trainer rank */
  uint64_t version, verified, mismatches;
  uint64_t deltas, overflows;      /* RF_CL_PUSHED: receivers pushed as patches, regions sent dense;
                                      RF_CL_RESULT: peers whose patches applied */
  char text[320];
} rf_cl_rec;

typedef struct rf_cluster rf_cluster;
/* every receiver listening and every trainer rank connected to its receivers (NULL + err) */
rf_cluster *rf_cl_start(const rf_loop_opts *o, char *err, size_t errlen);
void rf_cl_end(rf_cluster *c);                     /* kills what is left */
int rf_cl_receiver(const rf_cluster *c, uint32_t r); /* the process serving receiver r */
int rf_cl_trainer(const rf_cluster *c, uint32_t rank); /* the newest process of trainer rank */
int rf_cl_pid(const rf_cluster *c, int proc);
int rf_cl_port(const rf_cluster *c, uint32_t r); /* receiver r's listening port */
int rf_cl_alive(const rf_cluster *c, int proc);
/* a new process for trainer rank (a restart, or a second process with the same rank while the first
 * lives); it connects to every receiver it writes to; returns its process or -1 */
int rf_cl_spawn_trainer(rf_cluster *c, uint32_t rank, char *err, size_t errlen);
/* trainer process t connects to receiver r again, one rf_connect / rf_import (no retry, unlike the
 * harness's own connects): its rf_status (0 = RF_OK),
 * -1 when it did not answer; text: the error */
int rf_cl_reconnect(rf_cluster *c, int t, uint32_t r, char *text, size_t n);
/* kill receiver r's process and start a new one (same port if it can: rf_cl_port says which); the
 * trainers are not told */
int rf_cl_respawn_receiver(rf_cluster *c, uint32_t r, char *err, size_t errlen);
/* the same, then every live trainer that writes to it reconnects (rf_connect / rf_import again) */
int rf_cl_restart_receiver(rf_cluster *c, uint32_t r, char *err, size_t errlen);
/* SIGKILL (reaped, dead), SIGSTOP, SIGCONT (a trainer that missed reconnects is told now) */
void rf_cl_signal(rf_cluster *c, int proc, int sig);
/* wait until proc stopped itself (RF_CL_STOP_HALF); 0, or -1 after ms */
int rf_cl_await_stop(rf_cluster *c, int proc, uint32_t ms);
/* RF_CL_PUSH (trainer), RF_CL_WAIT (receiver: arm and wait), RF_CL_VERIFY, RF_CL_CORRUPT (receiver) */
int rf_cl_send(rf_cluster *c, int proc, int cmd, uint64_t version, uint32_t timeout_ms, uint32_t flags);
/* the next record, 0; -1 after timeout_ms */
int rf_cl_next(rf_cluster *c, rf_cl_rec *out, uint32_t timeout_ms);

/* allocation counting hooks, set by a program that interposes malloc (tests/test_alloc.c) */
extern volatile int rf_loop_alloc_armed;
extern volatile uint64_t rf_loop_alloc_count, rf_loop_alloc_ucx;

#endif
