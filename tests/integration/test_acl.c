/* Redis least privilege (docs/security.md): a real redis-server given the
 * three users of docs/redis-acl.conf exactly as written there. Each role
 * does its work through the real programs (libceler for the producer,
 * celer-worker, taskctl for the operator) and is refused, by Redis, the
 * commands it must not run. Passwords never show in /proc/PID/cmdline. */
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

/* Words in one ACL line: the rules are a few dozen. */
#define ACL_WORDS_MAX 120
/* A task scheduled this far ahead is still waiting when the test looks. */
#define LATER_MS 2000

typedef struct role {
  const char *user;
  char password[64];
  char url[128];
} role;

typedef struct suite {
  harness_redis redis;
  char dir[HARNESS_DIR_MAX];
  role producer, worker, operator;
  pid_t worker_pid;
  char log[PATH_MAX];
} suite;

/* Applies every `user NAME RULES...` line of the ACL file with the role's
 * password; returns how many users were made, or -1. */
static int apply_acl_file(suite *s) {
  FILE *f = fopen(CELER_ACL_FILE, "r");
  if (f == NULL) return -1;
  char line[4096];
  int users = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "user ", 5) != 0) continue;
    const char *args[ACL_WORDS_MAX + 4];
    size_t n = 0;
    args[n++] = "ACL";
    args[n++] = "SETUSER";
    char *save = NULL;
    strtok_r(line, " \t\n", &save); /* "user" */
    char *name = strtok_r(NULL, " \t\n", &save);
    if (name == NULL) continue;
    args[n++] = name;
    args[n++] = "reset";
    for (char *w = strtok_r(NULL, " \t\n", &save); w && n < ACL_WORDS_MAX;
         w = strtok_r(NULL, " \t\n", &save))
      args[n++] = w;
    char pass[80];
    const role *r = strcmp(name, s->producer.user) == 0   ? &s->producer
                    : strcmp(name, s->worker.user) == 0   ? &s->worker
                    : strcmp(name, s->operator.user) == 0 ? &s->operator
                                                          : NULL;
    if (r == NULL) continue;
    snprintf(pass, sizeof pass, ">%s", r->password);
    args[n++] = pass;
    args[n] = NULL;
    char *out = NULL;
    int rc = harness_cli(&s->redis, args, &out);
    int ok = rc == 0 && out && strncmp(out, "OK", 2) == 0;
    if (!ok) fprintf(stderr, "ACL SETUSER %s: %s\n", name, out ? out : "");
    free(out);
    if (!ok) {
      fclose(f);
      return -1;
    }
    users++;
  }
  fclose(f);
  return users;
}

/* docs/security.md shows each rule line of the ACL file verbatim: the
 * page cannot drift from what this test applies. */
static void test_doc_shows_the_rules(void **state) {
  (void)state;
  FILE *doc = fopen(CELER_SECURITY_DOC, "r");
  assert_non_null(doc);
  char *text = calloc(1, 1 << 20);
  assert_non_null(text);
  size_t n = fread(text, 1, (1 << 20) - 1, doc);
  fclose(doc);
  text[n] = '\0';
  FILE *f = fopen(CELER_ACL_FILE, "r");
  assert_non_null(f);
  char line[4096];
  int users = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "user ", 5) != 0) continue;
    users++;
    if (strstr(text, line) == NULL) fail_msg("docs/security.md does not show: %s", line);
  }
  fclose(f);
  free(text);
  assert_int_equal(users, 3);
}

static void make_role(suite *s, role *r, const char *user) {
  char id[CELER_UUID_LEN + 1];
  celer_uuid4(id);
  r->user = user;
  snprintf(r->password, sizeof r->password, "pw-%s", id);
  snprintf(r->url, sizeof r->url, "redis://%s:%s@127.0.0.1:%d/0", user, r->password,
           s->redis.port);
}

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_tmpdir(s->dir, sizeof s->dir) != 0) return -1;
  if (harness_redis_start(&s->redis, true, NULL) != 0) return -1;
  make_role(s, &s->producer, "celer-producer");
  make_role(s, &s->worker, "celer-worker");
  make_role(s, &s->operator, "celer-operator");
  if (apply_acl_file(s) != 3) return -1;
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->dir);
  /* The worker's password is in its URL: the cmdline test looks for it. */
  const char *argv[] = {harness_bin("celer-worker"), "--broker", s->worker.url, "--module",
                        "testing", "--concurrency", "1", "--queues", "default", NULL};
  s->worker_pid = harness_spawn(argv, NULL, NULL, s->log);
  if (s->worker_pid <= 0) return -1;
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  int status = harness_stop(s->worker_pid, SIGTERM, HARNESS_DEADLINE_MS);
  int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!clean) fprintf(stderr, "the worker did not stop cleanly (status %d)\n", status);
  harness_redis_stop(&s->redis);
  harness_rmtree(s->dir);
  free(s);
  return clean ? 0 : -1;
}

/* Runs one command as r with redis-cli; returns its output (caller frees). */
static char *as_role(const suite *s, const role *r, const char *const *cmd) {
  const char *argv[32];
  size_t n = 0;
  char port[16];
  snprintf(port, sizeof port, "%d", s->redis.port);
  argv[n++] = "redis-cli";
  argv[n++] = "-p";
  argv[n++] = port;
  argv[n++] = "--user";
  argv[n++] = r->user;
  argv[n++] = "--pass";
  argv[n++] = r->password;
  argv[n++] = "--no-auth-warning";
  for (size_t i = 0; cmd[i] && n < 31; i++) argv[n++] = cmd[i];
  argv[n] = NULL;
  char *out = NULL;
  harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
  return out ? out : strdup("");
}

/* Asserts that Redis refuses cmd to r with NOPERM. */
#define REFUSED(s, r, ...)                                                  \
  do {                                                                      \
    const char *cmd_[] = {__VA_ARGS__, NULL};                               \
    char *out_ = as_role(s, r, cmd_);                                       \
    if (strstr(out_, "NOPERM") == NULL)                                     \
      fail_msg("%s was not refused %s: %s", (r)->user, cmd_[0], out_);      \
    free(out_);                                                             \
  } while (0)

static celer_client *producer_client(suite *s) {
  /* The producer's password comes from a file, not from its URL. */
  char pwfile[PATH_MAX], url[128];
  snprintf(pwfile, sizeof pwfile, "%s/producer.pw", s->dir);
  FILE *f = fopen(pwfile, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", s->producer.password);
  fclose(f);
  snprintf(url, sizeof url, "redis://%s@127.0.0.1:%d/0", s->producer.user, s->redis.port);
  celer_client_options o = {.broker_url = url, .password_file = pwfile};
  celer_client *c = celer_client_new(&o);
  assert_non_null(c);
  if (celer_client_connect(c) != 0) fail_msg("producer: %s", celer_client_errstr(c));
  return c;
}

static json_t *wait_final(celer_client *c, const char *id) {
  json_t *rec = NULL;
  if (celer_wait(c, "default", id, HARNESS_DEADLINE_MS, &rec) != 0)
    fail_msg("waiting for %s: %s", id, celer_client_errstr(c));
  return rec;
}

static void assert_state(const json_t *rec, const char *state) {
  assert_string_equal(json_string_value(json_object_get(rec, "state")), state);
}

/* The producer enqueues now, later and a task that fails once; the
 * worker runs all three; the producer reads their results. */
static void test_producer_and_worker_work(void **state) {
  suite *s = *state;
  celer_client *c = producer_client(s);
  char now[CELER_ID_MAX + 1], later[CELER_ID_MAX + 1], flaky[CELER_ID_MAX + 1];
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  assert_int_equal(celer_enqueue(c, "test.echo", NULL, NULL, &o, now), 0);
  o.countdown_ms = 300;
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, later), 0);
  celer_enqueue_options_init(&o);
  json_t *kw = json_pack("{si}", "times", 1);
  assert_int_equal(celer_enqueue(c, "test.fail", NULL, kw, &o, flaky), 0);
  json_decref(kw);
  json_t *rec = wait_final(c, now);
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
  rec = wait_final(c, later);
  assert_state(rec, "SUCCEEDED");
  json_decref(rec);
  rec = wait_final(c, flaky);
  assert_state(rec, "SUCCEEDED");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 1);
  json_decref(rec);
  celer_client_free(c);
}

static int taskctl(suite *s, const char *const *args, char **out) {
  const char *argv[24];
  size_t n = 0;
  argv[n++] = harness_bin("taskctl");
  argv[n++] = "--broker";
  argv[n++] = s->operator.url;
  for (size_t i = 0; args[i] && n < 23; i++) argv[n++] = args[i];
  argv[n] = NULL;
  char *o = NULL, *e = NULL;
  int rc = harness_run(argv, NULL, NULL, 0, &o, &e, HARNESS_DEADLINE_MS);
  if (rc != 0) fprintf(stderr, "taskctl %s: exit %d: %s\n", args[0], rc, e ? e : "");
  /* No secret in taskctl's output or errors. */
  if ((o && strstr(o, s->operator.password)) || (e && strstr(e, s->operator.password)))
    fail_msg("taskctl %s printed the password", args[0]);
  free(e);
  if (out) *out = o;
  else free(o);
  return rc;
}

/* The operator sees and steers: every taskctl command it needs. */
static void test_operator_works(void **state) {
  suite *s = *state;
  celer_client *c = producer_client(s);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = 60 * 1000;
  char id[CELER_ID_MAX + 1], dead[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, id), 0);
  celer_enqueue_options_init(&o);
  o.max_retries = 0;
  assert_int_equal(celer_enqueue(c, "test.fail", NULL, NULL, &o, dead), 0);
  json_t *rec = wait_final(c, dead);
  assert_state(rec, "FAILED");
  json_decref(rec);
  const char *ping[] = {"ping", NULL}, *queues[] = {"--json", "queues", NULL},
             *stats[] = {"--json", "stats", NULL}, *workers[] = {"--json", "workers", NULL},
             *deadl[] = {"--json", "dead", NULL}, *task[] = {"--json", "task", dead, NULL},
             *cancel[] = {"cancel", id, "--queue", "default", NULL},
             *pause[] = {"pause", "default", NULL}, *resume[] = {"resume", "default", NULL},
             *retry[] = {"retry", dead, "--queue", "default", NULL},
             *purge[] = {"purge", "other", "--ready", "--scheduled", "--dead", "--yes", NULL};
  assert_int_equal(taskctl(s, ping, NULL), 0);
  assert_int_equal(taskctl(s, queues, NULL), 0);
  assert_int_equal(taskctl(s, stats, NULL), 0);
  char *out = NULL;
  assert_int_equal(taskctl(s, workers, &out), 0);
  assert_non_null(strstr(out, "\"pid\""));
  free(out);
  assert_int_equal(taskctl(s, deadl, &out), 0);
  assert_non_null(strstr(out, dead));
  free(out);
  assert_int_equal(taskctl(s, task, NULL), 0);
  assert_int_equal(taskctl(s, cancel, NULL), 0);
  assert_int_equal(taskctl(s, pause, NULL), 0);
  assert_int_equal(taskctl(s, resume, NULL), 0);
  assert_int_equal(taskctl(s, retry, NULL), 0);
  assert_int_equal(taskctl(s, purge, NULL), 0);
  rec = wait_final(c, id);
  assert_state(rec, "CANCELED");
  json_decref(rec);
  celer_client_free(c);
}

static void test_producer_refused(void **state) {
  suite *s = *state;
  const role *p = &s->producer;
  REFUSED(s, p, "XREADGROUP", "GROUP", "workers", "thief", "COUNT", "1", "STREAMS",
          "celer:{default}:stream", ">");
  REFUSED(s, p, "XRANGE", "celer:{default}:stream", "-", "+");
  REFUSED(s, p, "XDEL", "celer:{default}:stream", "0-1");
  REFUSED(s, p, "SET", "celer:{default}:result:forged", "{\"state\":\"SUCCEEDED\"}");
  REFUSED(s, p, "DEL", "celer:{default}:stream");
  REFUSED(s, p, "ZRANGE", "celer:{default}:scheduled", "0", "-1");
  REFUSED(s, p, "HSET", "celer:workers", "fake", "1");
  REFUSED(s, p, "GET", "other-app:secret");
  REFUSED(s, p, "EVAL", "return 1", "0");
  REFUSED(s, p, "SCRIPT", "LOAD", "return 1");
  REFUSED(s, p, "KEYS", "*");
  REFUSED(s, p, "FLUSHALL");
  REFUSED(s, p, "CONFIG", "GET", "*");
  REFUSED(s, p, "ACL", "LIST");
  REFUSED(s, p, "PUBLISH", "other-app:channel", "x");
}

static void test_worker_refused(void **state) {
  suite *s = *state;
  const role *w = &s->worker;
  REFUSED(s, w, "FLUSHALL");
  REFUSED(s, w, "FLUSHDB");
  REFUSED(s, w, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru");
  REFUSED(s, w, "CONFIG", "GET", "*");
  REFUSED(s, w, "KEYS", "*");
  REFUSED(s, w, "SCAN", "0");
  REFUSED(s, w, "ACL", "LIST");
  REFUSED(s, w, "EVAL", "return 1", "0");
  REFUSED(s, w, "SCRIPT", "FLUSH");
  REFUSED(s, w, "BGSAVE");
  REFUSED(s, w, "SHUTDOWN");
  REFUSED(s, w, "MONITOR");
  REFUSED(s, w, "CLIENT", "KILL", "TYPE", "normal");
  REFUSED(s, w, "GET", "other-app:secret");
  REFUSED(s, w, "SET", "other-app:secret", "x");
  /* A script it may load runs with its own permissions, no more. */
  const char *load[] = {"SCRIPT", "LOAD", "return redis.call('FLUSHALL')", NULL};
  char *sha = as_role(s, w, load);
  sha[strcspn(sha, "\r\n")] = '\0';
  assert_int_equal(strlen(sha), 40);
  const char *run[] = {"EVALSHA", sha, "0", NULL};
  char *out = as_role(s, w, run);
  /* Redis's words for a command refused inside a script. */
  if (strstr(out, "user executing the script can't run this command") == NULL)
    fail_msg("the worker's script ran FLUSHALL: %s", out);
  free(out);
  free(sha);
}

static void test_operator_refused(void **state) {
  suite *s = *state;
  const role *o = &s->operator;
  REFUSED(s, o, "XREADGROUP", "GROUP", "workers", "thief", "COUNT", "1", "STREAMS",
          "celer:{default}:stream", ">");
  REFUSED(s, o, "FLUSHALL");
  REFUSED(s, o, "CONFIG", "SET", "appendonly", "no");
  REFUSED(s, o, "KEYS", "*");
  REFUSED(s, o, "ACL", "LIST");
  REFUSED(s, o, "EVAL", "return 1", "0");
  REFUSED(s, o, "SHUTDOWN");
  REFUSED(s, o, "GET", "other-app:secret");
}

/* True when /proc/pid/cmdline holds needle (arguments joined by spaces). */
static int cmdline_has(pid_t pid, const char *needle) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  for (size_t i = 0; i < n; i++)
    if (buf[i] == '\0') buf[i] = ' ';
  buf[n] = '\0';
  return strstr(buf, needle) != NULL;
}

/* True once the broker lists a connection of user. */
static int connected(suite *s, const char *user) {
  const char *list[] = {"CLIENT", "LIST", NULL};
  char *out = NULL;
  harness_cli(&s->redis, list, &out);
  char needle[96];
  snprintf(needle, sizeof needle, "user=%s ", user);
  int yes = out && strstr(out, needle) != NULL;
  free(out);
  return yes;
}

static void test_no_password_in_cmdline(void **state) {
  suite *s = *state;
  /* The worker has long been connected (it ran the tasks above). */
  assert_true(connected(s, s->worker.user));
  assert_false(cmdline_has(s->worker_pid, s->worker.password));
  assert_true(cmdline_has(s->worker_pid, "celer-worker:***"));
  /* taskctl, while it waits for a task scheduled a little later. */
  celer_client *c = producer_client(s);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = LATER_MS;
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, id), 0);
  /* The --flag=value form this time (the worker used --flag value). */
  char broker_arg[160];
  snprintf(broker_arg, sizeof broker_arg, "--broker=%s", s->operator.url);
  const char *wait_argv[] = {harness_bin("taskctl"), broker_arg, "result", id,
                             "--queue", "default", "--wait", "30", NULL};
  char out_path[PATH_MAX];
  snprintf(out_path, sizeof out_path, "%s/taskctl.out", s->dir);
  pid_t pid = harness_spawn(wait_argv, NULL, out_path, out_path);
  assert_true(pid > 0);
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  while (!connected(s, s->operator.user) && celer_mono_ms() < deadline) {
  }
  assert_true(connected(s, s->operator.user));
  assert_false(cmdline_has(pid, s->operator.password));
  assert_true(cmdline_has(pid, "celer-operator:***"));
  int status = harness_wait(pid, HARNESS_DEADLINE_MS);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  celer_client_free(c);
  /* Nor in the worker's log, which names its broker at start-up. */
  FILE *f = fopen(s->log, "r");
  assert_non_null(f);
  char *log = calloc(1, 1 << 20);
  assert_non_null(log);
  size_t n = fread(log, 1, (1 << 20) - 1, f);
  fclose(f);
  log[n] = '\0';
  assert_non_null(strstr(log, "celer-worker:***@"));
  assert_null(strstr(log, s->worker.password));
  free(log);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_doc_shows_the_rules),
      cmocka_unit_test(test_producer_and_worker_work),
      cmocka_unit_test(test_operator_works),
      cmocka_unit_test(test_producer_refused),
      cmocka_unit_test(test_worker_refused),
      cmocka_unit_test(test_operator_refused),
      cmocka_unit_test(test_no_password_in_cmdline),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
