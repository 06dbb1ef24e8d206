/* Pub/sub: waiting for a task's final state (done channels) and for news
 * of delayed tasks (wake channels). A subscribed connection does nothing
 * else, so callers give these functions a connection of their own. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "broker/internal.h"

int broker_subscribe_done(broker_conn *sub, const char *queue, const char *id) {
  char channel[BROKER_KEY_MAX + 1];
  broker_key(channel, sub->ns, queue, "done:", id);
  const char *argv[2] = {"SUBSCRIBE", channel};
  int code;
  redisReply *r = broker_command(sub, &code, 2, argv, NULL);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) rc = broker_reply_error(sub, r, "SUBSCRIBE");
  else if (r->type != REDIS_REPLY_ARRAY)
    rc = broker_fail(sub, CELER_EPROTO, "SUBSCRIBE: unexpected reply");
  freeReplyObject(r);
  return rc;
}

int broker_wait_message(broker_conn *sub, int64_t deadline_mono_ms) {
  if (sub->ctx == NULL || sub->ctx->err)
    return broker_fail(sub, CELER_ECONNECT, "the subscription was lost");
  for (;;) {
    int ms = 0; /* 0: no socket timeout, wait forever */
    if (deadline_mono_ms >= 0) {
      int64_t left = deadline_mono_ms - celer_mono_ms();
      if (left <= 0) {
        broker_close(sub);
        return broker_fail(sub, CELER_ETIMEDOUT, "timed out waiting for the result");
      }
      ms = left > INT32_MAX / 2 ? INT32_MAX / 2 : (int)left;
    }
    int rc = broker_set_timeout(sub, ms);
    if (rc != 0) return rc;
    redisReply *r = NULL;
    if (redisGetReply(sub->ctx, (void **)&r) != REDIS_OK || r == NULL) {
      rc = broker_io_error(sub, "waiting for the result");
      return rc == CELER_ETIMEDOUT
                 ? broker_fail(sub, CELER_ETIMEDOUT, "timed out waiting for the result")
                 : rc;
    }
    int is_message = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                     r->element[0]->type == REDIS_REPLY_STRING &&
                     strcmp(r->element[0]->str, "message") == 0;
    freeReplyObject(r);
    if (is_message) return 0;
  }
}

int broker_subscribe_wake(broker_conn *sub, const char *const *queues, size_t n) {
  /* SUBSCRIBE plus one channel per queue: the same bound as a fetch. */
  const char *argv[1 + 64];
  char channels[64][BROKER_KEY_MAX + 1];
  if (n == 0 || n > 64) return broker_fail(sub, CELER_EINVAL, "1 to 64 queues, not %zu", n);
  argv[0] = "SUBSCRIBE";
  for (size_t i = 0; i < n; i++) {
    broker_key(channels[i], sub->ns, queues[i], "wake", NULL);
    argv[1 + i] = channels[i];
  }
  int code;
  redisReply *r = broker_command(sub, &code, (int)n + 1, argv, NULL);
  if (r == NULL) return code;
  int rc = r->type == REDIS_REPLY_ERROR ? broker_reply_error(sub, r, "SUBSCRIBE") : 0;
  freeReplyObject(r);
  /* Each further channel confirms with a reply of its own. */
  for (size_t i = 1; rc == 0 && i < n; i++) {
    r = NULL;
    if (redisGetReply(sub->ctx, (void **)&r) != REDIS_OK || r == NULL)
      return broker_io_error(sub, "SUBSCRIBE");
    freeReplyObject(r);
  }
  return rc;
}

int broker_fd(const broker_conn *b) { return b->ctx && !b->ctx->err ? b->ctx->fd : -1; }

int broker_drain_messages(broker_conn *sub) {
  if (sub->ctx == NULL || sub->ctx->err)
    return broker_fail(sub, CELER_ECONNECT, "the subscription was lost");
  if (redisBufferRead(sub->ctx) != REDIS_OK) return broker_io_error(sub, "reading messages");
  int count = 0;
  for (;;) {
    redisReply *r = NULL;
    if (redisGetReplyFromReader(sub->ctx, (void **)&r) != REDIS_OK)
      return broker_io_error(sub, "reading messages");
    if (r == NULL) return count;
    freeReplyObject(r);
    count++;
  }
}

int broker_unsubscribe_done(broker_conn *sub, const char *queue, const char *id) {
  char channel[BROKER_KEY_MAX + 1];
  broker_key(channel, sub->ns, queue, "done:", id);
  const char *argv[2] = {"UNSUBSCRIBE", channel};
  if (sub->ctx == NULL || sub->ctx->err) return CELER_ECONNECT;
  int rc = broker_set_timeout(sub, sub->timeout_ms);
  if (rc != 0) return rc;
  if (broker_append(sub, 2, argv, NULL) != REDIS_OK)
    return broker_fail(sub, CELER_ENOMEM, "out of memory unsubscribing");
  for (;;) {
    redisReply *r = NULL;
    if (redisGetReply(sub->ctx, (void **)&r) != REDIS_OK || r == NULL)
      return broker_io_error(sub, "UNSUBSCRIBE");
    bool done = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                r->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(r->element[0]->str, "unsubscribe") == 0;
    bool error = r->type == REDIS_REPLY_ERROR;
    freeReplyObject(r);
    if (error) return broker_fail(sub, CELER_EPROTO, "UNSUBSCRIBE refused");
    if (done) return 0;
  }
}
