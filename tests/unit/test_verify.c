/* The keyring and the verification of one stored task (worker/verify.h),
 * without a broker: real key files in a temp dir, tokens minted with
 * libjwt, the clock given to verify_task so that the skew's edges are
 * exact. tests/integration/test_signing.c runs the same checks end to end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jwt.h>

#include "harness/harness.h"
#include "worker/verify.h"

/* A fixed "now" for every check, seconds since epoch. */
#define NOW 1800000000
#define SKEW 30

static const char secret[] = "unit-test-secret-of-more-than-32-bytes!!";

typedef struct fixture {
  char dir[HARNESS_DIR_MAX];
  celer_keyring *kr;
} fixture;

static void write_in(const fixture *f, const char *name, const char *text) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

static const char keyring_text[] =
    "{\"clock_skew\": 30,\n"
    " \"keys\": [{\"kid\": \"k1\", \"alg\": \"HS256\", \"secret_file\": \"k1.key\"}],\n"
    " \"policy\": [{\"iss\": \"svc\", \"tasks\": [\"users.*\"], \"queues\": [\"default\"]},\n"
    "            {\"iss\": \"svc\", \"tasks\": [\"notify.send\"], \"queues\": [\"mail-*\"]}]}\n";

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL || harness_tmpdir(f->dir, sizeof f->dir) != 0) return -1;
  char text[128];
  snprintf(text, sizeof text, "%s\n", secret); /* the trailing newline is ignored */
  write_in(f, "k1.key", text);
  write_in(f, "keyring.json", keyring_text);
  char path[PATH_MAX], err[256];
  snprintf(path, sizeof path, "%s/keyring.json", f->dir);
  if (keyring_load(path, &f->kr, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  keyring_free(f->kr);
  harness_rmtree(f->dir);
  free(f);
  return 0;
}

/* A token over claims (a JSON object text) signed with key as alg, kid. */
static char *mint_with(const char *claims, const char *alg, const char *kid, const char *key) {
  jwt_t *jwt = NULL;
  assert_int_equal(jwt_new(&jwt), 0);
  assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
  assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
  assert_int_equal(
      jwt_set_alg(jwt, jwt_str_alg(alg), (const unsigned char *)key, (int)strlen(key)), 0);
  char *t = jwt_encode_str(jwt);
  assert_non_null(t);
  jwt_free(jwt);
  return t;
}

static char *mint(const char *claims) { return mint_with(claims, "HS256", "k1", secret); }

/* Claims of users.create "t1" on default with the given extra members. */
static char *claims_with(const char *extra) {
  char *c = malloc(512);
  snprintf(c, 512,
           "{\"id\": \"t1\", \"task\": \"users.create\", \"queue\": \"default\", \"iss\": "
           "\"svc\", \"jti\": \"t1\"%s%s}",
           extra[0] ? ", " : "", extra);
  return c;
}

/* verify_task on text at NOW; returns the reason (VERIFY_OK when accepted). */
static verify_reason judge(const fixture *f, const char *text, const char *queue,
                           verify_result *out) {
  int rc = verify_task(f->kr, text, strlen(text), queue, 0, NOW, out);
  assert_true(rc == 0 || rc == 1);
  assert_int_equal(rc == 1, out->reason != VERIFY_OK);
  return out->reason;
}

/* The reason for a token over claims_with(extra). */
static verify_reason reason_for(const fixture *f, const char *extra, const char *queue) {
  char *c = claims_with(extra);
  char *t = mint(c);
  verify_result out;
  verify_reason r = judge(f, t, queue, &out);
  verify_result_clear(&out);
  free(t);
  free(c);
  return r;
}

static void test_accepts_and_hands_over_claims(void **state) {
  fixture *f = *state;
  char *c = claims_with("\"iat\": 1800000000");
  char *t = mint(c);
  verify_result out;
  assert_int_equal(judge(f, t, "default", &out), VERIFY_OK);
  assert_non_null(out.claims);
  assert_non_null(strstr(out.claims, "\"task\":\"users.create\""));
  assert_string_equal(out.id, "t1");
  verify_result_clear(&out);
  free(t);
  free(c);
}

/* The clock skew's edges, each side of each time claim. */
static void test_time_claims_and_skew(void **state) {
  fixture *f = *state;
  char extra[128];
  snprintf(extra, sizeof extra, "\"iat\": %d, \"exp\": %d", NOW - 100, NOW - SKEW);
  assert_int_equal(reason_for(f, extra, "default"), VERIFY_OK);
  snprintf(extra, sizeof extra, "\"iat\": %d, \"exp\": %d", NOW - 100, NOW - SKEW - 1);
  assert_int_equal(reason_for(f, extra, "default"), VERIFY_EXPIRED);
  snprintf(extra, sizeof extra, "\"iat\": %d, \"nbf\": %d", NOW, NOW + SKEW);
  assert_int_equal(reason_for(f, extra, "default"), VERIFY_OK);
  snprintf(extra, sizeof extra, "\"iat\": %d, \"nbf\": %d", NOW, NOW + SKEW + 1);
  assert_int_equal(reason_for(f, extra, "default"), VERIFY_NOT_YET_VALID);
  snprintf(extra, sizeof extra, "\"iat\": %d", NOW + SKEW + 1);
  assert_int_equal(reason_for(f, extra, "default"), VERIFY_NOT_YET_VALID);
  assert_int_equal(reason_for(f, "\"exp\": 1900000000", "default"), VERIFY_BAD_CLAIMS);
  assert_int_equal(reason_for(f, "\"iat\": \"now\"", "default"), VERIFY_BAD_CLAIMS);
  assert_int_equal(reason_for(f, "\"iat\": -5", "default"), VERIFY_BAD_CLAIMS);
}

/* Two rules of one issuer: users.* on default, notify.send on mail-*. */
static void test_policy(void **state) {
  fixture *f = *state;
  static const struct {
    const char *task, *queue;
    verify_reason want;
  } cases[] = {
      {"users.create", "default", VERIFY_OK},
      {"notify.send", "mail-eu", VERIFY_OK},
      {"notify.send", "default", VERIFY_QUEUE_NOT_ALLOWED},
      {"users.create", "mail-eu", VERIFY_QUEUE_NOT_ALLOWED},
      {"billing.charge", "default", VERIFY_TASK_NOT_ALLOWED},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char c[256];
    snprintf(c, sizeof c,
             "{\"id\": \"p%zu\", \"task\": \"%s\", \"queue\": \"%s\", \"iss\": \"svc\", "
             "\"jti\": \"p%zu\", \"iat\": %d}",
             i, cases[i].task, cases[i].queue, i, NOW);
    char *t = mint(c);
    verify_result out;
    if (judge(f, t, cases[i].queue, &out) != cases[i].want)
      fail_msg("%s on %s: %s", cases[i].task, cases[i].queue, out.message);
    verify_result_clear(&out);
    free(t);
  }
  char c[256];
  snprintf(c, sizeof c,
           "{\"id\": \"x\", \"task\": \"users.create\", \"iss\": \"other\", \"jti\": \"x\", "
           "\"iat\": %d}",
           NOW);
  char *t = mint(c);
  verify_result out;
  assert_int_equal(judge(f, t, "default", &out), VERIFY_UNKNOWN_ISSUER);
  verify_result_clear(&out);
  free(t);
}

static void test_header_checks(void **state) {
  fixture *f = *state;
  char c[256];
  snprintf(c, sizeof c,
           "{\"id\": \"h\", \"task\": \"users.create\", \"iss\": \"svc\", \"jti\": \"h\", "
           "\"iat\": %d}",
           NOW);
  /* Right key, wrong algorithm named: refused before any signature check. */
  char *t = mint_with(c, "HS512", "k1", secret);
  verify_result out;
  assert_int_equal(judge(f, t, "default", &out), VERIFY_ALG_MISMATCH);
  /* Nothing the token claims is believed before its signature holds. */
  assert_string_equal(out.id, "");
  verify_result_clear(&out);
  free(t);
  t = mint_with(c, "HS256", "k1", "another-secret-of-more-than-32-bytes!!");
  assert_int_equal(judge(f, t, "default", &out), VERIFY_BAD_SIGNATURE);
  assert_string_equal(out.id, "");
  verify_result_clear(&out);
  free(t);
  t = mint_with(c, "HS256", "k9", secret);
  assert_int_equal(judge(f, t, "default", &out), VERIFY_UNKNOWN_KID);
  verify_result_clear(&out);
  free(t);
  /* A kid that would start a new log line is quoted with '?' instead. */
  t = mint_with(c, "HS256", "k9\nWARN forged line", secret);
  assert_int_equal(judge(f, t, "default", &out), VERIFY_UNKNOWN_KID);
  assert_null(strchr(out.message, '\n'));
  assert_non_null(strstr(out.message, "k9?WARN forged line"));
  verify_result_clear(&out);
  free(t);
}

/* A retried signed task: the token verified again, the worker's attempt
 * counter laid over the claims. */
static void test_retry_wrapper(void **state) {
  fixture *f = *state;
  char *c = claims_with("\"iat\": 1800000000");
  char *t = mint(c);
  size_t n = strlen(t) + 64;
  char *w = malloc(n);
  snprintf(w, n, "{\"signed\": \"%s\", \"attempt\": 3, \"errors\": []}", t);
  verify_result out;
  assert_int_equal(judge(f, w, "default", &out), VERIFY_OK);
  assert_non_null(strstr(out.claims, "\"attempt\":3"));
  verify_result_clear(&out);
  char peek[CELER_ID_MAX + 1];
  assert_int_equal(verify_peek_id(w, strlen(w), peek), 1);
  assert_string_equal(peek, "t1");
  assert_int_equal(verify_peek_id(t, strlen(t), peek), 1);
  assert_int_equal(verify_peek_id("{\"id\":\"t1\"}", 11, peek), 0);
  assert_int_equal(verify_is_token(t, strlen(t)), 1);
  assert_int_equal(verify_is_token(w, strlen(w)), 0);
  /* A wrapper around a tampered token is refused like the token. */
  w[strlen("{\"signed\": \"") + 5] ^= 1;
  assert_int_not_equal(judge(f, w, "default", &out), VERIFY_OK);
  verify_result_clear(&out);
  free(w);
  free(t);
  free(c);
}

static void test_unsigned_and_limits(void **state) {
  fixture *f = *state;
  verify_result out;
  const char *plain = "{\"id\": \"u\", \"task\": \"users.create\"}";
  assert_int_equal(judge(f, plain, "default", &out), VERIFY_UNSIGNED);
  verify_result_clear(&out);
  f->kr->require_signed = false;
  assert_int_equal(judge(f, plain, "default", &out), VERIFY_OK);
  assert_null(out.claims); /* decoded as it is */
  verify_result_clear(&out);
  f->kr->require_signed = true;
  assert_int_equal(verify_task(f->kr, "a.b.c", 5, "default", 4, NOW, &out), 1);
  assert_int_equal(out.reason, VERIFY_TOO_LARGE);
  verify_result_clear(&out);
  assert_int_equal(judge(f, "", "default", &out), VERIFY_MALFORMED);
  verify_result_clear(&out);
  assert_int_equal(judge(f, "a.b", "default", &out), VERIFY_MALFORMED);
  verify_result_clear(&out);
  assert_int_equal(judge(f, "a..c", "default", &out), VERIFY_MALFORMED);
  verify_result_clear(&out);
  assert_int_equal(judge(f, "a+b.c.d", "default", &out), VERIFY_BAD_ENCODING);
  verify_result_clear(&out);
  assert_int_equal(judge(f, "e30.e30.", "default", &out), VERIFY_BAD_HEADER); /* {} */
  verify_result_clear(&out);
  assert_int_equal(judge(f, "eyJhbGciOiJOT05FIn0.e30.", "default", &out), VERIFY_ALG_NONE);
  verify_result_clear(&out);
  assert_int_equal(judge(f, "A.e30.x", "default", &out), VERIFY_BAD_HEADER); /* one char */
  verify_result_clear(&out);
}

/* Keyrings that do not hold together, each with a sentence naming the
 * place; never a key byte. */
static void test_bad_keyrings(void **state) {
  fixture *f = *state;
  write_in(f, "short.key", "too-short\n");
  write_in(f, "private.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  static const struct {
    const char *json, *says;
  } cases[] = {
      {"[]", "expected a JSON object"},
      {"{\"keys\": [], \"policy\": []}", "keys: expected a list"},
      {"{\"require_signed\": 1, \"keys\": []}", "require_signed"},
      {"{\"clock_skew\": 601, \"keys\": []}", "clock_skew"},
      {"{\"keys\": [{\"kid\": \"a\", \"alg\": \"none\", \"secret_file\": \"k1.key\"}]}",
       "HS256, RS256 or ES256"},
      {"{\"keys\": [{\"kid\": \"a\", \"alg\": \"HS256\", \"secret_file\": \"short.key\"}]}",
       "at least 32 bytes"},
      {"{\"keys\": [{\"kid\": \"a\", \"alg\": \"ES256\", \"public_key_file\": \"private.pem\"}]}",
       "PUBLIC KEY"},
      {"{\"keys\": [{\"kid\": \"a\", \"alg\": \"HS256\", \"public_key_file\": \"k1.key\"}]}",
       "needs \"secret_file\""},
      {"{\"keys\": [{\"kid\": \"a\", \"alg\": \"HS256\", \"secret_file\": \"k1.key\"}, "
       "{\"kid\": \"a\", \"alg\": \"HS256\", \"secret_file\": \"k1.key\"}]}",
       "named twice"},
      {"{\"keys\": [{\"kid\": \"a\", \"alg\": \"HS256\", \"secret_file\": \"k1.key\"}], "
       "\"policy\": [{\"iss\": \"s\", \"tasks\": [], \"queues\": [\"q\"]}]}",
       "tasks: expected a list"},
      {"{\"keys\": 1, \"keys\": 2}", "not valid JSON"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    celer_keyring *kr = NULL;
    char err[256] = "";
    int rc = keyring_parse(cases[i].json, strlen(cases[i].json), f->dir, &kr, err, sizeof err);
    assert_int_not_equal(rc, 0);
    assert_null(kr);
    if (strstr(err, cases[i].says) == NULL) fail_msg("case %zu said: %s", i, err);
    assert_null(strstr(err, secret));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accepts_and_hands_over_claims),
      cmocka_unit_test(test_time_claims_and_skew),
      cmocka_unit_test(test_policy),
      cmocka_unit_test(test_header_checks),
      cmocka_unit_test(test_retry_wrapper),
      cmocka_unit_test(test_unsigned_and_limits),
      cmocka_unit_test(test_bad_keyrings),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
