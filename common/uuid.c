#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include "common/common.h"

int celer_uuid4(char out[CELER_UUID_LEN + 1]) {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return CELER_EIO;
    }
    got += (size_t)n;
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(out, CELER_UUID_LEN + 1,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
           b[12], b[13], b[14], b[15]);
  return 0;
}

int64_t celer_jitter(int64_t n) {
  uint64_t v;
  if (n <= 0) return 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) return n;
  return (int64_t)(v % ((uint64_t)n + 1));
}
