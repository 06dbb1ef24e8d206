/* celer-worker: reads its flags and configuration, then hands over to the
 * supervisor. Exit codes: 0 after a requested stop, 1 children keep
 * crashing at start-up, 2 usage, configuration or module error, 3 the
 * broker refused us or could lose tasks. An unreachable broker is waited
 * for. */
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "broker/broker.h"
#include "client/sign.h"
#include "common/common.h"
#include "worker/worker.h"

/* Default lease: long enough for a busy broker round trip many times
 * over, short enough that a lost task is back within half a minute. */
#define WORKER_DEFAULT_LEASE_S 30
/* A lease shorter than a second would expire under ordinary pauses; longer
 * than a day hides lost tasks. */
#define WORKER_LEASE_MIN_MS 1000
#define WORKER_LEASE_MAX_MS (24 * 3600 * 1000)
/* Times a task's lease may expire (its worker crashed or hung) before the
 * task FAILS: a task that kills every worker that runs it must stop. */
#define WORKER_DEFAULT_MAX_REDELIVERIES 5
#define WORKER_MAX_REDELIVERIES_LIMIT 1000
/* A queue weight above this is a typo: it would starve the others. */
#define WORKER_WEIGHT_MAX 1000
/* Longest accepted time limit and shutdown grace: a day. */
#define WORKER_SECONDS_MAX 86400.0

static const char usage_text[] =
    "usage: celer-worker [options]\n"
    "Runs the tasks of the given queues in a pool of child processes.\n"
    "\n"
    "  --broker URL              redis://[[user]:password@]host[:port][/db] or\n"
    "                            unix:///path/redis.sock[?db=N] (CELER_BROKER_URL;\n"
    "                            default redis://127.0.0.1:6379/0)\n"
    "  --namespace NS            key prefix (CELER_NAMESPACE; default celer)\n"
    "  --queues Q1,Q2            queues in strict priority order, or Q1:6,Q2:1 for\n"
    "                            weighted order (default: default)\n"
    "  --concurrency N           child processes (default: number of CPUs)\n"
    "  --module NAME|PATH        load a task module (repeatable): testing, users,\n"
    "                            notify, or the path of a .so\n"
    "  --prefetch N              tasks a child takes per fetch, 1..1000 (default 1)\n"
    "  --lease SEC               a taken task not renewed for this long goes back\n"
    "                            to the queue (default 30)\n"
    "  --max-redeliveries N      lost leases before a task FAILS (default 5)\n"
    "  --time-limit SEC          hard limit on any one run (default: none beyond\n"
    "                            the task's or the envelope's timeout)\n"
    "  --max-tasks-per-child N   recycle a child after N tasks (default: never)\n"
    "  --max-memory-per-child MB recycle a child past this resident size\n"
    "  --shutdown-timeout SEC    grace for running tasks on SIGTERM (default 30)\n"
    "  --metrics-addr HOST:PORT  serve /metrics and /healthz (default: off)\n"
    "  --name NAME               worker name in records (default host:pid)\n"
    "  --config FILE             configuration file (CELER_CONFIG)\n"
    "  --keyring FILE            run only tasks signed by keys in FILE, as its policy\n"
    "                            allows (CELER_KEYRING_FILE; docs/security.md)\n"
    "  --log-level LEVEL         debug, info, warn or error (CELER_LOG_LEVEL)\n"
    "  --log-format FORMAT       text or json (CELER_LOG_FORMAT)\n"
    "  --log-file PATH           append logs there; SIGHUP reopens it\n"
    "  -h, --help                this text\n"
    "\n"
    "Signals: SIGTERM/SIGINT finish running tasks (within the shutdown timeout)\n"
    "and hand back the rest; a second one, or SIGQUIT, hands back at once.\n"
    "\n"
    "example: celer-worker --broker redis://127.0.0.1:6379/0 --module testing \\\n"
    "           --queues high:3,default:1 --concurrency 4 --metrics-addr 127.0.0.1:9187\n";

typedef struct worker_options {
  const char *broker, *ns, *queues, *name, *config, *log_level, *log_format, *keyring;
} worker_options;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "celer-worker: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\ntry 'celer-worker --help'\n");
  va_end(ap);
  return WORKER_EXIT_CONFIG;
}

/* Parses seconds (fractions allowed) in [min_s, WORKER_SECONDS_MAX] into ms. */
static int parse_seconds(const char *flag, const char *arg, double min_s, int64_t *ms) {
  char *end = NULL;
  double v = strtod(arg, &end);
  if (end == arg || *end != '\0' || !(v >= min_s) || v > WORKER_SECONDS_MAX)
    return usage_error("%s takes seconds from %g to %.0f, not '%s'", flag, min_s,
                       WORKER_SECONDS_MAX, arg);
  *ms = (int64_t)(v * 1000);
  return 0;
}

static int parse_count(const char *flag, const char *arg, int64_t min, int64_t max,
                       int64_t *out) {
  int64_t v;
  if (celer_parse_i64(arg, &v) != 0 || v < min || v > max)
    return usage_error("%s takes a whole number from %lld to %lld, not '%s'", flag,
                       (long long)min, (long long)max, arg);
  *out = v;
  return 0;
}

enum {
  OPT_BROKER = 256, OPT_NAMESPACE, OPT_QUEUES, OPT_CONCURRENCY, OPT_MODULE, OPT_PREFETCH,
  OPT_LEASE, OPT_REDELIVERIES, OPT_TIME_LIMIT, OPT_MAX_TASKS, OPT_MAX_MEMORY, OPT_SHUTDOWN,
  OPT_METRICS, OPT_NAME, OPT_CONFIG, OPT_LOG_LEVEL, OPT_LOG_FORMAT, OPT_LOG_FILE, OPT_KEYRING
};

static int parse_args(int argc, char **argv, worker_options *o, worker_config *cfg) {
  static const struct option longopts[] = {
      {"broker", required_argument, NULL, OPT_BROKER},
      {"namespace", required_argument, NULL, OPT_NAMESPACE},
      {"queues", required_argument, NULL, OPT_QUEUES},
      {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
      {"module", required_argument, NULL, OPT_MODULE},
      {"prefetch", required_argument, NULL, OPT_PREFETCH},
      {"lease", required_argument, NULL, OPT_LEASE},
      {"max-redeliveries", required_argument, NULL, OPT_REDELIVERIES},
      {"time-limit", required_argument, NULL, OPT_TIME_LIMIT},
      {"max-tasks-per-child", required_argument, NULL, OPT_MAX_TASKS},
      {"max-memory-per-child", required_argument, NULL, OPT_MAX_MEMORY},
      {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN},
      {"metrics-addr", required_argument, NULL, OPT_METRICS},
      {"name", required_argument, NULL, OPT_NAME},
      {"config", required_argument, NULL, OPT_CONFIG},
      {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
      {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
      {"log-file", required_argument, NULL, OPT_LOG_FILE},
      {"keyring", required_argument, NULL, OPT_KEYRING},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  opterr = 0;
  int c, rc = 0;
  int64_t v;
  while (rc == 0 && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
      case OPT_BROKER: o->broker = optarg; break;
      case OPT_NAMESPACE: o->ns = optarg; break;
      case OPT_QUEUES: o->queues = optarg; break;
      case OPT_NAME: o->name = optarg; break;
      case OPT_CONFIG: o->config = optarg; break;
      case OPT_LOG_LEVEL: o->log_level = optarg; break;
      case OPT_LOG_FORMAT: o->log_format = optarg; break;
      case OPT_LOG_FILE: cfg->log_file = optarg; break;
      case OPT_KEYRING: o->keyring = optarg; break;
      case OPT_METRICS: cfg->metrics_addr = optarg; break;
      case OPT_MODULE:
        if (cfg->nmodules == sizeof cfg->modules / sizeof cfg->modules[0])
          return usage_error("too many --module options");
        cfg->modules[cfg->nmodules++] = optarg;
        break;
      case OPT_CONCURRENCY:
        if ((rc = parse_count("--concurrency", optarg, 1, SUPERVISOR_CHILDREN_MAX, &v)) == 0)
          cfg->concurrency = (size_t)v;
        break;
      case OPT_PREFETCH:
        if ((rc = parse_count("--prefetch", optarg, 1, RUNNER_PREFETCH_MAX, &v)) == 0)
          cfg->prefetch = (int)v;
        break;
      case OPT_REDELIVERIES:
        rc = parse_count("--max-redeliveries", optarg, 0, WORKER_MAX_REDELIVERIES_LIMIT,
                         &cfg->max_redeliveries);
        break;
      case OPT_MAX_TASKS:
        if ((rc = parse_count("--max-tasks-per-child", optarg, 1, INT64_MAX, &v)) == 0)
          cfg->max_tasks_per_child = (uint64_t)v;
        break;
      case OPT_MAX_MEMORY:
        if ((rc = parse_count("--max-memory-per-child", optarg, 1, 1024 * 1024, &v)) == 0)
          cfg->max_rss_kb = v * 1024;
        break;
      case OPT_LEASE:
        rc = parse_seconds("--lease", optarg, WORKER_LEASE_MIN_MS / 1000.0, &cfg->lease_ms);
        break;
      case OPT_TIME_LIMIT: rc = parse_seconds("--time-limit", optarg, 0.001, &cfg->time_limit_ms); break;
      case OPT_SHUTDOWN:
        rc = parse_seconds("--shutdown-timeout", optarg, 0, &cfg->shutdown_timeout_ms);
        break;
      case 'h': fputs(usage_text, stdout); return -1;
      case ':': return usage_error("option %s needs a value", argv[optind - 1]);
      default: return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (rc != 0) return rc;
  if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
  return 0;
}

/* Splits "a,b" or "a:6,b:1" into cfg->queues (pointers into buf). */
static int parse_queues(char *buf, worker_config *cfg) {
  size_t n = 0;
  int weighted = -1;
  for (char *save = NULL, *q = strtok_r(buf, ",", &save); q; q = strtok_r(NULL, ",", &save)) {
    if (n == WORKER_QUEUES_MAX) return usage_error("more than %d queues", WORKER_QUEUES_MAX);
    char *colon = strchr(q, ':');
    int64_t w = 1;
    if (colon) {
      *colon = '\0';
      if (celer_parse_i64(colon + 1, &w) != 0 || w < 1 || w > WORKER_WEIGHT_MAX)
        return usage_error("queue weight '%s' is not a whole number from 1 to %d", colon + 1,
                           WORKER_WEIGHT_MAX);
    }
    if (weighted >= 0 && weighted != (colon != NULL))
      return usage_error("give every queue a weight (Q:N) or none");
    weighted = colon != NULL;
    if (strlen(q) > CELER_QUEUE_NAME_MAX || !celer_valid_queue_name(q))
      return usage_error("queue name '%s' is not 1 to 64 characters from [A-Za-z0-9_.-]", q);
    for (size_t i = 0; i < n; i++)
      if (strcmp(cfg->queues[i], q) == 0) return usage_error("queue '%s' is named twice", q);
    cfg->weights[n] = (int)w;
    cfg->queues[n++] = q;
  }
  if (n == 0) return usage_error("--queues names no queue");
  cfg->nqueues = n;
  cfg->weighted = weighted == 1;
  return 0;
}

/* Applies flags over the loaded configuration (flag > env > file). */
static int apply_settings(const worker_options *o, celer_config *conf, worker_config *cfg) {
  char err[CELER_ERRSTR_LEN];
  if ((o->broker && celer_config_replace(&conf->broker_url, o->broker) != 0) ||
      (o->ns && celer_config_set(conf, "CELER_NAMESPACE", o->ns, err, sizeof err) != 0) ||
      (o->log_level && celer_config_set(conf, "CELER_LOG_LEVEL", o->log_level, err, sizeof err) != 0) ||
      (o->log_format &&
       celer_config_set(conf, "CELER_LOG_FORMAT", o->log_format, err, sizeof err) != 0))
    return usage_error("%s", err);
  celer_log_configure(conf->log_format, conf->log_level);
  if (broker_url_parse(conf->broker_url, &cfg->url, err, sizeof err) != 0 ||
      (conf->password_file &&
       broker_url_read_password(conf->password_file, &cfg->url, err, sizeof err) != 0))
    return usage_error("%s", err);
  snprintf(cfg->ns, sizeof cfg->ns, "%s", conf->ns);
  cfg->result_ttl_ms = conf->result_ttl_s * 1000;
  cfg->max_payload = conf->max_payload;
  cfg->dead_max = conf->dead_max;
  cfg->dead_ttl_ms = conf->dead_ttl_s * 1000;
  return 0;
}

/* The producer's signing variables (CONTRACT "Signed tasks"), when set:
 * follow-ups that handlers enqueue are signed like any producer's task. */
static int load_signer(worker_config *cfg) {
  char err[CELER_ERRSTR_LEN];
  if (client_signer_from_env(&cfg->signer, err, sizeof err) != 0)
    return usage_error("%s", err);
  if (cfg->signer) celer_info("follow-ups are signed (CELER_SIGNING_KEY_FILE)");
  return 0;
}

/* Loads the keyring named by --keyring or CELER_KEYRING_FILE, if any. */
static int load_keyring(const worker_options *o, worker_config *cfg) {
  const char *path = o->keyring ? o->keyring : getenv("CELER_KEYRING_FILE");
  if (path == NULL || path[0] == '\0') return 0;
  char err[CELER_ERRSTR_LEN];
  if (keyring_load(path, &cfg->keyring, err, sizeof err) != 0) return usage_error("%s", err);
  celer_info("verifying signed tasks: %zu keys, %zu policy rules, unsigned tasks %s",
             cfg->keyring->nkeys, cfg->keyring->nrules,
             cfg->keyring->require_signed ? "refused" : "allowed");
  return 0;
}

static int name_worker(const worker_options *o, worker_config *cfg) {
  if (gethostname(cfg->host, sizeof cfg->host) != 0) strcpy(cfg->host, "localhost");
  cfg->host[sizeof cfg->host - 1] = '\0';
  if (o->name) {
    if (strlen(o->name) >= sizeof cfg->name || strpbrk(o->name, " #") || !*o->name)
      return usage_error("--name must be 1 to %zu characters without spaces or '#', not '%s'",
                         sizeof cfg->name - 1, o->name);
    snprintf(cfg->name, sizeof cfg->name, "%s", o->name);
  } else {
    snprintf(cfg->name, sizeof cfg->name, "%s:%ld", cfg->host, (long)getpid());
  }
  return 0;
}

int main(int argc, char **argv) {
  static worker_config cfg;
  worker_options o;
  memset(&o, 0, sizeof o);
  celer_log_set_program("celer-worker");
  celer_argv_hide_passwords(argc, argv);
  cfg.prefetch = 1;
  cfg.lease_ms = WORKER_DEFAULT_LEASE_S * 1000;
  cfg.max_redeliveries = WORKER_DEFAULT_MAX_REDELIVERIES;
  cfg.shutdown_timeout_ms = SUPERVISOR_SHUTDOWN_TIMEOUT_MS;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  cfg.concurrency = cpus > 0 ? (size_t)cpus : 1;
  int rc = parse_args(argc, argv, &o, &cfg);
  if (rc != 0) return rc < 0 ? 0 : rc;

  celer_config conf;
  char err[CELER_ERRSTR_LEN];
  if (celer_config_load(&conf, o.config, err, sizeof err) != 0) {
    celer_config_free(&conf);
    return usage_error("%s", err);
  }
  static char queues_buf[WORKER_QUEUES_MAX * (CELER_QUEUE_NAME_MAX + 8) + 1];
  if (o.queues && strlen(o.queues) >= sizeof queues_buf) rc = usage_error("--queues is too long");
  snprintf(queues_buf, sizeof queues_buf, "%s", o.queues ? o.queues : CELER_DEFAULT_QUEUE);
  if (rc == 0) rc = apply_settings(&o, &conf, &cfg);
  if (rc == 0) rc = load_keyring(&o, &cfg);
  if (rc == 0) rc = load_signer(&cfg);
  if (rc == 0) rc = parse_queues(queues_buf, &cfg);
  if (rc == 0) rc = name_worker(&o, &cfg);
  celer_config_free(&conf);
  if (rc == 0 && cfg.log_file) {
    worker_set_log_file(cfg.log_file);
    FILE *f = fopen(cfg.log_file, "a");
    if (f == NULL) rc = usage_error("--log-file %s cannot be opened", cfg.log_file);
    else fclose(f);
    if (rc == 0) worker_reopen_log();
  }
  if (rc == 0) rc = supervisor_run(&cfg);
  memset(&cfg.url, 0, sizeof cfg.url);
  keyring_free(cfg.keyring);
  client_signer_free(cfg.signer);
  return rc;
}
