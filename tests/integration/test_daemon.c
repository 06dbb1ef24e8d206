/* celer-worker as a prefork daemon: crash isolation, hard time limits,
 * graceful and immediate shutdown under load, recycling, weighted queues,
 * module errors and crash loops, /metrics and /healthz. Real processes,
 * a real redis-server, waits as polls against a deadline. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t worker;
  char log[PATH_MAX];
  char marks[PATH_MAX];
} suite;

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_redis_start(&s->redis, false, NULL) != 0) return -1;
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->redis.dir);
  snprintf(s->marks, sizeof s->marks, "%s/marks", s->redis.dir);
  if ((s->client = harness_client(&s->redis)) == NULL) return -1;
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  celer_client_free(s->client);
  harness_redis_stop(&s->redis);
  free(s);
  return 0;
}

static int test_setup(void **state) {
  suite *s = *state;
  unlink(s->marks);
  unlink(s->log);
  return harness_flush(&s->redis);
}

static int test_teardown(void **state) {
  suite *s = *state;
  if (s->worker > 0) harness_stop(s->worker, SIGKILL, HARNESS_DEADLINE_MS);
  s->worker = 0;
  return 0;
}

static char *read_file(const char *path) {
  const char *argv[] = {"cat", path, NULL};
  char *out = NULL;
  harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
  return out ? out : strdup("");
}

/* Stops the worker with sig and expects exit 0. */
static void stop_worker(suite *s, int sig) {
  int status = harness_stop(s->worker, sig, HARNESS_DEADLINE_MS);
  s->worker = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char *log = read_file(s->log);
    print_error("worker log:\n%s\n", log);
    free(log);
    fail_msg("the worker did not exit 0 (status %d)", status);
  }
}

static void start_worker(suite *s, const char *const *args) {
  s->worker = harness_worker(&s->redis, args, s->log);
  assert_true(s->worker > 0);
}

static json_t *wait_final(suite *s, const char *queue, const char *id) {
  json_t *rec = NULL;
  if (celer_wait(s->client, queue, id, HARNESS_DEADLINE_MS, &rec) != 0)
    fail_msg("waiting for %s: %s", id, celer_client_errstr(s->client));
  return rec;
}

static const char *str(const json_t *o, const char *key) {
  return json_string_value(json_object_get(o, key));
}

static long long num(const json_t *o, const char *key) {
  return json_integer_value(json_object_get(o, key));
}

static long long stat_of(suite *s, const char *field) {
  const char *args[] = {"HGET", "celer:{default}:stats", field, NULL};
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, args, &out), 0);
  long long v = atoll(out);
  free(out);
  return v;
}

/* Enqueues n test.mark tasks (each appends its id to the marks file). */
static celer_batch_item *enqueue_marks(suite *s, size_t n, int ms) {
  celer_batch_item *items = calloc(n, sizeof *items);
  json_t *kw = json_pack("{sssi}", "path", s->marks, "ms", ms);
  for (size_t i = 0; i < n; i++) {
    items[i].task = "test.mark";
    items[i].kwargs = kw;
    celer_enqueue_options_init(&items[i].opts);
  }
  assert_int_equal(celer_enqueue_batch(s->client, items, n), 0);
  json_decref(kw);
  return items;
}

/* Every task has one SUCCEEDED record and ran exactly once. */
static void expect_each_ran_once(suite *s, celer_batch_item *items, size_t n) {
  for (size_t i = 0; i < n; i++) {
    json_t *rec = wait_final(s, NULL, items[i].id);
    assert_string_equal(str(rec, "state"), "SUCCEEDED");
    json_decref(rec);
  }
  char *marks = read_file(s->marks);
  size_t lines = 0;
  for (const char *p = marks; *p; p++) lines += *p == '\n';
  for (size_t i = 0; i < n; i++) {
    char needle[CELER_ID_MAX + 3];
    snprintf(needle, sizeof needle, "%s\n", items[i].id);
    const char *first = strstr(marks, needle);
    if (first == NULL) fail_msg("task %s never ran", items[i].id);
    if (strstr(first + 1, needle) != NULL) fail_msg("task %s ran twice", items[i].id);
  }
  assert_int_equal(lines, n);
  free(marks);
}

static void test_a_crash_in_task_code_is_recorded_at_once(void **state) {
  suite *s = *state;
  const char *args[] = {"--lease", "60", NULL};
  start_worker(s, args);
  json_t *kw = json_pack("{si}", "times", 1);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.crash", NULL, kw, NULL, id), 0);
  json_decref(kw);
  /* With a 60 s lease, only the supervisor can bring it back this soon. */
  json_t *rec = wait_final(s, NULL, id);
  assert_string_equal(str(rec, "state"), "SUCCEEDED");
  assert_int_equal(num(rec, "attempt"), 1);
  json_t *err = json_array_get(json_object_get(rec, "errors"), 0);
  assert_string_equal(str(err, "type"), "WorkerCrash");
  assert_non_null(strstr(str(err, "message"), "SIGSEGV"));
  long long delay = num(err, "at") - num(rec, "enqueued_at");
  print_message("crash recorded %lld ms after the task was enqueued\n", delay);
  assert_true(delay < 10000);
  json_decref(rec);
  /* The worker itself is still there. */
  assert_int_equal(harness_wait(s->worker, 0), -1);
  stop_worker(s, SIGTERM);
}

static void test_hard_time_limits_kill_and_retry(void **state) {
  suite *s = *state;
  const char *args[] = {"--time-limit", "0.4", NULL};
  start_worker(s, args);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.timeout_ms = 200;
  o.max_retries = 1;
  json_t *kw = json_pack("{sf}", "seconds", 5.0);
  char by_envelope[CELER_ID_MAX + 1], by_cap[CELER_ID_MAX + 1];
  int64_t t0 = celer_mono_ms();
  assert_int_equal(celer_enqueue(s->client, "test.sleep", NULL, kw, &o, by_envelope), 0);
  celer_enqueue_options_init(&o);
  o.max_retries = 0;
  assert_int_equal(celer_enqueue(s->client, "test.sleep", NULL, kw, &o, by_cap), 0);
  json_decref(kw);
  json_t *rec = wait_final(s, NULL, by_envelope);
  assert_string_equal(str(rec, "state"), "FAILED");
  assert_int_equal(num(rec, "attempt"), 1);
  json_t *err = json_object_get(rec, "error");
  assert_string_equal(str(err, "type"), "TimeLimitExceeded");
  assert_non_null(strstr(str(err, "message"), "time limit of 200 ms"));
  assert_string_equal(str(json_array_get(json_object_get(rec, "errors"), 0), "type"),
                      "TimeLimitExceeded");
  json_decref(rec);
  rec = wait_final(s, NULL, by_cap);
  assert_string_equal(str(rec, "state"), "FAILED");
  assert_non_null(strstr(str(json_object_get(rec, "error"), "message"), "time limit of 400 ms"));
  json_decref(rec);
  /* Three runs of a 5 s task, each cut short. */
  assert_true(celer_mono_ms() - t0 < 5000);
  stop_worker(s, SIGTERM);
}

static void test_graceful_shutdown_under_load_loses_nothing(void **state) {
  suite *s = *state;
  enum { N = 2000 };
  celer_batch_item *items = enqueue_marks(s, N, 1);
  const char *args[] = {"--concurrency", "2", "--prefetch", "10", NULL};
  start_worker(s, args);
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  while (stat_of(s, "processed") < N / 4 && celer_mono_ms() < deadline) poll(NULL, 0, 5);
  stop_worker(s, SIGTERM);
  long long done = stat_of(s, "processed");
  assert_true(done < N);
  /* What the first worker took but did not start was handed back at once:
   * nothing is pending, and a second worker drains the rest. */
  const char *pending[] = {"XPENDING", "celer:{default}:stream", "workers", NULL};
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, pending, &out), 0);
  assert_int_equal(atoi(out), 0);
  free(out);
  start_worker(s, args);
  expect_each_ran_once(s, items, N);
  print_message("first worker finished %lld of %d before SIGTERM; the rest ran once\n", done, N);
  stop_worker(s, SIGTERM);
  free(items);
}

static void test_sigquit_hands_back_a_running_task_at_once(void **state) {
  suite *s = *state;
  const char *args[] = {"--lease", "60", NULL};
  start_worker(s, args);
  json_t *kw = json_pack("{sf}", "seconds", 30.0);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.sleep", NULL, kw, NULL, id), 0);
  json_decref(kw);
  const char *pending[] = {"XPENDING", "celer:{default}:stream", "workers", NULL};
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  for (;;) {
    char *out = NULL;
    harness_cli(&s->redis, pending, &out);
    int n = atoi(out);
    free(out);
    if (n == 1) break;
    if (celer_mono_ms() > deadline) fail_msg("the task was never taken");
    poll(NULL, 0, 5);
  }
  int64_t t0 = celer_mono_ms();
  stop_worker(s, SIGQUIT);
  assert_true(celer_mono_ms() - t0 < 5000);
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, pending, &out), 0);
  assert_int_equal(atoi(out), 0);
  free(out);
  const char *xlen[] = {"XLEN", "celer:{default}:stream", NULL};
  assert_int_equal(harness_cli(&s->redis, xlen, &out), 0);
  assert_int_equal(atoi(out), 1);
  free(out);
}

static void test_recycled_children_lose_and_repeat_nothing(void **state) {
  suite *s = *state;
  enum { N = 500 };
  celer_batch_item *items = enqueue_marks(s, N, 0);
  const char *args[] = {"--concurrency", "2", "--prefetch", "4", "--max-tasks-per-child", "10",
                        NULL};
  start_worker(s, args);
  expect_each_ran_once(s, items, N);
  stop_worker(s, SIGTERM);
  char *log = read_file(s->log);
  int recycled = 0;
  for (const char *p = log; (p = strstr(p, "recycled after")) != NULL; p++) recycled++;
  free(log);
  print_message("%d children recycled over %d tasks\n", recycled, N);
  assert_true(recycled >= N / 10 - 2);
  free(items);
}

static void test_weighted_queues(void **state) {
  suite *s = *state;
  enum { N = 200 };
  /* Tasks of 5 ms: slow enough that the counts are read mid-way. */
  json_t *kw = json_pack("{sf}", "seconds", 0.005);
  for (int q = 0; q < 2; q++) {
    celer_batch_item items[N];
    for (int i = 0; i < N; i++) {
      memset(&items[i], 0, sizeof items[i]);
      items[i].task = "test.sleep";
      items[i].kwargs = kw;
      celer_enqueue_options_init(&items[i].opts);
      items[i].opts.queue = q ? "heavy" : "light";
    }
    assert_int_equal(celer_enqueue_batch(s->client, items, N), 0);
  }
  json_decref(kw);
  const char *args[] = {"--queues", "light:1,heavy:9", NULL};
  start_worker(s, args);
  const char *heavy[] = {"HGET", "celer:{heavy}:stats", "processed", NULL};
  const char *light[] = {"HGET", "celer:{light}:stats", "processed", NULL};
  long long h = 0, l = 0;
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  while (h + l < 100 && celer_mono_ms() < deadline) {
    char *out = NULL;
    harness_cli(&s->redis, heavy, &out);
    h = atoll(out);
    free(out);
    harness_cli(&s->redis, light, &out);
    l = atoll(out);
    free(out);
  }
  print_message("after %lld tasks: %lld from heavy (weight 9), %lld from light (weight 1)\n",
                h + l, h, l);
  assert_true(h > 2 * l);
  stop_worker(s, SIGTERM);
}

static int run_worker(suite *s, const char *const *args, char **err) {
  const char *argv[16] = {harness_bin("celer-worker"), "--broker", s->redis.url};
  size_t n = 3;
  for (size_t i = 0; args[i] && n < 15; i++) argv[n++] = args[i];
  argv[n] = NULL;
  char *out = NULL;
  int rc = harness_run(argv, NULL, NULL, 0, &out, err, HARNESS_DEADLINE_MS);
  free(out);
  return rc;
}

static void expect_refusal(suite *s, const char *const *args, int code, const char *needle) {
  char *err = NULL;
  int rc = run_worker(s, args, &err);
  if (rc != code || strstr(err, needle) == NULL)
    fail_msg("%s %s: expected exit %d with '%s', got %d: %s", args[0], args[1] ? args[1] : "", code, needle, rc, err);
  free(err);
}

static void test_module_errors_and_crash_loops_end_cleanly(void **state) {
  suite *s = *state;
  const char *missing[] = {"--module", "no_such_module", NULL};
  expect_refusal(s, missing, 2, "module no_such_module not found");
  const char *abi[] = {"--module", TEST_MODULE_DIR "/bad_abi.so", NULL};
  expect_refusal(s, abi, 2, "module ABI");
  const char *nosym[] = {"--module", TEST_MODULE_DIR "/no_symbol.so", NULL};
  expect_refusal(s, nosym, 2, "not a Celer module");
  const char *twice[] = {"--module", "testing", "--module", "testing", NULL};
  expect_refusal(s, twice, 2, "already registered");
  const char *crash[] = {"--module", TEST_MODULE_DIR "/crash_init.so", NULL};
  expect_refusal(s, crash, 1, "before it was ready");
  const char *flags[][4] = {
      {"--concurrency", "0", NULL, NULL},        {"--queues", "a:0", NULL, NULL},
      {"--queues", "a:1,b", NULL, NULL},         {"--time-limit", "soon", NULL, NULL},
      {"--metrics-addr", "nowhere", NULL, NULL}, {"--max-memory-per-child", "-1", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) expect_refusal(s, flags[i], 2, "");
}

/* GETs url with curl; returns the HTTP code, body in *body. */
static int http_get(const char *url, char **body) {
  const char *argv[] = {"curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url, NULL};
  char *out = NULL;
  if (harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS) < 0) {
    free(out);
    return -1;
  }
  char *last = strrchr(out, '\n');
  int code = last ? atoi(last + 1) : -1;
  if (last) *last = '\0';
  *body = out;
  return code;
}

static void test_metrics_and_health(void **state) {
  suite *s = *state;
  harness_redis own;
  assert_int_equal(harness_redis_start(&own, false, NULL), 0);
  char addr[32], metrics[64], health[64];
  int port = harness_free_port();
  snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
  snprintf(metrics, sizeof metrics, "http://%s/metrics", addr);
  snprintf(health, sizeof health, "http://%s/healthz", addr);
  const char *args[] = {"--metrics-addr", addr, NULL};
  s->worker = harness_worker(&own, args, s->log);
  celer_client_options o = {.broker_url = own.url};
  celer_client *c = celer_client_new(&o);
  assert_int_equal(celer_client_connect(c), 0);
  for (int i = 0; i < 5; i++) assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL), 0);
  assert_int_equal(celer_enqueue(c, "no.such.task", NULL, NULL, NULL, NULL), 0);
  /* The counters reach what ran. */
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  char *body = NULL;
  for (;;) {
    free(body);
    body = NULL;
    int code = http_get(metrics, &body);
    if (code == 200 && strstr(body, "celer_tasks_total{queue=\"default\",state=\"SUCCEEDED\"} 5\n") &&
        strstr(body, "celer_tasks_total{queue=\"default\",state=\"REJECTED\"} 1\n"))
      break;
    if (celer_mono_ms() > deadline) fail_msg("metrics never showed the runs:\n%s", body);
    poll(NULL, 0, 50);
  }
  assert_non_null(strstr(body, "# TYPE celer_task_duration_seconds histogram"));
  /* The rejected task never reached a handler: five runs were timed. */
  assert_non_null(strstr(body, "celer_task_duration_seconds_count 5\n"));
  assert_non_null(strstr(body, "celer_children 1\n"));
  assert_non_null(strstr(body, "celer_up 1\n"));
  free(body);
  assert_int_equal(http_get(health, &body), 200);
  free(body);
  /* The broker goes away: /healthz says so. */
  kill(own.pid, SIGSTOP);
  deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  int code;
  while ((code = http_get(health, &body)) != 503 && celer_mono_ms() < deadline) {
    free(body);
    body = NULL;
    poll(NULL, 0, 100);
  }
  free(body);
  kill(own.pid, SIGCONT);
  assert_int_equal(code, 503);
  deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  while ((code = http_get(health, &body)) != 200 && celer_mono_ms() < deadline) {
    free(body);
    body = NULL;
    poll(NULL, 0, 100);
  }
  free(body);
  assert_int_equal(code, 200);
  celer_client_free(c);
  stop_worker(s, SIGTERM);
  harness_redis_stop(&own);
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_a_crash_in_task_code_is_recorded_at_once),
      T(test_hard_time_limits_kill_and_retry),
      T(test_graceful_shutdown_under_load_loses_nothing),
      T(test_sigquit_hands_back_a_running_task_at_once),
      T(test_recycled_children_lose_and_repeat_nothing),
      T(test_weighted_queues),
      T(test_module_errors_and_crash_loops_end_cleanly),
      T(test_metrics_and_health),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
