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
 *   ops.c      enqueue, fetch, complete, promote, records, waiting
 *   record.c   building result records
 *
 * Key layout (CONTRACT, docs/protocol.md):
 *   <ns>:queues                   set of queue names (global)
 *   <ns>:{q}:stream               ready tasks; consumer group "workers"
 *   <ns>:{q}:scheduled            zset envelope -> due time (ms)
 *   <ns>:{q}:result:<id>          the task's record (JSON string)
 *   <ns>:{q}:stats                hash of counters
 *   <ns>:{q}:done:<id>            pub/sub channel, final state published
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
#define BROKER_SCRIPT_COUNT 3

typedef struct broker_conn {
  struct redisContext *ctx;   /* owned; NULL when disconnected */
  broker_url url;
  char ns[CELER_NAMESPACE_MAX + 1];
  int timeout_ms;
  int64_t max_payload;
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
  BROKER_SCRIPT_RESCHEDULE
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

/* One stream entry handed over by XREADGROUP. */
typedef struct broker_entry {
  size_t queue_index;        /* index into the queues passed to fetch */
  char entry_id[48];         /* stream entry id "ms-seq" */
  char *payload;             /* owned: the `task` field, NULL if missing */
  size_t payload_len;
  int64_t attempt;           /* the `attempt` field, 0 if absent */
  bool promoted;             /* moved here by promote: due by the broker */
  char *problem;             /* owned: why the entry itself is unusable */
} broker_entry;

/* Takes up to count new entries across queues (in order) for consumer,
 * blocking up to block_ms when there are none. *out (caller frees with
 * broker_entries_free) may be empty on timeout. Recreates a missing group. */
int broker_fetch(broker_conn *b, const char *const *queues, size_t nqueues,
                 const char *consumer, int count, int block_ms,
                 broker_entry **out, size_t *n);
void broker_entries_free(broker_entry *entries, size_t n);

/* Records a final outcome in one script: XACK + XDEL the entry, write the
 * record (unless the task already has a final one: then only count a
 * duplicate), bump counters, PUBLISH the state. entry_id may be NULL for a
 * task that was never in the stream. *recorded is 1 when the record was
 * written, 0 for a duplicate. */
int broker_complete(broker_conn *b, const char *queue, const char *entry_id,
                    const char *task_id, celer_state state, const char *record,
                    size_t record_len, int64_t ttl_ms, int *recorded);

/* Moves a taken entry into the scheduled set (reschedule.lua): a retry
 * due at due_ms with its RETRYING record, or (park) a task whose eta is
 * ahead by the broker's clock. *outcome: 1 scheduled, 0 not parked because
 * already due, -1 the task already had a final record (duplicate). */
int broker_reschedule(broker_conn *b, const char *queue, const char *entry_id,
                      const char *task_id, const char *envelope, size_t envelope_len,
                      int64_t due_ms, bool park, const char *record, size_t record_len,
                      int64_t ttl_ms, int *outcome);

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
/* Waits for one message on the subscribed channel until deadline (monotonic
 * ms, < 0 = forever). Returns 0, CELER_ETIMEDOUT or an error. A timeout
 * leaves sub disconnected (hiredis cannot resume a timed-out read). */
int broker_wait_message(broker_conn *sub, int64_t deadline_mono_ms);

/* ---- record.c ---- */
/* Everything a record says about one run. Strings are borrowed. */
typedef struct broker_outcome {
  const char *id;
  const char *task;          /* may be NULL for undecodable entries */
  const char *queue;
  const char *entry_id;      /* stream entry, NULL if none */
  celer_state state;
  int64_t attempt;
  const json_t *result;      /* SUCCEEDED only; NULL = null */
  const char *error_type;    /* not SUCCEEDED */
  const char *error_message;
  int64_t enqueued_at, started_at, finished_at;
  const char *worker;
} broker_outcome;
/* Builds the record JSON (compact). Caller frees *out with free(). */
int broker_record_encode(const broker_outcome *o, char **out, size_t *len);

#endif
