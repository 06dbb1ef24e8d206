/* docs/writing-tasks.md cannot rot: its example module is taken out of the
 * markdown, compiled with the system compiler against include/, loaded by
 * the real worker, and its task run, including its follow-up. */
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

/* The marker above the example's code fence in the guide. */
#define GUIDE_MARKER "<!-- example: greet.c"

typedef struct suite {
  harness_redis redis;
  celer_client *client;
  pid_t worker;
  char dir[HARNESS_DIR_MAX];
  char log[PATH_MAX], notify_log[PATH_MAX], module[PATH_MAX];
} suite;

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

/* Writes the code of the fence after the marker to path; 0 or -1. */
static int extract_example(const char *doc, const char *path) {
  char *text = slurp(doc);
  const char *mark = text ? strstr(text, GUIDE_MARKER) : NULL;
  const char *open = mark ? strstr(mark, "```c\n") : NULL;
  const char *code = open ? open + strlen("```c\n") : NULL;
  const char *close = code ? strstr(code, "\n```") : NULL;
  int rc = -1;
  FILE *f = close ? fopen(path, "w") : NULL;
  if (f) {
    rc = fwrite(code, 1, (size_t)(close - code) + 1, f) == (size_t)(close - code) + 1 ? 0 : -1;
    if (fclose(f) != 0) rc = -1;
  }
  if (rc != 0) print_error("no example after \"%s\" in %s\n", GUIDE_MARKER, doc);
  free(text);
  return rc;
}

/* Builds the guide's module and starts Redis and a worker running it. */
static int start_suite(suite *s) {
  if (harness_tmpdir(s->dir, sizeof s->dir) != 0) return -1;
  char src[PATH_MAX];
  snprintf(src, sizeof src, "%s/greet.c", s->dir);
  snprintf(s->module, sizeof s->module, "%s/greet.so", s->dir);
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->dir);
  snprintf(s->notify_log, sizeof s->notify_log, "%s/notify.log", s->dir);
  if (extract_example(GUIDE_DOC, src) != 0) return -1;
  /* The guide's own build line, with the checkout's include directory. */
  const char *cc[] = {GUIDE_CC, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                      "-Wno-unused-parameter", "-I", GUIDE_INCLUDE, "-o", s->module, src,
                      NULL};
  char *out = NULL, *err = NULL;
  int rc = harness_run(cc, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
  if (rc != 0) print_error("compiling the guide's example failed:\n%s%s\n", out, err);
  free(out);
  free(err);
  if (rc != 0 || harness_redis_start(&s->redis, false, NULL) != 0) return -1;
  setenv("CELER_NOTIFY_LOG", s->notify_log, 1);
  const char *args[] = {"--module", s->module, "--module", "notify", NULL};
  s->worker = harness_worker(&s->redis, args, s->log);
  if (s->worker <= 0 || (s->client = harness_client(&s->redis)) == NULL) return -1;
  return 0;
}

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL) return -1;
  if (start_suite(s) != 0) {
    free(s); /* what it started dies with this process (harness) */
    return -1;
  }
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  int status = harness_stop(s->worker, SIGTERM, HARNESS_DEADLINE_MS);
  bool clean = harness_log_is_clean(s->log);
  celer_client_free(s->client);
  harness_redis_stop(&s->redis);
  harness_rmtree(s->dir);
  free(s);
  return clean && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static json_t *run(suite *s, const char *kwargs) {
  json_t *kw = json_loads(kwargs, 0, NULL);
  assert_non_null(kw);
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(s->client, "greet.hello", NULL, kw, NULL, id), 0);
  json_decref(kw);
  json_t *rec = NULL;
  assert_int_equal(celer_wait(s->client, NULL, id, HARNESS_DEADLINE_MS, &rec), 0);
  return rec;
}

static const char *field(const json_t *rec, const char *a, const char *b) {
  const json_t *v = json_object_get(rec, a);
  if (b) v = json_object_get(v, b);
  return json_string_value(v) ? json_string_value(v) : "";
}

static void test_the_example_runs(void **state) {
  suite *s = *state;
  json_t *rec = run(s, "{\"name\": \"Ada\", \"lang\": \"fr\"}");
  assert_string_equal(field(rec, "state", NULL), "SUCCEEDED");
  assert_string_equal(field(rec, "result", NULL), "Bonjour, Ada!");
  json_decref(rec);
  rec = run(s, "{\"name\": 42}");
  assert_string_equal(field(rec, "state", NULL), "FAILED");
  assert_string_equal(field(rec, "error", "message"), "kwargs.name: expected a string");
  json_decref(rec);
  rec = run(s, "{\"name\": \"Ada\", \"lang\": \"de\"}");
  assert_string_equal(field(rec, "error", "message"), "kwargs.lang: \"en\" or \"fr\", not \"de\"");
  json_decref(rec);
}

static void test_the_example_follow_up(void **state) {
  suite *s = *state;
  json_t *rec = run(s, "{\"name\": \"Grace\", \"email\": \"grace@example.com\"}");
  assert_string_equal(field(rec, "state", NULL), "SUCCEEDED");
  json_decref(rec);
  /* The notification reaches the log channel; poll with a deadline. */
  int64_t until = celer_mono_ms() + HARNESS_DEADLINE_MS;
  char *text = NULL;
  while ((text = slurp(s->notify_log)) == NULL || strstr(text, "Hello, Grace!") == NULL) {
    free(text);
    text = NULL;
    if (celer_mono_ms() > until) break;
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_non_null(text);
  assert_non_null(strstr(text, "\"to\":\"grace@example.com\""));
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_the_example_runs),
      cmocka_unit_test(test_the_example_follow_up),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
