/* Broker addresses. Two URL shapes reach Redis:
 *
 *   redis://[[user]:password@]host[:port][/db]
 *   unix:///absolute/path.sock[?db=N]
 *
 * The parser is strict on purpose: a typo in a broker URL should stop the
 * program with a sentence saying what is wrong, not connect somewhere
 * unexpected. Error sentences never quote pieces of the URL, because a
 * malformed URL may put the password anywhere. Passwords may also come from
 * a file (CELER_BROKER_PASSWORD_FILE) so they stay out of the environment. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "broker/broker.h"

/* Port and db when the URL leaves them out: Redis's own defaults. */
#define URL_DEFAULT_PORT 6379
#define URL_DEFAULT_DB 0
/* TCP ports are 16-bit; 0 is not a port one can connect to. */
#define URL_PORT_MIN 1
#define URL_PORT_MAX 65535
/* The password file may end with "\r\n" after the longest password, so we
 * read at most this many bytes beyond BROKER_PASSWORD_MAX to tell a
 * too-long password from a full-length one with its line ending. */
#define URL_PASSWORD_EOL_MAX 2

static const char tcp_scheme[] = "redis://";
static const char unix_scheme[] = "unix://";
static const char tls_scheme[] = "rediss://";

/* Fails with "broker URL: <why>" and wipes whatever was filled in so far,
 * so no half-parsed password outlives the call. */
static int url_fail(broker_url *out, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int url_fail(broker_url *out, char *err, size_t errlen, const char *fmt, ...) {
  char why[CELER_ERRSTR_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  explicit_bzero(out, sizeof *out);
  celer_fmt(err, errlen, "broker URL: %s", why);
  return CELER_EINVAL;
}

static bool has_prefix_nocase(const char *s, const char *prefix) {
  return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_control(unsigned char c) { return c < 0x20 || c == 0x7f; }

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

enum decode_result { DECODE_OK, DECODE_BAD_ESCAPE, DECODE_TOO_LONG };

/* Decodes len bytes of src with %XX escapes into dst (cap bytes plus the
 * terminator). A decoded NUL, CR or LF counts as a bad escape: a credential
 * sent in a Redis command cannot hold them. */
static enum decode_result percent_decode(const char *src, size_t len, char *dst, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)src[i];
    if (c == '%') {
      if (i + 2 >= len) return DECODE_BAD_ESCAPE;
      int hi = hex_value(src[i + 1]), lo = hex_value(src[i + 2]);
      if (hi < 0 || lo < 0) return DECODE_BAD_ESCAPE;
      c = (unsigned char)(hi * 16 + lo);
      if (c == '\0' || c == '\r' || c == '\n') return DECODE_BAD_ESCAPE;
      i += 2;
    }
    if (n == cap) return DECODE_TOO_LONG;
    dst[n++] = (char)c;
  }
  dst[n] = '\0';
  return DECODE_OK;
}

/* Parses a decimal number of digits only into [min, max]. */
static bool parse_ranged(const char *s, size_t len, int64_t min, int64_t max, int *out) {
  /* Twenty digits overflow int64 anyway; celer_parse_i64 checks the rest. */
  char buf[21];
  int64_t v;
  if (len == 0 || len >= sizeof buf) return false;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (celer_parse_i64(buf, &v) != 0 || v < min || v > max) return false;
  *out = (int)v;
  return true;
}

static bool parse_db(const char *s, size_t len, int *out) {
  return parse_ranged(s, len, 0, BROKER_DB_MAX, out);
}

/* A registered name or an IPv4 address: letters, digits, '.', '-', '_'. */
static bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '-' || c == '_';
}

/* user:password (either may be empty) before the '@'. */
static int parse_userinfo(const char *s, size_t len, broker_url *out, char *err,
                          size_t errlen) {
  const char *colon = memchr(s, ':', len);
  size_t user_len = colon ? (size_t)(colon - s) : len;
  enum decode_result rc = percent_decode(s, user_len, out->user, BROKER_USER_MAX);
  if (rc == DECODE_BAD_ESCAPE)
    return url_fail(out, err, errlen, "the user name has a malformed %%-escape");
  if (rc == DECODE_TOO_LONG)
    return url_fail(out, err, errlen, "the user name is longer than %d bytes", BROKER_USER_MAX);
  if (colon == NULL) return 0;
  rc = percent_decode(colon + 1, len - user_len - 1, out->password, BROKER_PASSWORD_MAX);
  if (rc == DECODE_BAD_ESCAPE)
    return url_fail(out, err, errlen, "the password has a malformed %%-escape");
  if (rc == DECODE_TOO_LONG)
    return url_fail(out, err, errlen, "the password is longer than %d bytes", BROKER_PASSWORD_MAX);
  return 0;
}

/* host[:port] or [ipv6][:port]. */
static int parse_hostport(const char *s, size_t len, broker_url *out, char *err,
                          size_t errlen) {
  const char *end = s + len, *port = NULL;
  size_t host_len;
  if (len > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (close == NULL)
      return url_fail(out, err, errlen, "an IPv6 address must be closed with ']'");
    host_len = (size_t)(close - s - 1);
    if (host_len == 0 || host_len > BROKER_HOST_MAX)
      return url_fail(out, err, errlen, "the IPv6 address between '[' and ']' is not valid");
    memcpy(out->host, s + 1, host_len);
    out->host[host_len] = '\0';
    unsigned char probe[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET6, out->host, probe) != 1)
      return url_fail(out, err, errlen, "the IPv6 address between '[' and ']' is not valid");
    if (close + 1 < end) {
      if (close[1] != ':')
        return url_fail(out, err, errlen, "only ':port' may follow an IPv6 address");
      port = close + 2;
    }
  } else {
    const char *colon = memchr(s, ':', len);
    host_len = colon ? (size_t)(colon - s) : len;
    if (host_len == 0) return url_fail(out, err, errlen, "the host is empty");
    if (host_len > BROKER_HOST_MAX)
      return url_fail(out, err, errlen, "the host is longer than %d characters", BROKER_HOST_MAX);
    for (size_t i = 0; i < host_len; i++) {
      if (!is_host_char(s[i]))
        return url_fail(out, err, errlen,
                        "the host may hold only letters, digits, '.', '-' and '_' "
                        "(write IPv6 addresses in brackets)");
    }
    memcpy(out->host, s, host_len);
    out->host[host_len] = '\0';
    if (colon) port = colon + 1;
  }
  if (port &&
      !parse_ranged(port, (size_t)(end - port), URL_PORT_MIN, URL_PORT_MAX, &out->port))
    return url_fail(out, err, errlen, "the port must be a number from %d to %d", URL_PORT_MIN,
                    URL_PORT_MAX);
  return 0;
}

static int parse_tcp(const char *rest, broker_url *out, char *err, size_t errlen) {
  size_t auth_len = strcspn(rest, "/?#");
  const char *at = memchr(rest, '@', auth_len);
  const char *hostport = rest;
  if (at) {
    if (memchr(at + 1, '@', auth_len - (size_t)(at + 1 - rest)))
      return url_fail(out, err, errlen, "write an '@' inside the user or password as %%40");
    int rc = parse_userinfo(rest, (size_t)(at - rest), out, err, errlen);
    if (rc) return rc;
    hostport = at + 1;
  } else if (strchr(rest + auth_len, '@')) {
    /* The authority ended early: a '/', '?' or '#' sits in the credentials. */
    return url_fail(out, err, errlen,
                    "write '/', '?', '#' and '@' inside the user or password as "
                    "%%-escapes (%%2F, %%3F, %%23, %%40)");
  }
  int rc = parse_hostport(hostport, (size_t)(rest + auth_len - hostport), out, err, errlen);
  if (rc) return rc;

  const char *path = rest + auth_len;
  if (*path == '?' || *path == '#')
    return url_fail(out, err, errlen,
                    "redis:// URLs take no query or fragment; give the database as /db");
  if (*path == '/' && path[1] != '\0') {
    size_t db_len = strlen(path + 1);
    if (!parse_db(path + 1, db_len, &out->db))
      return url_fail(out, err, errlen,
                      "the database after '/' must be a number from 0 to %d", BROKER_DB_MAX);
  }
  return 0;
}

static int parse_unix(const char *rest, broker_url *out, char *err, size_t errlen) {
  if (rest[0] != '/')
    return url_fail(out, err, errlen,
                    "unix:// must be followed by an absolute socket path "
                    "(unix:///path/redis.sock)");
  size_t path_len = strcspn(rest, "?");
  if (path_len > BROKER_SOCKET_PATH_MAX)
    return url_fail(out, err, errlen,
                    "the socket path is longer than %d bytes, the limit of sun_path",
                    BROKER_SOCKET_PATH_MAX);
  if (rest[path_len - 1] == '/')
    return url_fail(out, err, errlen, "the socket path names a directory, not a socket");
  memcpy(out->path, rest, path_len);
  out->path[path_len] = '\0';
  const char *query = rest + path_len;
  if (*query == '\0') return 0;
  if (strncmp(query, "?db=", 4) != 0)
    return url_fail(out, err, errlen,
                    "unix:// URLs accept only the query parameter db "
                    "(pass a password with CELER_BROKER_PASSWORD_FILE)");
  if (!parse_db(query + 4, strlen(query + 4), &out->db))
    return url_fail(out, err, errlen, "db must be a number from 0 to %d", BROKER_DB_MAX);
  return 0;
}

int broker_url_parse(const char *url, broker_url *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->port = URL_DEFAULT_PORT;
  out->db = URL_DEFAULT_DB;
  if (url == NULL || url[0] == '\0') return url_fail(out, err, errlen, "the URL is empty");
  for (const char *p = url; *p; p++) {
    if (is_control((unsigned char)*p) || *p == ' ')
      return url_fail(out, err, errlen,
                      "the URL contains a space or control character");
  }
  if (has_prefix_nocase(url, tcp_scheme))
    return parse_tcp(url + strlen(tcp_scheme), out, err, errlen);
  if (has_prefix_nocase(url, unix_scheme)) {
    out->is_unix = true;
    out->port = 0;
    return parse_unix(url + strlen(unix_scheme), out, err, errlen);
  }
  if (has_prefix_nocase(url, tls_scheme))
    return url_fail(out, err, errlen,
                    "rediss:// (TLS) is not supported by this build; see docs/security.md "
                    "for reaching a TLS-only Redis");
  return url_fail(out, err, errlen, "the URL must start with redis:// or unix://");
}

/* Reads at most cap bytes of fd into buf; returns the count or -1. */
static ssize_t read_capped(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n < cap) {
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    n += (size_t)r;
  }
  return (ssize_t)n;
}

int broker_url_read_password(const char *path, broker_url *out, char *err,
                             size_t errlen) {
  char buf[BROKER_PASSWORD_MAX + URL_PASSWORD_EOL_MAX + 1];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    celer_fmt(err, errlen, "cannot open the password file %s: %s", path, strerror(errno));
    return CELER_EIO;
  }
  ssize_t n = read_capped(fd, buf, sizeof buf);
  int saved = errno;
  close(fd);
  if (n < 0) {
    celer_fmt(err, errlen, "cannot read the password file %s: %s", path, strerror(saved));
    return CELER_EIO;
  }
  size_t len = (size_t)n;
  if (len > 0 && buf[len - 1] == '\n') {
    len--;
    if (len > 0 && buf[len - 1] == '\r') len--;
  }
  int rc = 0;
  if (len > BROKER_PASSWORD_MAX) {
    celer_fmt(err, errlen, "the password file %s holds more than %d bytes", path,
              BROKER_PASSWORD_MAX);
    rc = CELER_ETOOBIG;
  } else if (len == 0) {
    celer_fmt(err, errlen, "the password file %s is empty", path);
    rc = CELER_EIO;
  } else if (memchr(buf, '\0', len) || memchr(buf, '\n', len) || memchr(buf, '\r', len)) {
    celer_fmt(err, errlen,
              "the password file %s must hold one line: the password has a NUL or "
              "line-break byte",
              path);
    rc = CELER_EIO;
  } else {
    memcpy(out->password, buf, len);
    out->password[len] = '\0';
  }
  explicit_bzero(buf, sizeof buf);
  return rc;
}

/* Characters that would make a described user name ambiguous. */
static bool user_needs_escape(unsigned char c) {
  return is_control(c) || c == ' ' || c == ':' || c == '@' || c == '/' || c == '%' ||
         c == '?' || c == '#' || c >= 0x80;
}

void broker_url_describe(const broker_url *u, char *buf, size_t size) {
  if (size == 0) return;
  if (u->is_unix) {
    celer_fmt(buf, size, "unix://%s?db=%d", u->path, u->db);
    return;
  }
  char user[BROKER_USER_MAX * 3 + 1];
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)u->user; *p; p++) {
    if (user_needs_escape(*p)) {
      snprintf(user + n, sizeof user - n, "%%%02X", *p);
      n += 3;
    } else {
      user[n++] = (char)*p;
    }
  }
  user[n] = '\0';
  const char *mask = u->password[0] ? ":***" : "";
  const char *at = (u->user[0] || u->password[0]) ? "@" : "";
  bool v6 = strchr(u->host, ':') != NULL;
  celer_fmt(buf, size, "redis://%s%s%s%s%s%s:%d/%d", user, mask, at, v6 ? "[" : "", u->host,
            v6 ? "]" : "", u->port, u->db);
}
