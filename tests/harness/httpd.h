/* A real HTTP/1.1 server on loopback for tests and the demo's webhook
 * receiver. It runs on its own thread, answers one request per
 * connection, and records every request (method, path, headers, body).
 * What it answers is scripted: a list of replies used in order (the last
 * one repeats), or a function deciding per request. */
#ifndef CELER_TEST_HTTPD_H
#define CELER_TEST_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

/* Largest request the server reads (headers and body): far above any
 * notification, small enough that a runaway client cannot fill memory. */
#define HTTPD_REQUEST_MAX (1024 * 1024)
/* Requests remembered; later ones are answered but not recorded. */
#define HTTPD_RECORD_MAX 256

typedef struct httpd_reply {
  int status;              /* 0: never answer (the connection is held open) */
  const char *headers;     /* extra header lines, each ending "\r\n"; NULL = none */
  const char *body;        /* NULL: body_size filler bytes */
  size_t body_size;
  int delay_ms;            /* wait this long before answering */
} httpd_reply;

typedef struct httpd_request {
  char method[16];
  char path[1024];
  char idempotency_key[128]; /* the Idempotency-Key header, "" = none */
  char *headers;           /* owned: the header block as received */
  char *body;              /* owned, NUL-terminated */
  size_t body_len;
  int status;              /* what it was answered (0 = held) */
  long long at_ms;         /* CLOCK_MONOTONIC ms when it arrived */
} httpd_request;

typedef struct httpd httpd;

/* Decides the reply to req (the n-th request, from 0). */
typedef httpd_reply (*httpd_decide_fn)(void *arg, const httpd_request *req, size_t n);

/* Starts a server on 127.0.0.1, on port (0 = a free one). decide may be
 * NULL (then the script decides, and without a script: 200, empty body).
 * Returns NULL after printing why. */
httpd *httpd_start(int port, httpd_decide_fn decide, void *arg);
int httpd_port(const httpd *h);
/* Sets the replies for the next requests, used in order, the last one
 * repeating. The strings are borrowed until the next call or stop. */
void httpd_script(httpd *h, const httpd_reply *replies, size_t n);
/* Waits until n requests have arrived or timeout_ms passed; returns how
 * many have arrived. */
size_t httpd_wait(httpd *h, size_t n, int timeout_ms);
/* A copy of request i (caller frees with httpd_request_free); false when
 * there is no such request. */
bool httpd_request_at(httpd *h, size_t i, httpd_request *out);
void httpd_request_free(httpd_request *r);
/* Forgets the recorded requests (and resets the count). */
void httpd_reset(httpd *h);
/* Stops the thread, closes every connection, frees h. NULL is fine. */
void httpd_stop(httpd *h);

#endif
