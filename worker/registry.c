/* The task registry: which handler runs which task name, with the task's
 * defaults. Filled while modules load, then sealed and searched by name. */
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "worker/worker.h"

/* Tasks one worker may register: far above any real deployment, low
 * enough that a runaway module loop is caught. */
#define REGISTRY_MAX_TASKS 65536

void registry_init(celer_registry *reg) { memset(reg, 0, sizeof *reg); }

void registry_free(celer_registry *reg) {
  free(reg->tasks);
  memset(reg, 0, sizeof *reg);
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const worker_task *)a)->name, ((const worker_task *)b)->name);
}

void registry_seal(celer_registry *reg) {
  if (reg->n > 1) qsort(reg->tasks, reg->n, sizeof *reg->tasks, by_name);
  reg->sealed = true;
}

const worker_task *registry_find(const celer_registry *reg, const char *name) {
  if (!reg->sealed) {
    for (size_t i = 0; i < reg->n; i++)
      if (strcmp(reg->tasks[i].name, name) == 0) return &reg->tasks[i];
    return NULL;
  }
  worker_task key;
  if (strlen(name) > CELER_TASK_NAME_MAX) return NULL;
  strcpy(key.name, name);
  return bsearch(&key, reg->tasks, reg->n, sizeof *reg->tasks, by_name);
}

int celer_register(celer_registry *reg, const celer_task_def *def) {
  const char *mod = reg->loading ? reg->loading : "?";
  if (reg->sealed) {
    celer_error("module %s: celer_register called after start-up", mod);
    return -1;
  }
  if (def == NULL || def->name == NULL || def->handler == NULL) {
    celer_error("module %s: celer_register needs a name and a handler", mod);
    return -1;
  }
  if (strlen(def->name) > CELER_TASK_NAME_MAX || !celer_valid_task_name(def->name)) {
    celer_error("module %s: task name '%.*s' is not 1 to %d characters from "
                "[A-Za-z0-9_.:-]", mod, CELER_TASK_NAME_MAX, def->name, CELER_TASK_NAME_MAX);
    return -1;
  }
  if (def->max_retries < -1 || def->timeout_ms < 0 || def->backoff_base_ms < 0 ||
      def->backoff_cap_ms < 0 || !(def->backoff_factor >= 0) ||
      def->backoff_factor > WORKER_BACKOFF_FACTOR_MAX) {
    celer_error("module %s: task %s has a negative max_retries, timeout or backoff, or a "
                "backoff factor over %.0f", mod, def->name, WORKER_BACKOFF_FACTOR_MAX);
    return -1;
  }
  if (def->queue && (strlen(def->queue) > CELER_QUEUE_NAME_MAX ||
                     !celer_valid_queue_name(def->queue))) {
    celer_error("module %s: task %s names queue '%.*s', not 1 to %d characters from "
                "[A-Za-z0-9_.-]", mod, def->name, CELER_QUEUE_NAME_MAX, def->queue,
                CELER_QUEUE_NAME_MAX);
    return -1;
  }
  const worker_task *dup = registry_find(reg, def->name);
  if (dup) {
    celer_error("module %s: task %s is already registered by module %s", mod, def->name,
                dup->module);
    return -1;
  }
  if (reg->n == reg->cap) {
    size_t cap = reg->cap ? reg->cap * 2 : 16;
    if (cap > REGISTRY_MAX_TASKS) {
      celer_error("module %s: more than %d tasks registered", mod, REGISTRY_MAX_TASKS);
      return -1;
    }
    worker_task *t = realloc(reg->tasks, cap * sizeof *t);
    if (t == NULL) {
      celer_error("module %s: out of memory registering %s", mod, def->name);
      return -1;
    }
    reg->tasks = t;
    reg->cap = cap;
  }
  worker_task *t = &reg->tasks[reg->n++];
  memset(t, 0, sizeof *t);
  strcpy(t->name, def->name);
  t->handler = def->handler;
  t->max_retries = def->max_retries == 0    ? WORKER_DEFAULT_MAX_RETRIES
                   : def->max_retries == -1 ? 0
                                            : def->max_retries;
  t->timeout_ms = def->timeout_ms;
  t->backoff.base_ms = def->backoff_base_ms ? def->backoff_base_ms : WORKER_BACKOFF_BASE_MS;
  t->backoff.factor = def->backoff_factor ? def->backoff_factor : WORKER_BACKOFF_FACTOR;
  t->backoff.cap_ms = def->backoff_cap_ms ? def->backoff_cap_ms : WORKER_BACKOFF_CAP_MS;
  t->backoff.jitter = !def->no_jitter;
  t->module = mod;
  if (def->queue) strcpy(t->queue, def->queue);
  return 0;
}
