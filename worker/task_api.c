/* The functions a task handler calls (include/celer/task.h): what the run
 * is, how it fails, and typed readers for its arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "client/sign.h"
#include "common/common.h"
#include "worker/worker.h"

const char *celer_task_id(const celer_task_ctx *ctx) { return ctx->env->id; }
const char *celer_task_name(const celer_task_ctx *ctx) { return ctx->env->task; }
const char *celer_task_queue(const celer_task_ctx *ctx) { return ctx->queue; }
int64_t celer_task_attempt(const celer_task_ctx *ctx) { return ctx->env->attempt; }
int64_t celer_task_deadline(const celer_task_ctx *ctx) { return ctx->deadline_ms; }
const json_t *celer_task_meta(const celer_task_ctx *ctx) { return ctx->env->meta; }

static void set_error(celer_task_ctx *ctx, task_verdict v, const char *type, const char *fmt,
                      va_list ap) {
  ctx->verdict = v;
  snprintf(ctx->error_type, sizeof ctx->error_type, "%s", type ? type : "TaskError");
  vsnprintf(ctx->error_message, sizeof ctx->error_message, fmt, ap);
}

int celer_task_fail(celer_task_ctx *ctx, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(ctx, VERDICT_FAIL, type, fmt, ap);
  va_end(ap);
  return -1;
}

int celer_task_retry(celer_task_ctx *ctx, int64_t delay_ms, const char *type,
                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(ctx, VERDICT_RETRY, type, fmt, ap);
  va_end(ap);
  ctx->retry_delay_ms = delay_ms;
  return -1;
}

void celer_task_log(celer_task_ctx *ctx, const char *level, const char *fmt, ...) {
  celer_log_level l = CELER_LOG_INFO;
  if (level && strcmp(level, "debug") == 0) l = CELER_LOG_DEBUG;
  else if (level && strcmp(level, "warn") == 0) l = CELER_LOG_WARN;
  else if (level && strcmp(level, "error") == 0) l = CELER_LOG_ERROR;
  va_list ap;
  va_start(ap, fmt);
  celer_vlog(l, ctx->env->id, fmt, ap);
  va_end(ap);
}

/* Looks key up; returns the value, or NULL after failing the task when the
 * key is missing (required) or the object is not an object. *absent is set
 * for a missing optional key. */
static const json_t *lookup(celer_task_ctx *ctx, const json_t *obj, const char *key,
                            bool optional, bool *absent) {
  *absent = false;
  const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
  if (v == NULL || json_is_null(v)) {
    if (optional) {
      *absent = true;
      return NULL;
    }
    celer_task_fail(ctx, "ArgumentError", "kwargs.%s: required", key);
    return NULL;
  }
  return v;
}

static int wrong_type(celer_task_ctx *ctx, const char *key, const char *want) {
  return celer_task_fail(ctx, "ArgumentError", "kwargs.%s: expected %s", key, want);
}

static int read_string(celer_task_ctx *ctx, const json_t *obj, const char *key,
                       const char **out, bool optional) {
  bool absent;
  const json_t *v = lookup(ctx, obj, key, optional, &absent);
  if (absent) return 1;
  if (v == NULL) return -1;
  if (!json_is_string(v)) return wrong_type(ctx, key, "a string");
  *out = json_string_value(v);
  return 0;
}

static int read_int(celer_task_ctx *ctx, const json_t *obj, const char *key, int64_t *out,
                    bool optional) {
  bool absent;
  const json_t *v = lookup(ctx, obj, key, optional, &absent);
  if (absent) return 1;
  if (v == NULL) return -1;
  if (!json_is_integer(v)) return wrong_type(ctx, key, "an integer");
  *out = (int64_t)json_integer_value(v);
  return 0;
}

static int read_number(celer_task_ctx *ctx, const json_t *obj, const char *key, double *out,
                       bool optional) {
  bool absent;
  const json_t *v = lookup(ctx, obj, key, optional, &absent);
  if (absent) return 1;
  if (v == NULL) return -1;
  if (!json_is_number(v)) return wrong_type(ctx, key, "a number");
  *out = json_number_value(v);
  return 0;
}

static int read_bool(celer_task_ctx *ctx, const json_t *obj, const char *key, int *out,
                     bool optional) {
  bool absent;
  const json_t *v = lookup(ctx, obj, key, optional, &absent);
  if (absent) return 1;
  if (v == NULL) return -1;
  if (!json_is_boolean(v)) return wrong_type(ctx, key, "true or false");
  *out = json_is_true(v);
  return 0;
}

int celer_arg_string(celer_task_ctx *ctx, const json_t *obj, const char *key,
                     const char **out) {
  return read_string(ctx, obj, key, out, false);
}
int celer_arg_int(celer_task_ctx *ctx, const json_t *obj, const char *key, int64_t *out) {
  return read_int(ctx, obj, key, out, false);
}
int celer_arg_number(celer_task_ctx *ctx, const json_t *obj, const char *key, double *out) {
  return read_number(ctx, obj, key, out, false);
}
int celer_arg_bool(celer_task_ctx *ctx, const json_t *obj, const char *key, int *out) {
  return read_bool(ctx, obj, key, out, false);
}
int celer_arg_string_opt(celer_task_ctx *ctx, const json_t *obj, const char *key,
                         const char **out) {
  return read_string(ctx, obj, key, out, true);
}
int celer_arg_int_opt(celer_task_ctx *ctx, const json_t *obj, const char *key, int64_t *out) {
  return read_int(ctx, obj, key, out, true);
}
int celer_arg_number_opt(celer_task_ctx *ctx, const json_t *obj, const char *key,
                         double *out) {
  return read_number(ctx, obj, key, out, true);
}
int celer_arg_bool_opt(celer_task_ctx *ctx, const json_t *obj, const char *key, int *out) {
  return read_bool(ctx, obj, key, out, true);
}

/* ---- follow-ups ---- */

void followups_free(broker_push *f, size_t n) {
  for (size_t i = 0; f && i < n; i++) {
    free((char *)f[i].queue);
    free((char *)f[i].envelope);
  }
  free(f);
}

void task_ctx_finish(celer_task_ctx *ctx, run_result *res, bool succeeded) {
  if (succeeded && ctx->nfollowups > 0) {
    res->followups = ctx->followups;
    res->nfollowups = ctx->nfollowups;
  } else {
    followups_free(ctx->followups, ctx->nfollowups);
  }
  ctx->followups = NULL;
  ctx->nfollowups = ctx->followups_bytes = 0;
}

/* Where a follow-up goes when the caller names no queue: the queue the
 * target task registered in this worker, else the default queue. */
static const char *default_queue(const celer_task_ctx *ctx, const char *task) {
  const worker_task *t = ctx->reg ? registry_find(ctx->reg, task) : NULL;
  return t && t->queue[0] ? t->queue : CELER_DEFAULT_QUEUE;
}

/* Fills env (initialised by the caller) for a follow-up; borrowed JSON is
 * copied. Returns 0 or -1 after failing the task. */
static int followup_envelope(celer_task_ctx *ctx, const char *task, const json_t *args,
                             const json_t *kwargs, const celer_followup_options *o,
                             celer_envelope *env) {
  const char *queue = o->queue ? o->queue : default_queue(ctx, task);
  if (strlen(task) > CELER_TASK_NAME_MAX || strlen(queue) > CELER_QUEUE_NAME_MAX ||
      (o->id && strlen(o->id) > CELER_ID_MAX))
    return celer_task_fail(ctx, "FollowupError",
                           "follow-up %.*s: task name, queue or id is too long", 64, task);
  if (o->countdown_ms < 0 || o->eta_ms < 0 || o->expires_ms < 0 || o->timeout_ms < 0 ||
      o->max_retries < -1 || (o->countdown_ms > 0 && o->eta_ms > 0))
    return celer_task_fail(ctx, "FollowupError",
                           "follow-up %s: negative time or retry option, or both countdown "
                           "and eta", task);
  strcpy(env->task, task);
  strcpy(env->queue, queue);
  if (o->id) {
    strcpy(env->id, o->id);
  } else if (celer_uuid4(env->id) != 0) {
    return celer_task_fail(ctx, "FollowupError", "follow-up %s: no random bytes for its id",
                           task);
  }
  int64_t now = celer_now_ms();
  env->args = args ? json_deep_copy(args) : json_array();
  env->kwargs = kwargs ? json_deep_copy(kwargs) : json_object();
  const json_t *meta = o->meta ? o->meta : ctx->env->meta;
  env->meta = meta ? json_deep_copy(meta) : NULL;
  char origin[CELER_TASK_NAME_MAX + CELER_ID_MAX + 2];
  snprintf(origin, sizeof origin, "%s/%s", ctx->env->task, ctx->env->id);
  env->origin = strdup(origin);
  env->eta = o->eta_ms > 0 ? o->eta_ms : o->countdown_ms > 0 ? now + o->countdown_ms : 0;
  env->expires = o->expires_ms;
  env->timeout_ms = o->timeout_ms;
  env->max_retries = o->max_retries > 0 ? o->max_retries : o->max_retries == -1 ? 0 : -1;
  env->enqueued_at = now;
  if (env->args == NULL || env->kwargs == NULL || (meta && env->meta == NULL) ||
      env->origin == NULL)
    return celer_task_fail(ctx, "MemoryError", "follow-up %s: out of memory", task);
  return 0;
}

int celer_task_enqueue(celer_task_ctx *ctx, const char *task, const json_t *args,
                       const json_t *kwargs, const celer_followup_options *opts,
                       char *id_out) {
  celer_followup_options none;
  memset(&none, 0, sizeof none);
  const celer_followup_options *o = opts ? opts : &none;
  if (task == NULL) return celer_task_fail(ctx, "FollowupError", "follow-up: no task name");
  if (ctx->nfollowups >= CELER_FOLLOWUPS_MAX)
    return celer_task_fail(ctx, "FollowupError", "follow-up %s: more than %d in one run", task,
                           CELER_FOLLOWUPS_MAX);
  celer_envelope env;
  celer_envelope_init(&env);
  int rc = followup_envelope(ctx, task, args, kwargs, o, &env);
  char *text = NULL;
  size_t len = 0;
  celer_envelope_error err;
  memset(&err, 0, sizeof err);
  if (rc == 0) {
    int erc = celer_envelope_encode(&env, ctx->max_payload, &text, &len, &err);
    if (erc != 0) {
      char msg[sizeof err.field + sizeof err.message + 4];
      celer_envelope_error_format(&err, msg, sizeof msg);
      rc = celer_task_fail(ctx, "FollowupError", "follow-up %s: %s", task, msg);
    }
  }
  if (rc == 0 && ctx->signer) {
    /* Signed like a producer's task, so a keyring that requires
     * signatures runs it; it is checked against the policy as well. */
    char *token = NULL, serr[CELER_ERRSTR_LEN];
    size_t token_len = 0;
    if (client_sign(ctx->signer, text, len, env.id, env.eta, ctx->max_payload, &token,
                    &token_len, serr, sizeof serr) != 0) {
      rc = celer_task_fail(ctx, "FollowupError", "follow-up %s: cannot sign it: %s", task, serr);
    } else {
      free(text);
      text = token;
      len = token_len;
    }
  }
  if (rc == 0 && ctx->followups_bytes + len > CELER_FOLLOWUPS_BYTES_MAX) {
    rc = celer_task_fail(ctx, "FollowupError", "follow-up %s: over %d bytes of follow-ups in "
                         "one run", task, CELER_FOLLOWUPS_BYTES_MAX);
  }
  broker_push *grown = NULL;
  char *queue = NULL;
  if (rc == 0) {
    grown = realloc(ctx->followups, (ctx->nfollowups + 1) * sizeof *grown);
    queue = strdup(env.queue);
    if (grown) ctx->followups = grown;
    if (grown == NULL || queue == NULL)
      rc = celer_task_fail(ctx, "MemoryError", "follow-up %s: out of memory", task);
  }
  if (rc == 0) {
    ctx->followups[ctx->nfollowups++] =
        (broker_push){.queue = queue, .envelope = text, .len = len, .eta_ms = env.eta};
    ctx->followups_bytes += len;
    if (id_out) strcpy(id_out, env.id);
  } else {
    free(queue);
    free(text);
  }
  celer_envelope_clear(&env);
  return rc;
}
