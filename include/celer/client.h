/* libceler: the producer API. Synchronous; one client owns one broker
 * connection for requests and, once it has waited for a result, a second
 * one it keeps for waiting (subscribed only during a wait). A client is not
 * thread-safe: use one client per thread.
 *
 * Errors: every function returns 0 or a negative CELER_E* code, and the
 * client keeps a sentence describing the last failure (celer_client_errstr).
 * The library never prints and never aborts on a broken connection: a
 * call on a broken connection reconnects once before it fails. */
#ifndef CELER_CLIENT_H
#define CELER_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "celer/error.h"
#include "celer/envelope.h"
#include "celer/state.h"

typedef struct celer_client celer_client;

/* Connection settings. Any NULL or 0 field falls back to the environment
 * (CELER_BROKER_URL, CELER_BROKER_PASSWORD_FILE, CELER_NAMESPACE,
 * CELER_MAX_PAYLOAD), then to the default. */
typedef struct celer_client_options {
  const char *broker_url;    /* redis://[[user]:password@]host[:port][/db] or
                                unix:///path.sock[?db=N] */
  const char *password_file; /* file whose bytes are the password */
  const char *ns;            /* key prefix, default "celer" */
  int timeout_ms;            /* deadline of one request, default 5000 */
  size_t max_payload;        /* largest envelope, default 1 MiB */
  int64_t result_ttl_s;      /* TTL of records the client writes (cancel);
                                default CELER_RESULT_TTL or 24 h */
} celer_client_options;

/* Options of one enqueue. Initialise with celer_enqueue_options_init. */
typedef struct celer_enqueue_options {
  const char *queue;       /* NULL = "default" */
  const char *id;          /* NULL = a new UUIDv4 */
  int64_t countdown_ms;    /* > 0: run no earlier than now + countdown */
  int64_t eta_ms;          /* > 0: run no earlier than this (ms since epoch) */
  int64_t expires_ms;      /* > 0: do not start after this (ms since epoch) */
  int max_retries;         /* >= 0 overrides the task default; -1 = default */
  int64_t timeout_ms;      /* > 0: hard time limit for one run */
  const json_t *meta;      /* borrowed; an object of free-form headers */
  const char *origin;      /* who sends it; NULL = none */
} celer_enqueue_options;

/* One task of a batch: inputs, and the outcome filled in by the call. */
typedef struct celer_batch_item {
  const char *task;                 /* borrowed */
  const json_t *args;               /* borrowed; array or NULL */
  const json_t *kwargs;             /* borrowed; object or NULL */
  celer_enqueue_options opts;
  char id[CELER_ID_MAX + 1];        /* out: the task id */
  int status;                       /* out: 0 or CELER_E* for this item */
} celer_batch_item;

CELER_API void celer_enqueue_options_init(celer_enqueue_options *o);

/* Creates a client; NULL only when out of memory. Does not connect.
 * opts may be NULL; its strings are copied. Free with celer_client_free. */
CELER_API celer_client *celer_client_new(const celer_client_options *opts);
/* Closes the connections and frees the client. NULL is accepted. */
CELER_API void celer_client_free(celer_client *c);
/* Connects and authenticates. Returns 0, CELER_EINVAL (bad URL),
 * CELER_ECONNECT, CELER_EAUTH or CELER_EIO (password file). */
CELER_API int celer_client_connect(celer_client *c);
/* The last failure as one sentence; borrowed, valid until the next call. */
CELER_API const char *celer_client_errstr(const celer_client *c);
/* The namespace in use; borrowed, valid while c lives. */
CELER_API const char *celer_client_namespace(const celer_client *c);

/* PINGs the broker. */
CELER_API int celer_ping(celer_client *c);

/* Enqueues one task. args (array) and kwargs (object) are borrowed and may
 * be NULL; opts may be NULL. On 0 the task id is in id_out (may be NULL).
 * A task with a future eta or countdown waits in the scheduled set. */
CELER_API int celer_enqueue(celer_client *c, const char *task, const json_t *args,
                            const json_t *kwargs, const celer_enqueue_options *opts,
                            char id_out[CELER_ID_MAX + 1]);

/* Enqueues n tasks in one pipelined round trip. Every item gets its own
 * status; items that fail validation are not sent. Returns 0 when every
 * item was enqueued, else the first failing item's code. */
CELER_API int celer_enqueue_batch(celer_client *c, celer_batch_item *items, size_t n);

/* Reads a task's record. queue NULL searches every known queue. On 0 the
 * caller owns *record (json_decref). CELER_ENOTFOUND: no record (PENDING,
 * unknown, or expired from the backend). */
CELER_API int celer_get_record(celer_client *c, const char *queue, const char *id,
                               json_t **record);

/* Waits up to timeout_ms (< 0: forever) until the task's record is final,
 * then stores it in *record (caller owns). Subscribes before it reads, so a
 * completion that lands in between is never missed; it does not poll.
 * queue NULL means "default". Returns 0, CELER_ETIMEDOUT or an error. */
CELER_API int celer_wait(celer_client *c, const char *queue, const char *id,
                         int64_t timeout_ms, json_t **record);

/* Convenience accessors on a record (borrowed from the record). */
CELER_API int celer_record_state(const json_t *record, celer_state *out);

#endif
