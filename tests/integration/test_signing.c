/* Signed tasks end to end (docs/security.md): keys made with openssl at
 * test time, a real redis-server, the real worker with a keyring, tasks
 * signed by libceler and taskctl for the round trips, and hostile tokens
 * written raw into the stream for the refusals. Every refusal must be a
 * REJECTED record with its own reason, a counter in /metrics and a log
 * line, none may run, and one worker must survive them all. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <jwt.h>

#include "celer/admin.h"
#include "celer/client.h"
#include "common/common.h"
#include "harness/harness.h"

/* The oversized token: far over the 1 MiB default payload limit. */
#define HUGE_TOKEN_BYTES (20 * 1024 * 1024)
/* Seconds that put a time claim clearly outside any clock skew. */
#define FAR_S 3600

typedef struct suite {
  harness_redis redis;
  char dir[HARNESS_DIR_MAX];      /* keys and the keyring */
  char keyring[PATH_MAX];
  char log[PATH_MAX];
  int metrics_port;
  pid_t worker;
  celer_client *plain;            /* unsigned: reads records */
} suite;

static void path_in(const suite *s, const char *name, char *out, size_t size) {
  snprintf(out, size, "%s/%s", s->dir, name);
}

static int run_quiet(const char *const *argv) {
  char *out = NULL, *err = NULL;
  int rc = harness_run(argv, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
  if (rc != 0) fprintf(stderr, "%s failed (%d): %s\n", argv[0], rc, err ? err : "");
  free(out);
  free(err);
  return rc;
}

static int write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) return -1;
  int ok = fputs(text, f) >= 0;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* Reads a whole small file; caller frees. */
static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  char *buf = malloc(1 << 20);
  size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
  fclose(f);
  if (buf) buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

/* An HS256 secret (64 hex characters) made by openssl into name. */
static int make_secret(const suite *s, const char *name) {
  char path[PATH_MAX];
  path_in(s, name, path, sizeof path);
  const char *argv[] = {"openssl", "rand", "-hex", "-out", path, "32", NULL};
  return run_quiet(argv);
}

/* A key pair: <name>.pem (PKCS#8 private) and <name>.pub.pem. */
static int make_pair(const suite *s, const char *name, bool rsa) {
  char priv[PATH_MAX], pub[PATH_MAX];
  snprintf(priv, sizeof priv, "%s/%s.pem", s->dir, name);
  snprintf(pub, sizeof pub, "%s/%s.pub.pem", s->dir, name);
  const char *gen_rsa[] = {"openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                           "rsa_keygen_bits:2048", "-out", priv, NULL};
  const char *gen_ec[] = {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-out", priv, NULL};
  const char *export[] = {"openssl", "pkey", "-in", priv, "-pubout", "-out", pub, NULL};
  if (run_quiet(rsa ? gen_rsa : gen_ec) != 0) return -1;
  return run_quiet(export);
}

/* The keyring the worker trusts. svc-a has two live HS256 keys (a
 * rotation); svc-b may run only test.echo on default; svc-c only
 * test.noop. The ghost key exists but is not in the keyring. */
static const char keyring_json[] =
    "{\"require_signed\": true,\n"
    " \"keys\": [{\"kid\": \"a-2026-10\", \"alg\": \"HS256\", \"secret_file\": \"a-old.key\"},\n"
    "          {\"kid\": \"a-2026-11\", \"alg\": \"HS256\", \"secret_file\": \"a-new.key\"},\n"
    "          {\"kid\": \"rsa-1\", \"alg\": \"RS256\", \"public_key_file\": \"rsa.pub.pem\"},\n"
    "          {\"kid\": \"ec-1\", \"alg\": \"ES256\", \"public_key_file\": \"ec.pub.pem\"}],\n"
    " \"policy\": [{\"iss\": \"svc-a\", \"tasks\": [\"test.*\", \"fu.*\"], \"queues\": [\"default\", "
    "\"other\"]},\n"
    "            {\"iss\": \"svc-b\", \"tasks\": [\"test.echo\"], \"queues\": [\"default\"]},\n"
    "            {\"iss\": \"svc-c\", \"tasks\": [\"test.noop\"], \"queues\": [\"default\"]}]}\n";

static int group_setup(void **state) {
  suite *s = calloc(1, sizeof *s);
  if (s == NULL || harness_tmpdir(s->dir, sizeof s->dir) != 0) return -1;
  if (make_secret(s, "a-old.key") || make_secret(s, "a-new.key") ||
      make_secret(s, "ghost.key") || make_pair(s, "rsa", true) || make_pair(s, "ec", false))
    return -1;
  path_in(s, "keyring.json", s->keyring, sizeof s->keyring);
  if (write_file(s->keyring, keyring_json) != 0) return -1;
  if (harness_redis_start(&s->redis, false, NULL) != 0) return -1;
  snprintf(s->log, sizeof s->log, "%s/worker.log", s->redis.dir);
  if ((s->plain = harness_client(&s->redis)) == NULL) return -1;
  *state = s;
  return 0;
}

static int group_teardown(void **state) {
  suite *s = *state;
  if (s->worker > 0) harness_stop(s->worker, SIGKILL, HARNESS_DEADLINE_MS);
  celer_client_free(s->plain);
  harness_redis_stop(&s->redis);
  harness_rmtree(s->dir);
  free(s);
  return 0;
}

static void start_worker(suite *s) {
  char port[16];
  s->metrics_port = harness_free_port();
  snprintf(port, sizeof port, "127.0.0.1:%d", s->metrics_port);
  const char *extra[] = {"--keyring", s->keyring, "--queues", "default,other",
                         "--metrics-addr", port, NULL};
  s->worker = harness_worker(&s->redis, extra, s->log);
  assert_true(s->worker > 0);
}

static void stop_worker(suite *s) {
  if (s->worker <= 0) return;
  int status = harness_stop(s->worker, SIGTERM, HARNESS_DEADLINE_MS);
  s->worker = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char *log = read_text(s->log, NULL);
    print_error("worker log:\n%s\n", log ? log : "");
    free(log);
  }
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

/* Each test starts from an empty Redis; flush_setup alone is for a test
 * that starts its own worker. */
static int flush_setup(void **state) {
  suite *s = *state;
  return harness_flush(&s->redis);
}

static int test_setup(void **state) {
  if (flush_setup(state) != 0) return -1;
  start_worker(*state);
  return 0;
}

static int test_teardown(void **state) {
  stop_worker(*state);
  return 0;
}

/* A client that signs with the given key file, algorithm, kid and issuer
 * (the CONTRACT's signing variables, read when the client is made). */
static celer_client *signing_client(suite *s, const char *key, const char *alg, const char *kid,
                                    const char *iss) {
  char path[PATH_MAX];
  path_in(s, key, path, sizeof path);
  setenv("CELER_SIGNING_KEY_FILE", path, 1);
  setenv("CELER_SIGNING_ALG", alg, 1);
  setenv("CELER_SIGNING_KID", kid, 1);
  setenv("CELER_ISSUER", iss, 1);
  celer_client_options o = {.broker_url = s->redis.url};
  celer_client *c = celer_client_new(&o);
  unsetenv("CELER_SIGNING_KEY_FILE");
  unsetenv("CELER_SIGNING_ALG");
  unsetenv("CELER_SIGNING_KID");
  unsetenv("CELER_ISSUER");
  assert_non_null(c);
  if (celer_client_connect(c) != 0) fail_msg("connect: %s", celer_client_errstr(c));
  return c;
}

static json_t *wait_final(suite *s, const char *queue, const char *id) {
  json_t *rec = NULL;
  if (celer_wait(s->plain, queue, id, HARNESS_DEADLINE_MS, &rec) != 0)
    fail_msg("waiting for %s: %s", id, celer_client_errstr(s->plain));
  return rec;
}

static const char *state_of(const json_t *rec) {
  return json_string_value(json_object_get(rec, "state"));
}

/* Enqueues test.echo [n] signed by c and asserts that it ran. */
static void assert_round_trip(suite *s, celer_client *c, int n) {
  json_t *args = json_pack("[i]", n);
  char id[CELER_ID_MAX + 1];
  if (celer_enqueue(c, "test.echo", args, NULL, NULL, id) != 0)
    fail_msg("enqueue: %s", celer_client_errstr(c));
  json_decref(args);
  json_t *rec = wait_final(s, "default", id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_t *got = json_object_get(json_object_get(rec, "result"), "args");
  assert_int_equal(json_integer_value(json_array_get(got, 0)), n);
  json_decref(rec);
}

/* What c stores in a stream no worker reads: the task field is a
 * compact JWS (three base64url parts), not the JSON envelope. */
static void assert_stored_as_token(suite *s, celer_client *c) {
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.queue = "unread";
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, NULL), 0);
  const char *range[] = {"--raw", "XRANGE", "celer:{unread}:stream", "-", "+", NULL};
  char *out = NULL;
  assert_int_equal(harness_cli(&s->redis, range, &out), 0);
  assert_non_null(out);
  const char *field = strstr(out, "\ntask\n");
  assert_non_null(field);
  const char *token = field + strlen("\ntask\n");
  size_t len = strcspn(token, "\n"), dots = 0;
  for (size_t i = 0; i < len; i++) {
    if (token[i] == '.') dots++;
    else assert_true(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                            token[i]) != NULL);
  }
  assert_int_equal(dots, 2);
  free(out);
}

static void test_round_trip_each_algorithm(void **state) {
  suite *s = *state;
  celer_client *hs = signing_client(s, "a-new.key", "HS256", "a-2026-11", "svc-a");
  celer_client *rs = signing_client(s, "rsa.pem", "RS256", "rsa-1", "svc-a");
  celer_client *es = signing_client(s, "ec.pem", "ES256", "ec-1", "svc-a");
  assert_round_trip(s, hs, 1);
  assert_round_trip(s, rs, 2);
  assert_round_trip(s, es, 3);
  assert_stored_as_token(s, es);
  celer_client_free(hs);
  celer_client_free(rs);
  celer_client_free(es);
}

/* Two live keys of one issuer: tasks signed with the old and the new one
 * both run, as they must while producers switch over. */
static void test_rotation_two_live_keys(void **state) {
  suite *s = *state;
  celer_client *old_key = signing_client(s, "a-old.key", "HS256", "a-2026-10", "svc-a");
  celer_client *new_key = signing_client(s, "a-new.key", "HS256", "a-2026-11", "svc-a");
  for (int i = 0; i < 5; i++) {
    assert_round_trip(s, old_key, 10 + i);
    assert_round_trip(s, new_key, 20 + i);
  }
  celer_client_free(old_key);
  celer_client_free(new_key);
}

/* A signed task keeps its signature through the scheduled set (eta) and
 * through a retry, where the worker stores the token beside its count. */
static void test_scheduled_and_retried_signed_tasks(void **state) {
  suite *s = *state;
  celer_client *c = signing_client(s, "a-new.key", "HS256", "a-2026-11", "svc-a");
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = 500;
  char later[CELER_ID_MAX + 1], retried[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, later), 0);
  json_t *kw = json_pack("{si}", "times", 1);
  celer_enqueue_options_init(&o);
  assert_int_equal(celer_enqueue(c, "test.fail", NULL, kw, &o, retried), 0);
  json_decref(kw);
  json_t *rec = wait_final(s, "default", later);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_decref(rec);
  rec = wait_final(s, "default", retried);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  assert_int_equal(json_integer_value(json_object_get(rec, "attempt")), 1);
  json_decref(rec);
  celer_client_free(c);
}

/* A signed task canceled while it waits for its time is dropped unrun:
 * the worker finds its id in the token to check the canceled set. */
static void test_cancel_signed_task(void **state) {
  suite *s = *state;
  celer_client *c = signing_client(s, "a-new.key", "HS256", "a-2026-11", "svc-a");
  celer_enqueue_options o;
  celer_enqueue_options_init(&o);
  o.countdown_ms = 1000;
  char id[CELER_ID_MAX + 1];
  assert_int_equal(celer_enqueue(c, "test.noop", NULL, NULL, &o, id), 0);
  bool canceled = false;
  assert_int_equal(celer_cancel(s->plain, "default", id, NULL, &canceled), 0);
  assert_true(canceled);
  /* Poll the log for the drop (a deadline, no fixed sleep). */
  char needle[128];
  snprintf(needle, sizeof needle, "canceled: dropped without running task=%s", id);
  int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
  int seen = 0;
  while (!seen && celer_mono_ms() < deadline) {
    char *log = read_text(s->log, NULL);
    seen = log && strstr(log, needle) != NULL;
    free(log);
  }
  if (!seen) fail_msg("the worker did not drop canceled task %s", id);
  json_t *rec = wait_final(s, "default", id);
  assert_string_equal(state_of(rec), "CANCELED");
  json_decref(rec);
  celer_client_free(c);
}

/* taskctl enqueue signs when the signing variables are set. */
static void test_taskctl_signs(void **state) {
  suite *s = *state;
  char key[PATH_MAX], var[PATH_MAX + 32];
  path_in(s, "ec.pem", key, sizeof key);
  snprintf(var, sizeof var, "CELER_SIGNING_KEY_FILE=%s", key);
  const char *env[] = {var, "CELER_SIGNING_ALG=ES256", "CELER_SIGNING_KID=ec-1",
                       "CELER_ISSUER=svc-a", NULL};
  const char *argv[] = {harness_bin("taskctl"), "--broker", s->redis.url, "--json", "enqueue",
                        "test.echo", "--args", "[7]", "--wait", "30", NULL};
  char *out = NULL, *err = NULL;
  int rc = harness_run(argv, env, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
  if (rc != 0) fail_msg("taskctl exit %d: %s", rc, err ? err : "");
  json_t *rec = json_loads(out, 0, NULL);
  assert_non_null(rec);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_decref(rec);
  free(out);
  free(err);
  /* Unsigned, the same command is refused by this worker. */
  const char *plain[] = {harness_bin("taskctl"), "--broker", s->redis.url, "--json", "enqueue",
                         "test.echo", "--wait", "1", NULL};
  rc = harness_run(plain, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
  assert_int_equal(rc, 4); /* timed out: the refusal is filed under the entry id */
  free(out);
  free(err);
}

/* ---- hostile tokens ---- */

static char *b64url(const char *data, size_t len) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  char *out = malloc(len / 3 * 4 + 5);
  size_t n = 0, i = 0;
  for (; i + 2 < len; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)data[i] << 16 | (uint32_t)(unsigned char)data[i + 1] << 8 |
                 (unsigned char)data[i + 2];
    for (int k = 3; k >= 0; k--) out[n++] = abc[(v >> (6 * k)) & 63];
  }
  if (len - i == 1) {
    uint32_t v = (uint32_t)(unsigned char)data[i] << 16;
    out[n++] = abc[(v >> 18) & 63];
    out[n++] = abc[(v >> 12) & 63];
  } else if (len - i == 2) {
    uint32_t v = (uint32_t)(unsigned char)data[i] << 16 | (uint32_t)(unsigned char)data[i + 1] << 8;
    out[n++] = abc[(v >> 18) & 63];
    out[n++] = abc[(v >> 12) & 63];
    out[n++] = abc[(v >> 6) & 63];
  }
  out[n] = '\0';
  return out;
}

/* Claims of a test.echo task: the envelope plus iss, iat, jti; exp and
 * nbf when not 0. Caller decrefs. */
static json_t *claims(const char *id, const char *task, const char *queue, const char *iss,
                      const char *jti, int64_t exp, int64_t nbf) {
  int64_t now = celer_now_ms() / 1000;
  json_t *c = json_pack("{sssssss[]s{}sIsssIss}", "id", id, "task", task, "queue", queue,
                        "args", "kwargs", "enqueued_at", (json_int_t)celer_now_ms(), "iss", iss,
                        "iat", (json_int_t)now, "jti", jti);
  assert_non_null(c);
  if (exp) json_object_set_new(c, "exp", json_integer(exp));
  if (nbf) json_object_set_new(c, "nbf", json_integer(nbf));
  return c;
}

/* Signs claims with libjwt as any producer could (alg, key file, kid). */
static char *mint(suite *s, const char *alg, const char *key_file, const char *kid, json_t *c) {
  char path[PATH_MAX];
  path_in(s, key_file, path, sizeof path);
  size_t len = 0;
  char *key = read_text(path, &len);
  assert_non_null(key);
  /* Secret files end with openssl's newline, which keyrings ignore. */
  if (strcmp(alg, "HS256") == 0 && strstr(key_file, ".key") && len && key[len - 1] == '\n')
    key[--len] = '\0';
  jwt_t *jwt = NULL;
  assert_int_equal(jwt_new(&jwt), 0);
  char *grants = json_dumps(c, JSON_COMPACT);
  assert_int_equal(jwt_add_grants_json(jwt, grants), 0);
  assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
  assert_int_equal(jwt_set_alg(jwt, jwt_str_alg(alg), (unsigned char *)key, (int)len), 0);
  char *token = jwt_encode_str(jwt);
  assert_non_null(token);
  jwt_free(jwt);
  free(grants);
  free(key);
  json_decref(c);
  return token;
}

/* XADDs value as the task field (stdin carries it, so 20 MB need no
 * command line); returns the stream entry id (static). */
static const char *xadd_raw(suite *s, const char *queue, const char *value, size_t len) {
  static char entry[64];
  char key[256];
  snprintf(key, sizeof key, "celer:{%s}:stream", queue);
  const char *argv[] = {"redis-cli", "-s", s->redis.socket, "-x", "XADD", key, "*", "task",
                        NULL};
  char *out = NULL;
  assert_int_equal(harness_run(argv, NULL, value, len, &out, NULL, HARNESS_DEADLINE_MS), 0);
  assert_non_null(out);
  snprintf(entry, sizeof entry, "%.*s", (int)strcspn(out, "\r\n"), out);
  free(out);
  assert_non_null(strchr(entry, '-'));
  return entry;
}

/* One refusal: what to send, where the record is filed, what it says. */
typedef struct refusal {
  const char *name;
  char *payload;        /* owned */
  size_t len;
  const char *queue;
  char record_id[CELER_ID_MAX + 1]; /* the task id, or "" for the entry id */
  const char *type;     /* SignatureRejected / PolicyRejected */
  const char *reason;   /* the message's first word, the metric's label */
} refusal;

static void add(refusal *r, size_t *n, const char *name, char *payload, const char *record_id,
                const char *type, const char *reason) {
  refusal *x = &r[(*n)++];
  memset(x, 0, sizeof *x);
  x->name = name;
  x->payload = payload;
  x->len = strlen(payload);
  x->queue = "default";
  snprintf(x->record_id, sizeof x->record_id, "%s", record_id ? record_id : "");
  x->type = type;
  x->reason = reason;
}

static char *header_only(const char *header_json, const char *claims_json, const char *sig) {
  char *h = b64url(header_json, strlen(header_json));
  char *c = b64url(claims_json, strlen(claims_json));
  size_t n = strlen(h) + strlen(c) + strlen(sig) + 3;
  char *t = malloc(n);
  snprintf(t, n, "%s.%s.%s", h, c, sig);
  free(h);
  free(c);
  return t;
}

/* The metric sample for reason, or -1 when absent. */
static long metric(const char *body, const char *reason) {
  char needle[128];
  snprintf(needle, sizeof needle, "celer_tasks_refused_total{reason=\"%s\"} ", reason);
  const char *p = strstr(body, needle);
  return p ? strtol(p + strlen(needle), NULL, 10) : -1;
}

static void test_refusals(void **state) {
  suite *s = *state;
  int64_t now = celer_now_ms() / 1000;
  refusal r[16];
  size_t n = 0;
  const char *sig = "SignatureRejected", *pol = "PolicyRejected";

  char *good = mint(s, "HS256", "a-new.key", "a-2026-11",
                    claims("t-badsig", "test.echo", "default", "svc-a", "t-badsig", 0, 0));
  char *last = good + strlen(good) - 2;
  *last = *last == 'A' ? 'B' : 'A'; /* one flipped signature character */
  add(r, &n, "bad signature", good, NULL, sig, "bad_signature");
  add(r, &n, "unknown kid",
      mint(s, "HS256", "ghost.key", "ghost-1",
           claims("t-ghost", "test.echo", "default", "svc-a", "t-ghost", 0, 0)),
      NULL, sig, "unknown_kid");
  add(r, &n, "alg none",
      header_only("{\"alg\":\"none\",\"kid\":\"a-2026-11\"}",
                  "{\"id\":\"t-none\",\"task\":\"test.echo\",\"iss\":\"svc-a\",\"iat\":1,"
                  "\"jti\":\"t-none\"}",
                  ""),
      NULL, sig, "alg_none");
  /* The classic confusion: the verifier's public key used as an HMAC
   * secret. libjwt 1.10 alone accepts these; the keyring's alg does not. */
  add(r, &n, "HS256 made with the RS256 public key",
      mint(s, "HS256", "rsa.pub.pem", "rsa-1",
           claims("t-conf-rsa", "test.echo", "default", "svc-a", "t-conf-rsa", 0, 0)),
      NULL, sig, "alg_mismatch");
  add(r, &n, "HS256 made with the ES256 public key",
      mint(s, "HS256", "ec.pub.pem", "ec-1",
           claims("t-conf-ec", "test.echo", "default", "svc-a", "t-conf-ec", 0, 0)),
      NULL, sig, "alg_mismatch");
  add(r, &n, "expired",
      mint(s, "RS256", "rsa.pem", "rsa-1",
           claims("t-expired", "test.echo", "default", "svc-a", "t-expired", now - FAR_S, 0)),
      "t-expired", sig, "expired");
  add(r, &n, "not yet valid",
      mint(s, "ES256", "ec.pem", "ec-1",
           claims("t-early", "test.echo", "default", "svc-a", "t-early", 0, now + FAR_S)),
      "t-early", sig, "not_yet_valid");
  add(r, &n, "jti is not the id",
      mint(s, "HS256", "a-old.key", "a-2026-10",
           claims("t-jti", "test.echo", "default", "svc-a", "t-other", 0, 0)),
      "t-jti", sig, "jti_mismatch");
  add(r, &n, "issuer not allowed that task",
      mint(s, "HS256", "a-new.key", "a-2026-11",
           claims("t-task", "test.echo", "default", "svc-c", "t-task", 0, 0)),
      "t-task", pol, "task_not_allowed");
  add(r, &n, "issuer not allowed that queue",
      mint(s, "HS256", "a-new.key", "a-2026-11",
           claims("t-queue", "test.echo", "other", "svc-b", "t-queue", 0, 0)),
      "t-queue", pol, "queue_not_allowed");
  r[n - 1].queue = "other";
  add(r, &n, "unsigned",
      strdup("{\"id\":\"t-unsigned\",\"task\":\"test.echo\",\"queue\":\"default\"}"), NULL, sig,
      "unsigned");
  char *huge = malloc(HUGE_TOKEN_BYTES + 1);
  memset(huge, 'A', HUGE_TOKEN_BYTES);
  huge[100] = huge[HUGE_TOKEN_BYTES - 100] = '.';
  huge[HUGE_TOKEN_BYTES] = '\0';
  add(r, &n, "20 MB token", huge, NULL, sig, "too_large");
  char *cut = mint(s, "HS256", "a-new.key", "a-2026-11",
                   claims("t-cut", "test.echo", "default", "svc-a", "t-cut", 0, 0));
  cut[strchr(cut, '.') - cut + 12] = '\0'; /* cut inside the claims */
  add(r, &n, "truncated token", cut, NULL, sig, "malformed");
  add(r, &n, "non-base64 garbage", strdup("%%% not a token at all! \x01\x02 ***"), NULL, sig,
      "bad_encoding");

  for (size_t i = 0; i < n; i++) {
    const char *entry = xadd_raw(s, r[i].queue, r[i].payload, r[i].len);
    const char *id = r[i].record_id[0] ? r[i].record_id : entry;
    json_t *rec = wait_final(s, r[i].queue, id);
    const json_t *err = json_object_get(rec, "error");
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (strcmp(state_of(rec), "REJECTED") != 0 || type == NULL || msg == NULL ||
        strcmp(type, r[i].type) != 0 || strncmp(msg, r[i].reason, strlen(r[i].reason)) != 0 ||
        msg[strlen(r[i].reason)] != ':')
      fail_msg("%s: got %s %s: %s", r[i].name, state_of(rec), type ? type : "-",
               msg ? msg : "-");
    /* Never ran: a refused task has no start time. */
    assert_true(json_is_null(json_object_get(rec, "started_at")));
    json_decref(rec);
  }
  /* Still the same worker, alive after all of them. */
  assert_int_equal(kill(s->worker, 0), 0);

  /* One counter per reason in /metrics. */
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", s->metrics_port);
  const char *curl[] = {"curl", "-sf", url, NULL};
  char *body = NULL;
  assert_int_equal(harness_run(curl, NULL, NULL, 0, &body, NULL, HARNESS_DEADLINE_MS), 0);
  static const char *const reasons[] = {"bad_signature", "unknown_kid", "alg_none",
                                        "expired",       "not_yet_valid", "jti_mismatch",
                                        "task_not_allowed", "queue_not_allowed", "unsigned",
                                        "too_large",     "malformed",  "bad_encoding"};
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
    if (metric(body, reasons[i]) != 1)
      fail_msg("celer_tasks_refused_total{reason=\"%s\"} is %ld", reasons[i],
               metric(body, reasons[i]));
  assert_int_equal(metric(body, "alg_mismatch"), 2);
  /* No child died on any of them (a sanitizer report kills a child too). */
  assert_non_null(strstr(body, "\nceler_child_crashes_total 0\n"));
  free(body);

  /* A log line for each (written once the record is stored, so a moment
   * after the record can be read: polled with a deadline), and never a key
   * in the log. */
  char *log = NULL;
  size_t missing = n;
  for (int64_t deadline = celer_mono_ms() + HARNESS_DEADLINE_MS;
       missing > 0 && celer_mono_ms() < deadline;) {
    free(log);
    log = read_text(s->log, NULL);
    assert_non_null(log);
    missing = 0;
    for (size_t i = 0; i < n; i++) {
      char needle[96];
      snprintf(needle, sizeof needle, "%s: %s:", r[i].type, r[i].reason);
      if (strstr(log, needle) == NULL) missing = i + 1;
    }
  }
  if (missing > 0) fail_msg("no log line for %s", r[missing - 1].name);
  static const char *const keys[] = {"a-old.key", "a-new.key", "ghost.key"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    char path[PATH_MAX];
    path_in(s, keys[i], path, sizeof path);
    char *secret = read_text(path, NULL);
    secret[strcspn(secret, "\n")] = '\0';
    assert_null(strstr(log, secret));
    free(secret);
  }
  free(log);
  for (size_t i = 0; i < n; i++) free(r[i].payload);
}

/* A keyring that does not hold together stops the worker at start-up
 * with a sentence (exit 2), and never quotes a key. */
/* A worker given the signing variables signs the follow-ups its handlers
 * enqueue, so a keyring that requires signatures runs them: fu.spawn
 * (signed by a producer) enqueues test.noop, which must run, not be
 * REJECTED as unsigned. */
static void test_followups_are_signed(void **state) {
  suite *s = *state;
  char key[PATH_MAX], port[16];
  path_in(s, "a-new.key", key, sizeof key);
  setenv("CELER_SIGNING_KEY_FILE", key, 1);
  setenv("CELER_SIGNING_ALG", "HS256", 1);
  setenv("CELER_SIGNING_KID", "a-2026-11", 1);
  setenv("CELER_ISSUER", "svc-a", 1);
  s->metrics_port = harness_free_port();
  snprintf(port, sizeof port, "127.0.0.1:%d", s->metrics_port);
  const char *extra[] = {"--keyring", s->keyring, "--queues", "default,other", "--module",
                         TEST_MODULE_DIR "/followups.so", "--metrics-addr", port, NULL};
  s->worker = harness_worker(&s->redis, extra, s->log);
  unsetenv("CELER_SIGNING_KEY_FILE");
  unsetenv("CELER_SIGNING_ALG");
  unsetenv("CELER_SIGNING_KID");
  unsetenv("CELER_ISSUER");
  assert_true(s->worker > 0);
  celer_client *c = signing_client(s, "a-old.key", "HS256", "a-2026-10", "svc-a");
  json_t *kw = json_pack("{si}", "n", 2);
  char id[CELER_ID_MAX + 1];
  if (celer_enqueue(c, "fu.spawn", NULL, kw, NULL, id) != 0)
    fail_msg("enqueue: %s", celer_client_errstr(c));
  json_decref(kw);
  json_t *rec = wait_final(s, "default", id);
  assert_string_equal(state_of(rec), "SUCCEEDED");
  json_t *ids = json_object_get(rec, "result");
  assert_int_equal(json_array_size(ids), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *child = wait_final(s, "default", json_string_value(json_array_get(ids, i)));
    if (strcmp(state_of(child), "SUCCEEDED") != 0) {
      char *text = json_dumps(child, 0);
      fail_msg("follow-up: %s", text ? text : "?");
    }
    json_decref(child);
  }
  json_decref(rec);
  celer_client_free(c);
}

static void test_bad_keyrings(void **state) {
  suite *s = *state;
  static const struct {
    const char *json, *expect;
  } cases[] = {
      {"{\"keys\": [{\"kid\": \"x\", \"alg\": \"none\", \"secret_file\": \"a-new.key\"}],"
       " \"policy\": [{\"iss\": \"i\", \"tasks\": [\"*\"], \"queues\": [\"*\"]}]}",
       "HS256, RS256 or ES256"},
      {"{\"keys\": [{\"kid\": \"x\", \"alg\": \"RS256\", \"public_key_file\": \"rsa.pem\"}],"
       " \"policy\": [{\"iss\": \"i\", \"tasks\": [\"*\"], \"queues\": [\"*\"]}]}",
       "PUBLIC KEY"},
      {"{\"keys\": [{\"kid\": \"x\", \"alg\": \"HS256\", \"secret_file\": \"a-new.key\"},"
       " {\"kid\": \"x\", \"alg\": \"HS256\", \"secret_file\": \"a-old.key\"}],"
       " \"policy\": [{\"iss\": \"i\", \"tasks\": [\"*\"], \"queues\": [\"*\"]}]}",
       "named twice"},
      {"{\"keys\": [{\"kid\": \"x\", \"alg\": \"HS256\", \"secret_file\": \"missing.key\"}],"
       " \"policy\": [{\"iss\": \"i\", \"tasks\": [\"*\"], \"queues\": [\"*\"]}]}",
       "cannot open"},
  };
  char path[PATH_MAX];
  path_in(s, "bad-keyring.json", path, sizeof path);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(write_file(path, cases[i].json), 0);
    const char *argv[] = {harness_bin("celer-worker"), "--broker", s->redis.url, "--keyring",
                          path, NULL};
    char *out = NULL, *err = NULL;
    int rc = harness_run(argv, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
    assert_int_equal(rc, 2);
    if (strstr(err, cases[i].expect) == NULL) fail_msg("case %zu said: %s", i, err);
    assert_null(strstr(err, "BEGIN"));
    free(out);
    free(err);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_round_trip_each_algorithm, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_rotation_two_live_keys, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_scheduled_and_retried_signed_tasks, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_cancel_signed_task, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_taskctl_signs, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_refusals, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_followups_are_signed, flush_setup, test_teardown),
      cmocka_unit_test(test_bad_keyrings),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
