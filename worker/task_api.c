/* The functions a task handler calls (include/celer/task.h): what the run
 * is, how it fails, and typed readers for its arguments. */
#include <stdio.h>
#include <string.h>
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
