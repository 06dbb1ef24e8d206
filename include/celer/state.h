/* Task states as stored in result records (CONTRACT "Results and states"). */
#ifndef CELER_STATE_H
#define CELER_STATE_H

#include <stdbool.h>
#include "celer/error.h"

typedef enum celer_state {
  CELER_PENDING,    /* no record yet: enqueued, not yet taken */
  CELER_SCHEDULED,  /* waiting for its eta in the scheduled set */
  CELER_ACTIVE,     /* taken by a worker, running */
  CELER_RETRYING,   /* failed, will run again */
  CELER_SUCCEEDED,  /* final: handler returned a result */
  CELER_FAILED,     /* final: handler failed for good */
  CELER_EXPIRED,    /* final: reached a worker after its expires time */
  CELER_CANCELED,   /* final: canceled before it started */
  CELER_REJECTED,   /* final: malformed, unknown task or signature refused */
  CELER_STATE_COUNT
} celer_state;

/* Returns the upper-case name of a state ("SUCCEEDED"); static storage. */
CELER_API const char *celer_state_name(celer_state s);
/* Parses a state name; returns 0 and sets *out, or CELER_EINVAL. */
CELER_API int celer_state_parse(const char *name, celer_state *out);
/* True for the five final states. */
CELER_API bool celer_state_is_final(celer_state s);

#endif
