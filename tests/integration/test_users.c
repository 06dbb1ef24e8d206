/* The users module end to end: a real redis-server, the real worker with
 * --module users --module notify, a real SQLite file per test, read back
 * with SQLite itself. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"

/* Users created at once by four children in the concurrency test. */
#define CONCURRENT_USERS 200

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t worker;
  char dir[HARNESS_DIR_MAX];
  char db[PATH_MAX], notify_log[PATH_MAX], log[PATH_MAX];
  int n;  /* tests run: each gets its own database file */
} suite;

static void stop_worker(suite *s) {
  if (s->worker <= 0) return;
  int status = harness_stop(s->worker, SIGTERM, HARNESS_DEADLINE_MS);
  s->worker = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) harness_dump_log(s->log);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(harness_log_is_clean(s->log));
}

static void start_worker(suite *s, const char *concurrency) {
  const char *args[] = {"--module", "users",       "--module", "notify", "--queues",
                        "default,again", "--concurrency", concurrency, NULL};
  s->worker = harness_worker(&s->redis, args, s->log);
  assert_true(s->worker > 0);
}

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_redis_start(&s->redis, false, NULL) != 0) return -1;
  if (harness_tmpdir(s->dir, sizeof s->dir) != 0) return -1;
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->dir);
  snprintf(s->notify_log, sizeof s->notify_log, "%s/notify.log", s->dir);
  setenv("CELER_NOTIFY_LOG", s->notify_log, 1);
  if ((s->client = harness_client(&s->redis)) == NULL) return -1;
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  if (s->worker > 0) harness_stop(s->worker, SIGKILL, HARNESS_DEADLINE_MS);
  celer_client_free(s->client);
  harness_redis_stop(&s->redis);
  harness_rmtree(s->dir);
  free(s);
  return 0;
}

/* An empty broker and a new database file (the worker reads
 * CELER_USERS_DB from the environment it inherits). */
static int test_setup(void **state) {
  suite *s = *state;
  snprintf(s->db, sizeof s->db, "%s/users-%d.db", s->dir, ++s->n);
  setenv("CELER_USERS_DB", s->db, 1);
  return harness_flush(&s->redis);
}

static int test_teardown(void **state) {
  stop_worker(*state);
  return 0;
}

/* Enqueues task with kwargs (JSON text) on queue with id (both may be
 * NULL) and returns its final record (caller decrefs). */
static json_t *run(suite *s, const char *task, const char *kwargs, const char *queue,
                   const char *id) {
  json_t *kw = json_loads(kwargs, 0, NULL);
  if (kw == NULL) fail_msg("bad JSON in the test: %s", kwargs);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.queue = queue;
  o.id = id;
  char got[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, task, NULL, kw, &o, got), 0);
  json_decref(kw);
  json_t *rec = NULL;
  if (celer_wait(s->client, queue, got, HARNESS_DEADLINE_MS, &rec) != 0) {
    harness_dump_log(s->log);
    fail_msg("waiting for %s: %s", got, celer_client_errstr(s->client));
  }
  return rec;
}

static const char *state_of(const json_t *rec) {
  return json_string_value(json_object_get(rec, "state"));
}

static const char *message_of(const json_t *rec) {
  const char *m = json_string_value(json_object_get(json_object_get(rec, "error"), "message"));
  return m ? m : "";
}

/* An integer from the database (the first column of the first row). */
static long long db_int(const suite *s, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  long long v = -1;
  assert_int_equal(sqlite3_open_v2(s->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void test_create_and_get(void **state) {
  suite *s = *state;
  start_worker(s, "1");
  json_t *rec = run(s, "users.create",
                    "{\"username\": \"alice\", \"email\": \"alice@example.com\"}", NULL, NULL);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_t *user = json_object_get(rec, "result");
  json_int_t id = json_integer_value(json_object_get(user, "id"));
  assert_true(id > 0);
  assert_string_equal(json_string_value(json_object_get(user, "username")), "alice");
  assert_string_equal(json_string_value(json_object_get(user, "email")), "alice@example.com");
  assert_true(json_integer_value(json_object_get(user, "created_at")) > 0);
  assert_null(json_object_get(user, "welcome"));
  json_decref(rec);
  assert_int_equal(db_int(s, "SELECT count(*) FROM users WHERE username = 'alice'"), 1);
  assert_int_equal(
      db_int(s, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);

  char kw[64];
  snprintf(kw, sizeof kw, "{\"id\": %lld}", (long long)id);
  rec = run(s, "users.get", kw, NULL, NULL);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  assert_string_equal(json_string_value(json_object_get(json_object_get(rec, "result"), "email")),
                      "alice@example.com");
  json_decref(rec);
  rec = run(s, "users.get", "{\"username\": \"ALICE\"}", NULL, NULL);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(rec, "result"), "id")), id);
  json_decref(rec);
  rec = run(s, "users.get", "{\"username\": \"nobody\"}", NULL, NULL);
  assert_string_equal(state_of(rec), "FAILED");
  assert_string_equal(message_of(rec), "kwargs.username: no user is named 'nobody'");
  json_decref(rec);
  rec = run(s, "users.get", "{}", NULL, NULL);
  assert_string_equal(state_of(rec), "FAILED");
  assert_string_equal(message_of(rec), "kwargs: give exactly one of id and username");
  json_decref(rec);
}

static void test_invalid_input_each_rule(void **state) {
  suite *s = *state;
  start_worker(s, "1");
  static const char *const cases[][2] = {
      {"{\"email\": \"a@example.com\"}", "kwargs.username: required"},
      {"{\"username\": 7, \"email\": \"a@example.com\"}", "kwargs.username: expected a string"},
      {"{\"username\": \"bob\"}", "kwargs.email: required"},
      {"{\"username\": \"bob\", \"email\": [1]}", "kwargs.email: expected a string"},
      {"{\"username\": \"ab\", \"email\": \"a@example.com\"}",
       "kwargs.username: must be 3 to 32 characters, got 2"},
      {"{\"username\": \"abcdefghijabcdefghijabcdefghijabc\", \"email\": \"a@example.com\"}",
       "kwargs.username: must be 3 to 32 characters, got 33"},
      {"{\"username\": \"1bob\", \"email\": \"a@example.com\"}",
       "kwargs.username: must start with a letter"},
      {"{\"username\": \"bo b\", \"email\": \"a@example.com\"}",
       "kwargs.username: only letters, digits, '_', '.' and '-' are allowed (character 3 is "
       "not)"},
      {"{\"username\": \"bob\", \"email\": \"bob.example.com\"}",
       "kwargs.email: not a valid address: no '@'"},
      {"{\"username\": \"bob\", \"email\": \"bob@x@example.com\"}",
       "kwargs.email: not a valid address: more than one '@'"},
      {"{\"username\": \"bob\", \"email\": \"@example.com\"}",
       "kwargs.email: not a valid address: nothing before the '@'"},
      {"{\"username\": \"bob\", \"email\": "
       "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com\"}",
       "kwargs.email: not a valid address: more than 64 characters before the '@'"},
      {"{\"username\": \"bob\", \"email\": \"bo(b@example.com\"}",
       "kwargs.email: not a valid address: a character before the '@' is not allowed"},
      {"{\"username\": \"bob\", \"email\": \"bo..b@example.com\"}",
       "kwargs.email: not a valid address: a '.' at the start or end of the name, or two in a "
       "row"},
      {"{\"username\": \"bob\", \"email\": \"bob@localhost\"}",
       "kwargs.email: not a valid address: the domain has no '.'"},
      {"{\"username\": \"bob\", \"email\": \"bob@-x.example.com\"}",
       "kwargs.email: not a valid address: the domain is not a host name"},
      {"{\"username\": \"bob\", \"email\": \"bob@example.c0m\"}",
       "kwargs.email: not a valid address: the top-level domain is not letters"},
      {"{\"username\": \"bob\", \"email\": \"bob@example.c\"}",
       "kwargs.email: not a valid address: the top-level domain is one letter"},
      {"{\"username\": \"bob\", \"email\": \"b@"
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com\"}",
       "kwargs.email: not a valid address: longer than 254 characters"},
      {"{\"username\": \"bob\", \"email\": \"bob@example.com\", \"notify\": \"yes\"}",
       "kwargs.notify: expected true or false"},
      {"{\"username\": \"bob\", \"email\": \"bob@example.com\", \"notify_url\": \"ftp://x\"}",
       "kwargs.notify_url: must be an http:// or https:// URL of at most 2048 characters"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *rec = run(s, "users.create", cases[i][0], NULL, NULL);
    if (strcmp(state_of(rec), "FAILED") != 0 || strcmp(message_of(rec), cases[i][1]) != 0)
      fail_msg("case %zu: %s: got %s \"%s\"", i, cases[i][0], state_of(rec), message_of(rec));
    /* Failed at once: no retry. */
    assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 0);
    json_decref(rec);
  }
  /* Input is checked before the database is even opened. */
  assert_int_not_equal(access(s->db, F_OK), 0);
}

static void test_duplicates_name_the_field(void **state) {
  suite *s = *state;
  start_worker(s, "1");
  json_t *rec = run(s, "users.create",
                    "{\"username\": \"carol\", \"email\": \"carol@example.com\"}", NULL, NULL);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_decref(rec);
  rec = run(s, "users.create",
            "{\"username\": \"Carol\", \"email\": \"other@example.com\", \"notify\": true}", NULL,
            NULL);
  assert_string_equal(state_of(rec), "FAILED");
  assert_string_equal(message_of(rec), "kwargs.username: 'Carol' is already taken");
  assert_string_equal(json_string_value(json_object_get(json_object_get(rec, "error"), "type")),
                      "UserExists");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 0);
  json_decref(rec);
  rec = run(s, "users.create",
            "{\"username\": \"carol2\", \"email\": \"CAROL@example.com\", \"notify\": true}", NULL,
            NULL);
  assert_string_equal(state_of(rec), "FAILED");
  assert_string_equal(message_of(rec), "kwargs.email: 'CAROL@example.com' is already registered");
  json_decref(rec);
  assert_int_equal(db_int(s, "SELECT count(*) FROM users"), 1);
  /* A failed create sends no welcome: the stream only ever held the
   * three creates. */
  const char *info[] = {"XINFO", "STREAM", "celer:{default}:stream", NULL};
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, info, &out), 0);
  const char *added = out ? strstr(out, "entries-added\n") : NULL;
  assert_non_null(added);
  assert_int_equal(atoi(added + strlen("entries-added\n")), 3);
  free(out);
}

static void test_redelivery_returns_the_same_user(void **state) {
  suite *s = *state;
  start_worker(s, "1");
  const char *kw = "{\"username\": \"dave\", \"email\": \"dave@example.com\"}";
  json_t *first = run(s, "users.create", kw, NULL, "create-dave");
  assert_string_equal(state_of(first), "SUCCEEDED");
  /* The same task id again, on another queue (a fresh record there, so
   * its result is visible): the user created the first time. */
  json_t *again = run(s, "users.create", kw, "again", "create-dave");
  assert_string_equal(state_of(again), "SUCCEEDED");
  assert_true(json_equal(json_object_get(first, "result"), json_object_get(again, "result")));
  json_decref(first);
  json_decref(again);
  assert_int_equal(db_int(s, "SELECT count(*) FROM users"), 1);
  /* A different task for the same name is a duplicate, not a replay. */
  json_t *other = run(s, "users.create", kw, NULL, "create-dave-2");
  assert_string_equal(state_of(other), "FAILED");
  json_decref(other);
}

static void test_welcome_follow_up_on_the_log_channel(void **state) {
  suite *s = *state;
  start_worker(s, "1");
  json_t *rec = run(s, "users.create",
                    "{\"username\": \"erin\", \"email\": \"erin@example.com\", \"notify\": true}",
                    NULL, NULL);
  if (strcmp(state_of(rec), "SUCCEEDED") != 0) fail_msg("%s", message_of(rec));
  const char *welcome =
      json_string_value(json_object_get(json_object_get(rec, "result"), "welcome"));
  assert_non_null(welcome);
  json_t *sent = NULL;
  assert_int_equal(celer_wait(s->client, NULL, welcome, HARNESS_DEADLINE_MS, &sent), 0);
  if (strcmp(state_of(sent), "SUCCEEDED") != 0) fail_msg("welcome: %s", message_of(sent));
  assert_string_equal(json_string_value(json_object_get(sent, "task")), "notify.send");
  json_decref(sent);
  const char *argv[] = {"cat", s->notify_log, NULL};
  char *out = NULL;
  assert_int_equal(harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS), 0);
  char want[128];
  snprintf(want, sizeof want, "\"id\":\"%s\",\"to\":\"erin@example.com\"", welcome);
  assert_non_null(strstr(out, want));
  assert_non_null(strstr(out, "\"message\":\"Welcome, erin!\""));
  free(out);
  json_decref(rec);
}

static void test_concurrent_creates_from_four_children(void **state) {
  suite *s = *state;
  start_worker(s, "4");
  celer_batch_item *items = calloc(CONCURRENT_USERS, sizeof *items);
  json_t **kws = calloc(CONCURRENT_USERS, sizeof *kws);
  assert_non_null(items);
  assert_non_null(kws);
  for (int i = 0; i < CONCURRENT_USERS; i++) {
    char name[32], email[64];
    snprintf(name, sizeof name, "user%03d", i);
    snprintf(email, sizeof email, "user%03d@example.com", i);
    kws[i] = json_pack("{ssss}", "username", name, "email", email);
    items[i].task = "users.create";
    items[i].kwargs = kws[i];
    celer_enqueue_options_init(&items[i].opts);
  }
  assert_int_equal(celer_enqueue_batch(s->client, items, CONCURRENT_USERS), 0);
  int succeeded = 0, retried = 0;
  for (int i = 0; i < CONCURRENT_USERS; i++) {
    json_t *rec = NULL;
    assert_int_equal(celer_wait(s->client, NULL, items[i].id, HARNESS_DEADLINE_MS, &rec), 0);
    if (strcmp(state_of(rec), "SUCCEEDED") == 0) succeeded++;
    else print_error("%s: %s %s\n", items[i].id, state_of(rec), message_of(rec));
    if (json_integer_value(json_object_get(rec, "attempt")) > 0) {
      retried++;
      char *text = json_dumps(rec, 0);
      print_error("%s: retried: %s\n", items[i].id, text ? text : "");
      free(text);
    }
    json_decref(rec);
    json_decref(kws[i]);
  }
  free(items);
  free(kws);
  assert_int_equal(succeeded, CONCURRENT_USERS);
  assert_int_equal(retried, 0); /* no "database is locked" retry either */
  assert_int_equal(db_int(s, "SELECT count(*) FROM users"), CONCURRENT_USERS);
  assert_int_equal(db_int(s, "SELECT count(DISTINCT id) FROM users"), CONCURRENT_USERS);
  stop_worker(s);
  const char *grep[] = {"grep", "-c", "database is locked", s->log, NULL};
  char *out = NULL;
  harness_run(grep, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
  assert_non_null(out);
  assert_int_equal(atoi(out), 0);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_create_and_get, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_invalid_input_each_rule, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_duplicates_name_the_field, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_redelivery_returns_the_same_user, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_welcome_follow_up_on_the_log_channel, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_creates_from_four_children, test_setup,
                                      test_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
