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

void run_result_clear(run_result *res) {
  json_decref(res->result);
  res->result = NULL;
  followups_free(res->followups, res->nfollowups);
  res->followups = NULL;
  res->nfollowups = 0;
}

void outcome_completion_free(broker_completion *c) {
  free((char *)c->record);
  free((char *)c->dead_entry);
  followups_free((broker_push *)c->followups, c->nfollowups);
  c->record = c->dead_entry = NULL;
  c->followups = NULL;
  c->nfollowups = 0;
}

/* A copy of the follow-ups of a successful run, for a completion that may
 * outlive the run (batched). Returns 0 or CELER_ENOMEM; *out NULL when
 * there are none. */
static int copy_followups(const run_result *res, broker_push **out) {
  *out = NULL;
  if (res->state != CELER_SUCCEEDED || res->nfollowups == 0) return 0;
  broker_push *f = calloc(res->nfollowups, sizeof *f);
  if (f == NULL) return CELER_ENOMEM;
  for (size_t i = 0; i < res->nfollowups; i++) {
    const broker_push *from = &res->followups[i];
    char *q = strdup(from->queue), *body = malloc(from->len + 1);
    f[i] = (broker_push){.queue = q, .envelope = body, .len = from->len, .eta_ms = from->eta_ms};
    if (q == NULL || body == NULL) {
      followups_free(f, i + 1);
      return CELER_ENOMEM;
    }
    memcpy(body, from->envelope, from->len + 1);
  }
  *out = f;
  return 0;
}

int outcome_prepare(const outcome_sink *s, const broker_entry *e, const char *queue,
                    const char *id, const celer_envelope *env, const run_result *res,
                    broker_completion *c) {
  char *json = NULL, *dead = NULL;
  size_t len = 0, dead_len = 0;
  broker_push *followups = NULL;
  int rc = outcome_encode(s, e, queue, id, env, res, &json, &len);
  if (rc != 0) return rc;
  if (copy_followups(res, &followups) != 0) {
    free(json);
    return CELER_ENOMEM;
  }
  if (res->state == CELER_FAILED || res->state == CELER_REJECTED) {
    if ((dead = dead_entry(e, json, &dead_len)) == NULL) {
      free(json);
      followups_free(followups, followups ? res->nfollowups : 0);
      return CELER_ENOMEM;
    }
  }
  *c = (broker_completion){.queue = queue,
                           .entry_id = e->entry_id,
                           .task_id = id,
                           .state = res->state,
                           .record = json,
                           .record_len = len,
                           .ttl_ms = s->result_ttl_ms,
                           .dead_entry = dead,
                           .dead_len = dead_len,
                           .followups = followups,
                           .nfollowups = followups ? res->nfollowups : 0};
  return 0;
}

int outcome_complete(const outcome_sink *s, const broker_entry *e, const char *queue,
                     const char *id, const celer_envelope *env, const run_result *res,
                     int *outcome) {
  broker_completion c;
  int rc = outcome_prepare(s, e, queue, id, env, res, &c);
  if (rc != 0) return rc;
  rc = broker_complete(s->conn, &c, 1, outcome);
  outcome_completion_free(&c);
  return rc;
}

/* The delay before the retry that follows run number `attempt`. */
int64_t outcome_backoff(const worker_backoff *b, int64_t attempt) {
  double ceiling = (double)b->base_ms;
  for (int64_t i = 0; i < attempt && ceiling < (double)b->cap_ms; i++) ceiling *= b->factor;
  int64_t c = ceiling > (double)b->cap_ms ? b->cap_ms : (int64_t)ceiling;
  return b->jitter ? celer_jitter(c) : c;
}

/* The envelope of the next attempt: the producer's own JSON (fields this
 * version does not know survive the retry) with attempt raised, the error
 * of this run appended to its "errors" history, and enqueued_at filled in
 * when the producer left it out. Caller frees. */
static char *next_attempt(const broker_entry *e, int64_t attempt, int64_t enqueued_at,
                          const run_result *res, size_t *len) {
  json_t *doc = json_loadb(e->payload, e->payload_len, 0, NULL);
  /* A signed task keeps its producer's token; the count goes beside it. */
  if (doc == NULL && verify_is_token(e->payload, e->payload_len))
    doc = json_pack("{ss%}", VERIFY_WRAPPER_FIELD, e->payload, e->payload_len);
  json_t *errors = json_object_get(doc, "errors");
  if (!json_is_array(errors)) {
    errors = json_array();
    if (json_object_set_new(doc, "errors", errors) != 0) errors = NULL;
  }
  while (errors && json_array_size(errors) >= RUNNER_ERROR_HISTORY) json_array_remove(errors, 0);
  json_t *err = json_pack("{sIsssssI}", "attempt", (json_int_t)(attempt - 1), "type",
                          res->error_type, "message", res->error_message, "at",
                          (json_int_t)res->finished_at);
  char *body = NULL;
  if (doc && errors && err && json_array_append_new(errors, err) == 0 &&
      json_object_set_new(doc, "attempt", json_integer(attempt)) == 0 &&
      (json_object_get(doc, "enqueued_at") != NULL ||
       json_object_set_new(doc, "enqueued_at", json_integer(enqueued_at)) == 0)) {
    err = NULL;
    body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
  }
  json_decref(err);
  json_decref(doc);
  if (body) *len = strlen(body);
  return body;
}

int outcome_retry(const outcome_sink *s, const broker_entry *e, const char *queue,
                  const char *id, const celer_envelope *env, run_result *res, int *outcome) {
  res->next_run_at = celer_now_ms() + res->retry_delay_ms;
  char *json = NULL, *body = NULL;
  size_t len = 0, blen = 0;
  int rc = outcome_encode(s, e, queue, id, env, res, &json, &len);
  if (rc == 0) {
    int64_t enqueued = env->enqueued_at ? env->enqueued_at : outcome_entry_time(e->entry_id);
    body = next_attempt(e, env->attempt + 1, enqueued, res, &blen);
    rc = body ? 0 : CELER_ENOMEM;
  }
  if (rc == 0) {
    broker_reschedule_req q = {.queue = queue,
                               .entry_id = e->entry_id,
                               .consumer = s->consumer,
                               .task_id = id,
                               .envelope = body,
                               .envelope_len = blen,
                               .due_ms = res->next_run_at,
                               .record = json,
                               .record_len = len,
                               .ttl_ms = s->result_ttl_ms + res->retry_delay_ms};
    rc = broker_reschedule(s->conn, &q, outcome);
  }
  free(json);
  free(body);
  return rc;
}
