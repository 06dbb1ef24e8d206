/* Feeds every file of the directories (or files) named on the command
 * line to the target's LLVMFuzzerTestOneInput, once each: the seed corpus
 * as a regression test, under whatever sanitizers the build has. Exit 0
 * after all of them, 1 when a file cannot be read or none was given. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz/fuzz.h"

/* No seed is larger; a bigger file is a mistake in the tree. */
#define REPLAY_FILE_MAX (4 * 1024 * 1024)

static int replay_file(const char *path, size_t *count) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return 1;
  }
  uint8_t *buf = malloc(REPLAY_FILE_MAX);
  size_t n = buf ? fread(buf, 1, REPLAY_FILE_MAX, f) : 0;
  fclose(f);
  if (buf == NULL) return 1;
  /* An exact-size copy, so that reading past the input is caught. */
  uint8_t *input = malloc(n ? n : 1);
  if (input == NULL) {
    free(buf);
    return 1;
  }
  memcpy(input, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(input, n);
  free(input);
  (*count)++;
  return 0;
}

static int replay_path(const char *path, size_t *count) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "replay: no such file or directory: %s\n", path);
    return 1;
  }
  if (!S_ISDIR(st.st_mode)) return replay_file(path, count);
  struct dirent **names = NULL;
  int n = scandir(path, &names, NULL, alphasort);
  if (n < 0) return 1;
  int rc = 0;
  for (int i = 0; i < n; i++) {
    if (names[i]->d_name[0] != '.') {
      char full[4096];
      snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name);
      rc |= replay_file(full, count);
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  size_t count = 0;
  int rc = 0;
  for (int i = 1; i < argc; i++) rc |= replay_path(argv[i], &count);
  printf("replayed %zu inputs\n", count);
  return rc || count == 0 ? 1 : 0;
}
