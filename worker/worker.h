/* worker/: the celer-worker daemon. Private header of the folder.
 *
 * Map:
 *   registry.c  task name -> handler and its defaults (celer_registry)
 *   module.c    loading task modules with dlopen, by name or path
 *   task_api.c  what handlers call: context accessors, fail/retry, args
 *   runner.c    the fetch-run-complete loop, one unit a child can run
 *   main.c      flags, configuration, signals */
#ifndef CELER_WORKER_H
#define CELER_WORKER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "broker/broker.h"
#include "celer/envelope.h"
#include "celer/task.h"

/* ---- registry.c ---- */
/* Retries a task gets when neither its registration nor its envelope says:
 * the same default as Celery's max_retries. */
#define WORKER_DEFAULT_MAX_RETRIES 3

typedef struct worker_task {
  char name[CELER_TASK_NAME_MAX + 1];
  celer_handler_fn handler;
  int max_retries;       /* resolved: >= 0 */
  int64_t timeout_ms;    /* 0 = none */
  const char *module;    /* borrowed: the module's name */
} worker_task;

struct celer_registry {
  worker_task *tasks;    /* owned; sorted by name once sealed */
  size_t n, cap;
  const char *loading;   /* module being initialised, for messages */
  bool sealed;
};

void registry_init(celer_registry *reg);
void registry_free(celer_registry *reg);
/* Sorts for lookup; no registration is accepted afterwards. */
void registry_seal(celer_registry *reg);
/* Borrowed pointer, or NULL for an unknown name. */
const worker_task *registry_find(const celer_registry *reg, const char *name);

/* ---- module.c ---- */
/* Loads a module by name (searched in CELER_MODULE_PATH, next to the
 * binary, then the install tree) or by path (contains a '/' or ends in
 * ".so") and runs its init. Returns 0 or -1 with a sentence in err. */
int module_load(celer_registry *reg, const char *name_or_path, char *err, size_t errlen);
/* Unloads every module (after the registry is no longer used). */
void module_unload_all(void);

/* ---- task_api.c ---- */
/* Longest error message kept in a record: enough for a stack of context,
 * short enough that a failing task cannot bloat its record. */
#define WORKER_ERROR_MESSAGE_MAX 2048
#define WORKER_ERROR_TYPE_MAX 64

typedef enum task_verdict {
  VERDICT_NONE,      /* the handler has not said fail or retry */
  VERDICT_FAIL,      /* celer_task_fail: final */
  VERDICT_RETRY,     /* celer_task_retry: again if retries remain */
} task_verdict;

struct celer_task_ctx {
  const celer_envelope *env;   /* borrowed for the run */
  const char *queue;
  int64_t deadline_ms;         /* wall clock; 0 = none */
  task_verdict verdict;
  int64_t retry_delay_ms;      /* < 0: the backoff decides */
  char error_type[WORKER_ERROR_TYPE_MAX];
  char error_message[WORKER_ERROR_MESSAGE_MAX];
};

/* ---- runner.c ---- */
/* Longest a fetch blocks, so that a stop request and newly scheduled
 * earlier tasks are noticed within this bound. */
#define RUNNER_MAX_BLOCK_MS 1000
/* Most scheduled tasks moved to a stream by one promote call; bounds the
 * time one script holds Redis. */
#define RUNNER_PROMOTE_BATCH 500
/* Retry backoff (full jitter): the n-th retry waits a random time in
 * [0, min(cap, base * 2^n)]. */
#define RUNNER_BACKOFF_BASE_MS 1000
#define RUNNER_BACKOFF_CAP_MS (3600 * 1000)
/* Prefetch bound: entries one fetch takes; each waits in this worker's
 * pending list until run. */
#define RUNNER_PREFETCH_MAX 1000

typedef struct runner_config {
  const char *const *queues;  /* borrowed; in priority order */
  size_t nqueues;
  const char *name;           /* worker and consumer name */
  int prefetch;               /* entries per fetch, 1..RUNNER_PREFETCH_MAX */
  int64_t result_ttl_ms;
  size_t max_payload;
} runner_config;

typedef struct runner_stats {
  uint64_t fetched, succeeded, failed, retried, rejected, expired, duplicates;
} runner_stats;

typedef struct runner {
  broker_conn *conn;                 /* borrowed */
  const celer_registry *reg;         /* borrowed */
  runner_config cfg;
  volatile sig_atomic_t *stop;       /* set by signal handlers */
  int64_t *next_promote_mono;        /* owned; per queue */
  runner_stats stats;
} runner;

/* Prepares r; returns 0 or CELER_ENOMEM. */
int runner_init(runner *r, broker_conn *conn, const celer_registry *reg,
                const runner_config *cfg, volatile sig_atomic_t *stop);
void runner_free(runner *r);
/* Creates the queues' consumer groups. */
int runner_prepare(runner *r);
/* One round: promote due tasks, fetch a batch (blocking up to the next due
 * time or RUNNER_MAX_BLOCK_MS), run and record each. Returns 0 or a broker
 * error (the connection is re-made on the next round). */
int runner_step(runner *r);
/* Runs rounds until *stop is set. Broker errors are logged and retried
 * with backoff; returns 0. */
int runner_loop(runner *r);

#endif
