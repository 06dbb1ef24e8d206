/* Fuzz target: the config file parser (common/config.c) and, with the
 * first byte odd, the keyring parser (worker/keyring.c). The config file
 * is handed over through a memfd, the way a real file is read. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "common/common.h"
#include "fuzz/fuzz.h"
#include "worker/verify.h"

static void config_input(const uint8_t *data, size_t size) {
  static int fd = -1;
  if (fd < 0 && (fd = memfd_create("celer-fuzz-config", 0)) < 0) abort();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
  char path[64];
  celer_fmt(path, sizeof path, "/proc/self/fd/%d", fd);
  celer_config cfg;
  char err[CELER_ERRSTR_LEN];
  celer_config_load(&cfg, path, err, sizeof err);
  celer_config_free(&cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1) {
    celer_keyring *kr = NULL;
    char err[CELER_ERRSTR_LEN];
    /* Key files are looked up in a directory that does not exist. */
    keyring_parse((const char *)data + 1, size - 1, "/nonexistent", &kr, err, sizeof err);
    keyring_free(kr);
  } else {
    config_input(data + 1, size - 1);
  }
  return 0;
}
