/* taskctl's private header: the command-line model, the session every
 * command handler gets, and the helpers its files share.
 *
 * Map of taskctl:
 *   taskctl.c       main, the command table, parsing, help, and the task
 *                   and operator commands (ping ... purge)
 *   taskctl_fmt.c   text for people: counts with separators, rates,
 *                   colour rules, aligned tables
 *   taskctl_view.c  queues, stats, workers
 *   taskctl_top.c   top: the live view */
#ifndef CELER_TASKCTL_H
#define CELER_TASKCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>
#include "celer/client.h"
#include "common/common.h"

#define PROGRAM "taskctl"

/* Exit codes of the contract. */
typedef enum tc_exit {
  TC_EXIT_OK = 0,        /* success */
  TC_EXIT_NEGATIVE = 1,  /* the answer is negative: failed, not found, not final */
  TC_EXIT_USAGE = 2,     /* bad command line or configuration */
  TC_EXIT_BROKER = 3,    /* broker unreachable or authentication refused */
  TC_EXIT_TIMEOUT = 4,   /* timed out waiting */
} tc_exit;

/* No command takes more positional arguments than this. */
#define TC_MAX_POSITIONALS 2
/* Milliseconds per second and per larger unit, for conversions. */
#define TC_MS_PER_S 1000LL
#define TC_S_PER_MIN 60LL
#define TC_S_PER_HOUR 3600LL
#define TC_S_PER_DAY 86400LL
/* Longest message this program composes itself. */
#define TC_MSG_MAX 1024
/* Room for one formatted count: 19 digits, 6 separators, a sign. */
#define TC_COUNT_TEXT_MAX 32
/* Room for a broker URL as shown to people, password masked. */
#define TC_URL_TEXT_MAX 1024

typedef enum opt_key {
  OPT_BROKER,
  OPT_NAMESPACE,
  OPT_JSON,
  OPT_CONFIG,
  OPT_HELP,
  OPT_ARGS,
  OPT_KWARGS,
  OPT_QUEUE,
  OPT_COUNTDOWN,
  OPT_ETA,
  OPT_EXPIRES,
  OPT_MAX_RETRIES,
  OPT_TIMEOUT,
  OPT_ID,
  OPT_WAIT,
  OPT_LIMIT,
  OPT_OFFSET,
  OPT_ALL,
  OPT_READY,
  OPT_SCHEDULED,
  OPT_DEAD,
  OPT_YES,
  OPT_INTERVAL,
  OPT_ITERATIONS,
  OPT_COUNT
} opt_key;

/* What the command line said, uninterpreted. Strings borrow from argv. */
typedef struct cmdline {
  bool given[OPT_COUNT];
  const char *value[OPT_COUNT]; /* the last one given; "" for flags */
  const char *pos[TC_MAX_POSITIONALS];
  int npos;
} cmdline;

/* Everything a handler works with. */
typedef struct session {
  const cmdline *cl;
  bool json;
  celer_config cfg;
  celer_client *client; /* NULL until tc_connect */
} session;

/* ---- taskctl.c ---- */
int tc_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Connects s->client; on failure reports it and returns the exit code. */
int tc_connect(session *s);
/* Reports the client's last failure; returns the exit code. */
int tc_client_failure(const session *s, int rc, bool waiting);
/* Validates --queue when given; *queue stays NULL otherwise. */
int tc_take_queue(const cmdline *cl, const char **queue);
/* Reads the whole-number option --name (key) from 0 to max; *out keeps its
 * value when the option was not given. */
int tc_take_count(const cmdline *cl, opt_key key, const char *name, int64_t max, int64_t *out);
/* Parses --name's text as seconds (fractions allowed) into *ms. */
int tc_parse_seconds_option(const char *name, const char *text, int64_t *ms);
/* Prints v as one compact JSON document and a newline. */
int tc_print_json(const json_t *v);
/* Prints doc (NULL: out of memory) and drops the reference. */
int tc_print_json_doc(json_t *doc);
/* The broker URL as people may see it: password masked. */
void tc_describe_url(const char *url, char *buf, size_t size);

/* ---- taskctl_fmt.c ---- */
/* "3s ago", "in 2m 5s", "just now". */
void tc_format_relative(int64_t delta_ms, char *buf, size_t size);
/* 1234567 -> "1,234,567". */
void tc_format_count(int64_t n, char *buf, size_t size);
/* Tasks per second for people: "0", "0.25", "12.5", "1,234". */
void tc_format_rate(double per_s, char *buf, size_t size);
/* "task" or "tasks" after a count. */
const char *tc_tasks_word(int64_t n);
/* Colour is used only when stdout is a terminal, NO_COLOR is unset or
 * empty, and TERM is not "dumb". Decided once per run. */
bool tc_color(void);
/* SGR colours for table cells (NULL = none). */
#define TC_RED "31"
#define TC_GREEN "32"
#define TC_YELLOW "33"
#define TC_BOLD "1"
#define TC_DIM "2"

/* An aligned text table. Cells are copied; widths are computed from the
 * plain text, so colour never disturbs the alignment. */
typedef struct tc_column {
  const char *header;
  bool right; /* numbers: right-aligned */
} tc_column;
typedef struct tc_table {
  const tc_column *cols; /* borrowed */
  size_t ncols, nrows, cap;
  char **cells;          /* nrows * ncols, owned */
  const char **colors;   /* nrows * ncols, borrowed string literals */
} tc_table;
void tc_table_init(tc_table *t, const tc_column *cols, size_t ncols);
/* Adds a row of ncols cells; colors may be NULL. 0 or CELER_ENOMEM. */
int tc_table_add(tc_table *t, const char *const *cells, const char *const *colors);
/* Prints the header and rows to out, each line cut at max_width columns
 * (0 = no limit). */
void tc_table_print(const tc_table *t, FILE *out, size_t max_width);
void tc_table_free(tc_table *t);

/* ---- taskctl_view.c ---- */
int cmd_queues(session *s);
int cmd_stats(session *s);
int cmd_workers(session *s);
/* The queues and workers tables of `queues`, `workers` and `top`, from
 * the lists celer_queue_stats and celer_workers return. */
int tc_print_queues_table(const json_t *queues, FILE *out, size_t max_width);
int tc_print_workers_table(const json_t *workers, FILE *out, size_t max_width);

/* ---- taskctl_top.c ---- */
int cmd_top(session *s);

#endif
