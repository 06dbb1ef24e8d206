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
#include "worker/verify.h"

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
  char queue[CELER_QUEUE_NAME_MAX + 1]; /* follow-ups' default queue; "" = none */
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
  const celer_registry *reg;   /* borrowed: follow-ups' default queues */
  size_t max_payload;          /* follow-up envelope limit; 0 = default */
  const struct client_signer *signer; /* borrowed; NULL = follow-ups unsigned */
  broker_push *followups;      /* owned: celer_task_enqueue's envelopes */
  size_t nfollowups, followups_bytes;
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
  broker_push *followups;                /* owned; SUCCEEDED only */
  size_t nfollowups;
} run_result;

/* Ends a run's context: on success its follow-ups move to res, otherwise
 * they are dropped. ctx owns nothing afterwards. (task_api.c) */
void task_ctx_finish(celer_task_ctx *ctx, run_result *res, bool succeeded);
/* Frees n follow-ups (their queue and envelope strings, then the array). */
void followups_free(broker_push *f, size_t n);
/* Releases what res owns (result, follow-ups). */
void run_result_clear(run_result *res);
/* Frees what a completion built by outcome_prepare owns. */
void outcome_completion_free(broker_completion *c);

/* Sets state and the error sentence of res. */
void outcome_set(run_result *res, celer_state st, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Where and how outcomes are recorded. */
typedef struct outcome_sink {
  broker_conn *conn;        /* borrowed */
  const char *worker;       /* the worker name: the record's `worker` */
  const char *consumer;     /* who holds the lease: the scripts' fence */
  int64_t result_ttl_ms;
} outcome_sink;

/* Encodes the record of a run of entry e (env may be NULL when the
 * envelope could not be decoded). On 0 the caller frees *json. */
int outcome_encode(const outcome_sink *s, const broker_entry *e, const char *queue,
                   const char *id, const celer_envelope *env, const run_result *res,
                   char **json, size_t *len);
/* Builds the completion of a run into *c: its record, for FAILED and
 * REJECTED tasks the dead-set entry with the envelope, and for SUCCEEDED
 * runs a copy of their follow-ups (all owned by c: the caller releases
 * them with outcome_completion_free). Strings of e, queue and id are
 * borrowed by c. */
int outcome_prepare(const outcome_sink *s, const broker_entry *e, const char *queue,
                    const char *id, const celer_envelope *env, const run_result *res,
                    broker_completion *c);
/* Records a final outcome (complete.lua); FAILED and REJECTED tasks are
 * dead-lettered with their envelope. *outcome is a BROKER_* value. */
int outcome_complete(const outcome_sink *s, const broker_entry *e, const char *queue,
                     const char *id, const celer_envelope *env, const run_result *res,
                     int *outcome);
/* Schedules the retry of a RETRYING run (res->retry_delay_ms set): the
 * RETRYING record, and the next attempt's envelope in the scheduled set.
 * Sets res->next_run_at. *outcome is a BROKER_* value. */
int outcome_retry(const outcome_sink *s, const broker_entry *e, const char *queue,
                  const char *id, const celer_envelope *env, run_result *res, int *outcome);
/* The delay before the retry that follows run number `attempt`. */
int64_t outcome_backoff(const worker_backoff *b, int64_t attempt);
/* The broker's time part of a stream entry id, or 0. */
int64_t outcome_entry_time(const char *entry_id);

/* Prefetch bound: entries one fetch takes; each waits in this child's
 * pending list until run. */
#define RUNNER_PREFETCH_MAX_ 1000

/* ---- slots.c ---- */
/* Each child process publishes what it holds and runs in a slot of a
 * shared memory map the supervisor made before forking. The child is the
 * only writer of its slot; the supervisor reads consistent snapshots
 * through a sequence counter (odd while the child writes). */

/* Longest stream entry id (see BROKER_ENTRY_ID_MAX). */
#define SLOT_ENTRY_ID_MAX BROKER_ENTRY_ID_MAX
/* Duration histogram bucket bounds (seconds) for /metrics. */
#define SLOT_DURATION_BUCKETS 12
extern const double slot_duration_bounds[SLOT_DURATION_BUCKETS];
/* Most queues a worker serves (the fetch command carries them all). */
#define WORKER_QUEUES_MAX 64
/* Longest consumer name: the worker name, '#', a slot number. */
#define SLOT_CONSUMER_MAX 160

typedef struct slot_held {
  uint32_t queue_index;
  char entry_id[SLOT_ENTRY_ID_MAX + 1];
} slot_held;

/* The part of a slot the supervisor reads often (time limits, crashes). */
typedef struct slot_run {
  pid_t pid;                         /* the child; 0 when the slot is empty */
  bool ready;                        /* modules loaded, broker reached */
  bool busy;                         /* a handler is running */
  uint32_t queue_index;
  char entry_id[SLOT_ENTRY_ID_MAX + 1];
  char task_id[CELER_ID_MAX + 1];
  char task[CELER_TASK_NAME_MAX + 1];
  int64_t started_mono;              /* CLOCK_MONOTONIC ms: shared by processes */
  int64_t deadline_mono;             /* hard limit; 0 = none */
  int64_t attempt;                   /* retries so far */
  int max_retries;                   /* resolved: registration or envelope */
  worker_backoff backoff;
  int64_t last_fetch_mono;           /* last completed fetch */
  uint64_t tasks_done;               /* runs finished by this child */
} slot_run;

/* Counters a child adds to; never reset while the worker runs. */
typedef struct slot_counters {
  uint64_t by_state[WORKER_QUEUES_MAX][CELER_STATE_COUNT];
  uint64_t duration_buckets[SLOT_DURATION_BUCKETS]; /* cumulative <= bound */
  uint64_t duration_count;
  double duration_sum_s;
  uint64_t stale, duplicates, reconnects;
  uint64_t refused[VERIFY_REASON_COUNT]; /* signed-task refusals by reason */
} slot_counters;

typedef struct worker_slot {
  uint32_t seq;                      /* odd while the child writes */
  char consumer[SLOT_CONSUMER_MAX + 1]; /* set by the supervisor */
  slot_run run;
  slot_counters counters;
  uint32_t nheld;
  slot_held held[RUNNER_PREFETCH_MAX_];
} worker_slot;

/* Maps n zeroed slots shared with future children; NULL on failure. */
worker_slot *slots_map(size_t n);
void slots_unmap(worker_slot *slots, size_t n);
/* Child side: bracket every change of the slot. */
void slot_write_begin(worker_slot *s);
void slot_write_end(worker_slot *s);
/* Supervisor side: consistent copies (retrying while the child writes). */
void slot_read_run(const worker_slot *s, slot_run *out);
void slot_read_counters(const worker_slot *s, slot_counters *out);
/* Copies the held entries; returns how many (at most max). */
size_t slot_read_held(const worker_slot *s, slot_held *out, size_t max);

/* ---- upkeep.c ---- */
/* Upkeep is the time-driven work of a worker, apart from running tasks:
 * promoting due scheduled tasks, renewing the leases the children hold,
 * reclaiming expired leases and heartbeats. upkeep_tick does what is due
 * and says when to call it again (one scheduler, one re-armed timer); a
 * process of the worker drives it, sleeping in poll() on the queues' wake
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
/* Heartbeat period into the worker registry (and queue depths for
 * /metrics); a worker silent for three periods is shown as stale. */
#define UPKEEP_HEARTBEAT_MS 5000
/* A worker silent this long is dropped from the registry: long enough for
 * an operator to see that it went, short enough not to pile up. */
#define UPKEEP_REGISTRY_KEEP_MS (3600 * 1000)

typedef struct upkeep_config {
  const char *const *queues;   /* borrowed; in priority order */
  size_t nqueues;
  const char *name;            /* the worker's name (records, registry) */
  const char *host;            /* for the registry */
  pid_t pid;                   /* the supervisor's, for the registry */
  int64_t started_at;          /* ms since epoch, for the registry */
  const char *consumer;        /* the consumer that reclaims lost tasks */
  int64_t lease_ms;            /* idle time after which a lease expires */
  int64_t max_redeliveries;    /* expired leases before a task FAILS */
  int64_t result_ttl_ms;
  worker_slot *slots;          /* borrowed: the children's leases */
  size_t nslots;
} upkeep_config;

/* What the upkeep process tells the supervisor, in shared memory. */
typedef struct upkeep_shared {
  int64_t depths[WORKER_QUEUES_MAX][3]; /* ready, scheduled, dead; -1 unknown */
  int64_t last_ok_mono;                 /* last broker round trip that worked */
  uint64_t promoted, reclaimed, lost;
} upkeep_shared;

typedef struct upkeep {
  broker_conn conn;            /* requests */
  broker_conn sub;             /* wake channels */
  upkeep_config cfg;
  pid_t pid;                   /* the upkeep process; 0 when not running */
  int64_t *next_promote;       /* owned; mono ms per queue */
  int64_t next_refresh, next_reclaim, next_subscribe, next_heartbeat;
  uint64_t renewed;
  upkeep_shared *shared;       /* owned mapping, shared with the process */
} upkeep;

/* What the supervisor reads of upkeep (for /metrics and /healthz). */
typedef upkeep_shared upkeep_view;
void upkeep_snapshot(upkeep *u, upkeep_view *out);

/* Prepares u (no I/O); url and ns as for broker_init. 0 or an error. */
int upkeep_init(upkeep *u, const broker_url *url, const char *ns, const upkeep_config *cfg);
void upkeep_free(upkeep *u);
/* Does what is due now; returns ms until something is due again. */
int64_t upkeep_tick(upkeep *u);
/* Starts the process that drives upkeep_tick (forked: call it from the
 * supervisor); stops it with SIGTERM and waits for it. */
int upkeep_start(upkeep *u);
void upkeep_stop(upkeep *u);

/* ---- http.c ---- */
/* A small HTTP/1.x server on the supervisor's libev loop, for /metrics and
 * /healthz: GET only, one request per connection, bounded request size
 * and connection count, non-blocking throughout. */
struct ev_loop;
typedef struct http_server http_server;

typedef struct http_response {
  int status;                /* 200, 404, 503, ... */
  const char *content_type;  /* static string */
  char *body;                /* malloc'd; the server frees it */
  size_t len;
} http_response;

/* Answers one request for path (the request target without the query);
 * fills out. Runs on the loop: must not block. */
typedef void (*http_handler)(void *ctx, const char *path, http_response *out);

/* Listens on addr ("HOST:PORT", HOST an IPv4 address, "localhost" or
 * empty for all; PORT 0 picks a free one). Returns 0 and *out, or an
 * error with a sentence in err. */
int http_server_start(struct ev_loop *loop, const char *addr, http_handler fn, void *ctx,
                      http_server **out, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *s);
/* Closes the listener and every open connection, frees s. NULL is fine. */
void http_server_stop(http_server *s);

/* ---- metrics.c ---- */
/* What /metrics reports, gathered by the supervisor. */
typedef struct metrics_input {
  const char *worker;                /* the worker name */
  const char *const *queues;         /* borrowed */
  size_t nqueues;
  const slot_run *runs;              /* one per child slot */
  const slot_counters *counters;     /* one per child slot */
  size_t nslots;
  int64_t ready[WORKER_QUEUES_MAX];      /* queue depth: not yet taken; -1 unknown */
  int64_t scheduled[WORKER_QUEUES_MAX];  /* waiting for a due time; -1 unknown */
  int64_t dead[WORKER_QUEUES_MAX];       /* in the dead set; -1 unknown */
  uint64_t child_starts, child_crashes, time_limit_kills;
  uint64_t reclaimed, lost, promoted;    /* from upkeep */
  int64_t uptime_s;
  bool healthy;
} metrics_input;

/* Renders m as Prometheus text exposition format 0.0.4. Returns a malloc'd
 * body (caller frees) and its length, or NULL when out of memory. */
char *metrics_render(const metrics_input *m, size_t *len);

/* ---- runner.c ---- */
/* Longest a fetch blocks, so that a stop request and pause flags are
 * noticed within this bound. */
#define RUNNER_MAX_BLOCK_MS 1000
#define RUNNER_PREFETCH_MAX RUNNER_PREFETCH_MAX_
/* How often the pause flags of the queues are read. */
#define RUNNER_PAUSE_CHECK_MS 500
/* A fetched entry that waited longer than this is checked for
 * cancellation again just before it runs. */
#define RUNNER_CANCEL_RECHECK_MS 100
/* Errors kept in a record's history: the last ones tell the story. */
#define RUNNER_ERROR_HISTORY 10

typedef struct runner_config {
  const char *const *queues;  /* borrowed; in priority order */
  const int *weights;         /* borrowed; NULL = strict priority order */
  size_t nqueues;
  const char *name;           /* worker name (records) */
  const char *consumer;       /* this child's consumer name (leases) */
  int prefetch;               /* entries per fetch, 1..RUNNER_PREFETCH_MAX */
  int64_t time_limit_ms;      /* worker-wide cap on one run; 0 = none */
  uint64_t max_tasks;         /* exit after this many runs; 0 = never */
  int64_t max_rss_kb;         /* exit when resident size passes it; 0 = never */
  int64_t result_ttl_ms;
  size_t max_payload;
  const celer_keyring *keyring; /* borrowed; NULL = tasks are not verified */
  const struct client_signer *signer; /* borrowed; signs follow-ups; NULL = unsigned */
} runner_config;


/* Longest a finished result waits for the rest of its batch before it is
 * recorded: batching saves round trips, not latency. */
#define RUNNER_FLUSH_MS 20

/* A final outcome waiting to be recorded with the rest of its batch. */
typedef struct pending_done {
  broker_completion c;              /* record and dead entry owned */
  char id[CELER_ID_MAX + 1];
  char entry_id[BROKER_ENTRY_ID_MAX + 1];
  char task[CELER_TASK_NAME_MAX + 1];
  char error_type[WORKER_ERROR_TYPE_MAX];
  char *error_message;              /* owned; NULL on success */
  size_t queue_index;
  celer_state state;
  int64_t attempt, duration_ms;
} pending_done;

typedef struct runner {
  broker_conn *conn;                 /* borrowed */
  const celer_registry *reg;         /* borrowed */
  runner_config cfg;
  volatile sig_atomic_t *stop;       /* set by signal handlers */
  worker_slot *slot;                 /* borrowed: this child's slot; may be NULL */
  bool *paused;                      /* owned; per queue */
  const char **active;               /* owned; the queues not paused */
  int64_t next_pause_check;
  pending_done *pending;             /* owned; room for a prefetch batch */
  size_t npending, cap_pending;
  int64_t first_pending_mono;
  uint64_t handled;                  /* entries taken to an outcome (recycling) */
  /* Scratch for one batch, allocated with the runner so that the hot path
   * allocates nothing: */
  bool *canceled, *got;
  bool *marks;                       /* per active queue: has cancel marks */
  const char **ids;
  size_t *which;
  char (*idbuf)[CELER_ID_MAX + 1];
  broker_completion *batch;
  int *outcomes;
} runner;

/* Prepares r; returns 0 or CELER_ENOMEM. slot may be NULL. */
int runner_init(runner *r, broker_conn *conn, const celer_registry *reg,
                const runner_config *cfg, volatile sig_atomic_t *stop, worker_slot *slot);
void runner_free(runner *r);
/* Creates the queues' consumer groups. */
int runner_prepare(runner *r);
/* One round: fetch a batch from the queues not paused (blocking up to
 * RUNNER_MAX_BLOCK_MS), run and record each. Returns 0 or a broker error
 * (the connection is re-made on the next round). */
int runner_step(runner *r);
/* Runs rounds until *stop is set or the child is due for recycling, then
 * hands back what it took and did not start. Broker errors are logged and
 * retried with backoff and jitter. Returns 0. */
int runner_loop(runner *r);

/* ---- supervisor.c / child.c ---- */
/* Exit codes of celer-worker (and of a child that cannot start). */
#define WORKER_EXIT_OK 0
#define WORKER_EXIT_FAILURE 1   /* children keep crashing at start-up */
#define WORKER_EXIT_CONFIG 2    /* bad flag, setting or module */
#define WORKER_EXIT_BROKER 3    /* broker refused us or is unsafe */
/* Children that die before they are ready this many times in a row make
 * the worker give up: a module whose init crashes is not retried forever. */
#define SUPERVISOR_START_FAILURES_MAX 5
/* Restart backoff after a crash: doubles from the first value to the cap,
 * so a crash loop never becomes a fork storm. */
#define SUPERVISOR_RESTART_FIRST_MS 100
#define SUPERVISOR_RESTART_CAP_MS 10000
/* A child that ran this long before crashing resets the backoff. */
#define SUPERVISOR_STABLE_MS 10000
/* How often busy children are checked against their time limits. */
#define SUPERVISOR_LIMIT_CHECK_MS 50
/* The broker is called unreachable when upkeep had no round trip for this
 * long (upkeep talks to it at least once a second). */
#define SUPERVISOR_BROKER_STALE_MS 3000
/* An idle child that has not finished a fetch for this long is stuck. */
#define SUPERVISOR_FETCH_STALL_MS 10000
/* Default grace for running tasks on SIGTERM. */
#define SUPERVISOR_SHUTDOWN_TIMEOUT_MS 30000
/* Most children one worker runs. */
#define SUPERVISOR_CHILDREN_MAX 256

/* Everything the worker was configured with (main.c fills it). */
typedef struct worker_config {
  char name[SLOT_CONSUMER_MAX - 8];
  char host[64];
  const char *queues[WORKER_QUEUES_MAX];
  int weights[WORKER_QUEUES_MAX];
  bool weighted;
  size_t nqueues;
  const char *modules[32];
  size_t nmodules;
  size_t concurrency;
  int prefetch;
  int64_t lease_ms, max_redeliveries, time_limit_ms, shutdown_timeout_ms;
  uint64_t max_tasks_per_child;
  int64_t max_rss_kb;
  const char *metrics_addr;    /* NULL = no HTTP endpoint */
  const char *log_file;        /* NULL = stderr as given */
  broker_url url;
  char ns[CELER_NAMESPACE_MAX + 1];
  int64_t result_ttl_ms, max_payload, dead_max, dead_ttl_ms;
  celer_keyring *keyring;      /* owned; NULL = no verification (verify.h) */
  struct client_signer *signer; /* owned; the signing variables, for follow-ups */
} worker_config;

/* Runs the worker until it is told to stop; returns the exit code. */
int supervisor_run(worker_config *cfg);
/* The body of child number index (after fork); never returns. */
void child_main(const worker_config *cfg, worker_slot *slot, pid_t parent, size_t index)
    __attribute__((noreturn));
/* Reopens cfg->log_file onto stderr (after a rotation); async-signal-safe. */
void worker_reopen_log(void);
/* Remembers the log file path for worker_reopen_log (static storage). */
void worker_set_log_file(const char *path);

#endif
