/* Test harness: a private redis-server per suite and helpers to run the
 * project's programs. Readiness is a real PING answered before a deadline;
 * nothing sleeps a fixed time. */
#include "harness/harness.h"
#include "celer/client.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A short pause between two checks of a condition that is polled until a
 * deadline; never a fixed wait for readiness on its own. */
static void pause_ms(int ms) { poll(NULL, 0, ms); }

int harness_tmpdir(char *buf, size_t size) {
  const char *base = getenv("TMPDIR");
  snprintf(buf, size, "%s/celer-test-XXXXXX", base && *base ? base : "/tmp");
  return mkdtemp(buf) ? 0 : -1;
}

void harness_rmtree(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) harness_rmtree(path);
    else unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

const char *harness_bin(const char *name) {
  static char path[PATH_MAX];
  if (strcmp(name, "redis-cli") == 0 || strcmp(name, "redis-server") == 0) return name;
  const char *dir = getenv("CELER_BUILD_BIN");
  snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : CELER_BUILD_BIN, name);
  return path;
}

/* Builds environ plus extra entries (extra ones win). Caller frees the
 * array only. */
static char **merged_env(const char *const *env) {
  size_t n = 0, k = 0;
  while (environ[n]) n++;
  size_t extra = 0;
  while (env && env[extra]) extra++;
  char **out = calloc(n + extra + 1, sizeof *out);
  if (out == NULL) return NULL;
  for (size_t i = 0; i < n; i++) {
    int overridden = 0;
    for (size_t j = 0; j < extra; j++) {
      const char *eq = strchr(env[j], '=');
      size_t len = eq ? (size_t)(eq - env[j]) : strlen(env[j]);
      if (strncmp(environ[i], env[j], len) == 0 && environ[i][len] == '=') overridden = 1;
    }
    if (!overridden) out[k++] = environ[i];
  }
  for (size_t j = 0; j < extra; j++) out[k++] = (char *)env[j];
  return out;
}

pid_t harness_spawn(const char *const *argv, const char *const *env, const char *out_path,
                    const char *err_path) {
  char **envp = merged_env(env);
  if (envp == NULL) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    /* A test that crashes must not leave its servers and workers behind;
     * each program gets its own process group, so that a test can signal
     * a worker and its children together (kill(-pid, SIGSTOP)). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    setpgid(0, 0);
    if (out_path) {
      int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
      if (fd >= 0) dup2(fd, 1);
    }
    if (err_path) {
      int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
      if (fd >= 0) dup2(fd, 2);
    }
    execvpe(argv[0], (char *const *)argv, envp);
    fprintf(stderr, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  free(envp);
  return pid;
}

int harness_wait(pid_t pid, int timeout_ms) {
  long long deadline = mono_ms() + timeout_ms;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (mono_ms() >= deadline) return -1;
    pause_ms(5);
  }
}

int harness_stop(pid_t pid, int sig, int timeout_ms) {
  if (pid <= 0) return -1;
  kill(pid, sig);
  int status = harness_wait(pid, timeout_ms);
  if (status == -1) {
    kill(pid, SIGKILL);
    status = harness_wait(pid, HARNESS_DEADLINE_MS);
  }
  return status;
}

/* Appends what is readable on fd to *buf. Returns 0 at EOF, 1 otherwise. */
static int drain(int fd, char **buf, size_t *len) {
  char chunk[65536];
  ssize_t n = read(fd, chunk, sizeof chunk);
  if (n <= 0) return n < 0 && errno == EINTR ? 1 : 0;
  char *p = realloc(*buf, *len + (size_t)n + 1);
  if (p == NULL) return 0;
  memcpy(p + *len, chunk, (size_t)n);
  *len += (size_t)n;
  p[*len] = '\0';
  *buf = p;
  return 1;
}

int harness_run(const char *const *argv, const char *const *env, const char *stdin_data,
                size_t stdin_len, char **out, char **err, int timeout_ms) {
  int in[2], o[2], e[2];
  if (pipe(in) || pipe(o) || pipe(e)) return -1;
  char **envp = merged_env(env);
  if (envp == NULL) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(o[1], 1);
    dup2(e[1], 2);
    close(in[1]);
    close(o[0]);
    close(e[0]);
    execvpe(argv[0], (char *const *)argv, envp);
    fprintf(stderr, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  free(envp);
  close(in[0]);
  close(o[1]);
  close(e[1]);
  signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  if (stdin_data == NULL || stdin_len == 0) {
    close(in[1]);
    in[1] = -1;
  } else {
    fcntl(in[1], F_SETFL, O_NONBLOCK);
  }
  char *obuf = calloc(1, 1), *ebuf = calloc(1, 1);
  size_t olen = 0, elen = 0;
  int oopen = 1, eopen = 1;
  long long deadline = mono_ms() + timeout_ms;
  int timed_out = 0;
  while (oopen || eopen) {
    struct pollfd p[3] = {{o[0], POLLIN, 0}, {e[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
    long long left = deadline - mono_ms();
    if (left <= 0) {
      timed_out = 1;
      break;
    }
    if (poll(p, in[1] >= 0 ? 3 : 2, (int)left) < 0 && errno != EINTR) break;
    if (oopen && (p[0].revents & (POLLIN | POLLHUP))) oopen = drain(o[0], &obuf, &olen);
    if (eopen && (p[1].revents & (POLLIN | POLLHUP))) eopen = drain(e[0], &ebuf, &elen);
    if (in[1] >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(in[1], stdin_data + written, stdin_len - written);
      if (n > 0) written += (size_t)n;
      if (n < 0 && errno != EAGAIN && errno != EINTR) written = stdin_len;
      if (written == stdin_len) {
        close(in[1]);
        in[1] = -1;
      }
    }
    if (!oopen) p[0].fd = -1;
  }
  if (in[1] >= 0) close(in[1]);
  close(o[0]);
  close(e[0]);
  int status = timed_out ? harness_stop(pid, SIGKILL, HARNESS_DEADLINE_MS)
                         : harness_wait(pid, timeout_ms > 0 ? timeout_ms : 1);
  if (out) *out = obuf; else free(obuf);
  if (err) *err = ebuf; else free(ebuf);
  if (timed_out || status == -1) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

int harness_cli(const harness_redis *r, const char *const *args, char **out) {
  const char *argv[64];
  size_t n = 0;
  argv[n++] = "redis-cli";
  if (r->port) {
    static char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    argv[n++] = "-p";
    argv[n++] = port;
  } else {
    argv[n++] = "-s";
    argv[n++] = r->socket;
  }
  for (size_t i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
  argv[n] = NULL;
  char *o = NULL;
  int rc = harness_run(argv, NULL, NULL, 0, &o, NULL, HARNESS_DEADLINE_MS);
  if (out) *out = o; else free(o);
  return rc;
}

int harness_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static int answers_ping(const harness_redis *r) {
  char *out = NULL;
  const char *args[] = {"PING", NULL};
  int rc = harness_cli(r, args, &out);
  int ok = rc == 0 && out && strncmp(out, "PONG", 4) == 0;
  free(out);
  return ok;
}

/* Starts redis-server on r's socket or port, in r's dir; 0 once it answers
 * PING before the deadline, -1 otherwise. */
static int spawn_server(harness_redis *r) {
  char port[16], log[PATH_MAX];
  const char *argv[64];
  size_t n = 0;
  snprintf(port, sizeof port, "%d", r->port);
  snprintf(log, sizeof log, "%s/redis.log", r->dir);
  argv[n++] = "redis-server";
  argv[n++] = "--port";
  argv[n++] = port;
  argv[n++] = "--bind";
  argv[n++] = "127.0.0.1";
  if (!r->tcp) {
    argv[n++] = "--unixsocket";
    argv[n++] = r->socket;
    argv[n++] = "--unixsocketperm";
    argv[n++] = "700";
  }
  argv[n++] = "--dir";
  argv[n++] = r->dir;
  argv[n++] = "--save";
  argv[n++] = "";
  argv[n++] = "--appendonly";
  argv[n++] = "no";
  argv[n++] = "--daemonize";
  argv[n++] = "no";
  argv[n++] = "--logfile";
  argv[n++] = log;
  for (size_t i = 0; r->extra && r->extra[i] && n < 63; i++) argv[n++] = r->extra[i];
  argv[n] = NULL;
  r->pid = harness_spawn(argv, NULL, NULL, NULL);
  if (r->pid < 0) return -1;
  long long deadline = mono_ms() + HARNESS_DEADLINE_MS;
  while (mono_ms() < deadline) {
    if (answers_ping(r)) return 0;
    if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
      r->pid = 0;
      return -1;
    }
    pause_ms(10);
  }
  harness_stop(r->pid, SIGKILL, HARNESS_DEADLINE_MS);
  r->pid = 0;
  return -1;
}

int harness_redis_start(harness_redis *r, bool tcp, const char *const *extra_args) {
  memset(r, 0, sizeof *r);
  r->tcp = tcp;
  r->extra = extra_args;
  if (harness_tmpdir(r->dir, sizeof r->dir) != 0) {
    fprintf(stderr, "harness: cannot make a temp dir: %s\n", strerror(errno));
    return -1;
  }
  /* A port can be taken between our probe and redis's bind: try again. */
  for (int attempt = 0; attempt < 5; attempt++) {
    if (tcp) {
      r->port = harness_free_port();
      snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d/0", r->port);
    } else {
      snprintf(r->socket, sizeof r->socket, "%s/redis.sock", r->dir);
      snprintf(r->url, sizeof r->url, "unix://%s", r->socket);
    }
    if (spawn_server(r) == 0) return 0;
  }
  fprintf(stderr, "harness: redis-server did not answer PING; see %s/redis.log\n", r->dir);
  return -1;
}

int harness_redis_restart(harness_redis *r) {
  if (r->pid > 0) harness_stop(r->pid, SIGTERM, HARNESS_DEADLINE_MS);
  r->pid = 0;
  if (spawn_server(r) == 0) return 0;
  fprintf(stderr, "harness: redis-server did not come back; see %s/redis.log\n", r->dir);
  return -1;
}

void harness_redis_stop(harness_redis *r) {
  if (r->pid > 0) harness_stop(r->pid, SIGTERM, HARNESS_DEADLINE_MS);
  r->pid = 0;
  if (r->dir[0]) harness_rmtree(r->dir);
  r->dir[0] = '\0';
}

pid_t harness_worker(const harness_redis *r, const char *const *extra_args,
                     const char *log_path) {
  const char *argv[64];
  size_t n = 0;
  argv[n++] = harness_bin("celer-worker");
  argv[n++] = "--broker";
  argv[n++] = r->url;
  argv[n++] = "--module";
  argv[n++] = "testing";
  /* One child unless the test says otherwise (a later flag wins). */
  argv[n++] = "--concurrency";
  argv[n++] = "1";
  for (size_t i = 0; extra_args && extra_args[i] && n < 63; i++) argv[n++] = extra_args[i];
  argv[n] = NULL;
  return harness_spawn(argv, NULL, NULL, log_path);
}

int harness_log_is_clean(const char *path) {
  const char *count[] = {"grep", "-c", "-e", "ERROR: [A-Za-z]*Sanitizer", "-e",
                         "runtime error:", path, NULL};
  char *out = NULL;
  harness_run(count, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
  int clean = out && atoi(out) == 0;
  free(out);
  if (!clean) {
    const char *show[] = {"grep", "-A", "16", "-e", "ERROR: [A-Za-z]*Sanitizer", "-e",
                          "runtime error:", path, NULL};
    out = NULL;
    harness_run(show, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
    fprintf(stderr, "sanitizer reports in %s:\n%s\n", path, out ? out : "");
    free(out);
  }
  return clean;
}

void harness_dump_log(const char *path) {
  const char *argv[] = {"cat", path, NULL};
  char *out = NULL;
  harness_run(argv, NULL, NULL, 0, &out, NULL, HARNESS_DEADLINE_MS);
  fprintf(stderr, "worker log:\n%s\n", out ? out : "");
  free(out);
}

int harness_flush(const harness_redis *r) {
  const char *flush[] = {"FLUSHALL", NULL};
  return harness_cli(r, flush, NULL) == 0 ? 0 : -1;
}

celer_client *harness_client(const harness_redis *r) {
  celer_client_options o = {.broker_url = r->url};
  celer_client *c = celer_client_new(&o);
  if (c != NULL && celer_client_connect(c) != 0) {
    celer_client_free(c);
    c = NULL;
  }
  return c;
}
