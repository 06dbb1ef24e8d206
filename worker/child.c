/* A worker child: loads the task modules, connects, and runs tasks until
 * it is told to stop or is due for recycling. It inherits nothing it uses
 * from the supervisor but its configuration and its slot. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

static volatile sig_atomic_t child_stop;

static void on_stop(int sig) { child_stop = sig; }

static void on_hup(int sig) {
  (void)sig;
  worker_reopen_log();
}

/* The supervisor's loop blocks or redirects signals; a child starts from
 * plain dispositions and an empty mask. */
static void reset_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  /* Restart: a stop request or a log rotation must not make a running
   * handler's read or write fail with EINTR. */
  sa.sa_flags = SA_RESTART;
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_hup;
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_flags = 0;
  sa.sa_handler = SIG_DFL;
  sigaction(SIGQUIT, &sa, NULL);
  sigaction(SIGCHLD, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Closes every descriptor above stderr: the supervisor's broker
 * connections, the metrics listener, the event loop's own. */
static void close_inherited(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return;
  int self = dirfd(d);
  struct dirent *e;
  int fds[1024];
  size_t n = 0;
  while ((e = readdir(d)) != NULL && n < sizeof fds / sizeof fds[0]) {
    int fd = atoi(e->d_name);
    if (fd > 2 && fd != self) fds[n++] = fd;
  }
  closedir(d);
  for (size_t i = 0; i < n; i++) close(fds[i]);
}

void child_main(const worker_config *cfg, worker_slot *slot, pid_t parent, size_t index) {
  /* A child never outlives its supervisor: nobody would renew its leases
   * or record its crashes. (Checked again in case it died already.) */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(WORKER_EXIT_FAILURE);
  reset_signals();
  close_inherited();
  char program[48];
  snprintf(program, sizeof program, "celer-worker[child %zu]", index);
  celer_log_set_program(strdup(program));

  celer_registry reg;
  registry_init(&reg);
  char err[CELER_ERRSTR_LEN];
  for (size_t i = 0; i < cfg->nmodules; i++) {
    if (module_load(&reg, cfg->modules[i], err, sizeof err) != 0) {
      celer_error("%s", err);
      _exit(WORKER_EXIT_CONFIG);
    }
  }
  registry_seal(&reg);

  broker_conn conn;
  broker_init(&conn, &cfg->url, cfg->ns, 0);
  conn.max_payload = cfg->max_payload;
  conn.dead_max = cfg->dead_max;
  conn.dead_ttl_ms = cfg->dead_ttl_ms;
  runner_config rcfg = {.queues = cfg->queues,
                        .weights = cfg->weighted ? cfg->weights : NULL,
                        .nqueues = cfg->nqueues,
                        .name = cfg->name,
                        .consumer = slot->consumer,
                        .prefetch = cfg->prefetch,
                        .time_limit_ms = cfg->time_limit_ms,
                        .max_tasks = cfg->max_tasks_per_child,
                        .max_rss_kb = cfg->max_rss_kb,
                        .result_ttl_ms = cfg->result_ttl_ms,
                        .max_payload = (size_t)cfg->max_payload,
                        .keyring = cfg->keyring,
                        .signer = cfg->signer};
  runner r;
  if (runner_init(&r, &conn, &reg, &rcfg, &child_stop, slot) != 0) {
    celer_error("out of memory starting a child");
    _exit(WORKER_EXIT_FAILURE);
  }
  if (broker_connect(&conn) == 0) runner_prepare(&r);
  slot_write_begin(slot);
  slot->run.ready = true;
  slot_write_end(slot);
  runner_loop(&r);
  runner_free(&r);
  broker_close(&conn);
  registry_free(&reg);
  module_unload_all();
  exit(WORKER_EXIT_OK);
}
