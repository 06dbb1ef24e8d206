/* The testing module: small tasks for tests, demos and benchmarks.
 *   test.noop   result null
 *   test.echo   result {"args": ..., "kwargs": ...}
 *   test.sleep  kwargs seconds (number): sleeps that long, result null
 *   test.fail   kwargs message, times, delay: fails retryably the first
 *               `times` attempts (every attempt without times), then
 *               returns "ok"; `delay` (seconds) fixes the retry delay
 *   test.crash  kwargs times: kills its own process with SIGSEGV the first
 *               `times` attempts (every attempt without times), then "ok"
 *   test.mark   kwargs path (string), ms (integer, default 0): appends the
 *               line "<task id>\n" to path with one write(), then waits ms
 *               milliseconds; result null. Every run leaves a line, so a
 *               chaos test counts how often each task ran. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "celer/task.h"

/* A test.sleep longer than a day is a typo, not a test. */
#define TESTING_SLEEP_MAX_S 86400.0
/* test.mark's ms, likewise: an hour at most. */
#define TESTING_MARK_MAX_MS 3600000

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

/* Sleeps ms milliseconds, finishing the sleep after a signal. */
static void sleep_ms(int64_t ms) {
  struct timespec left = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

static int mark(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                json_t **result) {
  const char *path;
  int64_t ms = 0;
  if (celer_arg_string(ctx, kwargs, "path", &path) != 0) return -1;
  if (celer_arg_int_opt(ctx, kwargs, "ms", &ms) < 0) return -1;
  if (ms < 0 || ms > TESTING_MARK_MAX_MS)
    return celer_task_fail(ctx, "ArgumentError", "kwargs.ms: must be 0 to %d, got %lld",
                           TESTING_MARK_MAX_MS, (long long)ms);
  /* One short write() to an O_APPEND file is one atomic append: lines of
   * concurrent workers never interleave. */
  char line[128];
  int len = snprintf(line, sizeof line, "%s\n", celer_task_id(ctx));
  if (len < 0 || (size_t)len >= sizeof line)
    return celer_task_fail(ctx, "ValueError", "task id too long for a mark line");
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return celer_task_fail(ctx, "IOError", "open %s: %s", path, strerror(errno));
  ssize_t n = write(fd, line, (size_t)len);
  int write_errno = errno;
  if (close(fd) != 0 && n == len)
    return celer_task_fail(ctx, "IOError", "close %s: %s", path, strerror(errno));
  if (n < 0) return celer_task_fail(ctx, "IOError", "write %s: %s", path, strerror(write_errno));
  if (n != len)
    return celer_task_fail(ctx, "IOError", "write %s: wrote %zd of %d bytes", path, n, len);
  /* Waiting after the mark widens the window in which a killed worker has
   * done the work but not recorded it: the case redelivery must cover. */
  if (ms > 0) sleep_ms(ms);
  *result = NULL;
  return 0;
}

static int init(celer_registry *reg) {
  static const celer_task_def defs[] = {
      {.name = "test.noop", .handler = noop},
      {.name = "test.echo", .handler = echo},
      {.name = "test.sleep", .handler = sleep_task},
      /* Exact backoff (100 ms, doubling, capped at 1 s), so that tests can
       * check the delays; real tasks keep the jittered default. */
      {.name = "test.fail",
       .handler = fail,
       .backoff_base_ms = 100,
       .backoff_factor = 2,
       .backoff_cap_ms = 1000,
       .no_jitter = 1},
      {.name = "test.crash", .handler = crash},
      {.name = "test.mark", .handler = mark},
  };
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
    if (celer_register(reg, &defs[i]) != 0) return -1;
  return 0;
}

CELER_MODULE("testing", "1.0", init);
