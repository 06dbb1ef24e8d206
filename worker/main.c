/* celer-worker: loads task modules and runs the tasks of its queues.
 * Exit codes: 0 after a requested stop, 2 usage or configuration error,
 * 3 broker authentication refused. An unreachable broker is waited for. */
#include <getopt.h>
#include <stdbool.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "broker/broker.h"
#include "common/common.h"
#include "worker/worker.h"

/* Names a worker can have: host name, ':' and pid fit comfortably. */
#define WORKER_NAME_MAX 128
/* Queues one worker reads (the fetch command carries them all). */
#define WORKER_QUEUES_MAX 64
/* Modules named on one command line. */
#define WORKER_MODULES_MAX 32
/* Default lease: long enough for a busy broker round trip many times
 * over, short enough that a lost task is back within half a minute. */
#define WORKER_DEFAULT_LEASE_S 30
/* A lease shorter than a second would expire under ordinary GC pauses and
 * network hiccups; longer than a day hides lost tasks. */
#define WORKER_LEASE_MIN_MS 1000
#define WORKER_LEASE_MAX_MS (24 * 3600 * 1000)
/* Times a task's lease may expire (its worker crashed or hung) before the
 * task FAILS: a task that kills every worker that runs it must stop. */
#define WORKER_DEFAULT_MAX_REDELIVERIES 5
#define WORKER_MAX_REDELIVERIES_LIMIT 1000

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig) { stop_requested = sig; }

static const char usage_text[] =
    "usage: celer-worker [options]\n"
    "Runs the tasks of the given queues with the handlers of the given modules.\n"
    "\n"
    "  --broker URL          redis://[[user]:password@]host[:port][/db] or\n"
    "                        unix:///path/redis.sock[?db=N] (CELER_BROKER_URL)\n"
    "  --namespace NS        key prefix (CELER_NAMESPACE, default celer)\n"
    "  --queues Q1,Q2        queues to take tasks from, in priority order\n"
    "                        (default: default)\n"
    "  --module NAME|PATH    load a task module (repeatable): testing, or a .so\n"
    "  --prefetch N          tasks taken per fetch, 1..1000 (default 1)\n"
    "  --lease SEC           a taken task not renewed for this long goes back to\n"
    "                        the queue (default 30; renewed while it runs)\n"
    "  --max-redeliveries N  expired leases before a task FAILS (default 5)\n"
    "  --name NAME           worker name in records (default host:pid)\n"
    "  --config FILE         configuration file (CELER_CONFIG)\n"
    "  --log-level LEVEL     debug, info, warn or error (CELER_LOG_LEVEL)\n"
    "  --log-format FORMAT   text or json (CELER_LOG_FORMAT)\n"
    "  -h, --help            this text\n"
    "\n"
    "example: celer-worker --broker redis://127.0.0.1:6379/0 --module testing --queues default\n";

typedef struct worker_options {
  const char *broker, *ns, *queues, *name, *config, *log_level, *log_format;
  const char *modules[WORKER_MODULES_MAX];
  size_t nmodules;
  int prefetch;
  int64_t lease_ms;
  int64_t max_redeliveries;
} worker_options;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "celer-worker: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\ntry 'celer-worker --help'\n");
  va_end(ap);
  return 2;
}

static int parse_args(int argc, char **argv, worker_options *o) {
  static const struct option longopts[] = {
      {"broker", required_argument, NULL, 'b'},   {"namespace", required_argument, NULL, 'n'},
      {"queues", required_argument, NULL, 'q'},   {"module", required_argument, NULL, 'm'},
      {"prefetch", required_argument, NULL, 'p'}, {"name", required_argument, NULL, 'N'},
      {"config", required_argument, NULL, 'c'},   {"log-level", required_argument, NULL, 'l'},
      {"log-format", required_argument, NULL, 'f'}, {"help", no_argument, NULL, 'h'},
      {"lease", required_argument, NULL, 'L'},
      {"max-redeliveries", required_argument, NULL, 'R'},
      {NULL, 0, NULL, 0}};
  memset(o, 0, sizeof *o);
  o->prefetch = 1;
  o->lease_ms = WORKER_DEFAULT_LEASE_S * 1000;
  o->max_redeliveries = WORKER_DEFAULT_MAX_REDELIVERIES;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    int64_t v;
    switch (c) {
      case 'b': o->broker = optarg; break;
      case 'n': o->ns = optarg; break;
      case 'q': o->queues = optarg; break;
      case 'N': o->name = optarg; break;
      case 'c': o->config = optarg; break;
      case 'l': o->log_level = optarg; break;
      case 'f': o->log_format = optarg; break;
      case 'm':
        if (o->nmodules == WORKER_MODULES_MAX) return usage_error("too many --module options");
        o->modules[o->nmodules++] = optarg;
        break;
      case 'p':
        if (celer_parse_i64(optarg, &v) != 0 || v < 1 || v > RUNNER_PREFETCH_MAX)
          return usage_error("--prefetch takes a whole number from 1 to 1000, not '%s'", optarg);
        o->prefetch = (int)v;
        break;
      case 'L': {
        char *end = NULL;
        double s = strtod(optarg, &end);
        if (end == optarg || *end != '\0' || !(s * 1000 >= WORKER_LEASE_MIN_MS) ||
            s * 1000 > WORKER_LEASE_MAX_MS)
          return usage_error("--lease takes seconds from 1 to 86400, not '%s'", optarg);
        o->lease_ms = (int64_t)(s * 1000);
        break;
      }
      case 'R':
        if (celer_parse_i64(optarg, &v) != 0 || v > WORKER_MAX_REDELIVERIES_LIMIT)
          return usage_error("--max-redeliveries takes a whole number from 0 to %d, not '%s'",
                             WORKER_MAX_REDELIVERIES_LIMIT, optarg);
        o->max_redeliveries = v;
        break;
      case 'h': fputs(usage_text, stdout); return -1;
      case ':': return usage_error("option %s needs a value", argv[optind - 1]);
      default: return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
  return 0;
}

/* Splits "a,b" into names (pointers into buf). Returns the count or -1. */
static int split_queues(char *buf, const char **out) {
  int n = 0;
  for (char *save = NULL, *q = strtok_r(buf, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
    if (n == WORKER_QUEUES_MAX) return usage_error("more than %d queues", WORKER_QUEUES_MAX), -1;
    if (strlen(q) > CELER_QUEUE_NAME_MAX || !celer_valid_queue_name(q)) {
      usage_error("queue name '%s' is not 1 to 64 characters from [A-Za-z0-9_.-]", q);
      return -1;
    }
    for (int i = 0; i < n; i++)
      if (strcmp(out[i], q) == 0) return usage_error("queue '%s' is named twice", q), -1;
    out[n++] = q;
  }
  if (n == 0) return usage_error("--queues names no queue"), -1;
  return n;
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
  if (rc != 0) return true; /* the connection broke: the loop reconnects */
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

static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv) {
  worker_options o;
  install_signals(); /* first: a stop request during start-up is honoured */
  celer_log_set_program("celer-worker");
  int rc = parse_args(argc, argv, &o);
  if (rc != 0) return rc < 0 ? 0 : rc;

  char err[CELER_ERRSTR_LEN];
  celer_config cfg;
  if (celer_config_load(&cfg, o.config, err, sizeof err) != 0) {
    celer_config_free(&cfg);
    fprintf(stderr, "celer-worker: %s\n", err);
    return 2;
  }
  if ((o.broker && celer_config_replace(&cfg.broker_url, o.broker) != 0) ||
      (o.ns && celer_config_set(&cfg, "CELER_NAMESPACE", o.ns, err, sizeof err) != 0) ||
      (o.log_level && celer_config_set(&cfg, "CELER_LOG_LEVEL", o.log_level, err, sizeof err) != 0) ||
      (o.log_format &&
       celer_config_set(&cfg, "CELER_LOG_FORMAT", o.log_format, err, sizeof err) != 0)) {
    celer_config_free(&cfg);
    fprintf(stderr, "celer-worker: %s\n", err);
    return 2;
  }
  celer_log_configure(cfg.log_format, cfg.log_level);

  broker_url url;
  if (broker_url_parse(cfg.broker_url, &url, err, sizeof err) != 0 ||
      (cfg.password_file && broker_url_read_password(cfg.password_file, &url, err, sizeof err) != 0)) {
    celer_config_free(&cfg);
    fprintf(stderr, "celer-worker: %s\n", err);
    return 2;
  }

  char queues_buf[WORKER_QUEUES_MAX * (CELER_QUEUE_NAME_MAX + 1) + 1];
  const char *queues[WORKER_QUEUES_MAX];
  if (o.queues && strlen(o.queues) >= sizeof queues_buf) {
    celer_config_free(&cfg);
    return usage_error("--queues is too long");
  }
  snprintf(queues_buf, sizeof queues_buf, "%s", o.queues ? o.queues : CELER_DEFAULT_QUEUE);
  int nqueues = split_queues(queues_buf, queues);
  if (nqueues < 0) {
    celer_config_free(&cfg);
    return 2;
  }

  char name[WORKER_NAME_MAX + 1];
  if (o.name) {
    if (strlen(o.name) > WORKER_NAME_MAX || strchr(o.name, ' ')) {
      celer_config_free(&cfg);
      return usage_error("--name must be 1 to 128 characters without spaces, not '%s'", o.name);
    }
    snprintf(name, sizeof name, "%s", o.name);
  } else {
    char host[64];
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(name, sizeof name, "%s:%ld", host, (long)getpid());
  }

  celer_registry reg;
  registry_init(&reg);
  for (size_t i = 0; i < o.nmodules; i++) {
    if (module_load(&reg, o.modules[i], err, sizeof err) != 0) {
      celer_error("%s", err);
      registry_free(&reg);
      module_unload_all();
      celer_config_free(&cfg);
      return 2;
    }
  }
  registry_seal(&reg);
  if (reg.n == 0) celer_warn("no task registered: every task will be REJECTED (use --module)");

  broker_conn conn;
  broker_init(&conn, &url, cfg.ns, 0);
  conn.max_payload = cfg.max_payload;
  conn.dead_max = cfg.dead_max;
  conn.dead_ttl_ms = cfg.dead_ttl_s * 1000;
  runner_config rcfg = {.queues = queues,
                        .nqueues = (size_t)nqueues,
                        .name = name,
                        .prefetch = o.prefetch,
                        .result_ttl_ms = cfg.result_ttl_s * 1000,
                        .max_payload = (size_t)cfg.max_payload};
  upkeep_config ucfg = {.queues = queues,
                        .nqueues = (size_t)nqueues,
                        .name = name,
                        .lease_ms = o.lease_ms,
                        .max_redeliveries = o.max_redeliveries,
                        .result_ttl_ms = rcfg.result_ttl_ms};
  inflight held;
  upkeep keeper;
  runner r;
  int exit_code = 0;
  memset(&r, 0, sizeof r);
  memset(&held, 0, sizeof held);
  rc = upkeep_init(&keeper, &url, cfg.ns, &ucfg, &held);
  memset(&url, 0, sizeof url); /* the password now lives in the connections only */
  keeper.conn.dead_max = conn.dead_max;
  keeper.conn.dead_ttl_ms = conn.dead_ttl_ms;
  if (rc != 0 || inflight_init(&held, (size_t)o.prefetch) != 0 ||
      runner_init(&r, &conn, &reg, &rcfg, &stop_requested, &held, &keeper) != 0) {
    celer_error("out of resources at start-up");
    exit_code = 1;
    goto out;
  }
  char desc[512];
  broker_url_describe(&conn.url, desc, sizeof desc);
  rc = broker_connect(&conn);
  if (rc == CELER_EAUTH) {
    celer_error("%s", conn.errstr);
    exit_code = 3;
    goto out;
  }
  if (rc != 0) {
    celer_warn("%s; waiting for it", conn.errstr);
  } else if (!broker_is_safe(&conn)) {
    exit_code = 3;
    goto out;
  } else if ((rc = runner_prepare(&r)) != 0) {
    celer_warn("preparing queues: %s", conn.errstr);
  }
  if (upkeep_start(&keeper) != 0) {
    celer_error("cannot start the upkeep thread");
    exit_code = 1;
    goto out;
  }
  celer_info("worker %s ready: broker %s, namespace %s, %d queue(s) starting with %s, "
             "%zu task(s), prefetch %d, lease %lld ms", name, desc, cfg.ns, nqueues, queues[0],
             reg.n, rcfg.prefetch, (long long)o.lease_ms);
  runner_loop(&r);
  upkeep_stop(&keeper);
  celer_info("worker %s stopping on signal %d: %llu succeeded, %llu failed, %llu retried, "
             "%llu rejected, %llu expired, %llu canceled, %llu stale", name,
             (int)stop_requested, (unsigned long long)r.stats.succeeded,
             (unsigned long long)r.stats.failed, (unsigned long long)r.stats.retried,
             (unsigned long long)r.stats.rejected, (unsigned long long)r.stats.expired,
             (unsigned long long)r.stats.canceled, (unsigned long long)r.stats.stale);
out:
  upkeep_stop(&keeper);
  upkeep_free(&keeper);
  runner_free(&r);
  inflight_free(&held);
  broker_close(&conn);
  memset(&conn.url, 0, sizeof conn.url);
  registry_free(&reg);
  module_unload_all();
  celer_config_free(&cfg);
  return exit_code;
}
