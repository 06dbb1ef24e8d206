/* broker_conn: one synchronous hiredis connection with a deadline on every
 * request, authentication, database selection and reconnect-on-demand.
 * hiredis 0.14 marks a context dead after any I/O error or read timeout;
 * broker_ensure replaces such a context before the next request. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "broker/broker.h"
#include "broker/internal.h"

int broker_fail(broker_conn *b, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b->errstr, sizeof b->errstr, fmt, ap);
  va_end(ap);
  return code;
}

void broker_init(broker_conn *b, const broker_url *url, const char *ns, int timeout_ms) {
  memset(b, 0, sizeof *b);
  b->url = *url;
  snprintf(b->ns, sizeof b->ns, "%s", ns ? ns : CELER_DEFAULT_NAMESPACE);
  b->timeout_ms = timeout_ms > 0 ? timeout_ms : BROKER_DEFAULT_TIMEOUT_MS;
  b->max_payload = CELER_DEFAULT_MAX_PAYLOAD;
  b->dead_max = CELER_DEFAULT_DEAD_MAX;
  b->dead_ttl_ms = (int64_t)CELER_DEFAULT_DEAD_TTL_S * 1000;
}

void broker_close(broker_conn *b) {
  if (b->ctx) redisFree(b->ctx);
  b->ctx = NULL;
}

struct timeval broker_tv(int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  return tv;
}

int broker_set_timeout(broker_conn *b, int ms) {
  if (redisSetTimeout(b->ctx, broker_tv(ms)) != REDIS_OK)
    return broker_io_error(b, "cannot set the socket timeout");
  return 0;
}

int broker_io_error(broker_conn *b, const char *what) {
  char desc[BROKER_HOST_MAX + BROKER_SOCKET_PATH_MAX + 64];
  broker_url_describe(&b->url, desc, sizeof desc);
  int timed_out = b->ctx && b->ctx->err == REDIS_ERR_IO &&
                  (errno == EAGAIN || errno == EWOULDBLOCK);
  const char *detail = b->ctx && b->ctx->errstr[0] ? b->ctx->errstr : "connection lost";
  if (timed_out) {
    broker_fail(b, CELER_ETIMEDOUT, "%s: the broker at %s did not answer within %d ms",
                what, desc, b->timeout_ms);
  } else {
    broker_fail(b, CELER_ECONNECT, "%s: broker at %s: %s", what, desc, detail);
  }
  /* A context with err set is finished; drop it so the next call reconnects. */
  broker_close(b);
  return timed_out ? CELER_ETIMEDOUT : CELER_ECONNECT;
}

/* Commands up to this size are formatted on the stack; bigger ones (a
 * batch of records) take one allocation. */
#define APPEND_STACK_BYTES 4096

/* Writes n in decimal at p; returns the end. */
static char *put_count(char *p, size_t n) {
  char digits[24];
  int k = 0;
  do {
    digits[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n != 0);
  while (k > 0) *p++ = digits[--k];
  return p;
}

int broker_append(broker_conn *b, int argc, const char *const *argv, const size_t *argvlen) {
  /* The request in RESP, formatted here: hiredis's own formatter went
   * through sdscatfmt per argument, a quarter of a worker's instructions
   * per task at prefetch 1. */
  size_t total = 1 + 20 + 2;
  for (int i = 0; i < argc; i++)
    total += 1 + 20 + 2 + (argvlen ? argvlen[i] : strlen(argv[i])) + 2;
  char stack[APPEND_STACK_BYTES];
  char *buf = total <= sizeof stack ? stack : malloc(total);
  if (buf == NULL) return REDIS_ERR;
  char *p = buf;
  *p++ = '*';
  p = put_count(p, (size_t)argc);
  *p++ = '\r';
  *p++ = '\n';
  for (int i = 0; i < argc; i++) {
    size_t len = argvlen ? argvlen[i] : strlen(argv[i]);
    *p++ = '$';
    p = put_count(p, len);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, argv[i], len);
    p += len;
    *p++ = '\r';
    *p++ = '\n';
  }
  int rc = redisAppendFormattedCommand(b->ctx, buf, (size_t)(p - buf));
  if (buf != stack) free(buf);
  return rc;
}

/* Runs one command built from argv on the live connection; returns the
 * reply (caller frees) or NULL with errstr set and *code filled in. */
redisReply *broker_command(broker_conn *b, int *code, int argc, const char **argv,
                           const size_t *argvlen) {
  int rc = broker_ensure(b);
  if (rc != 0) {
    *code = rc;
    return NULL;
  }
  redisReply *r = NULL;
  if (broker_append(b, argc, argv, argvlen) != REDIS_OK) {
    broker_close(b);
    *code = broker_fail(b, CELER_ENOMEM, "out of memory building %s", argv[0]);
    return NULL;
  }
  if (redisGetReply(b->ctx, (void **)&r) != REDIS_OK || r == NULL) {
    *code = broker_io_error(b, argv[0]);
    return NULL;
  }
  *code = 0;
  return r;
}

static int authenticate(broker_conn *b) {
  if (b->url.password[0] == '\0') return 0;
  const char *argv[3] = {"AUTH", b->url.user, b->url.password};
  const char **args = argv;
  int argc = 3;
  if (b->url.user[0] == '\0') {
    argv[1] = b->url.password;
    argc = 2;
  }
  redisReply *r = redisCommandArgv(b->ctx, argc, args, NULL);
  if (r == NULL) return broker_io_error(b, "AUTH");
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    /* The server's text (WRONGPASS ...) never contains the password. */
    rc = broker_fail(b, CELER_EAUTH, "the broker refused authentication: %s", r->str);
  }
  freeReplyObject(r);
  return rc;
}

static int select_db(broker_conn *b) {
  if (b->url.db == 0) return 0;
  redisReply *r = redisCommand(b->ctx, "SELECT %d", b->url.db);
  if (r == NULL) return broker_io_error(b, "SELECT");
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR)
    rc = broker_fail(b, CELER_EAUTH, "the broker refused database %d: %s", b->url.db, r->str);
  freeReplyObject(r);
  return rc;
}

/* Fails fast on a server that needs a password we did not give, rather
 * than on the first real command with a NOAUTH error. */
static int check_access(broker_conn *b) {
  redisReply *r = redisCommand(b->ctx, "PING");
  if (r == NULL) return broker_io_error(b, "PING");
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    int code = strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "NOPERM", 6) == 0
                   ? CELER_EAUTH
                   : CELER_EPROTO;
    rc = broker_fail(b, code, "the broker refused PING: %s", r->str);
  }
  freeReplyObject(r);
  return rc;
}

int broker_connect(broker_conn *b) {
  broker_close(b);
  memset(b->scripts_sha, 0, sizeof b->scripts_sha);
  b->nregistered = 0;
  struct timeval tv = broker_tv(b->timeout_ms);
  char desc[BROKER_HOST_MAX + BROKER_SOCKET_PATH_MAX + 64];
  broker_url_describe(&b->url, desc, sizeof desc);
  redisContext *ctx = b->url.is_unix ? redisConnectUnixWithTimeout(b->url.path, tv)
                                     : redisConnectWithTimeout(b->url.host, b->url.port, tv);
  if (ctx == NULL) return broker_fail(b, CELER_ENOMEM, "out of memory connecting to %s", desc);
  if (ctx->err) {
    /* A connect that times out is still "unreachable" to the caller. */
    broker_fail(b, CELER_ECONNECT, "cannot reach the broker at %s: %s", desc, ctx->errstr);
    redisFree(ctx);
    return CELER_ECONNECT;
  }
  b->ctx = ctx;
  int rc;
  if ((rc = broker_set_timeout(b, b->timeout_ms)) != 0 || (rc = authenticate(b)) != 0 ||
      (rc = select_db(b)) != 0 || (rc = check_access(b)) != 0) {
    broker_close(b);
    return rc;
  }
  b->errstr[0] = '\0';
  return 0;
}

/* True when the server has closed or reset an idle connection (restart,
 * timeout, CLIENT KILL). Between two requests a request connection has
 * nothing to read, so readable (EOF, stray bytes), hang-up or error all
 * mean it cannot carry the next request. */
static bool peer_gone(const redisContext *ctx) {
  struct pollfd p = {.fd = ctx->fd, .events = POLLIN};
  int n;
  do {
    n = poll(&p, 1, 0);
  } while (n < 0 && errno == EINTR);
  return n != 0;
}

int broker_ensure(broker_conn *b) {
  /* One poll(2) per request: a connection the server closed between two
   * requests is replaced before it can fail the next one. */
  if (b->ctx && b->ctx->err == 0 && !peer_gone(b->ctx)) return 0;
  return broker_connect(b);
}
