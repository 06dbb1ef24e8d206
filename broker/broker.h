/* broker/: everything that touches Redis. The only folder that includes
 * hiredis; the worker and the client library speak to Redis through the
 * functions below.
 *
 * Map of the folder:
 *   url.c      broker URL parsing (redis://, unix://) and password files
 *   conn.c     broker_conn: connect, authenticate, reconnect, deadlines
 *   keys.c     the key layout <ns>:{<queue>}:<part>
 *   envelope.c the envelope codec and its validation (public header)
 *   scripts.c  the embedded Lua scripts: SCRIPT LOAD, EVALSHA, NOSCRIPT
 *   ops.c      enqueue, fetch, complete, reschedule, promote, records
 *   lease.c    renewing and reclaiming leases
 *   control.c  cancel, pause, the dead set, purge, eviction settings
 *   pubsub.c   waiting for results and for news of delayed tasks
 *   record.c   building result records
 *   stats.c    read-only views: queue counts, the worker registry
 *
 * Key layout (CONTRACT, docs/protocol.md):
 *   <ns>:queues                   set of queue names (global)
 *   <ns>:workers                  hash worker name -> registry JSON (global)
 *   <ns>:workers:seen             zset worker name -> last heartbeat (global)
 *   <ns>:{q}:stream               ready tasks; consumer group "workers"
 *   <ns>:{q}:scheduled            zset envelope -> due time (ms)
 *   <ns>:{q}:result:<id>          the task's record (JSON string)
 *   <ns>:{q}:stats                hash of counters
 *   <ns>:{q}:rate                 hash 10-s bucket -> tasks finished in it
 *   <ns>:{q}:dead                 zset task id -> time it was dead-lettered
 *   <ns>:{q}:dead:entries         hash task id -> {"record", "envelope"}
 *   <ns>:{q}:canceled             zset task id -> time it was canceled
 *   <ns>:{q}:paused               string; present while the queue is paused
 *   <ns>:{q}:done:<id>            pub/sub channel, final state published
 *   <ns>:{q}:wake                 pub/sub channel, a delayed task was added
 *
 * Errors: 0 or a negative CELER_E*; broker_conn carries the sentence. */
#ifndef CELER_BROKER_H
#define CELER_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "celer/envelope.h"
#include "celer/error.h"
#include "celer/state.h"
#include "common/common.h"

struct redisContext;

/* ---- url.c ---- */
/* Longest host name (RFC 1035 allows 253 characters). */
#define BROKER_HOST_MAX 255
/* sun_path in struct sockaddr_un holds 108 bytes with the terminator. */
#define BROKER_SOCKET_PATH_MAX 107
/* Longest ACL user name and password we accept; Redis has no limit, but a
 * credential longer than this is a pasted file, not a password. */
#define BROKER_USER_MAX 128
#define BROKER_PASSWORD_MAX 512
/* Redis's own default is 16 databases; configs may raise it. */
#define BROKER_DB_MAX 1000000

typedef struct broker_url {
  bool is_unix;
  char host[BROKER_HOST_MAX + 1];
  int port;
  char path[BROKER_SOCKET_PATH_MAX + 1];
  char user[BROKER_USER_MAX + 1];     /* "" = default user */
  char password[BROKER_PASSWORD_MAX + 1]; /* "" = none */
  int db;
} broker_url;

/* Parses url into out. Percent-escapes in user and password are decoded.
 * Returns 0 or CELER_EINVAL with a sentence in err (never the password). */
int broker_url_parse(const char *url, broker_url *out, char *err, size_t errlen);
/* Reads the password from a file (one trailing newline dropped) into out.
 * Returns 0, CELER_ETOOBIG (over BROKER_PASSWORD_MAX) or CELER_EIO (the
 * file cannot be read, or is empty or holds NUL or line-break bytes), with
 * a sentence in err naming the path. */
int broker_url_read_password(const char *path, broker_url *out, char *err,
                             size_t errlen);
/* The URL with the password masked, for logs ("redis://u:***@h:6379/0"). */
void broker_url_describe(const broker_url *u, char *buf, size_t size);

/* ---- conn.c ---- */
/* Default deadline of one request; a frozen Redis must not hang a caller. */
#define BROKER_DEFAULT_TIMEOUT_MS 5000
/* Extra time granted to a blocking command beyond its BLOCK argument. */
#define BROKER_BLOCK_GRACE_MS 2000
#define BROKER_SCRIPT_COUNT 9

/* Queue names a connection remembers as registered. */
#define BROKER_REGISTERED_MAX 16

typedef struct broker_conn {
  struct redisContext *ctx;   /* owned; NULL when disconnected */
  broker_url url;
  char ns[CELER_NAMESPACE_MAX + 1];
  int timeout_ms;
  int64_t max_payload;
  /* Queues this connection has put in <ns>:queues (enqueue skips the SADD
   * for them; forgotten on reconnect, in case the broker lost them). */
  char registered[BROKER_REGISTERED_MAX][CELER_QUEUE_NAME_MAX + 1];
  size_t nregistered;
  int64_t dead_max;           /* dead set bound: entries */
  int64_t dead_ttl_ms;        /* dead set bound: age */
  char scripts_sha[BROKER_SCRIPT_COUNT][41]; /* "" until loaded */
  char errstr[CELER_ERRSTR_LEN];
} broker_conn;

/* Prepares b (no I/O). ns NULL = "celer", timeout_ms <= 0 = default. */
void broker_init(broker_conn *b, const broker_url *url, const char *ns, int timeout_ms);
/* Connects, authenticates and selects the database; 0, CELER_ECONNECT or
 * CELER_EAUTH (b->errstr says which and why). Closes any old connection. */
int broker_connect(broker_conn *b);
/* Reconnects when the connection is absent or broken; 0 or as above. */
int broker_ensure(broker_conn *b);
void broker_close(broker_conn *b);
/* Sets b->errstr; returns code for tail calls. */
int broker_fail(broker_conn *b, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- keys.c ---- */
/* Longest key we build: namespace, queue, fixed parts and a task id. */
#define BROKER_KEY_MAX (CELER_NAMESPACE_MAX + CELER_QUEUE_NAME_MAX + CELER_ID_MAX + 32)
/* Writes <ns>:{<queue>}:<part>[<id>] into buf (BROKER_KEY_MAX + 1 bytes). */
void broker_key(char *buf, const char *ns, const char *queue, const char *part,
                const char *id);
/* Writes <ns>:queues. */
void broker_queues_key(char *buf, const char *ns);
/* Name of the consumer group every queue's stream carries. */
#define BROKER_GROUP "workers"

/* ---- scripts.c ---- */
typedef enum broker_script {
  BROKER_SCRIPT_COMPLETE,
  BROKER_SCRIPT_PROMOTE,
  BROKER_SCRIPT_RESCHEDULE,
  BROKER_SCRIPT_RECLAIM,
  BROKER_SCRIPT_REFRESH,
  BROKER_SCRIPT_CANCEL,
  BROKER_SCRIPT_DEAD_RETRY,
  BROKER_SCRIPT_PURGE,
  BROKER_SCRIPT_HANDBACK
} broker_script;
/* Runs a script by EVALSHA, loading it first when needed and again after
 * NOSCRIPT. Returns the reply (caller frees with broker_reply_free) or NULL
 * with *code and b->errstr set. argvlen may be NULL for C strings. */
void *broker_eval(broker_conn *b, int *code, broker_script s, int nkeys,
                  const char **argv, const size_t *argvlen, int argc);
void broker_reply_free(void *reply);

/* ---- ops.c ---- */
int broker_ping(broker_conn *b);

/* One task to enqueue: the encoded envelope and its queue. */
typedef struct broker_push {
  const char *queue;
  const char *envelope;
  size_t len;
  int64_t eta_ms;   /* > now: into the scheduled set; else into the stream */
  int status;       /* out: 0 or CELER_E* */
} broker_push;
/* Sends every push in one pipelined round trip (XADD or ZADD, plus SADD of
 * the queue name once per queue). Returns 0 or the first error. */
int broker_enqueue(broker_conn *b, broker_push *pushes, size_t n);

/* Creates the consumer group of queue at ID 0 (creating the stream), doing
 * nothing when it exists. Also registers the queue name. */
int broker_ensure_group(broker_conn *b, const char *queue);

/* Longest stream entry id: two 64-bit decimals and a dash are 41
 * characters; a little room for what a future Redis may add. */
#define BROKER_ENTRY_ID_MAX 47

/* One stream entry handed over by XREADGROUP. */
typedef struct broker_entry {
  size_t queue_index;        /* index into the queues passed to fetch */
  char entry_id[BROKER_ENTRY_ID_MAX + 1]; /* stream entry id "ms-seq" */
  char *payload;             /* owned: the `task` field, NULL if missing */
  size_t payload_len;
  int64_t attempt;           /* the `attempt` field (see has_attempt) */
  bool has_attempt;          /* the entry overrides the envelope's attempt */
  int64_t redeliveries;      /* times its lease expired before this run */
  bool promoted;             /* moved here by promote: due by the broker */
  char *problem;             /* owned: why the entry itself is unusable */
} broker_entry;

/* Takes up to count new entries across queues (in order) for consumer,
 * blocking up to block_ms when there are none. *out (caller frees with
 * broker_entries_free) may be empty on timeout. Recreates a missing group.
 * When has_marks (nqueues flags, caller's) is not NULL, the same round trip
 * tells for each queue whether it has cancellation marks at all, so that a
 * queue without any needs no per-id check (broker_canceled). */
int broker_fetch(broker_conn *b, const char *const *queues, size_t nqueues,
                 const char *consumer, int count, int block_ms, broker_entry **out,
                 size_t *n, bool *has_marks);
void broker_entries_free(broker_entry *entries, size_t n);

/* A final outcome to record (complete.lua). Strings are borrowed. */
typedef struct broker_completion {
  const char *queue;
  const char *entry_id;     /* NULL for a task that was never in the stream */
  const char *task_id;
  celer_state state;
  const char *record;
  size_t record_len;
  int64_t ttl_ms;
  const char *dead_entry;   /* JSON kept in the dead set; NULL = not dead */
  size_t dead_len;
  /* Follow-ups published with a new SUCCEEDED record, atomically, and
   * never when the task already had a final record (queue, envelope and
   * eta_ms of each; status unused). NULL = none. */
  const broker_push *followups;
  size_t nfollowups;
} broker_completion;

/* Outcomes of the state-change scripts. */
#define BROKER_RECORDED 1   /* the change was made */
#define BROKER_DUPLICATE 0  /* the task already had a final record */
#define BROKER_STALE -1     /* the lease was lost: nothing was changed */

/* Records the final outcomes of n tasks of one queue (c[0].queue, one
 * TTL) in one script call per batch: for each, XACK (an entry no longer
 * pending is refused as stale) + XDEL the entry, writes the record (unless the task already
 * has a final one), dead-letters it when asked (bounded by b->dead_max and
 * b->dead_ttl_ms), bumps counters, PUBLISHes the state and, with a new
 * record only, publishes the task's follow-ups. outcomes[i] is
 * BROKER_RECORDED, BROKER_DUPLICATE or BROKER_STALE. */
int broker_complete(broker_conn *b, const broker_completion *c, size_t n, int *outcomes);
/* broker_complete then broker_fetch, in one round trip when the n outcomes
 * fit one script call: the worker's hot path, where a fair worker
 * (prefetch 1) would otherwise pay two round trips per task. The read
 * sent with the script does not block; when it finds nothing, a blocking
 * broker_fetch follows (a second round trip, only when the queues have run
 * dry). On an error, the
 * outcomes may or may not have been recorded (the caller's entries stay
 * pending either way and come back by lease, as with broker_complete). */
int broker_complete_fetch(broker_conn *b, const broker_completion *c, size_t n, int *outcomes,
                          const char *const *queues, size_t nqueues, const char *consumer,
                          int count, int block_ms, broker_entry **out, size_t *nout,
                          bool *has_marks);

/* A leased entry to move into the scheduled set (reschedule.lua). */
typedef struct broker_reschedule_req {
  const char *queue, *entry_id, *consumer, *task_id;
  const char *envelope;     /* what goes into the scheduled set */
  size_t envelope_len;
  int64_t due_ms;
  bool park;                /* true: only if due_ms is ahead by the broker */
  const char *record;       /* the RETRYING record (retry only) */
  size_t record_len;
  int64_t ttl_ms;
} broker_reschedule_req;

/* Schedules a retry with its RETRYING record, or parks a task whose eta is
 * ahead by the broker's clock. *outcome: BROKER_RECORDED (scheduled),
 * BROKER_DUPLICATE (already final: acked only), BROKER_STALE (lease lost),
 * or BROKER_NOT_PARKED (already due: run it now). */
#define BROKER_NOT_PARKED 2
int broker_reschedule(broker_conn *b, const broker_reschedule_req *r, int *outcome);

/* Renews consumer's leases on the given entries of queue (refresh.lua);
 * entries it no longer holds are left alone. *renewed may be NULL. */
int broker_refresh(broker_conn *b, const char *queue, const char *consumer,
                   const char *const *entry_ids, size_t n, int *renewed);

/* Moves entries of queue idle longer than lease_ms back to the stream with
 * their redelivery count raised (reclaim.lua; *redelivered gets how many),
 * at most count per call.
 * Entries past `limit` redeliveries are claimed for consumer instead and
 * returned in *lost (caller frees with broker_entries_free): the caller
 * records them as FAILED. */
int broker_reclaim(broker_conn *b, const char *queue, const char *consumer, int64_t lease_ms,
                   int count, int64_t limit, int *redelivered, broker_entry **lost, size_t *n);

/* Hands back entries consumer holds in queue (handback.lua): the n given
 * ids, or every one when n is 0. They are immediately runnable elsewhere.
 * *count (may be NULL) gets how many. */
int broker_handback(broker_conn *b, const char *queue, const char *consumer,
                    const char *const *ids, size_t n, int *count);
/* Reads one stream entry of queue by id into *out (caller frees with
 * broker_entries_free(out, 1)); CELER_ENOTFOUND when it is gone. */
int broker_read_entry(broker_conn *b, const char *queue, const char *entry_id,
                      broker_entry **out);

/* The worker registry (global keys): <ns>:workers (hash name -> JSON) and
 * <ns>:workers:seen (zset name -> last heartbeat, ms). */
int broker_heartbeat(broker_conn *b, const char *name, const char *entry, size_t len);
int broker_unregister_worker(broker_conn *b, const char *name);
/* Drops registry entries whose last heartbeat is before `before` (ms). */
int broker_prune_workers(broker_conn *b, int64_t before);
/* Depths of queue in one round trip: out[0] ready (in the stream, not yet
 * taken), out[1] active (taken, not yet recorded), out[2] scheduled,
 * out[3] dead. */
int broker_queue_depths(broker_conn *b, const char *queue, int64_t out[4]);

/* Cancels a task that has no final record (cancel.lua). state_out (16
 * bytes) gets "CANCELED" and *changed true, or the final state the task
 * already had and *changed false. */
int broker_cancel(broker_conn *b, const char *queue, const char *task_id,
                  const char *record, size_t record_len, int64_t ttl_ms, char state_out[16],
                  bool *changed);
/* Which of the task ids are marked canceled in queue; canceled[i] is set
 * for each. One round trip. */
int broker_canceled(broker_conn *b, const char *queue, const char *const *ids, size_t n,
                    bool *canceled);

/* Pause flags of several queues in one round trip; paused[i] per queue. */
int broker_paused(broker_conn *b, const char *const *queues, size_t n, bool *paused);
/* Pauses (true) or resumes (false) a queue. */
int broker_set_paused(broker_conn *b, const char *queue, bool paused);

/* Dead entries of queue, newest first: ids[i] and entries[i] (the stored
 * JSON, NULL if missing) and dead_at[i] in ms; caller frees both lists with
 * broker_names_free and dead_at with free(). *total gets the set's size. */
int broker_dead_list(broker_conn *b, const char *queue, int64_t offset, int64_t limit,
                     char ***ids, char ***entries, int64_t **dead_at, size_t *n,
                     int64_t *total);
/* Moves one dead task (task_id) or a batch of the oldest (task_id NULL,
 * passing over `offset` that cannot be retried) back to ready
 * (dead_retry.lua). Only entries dead at or before *cutoff (ms, 0 = the
 * broker's now) move; *cutoff gets the time used, for the next batch.
 * *left counts the entries still dead at or before it. */
int broker_dead_retry(broker_conn *b, const char *queue, const char *task_id, int batch,
                      int64_t offset, int64_t *cutoff, int64_t *moved, int64_t *skipped,
                      int64_t *left);
/* Adds queue to the registry of queues (<ns>:queues). */
int broker_register_queue(broker_conn *b, const char *queue);

/* Purge parts (a string of 'r' ready, 's' scheduled, 'd' dead) of queue,
 * one batch (purge.lua). counts[0..2] get what was removed from each;
 * *done is false while ready entries remain to remove. */
int broker_purge(broker_conn *b, const char *queue, const char *parts, int batch,
                 int64_t counts[3], bool *done);

/* Redis's eviction settings: policy (at least 32 bytes) and maxmemory in
 * bytes. CELER_EAUTH when CONFIG GET is not allowed for this user. */
int broker_eviction(broker_conn *b, char *policy, size_t size, int64_t *maxmemory);

/* Subscribes sub (its own connection) to the wake channels of queues. */
int broker_subscribe_wake(broker_conn *sub, const char *const *queues, size_t n);
/* The connection's socket, for poll(); -1 when disconnected. */
int broker_fd(const broker_conn *b);
/* Reads what arrived on a subscribed connection without blocking and
 * discards it; returns the number of messages, or an error. */
int broker_drain_messages(broker_conn *sub);

/* Moves due members of queue's scheduled set into its stream (at most max),
 * judged by the broker's clock. *moved gets the count; *next_due_ms the
 * earliest remaining due time (-1 when none) and *now_ms the broker's
 * time. */
int broker_promote(broker_conn *b, const char *queue, int max, int *moved,
                   int64_t *next_due_ms, int64_t *now_ms);

/* GETs a record. On 0 *json is owned by the caller (free()). */
int broker_get_record(broker_conn *b, const char *queue, const char *id, char **json,
                      size_t *len);
/* Lists registered queue names; caller frees with broker_names_free. */
int broker_list_queues(broker_conn *b, char ***names, size_t *n);
void broker_names_free(char **names, size_t n);

/* Subscribes (on its own connection sub, already initialised) to the done
 * channel of a task. The caller then reads the record and, if not final,
 * calls broker_wait_message. */
int broker_subscribe_done(broker_conn *sub, const char *queue, const char *id);
/* Leaves the done channel of a task and reads up to the confirmation
 * (dropping any message that was already on its way), so that sub can
 * serve the next wait. */
int broker_unsubscribe_done(broker_conn *sub, const char *queue, const char *id);
/* Waits for one message on the subscribed channel until deadline (monotonic
 * ms, < 0 = forever). Returns 0, CELER_ETIMEDOUT or an error. A timeout
 * leaves sub disconnected (hiredis cannot resume a timed-out read). */
int broker_wait_message(broker_conn *sub, int64_t deadline_mono_ms);

/* ---- stats.c ---- */
/* Scheduled members one queue read inspects to count retries (decoding
 * only those that mention "attempt"): bounds the time one read holds
 * Redis to tens of ms. Beyond it the retry count is a lower bound. */
#define BROKER_STATS_RETRY_SCAN_MAX 50000

/* One queue's counts, read atomically (stats.lua). */
typedef struct broker_queue_stats {
  int64_t ready, active, scheduled, retrying, dead;
  bool retrying_exact;   /* false: the scheduled set was too big to read whole */
  int64_t processed, succeeded, failed, rejected, expired, canceled, retried;
  bool paused;
  int64_t recent;        /* tasks finished within the last window_ms */
  int64_t window_ms;     /* the rate window, by the broker's clock */
} broker_queue_stats;
/* Counts of n queues in one pipelined round trip into out[0..n-1]. */
int broker_read_queue_stats(broker_conn *b, const char *const *queues, size_t n,
                            broker_queue_stats *out);

/* The worker registry as stored. Every string is owned by the list. */
typedef struct broker_worker_list {
  char **names, **entries;  /* <ns>:workers: name -> JSON entry */
  size_t n;
  char **seen_names;        /* <ns>:workers:seen, oldest heartbeat first */
  int64_t *seen_ms;
  size_t n_seen;
} broker_worker_list;
/* Reads both registry keys in one round trip; on 0 free *out with
 * broker_worker_list_free (also safe on a zeroed list). */
int broker_workers(broker_conn *b, broker_worker_list *out);
void broker_worker_list_free(broker_worker_list *l);

/* ---- record.c ---- */
/* Everything a record says about one run. Strings are borrowed. */
typedef struct broker_outcome {
  const char *id;
  const char *task;          /* may be NULL for undecodable entries */
  const char *queue;
  const char *entry_id;      /* stream entry, NULL if none */
  celer_state state;
  int64_t attempt;
  int64_t redeliveries;      /* times a lease expired before this run */
  const json_t *result;      /* SUCCEEDED only; NULL = null */
  const json_t *errors;      /* earlier attempts' errors (array) or NULL */
  int64_t next_run_at;       /* RETRYING: when it runs again */
  const char *error_type;    /* not SUCCEEDED */
  const char *error_message;
  int64_t enqueued_at, started_at, finished_at;
  const char *worker;
} broker_outcome;
/* Builds the record JSON (compact). Caller frees *out with free(). */
int broker_record_encode(const broker_outcome *o, char **out, size_t *len);

#endif
