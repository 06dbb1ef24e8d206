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
    if (broker_append(b, 4, argv, len) != REDIS_OK ||
        broker_append(b, 3, pub, NULL) != REDIS_OK)
      return -1;
    return 2;
  }
  broker_key(key, b->ns, p->queue, "stream", NULL);
  const char *argv[5] = {"XADD", key, "*", "task", p->envelope};
  size_t len[5] = {4, strlen(key), 1, 4, p->len};
  return broker_append(b, 5, argv, len) == REDIS_OK ? 1 : -1;
}

static int append_register(broker_conn *b, const char *queue) {
  char key[BROKER_KEY_MAX + 1];
  broker_queues_key(key, b->ns);
  const char *argv[3] = {"SADD", key, queue};
  return broker_append(b, 3, argv, NULL);
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
    size_t n = id->len < sizeof e->entry_id ? id->len : sizeof e->entry_id - 1;
    memcpy(e->entry_id, id->str, n);
    e->entry_id[n] = '\0';
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

/* One fetch: the XREADGROUP argument vector and, when the caller wants to
 * know which queues have cancellation marks, their canceled-set keys. */
typedef struct fetch_call {
  char keys[FETCH_QUEUES_MAX][BROKER_KEY_MAX + 1];
  char marks[FETCH_QUEUES_MAX][BROKER_KEY_MAX + 1];
  const char *argv[9 + 2 * FETCH_QUEUES_MAX];
  char countbuf[16], blockbuf[16];
  int argc, block_ms;
  size_t nqueues;
  bool *has_marks;            /* caller's; NULL = not asked */
} fetch_call;

static int fetch_build(broker_conn *b, const char *const *queues, size_t nqueues,
                       const char *consumer, int count, int block_ms, bool *has_marks,
                       fetch_call *f) {
  if (nqueues == 0 || nqueues > FETCH_QUEUES_MAX)
    return broker_fail(b, CELER_EINVAL, "a worker reads 1 to %d queues, not %zu",
                       FETCH_QUEUES_MAX, nqueues);
  f->nqueues = nqueues;
  f->block_ms = block_ms;
  f->has_marks = has_marks;
  int argc = 0;
  f->argv[argc++] = "XREADGROUP";
  f->argv[argc++] = "GROUP";
  f->argv[argc++] = BROKER_GROUP;
  f->argv[argc++] = consumer;
  snprintf(f->countbuf, sizeof f->countbuf, "%d", count > 0 ? count : 1);
  f->argv[argc++] = "COUNT";
  f->argv[argc++] = f->countbuf;
  if (block_ms > 0) {
    snprintf(f->blockbuf, sizeof f->blockbuf, "%d", block_ms);
    f->argv[argc++] = "BLOCK";
    f->argv[argc++] = f->blockbuf;
  }
  f->argv[argc++] = "STREAMS";
  for (size_t q = 0; q < nqueues; q++) {
    broker_key(f->keys[q], b->ns, queues[q], "stream", NULL);
    if (has_marks) broker_key(f->marks[q], b->ns, queues[q], "canceled", NULL);
    f->argv[argc++] = f->keys[q];
  }
  for (size_t q = 0; q < nqueues; q++) f->argv[argc++] = ">";
  f->argc = argc;
  return 0;
}

/* True when the socket's deadline must be widened to outlast the block; it
 * usually does already, and then two system calls per fetch are saved. */
static bool fetch_widens(const broker_conn *b, const fetch_call *f) {
  return f->block_ms > 0 && f->block_ms + BROKER_BLOCK_GRACE_MS > b->timeout_ms;
}

/* Appends XREADGROUP and, when marks are asked for, one EXISTS per queue's
 * canceled set, to the live connection's output. The server runs the
 * EXISTS only once the read has its entries (a blocked client's next
 * commands wait), so the answer covers every cancellation made before the
 * entries were taken. */
static int fetch_append(broker_conn *b, const fetch_call *f) {
  bool built = broker_append(b, f->argc, f->argv, NULL) == REDIS_OK;
  for (size_t q = 0; built && f->has_marks && q < f->nqueues; q++) {
    const char *ex[2] = {"EXISTS", f->marks[q]};
    built = broker_append(b, 2, ex, NULL) == REDIS_OK;
  }
  if (built) return 0;
  broker_close(b);
  return broker_fail(b, CELER_ENOMEM, "out of memory building XREADGROUP");
}

/* Reads what fetch_append asked for: the XREADGROUP reply (caller frees),
 * with f->has_marks filled, or NULL with *code set (the connection is then
 * closed). */
static redisReply *fetch_read(broker_conn *b, fetch_call *f, int *code) {
  redisReply *r = NULL;
  if (redisGetReply(b->ctx, (void **)&r) != REDIS_OK || r == NULL) {
    *code = broker_io_error(b, "XREADGROUP");
    return NULL;
  }
  for (size_t q = 0; f->has_marks && q < f->nqueues; q++) {
    redisReply *e = NULL;
    if (redisGetReply(b->ctx, (void **)&e) != REDIS_OK || e == NULL) {
      freeReplyObject(r);
      *code = broker_io_error(b, "EXISTS");
      return NULL;
    }
    /* Anything but a clear "no marks" means: check each id. */
    f->has_marks[q] = !(e->type == REDIS_REPLY_INTEGER && e->integer == 0);
    freeReplyObject(e);
  }
  *code = 0;
  return r;
}

/* Turns the XREADGROUP reply into entries (and frees it). Returns 0,
 * an error, or 1 when the group is missing (NOGROUP). */
static int fetch_finish(broker_conn *b, fetch_call *f, redisReply *r,
                        broker_entry **out, size_t *n) {
  int rc;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOGROUP", 7) == 0) {
    rc = 1;
  } else if (r->type == REDIS_REPLY_ERROR) {
    rc = broker_reply_error(b, r, "XREADGROUP");
  } else {
    rc = parse_fetch(b, r, f->keys, f->nqueues, out, n);
  }
  freeReplyObject(r);
  return rc;
}

int broker_fetch(broker_conn *b, const char *const *queues, size_t nqueues,
                 const char *consumer, int count, int block_ms, broker_entry **out,
                 size_t *n, bool *has_marks) {
  fetch_call f;
  *out = NULL;
  *n = 0;
  int rc = fetch_build(b, queues, nqueues, consumer, count, block_ms, has_marks, &f);
  if (rc != 0) return rc;
  for (int attempt = 0; attempt < 2; attempt++) {
    if ((rc = broker_ensure(b)) != 0) return rc;
    bool widen = fetch_widens(b, &f);
    if (widen && (rc = broker_set_timeout(b, block_ms + BROKER_BLOCK_GRACE_MS)) != 0) return rc;
    if ((rc = fetch_append(b, &f)) != 0) return rc;
    redisReply *r = fetch_read(b, &f, &rc);
    if (r == NULL) return rc;
    if (widen && (rc = broker_set_timeout(b, b->timeout_ms)) != 0) {
      freeReplyObject(r);
      return rc;
    }
    rc = fetch_finish(b, &f, r, out, n);
    if (rc != 1) return rc;
    /* The stream or its group is gone (first start, or a purge): make them
     * again at ID 0 so nothing already in the stream is skipped. */
    for (size_t q = 0; q < nqueues; q++)
      if ((rc = broker_ensure_group(b, queues[q])) != 0) return rc;
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
 * argument vector stays bounded (scripts.c: SCRIPT_ARGC_MAX). */
#define COMPLETE_BATCH 200
#define COMPLETE_KEYS 5        /* stream, stats, dead, dead entries, rate */
#define COMPLETE_FIXED_ARGS 11 /* the keys + 6 arguments before the items */
#define COMPLETE_ITEM_ARGS 6   /* arguments per task */

/* The follow-ups of one completion as complete.lua reads them: a JSON
 * array of [stream key, scheduled key, wake channel, queues key, queue,
 * eta ms, envelope] (malloc'd; caller frees), or NULL when out of memory. */
static char *encode_followups(const broker_conn *b, const broker_completion *c, size_t *len) {
  json_t *all = json_array();
  char stream[BROKER_KEY_MAX + 1], sched[BROKER_KEY_MAX + 1], wake[BROKER_KEY_MAX + 1],
      queues[BROKER_KEY_MAX + 1];
  broker_queues_key(queues, b->ns);
  for (size_t i = 0; all && i < c->nfollowups; i++) {
    const broker_push *f = &c->followups[i];
    broker_key(stream, b->ns, f->queue, "stream", NULL);
    broker_key(sched, b->ns, f->queue, "scheduled", NULL);
    broker_key(wake, b->ns, f->queue, "wake", NULL);
    json_t *item = json_pack("[sssssIs%]", stream, sched, wake, queues, f->queue,
                             (json_int_t)f->eta_ms, f->envelope, f->len);
    if (item == NULL || json_array_append_new(all, item) != 0) {
      json_decref(all);
      all = NULL;
    }
  }
  char *out = all ? json_dumps(all, JSON_COMPACT) : NULL;
  json_decref(all);
  if (out) *len = strlen(out);
  return out;
}

/* One complete.lua call for up to COMPLETE_BATCH tasks of one queue: its
 * argument vector, which borrows from the completions and owns the
 * encoded follow-ups (complete_release frees them). */
typedef struct complete_call {
  char stream[BROKER_KEY_MAX + 1], stats[BROKER_KEY_MAX + 1], dead[BROKER_KEY_MAX + 1],
      entries[BROKER_KEY_MAX + 1], rate[BROKER_KEY_MAX + 1], results[BROKER_KEY_MAX + 1],
      done[BROKER_KEY_MAX + 1], ttl[24], dead_max[24], dead_age[24];
  const char *argv[COMPLETE_FIXED_ARGS + COMPLETE_ITEM_ARGS * COMPLETE_BATCH];
  size_t len[COMPLETE_FIXED_ARGS + COMPLETE_ITEM_ARGS * COMPLETE_BATCH];
  char *followups[COMPLETE_BATCH];
  size_t k;
  int argc;
} complete_call;

static void complete_release(complete_call *cc) {
  for (size_t i = 0; i < cc->k; i++) free(cc->followups[i]);
  cc->k = 0;
}

/* Builds the call for c[0..k), k <= COMPLETE_BATCH, all of c[0].queue. */
static int complete_build(broker_conn *b, const broker_completion *c, size_t k,
                          complete_call *cc) {
  const char *queue = c[0].queue;
  broker_key(cc->stream, b->ns, queue, "stream", NULL);
  broker_key(cc->stats, b->ns, queue, "stats", NULL);
  broker_key(cc->dead, b->ns, queue, "dead", NULL);
  broker_key(cc->entries, b->ns, queue, "dead:entries", NULL);
  broker_key(cc->rate, b->ns, queue, "rate", NULL);
  broker_key(cc->results, b->ns, queue, "result:", NULL);
  broker_key(cc->done, b->ns, queue, "done:", NULL);
  snprintf(cc->ttl, sizeof cc->ttl, "%lld", (long long)(c[0].ttl_ms > 0 ? c[0].ttl_ms : 1));
  snprintf(cc->dead_max, sizeof cc->dead_max, "%lld", (long long)b->dead_max);
  snprintf(cc->dead_age, sizeof cc->dead_age, "%lld", (long long)b->dead_ttl_ms);
  const char *fixed[COMPLETE_FIXED_ARGS] = {cc->stream,   cc->stats, cc->dead,     cc->entries,
                                            cc->rate,     BROKER_GROUP, cc->ttl,   cc->dead_max,
                                            cc->dead_age, cc->results,  cc->done};
  int argc = 0;
  for (; argc < COMPLETE_FIXED_ARGS; argc++) {
    cc->argv[argc] = fixed[argc];
    cc->len[argc] = strlen(fixed[argc]);
  }
  cc->k = 0;
  for (size_t i = 0; i < k; i++) {
    const broker_completion *it = &c[i];
    size_t flen = 0;
    cc->followups[i] = it->nfollowups ? encode_followups(b, it, &flen) : NULL;
    cc->k = i + 1;
    if (it->nfollowups && cc->followups[i] == NULL) {
      complete_release(cc);
      return broker_fail(b, CELER_ENOMEM, "out of memory encoding follow-ups");
    }
    const char *item[COMPLETE_ITEM_ARGS] = {
        it->entry_id ? it->entry_id : "", it->task_id, it->record, celer_state_name(it->state),
        it->dead_entry ? it->dead_entry : "", cc->followups[i] ? cc->followups[i] : ""};
    size_t ilen[COMPLETE_ITEM_ARGS] = {strlen(item[0]), strlen(item[1]), it->record_len,
                                       strlen(item[3]), it->dead_entry ? it->dead_len : 0,
                                       flen};
    for (int j = 0; j < COMPLETE_ITEM_ARGS; j++) {
      cc->argv[argc] = item[j];
      cc->len[argc++] = ilen[j];
    }
  }
  cc->argc = argc;
  return 0;
}

/* Reads complete.lua's answer for k tasks into outcomes (and frees r). */
static int complete_outcomes(broker_conn *b, redisReply *r, size_t k, int *outcomes) {
  int rc = 0;
  if (r->type != REDIS_REPLY_ARRAY || r->elements != k) {
    rc = broker_fail(b, CELER_EPROTO, "the complete script returned an unexpected reply");
  } else {
    for (size_t i = 0; i < k; i++) outcomes[i] = (int)r->element[i]->integer;
  }
  freeReplyObject(r);
  return rc;
}

int broker_complete(broker_conn *b, const broker_completion *c, size_t n, int *outcomes) {
  complete_call cc;
  for (size_t done_n = 0; done_n < n;) {
    size_t k = n - done_n > COMPLETE_BATCH ? COMPLETE_BATCH : n - done_n;
    int code = complete_build(b, c + done_n, k, &cc);
    if (code != 0) return code;
    redisReply *r =
        broker_eval(b, &code, BROKER_SCRIPT_COMPLETE, COMPLETE_KEYS, cc.argv, cc.len, cc.argc);
    complete_release(&cc);
    if (r == NULL) return code;
    if ((code = complete_outcomes(b, r, k, outcomes + done_n)) != 0) return code;
    done_n += k;
  }
  return 0;
}

int broker_complete_fetch(broker_conn *b, const broker_completion *c, size_t n, int *outcomes,
                          const char *const *queues, size_t nqueues, const char *consumer,
                          int count, int block_ms, broker_entry **out, size_t *nout,
                          bool *has_marks) {
  *out = NULL;
  *nout = 0;
  if (n == 0 || n > COMPLETE_BATCH) {
    int rc = broker_complete(b, c, n, outcomes);
    return rc ? rc : broker_fetch(b, queues, nqueues, consumer, count, block_ms, out, nout,
                                  has_marks);
  }
  /* The read that rides with the script does not block: a server that had
   * lost the script must not make the outcomes wait out a block. Only when
   * it finds nothing does a blocking read follow. */
  fetch_call f;
  complete_call cc;
  int rc = fetch_build(b, queues, nqueues, consumer, count, 0, has_marks, &f);
  if (rc == 0) rc = complete_build(b, c, n, &cc);
  if (rc != 0) return rc;
  rc = broker_eval_append(b, BROKER_SCRIPT_COMPLETE, COMPLETE_KEYS, cc.argv, cc.len, cc.argc);
  complete_release(&cc);
  if (rc != 0) return rc;
  /* Nothing may come between the two appends: no broker_ensure. */
  if ((rc = fetch_append(b, &f)) != 0) return rc;
  bool noscript = false;
  redisReply *cr = broker_eval_reply(b, &rc, BROKER_SCRIPT_COMPLETE, &noscript);
  if (cr == NULL && !noscript) {
    /* An error reply leaves the fetch's answers on the wire: drop the
     * connection (entries it took stay pending and come back by lease). */
    broker_close(b);
    return rc;
  }
  redisReply *fr = fetch_read(b, &f, &rc);
  if (fr == NULL) {
    if (cr) freeReplyObject(cr);
    return rc;
  }
  /* A server that had lost the script recorded nothing: load it, run again. */
  rc = cr ? complete_outcomes(b, cr, n, outcomes) : broker_complete(b, c, n, outcomes);
  if (rc != 0) {
    freeReplyObject(fr);
    return rc;
  }
  rc = fetch_finish(b, &f, fr, out, nout);
  if (rc == 1 || (rc == 0 && *nout == 0))
    return broker_fetch(b, queues, nqueues, consumer, count, block_ms, out, nout, has_marks);
  return rc;
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

