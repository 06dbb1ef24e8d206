/* celer-webhook-sink: a local webhook receiver for the demo (and for
 * trying notify.send by hand). It listens on 127.0.0.1, answers each
 * POST, and prints one line per request on stdout.
 *
 *   celer-webhook-sink [--port N] [--fail-first N]
 *
 * --port: the port to listen on (default 0: a free one, printed first as
 * "listening on http://127.0.0.1:PORT/"). --fail-first N: the first N
 * deliveries of each Idempotency-Key are answered 503 with Retry-After: 1,
 * the later ones 200, so a sender's retry is visible. Runs until SIGINT
 * or SIGTERM. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "harness/httpd.h"

/* Distinct Idempotency-Keys remembered for --fail-first. */
#define SINK_KEYS_MAX 1024

static struct {
  char key[SINK_KEYS_MAX][128];
  int seen[SINK_KEYS_MAX];
  size_t n;
  int fail_first;
} sink;

/* How many times key was delivered before this request. */
static int seen_before(const char *key) {
  for (size_t i = 0; i < sink.n; i++)
    if (strcmp(sink.key[i], key) == 0) return sink.seen[i]++;
  if (sink.n < SINK_KEYS_MAX) {
    snprintf(sink.key[sink.n], sizeof sink.key[0], "%s", key);
    sink.seen[sink.n++] = 1;
  }
  return 0;
}

static httpd_reply decide(void *arg, const httpd_request *req, size_t n) {
  (void)arg;
  (void)n;
  int before = seen_before(req->idempotency_key);
  httpd_reply r = {.status = 200, .body = "ok\n"};
  if (before < sink.fail_first)
    r = (httpd_reply){.status = 503, .headers = "Retry-After: 1\r\n", .body = "busy, try again\n"};
  json_t *doc = json_loadb(req->body, req->body_len, 0, NULL);
  const char *to = json_string_value(json_object_get(doc, "to"));
  const char *msg = json_string_value(json_object_get(doc, "message"));
  printf("webhook: %s %s  Idempotency-Key %s  to %s: \"%s\"  -> %d\n", req->method, req->path,
         req->idempotency_key[0] ? req->idempotency_key : "(none)", to ? to : "?",
         msg ? msg : "", r.status);
  fflush(stdout);
  json_decref(doc);
  return r;
}

int main(int argc, char **argv) {
  int port = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      port = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--fail-first") == 0 && i + 1 < argc) {
      sink.fail_first = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: celer-webhook-sink [--port N] [--fail-first N]\n");
      return 2;
    }
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  /* Blocked before the server thread starts, so only sigwait sees them. */
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  httpd *h = httpd_start(port, decide, NULL);
  if (h == NULL) return 1;
  printf("listening on http://127.0.0.1:%d/\n", httpd_port(h));
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  httpd_stop(h);
  return 0;
}
