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

#include <pthread.h>
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

/* Retry backoff defaults (full jitter): the n-th retry waits a random
 * time in [0, min(cap, base * factor^n)]. */
#define WORKER_BACKOFF_BASE_MS 1000
#define WORKER_BACKOFF_FACTOR 2.0
#define WORKER_BACKOFF_CAP_MS (3600 * 1000)
/* A factor beyond this is a typo; growth is capped anyway. */
#define WORKER_BACKOFF_FACTOR_MAX 100.0

typedef struct worker_backoff {
  int64_t base_ms, cap_ms;
  double factor;
  bool jitter;
} worker_backoff;

typedef struct worker_task {
  char name[CELER_TASK_NAME_MAX + 1];
  celer_handler_fn handler;
  int max_retries;       /* resolved: >= 0 */
  int64_t timeout_ms;    /* 0 = none */
  worker_backoff backoff;
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

/* ---- outcome.c ---- */
/* What one run produced, before it is recorded. */
typedef struct run_result {
  celer_state state;                     /* CELER_PENDING until decided */
  json_t *result;                        /* owned; SUCCEEDED only */
  char error_type[WORKER_ERROR_TYPE_MAX];
  char error_message[WORKER_ERROR_MESSAGE_MAX];
  int64_t started_at, finished_at;
  int64_t retry_delay_ms;                /* RETRYING: < 0 = backoff */
  int64_t next_run_at;                   /* RETRYING: when it runs again */
} run_result;

/* Sets state and the error sentence of res. */
void outcome_set(run_result *res, celer_state st, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Where and how outcomes are recorded. */
typedef struct outcome_sink {
  broker_conn *conn;        /* borrowed */
  const char *worker;       /* the worker name: record field and consumer */
  int64_t result_ttl_ms;
} outcome_sink;

/* Encodes the record of a run of entry e (env may be NULL when the
 * envelope could not be decoded). On 0 the caller frees *json. */
int outcome_encode(const outcome_sink *s, const broker_entry *e, const char *queue,
                   const char *id, const celer_envelope *env, const run_result *res,
                   char **json, size_t *len);
/* Records a final outcome (complete.lua); FAILED and REJECTED tasks are
 * dead-lettered with their envelope. *outcome is a BROKER_* value. */
int outcome_complete(const outcome_sink *s, const broker_entry *e, const char *queue,
                     const char *id, const celer_envelope *env, const run_result *res,
                     int *outcome);
/* The broker's time part of a stream entry id, or 0. */
int64_t outcome_entry_time(const char *entry_id);

/* ---- inflight.c ---- */
/* The entries a runner holds (fetched, not yet recorded): the leases its
 * upkeep renews. Shared between the two threads under a mutex. */
typedef struct inflight_entry {
  size_t queue_index;
  char entry_id[48];
} inflight_entry;

typedef struct inflight {
  pthread_mutex_t lock;
  inflight_entry *entries;  /* owned */
  size_t n, cap;
} inflight;

int inflight_init(inflight *f, size_t cap);
void inflight_free(inflight *f);
/* Adds an entry; returns CELER_ETOOBIG when full. */
int inflight_add(inflight *f, size_t queue_index, const char *entry_id);
void inflight_remove(inflight *f, const char *entry_id);
/* Copies the held entry ids of one queue into ids (room for max); returns
 * how many. */
size_t inflight_of_queue(inflight *f, size_t queue_index, char (*ids)[48], size_t max);

/* ---- upkeep.c ---- */
/* Upkeep is the time-driven work of a worker, apart from running tasks:
 * promoting due scheduled tasks, renewing the leases of held entries and
 * reclaiming expired leases. upkeep_tick does what is due and says when to
 * call it again (one scheduler, one re-armed timer); a thread of the
 * worker drives it, sleeping in poll() on a wake pipe and the queues' wake
 * channels, so a newly scheduled earlier task is noticed at once. */

/* Longest sleep between two promote checks: bounds how late a task
 * ZADDed by a producer that does not publish on the wake channel runs. */
#define UPKEEP_PROMOTE_MAX_MS 1000
/* Most scheduled tasks moved to a stream by one promote call; bounds the
 * time one script holds Redis. */
#define UPKEEP_PROMOTE_BATCH 500
/* Most expired leases handled by one reclaim call per queue. */
#define UPKEEP_RECLAIM_BATCH 100
/* Pause after a broker error before upkeep tries again. */
#define UPKEEP_RETRY_MS 500

typedef struct upkeep_config {
  const char *const *queues;   /* borrowed; in priority order */
  size_t nqueues;
  const char *name;            /* the worker's consumer name */
  int64_t lease_ms;            /* idle time after which a lease expires */
  int64_t max_redeliveries;    /* expired leases before a task FAILS */
  int64_t result_ttl_ms;
} upkeep_config;

typedef struct upkeep {
  broker_conn conn;            /* requests */
  broker_conn sub;             /* wake channels */
  upkeep_config cfg;
  inflight *held;              /* borrowed */
  int wake[2];                 /* self-pipe: [0] polled, [1] written */
  pthread_t thread;
  bool running;
  volatile sig_atomic_t stop;
  int64_t *next_promote;       /* owned; mono ms per queue */
  int64_t next_refresh, next_reclaim, next_subscribe;
  uint64_t promoted, renewed, reclaimed, lost;
} upkeep;

/* Prepares u (no I/O); url and ns as for broker_init. 0 or an error. */
int upkeep_init(upkeep *u, const broker_url *url, const char *ns, const upkeep_config *cfg,
                inflight *held);
void upkeep_free(upkeep *u);
/* Does what is due now; returns ms until something is due again. */
int64_t upkeep_tick(upkeep *u);
/* Starts / stops (and joins) the thread that drives upkeep_tick. */
int upkeep_start(upkeep *u);
void upkeep_stop(upkeep *u);
/* Makes the thread promote at once (a task was scheduled here). Async-
 * signal-safe. */
void upkeep_wake(upkeep *u);

/* ---- runner.c ---- */
/* Longest a fetch blocks, so that a stop request and pause flags are
 * noticed within this bound. */
#define RUNNER_MAX_BLOCK_MS 1000
/* Prefetch bound: entries one fetch takes; each waits in this worker's
 * pending list until run. */
#define RUNNER_PREFETCH_MAX 1000
/* How often the pause flags of the queues are read. */
#define RUNNER_PAUSE_CHECK_MS 500
/* A fetched entry that waited longer than this is checked for
 * cancellation again just before it runs. */
#define RUNNER_CANCEL_RECHECK_MS 100
/* Errors kept in a record's history: the last ones tell the story. */
#define RUNNER_ERROR_HISTORY 10

typedef struct runner_config {
  const char *const *queues;  /* borrowed; in priority order */
  size_t nqueues;
  const char *name;           /* worker and consumer name */
  int prefetch;               /* entries per fetch, 1..RUNNER_PREFETCH_MAX */
  int64_t result_ttl_ms;
  size_t max_payload;
} runner_config;

typedef struct runner_stats {
  uint64_t fetched, succeeded, failed, retried, rejected, expired, canceled, duplicates,
      stale;
} runner_stats;

typedef struct runner {
  broker_conn *conn;                 /* borrowed */
  const celer_registry *reg;         /* borrowed */
  runner_config cfg;
  volatile sig_atomic_t *stop;       /* set by signal handlers */
  inflight *held;                    /* borrowed; may be NULL */
  upkeep *keeper;                    /* borrowed; woken on retries; may be NULL */
  bool *paused;                      /* owned; per queue */
  const char **active;               /* owned; the queues not paused */
  int64_t next_pause_check;
  runner_stats stats;
} runner;

/* Prepares r; returns 0 or CELER_ENOMEM. held and keeper may be NULL. */
int runner_init(runner *r, broker_conn *conn, const celer_registry *reg,
                const runner_config *cfg, volatile sig_atomic_t *stop, inflight *held,
                upkeep *keeper);
void runner_free(runner *r);
/* Creates the queues' consumer groups. */
int runner_prepare(runner *r);
/* One round: fetch a batch from the queues not paused (blocking up to
 * RUNNER_MAX_BLOCK_MS), run and record each. Returns 0 or a broker error
 * (the connection is re-made on the next round). */
int runner_step(runner *r);
/* Runs rounds until *stop is set. Broker errors are logged and retried
 * with backoff and jitter; returns 0. */
int runner_loop(runner *r);

#endif
