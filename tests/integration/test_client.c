/* libceler (include/celer/client.h) against private redis-servers: what an
 * enqueue writes, how records are read and waited for, validation that
 * writes nothing, authentication, database selection and broken
 * connections. Redis state is inspected with redis-cli only; every wait
 * is a condition with a deadline, never a fixed sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <jansson.h>
#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"

/* A failure that must not wait for any timeout returns within this. */
#define QUICK_MS 3000
/* Most words one redis-cli call of these tests has. */
#define CLI_ARGS_MAX 32
/* The envelope cap used where a test wants ETOOBIG cheaply. */
#define SMALL_PAYLOAD 2048
/* A string argument that cannot fit under SMALL_PAYLOAD. */
#define BIG_ARG_LEN 4000
#define BIG_BATCH 1000
#define MIXED_BATCH 10
#define COUNTDOWN_MS 60000
/* The scheduled score may trail "now before the call" by clock skew
 * between the test and the library, and lead it by the call's duration. */
#define SCORE_SLACK_BEFORE_MS 50
#define SCORE_SLACK_AFTER_MS 1000
#define WAIT_SHORT_MS 200
#define WAIT_LONG_MS 10000
#define AUTH_PASSWORD "s3cret"
#define ACL_USER "alice"
#define ACL_PASSWORD "pw1"
#define ACL_LIMITED_USER "bob"
#define ACL_LIMITED_PASSWORD "pw2"
#define TEST_DB "3"

/* Clients one test holds open at most; the teardown frees what a failed
 * test left behind. */
#define OPEN_CLIENTS_MAX 8

typedef struct fixture {
  harness_redis redis; /* Unix socket, flushed before every test */
  harness_redis extra; /* a test's own server; stopped by the teardown */
} fixture;

static celer_client *open_clients[OPEN_CLIENTS_MAX];

/* ---- small helpers ---- */

static const char *const ENV_NAMES[] = {"CELER_BROKER_URL", "CELER_BROKER_PASSWORD_FILE",
                                        "CELER_NAMESPACE", "CELER_MAX_PAYLOAD",
                                        "REDISCLI_AUTH", NULL};

static void clear_env(void) {
  for (size_t i = 0; ENV_NAMES[i]; i++) unsetenv(ENV_NAMES[i]);
}

/* Runs redis-cli against r with the NULL-terminated words in ap. */
static int cli_va(const harness_redis *r, char **out, va_list ap) {
  const char *args[CLI_ARGS_MAX + 1];
  size_t n = 0;
  for (const char *w = va_arg(ap, const char *); w && n < CLI_ARGS_MAX;
       w = va_arg(ap, const char *))
    args[n++] = w;
  args[n] = NULL;
  return harness_cli(r, args, out);
}

/* redis-cli words... NULL; asserts success and returns stdout (owned). */
static char *cli(const harness_redis *r, ...) {
  va_list ap;
  va_start(ap, r);
  char *out = NULL;
  int rc = cli_va(r, &out, ap);
  va_end(ap);
  assert_int_equal(rc, 0);
  assert_non_null(out);
  return out;
}

/* The same without assertions, for forked children: 0 on success. */
static int cli_quiet(const harness_redis *r, char **out, ...) {
  va_list ap;
  va_start(ap, out);
  int rc = cli_va(r, out, ap);
  va_end(ap);
  return rc;
}

/* Parses redis-cli's raw integer answer ("12\n"); -1 when it is not one. */
static long long parse_count(const char *text) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno || end == text || (*end != '\n' && *end != '\0')) return -1;
  return v;
}

/* redis-cli words... NULL answering an integer; asserts and returns it. */
static long long cli_int(const harness_redis *r, ...) {
  va_list ap;
  va_start(ap, r);
  char *out = NULL;
  int rc = cli_va(r, &out, ap);
  va_end(ap);
  assert_int_equal(rc, 0);
  assert_non_null(out);
  long long v = parse_count(out);
  free(out);
  assert_true(v >= 0);
  return v;
}

static void cli_ok(const harness_redis *r, const char *const *args) {
  char *out = NULL;
  assert_int_equal(harness_cli(r, args, &out), 0);
  free(out);
}

/* Splits text in place at '\n' into a NULL-terminated array (owned, the
 * strings are borrowed from text). A final empty piece is dropped. */
static char **split_lines(char *text, size_t *count) {
  size_t cap = 1;
  for (const char *p = text; *p; p++) cap += *p == '\n';
  char **lines = calloc(cap + 1, sizeof *lines);
  assert_non_null(lines);
  size_t n = 0;
  char *p = text;
  while (*p) {
    char *nl = strchr(p, '\n');
    lines[n++] = p;
    if (nl == NULL) break;
    *nl = '\0';
    p = nl + 1;
  }
  *count = n;
  return lines;
}

/* Every `task` field of a stream, decoded, in stream order (owned). */
static json_t *stream_envelopes(const harness_redis *r, const char *db, const char *key) {
  char *out = cli(r, "-n", db, "XRANGE", key, "-", "+", NULL);
  size_t n = 0;
  char **lines = split_lines(out, &n);
  json_t *list = json_array();
  for (size_t i = 0; i + 1 < n; i++) {
    if (strcmp(lines[i], "task") != 0) continue;
    json_error_t jerr;
    json_t *env = json_loads(lines[i + 1], 0, &jerr);
    if (env == NULL) fail_msg("stream %s holds a task that is not JSON: %s", key, jerr.text);
    json_array_append_new(list, env);
    i++;
  }
  free(lines);
  free(out);
  return list;
}

/* The only envelope of a stream; asserts there is exactly one. */
static json_t *only_envelope(const harness_redis *r, const char *key) {
  json_t *list = stream_envelopes(r, "0", key);
  assert_int_equal(json_array_size(list), 1);
  json_t *env = json_incref(json_array_get(list, 0));
  json_decref(list);
  return env;
}

static const char *str_field(const json_t *obj, const char *name) {
  const json_t *v = json_object_get(obj, name);
  if (!json_is_string(v)) fail_msg("field %s is missing or not a string", name);
  return json_string_value(v);
}

static long long int_field(const json_t *obj, const char *name) {
  const json_t *v = json_object_get(obj, name);
  if (!json_is_integer(v)) fail_msg("field %s is missing or not an integer", name);
  return (long long)json_integer_value(v);
}

static json_t *parse(const char *text) {
  json_error_t jerr;
  json_t *v = json_loads(text, 0, &jerr);
  if (v == NULL) fail_msg("bad JSON in the test itself: %s", jerr.text);
  return v;
}

/* Remembers c so that the teardown frees it if the test fails. */
static celer_client *track(celer_client *c) {
  assert_non_null(c);
  for (size_t i = 0; i < OPEN_CLIENTS_MAX; i++) {
    if (open_clients[i] == NULL) {
      open_clients[i] = c;
      return c;
    }
  }
  fail_msg("more than %d clients open in one test", OPEN_CLIENTS_MAX);
  return NULL;
}

static void client_free(celer_client *c) {
  for (size_t i = 0; i < OPEN_CLIENTS_MAX; i++)
    if (open_clients[i] == c) open_clients[i] = NULL;
  celer_client_free(c);
}

static void free_open_clients(void) {
  for (size_t i = 0; i < OPEN_CLIENTS_MAX; i++) {
    celer_client_free(open_clients[i]);
    open_clients[i] = NULL;
  }
}

static celer_client *client_with(const celer_client_options *o) {
  return track(celer_client_new(o));
}

static celer_client *client_new(const char *url, const char *ns, size_t max_payload) {
  celer_client_options o = {.broker_url = url, .ns = ns, .max_payload = max_payload};
  return client_with(&o);
}

/* A connected client; fails the test with the library's sentence if not. */
static celer_client *client_open(const char *url, const char *ns, size_t max_payload) {
  celer_client *c = client_new(url, ns, max_payload);
  int rc = celer_client_connect(c);
  if (rc != 0) fail_msg("connect to %s: %d %s", url, rc, celer_client_errstr(c));
  return c;
}

static void expect_ok(celer_client *c, int rc) {
  if (rc != 0) fail_msg("expected success, got %d: %s", rc, celer_client_errstr(c));
}

/* Asserts the client's sentence is there and contains needle. */
static void expect_errstr(const celer_client *c, const char *needle) {
  const char *e = celer_client_errstr(c);
  assert_non_null(e);
  assert_true(strlen(e) > 0);
  if (needle && strstr(e, needle) == NULL)
    fail_msg("error \"%s\" does not mention \"%s\"", e, needle);
}

static void result_key(char *buf, size_t size, const char *queue, const char *id) {
  snprintf(buf, size, "celer:{%s}:result:%s", queue, id);
}

/* A complete record as a worker writes it. */
static void record_json(char *buf, size_t size, const char *queue, const char *id,
                        const char *state) {
  snprintf(buf, size,
           "{\"id\":\"%s\",\"task\":\"test.echo\",\"queue\":\"%s\",\"state\":\"%s\","
           "\"attempt\":1,\"result\":{\"answer\":42},\"enqueued_at\":1000,"
           "\"started_at\":2000,\"finished_at\":3000,\"worker\":\"w1\"}",
           id, queue, state);
}

static void put_record(const harness_redis *r, const char *queue, const char *id,
                       const char *state) {
  char key[256], json[1024];
  result_key(key, sizeof key, queue, id);
  record_json(json, sizeof json, queue, id, state);
  const char *args[] = {"SET", key, json, NULL};
  cli_ok(r, args);
}

/* A loopback port nobody listens on: bound by the kernel, then released. */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static void start_server(harness_redis *r, bool tcp, const char *const *extra) {
  if (harness_redis_start(r, tcp, extra) != 0) fail_msg("cannot start redis-server");
}

/* ---- fixtures ---- */

static int group_setup(void **state) {
  clear_env();
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL || harness_redis_start(&f->redis, false, NULL) != 0) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int group_teardown(void **state) {
  fixture *f = *state;
  harness_redis_stop(&f->redis);
  free(f);
  clear_env();
  return 0;
}

/* Each test starts from an empty database and a clean environment. */
static int test_setup(void **state) {
  fixture *f = *state;
  clear_env();
  memset(&f->extra, 0, sizeof f->extra);
  return harness_flush(&f->redis);
}

static int test_teardown(void **state) {
  fixture *f = *state;
  free_open_clients();
  harness_redis_stop(&f->extra);
  clear_env();
  return 0;
}

/* ---- connecting ---- */

static void test_ping_and_namespace(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  expect_ok(c, celer_ping(c));
  assert_string_equal(celer_client_namespace(c), "celer");
  client_free(c);

  c = client_open(f->redis.url, "tns", 0);
  assert_string_equal(celer_client_namespace(c), "tns");
  expect_ok(c, celer_ping(c));
  client_free(c);

  setenv("CELER_NAMESPACE", "envns", 1);
  c = client_new(f->redis.url, NULL, 0);
  assert_string_equal(celer_client_namespace(c), "envns");
  client_free(c);
  c = client_new(f->redis.url, "opt", 0);
  assert_string_equal(celer_client_namespace(c), "opt");
  client_free(c);
  unsetenv("CELER_NAMESPACE");

  c = client_new(f->redis.url, "bad{ns}", 0);
  assert_int_equal(celer_client_connect(c), CELER_EINVAL);
  expect_errstr(c, "namespace");
  assert_int_equal(celer_ping(c), CELER_EINVAL);
  client_free(c);
  celer_client_free(NULL);
}

/* Connect, ping and enqueue on an unreachable broker all fail fast. */
static void expect_unreachable(const char *url, const char *address) {
  celer_client *c = client_new(url, NULL, 0);
  int64_t t0 = celer_mono_ms();
  assert_int_equal(celer_client_connect(c), CELER_ECONNECT);
  assert_true(celer_mono_ms() - t0 < QUICK_MS);
  expect_errstr(c, address);

  t0 = celer_mono_ms();
  assert_int_equal(celer_ping(c), CELER_ECONNECT);
  expect_errstr(c, address);
  char id[CELER_ID_MAX + 1] = "";
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, NULL, id), CELER_ECONNECT);
  expect_errstr(c, address);
  json_t *rec = NULL;
  assert_int_equal(celer_get_record(c, NULL, "abc", &rec), CELER_ECONNECT);
  assert_null(rec);
  assert_true(celer_mono_ms() - t0 < QUICK_MS);
  client_free(c);
}

static void test_dead_unix_broker(void **state) {
  (void)state;
  char dir[PATH_MAX], path[PATH_MAX + 16], url[PATH_MAX + 32];
  assert_int_equal(harness_tmpdir(dir, sizeof dir), 0);
  snprintf(path, sizeof path, "%s/absent.sock", dir);
  snprintf(url, sizeof url, "unix://%s", path);
  expect_unreachable(url, path);
  harness_rmtree(dir);
}

static void test_dead_tcp_broker(void **state) {
  (void)state;
  int port = dead_port();
  char url[64], address[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", port);
  snprintf(address, sizeof address, "127.0.0.1:%d", port);
  expect_unreachable(url, address);
}

static void expect_bad_url(const char *url, const char *needle) {
  celer_client *c = client_new(url, NULL, 0);
  assert_int_equal(celer_client_connect(c), CELER_EINVAL);
  expect_errstr(c, "broker URL");
  expect_errstr(c, needle);
  /* A sentence, not a code: several words. */
  assert_true(strlen(celer_client_errstr(c)) > 20);
  assert_int_equal(celer_ping(c), CELER_EINVAL);
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL), CELER_EINVAL);
  client_free(c);
}

static void test_bad_url(void **state) {
  (void)state;
  expect_bad_url("http://x", "redis://");
  expect_bad_url("rediss://h", "TLS");
  expect_bad_url("redis://127.0.0.1:99999/0", "port");
}

static void test_url_from_environment(void **state) {
  fixture *f = *state;
  setenv("CELER_BROKER_URL", f->redis.url, 1);
  celer_client *c = client_with(NULL);
  expect_ok(c, celer_client_connect(c));
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL));
  client_free(c);
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 1);

  /* The option wins over the environment. */
  char dead[64];
  snprintf(dead, sizeof dead, "redis://127.0.0.1:%d/0", dead_port());
  setenv("CELER_BROKER_URL", dead, 1);
  c = client_open(f->redis.url, NULL, 0);
  expect_ok(c, celer_ping(c));
  client_free(c);
  c = client_new(NULL, NULL, 0);
  assert_int_equal(celer_client_connect(c), CELER_ECONNECT);
  client_free(c);
  unsetenv("CELER_BROKER_URL");
}

/* ---- enqueue ---- */

static void test_enqueue_envelope(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  json_t *args = parse("[1, \"two\", {\"three\": 3}]");
  json_t *kwargs = parse("{\"username\": \"ada\", \"notify\": true}");
  char id[CELER_ID_MAX + 1] = "";
  int64_t before = celer_now_ms();
  expect_ok(c, celer_enqueue(c, "users.create", args, kwargs, NULL, id));
  int64_t after = celer_now_ms();

  /* A UUIDv4 in canonical form. */
  assert_int_equal(strlen(id), 36);
  assert_int_equal(id[8], '-');
  assert_int_equal(id[13], '-');
  assert_int_equal(id[14], '4');
  assert_int_equal(id[18], '-');
  assert_int_equal(id[23], '-');

  json_t *env = only_envelope(&f->redis, "celer:{default}:stream");
  assert_string_equal(str_field(env, "id"), id);
  assert_string_equal(str_field(env, "task"), "users.create");
  assert_string_equal(str_field(env, "queue"), "default");
  assert_true(json_equal(json_object_get(env, "args"), args));
  assert_true(json_equal(json_object_get(env, "kwargs"), kwargs));
  long long at = int_field(env, "enqueued_at");
  assert_true(at >= before && at <= after);
  /* Options left at their defaults are absent. */
  const char *absent[] = {"eta", "expires", "max_retries", "timeout_ms", "origin", "meta",
                          "attempt", NULL};
  for (size_t i = 0; absent[i]; i++) assert_null(json_object_get(env, absent[i]));
  json_decref(env);

  char *members = cli(&f->redis, "SMEMBERS", "celer:queues", NULL);
  assert_string_equal(members, "default\n");
  free(members);
  assert_int_equal(cli_int(&f->redis, "ZCARD", "celer:{default}:scheduled", NULL), 0);

  /* No args and no kwargs are written as [] and {}. */
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL));
  json_t *list = stream_envelopes(&f->redis, "0", "celer:{default}:stream");
  assert_int_equal(json_array_size(list), 2);
  json_t *bare = json_array_get(list, 1);
  assert_int_equal(json_array_size(json_object_get(bare, "args")), 0);
  assert_true(json_is_object(json_object_get(bare, "kwargs")));
  assert_int_equal(json_object_size(json_object_get(bare, "kwargs")), 0);
  json_decref(list);

  json_decref(args);
  json_decref(kwargs);
  client_free(c);
}

static void test_enqueue_options(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, "tns", 0);
  json_t *meta = parse("{\"trace_id\": \"t-123\", \"tenant\": 7}");
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  assert_int_equal(o.max_retries, -1);
  o.id = "order-42_A";
  o.queue = "emails";
  o.meta = meta;
  o.origin = "svc-billing";
  o.max_retries = 3;
  o.timeout_ms = 1500;
  int64_t expires = celer_now_ms() + 3600 * 1000;
  o.expires_ms = expires;
  char id[CELER_ID_MAX + 1] = "";
  expect_ok(c, celer_enqueue(c, "notify.send", NULL, NULL, &o, id));
  assert_string_equal(id, "order-42_A");

  json_t *env = only_envelope(&f->redis, "tns:{emails}:stream");
  assert_string_equal(str_field(env, "id"), "order-42_A");
  assert_string_equal(str_field(env, "task"), "notify.send");
  assert_string_equal(str_field(env, "queue"), "emails");
  assert_string_equal(str_field(env, "origin"), "svc-billing");
  assert_int_equal(int_field(env, "max_retries"), 3);
  assert_int_equal(int_field(env, "timeout_ms"), 1500);
  assert_int_equal(int_field(env, "expires"), expires);
  assert_true(json_equal(json_object_get(env, "meta"), meta));
  assert_null(json_object_get(env, "eta"));
  json_decref(env);

  char *members = cli(&f->redis, "SMEMBERS", "tns:queues", NULL);
  assert_string_equal(members, "emails\n");
  free(members);
  /* Nothing under the default namespace or queue. */
  assert_int_equal(cli_int(&f->redis, "EXISTS", "celer:queues", NULL), 0);
  assert_int_equal(cli_int(&f->redis, "EXISTS", "celer:{emails}:stream", NULL), 0);
  assert_int_equal(cli_int(&f->redis, "EXISTS", "tns:{default}:stream", NULL), 0);

  /* max_retries 0 is an explicit "never retry", not "absent". */
  celer_enqueue_options_init(&o);
  o.queue = "emails";
  o.max_retries = 0;
  expect_ok(c, celer_enqueue(c, "notify.send", NULL, NULL, &o, NULL));
  json_t *list = stream_envelopes(&f->redis, "0", "tns:{emails}:stream");
  assert_int_equal(json_array_size(list), 2);
  assert_int_equal(int_field(json_array_get(list, 1), "max_retries"), 0);
  json_decref(list);

  json_decref(meta);
  client_free(c);
}

static void expect_invalid(celer_client *c, int code, const char *needle, const char *task,
                           const json_t *args, const json_t *kwargs,
                           const celer_enqueue_options *o) {
  char id[CELER_ID_MAX + 1] = "untouched";
  int rc = celer_enqueue(c, task, args, kwargs, o, id);
  if (rc != code)
    fail_msg("expected %d for \"%s\", got %d: %s", code, needle, rc, celer_client_errstr(c));
  expect_errstr(c, needle);
  assert_string_equal(id, "untouched");
}

static void test_validation_writes_nothing(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  json_t *arr = json_array(), *obj = json_object();
  celer_enqueue_options o;

  celer_enqueue_options_init(&o);
  o.id = "bad id!";
  expect_invalid(c, CELER_EINVAL, "id", "test.noop", NULL, NULL, &o);
  char long_id[CELER_ID_MAX + 2];
  memset(long_id, 'a', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  o.id = long_id;
  expect_invalid(c, CELER_EINVAL, "id", "test.noop", NULL, NULL, &o);

  celer_enqueue_options_init(&o);
  o.queue = "q{1}";
  expect_invalid(c, CELER_EINVAL, "queue", "test.noop", NULL, NULL, &o);
  o.queue = "";
  expect_invalid(c, CELER_EINVAL, "queue", "test.noop", NULL, NULL, &o);

  expect_invalid(c, CELER_EINVAL, "task", "my task", NULL, NULL, NULL);
  expect_invalid(c, CELER_EINVAL, "task", "", NULL, NULL, NULL);
  expect_invalid(c, CELER_EINVAL, "task", NULL, NULL, NULL, NULL);
  expect_invalid(c, CELER_EINVAL, "args", "test.noop", obj, NULL, NULL);
  expect_invalid(c, CELER_EINVAL, "kwargs", "test.noop", NULL, arr, NULL);

  celer_enqueue_options_init(&o);
  o.countdown_ms = 1000;
  o.eta_ms = celer_now_ms() + 1000;
  expect_invalid(c, CELER_EINVAL, "eta", "test.noop", NULL, NULL, &o);

  celer_enqueue_options_init(&o);
  o.max_retries = -2;
  expect_invalid(c, CELER_EINVAL, "max_retries", "test.noop", NULL, NULL, &o);

  assert_int_equal(cli_int(&f->redis, "DBSIZE", NULL), 0);

  /* The client stays usable after refusing. */
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL));
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 1);
  json_decref(arr);
  json_decref(obj);
  client_free(c);
}

static json_t *big_args(void) {
  char *s = malloc(BIG_ARG_LEN + 1);
  assert_non_null(s);
  memset(s, 'x', BIG_ARG_LEN);
  s[BIG_ARG_LEN] = '\0';
  json_t *args = json_pack("[s]", s);
  free(s);
  assert_non_null(args);
  return args;
}

static void test_payload_limit(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, SMALL_PAYLOAD);
  json_t *args = big_args();
  expect_invalid(c, CELER_ETOOBIG, "2048", "test.echo", args, NULL, NULL);
  assert_int_equal(cli_int(&f->redis, "DBSIZE", NULL), 0);
  json_t *small = json_pack("[s]", "fits");
  expect_ok(c, celer_enqueue(c, "test.echo", small, NULL, NULL, NULL));
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 1);
  client_free(c);

  /* CELER_MAX_PAYLOAD applies when the option is 0. */
  setenv("CELER_MAX_PAYLOAD", "2048", 1);
  c = client_open(f->redis.url, NULL, 0);
  expect_invalid(c, CELER_ETOOBIG, "2048", "test.echo", args, NULL, NULL);
  client_free(c);
  unsetenv("CELER_MAX_PAYLOAD");
  c = client_open(f->redis.url, NULL, 0);
  expect_ok(c, celer_enqueue(c, "test.echo", args, NULL, NULL, NULL));
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 2);
  client_free(c);
  json_decref(small);
  json_decref(args);
}

/* ---- scheduling ---- */

static void test_countdown_goes_to_scheduled(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = COUNTDOWN_MS;
  char id[CELER_ID_MAX + 1] = "";
  int64_t now = celer_now_ms();
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, &o, id));

  char *out = cli(&f->redis, "ZRANGE", "celer:{default}:scheduled", "0", "-1", "WITHSCORES",
                  NULL);
  size_t n = 0;
  char **lines = split_lines(out, &n);
  assert_int_equal(n, 2);
  json_t *env = parse(lines[0]);
  assert_string_equal(str_field(env, "id"), id);
  long long score = strtoll(lines[1], NULL, 10);
  assert_true(score >= now + COUNTDOWN_MS - SCORE_SLACK_BEFORE_MS);
  assert_true(score <= now + COUNTDOWN_MS + SCORE_SLACK_AFTER_MS);
  assert_int_equal(int_field(env, "eta"), score);
  json_decref(env);
  free(lines);
  free(out);
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 0);
  /* A scheduled task's queue is known too. */
  assert_int_equal(cli_int(&f->redis, "SISMEMBER", "celer:queues", "default", NULL), 1);

  /* An eta already in the past is ready at once, and keeps its eta. */
  celer_enqueue_options_init(&o);
  o.eta_ms = celer_now_ms() - 1000;
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, &o, id));
  env = only_envelope(&f->redis, "celer:{default}:stream");
  assert_string_equal(str_field(env, "id"), id);
  assert_int_equal(int_field(env, "eta"), o.eta_ms);
  json_decref(env);
  assert_int_equal(cli_int(&f->redis, "ZCARD", "celer:{default}:scheduled", NULL), 1);
  client_free(c);
}

/* ---- batches ---- */

static int compare_ids(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void test_batch_thousand(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  celer_batch_item *items = calloc(BIG_BATCH, sizeof *items);
  assert_non_null(items);
  json_t **args = calloc(BIG_BATCH, sizeof *args);
  assert_non_null(args);
  for (size_t i = 0; i < BIG_BATCH; i++) {
    args[i] = json_pack("[I]", (json_int_t)i);
    items[i].task = "test.echo";
    items[i].args = args[i];
    celer_enqueue_options_init(&items[i].opts);
    items[i].status = 1;
  }
  expect_ok(c, celer_enqueue_batch(c, items, BIG_BATCH));
  for (size_t i = 0; i < BIG_BATCH; i++) assert_int_equal(items[i].status, 0);
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), BIG_BATCH);

  /* The stream holds them in order, each with its own id and arguments. */
  json_t *list = stream_envelopes(&f->redis, "0", "celer:{default}:stream");
  assert_int_equal(json_array_size(list), BIG_BATCH);
  const char **ids = calloc(BIG_BATCH, sizeof *ids);
  assert_non_null(ids);
  for (size_t i = 0; i < BIG_BATCH; i++) {
    json_t *env = json_array_get(list, i);
    assert_string_equal(str_field(env, "id"), items[i].id);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(env, "args"), 0)), i);
    ids[i] = items[i].id;
  }
  qsort(ids, BIG_BATCH, sizeof *ids, compare_ids);
  for (size_t i = 1; i < BIG_BATCH; i++) assert_string_not_equal(ids[i - 1], ids[i]);
  free(ids);
  json_decref(list);
  for (size_t i = 0; i < BIG_BATCH; i++) json_decref(args[i]);
  free(args);
  free(items);
  client_free(c);
}

static void test_batch_partial_failure(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, SMALL_PAYLOAD);
  json_t *arr = json_array();
  celer_batch_item items[MIXED_BATCH];
  memset(items, 0, sizeof items);
  for (size_t i = 0; i < MIXED_BATCH; i++) {
    items[i].task = "test.noop";
    celer_enqueue_options_init(&items[i].opts);
    items[i].status = 1;
  }
  items[3].task = "bad name";
  items[7].kwargs = arr;
  items[9].opts.queue = "other";
  assert_int_equal(celer_enqueue_batch(c, items, MIXED_BATCH), CELER_EINVAL);
  expect_errstr(c, NULL);
  for (size_t i = 0; i < MIXED_BATCH; i++)
    assert_int_equal(items[i].status, i == 3 || i == 7 ? CELER_EINVAL : 0);
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 7);
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{other}:stream", NULL), 1);
  json_t *list = stream_envelopes(&f->redis, "0", "celer:{default}:stream");
  size_t k = 0;
  for (size_t i = 0; i < 9; i++) {
    if (i == 3 || i == 7) continue;
    assert_string_equal(str_field(json_array_get(list, k++), "id"), items[i].id);
  }
  json_decref(list);

  /* The return value is the first failing item's code. */
  json_t *big = big_args();
  celer_batch_item mixed[3];
  memset(mixed, 0, sizeof mixed);
  for (size_t i = 0; i < 3; i++) {
    mixed[i].task = "test.echo";
    celer_enqueue_options_init(&mixed[i].opts);
  }
  mixed[1].args = big;
  mixed[2].task = "bad name";
  assert_int_equal(celer_enqueue_batch(c, mixed, 3), CELER_ETOOBIG);
  assert_int_equal(mixed[0].status, 0);
  assert_int_equal(mixed[1].status, CELER_ETOOBIG);
  assert_int_equal(mixed[2].status, CELER_EINVAL);
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 8);

  /* An empty batch is a no-op. */
  expect_ok(c, celer_enqueue_batch(c, NULL, 0));
  json_decref(big);
  json_decref(arr);
  client_free(c);
}

/* ---- records ---- */

static void test_get_record(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  json_t *rec = NULL;
  assert_int_equal(celer_get_record(c, "default", "nope-1", &rec), CELER_ENOTFOUND);
  assert_int_equal(celer_get_record(c, NULL, "nope-1", &rec), CELER_ENOTFOUND);
  expect_errstr(c, "nope-1");
  assert_null(rec);

  put_record(&f->redis, "default", "rec-1", "SUCCEEDED");
  expect_ok(c, celer_get_record(c, "default", "rec-1", &rec));
  assert_non_null(rec);
  assert_string_equal(str_field(rec, "id"), "rec-1");
  assert_string_equal(str_field(rec, "state"), "SUCCEEDED");
  assert_string_equal(str_field(rec, "worker"), "w1");
  assert_int_equal(int_field(json_object_get(rec, "result"), "answer"), 42);
  celer_state st = CELER_PENDING;
  assert_int_equal(celer_record_state(rec, &st), 0);
  assert_int_equal(st, CELER_SUCCEEDED);
  json_decref(rec);
  rec = NULL;

  /* queue NULL searches the registered queues. */
  cli_int(&f->redis, "SADD", "celer:queues", "default", "reports", NULL);
  put_record(&f->redis, "reports", "rec-2", "FAILED");
  assert_int_equal(celer_get_record(c, "default", "rec-2", &rec), CELER_ENOTFOUND);
  expect_ok(c, celer_get_record(c, NULL, "rec-2", &rec));
  assert_string_equal(str_field(rec, "queue"), "reports");
  assert_string_equal(str_field(rec, "state"), "FAILED");
  json_decref(rec);
  rec = NULL;

  /* Broken records are a protocol error, not a crash. */
  char *out = cli(&f->redis, "SET", "celer:{default}:result:bad-1", "not json", NULL);
  free(out);
  assert_int_equal(celer_get_record(c, "default", "bad-1", &rec), CELER_EPROTO);
  expect_errstr(c, "bad-1");
  assert_null(rec);
  assert_int_equal(celer_get_record(c, NULL, "bad-1", &rec), CELER_EPROTO);
  out = cli(&f->redis, "SET", "celer:{default}:result:bad-2", "{\"id\":\"bad-2\"}", NULL);
  free(out);
  assert_int_equal(celer_get_record(c, "default", "bad-2", &rec), CELER_EPROTO);
  out = cli(&f->redis, "SET", "celer:{default}:result:bad-3", "{\"state\":\"DONE\"}", NULL);
  free(out);
  assert_int_equal(celer_get_record(c, "default", "bad-3", &rec), CELER_EPROTO);
  /* A record key of the wrong type. */
  out = cli(&f->redis, "RPUSH", "celer:{default}:result:bad-4", "x", NULL);
  free(out);
  assert_int_equal(celer_get_record(c, "default", "bad-4", &rec), CELER_EPROTO);
  assert_null(rec);

  assert_int_equal(celer_get_record(c, "default", "bad id", &rec), CELER_EINVAL);
  assert_int_equal(celer_get_record(c, "bad{q}", "rec-1", &rec), CELER_EINVAL);
  expect_ok(c, celer_ping(c));
  client_free(c);
}

/* ---- waiting ---- */

static void test_wait_final_and_timeouts(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  json_t *rec = NULL;

  put_record(&f->redis, "default", "done-1", "CANCELED");
  int64_t t0 = celer_mono_ms();
  expect_ok(c, celer_wait(c, NULL, "done-1", WAIT_LONG_MS, &rec));
  assert_true(celer_mono_ms() - t0 < QUICK_MS);
  assert_string_equal(str_field(rec, "state"), "CANCELED");
  json_decref(rec);
  rec = NULL;

  t0 = celer_mono_ms();
  assert_int_equal(celer_wait(c, NULL, "never-1", WAIT_SHORT_MS, &rec), CELER_ETIMEDOUT);
  int64_t took = celer_mono_ms() - t0;
  assert_true(took >= WAIT_SHORT_MS);
  assert_true(took < 5000);
  expect_errstr(c, "never-1");
  assert_null(rec);

  put_record(&f->redis, "default", "retry-1", "RETRYING");
  t0 = celer_mono_ms();
  assert_int_equal(celer_wait(c, "default", "retry-1", WAIT_SHORT_MS, &rec), CELER_ETIMEDOUT);
  took = celer_mono_ms() - t0;
  assert_true(took >= WAIT_SHORT_MS);
  assert_true(took < 5000);
  assert_null(rec);

  /* The request connection is unharmed by the waits. */
  expect_ok(c, celer_ping(c));
  assert_int_equal(celer_wait(c, NULL, "bad id", WAIT_SHORT_MS, &rec), CELER_EINVAL);
  client_free(c);
}

/* In a child process: waits until the channel has a subscriber, then
 * writes the final record and publishes. Never returns. */
static void publish_when_subscribed(const harness_redis *r, const char *queue, const char *id) {
  char channel[256], key[256], json[1024];
  snprintf(channel, sizeof channel, "celer:{%s}:done:%s", queue, id);
  result_key(key, sizeof key, queue, id);
  record_json(json, sizeof json, queue, id, "SUCCEEDED");
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  int subscribed = 0;
  while (!subscribed && celer_mono_ms() < deadline) {
    char *out = NULL;
    if (cli_quiet(r, &out, "PUBSUB", "NUMSUB", channel, NULL) == 0 && out) {
      const char *nl = strchr(out, '\n');
      subscribed = nl && parse_count(nl + 1) == 1;
    }
    free(out);
  }
  int ok = subscribed && cli_quiet(r, NULL, "SET", key, json, NULL) == 0 &&
           cli_quiet(r, NULL, "PUBLISH", channel, "SUCCEEDED", NULL) == 0;
  _exit(ok ? 0 : 1);
}

static void test_wait_for_publish(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) publish_when_subscribed(&f->redis, "default", "pub-1");
  json_t *rec = NULL;
  int64_t t0 = celer_mono_ms();
  int rc = celer_wait(c, NULL, "pub-1", WAIT_LONG_MS, &rec);
  int64_t took = celer_mono_ms() - t0;
  int status = harness_wait(child, HARNESS_DEADLINE_MS);
  expect_ok(c, rc);
  assert_true(took < WAIT_LONG_MS);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_string_equal(str_field(rec, "id"), "pub-1");
  assert_string_equal(str_field(rec, "state"), "SUCCEEDED");
  assert_int_equal(int_field(json_object_get(rec, "result"), "answer"), 42);
  json_decref(rec);

  /* A wait reads the record of its own queue only. */
  put_record(&f->redis, "q2", "pub-2", "SUCCEEDED");
  rec = NULL;
  assert_int_equal(celer_wait(c, "default", "pub-2", WAIT_SHORT_MS, &rec), CELER_ETIMEDOUT);
  expect_ok(c, celer_wait(c, "q2", "pub-2", WAIT_LONG_MS, &rec));
  json_decref(rec);
  client_free(c);
}

/* ---- authentication and databases ---- */

static void enqueue_one(celer_client *c) {
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL));
}

static void test_requirepass(void **state) {
  fixture *f = *state;
  const char *extra[] = {"--requirepass", AUTH_PASSWORD, NULL};
  harness_redis *r = &f->extra;
  /* The harness's redis-cli authenticates through REDISCLI_AUTH. */
  setenv("REDISCLI_AUTH", AUTH_PASSWORD, 1);
  start_server(r, true, extra);
  char url[128];

  celer_client *c = client_new(r->url, NULL, 0);
  assert_int_equal(celer_client_connect(c), CELER_EAUTH);
  expect_errstr(c, NULL);
  assert_int_equal(celer_ping(c), CELER_EAUTH);
  client_free(c);

  snprintf(url, sizeof url, "redis://:hunter2wrong@127.0.0.1:%d/0", r->port);
  c = client_new(url, NULL, 0);
  assert_int_equal(celer_client_connect(c), CELER_EAUTH);
  expect_errstr(c, NULL);
  assert_null(strstr(celer_client_errstr(c), "hunter2wrong"));
  client_free(c);

  snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d/0", AUTH_PASSWORD, r->port);
  c = client_open(url, NULL, 0);
  expect_ok(c, celer_ping(c));
  enqueue_one(c);
  client_free(c);
  assert_int_equal(cli_int(r, "XLEN", "celer:{default}:stream", NULL), 1);

  char dir[PATH_MAX], pwfile[PATH_MAX + 16];
  assert_int_equal(harness_tmpdir(dir, sizeof dir), 0);
  snprintf(pwfile, sizeof pwfile, "%s/password", dir);
  FILE *fp = fopen(pwfile, "w");
  assert_non_null(fp);
  fputs(AUTH_PASSWORD "\n", fp);
  fclose(fp);
  celer_client_options o = {.broker_url = r->url, .password_file = pwfile};
  c = client_with(&o);
  expect_ok(c, celer_client_connect(c));
  enqueue_one(c);
  client_free(c);
  assert_int_equal(cli_int(r, "XLEN", "celer:{default}:stream", NULL), 2);

  /* The same file through CELER_BROKER_PASSWORD_FILE. */
  setenv("CELER_BROKER_PASSWORD_FILE", pwfile, 1);
  c = client_open(r->url, NULL, 0);
  expect_ok(c, celer_ping(c));
  client_free(c);
  unsetenv("CELER_BROKER_PASSWORD_FILE");

  /* A password file that cannot be read is a local I/O error. */
  char missing[PATH_MAX + 16];
  snprintf(missing, sizeof missing, "%s/absent", dir);
  o.password_file = missing;
  c = client_with(&o);
  assert_int_equal(celer_client_connect(c), CELER_EIO);
  expect_errstr(c, missing);
  client_free(c);

  harness_rmtree(dir);
  harness_redis_stop(r);
  unsetenv("REDISCLI_AUTH");
}

static void test_acl_user(void **state) {
  fixture *f = *state;
  const char *extra[] = {"--user", ACL_USER, "on", ">" ACL_PASSWORD, "~*", "&*", "+@all",
                         "--user", ACL_LIMITED_USER, "on", ">" ACL_LIMITED_PASSWORD, "~*",
                         "+ping", NULL};
  harness_redis *r = &f->extra;
  start_server(r, true, extra);
  char url[128];

  snprintf(url, sizeof url, "redis://%s:%s@127.0.0.1:%d/0", ACL_USER, ACL_PASSWORD, r->port);
  celer_client *c = client_open(url, NULL, 0);
  expect_ok(c, celer_ping(c));
  enqueue_one(c);
  client_free(c);
  assert_int_equal(cli_int(r, "XLEN", "celer:{default}:stream", NULL), 1);

  snprintf(url, sizeof url, "redis://%s:nottherightone@127.0.0.1:%d/0", ACL_USER, r->port);
  c = client_new(url, NULL, 0);
  assert_int_equal(celer_client_connect(c), CELER_EAUTH);
  assert_null(strstr(celer_client_errstr(c), "nottherightone"));
  client_free(c);

  /* A user allowed to PING but not to write: refused on enqueue. */
  snprintf(url, sizeof url, "redis://%s:%s@127.0.0.1:%d/0", ACL_LIMITED_USER,
           ACL_LIMITED_PASSWORD, r->port);
  c = client_open(url, NULL, 0);
  expect_ok(c, celer_ping(c));
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL), CELER_EAUTH);
  expect_errstr(c, "NOPERM");
  client_free(c);
  assert_int_equal(cli_int(r, "XLEN", "celer:{default}:stream", NULL), 1);

  harness_redis_stop(r);
}

static void test_database_selection(void **state) {
  fixture *f = *state;
  harness_redis *r = &f->extra;
  start_server(r, true, NULL);
  char url[128];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/%s", r->port, TEST_DB);
  celer_client *c = client_open(url, NULL, 0);
  enqueue_one(c);
  client_free(c);
  assert_int_equal(cli_int(r, "-n", TEST_DB, "XLEN", "celer:{default}:stream", NULL), 1);
  assert_int_equal(cli_int(r, "-n", "0", "DBSIZE", NULL), 0);
  harness_redis_stop(r);

  /* The Unix form takes the database as ?db=N. */
  char unix_url[PATH_MAX + 48];
  snprintf(unix_url, sizeof unix_url, "%s?db=%s", f->redis.url, TEST_DB);
  c = client_open(unix_url, NULL, 0);
  enqueue_one(c);
  client_free(c);
  assert_int_equal(cli_int(&f->redis, "-n", TEST_DB, "XLEN", "celer:{default}:stream", NULL),
                   1);
  assert_int_equal(cli_int(&f->redis, "-n", "0", "DBSIZE", NULL), 0);
}

/* ---- broken connections ---- */

/* What the calls on a connection whose server went away returned. */
typedef struct broken_outcome {
  int enqueue_rc, ping_rc, record_rc, batch_rc;
  int batch_status[2];
  int64_t slowest_ms;
  char errstr[CELER_ERRSTR_LEN];
} broken_outcome;

static void call_broken(celer_client *c, broken_outcome *o) {
  memset(o, 0, sizeof *o);
  int64_t t0 = celer_mono_ms();
  o->enqueue_rc = celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL);
  snprintf(o->errstr, sizeof o->errstr, "%s", celer_client_errstr(c));
  int64_t t1 = celer_mono_ms();
  o->slowest_ms = t1 - t0;
  o->ping_rc = celer_ping(c);
  json_t *rec = NULL;
  o->record_rc = celer_get_record(c, NULL, "x-1", &rec);
  json_decref(rec);
  celer_batch_item items[2];
  memset(items, 0, sizeof items);
  for (size_t i = 0; i < 2; i++) {
    items[i].task = "test.noop";
    celer_enqueue_options_init(&items[i].opts);
  }
  o->batch_rc = celer_enqueue_batch(c, items, 2);
  o->batch_status[0] = items[0].status;
  o->batch_status[1] = items[1].status;
  int64_t t2 = celer_mono_ms();
  if (t2 - t1 > o->slowest_ms) o->slowest_ms = t2 - t1;
}

static void expect_broken(const broken_outcome *o) {
  assert_int_equal(o->enqueue_rc, CELER_ECONNECT);
  assert_true(strlen(o->errstr) > 0);
  assert_int_equal(o->ping_rc, CELER_ECONNECT);
  assert_int_equal(o->record_rc, CELER_ECONNECT);
  assert_int_equal(o->batch_rc, CELER_ECONNECT);
  assert_int_equal(o->batch_status[0], CELER_ECONNECT);
  assert_int_equal(o->batch_status[1], CELER_ECONNECT);
  assert_true(o->slowest_ms < QUICK_MS);
}

static void check_server_gone(fixture *f, bool tcp) {
  harness_redis *r = &f->extra;
  start_server(r, tcp, NULL);
  celer_client *c = client_open(r->url, NULL, 0);
  expect_ok(c, celer_ping(c));
  harness_redis_stop(r);
  broken_outcome o;
  call_broken(c, &o);
  expect_broken(&o);
  expect_errstr(c, NULL);
  client_free(c);
}

static void test_server_gone_unix(void **state) {
  check_server_gone(*state, false);
}

static void test_server_gone_tcp(void **state) {
  check_server_gone(*state, true);
}

/* A program that never touched SIGPIPE must survive its broker going
 * away: the library must not let a write to a closed socket kill it. */
static void test_server_gone_sigpipe_default(void **state) {
  fixture *f = *state;
  harness_redis *r = &f->extra;
  start_server(r, false, NULL);
  celer_client *c = client_open(r->url, NULL, 0);
  expect_ok(c, celer_ping(c));
  harness_redis_stop(r);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    close(fds[0]);
    signal(SIGPIPE, SIG_DFL);
    broken_outcome o;
    call_broken(c, &o);
    ssize_t n = write(fds[1], &o, sizeof o);
    _exit(n == (ssize_t)sizeof o ? 0 : 1);
  }
  close(fds[1]);
  broken_outcome o;
  ssize_t got = read(fds[0], &o, sizeof o);
  close(fds[0]);
  int status = harness_wait(child, HARNESS_DEADLINE_MS);
  client_free(c);
  if (status == -1) {
    harness_stop(child, SIGKILL, HARNESS_DEADLINE_MS);
    fail_msg("the producer hangs after its broker went away");
  }
  if (WIFSIGNALED(status))
    fail_msg("the producer was killed by signal %d (%s) when its broker went away",
             WTERMSIG(status), strsignal(WTERMSIG(status)));
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_int_equal(got, (ssize_t)sizeof o);
  expect_broken(&o);
}

/* The server drops the client's connection (restart, idle timeout, CLIENT
 * KILL) while it is still running: the next call reconnects once and
 * succeeds, as client.h promises. */
static void test_reconnect_after_drop(void **state) {
  fixture *f = *state;
  celer_client *c = client_open(f->redis.url, NULL, 0);
  expect_ok(c, celer_ping(c));
  const char *kill_all[] = {"CLIENT", "KILL", "TYPE", "normal", NULL};

  cli_ok(&f->redis, kill_all);
  expect_ok(c, celer_ping(c));

  cli_ok(&f->redis, kill_all);
  expect_ok(c, celer_enqueue(c, "test.noop", NULL, NULL, NULL, NULL));
  assert_int_equal(cli_int(&f->redis, "XLEN", "celer:{default}:stream", NULL), 1);

  put_record(&f->redis, "default", "rc-1", "SUCCEEDED");
  cli_ok(&f->redis, kill_all);
  json_t *rec = NULL;
  expect_ok(c, celer_get_record(c, "default", "rc-1", &rec));
  json_decref(rec);
  client_free(c);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_ping_and_namespace),
      T(test_dead_unix_broker),
      T(test_dead_tcp_broker),
      T(test_bad_url),
      T(test_url_from_environment),
      T(test_enqueue_envelope),
      T(test_enqueue_options),
      T(test_validation_writes_nothing),
      T(test_payload_limit),
      T(test_countdown_goes_to_scheduled),
      T(test_batch_thousand),
      T(test_batch_partial_failure),
      T(test_get_record),
      T(test_wait_final_and_timeouts),
      T(test_wait_for_publish),
      T(test_requirepass),
      T(test_acl_user),
      T(test_database_selection),
      T(test_server_gone_unix),
      T(test_server_gone_tcp),
      T(test_server_gone_sigpipe_default),
      T(test_reconnect_after_drop),
  };
  return cmocka_run_group_tests_name("client", tests, group_setup, group_teardown);
}
