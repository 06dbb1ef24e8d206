/* /metrics: what the supervisor gathered (metrics_input) as Prometheus
 * text exposition format 0.0.4 (see worker.h). Every family has its # HELP
 * and # TYPE lines, even with no sample; label values are escaped. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "celer/state.h"
#include "worker/worker.h"

/* First size of the text: a worker with a few queues fits without growing;
 * doubling handles more. */
#define METRICS_INITIAL_CAP 4096
/* Significant digits that make any double read back exactly. */
#define METRICS_DOUBLE_DIGITS 17

/* A growable text; once an allocation fails it only records the failure. */
typedef struct text {
  char *p;
  size_t len, cap;
  bool oom;
} text;

/* Makes room for extra more bytes and a terminator. */
static bool text_reserve(text *t, size_t extra) {
  if (t->oom) return false;
  if (t->len + extra < t->cap) return true;
  size_t cap = t->cap ? t->cap : METRICS_INITIAL_CAP;
  while (cap <= t->len + extra) {
    if (cap > SIZE_MAX / 2) {
      t->oom = true;
      return false;
    }
    cap *= 2;
  }
  char *p = realloc(t->p, cap);
  if (p == NULL) {
    t->oom = true;
    return false;
  }
  t->p = p;
  t->cap = cap;
  return true;
}

static void text_put(text *t, const char *s, size_t n) {
  if (!text_reserve(t, n)) return;
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
}

static void text_str(text *t, const char *s) {
  text_put(t, s, strlen(s));
}

static void text_printf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !text_reserve(t, (size_t)n)) {
    t->oom = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

/* A label value: backslash, double quote and newline escaped. */
static void text_label_value(text *t, const char *s) {
  for (; s != NULL && *s != '\0'; s++) {
    if (*s == '\\') text_str(t, "\\\\");
    else if (*s == '"') text_str(t, "\\\"");
    else if (*s == '\n') text_str(t, "\\n");
    else text_put(t, s, 1);
  }
}

/* A sample value, with the format's spellings of NaN and infinities. */
static void text_double(text *t, double v) {
  if (isnan(v)) text_str(t, "NaN");
  else if (isinf(v)) text_printf(t, "%cInf", v > 0 ? '+' : '-');
  else text_printf(t, "%.*g", METRICS_DOUBLE_DIGITS, v);
}

static void family(text *t, const char *name, const char *type, const char *help) {
  text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family with its one unlabelled sample. */
static void scalar(text *t, const char *name, const char *type, const char *help, uint64_t v) {
  family(t, name, type, help);
  text_printf(t, "%s %" PRIu64 "\n", name, v);
}

static const char *queue_name(const metrics_input *m, size_t q) {
  return m->queues[q] != NULL ? m->queues[q] : "";
}

/* Queues with per-queue arrays: the arrays hold WORKER_QUEUES_MAX. */
static size_t queue_count(const metrics_input *m) {
  return m->nqueues < WORKER_QUEUES_MAX ? m->nqueues : WORKER_QUEUES_MAX;
}

/* A gauge per queue; a negative value (unknown) has no sample. */
static void queue_gauge(text *t, const metrics_input *m, const char *name, const char *help,
                        const int64_t *values) {
  family(t, name, "gauge", help);
  for (size_t q = 0; q < queue_count(m); q++) {
    if (values[q] < 0) continue;
    text_printf(t, "%s{queue=\"", name);
    text_label_value(t, queue_name(m, q));
    text_printf(t, "\"} %" PRId64 "\n", values[q]);
  }
}

/* Runs that ended in a final state or in a retry, by queue and state. */
static void tasks_total(text *t, const metrics_input *m) {
  static const char name[] = "celer_tasks_total";
  family(t, name, "counter", "Task runs finished, by queue and resulting state.");
  for (size_t q = 0; q < queue_count(m); q++) {
    for (int st = 0; st < CELER_STATE_COUNT; st++) {
      if (!celer_state_is_final((celer_state)st) && st != CELER_RETRYING) continue;
      uint64_t sum = 0;
      for (size_t i = 0; i < m->nslots; i++) sum += m->counters[i].by_state[q][st];
      text_printf(t, "%s{queue=\"", name);
      text_label_value(t, queue_name(m, q));
      text_printf(t, "\",state=\"%s\"} %" PRIu64 "\n", celer_state_name((celer_state)st), sum);
    }
  }
}

/* The run-duration histogram, summed over slots. A bucket never counts
 * less than the one before it nor +Inf less than the last: a child whose
 * slot got scribbled on cannot publish a histogram queries choke on. */
static void durations(text *t, const metrics_input *m) {
  static const char name[] = "celer_task_duration_seconds";
  uint64_t cum[SLOT_DURATION_BUCKETS] = {0}, count = 0;
  double sum = 0;
  for (size_t i = 0; i < m->nslots; i++) {
    const slot_counters *c = &m->counters[i];
    for (size_t b = 0; b < SLOT_DURATION_BUCKETS; b++) cum[b] += c->duration_buckets[b];
    count += c->duration_count;
    sum += c->duration_sum_s;
  }
  family(t, name, "histogram", "Time task handlers ran, in seconds.");
  uint64_t prev = 0;
  for (size_t b = 0; b < SLOT_DURATION_BUCKETS; b++) {
    if (cum[b] < prev) cum[b] = prev;
    prev = cum[b];
    text_printf(t, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, slot_duration_bounds[b], cum[b]);
  }
  if (count < prev) count = prev;
  text_printf(t, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, count);
  text_printf(t, "%s_sum ", name);
  text_double(t, sum);
  text_printf(t, "\n%s_count %" PRIu64 "\n", name, count);
}

static void children(text *t, const metrics_input *m) {
  uint64_t alive = 0, busy = 0;
  for (size_t i = 0; i < m->nslots; i++) {
    if (m->runs[i].pid <= 0) continue; /* an empty slot's flags mean nothing */
    alive++;
    if (m->runs[i].busy) busy++;
  }
  scalar(t, "celer_children", "gauge", "Child processes running.", alive);
  scalar(t, "celer_children_busy", "gauge", "Child processes running a task handler.", busy);
  scalar(t, "celer_child_starts_total", "counter", "Child processes started.",
         m->child_starts);
  scalar(t, "celer_child_crashes_total", "counter",
         "Child processes that died without being asked to.", m->child_crashes);
  scalar(t, "celer_time_limit_kills_total", "counter",
         "Child processes killed for running a task past its time limit.",
         m->time_limit_kills);
}

static void completions(text *t, const metrics_input *m) {
  uint64_t stale = 0, duplicates = 0, reconnects = 0;
  for (size_t i = 0; i < m->nslots; i++) {
    stale += m->counters[i].stale;
    duplicates += m->counters[i].duplicates;
    reconnects += m->counters[i].reconnects;
  }
  scalar(t, "celer_stale_completions_total", "counter",
         "Outcomes refused because the lease had passed to another consumer.", stale);
  scalar(t, "celer_duplicate_completions_total", "counter",
         "Outcomes of tasks that already had a final record.", duplicates);
  scalar(t, "celer_broker_reconnects_total", "counter",
         "Broker connections re-made by child processes.", reconnects);
}

/* Tasks refused by the keyring (verify.h), one sample per reason. */
static void refusals(text *t, const metrics_input *m) {
#define METRICS_REASON_LABEL(name, label) [name] = label,
  static const char *const labels[VERIFY_REASON_COUNT] = {VERIFY_REASONS(METRICS_REASON_LABEL)};
#undef METRICS_REASON_LABEL
  static const char name[] = "celer_tasks_refused_total";
  family(t, name, "counter", "Tasks refused by signature, key, validity or policy checks.");
  for (int r = VERIFY_OK + 1; r < VERIFY_REASON_COUNT; r++) {
    uint64_t sum = 0;
    for (size_t i = 0; i < m->nslots; i++) sum += m->counters[i].refused[r];
    text_printf(t, "%s{reason=\"%s\"} %" PRIu64 "\n", name, labels[r], sum);
  }
}

static void worker_info(text *t, const metrics_input *m) {
  family(t, "celer_worker_info", "gauge", "The worker's name, as a label; always 1.");
  text_str(t, "celer_worker_info{worker=\"");
  text_label_value(t, m->worker);
  text_str(t, "\"} 1\n");
  scalar(t, "celer_up", "gauge", "1 when the worker is healthy, else 0.", m->healthy ? 1 : 0);
  family(t, "celer_uptime_seconds", "gauge", "Seconds since the worker started.");
  text_printf(t, "celer_uptime_seconds %" PRId64 "\n", m->uptime_s);
}

char *metrics_render(const metrics_input *m, size_t *len) {
  text t = {0};
  worker_info(&t, m);
  tasks_total(&t, m);
  durations(&t, m);
  queue_gauge(&t, m, "celer_queue_ready", "Tasks in the queue not yet taken by a worker.",
              m->ready);
  queue_gauge(&t, m, "celer_queue_scheduled", "Tasks of the queue waiting for their time.",
              m->scheduled);
  queue_gauge(&t, m, "celer_queue_dead", "Tasks of the queue in its dead set.", m->dead);
  children(&t, m);
  completions(&t, m);
  refusals(&t, m);
  scalar(&t, "celer_leases_reclaimed_total", "counter",
         "Expired leases taken back from consumers that stopped answering.", m->reclaimed);
  scalar(&t, "celer_tasks_lost_total", "counter",
         "Tasks failed after their lease expired too many times.", m->lost);
  scalar(&t, "celer_tasks_promoted_total", "counter",
         "Scheduled tasks moved to their queue when due.", m->promoted);
  if (t.oom) {
    free(t.p);
    return NULL;
  }
  if (len != NULL) *len = t.len;
  return t.p;
}
