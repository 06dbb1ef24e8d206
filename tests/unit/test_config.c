/* Unit tests of common/config.c (defaults, the config file, the
 * environment, their precedence and every check) and of common/log.c (the
 * text and JSON line formats, read back from a redirected stderr). Files
 * live in a scratch directory made by the group setup and removed after. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness/harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "celer/envelope.h"
#include "common/common.h"

#define SECRET "Sekr1tPw"
/* Every name the loader reads from the environment, cleared before each
 * test so the developer's own settings cannot leak in. */
static const char *const celer_vars[] = {
    "CELER_CONFIG",     "CELER_BROKER_URL",  "CELER_BROKER_PASSWORD_FILE",
    "CELER_NAMESPACE",  "CELER_LOG_FORMAT",  "CELER_LOG_LEVEL",
    "CELER_RESULT_TTL", "CELER_MAX_PAYLOAD", "CELER_FOO",
    "CELER_SIGNING_ALG",
};

/* Short enough that every path and sentence built from it fits. */
static char scratch[128];

/* ---- fixtures ---- */

static int make_scratch(void **state) {
  return harness_tmpdir(scratch, sizeof scratch);
}

/* Removes whatever the tests left in the scratch dir, then the dir. */
static int remove_scratch(void **state) {
  harness_rmtree(scratch);
  return 0;
}

static int clean_env(void **state) {
  for (size_t i = 0; i < sizeof celer_vars / sizeof celer_vars[0]; i++) unsetenv(celer_vars[i]);
  celer_log_configure("text", "info");
  celer_log_set_program("celer-test");
  return 0;
}

/* Writes len bytes into a new file in the scratch dir; returns its path
 * (static storage, valid until the next call). */
static const char *scratch_file_n(const char *data, size_t len) {
  static char path[sizeof scratch + 16];
  snprintf(path, sizeof path, "%s/cfXXXXXX", scratch);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
  return path;
}

static const char *scratch_file(const char *text) { return scratch_file_n(text, strlen(text)); }

/* Loads, expects success and returns the config (caller frees). */
static celer_config load_ok(const char *path) {
  celer_config cfg;
  char err[CELER_ERRSTR_LEN] = "";
  int rc = celer_config_load(&cfg, path, err, sizeof err);
  if (rc != 0) fail_msg("unexpected error %d: %s", rc, err);
  return cfg;
}

/* Loads, expects code and the sentence, "<path>" standing for path. */
static void load_bad(const char *path, int code, const char *sentence) {
  celer_config cfg;
  char err[CELER_ERRSTR_LEN] = "", want[CELER_ERRSTR_LEN * 2];
  int rc = celer_config_load(&cfg, path, err, sizeof err);
  celer_config_free(&cfg);
  const char *mark = strstr(sentence, "<path>");
  if (mark) {
    snprintf(want, sizeof want, "%.*s%s%s", (int)(mark - sentence), sentence, path, mark + 6);
  } else {
    snprintf(want, sizeof want, "%s", sentence);
  }
  assert_string_equal(err, want);
  assert_int_equal(rc, code);
}

static void expect_defaults_except_nothing(const celer_config *cfg) {
  assert_string_equal(cfg->broker_url, "redis://127.0.0.1:6379/0");
  assert_null(cfg->password_file);
  assert_string_equal(cfg->ns, "celer");
  assert_string_equal(cfg->log_format, "text");
  assert_string_equal(cfg->log_level, "info");
  assert_int_equal(cfg->result_ttl_s, 86400);
  assert_int_equal(cfg->max_payload, 1048576);
}

/* ---- defaults and the file ---- */

static void test_defaults(void **state) {
  celer_config cfg = load_ok(NULL);
  expect_defaults_except_nothing(&cfg);
  celer_config_free(&cfg);
  assert_null(cfg.broker_url);
  assert_null(cfg.ns);
}

static void test_file_sets_everything(void **state) {
  const char *path = scratch_file(
      "# Celer settings\n"
      "\n"
      "CELER_BROKER_URL = redis://:" SECRET "@redis:6380/2\n"
      "CELER_BROKER_PASSWORD_FILE=/run/secrets/redis\n"
      "  CELER_NAMESPACE\t=\t\"prod.eu-1\"  \n"
      "   # an indented comment\n"
      "CELER_LOG_FORMAT = json\r\n"
      "CELER_LOG_LEVEL =debug\n"
      "CELER_RESULT_TTL= 3600\n"
      "CELER_MAX_PAYLOAD = \"2048\"");
  celer_config cfg = load_ok(path);
  assert_string_equal(cfg.broker_url, "redis://:" SECRET "@redis:6380/2");
  assert_string_equal(cfg.password_file, "/run/secrets/redis");
  assert_string_equal(cfg.ns, "prod.eu-1");
  assert_string_equal(cfg.log_format, "json");
  assert_string_equal(cfg.log_level, "debug");
  assert_int_equal(cfg.result_ttl_s, 3600);
  assert_int_equal(cfg.max_payload, 2048);
  celer_config_free(&cfg);
}

static void test_empty_and_comment_only_files(void **state) {
  celer_config cfg = load_ok(scratch_file(""));
  expect_defaults_except_nothing(&cfg);
  celer_config_free(&cfg);
  cfg = load_ok(scratch_file("# nothing\n\n   \n\t\n#CELER_NAMESPACE = x\n"));
  expect_defaults_except_nothing(&cfg);
  celer_config_free(&cfg);
}

static void test_later_line_wins(void **state) {
  celer_config cfg = load_ok(scratch_file("CELER_NAMESPACE = one\nCELER_NAMESPACE = two\n"));
  assert_string_equal(cfg.ns, "two");
  celer_config_free(&cfg);
}

static void test_quotes(void **state) {
  celer_config cfg = load_ok(scratch_file("CELER_LOG_LEVEL = \"warn\"\n"
                                          "CELER_BROKER_PASSWORD_FILE = \" /odd path \"\n"));
  assert_string_equal(cfg.log_level, "warn");
  assert_string_equal(cfg.password_file, " /odd path ");
  celer_config_free(&cfg);
  const char *path = scratch_file("CELER_NAMESPACE = \"abc\n");
  load_bad(path, CELER_EINVAL,
           "<path>:1: the value of CELER_NAMESPACE has an unmatched double quote");
  path = scratch_file("\nCELER_NAMESPACE = \"\n");
  load_bad(path, CELER_EINVAL,
           "<path>:2: the value of CELER_NAMESPACE has an unmatched double quote");
  /* Quotes only come off in pairs around the whole value. */
  path = scratch_file("CELER_NAMESPACE = abc\"\n");
  load_bad(path, CELER_EINVAL,
           "<path>:1: CELER_NAMESPACE must be 1 to 64 characters from A-Z a-z 0-9 _ . - "
           "(got \"abc\"\")");
  path = scratch_file("CELER_NAMESPACE = \"\"\n");
  load_bad(path, CELER_EINVAL,
           "<path>:1: CELER_NAMESPACE must be 1 to 64 characters from A-Z a-z 0-9 _ . - "
           "(got \"\")");
}

static void test_unknown_setting_names_the_line(void **state) {
  const char *path = scratch_file("# x\nCELER_NAMESPACE = a\nCELER_FOO = 1\n");
  load_bad(path, CELER_EINVAL, "<path>:3: unknown setting CELER_FOO");
  path = scratch_file("celer_namespace = a\n");
  load_bad(path, CELER_EINVAL, "<path>:1: unknown setting celer_namespace");
  path = scratch_file("CELER_SIGNING_KEY_FILE = /k\n");
  load_bad(path, CELER_EINVAL,
           "<path>:1: CELER_SIGNING_KEY_FILE is read from the environment only");
  path = scratch_file("\n\nCELER_CONFIG = /other.conf\n");
  load_bad(path, CELER_EINVAL, "<path>:3: CELER_CONFIG is read from the environment only");
}

static void test_syntax_errors(void **state) {
  load_bad(scratch_file("CELER_NAMESPACE = a\nCELER_LOG_LEVEL debug\n"), CELER_EINVAL,
           "<path>:2: expected NAME = value");
  load_bad(scratch_file("= value\n"), CELER_EINVAL, "<path>:1: expected NAME = value");
  load_bad(scratch_file("CELER NAMESPACE = a\n"), CELER_EINVAL,
           "<path>:1: expected NAME = value");
  load_bad(scratch_file("export CELER_NAMESPACE=a\n"), CELER_EINVAL,
           "<path>:1: expected NAME = value");
  load_bad(scratch_file("CELER-NAMESPACE = a\n"), CELER_EINVAL,
           "<path>:1: expected NAME = value");
  /* '#' opens a comment only at the start of a line. */
  load_bad(scratch_file("CELER_NAMESPACE = abc # note\n"), CELER_EINVAL,
           "<path>:1: CELER_NAMESPACE must be 1 to 64 characters from A-Z a-z 0-9 _ . - "
           "(got \"abc # note\")");
  load_bad(scratch_file_n("CELER_NAMESPACE = a\n\nCELER_\0LOG = x\n", 36), CELER_EINVAL,
           "<path>:3: the line holds a NUL byte");
}

static void test_bad_values_name_the_line(void **state) {
  load_bad(scratch_file("\n\n\nCELER_LOG_LEVEL = loud\n"), CELER_EINVAL,
           "<path>:4: CELER_LOG_LEVEL must be debug, info, warn or error (got \"loud\")");
  load_bad(scratch_file("CELER_LOG_FORMAT = xml\r\n"), CELER_EINVAL,
           "<path>:1: CELER_LOG_FORMAT must be text or json (got \"xml\")");
  load_bad(scratch_file("CELER_RESULT_TTL = 0\n"), CELER_EINVAL,
           "<path>:1: CELER_RESULT_TTL must be a whole number of seconds from 1 to "
           "315360000 (got \"0\")");
  load_bad(scratch_file("CELER_MAX_PAYLOAD = 1k\n"), CELER_EINVAL,
           "<path>:1: CELER_MAX_PAYLOAD must be a whole number of bytes from 1024 to "
           "536870912 (got \"1k\")");
  load_bad(scratch_file("CELER_BROKER_URL = redis://:" SECRET "@h:0\n"), CELER_EINVAL,
           "<path>:1: CELER_BROKER_URL is not a valid broker URL: the port must be a number "
           "from 1 to 65535");
  load_bad(scratch_file("CELER_BROKER_PASSWORD_FILE =\n"), CELER_EINVAL,
           "<path>:1: CELER_BROKER_PASSWORD_FILE must be the path of a file holding the "
           "password");
}

static void test_file_size_limit(void **state) {
  char *big = malloc(CELER_CONFIG_FILE_MAX + 1);
  assert_non_null(big);
  memset(big, '#', CELER_CONFIG_FILE_MAX + 1);
  const char *tail = "\nCELER_NAMESPACE = atlimit\n";
  memcpy(big + CELER_CONFIG_FILE_MAX - strlen(tail), tail, strlen(tail));
  celer_config cfg = load_ok(scratch_file_n(big, CELER_CONFIG_FILE_MAX));
  assert_string_equal(cfg.ns, "atlimit");
  celer_config_free(&cfg);
  load_bad(scratch_file_n(big, CELER_CONFIG_FILE_MAX + 1), CELER_EINVAL,
           "the config file <path> is larger than 65536 bytes");
  free(big);
}

static void test_missing_file(void **state) {
  char path[sizeof scratch + 32];
  snprintf(path, sizeof path, "%s/nope.conf", scratch);
  load_bad(path, CELER_EIO, "cannot open the config file <path>: No such file or directory");
  load_bad(scratch, CELER_EIO, "cannot read the config file <path>: Is a directory");
  /* Named by CELER_CONFIG, the same sentences. */
  setenv("CELER_CONFIG", path, 1);
  celer_config cfg;
  char err[CELER_ERRSTR_LEN], want[CELER_ERRSTR_LEN];
  assert_int_equal(celer_config_load(&cfg, NULL, err, sizeof err), CELER_EIO);
  celer_config_free(&cfg);
  snprintf(want, sizeof want, "cannot open the config file %s: No such file or directory", path);
  assert_string_equal(err, want);
}

/* ---- the environment ---- */

static void test_config_variable_names_the_file(void **state) {
  const char *path = scratch_file("CELER_NAMESPACE = fromfile\n");
  setenv("CELER_CONFIG", path, 1);
  celer_config cfg = load_ok(NULL);
  assert_string_equal(cfg.ns, "fromfile");
  celer_config_free(&cfg);
  /* An explicit path beats CELER_CONFIG. */
  const char *other = scratch_file("CELER_NAMESPACE = explicit\n");
  cfg = load_ok(other);
  assert_string_equal(cfg.ns, "explicit");
  celer_config_free(&cfg);
  /* Empty means no file. */
  setenv("CELER_CONFIG", "", 1);
  cfg = load_ok(NULL);
  expect_defaults_except_nothing(&cfg);
  celer_config_free(&cfg);
}

static void test_environment_beats_file(void **state) {
  const char *path = scratch_file("CELER_NAMESPACE = filens\n"
                                  "CELER_LOG_LEVEL = debug\n"
                                  "CELER_RESULT_TTL = 60\n"
                                  "CELER_BROKER_URL = redis://filehost\n");
  setenv("CELER_NAMESPACE", "envns", 1);
  setenv("CELER_RESULT_TTL", "120", 1);
  setenv("CELER_MAX_PAYLOAD", "4096", 1);
  setenv("CELER_BROKER_URL", "unix:///tmp/r.sock?db=1", 1);
  setenv("CELER_BROKER_PASSWORD_FILE", "/env/pw", 1);
  setenv("CELER_LOG_FORMAT", "json", 1);
  celer_config cfg = load_ok(path);
  assert_string_equal(cfg.ns, "envns");
  assert_string_equal(cfg.log_level, "debug");
  assert_string_equal(cfg.log_format, "json");
  assert_int_equal(cfg.result_ttl_s, 120);
  assert_int_equal(cfg.max_payload, 4096);
  assert_string_equal(cfg.broker_url, "unix:///tmp/r.sock?db=1");
  assert_string_equal(cfg.password_file, "/env/pw");
  celer_config_free(&cfg);
  setenv("CELER_LOG_LEVEL", "error", 1);
  cfg = load_ok(NULL);
  assert_string_equal(cfg.log_level, "error");
  assert_string_equal(cfg.ns, "envns");
  celer_config_free(&cfg);
}

static void test_empty_variable_counts_as_unset(void **state) {
  setenv("CELER_NAMESPACE", "", 1);
  setenv("CELER_RESULT_TTL", "", 1);
  celer_config cfg = load_ok(scratch_file("CELER_NAMESPACE = keep\n"));
  assert_string_equal(cfg.ns, "keep");
  assert_int_equal(cfg.result_ttl_s, 86400);
  celer_config_free(&cfg);
}

static void test_other_variables_ignored(void **state) {
  setenv("CELER_FOO", "whatever", 1);
  setenv("CELER_SIGNING_ALG", "HS256", 1);
  celer_config cfg = load_ok(NULL);
  expect_defaults_except_nothing(&cfg);
  celer_config_free(&cfg);
}

static void test_environment_values_checked(void **state) {
  setenv("CELER_LOG_LEVEL", "loud", 1);
  load_bad(NULL, CELER_EINVAL,
           "CELER_LOG_LEVEL must be debug, info, warn or error (got \"loud\")");
  unsetenv("CELER_LOG_LEVEL");
  setenv("CELER_NAMESPACE", "a:b", 1);
  load_bad(NULL, CELER_EINVAL,
           "CELER_NAMESPACE must be 1 to 64 characters from A-Z a-z 0-9 _ . - (got \"a:b\")");
  unsetenv("CELER_NAMESPACE");
  setenv("CELER_MAX_PAYLOAD", "536870913", 1);
  load_bad(NULL, CELER_EINVAL,
           "CELER_MAX_PAYLOAD must be a whole number of bytes from 1024 to 536870912 "
           "(got \"536870913\")");
  unsetenv("CELER_MAX_PAYLOAD");
  setenv("CELER_BROKER_URL", "rediss://:" SECRET "@h", 1);
  load_bad(NULL, CELER_EINVAL,
           "CELER_BROKER_URL is not a valid broker URL: rediss:// (TLS) is not supported by "
           "this build; see docs/security.md for reaching a TLS-only Redis");
  /* A good file does not rescue a bad variable. */
  load_bad(scratch_file("CELER_BROKER_URL = redis://h\n"), CELER_EINVAL,
           "CELER_BROKER_URL is not a valid broker URL: rediss:// (TLS) is not supported by "
           "this build; see docs/security.md for reaching a TLS-only Redis");
}

/* ---- celer_config_set, setting by setting ---- */

typedef struct set_case {
  const char *name, *value;
  int rc;
} set_case;

static void test_set_bounds(void **state) {
  static const set_case cases[] = {
      {"CELER_NAMESPACE", "a", 0},
      {"CELER_NAMESPACE", "Az09_.-", 0},
      {"CELER_NAMESPACE", "", CELER_EINVAL},
      {"CELER_NAMESPACE", "a b", CELER_EINVAL},
      {"CELER_NAMESPACE", "a/b", CELER_EINVAL},
      {"CELER_NAMESPACE", "a{b}", CELER_EINVAL},
      {"CELER_NAMESPACE", "\xc3\xa9", CELER_EINVAL},
      {"CELER_LOG_FORMAT", "text", 0},
      {"CELER_LOG_FORMAT", "json", 0},
      {"CELER_LOG_FORMAT", "JSON", CELER_EINVAL},
      {"CELER_LOG_FORMAT", "", CELER_EINVAL},
      {"CELER_LOG_LEVEL", "debug", 0},
      {"CELER_LOG_LEVEL", "info", 0},
      {"CELER_LOG_LEVEL", "warn", 0},
      {"CELER_LOG_LEVEL", "error", 0},
      {"CELER_LOG_LEVEL", "warning", CELER_EINVAL},
      {"CELER_LOG_LEVEL", "INFO", CELER_EINVAL},
      {"CELER_RESULT_TTL", "1", 0},
      {"CELER_RESULT_TTL", "315360000", 0},
      {"CELER_RESULT_TTL", "0", CELER_EINVAL},
      {"CELER_RESULT_TTL", "315360001", CELER_EINVAL},
      {"CELER_RESULT_TTL", "-1", CELER_EINVAL},
      {"CELER_RESULT_TTL", "+5", CELER_EINVAL},
      {"CELER_RESULT_TTL", " 5", CELER_EINVAL},
      {"CELER_RESULT_TTL", "5s", CELER_EINVAL},
      {"CELER_RESULT_TTL", "1e3", CELER_EINVAL},
      {"CELER_RESULT_TTL", "", CELER_EINVAL},
      {"CELER_RESULT_TTL", "99999999999999999999", CELER_EINVAL},
      {"CELER_MAX_PAYLOAD", "1024", 0},
      {"CELER_MAX_PAYLOAD", "536870912", 0},
      {"CELER_MAX_PAYLOAD", "1023", CELER_EINVAL},
      {"CELER_MAX_PAYLOAD", "536870913", CELER_EINVAL},
      {"CELER_MAX_PAYLOAD", "0x400", CELER_EINVAL},
      {"CELER_BROKER_URL", "redis://h", 0},
      {"CELER_BROKER_URL", "redis://[::1]:6380/2", 0},
      {"CELER_BROKER_URL", "unix:///tmp/r.sock?db=3", 0},
      {"CELER_BROKER_URL", "redis://", CELER_EINVAL},
      {"CELER_BROKER_URL", "", CELER_EINVAL},
      {"CELER_BROKER_URL", "http://h", CELER_EINVAL},
      {"CELER_BROKER_PASSWORD_FILE", "/p", 0},
      {"CELER_BROKER_PASSWORD_FILE", "relative/p", 0},
      {"CELER_BROKER_PASSWORD_FILE", "", CELER_EINVAL},
      {"CELER_FOO", "1", CELER_EINVAL},
      {"CELER_CONFIG", "/x", CELER_EINVAL},
      {"", "1", CELER_EINVAL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    celer_config cfg = load_ok(NULL);
    char err[CELER_ERRSTR_LEN] = "";
    int rc = celer_config_set(&cfg, cases[i].name, cases[i].value, err, sizeof err);
    if (rc != cases[i].rc)
      fail_msg("%s=%s: expected %d, got %d (%s)", cases[i].name, cases[i].value, cases[i].rc,
               rc, err);
    if (rc != 0) assert_true(strncmp(err, cases[i].name, strlen(cases[i].name)) == 0 ||
                             strncmp(err, "unknown setting ", 16) == 0);
    celer_config_free(&cfg);
  }
}

static void test_set_stores_values(void **state) {
  celer_config cfg = load_ok(NULL);
  char err[CELER_ERRSTR_LEN];
  char ns[CELER_NAMESPACE_MAX + 2];
  memset(ns, 'n', sizeof ns);
  ns[CELER_NAMESPACE_MAX] = '\0';
  assert_int_equal(celer_config_set(&cfg, "CELER_NAMESPACE", ns, err, sizeof err), 0);
  assert_string_equal(cfg.ns, ns);
  ns[CELER_NAMESPACE_MAX] = 'n';
  ns[CELER_NAMESPACE_MAX + 1] = '\0';
  assert_int_equal(celer_config_set(&cfg, "CELER_NAMESPACE", ns, err, sizeof err),
                   CELER_EINVAL);
  /* A refused value leaves the old one in place. */
  ns[CELER_NAMESPACE_MAX] = '\0';
  assert_string_equal(cfg.ns, ns);
  assert_int_equal(celer_config_set(&cfg, "CELER_RESULT_TTL", "315360001", err, sizeof err),
                   CELER_EINVAL);
  assert_int_equal(cfg.result_ttl_s, 86400);
  assert_int_equal(celer_config_set(&cfg, "CELER_RESULT_TTL", "315360000", err, sizeof err), 0);
  assert_int_equal(cfg.result_ttl_s, 315360000);
  assert_int_equal(celer_config_set(&cfg, "CELER_MAX_PAYLOAD", "536870912", err, sizeof err), 0);
  assert_int_equal(cfg.max_payload, 536870912);
  assert_int_equal(celer_config_set(&cfg, "CELER_FOO", "1", err, sizeof err), CELER_EINVAL);
  assert_string_equal(err, "unknown setting CELER_FOO");
  celer_config_free(&cfg);
}

static void test_set_never_echoes_the_password(void **state) {
  static const char *const urls[] = {
      "redis://:" SECRET "@h:0", "redis://u:" SECRET "@", "redis://u:" SECRET "%zz@h",
      "rediss://:" SECRET "@h",  "redis://:" SECRET "@h/" SECRET,
  };
  for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
    celer_config cfg = load_ok(NULL);
    char err[CELER_ERRSTR_LEN] = "";
    assert_int_equal(celer_config_set(&cfg, "CELER_BROKER_URL", urls[i], err, sizeof err),
                     CELER_EINVAL);
    assert_true(strncmp(err, "CELER_BROKER_URL is not a valid broker URL: ", 44) == 0);
    assert_null(strstr(err, SECRET));
    assert_string_equal(cfg.broker_url, CELER_DEFAULT_BROKER_URL);
    celer_config_free(&cfg);
  }
}

static void test_replace(void **state) {
  char *field = NULL;
  assert_int_equal(celer_config_replace(&field, "one"), 0);
  assert_string_equal(field, "one");
  char *first = field;
  assert_int_equal(celer_config_replace(&field, "two"), 0);
  assert_string_equal(field, "two");
  assert_ptr_not_equal(field, first);
  free(field);
}

static void test_free_twice_is_safe(void **state) {
  celer_config cfg = load_ok(NULL);
  celer_config_free(&cfg);
  celer_config_free(&cfg);
  assert_null(cfg.log_level);
}

/* ---- logging ---- */

/* Largest line the logger writes, newline included (PIPE_BUF on Linux). */
#define LOG_LINE_LIMIT 4096

static int saved_stderr = -1;
static char capture_path[sizeof scratch + 16];

static void capture_begin(void) {
  snprintf(capture_path, sizeof capture_path, "%s/logXXXXXX", scratch);
  int fd = mkstemp(capture_path);
  assert_true(fd >= 0);
  fflush(stderr);
  saved_stderr = dup(STDERR_FILENO);
  assert_true(saved_stderr >= 0);
  assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
  close(fd);
}

/* Restores stderr and returns what was written (caller frees). */
static char *capture_end(void) {
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  saved_stderr = -1;
  FILE *f = fopen(capture_path, "rb");
  assert_non_null(f);
  char *buf = calloc(1, 1 << 16);
  assert_non_null(buf);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  buf[n] = '\0';
  fclose(f);
  unlink(capture_path);
  return buf;
}

/* Checks "YYYY-MM-DDTHH:MM:SS.mmmZ" at s and that it is within a minute
 * of now. */
static void check_ts(const char *s) {
  struct tm tm = {0};
  int ms = -1;
  char z = 0;
  assert_int_equal(strlen(s) >= 24, 1);
  for (int i = 0; i < 24; i++) {
    if (i == 4 || i == 7) assert_int_equal(s[i], '-');
    else if (i == 10) assert_int_equal(s[i], 'T');
    else if (i == 13 || i == 16) assert_int_equal(s[i], ':');
    else if (i == 19) assert_int_equal(s[i], '.');
    else if (i == 23) assert_int_equal(s[i], 'Z');
    else assert_true(s[i] >= '0' && s[i] <= '9');
  }
  assert_int_equal(sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                          &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z),
                   8);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  int64_t at = (int64_t)timegm(&tm) * 1000 + ms;
  int64_t now = celer_now_ms();
  assert_true(at <= now && now - at < 60000);
}

/* Expects exactly one text line: "<ts> <rest>\n". */
static void expect_text_line(const char *out, const char *rest) {
  char want[LOG_LINE_LIMIT * 2];
  check_ts(out);
  snprintf(want, sizeof want, " %s\n", rest);
  assert_string_equal(out + 24, want);
}

static void test_log_text_format(void **state) {
  char rest[256];
  capture_begin();
  celer_log(CELER_LOG_INFO, NULL, "hello %d", 42);
  char *out = capture_end();
  snprintf(rest, sizeof rest, "INFO  celer-test[%ld] hello 42", (long)getpid());
  expect_text_line(out, rest);
  free(out);

  capture_begin();
  celer_log(CELER_LOG_ERROR, "4f9a-id", "task %s failed", "x");
  out = capture_end();
  snprintf(rest, sizeof rest, "ERROR celer-test[%ld] task x failed task=4f9a-id",
           (long)getpid());
  expect_text_line(out, rest);
  free(out);

  celer_log_set_program("celer-worker");
  capture_begin();
  celer_warn("careful");
  out = capture_end();
  snprintf(rest, sizeof rest, "WARN  celer-worker[%ld] careful", (long)getpid());
  expect_text_line(out, rest);
  free(out);
}

static void test_log_threshold(void **state) {
  assert_false(celer_log_enabled(CELER_LOG_DEBUG));
  assert_true(celer_log_enabled(CELER_LOG_INFO));
  capture_begin();
  celer_debug("hidden");
  celer_info("shown");
  char *out = capture_end();
  assert_null(strstr(out, "hidden"));
  assert_non_null(strstr(out, "shown"));
  free(out);

  assert_int_equal(celer_log_configure(NULL, "debug"), 0);
  assert_true(celer_log_enabled(CELER_LOG_DEBUG));
  capture_begin();
  celer_debug("now %s", "visible");
  out = capture_end();
  char rest[128];
  snprintf(rest, sizeof rest, "DEBUG celer-test[%ld] now visible", (long)getpid());
  expect_text_line(out, rest);
  free(out);

  assert_int_equal(celer_log_configure(NULL, "error"), 0);
  assert_false(celer_log_enabled(CELER_LOG_WARN));
  assert_true(celer_log_enabled(CELER_LOG_ERROR));
  capture_begin();
  celer_info("a");
  celer_warn("b");
  char *empty = capture_end();
  assert_string_equal(empty, "");
  free(empty);
  assert_int_equal(celer_log_configure(NULL, "warn"), 0);
  assert_false(celer_log_enabled(CELER_LOG_INFO));
  assert_true(celer_log_enabled(CELER_LOG_WARN));
}

static void test_log_configure_rejects_unknown_words(void **state) {
  assert_int_equal(celer_log_configure("xml", "debug"), CELER_EINVAL);
  assert_int_equal(celer_log_configure("json", "loud"), CELER_EINVAL);
  assert_int_equal(celer_log_configure("JSON", NULL), CELER_EINVAL);
  /* Nothing changed: still text at info. */
  assert_false(celer_log_enabled(CELER_LOG_DEBUG));
  capture_begin();
  celer_info("plain");
  char *out = capture_end();
  char rest[128];
  snprintf(rest, sizeof rest, "INFO  celer-test[%ld] plain", (long)getpid());
  expect_text_line(out, rest);
  free(out);
}

static void test_log_text_keeps_one_line(void **state) {
  capture_begin();
  celer_info("first\nsecond\rthird\tx");
  char *out = capture_end();
  char rest[128];
  snprintf(rest, sizeof rest, "INFO  celer-test[%ld] first second third x", (long)getpid());
  expect_text_line(out, rest);
  free(out);
}

/* Parses one JSON line and checks it is the only line. */
static json_t *one_json_line(const char *out) {
  size_t len = strlen(out);
  assert_true(len > 0 && out[len - 1] == '\n');
  assert_ptr_equal(strchr(out, '\n'), out + len - 1);
  json_error_t jerr;
  json_t *obj = json_loads(out, 0, &jerr);
  if (obj == NULL) fail_msg("not JSON (%s): %s", jerr.text, out);
  return obj;
}

static void test_log_json_format(void **state) {
  assert_int_equal(celer_log_configure("json", NULL), 0);
  capture_begin();
  celer_log(CELER_LOG_WARN, "t-1", "quote \" backslash \\ newline\n tab\t ctl\x01 end");
  char *out = capture_end();
  char prefix[64];
  /* Keys in the documented order, compact. */
  assert_true(strncmp(out, "{\"ts\":\"", 7) == 0);
  snprintf(prefix, sizeof prefix, "\",\"level\":\"warn\",\"program\":\"celer-test\",\"pid\":%ld,",
           (long)getpid());
  assert_non_null(strstr(out, prefix));
  json_t *obj = one_json_line(out);
  assert_int_equal(json_object_size(obj), 6);
  check_ts(json_string_value(json_object_get(obj, "ts")));
  assert_int_equal(strlen(json_string_value(json_object_get(obj, "ts"))), 24);
  assert_string_equal(json_string_value(json_object_get(obj, "level")), "warn");
  assert_string_equal(json_string_value(json_object_get(obj, "program")), "celer-test");
  assert_int_equal(json_integer_value(json_object_get(obj, "pid")), getpid());
  assert_string_equal(json_string_value(json_object_get(obj, "msg")),
                      "quote \" backslash \\ newline\n tab\t ctl\x01 end");
  assert_string_equal(json_string_value(json_object_get(obj, "task")), "t-1");
  json_decref(obj);
  free(out);

  capture_begin();
  celer_error("no task");
  out = capture_end();
  obj = one_json_line(out);
  assert_int_equal(json_object_size(obj), 5);
  assert_null(json_object_get(obj, "task"));
  assert_string_equal(json_string_value(json_object_get(obj, "level")), "error");
  assert_string_equal(json_string_value(json_object_get(obj, "msg")), "no task");
  json_decref(obj);
  free(out);
}

static void test_log_json_bad_utf8(void **state) {
  assert_int_equal(celer_log_configure("json", "debug"), 0);
  capture_begin();
  celer_debug("ok \xc3\xa9 bad \xff\xc3 end");
  char *out = capture_end();
  json_t *obj = one_json_line(out);
  assert_string_equal(json_string_value(json_object_get(obj, "level")), "debug");
  assert_string_equal(json_string_value(json_object_get(obj, "msg")), "ok \xc3\xa9 bad ?? end");
  json_decref(obj);
  free(out);
}

static void test_log_long_messages_fit_one_line(void **state) {
  enum { LONG = 10000 };
  char *msg = malloc(LONG + 1);
  assert_non_null(msg);
  memset(msg, 'm', LONG);
  msg[LONG] = '\0';
  capture_begin();
  celer_log(CELER_LOG_INFO, "tid", "%s", msg);
  char *out = capture_end();
  size_t len = strlen(out);
  assert_true(len <= LOG_LINE_LIMIT);
  assert_ptr_equal(strchr(out, '\n'), out + len - 1);
  assert_true(strncmp(out + len - 13, "... task=tid\n", 13) == 0);
  free(out);

  /* Quotes double in JSON; the message shrinks until the line fits. */
  assert_int_equal(celer_log_configure("json", NULL), 0);
  memset(msg, '"', 3000);
  msg[3000] = '\0';
  capture_begin();
  celer_info("%s", msg);
  out = capture_end();
  len = strlen(out);
  assert_true(len <= LOG_LINE_LIMIT);
  json_t *obj = one_json_line(out);
  const char *m = json_string_value(json_object_get(obj, "msg"));
  size_t mlen = strlen(m);
  assert_true(mlen > 100 && mlen < 3000);
  assert_string_equal(m + mlen - 3, "...");
  json_decref(obj);
  free(out);
  free(msg);
}

static void test_log_keeps_errno(void **state) {
  capture_begin();
  errno = ENOENT;
  celer_info("x");
  int after = errno;
  free(capture_end());
  assert_int_equal(after, ENOENT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_defaults, clean_env),
      cmocka_unit_test_setup(test_file_sets_everything, clean_env),
      cmocka_unit_test_setup(test_empty_and_comment_only_files, clean_env),
      cmocka_unit_test_setup(test_later_line_wins, clean_env),
      cmocka_unit_test_setup(test_quotes, clean_env),
      cmocka_unit_test_setup(test_unknown_setting_names_the_line, clean_env),
      cmocka_unit_test_setup(test_syntax_errors, clean_env),
      cmocka_unit_test_setup(test_bad_values_name_the_line, clean_env),
      cmocka_unit_test_setup(test_file_size_limit, clean_env),
      cmocka_unit_test_setup(test_missing_file, clean_env),
      cmocka_unit_test_setup(test_config_variable_names_the_file, clean_env),
      cmocka_unit_test_setup(test_environment_beats_file, clean_env),
      cmocka_unit_test_setup(test_empty_variable_counts_as_unset, clean_env),
      cmocka_unit_test_setup(test_other_variables_ignored, clean_env),
      cmocka_unit_test_setup(test_environment_values_checked, clean_env),
      cmocka_unit_test_setup(test_set_bounds, clean_env),
      cmocka_unit_test_setup(test_set_stores_values, clean_env),
      cmocka_unit_test_setup(test_set_never_echoes_the_password, clean_env),
      cmocka_unit_test_setup(test_replace, clean_env),
      cmocka_unit_test_setup(test_free_twice_is_safe, clean_env),
      cmocka_unit_test_setup(test_log_text_format, clean_env),
      cmocka_unit_test_setup(test_log_threshold, clean_env),
      cmocka_unit_test_setup(test_log_configure_rejects_unknown_words, clean_env),
      cmocka_unit_test_setup(test_log_text_keeps_one_line, clean_env),
      cmocka_unit_test_setup(test_log_json_format, clean_env),
      cmocka_unit_test_setup(test_log_json_bad_utf8, clean_env),
      cmocka_unit_test_setup(test_log_long_messages_fit_one_line, clean_env),
      cmocka_unit_test_setup(test_log_keeps_errno, clean_env),
  };
  return cmocka_run_group_tests(tests, make_scratch, remove_scratch);
}
