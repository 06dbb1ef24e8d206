/* celer-chaos: proves the delivery guarantee under worker crashes.
 *
 * It enqueues N test.mark tasks (each run appends its task id to a marks
 * file), runs W celer-worker processes, SIGKILLs a random one at random
 * intervals and starts a replacement, until every task has a final record
 * or the deadline passes. Then it checks, per task id:
 *   - a final record exists (none missing) and it is SUCCEEDED;
 *   - the handler ran at least once (a line in the marks file);
 * and reports duplicate executions (runs beyond the first, expected under
 * at-least-once delivery), and the broker's duplicate, stale and
 * redelivered counters.
 *
 * A worker is a supervisor with child processes. Killing it means killing
 * its whole process tree, as an OOM kill of its container or the loss of
 * its host would: this program is a child subreaper, so children that
 * outlive their killed supervisor are reparented to it; it reports them
 * as orphans and kills them (or, with --leave-orphans, lets them run on
 * unsupervised until the end, which exercises lease fencing).
 *
 * Exit status: 0 PASS, 1 FAIL, 2 usage error. The last line is always
 * "chaos: 1 passed, 0 failed" or "chaos: 0 passed, 1 failed".
 *
 * Readiness and completion are polled with deadlines; the only timed
 * waits are the random pauses between kills, which are the point. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "celer/client.h"
#include "harness/harness.h"

#define CHAOS_QUEUE "default"
#define CHAOS_BATCH 1000
#define CHAOS_TASKS_MAX 10000000L
#define CHAOS_WORKERS_MAX 64
/* Time spent reading records per turn of the main loop, so that a large
 * run keeps killing on schedule while it checks progress. */
#define CHAOS_CHECK_BUDGET_MS 20
/* Not-final records in a row after which a round of checks starts over:
 * tasks finish roughly in queue order, so the rest is not final either. */
#define CHAOS_CHECK_MISSES 256
/* How often the stragglers (tasks passed by later ones: redelivered) are
 * checked. */
#define CHAOS_SLOW_CHECK_MS 200
/* Pause between two turns of the main loop (a poll with a deadline). */
#define CHAOS_TICK_MS 10
#define CHAOS_PROGRESS_MS 5000
/* How long a worker gets to stop on SIGTERM before it is killed. */
#define CHAOS_STOP_MS 15000
/* Ids shown in detail when the run fails. */
#define CHAOS_DIAG_IDS 10
/* How long the children of a killed worker get to exit on their own
 * before they count as orphans. */
#define CHAOS_ORPHAN_GRACE_MS 200

static const char usage_text[] =
    "usage: celer-chaos [options]\n"
    "Enqueues test.mark tasks, SIGKILLs celer-worker processes at random while\n"
    "they run them, and checks that every task ends with exactly one final\n"
    "SUCCEEDED record. Exit 0 on PASS, 1 on FAIL, 2 on a usage error.\n"
    "\n"
    "  --tasks N          tasks to enqueue (default 5000)\n"
    "  --workers W        worker processes kept running (default 3)\n"
    "  --concurrency C    the workers' --concurrency: children each (default 1)\n"
    "  --kill-every MS    mean time between kills, randomised +-50% (default 300;\n"
    "                     0 = never kill)\n"
    "  --lease SEC        the workers' --lease (default 1)\n"
    "  --prefetch N       the workers' --prefetch (default 5)\n"
    "  --task-ms MS       time each task takes after its mark (default 2)\n"
    "  --deadline SEC     longest time, from the workers' start, for all tasks to\n"
    "                     finish (default 120)\n"
    "  --max-redeliveries N  the workers' --max-redeliveries (default: theirs, 5);\n"
    "                     a task whose worker is killed more often FAILS\n"
    "  --seed N           seed of the kill schedule (default: time and pid)\n"
    "  --broker URL       use this broker instead of a private redis-server\n"
    "                     (redis://... or unix:///path.sock); other workers on it\n"
    "                     must not serve the namespace's default queue\n"
    "  --namespace NS     key prefix for the run (default celer)\n"
    "  --keep             keep the temp dir (marks file, worker logs)\n"
    "  --leave-orphans    let the children of a killed worker run on until the\n"
    "                     end (default: kill them with it)\n"
    "  -h, --help         this text\n";

typedef struct chaos_opts {
  long tasks, workers, kill_every_ms, lease_s, prefetch, task_ms, deadline_s;
  long max_redeliveries; /* -1: the worker's default */
  long concurrency;
  unsigned long long seed;
  bool seed_given, keep, leave_orphans;
  const char *broker, *ns;
} chaos_opts;

typedef struct chaos_worker {
  pid_t pid; /* 0 when not running */
  int slot;
  unsigned gen;
  char name[64];
  char log[PATH_MAX];
} chaos_worker;

/* Which records are final so far. Records are read in rounds over the
 * pending ids in queue order; a round ends early after a run of misses.
 * A pending id that later ids overtook (its task was redelivered to the
 * end of the stream) moves to the slow list, checked on its own beat, so
 * that it does not end every round before the ids behind it. */
typedef struct tracker {
  size_t n;
  char (*ids)[CELER_ID_MAX + 1];
  signed char *state; /* -1: not final (or no record); else a celer_state */
  size_t *pending;    /* indexes of ids not known to be final, in order */
  size_t npending, cursor, streak, nfinal;
  long last_final;    /* cursor position of this round's last final id */
  size_t *slow;       /* overtaken ids */
  size_t nslow;
  long long next_slow;
  unsigned long long errors;
} tracker;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) { interrupted = sig; }

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long long ms) {
  if (ms > 0) poll(NULL, 0, (int)(ms > INT_MAX ? INT_MAX : ms));
}

/* ---- a small seeded generator (splitmix64), so a seed replays the same
 * kill schedule ---- */
static uint64_t rng_state;

static uint64_t rng_next(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static long long next_kill_delay(long mean_ms) {
  return (long long)((double)mean_ms * (0.5 + rng_unit()));
}

/* ---- options ---- */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "celer-chaos: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\ntry 'celer-chaos --help'\n");
  va_end(ap);
  return 2;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < lo || v > hi)
    return usage_error("%s takes a whole number from %ld to %ld, not '%s'", opt, lo, hi, s);
  *out = v;
  return 0;
}

/* Returns 0, 2 (usage error) or -1 (help printed). */
static int parse_args(int argc, char **argv, chaos_opts *o) {
  static const struct option longopts[] = {
      {"tasks", required_argument, NULL, 't'},    {"workers", required_argument, NULL, 'w'},
      {"kill-every", required_argument, NULL, 'k'}, {"lease", required_argument, NULL, 'l'},
      {"prefetch", required_argument, NULL, 'p'}, {"task-ms", required_argument, NULL, 'm'},
      {"deadline", required_argument, NULL, 'd'}, {"seed", required_argument, NULL, 's'},
      {"broker", required_argument, NULL, 'b'},   {"namespace", required_argument, NULL, 'n'},
      {"keep", no_argument, NULL, 'K'},           {"help", no_argument, NULL, 'h'},
      {"max-redeliveries", required_argument, NULL, 'R'},
      {"concurrency", required_argument, NULL, 'c'},
      {"leave-orphans", no_argument, NULL, 'O'},
      {NULL, 0, NULL, 0}};
  *o = (chaos_opts){.tasks = 5000, .workers = 3, .kill_every_ms = 300, .lease_s = 1,
                    .prefetch = 5, .task_ms = 2, .deadline_s = 120, .max_redeliveries = -1,
                    .concurrency = 1, .ns = "celer"};
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    int rc = 0;
    switch (c) {
      case 't': rc = parse_long("--tasks", optarg, 1, CHAOS_TASKS_MAX, &o->tasks); break;
      case 'w': rc = parse_long("--workers", optarg, 1, CHAOS_WORKERS_MAX, &o->workers); break;
      case 'k': rc = parse_long("--kill-every", optarg, 0, 3600000, &o->kill_every_ms); break;
      case 'l': rc = parse_long("--lease", optarg, 1, 86400, &o->lease_s); break;
      case 'p': rc = parse_long("--prefetch", optarg, 1, 1000, &o->prefetch); break;
      case 'm': rc = parse_long("--task-ms", optarg, 0, 3600000, &o->task_ms); break;
      case 'd': rc = parse_long("--deadline", optarg, 1, 86400 * 7, &o->deadline_s); break;
      case 's': {
        char *end = NULL;
        errno = 0;
        o->seed = strtoull(optarg, &end, 10);
        if (errno || end == optarg || *end != '\0' || optarg[0] == '-')
          return usage_error("--seed takes a whole number, not '%s'", optarg);
        o->seed_given = true;
        break;
      }
      case 'R':
        rc = parse_long("--max-redeliveries", optarg, 0, 1000, &o->max_redeliveries);
        break;
      case 'b': o->broker = optarg; break;
      case 'n': o->ns = optarg; break;
      case 'K': o->keep = true; break;
      case 'O': o->leave_orphans = true; break;
      case 'c': rc = parse_long("--concurrency", optarg, 1, 256, &o->concurrency); break;
      case 'h': fputs(usage_text, stdout); return -1;
      case ':': return usage_error("option %s needs a value", argv[optind - 1]);
      default: return usage_error("unknown option '%s'", argv[optind - 1]);
    }
    if (rc != 0) return rc;
  }
  if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
  return 0;
}

/* ---- redis-cli, against the private server or the given broker ---- */
static harness_redis redis;     /* the private server, when started */
static bool own_redis;
static const char *broker_url;

/* Runs redis-cli with args; returns its exit code, *out (caller frees). */
static int cli(const char *const *args, char **out) {
  if (own_redis) return harness_cli(&redis, args, out);
  const char *argv[64];
  size_t n = 0;
  char path[PATH_MAX], db[16] = "";
  argv[n++] = "redis-cli";
  if (strncmp(broker_url, "unix://", 7) == 0) {
    snprintf(path, sizeof path, "%s", broker_url + 7);
    char *q = strchr(path, '?');
    if (q) {
      *q++ = '\0';
      const char *d = strstr(q, "db=");
      if (d) snprintf(db, sizeof db, "%.*s", (int)strspn(d + 3, "0123456789"), d + 3);
    }
    argv[n++] = "-s";
    argv[n++] = path;
    if (db[0]) {
      argv[n++] = "-n";
      argv[n++] = db;
    }
  } else {
    argv[n++] = "-u";
    argv[n++] = broker_url;
  }
  for (size_t i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
  argv[n] = NULL;
  char *o = NULL;
  int rc = harness_run(argv, NULL, NULL, 0, &o, NULL, HARNESS_DEADLINE_MS);
  if (out) *out = o;
  else free(o);
  return rc;
}

#define CHAOS_KEY_MAX 256

/* "<ns>:{default}:<part>" into buf; returns buf. */
static const char *qkey(char buf[CHAOS_KEY_MAX], const char *ns, const char *part) {
  snprintf(buf, CHAOS_KEY_MAX, "%s:{%s}:%s", ns, CHAOS_QUEUE, part);
  return buf;
}

/* One integer field of the queue's stats hash; 0 when absent. */
static long long stat_field(const char *ns, const char *field) {
  char key[CHAOS_KEY_MAX];
  const char *args[] = {"HGET", qkey(key, ns, "stats"), field, NULL};
  char *out = NULL;
  long long v = 0;
  if (cli(args, &out) == 0 && out) v = strtoll(out, NULL, 10);
  free(out);
  return v;
}

typedef struct chaos_stats {
  long long duplicates, stale, redelivered;
} chaos_stats;

static void read_stats(const char *ns, chaos_stats *s) {
  s->duplicates = stat_field(ns, "duplicates");
  s->stale = stat_field(ns, "stale");
  s->redelivered = stat_field(ns, "redelivered");
}

/* ---- workers ---- */
static chaos_worker workers[CHAOS_WORKERS_MAX];
static char worker_bin[PATH_MAX];
static char tmpdir[HARNESS_DIR_MAX];
static unsigned long long unclean_exits;

static int worker_start(chaos_worker *w, const chaos_opts *o, const char *url) {
  char lease[24], prefetch[24], redeliveries[24], concurrency[24];
  snprintf(concurrency, sizeof concurrency, "%ld", o->concurrency);
  snprintf(lease, sizeof lease, "%ld", o->lease_s);
  snprintf(prefetch, sizeof prefetch, "%ld", o->prefetch);
  snprintf(redeliveries, sizeof redeliveries, "%ld", o->max_redeliveries);
  w->gen++;
  snprintf(w->name, sizeof w->name, "chaos-%d-%u", w->slot, w->gen);
  snprintf(w->log, sizeof w->log, "%s/%s.log", tmpdir, w->name);
  const char *argv[] = {worker_bin, "--broker", url, "--namespace", o->ns,
                        "--queues", CHAOS_QUEUE, "--module", "testing",
                        "--concurrency", concurrency, "--lease", lease, "--prefetch", prefetch,
                        "--name", w->name,
                        o->max_redeliveries >= 0 ? "--max-redeliveries" : NULL, redeliveries,
                        NULL};
  w->pid = harness_spawn(argv, NULL, w->log, w->log);
  if (w->pid < 0) {
    w->pid = 0;
    fprintf(stderr, "chaos: cannot start worker %s: %s\n", w->name, strerror(errno));
    return -1;
  }
  return 0;
}

static void describe_status(int status, char *buf, size_t size) {
  if (status == -1) snprintf(buf, size, "did not exit");
  else if (WIFEXITED(status)) snprintf(buf, size, "exit code %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status)) snprintf(buf, size, "signal %d", WTERMSIG(status));
  else snprintf(buf, size, "status %d", status);
}

/* Prints the last lines of a file, indented. */
static void print_tail(const char *path, int lines) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return;
  char *ring[64] = {0};
  if (lines > 64) lines = 64;
  size_t cap = 0;
  char *line = NULL;
  long count = 0;
  while (getline(&line, &cap, f) >= 0) {
    free(ring[count % lines]);
    ring[count % lines] = strdup(line);
    count++;
  }
  free(line);
  fclose(f);
  long first = count > lines ? count - lines : 0;
  for (long i = first; i < count; i++) {
    printf("    | %s", ring[i % lines] ? ring[i % lines] : "");
    free(ring[i % lines]);
    ring[i % lines] = NULL;
  }
}

/* A worker that exited without being killed is a finding: report it,
 * show its log, and start another. */
static void reap_unexpected(const chaos_opts *o, const char *url) {
  for (long k = 0; k < o->workers; k++) {
    chaos_worker *w = &workers[k];
    int status;
    if (w->pid <= 0 || waitpid(w->pid, &status, WNOHANG) != w->pid) continue;
    char how[64];
    describe_status(status, how, sizeof how);
    printf("chaos: worker %s (pid %ld) exited by itself (%s); its log ends:\n", w->name,
           (long)w->pid, how);
    print_tail(w->log, 10);
    unclean_exits++;
    w->pid = 0;
    if (!interrupted) worker_start(w, o, url);
  }
}

static void stop_all(int sig, bool count_unclean) {
  /* Signal all first, so that they stop side by side, then collect. */
  for (int k = 0; k < CHAOS_WORKERS_MAX; k++)
    if (workers[k].pid > 0) kill(workers[k].pid, sig);
  for (int k = 0; k < CHAOS_WORKERS_MAX; k++) {
    chaos_worker *w = &workers[k];
    if (w->pid <= 0) continue;
    int status = harness_stop(w->pid, sig, CHAOS_STOP_MS);
    if (count_unclean && !(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      char how[64];
      describe_status(status, how, sizeof how);
      printf("chaos: worker %s (pid %ld) did not stop cleanly on SIGTERM (%s); its log ends:\n",
             w->name, (long)w->pid, how);
      print_tail(w->log, 10);
      unclean_exits++;
    }
    w->pid = 0;
  }
}

/* ---- orphans: processes reparented to us (we are a subreaper) ---- */
static unsigned long long orphans;

static bool is_tracked(pid_t pid) {
  if (own_redis && pid == redis.pid) return true;
  for (int k = 0; k < CHAOS_WORKERS_MAX; k++)
    if (workers[k].pid == pid) return true;
  return false;
}

/* Our children that we did not start: fills pids (up to max) with the
 * live ones and reaps the dead ones. Returns how many live ones. */
static size_t untracked_children(pid_t *pids, size_t max) {
  DIR *d = opendir("/proc");
  if (d == NULL) return 0;
  pid_t self = getpid();
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (f == NULL) continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses. */
    const char *rp = strrchr(buf, ')');
    char state;
    long ppid;
    if (rp == NULL || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2 || ppid != (long)self)
      continue;
    pid_t pid = (pid_t)atol(e->d_name);
    if (is_tracked(pid)) continue;
    if (state == 'Z') waitpid(pid, NULL, WNOHANG);
    else if (n < max) pids[n++] = pid;
  }
  closedir(d);
  return n;
}

/* Kills and counts the orphans alive now. With grace_ms, first gives
 * children that are on their way out that long to go. */
static void kill_orphans(long long grace_ms) {
  pid_t pids[1024];
  long long until = mono_ms() + grace_ms;
  size_t n;
  while ((n = untracked_children(pids, 1024)) > 0 && mono_ms() < until) pause_ms(5);
  for (size_t i = 0; i < n; i++) {
    harness_stop(pids[i], SIGKILL, CHAOS_STOP_MS);
    orphans++;
  }
}

/* ---- records ---- */
static void check_error(tracker *t, celer_client *c, const char *id, int rc) {
  if (t->errors++ < 5)
    fprintf(stderr, "chaos: reading the record of %s: %s (%s)\n", id, celer_client_errstr(c),
            celer_strerror(rc));
}

/* Reads record i; returns true when it is final. */
static bool check_one(tracker *t, celer_client *c, size_t i) {
  if (t->state[i] >= 0) return true;
  json_t *rec = NULL;
  int rc = celer_get_record(c, CHAOS_QUEUE, t->ids[i], &rec);
  if (rc == CELER_ENOTFOUND) return false;
  if (rc != 0) {
    check_error(t, c, t->ids[i], rc);
    return false;
  }
  celer_state st;
  bool final = celer_record_state(rec, &st) == 0 && celer_state_is_final(st);
  json_decref(rec);
  if (final) {
    t->state[i] = (signed char)st;
    t->nfinal++;
  }
  return final;
}

static void end_round(tracker *t) {
  size_t k = 0;
  for (size_t j = 0; j < t->npending; j++) {
    size_t i = t->pending[j];
    if (t->state[i] >= 0) continue;
    if (j < t->cursor && (long)j < t->last_final) t->slow[t->nslow++] = i;
    else t->pending[k++] = i;
  }
  t->npending = k;
  t->cursor = 0;
  t->streak = 0;
  t->last_final = -1;
}

static void check_slow(tracker *t, celer_client *c) {
  size_t k = 0;
  for (size_t j = 0; j < t->nslow; j++)
    if (!check_one(t, c, t->slow[j])) t->slow[k++] = t->slow[j];
  t->nslow = k;
}

/* Checks pending records for about budget_ms. Returns true when all are
 * final. */
static bool check_some(tracker *t, celer_client *c, long long budget_ms) {
  long long now = mono_ms(), until = now + budget_ms;
  if (t->nslow > 0 && now >= t->next_slow) {
    check_slow(t, c);
    t->next_slow = now + CHAOS_SLOW_CHECK_MS;
  }
  while (t->npending > 0) {
    if (t->cursor >= t->npending || t->streak >= CHAOS_CHECK_MISSES) {
      end_round(t);
      break; /* a new round starts on the next turn */
    }
    if (check_one(t, c, t->pending[t->cursor])) {
      t->last_final = (long)t->cursor;
      t->streak = 0;
    } else {
      t->streak++;
    }
    t->cursor++;
    if ((t->cursor & 31) == 0 && mono_ms() >= until) break;
  }
  return t->nfinal == t->n;
}

/* One full pass over every record not known to be final. */
static void check_all(tracker *t, celer_client *c) {
  for (size_t j = 0; j < t->npending; j++) check_one(t, c, t->pending[j]);
  t->cursor = t->npending;
  t->last_final = -1;
  end_round(t);
  check_slow(t, c);
}

/* ---- the marks file: executions per id ---- */
typedef struct id_table {
  size_t cap; /* a power of two */
  size_t *slot; /* index + 1; 0 = empty */
} id_table;

static uint64_t hash_id(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

static int table_build(id_table *tb, const tracker *t) {
  tb->cap = 16;
  while (tb->cap < t->n * 2) tb->cap <<= 1;
  tb->slot = calloc(tb->cap, sizeof *tb->slot);
  if (tb->slot == NULL) return -1;
  for (size_t i = 0; i < t->n; i++) {
    size_t h = (size_t)hash_id(t->ids[i], strlen(t->ids[i])) & (tb->cap - 1);
    while (tb->slot[h]) h = (h + 1) & (tb->cap - 1);
    tb->slot[h] = i + 1;
  }
  return 0;
}

/* Index of the id s[0..len), or -1. */
static long table_find(const id_table *tb, const tracker *t, const char *s, size_t len) {
  size_t h = (size_t)hash_id(s, len) & (tb->cap - 1);
  for (; tb->slot[h]; h = (h + 1) & (tb->cap - 1)) {
    const char *id = t->ids[tb->slot[h] - 1];
    if (strlen(id) == len && memcmp(id, s, len) == 0) return (long)(tb->slot[h] - 1);
  }
  return -1;
}

/* Counts the lines of the marks file per id. Returns the number of lines
 * naming no id of ours (torn or foreign lines), or -1 when unreadable. */
static long count_marks(const char *path, const tracker *t, unsigned *runs) {
  id_table tb;
  if (table_build(&tb, t) != 0) return -1;
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    free(tb.slot);
    return errno == ENOENT ? 0 : -1; /* no task ran at all */
  }
  long unknown = 0;
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) >= 0) {
    bool complete = len > 0 && line[len - 1] == '\n';
    if (complete) len--;
    long i = complete ? table_find(&tb, t, line, (size_t)len) : -1;
    if (i < 0) unknown++;
    else runs[i]++;
  }
  free(line);
  fclose(f);
  free(tb.slot);
  return unknown;
}

/* ---- diagnosis of a failed run ---- */
static void print_cli(const char *title, const char *const *args) {
  char *out = NULL;
  int rc = cli(args, &out);
  printf("  %s (rc %d):\n", title, rc);
  char *save = NULL;
  int lines = 0;
  for (char *l = out ? strtok_r(out, "\n", &save) : NULL; l && lines < 40;
       l = strtok_r(NULL, "\n", &save), lines++)
    printf("    %s\n", l);
  free(out);
}

/* Where an id stands in the stream: its entries and their pending state. */
static void diagnose_stream(const char *ns, const char *id) {
  char stream[CHAOS_KEY_MAX];
  const char *xr[] = {"XRANGE", qkey(stream, ns, "stream"), "-", "+", NULL};
  char *out = NULL;
  if (cli(xr, &out) != 0 || out == NULL) {
    free(out);
    return;
  }
  char needle[CELER_ID_MAX + 16];
  snprintf(needle, sizeof needle, "\"id\":\"%s\"", id);
  char entry[64] = "";
  int found = 0;
  char *save = NULL;
  for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    if (strspn(l, "0123456789-") == strlen(l) && strchr(l, '-') && strlen(l) < sizeof entry) {
      snprintf(entry, sizeof entry, "%s", l);
    } else if (strstr(l, needle) && entry[0]) {
      found++;
      const char *xp[] = {"XPENDING", stream, "workers", entry, entry, "1", NULL};
      char *p = NULL;
      cli(xp, &p);
      for (char *c = p; c && *c; c++)
        if (*c == '\n') *c = ' ';
      bool blank = p == NULL || strspn(p, " ") == strlen(p);
      /* XPENDING's row: entry, consumer, idle ms, deliveries. */
      printf("    stream entry %s; XPENDING: %s\n", entry,
             blank ? "(not delivered to any worker)" : p);
      free(p);
      entry[0] = '\0';
    }
  }
  if (!found) printf("    no stream entry holds it\n");
  free(out);
}

/* Lines of the worker logs that name id. */
static void diagnose_logs(const char *id) {
  char cmd[PATH_MAX + 128];
  snprintf(cmd, sizeof cmd, "grep -H -- '%s' '%s'/chaos-*.log | head -n 8", id, tmpdir);
  const char *argv[] = {"sh", "-c", cmd, NULL};
  char *out = NULL;
  harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
  if (out && *out) {
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
      printf("    log %s\n", l);
  } else {
    printf("    no worker log line names it\n");
  }
  free(out);
}

static void diagnose(const chaos_opts *o, celer_client *c, const tracker *t,
                     const unsigned *runs) {
  printf("chaos: diagnosis of the failed run\n");
  char k1[CHAOS_KEY_MAX], k2[CHAOS_KEY_MAX], k3[CHAOS_KEY_MAX];
  const char *xlen[] = {"XLEN", qkey(k1, o->ns, "stream"), NULL};
  const char *xpend[] = {"XPENDING", k1, "workers", NULL};
  const char *zcard[] = {"ZCARD", qkey(k2, o->ns, "scheduled"), NULL};
  const char *stats[] = {"HGETALL", qkey(k3, o->ns, "stats"), NULL};
  print_cli("XLEN stream", xlen);
  print_cli("XPENDING stream workers", xpend);
  print_cli("ZCARD scheduled", zcard);
  print_cli("HGETALL stats", stats);
  int shown = 0;
  for (size_t i = 0; i < t->n && shown < CHAOS_DIAG_IDS; i++) {
    bool bad = t->state[i] != CELER_SUCCEEDED || runs[i] == 0;
    if (!bad) continue;
    shown++;
    json_t *rec = NULL;
    int rc = celer_get_record(c, CHAOS_QUEUE, t->ids[i], &rec);
    char *text = rc == 0 ? json_dumps(rec, JSON_COMPACT) : NULL;
    printf("  task %s (#%zu): %u execution(s), record: %s\n", t->ids[i], i, runs[i],
           text ? text : rc == CELER_ENOTFOUND ? "none" : celer_strerror(rc));
    free(text);
    json_decref(rec);
    diagnose_stream(o->ns, t->ids[i]);
    diagnose_logs(t->ids[i]);
  }
}

/* ---- the run ---- */
static int enqueue_all(celer_client *c, const chaos_opts *o, const char *marks, tracker *t) {
  json_t *kwargs = json_pack("{sssI}", "path", marks, "ms", (json_int_t)o->task_ms);
  celer_batch_item *items = calloc(CHAOS_BATCH, sizeof *items);
  int rc = kwargs && items ? 0 : CELER_ENOMEM;
  for (size_t done = 0; rc == 0 && done < t->n;) {
    size_t k = t->n - done < CHAOS_BATCH ? t->n - done : CHAOS_BATCH;
    for (size_t i = 0; i < k; i++) {
      memset(&items[i], 0, sizeof items[i]);
      items[i].task = "test.mark";
      items[i].kwargs = kwargs;
      celer_enqueue_options_init(&items[i].opts);
      items[i].opts.queue = CHAOS_QUEUE;
    }
    rc = celer_enqueue_batch(c, items, k);
    if (rc != 0) {
      fprintf(stderr, "chaos: enqueueing tasks %zu to %zu: %s\n", done, done + k,
              celer_client_errstr(c));
      break;
    }
    for (size_t i = 0; i < k; i++) memcpy(t->ids[done + i], items[i].id, sizeof items[i].id);
    done += k;
  }
  if (rc == CELER_ENOMEM) fprintf(stderr, "chaos: out of memory enqueueing\n");
  free(items);
  json_decref(kwargs);
  return rc;
}

static int tracker_init(tracker *t, size_t n) {
  memset(t, 0, sizeof *t);
  t->n = n;
  t->ids = calloc(n, sizeof *t->ids);
  t->state = malloc(n);
  t->pending = malloc(n * sizeof *t->pending);
  t->slow = malloc(n * sizeof *t->slow);
  t->last_final = -1;
  if (!t->ids || !t->state || !t->pending || !t->slow) return -1;
  memset(t->state, -1, n);
  for (size_t i = 0; i < n; i++) t->pending[i] = i;
  t->npending = n;
  return 0;
}

static void tracker_free(tracker *t) {
  free(t->ids);
  free(t->state);
  free(t->pending);
  free(t->slow);
}

static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static int verdict(bool pass) {
  printf("chaos: %d passed, %d failed\n", pass ? 1 : 0, pass ? 0 : 1);
  fflush(stdout);
  return pass ? 0 : 1;
}

int main(int argc, char **argv) {
  chaos_opts o;
  int prc = parse_args(argc, argv, &o);
  if (prc != 0) return prc < 0 ? 0 : prc;
  setvbuf(stdout, NULL, _IOLBF, 0);
  install_signals();
  if (!o.seed_given) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    o.seed = ((unsigned long long)ts.tv_sec * 1000000007ULL) ^ (unsigned long long)ts.tv_nsec ^
             ((unsigned long long)getpid() << 32);
  }
  rng_state = o.seed;
  /* Children of a killed worker come to us, not to init: we see them and
   * can stop them. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  snprintf(worker_bin, sizeof worker_bin, "%s", harness_bin("celer-worker"));

  bool pass = false, setup_ok = false;
  celer_client *client = NULL;
  unsigned *runs = NULL;
  tracker t;
  memset(&t, 0, sizeof t);
  char marks[PATH_MAX];
  const char *url = NULL;
  chaos_stats before = {0}, after = {0};
  unsigned long long kills = 0;
  long long started = 0, elapsed = 0;

  if (harness_tmpdir(tmpdir, sizeof tmpdir) != 0) {
    fprintf(stderr, "chaos: cannot make a temp dir: %s\n", strerror(errno));
    return verdict(false);
  }
  snprintf(marks, sizeof marks, "%s/marks", tmpdir);
  if (o.broker) {
    url = broker_url = o.broker;
  } else {
    if (harness_redis_start(&redis, false, NULL) != 0) goto done;
    own_redis = true;
    url = broker_url = redis.url;
  }
  printf("chaos: seed %llu, broker %s, %ld tasks, %ld workers x %ld children, kill every ~%ld "
         "ms, lease %ld s, prefetch %ld, task %ld ms, deadline %ld s\n",
         o.seed, url, o.tasks, o.workers, o.concurrency, o.kill_every_ms, o.lease_s, o.prefetch,
         o.task_ms, o.deadline_s);

  celer_client_options copts = {.broker_url = url, .ns = o.ns};
  client = celer_client_new(&copts);
  if (client == NULL || tracker_init(&t, (size_t)o.tasks) != 0 ||
      (runs = calloc((size_t)o.tasks, sizeof *runs)) == NULL) {
    fprintf(stderr, "chaos: out of memory\n");
    goto done;
  }
  if (celer_client_connect(client) != 0) {
    fprintf(stderr, "chaos: cannot connect to %s: %s\n", url, celer_client_errstr(client));
    goto done;
  }
  read_stats(o.ns, &before);
  long long t0 = mono_ms();
  if (enqueue_all(client, &o, marks, &t) != 0) goto done;
  printf("chaos: enqueued %ld tasks in %.1f s\n", o.tasks, (double)(mono_ms() - t0) / 1000.0);

  for (long k = 0; k < o.workers; k++) {
    workers[k].slot = (int)k;
    if (worker_start(&workers[k], &o, url) != 0) goto done;
  }
  setup_ok = true;
  started = mono_ms();
  long long deadline = started + o.deadline_s * 1000LL;
  long long next_kill = o.kill_every_ms > 0 ? started + next_kill_delay(o.kill_every_ms) : -1;
  long long next_progress = started + CHAOS_PROGRESS_MS;
  bool all_final = false;
  while (!interrupted) {
    all_final = check_some(&t, client, CHAOS_CHECK_BUDGET_MS);
    long long now = mono_ms();
    if (all_final || now >= deadline) break;
    reap_unexpected(&o, url);
    if (next_kill >= 0 && now >= next_kill) {
      /* The schedule counts from the kill, not from the end of the
       * orphan check, so that the mean interval holds. */
      next_kill = now + next_kill_delay(o.kill_every_ms);
      chaos_worker *w = &workers[rng_next() % (uint64_t)o.workers];
      if (w->pid > 0) {
        harness_stop(w->pid, SIGKILL, CHAOS_STOP_MS);
        w->pid = 0;
        kills++;
        if (!o.leave_orphans) kill_orphans(CHAOS_ORPHAN_GRACE_MS);
      }
      worker_start(w, &o, url);
      now = mono_ms();
    }
    if (now >= next_progress) {
      printf("chaos: %.1f s: %zu/%zu final, %llu kills\n", (double)(now - started) / 1000.0,
             t.nfinal, t.n, kills);
      next_progress = now + CHAOS_PROGRESS_MS;
    }
    long long wait = CHAOS_TICK_MS;
    if (next_kill >= 0 && next_kill - now < wait) wait = next_kill - now;
    pause_ms(wait);
  }
  elapsed = mono_ms() - started;
  if (interrupted) printf("chaos: interrupted by signal %d\n", (int)interrupted);
  else if (!all_final) printf("chaos: deadline of %ld s passed\n", o.deadline_s);

  reap_unexpected(&o, url);
  stop_all(SIGTERM, true);
  kill_orphans(CHAOS_ORPHAN_GRACE_MS);
  check_all(&t, client);
  read_stats(o.ns, &after);

  long unknown = count_marks(marks, &t, runs);
  if (unknown < 0) fprintf(stderr, "chaos: cannot read %s: %s\n", marks, strerror(errno));
  size_t nstate[CELER_STATE_COUNT] = {0};
  size_t missing = 0, never_ran = 0;
  unsigned long long dup_exec = 0, max_runs = 0;
  for (size_t i = 0; i < t.n; i++) {
    if (t.state[i] < 0) missing++;
    else nstate[(int)t.state[i]]++;
    if (runs[i] == 0) never_ran++;
    else dup_exec += runs[i] - 1;
    if (runs[i] > max_runs) max_runs = runs[i];
  }
  size_t nfinal = t.n - missing;
  char states[512];
  int len = snprintf(states, sizeof states, "%zu SUCCEEDED", nstate[CELER_SUCCEEDED]);
  for (int s = 0; s < CELER_STATE_COUNT; s++)
    if (s != CELER_SUCCEEDED && nstate[s] && len > 0 && (size_t)len < sizeof states)
      len += snprintf(states + len, sizeof states - (size_t)len, ", %zu %s", nstate[s],
                      celer_state_name((celer_state)s));
  pass = !interrupted && missing == 0 && nstate[CELER_SUCCEEDED] == t.n && never_ran == 0 &&
         unknown == 0 && unclean_exits == 0 && t.errors == 0;
  printf("chaos: %zu ids never executed, at most %llu executions of one id, %ld unreadable "
         "marks, %llu unclean worker exits, %llu record read errors, %llu orphaned worker "
         "children\n",
         never_ran, max_runs, unknown, unclean_exits, t.errors, orphans);
  if (orphans > 0)
    printf("chaos: WARNING: %llu worker child process(es) outlived their killed worker "
           "(reparented to celer-chaos%s)\n",
           orphans, o.leave_orphans ? "; stopped at the end" : ", which killed them");
  if (!pass && !interrupted) diagnose(&o, client, &t, runs);
  printf("chaos: %zu tasks, %ld workers, %llu kills in %.1f s: %zu final (%s), %zu missing, "
         "%llu duplicate executions, %lld duplicate completions, %lld stale completions, "
         "%lld redelivered\n",
         t.n, o.workers, kills, (double)elapsed / 1000.0, nfinal, states, missing, dup_exec,
         after.duplicates - before.duplicates, after.stale - before.stale,
         after.redelivered - before.redelivered);

done:
  stop_all(SIGKILL, false);
  kill_orphans(0);
  if (!setup_ok) printf("chaos: the run could not be set up\n");
  celer_client_free(client);
  if (own_redis) harness_redis_stop(&redis);
  if (o.keep) printf("chaos: kept %s (marks, worker logs)\n", tmpdir);
  else harness_rmtree(tmpdir);
  free(runs);
  tracker_free(&t);
  return verdict(pass);
}
