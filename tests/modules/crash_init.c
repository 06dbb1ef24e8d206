/* A module whose init crashes: the worker must stop restarting its
 * children after a bounded number of tries. */
#include <signal.h>
#include "celer/task.h"

static int init(celer_registry *reg) {
  (void)reg;
  raise(SIGSEGV);
  return -1;
}

CELER_MODULE("crash_init", "1.0", init);
