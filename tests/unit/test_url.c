/* Unit tests of broker/url.c: every accepted URL shape with its exact
 * fields, every rejected one with its code and sentence, the masked
 * description, and password files read from a scratch directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness/harness.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "broker/broker.h"

/* The password used by the leak checks; must never show up in a sentence. */
#define SECRET "Sekr1tPw"

/* Short enough that every path and sentence built from it fits. */
static char scratch[128];

/* ---- helpers ---- */

static broker_url parse_ok(const char *url) {
  broker_url u;
  char err[CELER_ERRSTR_LEN] = "";
  int rc = broker_url_parse(url, &u, err, sizeof err);
  if (rc != 0) fail_msg("%s: unexpected error: %s", url, err);
  return u;
}

/* Expects a rejection and returns the sentence (static storage). */
static const char *parse_bad(const char *url) {
  static char err[CELER_ERRSTR_LEN];
  broker_url u;
  memset(&u, 0x5a, sizeof u);
  err[0] = '\0';
  int rc = broker_url_parse(url, &u, err, sizeof err);
  if (rc != CELER_EINVAL) fail_msg("%s: expected CELER_EINVAL, got %d", url ? url : "(null)", rc);
  assert_true(strncmp(err, "broker URL: ", 12) == 0);
  /* A rejected URL leaves nothing behind, least of all a password. */
  assert_string_equal(u.password, "");
  assert_string_equal(u.user, "");
  return err;
}

static void expect_bad(const char *url, const char *sentence) {
  assert_string_equal(parse_bad(url), sentence);
}

static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* Writes len bytes into a new file under the scratch dir; returns its path
 * (static storage, valid until the next call). */
static const char *scratch_file(const void *data, size_t len) {
  static char path[sizeof scratch + 16];
  snprintf(path, sizeof path, "%s/pwXXXXXX", scratch);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
  return path;
}

static int make_scratch(void **state) {
  return harness_tmpdir(scratch, sizeof scratch);
}

/* Removes whatever the tests left in the scratch dir, then the dir. */
static int remove_scratch(void **state) {
  harness_rmtree(scratch);
  return 0;
}

/* ---- redis:// accepted ---- */

static void test_host_only_gets_defaults(void **state) {
  broker_url u = parse_ok("redis://localhost");
  assert_false(u.is_unix);
  assert_string_equal(u.host, "localhost");
  assert_int_equal(u.port, 6379);
  assert_int_equal(u.db, 0);
  assert_string_equal(u.user, "");
  assert_string_equal(u.password, "");
  assert_string_equal(u.path, "");
}

static void test_full_url(void **state) {
  broker_url u = parse_ok("redis://alice:s3cret@redis.example.com:6380/2");
  assert_string_equal(u.host, "redis.example.com");
  assert_int_equal(u.port, 6380);
  assert_int_equal(u.db, 2);
  assert_string_equal(u.user, "alice");
  assert_string_equal(u.password, "s3cret");
}

static void test_default_url_constant(void **state) {
  broker_url u = parse_ok(CELER_DEFAULT_BROKER_URL);
  assert_string_equal(u.host, "127.0.0.1");
  assert_int_equal(u.port, 6379);
  assert_int_equal(u.db, 0);
}

static void test_password_only(void **state) {
  broker_url u = parse_ok("redis://:pass@host");
  assert_string_equal(u.user, "");
  assert_string_equal(u.password, "pass");
  assert_string_equal(u.host, "host");
}

static void test_user_without_password(void **state) {
  broker_url u = parse_ok("redis://bob@host:7000");
  assert_string_equal(u.user, "bob");
  assert_string_equal(u.password, "");
  assert_int_equal(u.port, 7000);
  u = parse_ok("redis://bob:@host");
  assert_string_equal(u.user, "bob");
  assert_string_equal(u.password, "");
}

static void test_colon_inside_password(void **state) {
  broker_url u = parse_ok("redis://u:a:b:c@h");
  assert_string_equal(u.user, "u");
  assert_string_equal(u.password, "a:b:c");
}

static void test_percent_decoding(void **state) {
  broker_url u = parse_ok("redis://us%40er:p%40ss%3Aw%2fd%25@h/1");
  assert_string_equal(u.user, "us@er");
  assert_string_equal(u.password, "p@ss:w/d%");
  assert_string_equal(u.host, "h");
  assert_int_equal(u.db, 1);
  u = parse_ok("redis://%C3%A9:%20x%20@h");
  assert_string_equal(u.user, "\xc3\xa9");
  assert_string_equal(u.password, " x ");
}

static void test_scheme_case_insensitive(void **state) {
  broker_url u = parse_ok("REDIS://h:1/3");
  assert_string_equal(u.host, "h");
  assert_int_equal(u.port, 1);
  assert_int_equal(u.db, 3);
  u = parse_ok("Unix:///run/r.sock");
  assert_true(u.is_unix);
}

static void test_ipv6(void **state) {
  broker_url u = parse_ok("redis://[::1]:6380/2");
  assert_string_equal(u.host, "::1");
  assert_int_equal(u.port, 6380);
  assert_int_equal(u.db, 2);
  u = parse_ok("redis://[2001:db8::7]");
  assert_string_equal(u.host, "2001:db8::7");
  assert_int_equal(u.port, 6379);
  u = parse_ok("redis://:pw@[fe80::1]/5");
  assert_string_equal(u.host, "fe80::1");
  assert_string_equal(u.password, "pw");
  assert_int_equal(u.db, 5);
  u = parse_ok("redis://[::ffff:10.0.0.1]:1");
  assert_string_equal(u.host, "::ffff:10.0.0.1");
}

static void test_port_bounds(void **state) {
  assert_int_equal(parse_ok("redis://h:1").port, 1);
  assert_int_equal(parse_ok("redis://h:65535").port, 65535);
  assert_int_equal(parse_ok("redis://h:06379").port, 6379);
  const char *why = "broker URL: the port must be a number from 1 to 65535";
  expect_bad("redis://h:0", why);
  expect_bad("redis://h:65536", why);
  expect_bad("redis://h:", why);
  expect_bad("redis://h:-1", why);
  expect_bad("redis://h:+1", why);
  expect_bad("redis://h:12a", why);
  expect_bad("redis://h:0x10", why);
  expect_bad("redis://h:99999999999999999999999", why);
  expect_bad("redis://h:1:2", why);
  expect_bad("redis://[::1]:", why);
  expect_bad("redis://[::1]:70000", why);
}

static void test_db_bounds(void **state) {
  assert_int_equal(parse_ok("redis://h/0").db, 0);
  assert_int_equal(parse_ok("redis://h/").db, 0);
  assert_int_equal(parse_ok("redis://h:6379/15").db, 15);
  assert_int_equal(parse_ok("redis://h/1000000").db, BROKER_DB_MAX);
  const char *why = "broker URL: the database after '/' must be a number from 0 to 1000000";
  expect_bad("redis://h/1000001", why);
  expect_bad("redis://h/x", why);
  expect_bad("redis://h/-1", why);
  expect_bad("redis://h/1/", why);
  expect_bad("redis://h//", why);
  expect_bad("redis://h/1.5", why);
  expect_bad("redis://h/0x1", why);
  expect_bad("redis://h/99999999999999999999999", why);
}

/* ---- redis:// rejected ---- */

static void test_empty_host(void **state) {
  const char *why = "broker URL: the host is empty";
  expect_bad("redis://", why);
  expect_bad("redis://:6379", why);
  expect_bad("redis:///0", why);
  expect_bad("redis://user:pw@", why);
  expect_bad("redis://user:pw@:6379/0", why);
  expect_bad("redis://::1:6379", why);
}

static void test_bad_host_characters(void **state) {
  const char *why = "broker URL: the host may hold only letters, digits, '.', '-' and '_' "
                    "(write IPv6 addresses in brackets)";
  expect_bad("redis://h%41st", why);
  expect_bad("redis://h\xc3\xa9st", why);
  expect_bad("redis://a,b", why);
  expect_bad("redis://a\\b", why);
}

static void test_bad_ipv6(void **state) {
  expect_bad("redis://[::1", "broker URL: an IPv6 address must be closed with ']'");
  const char *invalid = "broker URL: the IPv6 address between '[' and ']' is not valid";
  expect_bad("redis://[]:6379", invalid);
  expect_bad("redis://[zz::1]", invalid);
  expect_bad("redis://[127.0.0.1]", invalid);
  expect_bad("redis://[::1]x", "broker URL: only ':port' may follow an IPv6 address");
  expect_bad("redis://[::1]]", "broker URL: only ':port' may follow an IPv6 address");
}

static void test_schemes(void **state) {
  expect_bad("rediss://h:6379/0",
             "broker URL: rediss:// (TLS) is not supported by this build; see "
             "docs/security.md for reaching a TLS-only Redis");
  expect_bad("REDISS://:" SECRET "@h",
             "broker URL: rediss:// (TLS) is not supported by this build; see "
             "docs/security.md for reaching a TLS-only Redis");
  const char *why = "broker URL: the URL must start with redis:// or unix://";
  expect_bad("http://h", why);
  expect_bad("h:6379", why);
  expect_bad("redis:/h", why);
  expect_bad("redis:h", why);
  expect_bad("unix:/tmp/r.sock", why);
  expect_bad("tcp://h", why);
  expect_bad("empty", why);
  expect_bad("", "broker URL: the URL is empty");
  expect_bad(NULL, "broker URL: the URL is empty");
}

static void test_trailing_garbage(void **state) {
  const char *query = "broker URL: redis:// URLs take no query or fragment; give the "
                      "database as /db";
  expect_bad("redis://h:6379/0?x=1", "broker URL: the database after '/' must be a number "
                                     "from 0 to 1000000");
  expect_bad("redis://h?db=1", query);
  expect_bad("redis://h:6379?db=1", query);
  expect_bad("redis://h#frag", query);
  expect_bad("redis://h/0#frag", "broker URL: the database after '/' must be a number "
                                 "from 0 to 1000000");
  const char *space = "broker URL: the URL contains a space or control character";
  expect_bad("redis://h:6379 ", space);
  expect_bad(" redis://h", space);
  expect_bad("redis://h\n", space);
  expect_bad("redis://h\t/0", space);
  expect_bad("redis://h/0\x7f", space);
}

static void test_bad_escapes(void **state) {
  const char *pw = "broker URL: the password has a malformed %-escape";
  expect_bad("redis://:pa%4@h", pw);
  expect_bad("redis://:pa%zz@h", pw);
  expect_bad("redis://:pa%@h", pw);
  expect_bad("redis://:pa%g1@h", pw);
  expect_bad("redis://:pa%00ss@h", pw);
  expect_bad("redis://:pa%0Ass@h", pw);
  expect_bad("redis://:pa%0dss@h", pw);
  const char *user = "broker URL: the user name has a malformed %-escape";
  expect_bad("redis://us%2@h", user);
  expect_bad("redis://us%xyer:pw@h", user);
  expect_bad("redis://%00:pw@h", user);
}

static void test_reserved_characters_in_credentials(void **state) {
  expect_bad("redis://a@b@host", "broker URL: write an '@' inside the user or password as %40");
  expect_bad("redis://:p@ss@host",
             "broker URL: write an '@' inside the user or password as %40");
  const char *esc = "broker URL: write '/', '?', '#' and '@' inside the user or password as "
                    "%-escapes (%2F, %3F, %23, %40)";
  expect_bad("redis://:pa/ss@host", esc);
  expect_bad("redis://:pa?ss@host", esc);
  expect_bad("redis://:pa#ss@host", esc);
  expect_bad("redis://u/x:pw@host/0", esc);
}

static void test_field_lengths(void **state) {
  char url[4096];
  char *s = repeat('h', BROKER_HOST_MAX);
  snprintf(url, sizeof url, "redis://%s:1/1", s);
  assert_int_equal(strlen(parse_ok(url).host), BROKER_HOST_MAX);
  snprintf(url, sizeof url, "redis://%sh:1/1", s);
  expect_bad(url, "broker URL: the host is longer than 255 characters");
  free(s);

  s = repeat('u', BROKER_USER_MAX);
  snprintf(url, sizeof url, "redis://%s:pw@h", s);
  assert_string_equal(parse_ok(url).user, s);
  snprintf(url, sizeof url, "redis://%su:pw@h", s);
  expect_bad(url, "broker URL: the user name is longer than 128 bytes");
  free(s);

  s = repeat('p', BROKER_PASSWORD_MAX);
  snprintf(url, sizeof url, "redis://:%s@h", s);
  assert_string_equal(parse_ok(url).password, s);
  snprintf(url, sizeof url, "redis://:%sp@h", s);
  expect_bad(url, "broker URL: the password is longer than 512 bytes");
  free(s);

  /* The limit counts decoded bytes: 512 escapes are 512 bytes. */
  char enc[BROKER_PASSWORD_MAX * 3 + 4] = "";
  for (int i = 0; i < BROKER_PASSWORD_MAX; i++) strcat(enc, "%41");
  snprintf(url, sizeof url, "redis://:%s@h", enc);
  broker_url u = parse_ok(url);
  assert_int_equal(strlen(u.password), BROKER_PASSWORD_MAX);
  assert_int_equal(u.password[0], 'A');
  snprintf(url, sizeof url, "redis://:%s%%41@h", enc);
  expect_bad(url, "broker URL: the password is longer than 512 bytes");
}

/* ---- unix:// ---- */

static void test_unix_accepted(void **state) {
  broker_url u = parse_ok("unix:///tmp/redis.sock");
  assert_true(u.is_unix);
  assert_string_equal(u.path, "/tmp/redis.sock");
  assert_int_equal(u.db, 0);
  assert_string_equal(u.host, "");
  assert_string_equal(u.password, "");
  u = parse_ok("unix:///run/redis/redis-server.sock?db=3");
  assert_string_equal(u.path, "/run/redis/redis-server.sock");
  assert_int_equal(u.db, 3);
  u = parse_ok("unix:///a?db=1000000");
  assert_int_equal(u.db, BROKER_DB_MAX);
  u = parse_ok("unix:///var/run/r%20s.sock");
  assert_string_equal(u.path, "/var/run/r%20s.sock");
}

static void test_unix_rejected(void **state) {
  const char *abs = "broker URL: unix:// must be followed by an absolute socket path "
                    "(unix:///path/redis.sock)";
  expect_bad("unix://", abs);
  expect_bad("unix://tmp/r.sock", abs);
  expect_bad("unix://localhost/tmp/r.sock", abs);
  expect_bad("unix://:" SECRET "@/tmp/r.sock", abs);
  expect_bad("unix://?db=1", abs);
  expect_bad("unix:///with space.sock",
             "broker URL: the URL contains a space or control character");
  const char *dir = "broker URL: the socket path names a directory, not a socket";
  expect_bad("unix:///", dir);
  expect_bad("unix:///tmp/", dir);
  const char *db = "broker URL: db must be a number from 0 to 1000000";
  expect_bad("unix:///tmp/r.sock?db=", db);
  expect_bad("unix:///tmp/r.sock?db=x", db);
  expect_bad("unix:///tmp/r.sock?db=-1", db);
  expect_bad("unix:///tmp/r.sock?db=1000001", db);
  expect_bad("unix:///tmp/r.sock?db=1&x=2", db);
  expect_bad("unix:///tmp/r.sock?db=1?db=2", db);
  const char *only = "broker URL: unix:// URLs accept only the query parameter db (pass a "
                     "password with CELER_BROKER_PASSWORD_FILE)";
  expect_bad("unix:///tmp/r.sock?", only);
  expect_bad("unix:///tmp/r.sock?password=" SECRET, only);
  expect_bad("unix:///tmp/r.sock?DB=1", only);
  expect_bad("unix:///tmp/r.sock?x=1&db=1", only);
}

static void test_unix_path_length(void **state) {
  char url[512];
  char *s = repeat('s', BROKER_SOCKET_PATH_MAX - 1);
  snprintf(url, sizeof url, "unix:///%s?db=2", s);
  broker_url u = parse_ok(url);
  assert_int_equal(strlen(u.path), BROKER_SOCKET_PATH_MAX);
  assert_int_equal(u.db, 2);
  snprintf(url, sizeof url, "unix:///%ss", s);
  expect_bad(url, "broker URL: the socket path is longer than 107 bytes, the limit of "
                  "sun_path");
  free(s);
}

/* ---- no sentence ever carries the password ---- */

static void test_errors_never_hold_the_password(void **state) {
  static const char *const urls[] = {
      "redis://:" SECRET "@h:0",        "redis://:" SECRET "@h:99999/0",
      "redis://:" SECRET "@h/x",        "redis://:" SECRET "@h/1000001",
      "redis://:" SECRET "@",           "redis://:" SECRET "@:1",
      "redis://u:" SECRET "%zz@h",      "redis://u:" SECRET "%4@h",
      "redis://u:" SECRET "@@h",        "redis://u:" SECRET "/x@h",
      "redis://u:" SECRET "?x@h",       "redis://u:" SECRET "@h?db=1",
      "redis://u:" SECRET "@h#" SECRET, "redis://u:" SECRET "@[::1",
      "redis://u:" SECRET "@[::1]x",    "redis://u:" SECRET "@h st",
      "redis://" SECRET ":" SECRET "@h:" SECRET,
      "redis://u:" SECRET "@" SECRET ",x",
      "redis:/u:" SECRET "@h",          "rediss://u:" SECRET "@h",
      "unix:///tmp/s?password=" SECRET, "redis://u:" SECRET "@h/" SECRET,
  };
  for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
    const char *err = parse_bad(urls[i]);
    if (strstr(err, SECRET)) fail_msg("%s: sentence leaks the password: %s", urls[i], err);
  }
}

/* ---- describe ---- */

static void describe(const char *url, const char *expected) {
  broker_url u = parse_ok(url);
  char buf[1024];
  broker_url_describe(&u, buf, sizeof buf);
  assert_string_equal(buf, expected);
  if (u.password[0]) assert_null(strstr(buf, u.password));
}

static void test_describe(void **state) {
  describe("redis://127.0.0.1", "redis://127.0.0.1:6379/0");
  describe("redis://alice:" SECRET "@redis.example.com:6380/2",
           "redis://alice:***@redis.example.com:6380/2");
  describe("redis://:" SECRET "@h", "redis://:***@h:6379/0");
  describe("redis://bob@h/4", "redis://bob@h:6379/4");
  describe("redis://[::1]:6380/2", "redis://[::1]:6380/2");
  describe("redis://u:" SECRET "@[fe80::1]", "redis://u:***@[fe80::1]:6379/0");
  describe("redis://us%40er%3a1:" SECRET "@h", "redis://us%40er%3A1:***@h:6379/0");
  describe("unix:///tmp/redis.sock", "unix:///tmp/redis.sock?db=0");
  describe("unix:///tmp/redis.sock?db=7", "unix:///tmp/redis.sock?db=7");
}

static void test_describe_masks_file_password(void **state) {
  broker_url u = parse_ok("unix:///tmp/r.sock?db=1");
  strcpy(u.password, SECRET);
  char buf[256];
  broker_url_describe(&u, buf, sizeof buf);
  assert_string_equal(buf, "unix:///tmp/r.sock?db=1");
  u = parse_ok("redis://h");
  strcpy(u.password, SECRET);
  broker_url_describe(&u, buf, sizeof buf);
  assert_string_equal(buf, "redis://:***@h:6379/0");
}

static void test_describe_truncates(void **state) {
  broker_url u = parse_ok("redis://alice:" SECRET "@host:6380/2");
  char buf[12];
  memset(buf, 'X', sizeof buf);
  broker_url_describe(&u, buf, sizeof buf);
  assert_string_equal(buf, "redis://ali");
  char one[1] = {'X'};
  broker_url_describe(&u, one, sizeof one);
  assert_int_equal(one[0], '\0');
}

/* ---- password files ---- */

static int read_pw(const char *path, broker_url *u, char *err) {
  memset(u, 0, sizeof *u);
  strcpy(u->password, "from-url");
  err[0] = '\0';
  return broker_url_read_password(path, u, err, CELER_ERRSTR_LEN);
}

static void expect_pw(const void *data, size_t len, const char *expected) {
  broker_url u;
  char err[CELER_ERRSTR_LEN];
  const char *path = scratch_file(data, len);
  int rc = read_pw(path, &u, err);
  if (rc != 0) fail_msg("unexpected error: %s", err);
  assert_string_equal(u.password, expected);
  unlink(path);
}

/* Expects a refusal: code, and the sentence with "<path>" standing for the
 * file's path. The URL's password is left alone. */
static void expect_pw_bad(const void *data, size_t len, int code, const char *sentence) {
  broker_url u;
  char err[CELER_ERRSTR_LEN], want[CELER_ERRSTR_LEN];
  const char *path = scratch_file(data, len);
  assert_int_equal(read_pw(path, &u, err), code);
  const char *mark = strstr(sentence, "<path>");
  assert_non_null(mark);
  snprintf(want, sizeof want, "%.*s%s%s", (int)(mark - sentence), sentence, path, mark + 6);
  assert_string_equal(err, want);
  assert_string_equal(u.password, "from-url");
  unlink(path);
}

static void test_password_file_newlines(void **state) {
  expect_pw("pw\n", 3, "pw");
  expect_pw("pw", 2, "pw");
  expect_pw("pw\r\n", 4, "pw");
  expect_pw(" spaced out \n", 13, " spaced out ");
  expect_pw("tab\tin\n", 7, "tab\tin");
}

static void test_password_file_refusals(void **state) {
  const char *inner = "the password file <path> must hold one line: the password has a NUL "
                      "or line-break byte";
  expect_pw_bad("pw\n\n", 4, CELER_EIO, inner);
  expect_pw_bad("pw\r\n\r\n", 6, CELER_EIO, inner);
  expect_pw_bad("p\nw\n", 4, CELER_EIO, inner);
  expect_pw_bad("p\0w\n", 4, CELER_EIO, inner);
  expect_pw_bad("p\rw", 3, CELER_EIO, inner);
  expect_pw_bad("pw\r", 3, CELER_EIO, inner);
  expect_pw_bad("pw\n\r\n", 5, CELER_EIO, inner);
  expect_pw_bad("\n\n", 2, CELER_EIO, inner);
  const char *empty = "the password file <path> is empty";
  expect_pw_bad("", 0, CELER_EIO, empty);
  expect_pw_bad("\n", 1, CELER_EIO, empty);
  expect_pw_bad("\r\n", 2, CELER_EIO, empty);
}

static void test_password_file_size(void **state) {
  enum { BIG = 100000 };
  static char buf[BIG];
  char *full = repeat('p', BROKER_PASSWORD_MAX);
  memset(buf, 'p', BIG);
  expect_pw(buf, BROKER_PASSWORD_MAX, full);
  memcpy(buf + BROKER_PASSWORD_MAX, "\n", 1);
  expect_pw(buf, BROKER_PASSWORD_MAX + 1, full);
  memcpy(buf + BROKER_PASSWORD_MAX, "\r\n", 2);
  expect_pw(buf, BROKER_PASSWORD_MAX + 2, full);

  const char *big = "the password file <path> holds more than 512 bytes";
  memset(buf, 'p', BIG);
  expect_pw_bad(buf, BROKER_PASSWORD_MAX + 1, CELER_ETOOBIG, big);
  memcpy(buf + BROKER_PASSWORD_MAX + 1, "\n", 1);
  expect_pw_bad(buf, BROKER_PASSWORD_MAX + 2, CELER_ETOOBIG, big);
  memcpy(buf + BROKER_PASSWORD_MAX + 1, "\r\n", 2);
  expect_pw_bad(buf, BROKER_PASSWORD_MAX + 3, CELER_ETOOBIG, big);
  memset(buf, 'p', BIG);
  expect_pw_bad(buf, BIG, CELER_ETOOBIG, big);
  free(full);
}

static void test_password_file_missing(void **state) {
  char path[sizeof scratch + 32], err[CELER_ERRSTR_LEN];
  broker_url u;
  snprintf(path, sizeof path, "%s/does-not-exist", scratch);
  assert_int_equal(read_pw(path, &u, err), CELER_EIO);
  char want[CELER_ERRSTR_LEN];
  snprintf(want, sizeof want, "cannot open the password file %s: No such file or directory",
           path);
  assert_string_equal(err, want);
  assert_string_equal(u.password, "from-url");

  assert_int_equal(read_pw(scratch, &u, err), CELER_EIO);
  snprintf(want, sizeof want, "cannot read the password file %s: Is a directory", scratch);
  assert_string_equal(err, want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_host_only_gets_defaults),
      cmocka_unit_test(test_full_url),
      cmocka_unit_test(test_default_url_constant),
      cmocka_unit_test(test_password_only),
      cmocka_unit_test(test_user_without_password),
      cmocka_unit_test(test_colon_inside_password),
      cmocka_unit_test(test_percent_decoding),
      cmocka_unit_test(test_scheme_case_insensitive),
      cmocka_unit_test(test_ipv6),
      cmocka_unit_test(test_port_bounds),
      cmocka_unit_test(test_db_bounds),
      cmocka_unit_test(test_empty_host),
      cmocka_unit_test(test_bad_host_characters),
      cmocka_unit_test(test_bad_ipv6),
      cmocka_unit_test(test_schemes),
      cmocka_unit_test(test_trailing_garbage),
      cmocka_unit_test(test_bad_escapes),
      cmocka_unit_test(test_reserved_characters_in_credentials),
      cmocka_unit_test(test_field_lengths),
      cmocka_unit_test(test_unix_accepted),
      cmocka_unit_test(test_unix_rejected),
      cmocka_unit_test(test_unix_path_length),
      cmocka_unit_test(test_errors_never_hold_the_password),
      cmocka_unit_test(test_describe),
      cmocka_unit_test(test_describe_masks_file_password),
      cmocka_unit_test(test_describe_truncates),
      cmocka_unit_test(test_password_file_newlines),
      cmocka_unit_test(test_password_file_refusals),
      cmocka_unit_test(test_password_file_size),
      cmocka_unit_test(test_password_file_missing),
  };
  return cmocka_run_group_tests(tests, make_scratch, remove_scratch);
}
