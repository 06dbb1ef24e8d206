/* Logging to stderr, one line per event, in a text form for people or a JSON
 * form for log collectors. Each line goes out in one write(2) so that the
 * lines of a worker and its children, sharing one stderr, never mix. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include "celer/envelope.h"
#include "common/common.h"

/* Writes of at most PIPE_BUF bytes to a pipe are atomic, so a line that
 * fits stays whole even when stderr is a pipe shared by many processes. */
#ifndef PIPE_BUF
#define PIPE_BUF 512 /* the POSIX minimum */
#endif
#define LOG_LINE_MAX PIPE_BUF
/* "2026-11-26T10:00:00.123Z" and its terminator. */
#define LOG_TS_LEN 25
/* Appended where a message had to be shortened to fit in one line. */
#define LOG_ELLIPSIS "..."
/* A JSON line shrinks its message this many times before giving up; each
 * round halves the message, so 12 rounds reach a few bytes from PIPE_BUF. */
#define LOG_JSON_SHRINK_ROUNDS 12

typedef enum log_format { LOG_TEXT, LOG_JSON } log_format;

static log_format current_format = LOG_TEXT;
static celer_log_level threshold = CELER_LOG_INFO;
static const char *program = "celer";

/* Indexed by celer_log_level. */
static const char *const level_words[] = {"debug", "info", "warn", "error"};
static const char *const level_labels[] = {"DEBUG", "INFO", "WARN", "ERROR"};
#define LOG_LEVEL_COUNT (sizeof level_words / sizeof level_words[0])

static int parse_level(const char *word, celer_log_level *out) {
  for (size_t i = 0; i < LOG_LEVEL_COUNT; i++) {
    if (strcmp(word, level_words[i]) == 0) {
      *out = (celer_log_level)i;
      return 0;
    }
  }
  return CELER_EINVAL;
}

static int parse_format(const char *word, log_format *out) {
  if (strcmp(word, "text") == 0) {
    *out = LOG_TEXT;
  } else if (strcmp(word, "json") == 0) {
    *out = LOG_JSON;
  } else {
    return CELER_EINVAL;
  }
  return 0;
}

int celer_log_configure(const char *format, const char *level) {
  log_format f = current_format;
  celer_log_level l = threshold;
  if (format && parse_format(format, &f) != 0) return CELER_EINVAL;
  if (level && parse_level(level, &l) != 0) return CELER_EINVAL;
  current_format = f;
  threshold = l;
  return 0;
}

void celer_log_set_program(const char *name) {
  if (name && name[0]) program = name;
}

int celer_log_enabled(celer_log_level level) {
  return (unsigned)level < LOG_LEVEL_COUNT && level >= threshold;
}

static void format_ts(char out[LOG_TS_LEN]) {
  int64_t ms = celer_now_ms();
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  char date[20];
  gmtime_r(&secs, &tm);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
  celer_fmt(out, LOG_TS_LEN, "%s.%03dZ", date, (int)(ms % 1000));
}

/* Length of the valid UTF-8 sequence at s (at most avail bytes), 0 when
 * the bytes there are not one. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail) {
  size_t len;
  unsigned min;
  unsigned cp;
  if (s[0] < 0x80) return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) {
    len = 2, min = 0x80, cp = s[0] & 0x1f;
  } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
    len = 3, min = 0x800, cp = s[0] & 0x0f;
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    len = 4, min = 0x10000, cp = s[0] & 0x07;
  } else {
    return 0;
  }
  if (len > avail) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* Makes s safe for one line in place: invalid UTF-8 bytes become '?', and
 * in text form control characters become spaces so a message cannot start
 * a forged line. JSON escapes control characters itself. */
static void sanitize(char *s, bool text) {
  size_t len = strlen(s);
  for (size_t i = 0; i < len;) {
    unsigned char *p = (unsigned char *)s + i;
    size_t n = utf8_seq_len(p, len - i);
    if (n == 0) {
      *p = '?';
      n = 1;
    } else if (n == 1 && text && (*p < 0x20 || *p == 0x7f)) {
      *p = ' ';
    }
    i += n;
  }
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence, marking
 * the cut with LOG_ELLIPSIS. max must exceed the ellipsis. */
static void shorten(char *s, size_t max) {
  size_t len = strlen(s);
  if (len <= max) return;
  size_t cut = max - strlen(LOG_ELLIPSIS);
  while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80) cut--;
  memcpy(s + cut, LOG_ELLIPSIS, sizeof LOG_ELLIPSIS);
}

/* Writes all of buf to stderr; one call unless interrupted or cut short. */
static void write_line(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    buf += n;
    len -= (size_t)n;
  }
}

/* The " key=value" tail of a text line for the fields that are set. */
static void text_fields(const char *task, const celer_log_fields *f, char *out, size_t size) {
  size_t used = 0;
  out[0] = '\0';
  if (task) used += (size_t)snprintf(out + used, size - used, " task=%s", task);
  if (f == NULL) return;
  if (f->task && used < size) used += (size_t)snprintf(out + used, size - used, " name=%s", f->task);
  if (f->queue && used < size) used += (size_t)snprintf(out + used, size - used, " queue=%s", f->queue);
  if (f->attempt >= 0 && used < size)
    used += (size_t)snprintf(out + used, size - used, " attempt=%lld", (long long)f->attempt);
  if (f->duration_ms >= 0 && used < size)
    used += (size_t)snprintf(out + used, size - used, " duration_ms=%lld",
                             (long long)f->duration_ms);
  if (f->outcome && used < size) snprintf(out + used, size - used, " outcome=%s", f->outcome);
}

static void emit_text(const char *ts, celer_log_level level, const char *task,
                      const celer_log_fields *f, char *msg) {
  char line[LOG_LINE_MAX];
  char task_part[CELER_ID_MAX * 2 + CELER_TASK_NAME_MAX + 160];
  text_fields(task, f, task_part, sizeof task_part);
  /* Everything but the message is short; the message gives way. */
  size_t fixed = strlen(ts) + strlen(program) + strlen(task_part) + 40;
  if (fixed + strlen(LOG_ELLIPSIS) + 1 < sizeof line) shorten(msg, sizeof line - fixed);
  celer_fmt(line, sizeof line - 1, "%s %-5s %s[%ld] %s%s", ts, level_labels[level], program,
            (long)getpid(), msg, task_part);
  size_t len = strlen(line);
  line[len++] = '\n';
  write_line(line, len);
}

/* Builds the JSON object; NULL when out of memory. */
static char *json_line(const char *ts, celer_log_level level, const char *task,
                       const celer_log_fields *f, const char *msg) {
  json_t *obj = json_object();
  if (obj == NULL) return NULL;
  json_object_set_new(obj, "ts", json_string(ts));
  json_object_set_new(obj, "level", json_string(level_words[level]));
  json_object_set_new(obj, "program", json_string(program));
  json_object_set_new(obj, "pid", json_integer((json_int_t)getpid()));
  json_object_set_new(obj, "msg", json_string(msg));
  if (task) json_object_set_new(obj, "task", json_string(task));
  if (f && f->task) json_object_set_new(obj, "name", json_string(f->task));
  if (f && f->queue) json_object_set_new(obj, "queue", json_string(f->queue));
  if (f && f->attempt >= 0) json_object_set_new(obj, "attempt", json_integer(f->attempt));
  if (f && f->duration_ms >= 0)
    json_object_set_new(obj, "duration_ms", json_integer(f->duration_ms));
  if (f && f->outcome) json_object_set_new(obj, "outcome", json_string(f->outcome));
  char *out = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(obj);
  return out;
}

static void emit_json(const char *ts, celer_log_level level, const char *task,
                      const celer_log_fields *f, char *msg) {
  for (int round = 0; round < LOG_JSON_SHRINK_ROUNDS; round++) {
    char *out = json_line(ts, level, task, f, msg);
    if (out == NULL) break;
    size_t len = strlen(out);
    if (len + 1 < LOG_LINE_MAX) {
      char line[LOG_LINE_MAX];
      memcpy(line, out, len);
      line[len++] = '\n';
      free(out);
      write_line(line, len);
      return;
    }
    free(out);
    size_t msg_len = strlen(msg);
    if (msg_len <= 2 * strlen(LOG_ELLIPSIS)) break;
    shorten(msg, msg_len / 2);
  }
  /* Out of memory, or the line cannot be made to fit: say so plainly. */
  static const char fallback[] = "{\"msg\":\"log line lost\"}\n";
  write_line(fallback, sizeof fallback - 1);
}

void celer_vlog(celer_log_level level, const char *task_id, const char *fmt, va_list ap) {
  celer_log_fields f = {.task_id = task_id, .attempt = -1, .duration_ms = -1};
  celer_vlog_fields(level, &f, fmt, ap);
}

void celer_log_task(celer_log_level level, const celer_log_fields *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  celer_vlog_fields(level, f, fmt, ap);
  va_end(ap);
}

void celer_vlog_fields(celer_log_level level, const celer_log_fields *f, const char *fmt,
                       va_list ap) {
  const char *task_id = f->task_id;
  if (!celer_log_enabled(level)) return;
  int saved_errno = errno;
  char msg[LOG_LINE_MAX];
  char task[CELER_ID_MAX * 2 + 1];
  char ts[LOG_TS_LEN];
  bool text = current_format == LOG_TEXT;
  vsnprintf(msg, sizeof msg, fmt, ap);
  sanitize(msg, text);
  if (task_id) {
    /* Ids are at most CELER_ID_MAX; a bogus longer one is shown cut, not
     * dropped, with room to spare so the cut is visible. */
    size_t len = strnlen(task_id, sizeof task);
    memcpy(task, task_id, len < sizeof task ? len : sizeof task - 1);
    task[len < sizeof task ? len : sizeof task - 1] = '\0';
    if (len >= sizeof task) shorten(task, sizeof task - 2);
    sanitize(task, text);
  }
  format_ts(ts);
  if (text) {
    emit_text(ts, level, task_id ? task : NULL, f, msg);
  } else {
    emit_json(ts, level, task_id ? task : NULL, f, msg);
  }
  errno = saved_errno;
}

void celer_log(celer_log_level level, const char *task_id, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  celer_vlog(level, task_id, fmt, ap);
  va_end(ap);
}
