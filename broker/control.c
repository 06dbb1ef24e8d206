/* Operator controls on a queue: cancel, pause, the dead set, purge, and
 * the broker settings a worker must check before it trusts Redis. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/internal.h"

/* Ids checked for cancellation per ZMSCORE: a fetch batch fits easily. */
#define CANCELED_BATCH 1024

int broker_cancel(broker_conn *b, const char *queue, const char *task_id, const char *record,
                  size_t record_len, int64_t ttl_ms, char state_out[16], bool *changed) {
  char result[BROKER_KEY_MAX + 1], canceled[BROKER_KEY_MAX + 1], stats[BROKER_KEY_MAX + 1],
      channel[BROKER_KEY_MAX + 1], ttl[24];
  broker_key(result, b->ns, queue, "result:", task_id);
  broker_key(canceled, b->ns, queue, "canceled", NULL);
  broker_key(stats, b->ns, queue, "stats", NULL);
  broker_key(channel, b->ns, queue, "done:", task_id);
  snprintf(ttl, sizeof ttl, "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 1));
  const char *argv[7] = {result, canceled, stats, record, ttl, channel, task_id};
  size_t len[7];
  for (int i = 0; i < 7; i++) len[i] = strlen(argv[i]);
  len[3] = record_len;
  int code;
  redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_CANCEL, 3, argv, len, 7);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
      r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_INTEGER) {
    snprintf(state_out, 16, "%.*s", (int)r->element[0]->len, r->element[0]->str);
    *changed = r->element[1]->integer == 1;
  } else {
    rc = broker_fail(b, CELER_EPROTO, "the cancel script returned an unexpected reply");
  }
  freeReplyObject(r);
  return rc;
}

int broker_canceled(broker_conn *b, const char *queue, const char *const *ids, size_t n,
                    bool *canceled) {
  char key[BROKER_KEY_MAX + 1];
  const char *argv[2 + CANCELED_BATCH];
  broker_key(key, b->ns, queue, "canceled", NULL);
  for (size_t done = 0; done < n;) {
    size_t k = n - done > CANCELED_BATCH ? CANCELED_BATCH : n - done;
    argv[0] = "ZMSCORE";
    argv[1] = key;
    for (size_t i = 0; i < k; i++) argv[2 + i] = ids[done + i];
    int code;
    redisReply *r = broker_command(b, &code, (int)k + 2, argv, NULL);
    if (r == NULL) return code;
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) rc = broker_reply_error(b, r, "ZMSCORE");
    else if (r->type != REDIS_REPLY_ARRAY || r->elements != k)
      rc = broker_fail(b, CELER_EPROTO, "ZMSCORE: unexpected reply");
    for (size_t i = 0; rc == 0 && i < k; i++)
      canceled[done + i] = r->element[i]->type != REDIS_REPLY_NIL;
    freeReplyObject(r);
    if (rc != 0) return rc;
    done += k;
  }
  return 0;
}

int broker_paused(broker_conn *b, const char *const *queues, size_t n, bool *paused) {
  int rc = broker_ensure(b);
  if (rc != 0) return rc;
  for (size_t i = 0; i < n; i++) {
    char key[BROKER_KEY_MAX + 1];
    broker_key(key, b->ns, queues[i], "paused", NULL);
    const char *argv[2] = {"EXISTS", key};
    if (broker_append(b, 2, argv, NULL) != REDIS_OK) {
      broker_close(b);
      return broker_fail(b, CELER_ENOMEM, "out of memory checking pause flags");
    }
  }
  for (size_t i = 0; i < n; i++) {
    redisReply *r = NULL;
    if (redisGetReply(b->ctx, (void **)&r) != REDIS_OK || r == NULL)
      return broker_io_error(b, "EXISTS");
    if (r->type == REDIS_REPLY_INTEGER) paused[i] = r->integer == 1;
    else if (rc == 0) rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(b, r, "EXISTS")
                                                        : broker_fail(b, CELER_EPROTO, "EXISTS: unexpected reply");
    freeReplyObject(r);
  }
  return rc;
}

int broker_register_queue(broker_conn *b, const char *queue) {
  char key[BROKER_KEY_MAX + 1];
  broker_queues_key(key, b->ns);
  const char *argv[3] = {"SADD", key, queue};
  int code;
  redisReply *r = broker_command(b, &code, 3, argv, NULL);
  if (r == NULL) return code;
  int rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(b, r, "SADD") : 0;
  freeReplyObject(r);
  return rc;
}

int broker_set_paused(broker_conn *b, const char *queue, bool paused) {
  char key[BROKER_KEY_MAX + 1];
  broker_key(key, b->ns, queue, "paused", NULL);
  const char *set[3] = {"SET", key, "1"}, *del[2] = {"DEL", key};
  int code;
  redisReply *r = paused ? broker_command(b, &code, 3, set, NULL)
                         : broker_command(b, &code, 2, del, NULL);
  if (r == NULL) return code;
  int rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(b, r, paused ? "SET" : "DEL") : 0;
  freeReplyObject(r);
  return rc;
}

int broker_dead_list(broker_conn *b, const char *queue, int64_t offset, int64_t limit,
                     char ***ids, char ***entries, int64_t **dead_at, size_t *n,
                     int64_t *total) {
  char dead[BROKER_KEY_MAX + 1], hash[BROKER_KEY_MAX + 1], from[24], to[24];
  broker_key(dead, b->ns, queue, "dead", NULL);
  broker_key(hash, b->ns, queue, "dead:entries", NULL);
  snprintf(from, sizeof from, "%lld", (long long)offset);
  snprintf(to, sizeof to, "%lld", (long long)(offset + limit - 1));
  *ids = *entries = NULL;
  *dead_at = NULL;
  *n = 0;
  int code;
  const char *card[2] = {"ZCARD", dead};
  redisReply *r = broker_command(b, &code, 2, card, NULL);
  if (r == NULL) return code;
  if (r->type != REDIS_REPLY_INTEGER) {
    int rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(b, r, "ZCARD")
                                          : broker_fail(b, CELER_EPROTO, "ZCARD: unexpected reply");
    freeReplyObject(r);
    return rc;
  }
  *total = r->integer;
  freeReplyObject(r);
  if (limit <= 0) return 0;
  const char *range[6] = {"ZRANGE", dead, from, to, "REV", "WITHSCORES"};
  if ((r = broker_command(b, &code, 6, range, NULL)) == NULL) return code;
  if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
    int rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(b, r, "ZRANGE")
                                          : broker_fail(b, CELER_EPROTO, "ZRANGE: unexpected reply");
    freeReplyObject(r);
    return rc;
  }
  size_t k = r->elements / 2;
  if (k == 0) {
    freeReplyObject(r);
    return 0;
  }
  char **idv = calloc(k, sizeof *idv), **ev = calloc(k, sizeof *ev);
  int64_t *at = calloc(k, sizeof *at);
  const char **hmget = calloc(k + 2, sizeof *hmget);
  int rc = idv && ev && at && hmget ? 0 : broker_fail(b, CELER_ENOMEM, "out of memory");
  for (size_t i = 0; rc == 0 && i < k; i++) {
    redisReply *id = r->element[2 * i], *score = r->element[2 * i + 1];
    if ((idv[i] = broker_copy_bytes(id->str, id->len)) == NULL)
      rc = broker_fail(b, CELER_ENOMEM, "out of memory");
    at[i] = score->str ? strtoll(score->str, NULL, 10) : 0;
  }
  freeReplyObject(r);
  if (rc == 0) {
    hmget[0] = "HMGET";
    hmget[1] = hash;
    for (size_t i = 0; i < k; i++) hmget[2 + i] = idv[i];
    if ((r = broker_command(b, &code, (int)k + 2, hmget, NULL)) == NULL) {
      rc = code;
    } else {
      if (r->type != REDIS_REPLY_ARRAY || r->elements != k)
        rc = broker_fail(b, CELER_EPROTO, "HMGET: unexpected reply");
      for (size_t i = 0; rc == 0 && i < k; i++) {
        redisReply *v = r->element[i];
        if (v->type == REDIS_REPLY_STRING && (ev[i] = broker_copy_bytes(v->str, v->len)) == NULL)
          rc = broker_fail(b, CELER_ENOMEM, "out of memory");
      }
      freeReplyObject(r);
    }
  }
  free(hmget);
  if (rc != 0) {
    broker_names_free(idv, k);
    broker_names_free(ev, k);
    free(at);
    return rc;
  }
  *ids = idv;
  *entries = ev;
  *dead_at = at;
  *n = k;
  return 0;
}

/* Reads a reply of n integers into out. Frees r. */
static int integers_reply(broker_conn *b, redisReply *r, const char *script, int64_t *out,
                          size_t n) {
  int rc = 0;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
    rc = broker_fail(b, CELER_EPROTO, "the %s script returned an unexpected reply", script);
  } else {
    for (size_t i = 0; i < n; i++) out[i] = r->element[i]->integer;
  }
  freeReplyObject(r);
  return rc;
}

int broker_dead_retry(broker_conn *b, const char *queue, const char *task_id, int batch,
                      int64_t offset, int64_t *cutoff, int64_t *moved, int64_t *skipped,
                      int64_t *left) {
  char dead[BROKER_KEY_MAX + 1], hash[BROKER_KEY_MAX + 1], stream[BROKER_KEY_MAX + 1],
      prefix[BROKER_KEY_MAX + 1], bs[16], off[24], cut[24] = "";
  broker_key(dead, b->ns, queue, "dead", NULL);
  broker_key(hash, b->ns, queue, "dead:entries", NULL);
  broker_key(stream, b->ns, queue, "stream", NULL);
  broker_key(prefix, b->ns, queue, "result:", NULL);
  snprintf(bs, sizeof bs, "%d", batch > 0 ? batch : 1);
  snprintf(off, sizeof off, "%lld", (long long)offset);
  if (*cutoff > 0) snprintf(cut, sizeof cut, "%lld", (long long)*cutoff);
  const char *argv[8] = {dead, hash, stream, task_id ? task_id : "", bs, off, prefix, cut};
  int code;
  redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_DEAD_RETRY, 3, argv, NULL, 8);
  if (r == NULL) return code;
  int64_t v[4];
  int rc = integers_reply(b, r, "dead_retry", v, 4);
  if (rc == 0) {
    *moved = v[0];
    *skipped = v[1];
    *left = v[2];
    *cutoff = v[3];
  }
  return rc;
}

int broker_purge(broker_conn *b, const char *queue, const char *parts, int batch,
                 int64_t counts[3], bool *done) {
  char stream[BROKER_KEY_MAX + 1], sched[BROKER_KEY_MAX + 1], dead[BROKER_KEY_MAX + 1],
      hash[BROKER_KEY_MAX + 1], bs[16];
  broker_key(stream, b->ns, queue, "stream", NULL);
  broker_key(sched, b->ns, queue, "scheduled", NULL);
  broker_key(dead, b->ns, queue, "dead", NULL);
  broker_key(hash, b->ns, queue, "dead:entries", NULL);
  snprintf(bs, sizeof bs, "%d", batch > 0 ? batch : 1);
  const char *argv[7] = {stream, sched, dead, hash, parts, BROKER_GROUP, bs};
  int code;
  redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_PURGE, 4, argv, NULL, 7);
  if (r == NULL) return code;
  int64_t v[4];
  int rc = integers_reply(b, r, "purge", v, 4);
  if (rc == 0) {
    memcpy(counts, v, 3 * sizeof *counts);
    *done = v[3] == 1;
  }
  return rc;
}

int broker_eviction(broker_conn *b, char *policy, size_t size, int64_t *maxmemory) {
  const char *argv[4] = {"CONFIG", "GET", "maxmemory-policy", "maxmemory"};
  int code;
  /* CONFIG GET takes several patterns since Redis 7.0. */
  redisReply *r = broker_command(b, &code, 4, argv, NULL);
  if (r == NULL) return code;
  int rc = 0;
  policy[0] = '\0';
  *maxmemory = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    rc = broker_reply_error(b, r, "CONFIG GET");
    if (rc == CELER_EPROTO) rc = CELER_EAUTH; /* renamed or disabled CONFIG */
  } else if (r->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
      redisReply *k = r->element[i], *v = r->element[i + 1];
      if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
      if (strcmp(k->str, "maxmemory-policy") == 0) snprintf(policy, size, "%s", v->str);
      else if (strcmp(k->str, "maxmemory") == 0) *maxmemory = strtoll(v->str, NULL, 10);
    }
  }
  freeReplyObject(r);
  return rc;
}

/* Runs n commands in one round trip. On 0 every replies[i] is set (the
 * caller frees each with freeReplyObject; error replies included). */
static int pipeline(broker_conn *b, const char *what, size_t n, const char *const argv[][5],
                    const int *argc, redisReply **replies) {
  int rc = broker_ensure(b);
  if (rc != 0) return rc;
  for (size_t i = 0; i < n; i++) {
    if (broker_append(b, argc[i], (const char **)argv[i], NULL) != REDIS_OK) {
      broker_close(b);
      return broker_fail(b, CELER_ENOMEM, "out of memory building %s", what);
    }
  }
  for (size_t i = 0; i < n; i++) {
    replies[i] = NULL;
    if (redisGetReply(b->ctx, (void **)&replies[i]) != REDIS_OK || replies[i] == NULL) {
      for (size_t j = 0; j < i; j++) freeReplyObject(replies[j]);
      return broker_io_error(b, what);
    }
  }
  return 0;
}

/* Frees n replies; returns the first error reply as an error code. */
static int free_replies(broker_conn *b, const char *what, redisReply **replies, size_t n) {
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    if (replies[i]->type == REDIS_REPLY_ERROR && rc == 0)
      rc = broker_reply_error(b, replies[i], what);
    freeReplyObject(replies[i]);
  }
  return rc;
}

int broker_heartbeat(broker_conn *b, const char *name, const char *entry, size_t len) {
  char workers[BROKER_KEY_MAX + 1], seen[BROKER_KEY_MAX + 1], now[24];
  snprintf(workers, sizeof workers, "%s:workers", b->ns);
  snprintf(seen, sizeof seen, "%s:workers:seen", b->ns);
  snprintf(now, sizeof now, "%lld", (long long)celer_now_ms());
  (void)len; /* the entry is JSON text: NUL-terminated */
  const char *argv[2][5] = {{"HSET", workers, name, entry, NULL}, {"ZADD", seen, now, name, NULL}};
  const int argc[2] = {4, 4};
  redisReply *r[2];
  int rc = pipeline(b, "heartbeat", 2, argv, argc, r);
  return rc ? rc : free_replies(b, "heartbeat", r, 2);
}

int broker_unregister_worker(broker_conn *b, const char *name) {
  char workers[BROKER_KEY_MAX + 1], seen[BROKER_KEY_MAX + 1];
  snprintf(workers, sizeof workers, "%s:workers", b->ns);
  snprintf(seen, sizeof seen, "%s:workers:seen", b->ns);
  const char *argv[2][5] = {{"HDEL", workers, name, NULL, NULL}, {"ZREM", seen, name, NULL, NULL}};
  const int argc[2] = {3, 3};
  redisReply *r[2];
  int rc = pipeline(b, "leaving the registry", 2, argv, argc, r);
  return rc ? rc : free_replies(b, "leaving the registry", r, 2);
}

int broker_queue_depths(broker_conn *b, const char *queue, int64_t out[4]) {
  char stream[BROKER_KEY_MAX + 1], sched[BROKER_KEY_MAX + 1], dead[BROKER_KEY_MAX + 1];
  broker_key(stream, b->ns, queue, "stream", NULL);
  broker_key(sched, b->ns, queue, "scheduled", NULL);
  broker_key(dead, b->ns, queue, "dead", NULL);
  /* XPENDING needs the group: EXISTS first would be another round trip,
   * so a missing group (no worker yet) reads as nothing active. */
  const char *argv[4][5] = {{"XLEN", stream, NULL, NULL, NULL},
                            {"ZCARD", sched, NULL, NULL, NULL},
                            {"ZCARD", dead, NULL, NULL, NULL},
                            {"XPENDING", stream, BROKER_GROUP, NULL, NULL}};
  const int argc[4] = {2, 2, 2, 3};
  redisReply *r[4];
  int rc = pipeline(b, "queue depths", 4, argv, argc, r);
  if (rc != 0) return rc;
  int64_t len = r[0]->type == REDIS_REPLY_INTEGER ? r[0]->integer : 0;
  int64_t active = r[3]->type == REDIS_REPLY_ARRAY && r[3]->elements >= 1 &&
                           r[3]->element[0]->type == REDIS_REPLY_INTEGER
                       ? r[3]->element[0]->integer
                       : 0;
  out[0] = len - active > 0 ? len - active : 0;
  out[1] = active;
  out[2] = r[1]->type == REDIS_REPLY_INTEGER ? r[1]->integer : 0;
  out[3] = r[2]->type == REDIS_REPLY_INTEGER ? r[2]->integer : 0;
  /* A missing group (no worker yet) only means nothing is active. */
  if (r[3]->type == REDIS_REPLY_ERROR) {
    freeReplyObject(r[3]);
    r[3] = NULL;
  }
  return free_replies(b, "queue depths", r, r[3] ? 4 : 3);
}

int broker_prune_workers(broker_conn *b, int64_t before) {
  char workers[BROKER_KEY_MAX + 1], seen[BROKER_KEY_MAX + 1], max[24];
  snprintf(workers, sizeof workers, "%s:workers", b->ns);
  snprintf(seen, sizeof seen, "%s:workers:seen", b->ns);
  snprintf(max, sizeof max, "(%lld", (long long)before);
  const char *range[4] = {"ZRANGEBYSCORE", seen, "-inf", max};
  int code;
  redisReply *r = broker_command(b, &code, 4, range, NULL);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; rc == 0 && i < r->elements; i++)
      if (r->element[i]->type == REDIS_REPLY_STRING)
        rc = broker_unregister_worker(b, r->element[i]->str);
  } else if (r->type == REDIS_REPLY_ERROR) {
    rc = broker_reply_error(b, r, "ZRANGEBYSCORE");
  }
  freeReplyObject(r);
  return rc;
}
