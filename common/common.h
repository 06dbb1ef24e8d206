/* Shared helpers of every Celer program and of libceler: clocks, ids,
 * logging and configuration. Private to the project; nothing here is part
 * of the installed API. */
#ifndef CELER_COMMON_H
#define CELER_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "celer/error.h"

/* ---- clocks (clock.c) ---- */
/* Wall-clock milliseconds since the Unix epoch. */
int64_t celer_now_ms(void);
/* Monotonic milliseconds, for deadlines and durations. */
int64_t celer_mono_ms(void);
/* Parses a non-negative decimal integer that fits in int64; the whole
 * string must be digits. Returns 0 or CELER_EINVAL. */
int celer_parse_i64(const char *s, int64_t *out);

/* ---- ids and randomness (uuid.c) ---- */
#define CELER_UUID_LEN 36
/* Writes a random (version 4) UUID in canonical form plus terminator.
 * Returns 0 or CELER_EIO when the kernel's random source fails. */
int celer_uuid4(char out[CELER_UUID_LEN + 1]);

/* A uniformly random number in [0, n] from the kernel (n when it cannot
 * be read): jitter for retries and reconnects. */
int64_t celer_jitter(int64_t n);

/* ---- logging (log.c) ---- */
typedef enum celer_log_level {
  CELER_LOG_DEBUG,
  CELER_LOG_INFO,
  CELER_LOG_WARN,
  CELER_LOG_ERROR
} celer_log_level;

/* Sets format ("text" or "json") and threshold ("debug", "info", "warn",
 * "error"); NULL keeps the current one. Returns CELER_EINVAL on unknown
 * words and changes nothing then. Defaults: text, info. */
int celer_log_configure(const char *format, const char *level);
/* Sets the program name shown in text lines (borrowed, static storage). */
void celer_log_set_program(const char *name);
/* Writes one line to stderr. task_id may be NULL. In JSON format the line
 * is an object with ts, level, pid, msg (and task when given). */
void celer_log(celer_log_level level, const char *task_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void celer_vlog(celer_log_level level, const char *task_id, const char *fmt,
                va_list ap) __attribute__((format(printf, 3, 0)));
int celer_log_enabled(celer_log_level level);

/* What a task event line says besides its message: in text lines as
 * key=value pairs, in JSON lines as fields. NULL strings and negative
 * numbers are left out. Strings are borrowed for the call. */
typedef struct celer_log_fields {
  const char *task_id;   /* "task" */
  const char *task;      /* "name": the task name */
  const char *queue;
  const char *outcome;   /* a state name: SUCCEEDED, RETRYING, ... */
  int64_t attempt;
  int64_t duration_ms;
} celer_log_fields;
void celer_log_task(celer_log_level level, const celer_log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void celer_vlog_fields(celer_log_level level, const celer_log_fields *f, const char *fmt,
                       va_list ap) __attribute__((format(printf, 3, 0)));

#define celer_debug(...) celer_log(CELER_LOG_DEBUG, NULL, __VA_ARGS__)
#define celer_info(...) celer_log(CELER_LOG_INFO, NULL, __VA_ARGS__)
#define celer_warn(...) celer_log(CELER_LOG_WARN, NULL, __VA_ARGS__)
#define celer_error(...) celer_log(CELER_LOG_ERROR, NULL, __VA_ARGS__)

/* ---- configuration (config.c) ---- */
/* Result records live this long after they become final (CELER_RESULT_TTL,
 * seconds): a day, as Celery's result_expires. */
#define CELER_DEFAULT_RESULT_TTL_S (24 * 3600)
/* Dead sets keep the newest 10,000 entries for 180 days at most, as
 * Sidekiq's dead set does: enough to diagnose and replay an incident,
 * bounded so a failure storm cannot fill Redis. */
#define CELER_DEFAULT_DEAD_MAX 10000
#define CELER_DEFAULT_DEAD_TTL_S (180 * 24 * 3600)
#define CELER_DEFAULT_BROKER_URL "redis://127.0.0.1:6379/0"
#define CELER_DEFAULT_NAMESPACE "celer"
/* Namespaces are key prefixes: same alphabet as queue names, kept short. */
#define CELER_NAMESPACE_MAX 64
/* A config file is a handful of settings; anything larger is a mistake. */
#define CELER_CONFIG_FILE_MAX (64 * 1024)

/* Settings shared by the worker and taskctl. Strings are owned. */
typedef struct celer_config {
  char *broker_url;
  char *password_file;
  char *ns;
  char *log_format;
  char *log_level;
  int64_t result_ttl_s;
  int64_t max_payload;
  int64_t dead_max;     /* CELER_DEAD_MAX: entries kept in a dead set */
  int64_t dead_ttl_s;   /* CELER_DEAD_TTL: seconds a dead entry is kept */
} celer_config;

/* Fills cfg from defaults, then the config file (path, or CELER_CONFIG when
 * path is NULL; none is fine), then the environment. The file holds lines
 * `NAME = value` using the environment variables' names; `#` starts a
 * comment. Returns 0, or CELER_EINVAL/CELER_EIO/CELER_ENOMEM with a
 * sentence in err. Release with celer_config_free (also on failure). */
int celer_config_load(celer_config *cfg, const char *path, char *err, size_t errlen);
/* Applies one NAME=value setting; used by the loader and by tests. */
int celer_config_set(celer_config *cfg, const char *name, const char *value,
                     char *err, size_t errlen);
void celer_config_free(celer_config *cfg);
/* Replaces an owned string field with a copy of value. */
int celer_config_replace(char **field, const char *value);

/* Hides the broker password of the command line from other processes:
 * each `--broker URL` / `--broker=URL` argument that holds a password is
 * moved to a private copy (argv[i] then points at it, so option parsing
 * sees the same text) and the original, which is what /proc/PID/cmdline
 * shows, is overwritten with '*' in place. Call first thing in main(). */
#define CELER_ARGV_HIDDEN_MAX 8
void celer_argv_hide_passwords(int argc, char **argv);

/* Formats into a fixed buffer, always terminated; returns CELER_ETOOBIG
 * when truncated. */
int celer_fmt(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies src (NULL = "") into dst of size bytes (> 0), truncating, always
 * terminated; returns CELER_ETOOBIG when truncated. The hot paths use it
 * where snprintf("%s") cost ten times as much. */
int celer_copy(char *dst, size_t size, const char *src);

#endif
