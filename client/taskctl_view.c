/* taskctl queues, stats and workers: read-only views of the broker, built
 * on celer_queue_stats and celer_workers (celer/admin.h). */
#include <stdlib.h>
#include <string.h>
#include "celer/admin.h"
#include "client/taskctl.h"

/* queues and workers: rows shown when --limit is not given. */
#define TC_LIST_LIMIT_DEFAULT 100
/* The largest --offset; far beyond any registry. */
#define TC_LIST_OFFSET_MAX 1000000000LL
/* Room for the queues a worker serves, as one cell ("a,b,c"). */
#define TC_QUEUES_CELL_MAX 96

static int64_t int_of(const json_t *obj, const char *key) {
  const json_t *v = json_object_get(obj, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static const char *str_of(const json_t *obj, const char *key, const char *absent) {
  const char *v = json_string_value(json_object_get(obj, key));
  return v ? v : absent;
}

/* A count cell; colored when it is above zero and color is given. */
static void count_cell(const json_t *row, const char *key, const char *color, char *buf,
                       size_t size, const char **cell_color) {
  int64_t n = int_of(row, key);
  tc_format_count(n, buf, size);
  *cell_color = n > 0 ? color : NULL;
}

static const tc_column queue_columns[] = {
    {"QUEUE", false},  {"READY", true},     {"ACTIVE", true}, {"SCHEDULED", true},
    {"RETRYING", true}, {"DEAD", true},     {"PROCESSED", true}, {"FAILED", true},
    {"RATE/S", true},  {"PAUSED", false},
};
#define QUEUE_COLUMNS (sizeof queue_columns / sizeof queue_columns[0])

int tc_print_queues_table(const json_t *queues, FILE *out, size_t max_width) {
  tc_table t;
  tc_table_init(&t, queue_columns, QUEUE_COLUMNS);
  static const char *const counted[] = {"ready",  "active",    "scheduled", "retrying",
                                        "dead",   "processed", "failed"};
  static const char *const colors[] = {NULL, TC_GREEN, NULL, TC_YELLOW, TC_RED, NULL, TC_RED};
  int rc = 0;
  size_t i;
  json_t *row;
  json_array_foreach(queues, i, row) {
    char text[QUEUE_COLUMNS][TC_COUNT_TEXT_MAX + 8];
    const char *cells[QUEUE_COLUMNS], *paint[QUEUE_COLUMNS] = {NULL};
    cells[0] = str_of(row, "queue", "?");
    for (size_t k = 0; k < sizeof counted / sizeof counted[0]; k++) {
      count_cell(row, counted[k], colors[k], text[k + 1], sizeof text[k + 1], &paint[k + 1]);
      cells[k + 1] = text[k + 1];
    }
    /* A lower bound is marked: the scheduled set was too big to read. */
    if (json_is_false(json_object_get(row, "retrying_exact")))
      strncat(text[4], "+", sizeof text[4] - strlen(text[4]) - 1);
    tc_format_rate(json_number_value(json_object_get(row, "rate")), text[8], sizeof text[8]);
    cells[8] = text[8];
    bool paused = json_is_true(json_object_get(row, "paused"));
    cells[9] = paused ? "paused" : "-";
    paint[9] = paused ? TC_YELLOW : TC_DIM;
    if ((rc = tc_table_add(&t, cells, paint)) != 0) break;
  }
  if (rc == 0) tc_table_print(&t, out, max_width);
  tc_table_free(&t);
  return rc ? tc_fail(TC_EXIT_NEGATIVE, "out of memory formatting the table") : 0;
}

static const tc_column worker_columns[] = {
    {"NAME", false}, {"HOST", false},      {"PID", true},       {"QUEUES", false},
    {"BUSY", true},  {"PROCESSED", true},  {"FAILED", true},    {"UP", false},
    {"HEARTBEAT", false}, {"STATE", false},
};
#define WORKER_COLUMNS (sizeof worker_columns / sizeof worker_columns[0])

/* "a,b,c": the queues a worker serves, cut to fit one cell. */
static void queues_cell(const json_t *row, char *buf, size_t size) {
  size_t used = 0;
  size_t i;
  json_t *q;
  buf[0] = '\0';
  json_array_foreach(json_object_get(row, "queues"), i, q) {
    const char *name = json_string_value(q);
    if (name == NULL) continue;
    int n = snprintf(buf + used, size - used, "%s%s", used ? "," : "", name);
    if (n < 0 || (size_t)n >= size - used) {
      /* Too many to show: end in "..." */
      if (size > 4) memcpy(buf + size - 4, "...", 4);
      return;
    }
    used += (size_t)n;
  }
}

int tc_print_workers_table(const json_t *workers, FILE *out, size_t max_width) {
  tc_table t;
  tc_table_init(&t, worker_columns, WORKER_COLUMNS);
  int64_t now = celer_now_ms();
  int rc = 0;
  size_t i;
  json_t *row;
  json_array_foreach(workers, i, row) {
    char pid[TC_COUNT_TEXT_MAX], queues[TC_QUEUES_CELL_MAX], busy[2 * TC_COUNT_TEXT_MAX],
        processed[TC_COUNT_TEXT_MAX], failed[TC_COUNT_TEXT_MAX], up[48], beat[48];
    const char *cells[WORKER_COLUMNS], *paint[WORKER_COLUMNS] = {NULL};
    snprintf(pid, sizeof pid, "%lld", (long long)int_of(row, "pid"));
    queues_cell(row, queues, sizeof queues);
    snprintf(busy, sizeof busy, "%lld/%lld", (long long)int_of(row, "busy"),
             (long long)int_of(row, "concurrency"));
    tc_format_count(int_of(row, "processed"), processed, sizeof processed);
    count_cell(row, "failed", TC_RED, failed, sizeof failed, &paint[6]);
    int64_t started = int_of(row, "started_at"), seen = int_of(row, "last_heartbeat");
    if (started > 0) tc_format_relative(now - started, up, sizeof up);
    else snprintf(up, sizeof up, "-");
    /* "3s ago" reads as "up 3s ago": say how long it has run instead. */
    if (started > 0 && strstr(up, " ago")) *strstr(up, " ago") = '\0';
    if (seen > 0) tc_format_relative(now - seen, beat, sizeof beat);
    else snprintf(beat, sizeof beat, "never");
    bool stale = json_is_true(json_object_get(row, "stale"));
    cells[0] = str_of(row, "name", "?");
    cells[1] = str_of(row, "host", "?");
    cells[2] = pid;
    cells[3] = queues;
    cells[4] = busy;
    cells[5] = processed;
    cells[6] = failed;
    cells[7] = up;
    cells[8] = beat;
    cells[9] = stale ? "stale" : "live";
    paint[4] = int_of(row, "busy") > 0 ? TC_GREEN : NULL;
    paint[8] = stale ? TC_RED : NULL;
    paint[9] = stale ? TC_RED : TC_GREEN;
    if ((rc = tc_table_add(&t, cells, paint)) != 0) break;
  }
  if (rc == 0) tc_table_print(&t, out, max_width);
  tc_table_free(&t);
  return rc ? tc_fail(TC_EXIT_NEGATIVE, "out of memory formatting the table") : 0;
}

/* --limit and --offset of a listing. */
static int take_page(const session *s, int64_t *limit, int64_t *offset) {
  *limit = TC_LIST_LIMIT_DEFAULT;
  *offset = 0;
  int rc = tc_take_count(s->cl, OPT_LIMIT, "limit", CELER_LIST_MAX, limit);
  if (rc == 0) rc = tc_take_count(s->cl, OPT_OFFSET, "offset", TC_LIST_OFFSET_MAX, offset);
  return rc;
}

/* "3 of 12 queues, after the first 5": the last line of a listing. */
static void print_footer(size_t shown, int64_t total, const char *noun, int64_t offset,
                         const char *extra) {
  char a[TC_COUNT_TEXT_MAX], b[TC_COUNT_TEXT_MAX];
  tc_format_count((int64_t)shown, a, sizeof a);
  tc_format_count(total, b, sizeof b);
  printf("%s of %s %s%s", a, b, noun, total == 1 ? "" : "s");
  if (offset > 0) printf(", after the first %lld", (long long)offset);
  if (extra && *extra) printf(", %s", extra);
  printf("\n");
}

int cmd_queues(session *s) {
  const char *queue = NULL;
  int64_t limit, offset;
  int rc = tc_take_queue(s->cl, &queue);
  if (rc == 0) rc = take_page(s, &limit, &offset);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  json_t *list = NULL;
  int64_t total = 0;
  rc = celer_queue_stats(s->client, queue, offset, limit, &list, &total);
  if (rc == CELER_ENOTFOUND) return tc_fail(TC_EXIT_NEGATIVE, "queue %s is not known", queue);
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json) {
    rc = tc_print_json(list);
  } else {
    if (json_array_size(list) > 0) rc = tc_print_queues_table(list, stdout, 0);
    if (rc == 0) print_footer(json_array_size(list), total, "queue", offset, NULL);
  }
  json_decref(list);
  return rc;
}

int cmd_workers(session *s) {
  int64_t limit, offset;
  int rc = take_page(s, &limit, &offset);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  json_t *list = NULL;
  int64_t total = 0;
  rc = celer_workers(s->client, offset, limit, &list, &total);
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json) {
    rc = tc_print_json(list);
  } else {
    size_t stale = 0, i;
    json_t *row;
    json_array_foreach(list, i, row) stale += json_is_true(json_object_get(row, "stale"));
    char extra[64] = "";
    if (stale > 0) snprintf(extra, sizeof extra, "%zu of them stale", stale);
    if (json_array_size(list) > 0) rc = tc_print_workers_table(list, stdout, 0);
    if (rc == 0) print_footer(json_array_size(list), total, "worker", offset, extra);
  }
  json_decref(list);
  return rc;
}

/* ------------------------------------------------------------------ */
/* stats                                                                */

/* Sums of every queue's counts. */
typedef struct totals {
  int64_t queues, ready, active, scheduled, retrying, dead, processed, succeeded, failed;
  double rate;
  bool retrying_exact;
  json_t *paused;       /* owned: names of paused queues */
  json_t *rates;        /* owned: queue -> rate, for queues with a rate */
} totals;

static void add_queue(totals *t, const json_t *row) {
  t->ready += int_of(row, "ready");
  t->active += int_of(row, "active");
  t->scheduled += int_of(row, "scheduled");
  t->retrying += int_of(row, "retrying");
  t->dead += int_of(row, "dead");
  t->processed += int_of(row, "processed");
  t->succeeded += int_of(row, "succeeded");
  t->failed += int_of(row, "failed");
  if (json_is_false(json_object_get(row, "retrying_exact"))) t->retrying_exact = false;
  double rate = json_number_value(json_object_get(row, "rate"));
  t->rate += rate;
  const char *name = str_of(row, "queue", "?");
  if (json_is_true(json_object_get(row, "paused"))) json_array_append_new(t->paused, json_string(name));
  if (rate > 0) json_object_set_new(t->rates, name, json_real(rate));
}

/* Reads every queue, a page at a time, into t. */
static int sum_queues(session *s, totals *t) {
  int64_t offset = 0, total = 0;
  do {
    json_t *list = NULL;
    int rc = celer_queue_stats(s->client, NULL, offset, CELER_LIST_MAX, &list, &total);
    if (rc) return tc_client_failure(s, rc, false);
    size_t i;
    json_t *row;
    json_array_foreach(list, i, row) add_queue(t, row);
    offset += (int64_t)json_array_size(list);
    size_t n = json_array_size(list);
    json_decref(list);
    if (n == 0) break;
  } while (offset < total);
  t->queues = total;
  return 0;
}

/* Live and stale workers, busy slots and slots, from the registry. */
typedef struct worker_totals {
  int64_t live, stale, busy, concurrency;
} worker_totals;

static int sum_workers(session *s, worker_totals *w) {
  int64_t offset = 0, total = 0;
  do {
    json_t *list = NULL;
    int rc = celer_workers(s->client, offset, CELER_LIST_MAX, &list, &total);
    if (rc) return tc_client_failure(s, rc, false);
    size_t i, n = json_array_size(list);
    json_t *row;
    json_array_foreach(list, i, row) {
      if (json_is_true(json_object_get(row, "stale"))) {
        w->stale++;
        continue;
      }
      w->live++;
      w->busy += int_of(row, "busy");
      w->concurrency += int_of(row, "concurrency");
    }
    offset += (int64_t)n;
    json_decref(list);
    if (n == 0) break;
  } while (offset < total);
  return 0;
}

static json_t *stats_doc(const totals *t, const worker_totals *w) {
  json_t *doc = json_pack(
      "{sI sI sI sI sI sI sI sI sI sf sO sO s{sI sI sI sI}}", "queues", (json_int_t)t->queues,
      "ready", (json_int_t)t->ready, "active", (json_int_t)t->active, "scheduled",
      (json_int_t)t->scheduled, "retrying", (json_int_t)t->retrying, "dead", (json_int_t)t->dead,
      "processed", (json_int_t)t->processed, "succeeded", (json_int_t)t->succeeded, "failed",
      (json_int_t)t->failed, "rate", t->rate, "paused", t->paused, "rates", t->rates, "workers",
      "live", (json_int_t)w->live, "stale", (json_int_t)w->stale, "busy", (json_int_t)w->busy,
      "concurrency", (json_int_t)w->concurrency);
  if (doc && !t->retrying_exact) json_object_set_new(doc, "retrying_exact", json_false());
  return doc;
}

/* One "key  value" line of the stats text. */
static void stat_line(const char *key, const char *value) { printf("%-10s  %s\n", key, value); }

static void print_stats_text(const totals *t, const worker_totals *w) {
  char a[TC_COUNT_TEXT_MAX], b[TC_COUNT_TEXT_MAX], c[TC_COUNT_TEXT_MAX], line[256];
  tc_format_count(t->queues, a, sizeof a);
  snprintf(line, sizeof line, "%s", a);
  if (json_array_size(t->paused) > 0) {
    size_t i;
    json_t *q;
    strncat(line, " (paused:", sizeof line - strlen(line) - 1);
    json_array_foreach(t->paused, i, q) {
      strncat(line, " ", sizeof line - strlen(line) - 1);
      strncat(line, json_string_value(q), sizeof line - strlen(line) - 1);
    }
    strncat(line, ")", sizeof line - strlen(line) - 1);
  }
  stat_line("queues", line);
  tc_format_count(w->busy, a, sizeof a);
  tc_format_count(w->concurrency, b, sizeof b);
  snprintf(line, sizeof line, "%lld live, %lld stale; %s of %s slots busy", (long long)w->live,
           (long long)w->stale, a, b);
  stat_line("workers", line);
  tc_format_count(t->ready, a, sizeof a);
  stat_line("ready", a);
  tc_format_count(t->active, a, sizeof a);
  stat_line("active", a);
  tc_format_count(t->scheduled, a, sizeof a);
  tc_format_count(t->retrying, b, sizeof b);
  snprintf(line, sizeof line, "%s (%s%s retrying)", a, b, t->retrying_exact ? "" : "+");
  stat_line("scheduled", line);
  tc_format_count(t->dead, a, sizeof a);
  stat_line("dead", a);
  tc_format_count(t->processed, a, sizeof a);
  tc_format_count(t->succeeded, b, sizeof b);
  tc_format_count(t->failed, c, sizeof c);
  snprintf(line, sizeof line, "%s (%s succeeded, %s failed)", a, b, c);
  stat_line("processed", line);
  tc_format_rate(t->rate, a, sizeof a);
  snprintf(line, sizeof line, "%s tasks/s over the last minute", a);
  stat_line("rate", line);
  const char *name;
  json_t *v;
  json_object_foreach(t->rates, name, v) {
    tc_format_rate(json_number_value(v), a, sizeof a);
    snprintf(line, sizeof line, "  %s: %s tasks/s", name, a);
    stat_line("", line);
  }
}

int cmd_stats(session *s) {
  int rc = tc_connect(s);
  if (rc) return rc;
  totals t = {.retrying_exact = true, .paused = json_array(), .rates = json_object()};
  worker_totals w = {0, 0, 0, 0};
  if (t.paused == NULL || t.rates == NULL) rc = tc_fail(TC_EXIT_NEGATIVE, "out of memory");
  if (rc == 0) rc = sum_queues(s, &t);
  if (rc == 0) rc = sum_workers(s, &w);
  if (rc == 0) {
    if (s->json) rc = tc_print_json_doc(stats_doc(&t, &w));
    else print_stats_text(&t, &w);
  }
  json_decref(t.paused);
  json_decref(t.rates);
  return rc;
}
