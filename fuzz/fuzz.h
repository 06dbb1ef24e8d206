/* libFuzzer entry points of Celer's parsers (fuzz/README.md). Each target
 * file defines LLVMFuzzerTestOneInput; built with clang's -fsanitize=fuzzer
 * it is a fuzzer (`make fuzz`), linked with replay.c it replays a corpus
 * under any compiler (the `fuzz_replay_*` tests of `make test`). */
#ifndef CELER_FUZZ_H
#define CELER_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs one input; always returns 0 (libFuzzer's convention). A finding
 * is a crash or a sanitizer report, or abort() on a broken property. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
