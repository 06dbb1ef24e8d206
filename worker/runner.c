/* The fetch-run-complete loop. One runner owns one broker connection and
 * runs tasks one at a time; it is the unit a worker child process runs.
 *
 * The life of one entry:
 *   unusable entry or envelope  -> REJECTED (acked, recorded, loop goes on)
 *   eta ahead (not promoted)    -> parked in the scheduled set
 *   past expires                -> EXPIRED
 *   unknown task name           -> REJECTED
 *   handler returns 0           -> SUCCEEDED with the result
 *   handler asks to retry       -> RETRYING and rescheduled, while retries
 *                                  remain; then FAILED
 *   handler fails               -> FAILED
 * Every outcome is one script (complete.lua or reschedule.lua). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "common/common.h"
#include "worker/worker.h"

/* Longest pause between reconnect attempts while the broker is down. */
#define RUNNER_RECONNECT_MAX_MS 5000

int runner_init(runner *r, broker_conn *conn, const celer_registry *reg,
                const runner_config *cfg, volatile sig_atomic_t *stop) {
  memset(r, 0, sizeof *r);
  r->conn = conn;
  r->reg = reg;
  r->cfg = *cfg;
  r->stop = stop;
  if (r->cfg.prefetch < 1) r->cfg.prefetch = 1;
  if (r->cfg.prefetch > RUNNER_PREFETCH_MAX) r->cfg.prefetch = RUNNER_PREFETCH_MAX;
  r->next_promote_mono = calloc(cfg->nqueues ? cfg->nqueues : 1, sizeof *r->next_promote_mono);
  return r->next_promote_mono ? 0 : CELER_ENOMEM;
}

void runner_free(runner *r) {
  free(r->next_promote_mono);
  r->next_promote_mono = NULL;
}

int runner_prepare(runner *r) {
  for (size_t q = 0; q < r->cfg.nqueues; q++) {
    int rc = broker_ensure_group(r->conn, r->cfg.queues[q]);
    if (rc != 0) return rc;
  }
  return 0;
}

/* What one entry's run produced, before it is recorded. */
typedef struct run_result {
  celer_state state;
  json_t *result;                        /* owned; SUCCEEDED only */
  char error_type[WORKER_ERROR_TYPE_MAX];
  char error_message[WORKER_ERROR_MESSAGE_MAX];
  int64_t started_at, finished_at;
  int64_t retry_delay_ms;                /* RETRYING: < 0 = backoff */
} run_result;

static void set_outcome(run_result *res, celer_state st, const char *type, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
static void set_outcome(run_result *res, celer_state st, const char *type, const char *fmt,
                        ...) {
  va_list ap;
  res->state = st;
  snprintf(res->error_type, sizeof res->error_type, "%s", type);
  va_start(ap, fmt);
  vsnprintf(res->error_message, sizeof res->error_message, fmt, ap);
  va_end(ap);
}

/* A random number in [0, n] from the kernel; n when it cannot be read. */
static int64_t jitter(int64_t n) {
  uint64_t v;
  if (n <= 0) return 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) return n;
  return (int64_t)(v % ((uint64_t)n + 1));
}

/* Full-jitter exponential backoff for the retry that follows `attempt`. */
static int64_t backoff_ms(int64_t attempt) {
  int64_t ceiling = RUNNER_BACKOFF_BASE_MS;
  for (int64_t i = 0; i < attempt && ceiling < RUNNER_BACKOFF_CAP_MS; i++) ceiling *= 2;
  if (ceiling > RUNNER_BACKOFF_CAP_MS) ceiling = RUNNER_BACKOFF_CAP_MS;
  return jitter(ceiling);
}

/* Largest rejected payload the worker still parses to find its id: the
 * JSON parser needs several times the text's size in memory, and Redis
 * accepts values up to 512 MiB. */
#define RUNNER_SALVAGE_MAX (16 * 1024 * 1024)

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

/* Makes the promoter look at queue qi no later than delay_ms from now: a
 * task this runner just scheduled must not wait for the block bound. */
static void wake_promote_in(runner *r, size_t qi, int64_t delay_ms) {
  int64_t at = celer_mono_ms() + (delay_ms > 0 ? delay_ms : 0);
  if (at < r->next_promote_mono[qi]) r->next_promote_mono[qi] = at;
}

/* Runs the handler of a decoded envelope and classifies what it did. */
static void run_handler(runner *r, const worker_task *t, const celer_envelope *env,
                        const char *queue, run_result *res) {
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
    set_outcome(res, CELER_FAILED, "TaskError",
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
  res->retry_delay_ms = ctx.retry_delay_ms;
}

/* The envelope of the next attempt: the producer's own JSON with attempt
 * raised (fields this version does not know survive the retry) and
 * enqueued_at filled in when the producer left it out. Caller frees. */
static char *next_attempt(const broker_entry *e, int64_t attempt, int64_t enqueued_at,
                          size_t *len) {
  json_t *doc = json_loadb(e->payload, e->payload_len, 0, NULL);
  char *body = NULL;
  if (doc && json_object_set_new(doc, "attempt", json_integer(attempt)) == 0 &&
      (json_object_get(doc, "enqueued_at") != NULL ||
       json_object_set_new(doc, "enqueued_at", json_integer(enqueued_at)) == 0))
    body = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(doc);
  if (body) *len = strlen(body);
  return body;
}

/* Records a final outcome or schedules the retry. */
static int record(runner *r, const broker_entry *e, const char *queue, const char *id,
                  const celer_envelope *env, run_result *res) {
  broker_outcome o = {
      .id = id,
      .task = env && env->task[0] ? env->task : NULL,
      .queue = queue,
      .entry_id = e->entry_id,
      .state = res->state,
      .attempt = env ? env->attempt : e->attempt,
      .result = res->result,
      .error_type = res->error_type,
      .error_message = res->error_message,
      .enqueued_at = env && env->enqueued_at ? env->enqueued_at : 0,
      .started_at = res->started_at,
      .finished_at = res->finished_at ? res->finished_at : celer_now_ms(),
      .worker = r->cfg.name,
  };
  if (o.enqueued_at == 0) {
    /* A producer that left enqueued_at out: the entry id's first part is
     * the broker's time of the XADD. */
    char *dash = strchr(e->entry_id, '-');
    int64_t ms;
    char part[24];
    if (dash && (size_t)(dash - e->entry_id) < sizeof part) {
      snprintf(part, sizeof part, "%.*s", (int)(dash - e->entry_id), e->entry_id);
      if (celer_parse_i64(part, &ms) == 0) o.enqueued_at = ms;
    }
  }
  char *json = NULL;
  size_t len = 0;
  int rc = broker_record_encode(&o, &json, &len);
  if (rc != 0) return rc;
  if (res->state == CELER_RETRYING) {
    size_t blen = 0;
    char *body = next_attempt(e, env->attempt + 1, o.enqueued_at, &blen);
    rc = body ? 0 : CELER_ENOMEM;
    if (rc == 0) {
      int64_t delay = res->retry_delay_ms >= 0 ? res->retry_delay_ms : backoff_ms(env->attempt);
      int outcome = 0;
      rc = broker_reschedule(r->conn, queue, e->entry_id, id, body, blen,
                             celer_now_ms() + delay, false, json, len,
                             r->cfg.result_ttl_ms + delay, &outcome);
      if (rc == 0 && outcome == -1) r->stats.duplicates++;
      else if (rc == 0) r->stats.retried++;
      if (rc == 0 && outcome == 1) wake_promote_in(r, e->queue_index, delay);
      celer_log(CELER_LOG_INFO, id, "%s failed (%s: %s); retry %lld in %lld ms", env->task,
                res->error_type, res->error_message, (long long)env->attempt + 1,
                (long long)delay);
      free(body);
    }
    free(json);
    return rc;
  }
  int recorded = 0;
  rc = broker_complete(r->conn, queue, e->entry_id, id, res->state, json, len,
                       r->cfg.result_ttl_ms, &recorded);
  free(json);
  if (rc != 0) return rc;
  if (!recorded) {
    r->stats.duplicates++;
    celer_log(CELER_LOG_WARN, id, "task already had a final record; this run was a duplicate");
    return 0;
  }
  switch (res->state) {
    case CELER_SUCCEEDED: r->stats.succeeded++; break;
    case CELER_REJECTED: r->stats.rejected++; break;
    case CELER_EXPIRED: r->stats.expired++; break;
    default: r->stats.failed++; break;
  }
  if (res->state == CELER_SUCCEEDED)
    celer_log(CELER_LOG_DEBUG, id, "%s succeeded in %lld ms", env->task,
              (long long)(res->finished_at - res->started_at));
  else
    celer_log(res->state == CELER_REJECTED ? CELER_LOG_WARN : CELER_LOG_INFO, id, "%s %s: %s: %s",
              o.task ? o.task : "task", celer_state_name(res->state), res->error_type,
              res->error_message);
  return 0;
}

/* Handles one fetched entry from decode to record. Returns 0 or a broker
 * error (the entry then stays pending and is recovered later). */
static int handle_entry(runner *r, const broker_entry *e) {
  const char *queue = r->cfg.queues[e->queue_index];
  run_result res;
  memset(&res, 0, sizeof res);
  celer_envelope env;
  celer_envelope_init(&env);
  char id[CELER_ID_MAX + 1];
  /* Until the envelope names a valid id, the record is filed under the
   * stream entry id, which has the same alphabet. */
  snprintf(id, sizeof id, "%s", e->entry_id);
  int rc = 0;
  if (e->problem) {
    set_outcome(&res, CELER_REJECTED, "MalformedEntry", "%s", e->problem);
  } else {
    celer_envelope_error err;
    rc = celer_envelope_decode(e->payload, e->payload_len, r->cfg.max_payload, queue, &env,
                               &err);
    if (rc != 0) {
      char msg[sizeof err.field + sizeof err.message + 4];
      celer_envelope_error_format(&err, msg, sizeof msg);
      salvage_id(e->payload, e->payload_len, id);
      set_outcome(&res, CELER_REJECTED,
                  rc == CELER_ETOOBIG ? "PayloadTooLarge" : "MalformedEnvelope", "%s", msg);
      rc = 0;
    } else {
      strcpy(id, env.id);
      if (e->attempt > env.attempt) env.attempt = e->attempt;
    }
  }
  if (res.state == CELER_PENDING && strcmp(env.queue, queue) != 0) {
    set_outcome(&res, CELER_REJECTED, "MalformedEnvelope",
                "queue: the envelope names queue '%s' but was read from queue '%s'", env.queue,
                queue);
  }
  if (res.state == CELER_PENDING && env.eta > 0 && !e->promoted) {
    /* Written straight into the stream with an eta: the broker's clock
     * decides whether it waits in the scheduled set. */
    int outcome = 0;
    rc = broker_reschedule(r->conn, queue, e->entry_id, id, e->payload, e->payload_len,
                           env.eta, true, NULL, 0, 0, &outcome);
    if (rc != 0 || outcome != 0) {
      if (rc == 0 && outcome == 1) {
        celer_log(CELER_LOG_DEBUG, id, "parked until its eta %lld", (long long)env.eta);
        wake_promote_in(r, e->queue_index, env.eta - celer_now_ms());
      }
      celer_envelope_clear(&env);
      return rc;
    }
  }
  if (res.state == CELER_PENDING && env.expires > 0 && env.expires < celer_now_ms()) {
    set_outcome(&res, CELER_EXPIRED, "Expired", "reached a worker %lld ms after it expired",
                (long long)(celer_now_ms() - env.expires));
  }
  const worker_task *t = NULL;
  if (res.state == CELER_PENDING && (t = registry_find(r->reg, env.task)) == NULL) {
    set_outcome(&res, CELER_REJECTED, "UnknownTask",
                "unknown task '%s': no module loaded by worker %s registers it", env.task,
                r->cfg.name);
  }
  if (res.state == CELER_PENDING) run_handler(r, t, &env, queue, &res);
  rc = record(r, e, queue, id, res.state == CELER_REJECTED && !env.task[0] ? NULL : &env, &res);
  json_decref(res.result);
  celer_envelope_clear(&env);
  return rc;
}

/* Promotes due scheduled tasks of every queue whose next due time has
 * come; returns the ms until the earliest next due time (capped). */
static int promote_due(runner *r) {
  int64_t now = celer_mono_ms(), wait = RUNNER_MAX_BLOCK_MS;
  for (size_t q = 0; q < r->cfg.nqueues; q++) {
    if (r->next_promote_mono[q] <= now) {
      int moved = 0;
      int64_t next = -1, broker_now = 0;
      if (broker_promote(r->conn, r->cfg.queues[q], RUNNER_PROMOTE_BATCH, &moved, &next,
                         &broker_now) != 0) {
        /* The fetch that follows reports a dead connection; any other
         * failure is logged and tried again after the block bound. */
        celer_warn("promoting scheduled tasks of %s: %s", r->cfg.queues[q], r->conn->errstr);
        r->next_promote_mono[q] = now + RUNNER_MAX_BLOCK_MS;
        continue;
      }
      if (moved == RUNNER_PROMOTE_BATCH) next = broker_now; /* more are due */
      /* Look again at the next due time, and at least every block bound so
       * that an earlier task scheduled meanwhile is noticed. */
      int64_t delay = next < 0 ? RUNNER_MAX_BLOCK_MS : next - broker_now;
      if (delay > RUNNER_MAX_BLOCK_MS) delay = RUNNER_MAX_BLOCK_MS;
      if (delay < 0) delay = 0;
      r->next_promote_mono[q] = now + delay;
    }
    int64_t left = r->next_promote_mono[q] - now;
    if (left < wait) wait = left;
  }
  return (int)(wait < 0 ? 0 : wait);
}

int runner_step(runner *r) {
  int block = promote_due(r);
  if (r->conn->ctx == NULL && broker_ensure(r->conn) != 0) return CELER_ECONNECT;
  broker_entry *entries = NULL;
  size_t n = 0;
  /* BLOCK 0 means "forever" to Redis; a due task means "do not block". */
  int rc = broker_fetch(r->conn, r->cfg.queues, r->cfg.nqueues, r->cfg.name, r->cfg.prefetch,
                        block > 0 ? block : 0, &entries, &n);
  if (rc != 0) return rc;
  r->stats.fetched += n;
  for (size_t i = 0; i < n && rc == 0; i++) rc = handle_entry(r, &entries[i]);
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
    celer_error("%s; retrying in %lld ms", r->conn->errstr, (long long)pause);
    /* Wait out the pause in slices so a stop request is honoured. */
    int64_t until = celer_mono_ms() + pause;
    while (!*r->stop && celer_mono_ms() < until) {
      struct timespec ts = {0, 50 * 1000000L};
      nanosleep(&ts, NULL);
    }
    pause = pause * 2 > RUNNER_RECONNECT_MAX_MS ? RUNNER_RECONNECT_MAX_MS : pause * 2;
  }
  return 0;
}
