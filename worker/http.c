/* The HTTP server behind /metrics and /healthz (see worker.h): one request
 * per connection, read under a size cap and a deadline, answered by the
 * handler, written without blocking, then closed. Everything runs on the
 * caller's libev loop; no call here ever blocks.
 *
 * A connection goes READING -> WRITING -> LINGERING -> closed. Lingering
 * is the half-close after the answer: our side is shut for writing and
 * whatever the client still sends is read and dropped until it closes, so
 * that unread request bytes do not make the kernel reset the connection
 * before the client has read the answer (a 431 or a 405 with a body). */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

/* Connections the kernel queues before they are accepted: far more than a
 * scraper and a health checker ever open at once. */
#define HTTP_BACKLOG 64
/* Open connections at once; a new one beyond this is closed at once, so a
 * flood costs bounded memory (a request buffer each). */
#define HTTP_CONN_MAX 64
/* Largest request head (request line and headers): a scraper sends a few
 * hundred bytes; 8 KiB is what common servers allow by default. */
#define HTTP_REQUEST_MAX (8 * 1024)
/* Seconds a client has from its connection to the end of the answer: a
 * slow or silent client is dropped instead of holding a slot. */
#define HTTP_TIMEOUT_S 5.0
/* Seconds to wait for the client's close after the answer: long enough
 * for its last bytes and our FIN to cross, short enough that a client
 * ignoring "Connection: close" frees its slot soon. */
#define HTTP_LINGER_S 2.0
/* Bytes dropped while lingering before giving up on a client that keeps
 * sending: a request body a scraper might send, with room to spare. */
#define HTTP_LINGER_MAX (64 * 1024)
/* Connections accepted per wake-up, so a burst cannot starve the other
 * watchers of the supervisor's loop. */
#define HTTP_ACCEPT_BATCH 16
/* Seconds accepting pauses when descriptors or memory run out: the
 * listener stays readable, so trying again at once would spin. */
#define HTTP_ACCEPT_PAUSE_S 0.1
/* Status line and headers of an answer: fixed fields, a three-digit
 * status, a short static content type and a length. */
#define HTTP_HEAD_MAX 512
/* Longest "HOST:PORT": an IPv4 literal and a port need 21 characters. */
#define HTTP_ADDR_MAX 64
#define HTTP_PORT_MAX 65535
/* Digits of a port: 65535. */
#define HTTP_PORT_DIGITS 5

#define HTTP_DEFAULT_TYPE "text/plain; charset=utf-8"

typedef enum conn_state { CONN_READING, CONN_WRITING, CONN_LINGERING } conn_state;

typedef struct http_conn {
  struct http_conn *prev, *next;
  http_server *srv;
  int fd;
  conn_state state;
  bool head_only;                  /* HEAD: the answer has no body */
  ev_io io;
  ev_timer timer;
  size_t in_len;                   /* bytes of req received */
  size_t drained;                  /* bytes dropped while lingering */
  char head[HTTP_HEAD_MAX];        /* the answer's status line and headers */
  size_t head_len;
  char *body;                      /* owned */
  size_t body_len;                 /* bytes of body to send */
  size_t sent;                     /* of head_len + body_len */
  char req[HTTP_REQUEST_MAX + 1];  /* + a terminator for parsing */
} http_conn;

struct http_server {
  struct ev_loop *loop;
  int fd;
  int port;
  ev_io accept_io;
  ev_timer accept_pause;
  http_handler fn;
  void *ctx;
  http_conn *conns;                /* open connections, a list */
  size_t nconns;
};

/* ---- connections ---- */

static void conn_close(http_conn *c) {
  http_server *s = c->srv;
  ev_io_stop(s->loop, &c->io);
  ev_timer_stop(s->loop, &c->timer);
  close(c->fd);
  if (c->prev != NULL) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  s->nconns--;
  free(c->body);
  free(c);
}

/* Makes the io watcher wait for events (EV_READ or EV_WRITE). */
static void conn_watch(http_conn *c, int events) {
  if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == events) return;
  ev_io_stop(c->srv->loop, &c->io);
  ev_io_set(&c->io, c->fd, events);
  ev_io_start(c->srv->loop, &c->io);
}

static void conn_restart_timer(http_conn *c, double seconds) {
  ev_timer_stop(c->srv->loop, &c->timer);
  ev_timer_set(&c->timer, seconds, 0.);
  ev_timer_start(c->srv->loop, &c->timer);
}

/* The answer is out: shut our side and wait for the client's close. */
static void conn_linger(http_conn *c) {
  free(c->body);
  c->body = NULL;
  c->state = CONN_LINGERING;
  c->drained = 0;
  if (shutdown(c->fd, SHUT_WR) != 0) {
    conn_close(c);
    return;
  }
  conn_watch(c, EV_READ);
  conn_restart_timer(c, HTTP_LINGER_S);
}

/* Drops what the client still sends; closes on its close, an error or
 * too many bytes. */
static void conn_drain(http_conn *c) {
  for (;;) {
    ssize_t n = recv(c->fd, c->req, HTTP_REQUEST_MAX, 0);
    if (n > 0) {
      c->drained += (size_t)n;
      if (c->drained <= HTTP_LINGER_MAX) continue;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    conn_close(c);
    return;
  }
}

/* Sends what remains of the answer; lingers once all of it is out. */
static void conn_flush(http_conn *c) {
  size_t total = c->head_len + c->body_len;
  while (c->sent < total) {
    struct iovec iov[2];
    int n = 0;
    if (c->sent < c->head_len) {
      iov[n++] = (struct iovec){c->head + c->sent, c->head_len - c->sent};
      if (c->body_len > 0) iov[n++] = (struct iovec){c->body, c->body_len};
    } else {
      size_t off = c->sent - c->head_len;
      iov[n++] = (struct iovec){c->body + off, c->body_len - off};
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (w >= 0) {
      c->sent += (size_t)w;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      conn_watch(c, EV_WRITE);
      return;
    } else if (errno != EINTR) {
      conn_close(c); /* the client went away */
      return;
    }
  }
  conn_linger(c);
}

static const char *status_reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 204: return "No Content";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return ""; /* the reason phrase may be empty */
  }
}

static void conn_fail(http_conn *c, int status);

/* Starts sending an answer; takes body (malloc'd, may be NULL). */
static void conn_answer(http_conn *c, int status, const char *type, char *body, size_t len) {
  const char *allow = status == 405 ? "Allow: GET, HEAD\r\n" : "";
  int n = snprintf(c->head, sizeof c->head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                   "Connection: close\r\n\r\n",
                   status, status_reason(status), type, len, allow);
  if (n < 0 || (size_t)n >= sizeof c->head || strpbrk(type, "\r\n") != NULL) {
    free(body);
    conn_fail(c, 500); /* a content type no client could parse */
    return;
  }
  ev_io_stop(c->srv->loop, &c->io);
  c->state = CONN_WRITING;
  c->head_len = (size_t)n;
  c->body = body;
  c->body_len = c->head_only ? 0 : len;
  c->sent = 0;
  conn_flush(c);
}

/* Answers with the server's own short text: the reason phrase. */
static void conn_fail(http_conn *c, int status) {
  const char *reason = status_reason(status);
  size_t len = strlen(reason);
  char *body = malloc(len + 1);
  if (body != NULL) {
    memcpy(body, reason, len);
    body[len++] = '\n';
  } else {
    len = 0;
  }
  conn_answer(c, status, HTTP_DEFAULT_TYPE, body, len);
}

/* ---- request parsing ---- */

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char ch) {
  if ((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'))
    return true;
  return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static size_t token_len(const char *s, const char *end) {
  size_t n = 0;
  while (s + n < end && is_tchar((unsigned char)s[n])) n++;
  return n;
}

/* "name: value" with a token name and no control characters but tabs. */
static bool header_ok(const char *line, const char *eol) {
  size_t n = token_len(line, eol);
  if (n == 0 || line + n == eol || line[n] != ':') return false;
  for (const char *p = line + n + 1; p < eol; p++) {
    unsigned char ch = (unsigned char)*p;
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return false;
  }
  return true;
}

/* The path of a request target: origin-form as is, absolute-form
 * ("http://host/path", which servers must accept) without scheme and
 * authority. NULL for any other form. */
static const char *target_path(const char *target) {
  if (target[0] == '/') return target;
  static const char scheme[] = "http://";
  if (strncasecmp(target, scheme, sizeof scheme - 1) != 0) return NULL;
  const char *slash = strchr(target + sizeof scheme - 1, '/');
  return slash != NULL ? slash : "/";
}

/* "HTTP/1.x": 0, another well-formed version: 505, anything else: 400. */
static int check_version(const char *v, const char *eol) {
  static const char prefix[] = "HTTP/";
  size_t plen = sizeof prefix - 1;
  if ((size_t)(eol - v) != plen + 3 || memcmp(v, prefix, plen) != 0) return 400;
  char major = v[plen], dot = v[plen + 1], minor = v[plen + 2];
  if (major < '0' || major > '9' || dot != '.' || minor < '0' || minor > '9') return 400;
  return major == '1' ? 0 : 505;
}

/* Parses "METHOD SP TARGET SP VERSION" in [line, eol); sets *get (GET or
 * HEAD) and *path (NUL-terminated in place, without the query). Returns 0
 * or an error status. */
static int parse_request_line(http_conn *c, char *line, char *eol, bool *get,
                              const char **path) {
  char *sp1 = memchr(line, ' ', (size_t)(eol - line));
  if (sp1 == NULL || sp1 == line || token_len(line, sp1) != (size_t)(sp1 - line)) return 400;
  char *target = sp1 + 1;
  char *sp2 = memchr(target, ' ', (size_t)(eol - target));
  if (sp2 == NULL || sp2 == target) return 400;
  for (const char *p = target; p < sp2; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return 400;
  int status = check_version(sp2 + 1, eol);
  if (status != 0) return status;
  *sp2 = '\0';
  char *query = strchr(target, '?');
  if (query != NULL) *query = '\0';
  *path = target_path(target);
  if (*path == NULL) return 400;
  size_t mlen = (size_t)(sp1 - line);
  c->head_only = mlen == 4 && memcmp(line, "HEAD", 4) == 0;
  *get = c->head_only || (mlen == 3 && memcmp(line, "GET", 3) == 0);
  return 0;
}

/* Parses the request head in c->req[0, len) (it ends with the last
 * header's CRLF). Returns 0 with *path, or an error status. */
static int parse_request(http_conn *c, size_t len, const char **path) {
  char *p = c->req, *end = c->req + len;
  if (memchr(p, '\0', len) != NULL) return 400;
  *end = '\0';
  char *eol = memmem(p, len, "\r\n", 2);
  bool get = false;
  int status = parse_request_line(c, p, eol, &get, path);
  if (status != 0) return status;
  for (p = eol + 2; p < end; p = eol + 2) {
    eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (!header_ok(p, eol)) return 400;
  }
  return get ? 0 : 405;
}

/* A whole request head arrived: answer it. */
static void conn_request(http_conn *c, size_t head_len) {
  const char *path = NULL;
  int status = parse_request(c, head_len, &path);
  if (status != 0) {
    conn_fail(c, status);
    return;
  }
  http_response out = {.status = 500, .content_type = NULL, .body = NULL, .len = 0};
  c->srv->fn(c->srv->ctx, path, &out);
  if (out.body == NULL) out.len = 0;
  if (out.status < 100 || out.status > 599) {
    free(out.body);
    conn_fail(c, 500);
    return;
  }
  const char *type = out.content_type != NULL ? out.content_type : HTTP_DEFAULT_TYPE;
  conn_answer(c, out.status, type, out.body, out.len);
}

/* Reads until the blank line that ends the head, the cap, or the close. */
static void conn_read(http_conn *c) {
  static const char blank[] = "\r\n\r\n";
  const size_t blen = sizeof blank - 1;
  for (;;) {
    size_t room = HTTP_REQUEST_MAX - c->in_len;
    if (room == 0) {
      conn_fail(c, 431);
      return;
    }
    ssize_t n = recv(c->fd, c->req + c->in_len, room, 0);
    if (n > 0) {
      size_t from = c->in_len >= blen - 1 ? c->in_len - (blen - 1) : 0;
      c->in_len += (size_t)n;
      const char *at = memmem(c->req + from, c->in_len - from, blank, blen);
      if (at != NULL) {
        conn_request(c, (size_t)(at - c->req) + 2);
        return;
      }
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      conn_close(c); /* closed or broken before a whole request */
      return;
    }
  }
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  http_conn *c = w->data;
  switch (c->state) {
  case CONN_READING: conn_read(c); break;
  case CONN_WRITING: conn_flush(c); break;
  case CONN_LINGERING: conn_drain(c); break;
  }
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  conn_close(w->data);
}

static void conn_open(http_server *s, int fd) {
  http_conn *c = s->nconns < HTTP_CONN_MAX ? calloc(1, sizeof *c) : NULL;
  if (c == NULL) {
    close(fd);
    return;
  }
  c->srv = s;
  c->fd = fd;
  c->state = CONN_READING;
  ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
  c->io.data = c;
  ev_timer_init(&c->timer, conn_timeout_cb, HTTP_TIMEOUT_S, 0.);
  c->timer.data = c;
  c->next = s->conns;
  if (s->conns != NULL) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  ev_io_start(s->loop, &c->io);
  ev_timer_start(s->loop, &c->timer);
}

/* ---- listening ---- */

static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  http_server *s = w->data;
  ev_io_start(loop, &s->accept_io);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
  http_server *s = w->data;
  for (int i = 0; i < HTTP_ACCEPT_BATCH; i++) {
    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      conn_open(s, fd);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      ev_io_stop(loop, &s->accept_io);
      ev_timer_set(&s->accept_pause, HTTP_ACCEPT_PAUSE_S, 0.);
      ev_timer_start(loop, &s->accept_pause);
      return;
    }
    /* EINTR, or a connection that failed before it was accepted: next. */
  }
}

/* Digits only, at most 65535. */
static bool parse_port(const char *s, uint16_t *port) {
  size_t n = strlen(s);
  if (n == 0 || n > HTTP_PORT_DIGITS) return false;
  unsigned long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  if (v > HTTP_PORT_MAX) return false;
  *port = (uint16_t)v;
  return true;
}

static bool parse_host(const char *host, struct in_addr *out) {
  if (host[0] == '\0') {
    out->s_addr = htonl(INADDR_ANY);
    return true;
  }
  if (strcmp(host, "localhost") == 0) {
    out->s_addr = htonl(INADDR_LOOPBACK);
    return true;
  }
  return inet_pton(AF_INET, host, out) == 1;
}

static int parse_addr(const char *addr, struct sockaddr_in *sa, char *err, size_t errlen) {
  if (addr == NULL || addr[0] == '\0') {
    celer_fmt(err, errlen, "HTTP address is missing (expected HOST:PORT)");
    return CELER_EINVAL;
  }
  if (strlen(addr) > HTTP_ADDR_MAX) {
    celer_fmt(err, errlen, "HTTP address is too long (at most %d characters)", HTTP_ADDR_MAX);
    return CELER_EINVAL;
  }
  char host[HTTP_ADDR_MAX + 1];
  snprintf(host, sizeof host, "%s", addr);
  char *colon = strrchr(host, ':');
  if (colon == NULL) {
    celer_fmt(err, errlen, "HTTP address \"%s\": expected HOST:PORT", addr);
    return CELER_EINVAL;
  }
  *colon = '\0';
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  uint16_t port = 0;
  if (!parse_port(colon + 1, &port)) {
    celer_fmt(err, errlen, "HTTP address \"%s\": bad port \"%s\" (expected 0 to %d)", addr,
              colon + 1, HTTP_PORT_MAX);
    return CELER_EINVAL;
  }
  sa->sin_port = htons(port);
  if (!parse_host(host, &sa->sin_addr)) {
    celer_fmt(err, errlen,
              "HTTP address \"%s\": bad host \"%s\" (expected an IPv4 address, localhost "
              "or nothing for all)",
              addr, host);
    return CELER_EINVAL;
  }
  return 0;
}

/* Opens the listening socket; returns it (and the bound port) or -1. */
static int listen_on(const char *addr, const struct sockaddr_in *sa, int *port, char *err,
                     size_t errlen) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    celer_fmt(err, errlen, "HTTP address \"%s\": socket failed: %s", addr, strerror(errno));
    return -1;
  }
  int one = 1;
  struct sockaddr_in bound;
  socklen_t blen = sizeof bound;
  const char *step = NULL;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) step = "setsockopt";
  else if (bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) step = "bind";
  else if (listen(fd, HTTP_BACKLOG) != 0) step = "listen";
  else if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) step = "getsockname";
  if (step != NULL) {
    int e = errno;
    if (e == EADDRINUSE)
      celer_fmt(err, errlen, "HTTP address \"%s\": address already in use", addr);
    else
      celer_fmt(err, errlen, "HTTP address \"%s\": %s failed: %s", addr, step, strerror(e));
    close(fd);
    return -1;
  }
  *port = ntohs(bound.sin_port);
  return fd;
}

int http_server_start(struct ev_loop *loop, const char *addr, http_handler fn, void *ctx,
                      http_server **out, char *err, size_t errlen) {
  *out = NULL;
  if (loop == NULL || fn == NULL) {
    celer_fmt(err, errlen, "HTTP server: no event loop or no handler");
    return CELER_EINVAL;
  }
  struct sockaddr_in sa;
  int rc = parse_addr(addr, &sa, err, errlen);
  if (rc != 0) return rc;
  http_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    celer_fmt(err, errlen, "HTTP server: out of memory");
    return CELER_ENOMEM;
  }
  s->fd = listen_on(addr, &sa, &s->port, err, errlen);
  if (s->fd < 0) {
    free(s);
    return CELER_EIO;
  }
  s->loop = loop;
  s->fn = fn;
  s->ctx = ctx;
  ev_io_init(&s->accept_io, accept_cb, s->fd, EV_READ);
  s->accept_io.data = s;
  ev_timer_init(&s->accept_pause, accept_resume_cb, HTTP_ACCEPT_PAUSE_S, 0.);
  s->accept_pause.data = s;
  ev_io_start(loop, &s->accept_io);
  *out = s;
  return 0;
}

int http_server_port(const http_server *s) {
  return s != NULL ? s->port : -1;
}

void http_server_stop(http_server *s) {
  if (s == NULL) return;
  while (s->conns != NULL) conn_close(s->conns);
  ev_io_stop(s->loop, &s->accept_io);
  ev_timer_stop(s->loop, &s->accept_pause);
  close(s->fd);
  free(s);
}
