/* Test harness: real processes, no sleeps. Starts a private redis-server
 * in a fresh temp dir (Unix socket, or a free loopback port), waits for it
 * with PING and a deadline, and runs Celer's programs as child processes. */
#ifndef CELER_TEST_HARNESS_H
#define CELER_TEST_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* How long a test waits for a process or a server before it fails. */
#define HARNESS_DEADLINE_MS 30000
/* A temp dir path: short, since a Unix socket path inside it must fit the
 * 108 bytes of sun_path. */
#define HARNESS_DIR_MAX 256

typedef struct harness_redis {
  pid_t pid;
  char dir[HARNESS_DIR_MAX]; /* temp dir holding the socket, conf and log */
  char socket[PATH_MAX];   /* Unix socket path ("" when tcp) */
  int port;                /* loopback port (0 when on the socket) */
  char url[PATH_MAX + 32]; /* unix:///... or redis://127.0.0.1:port/0 */
  bool tcp;
  const char *const *extra; /* borrowed: further redis-server arguments */
} harness_redis;

/* Starts redis-server (extra_args: NULL-terminated list of further
 * "--name value" words, may be NULL, borrowed while r lives). Returns 0,
 * or -1 after printing why. */
int harness_redis_start(harness_redis *r, bool tcp, const char *const *extra_args);
/* Stops the server with SIGTERM (it writes its AOF) and starts it again
 * on the same dir, socket or port and arguments. 0 or -1. */
int harness_redis_restart(harness_redis *r);
/* Stops the server (SIGTERM, then SIGKILL past the deadline) and removes
 * its directory. Safe to call twice. */
void harness_redis_stop(harness_redis *r);

/* Path of a program in the build tree ("celer-worker", "taskctl") or of
 * redis-cli from PATH ("redis-cli"). Static storage, per call. */
const char *harness_bin(const char *name);

/* Starts argv[0] with argv, extra environment entries env ("NAME=VALUE",
 * NULL-terminated, may be NULL) on top of ours; stdout and stderr go to
 * the files out_path and err_path when not NULL (else inherited).
 * Returns the pid, or -1. */
pid_t harness_spawn(const char *const *argv, const char *const *env,
                    const char *out_path, const char *err_path);
/* Waits for pid to exit until timeout_ms; returns the exit status as
 * waitpid gives it, or -1 on timeout (the process is left running). */
int harness_wait(pid_t pid, int timeout_ms);
/* Sends sig and waits; SIGKILLs after timeout_ms. Returns the status. */
int harness_stop(pid_t pid, int sig, int timeout_ms);

/* Runs a command to completion with stdin_data (may be NULL) and captures
 * stdout and stderr (caller frees both; NUL-terminated). Returns the exit
 * code (0..255), 128+signal, or -1 on failure to run / timeout. */
int harness_run(const char *const *argv, const char *const *env, const char *stdin_data,
                size_t stdin_len, char **out, char **err, int timeout_ms);

/* Runs redis-cli against r with args (NULL-terminated); returns its exit
 * code and stores stdout in *out when out is not NULL. */
int harness_cli(const harness_redis *r, const char *const *args, char **out);

/* Empties r (FLUSHALL): each test starts from an empty broker. 0 or -1. */
int harness_flush(const harness_redis *r);
/* A libceler client connected to r (caller frees with celer_client_free),
 * or NULL when it cannot be made or cannot connect. */
struct celer_client *harness_client(const harness_redis *r);

/* Starts celer-worker against r with --module testing, --concurrency 1
 * and the extra arguments (NULL-terminated, may be NULL; a repeated flag
 * overrides); its stderr goes to log_path
 * when given. Returns the pid or -1. Stop it with harness_stop. */
pid_t harness_worker(const harness_redis *r, const char *const *extra_args,
                     const char *log_path);

/* 1 when the worker log at path holds no sanitizer report (children
 * report when they exit, which does not change the worker's exit code),
 * else 0 after printing the reports. LSan's own "has encountered a fatal
 * error" (it could not stop the threads to scan them) is not a finding. */
int harness_log_is_clean(const char *path);
/* Prints the file at path (a worker log) to stderr, for a failing test. */
void harness_dump_log(const char *path);

/* A loopback port nobody listens on right now, from the kernel. */
int harness_free_port(void);

/* A fresh temp dir for a test's own files; returns 0 and fills buf. */
int harness_tmpdir(char *buf, size_t size);
/* Removes a directory tree made by harness_tmpdir (best effort). */
void harness_rmtree(const char *dir);

#endif
