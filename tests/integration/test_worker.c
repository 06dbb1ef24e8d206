/* celer-worker end to end: a real redis-server, the real worker binary with
 * the testing module, tasks sent with libceler or written raw with
 * redis-cli, outcomes read back as records. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"

/* Tasks in the batch test: the figure. */
#define BATCH_TASKS 1000

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t worker;
  char log[PATH_MAX];
} suite;

static int start_worker(suite *s, const char *const *extra) {
  s->worker = harness_worker(&s->redis, extra, s->log);
  return s->worker > 0 ? 0 : -1;
}

static void stop_worker(suite *s) {
  if (s->worker > 0) {
    int status = harness_stop(s->worker, SIGTERM, HARNESS_DEADLINE_MS);
    /* A worker asked to stop exits 0; anything else is a defect, and its
     * log (sanitizer reports included) says which. */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      const char *argv[] = {"cat", s->log, NULL};
      char *out = NULL;
      harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
      print_error("worker log:\n%s\n", out ? out : "");
      free(out);
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  s->worker = 0;
}

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_redis_start(&s->redis, false, NULL) != 0) return -1;
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->redis.dir);
  if ((s->client = harness_client(&s->redis)) == NULL) return -1;
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  if (s->worker > 0) harness_stop(s->worker, SIGKILL, HARNESS_DEADLINE_MS);
  celer_client_free(s->client);
  harness_redis_stop(&s->redis);
  free(s);
  return 0;
}

/* Each test starts with an empty broker and no worker; a test starts its
 * worker when its scenario says so (never stopped before it is up: a
 * signal that lands before the worker installs its handlers kills it). */
static int test_setup(void **state) {
  suite *s = *state;
  return harness_flush(&s->redis);
}

static int test_teardown(void **state) {
  stop_worker(*state);
  return 0;
}

/* Waits for the final record of id and returns it (caller decrefs). */
static json_t *wait_final(suite *s, const char *queue, const char *id) {
  json_t *rec = NULL;
  int rc = celer_wait(s->client, queue, id, HARNESS_DEADLINE_MS, &rec);
  if (rc != 0) fail_msg("waiting for %s: %s", id, celer_client_errstr(s->client));
  return rec;
}

static void assert_state(const json_t *rec, const char *state) {
  const char *got = json_string_value(json_object_get(rec, "state"));
  assert_non_null(got);
  assert_string_equal(got, state);
}

static const char *error_message(const json_t *rec) {
  return json_string_value(json_object_get(json_object_get(rec, "error"), "message"));
}

/* XADDs a raw `task` field with redis-cli (stdin carries the value, so a
 * large blob needs no command line). Returns the entry id (static). */
static const char *xadd_raw(suite *s, const char *queue, const char *value, size_t len) {
  static char entry[64];
  char key[256];
  snprintf(key, sizeof key, "celer:{%s}:stream", queue);
  const char *argv[] = {"redis-cli", "-s", s->redis.socket, "-x", "XADD", key, "*", "task",
                        NULL};
  char *out = NULL;
  int rc = harness_run(argv, NULL, value, len, &out, NULL, HARNESS_DEADLINE_MS);
  assert_int_equal(rc, 0);
  assert_non_null(out);
  /* redis-cli -x appends the trailing newline of stdin only if present;
   * we send none. */
  snprintf(entry, sizeof entry, "%.*s", (int)strcspn(out, "\r\n"), out);
  free(out);
  assert_non_null(strchr(entry, '-'));
  return entry;
}

static void test_batch_of_echo_tasks(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  celer_batch_item *items = calloc(BATCH_TASKS, sizeof *items);
  json_t **args = calloc(BATCH_TASKS, sizeof *args);
  json_t **kwargs = calloc(BATCH_TASKS, sizeof *kwargs);
  assert_non_null(items);
  for (int i = 0; i < BATCH_TASKS; i++) {
    args[i] = json_pack("[is{sb}]", i, "x", "nested", i % 2);
    kwargs[i] = json_pack("{sssf}", "name", "user", "score", i / 4.0);
    items[i].task = "test.echo";
    items[i].args = args[i];
    items[i].kwargs = kwargs[i];
    celer_enqueue_options_init(&items[i].opts);
  }
  int64_t t0 = celer_mono_ms();
  assert_int_equal(celer_enqueue_batch(s->client, items, BATCH_TASKS), 0);
  for (int i = 0; i < BATCH_TASKS; i++) {
    json_t *rec = wait_final(s, NULL, items[i].id);
    assert_state(rec, "SUCCEEDED");
    json_t *result = json_object_get(rec, "result");
    assert_true(json_equal(json_object_get(result, "args"), args[i]));
    assert_true(json_equal(json_object_get(result, "kwargs"), kwargs[i]));
    assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 0);
    json_decref(rec);
  }
  int64_t took = celer_mono_ms() - t0;
  print_message("%d test.echo tasks enqueued in one batch and completed in %lld ms\n",
                BATCH_TASKS, (long long)took);
  for (int i = 0; i < BATCH_TASKS; i++) {
    json_decref(args[i]);
    json_decref(kwargs[i]);
  }
  free(args);
  free(kwargs);
  free(items);
}

/* The largest prefetch takes a whole batch in one fetch; its outcomes go
 * out in script calls of the broker's largest completion batch, the
 * longest argument vector any script gets. Every task must be recorded. */
static void test_full_prefetch_batch_is_recorded(void **state) {
  suite *s = *state;
  celer_batch_item *items = calloc(BATCH_TASKS, sizeof *items);
  assert_non_null(items);
  for (int i = 0; i < BATCH_TASKS; i++) {
    items[i].task = "test.noop";
    celer_enqueue_options_init(&items[i].opts);
  }
  /* Queued before the worker starts, so its first fetch takes them all. */
  assert_int_equal(celer_enqueue_batch(s->client, items, BATCH_TASKS), 0);
  const char *args[] = {"--prefetch", "1000", NULL};
  assert_int_equal(start_worker(s, args), 0);
  for (int i = 0; i < BATCH_TASKS; i++) {
    json_t *rec = wait_final(s, NULL, items[i].id);
    assert_state(rec, "SUCCEEDED");
    json_decref(rec);
  }
  free(items);
}

static void test_raw_xadd_before_any_worker(void **state) {
  suite *s = *state;
  /* The CONTRACT form, exactly as a producer in another language does it. */
  const char *xadd[] = {"XADD", "celer:{default}:stream", "*", "task",
                        "{\"id\":\"raw-1\",\"task\":\"test.echo\",\"args\":[\"hi\"]}", NULL};
  const char *sadd[] = {"SADD", "celer:queues", "default", NULL};
  assert_int_equal(harness_cli(&s->redis, xadd, NULL), 0);
  assert_int_equal(harness_cli(&s->redis, sadd, NULL), 0);
  assert_int_equal(start_worker(s, NULL), 0);
  json_t *rec = wait_final(s, "default", "raw-1");
  assert_state(rec, "SUCCEEDED");
  json_t *want = json_pack("{s[s]s{}}", "args", "hi", "kwargs");
  assert_true(json_equal(json_object_get(rec, "result"), want));
  /* No enqueued_at from the producer: the entry id's time stands in. */
  assert_true(json_integer_value(json_object_get(rec, "enqueued_at")) > 0);
  json_decref(want);
  json_decref(rec);
}

static void expect_rejected(suite *s, const char *id, const char *type, const char *needle) {
  json_t *rec = wait_final(s, "default", id);
  assert_state(rec, "REJECTED");
  const char *msg = error_message(rec);
  assert_non_null(msg);
  if (strstr(msg, needle) == NULL) fail_msg("message '%s' lacks '%s'", msg, needle);
  const char *t = json_string_value(json_object_get(json_object_get(rec, "error"), "type"));
  assert_string_equal(t, type);
  json_decref(rec);
}

static void test_garbage_is_rejected_and_the_worker_goes_on(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  char ids[5][64];
  const char *bodies[] = {
      "this is not json",
      "[1,2,3]",
      "{\"id\":\"no-task\",\"args\":[]}",
      "{\"id\":\"unknown-1\",\"task\":\"no.such.task\"}",
      "{\"id\":\"bad-args\",\"task\":\"test.echo\",\"args\":{\"a\":1}}",
  };
  for (int i = 0; i < 5; i++)
    snprintf(ids[i], sizeof ids[i], "%s", xadd_raw(s, "default", bodies[i], strlen(bodies[i])));
  size_t big = 2 * 1024 * 1024;
  char *blob = malloc(big);
  assert_non_null(blob);
  memset(blob, 'x', big);
  const char *head = "{\"id\":\"huge-1\",\"task\":\"test.echo\",\"args\":[\"";
  memcpy(blob, head, strlen(head));
  memcpy(blob + big - 3, "\"]}", 3);
  xadd_raw(s, "default", blob, big);
  free(blob);
  char good[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, NULL, good), 0);

  expect_rejected(s, ids[0], "MalformedEnvelope", "not valid JSON");
  expect_rejected(s, ids[1], "MalformedEnvelope", "object");
  /* Records are filed under the envelope id whenever it has a valid one. */
  expect_rejected(s, "no-task", "MalformedEnvelope", "task");
  expect_rejected(s, "unknown-1", "UnknownTask", "no.such.task");
  expect_rejected(s, "bad-args", "MalformedEnvelope", "args");
  /* Over the limit but still parseable: filed under its own id. */
  expect_rejected(s, "huge-1", "PayloadTooLarge", "2097152");
  json_t *rec = wait_final(s, "default", good);
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
  /* Everything was acknowledged: nothing pending, nothing left. */
  char *out = NULL;
  const char *xlen[] = {"XLEN", "celer:{default}:stream", NULL};
  assert_int_equal(harness_cli(&s->redis, xlen, &out), 0);
  assert_int_equal(atoi(out), 0);
  free(out);
  const char *stats[] = {"HGET", "celer:{default}:stats", "rejected", NULL};
  assert_int_equal(harness_cli(&s->redis, stats, &out), 0);
  assert_int_equal(atoi(out), 6);
  free(out);
}

static void test_retry_then_success_and_giving_up(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  json_t *kw = json_pack("{sisfss}", "times", 2, "delay", 0.05, "message", "flaky");
  char ok_id[CELER_ID_MAX + 1], bad_id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.fail", NULL, kw, NULL, ok_id), 0);
  json_decref(kw);
  kw = json_pack("{sfss}", "delay", 0.05, "message", "always");
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.max_retries = 1;
  assert_int_equal(celer_enqueue(s->client, "test.fail", NULL, kw, &o, bad_id), 0);
  json_decref(kw);

  json_t *rec = wait_final(s, NULL, ok_id);
  assert_state(rec, "SUCCEEDED");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 2);
  assert_string_equal(json_string_value(json_object_get(rec, "result")), "ok");
  json_decref(rec);

  rec = wait_final(s, NULL, bad_id);
  assert_state(rec, "FAILED");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 1);
  assert_non_null(strstr(error_message(rec), "always"));
  assert_non_null(strstr(error_message(rec), "gave up after 1 retries"));
  json_decref(rec);

  /* A raw producer's task without enqueued_at keeps the time of its first
   * XADD across retries (the broker's time in the entry id). */
  const char *body = "{\"id\":\"raw-retry\",\"task\":\"test.fail\","
                     "\"kwargs\":{\"times\":1,\"delay\":0.05},\"x-trace\":\"t-1\"}";
  long long first_ms = atoll(xadd_raw(s, "default", body, strlen(body)));
  rec = wait_final(s, "default", "raw-retry");
  assert_state(rec, "SUCCEEDED");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 1);
  assert_int_equal(json_integer_value(json_object_get(rec, "enqueued_at")), first_ms);
  json_decref(rec);
}

static void test_countdown_runs_no_earlier_than_its_eta(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = 300;
  char id[CELER_ID_MAX + 1];
  int64_t before = celer_now_ms();
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, &o, id), 0);
  json_t *rec = wait_final(s, NULL, id);
  assert_state(rec, "SUCCEEDED");
  int64_t started = json_integer_value(json_object_get(rec, "started_at"));
  assert_true(started >= before + 300);
  json_decref(rec);

  /* Written straight into the stream with a future eta: parked, then run. */
  char body[256];
  int64_t eta = celer_now_ms() + 300;
  snprintf(body, sizeof body, "{\"id\":\"eta-raw\",\"task\":\"test.noop\",\"eta\":%lld}",
           (long long)eta);
  xadd_raw(s, "default", body, strlen(body));
  rec = wait_final(s, "default", "eta-raw");
  assert_state(rec, "SUCCEEDED");
  assert_true(json_integer_value(json_object_get(rec, "started_at")) >= eta);
  json_decref(rec);
}

static void test_expired_and_wrong_queue(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.expires_ms = celer_now_ms() - 1000;
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, &o, id), 0);
  json_t *rec = wait_final(s, NULL, id);
  assert_state(rec, "EXPIRED");
  assert_true(json_is_null(json_object_get(rec, "started_at")));
  json_decref(rec);

  const char *body = "{\"id\":\"elsewhere\",\"task\":\"test.noop\",\"queue\":\"other\"}";
  xadd_raw(s, "default", body, strlen(body));
  expect_rejected(s, "elsewhere", "MalformedEnvelope", "read from queue 'default'");
}

static void test_second_delivery_of_a_final_task_is_a_duplicate(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  const char *body = "{\"id\":\"twice\",\"task\":\"test.echo\",\"args\":[1]}";
  xadd_raw(s, "default", body, strlen(body));
  json_t *first = wait_final(s, "default", "twice");
  assert_state(first, "SUCCEEDED");
  /* The same task delivered again (as after a crash): its record stays. */
  xadd_raw(s, "default", body, strlen(body));
  char good[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, NULL, good), 0);
  json_t *rec = wait_final(s, NULL, good);
  json_decref(rec);
  rec = wait_final(s, "default", "twice");
  assert_true(json_equal(rec, first));
  char *out = NULL;
  const char *dup[] = {"HGET", "celer:{default}:stats", "duplicates", NULL};
  assert_int_equal(harness_cli(&s->redis, dup, &out), 0);
  assert_int_equal(atoi(out), 1);
  free(out);
  json_decref(rec);
  json_decref(first);
}

static void test_scripts_come_back_after_a_script_flush(void **state) {
  suite *s = *state;
  assert_int_equal(start_worker(s, NULL), 0);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, NULL, id), 0);
  json_t *rec = wait_final(s, NULL, id);
  json_decref(rec);
  /* What a Redis restart does to the script cache: the next completion
   * meets NOSCRIPT, loads the script again and goes on. */
  const char *flush[] = {"SCRIPT", "FLUSH", NULL};
  assert_int_equal(harness_cli(&s->redis, flush, NULL), 0);
  assert_int_equal(celer_enqueue(s->client, "test.echo", NULL, NULL, NULL, id), 0);
  rec = wait_final(s, NULL, id);
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
}

static void test_queues_in_priority_order_over_tcp(void **state) {
  suite *s = *state;
  harness_redis tcp;
  assert_int_equal(harness_redis_start(&tcp, true, NULL), 0);
  celer_client_options co = {.broker_url = tcp.url};
  celer_client *c = celer_client_new(&co);
  assert_int_equal(celer_client_connect(c), 0);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  char hi[CELER_ID_MAX + 1], lo[CELER_ID_MAX + 1];
  /* Low first in time, high first in priority: high must run first. */
  o.queue = "low";
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, lo), 0);
  o.queue = "high";
  json_t *kw = json_pack("{sf}", "seconds", 0.05);
  assert_int_equal(celer_enqueue(c, "test.sleep", NULL, kw, &o, hi), 0);
  json_decref(kw);
  const char *args[] = {"--queues", "high,low", NULL};
  pid_t w = harness_worker(&tcp, args, s->log);
  json_t *rh = NULL, *rl = NULL;
  assert_int_equal(celer_wait(c, "high", hi, HARNESS_DEADLINE_MS, &rh), 0);
  assert_int_equal(celer_wait(c, "low", lo, HARNESS_DEADLINE_MS, &rl), 0);
  assert_string_equal(json_string_value(json_object_get(rh, "queue")), "high");
  assert_string_equal(json_string_value(json_object_get(rl, "queue")), "low");
  assert_true(json_integer_value(json_object_get(rl, "started_at")) >=
              json_integer_value(json_object_get(rh, "finished_at")));
  int status = harness_stop(w, SIGTERM, HARNESS_DEADLINE_MS);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  json_decref(rh);
  json_decref(rl);
  celer_client_free(c);
  harness_redis_stop(&tcp);
}

static void test_task_events_are_json_lines_with_their_fields(void **state) {
  suite *s = *state;
  const char *args[] = {"--log-format", "json", "--log-level", "debug", NULL};
  assert_int_equal(start_worker(s, args), 0);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, NULL, id), 0);
  json_t *rec = wait_final(s, NULL, id);
  json_decref(rec);
  stop_worker(s);
  const char *argv[] = {"cat", s->log, NULL};
  char *out = NULL;
  assert_int_equal(harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS), 0);
  json_t *event = NULL;
  for (char *line = strtok(out, "\n"); line && !event; line = strtok(NULL, "\n")) {
    json_t *doc = json_loads(line, 0, NULL);
    assert_non_null(doc); /* every line is JSON */
    const char *task = json_string_value(json_object_get(doc, "task"));
    if (task && strcmp(task, id) == 0) event = doc;
    else json_decref(doc);
  }
  free(out);
  assert_non_null(event);
  assert_string_equal(json_string_value(json_object_get(event, "name")), "test.noop");
  assert_string_equal(json_string_value(json_object_get(event, "queue")), "default");
  assert_string_equal(json_string_value(json_object_get(event, "outcome")), "SUCCEEDED");
  assert_int_equal(json_integer_value(json_object_get(event, "attempt")), 0);
  assert_true(json_is_integer(json_object_get(event, "duration_ms")));
  json_decref(event);
}

static void test_bad_flags_and_missing_module(void **state) {
  suite *s = *state;
  const char *cases[][4] = {
      {"--queues", "a{b}", NULL, NULL},
      {"--prefetch", "0", NULL, NULL},
      {"--no-such-flag", NULL, NULL, NULL},
      {"--module", "no_such_module", NULL, NULL},
      {"--broker", "http://nowhere", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *argv[8] = {harness_bin("celer-worker"), "--broker", s->redis.url};
    size_t n = 3;
    for (size_t j = 0; j < 4 && cases[i][j]; j++) argv[n++] = cases[i][j];
    argv[n] = NULL;
    char *out = NULL, *err = NULL;
    int rc = harness_run(argv, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
    assert_int_equal(rc, 2);
    assert_true(strlen(err) > 0);
    free(out);
    free(err);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_batch_of_echo_tasks, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_full_prefetch_batch_is_recorded, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_raw_xadd_before_any_worker, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_garbage_is_rejected_and_the_worker_goes_on,
                                      test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_retry_then_success_and_giving_up, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_countdown_runs_no_earlier_than_its_eta, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_expired_and_wrong_queue, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_second_delivery_of_a_final_task_is_a_duplicate,
                                      test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_scripts_come_back_after_a_script_flush, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_queues_in_priority_order_over_tcp, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_task_events_are_json_lines_with_their_fields,
                                      test_setup, test_teardown),
      cmocka_unit_test(test_bad_flags_and_missing_module),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
