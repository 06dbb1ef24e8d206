/* Settings shared by the worker and taskctl. Three layers, later ones
 * winning: built-in defaults, a config file of `NAME = value` lines, and
 * the environment. Programs apply their command-line flags on top. The
 * file and the environment use the same names and the same checks, and
 * every complaint names where the bad value came from. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "broker/broker.h"
#include "celer/envelope.h"
#include "common/common.h"

/* A result kept longer than ten years is a typo, not a retention policy. */
#define CONFIG_RESULT_TTL_MIN_S 1
#define CONFIG_RESULT_TTL_MAX_S (INT64_C(3650) * 24 * 3600)
/* A dead set larger than ten million entries belongs in a database. */
#define CONFIG_DEAD_MAX_MAX INT64_C(10000000)
/* Below a second no operator could ever look at a dead task. */
#define CONFIG_DEAD_TTL_MIN_S 1
/* Below 1 KiB not even a bare envelope with a task name and an id fits. */
#define CONFIG_MAX_PAYLOAD_MIN 1024
/* Redis refuses bulk strings above 512 MiB (proto-max-bulk-len). */
#define CONFIG_MAX_PAYLOAD_MAX (INT64_C(512) * 1024 * 1024)
/* Longest value quoted back in an error sentence. */
#define CONFIG_ECHO_MAX 40
/* How broker_url_parse starts its sentences; we name the variable instead. */
#define URL_ERR_PREFIX "broker URL: "
/* The environment variable naming the config file. */
#define CONFIG_FILE_VAR "CELER_CONFIG"

typedef int (*setter)(celer_config *cfg, const char *name, const char *value, char *err,
                      size_t errlen);

typedef struct setting {
  const char *name;
  setter set;
} setting;

static int set_broker_url(celer_config *cfg, const char *name, const char *value, char *err,
                          size_t errlen) {
  broker_url u;
  char why[CELER_ERRSTR_LEN];
  int rc = broker_url_parse(value, &u, why, sizeof why);
  explicit_bzero(&u, sizeof u);
  if (rc != 0) {
    /* The parser's sentence never holds the password; the value might, so
     * it is not quoted. */
    const char *reason = why;
    if (strncmp(reason, URL_ERR_PREFIX, strlen(URL_ERR_PREFIX)) == 0)
      reason += strlen(URL_ERR_PREFIX);
    celer_fmt(err, errlen, "%s is not a valid broker URL: %s", name, reason);
    return CELER_EINVAL;
  }
  return celer_config_replace(&cfg->broker_url, value);
}

static int set_password_file(celer_config *cfg, const char *name, const char *value,
                             char *err, size_t errlen) {
  if (value[0] == '\0' || strlen(value) >= PATH_MAX) {
    celer_fmt(err, errlen, "%s must be the path of a file holding the password", name);
    return CELER_EINVAL;
  }
  return celer_config_replace(&cfg->password_file, value);
}

static bool is_ns_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '.' || c == '-';
}

static int set_namespace(celer_config *cfg, const char *name, const char *value, char *err,
                         size_t errlen) {
  size_t len = strlen(value);
  bool ok = len >= 1 && len <= CELER_NAMESPACE_MAX;
  for (size_t i = 0; ok && i < len; i++) ok = is_ns_char(value[i]);
  if (!ok) {
    celer_fmt(err, errlen,
              "%s must be 1 to %d characters from A-Z a-z 0-9 _ . - (got \"%.*s\")", name,
              CELER_NAMESPACE_MAX, CONFIG_ECHO_MAX, value);
    return CELER_EINVAL;
  }
  return celer_config_replace(&cfg->ns, value);
}

/* value must be one of words (NULL-terminated); sentence lists them. */
static int set_word(char **field, const char *const *words, const char *list,
                    const char *name, const char *value, char *err, size_t errlen) {
  for (const char *const *w = words; *w; w++) {
    if (strcmp(value, *w) == 0) return celer_config_replace(field, value);
  }
  celer_fmt(err, errlen, "%s must be %s (got \"%.*s\")", name, list, CONFIG_ECHO_MAX, value);
  return CELER_EINVAL;
}

static int set_log_format(celer_config *cfg, const char *name, const char *value, char *err,
                          size_t errlen) {
  static const char *const words[] = {"text", "json", NULL};
  return set_word(&cfg->log_format, words, "text or json", name, value, err, errlen);
}

static int set_log_level(celer_config *cfg, const char *name, const char *value, char *err,
                         size_t errlen) {
  static const char *const words[] = {"debug", "info", "warn", "error", NULL};
  return set_word(&cfg->log_level, words, "debug, info, warn or error", name, value, err,
                  errlen);
}

/* A whole number of unit within [min, max]. */
static int set_ranged(int64_t *field, int64_t min, int64_t max, const char *unit,
                      const char *name, const char *value, char *err, size_t errlen) {
  int64_t v;
  if (celer_parse_i64(value, &v) != 0 || v < min || v > max) {
    celer_fmt(err, errlen, "%s must be a whole number of %s from %lld to %lld (got \"%.*s\")",
              name, unit, (long long)min, (long long)max, CONFIG_ECHO_MAX, value);
    return CELER_EINVAL;
  }
  *field = v;
  return 0;
}

static int set_result_ttl(celer_config *cfg, const char *name, const char *value, char *err,
                          size_t errlen) {
  return set_ranged(&cfg->result_ttl_s, CONFIG_RESULT_TTL_MIN_S, CONFIG_RESULT_TTL_MAX_S,
                    "seconds", name, value, err, errlen);
}

static int set_max_payload(celer_config *cfg, const char *name, const char *value, char *err,
                           size_t errlen) {
  return set_ranged(&cfg->max_payload, CONFIG_MAX_PAYLOAD_MIN, CONFIG_MAX_PAYLOAD_MAX,
                    "bytes", name, value, err, errlen);
}

static int set_dead_max(celer_config *cfg, const char *name, const char *value, char *err,
                        size_t errlen) {
  return set_ranged(&cfg->dead_max, 0, CONFIG_DEAD_MAX_MAX, "entries", name, value, err,
                    errlen);
}

static int set_dead_ttl(celer_config *cfg, const char *name, const char *value, char *err,
                        size_t errlen) {
  return set_ranged(&cfg->dead_ttl_s, CONFIG_DEAD_TTL_MIN_S, CONFIG_RESULT_TTL_MAX_S, "seconds",
                    name, value, err, errlen);
}

static const setting settings[] = {
    {"CELER_BROKER_URL", set_broker_url},
    {"CELER_BROKER_PASSWORD_FILE", set_password_file},
    {"CELER_NAMESPACE", set_namespace},
    {"CELER_LOG_FORMAT", set_log_format},
    {"CELER_LOG_LEVEL", set_log_level},
    {"CELER_RESULT_TTL", set_result_ttl},
    {"CELER_MAX_PAYLOAD", set_max_payload},
    {"CELER_DEAD_MAX", set_dead_max},
    {"CELER_DEAD_TTL", set_dead_ttl},
};
#define SETTING_COUNT (sizeof settings / sizeof settings[0])

/* Settings of other components (CONTRACT "Configuration") that are read
 * from the environment only; named in the file they get a pointed hint. */
static const char *const env_only[] = {
    "CELER_SIGNING_KEY_FILE", "CELER_SIGNING_ALG", "CELER_SIGNING_KID",
    "CELER_ISSUER",           "CELER_SIGNING_TTL",  "CELER_KEYRING_FILE", CONFIG_FILE_VAR,
};
#define ENV_ONLY_COUNT (sizeof env_only / sizeof env_only[0])

int celer_config_replace(char **field, const char *value) {
  char *copy = strdup(value);
  if (copy == NULL) return CELER_ENOMEM;
  free(*field);
  *field = copy;
  return 0;
}

int celer_config_set(celer_config *cfg, const char *name, const char *value, char *err,
                     size_t errlen) {
  for (size_t i = 0; i < SETTING_COUNT; i++) {
    if (strcmp(name, settings[i].name) != 0) continue;
    int rc = settings[i].set(cfg, name, value, err, errlen);
    if (rc == CELER_ENOMEM) celer_fmt(err, errlen, "out of memory storing %s", name);
    return rc;
  }
  for (size_t i = 0; i < ENV_ONLY_COUNT; i++) {
    if (strcmp(name, env_only[i]) == 0) {
      celer_fmt(err, errlen, "%s is read from the environment only", name);
      return CELER_EINVAL;
    }
  }
  celer_fmt(err, errlen, "unknown setting %s", name);
  return CELER_EINVAL;
}

void celer_config_free(celer_config *cfg) {
  free(cfg->broker_url);
  free(cfg->password_file);
  free(cfg->ns);
  free(cfg->log_format);
  free(cfg->log_level);
  cfg->broker_url = cfg->password_file = cfg->ns = cfg->log_format = cfg->log_level = NULL;
}

static int set_defaults(celer_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->result_ttl_s = CELER_DEFAULT_RESULT_TTL_S;
  cfg->max_payload = CELER_DEFAULT_MAX_PAYLOAD;
  cfg->dead_max = CELER_DEFAULT_DEAD_MAX;
  cfg->dead_ttl_s = CELER_DEFAULT_DEAD_TTL_S;
  if (celer_config_replace(&cfg->broker_url, CELER_DEFAULT_BROKER_URL) ||
      celer_config_replace(&cfg->ns, CELER_DEFAULT_NAMESPACE) ||
      celer_config_replace(&cfg->log_format, "text") ||
      celer_config_replace(&cfg->log_level, "info"))
    return CELER_ENOMEM;
  return 0;
}

/* Reads the whole file into a fresh terminated buffer (*out, *len). */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    celer_fmt(err, errlen, "cannot open the config file %s: %s", path, strerror(errno));
    return CELER_EIO;
  }
  /* One byte more than the limit tells "at the limit" from "over it". */
  char *buf = malloc(CELER_CONFIG_FILE_MAX + 2);
  if (buf == NULL) {
    close(fd);
    celer_fmt(err, errlen, "out of memory reading the config file %s", path);
    return CELER_ENOMEM;
  }
  size_t n = 0;
  while (n <= CELER_CONFIG_FILE_MAX) {
    ssize_t r = read(fd, buf + n, CELER_CONFIG_FILE_MAX + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int saved = errno;
      close(fd);
      free(buf);
      celer_fmt(err, errlen, "cannot read the config file %s: %s", path, strerror(saved));
      return CELER_EIO;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  if (n > CELER_CONFIG_FILE_MAX) {
    free(buf);
    celer_fmt(err, errlen, "the config file %s is larger than %d bytes", path,
              CELER_CONFIG_FILE_MAX);
    return CELER_EINVAL;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static bool is_name_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '_';
}

/* Trims blanks on both ends of s in place and returns the new start. */
static char *trim(char *s) {
  while (is_blank(*s)) s++;
  size_t len = strlen(s);
  while (len > 0 && is_blank(s[len - 1])) s[--len] = '\0';
  return s;
}

/* Applies one line (terminated, no newline). 0 or CELER_E* with the bare
 * sentence in err; the caller adds file:line. */
static int apply_line(celer_config *cfg, char *line, char *err, size_t errlen) {
  size_t len = strlen(line);
  if (len > 0 && line[len - 1] == '\r') line[len - 1] = '\0';
  char *s = trim(line);
  if (*s == '\0' || *s == '#') return 0;
  char *eq = strchr(s, '=');
  if (eq == NULL) {
    celer_fmt(err, errlen, "expected NAME = value");
    return CELER_EINVAL;
  }
  *eq = '\0';
  char *name = trim(s);
  char *value = trim(eq + 1);
  bool name_ok = *name != '\0';
  for (const char *p = name; name_ok && *p; p++) name_ok = is_name_char(*p);
  if (!name_ok) {
    celer_fmt(err, errlen, "expected NAME = value");
    return CELER_EINVAL;
  }
  size_t vlen = strlen(value);
  if (vlen > 0 && value[0] == '"') {
    if (vlen < 2 || value[vlen - 1] != '"') {
      celer_fmt(err, errlen, "the value of %s has an unmatched double quote", name);
      return CELER_EINVAL;
    }
    value[vlen - 1] = '\0';
    value++;
  }
  return celer_config_set(cfg, name, value, err, errlen);
}

static int load_file(celer_config *cfg, const char *path, char *err, size_t errlen) {
  char *text;
  size_t len;
  int rc = read_file(path, &text, &len, err, errlen);
  if (rc) return rc;
  char why[CELER_ERRSTR_LEN];
  int lineno = 1;
  for (char *line = text; rc == 0 && line < text + len; lineno++) {
    char *nl = memchr(line, '\n', (size_t)(text + len - line));
    char *end = nl ? nl : text + len;
    if (memchr(line, '\0', (size_t)(end - line))) {
      celer_fmt(err, errlen, "%s:%d: the line holds a NUL byte", path, lineno);
      rc = CELER_EINVAL;
      break;
    }
    *end = '\0';
    rc = apply_line(cfg, line, why, sizeof why);
    if (rc) celer_fmt(err, errlen, "%s:%d: %s", path, lineno, why);
    line = end + 1;
  }
  /* The file may hold a password-bearing URL; do not leave it in the heap. */
  explicit_bzero(text, len);
  free(text);
  return rc;
}

static int load_env(celer_config *cfg, char *err, size_t errlen) {
  for (size_t i = 0; i < SETTING_COUNT; i++) {
    const char *value = getenv(settings[i].name);
    /* An empty variable counts as unset, as with `VAR=` in compose files. */
    if (value == NULL || value[0] == '\0') continue;
    int rc = celer_config_set(cfg, settings[i].name, value, err, errlen);
    if (rc) return rc;
  }
  return 0;
}

int celer_config_load(celer_config *cfg, const char *path, char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  int rc = set_defaults(cfg);
  if (rc) {
    celer_fmt(err, errlen, "out of memory loading the configuration");
    return rc;
  }
  if (path == NULL) {
    path = getenv(CONFIG_FILE_VAR);
    if (path && path[0] == '\0') path = NULL;
  }
  if (path) {
    rc = load_file(cfg, path, err, errlen);
    if (rc) return rc;
  }
  return load_env(cfg, err, errlen);
}

/* Overwrites the password of a URL in place; 1 when there was one. */
static int scrub_url_password(char *url) {
  char *p = strstr(url, "://");
  if (p == NULL) return 0;
  p += 3;
  char *at = strrchr(p, '@');
  char *colon = at ? memchr(p, ':', (size_t)(at - p)) : NULL;
  if (colon == NULL || colon + 1 == at) return 0;
  memset(colon + 1, '*', (size_t)(at - colon - 1));
  return 1;
}

/* The copies of hidden arguments: they live as long as the process, as
 * argv does. */
static char *hidden_copies[CELER_ARGV_HIDDEN_MAX];
static size_t ncopies;

void celer_argv_hide_passwords(int argc, char **argv) {
  static const char flag[] = "--broker";
  for (int i = 1; i < argc && ncopies < CELER_ARGV_HIDDEN_MAX; i++) {
    int j = i;
    size_t skip = 0;
    if (strcmp(argv[i], flag) == 0 && i + 1 < argc) j = ++i;
    else if (strncmp(argv[i], flag, sizeof flag - 1) == 0 && argv[i][sizeof flag - 1] == '=')
      skip = sizeof flag;
    else continue;
    char *copy = strdup(argv[j]);
    if (copy == NULL) return;
    if (!scrub_url_password(argv[j] + skip)) {
      free(copy);
      continue;
    }
    hidden_copies[ncopies++] = copy;
    argv[j] = copy;
  }
}
