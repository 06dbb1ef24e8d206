/* The queue operations: enqueue, fetch, complete, promote, records and
 * waiting for a result. Each state change is one Lua script (scripts.c) or
 * one idempotent command; this file builds keys and arguments and turns
 * replies into plain C values, so no hiredis type leaves broker/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/internal.h"

/* Most distinct queues one enqueue batch registers individually; a batch
 * spread over more queues registers each name once per item instead. */
#define ENQUEUE_DISTINCT_QUEUES 16

int broker_reply_error(broker_conn *b, redisReply *r, const char *what) {
  int code = strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "NOPERM", 6) == 0
                 ? CELER_EAUTH
                 : CELER_EPROTO;
  return broker_fail(b, code, "%s: the broker answered: %s", what, r->str);
}

int broker_ping(broker_conn *b) {
  const char *argv[1] = {"PING"};
  int code;
  redisReply *r = broker_command(b, &code, 1, argv, NULL);
  if (r == NULL) return code;
  int rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(b, r, "PING") : 0;
  freeReplyObject(r);
  return rc;
}

/* Appends the commands of one push; returns how many replies they bring
 * (XADD; or ZADD and a PUBLISH on the queue's wake channel, so that
 * schedulers asleep until a later due time look again), or -1. */
static int append_push(broker_conn *b, const broker_push *p, int64_t now_ms) {
  char key[BROKER_KEY_MAX + 1];
  if (p->eta_ms > now_ms) {
    char score[24], channel[BROKER_KEY_MAX + 1];
    snprintf(score, sizeof score, "%lld", (long long)p->eta_ms);
    broker_key(key, b->ns, p->queue, "scheduled", NULL);
    broker_key(channel, b->ns, p->queue, "wake", NULL);
    const char *argv[4] = {"ZADD", key, score, p->envelope};
    size_t len[4] = {4, strlen(key), strlen(score), p->len};
    const char *pub[3] = {"PUBLISH", channel, score};
    if (redisAppendCommandArgv(b->ctx, 4, argv, len) != REDIS_OK ||
        redisAppendCommandArgv(b->ctx, 3, pub, NULL) != REDIS_OK)
      return -1;
    return 2;
  }
  broker_key(key, b->ns, p->queue, "stream", NULL);
  const char *argv[5] = {"XADD", key, "*", "task", p->envelope};
  size_t len[5] = {4, strlen(key), 1, 4, p->len};
  return redisAppendCommandArgv(b->ctx, 5, argv, len) == REDIS_OK ? 1 : -1;
}

static int append_register(broker_conn *b, const char *queue) {
  char key[BROKER_KEY_MAX + 1];
  broker_queues_key(key, b->ns);
  const char *argv[3] = {"SADD", key, queue};
  return redisAppendCommandArgv(b->ctx, 3, argv, NULL);
}

/* Marks every push whose status is still pending (1) with code. */
static void fail_pending(broker_push *pushes, size_t n, int code) {
  for (size_t i = 0; i < n; i++)
    if (pushes[i].status == 1) pushes[i].status = code;
}

static bool known_queue(const broker_conn *b, const char *queue) {
  for (size_t i = 0; i < b->nregistered; i++)
    if (strcmp(b->registered[i], queue) == 0) return true;
  return false;
}

static void remember_queue(broker_conn *b, const char *queue) {
  if (b->nregistered < BROKER_REGISTERED_MAX && !known_queue(b, queue))
    snprintf(b->registered[b->nregistered++], CELER_QUEUE_NAME_MAX + 1, "%s", queue);
}

/* True when push i is the first of its queue in the batch (or the batch
 * spans too many queues to track), so it is preceded by a SADD. */
static bool first_of_queue(const broker_push *pushes, size_t i) {
  size_t distinct = 0;
  for (size_t j = 0; j < i; j++) {
    if (strcmp(pushes[j].queue, pushes[i].queue) == 0) return false;
    if (++distinct >= ENQUEUE_DISTINCT_QUEUES) return true;
  }
  return true;
}

int broker_enqueue(broker_conn *b, broker_push *pushes, size_t n) {
  /* Per push: its SADD (when first of its queue) and its own replies. */
  unsigned char *registers = calloc(n ? n : 1, 1), *replies = calloc(n ? n : 1, 1);
  if (registers == NULL || replies == NULL) {
    free(registers);
    free(replies);
    for (size_t i = 0; i < n; i++) pushes[i].status = CELER_ENOMEM;
    return broker_fail(b, CELER_ENOMEM, "out of memory building the enqueue pipeline");
  }
  int rc = broker_ensure(b);
  for (size_t i = 0; i < n; i++) pushes[i].status = rc ? rc : 1;
  int64_t now = celer_now_ms();
  for (size_t i = 0; rc == 0 && i < n; i++) {
    registers[i] = !known_queue(b, pushes[i].queue) && first_of_queue(pushes, i);
    int k = -1;
    if ((registers[i] && append_register(b, pushes[i].queue) != REDIS_OK) ||
        (k = append_push(b, &pushes[i], now)) < 0) {
      /* The context's output buffer is in an unknown state: start over. */
      broker_close(b);
      fail_pending(pushes, n, CELER_ENOMEM);
      rc = broker_fail(b, CELER_ENOMEM, "out of memory building the enqueue pipeline");
    }
    replies[i] = (unsigned char)(k + registers[i]);
  }
  /* Replies come back in the order the commands were appended. */
  for (size_t i = 0; rc == 0 && i < n; i++) {
    for (size_t k = 0; k < replies[i]; k++) {
      redisReply *r = NULL;
      if (redisGetReply(b->ctx, (void **)&r) != REDIS_OK || r == NULL) {
        /* Redis may or may not have run what is left: say so plainly. */
        int code = broker_io_error(b, "enqueue");
        fail_pending(pushes, n, code);
        rc = code;
        break;
      }
      if (r->type == REDIS_REPLY_ERROR && pushes[i].status == 1)
        pushes[i].status = broker_reply_error(b, r, "enqueue");
      freeReplyObject(r);
    }
    if (pushes[i].status == 1) pushes[i].status = 0;
  }
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (registers[i] && pushes[i].status == 0) remember_queue(b, pushes[i].queue);
  free(registers);
  free(replies);
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (pushes[i].status != 0) rc = pushes[i].status;
  return rc;
}

int broker_ensure_group(broker_conn *b, const char *queue) {
  char key[BROKER_KEY_MAX + 1], qkey[BROKER_KEY_MAX + 1];
  broker_key(key, b->ns, queue, "stream", NULL);
  broker_queues_key(qkey, b->ns);
  const char *argv[6] = {"XGROUP", "CREATE", key, BROKER_GROUP, "0", "MKSTREAM"};
  int code;
  redisReply *r = broker_command(b, &code, 6, argv, NULL);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
    rc = broker_reply_error(b, r, "XGROUP CREATE");
  freeReplyObject(r);
  if (rc != 0) return rc;
  const char *sadd[3] = {"SADD", qkey, queue};
  r = broker_command(b, &code, 3, sadd, NULL);
  if (r == NULL) return code;
  if (r->type == REDIS_REPLY_ERROR) rc = broker_reply_error(b, r, "SADD");
  freeReplyObject(r);
  return rc;
}

void broker_entries_free(broker_entry *entries, size_t n) {
  if (entries == NULL) return;
  for (size_t i = 0; i < n; i++) {
    free(entries[i].payload);
    free(entries[i].problem);
  }
  free(entries);
}

char *broker_copy_bytes(const char *s, size_t len) {
  char *p = malloc(len + 1);
  if (p) {
    memcpy(p, s, len);
    p[len] = '\0';
  }
  return p;
}

bool broker_parse_count(const char *s, size_t len, int64_t *out) {
  char buf[24];
  int64_t v;
  if (len >= sizeof buf) return false;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (celer_parse_i64(buf, &v) != 0) return false;
  *out = v;
  return true;
}

/* Fills e from one [id, [field, value, ...]] element of an XREADGROUP
 * reply. Returns CELER_ENOMEM or 0; shape problems land in e->problem. */
int broker_parse_entry(redisReply *item, broker_entry *e) {
  const char *problem = NULL;
  if (item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
      item->element[0]->type != REDIS_REPLY_STRING) {
    problem = "the stream entry has an unexpected shape";
  } else {
    redisReply *id = item->element[0], *fields = item->element[1];
    snprintf(e->entry_id, sizeof e->entry_id, "%.*s", (int)id->len, id->str);
    if (fields->type != REDIS_REPLY_ARRAY) {
      problem = "the stream entry has no fields (deleted while pending)";
    } else {
      for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        redisReply *name = fields->element[f], *value = fields->element[f + 1];
        if (name->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING) continue;
        if (name->len == 4 && memcmp(name->str, "task", 4) == 0 && e->payload == NULL) {
          if ((e->payload = broker_copy_bytes(value->str, value->len)) == NULL) return CELER_ENOMEM;
          e->payload_len = value->len;
        } else if (name->len == 8 && memcmp(name->str, "promoted", 8) == 0) {
          e->promoted = value->len == 1 && value->str[0] == '1';
        } else if (name->len == 7 && memcmp(name->str, "attempt", 7) == 0) {
          e->has_attempt = broker_parse_count(value->str, value->len, &e->attempt);
        } else if (name->len == 12 && memcmp(name->str, "redeliveries", 12) == 0) {
          broker_parse_count(value->str, value->len, &e->redeliveries);
        }
      }
      if (e->payload == NULL) problem = "the stream entry has no `task` field";
    }
  }
  if (problem && (e->problem = broker_copy_bytes(problem, strlen(problem))) == NULL)
    return CELER_ENOMEM;
  return 0;
}

static int parse_fetch(broker_conn *b, redisReply *r, char keys[][BROKER_KEY_MAX + 1],
                       size_t nqueues, broker_entry **out, size_t *n) {
  size_t total = 0;
  if (r->type == REDIS_REPLY_NIL) return 0;
  if (r->type != REDIS_REPLY_ARRAY)
    return broker_fail(b, CELER_EPROTO, "XREADGROUP: unexpected reply type %d", r->type);
  for (size_t i = 0; i < r->elements; i++) {
    redisReply *s = r->element[i];
    if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
        s->element[1]->type == REDIS_REPLY_ARRAY)
      total += s->element[1]->elements;
  }
  if (total == 0) return 0;
  broker_entry *entries = calloc(total, sizeof *entries);
  if (entries == NULL) return broker_fail(b, CELER_ENOMEM, "out of memory reading tasks");
  size_t k = 0;
  for (size_t i = 0; i < r->elements; i++) {
    redisReply *s = r->element[i];
    if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
        s->element[0]->type != REDIS_REPLY_STRING || s->element[1]->type != REDIS_REPLY_ARRAY)
      continue;
    size_t qi = nqueues;
    for (size_t q = 0; q < nqueues; q++)
      if (strlen(keys[q]) == s->element[0]->len &&
          memcmp(keys[q], s->element[0]->str, s->element[0]->len) == 0)
        qi = q;
    if (qi == nqueues) continue;
    for (size_t j = 0; j < s->element[1]->elements; j++) {
      entries[k].queue_index = qi;
      if (broker_parse_entry(s->element[1]->element[j], &entries[k]) != 0) {
        broker_entries_free(entries, k + 1);
        return broker_fail(b, CELER_ENOMEM, "out of memory reading tasks");
      }
      k++;
    }
  }
  *out = entries;
  *n = k;
  return 0;
}

/* Most queues one worker reads; the XREADGROUP argument vector is sized by
 * it. A worker serving more queues is a configuration error. */
#define FETCH_QUEUES_MAX 64

int broker_fetch(broker_conn *b, const char *const *queues, size_t nqueues,
                 const char *consumer, int count, int block_ms, broker_entry **out,
                 size_t *n) {
  char keys[FETCH_QUEUES_MAX][BROKER_KEY_MAX + 1];
  const char *argv[9 + 2 * FETCH_QUEUES_MAX];
  char countbuf[16], blockbuf[16];
  *out = NULL;
  *n = 0;
  if (nqueues == 0 || nqueues > FETCH_QUEUES_MAX)
    return broker_fail(b, CELER_EINVAL, "a worker reads 1 to %d queues, not %zu",
                       FETCH_QUEUES_MAX, nqueues);
  int argc = 0;
  argv[argc++] = "XREADGROUP";
  argv[argc++] = "GROUP";
  argv[argc++] = BROKER_GROUP;
  argv[argc++] = consumer;
  snprintf(countbuf, sizeof countbuf, "%d", count > 0 ? count : 1);
  argv[argc++] = "COUNT";
  argv[argc++] = countbuf;
  if (block_ms > 0) {
    snprintf(blockbuf, sizeof blockbuf, "%d", block_ms);
    argv[argc++] = "BLOCK";
    argv[argc++] = blockbuf;
  }
  argv[argc++] = "STREAMS";
  for (size_t q = 0; q < nqueues; q++) {
    broker_key(keys[q], b->ns, queues[q], "stream", NULL);
    argv[argc++] = keys[q];
  }
  for (size_t q = 0; q < nqueues; q++) argv[argc++] = ">";

  for (int attempt = 0; attempt < 2; attempt++) {
    int rc = broker_ensure(b);
    if (rc != 0) return rc;
    /* The socket's deadline must outlast the block; it usually does
     * already, and then the two system calls per fetch are saved. */
    bool widen = block_ms > 0 && block_ms + BROKER_BLOCK_GRACE_MS > b->timeout_ms;
    if (widen && (rc = broker_set_timeout(b, block_ms + BROKER_BLOCK_GRACE_MS)) != 0) return rc;
    int code;
    redisReply *r = broker_command(b, &code, argc, argv, NULL);
    if (r == NULL) return code;
    if (widen && (rc = broker_set_timeout(b, b->timeout_ms)) != 0) {
      freeReplyObject(r);
      return rc;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0 && attempt == 0) {
      /* The stream or its group is gone (first start, or a purge): make them
       * again at ID 0 so nothing already in the stream is skipped. */
      freeReplyObject(r);
      for (size_t q = 0; q < nqueues; q++)
        if ((rc = broker_ensure_group(b, queues[q])) != 0) return rc;
      continue;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      rc = broker_reply_error(b, r, "XREADGROUP");
      freeReplyObject(r);
      return rc;
    }
    rc = parse_fetch(b, r, keys, nqueues, out, n);
    freeReplyObject(r);
    return rc;
  }
  return broker_fail(b, CELER_EPROTO, "XREADGROUP: the consumer group keeps disappearing");
}

/* Reads an integer script reply into *outcome. */
int broker_integer_reply(broker_conn *b, redisReply *r, const char *script, int *outcome) {
  int rc = 0;
  if (r->type == REDIS_REPLY_INTEGER)
    *outcome = (int)r->integer;
  else
    rc = broker_fail(b, CELER_EPROTO, "the %s script returned type %d", script, r->type);
  freeReplyObject(r);
  return rc;
}

/* Tasks recorded per complete.lua call: a prefetch batch fits, and the
 * argument vector stays bounded. */
#define COMPLETE_BATCH 200
#define COMPLETE_FIXED_ARGS 10 /* 4 keys + 6 arguments before the items */

int broker_complete(broker_conn *b, const broker_completion *c, size_t n, int *outcomes) {
  char stream[BROKER_KEY_MAX + 1], stats[BROKER_KEY_MAX + 1], dead[BROKER_KEY_MAX + 1],
      entries[BROKER_KEY_MAX + 1], results[BROKER_KEY_MAX + 1], done[BROKER_KEY_MAX + 1],
      ttl[24], dead_max[24], dead_age[24];
  const char *argv[COMPLETE_FIXED_ARGS + 5 * COMPLETE_BATCH];
  size_t len[COMPLETE_FIXED_ARGS + 5 * COMPLETE_BATCH];
  if (n == 0) return 0;
  const char *queue = c[0].queue;
  broker_key(stream, b->ns, queue, "stream", NULL);
  broker_key(stats, b->ns, queue, "stats", NULL);
  broker_key(dead, b->ns, queue, "dead", NULL);
  broker_key(entries, b->ns, queue, "dead:entries", NULL);
  broker_key(results, b->ns, queue, "result:", NULL);
  broker_key(done, b->ns, queue, "done:", NULL);
  snprintf(ttl, sizeof ttl, "%lld", (long long)(c[0].ttl_ms > 0 ? c[0].ttl_ms : 1));
  snprintf(dead_max, sizeof dead_max, "%lld", (long long)b->dead_max);
  snprintf(dead_age, sizeof dead_age, "%lld", (long long)b->dead_ttl_ms);
  for (size_t done_n = 0; done_n < n;) {
    size_t k = n - done_n > COMPLETE_BATCH ? COMPLETE_BATCH : n - done_n;
    const char *fixed[COMPLETE_FIXED_ARGS] = {stream, stats, dead,     entries,  BROKER_GROUP,
                                              ttl,    dead_max, dead_age, results, done};
    int argc = 0;
    for (; argc < COMPLETE_FIXED_ARGS; argc++) {
      argv[argc] = fixed[argc];
      len[argc] = strlen(fixed[argc]);
    }
    for (size_t i = 0; i < k; i++) {
      const broker_completion *it = &c[done_n + i];
      const char *item[5] = {it->entry_id ? it->entry_id : "", it->task_id, it->record,
                             celer_state_name(it->state), it->dead_entry ? it->dead_entry : ""};
      size_t ilen[5] = {strlen(item[0]), strlen(item[1]), it->record_len, strlen(item[3]),
                        it->dead_entry ? it->dead_len : 0};
      for (int j = 0; j < 5; j++) {
        argv[argc] = item[j];
        len[argc++] = ilen[j];
      }
    }
    int code;
    redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_COMPLETE, 4, argv, len, argc);
    if (r == NULL) return code;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != k) {
      rc = broker_fail(b, CELER_EPROTO, "the complete script returned an unexpected reply");
    } else {
      for (size_t i = 0; i < k; i++) outcomes[done_n + i] = (int)r->element[i]->integer;
    }
    freeReplyObject(r);
    if (rc != 0) return rc;
    done_n += k;
  }
  return 0;
}

int broker_reschedule(broker_conn *b, const broker_reschedule_req *q, int *outcome) {
  char stream[BROKER_KEY_MAX + 1], sched[BROKER_KEY_MAX + 1], result[BROKER_KEY_MAX + 1],
      stats[BROKER_KEY_MAX + 1], wake[BROKER_KEY_MAX + 1], due[24], ttl[24];
  broker_key(stream, b->ns, q->queue, "stream", NULL);
  broker_key(sched, b->ns, q->queue, "scheduled", NULL);
  broker_key(wake, b->ns, q->queue, "wake", NULL);
  broker_key(result, b->ns, q->queue, "result:", q->task_id);
  broker_key(stats, b->ns, q->queue, "stats", NULL);
  snprintf(due, sizeof due, "%lld", (long long)q->due_ms);
  snprintf(ttl, sizeof ttl, "%lld", (long long)(q->ttl_ms > 0 ? q->ttl_ms : 1));
  const char *argv[13] = {stream,   sched, result, stats, BROKER_GROUP, q->entry_id, q->consumer,
                          q->envelope, due, q->park ? "park" : "retry",
                          q->record ? q->record : "", ttl, wake};
  size_t len[13];
  for (int i = 0; i < 13; i++) len[i] = strlen(argv[i]);
  len[7] = q->envelope_len;
  len[10] = q->record ? q->record_len : 0;
  int code;
  redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_RESCHEDULE, 4, argv, len, 13);
  if (r == NULL) return code;
  int rc = broker_integer_reply(b, r, "reschedule", outcome);
  /* The script speaks 1 / 0 (not parked) / -1 (duplicate) / -2 (stale). */
  if (rc == 0) {
    switch (*outcome) {
      case 1: *outcome = BROKER_RECORDED; break;
      case 0: *outcome = BROKER_NOT_PARKED; break;
      case -1: *outcome = BROKER_DUPLICATE; break;
      default: *outcome = BROKER_STALE; break;
    }
  }
  return rc;
}

int broker_promote(broker_conn *b, const char *queue, int max, int *moved,
                   int64_t *next_due_ms, int64_t *now_ms) {
  char sched[BROKER_KEY_MAX + 1], stream[BROKER_KEY_MAX + 1], maxbuf[16];
  broker_key(sched, b->ns, queue, "scheduled", NULL);
  broker_key(stream, b->ns, queue, "stream", NULL);
  snprintf(maxbuf, sizeof maxbuf, "%d", max > 0 ? max : 1);
  const char *argv[3] = {sched, stream, maxbuf};
  int code;
  redisReply *r = broker_eval(b, &code, BROKER_SCRIPT_PROMOTE, 2, argv, NULL, 3);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
      r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_INTEGER &&
      r->element[2]->type == REDIS_REPLY_INTEGER) {
    if (moved) *moved = (int)r->element[0]->integer;
    if (next_due_ms) *next_due_ms = r->element[1]->integer;
    if (now_ms) *now_ms = r->element[2]->integer;
  } else {
    rc = broker_fail(b, CELER_EPROTO, "the promote script returned an unexpected reply");
  }
  freeReplyObject(r);
  return rc;
}

int broker_get_record(broker_conn *b, const char *queue, const char *id, char **json,
                      size_t *len) {
  char key[BROKER_KEY_MAX + 1];
  broker_key(key, b->ns, queue, "result:", id);
  const char *argv[2] = {"GET", key};
  int code;
  redisReply *r = broker_command(b, &code, 2, argv, NULL);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_NIL) {
    rc = broker_fail(b, CELER_ENOTFOUND, "no record for task %s in queue %s", id, queue);
  } else if (r->type == REDIS_REPLY_STRING) {
    if ((*json = broker_copy_bytes(r->str, r->len)) == NULL)
      rc = broker_fail(b, CELER_ENOMEM, "out of memory reading a record");
    else if (len)
      *len = r->len;
  } else if (r->type == REDIS_REPLY_ERROR) {
    rc = broker_reply_error(b, r, "GET");
  } else {
    rc = broker_fail(b, CELER_EPROTO, "the record of task %s is not a string", id);
  }
  freeReplyObject(r);
  return rc;
}

void broker_names_free(char **names, size_t n) {
  if (names == NULL) return;
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

int broker_list_queues(broker_conn *b, char ***names, size_t *n) {
  char key[BROKER_KEY_MAX + 1];
  broker_queues_key(key, b->ns);
  const char *argv[2] = {"SMEMBERS", key};
  int code;
  *names = NULL;
  *n = 0;
  redisReply *r = broker_command(b, &code, 2, argv, NULL);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    rc = broker_reply_error(b, r, "SMEMBERS");
  } else if (r->type != REDIS_REPLY_ARRAY) {
    rc = broker_fail(b, CELER_EPROTO, "SMEMBERS: unexpected reply");
  } else if (r->elements > 0) {
    char **list = calloc(r->elements, sizeof *list);
    size_t k = 0;
    if (list == NULL) rc = CELER_ENOMEM;
    for (size_t i = 0; list && i < r->elements; i++) {
      redisReply *e = r->element[i];
      /* Skip names a foreign writer put there that we could never use. */
      if (e->type != REDIS_REPLY_STRING || e->len > CELER_QUEUE_NAME_MAX) continue;
      if ((list[k] = broker_copy_bytes(e->str, e->len)) == NULL) {
        broker_names_free(list, k);
        list = NULL;
        rc = CELER_ENOMEM;
        break;
      }
      if (!celer_valid_queue_name(list[k])) {
        free(list[k]);
        continue;
      }
      k++;
    }
    if (rc == CELER_ENOMEM) {
      broker_fail(b, rc, "out of memory listing queues");
    } else {
      *names = list;
      *n = k;
    }
  }
  freeReplyObject(r);
  return rc;
}

