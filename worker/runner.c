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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

/* Longest pause between reconnect attempts while the broker is down. */
#define RUNNER_RECONNECT_MAX_MS 5000
/* Largest rejected payload the worker still parses to find its id: the
 * JSON parser needs several times the text's size in memory, and Redis
 * accepts values up to 512 MiB. */
#define RUNNER_SALVAGE_MAX (16 * 1024 * 1024)

static void pending_clear(pending_done *p) {
  outcome_completion_free(&p->c);
  free(p->error_message);
  memset(p, 0, sizeof *p);
}

int runner_init(runner *r, broker_conn *conn, const celer_registry *reg,
                const runner_config *cfg, volatile sig_atomic_t *stop, worker_slot *slot) {
  memset(r, 0, sizeof *r);
  r->conn = conn;
  r->reg = reg;
  r->cfg = *cfg;
  r->stop = stop;
  r->slot = slot;
  if (r->cfg.prefetch < 1) r->cfg.prefetch = 1;
  if (r->cfg.prefetch > RUNNER_PREFETCH_MAX) r->cfg.prefetch = RUNNER_PREFETCH_MAX;
  size_t n = cfg->nqueues ? cfg->nqueues : 1;
  r->paused = calloc(n, sizeof *r->paused);
  r->active = calloc(n, sizeof *r->active);
  size_t cap = (size_t)r->cfg.prefetch;
  r->cap_pending = cap;
  r->pending = calloc(cap, sizeof *r->pending);
  r->canceled = calloc(cap, sizeof *r->canceled);
  r->got = calloc(cap, sizeof *r->got);
  r->marks = calloc(n, sizeof *r->marks);
  r->ids = calloc(cap, sizeof *r->ids);
  r->which = calloc(cap, sizeof *r->which);
  r->idbuf = calloc(cap, sizeof *r->idbuf);
  r->batch = calloc(cap, sizeof *r->batch);
  r->outcomes = calloc(cap, sizeof *r->outcomes);
  return r->paused && r->active && r->pending && r->canceled && r->got && r->marks && r->ids &&
                 r->which && r->idbuf && r->batch && r->outcomes
             ? 0
             : CELER_ENOMEM;
}

void runner_free(runner *r) {
  for (size_t i = 0; i < r->npending; i++) pending_clear(&r->pending[i]);
  free(r->pending);
  free(r->canceled);
  free(r->got);
  free(r->marks);
  free(r->ids);
  free(r->which);
  free(r->idbuf);
  free(r->batch);
  free(r->outcomes);
  r->pending = NULL;
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

/* The hard time limit of one run: the envelope's, else the task's, never
 * more than the worker-wide cap; 0 = none. */
static int64_t time_limit(const runner *r, const worker_task *t, const celer_envelope *env) {
  int64_t limit = env->timeout_ms > 0 ? env->timeout_ms : t->timeout_ms;
  if (r->cfg.time_limit_ms > 0 && (limit == 0 || limit > r->cfg.time_limit_ms))
    limit = r->cfg.time_limit_ms;
  return limit;
}

/* Publishes in the slot that a run starts (so the supervisor can enforce
 * its limit and record it should this process die) or ends. */
static void slot_run_begins(runner *r, const broker_entry *e, const worker_task *t,
                            const celer_envelope *env, int64_t limit) {
  if (r->slot == NULL) return;
  slot_write_begin(r->slot);
  slot_run *run = &r->slot->run;
  run->busy = true;
  run->queue_index = (uint32_t)e->queue_index;
  celer_copy(run->entry_id, sizeof run->entry_id, e->entry_id);
  celer_copy(run->task_id, sizeof run->task_id, env->id);
  celer_copy(run->task, sizeof run->task, env->task);
  run->started_mono = celer_mono_ms();
  run->deadline_mono = limit > 0 ? run->started_mono + limit : 0;
  run->attempt = env->attempt;
  run->max_retries = env->max_retries >= 0 ? env->max_retries : t->max_retries;
  run->backoff = t->backoff;
  slot_write_end(r->slot);
}

static void slot_run_ends(runner *r, int64_t took_ms) {
  if (r->slot == NULL) return;
  double seconds = (double)took_ms / 1000.0;
  slot_write_begin(r->slot);
  r->slot->run.busy = false;
  r->slot->run.tasks_done++;
  slot_counters *c = &r->slot->counters;
  for (size_t i = 0; i < SLOT_DURATION_BUCKETS; i++)
    if (seconds <= slot_duration_bounds[i]) c->duration_buckets[i]++;
  c->duration_count++;
  c->duration_sum_s += seconds;
  slot_write_end(r->slot);
}

/* The id of an envelope that starts with it, as libceler writes them
 * ({"id":"...",...), without parsing the JSON: the cancellation check
 * needs only the id, and the envelope is decoded (and validated) once,
 * later. Returns 1 and fills out, or 0 (then the full parse decides). */
static int quick_id(const char *payload, size_t len, char out[CELER_ID_MAX + 1]) {
  static const char head[] = "{\"id\":\"";
  size_t h = sizeof head - 1;
  if (payload == NULL || len <= h || memcmp(payload, head, h) != 0) return 0;
  size_t n = 0;
  while (h + n < len && n <= CELER_ID_MAX && payload[h + n] != '"') {
    char ch = payload[h + n];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-';
    if (!ok) return 0;
    n++;
  }
  if (n == 0 || n > CELER_ID_MAX || h + n >= len) return 0;
  memcpy(out, payload + h, n);
  out[n] = '\0';
  return 1;
}

/* Runs the handler of a decoded envelope and classifies what it did. */
static void run_handler(runner *r, const broker_entry *e, const worker_task *t,
                        const celer_envelope *env, const char *queue, run_result *res) {
  celer_task_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.env = env;
  ctx.queue = queue;
  ctx.reg = r->reg;
  ctx.max_payload = r->cfg.max_payload;
  ctx.signer = r->cfg.signer;
  ctx.retry_delay_ms = -1;
  int64_t limit = time_limit(r, t, env);
  slot_run_begins(r, e, t, env, limit);
  res->started_at = celer_now_ms();
  ctx.deadline_ms = limit > 0 ? res->started_at + limit : 0;
  json_t *result = NULL;
  int rc = t->handler(&ctx, env->args, env->kwargs, &result);
  res->finished_at = celer_now_ms();
  slot_run_ends(r, res->finished_at - res->started_at);
  /* Follow-ups go with a success only. */
  task_ctx_finish(&ctx, res, rc == 0 && ctx.verdict == VERDICT_NONE);
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
  celer_copy(res->error_type, sizeof res->error_type, ctx.error_type);
  if (ctx.verdict == VERDICT_RETRY && res->state == CELER_FAILED)
    celer_fmt(res->error_message, sizeof res->error_message, "%s (gave up after %lld retries)",
              ctx.error_message, (long long)env->attempt);
  else
    celer_copy(res->error_message, sizeof res->error_message, ctx.error_message);
  if (res->state == CELER_RETRYING)
    res->retry_delay_ms =
        ctx.retry_delay_ms >= 0 ? ctx.retry_delay_ms : outcome_backoff(&t->backoff, env->attempt);
}

/* The sink every outcome of this runner goes to. */
static outcome_sink sink_of(const runner *r) {
  return (outcome_sink){r->conn, r->cfg.name, r->cfg.consumer, r->cfg.result_ttl_ms};
}

/* Counts a recorded outcome in the slot's per-queue counters. */
static void count_state(runner *r, size_t queue_index, celer_state st) {
  if (r->slot == NULL || queue_index >= WORKER_QUEUES_MAX) return;
  slot_write_begin(r->slot);
  r->slot->counters.by_state[queue_index][st]++;
  slot_write_end(r->slot);
}

static void count_fence(runner *r, int outcome) {
  if (r->slot == NULL) return;
  slot_write_begin(r->slot);
  if (outcome == BROKER_STALE) r->slot->counters.stale++;
  else r->slot->counters.duplicates++;
  slot_write_end(r->slot);
}

/* Schedules the retry of a RETRYING run. */
static int schedule_retry(runner *r, const broker_entry *e, const char *queue, const char *id,
                          const celer_envelope *env, run_result *res) {
  outcome_sink sink = sink_of(r);
  int outcome = 0;
  int rc = outcome_retry(&sink, e, queue, id, env, res, &outcome);
  if (rc != 0) return rc;
  if (outcome == BROKER_RECORDED) {
    count_state(r, e->queue_index, CELER_RETRYING);
    celer_log_fields f = {id, env->task, queue, "RETRYING", env->attempt,
                          res->finished_at - res->started_at};
    celer_log_task(CELER_LOG_INFO, &f, "%s failed (%s: %s); retry %lld in %lld ms", env->task,
                   res->error_type, res->error_message, (long long)env->attempt + 1,
                   (long long)res->retry_delay_ms);
  } else if (outcome == BROKER_STALE) {
    count_fence(r, outcome);
    celer_log(CELER_LOG_WARN, id, "lease lost while running: the retry was not recorded");
  } else {
    count_fence(r, outcome);
  }
  return 0;
}

/* Counts and logs a final outcome once the broker said what became of it. */
static void account(runner *r, const pending_done *p, int outcome) {
  const char *id = p->id;
  if (outcome == BROKER_STALE) {
    count_fence(r, outcome);
    celer_log(CELER_LOG_WARN, id, "lease lost while running: this %s was not recorded",
              celer_state_name(p->state));
    return;
  }
  if (outcome == BROKER_DUPLICATE) {
    if (p->state == CELER_CANCELED) {
      celer_log(CELER_LOG_INFO, id, "canceled: dropped without running");
    } else {
        count_fence(r, outcome);
      celer_log(CELER_LOG_WARN, id, "task already had a final record; this run was a duplicate");
    }
    return;
  }
  count_state(r, p->queue_index, p->state);
  const char *task = p->task[0] ? p->task : "task";
  celer_log_fields f = {id, p->task[0] ? p->task : NULL, r->cfg.queues[p->queue_index],
                        celer_state_name(p->state), p->attempt, p->duration_ms};
  /* Successes at debug level: one line per task costs more than the task
   * at full speed. Everything else is news. */
  if (p->state == CELER_SUCCEEDED)
    celer_log_task(CELER_LOG_DEBUG, &f, "%s succeeded in %lld ms", task,
                   (long long)p->duration_ms);
  else
    celer_log_task(p->state == CELER_REJECTED ? CELER_LOG_WARN : CELER_LOG_INFO, &f,
                   "%s %s: %s: %s", task, celer_state_name(p->state), p->error_type,
                   p->error_message ? p->error_message : "");
}

/* Records every final outcome waiting in r->pending: one script call per
 * queue. On a broker error they stay unrecorded (their entries pending:
 * the leases bring them back). */
static int flush(runner *r) {
  int rc = 0;
  broker_completion *batch = r->batch;
  size_t *which = r->which;
  int *outcomes = r->outcomes;
  for (size_t q = 0; rc == 0 && q < r->cfg.nqueues; q++) {
    size_t k = 0;
    for (size_t i = 0; i < r->npending; i++) {
      if (r->pending[i].queue_index != q) continue;
      batch[k] = r->pending[i].c;
      which[k++] = i;
    }
    if (k == 0) continue;
    rc = broker_complete(r->conn, batch, k, outcomes);
    for (size_t j = 0; rc == 0 && j < k; j++) account(r, &r->pending[which[j]], outcomes[j]);
  }
  for (size_t i = 0; i < r->npending; i++) pending_clear(&r->pending[i]);
  r->npending = 0;
  return rc;
}

/* Queues a final outcome to be recorded with the rest of its batch; the
 * batch goes out with the next fetch (record_and_fetch), or sooner when
 * this one has waited RUNNER_FLUSH_MS (a slow batch must not hold finished
 * results back). */
static int finish(runner *r, const broker_entry *e, const char *queue, const char *id,
                  const celer_envelope *env, const run_result *res) {
  /* A batch never holds more than the list has room for; this is a guard.
   * A full list is otherwise left for the next fetch to record. */
  int rc = r->npending == r->cap_pending ? flush(r) : 0;
  if (rc != 0) return rc;
  pending_done *p = &r->pending[r->npending];
  outcome_sink sink = sink_of(r);
  rc = outcome_prepare(&sink, e, queue, id, env, res, &p->c);
  if (rc != 0) return rc;
  celer_copy(p->id, sizeof p->id, id);
  celer_copy(p->entry_id, sizeof p->entry_id, e->entry_id);
  celer_copy(p->task, sizeof p->task, env && env->task[0] ? env->task : "");
  celer_copy(p->error_type, sizeof p->error_type, res->error_type);
  p->error_message = res->state == CELER_SUCCEEDED ? NULL : strdup(res->error_message);
  /* The completion borrows strings that must outlive the entry. */
  p->c.task_id = p->id;
  p->c.entry_id = p->entry_id;
  p->c.queue = r->cfg.queues[e->queue_index];
  p->queue_index = e->queue_index;
  p->state = res->state;
  p->attempt = env ? env->attempt : -1;
  p->duration_ms = res->started_at ? res->finished_at - res->started_at : -1;
  if (r->npending++ == 0) r->first_pending_mono = celer_mono_ms();
  if (celer_mono_ms() - r->first_pending_mono >= RUNNER_FLUSH_MS) return flush(r);
  return 0;
}

/* Judges e against the keyring (verify.h). Returns 0 when it may go on
 * (vr->claims then holds a signed task's envelope), 1 when refused (res
 * is the REJECTED outcome, counted by reason), or CELER_ENOMEM. A refusal
 * is filed under the task id only once the signature held: a forged token
 * cannot take the id, and so the record, of a real task. */
static int verify_entry(runner *r, const broker_entry *e, const char *queue,
                        char id[CELER_ID_MAX + 1], run_result *res, verify_result *vr) {
  int rc = verify_task(r->cfg.keyring, e->payload, e->payload_len, queue, r->cfg.max_payload,
                       celer_now_ms() / 1000, vr);
  if (rc != 1) return rc;
  if (vr->id[0]) strcpy(id, vr->id);
  outcome_set(res, CELER_REJECTED, verify_error_type(vr->reason), "%s", vr->message);
  if (r->slot) {
    slot_write_begin(r->slot);
    r->slot->counters.refused[vr->reason]++;
    slot_write_end(r->slot);
  }
  return 1;
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
  celer_copy(id, CELER_ID_MAX + 1, e->entry_id);
  if (e->problem) {
    outcome_set(res, CELER_REJECTED, "MalformedEntry", "%s", e->problem);
    return 0;
  }
  verify_result vr = {0};
  int vrc = r->cfg.keyring ? verify_entry(r, e, queue, id, res, &vr) : 0;
  if (vrc != 0) return vrc < 0 ? vrc : 0;
  celer_envelope_error err;
  int rc = celer_envelope_decode(vr.claims ? vr.claims : e->payload,
                                 vr.claims ? vr.claims_len : e->payload_len, r->cfg.max_payload,
                                 queue, env, &err);
  verify_result_clear(&vr);
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
                               .consumer = r->cfg.consumer,
                               .task_id = id,
                               .envelope = e->payload,
                               .envelope_len = e->payload_len,
                               .due_ms = env->eta,
                               .park = true};
    int outcome = 0;
    if ((rc = broker_reschedule(r->conn, &q, &outcome)) != 0) return rc;
    if (outcome != BROKER_NOT_PARKED) {
      *parked = true;
      if (outcome == BROKER_RECORDED)
        celer_log(CELER_LOG_DEBUG, id, "parked until its eta %lld", (long long)env->eta);
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
    if (res.state == CELER_PENDING) run_handler(r, e, task, &env, queue, &res);
    bool decoded = env.id[0] != '\0';
    if (res.state == CELER_RETRYING)
      rc = schedule_retry(r, e, queue, id, &env, &res);
    else
      rc = finish(r, e, queue, id, decoded ? &env : NULL, &res);
  }
  run_result_clear(&res);
  celer_envelope_clear(&env);
  return rc;
}

/* Weight of the queue named `name` (a pointer into cfg.queues). */
static int weight_of(const runner *r, const char *name) {
  for (size_t q = 0; q < r->cfg.nqueues; q++)
    if (r->cfg.queues[q] == name) return r->cfg.weights[q];
  return 1;
}

/* Orders the n active queues for this fetch: a weighted random order, so
 * that over many fetches a queue of weight 6 comes first six times as
 * often as one of weight 1 (each queue gets the key u^(1/w) for a uniform
 * u; the largest key goes first). */
static void weighted_order(runner *r, size_t n) {
  double key[WORKER_QUEUES_MAX];
  for (size_t i = 0; i < n; i++) {
    double u = ((double)celer_jitter(1000000) + 1.0) / 1000002.0;
    key[i] = pow(u, 1.0 / (double)weight_of(r, r->active[i]));
  }
  for (size_t i = 1; i < n; i++) { /* insertion sort: a few queues */
    for (size_t j = i; j > 0 && key[j] > key[j - 1]; j--) {
      double k = key[j];
      key[j] = key[j - 1];
      key[j - 1] = k;
      const char *q = r->active[j];
      r->active[j] = r->active[j - 1];
      r->active[j - 1] = q;
    }
  }
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
  if (r->cfg.weights) weighted_order(r, n);
  return n;
}

/* False when the fetch that brought the entries of queue q (an index into
 * cfg.queues) saw that q has no cancellation marks at all. */
static bool may_be_canceled(const runner *r, size_t q, size_t nactive) {
  for (size_t j = 0; j < nactive; j++)
    if (r->active[j] == r->cfg.queues[q]) return r->marks[j];
  return true;
}

/* Which fetched entries were canceled: one ZMSCORE per queue present,
 * skipped for queues the fetch found without marks (nactive > 0; 0 checks
 * every queue). Entries whose envelope cannot be read are never canceled. */
static int check_canceled(runner *r, broker_entry *entries, size_t n, bool *canceled,
                          size_t nactive) {
  int rc = 0;
  for (size_t q = 0; rc == 0 && q < r->cfg.nqueues; q++) {
    if (nactive > 0 && !may_be_canceled(r, q, nactive)) continue;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
      if (entries[i].queue_index != q || canceled[i]) continue;
      if (quick_id(entries[i].payload, entries[i].payload_len, r->idbuf[k]) ||
          salvage_id(entries[i].payload, entries[i].payload_len, r->idbuf[k]) ||
          (r->cfg.keyring &&
           verify_peek_id(entries[i].payload, entries[i].payload_len, r->idbuf[k]))) {
        r->ids[k] = r->idbuf[k];
        r->which[k++] = i;
      }
    }
    if (k == 0) continue;
    rc = broker_canceled(r->conn, r->cfg.queues[q], r->ids, k, r->got);
    for (size_t j = 0; rc == 0 && j < k; j++) canceled[r->which[j]] = r->got[j];
  }
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

/* Publishes the entries this child holds, for lease renewal. */
static void slot_hold(runner *r, const broker_entry *entries, size_t n) {
  if (r->slot == NULL) return;
  slot_write_begin(r->slot);
  size_t k = 0;
  for (size_t i = 0; i < n && k < RUNNER_PREFETCH_MAX; i++) {
    r->slot->held[k].queue_index = (uint32_t)entries[i].queue_index;
    celer_copy(r->slot->held[k].entry_id, sizeof r->slot->held[k].entry_id,
               entries[i].entry_id);
    k++;
  }
  r->slot->nheld = (uint32_t)k;
  slot_write_end(r->slot);
}

/* True when this child should stop taking tasks: asked to, or due for
 * recycling (task count or resident size). */
static bool should_stop(runner *r) {
  if (*r->stop) return true;
  if (r->cfg.max_tasks > 0 && r->handled >= r->cfg.max_tasks) return true;
  if (r->cfg.max_rss_kb > 0) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
      if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
      fclose(f);
    }
    if (resident * (sysconf(_SC_PAGESIZE) / 1024) > r->cfg.max_rss_kb) return true;
  }
  return false;
}

/* Hands back the entries of a batch this child will not run. */
static void hand_back(runner *r, const broker_entry *entries, size_t n) {
  const char **ids = calloc(n ? n : 1, sizeof *ids);
  for (size_t q = 0; ids && q < r->cfg.nqueues; q++) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (entries[i].queue_index == q) ids[k++] = entries[i].entry_id;
    if (k == 0) continue;
    int count = 0;
    if (broker_handback(r->conn, r->cfg.queues[q], r->cfg.consumer, ids, k, &count) == 0)
      celer_debug("handed back %d task(s) of %s", count, r->cfg.queues[q]);
    else
      celer_warn("handing back tasks of %s: %s (they return after the lease)",
                 r->cfg.queues[q], r->conn->errstr);
  }
  free(ids);
  if (r->slot) {
    slot_write_begin(r->slot);
    r->slot->nheld = 0;
    slot_write_end(r->slot);
  }
}

/* True when every pending outcome is of one queue: one script call. */
static bool one_queue_pending(const runner *r) {
  for (size_t i = 1; i < r->npending; i++)
    if (r->pending[i].queue_index != r->pending[0].queue_index) return false;
  return r->npending > 0;
}

/* Records the pending outcomes and takes the next entries, in one round
 * trip when the outcomes are of one queue (broker_complete_fetch): with
 * prefetch 1 this halves the round trips per task. On a broker error the
 * outcomes count as unrecorded, as in flush(). */
static int record_and_fetch(runner *r, size_t nactive, broker_entry **entries, size_t *n) {
  if (!one_queue_pending(r)) {
    int rc = r->npending > 0 ? flush(r) : 0;
    return rc ? rc : broker_fetch(r->conn, r->active, nactive, r->cfg.consumer, r->cfg.prefetch,
                                  RUNNER_MAX_BLOCK_MS, entries, n, r->marks);
  }
  size_t k = r->npending;
  for (size_t i = 0; i < k; i++) r->batch[i] = r->pending[i].c;
  int rc = broker_complete_fetch(r->conn, r->batch, k, r->outcomes, r->active, nactive,
                                 r->cfg.consumer, r->cfg.prefetch, RUNNER_MAX_BLOCK_MS, entries,
                                 n, r->marks);
  /* Counted and logged only when both answered; after an error they may
   * or may not be recorded, and their tasks come back by lease if not. */
  for (size_t i = 0; rc == 0 && i < k; i++) account(r, &r->pending[i], r->outcomes[i]);
  for (size_t i = 0; i < k; i++) pending_clear(&r->pending[i]);
  r->npending = 0;
  return rc;
}

int runner_step(runner *r) {
  size_t nactive = active_queues(r);
  if (r->conn->ctx == NULL && broker_ensure(r->conn) != 0) return CELER_ECONNECT;
  if (nactive == 0) {
    /* Every queue is paused: wait for the next look at the flags (and say
     * this child is alive: it is not stuck, only told to wait). */
    if (r->slot) {
      slot_write_begin(r->slot);
      r->slot->run.last_fetch_mono = celer_mono_ms();
      slot_write_end(r->slot);
    }
    if (r->npending > 0) return flush(r);
    struct timespec ts = {0, RUNNER_PAUSE_CHECK_MS * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
  }
  broker_entry *entries = NULL;
  size_t n = 0;
  int rc = record_and_fetch(r, nactive, &entries, &n);
  if (rc == 0 && r->slot) {
    slot_write_begin(r->slot);
    r->slot->run.last_fetch_mono = celer_mono_ms();
    slot_write_end(r->slot);
  }
  if (rc != 0 || n == 0) return rc;
  index_entries(r, entries, n);
  size_t fetched = n;
  if (n > (size_t)r->cfg.prefetch) {
    /* One blocking read covers every queue but takes up to `prefetch` from
     * each: keep the first ones in this fetch's order, give back the rest. */
    hand_back(r, entries + r->cfg.prefetch, n - (size_t)r->cfg.prefetch);
    n = (size_t)r->cfg.prefetch;
  }
  slot_hold(r, entries, n);
  bool *canceled = r->canceled;
  memset(canceled, 0, n * sizeof *canceled);
  rc = check_canceled(r, entries, n, canceled, nactive);
  int64_t checked = celer_mono_ms();
  size_t i = 0;
  for (; i < n && rc == 0; i++) {
    if (i > 0 && should_stop(r)) break;
    if (celer_mono_ms() - checked > RUNNER_CANCEL_RECHECK_MS) {
      /* The rest of the batch waited: look again before running it. */
      rc = check_canceled(r, entries + i, n - i, canceled + i, 0);
      checked = celer_mono_ms();
    }
    /* A finished result waits for its batch, but not past the start of a
     * run once it is RUNNER_FLUSH_MS old. Its entry stays in the held list
     * (its lease renewed) until it is recorded. */
    if (rc == 0 && r->npending > 0 && celer_mono_ms() - r->first_pending_mono >= RUNNER_FLUSH_MS)
      rc = flush(r);
    if (rc == 0) rc = handle_entry(r, &entries[i], canceled[i]);
    if (rc == 0) r->handled++;
  }
  /* Outcomes of one queue ride with the next fetch (record_and_fetch),
   * which follows at once; others are recorded now. */
  if (rc == 0 && r->npending > 0 && !one_queue_pending(r)) rc = flush(r);
  if (rc == 0 && r->slot) {
    /* Recorded, rescheduled, or about to be recorded with the next fetch
     * up to i; the rest is handed back below. */
    slot_write_begin(r->slot);
    r->slot->nheld = 0;
    slot_write_end(r->slot);
  }
  /* Taken but not started: back to the queue for others, at once. After
   * a broker error they stay pending: this child stops claiming them, so
   * their leases expire and the reclaimer brings them back. */
  if (rc == 0 && i < n) hand_back(r, entries + i, n - i);
  if (rc != 0 && r->slot) {
    slot_write_begin(r->slot);
    r->slot->nheld = 0;
    slot_write_end(r->slot);
  }
  broker_entries_free(entries, fetched);
  return rc;
}

int runner_loop(runner *r) {
  int64_t pause = 100;
  while (!should_stop(r)) {
    int rc = runner_step(r);
    if (rc == 0) {
      pause = 100;
      continue;
    }
    /* Full jitter, so that workers cut off together do not come back
     * together. */
    int64_t wait = pause / 2 + celer_jitter(pause / 2);
    if (r->slot) {
      slot_write_begin(r->slot);
      r->slot->counters.reconnects++;
      slot_write_end(r->slot);
    }
    celer_error("%s; retrying in %lld ms", r->conn->errstr, (long long)wait);
    /* Wait out the pause in slices so a stop request is honoured. */
    int64_t until = celer_mono_ms() + wait;
    while (!*r->stop && celer_mono_ms() < until) {
      struct timespec ts = {0, 50 * 1000000L};
      nanosleep(&ts, NULL);
    }
    pause = pause * 2 > RUNNER_RECONNECT_MAX_MS ? RUNNER_RECONNECT_MAX_MS : pause * 2;
  }
  /* Outcomes left waiting for a next fetch that will not come. */
  if (r->npending > 0 && flush(r) != 0)
    celer_warn("recording the last outcomes: %s (their tasks run again after the lease)",
               r->conn->errstr);
  return 0;
}
