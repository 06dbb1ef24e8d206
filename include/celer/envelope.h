/* The task envelope: the self-describing JSON object a producer writes into
 * a queue's stream (CONTRACT "Producing from any language"). This header is
 * the codec and its validation; every limit is a named constant. */
#ifndef CELER_ENVELOPE_H
#define CELER_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "celer/error.h"

/* Field limits of the contract. */
#define CELER_ID_MAX 64          /* id: [A-Za-z0-9_-]{1,64} */
#define CELER_TASK_NAME_MAX 128  /* task: [A-Za-z0-9_.:-]{1,128} */
#define CELER_QUEUE_NAME_MAX 64  /* queue: [A-Za-z0-9_.-]{1,64} */
#define CELER_ORIGIN_MAX 256     /* origin: any string; a label, not a document */
/* Default cap on one stored envelope, in bytes (CELER_MAX_PAYLOAD). */
#define CELER_DEFAULT_MAX_PAYLOAD (1024 * 1024)
/* Deepest nesting of arrays and objects accepted anywhere in an envelope,
 * counting the envelope itself as level 1. Deep enough for any real
 * argument structure, shallow enough that recursive consumers in every
 * language stay far from their stack limits. */
#define CELER_MAX_JSON_DEPTH 64
/* Largest integer accepted for times and counts: 2^53 - 1, the last integer
 * every JSON implementation (JavaScript included) represents exactly. */
#define CELER_MAX_JSON_INT INT64_C(9007199254740991)
/* max_retries above this is a producer bug, not a policy. */
#define CELER_MAX_RETRIES_LIMIT 1000000
/* The queue a task goes to when none is named. */
#define CELER_DEFAULT_QUEUE "default"

/* A decoded, validated envelope. Strings are NUL-terminated copies.
 * Optional integers are 0 when absent, max_retries is -1 when absent. */
typedef struct celer_envelope {
  char id[CELER_ID_MAX + 1];
  char task[CELER_TASK_NAME_MAX + 1];
  char queue[CELER_QUEUE_NAME_MAX + 1];
  json_t *args;         /* owned; always an array (empty when absent) */
  json_t *kwargs;       /* owned; always an object (empty when absent) */
  json_t *meta;         /* owned; an object or NULL when absent */
  char *origin;         /* owned; NULL when absent */
  int64_t eta;          /* ms since epoch, 0 = run now */
  int64_t expires;      /* ms since epoch, 0 = never */
  int64_t enqueued_at;  /* ms since epoch, 0 = not given */
  int64_t timeout_ms;   /* hard time limit for one run, 0 = task default */
  int64_t attempt;      /* retries so far (system field), 0 on first run */
  int max_retries;      /* -1 = task default */
} celer_envelope;

/* Where validation failed: the field path ("kwargs", "id") and the rule. */
typedef struct celer_envelope_error {
  char field[48];
  char message[200];
} celer_envelope_error;

/* Sets every field to its "absent" value; owns nothing afterwards. */
CELER_API void celer_envelope_init(celer_envelope *env);
/* Releases what env owns and re-initialises it. NULL is accepted. */
CELER_API void celer_envelope_clear(celer_envelope *env);

/* Decodes and validates len bytes of JSON into env (initialised by this
 * call; the caller clears it with celer_envelope_clear, also on failure).
 * max_payload is the size limit in bytes (0 = CELER_DEFAULT_MAX_PAYLOAD).
 * default_queue is used when the envelope names none (NULL = "default").
 * Returns 0, CELER_ETOOBIG (over max_payload), CELER_EINVAL or
 * CELER_ENOMEM; on failure err (may be NULL) says which field broke which
 * rule. */
CELER_API int celer_envelope_decode(const char *json, size_t len, size_t max_payload,
                                    const char *default_queue, celer_envelope *env,
                                    celer_envelope_error *err);

/* Validates env as decode would, then encodes it as compact JSON. On 0 the
 * caller frees *out with free(); *out_len excludes the terminator. Returns
 * CELER_EINVAL (err filled in), CELER_ETOOBIG or CELER_ENOMEM. */
CELER_API int celer_envelope_encode(const celer_envelope *env, size_t max_payload,
                                    char **out, size_t *out_len,
                                    celer_envelope_error *err);

/* Name checks of the contract; each returns 1 when s is valid. */
CELER_API int celer_valid_id(const char *s);
CELER_API int celer_valid_task_name(const char *s);
CELER_API int celer_valid_queue_name(const char *s);

/* Formats err as "field: message" into buf (always terminated). */
CELER_API void celer_envelope_error_format(const celer_envelope_error *err,
                                           char *buf, size_t size);

#endif
