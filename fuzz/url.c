/* Fuzz target: the broker URL parser (broker/url.c). Property: the
 * description meant for logs never holds the password. */
#include <stdlib.h>
#include <string.h>
#include "broker/broker.h"
#include "fuzz/fuzz.h"

/* Longer than any valid URL, so the length checks are reached. */
#define FUZZ_URL_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > FUZZ_URL_MAX) return 0;
  char *text = malloc(size + 1);
  if (text == NULL) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  broker_url u;
  char err[256];
  if (broker_url_parse(text, &u, err, sizeof err) == 0 && u.password[0] != '\0') {
    char shown[1024], needle[BROKER_PASSWORD_MAX + 4];
    broker_url_describe(&u, shown, sizeof shown);
    snprintf(needle, sizeof needle, ":%s@", u.password);
    if (strcmp(u.password, "***") != 0 && strstr(shown, needle) != NULL) abort();
  }
  free(text);
  return 0;
}
