/* Read-only views for operators: the counts of queues (stats.lua, one
 * EVAL_RO per queue, pipelined) and the worker registry. Nothing here
 * changes state, and nothing reads a whole queue: every count is O(1) in
 * the queue's size, except the retry count, which is bounded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/internal.h"

/* The script source, embedded from broker/lua/stats.lua at build time. It
 * is not one of scripts.c's state-change scripts: it is read-only, so it
 * runs with EVAL_RO (a replica or a read-only ACL user may serve it). */
extern const char celer_lua_stats[];

/* Keys and arguments of stats.lua. */
#define STATS_KEYS 6
#define STATS_ARGS 3
/* Integers stats.lua returns, in this order (see the script). */
#define STATS_FIELDS 16
/* Whole 10-second buckets before the current one in the rate window: six
 * make "the last minute" (60 to 70 s, with the current bucket). */
#define STATS_RATE_BUCKETS 6

static int append_stats(broker_conn *b, const char *queue) {
  char keys[STATS_KEYS][BROKER_KEY_MAX + 1];
  static const char *const parts[STATS_KEYS] = {"stream", "scheduled", "dead",
                                                "stats",  "paused",    "rate"};
  for (int i = 0; i < STATS_KEYS; i++) broker_key(keys[i], b->ns, queue, parts[i], NULL);
  char nkeys[8], scan[24], window[8];
  snprintf(nkeys, sizeof nkeys, "%d", STATS_KEYS);
  snprintf(scan, sizeof scan, "%d", BROKER_STATS_RETRY_SCAN_MAX);
  snprintf(window, sizeof window, "%d", STATS_RATE_BUCKETS);
  const char *argv[3 + STATS_KEYS + STATS_ARGS] = {"EVAL_RO", celer_lua_stats, nkeys};
  for (int i = 0; i < STATS_KEYS; i++) argv[3 + i] = keys[i];
  argv[3 + STATS_KEYS] = BROKER_GROUP;
  argv[4 + STATS_KEYS] = scan;
  argv[5 + STATS_KEYS] = window;
  return broker_append(b, 3 + STATS_KEYS + STATS_ARGS, argv, NULL);
}

static int parse_stats(broker_conn *b, const redisReply *r, broker_queue_stats *s) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != STATS_FIELDS)
    return broker_fail(b, CELER_EPROTO, "the stats script returned an unexpected reply");
  int64_t v[STATS_FIELDS];
  for (size_t i = 0; i < STATS_FIELDS; i++) {
    if (r->element[i]->type != REDIS_REPLY_INTEGER)
      return broker_fail(b, CELER_EPROTO, "the stats script returned a non-integer");
    v[i] = r->element[i]->integer;
  }
  *s = (broker_queue_stats){.ready = v[0],
                            .active = v[1],
                            .scheduled = v[2],
                            .retrying = v[3],
                            .retrying_exact = v[4] == 1,
                            .dead = v[5],
                            .processed = v[6],
                            .succeeded = v[7],
                            .failed = v[8],
                            .rejected = v[9],
                            .expired = v[10],
                            .canceled = v[11],
                            .retried = v[12],
                            .paused = v[13] == 1,
                            .recent = v[14],
                            .window_ms = v[15]};
  return 0;
}

int broker_read_queue_stats(broker_conn *b, const char *const *queues, size_t n,
                            broker_queue_stats *out) {
  int rc = broker_ensure(b);
  if (rc != 0) return rc;
  for (size_t i = 0; i < n; i++) {
    if (append_stats(b, queues[i]) != REDIS_OK) {
      broker_close(b);
      return broker_fail(b, CELER_ENOMEM, "out of memory reading queue counts");
    }
  }
  /* Every reply is read, even after a failure, so the connection stays in
   * step. */
  for (size_t i = 0; i < n; i++) {
    redisReply *r = NULL;
    if (redisGetReply(b->ctx, (void **)&r) != REDIS_OK || r == NULL)
      return broker_io_error(b, "reading queue counts");
    if (rc == 0) {
      if (r->type == REDIS_REPLY_ERROR) rc = broker_reply_error(b, r, "reading queue counts");
      else rc = parse_stats(b, r, &out[i]);
    }
    freeReplyObject(r);
  }
  return rc;
}

/* Copies the strings of an array reply into a new list (caller frees with
 * broker_names_free); NULL for an empty one or out of memory (*oom). */
static char **copy_strings(const redisReply *r, size_t step, size_t offset, size_t *n,
                           bool *oom) {
  size_t count = r->elements / step;
  *n = 0;
  if (count == 0) return NULL;
  char **list = calloc(count, sizeof *list);
  if (list == NULL) {
    *oom = true;
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    const redisReply *e = r->element[i * step + offset];
    list[i] = e->type == REDIS_REPLY_STRING ? broker_copy_bytes(e->str, e->len) : strdup("");
    if (list[i] == NULL) {
      broker_names_free(list, i);
      *oom = true;
      return NULL;
    }
  }
  *n = count;
  return list;
}

int broker_workers(broker_conn *b, broker_worker_list *out) {
  memset(out, 0, sizeof *out);
  char workers[BROKER_KEY_MAX + 1], seen[BROKER_KEY_MAX + 1];
  snprintf(workers, sizeof workers, "%s:workers", b->ns);
  snprintf(seen, sizeof seen, "%s:workers:seen", b->ns);
  int rc = broker_ensure(b);
  if (rc != 0) return rc;
  const char *hgetall[2] = {"HGETALL", workers};
  const char *zrange[5] = {"ZRANGE", seen, "0", "-1", "WITHSCORES"};
  if (broker_append(b, 2, hgetall, NULL) != REDIS_OK ||
      broker_append(b, 5, zrange, NULL) != REDIS_OK) {
    broker_close(b);
    return broker_fail(b, CELER_ENOMEM, "out of memory reading the worker registry");
  }
  redisReply *r[2] = {NULL, NULL};
  for (int i = 0; i < 2; i++) {
    if (redisGetReply(b->ctx, (void **)&r[i]) != REDIS_OK || r[i] == NULL) {
      if (i == 1) freeReplyObject(r[0]);
      return broker_io_error(b, "reading the worker registry");
    }
  }
  for (int i = 0; rc == 0 && i < 2; i++) {
    if (r[i]->type == REDIS_REPLY_ERROR)
      rc = broker_reply_error(b, r[i], "reading the worker registry");
    else if (r[i]->type != REDIS_REPLY_ARRAY || r[i]->elements % 2 != 0)
      rc = broker_fail(b, CELER_EPROTO, "the worker registry answered an unexpected reply");
  }
  bool oom = false;
  size_t n_seen = 0, n_scores = 0;
  if (rc == 0) {
    out->names = copy_strings(r[0], 2, 0, &out->n, &oom);
    if (!oom) out->entries = copy_strings(r[0], 2, 1, &out->n, &oom);
    if (!oom) out->seen_names = copy_strings(r[1], 2, 0, &n_seen, &oom);
    char **scores = oom ? NULL : copy_strings(r[1], 2, 1, &n_scores, &oom);
    if (!oom && n_seen > 0) {
      out->seen_ms = calloc(n_seen, sizeof *out->seen_ms);
      if (out->seen_ms == NULL) oom = true;
      for (size_t i = 0; !oom && i < n_seen; i++) {
        /* Scores are whole ms; Redis may print them as "1.7e+12". */
        out->seen_ms[i] = (int64_t)strtod(scores[i], NULL);
      }
      out->n_seen = n_seen;
    }
    broker_names_free(scores, n_scores);
  }
  freeReplyObject(r[0]);
  freeReplyObject(r[1]);
  if (oom) {
    broker_worker_list_free(out);
    rc = broker_fail(b, CELER_ENOMEM, "out of memory reading the worker registry");
  } else if (rc != 0) {
    broker_worker_list_free(out);
  }
  return rc;
}

void broker_worker_list_free(broker_worker_list *l) {
  if (l == NULL) return;
  broker_names_free(l->names, l->n);
  broker_names_free(l->entries, l->n);
  broker_names_free(l->seen_names, l->n_seen);
  free(l->seen_ms);
  memset(l, 0, sizeof *l);
}
