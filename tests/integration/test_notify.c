/* The notify module end to end: the real worker with --module notify
 * delivering to a real HTTP server on loopback (tests/harness/httpd.c)
 * that this test scripts: status, Retry-After, body size, never answering,
 * redirects. The server records each request, Idempotency-Key included. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <cmocka.h>

#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"
#include "harness/httpd.h"

/* The 10 MB answer of the body-cap test. */
#define HUGE_BODY (10 * 1024 * 1024)

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t worker;
  httpd *http;
  char dir[HARNESS_DIR_MAX];
  char log[PATH_MAX], notify_log[PATH_MAX];
  char url[128];
} suite;

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_redis_start(&s->redis, false, NULL) != 0) return -1;
  if (harness_tmpdir(s->dir, sizeof s->dir) != 0) return -1;
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->dir);
  snprintf(s->notify_log, sizeof s->notify_log, "%s/notify.log", s->dir);
  setenv("CELER_NOTIFY_LOG", s->notify_log, 1);
  if ((s->client = harness_client(&s->redis)) == NULL) return -1;
  if ((s->http = httpd_start(0, NULL, NULL)) == NULL) return -1;
  snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d/hook", httpd_port(s->http));
  const char *args[] = {"--module", "notify", NULL};
  s->worker = harness_worker(&s->redis, args, s->log);
  if (s->worker <= 0) return -1;
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  int status = harness_stop(s->worker, SIGTERM, HARNESS_DEADLINE_MS);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) harness_dump_log(s->log);
  bool clean = harness_log_is_clean(s->log);
  httpd_stop(s->http);
  celer_client_free(s->client);
  harness_redis_stop(&s->redis);
  harness_rmtree(s->dir);
  free(s);
  return clean && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int test_setup(void **state) {
  suite *s = *state;
  httpd_reset(s->http);
  httpd_script(s->http, NULL, 0);
  return 0;
}

/* Sends a notification to url with max_retries (-1 = the task's) and
 * timeout_ms (0 = none); returns its final record (caller decrefs) and
 * its id in id. */
static json_t *send_to(suite *s, const char *url, int max_retries, int64_t timeout_ms,
                       char id[CELER_ID_MAX + 1]) {
  json_t *kw = json_pack("{ssssssssss}", "channel", "webhook", "to", "ada@example.com", "subject",
                         "Hello", "message", "Welcome, ada!", "url", url);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.max_retries = max_retries;
  o.timeout_ms = timeout_ms;
  assert_int_equal(celer_enqueue(s->client, "notify.send", NULL, kw, &o, id), 0);
  json_decref(kw);
  json_t *rec = NULL;
  if (celer_wait(s->client, NULL, id, HARNESS_DEADLINE_MS, &rec) != 0) {
    harness_dump_log(s->log);
    fail_msg("waiting for %s: %s", id, celer_client_errstr(s->client));
  }
  return rec;
}

static const char *state_of(const json_t *rec) {
  return json_string_value(json_object_get(rec, "state"));
}
static const char *error_field(const json_t *rec, const char *f) {
  const char *m = json_string_value(json_object_get(json_object_get(rec, "error"), f));
  return m ? m : "";
}
static json_int_t attempt_of(const json_t *rec) {
  return json_integer_value(json_object_get(rec, "attempt"));
}

static void assert_contains(const char *hay, const char *needle) {
  if (strstr(hay, needle) == NULL) fail_msg("\"%s\" does not contain \"%s\"", hay, needle);
}

/* Request i as the server recorded it (caller frees with httpd_request_free). */
static httpd_request request(suite *s, size_t i) {
  httpd_request r;
  if (!httpd_request_at(s->http, i, &r)) fail_msg("no request %zu", i);
  return r;
}

static void test_200_with_idempotency_key(void **state) {
  suite *s = *state;
  httpd_reply ok = {.status = 200, .body = "thanks"};
  httpd_script(s->http, &ok, 1);
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_t *res = json_object_get(rec, "result");
  assert_int_equal(json_integer_value(json_object_get(res, "status")), 200);
  assert_string_equal(json_string_value(json_object_get(res, "channel")), "webhook");
  json_decref(rec);
  assert_int_equal(httpd_wait(s->http, 1, HARNESS_DEADLINE_MS), 1);
  httpd_request r = request(s, 0);
  assert_string_equal(r.method, "POST");
  assert_string_equal(r.path, "/hook");
  assert_string_equal(r.idempotency_key, id);
  assert_contains(r.headers, "Content-Type: application/json");
  json_t *body = json_loadb(r.body, r.body_len, 0, NULL);
  assert_non_null(body);
  assert_string_equal(json_string_value(json_object_get(body, "id")), id);
  assert_string_equal(json_string_value(json_object_get(body, "to")), "ada@example.com");
  assert_string_equal(json_string_value(json_object_get(body, "subject")), "Hello");
  assert_string_equal(json_string_value(json_object_get(body, "message")), "Welcome, ada!");
  json_decref(body);
  httpd_request_free(&r);
}

static void test_503_then_200_honours_retry_after(void **state) {
  suite *s = *state;
  httpd_reply script[] = {{.status = 503, .headers = "Retry-After: 2\r\n", .body = "busy"},
                          {.status = 200}};
  httpd_script(s->http, script, 2);
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  assert_int_equal(attempt_of(rec), 1);
  json_t *errors = json_object_get(rec, "errors");
  assert_int_equal(json_array_size(errors), 1);
  assert_contains(json_string_value(json_object_get(json_array_get(errors, 0), "message")),
                  "HTTP 503 (Retry-After 2)");
  json_decref(rec);
  assert_int_equal(httpd_wait(s->http, 2, HARNESS_DEADLINE_MS), 2);
  httpd_request a = request(s, 0), b = request(s, 1);
  /* The same key on both deliveries, and the retry waited as asked
   * (the backoff alone would be at most one second). */
  assert_string_equal(a.idempotency_key, id);
  assert_string_equal(b.idempotency_key, id);
  assert_true(b.at_ms - a.at_ms >= 1900);
  httpd_request_free(&a);
  httpd_request_free(&b);
}

static void test_429_with_an_http_date(void **state) {
  suite *s = *state;
  char when[128], header[160];
  time_t t = time(NULL) + 2;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(when, sizeof when, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  snprintf(header, sizeof header, "Retry-After: %s\r\n", when);
  httpd_reply script[] = {{.status = 429, .headers = header}, {.status = 204}};
  httpd_script(s->http, script, 2);
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  assert_int_equal(attempt_of(rec), 1);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(rec, "result"), "status")),
                   204);
  assert_contains(json_string_value(json_object_get(
                      json_array_get(json_object_get(rec, "errors"), 0), "message")),
                  "HTTP 429");
  json_decref(rec);
  httpd_request a = request(s, 0), b = request(s, 1);
  /* Two seconds ahead at one-second resolution: at least one. */
  assert_true(b.at_ms - a.at_ms >= 900);
  httpd_request_free(&a);
  httpd_request_free(&b);
}

static void test_404_fails_at_once(void **state) {
  suite *s = *state;
  httpd_reply nf = {.status = 404, .body = "no such hook\n\n  here"};
  httpd_script(s->http, &nf, 1);
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "FAILED");
  assert_int_equal(attempt_of(rec), 0);
  assert_string_equal(error_field(rec, "type"), "HTTPError");
  char want[256];
  snprintf(want, sizeof want, "POST %s: HTTP 404: no such hook here", s->url);
  assert_string_equal(error_field(rec, "message"), want);
  json_decref(rec);
  assert_int_equal(httpd_wait(s->http, 2, 200), 1);
}

static void test_connection_refused_is_retried(void **state) {
  suite *s = *state;
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", harness_free_port());
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, url, 1, 0, id);
  assert_string_equal(state_of(rec), "FAILED");
  assert_int_equal(attempt_of(rec), 1);
  assert_string_equal(error_field(rec, "type"), "NetworkError");
  assert_contains(error_field(rec, "message"), "(gave up after 1 retries)");
  json_decref(rec);
}

static void test_server_that_never_answers_times_out(void **state) {
  suite *s = *state;
  httpd_reply hang = {.status = 0};
  httpd_script(s->http, &hang, 1);
  char id[CELER_ID_MAX + 1];
  /* The task's 2 s limit bounds the request (less a margin), so the
   * run ends in a recorded error, not a killed process. */
  json_t *rec = send_to(s, s->url, 0, 2000, id);
  assert_string_equal(state_of(rec), "FAILED");
  assert_string_equal(error_field(rec, "type"), "Timeout");
  assert_contains(error_field(rec, "message"), "Timeout was reached");
  json_decref(rec);
  assert_int_equal(httpd_wait(s->http, 1, HARNESS_DEADLINE_MS), 1);
}

static void test_10_mb_body_is_capped(void **state) {
  suite *s = *state;
  httpd_reply big = {.status = 200, .body_size = HUGE_BODY};
  httpd_script(s->http, &big, 1);
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_decref(rec);
  /* And in an error, only a short excerpt of it. */
  httpd_reply bad = {.status = 400, .body_size = HUGE_BODY};
  httpd_script(s->http, &bad, 1);
  rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "FAILED");
  const char *msg = error_field(rec, "message");
  assert_contains(msg, "HTTP 400: xxxxxxxx");
  assert_true(strlen(msg) < 300);
  json_decref(rec);
}

static void test_redirects(void **state) {
  suite *s = *state;
  char other[160], same[160];
  /* localhost is another host name than 127.0.0.1, though the same
   * machine: refused. */
  snprintf(other, sizeof other, "Location: http://localhost:%d/elsewhere\r\n",
           httpd_port(s->http));
  httpd_reply away = {.status = 307, .headers = other};
  httpd_script(s->http, &away, 1);
  char id[CELER_ID_MAX + 1];
  json_t *rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "FAILED");
  assert_int_equal(attempt_of(rec), 0);
  assert_string_equal(error_field(rec, "type"), "RedirectRefused");
  assert_contains(error_field(rec, "message"), "is not redirected to another host");
  json_decref(rec);
  assert_int_equal(httpd_wait(s->http, 2, 200), 1);

  httpd_reset(s->http);
  snprintf(same, sizeof same, "Location: /moved\r\n");
  httpd_reply script[] = {{.status = 308, .headers = same}, {.status = 200}};
  httpd_script(s->http, script, 2);
  rec = send_to(s, s->url, -1, 0, id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_decref(rec);
  assert_int_equal(httpd_wait(s->http, 2, HARNESS_DEADLINE_MS), 2);
  httpd_request r = request(s, 1);
  assert_string_equal(r.method, "POST");
  assert_string_equal(r.path, "/moved");
  assert_string_equal(r.idempotency_key, id);
  httpd_request_free(&r);
}

static void test_log_channel_and_bad_channel(void **state) {
  suite *s = *state;
  json_t *kw = json_pack("{ssssss}", "channel", "log", "to", "bo@example.com", "message", "hi");
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "notify.send", NULL, kw, NULL, id), 0);
  json_decref(kw);
  json_t *rec = NULL;
  assert_int_equal(celer_wait(s->client, NULL, id, HARNESS_DEADLINE_MS, &rec), 0);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_decref(rec);
  const char *argv[] = {"cat", s->notify_log, NULL};
  char *out = NULL;
  assert_int_equal(harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS), 0);
  json_t *line = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  assert_non_null(line);
  assert_string_equal(json_string_value(json_object_get(line, "id")), id);
  assert_string_equal(json_string_value(json_object_get(line, "message")), "hi");
  assert_int_equal(out[strlen(out) - 1], '\n');
  json_decref(line);
  free(out);

  kw = json_pack("{ssssss}", "channel", "sms", "to", "bo@example.com", "message", "hi");
  assert_int_equal(celer_enqueue(s->client, "notify.send", NULL, kw, NULL, id), 0);
  json_decref(kw);
  assert_int_equal(celer_wait(s->client, NULL, id, HARNESS_DEADLINE_MS, &rec), 0);
  assert_string_equal(state_of(rec), "FAILED");
  assert_string_equal(error_field(rec, "message"),
                      "kwargs.channel: must be \"webhook\" or \"log\", got \"sms\"");
  json_decref(rec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_200_with_idempotency_key, test_setup),
      cmocka_unit_test_setup(test_503_then_200_honours_retry_after, test_setup),
      cmocka_unit_test_setup(test_429_with_an_http_date, test_setup),
      cmocka_unit_test_setup(test_404_fails_at_once, test_setup),
      cmocka_unit_test_setup(test_connection_refused_is_retried, test_setup),
      cmocka_unit_test_setup(test_server_that_never_answers_times_out, test_setup),
      cmocka_unit_test_setup(test_10_mb_body_is_capped, test_setup),
      cmocka_unit_test_setup(test_redirects, test_setup),
      cmocka_unit_test_setup(test_log_channel_and_bad_channel, test_setup),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
