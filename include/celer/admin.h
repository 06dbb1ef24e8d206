/* libceler operator API: steer queues and tasks (taskctl is built on it).
 * Same client object, error convention and errstr as celer/client.h. */
#ifndef CELER_ADMIN_H
#define CELER_ADMIN_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include "celer/client.h"

/* Cancels a task that has not finished: it gets a final CANCELED record at
 * once, and a worker that takes it later drops it without running it
 * (checked when it is fetched and again before it runs). queue NULL means
 * "default": a task not yet taken has no record to find its queue by.
 * *canceled (may be NULL) is true when this call canceled it; otherwise
 * the task already had a final state, given in *state_out (may be NULL),
 * and nothing changed. A task that is running when it is canceled
 * finishes, but its outcome is not recorded: the record stays CANCELED. */
CELER_API int celer_cancel(celer_client *c, const char *queue, const char *id,
                           celer_state *state_out, bool *canceled);

/* Workers stop taking tasks from a paused queue within a second; nothing in
 * it is lost or reordered. */
CELER_API int celer_pause(celer_client *c, const char *queue);
CELER_API int celer_resume(celer_client *c, const char *queue);
CELER_API int celer_is_paused(celer_client *c, const char *queue, bool *paused);

/* Longest dead listing one call returns. */
#define CELER_DEAD_LIST_MAX 10000

/* Dead-lettered tasks of queue (NULL = "default"), newest first, from
 * offset, at most limit. On 0 *list (caller owns) is an array of objects
 * {"id", "dead_at" (ms), "record" (object or null), "envelope" (string or
 * null)} and *total (may be NULL) the size of the dead set. */
CELER_API int celer_dead_list(celer_client *c, const char *queue, int64_t offset,
                              int64_t limit, json_t **list, int64_t *total);

/* Moves a dead task (id) or every dead task (id NULL; those dead when the
 * call starts) of queue back to ready, attempts reset and its old record
 * removed. *moved (may be NULL)
 * gets how many; CELER_ENOTFOUND when id is not in the dead set. Dead
 * entries whose envelope was unreadable (garbage) cannot be retried and
 * stay. */
CELER_API int celer_dead_retry(celer_client *c, const char *queue, const char *id,
                               int64_t *moved);

/* Parts of a queue for celer_purge. */
#define CELER_PURGE_READY 1u      /* tasks not yet taken by a worker */
#define CELER_PURGE_SCHEDULED 2u  /* delayed tasks and retries waiting */
#define CELER_PURGE_DEAD 4u       /* the dead set */

/* Empties the named parts of queue; counts[0..2] (may be NULL) get what was
 * removed from ready, scheduled and dead. Tasks already taken keep running
 * and recording. */
CELER_API int celer_purge(celer_client *c, const char *queue, unsigned parts,
                          int64_t counts[3]);

/* Longest queue or worker listing one call returns. */
#define CELER_LIST_MAX 10000
/* A worker whose last heartbeat is older than this is stale: three missed
 * heartbeats (workers beat every 5 s). */
#define CELER_WORKER_STALE_MS 15000

/* Counts of the known queues (<ns>:queues), sorted by name, from offset, at
 * most limit (0 to CELER_LIST_MAX); queue not NULL reads only that queue
 * (CELER_ENOTFOUND when it is not known). Each count is O(1) in the
 * queue's size (see broker/stats.c). On 0 *list (caller owns) is an array
 * of objects {"queue", "ready" (not yet taken), "active" (taken, not yet
 * recorded), "scheduled" (delayed and retries), "retrying" (retries among
 * scheduled), "dead", "processed" (final records written), "succeeded",
 * "failed" (FAILED or REJECTED), "rejected", "expired", "canceled",
 * "retried" (retries ever scheduled), "paused" (bool), "rate" (tasks
 * finished per second over the last minute, a number)}, plus
 * "retrying_exact": false when the scheduled set was too big to count its
 * retries exactly. *total (may be NULL) gets how many queues are known. */
CELER_API int celer_queue_stats(celer_client *c, const char *queue, int64_t offset,
                                int64_t limit, json_t **list, int64_t *total);

/* The worker registry, sorted by name, from offset, at most limit. On 0
 * *list (caller owns) is an array of the workers' registry entries (name,
 * host, pid, queues, concurrency, children, busy, processed, failed,
 * started_at, last_fetch: see docs/protocol.md) with "last_heartbeat" (ms)
 * taken from <ns>:workers:seen, "heartbeat_age_ms" and "stale" (bool: the
 * last heartbeat is older than CELER_WORKER_STALE_MS) added. *total (may
 * be NULL) gets the registry's size. */
CELER_API int celer_workers(celer_client *c, int64_t offset, int64_t limit, json_t **list,
                            int64_t *total);

#endif
