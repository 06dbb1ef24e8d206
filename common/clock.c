#include <errno.h>
#include <time.h>
#include "common/common.h"

int64_t celer_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t celer_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int celer_parse_i64(const char *s, int64_t *out) {
  int64_t v = 0;
  if (s == NULL || *s == '\0') return CELER_EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return CELER_EINVAL;
    if (v > (INT64_MAX - (*s - '0')) / 10) return CELER_EINVAL;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return 0;
}
