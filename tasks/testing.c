/* The testing module: small tasks for tests, demos and benchmarks.
 *   test.noop   result null
 *   test.echo   result {"args": ..., "kwargs": ...}
 *   test.sleep  kwargs seconds (number): sleeps that long, result null
 *   test.fail   kwargs message, times, delay: fails retryably the first
 *               `times` attempts (every attempt without times), then
 *               returns "ok"; `delay` (seconds) fixes the retry delay
 *   test.crash  kwargs times: kills its own process with SIGSEGV the first
 *               `times` attempts (every attempt without times), then "ok" */
#include <errno.h>
#include <signal.h>
#include <time.h>
#include "celer/task.h"

/* A test.sleep longer than a day is a typo, not a test. */
#define TESTING_SLEEP_MAX_S 86400.0

static int noop(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                json_t **result) {
  *result = NULL;
  return 0;
}

static int echo(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                json_t **result) {
  *result = json_pack("{sOsO}", "args", (json_t *)args, "kwargs", (json_t *)kwargs);
  if (*result == NULL) return celer_task_fail(ctx, "MemoryError", "out of memory");
  return 0;
}

static int sleep_task(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                      json_t **result) {
  double seconds = 0;
  if (celer_arg_number(ctx, kwargs, "seconds", &seconds) != 0) return -1;
  if (!(seconds >= 0 && seconds <= TESTING_SLEEP_MAX_S))
    return celer_task_fail(ctx, "ArgumentError", "kwargs.seconds: must be 0 to %.0f",
                           TESTING_SLEEP_MAX_S);
  struct timespec left = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  /* A signal (a stop request) interrupts the sleep; finish it regardless,
   * as a real task would finish its work. */
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
  *result = NULL;
  return 0;
}

/* Reads the optional `times` kwarg; -1 means "every attempt". */
static int read_times(celer_task_ctx *ctx, const json_t *kwargs, int64_t *times) {
  *times = -1;
  int rc = celer_arg_int_opt(ctx, kwargs, "times", times);
  if (rc < 0) return -1;
  if (rc == 0 && *times < 0)
    return celer_task_fail(ctx, "ArgumentError", "kwargs.times: must be 0 or more");
  return 0;
}

static int fail(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                json_t **result) {
  int64_t times;
  const char *message = "test.fail failed as asked";
  double delay = -1;
  if (read_times(ctx, kwargs, &times) != 0) return -1;
  if (celer_arg_string_opt(ctx, kwargs, "message", &message) < 0) return -1;
  if (celer_arg_number_opt(ctx, kwargs, "delay", &delay) < 0) return -1;
  if (times >= 0 && celer_task_attempt(ctx) >= times) {
    *result = json_string("ok");
    return 0;
  }
  return celer_task_retry(ctx, delay >= 0 ? (int64_t)(delay * 1000) : -1, "TestFailure", "%s",
                          message);
}

static int crash(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                 json_t **result) {
  int64_t times;
  if (read_times(ctx, kwargs, &times) != 0) return -1;
  if (times >= 0 && celer_task_attempt(ctx) >= times) {
    *result = json_string("ok");
    return 0;
  }
  raise(SIGSEGV);
  return celer_task_fail(ctx, "TestFailure", "SIGSEGV did not end the process");
}

static int init(celer_registry *reg) {
  static const celer_task_def defs[] = {
      {.name = "test.noop", .handler = noop},
      {.name = "test.echo", .handler = echo},
      {.name = "test.sleep", .handler = sleep_task},
      {.name = "test.fail", .handler = fail},
      {.name = "test.crash", .handler = crash},
  };
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
    if (celer_register(reg, &defs[i]) != 0) return -1;
  return 0;
}

CELER_MODULE("testing", "1.0", init);
