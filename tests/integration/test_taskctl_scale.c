/* taskctl on a big queue: 1,000,000 ready tasks, sent through the
 * library's pipelined batch enqueue, and `taskctl queues` must still
 * answer well under a second (no command reads a whole queue). The
 * measured times are printed; the bound asserted is generous. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include "celer/client.h"
#include "harness/harness.h"

/* The size the issue asks for. */
#define SCALE_TASKS 1000000
/* Tasks per pipelined batch: big enough to amortise round trips, small
 * enough that the batch's envelopes stay a few MB of memory. */
#define SCALE_BATCH 5000
/* The bound on one `taskctl queues` run, process start included: "well
 * under a second" with room for a loaded, sanitized build. */
#define SCALE_BOUND_MS 1000
#define SCALE_QUEUE "big"

typedef struct fixture {
  harness_redis redis;
} fixture;

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int group_setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  *state = f;
  return harness_redis_start(&f->redis, false, NULL);
}

static int group_teardown(void **state) {
  fixture *f = *state;
  if (f == NULL) return 0;
  harness_redis_stop(&f->redis);
  free(f);
  return 0;
}

/* Fills the queue with SCALE_TASKS small tasks, a batch per round trip.
 * Short ids keep the broker's memory modest (about 100 bytes a task). */
static void fill(const fixture *f) {
  celer_client_options o = {.broker_url = f->redis.url};
  celer_client *c = celer_client_new(&o);
  assert_non_null(c);
  assert_int_equal(celer_client_connect(c), 0);
  celer_batch_item *items = calloc(SCALE_BATCH, sizeof *items);
  char (*ids)[16] = calloc(SCALE_BATCH, sizeof *ids);
  assert_non_null(items);
  assert_non_null(ids);
  long long start = mono_ms();
  for (int done = 0; done < SCALE_TASKS; done += SCALE_BATCH) {
    for (int i = 0; i < SCALE_BATCH; i++) {
      memset(&items[i], 0, sizeof items[i]);
      items[i].task = "test.noop";
      celer_enqueue_options_init(&items[i].opts);
      items[i].opts.queue = SCALE_QUEUE;
      snprintf(ids[i], sizeof ids[i], "t%d", done + i);
      items[i].opts.id = ids[i];
    }
    int rc = celer_enqueue_batch(c, items, SCALE_BATCH);
    if (rc != 0) print_message("enqueue: %s\n", celer_client_errstr(c));
    assert_int_equal(rc, 0);
  }
  print_message("enqueued %d tasks in %lld ms\n", SCALE_TASKS, mono_ms() - start);
  free(items);
  free(ids);
  celer_client_free(c);
}

/* Runs taskctl with the words in argv (NULL-terminated, at most 8);
 * returns its stdout (caller frees) and stores the wall time in *ms. */
static char *timed_taskctl(const fixture *f, const char *const *words, long long *ms) {
  const char *argv[12] = {harness_bin("taskctl"), "--broker", f->redis.url};
  int n = 3;
  for (; *words && n < 11; words++) argv[n++] = *words;
  argv[n] = NULL;
  char *out = NULL, *err = NULL;
  long long start = mono_ms();
  int code = harness_run(argv, NULL, NULL, 0, &out, &err, HARNESS_DEADLINE_MS);
  *ms = mono_ms() - start;
  if (code != 0) print_message("exit %d: %s\n", code, err ? err : "");
  assert_int_equal(code, 0);
  free(err);
  return out;
}

static void test_queues_on_a_million(void **state) {
  fixture *f = *state;
  fill(f);
  long long ms = 0;
  const char *json_words[] = {"--json", "queues", "--queue", SCALE_QUEUE, NULL};
  char *out = timed_taskctl(f, json_words, &ms);
  print_message("taskctl --json queues --queue %s: %lld ms\n", SCALE_QUEUE, ms);
  json_t *list = json_loads(out, 0, NULL);
  assert_non_null(list);
  json_t *row = json_array_get(list, 0);
  assert_int_equal(json_integer_value(json_object_get(row, "ready")), SCALE_TASKS);
  assert_int_equal(json_integer_value(json_object_get(row, "active")), 0);
  json_decref(list);
  free(out);
  assert_true(ms < SCALE_BOUND_MS);

  const char *text_words[] = {"queues", NULL};
  out = timed_taskctl(f, text_words, &ms);
  print_message("taskctl queues: %lld ms\n", ms);
  /* "big" under "QUEUE", padded, then the right-aligned count. */
  if (strstr(out, "\n" SCALE_QUEUE "    1,000,000  ") == NULL) print_message("%s", out);
  assert_non_null(strstr(out, "\n" SCALE_QUEUE "    1,000,000  "));
  free(out);
  assert_true(ms < SCALE_BOUND_MS);

  const char *stats_words[] = {"--json", "stats", NULL};
  out = timed_taskctl(f, stats_words, &ms);
  print_message("taskctl --json stats: %lld ms\n", ms);
  assert_non_null(strstr(out, "\"ready\":1000000"));
  free(out);
  assert_true(ms < SCALE_BOUND_MS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_queues_on_a_million),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
