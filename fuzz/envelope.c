/* Fuzz target: the envelope decoder, the first code every byte a producer
 * writes meets. Property: what decodes encodes, and decodes again to the
 * same id, task and queue. */
#include <stdlib.h>
#include <string.h>
#include "celer/envelope.h"
#include "fuzz/fuzz.h"

/* Small enough that the fuzzer reaches the size checks too. */
#define FUZZ_ENVELOPE_MAX_PAYLOAD 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  celer_envelope env, again;
  celer_envelope_error err;
  celer_envelope_init(&again);
  int rc = celer_envelope_decode((const char *)data, size, FUZZ_ENVELOPE_MAX_PAYLOAD, NULL, &env,
                                 &err);
  if (rc == 0) {
    char *json = NULL;
    size_t len = 0;
    /* Encoding may grow the text (escapes), so it gets a larger limit. */
    if (celer_envelope_encode(&env, 0, &json, &len, &err) != 0) abort();
    if (celer_envelope_decode(json, len, 0, NULL, &again, &err) != 0) abort();
    if (strcmp(env.id, again.id) != 0 || strcmp(env.task, again.task) != 0 ||
        strcmp(env.queue, again.queue) != 0)
      abort();
    free(json);
  }
  celer_envelope_clear(&env);
  celer_envelope_clear(&again);
  return 0;
}
