/* taskctl: the operator's command line (CONTRACT "taskctl").
 *
 * Shape of the program:
 *   - argv goes through a small table-driven parser. Global options
 *     (--broker, --namespace, --json, --config, --help) come before the
 *     command word and may also follow it; after the command word its own
 *     options and its positional arguments may come in any order. "--"
 *     ends the options.
 *   - every command is one row of `commands[]`: name, handler, how many
 *     positional arguments it takes, its options, its help text and an
 *     example. Adding a command means adding a handler and a row.
 *   - a handler validates everything it was given before it connects, so
 *     a usage error is reported as one (exit 2) even with the broker down.
 *
 * Output: with --json one JSON document on stdout; otherwise text for
 * people. Errors: one sentence on stderr, prefixed "taskctl: ".
 * Exit codes: see the tc_exit enum. The views (queues, stats, workers,
 * top) and the text helpers live in files of their own: see the map in
 * client/taskctl.h. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include "broker/broker.h"
#include "celer/admin.h"
#include "celer/client.h"
#include "celer/envelope.h"
#include "common/common.h"
#include "client/taskctl.h"

/* Longest accepted time span on the command line: a century. Far beyond
 * any real countdown or wait, and it keeps now + span far below the
 * largest JSON integer (CELER_MAX_JSON_INT ms). */
#define TC_MAX_SECONDS (100LL * 366 * 24 * 3600)
/* Room for one formatted time: RFC 3339 with milliseconds plus "(...)". */
#define TC_TIME_TEXT_MAX 96
/* Significant digits of ping's latency in JSON ("0.123", "1234.567"). */
#define TC_LATENCY_DIGITS 10
/* Rows of a record table: the known fields plus any extras. */
#define TC_RECORD_ROWS_MAX 48
/* dead: rows shown when --limit is not given. */
#define TC_DEAD_LIMIT_DEFAULT 20
/* dead: the largest --offset; far beyond any dead set the broker keeps. */
#define TC_DEAD_OFFSET_MAX 1000000000LL
/* dead: the table aims at this many columns; the error column takes what
 * the others leave, but never less than TC_DEAD_ERROR_MIN, and a task
 * name is cut at TC_DEAD_TASK_MAX. */
#define TC_TABLE_COLUMNS 100
#define TC_DEAD_ERROR_MIN 24
#define TC_DEAD_TASK_MAX 40

/* ------------------------------------------------------------------ */
/* Command-line model                                                   */

typedef enum arg_kind {
  ARG_NONE,             /* a flag: --json */
  ARG_REQUIRED,         /* --queue Q or --queue=Q */
  ARG_OPTIONAL_SECONDS, /* --wait, --wait 30, --wait=30: the next word is
                           taken only when it reads as a number of seconds */
} arg_kind;

typedef struct opt_spec {
  const char *name;    /* without the leading "--"; NULL ends a table */
  opt_key key;
  arg_kind kind;
  const char *metavar; /* shown in help; NULL for flags */
  const char *help;
} opt_spec;

typedef int (*command_fn)(session *s);

typedef struct command {
  const char *name;
  command_fn run;
  int min_pos, max_pos;
  const char *pos_names;  /* positional words for messages: "TASK", "ID" */
  const char *synopsis;   /* what follows the command word in "Usage:" */
  const char *summary;    /* one line for the command list */
  const char *description;
  const opt_spec *options;
  const char *example;
} command;

static const opt_spec global_options[] = {
    {"broker", OPT_BROKER, ARG_REQUIRED, "URL",
     "broker URL (env CELER_BROKER_URL; default " CELER_DEFAULT_BROKER_URL ")"},
    {"namespace", OPT_NAMESPACE, ARG_REQUIRED, "NS",
     "key prefix (env CELER_NAMESPACE; default " CELER_DEFAULT_NAMESPACE ")"},
    {"json", OPT_JSON, ARG_NONE, NULL, "print one JSON document on stdout"},
    {"config", OPT_CONFIG, ARG_REQUIRED, "FILE",
     "read NAME = value settings from FILE (env CELER_CONFIG)"},
    {"help", OPT_HELP, ARG_NONE, NULL, "show help and exit"},
    {NULL, 0, 0, NULL, NULL},
};

/* ------------------------------------------------------------------ */
/* Messages                                                             */

/* Prints "taskctl: <sentence>" on stderr; returns code for tail calls. */
int tc_fail(int code, const char *fmt, ...) {
  char msg[TC_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, PROGRAM ": %s\n", msg);
  return code;
}

static int usage_error(const command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A usage error: the sentence plus where to read the usage. */
static int usage_error(const command *cmd, const char *fmt, ...) {
  char msg[TC_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (cmd)
    return tc_fail(TC_EXIT_USAGE, "%s; see '" PROGRAM " %s --help'", msg, cmd->name);
  return tc_fail(TC_EXIT_USAGE, "%s; see '" PROGRAM " --help'", msg);
}

/* The broker URL as people may see it: password masked, never printed. */
void tc_describe_url(const char *url, char *buf, size_t size) {
  broker_url u;
  char err[CELER_ERRSTR_LEN];
  if (broker_url_parse(url, &u, err, sizeof err) == 0)
    broker_url_describe(&u, buf, size);
  else
    snprintf(buf, size, "the configured broker");
  memset(&u, 0, sizeof u);
}

/* ------------------------------------------------------------------ */
/* Parsing values                                                       */

/* Parses a non-negative decimal number of seconds ("30", "0.5", ".25")
 * into milliseconds, rounding sub-millisecond remainders up so a tiny
 * positive span never becomes zero. Returns 0 or CELER_EINVAL. */
static int parse_seconds(const char *s, int64_t *ms_out) {
  int64_t whole = 0, frac_ms = 0;
  int int_digits = 0, frac_digits = 0;
  bool round_up = false;
  const char *p = s;
  for (; *p >= '0' && *p <= '9'; p++, int_digits++) {
    whole = whole * 10 + (*p - '0');
    if (whole > TC_MAX_SECONDS) return CELER_EINVAL;
  }
  if (*p == '.') {
    for (p++; *p >= '0' && *p <= '9'; p++, frac_digits++) {
      if (frac_digits < 3) frac_ms = frac_ms * 10 + (*p - '0');
      else if (*p != '0') round_up = true;
    }
  }
  if (*p != '\0' || int_digits + frac_digits == 0) return CELER_EINVAL;
  for (int i = frac_digits; i < 3; i++) frac_ms *= 10;
  *ms_out = whole * TC_MS_PER_S + frac_ms + (round_up ? 1 : 0);
  return 0;
}

static bool reads_as_seconds(const char *s) {
  int64_t ms;
  return parse_seconds(s, &ms) == 0;
}

/* Reads exactly n decimal digits at *p and advances past them. */
static bool read_digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    char ch = (*p)[i];
    if (ch < '0' || ch > '9') return false;
    v = v * 10 + (ch - '0');
  }
  *p += n;
  *out = v;
  return true;
}

static bool is_leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar,
 * counted in 400-year eras of 146097 days from a year starting in March. */
static int64_t days_from_civil(int y, int m, int d) {
  int64_t yy = m <= 2 ? y - 1 : y;
  int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
  int64_t yoe = yy - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

/* Parses the time-zone part of an RFC 3339 time into seconds east of UTC. */
static bool parse_offset(const char *p, int64_t *offset_s) {
  if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
    *offset_s = 0;
    return true;
  }
  if (*p != '+' && *p != '-') return false;
  int sign = *p == '-' ? -1 : 1, hh, mm;
  p++;
  if (!read_digits(&p, 2, &hh) || *p++ != ':' || !read_digits(&p, 2, &mm) || *p != '\0')
    return false;
  if (hh > 23 || mm > 59) return false;
  *offset_s = sign * (hh * TC_S_PER_HOUR + mm * TC_S_PER_MIN);
  return true;
}

/* Parses an RFC 3339 date-time ("2026-11-26T10:00:00Z", with optional
 * fractional seconds and a Z or +hh:mm / -hh:mm offset) into ms since the
 * epoch. Fractions below a millisecond are dropped. */
static int parse_rfc3339(const char *s, int64_t *ms_out) {
  const char *p = s;
  int y, mo, d, h, mi, sec, frac_ms = 0;
  if (!read_digits(&p, 4, &y) || *p++ != '-' || !read_digits(&p, 2, &mo) || *p++ != '-' ||
      !read_digits(&p, 2, &d))
    return CELER_EINVAL;
  if (*p != 'T' && *p != 't' && *p != ' ') return CELER_EINVAL;
  p++;
  if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi) || *p++ != ':' ||
      !read_digits(&p, 2, &sec))
    return CELER_EINVAL;
  if (*p == '.') {
    int n = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, n++)
      if (n < 3) frac_ms = frac_ms * 10 + (*p - '0');
    if (n == 0) return CELER_EINVAL;
    for (int i = n; i < 3; i++) frac_ms *= 10;
  }
  int64_t offset_s;
  if (!parse_offset(p, &offset_s)) return CELER_EINVAL;
  /* Second 60 is RFC 3339's leap second. */
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
    return CELER_EINVAL;
  int64_t secs = days_from_civil(y, mo, d) * TC_S_PER_DAY + h * TC_S_PER_HOUR +
                 mi * TC_S_PER_MIN + sec - offset_s;
  *ms_out = secs * TC_MS_PER_S + frac_ms;
  return 0;
}

/* "an array", "a string" ...: the JSON type of v for messages. */
static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    default: return "null";
  }
}

/* Parses the JSON text of option --name and checks its type. On 0 the
 * caller owns *out. */
static int parse_json_option(const char *name, const char *text, json_type want,
                             json_t **out) {
  json_error_t jerr;
  json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
  if (v == NULL)
    return tc_fail(TC_EXIT_USAGE, "--%s is not valid JSON: %s (line %d, column %d)", name,
                jerr.text, jerr.line, jerr.column);
  if (json_typeof(v) != want) {
    tc_fail(TC_EXIT_USAGE, "--%s must be a JSON %s, not %s", name,
         want == JSON_ARRAY ? "array" : "object", json_kind(v));
    json_decref(v);
    return TC_EXIT_USAGE;
  }
  *out = v;
  return 0;
}

int tc_parse_seconds_option(const char *name, const char *text, int64_t *ms) {
  if (parse_seconds(text, ms) != 0)
    return tc_fail(TC_EXIT_USAGE,
                "--%s must be a number of seconds up to %lld, such as 30 or 0.5, not '%s'",
                name, (long long)TC_MAX_SECONDS, text);
  return 0;
}

static int check_id(const char *id) {
  if (strlen(id) > CELER_ID_MAX || !celer_valid_id(id))
    return tc_fail(TC_EXIT_USAGE,
                "'%s' is not a valid task id: use 1 to %d characters from A-Z a-z 0-9 _ -",
                id, CELER_ID_MAX);
  return 0;
}

static int check_queue(const char *q) {
  if (strlen(q) > CELER_QUEUE_NAME_MAX || !celer_valid_queue_name(q))
    return tc_fail(TC_EXIT_USAGE,
                "'%s' is not a valid queue name: use 1 to %d characters from "
                "A-Z a-z 0-9 _ . -",
                q, CELER_QUEUE_NAME_MAX);
  return 0;
}

/* Validates --queue when given; *queue stays NULL otherwise. */
int tc_take_queue(const cmdline *cl, const char **queue) {
  *queue = NULL;
  if (!cl->given[OPT_QUEUE]) return 0;
  int rc = check_queue(cl->value[OPT_QUEUE]);
  if (rc == 0) *queue = cl->value[OPT_QUEUE];
  return rc;
}

/* Reads the whole-number option --name (key) from 0 to max; *out keeps
 * its value when the option was not given. */
int tc_take_count(const cmdline *cl, opt_key key, const char *name, int64_t max,
                      int64_t *out) {
  if (!cl->given[key]) return 0;
  int64_t v;
  if (celer_parse_i64(cl->value[key], &v) != 0 || v > max)
    return tc_fail(TC_EXIT_USAGE, "--%s must be a whole number from 0 to %lld, not '%s'", name,
                (long long)max, cl->value[key]);
  *out = v;
  return 0;
}

/* Reads --wait: *wait_ms is -1 for "forever" (a bare --wait). */
static int take_wait(const cmdline *cl, int64_t *wait_ms) {
  const char *v = cl->value[OPT_WAIT];
  if (*v == '\0') {
    *wait_ms = -1;
    return 0;
  }
  return tc_parse_seconds_option("wait", v, wait_ms);
}

/* ------------------------------------------------------------------ */
/* Output                                                               */

/* Prints v as one compact JSON document and a newline. */
static int print_json_flags(const json_t *v, size_t flags) {
  char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | flags);
  if (text == NULL) return tc_fail(TC_EXIT_NEGATIVE, "out of memory formatting JSON");
  puts(text);
  free(text);
  return 0;
}

int tc_print_json(const json_t *v) { return print_json_flags(v, 0); }

/* "2026-11-26T10:00:00.123Z (3s ago)". */
static void format_time(int64_t ms, int64_t now_ms, char *buf, size_t size) {
  int64_t secs = ms >= 0 ? ms / TC_MS_PER_S : -((-ms + TC_MS_PER_S - 1) / TC_MS_PER_S);
  int frac = (int)(ms - secs * TC_MS_PER_S);
  time_t t = (time_t)secs;
  struct tm tm;
  char date[40], rel[64];
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
    snprintf(buf, size, "%lld", (long long)ms);
    return;
  }
  tc_format_relative(now_ms - ms, rel, sizeof rel);
  celer_fmt(buf, size, "%s.%03dZ (%s)", date, frac, rel);
}

/* One row of a key/value table; value is owned. */
typedef struct row {
  const char *key;
  char *value;
} row;

typedef struct table {
  row rows[TC_RECORD_ROWS_MAX];
  int n;
} row_table;

static void table_add(row_table *t, const char *key, char *value) {
  if (value == NULL) return;
  if (t->n == TC_RECORD_ROWS_MAX) {
    free(value);
    return;
  }
  t->rows[t->n].key = key;
  t->rows[t->n++].value = value;
}

static void table_print_free(row_table *t) {
  size_t width = 0;
  for (int i = 0; i < t->n; i++)
    if (strlen(t->rows[i].key) > width) width = strlen(t->rows[i].key);
  for (int i = 0; i < t->n; i++) {
    printf("%-*s  %s\n", (int)width, t->rows[i].key, t->rows[i].value);
    free(t->rows[i].value);
  }
  t->n = 0;
}

static bool is_time_field(const char *key) {
  size_t n = strlen(key);
  return (n > 3 && strcmp(key + n - 3, "_at") == 0) || strcmp(key, "eta") == 0 ||
         strcmp(key, "expires") == 0;
}

/* A record field as text: strings bare, times readable, the error object
 * as "Type: message", anything else compact JSON. Caller frees. */
static char *field_text(const char *key, const json_t *v, int64_t now_ms) {
  if (json_is_string(v)) return strdup(json_string_value(v));
  if (json_is_integer(v) && is_time_field(key) && json_integer_value(v) > 0) {
    char buf[TC_TIME_TEXT_MAX];
    format_time(json_integer_value(v), now_ms, buf, sizeof buf);
    return strdup(buf);
  }
  if (strcmp(key, "error") == 0 && json_is_object(v)) {
    const char *type = json_string_value(json_object_get(v, "type"));
    const char *message = json_string_value(json_object_get(v, "message"));
    if (type || message) {
      size_t len = (type ? strlen(type) : 0) + (message ? strlen(message) : 0) + 3;
      char *out = malloc(len);
      if (out)
        snprintf(out, len, "%s%s%s", type ? type : "", type && message ? ": " : "",
                 message ? message : "");
      return out;
    }
  }
  return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Fields shown first, in this order; the rest follow as stored. */
static const char *const record_fields[] = {
    "id",         "task",        "queue", "state",  "attempt", "worker",
    "enqueued_at", "started_at", "finished_at", "error", "result", NULL,
};

static bool is_record_field(const char *key) {
  for (int i = 0; record_fields[i]; i++)
    if (strcmp(record_fields[i], key) == 0) return true;
  return false;
}

static void print_record_table(const json_t *rec) {
  row_table t = {.n = 0};
  int64_t now = celer_now_ms();
  for (int i = 0; record_fields[i]; i++) {
    const json_t *v = json_object_get(rec, record_fields[i]);
    if (v) table_add(&t, record_fields[i], field_text(record_fields[i], v, now));
  }
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)rec, key, v) {
    if (!is_record_field(key)) table_add(&t, key, field_text(key, v, now));
  }
  table_print_free(&t);
}

/* The record in the chosen output form. */
static int print_record(const session *s, const json_t *rec) {
  if (s->json) return tc_print_json(rec);
  print_record_table(rec);
  return 0;
}

/* "RuntimeError: boom" from a record's error, or "no error recorded". */
static void error_summary(const json_t *rec, char *buf, size_t size) {
  const json_t *err = json_object_get(rec, "error");
  char *text = err ? field_text("error", err, 0) : NULL;
  snprintf(buf, size, "%s", text ? text : "no error recorded");
  free(text);
}

static const char *record_state_name(const json_t *rec, celer_state *st) {
  if (celer_record_state(rec, st) != 0) {
    *st = CELER_STATE_COUNT;
    return "UNKNOWN";
  }
  return celer_state_name(*st);
}

/* ------------------------------------------------------------------ */
/* The broker                                                           */

/* Maps a client error to an exit code. A deadline that passes while we
 * deliberately wait is a timeout (4); one that passes on an ordinary
 * request means the broker does not answer (3). */
static int exit_code_for(int rc, bool waiting) {
  switch (rc) {
    case CELER_ECONNECT:
    case CELER_EAUTH: return TC_EXIT_BROKER;
    case CELER_ETIMEDOUT: return waiting ? TC_EXIT_TIMEOUT : TC_EXIT_BROKER;
    case CELER_EINVAL:
    case CELER_ETOOBIG: return TC_EXIT_USAGE;
    default: return TC_EXIT_NEGATIVE;
  }
}

/* Reports the client's last failure; returns the exit code. */
int tc_client_failure(const session *s, int rc, bool waiting) {
  const char *why = s->client ? celer_client_errstr(s->client) : "";
  return tc_fail(exit_code_for(rc, waiting), "%s", why && *why ? why : celer_strerror(rc));
}

int tc_connect(session *s) {
  celer_client_options o = {
      .broker_url = s->cfg.broker_url,
      .password_file = s->cfg.password_file,
      .ns = s->cfg.ns,
      .max_payload = s->cfg.max_payload > 0 ? (size_t)s->cfg.max_payload : 0,
      .result_ttl_s = s->cfg.result_ttl_s,
  };
  s->client = celer_client_new(&o);
  if (s->client == NULL) return tc_fail(TC_EXIT_NEGATIVE, "out of memory creating a client");
  int rc = celer_client_connect(s->client);
  if (rc == 0) return 0;
  /* A password file that cannot be read is a configuration error. */
  if (rc == CELER_EIO) return tc_fail(TC_EXIT_USAGE, "%s", celer_client_errstr(s->client));
  return tc_client_failure(s, rc, false);
}

/* ------------------------------------------------------------------ */
/* Commands                                                             */

static int64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmd_ping(session *s) {
  int rc = tc_connect(s);
  if (rc) return rc;
  int64_t start = mono_us();
  rc = celer_ping(s->client);
  double latency_ms = (double)(mono_us() - start) / 1000.0;
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json) {
    json_t *doc = json_pack("{s:b, s:f}", "ok", 1, "latency_ms", latency_ms);
    if (doc == NULL) return tc_fail(TC_EXIT_NEGATIVE, "out of memory formatting JSON");
    rc = print_json_flags(doc, JSON_REAL_PRECISION(TC_LATENCY_DIGITS));
    json_decref(doc);
    return rc;
  }
  char url[TC_URL_TEXT_MAX];
  tc_describe_url(s->cfg.broker_url, url, sizeof url);
  printf("PONG from %s in %.3f ms\n", url, latency_ms);
  return 0;
}

/* An enqueue as the command line asks for it. */
typedef struct enqueue_request {
  const char *task;
  json_t *args, *kwargs; /* owned; NULL when not given */
  celer_enqueue_options opts;
  bool wait;
  int64_t wait_ms; /* < 0: forever */
} enqueue_request;

static void enqueue_request_clear(enqueue_request *r) {
  json_decref(r->args);
  json_decref(r->kwargs);
  r->args = r->kwargs = NULL;
}

static int take_max_retries(const char *text, int *out) {
  int64_t v;
  if (celer_parse_i64(text, &v) != 0 || v > CELER_MAX_RETRIES_LIMIT)
    return tc_fail(TC_EXIT_USAGE, "--max-retries must be a whole number from 0 to %d, not '%s'",
                CELER_MAX_RETRIES_LIMIT, text);
  *out = (int)v;
  return 0;
}

/* Times: --countdown or --eta (exclusive), --expires, --timeout. */
static int take_enqueue_times(const cmdline *cl, celer_enqueue_options *o) {
  int rc;
  int64_t ms;
  if (cl->given[OPT_COUNTDOWN] && cl->given[OPT_ETA])
    return tc_fail(TC_EXIT_USAGE, "--countdown and --eta exclude each other; give one of them");
  if (cl->given[OPT_COUNTDOWN]) {
    if ((rc = tc_parse_seconds_option("countdown", cl->value[OPT_COUNTDOWN], &ms))) return rc;
    o->countdown_ms = ms;
  }
  if (cl->given[OPT_ETA]) {
    if (parse_rfc3339(cl->value[OPT_ETA], &ms) != 0)
      return tc_fail(TC_EXIT_USAGE,
                  "--eta must be an RFC 3339 time such as 2026-11-26T10:00:00Z or "
                  "2026-11-26T11:00:00.5+01:00, not '%s'",
                  cl->value[OPT_ETA]);
    if (ms <= 0) return tc_fail(TC_EXIT_USAGE, "--eta must be later than 1970-01-01T00:00:00Z");
    o->eta_ms = ms;
  }
  if (cl->given[OPT_EXPIRES]) {
    if ((rc = tc_parse_seconds_option("expires", cl->value[OPT_EXPIRES], &ms))) return rc;
    o->expires_ms = celer_now_ms() + ms;
  }
  if (cl->given[OPT_TIMEOUT]) {
    if ((rc = tc_parse_seconds_option("timeout", cl->value[OPT_TIMEOUT], &ms))) return rc;
    if (ms == 0) return tc_fail(TC_EXIT_USAGE, "--timeout must be more than 0 seconds");
    o->timeout_ms = ms;
  }
  return 0;
}

/* Validates every enqueue input; on failure r holds nothing. */
static int take_enqueue_request(const cmdline *cl, enqueue_request *r) {
  int rc = 0;
  celer_enqueue_options_init(&r->opts);
  r->task = cl->pos[0];
  if (strlen(r->task) > CELER_TASK_NAME_MAX || !celer_valid_task_name(r->task))
    return tc_fail(TC_EXIT_USAGE,
                "'%s' is not a valid task name: use 1 to %d characters from "
                "A-Z a-z 0-9 _ . : -",
                r->task, CELER_TASK_NAME_MAX);
  if (cl->given[OPT_ID] && (rc = check_id(cl->value[OPT_ID]))) return rc;
  r->opts.id = cl->given[OPT_ID] ? cl->value[OPT_ID] : NULL;
  if ((rc = tc_take_queue(cl, &r->opts.queue))) return rc;
  if (cl->given[OPT_MAX_RETRIES] &&
      (rc = take_max_retries(cl->value[OPT_MAX_RETRIES], &r->opts.max_retries)))
    return rc;
  if ((rc = take_enqueue_times(cl, &r->opts))) return rc;
  r->wait = cl->given[OPT_WAIT];
  if (r->wait && (rc = take_wait(cl, &r->wait_ms))) return rc;
  if (cl->given[OPT_ARGS])
    rc = parse_json_option("args", cl->value[OPT_ARGS], JSON_ARRAY, &r->args);
  if (rc == 0 && cl->given[OPT_KWARGS])
    rc = parse_json_option("kwargs", cl->value[OPT_KWARGS], JSON_OBJECT, &r->kwargs);
  if (rc) enqueue_request_clear(r);
  return rc;
}

static int print_id(const session *s, const char *id) {
  if (!s->json) {
    puts(id);
    return 0;
  }
  json_t *doc = json_pack("{s:s}", "id", id);
  if (doc == NULL) return tc_fail(TC_EXIT_NEGATIVE, "out of memory formatting JSON");
  int rc = tc_print_json(doc);
  json_decref(doc);
  return rc;
}

/* "30 s", "0.25 s", "forever": the length of a wait for messages. */
static void format_wait(int64_t wait_ms, char *buf, size_t size) {
  if (wait_ms < 0) {
    snprintf(buf, size, "forever");
    return;
  }
  char frac[8];
  int n = snprintf(frac, sizeof frac, ".%03lld", (long long)(wait_ms % TC_MS_PER_S));
  while (n > 1 && frac[n - 1] == '0') frac[--n] = '\0';
  if (n == 1) frac[0] = '\0';
  snprintf(buf, size, "%lld%s s", (long long)(wait_ms / TC_MS_PER_S), frac);
}

/* Prints a final record and says how it ended: 0 for SUCCEEDED. */
static int report_final(const session *s, const char *id, const json_t *rec) {
  celer_state st;
  const char *state = record_state_name(rec, &st);
  int rc = print_record(s, rec);
  if (rc) return rc;
  if (st == CELER_SUCCEEDED) return 0;
  char why[TC_MSG_MAX / 2];
  error_summary(rec, why, sizeof why);
  return tc_fail(TC_EXIT_NEGATIVE, "task %s %s: %s", id, state, why);
}

/* After an enqueue: waits for the final record and reports it. */
static int wait_and_report(session *s, const enqueue_request *r, const char *id) {
  json_t *rec = NULL;
  int rc = celer_wait(s->client, r->opts.queue, id, r->wait_ms, &rec);
  if (rc == CELER_ETIMEDOUT) {
    char span[32];
    format_wait(r->wait_ms, span, sizeof span);
    print_id(s, id); /* so the caller still learns the id */
    return tc_fail(TC_EXIT_TIMEOUT, "task %s did not finish within %s", id, span);
  }
  if (rc) return tc_client_failure(s, rc, true);
  rc = report_final(s, id, rec);
  json_decref(rec);
  return rc;
}

static int cmd_enqueue(session *s) {
  enqueue_request r = {0};
  int rc = take_enqueue_request(s->cl, &r);
  if (rc) return rc;
  if ((rc = tc_connect(s)) == 0) {
    char id[CELER_ID_MAX + 1];
    rc = celer_enqueue(s->client, r.task, r.args, r.kwargs, &r.opts, id);
    if (rc) rc = tc_client_failure(s, rc, false);
    else if (r.wait) rc = wait_and_report(s, &r, id);
    else rc = print_id(s, id);
  }
  enqueue_request_clear(&r);
  return rc;
}

static int not_found(const char *id, const char *queue) {
  if (queue)
    return tc_fail(TC_EXIT_NEGATIVE,
                "no record for task %s in queue %s; it may be pending, unknown, or expired",
                id, queue);
  return tc_fail(TC_EXIT_NEGATIVE,
              "no record for task %s; it may be pending, unknown, or expired", id);
}

static int cmd_task(session *s) {
  const char *id = s->cl->pos[0], *queue = NULL;
  int rc = check_id(id);
  if (rc == 0) rc = tc_take_queue(s->cl, &queue);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  json_t *rec = NULL;
  rc = celer_get_record(s->client, queue, id, &rec);
  if (rc == CELER_ENOTFOUND) return not_found(id, queue);
  if (rc) return tc_client_failure(s, rc, false);
  rc = print_record(s, rec);
  json_decref(rec);
  return rc;
}

/* Prints the result of a final record, or says why there is none. */
static int report_result(const session *s, const char *id, const json_t *rec) {
  celer_state st;
  const char *state = record_state_name(rec, &st);
  if (st != CELER_SUCCEEDED) {
    char why[TC_MSG_MAX / 2];
    error_summary(rec, why, sizeof why);
    return tc_fail(TC_EXIT_NEGATIVE, "task %s %s: %s", id, state, why);
  }
  const json_t *value = json_object_get(rec, "result");
  json_t *null_value = json_null();
  int rc = tc_print_json(value ? value : null_value);
  json_decref(null_value);
  return rc;
}

/* result with --wait on a task that is not final yet (or has no record). */
static int wait_for_result(session *s, const char *id, const char *queue, int64_t wait_ms) {
  json_t *rec = NULL;
  int rc = celer_wait(s->client, queue, id, wait_ms, &rec);
  if (rc == CELER_ETIMEDOUT) {
    char span[32];
    format_wait(wait_ms, span, sizeof span);
    return tc_fail(TC_EXIT_TIMEOUT, "task %s did not finish within %s", id, span);
  }
  if (rc) return tc_client_failure(s, rc, true);
  rc = report_result(s, id, rec);
  json_decref(rec);
  return rc;
}

static int cmd_result(session *s) {
  const char *id = s->cl->pos[0], *queue = NULL;
  int64_t wait_ms = 0;
  bool wait = s->cl->given[OPT_WAIT];
  int rc = check_id(id);
  if (rc == 0) rc = tc_take_queue(s->cl, &queue);
  if (rc == 0 && wait) rc = take_wait(s->cl, &wait_ms);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  json_t *rec = NULL;
  rc = celer_get_record(s->client, queue, id, &rec);
  if (rc != 0 && rc != CELER_ENOTFOUND) return tc_client_failure(s, rc, false);
  celer_state st = CELER_PENDING;
  if (rec) record_state_name(rec, &st);
  if (rec && celer_state_is_final(st)) {
    rc = report_result(s, id, rec);
  } else if (wait) {
    /* Wait where the record says the task lives, else where we were told. */
    const char *where = rec ? json_string_value(json_object_get(rec, "queue")) : NULL;
    rc = wait_for_result(s, id, where ? where : queue, wait_ms);
  } else if (rec) {
    rc = tc_fail(TC_EXIT_NEGATIVE, "task %s is %s and has no result yet; use --wait to wait for it",
              id, celer_state_name(st));
  } else {
    rc = not_found(id, queue);
  }
  json_decref(rec);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Operator commands: cancel, pause, resume, dead, retry, purge         */

/* Prints doc (built by json_pack; NULL when that ran out of memory) and
 * drops it. */
int tc_print_json_doc(json_t *doc) {
  if (doc == NULL) return tc_fail(TC_EXIT_NEGATIVE, "out of memory formatting JSON");
  int rc = tc_print_json(doc);
  json_decref(doc);
  return rc;
}

/* Where task id lives and how far it got: with a record, the record's
 * queue (when queue is NULL; else queue) and its state; without one,
 * queue or the default, and PENDING. */
static int locate_task(session *s, const char *queue, const char *id,
                       char where[CELER_QUEUE_NAME_MAX + 1], celer_state *st) {
  json_t *rec = NULL;
  *st = CELER_PENDING;
  snprintf(where, CELER_QUEUE_NAME_MAX + 1, "%s", queue ? queue : CELER_DEFAULT_QUEUE);
  int rc = celer_get_record(s->client, queue, id, &rec);
  if (rc == CELER_ENOTFOUND) return 0;
  if (rc) return tc_client_failure(s, rc, false);
  const char *q = json_string_value(json_object_get(rec, "queue"));
  if (queue == NULL && q && strlen(q) <= CELER_QUEUE_NAME_MAX && celer_valid_queue_name(q))
    snprintf(where, CELER_QUEUE_NAME_MAX + 1, "%s", q);
  record_state_name(rec, st);
  if (*st == CELER_STATE_COUNT) *st = CELER_PENDING; /* unreadable: not final */
  json_decref(rec);
  return 0;
}

/* The record is read first: it tells which queue a task lives in when no
 * --queue is given. */
static int cmd_cancel(session *s) {
  const char *id = s->cl->pos[0], *queue = NULL;
  int rc = check_id(id);
  if (rc == 0) rc = tc_take_queue(s->cl, &queue);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  char where[CELER_QUEUE_NAME_MAX + 1];
  celer_state st;
  if ((rc = locate_task(s, queue, id, where, &st))) return rc;
  bool canceled = false;
  if (!celer_state_is_final(st)) {
    if ((rc = celer_cancel(s->client, where, id, &st, &canceled)))
      return tc_client_failure(s, rc, false);
  }
  if (s->json) {
    rc = tc_print_json_doc(json_pack("{s:s, s:s, s:b}", "id", id, "state", celer_state_name(st),
                                  "canceled", canceled));
    if (rc) return rc;
  } else if (canceled) {
    printf("canceled task %s in queue %s\n", id, where);
  }
  if (canceled) return 0;
  return tc_fail(TC_EXIT_NEGATIVE, "task %s is already %s; nothing changed", id,
              celer_state_name(st));
}

static int set_paused(session *s, bool paused) {
  const char *queue = s->cl->pos[0];
  int rc = check_queue(queue);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  rc = paused ? celer_pause(s->client, queue) : celer_resume(s->client, queue);
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json) return tc_print_json_doc(json_pack("{s:s, s:b}", "queue", queue, "paused", paused));
  printf("%s queue %s\n", paused ? "paused" : "resumed", queue);
  return 0;
}

static int cmd_pause(session *s) { return set_paused(s, true); }

static int cmd_resume(session *s) { return set_paused(s, false); }

/* Copies text into out (size bytes) as one table cell: control characters
 * become spaces, and text longer than max bytes is cut on a character
 * boundary and ends in "...". */
static void cell_text(const char *text, size_t max, char *out, size_t size) {
  size_t len = strlen(text), keep = len;
  bool cut = false;
  if (max > size - 1) max = size - 1;
  if (len > max) {
    keep = max > 3 ? max - 3 : 0;
    /* Never keep the first bytes of a UTF-8 sequence without the rest. */
    while (keep > 0 && ((unsigned char)text[keep] & 0xC0) == 0x80) keep--;
    cut = true;
  }
  size_t n = 0;
  for (size_t i = 0; i < keep; i++) {
    unsigned char ch = (unsigned char)text[i];
    out[n++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
  }
  for (int i = 0; cut && i < 3 && n < max; i++) out[n++] = '.';
  out[n] = '\0';
}

static int base64url_value(char ch) {
  if (ch >= 'A' && ch <= 'Z') return ch - 'A';
  if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
  if (ch >= '0' && ch <= '9') return ch - '0' + 52;
  if (ch == '-') return 62;
  if (ch == '_') return 63;
  return -1;
}

/* Decodes len bytes of unpadded base64url; NULL when in is not that (or
 * out of memory). Caller frees; *out_len gets the length. */
static char *base64url_decode(const char *in, size_t len, size_t *out_len) {
  char *out = malloc(len / 4 * 3 + 3);
  if (out == NULL) return NULL;
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int v = base64url_value(in[i]);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (char)((acc >> bits) & 0xFF);
    }
  }
  *out_len = n;
  return out;
}

/* A dead task's envelope as an object: plain JSON, or the payload of the
 * compact JWS of a signed task. NULL when it is neither. Caller decrefs. */
static json_t *envelope_object(const char *text) {
  if (text == NULL) return NULL;
  json_t *env = json_loads(text, 0, NULL);
  if (json_is_object(env)) return env;
  json_decref(env);
  const char *dot1 = strchr(text, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  if (dot2 == NULL) return NULL;
  size_t len = 0;
  char *payload = base64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &len);
  env = payload ? json_loadb(payload, len, 0, NULL) : NULL;
  free(payload);
  if (json_is_object(env)) return env;
  json_decref(env);
  return NULL;
}

/* One row of the dead table as text. */
typedef struct dead_cells {
  char id[CELER_ID_MAX + 1];
  char task[TC_DEAD_TASK_MAX + 1];
  char since[48];
  char attempt[24];
  char error[TC_MSG_MAX / 2];
} dead_cells;

static void dead_cells_of(const json_t *entry, int64_t now_ms, dead_cells *c) {
  const json_t *rec = json_object_get(entry, "record");
  const char *id = json_string_value(json_object_get(entry, "id"));
  cell_text(id ? id : "?", CELER_ID_MAX, c->id, sizeof c->id);
  /* The task name: from the record, else from the envelope. */
  const char *name = json_string_value(json_object_get(rec, "task"));
  json_t *env = NULL;
  if (name == NULL) {
    env = envelope_object(json_string_value(json_object_get(entry, "envelope")));
    name = json_string_value(json_object_get(env, "task"));
  }
  cell_text(name ? name : "?", TC_DEAD_TASK_MAX, c->task, sizeof c->task);
  json_decref(env);
  const json_t *at = json_object_get(entry, "dead_at");
  if (json_is_integer(at) && json_integer_value(at) > 0)
    tc_format_relative(now_ms - json_integer_value(at), c->since, sizeof c->since);
  else
    snprintf(c->since, sizeof c->since, "?");
  const json_t *attempt = json_object_get(rec, "attempt");
  if (json_is_integer(attempt))
    snprintf(c->attempt, sizeof c->attempt, "%lld", (long long)json_integer_value(attempt));
  else
    snprintf(c->attempt, sizeof c->attempt, "-");
  if (json_is_object(rec)) error_summary(rec, c->error, sizeof c->error);
  else snprintf(c->error, sizeof c->error, "no record kept");
}

static void widen(int *width, const char *text) {
  if ((int)strlen(text) > *width) *width = (int)strlen(text);
}

/* The dead table: a header, one line per task, the error cut so a line
 * stays near TC_TABLE_COLUMNS. */
static void print_dead_table(const json_t *rows, const char *queue, int64_t offset,
                             int64_t total) {
  int64_t now = celer_now_ms();
  size_t n = json_array_size(rows);
  int wid = 2, wtask = 4, wsince = 10, wattempt = 7; /* the headers */
  dead_cells c;
  for (size_t i = 0; i < n; i++) {
    dead_cells_of(json_array_get(rows, i), now, &c);
    widen(&wid, c.id);
    widen(&wtask, c.task);
    widen(&wsince, c.since);
    widen(&wattempt, c.attempt);
  }
  int werror = TC_TABLE_COLUMNS - (wid + wtask + wsince + wattempt + 4 * 2);
  if (werror < TC_DEAD_ERROR_MIN) werror = TC_DEAD_ERROR_MIN;
  if (n > 0) {
    printf("%-*s  %-*s  %-*s  %*s  %s\n", wid, "ID", wtask, "TASK", wsince, "DEAD SINCE",
           wattempt, "ATTEMPT", "ERROR");
  }
  for (size_t i = 0; i < n; i++) {
    char error[sizeof c.error];
    dead_cells_of(json_array_get(rows, i), now, &c);
    cell_text(c.error, (size_t)werror, error, sizeof error);
    printf("%-*s  %-*s  %-*s  %*s  %s\n", wid, c.id, wtask, c.task, wsince, c.since, wattempt,
           c.attempt, error);
  }
  char shown[TC_COUNT_TEXT_MAX], all[TC_COUNT_TEXT_MAX];
  tc_format_count((int64_t)n, shown, sizeof shown);
  tc_format_count(total, all, sizeof all);
  printf("%s of %s dead %s in queue %s", shown, all, tc_tasks_word(total), queue);
  if (offset > 0) printf(", after the %lld newest", (long long)offset);
  printf("\n");
}

static int cmd_dead(session *s) {
  const char *queue = NULL;
  int64_t limit = TC_DEAD_LIMIT_DEFAULT, offset = 0;
  int rc = tc_take_queue(s->cl, &queue);
  if (rc == 0) rc = tc_take_count(s->cl, OPT_LIMIT, "limit", CELER_DEAD_LIST_MAX, &limit);
  if (rc == 0) rc = tc_take_count(s->cl, OPT_OFFSET, "offset", TC_DEAD_OFFSET_MAX, &offset);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  if (queue == NULL) queue = CELER_DEFAULT_QUEUE;
  json_t *rows = NULL;
  int64_t total = 0;
  rc = celer_dead_list(s->client, queue, offset, limit, &rows, &total);
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json) {
    rc = tc_print_json_doc(json_pack("{s:s, s:I, s:O}", "queue", queue, "total", (json_int_t)total,
                                  "tasks", rows));
  } else {
    print_dead_table(rows, queue, offset, total);
  }
  json_decref(rows);
  return rc;
}

static int cmd_retry(session *s) {
  const char *id = s->cl->npos > 0 ? s->cl->pos[0] : NULL, *queue = NULL;
  bool all = s->cl->given[OPT_ALL];
  if (id == NULL && !all) return tc_fail(TC_EXIT_USAGE, "retry needs a task ID or --all");
  if (id && all) return tc_fail(TC_EXIT_USAGE, "give a task ID or --all, not both");
  int rc = id ? check_id(id) : 0;
  if (rc == 0) rc = tc_take_queue(s->cl, &queue);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  if (queue == NULL) queue = CELER_DEFAULT_QUEUE;
  int64_t moved = 0;
  rc = celer_dead_retry(s->client, queue, id, &moved);
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json)
    return tc_print_json_doc(
        json_pack("{s:s, s:I}", "queue", queue, "moved", (json_int_t)moved));
  char count[TC_COUNT_TEXT_MAX];
  tc_format_count(moved, count, sizeof count);
  printf("moved %s %s back to queue %s\n", count, tc_tasks_word(moved), queue);
  return 0;
}

/* "the ready, scheduled and dead tasks": the parts purge would empty. */
static void describe_parts(unsigned parts, char *buf, size_t size) {
  const char *names[3];
  int k = 0;
  if (parts & CELER_PURGE_READY) names[k++] = "ready";
  if (parts & CELER_PURGE_SCHEDULED) names[k++] = "scheduled";
  if (parts & CELER_PURGE_DEAD) names[k++] = "dead";
  if (k == 1) snprintf(buf, size, "the %s tasks", names[0]);
  else if (k == 2) snprintf(buf, size, "the %s and %s tasks", names[0], names[1]);
  else snprintf(buf, size, "the %s, %s and %s tasks", names[0], names[1], names[2]);
}

static int cmd_purge(session *s) {
  const char *queue = s->cl->pos[0];
  unsigned parts = 0;
  if (s->cl->given[OPT_READY]) parts |= CELER_PURGE_READY;
  if (s->cl->given[OPT_SCHEDULED]) parts |= CELER_PURGE_SCHEDULED;
  if (s->cl->given[OPT_DEAD]) parts |= CELER_PURGE_DEAD;
  if (parts == 0) parts = CELER_PURGE_READY | CELER_PURGE_SCHEDULED | CELER_PURGE_DEAD;
  int rc = check_queue(queue);
  if (rc) return rc;
  if (!s->cl->given[OPT_YES]) {
    char what[64];
    describe_parts(parts, what, sizeof what);
    return tc_fail(TC_EXIT_USAGE,
                "purge would remove %s of queue %s for good; add --yes to do it", what, queue);
  }
  if ((rc = tc_connect(s))) return rc;
  int64_t counts[3] = {0, 0, 0};
  rc = celer_purge(s->client, queue, parts, counts);
  if (rc) return tc_client_failure(s, rc, false);
  if (s->json)
    return tc_print_json_doc(json_pack("{s:s, s:I, s:I, s:I}", "queue", queue, "ready",
                                    (json_int_t)counts[0], "scheduled", (json_int_t)counts[1],
                                    "dead", (json_int_t)counts[2]));
  char part[3][TC_COUNT_TEXT_MAX];
  for (int i = 0; i < 3; i++) tc_format_count(counts[i], part[i], sizeof part[i]);
  printf("purged queue %s: %s ready, %s scheduled, %s dead\n", queue, part[0], part[1],
         part[2]);
  return 0;
}

static int cmd_help(session *s);

/* ------------------------------------------------------------------ */
/* The command table                                                    */

static const opt_spec ping_options[] = {{NULL, 0, 0, NULL, NULL}};

static const opt_spec enqueue_options[] = {
    {"args", OPT_ARGS, ARG_REQUIRED, "JSON", "positional arguments, a JSON array"},
    {"kwargs", OPT_KWARGS, ARG_REQUIRED, "JSON", "keyword arguments, a JSON object"},
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q", "queue to send to (default: default)"},
    {"countdown", OPT_COUNTDOWN, ARG_REQUIRED, "SEC", "run no earlier than SEC seconds from now"},
    {"eta", OPT_ETA, ARG_REQUIRED, "TIME",
     "run no earlier than TIME, RFC 3339 (2026-11-26T10:00:00Z)"},
    {"expires", OPT_EXPIRES, ARG_REQUIRED, "SEC",
     "do not start later than SEC seconds from now (EXPIRED)"},
    {"max-retries", OPT_MAX_RETRIES, ARG_REQUIRED, "N", "override the task's retry limit"},
    {"timeout", OPT_TIMEOUT, ARG_REQUIRED, "SEC", "hard time limit of one run"},
    {"id", OPT_ID, ARG_REQUIRED, "ID", "task id to use (default: a new UUID)"},
    {"wait", OPT_WAIT, ARG_OPTIONAL_SECONDS, "[SEC]",
     "wait for the final record (forever without SEC) and print it"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec task_options[] = {
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q", "look only in queue Q (default: every queue)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec result_options[] = {
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q", "the task's queue (default: search every queue)"},
    {"wait", OPT_WAIT, ARG_OPTIONAL_SECONDS, "[SEC]",
     "wait up to SEC seconds (forever without SEC) for the task to finish"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec cancel_options[] = {
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q",
     "the task's queue (default: the queue of its record, else default)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec dead_options[] = {
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q", "the queue whose dead set to list (default: default)"},
    {"limit", OPT_LIMIT, ARG_REQUIRED, "N", "list at most N tasks (default 20, at most 10000)"},
    {"offset", OPT_OFFSET, ARG_REQUIRED, "N", "pass over the N newest first (default 0)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec retry_options[] = {
    {"all", OPT_ALL, ARG_NONE, NULL, "move every dead task of the queue"},
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q",
     "the queue whose dead set to take from (default: default)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec purge_options[] = {
    {"ready", OPT_READY, ARG_NONE, NULL, "remove the tasks no worker has taken yet"},
    {"scheduled", OPT_SCHEDULED, ARG_NONE, NULL,
     "remove the delayed tasks and the retries waiting for their time"},
    {"dead", OPT_DEAD, ARG_NONE, NULL, "remove the dead-lettered tasks"},
    {"yes", OPT_YES, ARG_NONE, NULL,
     "really remove them (without it, purge only says what it would remove)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec queues_options[] = {
    {"queue", OPT_QUEUE, ARG_REQUIRED, "Q", "show only queue Q (exit 1 when it is not known)"},
    {"limit", OPT_LIMIT, ARG_REQUIRED, "N", "list at most N queues (default 100, at most 10000)"},
    {"offset", OPT_OFFSET, ARG_REQUIRED, "N", "pass over the first N, by name (default 0)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec workers_options[] = {
    {"limit", OPT_LIMIT, ARG_REQUIRED, "N", "list at most N workers (default 100, at most 10000)"},
    {"offset", OPT_OFFSET, ARG_REQUIRED, "N", "pass over the first N, by name (default 0)"},
    {NULL, 0, 0, NULL, NULL},
};

static const opt_spec top_options[] = {
    {"interval", OPT_INTERVAL, ARG_REQUIRED, "SEC", "refresh every SEC seconds (default 1)"},
    {"iterations", OPT_ITERATIONS, ARG_REQUIRED, "N", "stop after N refreshes (default: never)"},
    {NULL, 0, 0, NULL, NULL},
};

static const command commands[] = {
    {"ping", cmd_ping, 0, 0, "", "", "check that the broker answers",
     "Sends PING to the broker and prints how long the answer took; exit 0 when it\n"
     "answers, 3 when it cannot be reached or refuses the credentials.\n"
     "JSON: {\"ok\": true, \"latency_ms\": ...}",
     ping_options, PROGRAM " --broker redis://127.0.0.1:6379/0 ping"},
    {"queues", cmd_queues, 0, 0, "", "[--queue Q] [--limit N] [--offset N]",
     "each queue: ready, active, scheduled, retrying, dead, totals, rate",
     "Lists the known queues by name: ready (not yet taken), active (taken by a\n"
     "worker, not yet recorded), scheduled (delayed tasks and retries), retrying\n"
     "(retries among scheduled), dead, processed and failed (FAILED or REJECTED)\n"
     "totals, the rate (tasks finished per second over the last minute) and\n"
     "whether the queue is paused. Exit 1 when --queue names an unknown queue.\n"
     "JSON: [{\"queue\", \"ready\", \"active\", \"scheduled\", \"retrying\", \"dead\",\n"
     "\"processed\", \"succeeded\", \"failed\", \"rejected\", \"expired\", \"canceled\",\n"
     "\"retried\", \"paused\", \"rate\"}, ...]",
     queues_options, PROGRAM " queues --limit 20"},
    {"stats", cmd_stats, 0, 0, "", "", "totals over every queue, recent rates, live workers",
     "Sums the counts of every queue, gives the rate of the whole system and of\n"
     "each busy queue (tasks finished per second over the last minute), names\n"
     "the paused queues, and counts live and stale workers and their busy slots.\n"
     "JSON: {\"queues\", \"ready\", \"active\", \"scheduled\", \"retrying\", \"dead\",\n"
     "\"processed\", \"succeeded\", \"failed\", \"rate\", \"paused\": [Q, ...],\n"
     "\"rates\": {Q: rate, ...}, \"workers\": {\"live\", \"stale\", \"busy\", \"concurrency\"}}",
     ping_options, PROGRAM " --json stats"},
    {"workers", cmd_workers, 0, 0, "", "[--limit N] [--offset N]",
     "the worker registry: busy slots, totals, last heartbeat",
     "Lists the workers in the registry by name: host, pid, queues, busy slots\n"
     "of its concurrency, tasks processed and failed, how long it has run, and\n"
     "its last heartbeat. A worker whose heartbeat is more than 15 s old is\n"
     "marked stale: it was killed, or cannot reach the broker.\n"
     "JSON: [{\"name\", \"host\", \"pid\", \"queues\", \"concurrency\", \"busy\",\n"
     "\"processed\", \"failed\", \"started_at\", \"last_heartbeat\", \"heartbeat_age_ms\",\n"
     "\"stale\", ...}, ...]",
     workers_options, PROGRAM " workers"},
    {"top", cmd_top, 0, 0, "", "[--interval SEC] [--iterations N]",
     "a live view of queues and workers",
     "Shows queues (with rates) and workers (with busy slots), refreshed every\n"
     "second. On a terminal it takes the whole screen and 'q' quits; otherwise\n"
     "it prints the tables again at each refresh, after a line with the time.\n"
     "JSON: one document per refresh and line, {\"at\", \"queues\", \"workers\"}",
     top_options, PROGRAM " top --interval 2"},
    {"enqueue", cmd_enqueue, 1, 1, "TASK",
     "TASK [--args JSON] [--kwargs JSON] [--queue Q]\n"
     "         [--countdown SEC | --eta TIME] [--expires SEC] [--max-retries N]\n"
     "         [--timeout SEC] [--id ID] [--wait [SEC]]",
     "send a task; with --wait, wait for its outcome",
     "Sends task TASK and prints its id. Seconds may be fractional (0.5).\n"
     "With --wait it waits for the final record and prints it: exit 0 when the\n"
     "task SUCCEEDED, 1 for any other final state, 4 when the wait runs out.\n"
     "A number right after --wait is its limit; write --wait=SEC to be explicit.\n"
     "JSON: {\"id\": ...}, or the final record with --wait",
     enqueue_options,
     PROGRAM " enqueue test.echo --args '[1, \"a\"]' --kwargs '{\"k\": true}' --wait 30"},
    {"task", cmd_task, 1, 1, "ID", "ID [--queue Q]", "show a task's record",
     "Prints the record of task ID: state, attempt, worker, times, error and\n"
     "result. Exit 1 when there is no record (the task is pending, unknown, or\n"
     "its record expired).\n"
     "JSON: the record",
     task_options, PROGRAM " task 1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
    {"result", cmd_result, 1, 1, "ID", "ID [--queue Q] [--wait [SEC]]",
     "print the result of a SUCCEEDED task",
     "Prints the result value of task ID when it SUCCEEDED. A task that is not\n"
     "final yet: with --wait, waits for it; else exit 1 naming its state. A task\n"
     "that ended otherwise: exit 1 with its error. Exit 4 when the wait runs out.\n"
     "A task with no record yet is awaited in its --queue (default: default).\n"
     "JSON: the result value itself (the text form is the same JSON)",
     result_options, PROGRAM " --json result 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --wait 10"},
    {"cancel", cmd_cancel, 1, 1, "ID", "ID [--queue Q]", "cancel a task that has not finished",
     "Gives task ID a final CANCELED record, so a worker that takes it later\n"
     "drops it without running it. Works for a task that is waiting, scheduled,\n"
     "retrying or not sent yet; one that is running finishes, but its outcome\n"
     "is not recorded. Exit 1 when the task had already ended: nothing changes.\n"
     "A task with no record yet (waiting or scheduled) is canceled in --queue,\n"
     "else in default: name the queue of a task sent elsewhere.\n"
     "JSON: {\"id\": ..., \"state\": \"CANCELED\" or the state it had, \"canceled\": bool}",
     cancel_options, PROGRAM " cancel 1b4e28ba-2fa1-11d2-883f-0016d3cca427 --queue emails"},
    {"pause", cmd_pause, 1, 1, "Q", "Q", "make workers stop taking tasks from a queue",
     "Pauses queue Q: within a second workers stop taking tasks from it. Tasks\n"
     "already running finish; nothing in the queue is lost or reordered, and\n"
     "producers may go on sending. 'resume' undoes it.\n"
     "JSON: {\"queue\": ..., \"paused\": true}",
     ping_options, PROGRAM " pause emails"},
    {"resume", cmd_resume, 1, 1, "Q", "Q", "let workers take tasks from a paused queue again",
     "Resumes queue Q after 'pause': workers take its tasks again, in order.\n"
     "Resuming a queue that is not paused changes nothing.\n"
     "JSON: {\"queue\": ..., \"paused\": false}",
     ping_options, PROGRAM " resume emails"},
    {"dead", cmd_dead, 0, 0, "", "[--queue Q] [--limit N] [--offset N]",
     "list dead-lettered tasks with their errors",
     "Lists the tasks of queue Q that ended FAILED or REJECTED and were kept in\n"
     "its dead set, newest first: id, task, how long ago it died, attempt\n"
     "(retries before it died) and its error, cut to fit the line. The last\n"
     "line says how many of how many are shown. 'retry' runs them again.\n"
     "JSON: {\"queue\": ..., \"total\": N, \"tasks\": [{\"id\", \"dead_at\" (ms),\n"
     "\"record\" (object or null), \"envelope\" (string or null)}, ...]}",
     dead_options, PROGRAM " dead --queue emails --limit 50"},
    {"retry", cmd_retry, 0, 1, "ID", "ID | --all [--queue Q]", "move dead tasks back to ready",
     "Moves dead task ID, or with --all every dead task of the queue, back to\n"
     "the queue's ready tasks: it runs again from its first attempt, and its\n"
     "old record is removed. Exit 1 when ID is not in the dead set. A dead task\n"
     "whose envelope could not be read cannot run again and stays.\n"
     "JSON: {\"queue\": ..., \"moved\": N}",
     retry_options, PROGRAM " retry --all --queue emails"},
    {"purge", cmd_purge, 1, 1, "Q", "Q [--ready] [--scheduled] [--dead] --yes",
     "empty parts of a queue",
     "Removes for good the ready (not yet taken), scheduled (delayed and\n"
     "retrying) and dead tasks of queue Q, or only the parts named. Tasks that\n"
     "workers have already taken keep running and recording. Without --yes it\n"
     "removes nothing, says what it would remove, and exits 2.\n"
     "JSON: {\"queue\": ..., \"ready\": R, \"scheduled\": S, \"dead\": D}",
     purge_options, PROGRAM " purge emails --scheduled --dead --yes"},
    {"help", cmd_help, 0, 1, "COMMAND", "[COMMAND]", "show help for a command",
     "Shows the usage of COMMAND, or of " PROGRAM " itself.", ping_options,
     PROGRAM " help enqueue"},
};

#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

static const command *find_command(const char *name) {
  for (size_t i = 0; i < COMMAND_COUNT; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Help                                                                 */

static int option_label(const opt_spec *o, char *buf, size_t size) {
  return snprintf(buf, size, "--%s%s%s", o->name, o->metavar ? " " : "",
                  o->metavar ? o->metavar : "");
}

static void print_options(const char *title, const opt_spec *opts) {
  char label[64];
  int width = 0;
  if (opts[0].name == NULL) return;
  for (const opt_spec *o = opts; o->name; o++) {
    int n = option_label(o, label, sizeof label);
    if (n > width) width = n;
  }
  printf("\n%s:\n", title);
  for (const opt_spec *o = opts; o->name; o++) {
    option_label(o, label, sizeof label);
    printf("  %-*s  %s\n", width, label, o->help);
  }
}

static void print_tool_help(void) {
  printf("Usage: " PROGRAM " [--broker URL] [--namespace NS] [--json] [--config FILE] "
         "COMMAND [ARGS]\n\n"
         "The operator's tool for Celer: see queues and workers, send tasks, read\n"
         "records and results, cancel tasks, pause queues, and handle dead tasks.\n\n"
         "Commands:\n");
  for (size_t i = 0; i < COMMAND_COUNT; i++)
    printf("  %-9s %s\n", commands[i].name, commands[i].summary);
  print_options("Global options (before or after the command)", global_options);
  printf("\nSettings: flag > environment > config file > default.\n"
         "Exit status: 0 success; 1 negative answer (task failed, not found, not\n"
         "finished, already ended; queue unknown); 2 usage error; 3 broker\n"
         "unreachable or authentication refused; 4 timed out waiting.\n\n"
         "Example:\n  " PROGRAM " --broker redis://127.0.0.1:6379/0 enqueue test.noop --wait 10\n"
         "Run '" PROGRAM " COMMAND --help' for the options of one command.\n");
}

static void print_command_help(const command *cmd) {
  printf("Usage: " PROGRAM " [global options] %s%s%s\n\n%s\n", cmd->name,
         cmd->synopsis[0] ? " " : "", cmd->synopsis, cmd->description);
  print_options("Options", cmd->options);
  printf("\nGlobal options: --broker URL, --namespace NS, --json, --config FILE,\n"
         "--help (see '" PROGRAM " --help').\n\nExample:\n  %s\n",
         cmd->example);
}

static int cmd_help(session *s) {
  if (s->cl->npos == 0) {
    print_tool_help();
    return 0;
  }
  const command *cmd = find_command(s->cl->pos[0]);
  if (cmd == NULL) return usage_error(NULL, "unknown command '%s'", s->cl->pos[0]);
  print_command_help(cmd);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Parsing the command line                                             */

static const opt_spec *find_option(const opt_spec *table, const char *name, size_t len) {
  for (const opt_spec *o = table; o && o->name; o++)
    if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
  return NULL;
}

static bool is_option_word(const char *arg) { return arg[0] == '-' && arg[1] != '\0'; }

/* Takes the option at argv[*i] (and its value) into cl, looking it up in
 * the command's table (cmd may be NULL) and then in the global one. */
static int take_option(const command *cmd, int argc, char **argv, int *i, cmdline *cl) {
  const char *arg = argv[(*i)++];
  if (strcmp(arg, "-h") == 0) {
    cl->given[OPT_HELP] = true;
    return 0;
  }
  if (arg[1] != '-') return usage_error(cmd, "unknown option '%s'", arg);
  const char *name = arg + 2;
  const char *eq = strchr(name, '=');
  size_t len = eq ? (size_t)(eq - name) : strlen(name);
  const opt_spec *o = find_option(cmd ? cmd->options : NULL, name, len);
  if (o == NULL) o = find_option(global_options, name, len);
  if (o == NULL) {
    if (cmd) return usage_error(cmd, "%s has no option '--%.*s'", cmd->name, (int)len, name);
    return usage_error(NULL, "unknown option '--%.*s'", (int)len, name);
  }
  const char *value = "";
  if (o->kind == ARG_NONE && eq) {
    return usage_error(cmd, "option --%s takes no value", o->name);
  } else if (o->kind != ARG_NONE && eq) {
    value = eq + 1;
  } else if (o->kind == ARG_REQUIRED) {
    if (*i >= argc) return usage_error(cmd, "option --%s needs a value (%s)", o->name, o->metavar);
    value = argv[(*i)++];
  } else if (o->kind == ARG_OPTIONAL_SECONDS && *i < argc && reads_as_seconds(argv[*i])) {
    value = argv[(*i)++];
  }
  cl->given[o->key] = true;
  cl->value[o->key] = value;
  return 0;
}

/* Options and positional arguments after the command word. */
static int parse_command_args(const command *cmd, int argc, char **argv, int i, cmdline *cl) {
  bool options_done = false;
  while (i < argc) {
    const char *arg = argv[i];
    if (!options_done && strcmp(arg, "--") == 0) {
      options_done = true;
      i++;
    } else if (!options_done && is_option_word(arg)) {
      int rc = take_option(cmd, argc, argv, &i, cl);
      if (rc || cl->given[OPT_HELP]) return rc;
    } else {
      if (cl->npos == cmd->max_pos) return usage_error(cmd, "unexpected argument '%s'", arg);
      cl->pos[cl->npos++] = arg;
      i++;
    }
  }
  if (cl->npos < cmd->min_pos) return usage_error(cmd, "%s needs %s", cmd->name, cmd->pos_names);
  return 0;
}

/* Global options, the command word, then the command's own arguments. */
static int parse_command_line(int argc, char **argv, const command **cmd, cmdline *cl) {
  int i = 1;
  *cmd = NULL;
  while (i < argc && is_option_word(argv[i])) {
    if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    }
    int rc = take_option(NULL, argc, argv, &i, cl);
    if (rc || cl->given[OPT_HELP]) return rc;
  }
  if (i >= argc) return usage_error(NULL, "no command given");
  *cmd = find_command(argv[i]);
  if (*cmd == NULL) return usage_error(NULL, "unknown command '%s'", argv[i]);
  return parse_command_args(*cmd, argc, argv, i + 1, cl);
}

/* ------------------------------------------------------------------ */
/* Settings                                                             */

/* Defaults < config file < environment (celer_config_load), then flags. */
static int load_settings(const cmdline *cl, celer_config *cfg) {
  char err[CELER_ERRSTR_LEN];
  const char *file = cl->given[OPT_CONFIG] ? cl->value[OPT_CONFIG] : NULL;
  if (celer_config_load(cfg, file, err, sizeof err) != 0) return tc_fail(TC_EXIT_USAGE, "%s", err);
  if ((cl->given[OPT_BROKER] && celer_config_replace(&cfg->broker_url, cl->value[OPT_BROKER])) ||
      (cl->given[OPT_NAMESPACE] && celer_config_replace(&cfg->ns, cl->value[OPT_NAMESPACE])))
    return tc_fail(TC_EXIT_NEGATIVE, "out of memory reading the settings");
  if (cfg->broker_url == NULL || cfg->broker_url[0] == '\0')
    return tc_fail(TC_EXIT_USAGE, "the broker URL is empty");
  if (cfg->ns == NULL || strlen(cfg->ns) > CELER_NAMESPACE_MAX || !celer_valid_queue_name(cfg->ns))
    return tc_fail(TC_EXIT_USAGE,
                "'%s' is not a valid namespace: use 1 to %d characters from A-Z a-z 0-9 _ . -",
                cfg->ns ? cfg->ns : "", CELER_NAMESPACE_MAX);
  return 0;
}

static int run(int argc, char **argv) {
  cmdline cl = {0};
  const command *cmd = NULL;
  int rc = parse_command_line(argc, argv, &cmd, &cl);
  if (rc) return rc;
  if (cl.given[OPT_HELP]) {
    if (cmd && cmd->run != cmd_help) print_command_help(cmd);
    else print_tool_help();
    return 0;
  }
  session s = {.cl = &cl, .json = cl.given[OPT_JSON]};
  if (cmd->run == cmd_help) return cmd_help(&s);
  rc = load_settings(&cl, &s.cfg);
  if (rc == 0) rc = cmd->run(&s);
  celer_client_free(s.client);
  celer_config_free(&s.cfg);
  return rc;
}

int main(int argc, char **argv) {
  celer_argv_hide_passwords(argc, argv);
  int rc = run(argc, argv);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, PROGRAM ": cannot write to standard output\n");
    if (rc == 0) rc = TC_EXIT_NEGATIVE;
  }
  return rc;
}
