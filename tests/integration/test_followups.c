/* Follow-ups (celer_task_enqueue) end to end: a real redis-server, the
 * real worker with the followups test module, and the broker's keys read
 * back with redis-cli. Published with a success only, once per task id. */
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

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t worker;
  char log[PATH_MAX];
} suite;

static void stop_worker(suite *s) {
  if (s->worker <= 0) return;
  int status = harness_stop(s->worker, SIGTERM, HARNESS_DEADLINE_MS);
  s->worker = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const char *argv[] = {"cat", s->log, NULL};
    char *out = NULL;
    harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
    print_error("worker log:\n%s\n", out ? out : "");
    free(out);
  }
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(harness_log_is_clean(s->log));
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

/* An empty broker and a worker on the default queue with the module. */
static int test_setup(void **state) {
  suite *s = *state;
  if (harness_flush(&s->redis) != 0) return -1;
  const char *args[] = {"--module", TEST_MODULE_DIR "/followups.so", "--queues", "default",
                        NULL};
  s->worker = harness_worker(&s->redis, args, s->log);
  return s->worker > 0 ? 0 : -1;
}

static int test_teardown(void **state) {
  stop_worker(*state);
  return 0;
}

static json_t *wait_final(suite *s, const char *id) {
  json_t *rec = NULL;
  if (celer_wait(s->client, "default", id, HARNESS_DEADLINE_MS, &rec) != 0)
    fail_msg("waiting for %s: %s", id, celer_client_errstr(s->client));
  return rec;
}

static void assert_state(const json_t *rec, const char *state) {
  const char *got = json_string_value(json_object_get(rec, "state"));
  assert_non_null(got);
  assert_string_equal(got, state);
}

/* Enqueues fu.spawn with kwargs (JSON text) and optional id; waits for
 * its final record (caller decrefs). */
static json_t *spawn(suite *s, const char *kwargs, const char *id) {
  json_t *kw = json_loads(kwargs, 0, NULL);
  assert_non_null(kw);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.id = id;
  char got[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "fu.spawn", NULL, kw, &o, got), 0);
  json_decref(kw);
  return wait_final(s, got);
}

/* A redis-cli command's integer answer. */
static long long cli_int(suite *s, const char *const *args) {
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, args, &out), 0);
  long long v = out ? strtoll(out, NULL, 10) : -1;
  free(out);
  return v;
}

static long long xlen(suite *s, const char *queue) {
  char key[128];
  snprintf(key, sizeof key, "celer:{%s}:stream", queue);
  const char *args[] = {"XLEN", key, NULL};
  return cli_int(s, args);
}

static long long zcard(suite *s, const char *queue) {
  char key[128];
  snprintf(key, sizeof key, "celer:{%s}:scheduled", queue);
  const char *args[] = {"ZCARD", key, NULL};
  return cli_int(s, args);
}

static void test_published_with_the_success(void **state) {
  suite *s = *state;
  json_t *rec = spawn(s, "{\"n\": 3, \"queue\": \"fu-out\"}", NULL);
  assert_state(rec, "SUCCEEDED");
  json_t *ids = json_object_get(rec, "result");
  assert_int_equal(json_array_size(ids), 3);
  assert_int_equal(xlen(s, "fu-out"), 3);
  const char *member[] = {"SISMEMBER", "celer:queues", "fu-out", NULL};
  assert_int_equal(cli_int(s, member), 1);
  /* The envelopes are ordinary ones, with the parent as origin. */
  const char *range[] = {"XRANGE", "celer:{fu-out}:stream", "-", "+", NULL};
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, range, &out), 0);
  assert_non_null(out);
  char origin[160];
  snprintf(origin, sizeof origin, "\"origin\":\"fu.spawn/%s\"",
           json_string_value(json_object_get(rec, "id")));
  assert_non_null(strstr(out, origin));
  assert_non_null(strstr(out, "\"task\":\"test.noop\""));
  for (size_t i = 0; i < 3; i++)
    assert_non_null(strstr(out, json_string_value(json_array_get(ids, i))));
  free(out);
  json_decref(rec);
}

static void test_followups_run_like_any_task(void **state) {
  suite *s = *state;
  json_t *rec = spawn(s, "{\"n\": 2, \"task\": \"test.echo\"}", NULL);
  assert_state(rec, "SUCCEEDED");
  json_t *ids = json_object_get(rec, "result");
  for (size_t i = 0; i < json_array_size(ids); i++) {
    json_t *child = wait_final(s, json_string_value(json_array_get(ids, i)));
    assert_state(child, "SUCCEEDED");
    json_t *kw = json_object_get(json_object_get(child, "result"), "kwargs");
    assert_int_equal(json_integer_value(json_object_get(kw, "i")), (json_int_t)i);
    json_decref(child);
  }
  json_decref(rec);
}

static void test_not_published_on_failure_or_retry(void **state) {
  suite *s = *state;
  json_t *rec = spawn(s, "{\"n\": 3, \"queue\": \"fu-out\", \"fail\": true}", NULL);
  assert_state(rec, "FAILED");
  json_decref(rec);
  /* Retried once (max_retries 1), then FAILED: neither run publishes. */
  rec = spawn(s, "{\"n\": 2, \"queue\": \"fu-out\", \"retry\": true}", NULL);
  assert_state(rec, "FAILED");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 1);
  json_decref(rec);
  assert_int_equal(xlen(s, "fu-out"), 0);
  const char *member[] = {"SISMEMBER", "celer:queues", "fu-out", NULL};
  assert_int_equal(cli_int(s, member), 0);
}

static void test_not_published_again_on_redelivery(void **state) {
  suite *s = *state;
  json_t *rec = spawn(s, "{\"n\": 2, \"queue\": \"fu-out\"}", "parent-1");
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
  assert_int_equal(xlen(s, "fu-out"), 2);
  /* The same task delivered again: it runs, but its completion finds the
   * final record and publishes nothing. */
  json_t *kw = json_pack("{sisss}", "n", 2, "queue", "fu-out");
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.id = "parent-1";
  assert_int_equal(celer_enqueue(s->client, "fu.spawn", NULL, kw, &o, NULL), 0);
  json_decref(kw);
  const char *dup[] = {"HGET", "celer:{default}:stats", "duplicates", NULL};
  int64_t until = celer_mono_ms() + HARNESS_DEADLINE_MS;
  while (cli_int(s, dup) != 1 && celer_mono_ms() < until) {
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(cli_int(s, dup), 1);
  assert_int_equal(xlen(s, "fu-out"), 2);
}

static void test_countdown_goes_to_the_scheduled_set(void **state) {
  suite *s = *state;
  json_t *rec = spawn(s, "{\"n\": 1, \"queue\": \"fu-out\", \"countdown_ms\": 600000}", NULL);
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
  assert_int_equal(zcard(s, "fu-out"), 1);
  assert_int_equal(xlen(s, "fu-out"), 0);
}

static void test_default_queue_of_the_registration(void **state) {
  suite *s = *state;
  json_t *rec = spawn(s, "{\"n\": 1, \"task\": \"fu.target\"}", NULL);
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
  assert_int_equal(xlen(s, "fu-home"), 1);
}

static void test_invalid_followup_fails_the_task(void **state) {
  suite *s = *state;
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "fu.bad", NULL, NULL, NULL, id), 0);
  json_t *rec = wait_final(s, id);
  assert_state(rec, "FAILED");
  const char *msg =
      json_string_value(json_object_get(json_object_get(rec, "error"), "message"));
  assert_non_null(msg);
  assert_non_null(strstr(msg, "follow-up no spaces allowed: task"));
  json_decref(rec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_published_with_the_success, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_followups_run_like_any_task, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_not_published_on_failure_or_retry, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_not_published_again_on_redelivery, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_countdown_goes_to_the_scheduled_set, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_default_queue_of_the_registration, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_invalid_followup_fails_the_task, test_setup,
                                      test_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
