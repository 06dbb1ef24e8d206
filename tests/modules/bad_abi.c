/* A module built for another module ABI: the worker must refuse it. */
#include "celer/task.h"

static int init(celer_registry *reg) {
  (void)reg;
  return 0;
}

CELER_TASK_API const celer_module_info celer_module = {CELER_MODULE_ABI + 1, "bad_abi", "1.0",
                                                       init};
