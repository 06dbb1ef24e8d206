/* libceler operator API (include/celer/admin.h): cancel, pause, the dead
 * set and purge, each one broker script or command. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "celer/admin.h"
#include "client/internal.h"
#include "common/common.h"

/* Dead tasks moved back per script call by celer_dead_retry(NULL): bounds
 * how long one call holds Redis. */
#define ADMIN_RETRY_BATCH 500
/* Ready entries removed per purge call, for the same reason. */
#define ADMIN_PURGE_BATCH 5000

static int check_queue(celer_client *c, const char *queue) {
  if (strlen(queue) > CELER_QUEUE_NAME_MAX || !celer_valid_queue_name(queue))
    return client_fail(c, CELER_EINVAL, "queue: must be 1 to %d characters from [A-Za-z0-9_.-]",
                       CELER_QUEUE_NAME_MAX);
  return 0;
}

/* Validates queue (NULL: default) and makes sure the client is usable. */
static int prepare(celer_client *c, const char **queue) {
  if (*queue == NULL) *queue = CELER_DEFAULT_QUEUE;
  int rc = check_queue(c, *queue);
  return rc ? rc : client_ready(c);
}

static int cancel_io(celer_client *c, const char *queue, const char *id, celer_state *out,
                     bool *canceled) {
  int rc = prepare(c, &queue);
  if (rc == 0) rc = client_check_names(c, queue, id);
  if (rc != 0) return rc;
  int64_t now = celer_now_ms();
  broker_outcome o = {.id = id,
                      .queue = queue,
                      .state = CELER_CANCELED,
                      .error_type = "Canceled",
                      .error_message = "canceled before it ran",
                      .finished_at = now};
  char *record = NULL, state[16];
  size_t len = 0;
  if ((rc = broker_record_encode(&o, &record, &len)) != 0)
    return client_fail(c, rc, "out of memory building a record");
  bool changed = false;
  rc = broker_cancel(&c->conn, queue, id, record, len, c->result_ttl_ms, state, &changed);
  free(record);
  /* The record must be findable by a search over every queue, even when
   * nothing was ever sent to this one. */
  if (rc == 0 && changed) rc = broker_register_queue(&c->conn, queue);
  if (rc != 0) return client_fail_broker(c, &c->conn, rc);
  if (canceled) *canceled = changed;
  celer_state st = CELER_CANCELED;
  if (celer_state_parse(state, &st) != 0)
    return client_fail(c, CELER_EPROTO, "cancel answered an unknown state '%s'", state);
  if (out) *out = st;
  return 0;
}

int celer_cancel(celer_client *c, const char *queue, const char *id, celer_state *state_out,
                 bool *canceled) {
  return CLIENT_GUARDED(cancel_io(c, queue, id, state_out, canceled));
}

static int set_paused_io(celer_client *c, const char *queue, bool paused) {
  int rc = prepare(c, &queue);
  if (rc == 0 && (rc = broker_set_paused(&c->conn, queue, paused)) != 0)
    client_fail_broker(c, &c->conn, rc);
  return rc;
}

int celer_pause(celer_client *c, const char *queue) {
  return CLIENT_GUARDED(set_paused_io(c, queue, true));
}

int celer_resume(celer_client *c, const char *queue) {
  return CLIENT_GUARDED(set_paused_io(c, queue, false));
}

static int is_paused_io(celer_client *c, const char *queue, bool *paused) {
  int rc = prepare(c, &queue);
  if (rc == 0 && (rc = broker_paused(&c->conn, &queue, 1, paused)) != 0)
    client_fail_broker(c, &c->conn, rc);
  return rc;
}

int celer_is_paused(celer_client *c, const char *queue, bool *paused) {
  return CLIENT_GUARDED(is_paused_io(c, queue, paused));
}

/* One dead listing row as the API promises it. */
static json_t *dead_row(const char *id, int64_t dead_at, const char *stored) {
  json_t *entry = stored ? json_loads(stored, 0, NULL) : NULL;
  json_t *record = json_object_get(entry, "record");
  json_t *envelope = json_object_get(entry, "envelope");
  json_t *row = json_pack("{sssIsOsO}", "id", id, "dead_at", (json_int_t)dead_at, "record",
                          record ? record : json_null(), "envelope",
                          json_is_string(envelope) ? envelope : json_null());
  json_decref(entry);
  return row;
}

static int dead_list_io(celer_client *c, const char *queue, int64_t offset, int64_t limit,
                        json_t **list, int64_t *total) {
  int rc = prepare(c, &queue);
  if (rc != 0) return rc;
  if (offset < 0 || limit < 0 || limit > CELER_DEAD_LIST_MAX)
    return client_fail(c, CELER_EINVAL, "offset must be 0 or more and limit 0 to %d",
                       CELER_DEAD_LIST_MAX);
  char **ids = NULL, **entries = NULL;
  int64_t *at = NULL, count = 0;
  size_t n = 0;
  rc = broker_dead_list(&c->conn, queue, offset, limit, &ids, &entries, &at, &n, &count);
  if (rc != 0) return client_fail_broker(c, &c->conn, rc);
  json_t *rows = json_array();
  for (size_t i = 0; rows && i < n; i++) {
    if (json_array_append_new(rows, dead_row(ids[i], at[i], entries[i])) != 0) {
      json_decref(rows);
      rows = NULL;
    }
  }
  broker_names_free(ids, n);
  broker_names_free(entries, n);
  free(at);
  if (rows == NULL) return client_fail(c, CELER_ENOMEM, "out of memory listing dead tasks");
  *list = rows;
  if (total) *total = count;
  return 0;
}

int celer_dead_list(celer_client *c, const char *queue, int64_t offset, int64_t limit,
                    json_t **list, int64_t *total) {
  return CLIENT_GUARDED(dead_list_io(c, queue, offset, limit, list, total));
}

static int dead_retry_io(celer_client *c, const char *queue, const char *id, int64_t *moved) {
  int rc = prepare(c, &queue);
  if (rc == 0 && id) rc = client_check_names(c, queue, id);
  if (rc != 0) return rc;
  int64_t total = 0, skipped = 0, m = 0, s = 0, left = 0, cutoff = 0;
  do {
    rc = broker_dead_retry(&c->conn, queue, id, ADMIN_RETRY_BATCH, skipped, &cutoff, &m, &s,
                           &left);
    if (rc != 0) return client_fail_broker(c, &c->conn, rc);
    total += m;
    skipped += s;
    /* Entries that cannot be retried stay at the front: pass over them. */
  } while (id == NULL && (m > 0 || s > 0) && left > skipped);
  if (moved) *moved = total;
  if (id && m == 0)
    return client_fail(c, CELER_ENOTFOUND,
                       s ? "dead task %s has no readable envelope to run again"
                         : "task %s is not in the dead set of queue %s",
                       id, queue);
  return 0;
}

int celer_dead_retry(celer_client *c, const char *queue, const char *id, int64_t *moved) {
  return CLIENT_GUARDED(dead_retry_io(c, queue, id, moved));
}

static int purge_io(celer_client *c, const char *queue, unsigned parts, int64_t counts[3]) {
  int rc = prepare(c, &queue);
  if (rc != 0) return rc;
  char which[4];
  size_t k = 0;
  if (parts & CELER_PURGE_READY) which[k++] = 'r';
  if (parts & CELER_PURGE_SCHEDULED) which[k++] = 's';
  if (parts & CELER_PURGE_DEAD) which[k++] = 'd';
  which[k] = '\0';
  if (k == 0) return client_fail(c, CELER_EINVAL, "purge: name at least one part");
  int64_t sum[3] = {0, 0, 0};
  bool done = false;
  while (!done) {
    int64_t got[3];
    rc = broker_purge(&c->conn, queue, which, ADMIN_PURGE_BATCH, got, &done);
    if (rc != 0) return client_fail_broker(c, &c->conn, rc);
    for (int i = 0; i < 3; i++) sum[i] += got[i];
    /* Scheduled and dead go in the first call; later calls finish ready. */
    which[0] = 'r';
    which[1] = '\0';
  }
  if (counts) memcpy(counts, sum, sizeof sum);
  return 0;
}

int celer_purge(celer_client *c, const char *queue, unsigned parts, int64_t counts[3]) {
  return CLIENT_GUARDED(purge_io(c, queue, parts, counts));
}

/* ------------------------------------------------------------------ */
/* Read-only views: queue counts and the worker registry               */

/* Rate windows shorter than this are too young to divide by. */
#define ADMIN_RATE_MIN_WINDOW_MS 1000
/* Queue counts read per pipelined round trip. */
#define ADMIN_STATS_BATCH 256

static int compare_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_page(celer_client *c, int64_t offset, int64_t limit) {
  if (offset < 0 || limit < 0 || limit > CELER_LIST_MAX)
    return client_fail(c, CELER_EINVAL, "offset must be 0 or more and limit 0 to %d",
                       CELER_LIST_MAX);
  return 0;
}

/* One queue's counts as the API promises them; NULL when out of memory. */
static json_t *queue_row(const char *name, const broker_queue_stats *s) {
  double rate = s->window_ms >= ADMIN_RATE_MIN_WINDOW_MS
                    ? (double)s->recent * 1000.0 / (double)s->window_ms
                    : 0.0;
  json_t *row = json_pack(
      "{ss sI sI sI sI sI sI sI sI sI sI sI sI sb sf}", "queue", name, "ready",
      (json_int_t)s->ready, "active", (json_int_t)s->active, "scheduled",
      (json_int_t)s->scheduled, "retrying", (json_int_t)s->retrying, "dead", (json_int_t)s->dead,
      "processed", (json_int_t)s->processed, "succeeded", (json_int_t)s->succeeded, "failed",
      (json_int_t)(s->failed + s->rejected), "rejected", (json_int_t)s->rejected, "expired",
      (json_int_t)s->expired, "canceled", (json_int_t)s->canceled, "retried",
      (json_int_t)s->retried, "paused", s->paused, "rate", rate);
  if (row && !s->retrying_exact &&
      json_object_set_new(row, "retrying_exact", json_false()) != 0) {
    json_decref(row);
    row = NULL;
  }
  return row;
}

/* Reads the counts of names[0..n-1] into rows, a batch per round trip. */
static int append_queue_rows(celer_client *c, char *const *names, size_t n, json_t *rows) {
  broker_queue_stats s[ADMIN_STATS_BATCH];
  for (size_t done = 0; done < n;) {
    size_t k = n - done > ADMIN_STATS_BATCH ? ADMIN_STATS_BATCH : n - done;
    int rc = broker_read_queue_stats(&c->conn, (const char *const *)names + done, k, s);
    if (rc != 0) return client_fail_broker(c, &c->conn, rc);
    for (size_t i = 0; i < k; i++)
      if (json_array_append_new(rows, queue_row(names[done + i], &s[i])) != 0)
        return client_fail(c, CELER_ENOMEM, "out of memory listing queues");
    done += k;
  }
  return 0;
}

static int queue_stats_io(celer_client *c, const char *queue, int64_t offset, int64_t limit,
                          json_t **list, int64_t *total) {
  int rc = queue ? check_queue(c, queue) : 0;
  if (rc == 0) rc = check_page(c, offset, limit);
  if (rc == 0) rc = client_ready(c);
  if (rc != 0) return rc;
  char **names = NULL;
  size_t n = 0;
  if ((rc = broker_list_queues(&c->conn, &names, &n)) != 0)
    return client_fail_broker(c, &c->conn, rc);
  if (n > 1) qsort(names, n, sizeof *names, compare_names);
  size_t from = 0, count = n;
  if (queue) {
    char **hit = n ? bsearch(&queue, names, n, sizeof *names, compare_names) : NULL;
    if (hit == NULL) {
      broker_names_free(names, n);
      return client_fail(c, CELER_ENOTFOUND, "queue %s is not known", queue);
    }
    from = (size_t)(hit - names);
    count = 1;
  } else {
    from = (uint64_t)offset < n ? (size_t)offset : n;
    count = n - from < (uint64_t)limit ? n - from : (size_t)limit;
  }
  json_t *rows = json_array();
  rc = rows ? append_queue_rows(c, names + from, count, rows)
            : client_fail(c, CELER_ENOMEM, "out of memory listing queues");
  broker_names_free(names, n);
  if (rc != 0) {
    json_decref(rows);
    return rc;
  }
  *list = rows;
  if (total) *total = queue ? 1 : (int64_t)n;
  return 0;
}

int celer_queue_stats(celer_client *c, const char *queue, int64_t offset, int64_t limit,
                      json_t **list, int64_t *total) {
  return CLIENT_GUARDED(queue_stats_io(c, queue, offset, limit, list, total));
}

/* The last heartbeat of worker name, or 0 when the registry has none. */
static int64_t seen_of(const broker_worker_list *l, const char *name) {
  for (size_t i = 0; i < l->n_seen; i++)
    if (strcmp(l->seen_names[i], name) == 0) return l->seen_ms[i];
  return 0;
}

/* One worker as the API promises it; NULL when out of memory. A foreign
 * or damaged entry keeps its name and says it is unreadable. */
static json_t *worker_row(const broker_worker_list *l, size_t i, int64_t now) {
  json_t *row = json_loads(l->entries[i], 0, NULL);
  if (!json_is_object(row)) {
    json_decref(row);
    row = json_pack("{ss}", "error", "unreadable registry entry");
    if (row == NULL) return NULL;
  }
  int64_t seen = seen_of(l, l->names[i]);
  const json_t *own = json_object_get(row, "last_heartbeat");
  if (seen == 0 && json_is_integer(own)) seen = json_integer_value(own);
  int64_t age = -1; /* no heartbeat known */
  if (seen > 0) age = now > seen ? now - seen : 0; /* 0: its clock is ahead of ours */
  bool stale = age < 0 || age > CELER_WORKER_STALE_MS;
  if (json_object_set_new(row, "name", json_string(l->names[i])) != 0 ||
      json_object_set_new(row, "last_heartbeat", seen > 0 ? json_integer(seen) : json_null()) ||
      json_object_set_new(row, "heartbeat_age_ms", age >= 0 ? json_integer(age) : json_null()) ||
      json_object_set_new(row, "stale", json_boolean(stale)) != 0) {
    json_decref(row);
    return NULL;
  }
  return row;
}

static int compare_worker_index(const void *a, const void *b, void *arg) {
  const broker_worker_list *l = arg;
  return strcmp(l->names[*(const size_t *)a], l->names[*(const size_t *)b]);
}

static int workers_io(celer_client *c, int64_t offset, int64_t limit, json_t **list,
                      int64_t *total) {
  int rc = check_page(c, offset, limit);
  if (rc == 0) rc = client_ready(c);
  if (rc != 0) return rc;
  broker_worker_list l;
  if ((rc = broker_workers(&c->conn, &l)) != 0) return client_fail_broker(c, &c->conn, rc);
  size_t *order = l.n ? malloc(l.n * sizeof *order) : NULL;
  json_t *rows = json_array();
  if ((l.n && order == NULL) || rows == NULL)
    rc = client_fail(c, CELER_ENOMEM, "out of memory listing workers");
  for (size_t i = 0; rc == 0 && i < l.n; i++) order[i] = i;
  if (rc == 0 && l.n > 1) qsort_r(order, l.n, sizeof *order, compare_worker_index, &l);
  size_t from = (uint64_t)offset < l.n ? (size_t)offset : l.n;
  size_t count = l.n - from < (uint64_t)limit ? l.n - from : (size_t)limit;
  int64_t now = celer_now_ms();
  for (size_t i = from; rc == 0 && i < from + count; i++)
    if (json_array_append_new(rows, worker_row(&l, order[i], now)) != 0)
      rc = client_fail(c, CELER_ENOMEM, "out of memory listing workers");
  if (rc == 0) {
    *list = rows;
    rows = NULL;
    if (total) *total = (int64_t)l.n;
  }
  json_decref(rows);
  free(order);
  broker_worker_list_free(&l);
  return rc;
}

int celer_workers(celer_client *c, int64_t offset, int64_t limit, json_t **list,
                  int64_t *total) {
  return CLIENT_GUARDED(workers_io(c, offset, limit, list, total));
}
