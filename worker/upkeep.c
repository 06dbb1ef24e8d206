/* Upkeep: promoting due scheduled tasks, renewing the children's leases,
 * reclaiming expired ones and sending heartbeats (see worker.h). One tick
 * function does what is due and returns the time until the next piece of
 * work; a process of its own sleeps that long in poll() on the queues'
 * wake channels. (A process, not a thread: the supervisor stays single-
 * threaded, so the children it forks inherit no lock held elsewhere.) */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

int upkeep_init(upkeep *u, const broker_url *url, const char *ns, const upkeep_config *cfg) {
  memset(u, 0, sizeof *u);
  broker_init(&u->conn, url, ns, 0);
  broker_init(&u->sub, url, ns, 0);
  u->cfg = *cfg;
  u->next_promote = calloc(cfg->nqueues ? cfg->nqueues : 1, sizeof *u->next_promote);
  void *shared = mmap(NULL, sizeof *u->shared, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (u->next_promote == NULL || shared == MAP_FAILED) return CELER_ENOMEM;
  u->shared = shared;
  for (size_t q = 0; q < WORKER_QUEUES_MAX; q++)
    for (int k = 0; k < 3; k++) u->shared->depths[q][k] = -1;
  return 0;
}

void upkeep_free(upkeep *u) {
  broker_close(&u->conn);
  broker_close(&u->sub);
  memset(&u->conn.url, 0, sizeof u->conn.url);
  memset(&u->sub.url, 0, sizeof u->sub.url);
  free(u->next_promote);
  u->next_promote = NULL;
  if (u->shared) munmap(u->shared, sizeof *u->shared);
  u->shared = NULL;
}

/* Shared counters: written by the upkeep process, read by the supervisor. */
static void shared_add(uint64_t *field, uint64_t n) {
  __atomic_add_fetch(field, n, __ATOMIC_RELAXED);
}

static void shared_set(int64_t *field, int64_t v) { __atomic_store_n(field, v, __ATOMIC_RELAXED); }

static int64_t shared_get(const int64_t *field) {
  return __atomic_load_n(field, __ATOMIC_RELAXED);
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
  /* A promote is a broker round trip at least once a second: while they
   * succeed, the broker is reachable (the health check reads this). */
  shared_add(&u->shared->promoted, (uint64_t)moved);
  shared_set(&u->shared->last_ok_mono, now);
  if (moved == UPKEEP_PROMOTE_BATCH) return now; /* more are due already */
  int64_t delay = next < 0 ? UPKEEP_PROMOTE_MAX_MS : next - broker_now;
  if (delay > UPKEEP_PROMOTE_MAX_MS) delay = UPKEEP_PROMOTE_MAX_MS;
  return now + (delay > 0 ? delay : 0);
}

/* Renews the leases of every entry the children hold, whatever their
 * handlers are doing. */
static int refresh(upkeep *u) {
  slot_held *held = malloc(RUNNER_PREFETCH_MAX * sizeof *held);
  const char **ids = malloc(RUNNER_PREFETCH_MAX * sizeof *ids);
  int rc = held && ids ? 0 : CELER_ENOMEM;
  for (size_t i = 0; rc == 0 && i < u->cfg.nslots; i++) {
    slot_run run;
    slot_read_run(&u->cfg.slots[i], &run);
    if (run.pid <= 0) continue;
    size_t n = slot_read_held(&u->cfg.slots[i], held, RUNNER_PREFETCH_MAX);
    for (size_t q = 0; rc == 0 && q < u->cfg.nqueues; q++) {
      size_t k = 0;
      for (size_t j = 0; j < n; j++)
        if (held[j].queue_index == q) ids[k++] = held[j].entry_id;
      if (k == 0) continue;
      int renewed = 0;
      rc = broker_refresh(&u->conn, u->cfg.queues[q], u->cfg.slots[i].consumer, ids, k,
                          &renewed);
      u->renewed += (uint64_t)renewed;
    }
  }
  free(held);
  free(ids);
  if (rc != 0) celer_warn("renewing leases: %s", u->conn.errstr);
  return rc;
}

/* The registry entry of this worker (JSON), from the children's slots. */
static char *registry_entry(upkeep *u, size_t *len) {
  uint64_t busy = 0, processed = 0, failed = 0;
  int64_t last_fetch = 0;
  size_t children = 0;
  for (size_t i = 0; i < u->cfg.nslots; i++) {
    slot_run run;
    slot_counters c;
    slot_read_run(&u->cfg.slots[i], &run);
    slot_read_counters(&u->cfg.slots[i], &c);
    if (run.pid > 0) children++;
    busy += run.busy;
    if (run.last_fetch_mono > last_fetch) last_fetch = run.last_fetch_mono;
    for (size_t q = 0; q < u->cfg.nqueues; q++) {
      for (int st = CELER_SUCCEEDED; st < CELER_STATE_COUNT; st++) processed += c.by_state[q][st];
      failed += c.by_state[q][CELER_FAILED];
    }
  }
  json_t *queues = json_array();
  for (size_t q = 0; queues && q < u->cfg.nqueues; q++)
    json_array_append_new(queues, json_string(u->cfg.queues[q]));
  int64_t now = celer_now_ms();
  json_t *doc = json_pack(
      "{sssssIsosIsIsIsIsIsIsIsI}", "name", u->cfg.name, "host", u->cfg.host, "pid",
      (json_int_t)u->cfg.pid, "queues", queues ? queues : json_array(), "concurrency",
      (json_int_t)u->cfg.nslots, "children", (json_int_t)children, "busy", (json_int_t)busy,
      "processed", (json_int_t)processed, "failed", (json_int_t)failed, "started_at",
      (json_int_t)u->cfg.started_at, "last_heartbeat", (json_int_t)now, "last_fetch",
      (json_int_t)(last_fetch ? now - (celer_mono_ms() - last_fetch) : 0));
  char *out = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(doc);
  if (out) *len = strlen(out);
  return out;
}

/* Heartbeat into the worker registry, and fresh queue depths for /metrics. */
static int heartbeat(upkeep *u) {
  size_t len = 0;
  char *entry = registry_entry(u, &len);
  if (entry == NULL) return CELER_ENOMEM;
  int rc = broker_heartbeat(&u->conn, u->cfg.name, entry, len);
  free(entry);
  /* Workers killed without a goodbye stay listed (as stale) for a while,
   * then go. */
  if (rc == 0) rc = broker_prune_workers(&u->conn, celer_now_ms() - UPKEEP_REGISTRY_KEEP_MS);
  for (size_t q = 0; rc == 0 && q < u->cfg.nqueues; q++) {
    int64_t d[4];
    if ((rc = broker_queue_depths(&u->conn, u->cfg.queues[q], d)) != 0) break;
    shared_set(&u->shared->depths[q][0], d[0]);
    shared_set(&u->shared->depths[q][1], d[2]);
    shared_set(&u->shared->depths[q][2], d[3]);
  }
  if (rc != 0) celer_warn("heartbeat: %s", u->conn.errstr);
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
  outcome_sink sink = {&u->conn, u->cfg.name, u->cfg.consumer, u->cfg.result_ttl_ms};
  int outcome = 0;
  if (outcome_complete(&sink, e, queue, id, decoded ? &env : NULL, &res, &outcome) == 0) {
    shared_add(&u->shared->lost, 1);
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
    int redelivered = 0;
    int rc = broker_reclaim(&u->conn, u->cfg.queues[q], u->cfg.consumer, u->cfg.lease_ms,
                            UPKEEP_RECLAIM_BATCH, u->cfg.max_redeliveries, &redelivered, &lost,
                            &n);
    if (rc == 0 && redelivered > 0) {
      shared_add(&u->shared->reclaimed, (uint64_t)redelivered);
      celer_info("%d task(s) of %s whose lease expired are back in the queue", redelivered,
                 u->cfg.queues[q]);
    }
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
  if (u->next_heartbeat <= now) {
    u->next_heartbeat = now + (heartbeat(u) == 0 ? UPKEEP_HEARTBEAT_MS : UPKEEP_RETRY_MS);
  }
  if (u->next_heartbeat < next) next = u->next_heartbeat;
  if (u->next_refresh < next) next = u->next_refresh;
  if (u->next_reclaim < next) next = u->next_reclaim;
  if (broker_fd(&u->sub) < 0 && u->next_subscribe < next) next = u->next_subscribe;
  int64_t wait = next - celer_mono_ms();
  return wait > 0 ? wait : 0;
}

static volatile sig_atomic_t upkeep_stop_requested;

static void on_upkeep_stop(int sig) { upkeep_stop_requested = sig; }

static void on_upkeep_hup(int sig) {
  (void)sig;
  worker_reopen_log();
}

/* The upkeep process: ticks until SIGTERM, then leaves the registry. */
static void upkeep_main(upkeep *u, pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(WORKER_EXIT_FAILURE);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_upkeep_stop;
  sigaction(SIGTERM, &sa, NULL);
  /* Ctrl-C reaches the whole process group: upkeep keeps renewing leases
   * through the supervisor's grace period and stops when it says so. */
  sa.sa_handler = SIG_IGN;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGPIPE, &sa, NULL);
  sa.sa_handler = on_upkeep_hup;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_flags = 0;
  sa.sa_handler = SIG_DFL;
  sigaction(SIGCHLD, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  celer_log_set_program("celer-worker[upkeep]");
  while (!upkeep_stop_requested) {
    int64_t wait = upkeep_tick(u);
    struct pollfd p = {broker_fd(&u->sub), POLLIN, 0};
    /* A signal interrupts the wait: the loop then sees the stop request. */
    int n = poll(&p, p.fd >= 0 ? 1 : 0, (int)wait);
    if (n <= 0 || p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    if (broker_drain_messages(&u->sub) < 0) broker_close(&u->sub);
    /* News of a delayed task: look at every queue now. */
    int64_t now = celer_mono_ms();
    for (size_t q = 0; q < u->cfg.nqueues; q++) u->next_promote[q] = now;
  }
  /* Leave the registry: a stopped worker is not a stale one. */
  if (broker_unregister_worker(&u->conn, u->cfg.name) != 0)
    celer_warn("leaving the worker registry: %s", u->conn.errstr);
  upkeep_free(u);
  exit(WORKER_EXIT_OK);
}

int upkeep_start(upkeep *u) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return CELER_ENOMEM;
  if (pid == 0) upkeep_main(u, parent);
  u->pid = pid;
  return 0;
}

void upkeep_stop(upkeep *u) {
  if (u->pid <= 0) return;
  kill(u->pid, SIGTERM);
  /* It finishes the broker call under way (bounded by the request
   * deadline); past that it is killed, and its leases simply expire. */
  int64_t deadline = celer_mono_ms() + 2 * BROKER_DEFAULT_TIMEOUT_MS;
  int status;
  while (waitpid(u->pid, &status, WNOHANG) == 0) {
    if (celer_mono_ms() > deadline) {
      kill(u->pid, SIGKILL);
      waitpid(u->pid, &status, 0);
      break;
    }
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  u->pid = 0;
}

void upkeep_snapshot(upkeep *u, upkeep_view *out) {
  for (size_t q = 0; q < WORKER_QUEUES_MAX; q++)
    for (int k = 0; k < 3; k++) out->depths[q][k] = shared_get(&u->shared->depths[q][k]);
  out->last_ok_mono = shared_get(&u->shared->last_ok_mono);
  out->promoted = __atomic_load_n(&u->shared->promoted, __ATOMIC_RELAXED);
  out->reclaimed = __atomic_load_n(&u->shared->reclaimed, __ATOMIC_RELAXED);
  out->lost = __atomic_load_n(&u->shared->lost, __ATOMIC_RELAXED);
}
