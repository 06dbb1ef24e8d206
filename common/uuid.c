#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <pthread.h>
#include "common/common.h"

/* Task ids need uniqueness, not secrecy: a generator per thread seeded
 * from the kernel (xoshiro256**) saves a system call per id. A forked
 * child reseeds (the fork generation changes), so parent and child never
 * share a stream. */
static __thread uint64_t rng[4];
static __thread unsigned rng_generation; /* 0: never seeded */
static unsigned fork_generation = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_in_child(void) { fork_generation++; }
static void watch_forks(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static int rng_next(uint64_t *out) {
  pthread_once(&atfork_once, watch_forks);
  if (rng_generation != fork_generation) {
    size_t got = 0;
    unsigned char *p = (unsigned char *)rng;
    while (got < sizeof rng) {
      ssize_t n = getrandom(p + got, sizeof rng - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return CELER_EIO;
      got += (size_t)n;
    }
    rng_generation = fork_generation;
  }
  uint64_t result = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
  rng[2] ^= rng[0];
  rng[3] ^= rng[1];
  rng[1] ^= rng[2];
  rng[0] ^= rng[3];
  rng[2] ^= t;
  rng[3] = rotl(rng[3], 45);
  *out = result;
  return 0;
}

int celer_uuid4(char out[CELER_UUID_LEN + 1]) {
  uint64_t w[2];
  if (rng_next(&w[0]) != 0 || rng_next(&w[1]) != 0) return CELER_EIO;
  unsigned char b[16];
  memcpy(b, w, sizeof b);
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  static const char hex[] = "0123456789abcdef";
  char *o = out;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *o++ = '-';
    *o++ = hex[b[i] >> 4];
    *o++ = hex[b[i] & 15];
  }
  *o = '\0';
  return 0;
}

int64_t celer_jitter(int64_t n) {
  uint64_t v;
  if (n <= 0) return 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) return n;
  return (int64_t)(v % ((uint64_t)n + 1));
}
