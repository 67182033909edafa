/* selfcheck.h: checks every generated plan runs on its own tables (DESIGN.md section 6). */
#ifndef REFIT_SELFCHECK_H
#define REFIT_SELFCHECK_H

#include "refit_plan.h"

typedef struct rf_expect { /* what the generator computed independently of the tables */
  uint64_t layout_hash, hf_tensors, hf_bytes, dest_tensors_per_replica, dest_bytes_per_replica, writes_total;
} rf_expect;

/* Runs every check, prints failures and 'N passed, N failed'; returns 0 when all pass. */
int rf_selfcheck(const rf_plan *p, const rf_expect *e);

#endif
