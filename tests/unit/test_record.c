/* Unit tests of the record writer (broker/record.c on broker/jsonw.c):
 * the exact bytes of a record, and for hostile strings (quotes, control
 * bytes, invalid UTF-8 of every kind) that jansson reads the record back to
 * the same values, or to '?' for each non-ASCII byte of a string that is
 * not valid UTF-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "broker/broker.h"

static char *encode(const broker_outcome *o) {
  char *s = NULL;
  size_t len = 0;
  assert_int_equal(broker_record_encode(o, &s, &len), 0);
  assert_non_null(s);
  assert_int_equal(len, strlen(s));
  return s;
}

static void test_succeeded_exact(void **state) {
  (void)state;
  json_t *result = json_pack("{s:[i,s]}", "k", 1, "v");
  broker_outcome o = {.id = "t1", .task = "test.echo", .queue = "default", .entry_id = "1-0",
                      .state = CELER_SUCCEEDED, .attempt = 2, .redeliveries = 1,
                      .result = result, .enqueued_at = 1000, .started_at = 1001,
                      .finished_at = 1002, .worker = "host:1"};
  char *s = encode(&o);
  assert_string_equal(s, "{\"id\":\"t1\",\"task\":\"test.echo\",\"queue\":\"default\","
                         "\"state\":\"SUCCEEDED\",\"attempt\":2,\"redeliveries\":1,"
                         "\"result\":{\"k\":[1,\"v\"]},\"enqueued_at\":1000,"
                         "\"started_at\":1001,\"finished_at\":1002,\"worker\":\"host:1\","
                         "\"entry\":\"1-0\"}");
  free(s);
  json_decref(result);
}

static void test_integers(void **state) {
  (void)state;
  broker_outcome o = {.id = "t", .queue = "q", .state = CELER_SUCCEEDED, .attempt = INT64_MAX,
                      .redeliveries = INT64_MIN, .enqueued_at = 9, .started_at = -5,
                      .finished_at = 1700000000123, .worker = "w"};
  char *s = encode(&o);
  assert_non_null(strstr(s, "\"attempt\":9223372036854775807,"));
  assert_non_null(strstr(s, "\"redeliveries\":-9223372036854775808,"));
  assert_non_null(strstr(s, "\"enqueued_at\":9,\"started_at\":null,"
                            "\"finished_at\":1700000000123,"));
  free(s);
}

static void test_failed_and_retrying_exact(void **state) {
  (void)state;
  json_t *errors = json_pack("[{s:s}]", "type", "E");
  broker_outcome o = {.id = "t2", .task = NULL, .queue = "q", .state = CELER_RETRYING,
                      .attempt = 1, .errors = errors, .next_run_at = 5000,
                      .error_type = NULL, .error_message = NULL, .worker = "w"};
  char *s = encode(&o);
  assert_string_equal(s, "{\"id\":\"t2\",\"task\":null,\"queue\":\"q\",\"state\":\"RETRYING\","
                         "\"attempt\":1,\"redeliveries\":0,\"error\":{\"type\":\"TaskError\","
                         "\"message\":\"\"},\"errors\":[{\"type\":\"E\"}],\"next_run_at\":5000,"
                         "\"enqueued_at\":null,\"started_at\":null,\"finished_at\":null,"
                         "\"worker\":\"w\"}");
  free(s);
  json_decref(errors);
}

/* Encodes message as the error message and returns what jansson reads. */
static char *round_trip_message(const char *message) {
  broker_outcome o = {.id = "t", .queue = "q", .state = CELER_FAILED, .error_type = "X",
                      .error_message = message, .worker = "w"};
  char *s = encode(&o);
  json_error_t jerr;
  json_t *doc = json_loads(s, 0, &jerr);
  if (doc == NULL) fail_msg("jansson refused %s: %s", s, jerr.text);
  const char *got = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
  assert_non_null(got);
  char *copy = strdup(got);
  json_decref(doc);
  free(s);
  return copy;
}

static void test_strings_round_trip(void **state) {
  (void)state;
  static const char *const same[] = {
      "",
      "plain",
      "quote \" backslash \\ slash /",
      "tab\tnewline\ncr\rbs\bff\f",
      "\x01\x02\x1f\x7f",
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", /* é € 😀 */
      "\xef\xbf\xbf",                             /* U+FFFF */
      "\xf4\x8f\xbf\xbf",                         /* U+10FFFF */
  };
  for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
    char *got = round_trip_message(same[i]);
    assert_string_equal(got, same[i]);
    free(got);
  }
}

static void test_invalid_utf8_becomes_question_marks(void **state) {
  (void)state;
  static const char *const bad[][2] = {
      {"a\xff" "b", "a?b"},
      {"caf\xc3\xa9\xc3", "caf???"},        /* truncated sequence: every byte */
      {"\xc0\xaf", "??"},                    /* overlong '/' */
      {"\xe0\x80\xaf", "???"},               /* overlong, 3 bytes */
      {"\xed\xa0\x80", "???"},               /* a surrogate */
      {"\xf4\x90\x80\x80", "????"},          /* past U+10FFFF */
      {"\x80 \"q\"\n", "? \"q\"\n"},         /* escapes still apply */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *got = round_trip_message(bad[i][0]);
    assert_string_equal(got, bad[i][1]);
    free(got);
  }
}

static void test_long_strings_grow_the_buffer(void **state) {
  (void)state;
  size_t n = 100000;
  char *big = malloc(n + 1);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++) big[i] = (char)(i % 3 == 0 ? '\n' : 'a' + (char)(i % 26));
  big[n] = '\0';
  char *got = round_trip_message(big);
  assert_string_equal(got, big);
  free(got);
  free(big);
}

/* A result larger than the buffer's first room takes json_dumpb's second
 * pass; empty containers take none. Both must read back as given. */
static void test_results_small_large_and_empty(void **state) {
  (void)state;
  json_t *big = json_array();
  for (int i = 0; i < 2000; i++) json_array_append_new(big, json_integer(i * 7919));
  json_t *cases[] = {big, json_array(), json_object(), json_pack("{s{s[]}}", "a", "b"),
                     json_string("caf\xc3\xa9"), json_real(0.5), json_true()};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    broker_outcome o = {.id = "t", .queue = "q", .state = CELER_SUCCEEDED, .result = cases[i],
                        .worker = "w"};
    char *s = encode(&o);
    json_t *doc = json_loads(s, 0, NULL);
    assert_non_null(doc);
    assert_true(json_equal(json_object_get(doc, "result"), cases[i]));
    json_decref(doc);
    free(s);
    json_decref(cases[i]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_succeeded_exact),
      cmocka_unit_test(test_integers),
      cmocka_unit_test(test_failed_and_retrying_exact),
      cmocka_unit_test(test_strings_round_trip),
      cmocka_unit_test(test_invalid_utf8_becomes_question_marks),
      cmocka_unit_test(test_long_strings_grow_the_buffer),
      cmocka_unit_test(test_results_small_large_and_empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
