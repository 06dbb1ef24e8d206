/* The lease table of one runner: entries fetched and not yet recorded.
 * The runner adds and removes; its upkeep thread reads it to renew the
 * leases. */
#include <stdlib.h>
#include <string.h>
#include "worker/worker.h"

int inflight_init(inflight *f, size_t cap) {
  memset(f, 0, sizeof *f);
  f->entries = calloc(cap ? cap : 1, sizeof *f->entries);
  if (f->entries == NULL) return CELER_ENOMEM;
  f->cap = cap ? cap : 1;
  pthread_mutex_init(&f->lock, NULL);
  return 0;
}

void inflight_free(inflight *f) {
  if (f->entries == NULL) return;
  pthread_mutex_destroy(&f->lock);
  free(f->entries);
  f->entries = NULL;
}

int inflight_add(inflight *f, size_t queue_index, const char *entry_id) {
  int rc = 0;
  pthread_mutex_lock(&f->lock);
  if (f->n == f->cap) {
    rc = CELER_ETOOBIG;
  } else {
    f->entries[f->n].queue_index = queue_index;
    strncpy(f->entries[f->n].entry_id, entry_id, sizeof f->entries[f->n].entry_id - 1);
    f->entries[f->n].entry_id[sizeof f->entries[f->n].entry_id - 1] = '\0';
    f->n++;
  }
  pthread_mutex_unlock(&f->lock);
  return rc;
}

void inflight_remove(inflight *f, const char *entry_id) {
  pthread_mutex_lock(&f->lock);
  for (size_t i = 0; i < f->n; i++) {
    if (strcmp(f->entries[i].entry_id, entry_id) == 0) {
      f->entries[i] = f->entries[--f->n];
      break;
    }
  }
  pthread_mutex_unlock(&f->lock);
}

size_t inflight_of_queue(inflight *f, size_t queue_index, char (*ids)[48], size_t max) {
  size_t k = 0;
  pthread_mutex_lock(&f->lock);
  for (size_t i = 0; i < f->n && k < max; i++)
    if (f->entries[i].queue_index == queue_index) memcpy(ids[k++], f->entries[i].entry_id, 48);
  pthread_mutex_unlock(&f->lock);
  return k;
}
