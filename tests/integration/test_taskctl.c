/* taskctl against a private redis-server and a real celer-worker: exit
 * codes, JSON shapes, usage errors found before connecting, waiting, and
 * searching every queue. No sleeps: every wait is a --wait with a limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "celer/envelope.h"
#include "harness/harness.h"

/* Most words one taskctl command line of these tests has. */
#define TC_ARGV_MAX 32
/* How long a --wait that expects a worker to finish may take. */
#define TC_WAIT_ARG "30"
/* A worker-served queue other than "default". */
#define TC_EXTRA_QUEUE "extra"
/* A queue no worker listens to. */
#define TC_IDLE_QUEUE "idle"
/* Another, for purge alone, so its counts are exactly what it sent. */
#define TC_PURGE_QUEUE "idle-purge"

typedef struct fixture {
  harness_redis redis;
  pid_t worker;
  char dir[PATH_MAX];           /* worker logs, config files */
  char dead_tcp_url[64];        /* a loopback port where nothing listens */
  char dead_unix_url[PATH_MAX + 32];
  int dead_port;
} fixture;

/* One finished taskctl run; out and err are owned. */
typedef struct outcome {
  int code;
  char *out;
  char *err;
} outcome;

static void outcome_free(outcome *o) {
  free(o->out);
  free(o->err);
  o->out = o->err = NULL;
}

/* Runs taskctl with env (may be NULL), then broker flag (when broker is not
 * NULL) and the NULL-terminated words in ap. */
static void run_va(outcome *o, const char *const *env, const char *broker, va_list ap) {
  const char *argv[TC_ARGV_MAX + 1];
  int n = 0;
  argv[n++] = harness_bin("taskctl");
  if (broker) {
    argv[n++] = "--broker";
    argv[n++] = broker;
  }
  for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *)) {
    assert_true(n < TC_ARGV_MAX);
    argv[n++] = w;
  }
  argv[n] = NULL;
  o->out = o->err = NULL;
  o->code = harness_run(argv, env, NULL, 0, &o->out, &o->err, HARNESS_DEADLINE_MS);
  assert_non_null(o->out);
  assert_non_null(o->err);
}

/* taskctl --broker <broker> words... NULL */
static void tc(outcome *o, const char *broker, ...) {
  va_list ap;
  va_start(ap, broker);
  run_va(o, NULL, broker, ap);
  va_end(ap);
}

static void tc_env(outcome *o, const char *const *env, const char *broker, ...) {
  va_list ap;
  va_start(ap, broker);
  run_va(o, env, broker, ap);
  va_end(ap);
}

static void print_outcome(const outcome *o) {
  print_message("exit %d\nstdout: %s\nstderr: %s\n", o->code, o->out, o->err);
}

static void expect_code(const outcome *o, int code) {
  if (o->code != code) print_outcome(o);
  assert_int_equal(o->code, code);
}

/* stderr is exactly one line "taskctl: ..." */
static void expect_one_error_line(const outcome *o) {
  size_t len = strlen(o->err);
  if (strncmp(o->err, "taskctl: ", 9) != 0 || len == 0 || o->err[len - 1] != '\n' ||
      strchr(o->err, '\n') != o->err + len - 1)
    print_outcome(o);
  assert_true(strncmp(o->err, "taskctl: ", 9) == 0);
  assert_true(len > 10);
  assert_int_equal(o->err[len - 1], '\n');
  assert_ptr_equal(strchr(o->err, '\n'), o->err + len - 1);
}

static void expect_contains(const char *text, const char *part) {
  if (strstr(text, part) == NULL) print_message("expected '%s' in: %s\n", part, text);
  assert_non_null(strstr(text, part));
}

/* A failed run: the code, one error line naming part, nothing on stdout. */
static void expect_failure(const outcome *o, int code, const char *part) {
  expect_code(o, code);
  expect_one_error_line(o);
  if (part) expect_contains(o->err, part);
  assert_string_equal(o->out, "");
}

/* stdout parsed as exactly one JSON document (caller decrefs). */
static json_t *stdout_json(const outcome *o) {
  json_error_t jerr;
  json_t *v = json_loads(o->out, JSON_DECODE_ANY, &jerr);
  if (v == NULL) print_message("stdout is not JSON (%s): %s\n", jerr.text, o->out);
  assert_non_null(v);
  return v;
}

static const char *str_field(const json_t *obj, const char *key) {
  const char *s = json_string_value(json_object_get(obj, key));
  if (s == NULL) print_message("no string field '%s'\n", key);
  assert_non_null(s);
  return s;
}

static json_int_t int_field(const json_t *obj, const char *key) {
  const json_t *v = json_object_get(obj, key);
  if (!json_is_integer(v)) print_message("no integer field '%s'\n", key);
  assert_true(json_is_integer(v));
  return json_integer_value(v);
}

/* The id taskctl enqueue printed as its only line of text. */
static void take_id_line(const outcome *o, char id[CELER_ID_MAX + 1]) {
  size_t len = strlen(o->out);
  assert_true(len >= 2 && len <= CELER_ID_MAX + 1);
  assert_int_equal(o->out[len - 1], '\n');
  memcpy(id, o->out, len - 1);
  id[len - 1] = '\0';
  assert_true(celer_valid_id(id));
}

/* The width of the key column taskctl uses for rec: its longest key. */
static int key_width(const json_t *rec) {
  int width = 0;
  const char *key;
  json_t *value;
  json_object_foreach((json_t *)rec, key, value) {
    if ((int)strlen(key) > width) width = (int)strlen(key);
  }
  return width;
}

/* text holds the table row "key  value" (not the first row). */
static void expect_row(const char *text, int width, const char *key, const char *value) {
  char line[512];
  snprintf(line, sizeof line, "\n%-*s  %s\n", width, key, value);
  expect_contains(text, line);
}

/* ------------------------------------------------------------------ */
/* Fixture                                                              */

/* A loopback port that was free a moment ago and has no listener. */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static int start_worker(fixture *f) {
  char bin[PATH_MAX], out[PATH_MAX + 32], err[PATH_MAX + 32];
  snprintf(bin, sizeof bin, "%s", harness_bin("celer-worker"));
  snprintf(out, sizeof out, "%s/worker.out", f->dir);
  snprintf(err, sizeof err, "%s/worker.err", f->dir);
  const char *argv[] = {bin, "--broker", f->redis.url, "--module", "testing",
                        "--queues", "default," TC_EXTRA_QUEUE, NULL};
  f->worker = harness_spawn(argv, NULL, out, err);
  return f->worker > 0 ? 0 : -1;
}

static int group_setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  f->worker = -1;
  *state = f;
  if (harness_redis_start(&f->redis, false, NULL) != 0) return -1;
  if (harness_tmpdir(f->dir, sizeof f->dir) != 0) return -1;
  f->dead_port = dead_port();
  if (f->dead_port <= 0) return -1;
  snprintf(f->dead_tcp_url, sizeof f->dead_tcp_url, "redis://127.0.0.1:%d/0", f->dead_port);
  snprintf(f->dead_unix_url, sizeof f->dead_unix_url, "unix://%s/absent.sock", f->dir);
  return start_worker(f);
}

static int group_teardown(void **state) {
  fixture *f = *state;
  if (f == NULL) return 0;
  if (f->worker > 0) harness_stop(f->worker, SIGTERM, HARNESS_DEADLINE_MS);
  /* A tmux server left by a failed top test (it ends with its session). */
  char sock[PATH_MAX + 16];
  snprintf(sock, sizeof sock, "%s/tmux.sock", f->dir);
  if (f->dir[0] && access(sock, F_OK) == 0) {
    const char *kill_server[] = {"tmux", "-S", sock, "kill-server", NULL};
    pid_t pid = harness_spawn(kill_server, NULL, "/dev/null", "/dev/null");
    if (pid > 0 && harness_wait(pid, HARNESS_DEADLINE_MS) == -1)
      harness_stop(pid, SIGKILL, HARNESS_DEADLINE_MS);
  }
  harness_redis_stop(&f->redis);
  if (f->dir[0]) harness_rmtree(f->dir);
  free(f);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Help and usage errors                                                */

static void test_help(void **state) {
  (void)state;
  outcome o;
  tc(&o, NULL, "--help", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, "Usage: taskctl");
  expect_contains(o.out, "enqueue");
  expect_contains(o.out, "Example:");
  assert_string_equal(o.err, "");
  outcome_free(&o);

  tc(&o, NULL, "enqueue", "--help", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, "Usage: taskctl [global options] enqueue TASK");
  expect_contains(o.out, "--countdown SEC");
  expect_contains(o.out, "--wait [SEC]");
  expect_contains(o.out, "Example:");
  outcome_free(&o);

  tc(&o, NULL, "help", "result", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, "result ID");
  outcome_free(&o);

  /* Every operator command is listed, and has a usage and an example. */
  static const char *const listed[] = {"\n  cancel    ", "\n  pause     ", "\n  resume    ",
                                       "\n  dead      ", "\n  retry     ", "\n  purge     "};
  tc(&o, NULL, "--help", NULL);
  expect_code(&o, 0);
  for (size_t i = 0; i < sizeof listed / sizeof listed[0]; i++) expect_contains(o.out, listed[i]);
  outcome_free(&o);
  static const struct {
    const char *name, *usage, *example;
  } ops[] = {
      {"cancel", "cancel ID [--queue Q]", "taskctl cancel "},
      {"pause", "pause Q\n", "taskctl pause "},
      {"resume", "resume Q\n", "taskctl resume "},
      {"dead", "dead [--queue Q] [--limit N] [--offset N]", "taskctl dead "},
      {"retry", "retry ID | --all [--queue Q]", "taskctl retry "},
      {"purge", "purge Q [--ready] [--scheduled] [--dead] --yes", "taskctl purge "},
  };
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    char usage[128];
    snprintf(usage, sizeof usage, "Usage: taskctl [global options] %s", ops[i].usage);
    tc(&o, NULL, ops[i].name, "--help", NULL);
    expect_code(&o, 0);
    expect_contains(o.out, usage);
    expect_contains(o.out, "JSON: {\"");
    expect_contains(o.out, "Example:\n  ");
    expect_contains(o.out, ops[i].example);
    assert_string_equal(o.err, "");
    outcome_free(&o);
  }
}

/* Each case runs against a dead broker: a usage error must be found before
 * taskctl tries to connect (else it would exit 3). */
static void test_usage_errors(void **state) {
  fixture *f = *state;
  static const struct {
    const char *argv[8];
    const char *says;
  } cases[] = {
      {{"frobnicate"}, "unknown command 'frobnicate'"},
      {{NULL}, "no command given"},
      {{"ping", "--bogus"}, "no option '--bogus'"},
      {{"--bogus", "ping"}, "unknown option '--bogus'"},
      {{"ping", "--json=yes"}, "takes no value"},
      {{"ping", "extra"}, "unexpected argument 'extra'"},
      {{"enqueue"}, "enqueue needs TASK"},
      {{"enqueue", "test.echo", "--queue"}, "needs a value"},
      {{"enqueue", "test.echo", "--args", "[1,"}, "--args is not valid JSON"},
      {{"enqueue", "test.echo", "--args", "{\"a\": 1}"},
       "--args must be a JSON array, not an object"},
      {{"enqueue", "test.echo", "--args", "7"}, "--args must be a JSON array, not a number"},
      {{"enqueue", "test.echo", "--kwargs", "[1]"},
       "--kwargs must be a JSON object, not an array"},
      {{"enqueue", "test.echo", "--kwargs", "{\"a\": 1, \"a\": 2}"}, "--kwargs is not valid JSON"},
      {{"enqueue", "test.echo", "--countdown", "1", "--eta", "2026-11-26T10:00:00Z"},
       "exclude each other"},
      {{"enqueue", "test.echo", "--countdown", "-1"}, "--countdown must be a number of seconds"},
      {{"enqueue", "test.echo", "--countdown", "1e3"}, "--countdown must be a number of seconds"},
      {{"enqueue", "test.echo", "--eta", "2026-13-01T00:00:00Z"}, "--eta must be an RFC 3339"},
      {{"enqueue", "test.echo", "--eta", "2026-02-29T00:00:00Z"}, "--eta must be an RFC 3339"},
      {{"enqueue", "test.echo", "--eta", "2026-11-26T10:00:00"}, "--eta must be an RFC 3339"},
      {{"enqueue", "test.echo", "--eta", "tomorrow"}, "--eta must be an RFC 3339"},
      {{"enqueue", "test.echo", "--max-retries", "many"}, "--max-retries must be"},
      {{"enqueue", "test.echo", "--timeout", "0"}, "--timeout must be more than 0"},
      {{"enqueue", "test.echo", "--wait=soon"}, "--wait must be a number of seconds"},
      {{"enqueue", "test.echo", "--id", "bad id!"}, "'bad id!' is not a valid task id"},
      {{"enqueue", "bad task!"}, "'bad task!' is not a valid task name"},
      {{"enqueue", "test.echo", "--queue", "no space"}, "not a valid queue name"},
      {{"task", "bad/id"}, "'bad/id' is not a valid task id"},
      {{"task"}, "task needs ID"},
      {{"task", "a", "b"}, "unexpected argument 'b'"},
      {{"result", "ok-id", "--wait", "--queue", "bad queue"}, "not a valid queue name"},
      {{"--namespace", "bad ns!", "ping"}, "not a valid namespace"},
      {{"cancel"}, "cancel needs ID"},
      {{"cancel", "bad id!"}, "'bad id!' is not a valid task id"},
      {{"cancel", "ok-id", "--queue", "bad queue"}, "not a valid queue name"},
      {{"pause"}, "pause needs Q"},
      {{"pause", "bad queue"}, "'bad queue' is not a valid queue name"},
      {{"resume", "a/b"}, "'a/b' is not a valid queue name"},
      {{"resume", "a", "b"}, "unexpected argument 'b'"},
      {{"dead", "--limit", "many"}, "--limit must be a whole number from 0 to 10000, not 'many'"},
      {{"dead", "--limit", "10001"}, "--limit must be a whole number from 0 to 10000"},
      {{"dead", "--offset", "-1"}, "--offset must be a whole number"},
      {{"dead", "--queue", "bad queue"}, "not a valid queue name"},
      {{"dead", "extra"}, "unexpected argument 'extra'"},
      {{"retry"}, "retry needs a task ID or --all"},
      {{"retry", "some-id", "--all"}, "give a task ID or --all, not both"},
      {{"retry", "bad id!"}, "'bad id!' is not a valid task id"},
      {{"retry", "--all", "--queue", "bad queue"}, "not a valid queue name"},
      {{"retry", "--all=yes"}, "takes no value"},
      {{"purge"}, "purge needs Q"},
      {{"purge", "bad queue", "--yes"}, "not a valid queue name"},
      {{"purge", "q", "--ready"},
       "purge would remove the ready tasks of queue q for good; add --yes to do it"},
      {{"purge", "q", "--everything", "--yes"}, "purge has no option '--everything'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *const *a = cases[i].argv;
    outcome o;
    tc(&o, f->dead_tcp_url, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], NULL);
    if (o.code != 2 || strstr(o.err, cases[i].says) == NULL)
      print_message("case %zu: expected exit 2 saying '%s'\n", i, cases[i].says);
    expect_failure(&o, 2, cases[i].says);
    outcome_free(&o);
  }
}

/* ------------------------------------------------------------------ */
/* ping                                                                 */

static void test_ping_ok(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "ping", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, "PONG");
  assert_string_equal(o.err, "");
  outcome_free(&o);

  /* --json before and after the command word. */
  for (int after = 0; after < 2; after++) {
    if (after) tc(&o, f->redis.url, "ping", "--json", NULL);
    else tc(&o, f->redis.url, "--json", "ping", NULL);
    expect_code(&o, 0);
    assert_string_equal(o.err, "");
    json_t *doc = stdout_json(&o);
    assert_true(json_is_object(doc));
    assert_int_equal(json_object_size(doc), 2);
    assert_true(json_is_true(json_object_get(doc, "ok")));
    assert_true(json_is_number(json_object_get(doc, "latency_ms")));
    assert_true(json_number_value(json_object_get(doc, "latency_ms")) >= 0);
    json_decref(doc);
    outcome_free(&o);
  }
}

static void test_ping_dead_unix(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->dead_unix_url, "ping", NULL);
  expect_failure(&o, 3, "cannot reach the broker");
  expect_contains(o.err, "absent.sock");
  outcome_free(&o);
}

static void test_ping_dead_tcp(void **state) {
  fixture *f = *state;
  char where[32], url[96];
  snprintf(where, sizeof where, "127.0.0.1:%d", f->dead_port);
  outcome o;
  tc(&o, f->dead_tcp_url, "--json", "ping", NULL);
  expect_failure(&o, 3, "cannot reach the broker");
  expect_contains(o.err, where);
  outcome_free(&o);

  /* A password in the URL is never shown. */
  snprintf(url, sizeof url, "redis://operator:s3cr3t-pw@127.0.0.1:%d/0", f->dead_port);
  tc(&o, url, "ping", NULL);
  expect_failure(&o, 3, where);
  assert_null(strstr(o.err, "s3cr3t-pw"));
  outcome_free(&o);
}

/* ------------------------------------------------------------------ */
/* Settings: flag > environment > config file > default                */

static void test_config_precedence(void **state) {
  fixture *f = *state;
  char path[PATH_MAX + 32], env_url[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/taskctl.conf", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fprintf(fp, "# points at nothing\nCELER_BROKER_URL = %s\n", f->dead_tcp_url);
  assert_int_equal(fclose(fp), 0);

  outcome o;
  tc(&o, NULL, "--config", path, "ping", NULL);
  expect_failure(&o, 3, "cannot reach the broker");
  outcome_free(&o);

  tc(&o, f->redis.url, "--config", path, "ping", NULL);
  expect_code(&o, 0);
  outcome_free(&o);

  snprintf(env_url, sizeof env_url, "CELER_BROKER_URL=%s", f->redis.url);
  const char *env[] = {env_url, NULL};
  tc_env(&o, env, NULL, "ping", "--config", path, NULL);
  expect_code(&o, 0);
  outcome_free(&o);

  snprintf(path, sizeof path, "%s/missing.conf", f->dir);
  tc(&o, f->redis.url, "--config", path, "ping", NULL);
  expect_failure(&o, 2, NULL);
  outcome_free(&o);
}

/* ------------------------------------------------------------------ */
/* enqueue, task, result without a worker                               */

static void test_enqueue_then_not_found(void **state) {
  fixture *f = *state;
  char id[CELER_ID_MAX + 1], msg[128];
  outcome o;
  tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_IDLE_QUEUE, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.err, "");
  take_id_line(&o, id);
  assert_int_equal(strlen(id), 36); /* a UUID */
  outcome_free(&o);

  snprintf(msg, sizeof msg, "no record for task %s; it may be pending, unknown, or expired",
           id);
  tc(&o, f->redis.url, "task", id, NULL);
  expect_failure(&o, 1, msg);
  outcome_free(&o);

  tc(&o, f->redis.url, "--json", "result", id, NULL);
  expect_failure(&o, 1, "no record for task");
  outcome_free(&o);

  tc(&o, f->redis.url, "result", id, "--queue", TC_IDLE_QUEUE, "--wait", "0.2", NULL);
  expect_failure(&o, 4, "did not finish within 0.2 s");
  outcome_free(&o);
}

static void test_enqueue_json(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "--json", "enqueue", "--id", "tc-json-1", "test.noop", "--queue",
     TC_IDLE_QUEUE, NULL);
  expect_code(&o, 0);
  json_t *doc = stdout_json(&o);
  assert_int_equal(json_object_size(doc), 1);
  assert_string_equal(str_field(doc, "id"), "tc-json-1");
  json_decref(doc);
  outcome_free(&o);

  tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_IDLE_QUEUE, "--json", NULL);
  expect_code(&o, 0);
  doc = stdout_json(&o);
  assert_true(celer_valid_id(str_field(doc, "id")));
  json_decref(doc);
  outcome_free(&o);
}

/* Finds the scheduled envelope of task id in queue's scheduled set. */
static json_t *scheduled_envelope(const fixture *f, const char *queue, const char *id,
                                  long long *score) {
  char key[128];
  snprintf(key, sizeof key, "celer:{%s}:scheduled", queue);
  const char *args[] = {"ZRANGE", key, "0", "-1", "WITHSCORES", NULL};
  char *out = NULL;
  assert_int_equal(harness_cli(&f->redis, args, &out), 0);
  assert_non_null(out);
  json_t *found = NULL;
  char *save = NULL;
  for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    json_t *env = json_loads(line, 0, NULL);
    if (env && json_is_string(json_object_get(env, "id")) &&
        strcmp(json_string_value(json_object_get(env, "id")), id) == 0) {
      char *next = strtok_r(NULL, "\n", &save);
      assert_non_null(next);
      *score = strtoll(next, NULL, 10);
      found = env;
      break;
    }
    json_decref(env);
  }
  free(out);
  if (found == NULL) print_message("no scheduled envelope for %s in %s\n", id, key);
  assert_non_null(found);
  return found;
}

/* Every time option reaches the envelope with the right value. */
static void test_enqueue_options(void **state) {
  fixture *f = *state;
  outcome o;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long before = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  tc(&o, f->redis.url, "enqueue", "test.echo", "--queue", TC_IDLE_QUEUE, "--id", "tc-opts-1",
     "--eta", "2099-01-02T03:04:05.250+01:00", "--expires", "60.5", "--max-retries", "3",
     "--timeout", "1.5", "--args", "[]", "--kwargs", "{\"k\": [true]}", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "tc-opts-1\n");
  outcome_free(&o);

  /* 2099-01-02T02:04:05.250Z */
  struct tm tm = {.tm_year = 199, .tm_mon = 0, .tm_mday = 2, .tm_hour = 2, .tm_min = 4,
                  .tm_sec = 5};
  long long eta = (long long)timegm(&tm) * 1000 + 250;
  long long score = 0;
  json_t *env = scheduled_envelope(f, TC_IDLE_QUEUE, "tc-opts-1", &score);
  assert_int_equal(score, eta);
  assert_int_equal(int_field(env, "eta"), eta);
  assert_int_equal(int_field(env, "max_retries"), 3);
  assert_int_equal(int_field(env, "timeout_ms"), 1500);
  assert_true(int_field(env, "expires") >= before + 60500);
  assert_true(int_field(env, "expires") <= before + 60500 + HARNESS_DEADLINE_MS);
  assert_string_equal(str_field(env, "task"), "test.echo");
  json_t *kwargs = json_pack("{s:[b]}", "k", 1);
  assert_true(json_equal(json_object_get(env, "kwargs"), kwargs));
  json_decref(kwargs);
  json_decref(env);

  /* A UTC eta with a fraction of many digits, and a bare --countdown. */
  tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_IDLE_QUEUE, "--id", "tc-opts-2",
     "--eta", "2099-01-02T02:04:05.250999Z", NULL);
  expect_code(&o, 0);
  outcome_free(&o);
  env = scheduled_envelope(f, TC_IDLE_QUEUE, "tc-opts-2", &score);
  assert_int_equal(score, eta);
  json_decref(env);
}

static void test_wait_timeout(void **state) {
  fixture *f = *state;
  char id[CELER_ID_MAX + 1];
  outcome o;
  tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_IDLE_QUEUE, "--wait", "0.2", NULL);
  expect_code(&o, 4);
  expect_one_error_line(&o);
  expect_contains(o.err, "did not finish within 0.2 s");
  take_id_line(&o, id); /* the id is still printed */
  expect_contains(o.err, id);
  outcome_free(&o);
}

/* ------------------------------------------------------------------ */
/* With the worker                                                      */

static void test_echo_wait_and_result(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "enqueue", "test.echo", "--args", "[1,\"a\"]", "--wait", TC_WAIT_ARG,
     "--json", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.err, "");
  json_t *rec = stdout_json(&o);
  outcome_free(&o);
  char id[CELER_ID_MAX + 1];
  snprintf(id, sizeof id, "%s", str_field(rec, "id"));
  assert_true(celer_valid_id(id));
  assert_string_equal(str_field(rec, "state"), "SUCCEEDED");
  assert_string_equal(str_field(rec, "task"), "test.echo");
  assert_string_equal(str_field(rec, "queue"), "default");
  assert_int_equal(int_field(rec, "attempt"), 0);
  assert_true(strlen(str_field(rec, "worker")) > 0);
  json_int_t enq = int_field(rec, "enqueued_at"), start = int_field(rec, "started_at"),
             end = int_field(rec, "finished_at");
  assert_true(enq > 0 && enq <= start && start <= end);
  json_t *want = json_loads("{\"args\":[1,\"a\"],\"kwargs\":{}}", 0, NULL);
  assert_true(json_equal(json_object_get(rec, "result"), want));
  json_decref(want);

  /* result prints the value itself, compact, in both forms. */
  tc(&o, f->redis.url, "--json", "result", id, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "{\"args\":[1,\"a\"],\"kwargs\":{}}\n");
  assert_string_equal(o.err, "");
  outcome_free(&o);
  tc(&o, f->redis.url, "result", "--queue", "default", id, "--wait", "1", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "{\"args\":[1,\"a\"],\"kwargs\":{}}\n");
  outcome_free(&o);

  /* task --json prints the same record. */
  tc(&o, f->redis.url, "task", id, "--json", NULL);
  expect_code(&o, 0);
  json_t *again = stdout_json(&o);
  assert_true(json_equal(again, rec));
  json_decref(again);
  outcome_free(&o);

  /* task as a table: key/value rows aligned on the longest key, readable
   * times. Every field of the record is shown. */
  tc(&o, f->redis.url, "task", id, NULL);
  expect_code(&o, 0);
  int width = key_width(rec);
  char line[256];
  snprintf(line, sizeof line, "%-*s  %s\n", width, "id", id);
  assert_true(strncmp(o.out, line, strlen(line)) == 0);
  expect_row(o.out, width, "task", "test.echo");
  expect_row(o.out, width, "state", "SUCCEEDED");
  expect_row(o.out, width, "queue", "default");
  expect_row(o.out, width, "attempt", "0");
  expect_row(o.out, width, "result", "{\"args\":[1,\"a\"],\"kwargs\":{}}");
  snprintf(line, sizeof line, "\n%-*s  ", width, "finished_at");
  const char *fin = strstr(o.out, line);
  assert_non_null(fin);
  const char *val = fin + strlen(line); /* 2026-11-26T10:00:00.123Z (3s ago) */
  assert_true(val[4] == '-' && val[10] == 'T' && val[19] == '.' && val[23] == 'Z');
  const char *eol = strchr(val, '\n');
  assert_non_null(eol);
  assert_true(strncmp(eol - 5, " ago)", 5) == 0 || strncmp(eol - 9, "just now)", 9) == 0);
  outcome_free(&o);
  json_decref(rec);
}

static void test_fail_wait_and_result(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "--json", "enqueue", "test.fail", "--kwargs", "{\"message\": \"boom\"}",
     "--max-retries", "0", "--wait", TC_WAIT_ARG, NULL);
  expect_code(&o, 1);
  expect_one_error_line(&o);
  expect_contains(o.err, "FAILED");
  expect_contains(o.err, "boom");
  json_t *rec = stdout_json(&o);
  outcome_free(&o);
  assert_string_equal(str_field(rec, "state"), "FAILED");
  json_t *err = json_object_get(rec, "error");
  assert_true(json_is_object(err));
  expect_contains(str_field(err, "message"), "boom");
  assert_true(strlen(str_field(err, "type")) > 0);
  char id[CELER_ID_MAX + 1], shown[256];
  snprintf(id, sizeof id, "%s", str_field(rec, "id"));
  snprintf(shown, sizeof shown, "%s: %s", str_field(err, "type"), str_field(err, "message"));
  int width = key_width(rec);
  json_decref(rec);

  tc(&o, f->redis.url, "result", id, NULL);
  expect_failure(&o, 1, "FAILED");
  expect_contains(o.err, "boom");
  outcome_free(&o);

  /* A FAILED record is an answer for task. */
  tc(&o, f->redis.url, "task", id, NULL);
  expect_code(&o, 0);
  expect_row(o.out, width, "state", "FAILED");
  expect_row(o.out, width, "error", shown);
  outcome_free(&o);
}

static void test_task_searches_queues(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_EXTRA_QUEUE, "--id", "tc-extra-1",
     "--wait", TC_WAIT_ARG, "--json", NULL);
  expect_code(&o, 0);
  outcome_free(&o);

  tc(&o, f->redis.url, "--json", "task", "tc-extra-1", NULL);
  expect_code(&o, 0);
  json_t *rec = stdout_json(&o);
  assert_string_equal(str_field(rec, "queue"), TC_EXTRA_QUEUE);
  assert_string_equal(str_field(rec, "state"), "SUCCEEDED");
  assert_true(json_is_null(json_object_get(rec, "result")));
  json_decref(rec);
  outcome_free(&o);

  tc(&o, f->redis.url, "task", "tc-extra-1", "--queue", "default", NULL);
  expect_failure(&o, 1, "no record for task tc-extra-1 in queue default");
  outcome_free(&o);

  tc(&o, f->redis.url, "result", "tc-extra-1", "--json", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "null\n");
  outcome_free(&o);
}

/* A fractional countdown holds the task back at least that long. */
static void test_countdown_fraction(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "enqueue", "test.echo", "--countdown", "0.5", "--wait", TC_WAIT_ARG,
     "--json", NULL);
  expect_code(&o, 0);
  json_t *rec = stdout_json(&o);
  outcome_free(&o);
  assert_string_equal(str_field(rec, "state"), "SUCCEEDED");
  assert_true(int_field(rec, "started_at") - int_field(rec, "enqueued_at") >= 500);
  json_decref(rec);
}

/* ------------------------------------------------------------------ */
/* Operator commands: pause, resume, cancel, dead, retry, purge         */

/* redis-cli COMMAND KEY answered with one integer. */
static long long cli_int(const fixture *f, const char *command, const char *key) {
  const char *args[] = {command, key, NULL};
  char *out = NULL, *end = NULL;
  assert_int_equal(harness_cli(&f->redis, args, &out), 0);
  assert_non_null(out);
  long long v = strtoll(out, &end, 10);
  if (end == out || *end != '\n') print_message("redis-cli %s %s said: %s\n", command, key, out);
  assert_true(end != out && *end == '\n');
  free(out);
  return v;
}

/* stdout is exactly the JSON document want (text, parsed and compared). */
static void expect_json_doc(const outcome *o, const char *want) {
  json_t *doc = stdout_json(o), *expected = json_loads(want, 0, NULL);
  assert_non_null(expected);
  if (!json_equal(doc, expected)) print_message("expected %s, got %s", want, o->out);
  assert_true(json_equal(doc, expected));
  json_decref(expected);
  json_decref(doc);
}

static void test_pause_resume(void **state) {
  fixture *f = *state;
  const char *flag = "celer:{default}:paused";
  outcome o;
  tc(&o, f->redis.url, "pause", "default", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "paused queue default\n");
  assert_string_equal(o.err, "");
  outcome_free(&o);
  assert_int_equal(cli_int(f, "EXISTS", flag), 1);

  /* Pausing twice is no error. */
  tc(&o, f->redis.url, "--json", "pause", "default", NULL);
  expect_code(&o, 0);
  expect_json_doc(&o, "{\"queue\": \"default\", \"paused\": true}");
  outcome_free(&o);

  /* Sent while paused, it is not lost: it runs once the queue resumes. */
  tc(&o, f->redis.url, "enqueue", "test.noop", "--id", "tc-paused-1", NULL);
  expect_code(&o, 0);
  outcome_free(&o);

  tc(&o, f->redis.url, "resume", "default", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "resumed queue default\n");
  assert_string_equal(o.err, "");
  outcome_free(&o);
  assert_int_equal(cli_int(f, "EXISTS", flag), 0);

  tc(&o, f->redis.url, "resume", "default", "--json", NULL);
  expect_code(&o, 0);
  expect_json_doc(&o, "{\"queue\": \"default\", \"paused\": false}");
  outcome_free(&o);
  assert_int_equal(cli_int(f, "EXISTS", flag), 0);

  tc(&o, f->redis.url, "--json", "result", "tc-paused-1", "--wait", TC_WAIT_ARG, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "null\n");
  outcome_free(&o);
}

/* task ID --json: the record's state and queue. */
static void expect_record(const fixture *f, const char *id, const char *queue,
                          const char *state_name) {
  outcome o;
  tc(&o, f->redis.url, "--json", "task", id, NULL);
  expect_code(&o, 0);
  json_t *rec = stdout_json(&o);
  assert_string_equal(str_field(rec, "id"), id);
  assert_string_equal(str_field(rec, "queue"), queue);
  assert_string_equal(str_field(rec, "state"), state_name);
  json_decref(rec);
  outcome_free(&o);
}

static void test_cancel(void **state) {
  fixture *f = *state;
  char id[CELER_ID_MAX + 1], line[256], doc[256];
  outcome o;
  /* Waiting in the scheduled set of default. */
  tc(&o, f->redis.url, "enqueue", "test.noop", "--countdown", "30", NULL);
  expect_code(&o, 0);
  take_id_line(&o, id);
  outcome_free(&o);

  tc(&o, f->redis.url, "cancel", id, NULL);
  expect_code(&o, 0);
  snprintf(line, sizeof line, "canceled task %s in queue default\n", id);
  assert_string_equal(o.out, line);
  assert_string_equal(o.err, "");
  outcome_free(&o);
  expect_record(f, id, "default", "CANCELED");

  snprintf(line, sizeof line, "task %s is already CANCELED; nothing changed", id);
  tc(&o, f->redis.url, "cancel", id, NULL);
  expect_failure(&o, 1, line);
  outcome_free(&o);

  /* --json still prints the answer, and the exit code still says it. */
  tc(&o, f->redis.url, "--json", "cancel", id, "--queue", "default", NULL);
  expect_code(&o, 1);
  expect_one_error_line(&o);
  expect_contains(o.err, line);
  snprintf(doc, sizeof doc, "{\"id\": \"%s\", \"state\": \"CANCELED\", \"canceled\": false}", id);
  expect_json_doc(&o, doc);
  outcome_free(&o);

  /* An id nobody sent yet: canceled in advance. */
  tc(&o, f->redis.url, "--json", "cancel", "tc-cancel-unsent", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.err, "");
  expect_json_doc(&o,
                  "{\"id\": \"tc-cancel-unsent\", \"state\": \"CANCELED\", \"canceled\": true}");
  outcome_free(&o);
  expect_record(f, "tc-cancel-unsent", "default", "CANCELED");

  /* --queue names where a task without a record waits. */
  tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_EXTRA_QUEUE, "--countdown", "30",
     "--id", "tc-cancel-extra", NULL);
  expect_code(&o, 0);
  outcome_free(&o);
  tc(&o, f->redis.url, "cancel", "tc-cancel-extra", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "canceled task tc-cancel-extra in queue " TC_EXTRA_QUEUE "\n");
  outcome_free(&o);
  expect_record(f, "tc-cancel-extra", TC_EXTRA_QUEUE, "CANCELED");
  /* Without --queue the record tells where it is. */
  tc(&o, f->redis.url, "cancel", "tc-cancel-extra", NULL);
  expect_failure(&o, 1, "task tc-cancel-extra is already CANCELED; nothing changed");
  outcome_free(&o);

  /* A finished task stays as it ended. */
  tc(&o, f->redis.url, "enqueue", "test.noop", "--id", "tc-cancel-done", "--wait", TC_WAIT_ARG,
     NULL);
  expect_code(&o, 0);
  outcome_free(&o);
  tc(&o, f->redis.url, "cancel", "tc-cancel-done", NULL);
  expect_failure(&o, 1, "task tc-cancel-done is already SUCCEEDED; nothing changed");
  outcome_free(&o);
  tc(&o, f->redis.url, "cancel", "tc-cancel-done", "--json", NULL);
  expect_code(&o, 1);
  expect_json_doc(&o,
                  "{\"id\": \"tc-cancel-done\", \"state\": \"SUCCEEDED\", \"canceled\": false}");
  outcome_free(&o);
  expect_record(f, "tc-cancel-done", "default", "SUCCEEDED");
}

/* dead --queue extra --json [--limit N --offset N]: checks the document's
 * shape and the total; returns its tasks (caller decrefs). */
static json_t *dead_list(const fixture *f, json_int_t total, const char *limit,
                         const char *offset) {
  outcome o;
  if (limit)
    tc(&o, f->redis.url, "--json", "dead", "--queue", TC_EXTRA_QUEUE, "--limit", limit,
       "--offset", offset, NULL);
  else
    tc(&o, f->redis.url, "dead", "--queue", TC_EXTRA_QUEUE, "--json", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.err, "");
  json_t *doc = stdout_json(&o);
  outcome_free(&o);
  assert_int_equal(json_object_size(doc), 3);
  assert_string_equal(str_field(doc, "queue"), TC_EXTRA_QUEUE);
  assert_int_equal(int_field(doc, "total"), total);
  json_t *tasks = json_object_get(doc, "tasks");
  assert_true(json_is_array(tasks));
  json_incref(tasks);
  json_decref(doc);
  return tasks;
}

/* One row of the dead listing: its id, record state and error message,
 * and an envelope naming task. */
static void expect_dead_row(const json_t *row, const char *id, const char *state_name,
                            const char *task, const char *message) {
  assert_int_equal(json_object_size(row), 4);
  assert_string_equal(str_field(row, "id"), id);
  assert_true(int_field(row, "dead_at") > 0);
  const json_t *rec = json_object_get(row, "record");
  assert_true(json_is_object(rec));
  assert_string_equal(str_field(rec, "id"), id);
  assert_string_equal(str_field(rec, "state"), state_name);
  assert_int_equal(int_field(rec, "attempt"), 0);
  expect_contains(str_field(json_object_get(rec, "error"), "message"), message);
  json_t *env = json_loads(str_field(row, "envelope"), 0, NULL);
  assert_non_null(env);
  assert_string_equal(str_field(env, "id"), id);
  assert_string_equal(str_field(env, "task"), task);
  json_decref(env);
}

/* The final record of a task moved back by retry: it fails again. */
static void expect_fails_again(const fixture *f, const char *id, const char *state_name) {
  outcome o;
  char says[128];
  snprintf(says, sizeof says, "task %s %s", id, state_name);
  tc(&o, f->redis.url, "result", id, "--queue", TC_EXTRA_QUEUE, "--wait", TC_WAIT_ARG, NULL);
  expect_failure(&o, 1, says);
  outcome_free(&o);
}

/* Runs in queue extra, whose dead set holds only what this test puts. */
static void test_dead_and_retry(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "enqueue", "test.fail", "--queue", TC_EXTRA_QUEUE, "--id", "tc-dead-1",
     "--kwargs", "{\"delay\": 0, \"message\": \"boom\"}", "--max-retries", "0", "--wait",
     TC_WAIT_ARG, NULL);
  expect_code(&o, 1); /* the record on stdout, the outcome on stderr */
  expect_one_error_line(&o);
  expect_contains(o.err, "task tc-dead-1 FAILED");
  outcome_free(&o);

  json_t *tasks = dead_list(f, 1, NULL, NULL);
  assert_int_equal(json_array_size(tasks), 1);
  expect_dead_row(json_array_get(tasks, 0), "tc-dead-1", "FAILED", "test.fail", "boom");
  /* The table's error cell: "Type: message", whole when it fits. */
  const json_t *err = json_object_get(json_object_get(json_array_get(tasks, 0), "record"), "error");
  char cell[256];
  snprintf(cell, sizeof cell, "  %s: %s\n", str_field(err, "type"), str_field(err, "message"));
  assert_true(strlen(cell) <= 100 - 43 + 3);
  json_decref(tasks);

  /* The table: a header, one row cut to the width, the count. */
  tc(&o, f->redis.url, "dead", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_code(&o, 0);
  assert_true(strncmp(o.out, "ID         TASK       DEAD SINCE  ATTEMPT  ERROR\n", 49) == 0);
  const char *row = strchr(o.out, '\n') + 1;
  assert_true(strncmp(row, "tc-dead-1  test.fail  ", 22) == 0);
  const char *eol = strchr(row, '\n');
  assert_non_null(eol);
  assert_true(eol - row <= 100);
  /* Columns of 9, 9, 10 and 7 characters; ATTEMPT is right-aligned. */
  assert_true(strncmp(row + 34, "      0", 7) == 0);
  assert_true(strncmp(row + 41, cell, strlen(cell)) == 0);
  assert_string_equal(eol + 1, "1 of 1 dead task in queue " TC_EXTRA_QUEUE "\n");
  outcome_free(&o);

  tc(&o, f->redis.url, "retry", "tc-dead-1", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "moved 1 task back to queue " TC_EXTRA_QUEUE "\n");
  assert_string_equal(o.err, "");
  outcome_free(&o);

  /* It runs again from its first attempt, fails, and is dead again. */
  expect_fails_again(f, "tc-dead-1", "FAILED");
  tc(&o, f->redis.url, "task", "tc-dead-1", "--json", NULL);
  expect_code(&o, 0);
  json_t *rec = stdout_json(&o);
  outcome_free(&o);
  assert_string_equal(str_field(rec, "state"), "FAILED");
  assert_int_equal(int_field(rec, "attempt"), 0);
  json_decref(rec);

  /* A task no worker knows is REJECTED, and kept as well. */
  tc(&o, f->redis.url, "enqueue", "no.such", "--queue", TC_EXTRA_QUEUE, "--id", "tc-dead-2",
     "--wait", TC_WAIT_ARG, NULL);
  expect_code(&o, 1);
  expect_one_error_line(&o);
  expect_contains(o.err, "task tc-dead-2 REJECTED");
  outcome_free(&o);

  tasks = dead_list(f, 2, NULL, NULL);
  assert_int_equal(json_array_size(tasks), 2);
  expect_dead_row(json_array_get(tasks, 0), "tc-dead-2", "REJECTED", "no.such", "no.such");
  expect_dead_row(json_array_get(tasks, 1), "tc-dead-1", "FAILED", "test.fail", "boom");
  json_decref(tasks);
  tasks = dead_list(f, 2, "1", "1");
  assert_int_equal(json_array_size(tasks), 1);
  assert_string_equal(str_field(json_array_get(tasks, 0), "id"), "tc-dead-1");
  json_decref(tasks);
  tasks = dead_list(f, 2, "5", "2");
  assert_int_equal(json_array_size(tasks), 0);
  json_decref(tasks);

  tc(&o, f->redis.url, "--json", "retry", "--all", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_code(&o, 0);
  expect_json_doc(&o, "{\"queue\": \"" TC_EXTRA_QUEUE "\", \"moved\": 2}");
  outcome_free(&o);
  expect_fails_again(f, "tc-dead-1", "FAILED");
  expect_fails_again(f, "tc-dead-2", "REJECTED");
  tasks = dead_list(f, 2, NULL, NULL);
  json_decref(tasks);

  tc(&o, f->redis.url, "retry", "NOSUCH", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_failure(&o, 1, "task NOSUCH is not in the dead set of queue " TC_EXTRA_QUEUE);
  outcome_free(&o);
  tc(&o, f->redis.url, "--json", "retry", "NOSUCH", NULL);
  expect_failure(&o, 1, "task NOSUCH is not in the dead set of queue default");
  outcome_free(&o);

  /* Emptied, nothing is left to move. */
  tc(&o, f->redis.url, "--json", "purge", TC_EXTRA_QUEUE, "--dead", "--yes", NULL);
  expect_code(&o, 0);
  expect_json_doc(&o, "{\"queue\": \"" TC_EXTRA_QUEUE
                      "\", \"ready\": 0, \"scheduled\": 0, \"dead\": 2}");
  outcome_free(&o);
  tasks = dead_list(f, 0, NULL, NULL);
  assert_int_equal(json_array_size(tasks), 0);
  json_decref(tasks);
  tc(&o, f->redis.url, "retry", "--all", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "moved 0 tasks back to queue " TC_EXTRA_QUEUE "\n");
  outcome_free(&o);
  tc(&o, f->redis.url, "dead", "--queue", TC_EXTRA_QUEUE, NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "0 of 0 dead tasks in queue " TC_EXTRA_QUEUE "\n");
  outcome_free(&o);

  /* Without --queue: the default queue. */
  tc(&o, f->redis.url, "dead", "--json", "--limit", "0", NULL);
  expect_code(&o, 0);
  json_t *doc = stdout_json(&o);
  outcome_free(&o);
  assert_string_equal(str_field(doc, "queue"), "default");
  assert_true(int_field(doc, "total") >= 0);
  assert_int_equal(json_array_size(json_object_get(doc, "tasks")), 0);
  json_decref(doc);
}

static void test_purge(void **state) {
  fixture *f = *state;
  const char *stream = "celer:{" TC_PURGE_QUEUE "}:stream",
             *sched = "celer:{" TC_PURGE_QUEUE "}:scheduled";
  outcome o;
  for (int i = 0; i < 3; i++) {
    if (i == 0) tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_PURGE_QUEUE, NULL);
    else
      tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_PURGE_QUEUE, "--countdown", "60",
         NULL);
    expect_code(&o, 0);
    outcome_free(&o);
  }
  assert_int_equal(cli_int(f, "XLEN", stream), 1);
  assert_int_equal(cli_int(f, "ZCARD", sched), 2);

  tc(&o, f->redis.url, "purge", TC_PURGE_QUEUE, NULL);
  expect_failure(&o, 2,
                 "purge would remove the ready, scheduled and dead tasks of queue " TC_PURGE_QUEUE
                 " for good; add --yes to do it");
  outcome_free(&o);
  tc(&o, f->redis.url, "--json", "purge", TC_PURGE_QUEUE, "--scheduled", "--dead", NULL);
  expect_failure(&o, 2, "would remove the scheduled and dead tasks of queue " TC_PURGE_QUEUE);
  outcome_free(&o);
  assert_int_equal(cli_int(f, "XLEN", stream), 1);
  assert_int_equal(cli_int(f, "ZCARD", sched), 2);

  tc(&o, f->redis.url, "purge", TC_PURGE_QUEUE, "--ready", "--yes", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "purged queue " TC_PURGE_QUEUE ": 1 ready, 0 scheduled, 0 dead\n");
  assert_string_equal(o.err, "");
  outcome_free(&o);
  assert_int_equal(cli_int(f, "XLEN", stream), 0);
  assert_int_equal(cli_int(f, "ZCARD", sched), 2);

  tc(&o, f->redis.url, "--json", "purge", "--yes", TC_PURGE_QUEUE, NULL);
  expect_code(&o, 0);
  expect_json_doc(&o, "{\"queue\": \"" TC_PURGE_QUEUE
                      "\", \"ready\": 0, \"scheduled\": 2, \"dead\": 0}");
  outcome_free(&o);
  assert_int_equal(cli_int(f, "ZCARD", sched), 0);

  tc(&o, f->redis.url, "purge", TC_PURGE_QUEUE, "--yes", NULL);
  expect_code(&o, 0);
  assert_string_equal(o.out, "purged queue " TC_PURGE_QUEUE ": 0 ready, 0 scheduled, 0 dead\n");
  outcome_free(&o);
}

/* ------------------------------------------------------------------ */
/* queues, stats, workers, top                                          */

/* A queue no worker serves, for exact counts. */
#define TC_VIEW_QUEUE "view-q"
/* How long a poll for a worker's state may take; each round is short. */
#define TC_POLL_MS 30000
/* Between two polls: long enough not to hammer the broker. */
#define TC_POLL_PAUSE_NS (50 * 1000 * 1000L)

static void pause_briefly(void) {
  struct timespec ts = {0, TC_POLL_PAUSE_NS};
  nanosleep(&ts, NULL);
}

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `--json queues --queue q` as one object (caller decrefs). */
static json_t *queue_row(const fixture *f, const char *queue) {
  outcome o;
  tc(&o, f->redis.url, "--json", "queues", "--queue", queue, NULL);
  expect_code(&o, 0);
  json_t *list = stdout_json(&o);
  outcome_free(&o);
  assert_true(json_is_array(list));
  assert_int_equal(json_array_size(list), 1);
  json_t *row = json_incref(json_array_get(list, 0));
  json_decref(list);
  assert_string_equal(str_field(row, "queue"), queue);
  return row;
}

static void test_view_help(void **state) {
  (void)state;
  static const struct {
    const char *name, *usage;
  } views[] = {
      {"queues", "queues [--queue Q] [--limit N] [--offset N]"},
      {"stats", "stats\n"},
      {"workers", "workers [--limit N] [--offset N]"},
      {"top", "top [--interval SEC] [--iterations N]"},
  };
  outcome o;
  tc(&o, NULL, "--help", NULL);
  expect_code(&o, 0);
  for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
    char listed[32];
    snprintf(listed, sizeof listed, "\n  %-9s ", views[i].name);
    expect_contains(o.out, listed);
  }
  outcome_free(&o);
  for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
    char usage[128], example[64];
    snprintf(usage, sizeof usage, "Usage: taskctl [global options] %s", views[i].usage);
    snprintf(example, sizeof example, "Example:\n  taskctl ");
    tc(&o, NULL, views[i].name, "--help", NULL);
    expect_code(&o, 0);
    expect_contains(o.out, usage);
    expect_contains(o.out, "JSON: ");
    expect_contains(o.out, example);
    expect_contains(o.out, views[i].name);
    assert_string_equal(o.err, "");
    outcome_free(&o);
  }
}

/* Usage errors of the views are found before connecting; an unreachable
 * broker is exit 3 for each of them. */
static void test_view_errors(void **state) {
  fixture *f = *state;
  static const struct {
    const char *argv[6];
    const char *says;
  } cases[] = {
      {{"queues", "--limit", "many"}, "--limit must be a whole number from 0 to 10000"},
      {{"queues", "--offset", "-2"}, "--offset must be a whole number"},
      {{"queues", "--queue", "bad queue"}, "not a valid queue name"},
      {{"queues", "extra"}, "unexpected argument 'extra'"},
      {{"stats", "--limit", "3"}, "stats has no option '--limit'"},
      {{"workers", "--limit", "10001"}, "--limit must be a whole number from 0 to 10000"},
      {{"top", "--interval", "0.01"}, "--interval must be at least 0.1 seconds"},
      {{"top", "--interval", "soon"}, "--interval must be a number of seconds"},
      {{"top", "--iterations", "0"}, "--iterations must be at least 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *const *a = cases[i].argv;
    outcome o;
    tc(&o, f->dead_tcp_url, a[0], a[1], a[2], a[3], a[4], a[5], NULL);
    if (o.code != 2) print_message("case %zu: expected exit 2 saying '%s'\n", i, cases[i].says);
    expect_failure(&o, 2, cases[i].says);
    outcome_free(&o);
  }
  static const char *const views[][3] = {
      {"queues", NULL, NULL}, {"stats", NULL, NULL}, {"workers", NULL, NULL},
      {"top", "--iterations", "1"}};
  for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
    for (int json = 0; json < 2; json++) {
      outcome o;
      if (json) tc(&o, f->dead_tcp_url, "--json", views[i][0], views[i][1], views[i][2], NULL);
      else tc(&o, f->dead_tcp_url, views[i][0], views[i][1], views[i][2], NULL);
      expect_failure(&o, 3, "cannot reach the broker");
      outcome_free(&o);
    }
  }
  outcome o;
  tc(&o, f->redis.url, "queues", "--queue", "never-used", NULL);
  expect_failure(&o, 1, "queue never-used is not known");
  outcome_free(&o);
  tc(&o, f->redis.url, "--json", "queues", "--queue", "never-used", NULL);
  expect_failure(&o, 1, "queue never-used is not known");
  outcome_free(&o);
}

/* Exact counts on a queue no worker serves: ready, scheduled, retrying
 * (a scheduled envelope with attempt > 0), paused; then the text table. */
static void test_queues_counts(void **state) {
  fixture *f = *state;
  outcome o;
  for (int i = 0; i < 3; i++) {
    tc(&o, f->redis.url, "enqueue", "test.echo", "--queue", TC_VIEW_QUEUE, "--args", "[1]",
       NULL);
    expect_code(&o, 0);
    outcome_free(&o);
  }
  for (int i = 0; i < 2; i++) {
    tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_VIEW_QUEUE, "--countdown", "600",
       NULL);
    expect_code(&o, 0);
    outcome_free(&o);
  }
  /* A retry waiting for its time, as a worker writes it: attempt 1 and the
   * error history, whose own "attempt" fields must not be counted. */
  const char *zadd[] = {"ZADD", "celer:{" TC_VIEW_QUEUE "}:scheduled", "9999999999999",
                        "{\"id\":\"retry-1\",\"task\":\"test.fail\",\"queue\":\"" TC_VIEW_QUEUE
                        "\",\"errors\":[{\"attempt\":0,\"type\":\"E\",\"message\":\"m\",\"at\":1}],"
                        "\"attempt\":1}",
                        NULL};
  assert_int_equal(harness_cli(&f->redis, zadd, NULL), 0);
  tc(&o, f->redis.url, "pause", TC_VIEW_QUEUE, NULL);
  expect_code(&o, 0);
  outcome_free(&o);

  json_t *row = queue_row(f, TC_VIEW_QUEUE);
  assert_int_equal(int_field(row, "ready"), 3);
  assert_int_equal(int_field(row, "active"), 0);
  assert_int_equal(int_field(row, "scheduled"), 3);
  assert_int_equal(int_field(row, "retrying"), 1);
  assert_int_equal(int_field(row, "dead"), 0);
  assert_int_equal(int_field(row, "processed"), 0);
  assert_int_equal(int_field(row, "failed"), 0);
  assert_true(json_is_true(json_object_get(row, "paused")));
  assert_true(json_is_number(json_object_get(row, "rate")));
  assert_null(json_object_get(row, "retrying_exact"));
  json_decref(row);

  /* Text: a header, the row aligned under it, the footer. No colour in a
   * pipe. */
  tc(&o, f->redis.url, "queues", "--queue", TC_VIEW_QUEUE, NULL);
  expect_code(&o, 0);
  expect_contains(o.out,
                  "QUEUE   READY  ACTIVE  SCHEDULED  RETRYING  DEAD  PROCESSED  FAILED  RATE/S  "
                  "PAUSED\n" TC_VIEW_QUEUE "      3       0          3         1     0          0"
                  "       0       0  paused\n1 of 1 queue\n");
  assert_null(strchr(o.out, '\033'));
  assert_string_equal(o.err, "");
  outcome_free(&o);

  tc(&o, f->redis.url, "resume", TC_VIEW_QUEUE, NULL);
  expect_code(&o, 0);
  outcome_free(&o);
  row = queue_row(f, TC_VIEW_QUEUE);
  assert_true(json_is_false(json_object_get(row, "paused")));
  json_decref(row);
}

/* Every known queue, by name, paged. */
static void test_queues_paging(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "--json", "queues", NULL);
  expect_code(&o, 0);
  json_t *all = stdout_json(&o);
  outcome_free(&o);
  size_t n = json_array_size(all);
  assert_true(n >= 3); /* default, extra, view-q at least */
  for (size_t i = 1; i < n; i++)
    assert_true(strcmp(str_field(json_array_get(all, i - 1), "queue"),
                       str_field(json_array_get(all, i), "queue")) < 0);
  tc(&o, f->redis.url, "--json", "queues", "--limit", "1", "--offset", "1", NULL);
  expect_code(&o, 0);
  json_t *page = stdout_json(&o);
  outcome_free(&o);
  assert_int_equal(json_array_size(page), 1);
  assert_string_equal(str_field(json_array_get(page, 0), "queue"),
                      str_field(json_array_get(all, 1), "queue"));
  json_decref(page);
  char footer[64];
  snprintf(footer, sizeof footer, "\n1 of %zu queues, after the first 1\n", n);
  tc(&o, f->redis.url, "queues", "--limit", "1", "--offset", "1", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, footer);
  outcome_free(&o);
  tc(&o, f->redis.url, "queues", "--limit", "0", NULL);
  expect_code(&o, 0);
  snprintf(footer, sizeof footer, "0 of %zu queues\n", n);
  assert_string_equal(o.out, footer);
  outcome_free(&o);
  json_decref(all);
}

/* Tasks the worker finished show in processed, failed and the rate; a
 * running task shows as active, and in its worker's busy count. */
static void test_processed_rate_active(void **state) {
  fixture *f = *state;
  outcome o;
  json_t *before = queue_row(f, TC_EXTRA_QUEUE);
  json_int_t processed = int_field(before, "processed"), failed = int_field(before, "failed");
  json_decref(before);
  for (int i = 0; i < 3; i++) {
    tc(&o, f->redis.url, "enqueue", "test.noop", "--queue", TC_EXTRA_QUEUE, "--wait",
       TC_WAIT_ARG, NULL);
    expect_code(&o, 0);
    outcome_free(&o);
  }
  tc(&o, f->redis.url, "enqueue", "test.fail", "--queue", TC_EXTRA_QUEUE, "--max-retries", "0",
     "--wait", TC_WAIT_ARG, NULL);
  expect_code(&o, 1);
  outcome_free(&o);
  json_t *row = queue_row(f, TC_EXTRA_QUEUE);
  assert_int_equal(int_field(row, "processed"), processed + 4);
  assert_int_equal(int_field(row, "failed"), failed + 1);
  assert_true(int_field(row, "dead") >= 1);
  assert_true(json_number_value(json_object_get(row, "rate")) > 0);
  json_decref(row);

  tc(&o, f->redis.url, "--json", "stats", NULL);
  expect_code(&o, 0);
  json_t *st = stdout_json(&o);
  outcome_free(&o);
  assert_true(int_field(st, "processed") >= processed + 4);
  assert_true(json_number_value(json_object_get(st, "rate")) > 0);
  assert_true(json_is_number(json_object_get(json_object_get(st, "rates"), TC_EXTRA_QUEUE)));
  assert_true(int_field(json_object_get(st, "workers"), "live") >= 1);
  json_decref(st);
  tc(&o, f->redis.url, "stats", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, "\nworkers     1 live, 0 stale; ");
  expect_contains(o.out, "\nrate        ");
  expect_contains(o.out, " tasks/s over the last minute\n");
  expect_contains(o.out, "  " TC_EXTRA_QUEUE ": ");
  outcome_free(&o);

  /* A task that runs for a while is active, and its worker busy. */
  char id[CELER_ID_MAX + 1];
  tc(&o, f->redis.url, "enqueue", "test.sleep", "--queue", TC_EXTRA_QUEUE, "--kwargs",
     "{\"seconds\": 7}", NULL);
  expect_code(&o, 0);
  take_id_line(&o, id);
  outcome_free(&o);
  bool active = false, busy = false;
  for (long long end = mono_ms() + TC_POLL_MS; !(active && busy) && mono_ms() < end;) {
    if (!active) {
      row = queue_row(f, TC_EXTRA_QUEUE);
      active = int_field(row, "active") == 1;
      json_decref(row);
    }
    if (!busy) {
      tc(&o, f->redis.url, "--json", "workers", NULL);
      expect_code(&o, 0);
      json_t *list = stdout_json(&o);
      outcome_free(&o);
      busy = json_array_size(list) >= 1 && int_field(json_array_get(list, 0), "busy") >= 1;
      json_decref(list);
    }
    if (!(active && busy)) pause_briefly();
  }
  assert_true(active);
  assert_true(busy);
  tc(&o, f->redis.url, "result", id, "--queue", TC_EXTRA_QUEUE, "--wait", TC_WAIT_ARG, NULL);
  expect_code(&o, 0);
  outcome_free(&o);
}

/* The registry: the live worker with its fields, and a worker whose
 * heartbeat is old marked stale. */
static void test_workers(void **state) {
  fixture *f = *state;
  char old[32], entry[256];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  long long seen = (long long)now.tv_sec * 1000 - 60000;
  snprintf(old, sizeof old, "%lld", seen);
  snprintf(entry, sizeof entry,
           "{\"name\":\"zz-ghost\",\"host\":\"gone\",\"pid\":4242,\"queues\":[\"default\"],"
           "\"concurrency\":4,\"busy\":0,\"processed\":1234567,\"failed\":0,"
           "\"started_at\":%lld,\"last_heartbeat\":%lld}",
           seen - 3600000, seen);
  const char *hset[] = {"HSET", "celer:workers", "zz-ghost", entry, NULL};
  const char *zadd[] = {"ZADD", "celer:workers:seen", old, "zz-ghost", NULL};
  assert_int_equal(harness_cli(&f->redis, hset, NULL), 0);
  assert_int_equal(harness_cli(&f->redis, zadd, NULL), 0);

  outcome o;
  tc(&o, f->redis.url, "--json", "workers", NULL);
  expect_code(&o, 0);
  json_t *list = stdout_json(&o);
  outcome_free(&o);
  assert_int_equal(json_array_size(list), 2);
  json_t *live = json_array_get(list, 0), *ghost = json_array_get(list, 1);
  assert_string_equal(str_field(ghost, "name"), "zz-ghost");
  assert_true(json_is_true(json_object_get(ghost, "stale")));
  assert_int_equal(int_field(ghost, "last_heartbeat"), seen);
  assert_true(int_field(ghost, "heartbeat_age_ms") >= 60000);
  assert_true(json_is_false(json_object_get(live, "stale")));
  assert_true(int_field(live, "pid") == f->worker);
  assert_true(int_field(live, "concurrency") >= 1);
  assert_true(int_field(live, "heartbeat_age_ms") <= 15000);
  json_t *queues = json_object_get(live, "queues");
  assert_int_equal(json_array_size(queues), 2);
  assert_string_equal(json_string_value(json_array_get(queues, 1)), TC_EXTRA_QUEUE);
  json_decref(list);

  tc(&o, f->redis.url, "workers", NULL);
  expect_code(&o, 0);
  expect_contains(o.out, "NAME ");
  expect_contains(o.out, " HEARTBEAT ");
  expect_contains(o.out, "  default," TC_EXTRA_QUEUE "  ");
  expect_contains(o.out, "\nzz-ghost ");
  expect_contains(o.out, "  1,234,567  ");
  expect_contains(o.out, "  1m "); /* its heartbeat, a minute ago */
  expect_contains(o.out, " ago  stale\n");
  expect_contains(o.out, "  live\n");
  expect_contains(o.out, "\n2 of 2 workers, 1 of them stale\n");
  outcome_free(&o);
  tc(&o, f->redis.url, "--json", "workers", "--offset", "1", NULL);
  expect_code(&o, 0);
  list = stdout_json(&o);
  assert_int_equal(json_array_size(list), 1);
  assert_string_equal(str_field(json_array_get(list, 0), "name"), "zz-ghost");
  json_decref(list);
  outcome_free(&o);
  tc(&o, f->redis.url, "--json", "stats", NULL);
  expect_code(&o, 0);
  list = stdout_json(&o);
  assert_int_equal(int_field(json_object_get(list, "workers"), "stale"), 1);
  json_decref(list);
  outcome_free(&o);

  const char *hdel[] = {"HDEL", "celer:workers", "zz-ghost", NULL};
  const char *zrem[] = {"ZREM", "celer:workers:seen", "zz-ghost", NULL};
  assert_int_equal(harness_cli(&f->redis, hdel, NULL), 0);
  assert_int_equal(harness_cli(&f->redis, zrem, NULL), 0);
}

/* top with stdout in a pipe: plain tables, again at every refresh; with
 * --json one document per line. */
static void test_top_plain(void **state) {
  fixture *f = *state;
  outcome o;
  tc(&o, f->redis.url, "top", "--iterations", "2", "--interval", "0.1", NULL);
  expect_code(&o, 0);
  assert_null(strchr(o.out, '\033'));
  const char *first = strstr(o.out, "QUEUE "), *second = first ? strstr(first + 1, "QUEUE ") : NULL;
  assert_non_null(first);
  assert_non_null(second);
  assert_null(strstr(second + 1, "QUEUE "));
  expect_contains(o.out, "\nNAME ");
  expect_contains(o.out, " UTC  unix://");
  outcome_free(&o);
  tc(&o, f->redis.url, "--json", "top", "--iterations", "2", "--interval", "0.1", NULL);
  expect_code(&o, 0);
  char *nl = strchr(o.out, '\n');
  assert_non_null(nl);
  assert_non_null(strchr(nl + 1, '\n'));
  *nl = '\0';
  json_t *a = json_loads(o.out, 0, NULL), *b = json_loads(nl + 1, 0, NULL);
  assert_non_null(a);
  assert_non_null(b);
  assert_true(json_is_array(json_object_get(a, "queues")));
  assert_true(json_is_array(json_object_get(b, "workers")));
  assert_true(json_is_integer(json_object_get(b, "at")));
  json_decref(a);
  json_decref(b);
  outcome_free(&o);
}

/* Colour only on a terminal, never with NO_COLOR set: `script` gives
 * taskctl a pseudo-terminal and copies what it wrote. */
static void test_color_rules(void **state) {
  fixture *f = *state;
  char cmd[2 * PATH_MAX];
  snprintf(cmd, sizeof cmd, "'%s' --broker '%s' queues", harness_bin("taskctl"), f->redis.url);
  const char *argv[] = {"script", "-qec", cmd, "/dev/null", NULL};
  const char *color_env[] = {"NO_COLOR=", "TERM=xterm", NULL};
  const char *plain_env[] = {"NO_COLOR=1", "TERM=xterm", NULL};
  char *out = NULL, *err = NULL;
  assert_int_equal(harness_run(argv, color_env, NULL, 0, &out, &err, HARNESS_DEADLINE_MS), 0);
  expect_contains(out, "\033[1mQUEUE\033[0m");
  expect_contains(out, "\033[2m-\033[0m"); /* not paused: dim */
  free(out);
  free(err);
  assert_int_equal(harness_run(argv, plain_env, NULL, 0, &out, &err, HARNESS_DEADLINE_MS), 0);
  expect_contains(out, "QUEUE");
  assert_null(strchr(out, '\033'));
  free(out);
  free(err);
}

/* Runs tmux on the test's own server socket; returns its exit code and
 * its stdout in *out (caller frees) when out is not NULL. Output goes
 * through a file: the tmux server a new session starts keeps the
 * descriptors it inherited, so a pipe would never reach end of file. */
static int tmux(const fixture *f, const char *const *args, char **out) {
  char sock[PATH_MAX + 16], out_path[PATH_MAX + 16];
  snprintf(sock, sizeof sock, "%s/tmux.sock", f->dir);
  snprintf(out_path, sizeof out_path, "%s/tmux.out", f->dir);
  const char *argv[16] = {"tmux", "-S", sock, "-f", "/dev/null"};
  int n = 5;
  for (; *args && n < 15; args++) argv[n++] = *args;
  argv[n] = NULL;
  pid_t pid = harness_spawn(argv, NULL, out_path, "/dev/null");
  assert_true(pid > 0);
  int status = harness_wait(pid, HARNESS_DEADLINE_MS);
  if (status == -1) harness_stop(pid, SIGKILL, HARNESS_DEADLINE_MS);
  if (out) {
    FILE *fp = fopen(out_path, "r");
    assert_non_null(fp);
    char *text = calloc(1, 65536);
    assert_non_null(text);
    size_t got = fread(text, 1, 65535, fp);
    text[got] = '\0';
    fclose(fp);
    *out = text;
  }
  return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* top in a real terminal: a full screen with both tables, q quits with 0. */
static void test_top_tmux(void **state) {
  fixture *f = *state;
  char cmd[3 * PATH_MAX], rc_path[PATH_MAX + 16];
  snprintf(rc_path, sizeof rc_path, "%s/top.rc", f->dir);
  snprintf(cmd, sizeof cmd, "'%s' --broker '%s' top; echo $? > '%s'", harness_bin("taskctl"),
           f->redis.url, rc_path);
  const char *start[] = {"new-session", "-d", "-x", "150", "-y", "40", "-s", "top", cmd, NULL};
  assert_int_equal(tmux(f, start, NULL), 0);
  char *screen = NULL;
  bool drawn = false;
  for (long long end = mono_ms() + TC_POLL_MS; !drawn && mono_ms() < end;) {
    const char *capture[] = {"capture-pane", "-p", "-t", "top", NULL};
    free(screen);
    screen = NULL;
    if (tmux(f, capture, &screen) == 0 && screen && strstr(screen, "celer top: q quits") &&
        strstr(screen, "QUEUE ") && strstr(screen, "NAME "))
      drawn = true;
    else
      pause_briefly();
  }
  if (!drawn) print_message("screen: %s\n", screen ? screen : "(none)");
  assert_true(drawn);
  expect_contains(screen, "\ndefault ");
  expect_contains(screen, " live");
  free(screen);
  const char *quit[] = {"send-keys", "-t", "top", "q", NULL};
  assert_int_equal(tmux(f, quit, NULL), 0);
  /* The session ends when top exits; its status lands in the file. */
  bool gone = false;
  for (long long end = mono_ms() + TC_POLL_MS; !gone && mono_ms() < end;) {
    const char *has[] = {"has-session", "-t", "top", NULL};
    gone = tmux(f, has, NULL) != 0;
    if (!gone) pause_briefly();
  }
  assert_true(gone);
  FILE *fp = fopen(rc_path, "r");
  assert_non_null(fp);
  int code = -1;
  assert_int_equal(fscanf(fp, "%d", &code), 1);
  fclose(fp);
  assert_int_equal(code, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_ping_ok),
      cmocka_unit_test(test_ping_dead_unix),
      cmocka_unit_test(test_ping_dead_tcp),
      cmocka_unit_test(test_config_precedence),
      cmocka_unit_test(test_enqueue_then_not_found),
      cmocka_unit_test(test_enqueue_json),
      cmocka_unit_test(test_enqueue_options),
      cmocka_unit_test(test_wait_timeout),
      cmocka_unit_test(test_echo_wait_and_result),
      cmocka_unit_test(test_fail_wait_and_result),
      cmocka_unit_test(test_task_searches_queues),
      cmocka_unit_test(test_countdown_fraction),
      cmocka_unit_test(test_pause_resume),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_dead_and_retry),
      cmocka_unit_test(test_purge),
      cmocka_unit_test(test_view_help),
      cmocka_unit_test(test_view_errors),
      cmocka_unit_test(test_queues_counts),
      cmocka_unit_test(test_queues_paging),
      cmocka_unit_test(test_processed_rate_active),
      cmocka_unit_test(test_workers),
      cmocka_unit_test(test_top_plain),
      cmocka_unit_test(test_color_rules),
      cmocka_unit_test(test_top_tmux),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
