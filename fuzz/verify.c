/* Fuzz target: the JWS verification path (worker/verify.c) against a
 * keyring of one key per algorithm (public keys and an HMAC secret made
 * for this target only; they guard nothing). The first byte picks:
 *   0  the rest is a stored task as it comes from Redis
 *   1  the rest is a claims object, signed here with the HMAC key, so the
 *      fuzzer reaches the claim, time and policy checks past the signature
 * and its high bit sets require_signed. Each input also goes through
 * verify_peek_id, the unverified id lookup of the cancellation check. */
#include <stdlib.h>
#include <string.h>
#include <jwt.h>
#include "fuzz/fuzz.h"
#include "worker/verify.h"

/* A fixed clock, so that a finding replays the same way. */
#define FUZZ_NOW_S 1800000000
#define FUZZ_MAX_PAYLOAD (64 * 1024)

static const char hs_secret[] = "fuzz-only-hmac-secret-of-at-least-32-bytes";
static const char ec_public[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEkpdyk1TlrBkjItrZVqSW3I82R774\n"
    "690pDTa7dXW/CSjWR5iV5OL+l1yCgX9cvHEMQ8kSMAd2grg2Mzf66vPmWQ==\n"
    "-----END PUBLIC KEY-----\n";
static const char rsa_public[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzIbFvI6eMReuDLXJlYxI\n"
    "mT5tVQICrSQyDDj44koEFqXuEhWuDsuDShz7bsV5ouJtI7U3+/N/CWGyRzJpiSl/\n"
    "tw+4c4JfKGNhLnAMfUC+8bewZ57kpujDc8b0mMD2k33UuKe3yp/yXxKDAnP5J2tV\n"
    "VyOqMZbI0an3YJH/xtD9v8URd4VCE7GLbWzDCOzsHBWkQS9IduY+rLHXGbfkN9Ih\n"
    "hV5oPs3xjDIjFAQOw7lW/WIyoLsRsLi5mjlKRdwdgfykRv7hz6cdYg8bMGZqiv7g\n"
    "6qnLbbUZ8FhQ68igQBgyEFaooQ59vyvsCefdPYG4iEC8/2ZgMNC99u0NwceK/cPp\n"
    "nQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static keyring_key keys[3];
static char task_any_test[] = "test.*", task_users[] = "users.create";
static char queue_default[] = "default", queue_q[] = "q?";
static char *rule_tasks[] = {task_any_test, task_users};
static char *rule_queues[] = {queue_default, queue_q};
static char issuer[] = "svc";
static keyring_rule rules[1];
static celer_keyring ring;

static void setup(void) {
  if (ring.nkeys) return;
  keys[0] = (keyring_key){.kid = "hs", .alg = KEYRING_HS256,
                          .key = (unsigned char *)hs_secret, .key_len = sizeof hs_secret - 1};
  keys[1] = (keyring_key){.kid = "ec", .alg = KEYRING_ES256,
                          .key = (unsigned char *)ec_public, .key_len = sizeof ec_public - 1};
  keys[2] = (keyring_key){.kid = "rsa", .alg = KEYRING_RS256,
                          .key = (unsigned char *)rsa_public, .key_len = sizeof rsa_public - 1};
  rules[0] = (keyring_rule){.iss = issuer, .tasks = rule_tasks, .ntasks = 2,
                            .queues = rule_queues, .nqueues = 2};
  ring = (celer_keyring){.skew_s = KEYRING_DEFAULT_SKEW_S, .keys = keys, .nkeys = 3,
                         .rules = rules, .nrules = 1};
}

static void judge(const char *payload, size_t len) {
  char id[CELER_ID_MAX + 1];
  if (verify_peek_id(payload, len, id) && !celer_valid_id(id)) abort();
  verify_result out;
  int rc = verify_task(&ring, payload, len, "default", FUZZ_MAX_PAYLOAD, FUZZ_NOW_S, &out);
  /* A refusal always names its reason; an acceptance of a token always
   * hands over claims. */
  if (rc == 1 && (out.reason == VERIFY_OK || strchr(out.message, ':') == NULL)) abort();
  if (rc == 0 && out.reason != VERIFY_OK) abort();
  verify_result_clear(&out);
}

/* Signs the claims with the HMAC key as a producer would; NULL when
 * libjwt will not take them as claims. Caller frees. */
static char *sign_claims(const uint8_t *data, size_t size) {
  char *json = malloc(size + 1);
  if (json == NULL) return NULL;
  memcpy(json, data, size);
  json[size] = '\0';
  jwt_t *jwt = NULL;
  char *token = NULL;
  if (jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, json) == 0 &&
      jwt_add_header(jwt, "kid", "hs") == 0 &&
      jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)hs_secret,
                  (int)sizeof hs_secret - 1) == 0)
    token = jwt_encode_str(jwt);
  jwt_free(jwt);
  free(json);
  return token;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  setup();
  ring.require_signed = (data[0] & 0x80) != 0;
  int mode = data[0] & 1;
  data++;
  size--;
  if (mode == 0) {
    judge((const char *)data, size);
  } else if (size < FUZZ_MAX_PAYLOAD / 2) {
    char *token = sign_claims(data, size);
    if (token) judge(token, strlen(token));
    free(token);
  }
  return 0;
}
