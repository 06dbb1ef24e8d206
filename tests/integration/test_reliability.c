/* Never lose a task: leases, recovery, fencing, retries with backoff,
 * scheduling, cancel, pause, dead letters and a broker restart, each with
 * real worker processes killed, stopped and restarted against a real
 * redis-server. Waits are polls against a deadline, never fixed sleeps. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <poll.h>
#include <cmocka.h>

#include "celer/admin.h"
#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"

/* The lease the workers of these tests run with: short, so that recovery
 * happens within a test's time. */
#define LEASE "1"
#define LEASE_MS 1000

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t workers[4];
  char log[PATH_MAX];
} suite;

static const char *const aof_args[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_redis_start(&s->redis, false, aof_args) != 0) return -1;
  snprintf(s->log, sizeof s->log, "%s/workers.log", s->redis.dir);
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
  return harness_flush(&s->redis);
}

/* Stops whatever workers a test left running. */
static int test_teardown(void **state) {
  suite *s = *state;
  for (size_t i = 0; i < 4; i++) {
    if (s->workers[i] > 0) harness_stop(s->workers[i], SIGKILL, HARNESS_DEADLINE_MS);
    s->workers[i] = 0;
  }
  return 0;
}

/* Starts worker slot k named name with the lease of these tests. */
static pid_t start_worker(suite *s, size_t k, const char *name, const char *extra) {
  const char *args[8] = {"--lease", LEASE, "--name", name, NULL};
  if (extra) {
    args[4] = extra;
    args[5] = NULL;
  }
  s->workers[k] = harness_worker(&s->redis, args, s->log);
  assert_true(s->workers[k] > 0);
  return s->workers[k];
}

static void stop_worker(suite *s, size_t k) {
  int status = harness_stop(s->workers[k], SIGTERM, HARNESS_DEADLINE_MS);
  s->workers[k] = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const char *argv[] = {"cat", s->log, NULL};
    char *out = NULL;
    harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
    print_error("worker log:\n%s\n", out ? out : "");
    free(out);
    fail_msg("a worker did not exit 0 on SIGTERM (status %d)", status);
  }
}

static long long cli_integer(suite *s, const char *const *args) {
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, args, &out), 0);
  long long v = atoll(out);
  free(out);
  return v;
}

static long long stat_of(suite *s, const char *field) {
  const char *args[] = {"HGET", "celer:{default}:stats", field, NULL};
  return cli_integer(s, args);
}

/* Polls until consumer has n entries pending in the default queue. */
static void wait_pending(suite *s, const char *consumer, int n) {
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  const char *args[] = {"XPENDING", "celer:{default}:stream", "workers", "-", "+", "10",
                        consumer, NULL};
  while (celer_mono_ms() < deadline) {
    char *out = NULL;
    harness_cli(&s->redis, args, &out);
    int lines = 0;
    for (const char *p = out; p && *p; p++) lines += *p == '\n';
    free(out);
    /* redis-cli prints 4 lines per pending entry. */
    if (lines / 4 == n) return;
    poll(NULL, 0, 10);
  }
  fail_msg("consumer %s never held %d entries", consumer, n);
}

/* Polls until a stats counter reaches want. */
static void wait_stat(suite *s, const char *field, long long want) {
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  while (celer_mono_ms() < deadline) {
    if (stat_of(s, field) >= want) return;
    poll(NULL, 0, 10);
  }
  fail_msg("stats %s never reached %lld", field, want);
}

static json_t *wait_final(suite *s, const char *id) {
  json_t *rec = NULL;
  if (celer_wait(s->client, NULL, id, HARNESS_DEADLINE_MS, &rec) != 0)
    fail_msg("waiting for %s: %s", id, celer_client_errstr(s->client));
  return rec;
}

static const char *str(const json_t *rec, const char *key) {
  return json_string_value(json_object_get(rec, key));
}

static long long num(const json_t *rec, const char *key) {
  return json_integer_value(json_object_get(rec, key));
}

static char *enqueue_sleep(suite *s, double seconds, char id[CELER_ID_MAX + 1]) {
  json_t *kw = json_pack("{sf}", "seconds", seconds);
  assert_int_equal(celer_enqueue(s->client, "test.sleep", NULL, kw, NULL, id), 0);
  json_decref(kw);
  return id;
}

static void test_killed_worker_task_runs_again(void **state) {
  suite *s = *state;
  char id[CELER_ID_MAX + 1];
  enqueue_sleep(s, 1.0, id);
  start_worker(s, 0, "victim", NULL);
  wait_pending(s, "victim#0", 1);
  harness_stop(s->workers[0], SIGKILL, HARNESS_DEADLINE_MS);
  s->workers[0] = 0;
  start_worker(s, 1, "rescuer", NULL);
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "SUCCEEDED");
  assert_string_equal(str(rec, "worker"), "rescuer");
  assert_int_equal(num(rec, "redeliveries"), 1);
  json_decref(rec);
  /* Recorded exactly once. */
  assert_int_equal(stat_of(s, "processed"), 1);
  assert_int_equal(stat_of(s, "redelivered"), 1);
  stop_worker(s, 1);
}

static void test_stopped_worker_cannot_complete_after_losing_its_lease(void **state) {
  suite *s = *state;
  char id[CELER_ID_MAX + 1];
  enqueue_sleep(s, 1.5, id);
  start_worker(s, 0, "frozen", NULL);
  wait_pending(s, "frozen#0", 1);
  /* The whole worker, supervisor and child: nobody renews the lease. */
  kill(-s->workers[0], SIGSTOP);
  start_worker(s, 1, "thawed-out", NULL);
  json_t *first = wait_final(s, id);
  assert_string_equal(str(first, "worker"), "thawed-out");
  kill(-s->workers[0], SIGCONT);
  /* The frozen worker finishes its run: its completion is refused. */
  wait_stat(s, "stale", 1);
  json_t *now = wait_final(s, id);
  assert_true(json_equal(first, now));
  assert_int_equal(stat_of(s, "processed"), 1);
  json_decref(first);
  json_decref(now);
  stop_worker(s, 0);
  stop_worker(s, 1);
}

static void test_long_task_keeps_its_lease(void **state) {
  suite *s = *state;
  start_worker(s, 0, "plodder", NULL);
  start_worker(s, 1, "onlooker", NULL);
  /* Three leases long, and the handler never yields: the upkeep thread
   * renews the lease, so the other worker never takes it over. */
  char id[CELER_ID_MAX + 1];
  enqueue_sleep(s, 3.0 * LEASE_MS / 1000, id);
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "SUCCEEDED");
  assert_int_equal(num(rec, "redeliveries"), 0);
  assert_int_equal(stat_of(s, "redelivered"), 0);
  assert_int_equal(stat_of(s, "processed"), 1);
  json_decref(rec);
  stop_worker(s, 0);
  stop_worker(s, 1);
}

static void test_frozen_broker_never_hangs_a_caller(void **state) {
  suite *s = *state;
  start_worker(s, 0, "steady", NULL);
  celer_client_options o = {.broker_url = s->redis.url, .timeout_ms = 300};
  celer_client *c = celer_client_new(&o);
  assert_int_equal(celer_client_connect(c), 0);
  kill(s->redis.pid, SIGSTOP);
  int64_t t0 = celer_mono_ms();
  int rc = celer_ping(c);
  int64_t took = celer_mono_ms() - t0;
  kill(s->redis.pid, SIGCONT);
  assert_int_equal(rc, CELER_ETIMEDOUT);
  assert_true(took >= 300 && took < 3000);
  /* Once the broker answers again, so does everything else. */
  assert_int_equal(celer_ping(c), 0);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, NULL, id), 0);
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "SUCCEEDED");
  json_decref(rec);
  celer_client_free(c);
  stop_worker(s, 0);
}

static void test_retries_follow_the_backoff(void **state) {
  suite *s = *state;
  start_worker(s, 0, "retrier", NULL);
  /* test.fail is registered with exact (jitter-free) backoff: 100 ms,
   * doubling, capped at 1 s. */
  json_t *kw = json_pack("{siss}", "times", 3, "message", "upstream 503");
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.fail", NULL, kw, NULL, id), 0);
  json_decref(kw);
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "SUCCEEDED");
  assert_int_equal(num(rec, "attempt"), 3);
  json_t *errors = json_object_get(rec, "errors");
  assert_int_equal(json_array_size(errors), 3);
  long long at[4];
  for (size_t i = 0; i < 3; i++) {
    json_t *e = json_array_get(errors, i);
    assert_int_equal(num(e, "attempt"), (long long)i);
    assert_string_equal(str(e, "type"), "TestFailure");
    assert_string_equal(str(e, "message"), "upstream 503");
    at[i] = num(e, "at");
  }
  at[3] = num(rec, "started_at");
  const long long expect[3] = {100, 200, 400};
  for (size_t i = 0; i < 3; i++) {
    long long gap = at[i + 1] - at[i];
    print_message("retry %zu: waited %lld ms (backoff %lld ms)\n", i + 1, gap, expect[i]);
    assert_true(gap >= expect[i]);
    assert_true(gap < expect[i] + 500);
  }
  assert_int_equal(stat_of(s, "retried"), 3);
  json_decref(rec);
  stop_worker(s, 0);
}

static void test_countdown_starts_on_time(void **state) {
  suite *s = *state;
  start_worker(s, 0, "timer", NULL);
  enum { N = 10 };
  char ids[N][CELER_ID_MAX + 1];
  int64_t eta[N];
  for (int i = 0; i < N; i++) {
    celer_enqueue_options o;
    celer_enqueue_options_init(&o);
    o.eta_ms = celer_now_ms() + 150 + 30 * i;
    eta[i] = o.eta_ms;
    assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, &o, ids[i]), 0);
  }
  long long worst = 0;
  for (int i = 0; i < N; i++) {
    json_t *rec = wait_final(s, ids[i]);
    long long late = num(rec, "started_at") - eta[i];
    assert_true(late >= 0);
    if (late > worst) worst = late;
    json_decref(rec);
  }
  print_message("countdown lateness: worst %lld ms over %d tasks\n", worst, N);
  assert_true(worst < 250);
  stop_worker(s, 0);
}

static void test_eta_past_the_lease_runs_exactly_once(void **state) {
  suite *s = *state;
  start_worker(s, 0, "patient", NULL);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.eta_ms = celer_now_ms() + 3 * LEASE_MS;
  char id[CELER_ID_MAX + 1], far[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, &o, id), 0);
  o.eta_ms = celer_now_ms() + 2 * 3600 * 1000;
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, &o, far), 0);
  json_t *rec = wait_final(s, id);
  assert_true(num(rec, "started_at") >= o.eta_ms - 2 * 3600 * 1000 + 3 * LEASE_MS - 50);
  json_decref(rec);
  assert_int_equal(stat_of(s, "processed"), 1);
  assert_int_equal(stat_of(s, "redelivered"), 0);
  /* The task two hours out waits in the scheduled set, once. */
  const char *card[] = {"ZCARD", "celer:{default}:scheduled", NULL};
  assert_int_equal(cli_integer(s, card), 1);
  const char *xlen[] = {"XLEN", "celer:{default}:stream", NULL};
  assert_int_equal(cli_integer(s, xlen), 0);
  stop_worker(s, 0);
}

static void test_canceled_task_never_runs(void **state) {
  suite *s = *state;
  start_worker(s, 0, "canceler", NULL);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = 300;
  char id[CELER_ID_MAX + 1];
  json_t *kw = json_pack("{si}", "times", 0);
  /* Were it to run, test.fail with times 0 would SUCCEED with "ok". */
  assert_int_equal(celer_enqueue(s->client, "test.fail", NULL, kw, &o, id), 0);
  json_decref(kw);
  celer_state st;
  bool canceled = false;
  assert_int_equal(celer_cancel(s->client, NULL, id, &st, &canceled), 0);
  assert_true(canceled);
  /* Canceling again changes nothing and says why. */
  assert_int_equal(celer_cancel(s->client, NULL, id, &st, &canceled), 0);
  assert_false(canceled);
  assert_int_equal(st, CELER_CANCELED);
  /* After its eta it is promoted, taken and dropped: nothing left. */
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  const char *card[] = {"ZCARD", "celer:{default}:scheduled", NULL};
  const char *xlen[] = {"XLEN", "celer:{default}:stream", NULL};
  while ((cli_integer(s, card) != 0 || cli_integer(s, xlen) != 0) && celer_mono_ms() < deadline)
    poll(NULL, 0, 10);
  assert_int_equal(cli_integer(s, card), 0);
  assert_int_equal(cli_integer(s, xlen), 0);
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "CANCELED");
  json_decref(rec);
  assert_int_equal(stat_of(s, "processed"), 0);
  assert_int_equal(stat_of(s, "duplicates"), 0);
  stop_worker(s, 0);
}

static void test_paused_queue_is_not_taken(void **state) {
  suite *s = *state;
  assert_int_equal(celer_pause(s->client, NULL), 0);
  start_worker(s, 0, "idler", NULL);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.noop", NULL, NULL, NULL, id), 0);
  /* Two pause checks' worth of time: the task must stay untouched. */
  json_t *rec = NULL;
  assert_int_equal(celer_wait(s->client, NULL, id, 1200, &rec), CELER_ETIMEDOUT);
  const char *xlen[] = {"XLEN", "celer:{default}:stream", NULL};
  assert_int_equal(cli_integer(s, xlen), 1);
  assert_int_equal(celer_resume(s->client, NULL), 0);
  rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "SUCCEEDED");
  json_decref(rec);
  stop_worker(s, 0);
}

static void test_dead_letters_and_retry_from_dead(void **state) {
  suite *s = *state;
  start_worker(s, 0, "mortician", NULL);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.max_retries = 0;
  json_t *kw = json_pack("{ss}", "message", "disk full");
  char id[CELER_ID_MAX + 1], unknown[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "test.fail", NULL, kw, &o, id), 0);
  json_decref(kw);
  assert_int_equal(celer_enqueue(s->client, "no.such.task", NULL, NULL, NULL, unknown), 0);
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "FAILED");
  json_decref(rec);
  rec = wait_final(s, unknown);
  assert_string_equal(str(rec, "state"), "REJECTED");
  json_decref(rec);

  json_t *list = NULL;
  int64_t total = 0;
  assert_int_equal(celer_dead_list(s->client, NULL, 0, 10, &list, &total), 0);
  assert_int_equal(total, 2);
  assert_int_equal(json_array_size(list), 2);
  json_t *row = NULL;
  for (size_t i = 0; i < 2; i++)
    if (strcmp(str(json_array_get(list, i), "id"), id) == 0) row = json_array_get(list, i);
  assert_non_null(row);
  assert_true(json_is_string(json_object_get(row, "envelope")));
  json_t *err = json_object_get(json_object_get(row, "record"), "error");
  assert_non_null(strstr(str(err, "message"), "disk full"));
  json_decref(list);

  /* Back to ready: it runs again, fails again, and is dead again. */
  int64_t moved = 0;
  assert_int_equal(celer_dead_retry(s->client, NULL, id, &moved), 0);
  assert_int_equal(moved, 1);
  wait_stat(s, "failed", 2);
  rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "FAILED");
  assert_int_equal(num(rec, "attempt"), 0);
  json_decref(rec);
  assert_int_equal(celer_dead_retry(s->client, NULL, "not-dead", &moved), CELER_ENOTFOUND);
  /* --all moves both; the unknown task is rejected and dead once more. */
  assert_int_equal(celer_dead_retry(s->client, NULL, NULL, &moved), 0);
  assert_int_equal(moved, 2);
  wait_stat(s, "rejected", 2);
  stop_worker(s, 0);
}

static void test_a_task_whose_workers_keep_dying_fails_at_the_limit(void **state) {
  suite *s = *state;
  char id[CELER_ID_MAX + 1];
  enqueue_sleep(s, 30, id);
  /* Each worker that takes it is killed whole (supervisor and child): only
   * the lease brings the task back, and the limit ends it. */
  for (int round = 0; round < 2; round++) {
    char name[32], consumer[40];
    snprintf(name, sizeof name, "doomed-%d", round);
    snprintf(consumer, sizeof consumer, "%s#0", name);
    start_worker(s, 0, name, "--max-redeliveries=1");
    wait_pending(s, consumer, 1);
    harness_stop(s->workers[0], SIGKILL, HARNESS_DEADLINE_MS);
    s->workers[0] = 0;
  }
  start_worker(s, 0, "undertaker", "--max-redeliveries=1");
  json_t *rec = wait_final(s, id);
  assert_string_equal(str(rec, "state"), "FAILED");
  assert_string_equal(str(json_object_get(rec, "error"), "type"), "LeaseExpired");
  assert_non_null(strstr(str(json_object_get(rec, "error"), "message"), "lost 2 times"));
  json_decref(rec);
  const char *card[] = {"ZCARD", "celer:{default}:dead", NULL};
  assert_int_equal(cli_integer(s, card), 1);
  stop_worker(s, 0);
}

static void test_broker_restart_loses_nothing(void **state) {
  suite *s = *state;
  enum { N = 300 };
  celer_batch_item items[N];
  json_t *kw = json_pack("{sf}", "seconds", 0.005);
  for (int i = 0; i < N; i++) {
    memset(&items[i], 0, sizeof items[i]);
    items[i].task = "test.sleep";
    items[i].kwargs = kw;
    celer_enqueue_options_init(&items[i].opts);
  }
  assert_int_equal(celer_enqueue_batch(s->client, items, N), 0);
  json_decref(kw);
  start_worker(s, 0, "survivor", NULL);
  wait_stat(s, "processed", 20);
  assert_int_equal(harness_redis_restart(&s->redis), 0);
  for (int i = 0; i < N; i++) {
    json_t *rec = wait_final(s, items[i].id);
    assert_string_equal(str(rec, "state"), "SUCCEEDED");
    json_decref(rec);
  }
  stop_worker(s, 0);
}

static void test_worker_refuses_an_evicting_broker(void **state) {
  suite *s = *state;
  harness_redis lru;
  const char *args[] = {"--maxmemory-policy", "allkeys-lru", NULL};
  assert_int_equal(harness_redis_start(&lru, false, args), 0);
  const char *argv[] = {harness_bin("celer-worker"), "--broker", lru.url, NULL};
  char *out = NULL, *err = NULL;
  int rc = harness_run(argv, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
  assert_int_equal(rc, 3);
  assert_non_null(strstr(err, "allkeys-lru"));
  free(out);
  free(err);
  harness_redis_stop(&lru);
  (void)s;
}

#define T(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_killed_worker_task_runs_again),
      T(test_stopped_worker_cannot_complete_after_losing_its_lease),
      T(test_long_task_keeps_its_lease),
      T(test_frozen_broker_never_hangs_a_caller),
      T(test_retries_follow_the_backoff),
      T(test_countdown_starts_on_time),
      T(test_eta_past_the_lease_runs_exactly_once),
      T(test_canceled_task_never_runs),
      T(test_paused_queue_is_not_taken),
      T(test_dead_letters_and_retry_from_dead),
      T(test_a_task_whose_workers_keep_dying_fails_at_the_limit),
      T(test_broker_restart_loses_nothing),
      T(test_worker_refuses_an_evicting_broker),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
