/* Unit tests of worker/metrics.c and worker/http.c: the exact exposition
 * text of a hand-made metrics_input, and the HTTP server driven on a real
 * libev loop against real TCP clients (raw sockets watched by the same
 * loop, and the curl program). No sleeps: the loop runs until the client
 * is done or a deadline passes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "worker/worker.h"

extern char **environ;

/* worker/slots.c defines the bounds in the worker; the test has its own. */
const double slot_duration_bounds[SLOT_DURATION_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

/* http.c's limits, which the tests probe from outside. */
#define REQUEST_MAX (8 * 1024)
#define CONN_MAX 64
#define TIMEOUT_S 5.0

/* Deadline of one exchange: generous for a loaded sanitizer build. */
#define EXCHANGE_DEADLINE_S 10.0
/* The body /big answers with: many times a socket buffer, so that the
 * server meets EAGAIN and finishes from its write watcher. */
#define BIG_BODY (4 * 1024 * 1024)
#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* A client's read buffer: first size, and the least free room kept. */
#define CLIENT_BUF_INITIAL (64 * 1024)
#define CLIENT_BUF_MIN_ROOM 4096
/* Loop turns without blocking that let the server take in what clients
 * already sent (each turn accepts, reads or writes what is ready). */
#define SETTLE_TURNS 20
/* Random requests thrown at the server, and their longest length. */
#define GARBAGE_ROUNDS 300
#define GARBAGE_LEN_MAX 120
/* How long the accept-pause test runs out of descriptors, and the loop
 * turns allowed meanwhile: a pause of 0.1 s makes about five; a spinning
 * accept would make hundreds of thousands. */
#define PAUSE_WINDOW_S 0.5
#define PAUSE_TURNS_MAX 50
/* Longest address the error test builds: one past http.c's limit. */
#define ADDR_TOO_LONG 65

/* ---- the fixture input of metrics_render ---- */

static const char *const fixture_queues[] = {"default", "emails"};
static slot_run fixture_runs[3];
static slot_counters fixture_counters[3];

static void fixture_input(metrics_input *m) {
  memset(m, 0, sizeof *m);
  memset(fixture_runs, 0, sizeof fixture_runs);
  memset(fixture_counters, 0, sizeof fixture_counters);
  m->worker = "we\"ird\\name";
  m->queues = fixture_queues;
  m->nqueues = 2;
  m->runs = fixture_runs;
  m->counters = fixture_counters;
  m->nslots = 3;
  fixture_runs[0] = (slot_run){.pid = 100, .busy = true};
  fixture_runs[1] = (slot_run){.pid = 101, .busy = false};
  fixture_runs[2] = (slot_run){.pid = 0, .busy = true}; /* empty slot, stale flag */

  slot_counters *c = fixture_counters;
  c[0].by_state[0][CELER_SUCCEEDED] = 4;
  c[1].by_state[0][CELER_SUCCEEDED] = 3;
  c[0].by_state[0][CELER_RETRYING] = 1;
  c[0].by_state[0][CELER_PENDING] = 5; /* not a result: never reported */
  c[1].by_state[0][CELER_ACTIVE] = 6;
  c[1].by_state[1][CELER_FAILED] = 2;
  static const uint64_t b0[SLOT_DURATION_BUCKETS] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 4};
  static const uint64_t b1[SLOT_DURATION_BUCKETS] = {0, 0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3};
  memcpy(c[0].duration_buckets, b0, sizeof b0);
  memcpy(c[1].duration_buckets, b1, sizeof b1);
  c[0].duration_count = 4;
  c[1].duration_count = 3;
  c[2].duration_count = 1; /* one run longer than the last bound */
  c[0].duration_sum_s = 1.5;
  c[1].duration_sum_s = 2.25;
  c[2].duration_sum_s = 40;
  c[0].refused[VERIFY_EXPIRED] = 2; /* summed over slots, by reason */
  c[2].refused[VERIFY_EXPIRED] = 3;
  c[0].stale = 1;
  c[2].stale = 2;
  c[1].duplicates = 5;
  c[0].reconnects = 1;
  c[1].reconnects = 1;

  for (size_t q = 0; q < WORKER_QUEUES_MAX; q++) m->ready[q] = m->scheduled[q] = m->dead[q] = -1;
  m->ready[0] = 5;
  m->scheduled[1] = 3;
  m->dead[0] = 0;
  m->child_starts = 4;
  m->child_crashes = 1;
  m->time_limit_kills = 2;
  m->reclaimed = 6;
  m->lost = 1;
  m->promoted = 9;
  m->uptime_s = 3600;
  m->healthy = true;
}

/* ---- exposition text checks ---- */

static bool has_line(const char *body, const char *line) {
  size_t n = strlen(line);
  for (const char *p = body; (p = strstr(p, line)) != NULL; p++)
    if ((p == body || p[-1] == '\n') && p[n] == '\n') return true;
  return false;
}

static void expect_line(const char *body, const char *line) {
  if (!has_line(body, line)) fail_msg("missing line: %s\n--- in:\n%s", line, body);
}

static void expect_no_text(const char *body, const char *text) {
  if (strstr(body, text) != NULL) fail_msg("unexpected text: %s", text);
}

/* The value of the sample line that starts with prefix (name and labels). */
static double sample_value(const char *body, const char *prefix) {
  size_t n = strlen(prefix);
  for (const char *p = body; (p = strstr(p, prefix)) != NULL; p++) {
    if ((p == body || p[-1] == '\n') && p[n] == ' ') return strtod(p + n + 1, NULL);
  }
  fail_msg("no sample %s", prefix);
  return 0;
}

#define FAMILIES_MAX 64
/* The families metrics_render writes. */
#define FAMILIES 20

typedef struct families {
  char name[FAMILIES_MAX][64];
  char type[FAMILIES_MAX][16];
  size_t n;
} families;

static const char *family_type(const families *f, const char *name) {
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->name[i], name) == 0) return f->type[i];
  return NULL;
}

/* The family of a sample name: itself, or a histogram's name without the
 * _bucket, _sum or _count suffix. */
static const char *sample_family(const families *f, const char *name, char *buf, size_t size) {
  if (family_type(f, name) != NULL) return name;
  static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(name), s = strlen(suffixes[i]);
    if (n <= s || strcmp(name + n - s, suffixes[i]) != 0) continue;
    snprintf(buf, size, "%.*s", (int)(n - s), name);
    const char *type = family_type(f, buf);
    if (type != NULL && strcmp(type, "histogram") == 0) return buf;
  }
  return NULL;
}

/* Skips a label set "{k="v",...}" at p; returns the character after it. */
static const char *skip_labels(const char *p) {
  assert_int_equal(*p, '{');
  for (p++; *p != '}';) {
    while ((*p >= 'a' && *p <= 'z') || *p == '_') p++;
    assert_int_equal(*p++, '=');
    assert_int_equal(*p++, '"');
    for (; *p != '"'; p++) {
      assert_true(*p != '\n' && *p != '\0');
      if (*p == '\\') {
        p++;
        assert_true(*p == '\\' || *p == '"' || *p == 'n');
      }
    }
    p++;
    if (*p == ',') p++;
  }
  return p + 1;
}

/* One sample line: its family has HELP and TYPE before it, its labels
 * are well formed and its value is a number. */
static void check_sample(const families *f, const char *line, const char *eol) {
  char name[64], buf[64];
  size_t n = strcspn(line, "{ ");
  assert_true(n > 0 && n < sizeof name);
  snprintf(name, sizeof name, "%.*s", (int)n, line);
  if (sample_family(f, name, buf, sizeof buf) == NULL) fail_msg("sample before TYPE: %s", name);
  const char *p = line + n;
  if (*p == '{') p = skip_labels(p);
  assert_int_equal(*p++, ' ');
  char *end = NULL;
  strtod(p, &end);
  assert_ptr_equal(end, eol);
}

/* The whole text follows the exposition format's line grammar. Returns the
 * number of families. */
static size_t check_exposition(const char *body, size_t len) {
  assert_int_equal(strlen(body), len);
  assert_true(len > 0 && body[len - 1] == '\n');
  static families f;
  memset(&f, 0, sizeof f);
  char help[64] = "";
  for (const char *line = body; *line != '\0';) {
    const char *eol = strchr(line, '\n');
    char name[64], type[16];
    if (strncmp(line, "# HELP ", 7) == 0) {
      assert_int_equal(sscanf(line, "# HELP %63s", help), 1);
      assert_null(family_type(&f, help)); /* one HELP per family */
    } else if (strncmp(line, "# TYPE ", 7) == 0) {
      assert_int_equal(sscanf(line, "# TYPE %63s %15s", name, type), 2);
      assert_string_equal(name, help); /* HELP just before TYPE */
      assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                  strcmp(type, "histogram") == 0);
      assert_true(f.n < FAMILIES_MAX);
      snprintf(f.name[f.n], sizeof f.name[f.n], "%s", name);
      snprintf(f.type[f.n], sizeof f.type[f.n], "%s", type);
      f.n++;
    } else {
      check_sample(&f, line, eol);
    }
    line = eol + 1;
  }
  return f.n;
}

/* ---- metrics tests ---- */

static void test_metrics_lines(void **state) {
  metrics_input m;
  fixture_input(&m);
  size_t len = 0;
  char *body = metrics_render(&m, &len);
  assert_non_null(body);
  assert_int_equal(check_exposition(body, len), FAMILIES);

  expect_line(body, "# HELP celer_tasks_total Task runs finished, by queue and resulting state.");
  expect_line(body, "# TYPE celer_tasks_total counter");
  expect_line(body, "celer_tasks_total{queue=\"default\",state=\"SUCCEEDED\"} 7");
  expect_line(body, "celer_tasks_total{queue=\"default\",state=\"RETRYING\"} 1");
  expect_line(body, "celer_tasks_total{queue=\"default\",state=\"REJECTED\"} 0");
  expect_line(body, "celer_tasks_total{queue=\"emails\",state=\"FAILED\"} 2");
  expect_line(body, "# TYPE celer_tasks_refused_total counter");
  expect_line(body, "celer_tasks_refused_total{reason=\"bad_signature\"} 0");
  expect_line(body, "celer_tasks_refused_total{reason=\"expired\"} 5");
  expect_line(body, "celer_tasks_total{queue=\"emails\",state=\"SUCCEEDED\"} 0");
  expect_no_text(body, "state=\"PENDING\"");
  expect_no_text(body, "state=\"SCHEDULED\"");
  expect_no_text(body, "state=\"ACTIVE\"");

  expect_line(body, "# TYPE celer_worker_info gauge");
  expect_line(body, "celer_worker_info{worker=\"we\\\"ird\\\\name\"} 1");
  expect_line(body, "celer_up 1");
  expect_line(body, "celer_uptime_seconds 3600");

  expect_line(body, "# TYPE celer_queue_ready gauge");
  expect_line(body, "celer_queue_ready{queue=\"default\"} 5");
  expect_no_text(body, "celer_queue_ready{queue=\"emails\"}");
  expect_line(body, "celer_queue_scheduled{queue=\"emails\"} 3");
  expect_no_text(body, "celer_queue_scheduled{queue=\"default\"}");
  expect_line(body, "celer_queue_dead{queue=\"default\"} 0");
  expect_no_text(body, "celer_queue_dead{queue=\"emails\"}");

  expect_line(body, "# TYPE celer_children gauge");
  expect_line(body, "celer_children 2");
  expect_line(body, "celer_children_busy 1");
  expect_line(body, "# TYPE celer_child_starts_total counter");
  expect_line(body, "celer_child_starts_total 4");
  expect_line(body, "celer_child_crashes_total 1");
  expect_line(body, "celer_time_limit_kills_total 2");
  expect_line(body, "celer_stale_completions_total 3");
  expect_line(body, "celer_duplicate_completions_total 5");
  expect_line(body, "celer_broker_reconnects_total 2");
  expect_line(body, "celer_leases_reclaimed_total 6");
  expect_line(body, "celer_tasks_lost_total 1");
  expect_line(body, "celer_tasks_promoted_total 9");

  m.healthy = false;
  char *sick = metrics_render(&m, NULL);
  assert_non_null(sick);
  expect_line(sick, "celer_up 0");
  free(sick);
  free(body);
}

/* Bucket counts never decrease, +Inf equals _count. */
static void check_histogram(const char *body, uint64_t count) {
  static const char name[] = "celer_task_duration_seconds";
  char prefix[128];
  double prev = 0;
  for (size_t b = 0; b < SLOT_DURATION_BUCKETS; b++) {
    snprintf(prefix, sizeof prefix, "%s_bucket{le=\"%g\"}", name, slot_duration_bounds[b]);
    double v = sample_value(body, prefix);
    assert_true(v >= prev);
    prev = v;
  }
  snprintf(prefix, sizeof prefix, "%s_bucket{le=\"+Inf\"}", name);
  double inf = sample_value(body, prefix);
  assert_true(inf >= prev);
  assert_true(inf == (double)count);
  snprintf(prefix, sizeof prefix, "%s_count", name);
  assert_true(sample_value(body, prefix) == (double)count);
}

static void test_metrics_histogram(void **state) {
  metrics_input m;
  fixture_input(&m);
  char *body = metrics_render(&m, NULL);
  assert_non_null(body);
  expect_line(body, "# HELP celer_task_duration_seconds Time task handlers ran, in seconds.");
  expect_line(body, "# TYPE celer_task_duration_seconds histogram");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"0.005\"} 0");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"0.01\"} 1");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"0.1\"} 3");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"1\"} 7");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"2.5\"} 7");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"30\"} 7");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"+Inf\"} 8");
  expect_line(body, "celer_task_duration_seconds_sum 43.75");
  expect_line(body, "celer_task_duration_seconds_count 8");
  expect_no_text(body, "celer_task_duration_seconds_bucket{le=\"+Inf\",");
  check_histogram(body, 8);
  free(body);

  /* A scribbled-on slot: counts that go down, a count below its buckets. */
  fixture_counters[2].duration_buckets[3] = 50;
  fixture_counters[2].duration_count = 0;
  body = metrics_render(&m, NULL);
  assert_non_null(body);
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"0.05\"} 52");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"0.1\"} 52");
  check_histogram(body, 52);
  free(body);
}

static void test_metrics_empty(void **state) {
  metrics_input m;
  memset(&m, 0, sizeof m);
  m.worker = "w1";
  for (size_t q = 0; q < WORKER_QUEUES_MAX; q++) m.ready[q] = m.scheduled[q] = m.dead[q] = -1;
  size_t len = 0;
  char *body = metrics_render(&m, &len);
  assert_non_null(body);
  assert_int_equal(check_exposition(body, len), FAMILIES); /* every family, samples or not */
  expect_line(body, "# TYPE celer_queue_ready gauge");
  expect_no_text(body, "celer_queue_ready{");
  expect_no_text(body, "celer_tasks_total{");
  expect_line(body, "celer_children 0");
  expect_line(body, "celer_up 0");
  expect_line(body, "celer_task_duration_seconds_bucket{le=\"+Inf\"} 0");
  expect_line(body, "celer_task_duration_seconds_sum 0");
  expect_line(body, "celer_worker_info{worker=\"w1\"} 1");
  free(body);
}

/* Newlines in a label value are escaped too; a queue count over the
 * arrays' size is clamped. */
static void test_metrics_escapes_and_bounds(void **state) {
  metrics_input m;
  fixture_input(&m);
  m.worker = "a\nb\\\"";
  const char *many[WORKER_QUEUES_MAX + 1];
  for (size_t q = 0; q <= WORKER_QUEUES_MAX; q++) many[q] = "q";
  many[WORKER_QUEUES_MAX] = "over";
  m.queues = many;
  m.nqueues = WORKER_QUEUES_MAX + 1;
  for (size_t q = 0; q < WORKER_QUEUES_MAX; q++) m.ready[q] = 1;
  size_t len = 0;
  char *body = metrics_render(&m, &len);
  assert_non_null(body);
  check_exposition(body, len);
  expect_line(body, "celer_worker_info{worker=\"a\\nb\\\\\\\"\"} 1");
  expect_no_text(body, "\"over\"");
  free(body);

  /* The format's own spellings of special values. */
  fixture_counters[0].duration_sum_s = NAN;
  body = metrics_render(&m, &len);
  assert_non_null(body);
  expect_line(body, "celer_task_duration_seconds_sum NaN");
  free(body);
  fixture_counters[0].duration_sum_s = INFINITY;
  body = metrics_render(&m, &len);
  assert_non_null(body);
  expect_line(body, "celer_task_duration_seconds_sum +Inf");
  check_exposition(body, len);
  free(body);
}

/* ---- HTTP: the handler and the fixture server ---- */

typedef struct served {
  bool unhealthy;
  unsigned calls;
  metrics_input metrics;
} served;

static void handler(void *ctx, const char *path, http_response *out) {
  served *sv = ctx;
  sv->calls++;
  out->content_type = "text/plain; charset=utf-8";
  if (strcmp(path, "/metrics") == 0) {
    out->body = metrics_render(&sv->metrics, &out->len);
    out->status = out->body != NULL ? 200 : 500;
    out->content_type = METRICS_TYPE;
  } else if (strcmp(path, "/healthz") == 0) {
    out->status = sv->unhealthy ? 503 : 200;
    out->body = strdup(sv->unhealthy ? "unhealthy\n" : "ok\n");
    out->len = strlen(out->body);
  } else if (strcmp(path, "/big") == 0) {
    out->status = 200;
    out->body = malloc(BIG_BODY);
    for (size_t i = 0; i < BIG_BODY; i++) out->body[i] = (char)('a' + i % 26);
    out->len = BIG_BODY;
  } else if (strncmp(path, "/echo", 5) == 0) {
    out->status = 200;
    out->body = strdup(path);
    out->len = strlen(path);
  } else if (strcmp(path, "/bad-status") == 0) {
    out->status = 42;
    out->body = strdup("never sent");
    out->len = strlen(out->body);
  } else if (strcmp(path, "/bad-type") == 0) {
    out->status = 200;
    out->content_type = "text/plain\r\nX-Injected: 1";
    out->body = strdup("never sent");
    out->len = strlen(out->body);
  } else if (strcmp(path, "/odd") == 0) {
    out->status = 299; /* no reason phrase known */
  } else if (strcmp(path, "/default") == 0) {
    out->status = 204; /* no body, no content type: the server's defaults */
    out->content_type = NULL;
  } else {
    out->status = 404;
    out->body = strdup("not found\n");
    out->len = strlen(out->body);
  }
}

typedef struct fixture {
  struct ev_loop *loop;
  http_server *srv;
  served sv;
  int port;
} fixture;

static int setup_server(void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->loop = ev_loop_new(EVFLAG_AUTO);
  assert_non_null(f->loop);
  fixture_input(&f->sv.metrics);
  char err[CELER_ERRSTR_LEN] = "";
  int rc = http_server_start(f->loop, "127.0.0.1:0", handler, &f->sv, &f->srv, err, sizeof err);
  if (rc != 0) fail_msg("http_server_start: %s", err);
  f->port = http_server_port(f->srv);
  assert_true(f->port > 0);
  *state = f;
  return 0;
}

static int teardown_server(void **state) {
  fixture *f = *state;
  http_server_stop(f->srv);
  ev_loop_destroy(f->loop);
  free(f);
  return 0;
}

/* ---- HTTP: clients on the test's loop ---- */

typedef struct client {
  ev_io io;
  int fd;
  const char *out;       /* what to send; borrowed */
  size_t out_len, sent;
  char *in;              /* what came back; owned */
  size_t in_len, in_cap;
  bool done;             /* end of input (or an error) */
  int err;               /* errno of a read error, 0 on a clean close */
  int *left;             /* counts down when done, if set */
} client;

static void client_finish(struct ev_loop *loop, client *c, int err) {
  c->done = true;
  c->err = err;
  ev_io_stop(loop, &c->io);
  if (c->left != NULL) (*c->left)--;
}

static void client_send(struct ev_loop *loop, client *c) {
  while (c->sent < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->sent, c->out_len - c->sent, MSG_NOSIGNAL);
    if (n > 0) {
      c->sent += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    } else {
      c->sent = c->out_len; /* the server stopped reading: read its answer */
    }
  }
  ev_io_stop(loop, &c->io);
  ev_io_set(&c->io, c->fd, EV_READ);
  ev_io_start(loop, &c->io);
}

static void client_recv(struct ev_loop *loop, client *c) {
  for (;;) {
    if (c->in_cap - c->in_len < CLIENT_BUF_MIN_ROOM) {
      c->in_cap = c->in_cap ? c->in_cap * 2 : CLIENT_BUF_INITIAL;
      c->in = realloc(c->in, c->in_cap + 1);
      assert_non_null(c->in);
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n > 0) {
      c->in_len += (size_t)n;
      c->in[c->in_len] = '\0';
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      return;
    } else {
      client_finish(loop, c, n == 0 ? 0 : errno);
      return;
    }
  }
}

static void client_cb(struct ev_loop *loop, ev_io *w, int revents) {
  client *c = w->data;
  if (revents & EV_WRITE) client_send(loop, c);
  if ((revents & EV_READ) && !c->done) client_recv(loop, c);
}

/* A blocking connect (the kernel completes it from the backlog), then a
 * non-blocking socket. */
static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
  return fd;
}

/* Watches fd on the loop: sends out, then reads to the end. */
static void client_start(struct ev_loop *loop, client *c, int fd, const char *out, size_t len) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->out = out;
  c->out_len = len;
  ev_io_init(&c->io, client_cb, fd, len > 0 ? EV_READ | EV_WRITE : EV_READ);
  c->io.data = c;
  ev_io_start(loop, &c->io);
}

static void client_free(struct ev_loop *loop, client *c) {
  ev_io_stop(loop, &c->io);
  close(c->fd);
  free(c->in);
  c->in = NULL;
}

static bool drive(struct ev_loop *loop, const int *left, double seconds);

static void readable_cb(struct ev_loop *loop, ev_io *w, int revents) {
  ev_io_stop(loop, w);
  --*(int *)w->data;
}

/* Runs the loop until fd has something to read. */
static void wait_readable(struct ev_loop *loop, int fd) {
  int left = 1;
  ev_io io;
  ev_io_init(&io, readable_cb, fd, EV_READ);
  io.data = &left;
  ev_io_start(loop, &io);
  bool ok = drive(loop, &left, EXCHANGE_DEADLINE_S);
  ev_io_stop(loop, &io);
  if (!ok) fail_msg("nothing to read before the deadline");
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  *(bool *)w->data = true;
}

/* Runs the loop until *left reaches 0 or the deadline passes; returns
 * whether everything finished. */
static bool drive(struct ev_loop *loop, const int *left, double seconds) {
  bool expired = false;
  ev_timer t;
  ev_now_update(loop);
  ev_timer_init(&t, deadline_cb, seconds, 0.);
  t.data = &expired;
  ev_timer_start(loop, &t);
  while (*left > 0 && !expired) ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &t);
  return *left <= 0;
}

/* Runs one client to completion. */
static void drive_client(struct ev_loop *loop, client *c) {
  int left = 1;
  c->left = &left;
  if (!drive(loop, &left, EXCHANGE_DEADLINE_S)) fail_msg("client not done before the deadline");
  c->left = NULL;
}

/* ---- HTTP: responses ---- */

typedef struct response {
  char *raw;             /* owned */
  size_t raw_len;
  int err;
  int status;
  const char *head_end;  /* the blank line */
  const char *body;
  size_t body_len;
} response;

static response exchange_bytes(fixture *f, const char *req, size_t len) {
  client c;
  client_start(f->loop, &c, connect_to(f->port), req, len);
  drive_client(f->loop, &c);
  response r = {.raw = c.in, .raw_len = c.in_len, .err = c.err};
  c.in = NULL;
  client_free(f->loop, &c);
  if (r.raw == NULL) return r;
  r.head_end = strstr(r.raw, "\r\n\r\n");
  if (r.head_end == NULL) return r;
  sscanf(r.raw, "HTTP/1.1 %d ", &r.status);
  r.body = r.head_end + 4;
  r.body_len = r.raw_len - (size_t)(r.body - r.raw);
  return r;
}

static response exchange(fixture *f, const char *req) {
  return exchange_bytes(f, req, strlen(req));
}

static bool has_header(const response *r, const char *line) {
  size_t n = strlen(line);
  for (const char *p = strstr(r->raw, "\r\n"); p != NULL && p < r->head_end;
       p = strstr(p + 2, "\r\n")) {
    if (strncmp(p + 2, line, n) == 0 && strncmp(p + 2 + n, "\r\n", 2) == 0) return true;
  }
  return false;
}

/* A whole, well-formed answer: status line, the fixed headers, and a
 * Content-Length equal to the body's (or to announced for HEAD). */
static void expect_response(const response *r, const char *status_line, const char *type,
                            const char *body) {
  if (r->raw == NULL || r->head_end == NULL) fail_msg("no answer (errno %d)", r->err);
  assert_int_equal(r->err, 0);
  size_t n = strlen(status_line);
  if (strncmp(r->raw, status_line, n) != 0 || strncmp(r->raw + n, "\r\n", 2) != 0)
    fail_msg("status line: %.*s", (int)strcspn(r->raw, "\r"), r->raw);
  char line[256];
  snprintf(line, sizeof line, "Content-Type: %s", type);
  assert_true(has_header(r, line));
  assert_true(has_header(r, "Connection: close"));
  snprintf(line, sizeof line, "Content-Length: %zu", r->body_len);
  assert_true(has_header(r, line));
  if (body != NULL) {
    assert_int_equal(r->body_len, strlen(body));
    assert_memory_equal(r->body, body, r->body_len);
  }
}

static void response_free(response *r) {
  free(r->raw);
  r->raw = NULL;
}

#define TEXT "text/plain; charset=utf-8"

static void expect_exchange(fixture *f, const char *req, const char *status_line,
                            const char *body) {
  response r = exchange(f, req);
  expect_response(&r, status_line, TEXT, body);
  response_free(&r);
}

/* ---- HTTP tests ---- */

static void expect_start_error(struct ev_loop *loop, const char *addr, int code,
                               const char *sentence) {
  char err[CELER_ERRSTR_LEN] = "";
  http_server *s = (http_server *)&err; /* must be reset to NULL */
  int rc = http_server_start(loop, addr, handler, NULL, &s, err, sizeof err);
  assert_int_equal(rc, code);
  assert_null(s);
  assert_string_equal(err, sentence);
}

static void test_start_errors(void **state) {
  fixture *f = *state;
  struct ev_loop *loop = f->loop;
  expect_start_error(loop, "", CELER_EINVAL, "HTTP address is missing (expected HOST:PORT)");
  expect_start_error(loop, NULL, CELER_EINVAL, "HTTP address is missing (expected HOST:PORT)");
  expect_start_error(loop, "9100", CELER_EINVAL, "HTTP address \"9100\": expected HOST:PORT");
  expect_start_error(loop, "127.0.0.1:99999", CELER_EINVAL,
                     "HTTP address \"127.0.0.1:99999\": bad port \"99999\" (expected 0 to 65535)");
  expect_start_error(loop, "127.0.0.1:65536", CELER_EINVAL,
                     "HTTP address \"127.0.0.1:65536\": bad port \"65536\" (expected 0 to 65535)");
  expect_start_error(loop, "127.0.0.1:", CELER_EINVAL,
                     "HTTP address \"127.0.0.1:\": bad port \"\" (expected 0 to 65535)");
  expect_start_error(loop, "127.0.0.1:-1", CELER_EINVAL,
                     "HTTP address \"127.0.0.1:-1\": bad port \"-1\" (expected 0 to 65535)");
  expect_start_error(loop, "127.0.0.1:9a", CELER_EINVAL,
                     "HTTP address \"127.0.0.1:9a\": bad port \"9a\" (expected 0 to 65535)");
  expect_start_error(loop, "example.com:80", CELER_EINVAL,
                     "HTTP address \"example.com:80\": bad host \"example.com\" (expected an "
                     "IPv4 address, localhost or nothing for all)");
  expect_start_error(loop, "1.2.3:80", CELER_EINVAL,
                     "HTTP address \"1.2.3:80\": bad host \"1.2.3\" (expected an IPv4 "
                     "address, localhost or nothing for all)");
  expect_start_error(loop, "::1:80", CELER_EINVAL,
                     "HTTP address \"::1:80\": bad host \"::1\" (expected an IPv4 address, "
                     "localhost or nothing for all)");
  char addr[128], sentence[256];
  memset(addr, '1', ADDR_TOO_LONG);
  addr[ADDR_TOO_LONG] = '\0';
  expect_start_error(loop, addr, CELER_EINVAL, "HTTP address is too long (at most 64 characters)");

  snprintf(addr, sizeof addr, "127.0.0.1:%d", f->port);
  snprintf(sentence, sizeof sentence, "HTTP address \"%s\": address already in use", addr);
  expect_start_error(loop, addr, CELER_EIO, sentence);
  /* TEST-NET-1 is on no interface of this host. */
  snprintf(sentence, sizeof sentence, "HTTP address \"192.0.2.1:0\": bind failed: %s",
           strerror(EADDRNOTAVAIL));
  expect_start_error(loop, "192.0.2.1:0", CELER_EIO, sentence);

  static const char *const good[] = {"localhost:0", ":0", "0.0.0.0:0"};
  for (size_t i = 0; i < 3; i++) {
    http_server *s = NULL;
    char err[CELER_ERRSTR_LEN] = "";
    assert_int_equal(http_server_start(loop, good[i], handler, NULL, &s, err, sizeof err), 0);
    assert_true(http_server_port(s) > 0);
    assert_int_not_equal(http_server_port(s), f->port);
    http_server_stop(s);
  }
  http_server_stop(NULL);
  assert_int_equal(http_server_port(NULL), -1);
}

static void test_get(void **state) {
  fixture *f = *state;
  expect_exchange(f, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK", "ok\n");
  f->sv.unhealthy = true;
  expect_exchange(f, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 503 Service Unavailable",
                  "unhealthy\n");
  f->sv.unhealthy = false;
  /* HTTP/1.0, no headers, a query string, absolute-form targets. */
  expect_exchange(f, "GET /healthz HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", "ok\n");
  expect_exchange(f, "GET /echo?x=1&y=/z HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "/echo");
  expect_exchange(f, "GET /echo/a%20b HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "/echo/a%20b");
  expect_exchange(f, "GET http://h:1/echo/abs?q HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK",
                  "/echo/abs");
  expect_exchange(f, "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "not found\n");
  expect_exchange(f, "GET /nope HTTP/1.1\r\nHost: x\r\nUser-Agent: t\t1\r\n\r\n",
                  "HTTP/1.1 404 Not Found", "not found\n");
  /* The handler's mistakes: a status outside 100-599, a content type
   * that would inject a header; defaults for an empty answer. */
  expect_exchange(f, "GET /bad-status HTTP/1.1\r\n\r\n", "HTTP/1.1 500 Internal Server Error",
                  "Internal Server Error\n");
  expect_exchange(f, "GET /bad-type HTTP/1.1\r\n\r\n", "HTTP/1.1 500 Internal Server Error",
                  "Internal Server Error\n");
  expect_exchange(f, "GET /default HTTP/1.1\r\n\r\n", "HTTP/1.1 204 No Content", "");
  expect_exchange(f, "GET /odd HTTP/1.1\r\n\r\n", "HTTP/1.1 299 ", "");

  response r = exchange(f, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  size_t len = 0;
  char *want = metrics_render(&f->sv.metrics, &len);
  assert_non_null(want);
  expect_response(&r, "HTTP/1.1 200 OK", METRICS_TYPE, want);
  free(want);
  response_free(&r);
}

static void test_head(void **state) {
  fixture *f = *state;
  response r = exchange(f, "HEAD /healthz HTTP/1.1\r\n\r\n");
  assert_non_null(r.head_end);
  assert_true(strncmp(r.raw, "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_true(has_header(&r, "Content-Length: 3")); /* what GET would send */
  assert_int_equal(r.body_len, 0);
  response_free(&r);
  r = exchange(f, "HEAD /nope HTTP/1.1\r\n\r\n");
  assert_int_equal(r.status, 404);
  assert_true(has_header(&r, "Content-Length: 10"));
  assert_int_equal(r.body_len, 0);
  response_free(&r);
}

static void test_method_not_allowed(void **state) {
  fixture *f = *state;
  unsigned calls = f->sv.calls;
  static const char *const reqs[] = {
      "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\na=1",
      "PUT /healthz HTTP/1.1\r\n\r\n",
      "get /healthz HTTP/1.1\r\n\r\n", /* methods are case-sensitive */
      "DELETE / HTTP/1.0\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
    response r = exchange(f, reqs[i]);
    expect_response(&r, "HTTP/1.1 405 Method Not Allowed", TEXT, "Method Not Allowed\n");
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    response_free(&r);
  }
  assert_int_equal(f->sv.calls, calls);
}

static void test_bad_requests(void **state) {
  fixture *f = *state;
  unsigned calls = f->sv.calls;
  static const char *const bad[] = {
      "hello\r\n\r\n",
      "\r\n\r\n",
      "GET\r\n\r\n",
      "GET /healthz\r\n\r\n",
      "GET  /healthz HTTP/1.1\r\n\r\n",
      "GET /healthz  HTTP/1.1\r\n\r\n",
      "GET /healthz HTTP/1.1 \r\n\r\n",
      "GET healthz HTTP/1.1\r\n\r\n",
      "GET ftp://h/healthz HTTP/1.1\r\n\r\n",
      "GET /healthz HTTP/1.x\r\n\r\n",
      "GET /healthz HTTP/11\r\n\r\n",
      "GET /healthz http/1.1\r\n\r\n",
      "GET /heal\x7fthz HTTP/1.1\r\n\r\n",
      "GET /h\xc3\xa9 HTTP/1.1\r\n\r\n",
      "G(T /healthz HTTP/1.1\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nNo colon\r\n\r\n",
      "GET /healthz HTTP/1.1\r\n: empty name\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
      "GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nX: a\rb\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nX: a\nb\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nX: \x01\r\n\r\n",
      "GET /healthz HTTP/1.1\n\r\n\r\n",
      "POST /h HTTP/1.1\r\nbad header\r\n\r\n", /* 400 before 405 */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    response r = exchange(f, bad[i]);
    if (r.status != 400) fail_msg("request %zu: status %d, want 400", i, r.status);
    expect_response(&r, "HTTP/1.1 400 Bad Request", TEXT, "Bad Request\n");
    response_free(&r);
  }
  /* A NUL byte in the head. */
  static const char nul[] = "GET /healthz HTTP/1.1\r\nX: a\0b\r\n\r\n";
  response r = exchange_bytes(f, nul, sizeof nul - 1);
  expect_response(&r, "HTTP/1.1 400 Bad Request", TEXT, "Bad Request\n");
  response_free(&r);
  /* Another major version. */
  expect_exchange(f, "GET /healthz HTTP/2.0\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported",
                  "HTTP Version Not Supported\n");
  assert_int_equal(f->sv.calls, calls);
}

/* A request of exactly len bytes: a padding header fills it up. */
static char *padded_request(size_t len) {
  static const char first[] = "GET /healthz HTTP/1.1\r\nX-Pad: ";
  static const char last[] = "\r\n\r\n";
  size_t fixed = sizeof first - 1 + sizeof last - 1;
  assert_true(len > fixed);
  char *req = malloc(len + 1);
  assert_non_null(req);
  memcpy(req, first, sizeof first - 1);
  memset(req + sizeof first - 1, 'p', len - fixed);
  memcpy(req + len - (sizeof last - 1), last, sizeof last);
  return req;
}

static void test_request_size(void **state) {
  fixture *f = *state;
  char *req = padded_request(REQUEST_MAX);
  expect_exchange(f, req, "HTTP/1.1 200 OK", "ok\n");
  free(req);
  static const size_t over[] = {REQUEST_MAX + 1, REQUEST_MAX + 1000, 4 * REQUEST_MAX};
  for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
    req = padded_request(over[i]);
    expect_exchange(f, req, "HTTP/1.1 431 Request Header Fields Too Large",
                    "Request Header Fields Too Large\n");
    free(req);
  }
  /* A client that keeps sending after the answer is cut off; the server
   * goes on serving. */
  size_t huge = 64 * REQUEST_MAX;
  req = padded_request(huge);
  response r0 = exchange_bytes(f, req, huge);
  assert_true(r0.status == 431 || r0.err == ECONNRESET);
  response_free(&r0);
  free(req);
  expect_exchange(f, "GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "ok\n");

  /* A head that never ends. */
  req = malloc(2 * REQUEST_MAX);
  assert_non_null(req);
  memset(req, 'G', 2 * REQUEST_MAX);
  response r = exchange_bytes(f, req, 2 * REQUEST_MAX);
  expect_response(&r, "HTTP/1.1 431 Request Header Fields Too Large", TEXT, NULL);
  response_free(&r);
  free(req);
}

/* A body far larger than the socket buffers arrives whole and in order. */
static void test_big_body(void **state) {
  fixture *f = *state;
  response r = exchange(f, "GET /big HTTP/1.1\r\n\r\n");
  expect_response(&r, "HTTP/1.1 200 OK", TEXT, NULL);
  assert_int_equal(r.body_len, BIG_BODY);
  for (size_t i = 0; i < BIG_BODY; i++)
    if (r.body[i] != (char)('a' + i % 26)) fail_msg("body byte %zu differs", i);
  response_free(&r);

  /* A client that leaves in the middle of the answer. */
  int fd = connect_to(f->port);
  static const char req[] = "GET /big HTTP/1.1\r\n\r\n";
  assert_int_equal(send(fd, req, sizeof req - 1, 0), (ssize_t)(sizeof req - 1));
  wait_readable(f->loop, fd);
  close(fd);
  for (int i = 0; i < SETTLE_TURNS; i++) ev_run(f->loop, EVRUN_NOWAIT);
  expect_exchange(f, "GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "ok\n");
}

/* Random bytes ending in a blank line never crash the server and always
 * get a whole answer. */
static void test_garbage(void **state) {
  fixture *f = *state;
  unsigned seed = 12345;
  char req[GARBAGE_LEN_MAX + 4];
  for (int round = 0; round < GARBAGE_ROUNDS; round++) {
    size_t len = (size_t)(rand_r(&seed) % GARBAGE_LEN_MAX);
    static const char alphabet[] = "GET /HTTP1.0\r\n: \t?\x01\x80zZ";
    for (size_t i = 0; i < len; i++) {
      int pick = rand_r(&seed);
      req[i] = pick % 4 == 0 ? (char)(pick >> 8) : alphabet[(pick >> 8) % (sizeof alphabet - 1)];
    }
    memcpy(req + len, "\r\n\r\n", 4);
    response r = exchange_bytes(f, req, len + 4);
    if (r.raw == NULL || r.head_end == NULL) fail_msg("round %d: no answer", round);
    assert_true(r.status == 400 || r.status == 404 || r.status == 405 || r.status == 505 ||
                r.status == 200);
    response_free(&r);
  }
}

/* Silent clients do not delay others; the connection cap refuses the
 * one too many at once and frees a slot when a client leaves; the
 * server drops silent clients after its timeout. */
static void test_silent_clients(void **state) {
  fixture *f = *state;
  static client silent[CONN_MAX];
  ev_tstamp t0 = ev_time();
  for (int i = 0; i < CONN_MAX; i++) {
    client_start(f->loop, &silent[i], connect_to(f->port), NULL, 0);
    ev_run(f->loop, EVRUN_NOWAIT); /* the server accepts it */
  }
  client extra;
  ev_tstamp t1 = ev_time();
  client_start(f->loop, &extra, connect_to(f->port), NULL, 0);
  drive_client(f->loop, &extra);
  assert_int_equal(extra.in_len, 0); /* closed unanswered, and at once */
  if (ev_time() - t1 > TIMEOUT_S / 2) fail_msg("the connection over the cap was not refused");
  client_free(f->loop, &extra);
  assert_false(silent[0].done);

  /* One leaves; its slot serves a request while 63 stay silent. */
  assert_int_equal(shutdown(silent[0].fd, SHUT_WR), 0);
  drive_client(f->loop, &silent[0]);
  assert_int_equal(silent[0].in_len, 0);
  client_free(f->loop, &silent[0]);
  expect_exchange(f, "GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK", "ok\n");

  int left = CONN_MAX - 1;
  for (int i = 1; i < CONN_MAX; i++) {
    assert_false(silent[i].done);
    silent[i].left = &left;
  }
  assert_true(drive(f->loop, &left, TIMEOUT_S + EXCHANGE_DEADLINE_S));
  ev_tstamp elapsed = ev_time() - t0;
  if (elapsed < TIMEOUT_S - 0.5) fail_msg("silent clients dropped after %.2f s", elapsed);
  for (int i = 1; i < CONN_MAX; i++) {
    assert_int_equal(silent[i].in_len, 0);
    client_free(f->loop, &silent[i]);
  }
}

/* Out of descriptors, the server pauses accepting instead of spinning on
 * a listener that stays readable, and resumes once it can. */
static void test_accept_pause(void **state) {
  fixture *f = *state;
  struct rlimit old;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  client c;
  int fd = connect_to(f->port); /* the lowest free descriptor: accept needs the next */
  static const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
  client_start(f->loop, &c, fd, req, sizeof req - 1);
  struct rlimit low = {.rlim_cur = (rlim_t)fd + 1, .rlim_max = old.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  int left = 1;
  c.left = &left;
  unsigned before = ev_iteration(f->loop);
  bool finished = drive(f->loop, &left, PAUSE_WINDOW_S);
  unsigned iterations = ev_iteration(f->loop) - before;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
  assert_false(finished);
  if (iterations > PAUSE_TURNS_MAX)
    fail_msg("%u loop turns in %.1f s: accepting spins", iterations, PAUSE_WINDOW_S);
  drive_client(f->loop, &c);
  response r = {.raw = c.in, .raw_len = c.in_len};
  assert_non_null(r.raw);
  assert_true(strncmp(r.raw, "HTTP/1.1 200 OK\r\n", 17) == 0);
  client_free(f->loop, &c);
}

/* The real curl against /metrics: -w appends the status code. */
static void test_curl(void **state) {
  fixture *f = *state;
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", f->port);
  const char *argv[] = {"curl", "-q", "-s", "--noproxy", "*", "--max-time", "10", "-o", "-",
                        "-w", "%{http_code}", url, NULL};
  int out[2];
  assert_int_equal(pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  pid_t pid;
  int rc = posix_spawnp(&pid, "curl", &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  if (rc != 0) fail_msg("cannot run curl: %s", strerror(rc));
  assert_int_equal(fcntl(out[0], F_SETFL, O_NONBLOCK), 0);

  client c;
  client_start(f->loop, &c, out[0], NULL, 0);
  drive_client(f->loop, &c);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  size_t len = 0;
  char *want = metrics_render(&f->sv.metrics, &len);
  assert_non_null(want);
  assert_int_equal(c.in_len, len + 3);
  assert_memory_equal(c.in, want, len);
  assert_memory_equal(c.in + len, "200", 3);
  free(want);
  client_free(f->loop, &c);
}

/* Stopping with connections in every state frees everything (the
 * sanitizer's leak check is the assertion). */
static void test_stop_with_open_connections(void **state) {
  fixture *f = *state;
  static const char partial[] = "GET /heal";
  static const char big[] = "GET /big HTTP/1.1\r\n\r\n";
  static const char done[] = "GET /healthz HTTP/1.1\r\n\r\n";
  const char *reqs[] = {NULL, partial, big, done};
  int fds[4];
  for (size_t i = 0; i < 4; i++) {
    fds[i] = connect_to(f->port);
    if (reqs[i] != NULL) assert_true(send(fds[i], reqs[i], strlen(reqs[i]), 0) > 0);
  }
  for (int i = 0; i < SETTLE_TURNS; i++) ev_run(f->loop, EVRUN_NOWAIT);
  http_server_stop(f->srv);
  f->srv = NULL;
  for (size_t i = 0; i < 4; i++) close(fds[i]);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics_lines),
      cmocka_unit_test(test_metrics_histogram),
      cmocka_unit_test(test_metrics_empty),
      cmocka_unit_test(test_metrics_escapes_and_bounds),
      cmocka_unit_test_setup_teardown(test_start_errors, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_get, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_head, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_method_not_allowed, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_bad_requests, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_request_size, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_big_body, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_garbage, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_silent_clients, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_accept_pause, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_curl, setup_server, teardown_server),
      cmocka_unit_test_setup_teardown(test_stop_with_open_connections, setup_server,
                                      teardown_server),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
