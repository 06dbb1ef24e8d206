/* Leases: a taken entry stays in its consumer's pending list (the lease
 * table) until recorded. Holders renew their leases; anyone may reclaim
 * leases that expired. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/internal.h"

/* Entries one refresh call renews: the argument vector is sized by it. */
#define REFRESH_BATCH 256

int broker_refresh(broker_conn *b, const char *queue, const char *consumer,
                   const char *const *entry_ids, size_t n, int *renewed) {
  char stream[BROKER_KEY_MAX + 1];
  const char *argv[3 + REFRESH_BATCH];
  broker_key(stream, b->ns, queue, "stream", NULL);
  int total = 0;
  for (size_t done = 0; done < n;) {
    size_t k = n - done > REFRESH_BATCH ? REFRESH_BATCH : n - done;
    argv[0] = stream;
    argv[1] = BROKER_GROUP;
    argv[2] = consumer;
    for (size_t i = 0; i < k; i++) argv[3 + i] = entry_ids[done + i];
    int code, got = 0;
    redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_REFRESH, 1, argv, NULL, (int)k + 3);
    if (r == NULL) return code;
    if ((code = broker_integer_reply(b, r, "refresh", &got)) != 0) return code;
    total += got;
    done += k;
  }
  if (renewed) *renewed = total;
  return 0;
}

/* Fills e from one {id, task, redeliveries, attempt} row of reclaim.lua. */
static int parse_lost(redisReply *row, broker_entry *e) {
  if (row->type != REDIS_REPLY_ARRAY || row->elements != 4) return CELER_EPROTO;
  for (size_t i = 0; i < 4; i++)
    if (row->element[i]->type != REDIS_REPLY_STRING) return CELER_EPROTO;
  redisReply **f = row->element;
  snprintf(e->entry_id, sizeof e->entry_id, "%.*s", (int)f[0]->len, f[0]->str);
  if ((e->payload = broker_copy_bytes(f[1]->str, f[1]->len)) == NULL) return CELER_ENOMEM;
  e->payload_len = f[1]->len;
  broker_parse_count(f[2]->str, f[2]->len, &e->redeliveries);
  e->has_attempt = broker_parse_count(f[3]->str, f[3]->len, &e->attempt);
  return 0;
}

int broker_reclaim(broker_conn *b, const char *queue, const char *consumer, int64_t lease_ms,
                   int count, int64_t limit, int *redelivered, broker_entry **lost, size_t *n) {
  char stream[BROKER_KEY_MAX + 1], stats[BROKER_KEY_MAX + 1], idle[24], cnt[16], lim[24];
  broker_key(stream, b->ns, queue, "stream", NULL);
  broker_key(stats, b->ns, queue, "stats", NULL);
  snprintf(idle, sizeof idle, "%lld", (long long)lease_ms);
  snprintf(cnt, sizeof cnt, "%d", count > 0 ? count : 1);
  snprintf(lim, sizeof lim, "%lld", (long long)limit);
  const char *argv[7] = {stream, stats, BROKER_GROUP, consumer, idle, cnt, lim};
  *lost = NULL;
  *n = 0;
  int code;
  redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_RECLAIM, 2, argv, NULL, 7);
  if (r == NULL) return code;
  int rc = 0;
  redisReply *rows = NULL;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
      r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_ARRAY) {
    *redelivered = (int)r->element[0]->integer;
    rows = r->element[1];
  } else {
    rc = broker_fail(b, CELER_EPROTO, "the reclaim script returned an unexpected reply");
  }
  if (rows && rows->elements > 0) {
    broker_entry *e = calloc(rows->elements, sizeof *e);
    if (e == NULL) rc = broker_fail(b, CELER_ENOMEM, "out of memory reclaiming tasks");
    for (size_t i = 0; e && i < rows->elements && rc == 0; i++) {
      rc = parse_lost(rows->element[i], &e[i]);
      if (rc != 0) {
        broker_entries_free(e, i + 1);
        e = NULL;
        broker_fail(b, rc, "the reclaim script returned a malformed row");
      }
    }
    if (rc == 0) {
      *lost = e;
      *n = rows->elements;
    }
  }
  freeReplyObject(r);
  return rc;
}

/* Entries handed back per call: a consumer holds at most its prefetch. */
#define HANDBACK_BATCH 1000

int broker_handback(broker_conn *b, const char *queue, const char *consumer,
                    const char *const *ids, size_t n, int *count) {
  char stream[BROKER_KEY_MAX + 1], max[16];
  const char *argv[4 + HANDBACK_BATCH];
  broker_key(stream, b->ns, queue, "stream", NULL);
  snprintf(max, sizeof max, "%d", HANDBACK_BATCH);
  int total = 0;
  size_t done = 0;
  do {
    size_t k = n - done > HANDBACK_BATCH ? HANDBACK_BATCH : n - done;
    argv[0] = stream;
    argv[1] = BROKER_GROUP;
    argv[2] = consumer;
    argv[3] = max;
    for (size_t i = 0; i < k; i++) argv[4 + i] = ids[done + i];
    int code, got = 0;
    redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_HANDBACK, 1, argv, NULL, (int)k + 4);
    if (r == NULL) return code;
    if ((code = broker_integer_reply(b, r, "handback", &got)) != 0) return code;
    total += got;
    done += k;
  } while (done < n);
  if (count) *count = total;
  return 0;
}

int broker_read_entry(broker_conn *b, const char *queue, const char *entry_id,
                      broker_entry **out) {
  char stream[BROKER_KEY_MAX + 1];
  broker_key(stream, b->ns, queue, "stream", NULL);
  const char *argv[4] = {"XRANGE", stream, entry_id, entry_id};
  int code;
  *out = NULL;
  redisReply *r = broker_command(b, &code, 4, argv, NULL);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    rc = broker_reply_error(b, r, "XRANGE");
  } else if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
    rc = broker_fail(b, CELER_ENOTFOUND, "entry %s of queue %s is gone", entry_id, queue);
  } else {
    broker_entry *e = calloc(1, sizeof *e);
    if (e == NULL || broker_parse_entry(r->element[0], e) != 0) {
      broker_entries_free(e, e ? 1 : 0);
      rc = broker_fail(b, CELER_ENOMEM, "out of memory reading an entry");
    } else {
      *out = e;
    }
  }
  freeReplyObject(r);
  return rc;
}
