/* Shared-memory slots: the child writes, the supervisor reads. A sequence
 * counter makes the reads consistent without a lock a dying child could
 * leave held: the child makes it odd before a change and even after; a
 * reader retries while it is odd or changed under it. */
#include <string.h>
#include <sys/mman.h>
#include "worker/worker.h"

const double slot_duration_bounds[SLOT_DURATION_BUCKETS] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60};

worker_slot *slots_map(size_t n) {
  void *p = mmap(NULL, n * sizeof(worker_slot), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void slots_unmap(worker_slot *slots, size_t n) {
  if (slots) munmap(slots, n * sizeof(worker_slot));
}

void slot_write_begin(worker_slot *s) {
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void slot_write_end(worker_slot *s) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  __atomic_add_fetch(&s->seq, 1, __ATOMIC_RELEASE);
}

/* Copies size bytes at field of s consistently. A child killed while
 * writing leaves the counter odd forever: after a bounded number of tries
 * the copy is taken as it is (the child is gone; its slot is reset). */
#define SLOT_READ_TRIES 1000

static void read_consistent(const worker_slot *s, const void *field, void *out, size_t size) {
  for (int i = 0; i < SLOT_READ_TRIES; i++) {
    uint32_t before = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    if (before & 1u) continue;
    memcpy(out, field, size);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == before) return;
  }
  memcpy(out, field, size);
}

void slot_read_run(const worker_slot *s, slot_run *out) {
  read_consistent(s, &s->run, out, sizeof *out);
}

void slot_read_counters(const worker_slot *s, slot_counters *out) {
  read_consistent(s, &s->counters, out, sizeof *out);
}

size_t slot_read_held(const worker_slot *s, slot_held *out, size_t max) {
  for (int i = 0; i < SLOT_READ_TRIES; i++) {
    uint32_t before = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    if (before & 1u) continue;
    size_t n = s->nheld < max ? s->nheld : max;
    memcpy(out, s->held, n * sizeof *out);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == before) return n;
  }
  return 0;
}
