/* taskctl top: a live view of queues (with rates) and workers (with busy
 * counts), redrawn every --interval seconds.
 *
 * On a terminal: the alternate screen, the cursor hidden, keys read one by
 * one without echo; 'q' (or Ctrl-C) quits and the terminal is restored.
 * Otherwise (a pipe, a file): the same tables printed again and again,
 * each frame after a line with its time, never a control sequence; with
 * --json one JSON document per line. --iterations ends after N frames. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "celer/admin.h"
#include "client/taskctl.h"

/* Refresh period when --interval is not given. */
#define TOP_INTERVAL_DEFAULT_MS 1000
/* The shortest period: a faster redraw only loads the broker. */
#define TOP_INTERVAL_MIN_MS 100
/* The largest --iterations; more than a century of seconds. */
#define TOP_ITERATIONS_MAX 4000000000LL
/* Screen size when the terminal does not say. */
#define TOP_DEFAULT_COLS 80
#define TOP_DEFAULT_ROWS 24
/* Lines of the screen that are not table rows: title, two headers, the
 * blank line between the tables and the summary. */
#define TOP_FIXED_LINES 6

static volatile sig_atomic_t top_stop;

static void on_stop(int sig) { top_stop = sig; }

/* The terminal as it was before top took it over. */
typedef struct screen {
  bool active;
  struct termios saved;
  bool saved_ok;
} screen;

static void screen_enter(screen *sc) {
  sc->saved_ok = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &sc->saved) == 0;
  if (sc->saved_ok) {
    struct termios raw = sc->saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    tcsetattr(STDIN_FILENO, TCSANOW, &raw);
  }
  /* The alternate screen, cursor hidden. */
  fputs("\033[?1049h\033[?25l", stdout);
  fflush(stdout);
  sc->active = true;
}

static void screen_leave(screen *sc) {
  if (!sc->active) return;
  fputs("\033[?25h\033[?1049l", stdout);
  fflush(stdout);
  if (sc->saved_ok) tcsetattr(STDIN_FILENO, TCSANOW, &sc->saved);
  sc->active = false;
}

static void screen_size(size_t *cols, size_t *rows) {
  struct winsize ws;
  *cols = TOP_DEFAULT_COLS;
  *rows = TOP_DEFAULT_ROWS;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    *cols = ws.ws_col;
    *rows = ws.ws_row;
  }
}

/* The first n elements of list (a new reference). */
static json_t *head_of(json_t *list, size_t n) {
  if (json_array_size(list) <= n) return json_incref(list);
  json_t *out = json_array();
  for (size_t i = 0; out && i < n; i++) json_array_append(out, json_array_get(list, i));
  return out;
}

/* One frame: both lists read fresh from the broker. */
typedef struct frame {
  json_t *queues, *workers; /* owned */
  int64_t nqueues, nworkers;
  int64_t at_ms;
} frame;

static void frame_clear(frame *f) {
  json_decref(f->queues);
  json_decref(f->workers);
  memset(f, 0, sizeof *f);
}

/* Returns 0 or the client's CELER_E* code, reported by the caller once
 * the terminal is its own again. */
static int frame_read(session *s, frame *f) {
  memset(f, 0, sizeof *f);
  int rc = celer_queue_stats(s->client, NULL, 0, CELER_LIST_MAX, &f->queues, &f->nqueues);
  if (rc == 0) rc = celer_workers(s->client, 0, CELER_LIST_MAX, &f->workers, &f->nworkers);
  if (rc) {
    frame_clear(f);
    return rc;
  }
  f->at_ms = celer_now_ms();
  return 0;
}

/* "2026-11-26 07:12:03 UTC". */
static void clock_text(int64_t ms, char *buf, size_t size) {
  time_t t = (time_t)(ms / TC_MS_PER_S);
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    snprintf(buf, size, "%lld", (long long)ms);
}

/* The summary line under the tables. */
static void summary_text(const frame *f, char *buf, size_t size) {
  double rate = 0;
  int64_t busy = 0, slots = 0, stale = 0;
  size_t i;
  json_t *row;
  json_array_foreach(f->queues, i, row) rate += json_number_value(json_object_get(row, "rate"));
  json_array_foreach(f->workers, i, row) {
    if (json_is_true(json_object_get(row, "stale"))) {
      stale++;
      continue;
    }
    busy += json_integer_value(json_object_get(row, "busy"));
    slots += json_integer_value(json_object_get(row, "concurrency"));
  }
  char r[TC_COUNT_TEXT_MAX];
  tc_format_rate(rate, r, sizeof r);
  snprintf(buf, size, "%lld %s, %lld %s (%lld stale), %lld of %lld slots busy, %s tasks/s",
           (long long)f->nqueues, f->nqueues == 1 ? "queue" : "queues", (long long)f->nworkers,
           f->nworkers == 1 ? "worker" : "workers", (long long)stale, (long long)busy,
           (long long)slots, r);
}

/* Draws a frame; on a terminal, within its width and height. */
static int draw(session *s, const frame *f, bool tty) {
  char when[64], url[TC_URL_TEXT_MAX], summary[256];
  size_t cols = 0, rows = 0;
  clock_text(f->at_ms, when, sizeof when);
  tc_describe_url(s->cfg.broker_url, url, sizeof url);
  summary_text(f, summary, sizeof summary);
  json_t *queues = json_incref(f->queues), *workers = json_incref(f->workers);
  if (tty) {
    screen_size(&cols, &rows);
    /* Rows left for the tables, shared: queues first, at least a few. */
    size_t room = rows > TOP_FIXED_LINES ? rows - TOP_FIXED_LINES : 1;
    size_t nq = json_array_size(queues), nw = json_array_size(workers);
    size_t wq = nq + nw <= room ? nq : (nw < room / 2 ? room - nw : (room + 1) / 2);
    size_t ww = room > wq ? room - wq : 0;
    json_decref(queues);
    json_decref(workers);
    queues = head_of(f->queues, wq);
    workers = head_of(f->workers, ww);
    fputs("\033[H\033[2J", stdout); /* home, clear */
    printf("%s%.*s%s\n", tc_color() ? "\033[1m" : "", (int)cols,
           "celer top: q quits", tc_color() ? "\033[0m" : "");
  }
  char head[TC_URL_TEXT_MAX + 96];
  snprintf(head, sizeof head, "%s  %s", when, url);
  printf("%.*s\n", tty ? (int)cols : (int)sizeof head, head);
  int rc = tc_print_queues_table(queues, stdout, cols);
  if (rc == 0) {
    printf("\n");
    rc = tc_print_workers_table(workers, stdout, cols);
  }
  if (rc == 0) printf("%.*s\n", tty ? (int)cols : (int)sizeof summary, summary);
  json_decref(queues);
  json_decref(workers);
  fflush(stdout);
  return rc;
}

static int print_frame_json(const frame *f) {
  return tc_print_json_doc(json_pack("{sI sO sO}", "at", (json_int_t)f->at_ms, "queues",
                                     f->queues, "workers", f->workers));
}

/* Waits up to ms for a key on a terminal; true when it asks to quit. */
static bool wait_for_quit(int64_t ms, bool keys) {
  int64_t deadline = celer_mono_ms() + ms;
  while (!top_stop) {
    int64_t left = deadline - celer_mono_ms();
    if (left <= 0) return false;
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    int n = poll(&p, keys ? 1 : 0, (int)left);
    if (n < 0 && errno != EINTR) return false;
    if (n > 0 && keys) {
      char ch;
      ssize_t got = read(STDIN_FILENO, &ch, 1);
      if (got == 1 && (ch == 'q' || ch == 'Q')) return true;
      /* End of input: no key will come; go on refreshing until a signal. */
      if (got == 0) keys = false;
    }
  }
  return true;
}

static int take_top_options(const cmdline *cl, int64_t *interval_ms, int64_t *iterations) {
  *interval_ms = TOP_INTERVAL_DEFAULT_MS;
  *iterations = 0;
  if (cl->given[OPT_INTERVAL]) {
    int rc = tc_parse_seconds_option("interval", cl->value[OPT_INTERVAL], interval_ms);
    if (rc) return rc;
    if (*interval_ms < TOP_INTERVAL_MIN_MS)
      return tc_fail(TC_EXIT_USAGE, "--interval must be at least %d.%d seconds",
                     TOP_INTERVAL_MIN_MS / 1000, TOP_INTERVAL_MIN_MS % 1000 / 100);
  }
  int rc = tc_take_count(cl, OPT_ITERATIONS, "iterations", TOP_ITERATIONS_MAX, iterations);
  if (rc == 0 && cl->given[OPT_ITERATIONS] && *iterations == 0)
    return tc_fail(TC_EXIT_USAGE, "--iterations must be at least 1");
  return rc;
}

int cmd_top(session *s) {
  int64_t interval_ms, iterations;
  int rc = take_top_options(s->cl, &interval_ms, &iterations);
  if (rc == 0) rc = tc_connect(s);
  if (rc) return rc;
  bool tty = !s->json && isatty(STDOUT_FILENO);
  bool keys = tty && isatty(STDIN_FILENO);
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  screen sc = {0};
  int broker_rc = 0;
  if (tty) screen_enter(&sc);
  for (int64_t n = 0; rc == 0 && !top_stop && (iterations == 0 || n < iterations); n++) {
    frame f;
    if ((broker_rc = frame_read(s, &f)) != 0) break;
    if (s->json) rc = print_frame_json(&f);
    else if (tty) rc = draw(s, &f, true);
    else {
      if (n > 0) printf("\n");
      rc = draw(s, &f, false);
    }
    fflush(stdout);
    frame_clear(&f);
    if (rc || (iterations && n + 1 >= iterations)) break;
    if (wait_for_quit(interval_ms, keys)) break;
  }
  screen_leave(&sc);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  return broker_rc ? tc_client_failure(s, broker_rc, false) : rc;
}
