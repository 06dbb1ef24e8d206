/* The supervisor: forks the children that run tasks and never runs task
 * code itself. On a libev loop it watches children (restarting them with
 * backoff), enforces hard time limits, turns a child's death mid-task into
 * a recorded failure at once, shuts down gracefully, and serves /metrics
 * and /healthz. Its upkeep thread promotes scheduled tasks, renews the
 * children's leases, reclaims expired ones and sends heartbeats.
 *
 * Child states, by slot: empty (pid 0, waiting for a restart timer),
 * starting (pid set, not ready), ready (running tasks), stopping (sent
 * SIGTERM or SIGKILL by a shutdown or a time limit). */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

/* Per-slot bookkeeping only the supervisor keeps. */
typedef struct child {
  size_t index;
  pid_t pid;
  int64_t started_mono;
  int failures;              /* consecutive deaths before ready / quick crashes */
  bool killed_for_time;      /* the supervisor SIGKILLed it for its limit */
  ev_timer restart;
  struct supervisor *sup;
} child;

typedef struct supervisor {
  worker_config *cfg;
  struct ev_loop *loop;
  worker_slot *slots;
  child *children;
  size_t n;
  broker_conn conn;          /* the loop's own: records crashes, hands back */
  upkeep keeper;
  http_server *http;
  ev_signal sig_term, sig_int, sig_quit, sig_hup;
  ev_child watch;
  ev_timer limits, shutdown, keeper_restart;
  int stopping;              /* 0 running, 1 graceful, 2 immediate */
  int exit_code;
  int64_t started_mono;
  uint64_t child_starts, child_crashes, time_limit_kills;
} supervisor;

static char log_path[4096];

void worker_set_log_file(const char *path) {
  snprintf(log_path, sizeof log_path, "%s", path ? path : "");
}

void worker_reopen_log(void) {
  if (log_path[0] == '\0') return;
  int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return;
  dup2(fd, 2);
  close(fd);
}

static void start_child(supervisor *s, child *c);

static size_t live_children(const supervisor *s) {
  size_t n = 0;
  for (size_t i = 0; i < s->n; i++) n += s->children[i].pid > 0;
  return n;
}

/* Hands back every entry the slot's consumer still holds, in every queue:
 * runnable elsewhere at once instead of after the lease. */
static void hand_back_all(supervisor *s, worker_slot *slot) {
  for (size_t q = 0; q < s->cfg->nqueues; q++) {
    int count = 0;
    if (broker_handback(&s->conn, s->cfg->queues[q], slot->consumer, NULL, 0, &count) != 0)
      celer_warn("handing back the tasks of %s: %s (they return after the lease)",
                 slot->consumer, s->conn.errstr);
    else if (count > 0)
      celer_info("handed back %d task(s) of %s held by %s", count, s->cfg->queues[q],
                 slot->consumer);
  }
}

/* Describes how a child ended: "SIGSEGV", "exit status 3". */
static void describe_status(int status, char *buf, size_t size) {
  if (WIFSIGNALED(status)) {
    const char *abbrev = sigabbrev_np(WTERMSIG(status));
    if (abbrev) snprintf(buf, size, "SIG%s", abbrev);
    else snprintf(buf, size, "signal %d", WTERMSIG(status));
  } else {
    snprintf(buf, size, "exit status %d", WEXITSTATUS(status));
  }
}

/* Records the run a child was in when it died, by the task's own retry
 * policy (published by the child in its slot when the run began). */
static void record_lost_run(supervisor *s, child *c, const slot_run *run, int status) {
  const char *queue = s->cfg->queues[run->queue_index < s->cfg->nqueues ? run->queue_index : 0];
  broker_entry *e = NULL;
  if (broker_read_entry(&s->conn, queue, run->entry_id, &e) != 0) {
    celer_log(CELER_LOG_WARN, run->task_id, "cannot read the entry of a lost run: %s",
              s->conn.errstr);
    return;
  }
  celer_envelope env;
  celer_envelope_init(&env);
  if (celer_envelope_decode(e->payload, e->payload_len, 0, queue, &env, NULL) != 0) {
    /* The child decoded it before running it: it cannot fail now. */
    celer_envelope_clear(&env);
    broker_entries_free(e, 1);
    return;
  }
  env.attempt = run->attempt;
  e->queue_index = run->queue_index;
  char how[32];
  describe_status(status, how, sizeof how);
  run_result res;
  memset(&res, 0, sizeof res);
  int64_t ran = celer_mono_ms() - run->started_mono;
  res.finished_at = celer_now_ms();
  res.started_at = res.finished_at - ran;
  if (c->killed_for_time)
    outcome_set(&res, CELER_FAILED, "TimeLimitExceeded",
                "killed after running %lld ms, past its time limit of %lld ms", (long long)ran,
                (long long)(run->deadline_mono - run->started_mono));
  else
    outcome_set(&res, CELER_FAILED, "WorkerCrash", "worker process crashed: %s", how);
  outcome_sink sink = {&s->conn, s->cfg->name, s->slots[c->index].consumer, s->cfg->result_ttl_ms};
  int outcome = 0, rc;
  if (run->attempt < run->max_retries) {
    res.state = CELER_RETRYING;
    res.retry_delay_ms = outcome_backoff(&run->backoff, run->attempt);
    rc = outcome_retry(&sink, e, queue, env.id, &env, &res, &outcome);
  } else {
    if (run->max_retries > 0) {
      size_t len = strlen(res.error_message);
      celer_fmt(res.error_message + len, sizeof res.error_message - len,
                " (gave up after %lld retries)", (long long)run->attempt);
    }
    rc = outcome_complete(&sink, e, queue, env.id, &env, &res, &outcome);
  }
  if (rc == 0 && outcome == BROKER_RECORDED && run->queue_index < WORKER_QUEUES_MAX) {
    /* The child is gone and its replacement not yet forked: the slot's
     * counters are the supervisor's to add to. */
    worker_slot *slot = &s->slots[c->index];
    slot_write_begin(slot);
    slot->counters.by_state[run->queue_index][res.state]++;
    slot_write_end(slot);
  }
  if (rc != 0)
    celer_log(CELER_LOG_ERROR, env.id, "recording a lost run: %s", s->conn.errstr);
  else
    celer_log(CELER_LOG_WARN, env.id, "%s %s: %s: %s", env.task,
              celer_state_name(res.state), res.error_type, res.error_message);
  celer_envelope_clear(&env);
  broker_entries_free(e, 1);
}

static void stop_loop_if_done(supervisor *s) {
  if (s->stopping && live_children(s) == 0) ev_break(s->loop, EVBREAK_ALL);
}

static void on_restart(struct ev_loop *loop, ev_timer *w, int revents) {
  child *c = w->data;
  if (c->sup->stopping == 0) start_child(c->sup, c);
}

/* Arms the restart of a child after `delay_ms`. */
static void schedule_restart(supervisor *s, child *c, int64_t delay_ms) {
  ev_timer_set(&c->restart, (double)delay_ms / 1000.0, 0.);
  ev_timer_start(s->loop, &c->restart);
}

static void on_child_exit(struct ev_loop *loop, ev_child *w, int revents) {
  supervisor *s = w->data;
  if (w->rpid == s->keeper.pid) {
    s->keeper.pid = 0;
    if (!s->stopping) {
      char how[32];
      describe_status(w->rstatus, how, sizeof how);
      celer_error("the upkeep process died (%s); starting it again", how);
      ev_timer_start(s->loop, &s->keeper_restart);
    }
    return;
  }
  child *c = NULL;
  for (size_t i = 0; i < s->n; i++)
    if (s->children[i].pid == w->rpid) c = &s->children[i];
  if (c == NULL) return;
  worker_slot *slot = &s->slots[c->index];
  slot_run run;
  slot_read_run(slot, &run);
  int status = w->rstatus;
  c->pid = 0;
  char how[32];
  describe_status(status, how, sizeof how);
  /* Exiting 0 in the middle of a run (a handler called exit) is a crash
   * for the task, not a recycling. */
  bool clean = WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_OK && !run.busy;

  if (s->stopping) {
    /* Whatever it still held goes back at once, started or not. */
    if (!clean) celer_info("child %zu stopped (%s)", c->index, how);
    hand_back_all(s, slot);
  } else if (clean) {
    /* Recycled (task count or memory): it handed back what it had. */
    celer_info("child %zu recycled after %llu task(s)", c->index,
               (unsigned long long)run.tasks_done);
    c->failures = 0;
  } else if (!run.ready && WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_CONFIG) {
    celer_error("child %zu cannot start (see above); stopping", c->index);
    s->exit_code = WORKER_EXIT_CONFIG;
  } else {
    s->child_crashes++;
    if (c->killed_for_time) s->time_limit_kills++;
    if (run.busy && run.ready) record_lost_run(s, c, &run, status);
    else if (!c->killed_for_time) celer_warn("child %zu died (%s) while idle", c->index, how);
    hand_back_all(s, slot);
    bool quick = !run.ready || celer_mono_ms() - c->started_mono < SUPERVISOR_STABLE_MS;
    c->failures = quick ? c->failures + 1 : 0;
    if (!run.ready && c->failures >= SUPERVISOR_START_FAILURES_MAX) {
      celer_error("child %zu died %d times before it was ready (%s); giving up", c->index,
                  c->failures, how);
      s->exit_code = WORKER_EXIT_FAILURE;
    }
  }
  c->killed_for_time = false;
  slot_write_begin(slot);
  memset(&slot->run, 0, sizeof slot->run);
  slot->nheld = 0;
  slot_write_end(slot);

  if (s->exit_code != WORKER_EXIT_OK && !s->stopping) {
    s->stopping = 2;
    for (size_t i = 0; i < s->n; i++)
      if (s->children[i].pid > 0) kill(s->children[i].pid, SIGKILL);
  }
  if (s->stopping) {
    stop_loop_if_done(s);
    return;
  }
  int64_t delay = 0;
  if (c->failures > 0) {
    delay = SUPERVISOR_RESTART_FIRST_MS;
    for (int i = 1; i < c->failures && delay < SUPERVISOR_RESTART_CAP_MS; i++) delay *= 2;
    if (delay > SUPERVISOR_RESTART_CAP_MS) delay = SUPERVISOR_RESTART_CAP_MS;
  }
  schedule_restart(s, c, delay);
}

static void start_child(supervisor *s, child *c) {
  worker_slot *slot = &s->slots[c->index];
  slot_write_begin(slot);
  memset(&slot->run, 0, sizeof slot->run);
  slot->nheld = 0;
  slot_write_end(slot);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    celer_error("cannot fork child %zu: %s; trying again", c->index, strerror(errno));
    schedule_restart(s, c, SUPERVISOR_RESTART_CAP_MS);
    return;
  }
  if (pid == 0) child_main(s->cfg, slot, parent, c->index);
  slot_write_begin(slot);
  slot->run.pid = pid;
  slot_write_end(slot);
  c->pid = pid;
  c->started_mono = celer_mono_ms();
  s->child_starts++;
}

/* Kills busy children past their hard time limit. */
static void on_limits(struct ev_loop *loop, ev_timer *w, int revents) {
  supervisor *s = w->data;
  int64_t now = celer_mono_ms();
  for (size_t i = 0; i < s->n; i++) {
    child *c = &s->children[i];
    if (c->pid <= 0 || c->killed_for_time) continue;
    slot_run run;
    slot_read_run(&s->slots[i], &run);
    if (run.busy && run.deadline_mono > 0 && now > run.deadline_mono) {
      celer_log(CELER_LOG_WARN, run.task_id, "%s passed its time limit: killing child %zu",
                run.task, i);
      c->killed_for_time = true;
      kill(c->pid, SIGKILL);
    }
  }
}

static void begin_stop(supervisor *s, int how) {
  if (s->stopping >= how) return;
  s->stopping = how;
  ev_timer_stop(s->loop, &s->limits);
  for (size_t i = 0; i < s->n; i++) ev_timer_stop(s->loop, &s->children[i].restart);
  for (size_t i = 0; i < s->n; i++)
    if (s->children[i].pid > 0) kill(s->children[i].pid, how == 2 ? SIGKILL : SIGTERM);
  if (how == 1) {
    celer_info("stopping: running tasks may finish within %lld ms",
               (long long)s->cfg->shutdown_timeout_ms);
    ev_timer_set(&s->shutdown, (double)s->cfg->shutdown_timeout_ms / 1000.0, 0.);
    ev_timer_start(s->loop, &s->shutdown);
  } else {
    celer_info("stopping now: unfinished tasks are handed back");
  }
  stop_loop_if_done(s);
}

static void on_keeper_restart(struct ev_loop *loop, ev_timer *w, int revents) {
  supervisor *s = w->data;
  if (!s->stopping && s->keeper.pid == 0 && upkeep_start(&s->keeper) != 0)
    ev_timer_start(loop, w);
}

static void on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents) {
  supervisor *s = w->data;
  celer_warn("shutdown timeout: handing back the tasks still running");
  begin_stop(s, 2);
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents) {
  supervisor *s = w->data;
  /* A second SIGTERM (or SIGINT) acts as SIGQUIT. */
  begin_stop(s, s->stopping ? 2 : 1);
}

static void on_quit(struct ev_loop *loop, ev_signal *w, int revents) {
  begin_stop(w->data, 2);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents) {
  supervisor *s = w->data;
  worker_reopen_log();
  for (size_t i = 0; i < s->n; i++)
    if (s->children[i].pid > 0) kill(s->children[i].pid, SIGHUP);
  if (s->keeper.pid > 0) kill(s->keeper.pid, SIGHUP);
  celer_info("log file reopened");
}

/* Healthy: upkeep reached the broker lately, and no idle child is stuck. */
static bool healthy(supervisor *s, const upkeep_view *v, const slot_run *runs) {
  int64_t now = celer_mono_ms();
  if (now - s->started_mono > SUPERVISOR_BROKER_STALE_MS &&
      now - v->last_ok_mono > SUPERVISOR_BROKER_STALE_MS)
    return false;
  for (size_t i = 0; i < s->n; i++) {
    if (runs[i].pid <= 0 || !runs[i].ready || runs[i].busy) continue;
    int64_t since = runs[i].last_fetch_mono ? runs[i].last_fetch_mono : s->started_mono;
    if (now - since > SUPERVISOR_FETCH_STALL_MS) return false;
  }
  return true;
}

static void on_http(void *ctx, const char *path, http_response *out) {
  supervisor *s = ctx;
  slot_run *runs = calloc(s->n, sizeof *runs);
  slot_counters *counters = calloc(s->n, sizeof *counters);
  if (runs == NULL || counters == NULL) {
    free(runs);
    free(counters);
    out->status = 500;
    return;
  }
  for (size_t i = 0; i < s->n; i++) {
    slot_read_run(&s->slots[i], &runs[i]);
    slot_read_counters(&s->slots[i], &counters[i]);
  }
  upkeep_view v;
  upkeep_snapshot(&s->keeper, &v);
  bool ok = healthy(s, &v, runs);
  if (strcmp(path, "/healthz") == 0) {
    const char *text = ok ? "ok\n" : "unhealthy: the broker is unreachable or a child is stuck\n";
    out->status = ok ? 200 : 503;
    out->content_type = "text/plain; charset=utf-8";
    out->body = strdup(text);
    out->len = out->body ? strlen(out->body) : 0;
  } else if (strcmp(path, "/metrics") == 0) {
    metrics_input m;
    memset(&m, 0, sizeof m);
    m.worker = s->cfg->name;
    m.queues = s->cfg->queues;
    m.nqueues = s->cfg->nqueues;
    m.runs = runs;
    m.counters = counters;
    m.nslots = s->n;
    for (size_t q = 0; q < s->cfg->nqueues; q++) {
      m.ready[q] = v.depths[q][0];
      m.scheduled[q] = v.depths[q][1];
      m.dead[q] = v.depths[q][2];
    }
    m.child_starts = s->child_starts;
    m.child_crashes = s->child_crashes;
    m.time_limit_kills = s->time_limit_kills;
    m.reclaimed = v.reclaimed;
    m.lost = v.lost;
    m.promoted = v.promoted;
    m.uptime_s = (celer_mono_ms() - s->started_mono) / 1000;
    m.healthy = ok;
    out->status = 200;
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    out->body = metrics_render(&m, &out->len);
    if (out->body == NULL) out->status = 500;
  } else {
    out->status = 404;
    out->content_type = "text/plain; charset=utf-8";
    out->body = strdup("not found: try /metrics or /healthz\n");
    out->len = out->body ? strlen(out->body) : 0;
  }
  free(runs);
  free(counters);
}

/* A broker that may evict keys under memory pressure can drop queued
 * tasks without a trace: refuse it. Returns false after logging why. */
static bool broker_is_safe(broker_conn *conn) {
  char policy[64];
  int64_t maxmemory = 0;
  int rc = broker_eviction(conn, policy, sizeof policy, &maxmemory);
  if (rc == CELER_EAUTH || rc == CELER_EPROTO) {
    celer_warn("cannot read the broker's maxmemory-policy (%s); make sure it is noeviction",
               conn->errstr);
    return true;
  }
  if (rc != 0) return true; /* the connection broke: children wait for it */
  if (strncmp(policy, "allkeys-", 8) == 0) {
    celer_error("the broker's maxmemory-policy is %s: under memory pressure Redis would evict "
                "queued tasks. Set maxmemory-policy noeviction (or a volatile-* policy)",
                policy);
    return false;
  }
  if (strncmp(policy, "volatile-", 9) == 0 && maxmemory > 0)
    celer_warn("the broker's maxmemory-policy is %s: result records (which have a TTL) may be "
               "evicted under memory pressure; noeviction keeps them", policy);
  return true;
}

/* Connects the loop's own connection and checks the broker; 0, or an exit
 * code. An unreachable broker is waited for (children reconnect). */
static int check_broker(supervisor *s) {
  int rc = broker_connect(&s->conn);
  if (rc == CELER_EAUTH) {
    celer_error("%s", s->conn.errstr);
    return WORKER_EXIT_BROKER;
  }
  if (rc != 0) {
    celer_warn("%s; waiting for it", s->conn.errstr);
    return 0;
  }
  if (!broker_is_safe(&s->conn)) return WORKER_EXIT_BROKER;
  for (size_t q = 0; q < s->cfg->nqueues; q++)
    if (broker_ensure_group(&s->conn, s->cfg->queues[q]) != 0)
      celer_warn("preparing queue %s: %s", s->cfg->queues[q], s->conn.errstr);
  return 0;
}

static void watch_signals(supervisor *s) {
  ev_signal_init(&s->sig_term, on_term, SIGTERM);
  ev_signal_init(&s->sig_int, on_term, SIGINT);
  ev_signal_init(&s->sig_quit, on_quit, SIGQUIT);
  ev_signal_init(&s->sig_hup, on_hup, SIGHUP);
  ev_signal *all[4] = {&s->sig_term, &s->sig_int, &s->sig_quit, &s->sig_hup};
  for (int i = 0; i < 4; i++) {
    all[i]->data = s;
    ev_signal_start(s->loop, all[i]);
  }
  signal(SIGPIPE, SIG_IGN);
}

int supervisor_run(worker_config *cfg) {
  supervisor s;
  memset(&s, 0, sizeof s);
  s.cfg = cfg;
  s.n = cfg->concurrency;
  s.started_mono = celer_mono_ms();
  s.loop = ev_default_loop(EVFLAG_AUTO);
  if (s.loop == NULL) {
    celer_error("cannot create the event loop");
    return WORKER_EXIT_FAILURE;
  }
  s.slots = slots_map(s.n);
  s.children = calloc(s.n, sizeof *s.children);
  if (s.slots == NULL || s.children == NULL) {
    celer_error("cannot allocate %zu child slots", s.n);
    free(s.children);
    slots_unmap(s.slots, s.n);
    return WORKER_EXIT_FAILURE;
  }
  watch_signals(&s);
  broker_init(&s.conn, &cfg->url, cfg->ns, 0);
  s.conn.dead_max = cfg->dead_max;
  s.conn.dead_ttl_ms = cfg->dead_ttl_ms;
  int rc = check_broker(&s);
  char reclaimer[SLOT_CONSUMER_MAX + 1];
  snprintf(reclaimer, sizeof reclaimer, "%s#upkeep", cfg->name);
  upkeep_config ucfg = {.queues = cfg->queues,
                        .nqueues = cfg->nqueues,
                        .name = cfg->name,
                        .host = cfg->host,
                        .pid = getpid(),
                        .started_at = celer_now_ms(),
                        .consumer = reclaimer,
                        .lease_ms = cfg->lease_ms,
                        .max_redeliveries = cfg->max_redeliveries,
                        .result_ttl_ms = cfg->result_ttl_ms,
                        .slots = s.slots,
                        .nslots = s.n};
  bool keeper_ok = false;
  if (rc == 0 && (rc = upkeep_init(&s.keeper, &cfg->url, cfg->ns, &ucfg)) != 0) {
    celer_error("cannot prepare upkeep");
    rc = WORKER_EXIT_FAILURE;
  }
  if (rc == 0) {
    s.keeper.conn.dead_max = cfg->dead_max;
    s.keeper.conn.dead_ttl_ms = cfg->dead_ttl_ms;
    keeper_ok = true;
  }
  char err[CELER_ERRSTR_LEN];
  if (rc == 0 && cfg->metrics_addr &&
      http_server_start(s.loop, cfg->metrics_addr, on_http, &s, &s.http, err, sizeof err) != 0) {
    celer_error("--metrics-addr %s: %s", cfg->metrics_addr, err);
    rc = WORKER_EXIT_CONFIG;
  }
  if (rc == 0 && upkeep_start(&s.keeper) != 0) {
    celer_error("cannot start the upkeep thread");
    rc = WORKER_EXIT_FAILURE;
  }
  if (rc == 0) {
    ev_child_init(&s.watch, on_child_exit, 0, 0);
    s.watch.data = &s;
    ev_child_start(s.loop, &s.watch);
    ev_timer_init(&s.limits, on_limits, SUPERVISOR_LIMIT_CHECK_MS / 1000.0,
                  SUPERVISOR_LIMIT_CHECK_MS / 1000.0);
    s.limits.data = &s;
    ev_timer_start(s.loop, &s.limits);
    ev_timer_init(&s.shutdown, on_shutdown_timeout, 0., 0.);
    s.shutdown.data = &s;
    ev_timer_init(&s.keeper_restart, on_keeper_restart, SUPERVISOR_RESTART_CAP_MS / 1000.0 / 10,
                  0.);
    s.keeper_restart.data = &s;
    for (size_t i = 0; i < s.n; i++) {
      child *c = &s.children[i];
      c->index = i;
      c->sup = &s;
      ev_timer_init(&c->restart, on_restart, 0., 0.);
      c->restart.data = c;
      celer_fmt(s.slots[i].consumer, sizeof s.slots[i].consumer, "%s#%zu", cfg->name, i);
      start_child(&s, c);
    }
    char desc[512];
    broker_url_describe(&cfg->url, desc, sizeof desc);
    celer_info("worker %s ready: broker %s, namespace %s, %zu queue(s) starting with %s, "
               "%zu children, prefetch %d, lease %lld ms", cfg->name, desc, cfg->ns,
               cfg->nqueues, cfg->queues[0], s.n, cfg->prefetch, (long long)cfg->lease_ms);
    if (s.http) celer_info("metrics and health on port %d", http_server_port(s.http));
    ev_run(s.loop, 0);
    rc = s.exit_code;
  }
  if (keeper_ok) {
    upkeep_stop(&s.keeper);
    upkeep_free(&s.keeper);
  }
  http_server_stop(s.http);
  broker_close(&s.conn);
  memset(&s.conn.url, 0, sizeof s.conn.url);
  celer_info("worker %s stopped: %llu child start(s), %llu crash(es), %llu time-limit kill(s)",
             cfg->name, (unsigned long long)s.child_starts, (unsigned long long)s.child_crashes,
             (unsigned long long)s.time_limit_kills);
  free(s.children);
  slots_unmap(s.slots, s.n);
  ev_loop_destroy(s.loop);
  return rc;
}
