/* Upkeep: promoting due scheduled tasks, renewing held leases and
 * reclaiming expired ones (see worker.h). One tick function does what is
 * due and returns the time until the next piece of work; a thread sleeps
 * that long in poll() on a wake pipe and the queues' wake channels. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

int upkeep_init(upkeep *u, const broker_url *url, const char *ns, const upkeep_config *cfg,
                inflight *held) {
  memset(u, 0, sizeof *u);
  u->wake[0] = u->wake[1] = -1;
  broker_init(&u->conn, url, ns, 0);
  broker_init(&u->sub, url, ns, 0);
  u->cfg = *cfg;
  u->held = held;
  u->next_promote = calloc(cfg->nqueues ? cfg->nqueues : 1, sizeof *u->next_promote);
  if (u->next_promote == NULL) return CELER_ENOMEM;
  if (pipe2(u->wake, O_NONBLOCK | O_CLOEXEC) != 0) return CELER_EIO;
  return 0;
}

void upkeep_free(upkeep *u) {
  broker_close(&u->conn);
  broker_close(&u->sub);
  memset(&u->conn.url, 0, sizeof u->conn.url);
  memset(&u->sub.url, 0, sizeof u->sub.url);
  free(u->next_promote);
  u->next_promote = NULL;
  for (int i = 0; i < 2; i++)
    if (u->wake[i] >= 0) close(u->wake[i]);
  u->wake[0] = u->wake[1] = -1;
}

void upkeep_wake(upkeep *u) {
  char byte = 1;
  /* A full pipe already holds a wake-up: nothing is lost. */
  ssize_t n = write(u->wake[1], &byte, 1);
  (void)n;
}

/* Moves due scheduled tasks of queue q into its stream; returns when to
 * look again (mono ms). */
static int64_t promote(upkeep *u, size_t q, int64_t now) {
  int moved = 0;
  int64_t next = -1, broker_now = 0;
  if (broker_promote(&u->conn, u->cfg.queues[q], UPKEEP_PROMOTE_BATCH, &moved, &next,
                     &broker_now) != 0) {
    celer_warn("promoting scheduled tasks of %s: %s", u->cfg.queues[q], u->conn.errstr);
    return now + UPKEEP_RETRY_MS;
  }
  u->promoted += (uint64_t)moved;
  if (moved == UPKEEP_PROMOTE_BATCH) return now; /* more are due already */
  int64_t delay = next < 0 ? UPKEEP_PROMOTE_MAX_MS : next - broker_now;
  if (delay > UPKEEP_PROMOTE_MAX_MS) delay = UPKEEP_PROMOTE_MAX_MS;
  return now + (delay > 0 ? delay : 0);
}

/* Renews the leases of every held entry. */
static int refresh(upkeep *u) {
  char (*ids)[48] = malloc(RUNNER_PREFETCH_MAX * sizeof *ids);
  if (ids == NULL) return CELER_ENOMEM;
  int rc = 0;
  for (size_t q = 0; q < u->cfg.nqueues && rc == 0; q++) {
    size_t n = inflight_of_queue(u->held, q, ids, RUNNER_PREFETCH_MAX);
    if (n == 0) continue;
    const char *argv[RUNNER_PREFETCH_MAX];
    for (size_t i = 0; i < n; i++) argv[i] = ids[i];
    int renewed = 0;
    rc = broker_refresh(&u->conn, u->cfg.queues[q], u->cfg.name, argv, n, &renewed);
    u->renewed += (uint64_t)renewed;
  }
  free(ids);
  if (rc != 0) celer_warn("renewing leases: %s", u->conn.errstr);
  return rc;
}

/* Records a task whose lease expired more often than allowed as FAILED
 * (and dead-letters it); the reclaim made this worker its holder. */
static void record_lost(upkeep *u, const char *queue, const broker_entry *e) {
  celer_envelope env;
  celer_envelope_init(&env);
  char id[CELER_ID_MAX + 1];
  snprintf(id, sizeof id, "%s", e->entry_id);
  bool decoded = celer_envelope_decode(e->payload, e->payload_len, 0, queue, &env, NULL) == 0;
  if (decoded) {
    snprintf(id, sizeof id, "%s", env.id);
    if (e->has_attempt) env.attempt = e->attempt;
  }
  run_result res;
  memset(&res, 0, sizeof res);
  outcome_set(&res, CELER_FAILED, "LeaseExpired",
              "the task's worker was lost %lld times (its lease of %lld ms expired each "
              "time); not trying again",
              (long long)e->redeliveries, (long long)u->cfg.lease_ms);
  outcome_sink sink = {&u->conn, u->cfg.name, u->cfg.result_ttl_ms};
  int outcome = 0;
  if (outcome_complete(&sink, e, queue, id, decoded ? &env : NULL, &res, &outcome) == 0) {
    u->lost++;
    celer_log(CELER_LOG_WARN, id, "%s FAILED: %s", decoded ? env.task : "task",
              res.error_message);
  } else {
    celer_warn("recording lost task %s: %s", id, u->conn.errstr);
  }
  celer_envelope_clear(&env);
}

/* Reclaims expired leases of every queue. */
static int reclaim(upkeep *u) {
  for (size_t q = 0; q < u->cfg.nqueues; q++) {
    broker_entry *lost = NULL;
    size_t n = 0;
    int rc = broker_reclaim(&u->conn, u->cfg.queues[q], u->cfg.name, u->cfg.lease_ms,
                            UPKEEP_RECLAIM_BATCH, u->cfg.max_redeliveries, &lost, &n);
    if (rc != 0) {
      celer_warn("reclaiming expired leases of %s: %s", u->cfg.queues[q], u->conn.errstr);
      return rc;
    }
    for (size_t i = 0; i < n; i++) record_lost(u, u->cfg.queues[q], &lost[i]);
    broker_entries_free(lost, n);
  }
  return 0;
}

/* (Re)subscribes to the wake channels; on failure tries again later. */
static void subscribe(upkeep *u, int64_t now) {
  if (broker_fd(&u->sub) >= 0) return;
  if (now < u->next_subscribe) return;
  if (broker_connect(&u->sub) != 0 ||
      broker_subscribe_wake(&u->sub, u->cfg.queues, u->cfg.nqueues) != 0) {
    broker_close(&u->sub);
    u->next_subscribe = now + UPKEEP_RETRY_MS;
    return;
  }
  /* Anything scheduled while we were not listening: look now. */
  for (size_t q = 0; q < u->cfg.nqueues; q++) u->next_promote[q] = now;
}

int64_t upkeep_tick(upkeep *u) {
  int64_t now = celer_mono_ms();
  subscribe(u, now);
  int64_t next = now + UPKEEP_PROMOTE_MAX_MS;
  for (size_t q = 0; q < u->cfg.nqueues; q++) {
    if (u->next_promote[q] <= now) u->next_promote[q] = promote(u, q, now);
    if (u->next_promote[q] < next) next = u->next_promote[q];
  }
  if (u->next_refresh <= now) {
    /* Three renewals per lease: one may be lost to a slow broker. */
    u->next_refresh = now + (refresh(u) == 0 ? u->cfg.lease_ms / 3 : UPKEEP_RETRY_MS);
  }
  if (u->next_reclaim <= now) {
    u->next_reclaim = now + (reclaim(u) == 0 ? u->cfg.lease_ms / 2 : UPKEEP_RETRY_MS);
  }
  if (u->next_refresh < next) next = u->next_refresh;
  if (u->next_reclaim < next) next = u->next_reclaim;
  if (broker_fd(&u->sub) < 0 && u->next_subscribe < next) next = u->next_subscribe;
  int64_t wait = next - celer_mono_ms();
  return wait > 0 ? wait : 0;
}

static void drain_pipe(int fd) {
  char buf[64];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

static void *upkeep_main(void *arg) {
  upkeep *u = arg;
  while (!u->stop) {
    int64_t wait = upkeep_tick(u);
    struct pollfd p[2] = {{u->wake[0], POLLIN, 0}, {broker_fd(&u->sub), POLLIN, 0}};
    int n = poll(p, p[1].fd >= 0 ? 2 : 1, (int)wait);
    if (n <= 0) continue;
    bool news = false;
    if (p[0].revents & POLLIN) {
      drain_pipe(u->wake[0]);
      news = true;
    }
    if (p[1].fd >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (broker_drain_messages(&u->sub) < 0) broker_close(&u->sub);
      news = true;
    }
    if (news) {
      int64_t now = celer_mono_ms();
      for (size_t q = 0; q < u->cfg.nqueues; q++) u->next_promote[q] = now;
    }
  }
  return NULL;
}

int upkeep_start(upkeep *u) {
  if (pthread_create(&u->thread, NULL, upkeep_main, u) != 0) return CELER_ENOMEM;
  u->running = true;
  return 0;
}

void upkeep_stop(upkeep *u) {
  if (!u->running) return;
  u->stop = 1;
  upkeep_wake(u);
  pthread_join(u->thread, NULL);
  u->running = false;
}
