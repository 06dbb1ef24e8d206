/* The loopback HTTP server of httpd.h: one thread, poll() on the listening
 * socket and a wake pipe, one request per connection. */
#include "harness/httpd.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A client that does not finish its request within this is dropped. */
#define HTTPD_READ_TIMEOUT_MS 5000
/* Connections held open by "never answer" replies. */
#define HTTPD_HELD_MAX 64

struct httpd {
  int lfd, port, wake[2];
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  httpd_decide_fn decide;
  void *arg;
  httpd_reply *script;          /* owned array; strings borrowed */
  size_t nscript, next;
  httpd_request reqs[HTTPD_RECORD_MAX];
  size_t nreq;                  /* requests seen (may exceed the record) */
  int held[HTTPD_HELD_MAX];
  size_t nheld;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is readable (or the server is stopping) until deadline.
 * 1 readable, 0 timeout or stop. */
static int wait_readable(httpd *h, int fd, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - mono_ms();
    if (left <= 0) return 0;
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = h->wake[0], .events = POLLIN}};
    int n = poll(p, 2, (int)left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || (p[1].revents & POLLIN)) return 0;
    return 1;
  }
}

/* Sleeps ms, waking early when the server stops. */
static void pause_ms(httpd *h, int ms) {
  struct pollfd p = {.fd = h->wake[0], .events = POLLIN};
  poll(&p, 1, ms);
}

/* Copies the value of header name in block (the request line, then
 * header lines) into out; false when there is none. */
static bool header_value(const char *block, const char *name, char *out, size_t size) {
  size_t n = strlen(name);
  const char *line = strstr(block, "\r\n");
  while (line) {
    line += 2;
    const char *end = strstr(line, "\r\n");
    if (end == NULL || end == line) return false;
    if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
      const char *v = line + n + 1;
      while (*v == ' ' || *v == '\t') v++;
      size_t len = (size_t)(end - v);
      if (len >= size) len = size - 1;
      memcpy(out, v, len);
      out[len] = '\0';
      return true;
    }
    line = end;
  }
  return false;
}

/* Reads one request from fd into req. 0, or -1 (dropped). */
static int read_request(httpd *h, int fd, httpd_request *req) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap + 1);
  int64_t deadline = mono_ms() + HTTPD_READ_TIMEOUT_MS;
  size_t head = 0, want = 0;
  memset(req, 0, sizeof *req);
  while (buf) {
    if (head && len >= want) break;
    if (len == cap) {
      if (cap >= HTTPD_REQUEST_MAX) break;
      char *grown = realloc(buf, cap * 2 + 1);
      if (grown == NULL) break;
      buf = grown;
      cap *= 2;
    }
    if (!wait_readable(h, fd, deadline)) break;
    ssize_t n = recv(fd, buf + len, cap - len, 0);
    if (n <= 0) break;
    len += (size_t)n;
    buf[len] = '\0';
    if (head == 0) {
      char *end = strstr(buf, "\r\n\r\n");
      if (end == NULL) continue;
      head = (size_t)(end - buf) + 4;
      char cl[32] = "0";
      header_value(buf, "Content-Length", cl, sizeof cl);
      want = head + (size_t)strtoull(cl, NULL, 10);
      if (want > HTTPD_REQUEST_MAX) break;
    }
  }
  if (buf == NULL || head == 0 || len < want) {
    free(buf);
    return -1;
  }
  sscanf(buf, "%15s %1023s", req->method, req->path);
  req->headers = strndup(buf, head);
  req->body = strndup(buf + head, want - head);
  req->body_len = want - head;
  req->at_ms = mono_ms();
  if (req->headers) header_value(req->headers, "Idempotency-Key", req->idempotency_key,
                                 sizeof req->idempotency_key);
  free(buf);
  return req->headers && req->body ? 0 : -1;
}

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 408: return "Request Timeout";
  case 429: return "Too Many Requests";
  case 500: return "Internal Server Error";
  case 503: return "Service Unavailable";
  default: return "Status";
  }
}

static bool send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

static void respond(int fd, const httpd_reply *r) {
  size_t size = r->body ? strlen(r->body) : r->body_size;
  char head[4096];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n"
                   "Connection: close\r\n%s\r\n",
                   r->status, reason(r->status), size, r->headers ? r->headers : "");
  if (n < 0 || (size_t)n >= sizeof head || !send_all(fd, head, (size_t)n)) return;
  if (r->body) {
    send_all(fd, r->body, size);
    return;
  }
  static char filler[65536];
  if (filler[0] == 0) memset(filler, 'x', sizeof filler);
  while (size > 0) {
    size_t k = size < sizeof filler ? size : sizeof filler;
    if (!send_all(fd, filler, k)) return;
    size -= k;
  }
}

static httpd_reply decide(httpd *h, const httpd_request *req, size_t n) {
  httpd_reply r = {.status = 200};
  pthread_mutex_lock(&h->mu);
  httpd_decide_fn fn = h->decide;
  if (fn == NULL && h->nscript > 0) {
    r = h->script[h->next < h->nscript ? h->next : h->nscript - 1];
    h->next++;
  }
  pthread_mutex_unlock(&h->mu);
  return fn ? fn(h->arg, req, n) : r;
}

static void serve(httpd *h, int fd) {
  httpd_request req;
  if (read_request(h, fd, &req) != 0) {
    close(fd);
    return;
  }
  pthread_mutex_lock(&h->mu);
  size_t n = h->nreq;
  pthread_mutex_unlock(&h->mu);
  httpd_reply r = decide(h, &req, n);
  req.status = r.status;
  pthread_mutex_lock(&h->mu);
  if (h->nreq < HTTPD_RECORD_MAX) {
    h->reqs[h->nreq] = req;
  } else {
    httpd_request_free(&req);
  }
  h->nreq++;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  if (r.delay_ms > 0) pause_ms(h, r.delay_ms);
  if (r.status == 0 && h->nheld < HTTPD_HELD_MAX) {
    h->held[h->nheld++] = fd;
    return;
  }
  respond(fd, &r);
  shutdown(fd, SHUT_WR);
  close(fd);
}

static void *run(void *arg) {
  httpd *h = arg;
  for (;;) {
    struct pollfd p[2] = {{.fd = h->lfd, .events = POLLIN}, {.fd = h->wake[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) break;
    int fd = accept(h->lfd, NULL, NULL);
    if (fd >= 0) serve(h, fd);
  }
  return NULL;
}

httpd *httpd_start(int port, httpd_decide_fn fn, void *arg) {
  httpd *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  h->decide = fn;
  h->arg = arg;
  h->wake[0] = h->wake[1] = -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  int one = 1;
  h->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (h->lfd < 0 || setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(h->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(h->lfd, 64) != 0 ||
      getsockname(h->lfd, (struct sockaddr *)&a, &alen) != 0 || pipe2(h->wake, O_CLOEXEC) != 0) {
    fprintf(stderr, "httpd: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
    if (h->lfd >= 0) close(h->lfd);
    free(h);
    return NULL;
  }
  h->port = ntohs(a.sin_port);
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  if (pthread_create(&h->thread, NULL, run, h) != 0) {
    fprintf(stderr, "httpd: cannot start its thread\n");
    close(h->lfd);
    close(h->wake[0]);
    close(h->wake[1]);
    free(h);
    return NULL;
  }
  return h;
}

int httpd_port(const httpd *h) { return h->port; }

void httpd_script(httpd *h, const httpd_reply *replies, size_t n) {
  httpd_reply *copy = n ? malloc(n * sizeof *copy) : NULL;
  if (copy) memcpy(copy, replies, n * sizeof *copy);
  pthread_mutex_lock(&h->mu);
  free(h->script);
  h->script = copy;
  h->nscript = copy ? n : 0;
  h->next = 0;
  pthread_mutex_unlock(&h->mu);
}

size_t httpd_wait(httpd *h, size_t n, int timeout_ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&h->mu);
  while (h->nreq < n && pthread_cond_timedwait(&h->cv, &h->mu, &until) != ETIMEDOUT) {
  }
  size_t got = h->nreq;
  pthread_mutex_unlock(&h->mu);
  return got;
}

bool httpd_request_at(httpd *h, size_t i, httpd_request *out) {
  bool ok = false;
  pthread_mutex_lock(&h->mu);
  if (i < h->nreq && i < HTTPD_RECORD_MAX) {
    *out = h->reqs[i];
    out->headers = strdup(h->reqs[i].headers);
    out->body = malloc(h->reqs[i].body_len + 1);
    if (out->body) memcpy(out->body, h->reqs[i].body, h->reqs[i].body_len + 1);
    ok = out->headers && out->body;
    if (!ok) httpd_request_free(out);
  }
  pthread_mutex_unlock(&h->mu);
  return ok;
}

void httpd_request_free(httpd_request *r) {
  free(r->headers);
  free(r->body);
  r->headers = r->body = NULL;
}

void httpd_reset(httpd *h) {
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->nreq && i < HTTPD_RECORD_MAX; i++) httpd_request_free(&h->reqs[i]);
  h->nreq = 0;
  pthread_mutex_unlock(&h->mu);
}

void httpd_stop(httpd *h) {
  if (h == NULL) return;
  if (write(h->wake[1], "x", 1) != 1) perror("httpd: wake");
  pthread_join(h->thread, NULL);
  for (size_t i = 0; i < h->nheld; i++) close(h->held[i]);
  httpd_reset(h);
  close(h->lfd);
  close(h->wake[0]);
  close(h->wake[1]);
  free(h->script);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  free(h);
}
