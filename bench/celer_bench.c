/* celer-bench: Celer's benchmark (issue 5). It starts a private
 * redis-server on a Unix socket (or uses --broker), runs the real
 * celer-worker and libceler through the workloads below, and reports the
 * median and the min-max spread over repetitions, Redis CPU per task
 * (INFO cpu deltas), worker CPU per task (getrusage of the reaped worker
 * tree) and the worker's peak memory, as a table and as a JSON report.
 *
 *   enqueue   N tasks, one celer_enqueue per task, then celer_enqueue_batch
 *   drain     N tasks queued first, then a worker: first start to last finish
 *   latency   an idle worker, one task at a time at a fixed rate (and again
 *             with test.mark, its handler start seen through inotify)
 *   schedule  tasks with an eta spread over a few seconds: lateness
 *   ceiling   the Redis commands of a task's life without Celer, pipelined;
 *             redis-benchmark PING and SET as the machine's reference
 *
 * Nothing waits a fixed time except the pacing of latency; every wait is a
 * poll with a deadline, and a dead worker or a timeout ends the run with a
 * message and exit status 1. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include "broker/broker.h"
#include "celer/client.h"
#include "harness/harness.h"

#ifndef CELER_BENCH_VERSION
#define CELER_BENCH_VERSION "unknown"
#endif

#define BENCH_REPEAT_MAX 50
#define BENCH_ROWS_MAX 64
/* Supervisor, upkeep and up to 256 children (SUPERVISOR_CHILDREN_MAX). */
#define BENCH_PROCS_MAX 300
/* Memory sampling period: often enough for a steady worker, rarely enough
 * that reading smaps_rollup does not take a visible share of 2 cores. */
#define BENCH_SAMPLE_MS 50
/* Period of the polls that wait for a condition (each one has a deadline). */
#define BENCH_POLL_MS 5
#define BENCH_STOP_DEADLINE_MS 60000
/* Records read per pipelined round trip. */
#define BENCH_RECORD_CHUNK 1000
/* Tasks run through a fresh worker before latency and schedule measure. */
#define BENCH_WARMUP 20
#define BENCH_TASKS_MAX 100000000LL

#define DEF_ENQUEUE_TASKS 20000
#define DEF_DRAIN_TASKS 20000
#define DEF_LATENCY_TASKS 2000
#define DEF_SCHEDULE_TASKS 1000
#define DEF_CEILING_TASKS 200000

enum { W_ENQUEUE = 1, W_DRAIN = 2, W_LATENCY = 4, W_SCHEDULE = 8, W_CEILING = 16 };

typedef char task_id[CELER_ID_MAX + 1];

typedef struct bench_opts {
  int64_t tasks; /* 0 = each workload's default */
  int64_t batch;
  int repeat;
  int concurrency;
  int prefetch;
  int best_prefetch;
  double rate;
  int64_t payload;
  const char *task;
  int64_t lead_ms, spread_ms;
  int64_t ceiling_tasks;
  int pipeline;
  int timeout_s;
  const char *broker;
  const char *json_path;
  const char *worker;
  const char *redis_cpus, *worker_cpus, *client_cpus; /* NULL = not pinned */
} bench_opts;

/* One value per repetition; NaN = not measured. */
typedef struct series {
  double v[BENCH_REPEAT_MAX];
  int n;
} series;

/* Per-task costs of one run; NaN = does not apply. */
typedef struct resources {
  double redis_us, worker_us, client_us, rss_mib, pss_mib;
} resources;

typedef struct row {
  char workload[16];
  char measure[112];
  char unit[16];
  int decimals;
  bool resources; /* the resource columns belong to this row */
  series value, redis_us, worker_us, client_us, rss_mib, pss_mib;
} row;

typedef struct proc_seen {
  pid_t pid;
  unsigned long long start;
  double cpu_ms;
} proc_seen;

/* A celer-worker started as our direct child, and what we saw of it. */
typedef struct worker_proc {
  pid_t pid;
  bool reaped;
  int status;
  char name[64];
  char log[PATH_MAX];
  struct rusage before;
  pthread_t sampler;
  bool sampler_on;
  int sampling;
  double peak_rss_kib, peak_pss_kib;
  bool pss_ok;
  int peak_procs;
  bool exec_seen; /* the spawned child has become celer-worker */
  int64_t readers_before; /* blocked XREADGROUP clients before the spawn */
  proc_seen seen[BENCH_PROCS_MAX];
  int nseen;
} worker_proc;

typedef struct bench {
  bench_opts o;
  harness_redis redis;
  bool own_redis;
  char url[PATH_MAX + 64];
  char ns[CELER_NAMESPACE_MAX + 1];
  char tmpdir[HARNESS_DIR_MAX];
  char worker_bin[PATH_MAX + 32];
  char redis_version[32];
  broker_url burl;
  broker_conn ctl;
  json_t *args; /* the payload, or NULL */
  row rows[BENCH_ROWS_MAX];
  size_t nrows;
  json_t *runs;
  double idle_cpu_ms, idle_rss_mib;
  bool rb_missing;
  cpu_set_t redis_set, worker_set, home_set; /* home: the bench's own */
  worker_proc *live; /* the worker running now, killed after a failure */
} bench;

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
  (void)sig;
  g_interrupted = 1;
}

/* ---- messages ---- */

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("celer-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return -1;
}

static void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void progress(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("  ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* Prints the last `lines` lines of a file, indented, to stderr. */
static void print_tail(const char *path, int lines) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return;
  char buf[16384];
  long start = 0;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    start = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
  }
  fseek(f, start, SEEK_SET);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  if (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  char *p = buf + n;
  int seen = 0;
  while (p > buf && seen < lines) {
    p--;
    if (*p == '\n') seen++;
  }
  if (*p == '\n') p++;
  for (char *save = NULL, *line = strtok_r(p, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save))
    fprintf(stderr, "  | %s\n", line);
}

/* ---- clocks ---- */

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t mono_ms(void) { return mono_ns() / 1000000; }

static int64_t wall_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_ms(void) { return wall_us() / 1000; }

/* The pause between two checks of a polled condition. */
static void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static double rusage_us(const struct rusage *ru) {
  return (double)ru->ru_utime.tv_sec * 1e6 + (double)ru->ru_utime.tv_usec +
         (double)ru->ru_stime.tv_sec * 1e6 + (double)ru->ru_stime.tv_usec;
}

static double thread_cpu_us(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return NAN;
  return rusage_us(&ru);
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[n]. */
static double pct(const double *v, size_t n, double p) {
  if (n == 0) return NAN;
  size_t rank = (size_t)ceil(p / 100.0 * (double)n);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return v[rank - 1];
}

static json_t *jnum(double v) { return isnan(v) || isinf(v) ? json_null() : json_real(v); }

/* Sorts v in place and describes it. */
static json_t *dist_json(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += v[i];
  json_t *o = json_object();
  json_object_set_new(o, "count", json_integer((json_int_t)n));
  json_object_set_new(o, "mean", jnum(n ? sum / (double)n : NAN));
  json_object_set_new(o, "min", jnum(n ? v[0] : NAN));
  json_object_set_new(o, "p50", jnum(pct(v, n, 50)));
  json_object_set_new(o, "p90", jnum(pct(v, n, 90)));
  json_object_set_new(o, "p99", jnum(pct(v, n, 99)));
  json_object_set_new(o, "p99.9", jnum(pct(v, n, 99.9)));
  json_object_set_new(o, "max", jnum(n ? v[n - 1] : NAN));
  return o;
}

static void series_add(series *s, double x) {
  if (s->n < BENCH_REPEAT_MAX) s->v[s->n++] = x;
}

static void series_stats(const series *s, double *med, double *lo, double *hi) {
  double v[BENCH_REPEAT_MAX];
  int k = 0;
  for (int i = 0; i < s->n; i++)
    if (!isnan(s->v[i])) v[k++] = s->v[i];
  if (k == 0) {
    *med = *lo = *hi = NAN;
    return;
  }
  qsort(v, (size_t)k, sizeof *v, cmp_double);
  *lo = v[0];
  *hi = v[k - 1];
  *med = k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

static json_t *series_json(const series *s) {
  double med, lo, hi;
  series_stats(s, &med, &lo, &hi);
  json_t *vals = json_array();
  for (int i = 0; i < s->n; i++) json_array_append_new(vals, jnum(s->v[i]));
  json_t *o = json_object();
  json_object_set_new(o, "median", jnum(med));
  json_object_set_new(o, "min", jnum(lo));
  json_object_set_new(o, "max", jnum(hi));
  json_object_set_new(o, "values", vals);
  return o;
}

static resources res_none(void) {
  resources r = {NAN, NAN, NAN, NAN, NAN};
  return r;
}

static row *row_get(bench *b, const char *workload, const char *measure, const char *unit,
                    int decimals, bool with_resources) {
  static row overflow;
  for (size_t i = 0; i < b->nrows; i++)
    if (strcmp(b->rows[i].workload, workload) == 0 && strcmp(b->rows[i].measure, measure) == 0)
      return &b->rows[i];
  if (b->nrows == BENCH_ROWS_MAX) return &overflow;
  row *r = &b->rows[b->nrows++];
  memset(r, 0, sizeof *r);
  snprintf(r->workload, sizeof r->workload, "%s", workload);
  snprintf(r->measure, sizeof r->measure, "%s", measure);
  snprintf(r->unit, sizeof r->unit, "%s", unit);
  r->decimals = decimals;
  r->resources = with_resources;
  return r;
}

static void row_add(row *r, double value, const resources *res) {
  series_add(&r->value, value);
  if (res == NULL || !r->resources) return;
  series_add(&r->redis_us, res->redis_us);
  series_add(&r->worker_us, res->worker_us);
  series_add(&r->client_us, res->client_us);
  series_add(&r->rss_mib, res->rss_mib);
  series_add(&r->pss_mib, res->pss_mib);
}

static json_t *resources_json(const resources *r) {
  json_t *o = json_object();
  json_object_set_new(o, "redis_cpu_us_per_task", jnum(r->redis_us));
  json_object_set_new(o, "worker_cpu_us_per_task", jnum(r->worker_us));
  json_object_set_new(o, "client_cpu_us_per_task", jnum(r->client_us));
  json_object_set_new(o, "worker_peak_rss_mib", jnum(r->rss_mib));
  json_object_set_new(o, "worker_peak_pss_mib", jnum(r->pss_mib));
  return o;
}

/* ---- the broker, directly ---- */

static int timeout_ms(const bench *b) { return b->o.timeout_s * 1000; }

/* One command on the control connection; NULL after printing why. */
static redisReply *ctl_cmd(bench *b, int argc, const char **argv, const size_t *lens) {
  redisContext *ctx = b->ctl.ctx;
  if (ctx == NULL) {
    fail("%s: no broker connection", argv[0]);
    return NULL;
  }
  redisReply *r = redisCommandArgv(ctx, argc, argv, lens);
  if (r == NULL) {
    fail("%s: the broker connection failed: %s", argv[0], ctx->errstr);
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    fail("%s: the broker answered: %s", argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

/* Reads the next pipelined reply; NULL after printing why. */
static redisReply *next_reply(redisContext *ctx, const char *what) {
  redisReply *r = NULL;
  if (redisGetReply(ctx, (void **)&r) != REDIS_OK || r == NULL) {
    fail("%s: the broker connection failed: %s", what, ctx->errstr);
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    fail("%s: the broker answered: %s", what, r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

static double info_field(const char *text, const char *name) {
  size_t len = strlen(name);
  for (const char *p = text; p && *p;) {
    if (strncmp(p, name, len) == 0 && p[len] == ':') return strtod(p + len + 1, NULL);
    p = strchr(p, '\n');
    if (p) p++;
  }
  return NAN;
}

/* Redis's own CPU time so far (user + system, seconds), or NaN when INFO
 * is not allowed. */
static double redis_cpu_s(bench *b) {
  const char *argv[] = {"INFO", "cpu"};
  redisReply *r = b->ctl.ctx ? redisCommandArgv(b->ctl.ctx, 2, argv, NULL) : NULL;
  double v = NAN;
  if (r && r->type == REDIS_REPLY_STRING)
    v = info_field(r->str, "used_cpu_sys") + info_field(r->str, "used_cpu_user");
  if (r) freeReplyObject(r);
  return v;
}

static double per_task_us(double before_s, double after_s, int64_t n) {
  return (after_s - before_s) * 1e6 / (double)n;
}

/* INFO commandstats: calls and usec per command so far. */
typedef struct cmdstat {
  char name[64];
  double calls, usec;
} cmdstat;

typedef struct cmdstats {
  cmdstat *v;
  size_t n;
} cmdstats;

static void cmdstats_read(bench *b, cmdstats *out) {
  out->v = NULL;
  out->n = 0;
  const char *argv[] = {"INFO", "commandstats"};
  redisReply *r = b->ctl.ctx ? redisCommandArgv(b->ctl.ctx, 2, argv, NULL) : NULL;
  if (r && r->type == REDIS_REPLY_STRING) {
    size_t cap = 0;
    for (const char *p = strstr(r->str, "cmdstat_"); p; p = strstr(p + 1, "\ncmdstat_")) {
      if (*p == '\n') p++;
      const char *colon = strchr(p, ':');
      const char *calls = colon ? strstr(colon, "calls=") : NULL;
      const char *usec = colon ? strstr(colon, "usec=") : NULL;
      if (colon == NULL || calls == NULL || usec == NULL) break;
      if (out->n == cap) {
        cap = cap ? cap * 2 : 64;
        cmdstat *v = realloc(out->v, cap * sizeof *v);
        if (v == NULL) break;
        out->v = v;
      }
      cmdstat *c = &out->v[out->n++];
      snprintf(c->name, sizeof c->name, "%.*s", (int)(colon - p - 8), p + 8);
      c->calls = strtod(calls + 6, NULL);
      c->usec = strtod(usec + 5, NULL);
    }
  }
  if (r) freeReplyObject(r);
}

static int cmp_usec_desc(const void *a, const void *b) {
  const cmdstat *x = a, *y = b;
  return (x->usec < y->usec) - (x->usec > y->usec);
}

/* The commands run between two snapshots, per task, busiest first (the
 * usec of EVALSHA include the commands its script calls, which are also
 * counted under their own names). Frees both snapshots. With `line`, a
 * summary of the first few goes there. */
static json_t *cmdstats_delta(cmdstats *before, cmdstats *after, int64_t tasks, char *line,
                              size_t size) {
  cmdstat *d = calloc(after->n ? after->n : 1, sizeof *d);
  size_t n = 0;
  for (size_t i = 0; d && i < after->n; i++) {
    cmdstat c = after->v[i];
    for (size_t j = 0; j < before->n; j++)
      if (strcmp(before->v[j].name, c.name) == 0) {
        c.calls -= before->v[j].calls;
        c.usec -= before->v[j].usec;
      }
    if (c.calls > 0) d[n++] = c;
  }
  if (d) qsort(d, n, sizeof *d, cmp_usec_desc);
  json_t *o = json_object();
  if (line) line[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_object();
    json_object_set_new(e, "calls_per_task", jnum(d[i].calls / (double)tasks));
    json_object_set_new(e, "usec_per_task", jnum(d[i].usec / (double)tasks));
    json_object_set_new(o, d[i].name, e);
    if (line && i < 6) {
      size_t used = strlen(line);
      snprintf(line + used, size - used, "%s%s %.2fx %.1fus", i ? ", " : "", d[i].name,
               d[i].calls / (double)tasks, d[i].usec / (double)tasks);
    }
  }
  free(d);
  free(before->v);
  free(after->v);
  before->v = after->v = NULL;
  return o;
}

static int stats_processed(bench *b, const char *queue, int64_t *out) {
  char key[BROKER_KEY_MAX + 1];
  broker_key(key, b->ns, queue, "stats", NULL);
  const char *argv[] = {"HGET", key, "processed"};
  redisReply *r = ctl_cmd(b, 3, argv, NULL);
  if (r == NULL) return -1;
  *out = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : 0;
  freeReplyObject(r);
  return 0;
}

/* Deletes every key of our namespace (DEL, not UNLINK: no freeing left
 * for a background thread to do during the next measurement). */
static int ns_cleanup(bench *b) {
  char pattern[CELER_NAMESPACE_MAX + 3], cursor[32] = "0";
  snprintf(pattern, sizeof pattern, "%s:*", b->ns);
  do {
    const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
    redisReply *r = ctl_cmd(b, 6, argv, NULL);
    if (r == NULL) return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(r);
      return fail("SCAN: unexpected reply");
    }
    snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
    redisReply *keys = r->element[1];
    if (keys->elements > 0) {
      const char **dargv = calloc(keys->elements + 1, sizeof *dargv);
      size_t *lens = calloc(keys->elements + 1, sizeof *lens);
      if (dargv == NULL || lens == NULL) {
        free(dargv);
        free(lens);
        freeReplyObject(r);
        return fail("out of memory");
      }
      dargv[0] = "DEL";
      lens[0] = 3;
      for (size_t i = 0; i < keys->elements; i++) {
        dargv[i + 1] = keys->element[i]->str;
        lens[i + 1] = keys->element[i]->len;
      }
      redisReply *d = ctl_cmd(b, (int)keys->elements + 1, dargv, lens);
      free(dargv);
      free(lens);
      if (d == NULL) {
        freeReplyObject(r);
        return -1;
      }
      freeReplyObject(d);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  return 0;
}

/* ---- the worker process tree ---- */

/* Parses "0", "0-3" or "0,2-3" into set; 0 or -1. */
static int parse_cpus(const char *spec, cpu_set_t *set) {
  CPU_ZERO(set);
  long ncpu = sysconf(_SC_NPROCESSORS_CONF);
  const char *p = spec;
  while (*p) {
    char *end = NULL;
    long lo = strtol(p, &end, 10), hi = lo;
    if (end == p || lo < 0) return -1;
    if (*end == '-') {
      p = end + 1;
      hi = strtol(p, &end, 10);
      if (end == p || hi < lo) return -1;
    }
    if (hi >= ncpu || hi >= CPU_SETSIZE) return -1;
    for (long c = lo; c <= hi; c++) CPU_SET((int)c, set);
    if (*end == ',') end++;
    else if (*end != '\0') return -1;
    p = end;
  }
  return CPU_COUNT(set) > 0 ? 0 : -1;
}

/* Runs spawn() with the calling thread pinned to set (when pin), so that
 * the new process inherits it; the thread's own set comes back after. */
static void pin_for_spawn(const bench *b, const cpu_set_t *set, bool pin) {
  if (pin) sched_setaffinity(0, sizeof *set, set);
  else sched_setaffinity(0, sizeof b->home_set, &b->home_set);
}

/* Fields of /proc/PID/stat: parent, utime+stime (ticks), start time. */
static bool read_proc_stat(pid_t pid, pid_t *ppid, unsigned long long *ticks,
                           unsigned long long *start) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (p == NULL || p[1] == '\0') return false;
  unsigned long long ut = 0, st = 0, begun = 0;
  long parent = 0;
  int field = 3;
  char *save = NULL;
  for (char *t = strtok_r(p + 2, " ", &save); t; t = strtok_r(NULL, " ", &save), field++) {
    if (field == 4) parent = strtol(t, NULL, 10);
    else if (field == 14) ut = strtoull(t, NULL, 10);
    else if (field == 15) st = strtoull(t, NULL, 10);
    else if (field == 22) {
      begun = strtoull(t, NULL, 10);
      break;
    }
  }
  if (field != 22) return false;
  if (ppid) *ppid = (pid_t)parent;
  if (ticks) *ticks = ut + st;
  if (start) *start = begun;
  return true;
}

/* A "Label:   123 kB" value from a /proc file, in KiB, or NaN. */
static double read_kib(const char *path, const char *label) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return NAN;
  char line[256];
  size_t len = strlen(label);
  double v = NAN;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, label, len) == 0) {
      v = strtod(line + len, NULL);
      break;
    }
  fclose(f);
  return v;
}

static int list_children(pid_t parent, pid_t *out, int max) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)parent, (int)parent);
  int n = 0;
  FILE *f = fopen(path, "r");
  if (f) {
    int p;
    while (n < max && fscanf(f, "%d", &p) == 1) out[n++] = (pid_t)p;
    fclose(f);
    return n;
  }
  /* Kernels without CONFIG_PROC_CHILDREN: look at every process. */
  DIR *d = opendir("/proc");
  if (d == NULL) return 0;
  struct dirent *e;
  while (n < max && (e = readdir(d)) != NULL) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    pid_t pid = (pid_t)atoi(e->d_name), pp = 0;
    if (read_proc_stat(pid, &pp, NULL, NULL) && pp == parent) out[n++] = pid;
  }
  closedir(d);
  return n;
}

static void remember(worker_proc *w, pid_t pid, unsigned long long start, double cpu_ms) {
  for (int i = 0; i < w->nseen; i++)
    if (w->seen[i].pid == pid && w->seen[i].start == start) {
      w->seen[i].cpu_ms = cpu_ms;
      return;
    }
  if (w->nseen < BENCH_PROCS_MAX) w->seen[w->nseen++] = (proc_seen){pid, start, cpu_ms};
}

/* CPU time of a process so far in ms: /proc/PID/schedstat (ns), else the
 * clock ticks of /proc/PID/stat; NaN when it is gone. */
static double proc_cpu_ms(pid_t pid, unsigned long long ticks) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pid);
  FILE *f = fopen(path, "r");
  unsigned long long ns = 0;
  int ok = f && fscanf(f, "%llu", &ns) == 1;
  if (f) fclose(f);
  if (ok) return (double)ns / 1e6;
  return (double)ticks * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* The name the kernel shows for a process (comm), or "". */
static void proc_comm(pid_t pid, char *buf, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
  buf[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL) return;
  if (fgets(buf, (int)size, f) == NULL) buf[0] = '\0';
  fclose(f);
  buf[strcspn(buf, "\n")] = '\0';
}

/* One look at the worker's tree: the supervisor and its children (the
 * upkeep process and the task children). */
static void sample_worker(worker_proc *w) {
  if (!w->exec_seen) {
    /* Until the exec, the spawned child is a copy of the bench: its
     * memory is ours, not the worker's. */
    char mine[32], its[32];
    proc_comm(getpid(), mine, sizeof mine);
    proc_comm(w->pid, its, sizeof its);
    if (its[0] == '\0' || strcmp(mine, its) == 0) return;
    w->exec_seen = true;
  }
  pid_t pids[BENCH_PROCS_MAX];
  pids[0] = w->pid;
  int n = 1 + list_children(w->pid, pids + 1, BENCH_PROCS_MAX - 1);
  double rss = 0, pss = 0;
  bool pss_ok = true;
  int alive = 0;
  for (int i = 0; i < n; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pids[i]);
    double r = read_kib(path, "VmRSS:");
    if (isnan(r)) continue; /* gone, or a zombie */
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pids[i]);
    double p = read_kib(path, "Pss:");
    if (isnan(p)) pss_ok = false;
    else pss += p;
    rss += r;
    alive++;
    pid_t pp;
    unsigned long long ticks, start;
    if (read_proc_stat(pids[i], &pp, &ticks, &start))
      remember(w, pids[i], start, proc_cpu_ms(pids[i], ticks));
  }
  if (rss > w->peak_rss_kib) w->peak_rss_kib = rss;
  if (pss_ok && pss > w->peak_pss_kib) w->peak_pss_kib = pss;
  if (!pss_ok) w->pss_ok = false;
  if (alive > w->peak_procs) w->peak_procs = alive;
}

static void *sampler_main(void *arg) {
  worker_proc *w = arg;
  while (__atomic_load_n(&w->sampling, __ATOMIC_ACQUIRE)) {
    sample_worker(w);
    pause_ms(BENCH_SAMPLE_MS);
  }
  return NULL;
}

static void sampler_stop(worker_proc *w) {
  if (!w->sampler_on) return;
  __atomic_store_n(&w->sampling, 0, __ATOMIC_RELEASE);
  pthread_join(w->sampler, NULL);
  w->sampler_on = false;
}

static void describe_status(int st, char *buf, size_t size) {
  if (WIFEXITED(st)) snprintf(buf, size, "exited with status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(buf, size, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
  else snprintf(buf, size, "ended with wait status %d", st);
}

static int worker_died(const worker_proc *w, const char *phase) {
  char how[96];
  describe_status(w->status, how, sizeof how);
  fail("celer-worker %s (pid %d) %s while %s; the end of its log %s:", w->name, (int)w->pid, how,
       phase, w->log);
  print_tail(w->log, 15);
  return -1;
}

static bool worker_alive(worker_proc *w) {
  if (w->reaped) return false;
  int st;
  pid_t r = waitpid(w->pid, &st, WNOHANG);
  if (r == w->pid) {
    w->reaped = true;
    w->status = st;
    return false;
  }
  return true;
}

static void worker_kill(bench *b, worker_proc *w) {
  sampler_stop(w);
  if (w->pid > 0 && !w->reaped) {
    kill(w->pid, SIGKILL);
    harness_wait(w->pid, HARNESS_DEADLINE_MS);
    w->reaped = true;
  }
  if (b->live == w) b->live = NULL;
}

static int64_t blocked_readers(bench *b);

/* Starts celer-worker as our direct child (its own process group) on one
 * queue, and the memory sampler. The CPU the tree uses is measured from
 * here to its reaping in worker_stop. */
static int worker_start(bench *b, worker_proc *w, const char *queue, int concurrency,
                        int prefetch, const char *tag) {
  memset(w, 0, sizeof *w);
  w->pss_ok = true;
  snprintf(w->name, sizeof w->name, "bench%ld-%s", (long)getpid(), tag);
  snprintf(w->log, sizeof w->log, "%s/%s.log", b->tmpdir, w->name);
  char conc[16], pre[16];
  snprintf(conc, sizeof conc, "%d", concurrency);
  snprintf(pre, sizeof pre, "%d", prefetch);
  const char *argv[] = {b->worker_bin, "--broker",      b->url,  "--namespace", b->ns,
                        "--queues",    queue,           "--module", "testing",  "--concurrency",
                        conc,          "--prefetch",    pre,     "--name",      w->name,
                        NULL};
  w->readers_before = blocked_readers(b);
  if (getrusage(RUSAGE_CHILDREN, &w->before) != 0)
    return fail("getrusage: %s", strerror(errno));
  pin_for_spawn(b, &b->worker_set, b->o.worker_cpus != NULL);
  w->pid = harness_spawn(argv, NULL, NULL, w->log);
  pin_for_spawn(b, NULL, false);
  if (w->pid < 0) return fail("cannot start %s: %s", b->worker_bin, strerror(errno));
  b->live = w;
  __atomic_store_n(&w->sampling, 1, __ATOMIC_RELEASE);
  if (pthread_create(&w->sampler, NULL, sampler_main, w) != 0) {
    w->sampling = 0;
    return fail("cannot start the memory sampler thread");
  }
  w->sampler_on = true;
  return 0;
}

/* Stops the worker with SIGTERM, reaps it and gives the CPU time of its
 * whole tree (the supervisor waits for the upkeep and its children, so
 * their time is in RUSAGE_CHILDREN once it is reaped). */
static int worker_stop(bench *b, worker_proc *w, double *cpu_us) {
  sampler_stop(w);
  if (b->live == w) b->live = NULL;
  if (!worker_alive(w)) return worker_died(w, "running (before it was asked to stop)");
  sample_worker(w); /* the work is done: memory is at its fullest */
  kill(w->pid, SIGTERM);
  int st = harness_wait(w->pid, BENCH_STOP_DEADLINE_MS);
  if (st == -1) {
    kill(w->pid, SIGKILL);
    harness_wait(w->pid, HARNESS_DEADLINE_MS);
    w->reaped = true;
    fail("celer-worker %s did not exit within %d s of SIGTERM; killed it. The end of its log %s:",
         w->name, BENCH_STOP_DEADLINE_MS / 1000, w->log);
    print_tail(w->log, 15);
    return -1;
  }
  w->reaped = true;
  w->status = st;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return worker_died(w, "stopping");
  struct rusage after;
  getrusage(RUSAGE_CHILDREN, &after);
  *cpu_us = rusage_us(&after) - rusage_us(&w->before);
  return 0;
}

/* How many clients of the broker are blocked in XREADGROUP (CLIENT LIST),
 * or -1 when the broker does not allow CLIENT LIST. */
static int64_t blocked_readers(bench *b) {
  const char *argv[] = {"CLIENT", "LIST", "TYPE", "normal"};
  redisReply *r = b->ctl.ctx ? redisCommandArgv(b->ctl.ctx, 4, argv, NULL) : NULL;
  int64_t n = -1;
  if (r && r->type == REDIS_REPLY_STRING) {
    n = 0;
    for (const char *line = r->str; line && *line;) {
      const char *end = strchr(line, '\n');
      size_t len = end ? (size_t)(end - line) : strlen(line);
      const char *flags = strstr(line, " flags=");
      const char *cmd = strstr(line, " cmd=xreadgroup ");
      if (flags && cmd && flags < line + len && cmd < line + len) {
        size_t flen = strcspn(flags + 7, " ");
        if (memchr(flags + 7, 'b', flen)) n++;
      }
      line = end ? end + 1 : NULL;
    }
  }
  if (r) freeReplyObject(r);
  return n;
}

/* Waits until the worker's `concurrency` children are blocked in their
 * first XREADGROUP: the broker has that many more blocked readers than
 * before the worker was spawned. (A consumer appears in XINFO CONSUMERS
 * only once it is served, so that cannot tell an idle child.) Without
 * CLIENT LIST, the warm-up tasks that follow are the only check. */
static int worker_wait_ready(bench *b, worker_proc *w, int concurrency) {
  int64_t deadline = mono_ms() + timeout_ms(b);
  for (;;) {
    int64_t now = blocked_readers(b);
    if (now < 0 || w->readers_before < 0 || now - w->readers_before >= concurrency) return 0;
    if (!worker_alive(w)) return worker_died(w, "starting");
    if (g_interrupted) return fail("interrupted");
    if (mono_ms() > deadline) {
      fail("celer-worker %s did not have its %d children reading within %d s; the end of its "
           "log %s:", w->name, concurrency, b->o.timeout_s, w->log);
      print_tail(w->log, 15);
      return -1;
    }
    pause_ms(BENCH_POLL_MS);
  }
}

/* Polls the queue's `processed` counter until it reaches target. Fails
 * when the worker dies or when no task finished for --timeout seconds
 * (plus grace_ms at the start). */
static int wait_processed(bench *b, worker_proc *w, const char *queue, int64_t target,
                          int64_t grace_ms, const char *phase) {
  int64_t last = -1, stall = mono_ms() + timeout_ms(b) + grace_ms;
  for (;;) {
    int64_t done = 0;
    if (stats_processed(b, queue, &done) != 0) return -1;
    if (done >= target) return 0;
    if (done != last) {
      if (last >= 0) stall = mono_ms() + timeout_ms(b);
      last = done;
    }
    if (!worker_alive(w)) return worker_died(w, phase);
    if (g_interrupted) return fail("interrupted");
    if (mono_ms() > stall) {
      fail("timed out %s: no task finished for %d s (%lld of %lld processed); the end of the "
           "worker's log %s:", phase, b->o.timeout_s, (long long)done, (long long)target, w->log);
      print_tail(w->log, 15);
      return -1;
    }
    pause_ms(BENCH_POLL_MS);
  }
}

/* CPU split of the tree from the last samples (the time after the last
 * one, at most a sampling period, is missing): the supervisor, the upkeep
 * (its first child) and the task children. */
static json_t *cpu_split_json(const worker_proc *w) {
  double sup = 0, keeper = 0, kids = 0;
  int first = -1;
  for (int i = 0; i < w->nseen; i++)
    if (w->seen[i].pid != w->pid && (first < 0 || w->seen[i].start < w->seen[first].start))
      first = i;
  for (int i = 0; i < w->nseen; i++) {
    double ms = w->seen[i].cpu_ms;
    if (w->seen[i].pid == w->pid) sup += ms;
    else if (i == first) keeper += ms;
    else kids += ms;
  }
  json_t *o = json_object();
  json_object_set_new(o, "supervisor_ms", jnum(sup));
  json_object_set_new(o, "upkeep_ms", jnum(keeper));
  json_object_set_new(o, "children_ms", jnum(kids));
  return o;
}

static void worker_resources(const worker_proc *w, double cpu_us, int64_t tasks, resources *res) {
  res->worker_us = cpu_us / (double)tasks;
  res->rss_mib = w->peak_rss_kib / 1024.0;
  res->pss_mib = w->pss_ok ? w->peak_pss_kib / 1024.0 : NAN;
}

/* ---- producing and reading back ---- */

static celer_client *client_open(bench *b) {
  celer_client_options co;
  memset(&co, 0, sizeof co);
  co.broker_url = b->url;
  co.ns = b->ns;
  co.timeout_ms = timeout_ms(b);
  celer_client *c = celer_client_new(&co);
  if (c == NULL) {
    fail("out of memory");
    return NULL;
  }
  if (celer_client_connect(c) != 0) {
    fail("libceler cannot connect: %s", celer_client_errstr(c));
    celer_client_free(c);
    return NULL;
  }
  return c;
}

/* Enqueues n tasks: one celer_enqueue per task when batch <= 1, else
 * celer_enqueue_batch of `batch` tasks. ids (may be NULL) receives the
 * task ids; etas (may be NULL) gives each task's eta. */
static int enqueue_tasks(bench *b, celer_client *c, const char *queue, int64_t n, int64_t batch,
                         task_id *ids, const int64_t *etas) {
  if (batch <= 1) {
    celer_enqueue_options opts;
    celer_enqueue_options_init(&opts);
    opts.queue = queue;
    for (int64_t i = 0; i < n; i++) {
      task_id id;
      if (etas) opts.eta_ms = etas[i];
      if (celer_enqueue(c, b->o.task, b->args, NULL, &opts, id) != 0)
        return fail("celer_enqueue of task %lld of %lld failed: %s", (long long)i + 1,
                    (long long)n, celer_client_errstr(c));
      if (ids) memcpy(ids[i], id, sizeof id);
      if ((i & 1023) == 0 && g_interrupted) return fail("interrupted");
    }
    return 0;
  }
  celer_batch_item *items = calloc((size_t)batch, sizeof *items);
  if (items == NULL) return fail("out of memory for a batch of %lld", (long long)batch);
  int rc = 0;
  for (int64_t done = 0; rc == 0 && done < n;) {
    size_t k = (size_t)(n - done < batch ? n - done : batch);
    for (size_t j = 0; j < k; j++) {
      memset(&items[j], 0, sizeof items[j]);
      items[j].task = b->o.task;
      items[j].args = b->args;
      celer_enqueue_options_init(&items[j].opts);
      items[j].opts.queue = queue;
      if (etas) items[j].opts.eta_ms = etas[done + (int64_t)j];
    }
    if (celer_enqueue_batch(c, items, k) != 0) {
      rc = fail("celer_enqueue_batch of %zu tasks failed: %s", k, celer_client_errstr(c));
      break;
    }
    if (ids)
      for (size_t j = 0; j < k; j++) memcpy(ids[done + (int64_t)j], items[j].id, sizeof(task_id));
    done += (int64_t)k;
    if (g_interrupted) rc = fail("interrupted");
  }
  free(items);
  return rc;
}

/* Reads the records of n tasks (pipelined GETs) and checks that each one
 * SUCCEEDED; fills started[] and finished[] (ms since the epoch). */
static int read_records(bench *b, const char *queue, const task_id *ids, int64_t n,
                        int64_t *started, int64_t *finished) {
  redisContext *ctx = b->ctl.ctx;
  char key[BROKER_KEY_MAX + 1];
  char problem[512] = "";
  for (int64_t base = 0; base < n; base += BENCH_RECORD_CHUNK) {
    int64_t k = n - base < BENCH_RECORD_CHUNK ? n - base : BENCH_RECORD_CHUNK;
    for (int64_t j = 0; j < k; j++) {
      broker_key(key, b->ns, queue, "result:", ids[base + j]);
      const char *argv[] = {"GET", key};
      if (redisAppendCommandArgv(ctx, 2, argv, NULL) != REDIS_OK)
        return fail("GET: out of memory building the pipeline");
    }
    for (int64_t j = 0; j < k; j++) {
      redisReply *r = next_reply(ctx, "reading records");
      if (r == NULL) return -1;
      const char *id = ids[base + j];
      if (problem[0] == '\0') {
        json_t *rec = r->type == REDIS_REPLY_STRING ? json_loadb(r->str, r->len, 0, NULL) : NULL;
        const char *state = json_string_value(json_object_get(rec, "state"));
        if (r->type != REDIS_REPLY_STRING) {
          snprintf(problem, sizeof problem, "task %s has no record although it was counted", id);
        } else if (state == NULL) {
          snprintf(problem, sizeof problem, "the record of task %s is not valid: %.200s", id,
                   r->str);
        } else if (strcmp(state, "SUCCEEDED") != 0) {
          json_t *err = json_object_get(rec, "error");
          const char *type = json_string_value(json_object_get(err, "type"));
          const char *message = json_string_value(json_object_get(err, "message"));
          snprintf(problem, sizeof problem, "task %s ended %s: %s: %s", id, state,
                   type ? type : "?", message ? message : "?");
        } else {
          started[base + j] = (int64_t)json_integer_value(json_object_get(rec, "started_at"));
          finished[base + j] = (int64_t)json_integer_value(json_object_get(rec, "finished_at"));
        }
        json_decref(rec);
      }
      freeReplyObject(r);
    }
    if (problem[0]) return fail("%s", problem);
  }
  return 0;
}

/* Enqueues `count` tasks one at a time and waits for each (a warm-up:
 * the worker's children have connected, loaded their scripts and run). */
static int warm_up(bench *b, celer_client *c, worker_proc *w, const char *queue, int count) {
  celer_enqueue_options opts;
  celer_enqueue_options_init(&opts);
  opts.queue = queue;
  for (int i = 0; i < count; i++) {
    task_id id;
    json_t *rec = NULL;
    if (celer_enqueue(c, b->o.task, b->args, NULL, &opts, id) != 0)
      return fail("warm-up enqueue failed: %s", celer_client_errstr(c));
    if (celer_wait(c, queue, id, timeout_ms(b), &rec) != 0) {
      if (!worker_alive(w)) return worker_died(w, "warming up");
      return fail("warm-up task %s: %s", id, celer_client_errstr(c));
    }
    json_decref(rec);
  }
  return 0;
}

static int64_t tasks_for(const bench *b, int64_t def) { return b->o.tasks > 0 ? b->o.tasks : def; }

static void add_run(bench *b, json_t *run) { json_array_append_new(b->runs, run); }

/* ---- enqueue ---- */

static int enqueue_once(bench *b, celer_client *c, int rep, bool batched) {
  int64_t n = tasks_for(b, DEF_ENQUEUE_TASKS);
  char queue[64], measure[112];
  snprintf(queue, sizeof queue, "enq-%s-r%d", batched ? "batch" : "one", rep);
  if (batched)
    snprintf(measure, sizeof measure, "enqueue, celer_enqueue_batch of %lld (tasks/s)",
             (long long)b->o.batch);
  else
    snprintf(measure, sizeof measure, "enqueue, one celer_enqueue per task (tasks/s)");
  cmdstats cs0, cs1;
  cmdstats_read(b, &cs0);
  double r0 = redis_cpu_s(b), c0 = thread_cpu_us();
  int64_t t0 = mono_ns();
  int rc = enqueue_tasks(b, c, queue, n, batched ? b->o.batch : 1, NULL, NULL);
  int64_t t1 = mono_ns();
  double c1 = thread_cpu_us(), r1 = redis_cpu_s(b);
  cmdstats_read(b, &cs1);
  char line[512];
  json_t *cmds = cmdstats_delta(&cs0, &cs1, n, line, sizeof line);
  if (rc == 0) {
    double secs = (double)(t1 - t0) / 1e9, tps = (double)n / secs;
    resources res = res_none();
    res.redis_us = per_task_us(r0, r1, n);
    res.client_us = (c1 - c0) / (double)n;
    row_add(row_get(b, "enqueue", measure, "tasks/s", 0, true), tps, &res);
    json_t *run = json_object();
    json_object_set_new(run, "workload", json_string("enqueue"));
    json_object_set_new(run, "mode", json_string(batched ? "batch" : "one per call"));
    json_object_set_new(run, "repetition", json_integer(rep + 1));
    json_object_set_new(run, "tasks", json_integer(n));
    json_object_set_new(run, "batch", json_integer(batched ? b->o.batch : 1));
    json_object_set_new(run, "seconds", jnum(secs));
    json_object_set_new(run, "tasks_per_s", jnum(tps));
    json_object_set_new(run, "resources", resources_json(&res));
    json_object_set(run, "redis_commands", cmds);
    add_run(b, run);
    progress("enqueue %s, run %d/%d: %.0f tasks/s, Redis %.2f us/task, client %.2f us/task",
             batched ? "batched" : "one per call", rep + 1, b->o.repeat, tps, res.redis_us,
             res.client_us);
    progress("  Redis per task: %s", line);
  }
  json_decref(cmds);
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

static int run_enqueue(bench *b) {
  fprintf(stderr, "enqueue: %lld tasks of %s, payload %lld bytes\n",
          (long long)tasks_for(b, DEF_ENQUEUE_TASKS), b->o.task, (long long)b->o.payload);
  celer_client *c = client_open(b);
  if (c == NULL) return -1;
  int rc = 0;
  for (int rep = 0; rc == 0 && rep < b->o.repeat; rep++) {
    rc = enqueue_once(b, c, rep, false);
    if (rc == 0) rc = enqueue_once(b, c, rep, true);
  }
  celer_client_free(c);
  return rc;
}

/* ---- drain ---- */

/* An idle worker started, waited for and stopped: what start-up and
 * shutdown alone cost (included in every worker CPU figure). */
static int idle_baseline(bench *b) {
  worker_proc w;
  double cpu = 0;
  int rc = worker_start(b, &w, "idle", b->o.concurrency, b->o.prefetch, "idle");
  if (rc == 0) rc = worker_wait_ready(b, &w, b->o.concurrency);
  if (rc == 0) rc = worker_stop(b, &w, &cpu);
  else worker_kill(b, &w);
  if (rc == 0) {
    b->idle_cpu_ms = cpu / 1000.0;
    b->idle_rss_mib = w.peak_rss_kib / 1024.0;
    progress("idle worker start + stop: %.1f ms CPU, peak RSS %.1f MiB", b->idle_cpu_ms,
             b->idle_rss_mib);
  }
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

static int drain_once(bench *b, celer_client *c, int prefetch, int rep, const char *measure) {
  int64_t n = tasks_for(b, DEF_DRAIN_TASKS);
  char queue[64];
  snprintf(queue, sizeof queue, "drain-p%d-r%d", prefetch, rep);
  task_id *ids = calloc((size_t)n, sizeof *ids);
  int64_t *started = calloc((size_t)n, sizeof *started);
  int64_t *finished = calloc((size_t)n, sizeof *finished);
  if (ids == NULL || started == NULL || finished == NULL) {
    free(ids);
    free(started);
    free(finished);
    return fail("out of memory for %lld tasks", (long long)n);
  }
  worker_proc w;
  memset(&w, 0, sizeof w);
  double r0 = NAN, r1 = NAN, cpu = 0;
  int64_t t0 = 0, t1 = 0;
  cmdstats cs0 = {NULL, 0}, cs1 = {NULL, 0};
  int rc = enqueue_tasks(b, c, queue, n, b->o.batch, ids, NULL);
  if (rc == 0) {
    cmdstats_read(b, &cs0);
    r0 = redis_cpu_s(b);
    t0 = mono_ns();
    rc = worker_start(b, &w, queue, b->o.concurrency, prefetch, queue);
    if (rc == 0) rc = wait_processed(b, &w, queue, n, 0, "draining");
    if (rc == 0) {
      t1 = mono_ns();
      r1 = redis_cpu_s(b);
      cmdstats_read(b, &cs1);
      rc = worker_stop(b, &w, &cpu);
    } else {
      worker_kill(b, &w);
    }
  }
  if (rc == 0) rc = read_records(b, queue, ids, n, started, finished);
  if (rc == 0) {
    int64_t first = INT64_MAX, last = INT64_MIN;
    for (int64_t i = 0; i < n; i++) {
      if (started[i] < first) first = started[i];
      if (finished[i] > last) last = finished[i];
    }
    /* Record times are whole ms: a span under 1 ms reads as 1 ms. */
    double span_ms = last - first < 1 ? 1.0 : (double)(last - first);
    double tps = (double)n * 1000.0 / span_ms;
    resources res = res_none();
    res.redis_us = per_task_us(r0, r1, n);
    worker_resources(&w, cpu, n, &res);
    row_add(row_get(b, "drain", measure, "tasks/s", 0, true), tps, &res);
    json_t *run = json_object();
    json_object_set_new(run, "workload", json_string("drain"));
    json_object_set_new(run, "measure", json_string(measure));
    json_object_set_new(run, "repetition", json_integer(rep + 1));
    json_object_set_new(run, "tasks", json_integer(n));
    json_object_set_new(run, "concurrency", json_integer(b->o.concurrency));
    json_object_set_new(run, "prefetch", json_integer(prefetch));
    json_object_set_new(run, "span_ms", jnum(span_ms));
    json_object_set_new(run, "tasks_per_s", jnum(tps));
    json_object_set_new(run, "spawn_to_drained_ms", jnum((double)(t1 - t0) / 1e6));
    json_object_set_new(run, "resources", resources_json(&res));
    json_object_set_new(run, "worker_cpu_total_ms", jnum(cpu / 1000.0));
    json_object_set_new(run, "worker_cpu_split", cpu_split_json(&w));
    json_object_set_new(run, "worker_processes", json_integer(w.peak_procs));
    char line[512];
    json_object_set_new(run, "redis_commands", cmdstats_delta(&cs0, &cs1, n, line, sizeof line));
    add_run(b, run);
    progress("drain prefetch %d, run %d/%d: %.0f tasks/s (span %.0f ms), Redis %.2f us/task, "
             "worker %.2f us/task, RSS %.1f MiB",
             prefetch, rep + 1, b->o.repeat, tps, span_ms, res.redis_us, res.worker_us,
             res.rss_mib);
    progress("  Redis per task: %s", line);
  }
  free(cs0.v);
  free(cs1.v);
  free(ids);
  free(started);
  free(finished);
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

static int run_drain(bench *b) {
  fprintf(stderr, "drain: %lld tasks of %s, %d children, prefetch %d and %d\n",
          (long long)tasks_for(b, DEF_DRAIN_TASKS), b->o.task, b->o.concurrency, b->o.prefetch,
          b->o.best_prefetch);
  celer_client *c = client_open(b);
  if (c == NULL) return -1;
  int rc = idle_baseline(b);
  char fair[112], best[112];
  const char *kids = b->o.concurrency == 1 ? "child" : "children";
  snprintf(fair, sizeof fair, "drain, prefetch %d%s, %d %s (tasks/s)", b->o.prefetch,
           b->o.prefetch == 1 ? " (fair)" : "", b->o.concurrency, kids);
  snprintf(best, sizeof best, "drain, prefetch %d (best config), %d %s (tasks/s)",
           b->o.best_prefetch, b->o.concurrency, kids);
  for (int rep = 0; rc == 0 && rep < b->o.repeat; rep++) {
    rc = drain_once(b, c, b->o.prefetch, rep, fair);
    if (rc == 0 && b->o.best_prefetch != b->o.prefetch)
      rc = drain_once(b, c, b->o.best_prefetch, rep, best);
  }
  celer_client_free(c);
  return rc;
}

/* ---- latency ---- */

/* A subscriber already waiting for every completion of the run: a
 * PSUBSCRIBE on the queue's done channels, read by a thread of its own,
 * which notes when each message arrives. */
typedef struct lat_sub {
  broker_conn conn;
  int64_t n;
  int64_t *recv_us; /* by task index; 0 = not (yet) received */
  int64_t got;
  char prefix[BROKER_KEY_MAX + 1]; /* <ns>:{q}:done: */
  char idprefix[32];               /* L<rep>- */
  bool failed;
  char errstr[256];
} lat_sub;

static void *lat_sub_main(void *arg) {
  lat_sub *s = arg;
  size_t plen = strlen(s->prefix), ilen = strlen(s->idprefix);
  for (;;) {
    redisReply *r = NULL;
    if (redisGetReply(s->conn.ctx, (void **)&r) != REDIS_OK || r == NULL) {
      s->failed = true;
      snprintf(s->errstr, sizeof s->errstr, "%s", s->conn.ctx->errstr);
      return NULL;
    }
    int64_t now = wall_us();
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
        r->element[2]->type == REDIS_REPLY_STRING &&
        strncmp(r->element[2]->str, s->prefix, plen) == 0) {
      const char *id = r->element[2]->str + plen;
      if (strcmp(id, "end") == 0) {
        freeReplyObject(r);
        return NULL;
      }
      if (strncmp(id, s->idprefix, ilen) == 0) {
        long long i = strtoll(id + ilen, NULL, 10);
        if (i >= 0 && i < s->n && s->recv_us[i] == 0) {
          s->recv_us[i] = now;
          s->got++;
        }
      }
    }
    freeReplyObject(r);
  }
}

static int lat_sub_start(bench *b, lat_sub *s, const char *queue, int rep, int64_t n,
                         pthread_t *thread) {
  memset(s, 0, sizeof *s);
  s->n = n;
  s->recv_us = calloc((size_t)n, sizeof *s->recv_us);
  if (s->recv_us == NULL) return fail("out of memory");
  broker_key(s->prefix, b->ns, queue, "done:", NULL);
  snprintf(s->idprefix, sizeof s->idprefix, "L%d-", rep);
  broker_init(&s->conn, &b->burl, b->ns, timeout_ms(b));
  if (broker_connect(&s->conn) != 0) return fail("subscriber: %s", s->conn.errstr);
  char pattern[BROKER_KEY_MAX + 2];
  snprintf(pattern, sizeof pattern, "%s*", s->prefix);
  const char *argv[] = {"PSUBSCRIBE", pattern};
  redisReply *r = redisCommandArgv(s->conn.ctx, 2, argv, NULL);
  if (r == NULL) return fail("PSUBSCRIBE: %s", s->conn.ctx->errstr);
  bool ok = r->type == REDIS_REPLY_ARRAY;
  freeReplyObject(r);
  if (!ok) return fail("PSUBSCRIBE: unexpected reply");
  if (pthread_create(thread, NULL, lat_sub_main, s) != 0)
    return fail("cannot start the subscriber thread");
  return 1; /* running */
}

/* Publishes the sentinel the subscriber stops on, and joins it. */
static void lat_sub_stop(bench *b, lat_sub *s, pthread_t thread) {
  char channel[BROKER_KEY_MAX + 8];
  snprintf(channel, sizeof channel, "%send", s->prefix);
  const char *argv[] = {"PUBLISH", channel, "end"};
  redisReply *r = ctl_cmd(b, 3, argv, NULL);
  if (r) freeReplyObject(r);
  else shutdown(s->conn.ctx->fd, SHUT_RDWR); /* no sentinel: end the read */
  pthread_join(thread, NULL);
}

static void add_dist_rows(bench *b, const char *what, double *v, size_t n,
                          const resources *res, json_t *run, const char *key) {
  char m50[112], m99[112];
  snprintf(m50, sizeof m50, "latency at %.0f/s, %s p50 (ms)", b->o.rate, what);
  snprintf(m99, sizeof m99, "latency at %.0f/s, %s p99 (ms)", b->o.rate, what);
  json_t *d = dist_json(v, n); /* sorts v */
  row_add(row_get(b, "latency", m50, "ms", 3, res != NULL), pct(v, n, 50), res);
  row_add(row_get(b, "latency", m99, "ms", 3, false), pct(v, n, 99), NULL);
  json_object_set_new(run, key, d);
}

/* Watches a directory with inotify and notes when each file "<i>" is
 * created. test.mark creates its file first thing in its handler, so this
 * sees each handler start with a µs clock (plus the inotify wake-up). */
typedef struct lat_probe {
  int fd;
  int64_t n;
  int64_t *seen_us; /* by task index; 0 = not seen */
  int stop;
  bool failed;
  char errstr[128];
} lat_probe;

static void *lat_probe_main(void *arg) {
  lat_probe *p = arg;
  char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
  while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
    struct pollfd pfd = {p->fd, POLLIN, 0};
    int r = poll(&pfd, 1, 100);
    if (r == 0 || (r < 0 && errno == EINTR)) continue;
    ssize_t len = r < 0 ? -1 : read(p->fd, buf, sizeof buf);
    int64_t now = wall_us();
    if (len < 0 && errno == EINTR) continue;
    if (len <= 0) {
      p->failed = true;
      snprintf(p->errstr, sizeof p->errstr, "%s", strerror(errno));
      return NULL;
    }
    for (char *q = buf; q < buf + len;) {
      const struct inotify_event *e = (const struct inotify_event *)(void *)q;
      if (e->len > 0) {
        char *end = NULL;
        long long i = strtoll(e->name, &end, 10);
        if (end != e->name && *end == '\0' && i >= 0 && i < p->n && p->seen_us[i] == 0)
          p->seen_us[i] = now;
      }
      q += sizeof *e + e->len;
    }
  }
  return NULL;
}

/* One latency run. With probe, the task is test.mark writing a file per
 * task into a watched directory, and the measure is enqueue→handler start
 * seen by inotify; else the configured task, and the record's started_at. */
static int latency_once(bench *b, celer_client *c, int rep, bool probe) {
  int64_t n = tasks_for(b, DEF_LATENCY_TASKS);
  char queue[32], dir[PATH_MAX];
  snprintf(queue, sizeof queue, "%s-r%d", probe ? "probe" : "lat", rep);
  /* tmpfs when there is one: creating a file on a journaling file system
   * would lengthen test.mark's run (the start is seen before that). */
  struct stat shm;
  if (stat("/dev/shm", &shm) == 0 && S_ISDIR(shm.st_mode) && access("/dev/shm", W_OK) == 0)
    snprintf(dir, sizeof dir, "/dev/shm/celer-bench-%ld-%s", (long)getpid(), queue);
  else
    snprintf(dir, sizeof dir, "%s/%s", b->tmpdir, queue);
  const char *task = probe ? "test.mark" : b->o.task;
  int64_t *t0 = calloc((size_t)n, sizeof *t0), *te = calloc((size_t)n, sizeof *te);
  int64_t *t1 = calloc((size_t)n, sizeof *t1), *st = calloc((size_t)n, sizeof *st);
  double *v = calloc((size_t)n, sizeof *v);
  worker_proc w;
  memset(&w, 0, sizeof w);
  lat_sub sub;
  memset(&sub, 0, sizeof sub);
  lat_probe pr = {.fd = -1, .n = n};
  pthread_t thread, pthread;
  bool sub_on = false, probe_on = false;
  int rc = t0 && te && t1 && st && v ? 0 : fail("out of memory");
  if (rc == 0 && probe) {
    pr.seen_us = calloc((size_t)n, sizeof *pr.seen_us);
    if (pr.seen_us == NULL) rc = fail("out of memory");
    else if (mkdir(dir, 0700) != 0) rc = fail("mkdir %s: %s", dir, strerror(errno));
    else if ((pr.fd = inotify_init1(IN_CLOEXEC)) < 0 ||
             inotify_add_watch(pr.fd, dir, IN_CREATE) < 0)
      rc = fail("inotify on %s: %s", dir, strerror(errno));
    else if (pthread_create(&pthread, NULL, lat_probe_main, &pr) != 0)
      rc = fail("cannot start the inotify thread");
    else probe_on = true;
  }
  if (rc == 0) rc = worker_start(b, &w, queue, b->o.concurrency, b->o.prefetch, queue);
  if (rc == 0) rc = worker_wait_ready(b, &w, b->o.concurrency);
  if (rc == 0) rc = warm_up(b, c, &w, queue, BENCH_WARMUP);
  if (rc == 0) {
    int s = lat_sub_start(b, &sub, queue, rep, n, &thread);
    sub_on = s == 1;
    rc = s < 0 ? -1 : 0;
  }
  cmdstats cs0 = {NULL, 0}, cs1 = {NULL, 0};
  cmdstats_read(b, &cs0);
  double r0 = redis_cpu_s(b), c0 = thread_cpu_us(), r1 = NAN, c1 = NAN, cpu = 0;
  int64_t behind = 0, period = (int64_t)(1e9 / b->o.rate), begin = mono_ns() + 1000000;
  /* Each send is put at a random point of its first millisecond (or
   * period): at a steady phase, the whole-ms started_at of every record
   * would be off by the same amount. */
  int64_t dither = period < 1000000 ? period : 1000000;
  uint64_t rnd = (uint64_t)wall_us() | 1;
  celer_enqueue_options opts;
  celer_enqueue_options_init(&opts);
  opts.queue = queue;
  for (int64_t i = 0; rc == 0 && i < n; i++) {
    rnd ^= rnd << 13;
    rnd ^= rnd >> 7;
    rnd ^= rnd << 17;
    int64_t target = begin + i * period + (int64_t)(rnd % (uint64_t)dither);
    struct timespec ts = {(time_t)(target / 1000000000), (long)(target % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !g_interrupted) {
    }
    if (g_interrupted) {
      rc = fail("interrupted");
      break;
    }
    if (mono_ns() - target > 1000000) behind++;
    task_id id;
    snprintf(id, sizeof id, "L%d-%lld", rep, (long long)i);
    opts.id = id;
    json_t *kwargs = NULL;
    if (probe) {
      char path[PATH_MAX + 24];
      snprintf(path, sizeof path, "%s/%lld", dir, (long long)i);
      kwargs = json_pack("{s:s}", "path", path);
    }
    json_t *rec = NULL;
    t0[i] = wall_us();
    int erc = celer_enqueue(c, task, b->args, kwargs, &opts, NULL);
    te[i] = wall_us();
    json_decref(kwargs);
    if (erc != 0) {
      rc = fail("celer_enqueue of task %s failed: %s", id, celer_client_errstr(c));
      break;
    }
    int wrc = celer_wait(c, queue, id, timeout_ms(b), &rec);
    t1[i] = wall_us();
    if (wrc != 0) {
      rc = worker_alive(&w) ? fail("waiting for task %s: %s", id, celer_client_errstr(c))
                            : worker_died(&w, "running the latency tasks");
      break;
    }
    const char *state = json_string_value(json_object_get(rec, "state"));
    if (state == NULL || strcmp(state, "SUCCEEDED") != 0)
      rc = fail("task %s ended %s", id, state ? state : "without a state");
    st[i] = (int64_t)json_integer_value(json_object_get(rec, "started_at"));
    json_decref(rec);
  }
  if (rc == 0) {
    c1 = thread_cpu_us();
    r1 = redis_cpu_s(b);
    cmdstats_read(b, &cs1);
  }
  if (sub_on) lat_sub_stop(b, &sub, thread);
  if (probe_on) {
    __atomic_store_n(&pr.stop, 1, __ATOMIC_RELEASE);
    pthread_join(pthread, NULL);
  }
  if (rc == 0 && sub.failed) rc = fail("the subscriber's connection failed: %s", sub.errstr);
  if (rc == 0 && pr.failed) rc = fail("reading inotify events failed: %s", pr.errstr);
  if (rc == 0) rc = worker_stop(b, &w, &cpu);
  else if (w.pid > 0) worker_kill(b, &w);
  if (rc == 0) {
    resources res = res_none();
    res.redis_us = per_task_us(r0, r1, n);
    res.client_us = (c1 - c0) / (double)n;
    worker_resources(&w, cpu, n + BENCH_WARMUP, &res);
    json_t *run = json_object();
    json_object_set_new(run, "workload", json_string("latency"));
    json_object_set_new(run, "task", json_string(task));
    json_object_set_new(run, "repetition", json_integer(rep + 1));
    json_object_set_new(run, "tasks", json_integer(n));
    json_object_set_new(run, "rate_per_s", jnum(b->o.rate));
    json_object_set_new(run, "behind_schedule", json_integer(behind));
    json_object_set_new(run, "concurrency", json_integer(b->o.concurrency));
    json_object_set_new(run, "prefetch", json_integer(b->o.prefetch));
    char line[512] = "";
    double p50 = NAN, p99 = NAN, p50_done = NAN, p50_wait = NAN;
    size_t k = 0;
    if (probe) {
      for (int64_t i = 0; i < n; i++)
        if (pr.seen_us[i] > 0) v[k++] = (double)(pr.seen_us[i] - t0[i]) / 1000.0;
      add_dist_rows(b, "enqueue→handler start (test.mark, inotify)", v, k, NULL, run,
                    "enqueue_to_handler_start_ms");
      json_object_set_new(run, "handler_starts_missing", json_integer(n - (int64_t)k));
      p50 = pct(v, k, 50);
      p99 = pct(v, k, 99);
    } else {
      /* started_at is whole ms (floored); with the dithered sends its
       * fraction is uniform, so + 0.5 ms makes the estimate unbiased,
       * each sample within ±0.5 ms. */
      for (int64_t i = 0; i < n; i++) v[i] = (double)st[i] + 0.5 - (double)t0[i] / 1000.0;
      add_dist_rows(b, "enqueue→start (record, ±0.5)", v, (size_t)n, &res, run,
                    "enqueue_to_start_ms");
      p50 = pct(v, (size_t)n, 50);
      p99 = pct(v, (size_t)n, 99);
    }
    k = 0;
    for (int64_t i = 0; i < n; i++)
      if (sub.recv_us[i] > 0) v[k++] = (double)(sub.recv_us[i] - t0[i]) / 1000.0;
    if (!probe)
      add_dist_rows(b, "enqueue→done message", v, k, NULL, run, "enqueue_to_done_message_ms");
    else
      json_object_set_new(run, "enqueue_to_done_message_ms", dist_json(v, k));
    json_object_set_new(run, "done_messages_missing", json_integer(n - (int64_t)k));
    p50_done = pct(v, k, 50);
    size_t missing = (size_t)n - k;
    for (int64_t i = 0; i < n; i++) v[i] = (double)(t1[i] - t0[i]) / 1000.0;
    if (!probe)
      add_dist_rows(b, "enqueue→celer_wait returns", v, (size_t)n, NULL, run,
                    "enqueue_to_wait_return_ms");
    else json_object_set_new(run, "enqueue_to_wait_return_ms", dist_json(v, (size_t)n));
    p50_wait = pct(v, (size_t)n, 50);
    for (int64_t i = 0; i < n; i++) v[i] = (double)(te[i] - t0[i]) / 1000.0;
    json_object_set_new(run, "enqueue_call_ms", dist_json(v, (size_t)n));
    for (int64_t i = 0; i < n; i++) v[i] = (double)st[i] - (double)t0[i] / 1000.0;
    json_object_set_new(run, "started_at_minus_enqueue_raw_ms", dist_json(v, (size_t)n));
    json_object_set_new(run, "resources", resources_json(&res));
    json_object_set_new(run, "worker_cpu_split", cpu_split_json(&w));
    json_object_set_new(run, "redis_commands", cmdstats_delta(&cs0, &cs1, n, line, sizeof line));
    add_run(b, run);
    if (missing > 0) progress("warning: %zu done messages never arrived", missing);
    progress("latency%s run %d/%d: enqueue→%s p50 %.3f p99 %.3f ms, →done message p50 %.3f ms, "
             "→celer_wait p50 %.3f ms; %lld of %lld sends late by over 1 ms",
             probe ? " probe" : "", rep + 1, b->o.repeat, probe ? "handler start" : "start",
             p50, p99, p50_done, p50_wait, (long long)behind, (long long)n);
    progress("  Redis per task: %s", line);
  }
  if (sub_on || sub.conn.ctx) broker_close(&sub.conn);
  if (pr.fd >= 0) close(pr.fd);
  if (probe) harness_rmtree(dir);
  free(pr.seen_us);
  free(cs0.v);
  free(cs1.v);
  free(sub.recv_us);
  free(t0);
  free(te);
  free(t1);
  free(st);
  free(v);
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

static int run_latency(bench *b) {
  fprintf(stderr, "latency: %lld tasks of %s at %.0f/s, %d children, prefetch %d; then the same "
                  "with test.mark seen by inotify\n",
          (long long)tasks_for(b, DEF_LATENCY_TASKS), b->o.task, b->o.rate, b->o.concurrency,
          b->o.prefetch);
  celer_client *c = client_open(b);
  if (c == NULL) return -1;
  int rc = 0;
  for (int rep = 0; rc == 0 && rep < b->o.repeat; rep++) {
    rc = latency_once(b, c, rep, false);
    if (rc == 0) rc = latency_once(b, c, rep, true);
  }
  celer_client_free(c);
  return rc;
}

/* ---- schedule ---- */

static int schedule_once(bench *b, celer_client *c, int rep) {
  int64_t n = tasks_for(b, DEF_SCHEDULE_TASKS);
  char queue[32];
  snprintf(queue, sizeof queue, "sched-r%d", rep);
  task_id *ids = calloc((size_t)n, sizeof *ids);
  int64_t *etas = calloc((size_t)n, sizeof *etas), *started = calloc((size_t)n, sizeof *started);
  int64_t *finished = calloc((size_t)n, sizeof *finished);
  double *late = calloc((size_t)n, sizeof *late);
  worker_proc w;
  memset(&w, 0, sizeof w);
  cmdstats cs0 = {NULL, 0}, cs1 = {NULL, 0};
  int rc = ids && etas && started && finished && late ? 0 : fail("out of memory");
  double r0 = NAN, r1 = NAN, cpu = 0;
  if (rc == 0) rc = worker_start(b, &w, queue, b->o.concurrency, b->o.prefetch, queue);
  if (rc == 0) rc = worker_wait_ready(b, &w, b->o.concurrency);
  if (rc == 0) rc = warm_up(b, c, &w, queue, BENCH_WARMUP);
  int64_t base = 0, enqueued_at = 0;
  if (rc == 0) {
    base = wall_ms() + b->o.lead_ms;
    for (int64_t i = 0; i < n; i++) etas[i] = base + i * b->o.spread_ms / n;
    cmdstats_read(b, &cs0);
    r0 = redis_cpu_s(b);
    rc = enqueue_tasks(b, c, queue, n, b->o.batch, ids, etas);
    enqueued_at = wall_ms();
    if (rc == 0 && enqueued_at >= base)
      rc = fail("enqueueing %lld delayed tasks took longer than the lead of %lld ms, so "
                "lateness would include the enqueueing; raise --lead",
                (long long)n, (long long)b->o.lead_ms);
  }
  if (rc == 0)
    rc = wait_processed(b, &w, queue, n + BENCH_WARMUP, b->o.lead_ms + b->o.spread_ms,
                        "running the delayed tasks");
  if (rc == 0) {
    r1 = redis_cpu_s(b);
    cmdstats_read(b, &cs1);
    rc = worker_stop(b, &w, &cpu);
  } else if (w.pid > 0) {
    worker_kill(b, &w);
  }
  if (rc == 0) rc = read_records(b, queue, ids, n, started, finished);
  if (rc == 0) {
    json_t *cmds = cmdstats_delta(&cs0, &cs1, n, NULL, 0);
    for (int64_t i = 0; i < n; i++) late[i] = (double)(started[i] - etas[i]);
    resources res = res_none();
    res.redis_us = per_task_us(r0, r1, n);
    worker_resources(&w, cpu, n + BENCH_WARMUP, &res);
    json_t *run = json_object();
    json_object_set_new(run, "workload", json_string("schedule"));
    json_object_set_new(run, "repetition", json_integer(rep + 1));
    json_object_set_new(run, "tasks", json_integer(n));
    json_object_set_new(run, "lead_ms", json_integer(b->o.lead_ms));
    json_object_set_new(run, "spread_ms", json_integer(b->o.spread_ms));
    json_object_set_new(run, "enqueue_ms", json_integer(enqueued_at - (base - b->o.lead_ms)));
    json_t *d = dist_json(late, (size_t)n); /* sorts late */
    json_object_set_new(run, "lateness_ms", d);
    json_object_set_new(run, "redis_commands", cmds);
    json_object_set_new(run, "resources", resources_json(&res));
    json_object_set_new(run, "worker_cpu_split", cpu_split_json(&w));
    add_run(b, run);
    double p50 = pct(late, (size_t)n, 50), p99 = pct(late, (size_t)n, 99);
    row_add(row_get(b, "schedule", "countdown lateness p50 (ms)", "ms", 1, true), p50, &res);
    row_add(row_get(b, "schedule", "countdown lateness p99 (ms)", "ms", 1, false), p99, NULL);
    progress("schedule run %d/%d: lateness p50 %.0f ms, p99 %.0f ms, min %.0f, max %.0f ms",
             rep + 1, b->o.repeat, p50, p99, late[0], late[n - 1]);
  }
  free(ids);
  free(etas);
  free(started);
  free(finished);
  free(late);
  free(cs0.v);
  free(cs1.v);
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

static int run_schedule(bench *b) {
  fprintf(stderr, "schedule: %lld tasks of %s due over %lld ms, starting %lld ms ahead\n",
          (long long)tasks_for(b, DEF_SCHEDULE_TASKS), b->o.task, (long long)b->o.spread_ms,
          (long long)b->o.lead_ms);
  celer_client *c = client_open(b);
  if (c == NULL) return -1;
  int rc = 0;
  for (int rep = 0; rc == 0 && rep < b->o.repeat; rep++) rc = schedule_once(b, c, rep);
  celer_client_free(c);
  return rc;
}

/* ---- ceiling ---- */

/* Per task: ack and delete the entry, store the record, publish. */
static const char ceiling_script_one[] =
    "redis.call('XACK', KEYS[1], 'g', ARGV[1])\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "redis.call('SET', KEYS[2], ARGV[2], 'PX', 86400000)\n"
    "redis.call('PUBLISH', KEYS[3], 'SUCCEEDED')\n"
    "return 1\n";

/* The same for a batch: ARGV[1] result prefix, ARGV[2] channel prefix,
 * then (entry id, task id, record) per task. */
static const char ceiling_script_batch[] =
    "for i = 3, #ARGV, 3 do\n"
    "  redis.call('XACK', KEYS[1], 'g', ARGV[i])\n"
    "  redis.call('XDEL', KEYS[1], ARGV[i])\n"
    "  redis.call('SET', ARGV[1] .. ARGV[i + 1], ARGV[i + 2], 'PX', 86400000)\n"
    "  redis.call('PUBLISH', ARGV[2] .. ARGV[i + 1], 'SUCCEEDED')\n"
    "end\n"
    "return #ARGV\n";

/* An envelope and a record of the sizes Celer's own would have. */
static void ceiling_texts(bench *b, char **envelope, char **record) {
  int64_t now = wall_ms();
  json_t *args = b->args ? json_incref(b->args) : json_array();
  json_t *env = json_pack("{s:s, s:s, s:s, s:o, s:{}, s:I}", "id",
                          "0f9c4c8e-5d5e-4a8b-9a55-6f0d8f9b2c11", "task", b->o.task, "queue",
                          "ceiling", "args", args, "kwargs",
                          "enqueued_at", (json_int_t)now);
  json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:n, s:I, s:I, s:I, s:s, s:s}", "id",
                          "0f9c4c8e-5d5e-4a8b-9a55-6f0d8f9b2c11", "task", b->o.task, "queue",
                          "ceiling", "state", "SUCCEEDED", "attempt", 0, "result", "enqueued_at",
                          (json_int_t)now, "started_at", (json_int_t)now, "finished_at",
                          (json_int_t)now, "worker", "bench-host:123456", "entry",
                          "1700000000000-0");
  *envelope = json_dumps(env, JSON_COMPACT);
  *record = json_dumps(rec, JSON_COMPACT);
  json_decref(env);
  json_decref(rec);
}

static int ceiling_load(redisContext *ctx, const char *script, char sha[41]) {
  const char *argv[] = {"SCRIPT", "LOAD", script};
  redisReply *r = redisCommandArgv(ctx, 3, argv, NULL);
  if (r == NULL) return fail("SCRIPT LOAD: %s", ctx->errstr);
  int ok = r->type == REDIS_REPLY_STRING && r->len == 40;
  if (ok) memcpy(sha, r->str, 41);
  else fail("SCRIPT LOAD: %s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
  freeReplyObject(r);
  return ok ? 0 : -1;
}

/* Runs n task lives through one connection, `depth` tasks per round trip:
 * each round sends XADD for `depth` new tasks, XREADGROUP (COUNT 1 per
 * task, or one COUNT depth when batched) and the completion script for
 * the previous round's entries (one EVALSHA per task, or one per round).
 * Returns the number of commands sent, or -1. */
static int64_t ceiling_loop(bench *b, redisContext *ctx, bool batched, int64_t n, int depth,
                            const char *sha, const char *envelope, const char *record) {
  char stream[BROKER_KEY_MAX + 1], rprefix[BROKER_KEY_MAX + 1], dprefix[BROKER_KEY_MAX + 1];
  broker_key(stream, b->ns, "ceiling", "stream", NULL);
  broker_key(rprefix, b->ns, "ceiling", "result:", NULL);
  broker_key(dprefix, b->ns, "ceiling", "done:", NULL);
  size_t elen = strlen(envelope), rlen = strlen(record), slen = strlen(stream);
  char(*prev)[32] = calloc((size_t)depth, 32), (*cur)[32] = calloc((size_t)depth, 32);
  char(*seq)[24] = calloc((size_t)depth, 24);
  size_t nargs = 6 + 3 * (size_t)depth;
  const char **argv = calloc(nargs, sizeof *argv);
  size_t *lens = calloc(nargs, sizeof *lens);
  if (!prev || !cur || !seq || !argv || !lens) {
    free(prev);
    free(cur);
    free(seq);
    free(argv);
    free(lens);
    fail("out of memory");
    return -1;
  }
  char count[16];
  snprintf(count, sizeof count, "%d", depth);
  int64_t commands = 0, done = 0, nprev = 0;
  int rc = 0;
  while (rc == 0 && (done < n || nprev > 0)) {
    int64_t k = n - done < depth ? n - done : depth;
    for (int64_t j = 0; j < k; j++) {
      const char *xadd[] = {"XADD", stream, "*", "task", envelope};
      size_t xlen[] = {4, slen, 1, 4, elen};
      redisAppendCommandArgv(ctx, 5, xadd, xlen);
    }
    int reads = 0;
    if (k > 0 && !batched) {
      for (int64_t j = 0; j < k; j++) {
        const char *xr[] = {"XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", stream, ">"};
        redisAppendCommandArgv(ctx, 9, xr, NULL);
      }
      reads = (int)k;
    } else if (k > 0) {
      snprintf(count, sizeof count, "%lld", (long long)k);
      const char *xr[] = {"XREADGROUP", "GROUP", "g", "c", "COUNT", count, "STREAMS", stream, ">"};
      redisAppendCommandArgv(ctx, 9, xr, NULL);
      reads = 1;
    }
    int evals = 0;
    if (nprev > 0 && !batched) {
      for (int64_t j = 0; j < nprev; j++) {
        char rkey[BROKER_KEY_MAX + 24], dkey[BROKER_KEY_MAX + 24];
        snprintf(rkey, sizeof rkey, "%s%lld", rprefix, (long long)(done - nprev + j));
        snprintf(dkey, sizeof dkey, "%s%lld", dprefix, (long long)(done - nprev + j));
        const char *ev[] = {"EVALSHA", sha, "3", stream, rkey, dkey, prev[j], record};
        size_t evlen[] = {7, 40, 1, slen, strlen(rkey), strlen(dkey), strlen(prev[j]), rlen};
        redisAppendCommandArgv(ctx, 8, ev, evlen);
      }
      evals = (int)nprev;
    } else if (nprev > 0) {
      size_t a = 0;
      const char *head[] = {"EVALSHA", sha, "1", stream, rprefix, dprefix};
      for (size_t h = 0; h < sizeof head / sizeof head[0]; h++, a++) {
        argv[a] = head[h];
        lens[a] = strlen(head[h]);
      }
      for (int64_t j = 0; j < nprev; j++) {
        snprintf(seq[j], 24, "%lld", (long long)(done - nprev + j));
        const char *task_args[] = {prev[j], seq[j], record};
        for (size_t h = 0; h < 3; h++, a++) {
          argv[a] = task_args[h];
          lens[a] = h == 2 ? rlen : strlen(task_args[h]);
        }
      }
      redisAppendCommandArgv(ctx, (int)a, argv, lens);
      evals = 1;
    }
    for (int64_t j = 0; rc == 0 && j < k; j++) {
      redisReply *r = next_reply(ctx, "XADD");
      if (r == NULL) rc = -1;
      else if (r->type != REDIS_REPLY_STRING || r->len >= 32) rc = fail("XADD: unexpected reply");
      else memcpy(cur[j], r->str, r->len + 1);
      if (r) freeReplyObject(r);
    }
    for (int j = 0; rc == 0 && j < reads; j++) {
      redisReply *r = next_reply(ctx, "XREADGROUP");
      if (r == NULL) rc = -1;
      else if (r->type != REDIS_REPLY_ARRAY || r->elements != 1)
        rc = fail("XREADGROUP found no new entry");
      if (r) freeReplyObject(r);
    }
    for (int j = 0; rc == 0 && j < evals; j++) {
      redisReply *r = next_reply(ctx, "EVALSHA");
      if (r == NULL) rc = -1;
      if (r) freeReplyObject(r);
    }
    commands += k + reads + evals;
    done += k;
    nprev = k;
    char(*t)[32] = prev;
    prev = cur;
    cur = t;
    if (g_interrupted) rc = fail("interrupted");
  }
  free(prev);
  free(cur);
  free(seq);
  free(argv);
  free(lens);
  return rc == 0 ? commands : -1;
}

static int ceiling_direct(bench *b, bool batched, int rep) {
  int64_t n = b->o.ceiling_tasks;
  int depth = b->o.pipeline;
  broker_conn conn;
  broker_init(&conn, &b->burl, b->ns, timeout_ms(b));
  if (broker_connect(&conn) != 0) return fail("ceiling: %s", conn.errstr);
  redisContext *ctx = conn.ctx;
  char stream[BROKER_KEY_MAX + 1], sha[41];
  broker_key(stream, b->ns, "ceiling", "stream", NULL);
  const char *grp[] = {"XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"};
  redisReply *r = redisCommandArgv(ctx, 6, grp, NULL);
  int rc = r && r->type != REDIS_REPLY_ERROR
               ? 0
               : fail("XGROUP CREATE: %s", r ? r->str : ctx->errstr);
  if (r) freeReplyObject(r);
  if (rc == 0) rc = ceiling_load(ctx, batched ? ceiling_script_batch : ceiling_script_one, sha);
  char *envelope = NULL, *record = NULL;
  ceiling_texts(b, &envelope, &record);
  if (rc == 0 && (envelope == NULL || record == NULL)) rc = fail("out of memory");
  if (rc == 0) {
    cmdstats cs0, cs1;
    cmdstats_read(b, &cs0);
    double r0 = redis_cpu_s(b), c0 = thread_cpu_us();
    int64_t t0 = mono_ns();
    int64_t commands = ceiling_loop(b, ctx, batched, n, depth, sha, envelope, record);
    int64_t t1 = mono_ns();
    double c1 = thread_cpu_us(), r1 = redis_cpu_s(b);
    cmdstats_read(b, &cs1);
    char line[512];
    json_t *cmds = cmdstats_delta(&cs0, &cs1, n, line, sizeof line);
    if (commands < 0) rc = -1;
    if (rc == 0) {
      double secs = (double)(t1 - t0) / 1e9, tps = (double)n / secs;
      double cps = (double)commands / secs;
      resources res = res_none();
      res.redis_us = per_task_us(r0, r1, n);
      res.client_us = (c1 - c0) / (double)n;
      char m1[112], m2[112];
      if (batched) {
        snprintf(m1, sizeof m1, "task life, batched: %d XADD + 1 XREADGROUP + 1 EVALSHA (tasks/s)",
                 depth);
        snprintf(m2, sizeof m2, "  the same in Redis commands/s");
      } else {
        snprintf(m1, sizeof m1, "task life: XADD + XREADGROUP + EVALSHA, %d tasks/trip (tasks/s)",
                 depth);
        snprintf(m2, sizeof m2, "  the same in Redis commands/s (3 per task)");
      }
      row_add(row_get(b, "ceiling", m1, "tasks/s", 0, true), tps, &res);
      row_add(row_get(b, "ceiling", m2, "ops/s", 0, false), cps, NULL);
      /* This client and Redis take turns on one connection; with Redis
       * busy all the time, it would do this many. */
      double limit = res.redis_us > 0 ? 1e6 / res.redis_us : NAN;
      char m3[112];
      snprintf(m3, sizeof m3, "  Redis-bound limit%s: 1 s ÷ Redis µs/task (tasks/s)",
               batched ? " (batched)" : "");
      row_add(row_get(b, "ceiling", m3, "tasks/s", 0, false), limit, NULL);
      json_t *run = json_object();
      json_object_set_new(run, "workload", json_string("ceiling"));
      json_object_set_new(run, "mode", json_string(batched ? "batched" : "per task"));
      json_object_set_new(run, "repetition", json_integer(rep + 1));
      json_object_set_new(run, "tasks", json_integer(n));
      json_object_set_new(run, "tasks_per_round_trip", json_integer(depth));
      json_object_set_new(run, "commands", json_integer(commands));
      json_object_set_new(run, "envelope_bytes", json_integer((json_int_t)strlen(envelope)));
      json_object_set_new(run, "record_bytes", json_integer((json_int_t)strlen(record)));
      json_object_set_new(run, "tasks_per_s", jnum(tps));
      json_object_set_new(run, "commands_per_s", jnum(cps));
      json_object_set_new(run, "redis_bound_tasks_per_s", jnum(limit));
      json_object_set_new(run, "resources", resources_json(&res));
      json_object_set(run, "redis_commands", cmds);
      add_run(b, run);
      progress("ceiling %s, run %d/%d: %.0f tasks/s, %.0f commands/s, Redis %.2f us/task",
               batched ? "batched" : "per task", rep + 1, b->o.repeat, tps, cps, res.redis_us);
      progress("  Redis per task: %s", line);
    }
    json_decref(cmds);
  }
  free(envelope);
  free(record);
  broker_close(&conn);
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

/* The second field of the first data line of redis-benchmark --csv. */
static double rb_parse_rps(const char *out) {
  for (const char *line = out; line && *line;) {
    if (line[0] == '"') {
      const char *q = strchr(line + 1, '"');
      if (q && q[1] == ',' && q[2] == '"' && isdigit((unsigned char)q[3]))
        return strtod(q + 3, NULL);
    }
    line = strchr(line, '\n');
    if (line) line++;
  }
  return NAN;
}

/* One redis-benchmark run of a custom command; 1 when redis-benchmark is
 * not installed, 0 done, -1 failed. */
static int rb_once(bench *b, const char *name, const char *const *cmd, int pipeline,
                   int clients, int64_t n, int rep) {
  const char *argv[40];
  int a = 0;
  char port[16], db[16], num[24], pipe_s[16], clients_s[16];
  argv[a++] = "redis-benchmark";
  if (b->burl.is_unix) {
    argv[a++] = "-s";
    argv[a++] = b->burl.path;
  } else {
    snprintf(port, sizeof port, "%d", b->burl.port);
    argv[a++] = "-h";
    argv[a++] = b->burl.host;
    argv[a++] = "-p";
    argv[a++] = port;
  }
  if (b->burl.db) {
    snprintf(db, sizeof db, "%d", b->burl.db);
    argv[a++] = "--dbnum";
    argv[a++] = db;
  }
  if (b->burl.password[0]) {
    if (b->burl.user[0]) {
      argv[a++] = "--user";
      argv[a++] = b->burl.user;
    }
    argv[a++] = "-a";
    argv[a++] = b->burl.password;
  }
  snprintf(num, sizeof num, "%lld", (long long)n);
  snprintf(pipe_s, sizeof pipe_s, "%d", pipeline);
  argv[a++] = "-n";
  argv[a++] = num;
  argv[a++] = "-P";
  argv[a++] = pipe_s;
  snprintf(clients_s, sizeof clients_s, "%d", clients);
  argv[a++] = "-c";
  argv[a++] = clients_s;
  argv[a++] = "--csv";
  for (int i = 0; cmd[i] && a < 39; i++) argv[a++] = cmd[i];
  argv[a] = NULL;
  char *out = NULL, *err = NULL;
  double r0 = redis_cpu_s(b);
  int rc = harness_run(argv, NULL, NULL, 0, &out, &err, timeout_ms(b) * 5);
  double r1 = redis_cpu_s(b);
  int result = 0;
  if (rc == 127 && err && strstr(err, "cannot run")) {
    result = 1;
  } else if (rc != 0) {
    result = fail("redis-benchmark %s -P %d exited with %d: %s", name, pipeline, rc,
                  err && *err ? err : "(no message)");
  } else {
    double rps = rb_parse_rps(out);
    if (isnan(rps)) {
      result = fail("redis-benchmark %s -P %d: no result in its output: %.300s", name, pipeline,
                    out ? out : "");
    } else {
      char measure[112];
      snprintf(measure, sizeof measure, "redis-benchmark %s, -P %d, %d client%s (ops/s)", name,
               pipeline, clients, clients == 1 ? "" : "s");
      resources res = res_none();
      res.redis_us = per_task_us(r0, r1, n);
      row_add(row_get(b, "ceiling", measure, "ops/s", 0, true), rps, &res);
      json_t *run = json_object();
      json_object_set_new(run, "workload", json_string("ceiling"));
      json_object_set_new(run, "mode", json_string("redis-benchmark"));
      json_object_set_new(run, "command", json_string(name));
      json_object_set_new(run, "pipeline", json_integer(pipeline));
      json_object_set_new(run, "clients", json_integer(clients));
      json_object_set_new(run, "repetition", json_integer(rep + 1));
      json_object_set_new(run, "requests", json_integer(n));
      json_object_set_new(run, "ops_per_s", jnum(rps));
      json_object_set_new(run, "redis_cpu_us_per_op", jnum(res.redis_us));
      add_run(b, run);
      progress("redis-benchmark %s -P %d -c %d, run %d/%d: %.0f ops/s, Redis %.2f us/op", name,
               pipeline, clients, rep + 1, b->o.repeat, rps, res.redis_us);
    }
  }
  free(out);
  free(err);
  return result;
}

static int run_ceiling(bench *b) {
  fprintf(stderr, "ceiling: %lld task lives, %d tasks per round trip; redis-benchmark "
                  "reference\n",
          (long long)b->o.ceiling_tasks, b->o.pipeline);
  char key[BROKER_KEY_MAX + 1];
  broker_key(key, b->ns, "rb", "key", NULL);
  const char *ping[] = {"PING", NULL};
  const char *set[] = {"SET", key, "xxx", NULL};
  int rc = 0;
  for (int rep = 0; rc == 0 && rep < b->o.repeat; rep++) {
    /* PING and SET unpipelined and 16 deep from 50 clients; then PING
     * from one client, one request per round trip: the most one caller
     * that waits for each answer can do, as one-call enqueue does. */
    for (int i = 0; rc == 0 && !b->rb_missing && i < 5; i++) {
      int pipeline = i < 2 || i == 4 ? 1 : 16;
      int clients = i == 4 ? 1 : 50;
      int64_t n = pipeline == 1 ? b->o.ceiling_tasks : b->o.ceiling_tasks * 10;
      if (clients == 1) n = b->o.ceiling_tasks / 4;
      int r = rb_once(b, i % 2 ? "SET" : "PING", i % 2 ? set : ping, pipeline, clients, n, rep);
      if (r == 1) {
        b->rb_missing = true;
        progress("redis-benchmark is not installed (Debian package redis-tools): its reference "
                 "rows are left out");
      }
      rc = r < 0 ? -1 : 0;
    }
    if (rc == 0) rc = ceiling_direct(b, false, rep);
    if (rc == 0) rc = ceiling_direct(b, true, rep);
  }
  if (ns_cleanup(b) != 0) rc = -1;
  return rc;
}

/* ---- the report ---- */

/* Display width of UTF-8 text (one column per code point). */
static size_t width(const char *s) {
  size_t w = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xC0) != 0x80) w++;
  return w;
}

static void put_padded(const char *s, size_t w, bool right) {
  size_t n = width(s);
  if (right)
    for (size_t i = n; i < w; i++) putchar(' ');
  fputs(s, stdout);
  if (!right)
    for (size_t i = n; i < w; i++) putchar(' ');
}

/* v with `decimals` decimals and thousands separators; "-" for NaN. */
static void fmt_num(char *buf, size_t size, double v, int decimals) {
  if (isnan(v)) {
    snprintf(buf, size, "-");
    return;
  }
  char raw[64];
  snprintf(raw, sizeof raw, "%.*f", decimals, v);
  const char *digits = raw[0] == '-' ? raw + 1 : raw;
  const char *dot = strchr(digits, '.');
  size_t intlen = dot ? (size_t)(dot - digits) : strlen(digits);
  size_t o = 0;
  if (raw[0] == '-' && o + 1 < size) buf[o++] = '-';
  for (size_t i = 0; i < intlen && o + 2 < size; i++) {
    if (i > 0 && (intlen - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  for (const char *p = digits + intlen; *p && o + 1 < size; p++) buf[o++] = *p;
  buf[o] = '\0';
}

#define TABLE_COLS 8

static void print_table(bench *b) {
  static const char *const head[TABLE_COLS] = {
      "workload", "measure", "median", "min–max", "Redis µs/task", "worker µs/task",
      "client µs/task", "worker RSS (PSS) MiB"};
  char cells[BENCH_ROWS_MAX][TABLE_COLS][128];
  size_t w[TABLE_COLS];
  for (int c = 0; c < TABLE_COLS; c++) w[c] = width(head[c]);
  for (size_t i = 0; i < b->nrows; i++) {
    row *r = &b->rows[i];
    double med, lo, hi;
    char x[48], y[48];
    snprintf(cells[i][0], 128, "%s", i > 0 && strcmp(b->rows[i - 1].workload, r->workload) == 0
                                         ? ""
                                         : r->workload);
    snprintf(cells[i][1], 128, "%s", r->measure);
    series_stats(&r->value, &med, &lo, &hi);
    fmt_num(cells[i][2], 128, med, r->decimals);
    fmt_num(x, sizeof x, lo, r->decimals);
    fmt_num(y, sizeof y, hi, r->decimals);
    snprintf(cells[i][3], 128, "%s–%s", x, y);
    const series *res[3] = {&r->redis_us, &r->worker_us, &r->client_us};
    for (int c = 0; c < 3; c++) {
      series_stats(res[c], &med, &lo, &hi);
      fmt_num(cells[i][4 + c], 128, r->resources ? med : NAN, 2);
    }
    series_stats(&r->rss_mib, &med, &lo, &hi);
    fmt_num(x, sizeof x, r->resources ? med : NAN, 1);
    series_stats(&r->pss_mib, &med, &lo, &hi);
    fmt_num(y, sizeof y, r->resources ? med : NAN, 1);
    if (strcmp(x, "-") == 0) snprintf(cells[i][7], 128, "-");
    else snprintf(cells[i][7], 128, "%s (%s)", x, y);
    for (int c = 0; c < TABLE_COLS; c++)
      if (width(cells[i][c]) > w[c]) w[c] = width(cells[i][c]);
  }
  putchar('\n');
  for (int c = 0; c < TABLE_COLS; c++) {
    put_padded(head[c], w[c], c >= 2);
    fputs(c + 1 < TABLE_COLS ? "  " : "\n", stdout);
  }
  for (int c = 0; c < TABLE_COLS; c++) {
    for (size_t i = 0; i < w[c]; i++) putchar('-');
    fputs(c + 1 < TABLE_COLS ? "  " : "\n", stdout);
  }
  for (size_t i = 0; i < b->nrows; i++)
    for (int c = 0; c < TABLE_COLS; c++) {
      put_padded(cells[i][c], w[c], c >= 2);
      fputs(c + 1 < TABLE_COLS ? "  " : "\n", stdout);
    }
}

static const char *const report_notes[] = {
    "Median and min–max over the repetitions; the resource columns are medians, on the first "
    "row of each run.",
    "Redis µs/task: INFO cpu used_cpu_user+used_cpu_sys delta divided by the tasks (by the "
    "requests for redis-benchmark rows). For drain it covers the worker's start-up to the last "
    "task; for latency the timed loop, including celer_wait's connection per task and the "
    "bench's own subscriber.",
    "worker µs/task: getrusage(RUSAGE_CHILDREN) of the whole worker tree (supervisor, upkeep, "
    "children) from spawn to its exit after SIGTERM, so start-up and shutdown are included "
    "(see idle_worker in the JSON); latency and schedule also count 20 warm-up tasks and the "
    "idle time between tasks.",
    "client µs/task: CPU time of the bench's thread that calls libceler (enqueue, and for "
    "latency also celer_wait; for ceiling the bench's own hiredis pipeline).",
    "worker RSS: peak of the sum of VmRSS over supervisor, upkeep and children, sampled every "
    "50 ms; PSS (shared pages divided among the processes sharing them) in parentheses.",
    "Records carry whole milliseconds: drain spans and lateness have 1 ms resolution. "
    "enqueue→start (record) is started_at + 0.5 ms − the client's enqueue time (µs clock): "
    "sends are dithered within their millisecond so the estimate is unbiased, but each sample "
    "is only good to ±0.5 ms, which widens p99. enqueue→done message (a PSUBSCRIBE already "
    "waiting, read by its own thread) and enqueue→celer_wait returns use a µs clock; the done "
    "message is an upper bound of the start.",
    "enqueue→handler start (test.mark, inotify): a separate run of test.mark, which creates "
    "one file per task first thing in its handler (on /dev/shm); a bench thread sees the "
    "creation through inotify. µs clock, but it includes that thread's wake-up, so it reads "
    "high on a busy machine.",
    "Records are always stored: the worker has no switch to skip them, so there is no "
    "--no-results.",
    "ceiling task life: one connection from the bench, the next round's XADD/XREADGROUP "
    "pipelined with the previous round's completion script (XACK, XDEL, SET PX, PUBLISH); "
    "Celer's complete.lua also writes the record only where none is final (SET NX GET), "
    "counts (HINCRBY, rate buckets) and may publish follow-ups, and a fetch also asks whether "
    "the queue has cancellation marks (EXISTS; ZMSCORE only when it has)."};

static void print_notes(bench *b) {
  printf("\n");
  if (!isnan(b->idle_cpu_ms))
    printf("An idle worker started and stopped: %.1f ms CPU, peak RSS %.1f MiB (%d children).\n",
           b->idle_cpu_ms, b->idle_rss_mib, b->o.concurrency);
  for (size_t i = 0; i < sizeof report_notes / sizeof report_notes[0]; i++)
    printf("- %s\n", report_notes[i]);
}

static json_t *machine_json(bench *b) {
  json_t *m = json_object();
  struct utsname u;
  if (uname(&u) == 0) {
    char k[600];
    snprintf(k, sizeof k, "%s %s %s", u.sysname, u.release, u.machine);
    json_object_set_new(m, "kernel", json_string(k));
    json_object_set_new(m, "host", json_string(u.nodename));
  }
  json_object_set_new(m, "cpus", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *colon = strchr(line, ':');
      if (colon) {
        colon += strspn(colon + 1, " \t") + 1;
        colon[strcspn(colon, "\n")] = '\0';
        json_object_set_new(m, "cpu_model", json_string(colon));
      }
      break;
    }
  }
  if (f) fclose(f);
  json_object_set_new(m, "redis_version", json_string(b->redis_version));
  char desc[512];
  broker_url_describe(&b->burl, desc, sizeof desc);
  json_object_set_new(m, "broker", json_string(desc));
  json_object_set_new(m, "own_redis_server", json_boolean(b->own_redis));
  return m;
}

static json_t *config_json(bench *b) {
  json_t *c = json_object();
  json_object_set_new(c, "tasks", b->o.tasks ? json_integer(b->o.tasks) : json_null());
  json_object_set_new(c, "batch", json_integer(b->o.batch));
  json_object_set_new(c, "repeat", json_integer(b->o.repeat));
  json_object_set_new(c, "concurrency", json_integer(b->o.concurrency));
  json_object_set_new(c, "prefetch", json_integer(b->o.prefetch));
  json_object_set_new(c, "best_prefetch", json_integer(b->o.best_prefetch));
  json_object_set_new(c, "rate", jnum(b->o.rate));
  json_object_set_new(c, "payload_bytes", json_integer(b->o.payload));
  json_object_set_new(c, "task", json_string(b->o.task));
  json_object_set_new(c, "lead_ms", json_integer(b->o.lead_ms));
  json_object_set_new(c, "spread_ms", json_integer(b->o.spread_ms));
  json_object_set_new(c, "ceiling_tasks", json_integer(b->o.ceiling_tasks));
  json_object_set_new(c, "pipeline", json_integer(b->o.pipeline));
  json_object_set_new(c, "timeout_s", json_integer(b->o.timeout_s));
  json_object_set_new(c, "worker", json_string(b->worker_bin));
  json_object_set_new(c, "redis_cpus",
                      b->o.redis_cpus ? json_string(b->o.redis_cpus) : json_null());
  json_object_set_new(c, "worker_cpus",
                      b->o.worker_cpus ? json_string(b->o.worker_cpus) : json_null());
  json_object_set_new(c, "client_cpus",
                      b->o.client_cpus ? json_string(b->o.client_cpus) : json_null());
  return c;
}

static int write_json(bench *b, const char *error) {
  json_t *root = json_object();
  json_object_set_new(root, "tool", json_string("celer-bench"));
  json_object_set_new(root, "celer_version", json_string(CELER_BENCH_VERSION));
  json_object_set_new(root, "finished_at_ms", json_integer(wall_ms()));
  json_object_set_new(root, "ok", json_boolean(error == NULL));
  if (error) json_object_set_new(root, "error", json_string(error));
  json_object_set_new(root, "machine", machine_json(b));
  json_object_set_new(root, "config", config_json(b));
  json_t *rows = json_array();
  for (size_t i = 0; i < b->nrows; i++) {
    row *r = &b->rows[i];
    json_t *o = series_json(&r->value);
    json_object_set_new(o, "workload", json_string(r->workload));
    json_object_set_new(o, "measure", json_string(r->measure));
    json_object_set_new(o, "unit", json_string(r->unit));
    if (r->resources) {
      json_object_set_new(o, "redis_cpu_us_per_task", series_json(&r->redis_us));
      json_object_set_new(o, "worker_cpu_us_per_task", series_json(&r->worker_us));
      json_object_set_new(o, "client_cpu_us_per_task", series_json(&r->client_us));
      json_object_set_new(o, "worker_peak_rss_mib", series_json(&r->rss_mib));
      json_object_set_new(o, "worker_peak_pss_mib", series_json(&r->pss_mib));
    }
    json_array_append_new(rows, o);
  }
  json_object_set_new(root, "results", rows);
  json_object_set(root, "runs", b->runs);
  json_t *idle = json_object();
  json_object_set_new(idle, "cpu_ms", jnum(b->idle_cpu_ms));
  json_object_set_new(idle, "peak_rss_mib", jnum(b->idle_rss_mib));
  json_object_set_new(root, "idle_worker", idle);
  json_t *notes = json_array();
  for (size_t i = 0; i < sizeof report_notes / sizeof report_notes[0]; i++)
    json_array_append_new(notes, json_string(report_notes[i]));
  json_object_set_new(root, "notes", notes);
  int rc = json_dump_file(root, b->o.json_path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (rc != 0) return fail("cannot write %s: %s", b->o.json_path, strerror(errno));
  fprintf(stderr, "report written to %s\n", b->o.json_path);
  return 0;
}

/* ---- set-up and options ---- */

static const char usage_text[] =
    "usage: celer-bench [options] WORKLOAD...\n"
    "Benchmarks Celer: libceler and celer-worker (module testing) on a private\n"
    "redis-server (Unix socket) unless --broker is given. Prints a table and\n"
    "writes a JSON report.\n"
    "\n"
    "Workloads (each repeated --repeat times; median and min-max reported):\n"
    "  enqueue    N tasks with one celer_enqueue per task, then in batches of\n"
    "             --batch with celer_enqueue_batch (default N 20000)\n"
    "  drain      N tasks queued first, then a worker started; first task's start to\n"
    "             the last one's finish, with --prefetch and with --best-prefetch\n"
    "             (default N 20000)\n"
    "  latency    an idle worker; tasks sent one at a time at --rate: enqueue→start,\n"
    "             enqueue→done message, enqueue→celer_wait returns; then a run of\n"
    "             test.mark whose handler start is seen by inotify (default N 2000)\n"
    "  schedule   N tasks with an eta spread over --spread ms starting --lead ms\n"
    "             ahead; lateness = started_at − eta (default N 1000)\n"
    "  ceiling    a task's Redis commands without Celer (XADD, XREADGROUP, a script\n"
    "             doing XACK+XDEL+SET+PUBLISH), pipelined; redis-benchmark PING and\n"
    "             SET with -P 1 and -P 16 (50 clients), and PING from one client\n"
    "             with -P 1 (one caller's round trip), as the machine's reference\n"
    "  all        every workload above\n"
    "\n"
    "Options:\n"
    "  --tasks N            tasks per run (default: per workload, above)\n"
    "  --batch B            batch size of celer_enqueue_batch (default 1000)\n"
    "  --repeat R           repetitions of every measurement, 1..50 (default 3)\n"
    "  --concurrency C      worker children (default 2)\n"
    "  --prefetch P         worker --prefetch (default 1: fair)\n"
    "  --best-prefetch P    drain's \"best config\" prefetch (default 100)\n"
    "  --rate R             latency: tasks per second (default 500)\n"
    "  --payload BYTES      args carry one string of this many bytes (default 0: [])\n"
    "  --task NAME          task to run: test.noop (default) or test.echo\n"
    "  --lead MS            schedule: first eta this far ahead (default 1000)\n"
    "  --spread MS          schedule: etas spread over this long (default 3000)\n"
    "  --ceiling-tasks N    ceiling: task lives per run (default 200000);\n"
    "                       redis-benchmark -P 16 sends 10 times as many\n"
    "  --pipeline D         ceiling: tasks per round trip (default 16)\n"
    "  --timeout SEC        longest wait without progress (default 60)\n"
    "  --broker URL         use this Redis instead of a private one (keys go to\n"
    "                       a namespace celerbench-<pid> and are deleted)\n"
    "  --worker PATH        celer-worker to run (default: beside celer-bench)\n"
    "  --json FILE          JSON report (default bench-report.json)\n"
    "  --redis-cpus LIST    pin the private redis-server to these CPUs (0,2-3)\n"
    "  --worker-cpus LIST   pin celer-worker (and so its children) to these CPUs\n"
    "  --client-cpus LIST   pin celer-bench itself, the producer (default: none is\n"
    "                       pinned; on VMs a wake-up across CPUs can cost more than\n"
    "                       the work, so placement changes the figures a lot)\n"
    "  -h, --help           this text\n"
    "\n"
    "There is no --no-results: the worker always stores a record per task.\n"
    "Exit status: 0 done, 1 a workload failed (dead worker, timeout, a task\n"
    "that did not succeed, broker error), 2 bad usage.\n"
    "\n"
    "example: celer-bench all\n"
    "         celer-bench drain --tasks 100000 --concurrency 4 --repeat 5\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("celer-bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs("\ntry 'celer-bench --help'\n", stderr);
  va_end(ap);
  return 2;
}

static int parse_int(const char *flag, const char *arg, int64_t min, int64_t max, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(arg, &end, 10);
  if (errno || end == arg || *end != '\0' || v < min || v > max)
    return usage_error("%s takes a whole number from %lld to %lld, not '%s'", flag,
                       (long long)min, (long long)max, arg);
  *out = v;
  return 0;
}

enum {
  OPT_TASKS = 256, OPT_BATCH, OPT_REPEAT, OPT_CONCURRENCY, OPT_PREFETCH, OPT_BEST, OPT_RATE,
  OPT_PAYLOAD, OPT_TASK, OPT_LEAD, OPT_SPREAD, OPT_CEILING, OPT_PIPELINE, OPT_TIMEOUT,
  OPT_BROKER, OPT_WORKER, OPT_JSON, OPT_REDIS_CPUS, OPT_WORKER_CPUS, OPT_CLIENT_CPUS
};

static int parse_args(int argc, char **argv, bench_opts *o, int *workloads,
                      cpu_set_t sets[3]) {
  static const struct option longopts[] = {
      {"tasks", required_argument, NULL, OPT_TASKS},
      {"batch", required_argument, NULL, OPT_BATCH},
      {"repeat", required_argument, NULL, OPT_REPEAT},
      {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
      {"prefetch", required_argument, NULL, OPT_PREFETCH},
      {"best-prefetch", required_argument, NULL, OPT_BEST},
      {"rate", required_argument, NULL, OPT_RATE},
      {"payload", required_argument, NULL, OPT_PAYLOAD},
      {"task", required_argument, NULL, OPT_TASK},
      {"lead", required_argument, NULL, OPT_LEAD},
      {"spread", required_argument, NULL, OPT_SPREAD},
      {"ceiling-tasks", required_argument, NULL, OPT_CEILING},
      {"pipeline", required_argument, NULL, OPT_PIPELINE},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"broker", required_argument, NULL, OPT_BROKER},
      {"worker", required_argument, NULL, OPT_WORKER},
      {"json", required_argument, NULL, OPT_JSON},
      {"redis-cpus", required_argument, NULL, OPT_REDIS_CPUS},
      {"worker-cpus", required_argument, NULL, OPT_WORKER_CPUS},
      {"client-cpus", required_argument, NULL, OPT_CLIENT_CPUS},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  opterr = 0;
  int c, rc = 0;
  int64_t v = 0;
  while (rc == 0 && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
      case OPT_TASKS: rc = parse_int("--tasks", optarg, 1, BENCH_TASKS_MAX, &o->tasks); break;
      case OPT_BATCH: rc = parse_int("--batch", optarg, 1, 100000, &o->batch); break;
      case OPT_REPEAT:
        rc = parse_int("--repeat", optarg, 1, BENCH_REPEAT_MAX, &v);
        o->repeat = (int)v;
        break;
      case OPT_CONCURRENCY:
        rc = parse_int("--concurrency", optarg, 1, 256, &v);
        o->concurrency = (int)v;
        break;
      case OPT_PREFETCH:
        rc = parse_int("--prefetch", optarg, 1, 1000, &v);
        o->prefetch = (int)v;
        break;
      case OPT_BEST:
        rc = parse_int("--best-prefetch", optarg, 1, 1000, &v);
        o->best_prefetch = (int)v;
        break;
      case OPT_RATE:
        rc = parse_int("--rate", optarg, 1, 1000000, &v);
        o->rate = (double)v;
        break;
      case OPT_PAYLOAD: rc = parse_int("--payload", optarg, 0, 1048576, &o->payload); break;
      case OPT_TASK:
        if (strcmp(optarg, "test.noop") != 0 && strcmp(optarg, "test.echo") != 0)
          rc = usage_error("--task takes test.noop or test.echo, not '%s'", optarg);
        o->task = optarg;
        break;
      case OPT_LEAD: rc = parse_int("--lead", optarg, 100, 3600000, &o->lead_ms); break;
      case OPT_SPREAD: rc = parse_int("--spread", optarg, 0, 3600000, &o->spread_ms); break;
      case OPT_CEILING:
        rc = parse_int("--ceiling-tasks", optarg, 1, BENCH_TASKS_MAX, &o->ceiling_tasks);
        break;
      case OPT_PIPELINE:
        rc = parse_int("--pipeline", optarg, 1, 1000, &v);
        o->pipeline = (int)v;
        break;
      case OPT_TIMEOUT:
        rc = parse_int("--timeout", optarg, 1, 3600, &v);
        o->timeout_s = (int)v;
        break;
      case OPT_BROKER: o->broker = optarg; break;
      case OPT_WORKER: o->worker = optarg; break;
      case OPT_JSON: o->json_path = optarg; break;
      case OPT_REDIS_CPUS:
      case OPT_WORKER_CPUS:
      case OPT_CLIENT_CPUS: {
        int k = c - OPT_REDIS_CPUS;
        static const char *const flags[] = {"--redis-cpus", "--worker-cpus", "--client-cpus"};
        if (parse_cpus(optarg, &sets[k]) != 0)
          rc = usage_error("%s takes CPU numbers like 0, 1-3 or 0,2 (this machine has %ld), "
                           "not '%s'", flags[k], sysconf(_SC_NPROCESSORS_CONF), optarg);
        if (k == 0) o->redis_cpus = optarg;
        else if (k == 1) o->worker_cpus = optarg;
        else o->client_cpus = optarg;
        break;
      }
      case 'h': fputs(usage_text, stdout); return -1;
      case ':': return usage_error("option %s needs a value", argv[optind - 1]);
      default: return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (rc != 0) return rc;
  static const struct { const char *name; int bit; } names[] = {
      {"enqueue", W_ENQUEUE}, {"drain", W_DRAIN}, {"latency", W_LATENCY},
      {"schedule", W_SCHEDULE}, {"ceiling", W_CEILING},
      {"all", W_ENQUEUE | W_DRAIN | W_LATENCY | W_SCHEDULE | W_CEILING}};
  for (int i = optind; i < argc; i++) {
    int bit = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
      if (strcmp(argv[i], names[k].name) == 0) bit = names[k].bit;
    if (bit == 0)
      return usage_error("unknown workload '%s' (enqueue, drain, latency, schedule, ceiling, all)",
                         argv[i]);
    *workloads |= bit;
  }
  if (*workloads == 0) return usage_error("name a workload, or all");
  return 0;
}

/* celer-worker beside our own binary (build/bin), else the build tree's. */
static void find_worker(bench *b) {
  if (b->o.worker) {
    snprintf(b->worker_bin, sizeof b->worker_bin, "%s", b->o.worker);
    return;
  }
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
      *slash = '\0';
      snprintf(b->worker_bin, sizeof b->worker_bin, "%s/celer-worker", self);
      if (access(b->worker_bin, X_OK) == 0) return;
    }
  }
  snprintf(b->worker_bin, sizeof b->worker_bin, "%s", harness_bin("celer-worker"));
}

static int setup(bench *b) {
  if (b->o.client_cpus && sched_setaffinity(0, sizeof b->home_set, &b->home_set) != 0)
    return fail("--client-cpus %s: %s", b->o.client_cpus, strerror(errno));
  if (sched_getaffinity(0, sizeof b->home_set, &b->home_set) != 0) CPU_ZERO(&b->home_set);
  find_worker(b);
  if (access(b->worker_bin, X_OK) != 0)
    return fail("cannot run %s: %s (run make build, or give --worker)", b->worker_bin,
                strerror(errno));
  if (harness_tmpdir(b->tmpdir, sizeof b->tmpdir) != 0) {
    b->tmpdir[0] = '\0';
    return fail("cannot make a temporary directory: %s", strerror(errno));
  }
  snprintf(b->ns, sizeof b->ns, "celerbench-%ld", (long)getpid());
  if (b->o.broker) {
    snprintf(b->url, sizeof b->url, "%s", b->o.broker);
  } else {
    pin_for_spawn(b, &b->redis_set, b->o.redis_cpus != NULL);
    int started = harness_redis_start(&b->redis, false, NULL);
    pin_for_spawn(b, NULL, false);
    if (started != 0) return fail("cannot start a private redis-server");
    b->own_redis = true;
    snprintf(b->url, sizeof b->url, "%s", b->redis.url);
  }
  char err[CELER_ERRSTR_LEN];
  if (broker_url_parse(b->url, &b->burl, err, sizeof err) != 0) return fail("--broker: %s", err);
  const char *pwfile = getenv("CELER_BROKER_PASSWORD_FILE");
  if (pwfile && *pwfile && broker_url_read_password(pwfile, &b->burl, err, sizeof err) != 0)
    return fail("%s", err);
  broker_init(&b->ctl, &b->burl, b->ns, timeout_ms(b));
  if (broker_connect(&b->ctl) != 0) return fail("%s", b->ctl.errstr);
  const char *argv[] = {"INFO", "server"};
  redisReply *r = redisCommandArgv(b->ctl.ctx, 2, argv, NULL);
  if (r && r->type == REDIS_REPLY_STRING) {
    const char *v = strstr(r->str, "redis_version:");
    if (v) {
      v += strlen("redis_version:");
      snprintf(b->redis_version, sizeof b->redis_version, "%.*s", (int)strcspn(v, "\r\n"), v);
    }
  }
  if (r) freeReplyObject(r);
  if (isnan(redis_cpu_s(b)))
    progress("warning: INFO cpu is not available on this broker: Redis CPU is not reported");
  if (b->o.payload > 0) {
    char *s = malloc((size_t)b->o.payload + 1);
    if (s == NULL) return fail("out of memory");
    memset(s, 'x', (size_t)b->o.payload);
    s[b->o.payload] = '\0';
    b->args = json_pack("[s]", s);
    free(s);
    if (b->args == NULL) return fail("out of memory");
  }
  return 0;
}

static void teardown(bench *b, bool keep_logs) {
  if (b->live) worker_kill(b, b->live);
  if (b->ctl.ctx && !b->own_redis) ns_cleanup(b);
  broker_close(&b->ctl);
  memset(&b->ctl.url, 0, sizeof b->ctl.url);
  if (b->own_redis) harness_redis_stop(&b->redis);
  if (b->tmpdir[0]) {
    if (keep_logs) fprintf(stderr, "celer-bench: worker logs kept in %s\n", b->tmpdir);
    else harness_rmtree(b->tmpdir);
  }
  json_decref(b->args);
  json_decref(b->runs);
}

int main(int argc, char **argv) {
  static bench b;
  b.o = (bench_opts){.batch = 1000, .repeat = 3, .concurrency = 2, .prefetch = 1,
                     .best_prefetch = 100, .rate = 500, .task = "test.noop", .lead_ms = 1000,
                     .spread_ms = 3000, .ceiling_tasks = DEF_CEILING_TASKS, .pipeline = 16,
                     .timeout_s = 60, .json_path = "bench-report.json"};
  b.idle_cpu_ms = b.idle_rss_mib = NAN;
  int workloads = 0;
  cpu_set_t sets[3];
  memset(sets, 0, sizeof sets);
  int rc = parse_args(argc, argv, &b.o, &workloads, sets);
  if (rc != 0) return rc < 0 ? 0 : rc;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  b.redis_set = sets[0];
  b.worker_set = sets[1];
  if (b.o.client_cpus) b.home_set = sets[2];
  b.runs = json_array();
  const char *error = NULL;
  if (setup(&b) != 0) {
    teardown(&b, false);
    return 1;
  }
  fprintf(stderr, "celer-bench: Redis %s at %s, %ld CPUs, namespace %s, %d repetitions\n",
          b.redis_version, b.own_redis ? "a private redis-server (Unix socket)" : "--broker",
          sysconf(_SC_NPROCESSORS_ONLN), b.ns, b.o.repeat);
  static const struct { int bit; const char *name; int (*run)(bench *); } steps[] = {
      {W_ENQUEUE, "enqueue", run_enqueue},    {W_DRAIN, "drain", run_drain},
      {W_LATENCY, "latency", run_latency},    {W_SCHEDULE, "schedule", run_schedule},
      {W_CEILING, "ceiling", run_ceiling}};
  static char error_buf[128];
  for (size_t i = 0; i < sizeof steps / sizeof steps[0] && error == NULL; i++) {
    if (!(workloads & steps[i].bit)) continue;
    if (steps[i].run(&b) != 0) {
      snprintf(error_buf, sizeof error_buf, "the %s workload failed (see the messages above)",
               steps[i].name);
      error = error_buf;
    }
  }
  print_table(&b);
  print_notes(&b);
  if (error) fprintf(stderr, "celer-bench: %s\n", error);
  if (write_json(&b, error) != 0 && error == NULL) error = "cannot write the report";
  teardown(&b, error != NULL);
  return error ? 1 : 0;
}
