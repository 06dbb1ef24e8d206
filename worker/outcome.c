/* Recording what a run produced: the record, and for final failures the
 * dead-set entry that lets an operator run the task again. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/common.h"
#include "worker/worker.h"

void outcome_set(run_result *res, celer_state st, const char *type, const char *fmt, ...) {
  va_list ap;
  res->state = st;
  snprintf(res->error_type, sizeof res->error_type, "%s", type);
  va_start(ap, fmt);
  vsnprintf(res->error_message, sizeof res->error_message, fmt, ap);
  va_end(ap);
}

int64_t outcome_entry_time(const char *entry_id) {
  const char *dash = strchr(entry_id, '-');
  char part[24];
  int64_t ms;
  if (dash == NULL || (size_t)(dash - entry_id) >= sizeof part) return 0;
  memcpy(part, entry_id, (size_t)(dash - entry_id));
  part[dash - entry_id] = '\0';
  return celer_parse_i64(part, &ms) == 0 ? ms : 0;
}

/* The error history a retried task carries in its envelope (the system
 * field "errors"): borrowed from *doc, which the caller releases; NULL
 * when there is none. */
static const json_t *history_of(const broker_entry *e, json_t **doc) {
  *doc = e->payload ? json_loadb(e->payload, e->payload_len, 0, NULL) : NULL;
  const json_t *h = json_object_get(*doc, "errors");
  return json_is_array(h) ? h : NULL;
}

int outcome_encode(const outcome_sink *s, const broker_entry *e, const char *queue,
                   const char *id, const celer_envelope *env, const run_result *res,
                   char **json, size_t *len) {
  broker_outcome o = {
      .id = id,
      .task = env && env->task[0] ? env->task : NULL,
      .queue = queue,
      .entry_id = e->entry_id,
      .state = res->state,
      .attempt = env ? env->attempt : e->attempt,
      .redeliveries = e->redeliveries,
      .result = res->result,
      .error_type = res->error_type,
      .error_message = res->error_message,
      .enqueued_at = env && env->enqueued_at ? env->enqueued_at
                                             : outcome_entry_time(e->entry_id),
      .started_at = res->started_at,
      .finished_at = res->finished_at ? res->finished_at : celer_now_ms(),
      .next_run_at = res->next_run_at,
      .worker = s->worker,
  };
  json_t *doc = NULL;
  /* Only retried tasks carry a history; skip the parse for the rest. */
  if (env && env->attempt > 0) o.errors = history_of(e, &doc);
  int rc = broker_record_encode(&o, json, len);
  json_decref(doc);
  return rc;
}

/* {"record": <record>, "envelope": "<the entry's task field>"}, the
 * envelope null when it is not text JSON can carry. Caller frees. */
static char *dead_entry(const broker_entry *e, const char *record, size_t *len) {
  json_t *rec = json_loads(record, 0, NULL);
  json_t *envelope = e->payload ? json_stringn(e->payload, e->payload_len) : NULL;
  json_t *entry = json_pack("{soso}", "record", rec ? rec : json_null(), "envelope",
                            envelope ? envelope : json_null());
  char *out = entry ? json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(entry);
  if (out) *len = strlen(out);
  return out;
}

int outcome_complete(const outcome_sink *s, const broker_entry *e, const char *queue,
                     const char *id, const celer_envelope *env, const run_result *res,
                     int *outcome) {
  char *json = NULL, *dead = NULL;
  size_t len = 0, dead_len = 0;
  int rc = outcome_encode(s, e, queue, id, env, res, &json, &len);
  if (rc != 0) return rc;
  if (res->state == CELER_FAILED || res->state == CELER_REJECTED) {
    if ((dead = dead_entry(e, json, &dead_len)) == NULL) {
      free(json);
      return CELER_ENOMEM;
    }
  }
  broker_completion c = {.queue = queue,
                         .entry_id = e->entry_id,
                         .consumer = s->worker,
                         .task_id = id,
                         .state = res->state,
                         .record = json,
                         .record_len = len,
                         .ttl_ms = s->result_ttl_ms,
                         .dead_entry = dead,
                         .dead_len = dead_len};
  rc = broker_complete(s->conn, &c, outcome);
  free(json);
  free(dead);
  return rc;
}
