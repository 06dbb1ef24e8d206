/* Writing tasks: the API a task module uses. A module is a shared object
 * that the worker loads with --module; it declares itself with CELER_MODULE
 * and registers its handlers from its init function:
 *
 *   static int hello(celer_task_ctx *ctx, const json_t *args,
 *                    const json_t *kwargs, json_t **result) {
 *     const char *name;
 *     if (celer_arg_string(ctx, kwargs, "name", &name) != 0) return -1;
 *     *result = json_sprintf("hello, %s", name);
 *     return 0;
 *   }
 *   static int init(celer_registry *reg) {
 *     return celer_register(reg, &(celer_task_def){.name = "demo.hello",
 *                                                  .handler = hello});
 *   }
 *   CELER_MODULE("demo", "1.0", init);
 *
 * The functions below live in the worker and are resolved when the worker
 * loads the module, so a module links against nothing of Celer's. */
#ifndef CELER_TASK_H
#define CELER_TASK_H

#include <stdarg.h>
#include <stdint.h>
#include <jansson.h>
#include "celer/envelope.h"

#define CELER_TASK_API __attribute__((visibility("default")))

/* Bumped whenever celer_module_info, celer_task_def or the functions below
 * change incompatibly. The worker refuses a module built for another ABI. */
#define CELER_MODULE_ABI 2

typedef struct celer_task_ctx celer_task_ctx;
typedef struct celer_registry celer_registry;

/* A handler runs one task. args is an array, kwargs an object (both
 * borrowed, never NULL). On success it returns 0 and may set *result to a
 * new reference (ownership passes to the worker; leaving it NULL records a
 * null result). On failure it returns -1 after calling celer_task_fail or
 * celer_task_retry; a -1 without either is recorded as a generic failure. */
typedef int (*celer_handler_fn)(celer_task_ctx *ctx, const json_t *args,
                                const json_t *kwargs, json_t **result);

/* A task's registration and its defaults. Zero means "worker default".
 * Retry delays, when the handler names none: the n-th retry (n from 0)
 * waits min(cap, base * factor^n), or with jitter (the default) a random
 * time between 0 and that ("full jitter", so that a burst of failures does
 * not come back as a burst). */
typedef struct celer_task_def {
  const char *name;          /* [A-Za-z0-9_.:-]{1,128}; copied */
  celer_handler_fn handler;
  int max_retries;           /* retries after the first run; 0 = default (3),
                                -1 = never retry */
  int64_t timeout_ms;        /* hard limit per run; 0 = none */
  int64_t backoff_base_ms;   /* 0 = 1000 */
  double backoff_factor;     /* 0 = 2 */
  int64_t backoff_cap_ms;    /* 0 = one hour */
  int no_jitter;             /* 1: exact delays instead of full jitter */
  const char *queue;         /* where celer_task_enqueue sends this task when
                                the caller names no queue; NULL = "default";
                                copied */
} celer_task_def;

typedef struct celer_module_info {
  int abi;                   /* CELER_MODULE_ABI at build time */
  const char *name;
  const char *version;
  int (*init)(celer_registry *reg);  /* registers tasks; 0 or -1 */
} celer_module_info;

/* Declares the module; the worker looks up the symbol celer_module. */
#define CELER_MODULE(name_, version_, init_)                                 \
  CELER_TASK_API const celer_module_info celer_module = {CELER_MODULE_ABI,   \
                                                         name_, version_, init_}

/* Registers a task. Returns 0, or -1 when the name is invalid or taken
 * (the worker logs which). def is copied. */
CELER_TASK_API int celer_register(celer_registry *reg, const celer_task_def *def);

/* What the handler knows about the run; every string is borrowed for the
 * duration of the handler call. */
CELER_TASK_API const char *celer_task_id(const celer_task_ctx *ctx);
CELER_TASK_API const char *celer_task_name(const celer_task_ctx *ctx);
CELER_TASK_API const char *celer_task_queue(const celer_task_ctx *ctx);
/* Retries so far: 0 on the first run. */
CELER_TASK_API int64_t celer_task_attempt(const celer_task_ctx *ctx);
/* Wall-clock ms since epoch after which the run is killed; 0 = no limit. */
CELER_TASK_API int64_t celer_task_deadline(const celer_task_ctx *ctx);
/* The envelope's meta object, or NULL. Borrowed. */
CELER_TASK_API const json_t *celer_task_meta(const celer_task_ctx *ctx);

/* Fails the task for good (no retry). type names the error class
 * ("ValueError"-like, NULL = "TaskError"). Returns -1 for tail calls. */
CELER_TASK_API int celer_task_fail(celer_task_ctx *ctx, const char *type,
                                   const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fails this run but asks to run again after delay_ms (< 0: the task's
 * backoff decides) while retries remain. Returns -1 for tail calls. */
CELER_TASK_API int celer_task_retry(celer_task_ctx *ctx, int64_t delay_ms,
                                    const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Log levels for celer_task_log. */
#define CELER_TASK_DEBUG "debug"
#define CELER_TASK_INFO "info"
#define CELER_TASK_WARN "warn"
#define CELER_TASK_ERROR "error"

/* Logs a line tagged with the task id. level: CELER_TASK_DEBUG, _INFO,
 * _WARN or _ERROR (or the same words as strings; NULL = info). */
CELER_TASK_API void celer_task_log(celer_task_ctx *ctx, const char *level,
                                   const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Typed argument readers. Each looks up key in obj (kwargs) and on success
 * stores a borrowed value and returns 0. On a missing key or a wrong type
 * it fails the task with a precise message ("kwargs.email: expected a
 * string") and returns -1, so a handler can `return -1` at once. The _opt
 * variants return 1 and leave *out untouched when the key is absent. */
CELER_TASK_API int celer_arg_string(celer_task_ctx *ctx, const json_t *obj,
                                    const char *key, const char **out);
CELER_TASK_API int celer_arg_int(celer_task_ctx *ctx, const json_t *obj,
                                 const char *key, int64_t *out);
CELER_TASK_API int celer_arg_number(celer_task_ctx *ctx, const json_t *obj,
                                    const char *key, double *out);
CELER_TASK_API int celer_arg_bool(celer_task_ctx *ctx, const json_t *obj,
                                  const char *key, int *out);
CELER_TASK_API int celer_arg_string_opt(celer_task_ctx *ctx, const json_t *obj,
                                        const char *key, const char **out);
CELER_TASK_API int celer_arg_int_opt(celer_task_ctx *ctx, const json_t *obj,
                                     const char *key, int64_t *out);
CELER_TASK_API int celer_arg_number_opt(celer_task_ctx *ctx, const json_t *obj,
                                        const char *key, double *out);
CELER_TASK_API int celer_arg_bool_opt(celer_task_ctx *ctx, const json_t *obj,
                                      const char *key, int *out);

/* Options of a follow-up. Zero (or NULL) fields mean "not set". */
typedef struct celer_followup_options {
  const char *queue;       /* NULL: the task's registered queue in this
                              worker, else "default" */
  const char *id;          /* NULL: a new UUIDv4 */
  int64_t countdown_ms;    /* > 0: run no earlier than this long after the call */
  int64_t eta_ms;          /* > 0: run no earlier than this (ms since epoch) */
  int64_t expires_ms;      /* > 0: do not start after this (ms since epoch) */
  int max_retries;         /* > 0 overrides the task default; -1 = never retry */
  int64_t timeout_ms;      /* > 0: hard time limit for one run */
  const json_t *meta;      /* borrowed; NULL: the running task's meta */
} celer_followup_options;

/* Follow-ups: further tasks this run asks for. The envelope is built and
 * validated now (args an array, kwargs an object, both borrowed, may be
 * NULL; opts may be NULL) and kept with the run. It is published only if
 * the handler succeeds, in the same atomic step that records the task's
 * SUCCEEDED record, and so at most once per task id: a failed or retried
 * run drops its follow-ups, and a run whose task already had a final
 * record (a redelivery) publishes none. On 0 the follow-up's id is in
 * id_out (CELER_ID_MAX + 1 bytes, may be NULL). Returns -1 after failing
 * the task (celer_task_fail) on an invalid name, option or argument, or
 * past CELER_FOLLOWUPS_MAX follow-ups or CELER_FOLLOWUPS_BYTES_MAX bytes of
 * envelopes in one run. */
#define CELER_FOLLOWUPS_MAX 100
#define CELER_FOLLOWUPS_BYTES_MAX (4 * 1024 * 1024)
CELER_TASK_API int celer_task_enqueue(celer_task_ctx *ctx, const char *task,
                                      const json_t *args, const json_t *kwargs,
                                      const celer_followup_options *opts,
                                      char *id_out);

#endif
