/* Unit tests of the envelope codec (broker/envelope.c): every field of the
 * contract's envelope, every way a producer can get it wrong, and the exact
 * bytes the encoder writes. Each refusal is checked for its return code,
 * the exact field it names and a piece of its sentence. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "celer/envelope.h"

/* Depth of the deepest nesting the parser itself accepts is 2048; this is
 * far past it, to prove a hostile document is refused without harm. */
#define HOSTILE_DEPTH 5000

/* ---- helpers ---- */

static int decode_text(const char *text, celer_envelope *env, celer_envelope_error *err) {
  return celer_envelope_decode(text, strlen(text), 0, NULL, env, err);
}

static void assert_printable(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      fail_msg("unprintable byte 0x%02x in \"%s\"", *p, s);
    }
  }
}

/* A refused envelope leaves env owning nothing. */
static void assert_clean(const celer_envelope *env) {
  assert_null(env->args);
  assert_null(env->kwargs);
  assert_null(env->meta);
  assert_null(env->origin);
  assert_string_equal(env->id, "");
  assert_int_equal(env->max_retries, -1);
}

#define assert_contains(haystack, needle)                                                  \
  do {                                                                                     \
    if (!strstr((haystack), (needle))) {                                                   \
      fail_msg("\"%s\" does not contain \"%s\"", (haystack), (needle));                    \
    }                                                                                      \
  } while (0)

static void check_refusal(const char *text, size_t len, size_t max_payload, int want_rc,
                          const char *want_field, const char *want_part, const char *file,
                          int line) {
  celer_envelope env;
  celer_envelope_error err;
  int rc = celer_envelope_decode(text, len, max_payload, NULL, &env, &err);
  if (rc != want_rc || strcmp(err.field, want_field) != 0 || !strstr(err.message, want_part)) {
    fail_msg("%s:%d: input %.100s\n got rc %d field \"%s\" message \"%s\"\n wanted rc %d "
             "field \"%s\" message containing \"%s\"",
             file, line, text, rc, err.field, err.message, want_rc, want_field, want_part);
  }
  assert_printable(err.field);
  assert_printable(err.message);
  assert_clean(&env);
  celer_envelope_clear(&env);
}

#define REFUSED_N(text, len, rc, field, part)                                              \
  check_refusal((text), (len), 0, (rc), (field), (part), __FILE__, __LINE__)
#define REFUSED(text, field, part)                                                         \
  check_refusal((text), strlen(text), 0, CELER_EINVAL, (field), (part), __FILE__, __LINE__)

static void check_accepted(const char *text, const char *file, int line) {
  celer_envelope env;
  celer_envelope_error err;
  int rc = decode_text(text, &env, &err);
  if (rc != CELER_OK) {
    fail_msg("%s:%d: input %.100s refused: rc %d field \"%s\" message \"%s\"", file, line, text,
             rc, err.field, err.message);
  }
  celer_envelope_clear(&env);
}

#define ACCEPTED(text) check_accepted((text), __FILE__, __LINE__)

/* {"id":"a","task":"t",<member>} in a new malloc'd buffer. */
static char *with_member(const char *member) {
  static const char prefix[] = "{\"id\":\"a\",\"task\":\"t\",";
  size_t n = strlen(prefix) + strlen(member) + 2;
  char *s = malloc(n);
  assert_non_null(s);
  snprintf(s, n, "%s%s}", prefix, member);
  return s;
}

/* A string of n copies of c, malloc'd. */
static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

/* "args": followed by `arrays` nested arrays: the deepest is at level
 * arrays + 1 (the envelope being level 1). */
static char *nested_args(size_t arrays) {
  char *open = repeat('[', arrays);
  char *close = repeat(']', arrays);
  size_t n = arrays * 2 + 16;
  char *member = malloc(n);
  assert_non_null(member);
  snprintf(member, n, "\"args\":%s%s", open, close);
  char *doc = with_member(member);
  free(open);
  free(close);
  free(member);
  return doc;
}

/* "kwargs": followed by `objects` nested objects {"a":{"a":...{}}}. */
static char *nested_kwargs(size_t objects) {
  size_t n = objects * 6 + 16;
  char *member = malloc(n);
  assert_non_null(member);
  size_t o = (size_t)snprintf(member, n, "\"kwargs\":");
  for (size_t i = 1; i < objects; i++) {
    o += (size_t)snprintf(member + o, n - o, "{\"a\":");
  }
  o += (size_t)snprintf(member + o, n - o, "{}");
  for (size_t i = 1; i < objects; i++) {
    member[o++] = '}';
  }
  member[o] = '\0';
  char *doc = with_member(member);
  free(member);
  return doc;
}

/* A complete envelope struct; the caller clears it. */
static void fill_full(celer_envelope *env) {
  celer_envelope_init(env);
  strcpy(env->id, "t-1");
  strcpy(env->task, "users.create");
  strcpy(env->queue, "emails");
  env->args = json_pack("[is]", 1, "two");
  env->kwargs = json_pack("{sb}", "k", 1);
  env->meta = json_pack("{ss}", "trace", "abc");
  env->origin = strdup("svc-a");
  assert_non_null(env->args);
  assert_non_null(env->kwargs);
  assert_non_null(env->meta);
  assert_non_null(env->origin);
  env->eta = INT64_C(1700000000000);
  env->expires = INT64_C(1700000060000);
  env->max_retries = 3;
  env->timeout_ms = 5000;
  env->enqueued_at = INT64_C(1699999999000);
  env->attempt = 2;
}

static const char FULL_JSON[] =
    "{\"id\":\"t-1\",\"task\":\"users.create\",\"queue\":\"emails\",\"args\":[1,\"two\"],"
    "\"kwargs\":{\"k\":true},\"eta\":1700000000000,\"expires\":1700000060000,"
    "\"max_retries\":3,\"timeout_ms\":5000,\"enqueued_at\":1699999999000,"
    "\"origin\":\"svc-a\",\"meta\":{\"trace\":\"abc\"},\"attempt\":2}";

/* Encoding env must be refused naming field; *out stays NULL. */
static void check_encode_refusal(const celer_envelope *env, int want_rc, const char *want_field,
                                 const char *want_part, const char *file, int line) {
  char *out = (char *)"sentinel";
  size_t out_len = 99;
  celer_envelope_error err;
  int rc = celer_envelope_encode(env, 0, &out, &out_len, &err);
  if (rc != want_rc || strcmp(err.field, want_field) != 0 || !strstr(err.message, want_part)) {
    fail_msg("%s:%d: got rc %d field \"%s\" message \"%s\"; wanted rc %d field \"%s\" "
             "containing \"%s\"",
             file, line, rc, err.field, err.message, want_rc, want_field, want_part);
  }
  assert_null(out);
  assert_int_equal(out_len, 0);
  assert_printable(err.message);
}

#define ENCODE_REFUSED(env, field, part)                                                   \
  check_encode_refusal((env), CELER_EINVAL, (field), (part), __FILE__, __LINE__)

/* ---- decoding: valid envelopes ---- */

static void test_valid_minimal(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  assert_int_equal(decode_text("{\"id\":\"abc\",\"task\":\"users.create\"}", &env, &err),
                   CELER_OK);
  assert_string_equal(env.id, "abc");
  assert_string_equal(env.task, "users.create");
  assert_string_equal(env.queue, "default");
  assert_true(json_is_array(env.args));
  assert_int_equal(json_array_size(env.args), 0);
  assert_true(json_is_object(env.kwargs));
  assert_int_equal(json_object_size(env.kwargs), 0);
  assert_null(env.meta);
  assert_null(env.origin);
  assert_int_equal(env.eta, 0);
  assert_int_equal(env.expires, 0);
  assert_int_equal(env.enqueued_at, 0);
  assert_int_equal(env.timeout_ms, 0);
  assert_int_equal(env.attempt, 0);
  assert_int_equal(env.max_retries, -1);
  assert_string_equal(err.field, "");
  assert_string_equal(err.message, "");
  celer_envelope_clear(&env);
}

static void test_valid_full(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  const char *text =
      "{\"id\":\"A_b-9\",\"task\":\"mod.sub:fn-x_1\",\"queue\":\"q.high-1_x\","
      "\"args\":[1,\"two\",{\"three\":[3]}],\"kwargs\":{\"to\":\"x@example.com\"},"
      "\"eta\":1,\"expires\":9007199254740991,\"max_retries\":1000000,\"timeout_ms\":1,"
      "\"enqueued_at\":1700000000000,\"attempt\":7,\"origin\":\"svc \\u00e9 \\u0001\","
      "\"meta\":{\"trace_id\":\"t\"}}";
  assert_int_equal(decode_text(text, &env, &err), CELER_OK);
  assert_string_equal(env.id, "A_b-9");
  assert_string_equal(env.task, "mod.sub:fn-x_1");
  assert_string_equal(env.queue, "q.high-1_x");
  assert_int_equal(json_array_size(env.args), 3);
  assert_string_equal(json_string_value(json_array_get(env.args, 1)), "two");
  assert_string_equal(json_string_value(json_object_get(env.kwargs, "to")), "x@example.com");
  assert_string_equal(json_string_value(json_object_get(env.meta, "trace_id")), "t");
  assert_int_equal(env.eta, 1);
  assert_int_equal(env.expires, INT64_C(9007199254740991));
  assert_int_equal(env.max_retries, 1000000);
  assert_int_equal(env.timeout_ms, 1);
  assert_int_equal(env.enqueued_at, INT64_C(1700000000000));
  assert_int_equal(env.attempt, 7);
  assert_string_equal(env.origin, "svc \xc3\xa9 \x01");
  celer_envelope_clear(&env);
  assert_null(env.args);
  assert_null(env.origin);
}

static void test_default_queue(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  const char *bare = "{\"id\":\"a\",\"task\":\"t\"}";
  assert_int_equal(celer_envelope_decode(bare, strlen(bare), 0, NULL, &env, &err), CELER_OK);
  assert_string_equal(env.queue, CELER_DEFAULT_QUEUE);
  celer_envelope_clear(&env);

  assert_int_equal(celer_envelope_decode(bare, strlen(bare), 0, "emails", &env, &err), CELER_OK);
  assert_string_equal(env.queue, "emails");
  celer_envelope_clear(&env);

  const char *named = "{\"id\":\"a\",\"task\":\"t\",\"queue\":\"q1\"}";
  assert_int_equal(celer_envelope_decode(named, strlen(named), 0, "emails", &env, &err),
                   CELER_OK);
  assert_string_equal(env.queue, "q1");
  celer_envelope_clear(&env);

  const char *null_queue = "{\"id\":\"a\",\"task\":\"t\",\"queue\":null}";
  assert_int_equal(celer_envelope_decode(null_queue, strlen(null_queue), 0, "emails", &env, &err),
                   CELER_OK);
  assert_string_equal(env.queue, "emails");
  celer_envelope_clear(&env);

  /* A bad default is the caller's bug; it is reported, not used. */
  assert_int_equal(celer_envelope_decode(bare, strlen(bare), 0, "{bad}", &env, &err),
                   CELER_EINVAL);
  assert_string_equal(err.field, "queue");
  assert_contains(err.message, "default queue name contains '{'");
  assert_clean(&env);
}

static void test_null_optionals_are_absent(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  const char *text = "{\"id\":\"a\",\"task\":\"t\",\"args\":null,\"kwargs\":null,\"meta\":null,"
                     "\"eta\":null,\"expires\":null,\"max_retries\":null,\"timeout_ms\":null,"
                     "\"enqueued_at\":null,\"attempt\":null,\"origin\":null}";
  assert_int_equal(decode_text(text, &env, &err), CELER_OK);
  assert_true(json_is_array(env.args));
  assert_int_equal(json_array_size(env.args), 0);
  assert_true(json_is_object(env.kwargs));
  assert_int_equal(json_object_size(env.kwargs), 0);
  assert_null(env.meta);
  assert_null(env.origin);
  assert_int_equal(env.eta, 0);
  assert_int_equal(env.max_retries, -1);
  assert_int_equal(env.timeout_ms, 0);
  celer_envelope_clear(&env);
}

static void test_unknown_fields_ignored(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  const char *text = "{\"x-custom\":{\"deep\":[1,2,{\"z\":null}]},\"id\":\"a\","
                     "\"retries\":\"lots\","
                     "\"task\":\"t\",\"priority\":1.5,\"ID\":[],\"Task\":5}";
  assert_int_equal(decode_text(text, &env, &err), CELER_OK);
  assert_string_equal(env.id, "a");
  assert_string_equal(env.task, "t");
  assert_int_equal(env.max_retries, -1);
  celer_envelope_clear(&env);
}

/* ---- decoding: not an envelope at all ---- */

static void test_not_json(void **state) {
  (void)state;
  REFUSED("nope", "", "not valid JSON");
  REFUSED("nope", "", "line 1, column");
  REFUSED("{", "", "not valid JSON");
  REFUSED("{\"id\":\"a\",}", "", "not valid JSON");
  REFUSED("{\"id\":\"a\",\"task\":\"t\"} trailing", "", "not valid JSON");
  REFUSED("{\"id\":'a'}", "id", "not valid JSON");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"args\":[1,,2]}", "args", "not valid JSON");
  REFUSED("{\"id\":\"abc", "id", "not valid JSON");
  REFUSED("   ", "", "not valid JSON");
  /* Invalid UTF-8 and raw control characters are refused, and the message
   * shows them escaped, never raw. */
  REFUSED("{\"id\":\"a\",\"task\":\"\xff\"}", "task", "not valid JSON");
  REFUSED("{\"id\":\"a\x01\",\"task\":\"t\"}", "id", "control character");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"args\":[\"\x1b[31m\"]}", "args", "not valid JSON");
}

static void test_empty_input(void **state) {
  (void)state;
  REFUSED_N("", 0, CELER_EINVAL, "", "payload is empty");
  REFUSED_N(NULL, 0, CELER_EINVAL, "", "payload is empty");
  REFUSED_N("{\"id\":\"a\",\"task\":\"t\"}", 0, CELER_EINVAL, "", "payload is empty");
}

static void test_root_not_object(void **state) {
  (void)state;
  REFUSED("[]", "", "expected a JSON object, got an array");
  REFUSED("[{\"id\":\"a\",\"task\":\"t\"}]", "", "expected a JSON object, got an array");
  REFUSED("\"id\"", "", "expected a JSON object, got a string");
  REFUSED("42", "", "expected a JSON object, got an integer");
  REFUSED("4.5", "", "expected a JSON object, got a real");
  REFUSED("true", "", "expected a JSON object, got true");
  REFUSED("null", "", "expected a JSON object, got null");
}

static void test_missing_required(void **state) {
  (void)state;
  REFUSED("{}", "id", "is required");
  REFUSED("{\"task\":\"t\"}", "id", "is required");
  REFUSED("{\"id\":null,\"task\":\"t\"}", "id", "is required");
  REFUSED("{\"id\":\"a\"}", "task", "is required");
  REFUSED("{\"id\":\"a\",\"task\":null}", "task", "is required");
}

/* ---- decoding: wrong types, field by field ---- */

typedef struct type_case {
  const char *member;
  const char *field;
  const char *part;
} type_case;

static void test_wrong_types(void **state) {
  (void)state;
  static const type_case cases[] = {
      {"\"queue\":1", "queue", "must be a string, got an integer"},
      {"\"queue\":[]", "queue", "must be a string, got an array"},
      {"\"args\":{}", "args", "must be an array, got an object"},
      {"\"args\":\"1,2\"", "args", "must be an array, got a string"},
      {"\"args\":1", "args", "must be an array, got an integer"},
      {"\"args\":true", "args", "must be an array, got true"},
      {"\"kwargs\":[]", "kwargs", "must be an object, got an array"},
      {"\"kwargs\":\"a=1\"", "kwargs", "must be an object, got a string"},
      {"\"kwargs\":0", "kwargs", "must be an object, got an integer"},
      {"\"meta\":[]", "meta", "must be an object, got an array"},
      {"\"meta\":1", "meta", "must be an object, got an integer"},
      {"\"meta\":\"trace\"", "meta", "must be an object, got a string"},
      {"\"eta\":\"5\"", "eta", "expected an integer number of milliseconds, got a string"},
      {"\"eta\":true", "eta", "expected an integer number of milliseconds, got true"},
      {"\"eta\":{}", "eta", "expected an integer number of milliseconds, got an object"},
      {"\"expires\":\"x\"", "expires", "expected an integer number of milliseconds, got a string"},
      {"\"expires\":[1]", "expires", "expected an integer number of milliseconds, got an array"},
      {"\"max_retries\":\"3\"", "max_retries", "expected an integer, got a string"},
      {"\"max_retries\":false", "max_retries", "expected an integer, got false"},
      {"\"timeout_ms\":[]", "timeout_ms",
       "expected an integer number of milliseconds, got an array"},
      {"\"timeout_ms\":\"1s\"", "timeout_ms", "got a string"},
      {"\"enqueued_at\":\"now\"", "enqueued_at", "expected an integer number of milliseconds"},
      {"\"attempt\":\"1\"", "attempt", "expected an integer, got a string"},
      {"\"origin\":5", "origin", "must be a string, got an integer"},
      {"\"origin\":[]", "origin", "must be a string, got an array"},
      {"\"origin\":{}", "origin", "must be a string, got an object"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *doc = with_member(cases[i].member);
    REFUSED(doc, cases[i].field, cases[i].part);
    free(doc);
  }
  /* id and task themselves, replaced rather than added. */
  REFUSED("{\"id\":7,\"task\":\"t\"}", "id", "must be a string, got an integer");
  REFUSED("{\"id\":[\"a\"],\"task\":\"t\"}", "id", "must be a string, got an array");
  REFUSED("{\"id\":{},\"task\":\"t\"}", "id", "must be a string, got an object");
  REFUSED("{\"id\":true,\"task\":\"t\"}", "id", "must be a string, got true");
  REFUSED("{\"id\":\"a\",\"task\":[\"t\"]}", "task", "must be a string, got an array");
  REFUSED("{\"id\":\"a\",\"task\":1.5}", "task", "must be a string, got a real");
  REFUSED("{\"id\":\"a\",\"task\":false}", "task", "must be a string, got false");
}

/* ---- decoding: names ---- */

static void test_name_lengths(void **state) {
  (void)state;
  char *id64 = repeat('a', CELER_ID_MAX);
  char *id65 = repeat('a', CELER_ID_MAX + 1);
  char *id70 = repeat('b', 70);
  char *task128 = repeat('t', CELER_TASK_NAME_MAX);
  char *task129 = repeat('t', CELER_TASK_NAME_MAX + 1);
  char *queue64 = repeat('q', CELER_QUEUE_NAME_MAX);
  char *queue65 = repeat('q', CELER_QUEUE_NAME_MAX + 1);
  char doc[512];

  snprintf(doc, sizeof doc, "{\"id\":\"%s\",\"task\":\"t\"}", id64);
  ACCEPTED(doc);
  snprintf(doc, sizeof doc, "{\"id\":\"%s\",\"task\":\"t\"}", id65);
  REFUSED(doc, "id", "must be 1 to 64 characters from [A-Za-z0-9_-], got 65 characters");
  snprintf(doc, sizeof doc, "{\"id\":\"%s\",\"task\":\"t\"}", id70);
  REFUSED(doc, "id", "must be 1 to 64 characters from [A-Za-z0-9_-], got 70 characters");

  snprintf(doc, sizeof doc, "{\"id\":\"a\",\"task\":\"%s\"}", task128);
  ACCEPTED(doc);
  snprintf(doc, sizeof doc, "{\"id\":\"a\",\"task\":\"%s\"}", task129);
  REFUSED(doc, "task", "must be 1 to 128 characters from [A-Za-z0-9_.:-], got 129 characters");

  snprintf(doc, sizeof doc, "{\"id\":\"a\",\"task\":\"t\",\"queue\":\"%s\"}", queue64);
  ACCEPTED(doc);
  snprintf(doc, sizeof doc, "{\"id\":\"a\",\"task\":\"t\",\"queue\":\"%s\"}", queue65);
  REFUSED(doc, "queue", "must be 1 to 64 characters from [A-Za-z0-9_.-], got 65 characters");

  free(id64);
  free(id65);
  free(id70);
  free(task128);
  free(task129);
  free(queue64);
  free(queue65);
}

static void test_empty_names(void **state) {
  (void)state;
  REFUSED("{\"id\":\"\",\"task\":\"t\"}", "id", "got an empty string");
  REFUSED("{\"id\":\"a\",\"task\":\"\"}", "task", "got an empty string");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"\"}", "queue", "got an empty string");
}

static void test_id_characters(void **state) {
  (void)state;
  REFUSED("{\"id\":\"{a}\",\"task\":\"t\"}", "id", "contains '{' (byte offset 0)");
  REFUSED("{\"id\":\"ab}\",\"task\":\"t\"}", "id", "contains '}' (byte offset 2)");
  REFUSED("{\"id\":\"a b\",\"task\":\"t\"}", "id", "contains a space (byte offset 1)");
  REFUSED("{\"id\":\"a.b\",\"task\":\"t\"}", "id", "contains '.'");
  REFUSED("{\"id\":\"a:b\",\"task\":\"t\"}", "id", "contains ':'");
  REFUSED("{\"id\":\"a/b\",\"task\":\"t\"}", "id", "contains '/'");
  REFUSED("{\"id\":\"it's\",\"task\":\"t\"}", "id", "contains an apostrophe");
  /* Unicode, raw and escaped: named by code point, never echoed. */
  REFUSED("{\"id\":\"caf\xc3\xa9\",\"task\":\"t\"}", "id",
          "contains the non-ASCII character U+00E9 (byte offset 3)");
  REFUSED("{\"id\":\"caf\\u00e9\",\"task\":\"t\"}", "id", "U+00E9");
  REFUSED("{\"id\":\"\\ud83d\\ude00\",\"task\":\"t\"}", "id", "U+1F600");
  /* Control characters: described, and the message stays printable
   * (check_refusal asserts that for every case). */
  REFUSED("{\"id\":\"a\\u0001\",\"task\":\"t\"}", "id", "the control character U+0001");
  REFUSED("{\"id\":\"a\\tb\",\"task\":\"t\"}", "id", "the control character U+0009");
  REFUSED("{\"id\":\"a\\u007f\",\"task\":\"t\"}", "id", "the control character U+007F");
  REFUSED("{\"id\":\"a\\nb\",\"task\":\"t\"}", "id", "U+000A");
  /* The message restates the rule. */
  REFUSED("{\"id\":\"{a}\",\"task\":\"t\"}", "id", "not allowed; use 1 to 64 characters from "
                                                  "[A-Za-z0-9_-]");
  ACCEPTED("{\"id\":\"0123-abcd_EF\",\"task\":\"t\"}");
}

static void test_task_and_queue_characters(void **state) {
  (void)state;
  ACCEPTED("{\"id\":\"a\",\"task\":\"users.create\"}");
  ACCEPTED("{\"id\":\"a\",\"task\":\"ns:users.create-v2_x\"}");
  REFUSED("{\"id\":\"a\",\"task\":\"users create\"}", "task", "contains a space");
  REFUSED("{\"id\":\"a\",\"task\":\"users/create\"}", "task", "contains '/'");
  REFUSED("{\"id\":\"a\",\"task\":\"t{x}\"}", "task", "contains '{'");
  REFUSED("{\"id\":\"a\",\"task\":\"t*\"}", "task", "contains '*'");

  ACCEPTED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"high.prio-1_x\"}");
  /* Braces would break the Redis hash tag, ':' the key layout. */
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"{q}\"}", "queue", "contains '{'");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"q}\"}", "queue", "contains '}'");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"{}\"}", "queue",
          "contains '{' (byte offset 0)");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"a:b\"}", "queue",
          "contains ':' (byte offset 1) which is not allowed; use 1 to 64 characters from "
          "[A-Za-z0-9_.-]");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"queue\":\"q\\u0000\"}", "queue", "not valid JSON");
}

static void test_valid_name_functions(void **state) {
  (void)state;
  char *s64 = repeat('a', 64);
  char *s65 = repeat('a', 65);
  char *s128 = repeat('a', 128);
  char *s129 = repeat('a', 129);

  assert_int_equal(celer_valid_id("0f1e-AB_c"), 1);
  assert_int_equal(celer_valid_id(s64), 1);
  assert_int_equal(celer_valid_id(s65), 0);
  assert_int_equal(celer_valid_id(""), 0);
  assert_int_equal(celer_valid_id(NULL), 0);
  assert_int_equal(celer_valid_id("a.b"), 0);
  assert_int_equal(celer_valid_id("a:b"), 0);
  assert_int_equal(celer_valid_id("a b"), 0);
  assert_int_equal(celer_valid_id("caf\xc3\xa9"), 0);

  assert_int_equal(celer_valid_task_name("users.create"), 1);
  assert_int_equal(celer_valid_task_name("a:b.c-d_e"), 1);
  assert_int_equal(celer_valid_task_name(s128), 1);
  assert_int_equal(celer_valid_task_name(s129), 0);
  assert_int_equal(celer_valid_task_name(""), 0);
  assert_int_equal(celer_valid_task_name(NULL), 0);
  assert_int_equal(celer_valid_task_name("a/b"), 0);
  assert_int_equal(celer_valid_task_name("{a}"), 0);

  assert_int_equal(celer_valid_queue_name("default"), 1);
  assert_int_equal(celer_valid_queue_name("a.b-c_d"), 1);
  assert_int_equal(celer_valid_queue_name(s64), 1);
  assert_int_equal(celer_valid_queue_name(s65), 0);
  assert_int_equal(celer_valid_queue_name(""), 0);
  assert_int_equal(celer_valid_queue_name(NULL), 0);
  assert_int_equal(celer_valid_queue_name("a:b"), 0);
  assert_int_equal(celer_valid_queue_name("{a}"), 0);
  assert_int_equal(celer_valid_queue_name("a}"), 0);

  free(s64);
  free(s65);
  free(s128);
  free(s129);
}

/* ---- decoding: integers ---- */

static void test_integer_limits(void **state) {
  (void)state;
  static const char *const ms_fields[] = {"eta", "expires", "enqueued_at", "timeout_ms"};
  char member[128];
  for (size_t i = 0; i < sizeof ms_fields / sizeof ms_fields[0]; i++) {
    const char *f = ms_fields[i];
    char *doc;

    snprintf(member, sizeof member, "\"%s\":9007199254740991", f); /* 2^53 - 1 */
    doc = with_member(member);
    ACCEPTED(doc);
    free(doc);

    snprintf(member, sizeof member, "\"%s\":9007199254740992", f); /* 2^53 */
    doc = with_member(member);
    REFUSED(doc, f, "must be at most 9007199254740991 (2^53 - 1), got 9007199254740992");
    free(doc);

    snprintf(member, sizeof member, "\"%s\":9223372036854775807", f); /* 2^63 - 1 */
    doc = with_member(member);
    REFUSED(doc, f, "must be at most 9007199254740991");
    free(doc);

    snprintf(member, sizeof member, "\"%s\":9223372036854775808", f); /* 2^63 */
    doc = with_member(member);
    REFUSED(doc, f, "must be at most 9007199254740991 (2^53 - 1), got a number past");
    free(doc);

    snprintf(member, sizeof member, "\"%s\":-9223372036854775809", f);
    doc = with_member(member);
    REFUSED(doc, f, "must not be negative");
    free(doc);

    snprintf(member, sizeof member, "\"%s\":1e30", f);
    doc = with_member(member);
    REFUSED(doc, f, "expected an integer number of milliseconds, got a real");
    free(doc);

    snprintf(member, sizeof member, "\"%s\":1.0", f);
    doc = with_member(member);
    REFUSED(doc, f, "expected an integer number of milliseconds, got a real");
    free(doc);

    snprintf(member, sizeof member, "\"%s\":1500.5", f);
    doc = with_member(member);
    REFUSED(doc, f, "got a real");
    free(doc);
  }

  char *doc = with_member("\"eta\":-1");
  REFUSED(doc, "eta", "must not be negative, got -1");
  free(doc);
  doc = with_member("\"expires\":-1700000000000");
  REFUSED(doc, "expires", "must not be negative, got -1700000000000");
  free(doc);
  doc = with_member("\"enqueued_at\":-5");
  REFUSED(doc, "enqueued_at", "must not be negative, got -5");
  free(doc);
  doc = with_member("\"eta\":0");
  ACCEPTED(doc);
  free(doc);

  doc = with_member("\"timeout_ms\":0");
  REFUSED(doc, "timeout_ms", "must be at least 1 when present, got 0");
  free(doc);
  doc = with_member("\"timeout_ms\":-1");
  REFUSED(doc, "timeout_ms", "must be at least 1 when present, got -1");
  free(doc);
  doc = with_member("\"timeout_ms\":1");
  ACCEPTED(doc);
  free(doc);

  doc = with_member("\"max_retries\":0");
  ACCEPTED(doc);
  free(doc);
  doc = with_member("\"max_retries\":1000000");
  ACCEPTED(doc);
  free(doc);
  doc = with_member("\"max_retries\":1000001");
  REFUSED(doc, "max_retries",
          "must be at most 1000000 (CELER_MAX_RETRIES_LIMIT), got 1000001");
  free(doc);
  doc = with_member("\"max_retries\":-1");
  REFUSED(doc, "max_retries", "must not be negative, got -1");
  free(doc);
  doc = with_member("\"max_retries\":3.0");
  REFUSED(doc, "max_retries", "expected an integer, got a real");
  free(doc);
  doc = with_member("\"max_retries\":99999999999999999999");
  REFUSED(doc, "max_retries", "must be at most 1000000 (CELER_MAX_RETRIES_LIMIT)");
  free(doc);

  doc = with_member("\"attempt\":0");
  ACCEPTED(doc);
  free(doc);
  doc = with_member("\"attempt\":-1");
  REFUSED(doc, "attempt", "must not be negative, got -1");
  free(doc);
  doc = with_member("\"attempt\":2.5");
  REFUSED(doc, "attempt", "expected an integer, got a real");
  free(doc);
  doc = with_member("\"attempt\":9007199254740992");
  REFUSED(doc, "attempt", "must be at most 9007199254740991");
  free(doc);
}

static void test_huge_integers_in_free_fields(void **state) {
  (void)state;
  /* Inside args and kwargs any 64-bit integer or real is the handler's
   * business; past 64 bits the parser gives up and the field is named. */
  ACCEPTED("{\"id\":\"a\",\"task\":\"t\",\"args\":[9007199254740992,1e30,-5,0.5]}");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"args\":[1,99999999999999999999]}", "args",
          "holds an integer outside the 64-bit range");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"kwargs\":{\"n\":-99999999999999999999}}", "kwargs",
          "outside the 64-bit range");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"unknown\":99999999999999999999}", "unknown",
          "outside the 64-bit range");
}

/* ---- decoding: bytes that do not belong ---- */

static void test_nul_bytes(void **state) {
  (void)state;
  static const char inside_id[] = "{\"id\":\"a\0b\",\"task\":\"t\"}";
  REFUSED_N(inside_id, sizeof inside_id - 1, CELER_EINVAL, "id",
            "contains a NUL byte at offset 8");
  static const char inside_args[] = "{\"id\":\"a\",\"task\":\"t\",\"args\":[\"\0\"]}";
  REFUSED_N(inside_args, sizeof inside_args - 1, CELER_EINVAL, "args", "NUL byte at offset 30");
  static const char after[] = "{\"id\":\"a\",\"task\":\"t\"}\0";
  REFUSED_N(after, sizeof after - 1, CELER_EINVAL, "", "NUL byte at offset 21");
  static const char first[] = "\0{\"id\":\"a\",\"task\":\"t\"}";
  REFUSED_N(first, sizeof first - 1, CELER_EINVAL, "", "NUL byte at offset 0");
  /* The same text without the terminator counted is fine. */
  celer_envelope env;
  celer_envelope_error err;
  assert_int_equal(celer_envelope_decode(after, sizeof after - 2, 0, NULL, &env, &err), CELER_OK);
  assert_string_equal(env.id, "a");
  celer_envelope_clear(&env);
}

static void test_escaped_nul(void **state) {
  (void)state;
  REFUSED("{\"id\":\"a\\u0000b\",\"task\":\"t\"}", "id", "\\u0000 is not allowed");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"kwargs\":{\"k\":\"\\u0000\"}}", "kwargs",
          "not valid JSON");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"origin\":\"x\\u0000\"}", "origin", "not valid JSON");
  /* In a key: the key is named as written, escapes and all. */
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"k\\u0000\":1}", "k\\u0000",
          "NUL byte in object key not supported");
}

/* ---- decoding: depth ---- */

static void test_depth(void **state) {
  (void)state;
  char *doc = nested_args(CELER_MAX_JSON_DEPTH - 1); /* deepest at level 64 */
  ACCEPTED(doc);
  free(doc);
  doc = nested_args(CELER_MAX_JSON_DEPTH); /* level 65 */
  REFUSED(doc, "args", "deeper than 64 levels (CELER_MAX_JSON_DEPTH");
  free(doc);

  doc = nested_kwargs(CELER_MAX_JSON_DEPTH - 1);
  ACCEPTED(doc);
  free(doc);
  doc = nested_kwargs(CELER_MAX_JSON_DEPTH);
  REFUSED(doc, "kwargs", "deeper than 64 levels");
  free(doc);

  /* Unknown members count too: the limit is on the whole document. */
  char *open = repeat('[', CELER_MAX_JSON_DEPTH);
  char *close = repeat(']', CELER_MAX_JSON_DEPTH);
  char member[256];
  snprintf(member, sizeof member, "\"x-extra\":%s%s", open, close);
  doc = with_member(member);
  REFUSED(doc, "x-extra", "deeper than 64 levels");
  free(doc);
  free(open);
  free(close);

  /* Past the parser's own cap: refused, field still named, no crash. */
  doc = nested_args(HOSTILE_DEPTH);
  REFUSED(doc, "args", "deeper than 64 levels");
  free(doc);
  doc = nested_kwargs(HOSTILE_DEPTH);
  REFUSED(doc, "kwargs", "deeper than 64 levels");
  free(doc);
  char *bare = repeat('[', HOSTILE_DEPTH);
  REFUSED(bare, "", "deeper than 64 levels");
  free(bare);
}

/* ---- decoding: size ---- */

/* {"id":"a","task":"t","args":["xxx..."]} of exactly `size` bytes. */
static char *doc_of_size(size_t size) {
  static const char head[] = "{\"id\":\"a\",\"task\":\"t\",\"args\":[\"";
  static const char tail[] = "\"]}";
  size_t fixed = sizeof head - 1 + sizeof tail - 1;
  assert_true(size > fixed);
  char *s = malloc(size + 1);
  assert_non_null(s);
  memcpy(s, head, sizeof head - 1);
  memset(s + sizeof head - 1, 'x', size - fixed);
  memcpy(s + size - (sizeof tail - 1), tail, sizeof tail);
  assert_int_equal(strlen(s), size);
  return s;
}

static void test_payload_limit(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;

  char *at_limit = doc_of_size(CELER_DEFAULT_MAX_PAYLOAD);
  assert_int_equal(decode_text(at_limit, &env, &err), CELER_OK);
  assert_int_equal(json_string_length(json_array_get(env.args, 0)),
                   CELER_DEFAULT_MAX_PAYLOAD - 33);
  celer_envelope_clear(&env);
  free(at_limit);

  char *over = doc_of_size(CELER_DEFAULT_MAX_PAYLOAD + 1);
  assert_int_equal(decode_text(over, &env, &err), CELER_ETOOBIG);
  assert_string_equal(err.field, "");
  assert_string_equal(err.message,
                      "payload is 1048577 bytes, over the limit of 1048576 bytes "
                      "(CELER_MAX_PAYLOAD)");
  assert_clean(&env);
  free(over);

  /* A configured limit: exact boundary, and size checked before syntax. */
  const char *small = "{\"id\":\"a\",\"task\":\"t\"}";
  size_t n = strlen(small);
  assert_int_equal(celer_envelope_decode(small, n, n, NULL, &env, &err), CELER_OK);
  celer_envelope_clear(&env);
  assert_int_equal(celer_envelope_decode(small, n, n - 1, NULL, &env, &err), CELER_ETOOBIG);
  assert_string_equal(err.field, "");
  assert_string_equal(err.message,
                      "payload is 21 bytes, over the limit of 20 bytes (CELER_MAX_PAYLOAD)");
  check_refusal("not json at all, and too long", 29, 10, CELER_ETOOBIG, "",
                "payload is 29 bytes, over the limit of 10 bytes", __FILE__, __LINE__);
}

static void test_duplicate_keys(void **state) {
  (void)state;
  REFUSED("{\"id\":\"a\",\"id\":\"b\",\"task\":\"t\"}", "id", "duplicate object key");
  REFUSED("{\"id\":\"a\",\"id\":\"b\",\"task\":\"t\"}", "id", "line 1, column");
  REFUSED("{\"id\":\"a\",\"id\":\"b\",\"task\":\"t\"}", "id", "each key may appear only once");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"task\":\"u\"}", "task", "duplicate object key");
  REFUSED("{\"id\":\"a\",\"task\":\"t\",\"kwargs\":{\"k\":1,\"k\":2}}", "kwargs",
          "duplicate object key");
  REFUSED("{\"id\":\"a\",\n\"task\":\"t\",\n\"meta\":{},\"meta\":{}}", "meta", "line 3");
}

static void test_origin(void **state) {
  (void)state;
  char *s256 = repeat('o', CELER_ORIGIN_MAX);
  char *s257 = repeat('o', CELER_ORIGIN_MAX + 1);
  char member[512];
  snprintf(member, sizeof member, "\"origin\":\"%s\"", s256);
  char *doc = with_member(member);
  ACCEPTED(doc);
  free(doc);
  snprintf(member, sizeof member, "\"origin\":\"%s\"", s257);
  doc = with_member(member);
  REFUSED(doc, "origin", "must be at most 256 bytes, got 257");
  free(doc);
  free(s256);
  free(s257);

  celer_envelope env;
  celer_envelope_error err;
  assert_int_equal(decode_text("{\"id\":\"a\",\"task\":\"t\",\"origin\":\"\"}", &env, &err),
                   CELER_OK);
  assert_string_equal(env.origin, "");
  celer_envelope_clear(&env);
}

static void test_clear_is_always_safe(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  celer_envelope_clear(NULL);
  celer_envelope_init(&env);
  celer_envelope_clear(&env);
  celer_envelope_clear(&env);
  /* A refusal late in the checks (origin comes last) frees what the
   * earlier ones took; the sanitizer would report a leak otherwise. */
  assert_int_equal(decode_text("{\"id\":\"a\",\"task\":\"t\",\"args\":[1],\"kwargs\":{\"a\":1},"
                               "\"meta\":{\"m\":1},\"origin\":7}",
                               &env, &err),
                   CELER_EINVAL);
  assert_string_equal(err.field, "origin");
  assert_clean(&env);
  celer_envelope_clear(&env);
  /* No env, no err: refused without crashing. */
  assert_int_equal(celer_envelope_decode("{}", 2, 0, NULL, NULL, &err), CELER_EINVAL);
  assert_int_equal(celer_envelope_decode("{}", 2, 0, NULL, &env, NULL), CELER_EINVAL);
  celer_envelope_clear(&env);
}

static void test_error_format(void **state) {
  (void)state;
  celer_envelope_error err;
  char buf[256];
  snprintf(err.field, sizeof err.field, "id");
  snprintf(err.message, sizeof err.message, "is required");
  celer_envelope_error_format(&err, buf, sizeof buf);
  assert_string_equal(buf, "id: is required");

  err.field[0] = '\0';
  celer_envelope_error_format(&err, buf, sizeof buf);
  assert_string_equal(buf, "is required");

  snprintf(err.field, sizeof err.field, "queue");
  char small[8];
  celer_envelope_error_format(&err, small, sizeof small);
  assert_string_equal(small, "queue: ");

  celer_envelope_error_format(NULL, buf, sizeof buf);
  assert_string_equal(buf, "");
  celer_envelope_error_format(&err, NULL, 0);

  /* Straight from a refusal. */
  celer_envelope env;
  assert_int_equal(decode_text("{\"id\":\"a\",\"task\":\"t\",\"eta\":-1}", &env, &err),
                   CELER_EINVAL);
  celer_envelope_error_format(&err, buf, sizeof buf);
  assert_string_equal(buf, "eta: must not be negative, got -1");
  celer_envelope_clear(&env);
}

/* ---- encoding ---- */

static void test_encode_minimal_exact(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_init(&env);
  strcpy(env.id, "abc");
  strcpy(env.task, "users.create");
  strcpy(env.queue, "default");
  char *out = NULL;
  size_t len = 0;
  celer_envelope_error err;
  assert_int_equal(celer_envelope_encode(&env, 0, &out, &len, &err), CELER_OK);
  static const char want[] =
      "{\"id\":\"abc\",\"task\":\"users.create\",\"queue\":\"default\",\"args\":[],\"kwargs\":{}}";
  assert_string_equal(out, want);
  assert_int_equal(len, sizeof want - 1);
  free(out);

  env.args = json_pack("[is]", 1, "x");
  env.kwargs = json_pack("{sb}", "k", 1);
  assert_int_equal(celer_envelope_encode(&env, 0, &out, NULL, &err), CELER_OK);
  assert_string_equal(out, "{\"id\":\"abc\",\"task\":\"users.create\",\"queue\":\"default\","
                           "\"args\":[1,\"x\"],\"kwargs\":{\"k\":true}}");
  free(out);
  celer_envelope_clear(&env);
}

static void test_encode_full_exact(void **state) {
  (void)state;
  celer_envelope env;
  fill_full(&env);
  char *out = NULL;
  size_t len = 0;
  celer_envelope_error err;
  assert_int_equal(celer_envelope_encode(&env, 0, &out, &len, &err), CELER_OK);
  assert_string_equal(out, FULL_JSON);
  assert_int_equal(len, strlen(FULL_JSON));
  free(out);

  /* Optional fields disappear when unset; attempt only when > 0. */
  env.eta = 0;
  env.expires = 0;
  env.max_retries = -1;
  env.timeout_ms = 0;
  env.enqueued_at = 0;
  env.attempt = 0;
  free(env.origin);
  env.origin = NULL;
  json_decref(env.meta);
  env.meta = NULL;
  assert_int_equal(celer_envelope_encode(&env, 0, &out, &len, &err), CELER_OK);
  assert_string_equal(out, "{\"id\":\"t-1\",\"task\":\"users.create\",\"queue\":\"emails\","
                           "\"args\":[1,\"two\"],\"kwargs\":{\"k\":true}}");
  free(out);

  /* max_retries 0 is a real value ("never retry"), not absence. */
  env.max_retries = 0;
  assert_int_equal(celer_envelope_encode(&env, 0, &out, &len, &err), CELER_OK);
  assert_contains(out, ",\"max_retries\":0}");
  free(out);
  celer_envelope_clear(&env);
}

static void test_encode_borrows_references(void **state) {
  (void)state;
  celer_envelope env;
  fill_full(&env);
  json_t *args = env.args;
  json_t *kwargs = env.kwargs;
  json_t *meta = env.meta;
  size_t args_refs = args->refcount;
  size_t kwargs_refs = kwargs->refcount;
  size_t meta_refs = meta->refcount;
  char *out = NULL;
  celer_envelope_error err;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(celer_envelope_encode(&env, 0, &out, NULL, &err), CELER_OK);
    free(out);
  }
  assert_int_equal(args->refcount, args_refs);
  assert_int_equal(kwargs->refcount, kwargs_refs);
  assert_int_equal(meta->refcount, meta_refs);
  assert_ptr_equal(env.args, args);
  assert_int_equal(json_array_size(env.args), 2);
  celer_envelope_clear(&env);
}

static void test_round_trip(void **state) {
  (void)state;
  celer_envelope a;
  celer_envelope b;
  celer_envelope_error err;
  char *first = NULL;
  char *second = NULL;
  size_t first_len = 0;
  size_t second_len = 0;
  fill_full(&a);
  json_array_append_new(a.args, json_pack("{s[iii]}", "nested", 1, 2, 3));
  json_object_set_new(a.kwargs, "unicode", json_string("caf\xc3\xa9 \xe2\x9c\x93"));
  json_object_set_new(a.kwargs, "big", json_integer(INT64_C(9223372036854775807)));
  assert_int_equal(celer_envelope_encode(&a, 0, &first, &first_len, &err), CELER_OK);
  assert_int_equal(celer_envelope_decode(first, first_len, 0, NULL, &b, &err), CELER_OK);

  assert_string_equal(a.id, b.id);
  assert_string_equal(a.task, b.task);
  assert_string_equal(a.queue, b.queue);
  assert_true(json_equal(a.args, b.args));
  assert_true(json_equal(a.kwargs, b.kwargs));
  assert_true(json_equal(a.meta, b.meta));
  assert_string_equal(a.origin, b.origin);
  assert_int_equal(a.eta, b.eta);
  assert_int_equal(a.expires, b.expires);
  assert_int_equal(a.enqueued_at, b.enqueued_at);
  assert_int_equal(a.timeout_ms, b.timeout_ms);
  assert_int_equal(a.attempt, b.attempt);
  assert_int_equal(a.max_retries, b.max_retries);

  assert_int_equal(celer_envelope_encode(&b, 0, &second, &second_len, &err), CELER_OK);
  assert_string_equal(first, second);
  assert_int_equal(first_len, second_len);
  free(first);
  free(second);
  celer_envelope_clear(&a);
  celer_envelope_clear(&b);

  /* And from text: decode the canonical text, encode it back unchanged. */
  assert_int_equal(celer_envelope_decode(FULL_JSON, strlen(FULL_JSON), 0, NULL, &b, &err),
                   CELER_OK);
  assert_int_equal(celer_envelope_encode(&b, 0, &first, NULL, &err), CELER_OK);
  assert_string_equal(first, FULL_JSON);
  free(first);
  celer_envelope_clear(&b);
}

static void test_encode_refuses_invalid(void **state) {
  (void)state;
  celer_envelope env;

  celer_envelope_init(&env); /* nothing set: id is the first rule broken */
  ENCODE_REFUSED(&env, "id", "got an empty string");

  fill_full(&env);
  strcpy(env.id, "{x}");
  ENCODE_REFUSED(&env, "id", "contains '{'");
  memset(env.id, 'a', sizeof env.id); /* no terminator inside the array */
  ENCODE_REFUSED(&env, "id", "is not NUL-terminated within its 65 bytes");
  memset(env.id, 'a', sizeof env.id);
  env.id[CELER_ID_MAX] = '\0';
  assert_int_equal(celer_valid_id(env.id), 1);
  strcpy(env.id, "ok");

  strcpy(env.task, "bad task");
  ENCODE_REFUSED(&env, "task", "contains a space");
  strcpy(env.task, "users.create");

  env.queue[0] = '\0';
  ENCODE_REFUSED(&env, "queue", "got an empty string");
  strcpy(env.queue, "a:b");
  ENCODE_REFUSED(&env, "queue", "contains ':'");
  strcpy(env.queue, "{q}");
  ENCODE_REFUSED(&env, "queue", "contains '{'");
  strcpy(env.queue, "q");

  json_t *saved = env.args;
  env.args = json_object();
  ENCODE_REFUSED(&env, "args", "must be an array, got an object");
  json_decref(env.args);
  env.args = saved;

  saved = env.kwargs;
  env.kwargs = json_array();
  ENCODE_REFUSED(&env, "kwargs", "must be an object, got an array");
  json_decref(env.kwargs);
  env.kwargs = saved;

  saved = env.meta;
  env.meta = json_string("trace");
  ENCODE_REFUSED(&env, "meta", "must be an object, got a string");
  json_decref(env.meta);
  env.meta = saved;

  /* Depth: args is level 2, so 64 nested arrays reach level 65. */
  json_t *deep = json_array();
  json_t *inner = deep;
  for (int i = 1; i < CELER_MAX_JSON_DEPTH; i++) {
    json_t *next = json_array();
    json_array_append_new(inner, next);
    inner = next;
  }
  saved = env.args;
  env.args = deep;
  ENCODE_REFUSED(&env, "args", "deeper than 64 levels");
  env.args = json_array_get(deep, 0); /* one array less: deepest at 64 */
  char *out = NULL;
  celer_envelope_error err;
  assert_int_equal(celer_envelope_encode(&env, 0, &out, NULL, &err), CELER_OK);
  free(out);
  json_decref(deep);
  env.args = saved;

  env.eta = -1;
  ENCODE_REFUSED(&env, "eta", "must not be negative, got -1");
  env.eta = CELER_MAX_JSON_INT + 1;
  ENCODE_REFUSED(&env, "eta", "must be at most 9007199254740991");
  env.eta = CELER_MAX_JSON_INT;
  env.expires = INT64_MAX;
  ENCODE_REFUSED(&env, "expires", "must be at most 9007199254740991");
  env.expires = 0;
  env.timeout_ms = -5;
  ENCODE_REFUSED(&env, "timeout_ms", "must be at least 1 when present, got -5");
  env.timeout_ms = 0;
  env.enqueued_at = -2;
  ENCODE_REFUSED(&env, "enqueued_at", "must not be negative");
  env.enqueued_at = 0;
  env.attempt = -1;
  ENCODE_REFUSED(&env, "attempt", "must not be negative, got -1");
  env.attempt = 0;
  env.max_retries = -2;
  ENCODE_REFUSED(&env, "max_retries", "must not be negative, got -2");
  env.max_retries = CELER_MAX_RETRIES_LIMIT + 1;
  ENCODE_REFUSED(&env, "max_retries", "must be at most 1000000");
  env.max_retries = CELER_MAX_RETRIES_LIMIT;

  free(env.origin);
  env.origin = repeat('o', CELER_ORIGIN_MAX + 1);
  ENCODE_REFUSED(&env, "origin", "must be at most 256 bytes, got 257");
  free(env.origin);
  env.origin = strdup("bad \xff utf-8");
  ENCODE_REFUSED(&env, "origin", "must be valid UTF-8");
  free(env.origin);
  env.origin = strdup("caf\xc3\xa9");

  /* All repaired: accepted again. */
  assert_int_equal(celer_envelope_encode(&env, 0, &out, NULL, &err), CELER_OK);
  free(out);
  celer_envelope_clear(&env);

  /* No env or no out pointer. */
  assert_int_equal(celer_envelope_encode(NULL, 0, &out, NULL, &err), CELER_EINVAL);
  assert_null(out);
  fill_full(&env);
  assert_int_equal(celer_envelope_encode(&env, 0, NULL, NULL, NULL), CELER_EINVAL);
  celer_envelope_clear(&env);
}

static void test_encode_payload_limit(void **state) {
  (void)state;
  celer_envelope env;
  celer_envelope_error err;
  char *out = NULL;
  size_t len = 0;
  fill_full(&env);
  size_t full = strlen(FULL_JSON);
  assert_int_equal(celer_envelope_encode(&env, full, &out, &len, &err), CELER_OK);
  assert_int_equal(len, full);
  free(out);
  out = NULL;
  assert_int_equal(celer_envelope_encode(&env, full - 1, &out, &len, &err), CELER_ETOOBIG);
  assert_null(out);
  assert_string_equal(err.field, "");
  char want[160];
  snprintf(want, sizeof want,
           "encoded envelope is %zu bytes, over the limit of %zu bytes (CELER_MAX_PAYLOAD)",
           full, full - 1);
  assert_string_equal(err.message, want);
  celer_envelope_clear(&env);

  /* Default limit: a 1 MiB argument does not fit with its envelope. */
  fill_full(&env);
  char *big = repeat('x', CELER_DEFAULT_MAX_PAYLOAD);
  json_array_append_new(env.args, json_string(big));
  free(big);
  assert_int_equal(celer_envelope_encode(&env, 0, &out, &len, &err), CELER_ETOOBIG);
  assert_null(out);
  assert_contains(err.message, "over the limit of 1048576 bytes");
  celer_envelope_clear(&env);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_minimal),
      cmocka_unit_test(test_valid_full),
      cmocka_unit_test(test_default_queue),
      cmocka_unit_test(test_null_optionals_are_absent),
      cmocka_unit_test(test_unknown_fields_ignored),
      cmocka_unit_test(test_not_json),
      cmocka_unit_test(test_empty_input),
      cmocka_unit_test(test_root_not_object),
      cmocka_unit_test(test_missing_required),
      cmocka_unit_test(test_wrong_types),
      cmocka_unit_test(test_name_lengths),
      cmocka_unit_test(test_empty_names),
      cmocka_unit_test(test_id_characters),
      cmocka_unit_test(test_task_and_queue_characters),
      cmocka_unit_test(test_valid_name_functions),
      cmocka_unit_test(test_integer_limits),
      cmocka_unit_test(test_huge_integers_in_free_fields),
      cmocka_unit_test(test_nul_bytes),
      cmocka_unit_test(test_escaped_nul),
      cmocka_unit_test(test_depth),
      cmocka_unit_test(test_payload_limit),
      cmocka_unit_test(test_duplicate_keys),
      cmocka_unit_test(test_origin),
      cmocka_unit_test(test_clear_is_always_safe),
      cmocka_unit_test(test_error_format),
      cmocka_unit_test(test_encode_minimal_exact),
      cmocka_unit_test(test_encode_full_exact),
      cmocka_unit_test(test_encode_borrows_references),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_encode_refuses_invalid),
      cmocka_unit_test(test_encode_payload_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
