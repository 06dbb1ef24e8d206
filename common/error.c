#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "celer/state.h"
#include "common/common.h"

const char *celer_strerror(int code) {
  switch (code) {
    case CELER_OK: return "success";
    case CELER_EINVAL: return "invalid argument or input";
    case CELER_ENOMEM: return "out of memory";
    case CELER_ECONNECT: return "broker unreachable";
    case CELER_EAUTH: return "broker refused authentication";
    case CELER_EPROTO: return "unexpected reply from the broker";
    case CELER_ENOTFOUND: return "not found";
    case CELER_ETIMEDOUT: return "timed out";
    case CELER_ETOOBIG: return "over the configured limit";
    case CELER_EIO: return "input/output error";
    case CELER_ESCRIPT: return "broker script failed";
    default: return "unknown error";
  }
}

static const char *const state_names[CELER_STATE_COUNT] = {
    [CELER_PENDING] = "PENDING",     [CELER_SCHEDULED] = "SCHEDULED",
    [CELER_ACTIVE] = "ACTIVE",       [CELER_RETRYING] = "RETRYING",
    [CELER_SUCCEEDED] = "SUCCEEDED", [CELER_FAILED] = "FAILED",
    [CELER_EXPIRED] = "EXPIRED",     [CELER_CANCELED] = "CANCELED",
    [CELER_REJECTED] = "REJECTED",
};

const char *celer_state_name(celer_state s) {
  if ((unsigned)s >= CELER_STATE_COUNT) return "UNKNOWN";
  return state_names[s];
}

int celer_state_parse(const char *name, celer_state *out) {
  if (name == NULL) return CELER_EINVAL;
  for (int i = 0; i < CELER_STATE_COUNT; i++) {
    if (strcmp(name, state_names[i]) == 0) {
      *out = (celer_state)i;
      return 0;
    }
  }
  return CELER_EINVAL;
}

bool celer_state_is_final(celer_state s) {
  return s == CELER_SUCCEEDED || s == CELER_FAILED || s == CELER_EXPIRED ||
         s == CELER_CANCELED || s == CELER_REJECTED;
}

int celer_fmt(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  if (n < 0) {
    if (size) buf[0] = '\0';
    return CELER_EINVAL;
  }
  return (size_t)n >= size ? CELER_ETOOBIG : 0;
}

int celer_copy(char *dst, size_t size, const char *src) {
  if (src == NULL) src = "";
  size_t n = strnlen(src, size);
  int truncated = n == size;
  if (truncated) n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return truncated ? CELER_ETOOBIG : 0;
}
