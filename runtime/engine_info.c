/* engine_info.c: rf_engine_config, the one accessor lookup.c needs from an engine.
 * TODO(lead, issue 13 runtime split): move this into engine.c (or trainer.c / receiver.c); it lives
 * apart only so that this branch does not edit engine.c. */
#include "internal.h"

const rf_config *rf_engine_config(const rf_engine *e) { return e ? &e->cfg : NULL; }
