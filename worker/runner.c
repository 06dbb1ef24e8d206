/* The fetch-run-record loop. One runner owns one broker connection and
 * runs tasks one at a time; it is the unit a worker child process runs.
 * Its upkeep (upkeep.c) renews the leases of what it holds and promotes
 * scheduled tasks into the streams it reads.
 *
 * The life of one entry:
 *   unusable entry or envelope  -> REJECTED (acked, recorded, dead-lettered)
 *   canceled                    -> dropped (its record already says CANCELED)
 *   eta ahead (not promoted)    -> parked in the scheduled set
 *   past expires                -> EXPIRED
 *   unknown task name           -> REJECTED
 *   handler returns 0           -> SUCCEEDED with the result
 *   handler asks to retry       -> RETRYING and rescheduled with backoff,
 *                                  while retries remain; then FAILED
 *   handler fails               -> FAILED (dead-lettered)
 * Every outcome is one script, and every script checks that this worker
 * still holds the entry's lease: a worker that lost it records nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "common/common.h"
#include "worker/worker.h"

/* Longest pause between reconnect attempts while the broker is down. */
#define RUNNER_RECONNECT_MAX_MS 5000
/* Largest rejected payload the worker still parses to find its id: the
 * JSON parser needs several times the text's size in memory, and Redis
 * accepts values up to 512 MiB. */
#define RUNNER_SALVAGE_MAX (16 * 1024 * 1024)

int runner_init(runner *r, broker_conn *conn, const celer_registry *reg,
                const runner_config *cfg, volatile sig_atomic_t *stop, inflight *held,
                upkeep *keeper) {
  memset(r, 0, sizeof *r);
  r->conn = conn;
  r->reg = reg;
  r->cfg = *cfg;
  r->stop = stop;
  r->held = held;
  r->keeper = keeper;
  if (r->cfg.prefetch < 1) r->cfg.prefetch = 1;
  if (r->cfg.prefetch > RUNNER_PREFETCH_MAX) r->cfg.prefetch = RUNNER_PREFETCH_MAX;
  size_t n = cfg->nqueues ? cfg->nqueues : 1;
  r->paused = calloc(n, sizeof *r->paused);
  r->active = calloc(n, sizeof *r->active);
  return r->paused && r->active ? 0 : CELER_ENOMEM;
}

void runner_free(runner *r) {
  free(r->paused);
  free(r->active);
  r->paused = NULL;
  r->active = NULL;
}

int runner_prepare(runner *r) {
  for (size_t q = 0; q < r->cfg.nqueues; q++) {
    int rc = broker_ensure_group(r->conn, r->cfg.queues[q]);
    if (rc != 0) return rc;
  }
  return 0;
}

/* A random number in [0, n] from the kernel; n when it cannot be read. */
static int64_t jitter(int64_t n) {
  uint64_t v;
  if (n <= 0) return 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) return n;
  return (int64_t)(v % ((uint64_t)n + 1));
}

/* The delay before the retry that follows run number `attempt`. */
static int64_t backoff_ms(const worker_backoff *b, int64_t attempt) {
  double ceiling = (double)b->base_ms;
  for (int64_t i = 0; i < attempt && ceiling < (double)b->cap_ms; i++) ceiling *= b->factor;
  int64_t c = ceiling > (double)b->cap_ms ? b->cap_ms : (int64_t)ceiling;
  return b->jitter ? jitter(c) : c;
}

/* Takes the id out of a payload that failed validation, when it has a
 * valid one, so that the producer waiting on that id sees the rejection.
 * Returns 1 and fills out, or 0. */
static int salvage_id(const char *payload, size_t len, char out[CELER_ID_MAX + 1]) {
  if (payload == NULL || len > RUNNER_SALVAGE_MAX || memchr(payload, '\0', len)) return 0;
  json_t *doc = json_loadb(payload, len, 0, NULL);
  const char *id = json_string_value(json_object_get(doc, "id"));
  int ok = id && strlen(id) <= CELER_ID_MAX && celer_valid_id(id);
  if (ok) strcpy(out, id);
  json_decref(doc);
  return ok;
}

/* Runs the handler of a decoded envelope and classifies what it did. */
static void run_handler(const worker_task *t, const celer_envelope *env, const char *queue,
                        run_result *res) {
  celer_task_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.env = env;
  ctx.queue = queue;
  ctx.retry_delay_ms = -1;
  int64_t limit = env->timeout_ms > 0 ? env->timeout_ms : t->timeout_ms;
  res->started_at = celer_now_ms();
  ctx.deadline_ms = limit > 0 ? res->started_at + limit : 0;
  json_t *result = NULL;
  int rc = t->handler(&ctx, env->args, env->kwargs, &result);
  res->finished_at = celer_now_ms();
  if (rc == 0 && ctx.verdict == VERDICT_NONE) {
    res->state = CELER_SUCCEEDED;
    res->result = result;
    return;
  }
  json_decref(result);
  if (ctx.verdict == VERDICT_NONE) {
    outcome_set(res, CELER_FAILED, "TaskError",
                "the handler of %s returned %d without saying why", env->task, rc);
    return;
  }
  int max_retries = env->max_retries >= 0 ? env->max_retries : t->max_retries;
  res->state = ctx.verdict == VERDICT_RETRY && env->attempt < max_retries ? CELER_RETRYING
                                                                           : CELER_FAILED;
  snprintf(res->error_type, sizeof res->error_type, "%s", ctx.error_type);
  if (ctx.verdict == VERDICT_RETRY && res->state == CELER_FAILED)
    celer_fmt(res->error_message, sizeof res->error_message, "%s (gave up after %lld retries)",
              ctx.error_message, (long long)env->attempt);
  else
    snprintf(res->error_message, sizeof res->error_message, "%s", ctx.error_message);
  if (res->state == CELER_RETRYING)
    res->retry_delay_ms =
        ctx.retry_delay_ms >= 0 ? ctx.retry_delay_ms : backoff_ms(&t->backoff, env->attempt);
}

/* The envelope of the next attempt: the producer's own JSON (fields this
 * version does not know survive the retry) with attempt raised, the error
 * of this run appended to its "errors" history, and enqueued_at filled in
 * when the producer left it out. Caller frees. */
static char *next_attempt(const broker_entry *e, int64_t attempt, int64_t enqueued_at,
                          const run_result *res, size_t *len) {
  json_t *doc = json_loadb(e->payload, e->payload_len, 0, NULL);
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

/* Schedules the retry of a RETRYING run. */
static int schedule_retry(runner *r, const broker_entry *e, const char *queue, const char *id,
                          const celer_envelope *env, run_result *res) {
  res->next_run_at = celer_now_ms() + res->retry_delay_ms;
  outcome_sink sink = {r->conn, r->cfg.name, r->cfg.result_ttl_ms};
  char *json = NULL, *body = NULL;
  size_t len = 0, blen = 0;
  int rc = outcome_encode(&sink, e, queue, id, env, res, &json, &len);
  if (rc == 0) {
    int64_t enqueued = env->enqueued_at ? env->enqueued_at : outcome_entry_time(e->entry_id);
    body = next_attempt(e, env->attempt + 1, enqueued, res, &blen);
    rc = body ? 0 : CELER_ENOMEM;
  }
  int outcome = 0;
  if (rc == 0) {
    broker_reschedule_req q = {.queue = queue,
                               .entry_id = e->entry_id,
                               .consumer = r->cfg.name,
                               .task_id = id,
                               .envelope = body,
                               .envelope_len = blen,
                               .due_ms = res->next_run_at,
                               .record = json,
                               .record_len = len,
                               .ttl_ms = r->cfg.result_ttl_ms + res->retry_delay_ms};
    rc = broker_reschedule(r->conn, &q, &outcome);
  }
  free(json);
  free(body);
  if (rc != 0) return rc;
  if (outcome == BROKER_RECORDED) {
    r->stats.retried++;
    if (r->keeper) upkeep_wake(r->keeper);
    celer_log(CELER_LOG_INFO, id, "%s failed (%s: %s); retry %lld in %lld ms", env->task,
              res->error_type, res->error_message, (long long)env->attempt + 1,
              (long long)res->retry_delay_ms);
  } else if (outcome == BROKER_STALE) {
    r->stats.stale++;
    celer_log(CELER_LOG_WARN, id, "lease lost while running: the retry was not recorded");
  } else {
    r->stats.duplicates++;
  }
  return 0;
}

/* Records a final outcome and counts it. */
static int finish(runner *r, const broker_entry *e, const char *queue, const char *id,
                  const celer_envelope *env, const run_result *res) {
  outcome_sink sink = {r->conn, r->cfg.name, r->cfg.result_ttl_ms};
  int outcome = 0;
  int rc = outcome_complete(&sink, e, queue, id, env, res, &outcome);
  if (rc != 0) return rc;
  if (outcome == BROKER_STALE) {
    r->stats.stale++;
    celer_log(CELER_LOG_WARN, id, "lease lost while running: this %s was not recorded",
              celer_state_name(res->state));
    return 0;
  }
  if (outcome == BROKER_DUPLICATE) {
    if (res->state == CELER_CANCELED) {
      r->stats.canceled++;
      celer_log(CELER_LOG_INFO, id, "canceled: dropped without running");
    } else {
      r->stats.duplicates++;
      celer_log(CELER_LOG_WARN, id, "task already had a final record; this run was a duplicate");
    }
    return 0;
  }
  switch (res->state) {
    case CELER_SUCCEEDED: r->stats.succeeded++; break;
    case CELER_REJECTED: r->stats.rejected++; break;
    case CELER_EXPIRED: r->stats.expired++; break;
    case CELER_CANCELED: r->stats.canceled++; break;
    default: r->stats.failed++; break;
  }
  const char *task = env && env->task[0] ? env->task : "task";
  if (res->state == CELER_SUCCEEDED)
    celer_log(CELER_LOG_DEBUG, id, "%s succeeded in %lld ms", task,
              (long long)(res->finished_at - res->started_at));
  else
    celer_log(res->state == CELER_REJECTED ? CELER_LOG_WARN : CELER_LOG_INFO, id, "%s %s: %s: %s",
              task, celer_state_name(res->state), res->error_type, res->error_message);
  return 0;
}

/* Decodes e into env and settles what can be settled before running:
 * rejection, cancellation, parking, expiry, unknown task. On return
 * res->state is CELER_PENDING when the handler should run (*task set), or
 * the outcome; *parked is set when the entry went to the scheduled set. */
static int triage(runner *r, const broker_entry *e, bool canceled, celer_envelope *env,
                  char id[CELER_ID_MAX + 1], run_result *res, const worker_task **task,
                  bool *parked) {
  const char *queue = r->cfg.queues[e->queue_index];
  *parked = false;
  /* Until the envelope names a valid id, the record is filed under the
   * stream entry id, which has the same alphabet. */
  snprintf(id, CELER_ID_MAX + 1, "%s", e->entry_id);
  if (e->problem) {
    outcome_set(res, CELER_REJECTED, "MalformedEntry", "%s", e->problem);
    return 0;
  }
  celer_envelope_error err;
  int rc = celer_envelope_decode(e->payload, e->payload_len, r->cfg.max_payload, queue, env,
                                 &err);
  if (rc != 0) {
    char msg[sizeof err.field + sizeof err.message + 4];
    celer_envelope_error_format(&err, msg, sizeof msg);
    salvage_id(e->payload, e->payload_len, id);
    outcome_set(res, CELER_REJECTED, rc == CELER_ETOOBIG ? "PayloadTooLarge" : "MalformedEnvelope",
                "%s", msg);
    return 0;
  }
  strcpy(id, env->id);
  /* An operator's retry from the dead set resets the count in the entry. */
  if (e->has_attempt) env->attempt = e->attempt;
  if (canceled) {
    outcome_set(res, CELER_CANCELED, "Canceled", "canceled before it ran");
    return 0;
  }
  if (strcmp(env->queue, queue) != 0) {
    outcome_set(res, CELER_REJECTED, "MalformedEnvelope",
                "queue: the envelope names queue '%s' but was read from queue '%s'", env->queue,
                queue);
    return 0;
  }
  if (env->eta > 0 && !e->promoted) {
    /* Written straight into the stream with an eta: the broker's clock
     * decides whether it waits in the scheduled set. */
    broker_reschedule_req q = {.queue = queue,
                               .entry_id = e->entry_id,
                               .consumer = r->cfg.name,
                               .task_id = id,
                               .envelope = e->payload,
                               .envelope_len = e->payload_len,
                               .due_ms = env->eta,
                               .park = true};
    int outcome = 0;
    if ((rc = broker_reschedule(r->conn, &q, &outcome)) != 0) return rc;
    if (outcome != BROKER_NOT_PARKED) {
      *parked = true;
      if (outcome == BROKER_RECORDED) {
        celer_log(CELER_LOG_DEBUG, id, "parked until its eta %lld", (long long)env->eta);
        if (r->keeper) upkeep_wake(r->keeper);
      }
      return 0;
    }
  }
  if (env->expires > 0 && env->expires < celer_now_ms()) {
    outcome_set(res, CELER_EXPIRED, "Expired", "reached a worker %lld ms after it expired",
                (long long)(celer_now_ms() - env->expires));
    return 0;
  }
  if ((*task = registry_find(r->reg, env->task)) == NULL) {
    outcome_set(res, CELER_REJECTED, "UnknownTask",
                "unknown task '%s': no module loaded by worker %s registers it", env->task,
                r->cfg.name);
  }
  return 0;
}

/* Handles one fetched entry from decode to record. Returns 0 or a broker
 * error (the entry then stays pending and is recovered later). */
static int handle_entry(runner *r, const broker_entry *e, bool canceled) {
  const char *queue = r->cfg.queues[e->queue_index];
  run_result res;
  memset(&res, 0, sizeof res);
  celer_envelope env;
  celer_envelope_init(&env);
  char id[CELER_ID_MAX + 1];
  const worker_task *task = NULL;
  bool parked = false;
  int rc = triage(r, e, canceled, &env, id, &res, &task, &parked);
  if (rc == 0 && !parked) {
    if (res.state == CELER_PENDING) run_handler(task, &env, queue, &res);
    bool decoded = env.id[0] != '\0';
    if (res.state == CELER_RETRYING)
      rc = schedule_retry(r, e, queue, id, &env, &res);
    else
      rc = finish(r, e, queue, id, decoded ? &env : NULL, &res);
  }
  json_decref(res.result);
  celer_envelope_clear(&env);
  return rc;
}

/* Reads the pause flags when they are due; fills r->active with the
 * queues to fetch from and returns how many. */
static size_t active_queues(runner *r) {
  int64_t now = celer_mono_ms();
  if (now >= r->next_pause_check) {
    if (broker_paused(r->conn, r->cfg.queues, r->cfg.nqueues, r->paused) == 0)
      r->next_pause_check = now + RUNNER_PAUSE_CHECK_MS;
  }
  size_t n = 0;
  for (size_t q = 0; q < r->cfg.nqueues; q++)
    if (!r->paused[q]) r->active[n++] = r->cfg.queues[q];
  return n;
}

/* Which fetched entries were canceled: one ZMSCORE per queue present.
 * Entries whose envelope cannot be read are never canceled. */
static int check_canceled(runner *r, broker_entry *entries, size_t n, bool *canceled) {
  const char **ids = calloc(n, sizeof *ids);
  size_t *which = calloc(n, sizeof *which);
  bool *got = calloc(n, sizeof *got);
  char (*idbuf)[CELER_ID_MAX + 1] = calloc(n, sizeof *idbuf);
  int rc = ids && which && got && idbuf ? 0 : CELER_ENOMEM;
  for (size_t q = 0; rc == 0 && q < r->cfg.nqueues; q++) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
      if (entries[i].queue_index != q || canceled[i]) continue;
      if (salvage_id(entries[i].payload, entries[i].payload_len, idbuf[k])) {
        ids[k] = idbuf[k];
        which[k++] = i;
      }
    }
    if (k == 0) continue;
    rc = broker_canceled(r->conn, r->cfg.queues[q], ids, k, got);
    for (size_t j = 0; rc == 0 && j < k; j++) canceled[which[j]] = got[j];
  }
  free(ids);
  free(which);
  free(got);
  free(idbuf);
  return rc;
}

/* Maps fetched entries from the active list back to queue indexes. */
static void index_entries(runner *r, broker_entry *entries, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *name = r->active[entries[i].queue_index];
    for (size_t q = 0; q < r->cfg.nqueues; q++)
      if (r->cfg.queues[q] == name) entries[i].queue_index = q;
  }
}

int runner_step(runner *r) {
  size_t nactive = active_queues(r);
  if (r->conn->ctx == NULL && broker_ensure(r->conn) != 0) return CELER_ECONNECT;
  if (nactive == 0) {
    /* Every queue is paused: wait for the next look at the flags. */
    struct timespec ts = {0, RUNNER_PAUSE_CHECK_MS * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
  }
  broker_entry *entries = NULL;
  size_t n = 0;
  int rc = broker_fetch(r->conn, r->active, nactive, r->cfg.name, r->cfg.prefetch,
                        RUNNER_MAX_BLOCK_MS, &entries, &n);
  if (rc != 0 || n == 0) return rc;
  index_entries(r, entries, n);
  r->stats.fetched += n;
  for (size_t i = 0; r->held && i < n; i++)
    inflight_add(r->held, entries[i].queue_index, entries[i].entry_id);
  bool *canceled = calloc(n, sizeof *canceled);
  if (canceled == NULL) rc = CELER_ENOMEM;
  if (rc == 0) rc = check_canceled(r, entries, n, canceled);
  int64_t checked = celer_mono_ms();
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (celer_mono_ms() - checked > RUNNER_CANCEL_RECHECK_MS) {
      /* The rest of the batch waited: look again before running it. */
      rc = check_canceled(r, entries + i, n - i, canceled + i);
      checked = celer_mono_ms();
    }
    if (rc == 0) rc = handle_entry(r, &entries[i], canceled[i]);
    if (r->held) inflight_remove(r->held, entries[i].entry_id);
  }
  /* On an error the rest stay pending; the reclaimer hands them back. */
  for (size_t i = 0; r->held && i < n; i++) inflight_remove(r->held, entries[i].entry_id);
  free(canceled);
  broker_entries_free(entries, n);
  return rc;
}

int runner_loop(runner *r) {
  int64_t pause = 100;
  while (!*r->stop) {
    int rc = runner_step(r);
    if (rc == 0) {
      pause = 100;
      continue;
    }
    /* Full jitter, so that workers cut off together do not come back
     * together. */
    int64_t wait = pause / 2 + jitter(pause / 2);
    celer_error("%s; retrying in %lld ms", r->conn->errstr, (long long)wait);
    /* Wait out the pause in slices so a stop request is honoured. */
    int64_t until = celer_mono_ms() + wait;
    while (!*r->stop && celer_mono_ms() < until) {
      struct timespec ts = {0, 50 * 1000000L};
      nanosleep(&ts, NULL);
    }
    pause = pause * 2 > RUNNER_RECONNECT_MAX_MS ? RUNNER_RECONNECT_MAX_MS : pause * 2;
  }
  return 0;
}
