/* The notify module: notify.send delivers one notification.
 *   kwargs channel ("webhook" | "log"), to, message; optional subject;
 *   url (webhook only, http:// or https://).
 *
 * Webhook: POST of {"id", "to", "subject", "message"} as JSON with the
 * header Idempotency-Key: <task id>, so a receiver can drop the repeat of
 * a delivery that was retried after it had in fact arrived. A 2xx answer
 * succeeds (result {"channel", "status", "url"}); 408, 429, 5xx and
 * network errors are retried, after Retry-After when the answer has one
 * (seconds or an HTTP date), else with the task's backoff; other answers
 * fail at once with the status and the start of the body. Redirects are
 * followed only within the same scheme, host and port (a notification is
 * never handed to another host), at most NOTIFY_REDIRECTS_MAX times. The
 * response body is read up to NOTIFY_BODY_MAX bytes; the transfer stops
 * there.
 *
 * Log: one JSON line {"at", "id", "to", "subject", "message"} appended to
 * the file CELER_NOTIFY_LOG with a single write(2) on a descriptor opened
 * with O_APPEND, so lines of concurrent children never interleave. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include "celer/task.h"

/* Time to establish a connection: a receiver that cannot accept within
 * this is down, and the retry comes later. */
#define NOTIFY_CONNECT_TIMEOUT_MS 5000
/* Longest one delivery may take, request to last byte; the task's own
 * deadline shortens it. */
#define NOTIFY_TOTAL_TIMEOUT_MS 30000
/* Time kept back before the task's hard deadline, so that a slow receiver
 * ends in a recorded retry rather than a killed process. */
#define NOTIFY_DEADLINE_MARGIN_MS 250
/* Response bytes kept: enough for any error message a receiver sends. */
#define NOTIFY_BODY_MAX (64 * 1024)
/* Characters of the response body quoted in an error. */
#define NOTIFY_EXCERPT_MAX 200
/* Same-origin redirects followed for one delivery. */
#define NOTIFY_REDIRECTS_MAX 3
/* Longest wait a Retry-After may ask for; beyond it the task's backoff
 * cap applies in spirit: an hour. */
#define NOTIFY_RETRY_AFTER_MAX_MS (3600 * 1000)
/* Field limits: a notification is a message, not a document. */
#define NOTIFY_URL_MAX 2048
#define NOTIFY_TO_MAX 320
#define NOTIFY_SUBJECT_MAX 256
#define NOTIFY_MESSAGE_MAX (16 * 1024)

typedef struct notification {
  const char *channel, *to, *subject, *message, *url; /* borrowed from kwargs */
} notification;

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- arguments ---- */

static int too_long(celer_task_ctx *ctx, const char *key, const char *v, size_t max) {
  if (strlen(v) <= max) return 0;
  return celer_task_fail(ctx, "ValidationError", "kwargs.%s: longer than %zu bytes", key, max);
}

static bool http_url(const char *u) {
  return strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0;
}

static int read_notification(celer_task_ctx *ctx, const json_t *kwargs, notification *n) {
  memset(n, 0, sizeof *n);
  n->subject = "";
  if (celer_arg_string(ctx, kwargs, "channel", &n->channel) != 0 ||
      celer_arg_string(ctx, kwargs, "to", &n->to) != 0 ||
      celer_arg_string(ctx, kwargs, "message", &n->message) != 0 ||
      celer_arg_string_opt(ctx, kwargs, "subject", &n->subject) < 0 ||
      celer_arg_string_opt(ctx, kwargs, "url", &n->url) < 0)
    return -1;
  bool webhook = strcmp(n->channel, "webhook") == 0;
  if (!webhook && strcmp(n->channel, "log") != 0)
    return celer_task_fail(ctx, "ValidationError",
                           "kwargs.channel: must be \"webhook\" or \"log\", got \"%.32s\"",
                           n->channel);
  if (too_long(ctx, "to", n->to, NOTIFY_TO_MAX) ||
      too_long(ctx, "subject", n->subject, NOTIFY_SUBJECT_MAX) ||
      too_long(ctx, "message", n->message, NOTIFY_MESSAGE_MAX))
    return -1;
  if (n->to[0] == '\0') return celer_task_fail(ctx, "ValidationError", "kwargs.to: empty");
  if (webhook && n->url == NULL)
    return celer_task_fail(ctx, "ValidationError", "kwargs.url: required for channel webhook");
  if (webhook && !http_url(n->url))
    return celer_task_fail(ctx, "ValidationError", "kwargs.url: must be an http:// or https:// "
                           "URL");
  if (webhook && too_long(ctx, "url", n->url, NOTIFY_URL_MAX)) return -1;
  return 0;
}

/* ---- the log channel ---- */

static int send_log(celer_task_ctx *ctx, const notification *n, json_t **result) {
  const char *path = getenv("CELER_NOTIFY_LOG");
  if (path == NULL || path[0] == '\0')
    return celer_task_fail(ctx, "ConfigError",
                           "CELER_NOTIFY_LOG is not set: it names the file of the log channel");
  json_t *line = json_pack("{sIssssssss}", "at", (json_int_t)now_ms(), "id", celer_task_id(ctx),
                           "to", n->to, "subject", n->subject, "message", n->message);
  char *text = line ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(line);
  if (text == NULL) return celer_task_fail(ctx, "MemoryError", "out of memory");
  size_t len = strlen(text);
  text[len++] = '\n'; /* replaces the terminator: written by length */
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  ssize_t w = fd >= 0 ? write(fd, text, len) : -1;
  int err = errno;
  if (fd >= 0) close(fd);
  free(text);
  if (w < 0)
    return celer_task_retry(ctx, -1, "LogError", "%s: %s", path, strerror(err));
  if ((size_t)w != len)
    return celer_task_retry(ctx, -1, "LogError", "%s: short write (%zd of %zu bytes)", path, w,
                            len);
  *result = json_pack("{ssss}", "channel", "log", "path", path);
  return 0;
}

/* ---- the webhook channel ---- */

/* What one HTTP exchange brought back. */
typedef struct response {
  long status;
  char body[NOTIFY_BODY_MAX];
  size_t len;
  bool capped;               /* the body went past NOTIFY_BODY_MAX */
  char retry_after[128];     /* the final answer's Retry-After, "" = none */
} response;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg) {
  response *r = arg;
  size_t n = size * nmemb, room = sizeof r->body - r->len;
  if (n > room) {
    memcpy(r->body + r->len, data, room);
    r->len += room;
    r->capped = true;
    return 0; /* stops the transfer: the rest is not wanted */
  }
  memcpy(r->body + r->len, data, n);
  r->len += n;
  return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg) {
  response *r = arg;
  size_t n = size * nmemb;
  static const char name[] = "retry-after:";
  if (n > 5 && strncmp(data, "HTTP/", 5) == 0) r->retry_after[0] = '\0'; /* a new answer */
  if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
    const char *v = data + sizeof name - 1;
    size_t vlen = n - (sizeof name - 1);
    while (vlen > 0 && (*v == ' ' || *v == '\t')) v++, vlen--;
    while (vlen > 0 && isspace((unsigned char)v[vlen - 1])) vlen--;
    if (vlen >= sizeof r->retry_after) vlen = sizeof r->retry_after - 1;
    memcpy(r->retry_after, v, vlen);
    r->retry_after[vlen] = '\0';
  }
  return n;
}

/* Retry-After as a delay in ms (seconds, or an HTTP date), clamped to
 * [0, NOTIFY_RETRY_AFTER_MAX_MS]; -1 when absent or unreadable. */
static int64_t retry_after_ms(const char *v) {
  if (v[0] == '\0') return -1;
  int64_t ms;
  if (strspn(v, "0123456789") == strlen(v)) {
    if (strlen(v) > 9) return NOTIFY_RETRY_AFTER_MAX_MS;
    ms = strtoll(v, NULL, 10) * 1000;
  } else {
    time_t t = curl_getdate(v, NULL);
    if (t == -1) return -1;
    ms = (int64_t)t * 1000 - now_ms();
  }
  if (ms < 0) ms = 0;
  return ms > NOTIFY_RETRY_AFTER_MAX_MS ? NOTIFY_RETRY_AFTER_MAX_MS : ms;
}

/* The URL without user information, for messages (written to out). */
static void safe_url(const char *url, char *out, size_t size) {
  CURLU *u = curl_url();
  char *clean = NULL;
  if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
    curl_url_set(u, CURLUPART_USER, NULL, 0);
    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    curl_url_get(u, CURLUPART_URL, &clean, 0);
  }
  snprintf(out, size, "%s", clean ? clean : "(unparsable url)");
  curl_free(clean);
  curl_url_cleanup(u);
}

/* True when a and b have the same scheme, host and port. */
static bool same_origin(const char *a, const char *b) {
  CURLU *ua = curl_url(), *ub = curl_url();
  bool same = false;
  if (ua && ub && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
      curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK) {
    static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
    same = true;
    for (size_t i = 0; same && i < sizeof parts / sizeof parts[0]; i++) {
      char *pa = NULL, *pb = NULL;
      curl_url_get(ua, parts[i], &pa, CURLU_DEFAULT_PORT);
      curl_url_get(ub, parts[i], &pb, CURLU_DEFAULT_PORT);
      same = pa && pb && strcasecmp(pa, pb) == 0;
      curl_free(pa);
      curl_free(pb);
    }
  }
  curl_url_cleanup(ua);
  curl_url_cleanup(ub);
  return same;
}

/* The body excerpt for an error: printable ASCII, runs of white space as
 * one space, at most NOTIFY_EXCERPT_MAX characters. */
static void excerpt(const response *r, char *out, size_t size) {
  size_t k = 0;
  bool space = false;
  for (size_t i = 0; i < r->len && k + 4 < size && k < NOTIFY_EXCERPT_MAX; i++) {
    unsigned char c = (unsigned char)r->body[i];
    if (isspace(c)) {
      space = k > 0;
      continue;
    }
    if (space) out[k++] = ' ';
    space = false;
    out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
  }
  if (k >= NOTIFY_EXCERPT_MAX && k + 4 < size) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = '\0';
}

/* One POST of body to url; fills r. Returns the curl code. */
static CURLcode post(celer_task_ctx *ctx, const char *url, const char *body, response *r) {
  CURL *h = curl_easy_init();
  if (h == NULL) return CURLE_OUT_OF_MEMORY;
  char key[CELER_ID_MAX + 32];
  snprintf(key, sizeof key, "Idempotency-Key: %s", celer_task_id(ctx));
  struct curl_slist *hdr = NULL, *t;
  const char *lines[] = {"Content-Type: application/json", "Expect:", key};
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
    if ((t = curl_slist_append(hdr, lines[i])) == NULL) {
      curl_slist_free_all(hdr);
      curl_easy_cleanup(h);
      return CURLE_OUT_OF_MEMORY;
    }
    hdr = t;
  }
  long total = NOTIFY_TOTAL_TIMEOUT_MS;
  int64_t deadline = celer_task_deadline(ctx);
  if (deadline > 0) {
    int64_t left = deadline - now_ms() - NOTIFY_DEADLINE_MARGIN_MS;
    if (left < total) total = left > 1 ? (long)left : 1;
  }
  memset(r, 0, sizeof *r);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)NOTIFY_CONNECT_TIMEOUT_MS);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "celer-notify/1.0");
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  /* Stopped by on_body at the cap: the answer itself arrived. */
  if (rc == CURLE_WRITE_ERROR && r->capped) rc = CURLE_OK;
  if (rc == CURLE_OK && r->status >= 300 && r->status < 400) {
    char *loc = NULL;
    curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
    /* Kept in body (the body of a redirect is not needed). */
    snprintf(r->body, sizeof r->body, "%s", loc ? loc : "");
    r->len = 0;
  }
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  return rc;
}

/* Classifies the final answer of a delivery to url. */
static int answer(celer_task_ctx *ctx, const char *url, const response *r, json_t **result) {
  char where[NOTIFY_URL_MAX + 64], text[NOTIFY_EXCERPT_MAX + 8];
  safe_url(url, where, sizeof where);
  long s = r->status;
  if (s >= 200 && s < 300) {
    *result = json_pack("{sssIss}", "channel", "webhook", "status", (json_int_t)s, "url", where);
    celer_task_log(ctx, CELER_TASK_INFO, "delivered to %s: HTTP %ld", where, s);
    return 0;
  }
  excerpt(r, text, sizeof text);
  if (s == 408 || s == 429 || s >= 500) {
    int64_t delay = retry_after_ms(r->retry_after);
    return celer_task_retry(ctx, delay, "HTTPError", "POST %s: HTTP %ld%s%s%s", where, s,
                            delay >= 0 ? " (Retry-After " : "", delay >= 0 ? r->retry_after : "",
                            delay >= 0 ? ")" : "");
  }
  return celer_task_fail(ctx, "HTTPError", "POST %s: HTTP %ld: %s", where, s,
                         text[0] ? text : "(empty body)");
}

static int send_webhook(celer_task_ctx *ctx, const notification *n, json_t **result) {
  json_t *doc = json_pack("{ssssssss}", "id", celer_task_id(ctx), "to", n->to, "subject",
                          n->subject, "message", n->message);
  char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(doc);
  response *r = malloc(sizeof *r);
  char *url = strdup(n->url);
  if (body == NULL || r == NULL || url == NULL) {
    free(body);
    free(r);
    free(url);
    return celer_task_fail(ctx, "MemoryError", "out of memory");
  }
  int rc = 0;
  for (int hop = 0;; hop++) {
    char where[NOTIFY_URL_MAX + 64];
    CURLcode cc = post(ctx, url, body, r);
    if (cc != CURLE_OK) {
      safe_url(url, where, sizeof where);
      rc = celer_task_retry(ctx, -1, cc == CURLE_OPERATION_TIMEDOUT ? "Timeout" : "NetworkError",
                            "POST %s: %s", where, curl_easy_strerror(cc));
      break;
    }
    if (r->status < 300 || r->status >= 400) {
      rc = answer(ctx, url, r, result);
      break;
    }
    safe_url(url, where, sizeof where);
    if (r->body[0] == '\0') {
      rc = celer_task_fail(ctx, "HTTPError", "POST %s: HTTP %ld without a Location", where,
                           r->status);
      break;
    }
    if (!same_origin(url, r->body)) {
      char to[NOTIFY_URL_MAX + 64];
      safe_url(r->body, to, sizeof to);
      rc = celer_task_fail(ctx, "RedirectRefused",
                           "POST %s: HTTP %ld to %s: a notification is not redirected to "
                           "another host", where, r->status, to);
      break;
    }
    if (hop + 1 > NOTIFY_REDIRECTS_MAX) {
      rc = celer_task_fail(ctx, "RedirectRefused", "POST %s: more than %d redirects", where,
                           NOTIFY_REDIRECTS_MAX);
      break;
    }
    char *next = strdup(r->body);
    if (next == NULL) {
      rc = celer_task_fail(ctx, "MemoryError", "out of memory");
      break;
    }
    free(url);
    url = next;
  }
  free(url);
  free(r);
  free(body);
  return rc;
}

static int notify_send(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                json_t **result) {
  notification n;
  if (read_notification(ctx, kwargs, &n) != 0) return -1;
  if (strcmp(n.channel, "log") == 0) return send_log(ctx, &n, result);
  return send_webhook(ctx, &n, result);
}

/* Releases libcurl's global state when the module is unloaded. */
__attribute__((destructor)) static void notify_fini(void) { curl_global_cleanup(); }

static int init(celer_registry *reg) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
  return celer_register(reg, &(celer_task_def){.name = "notify.send",
                                               .handler = notify_send,
                                               .max_retries = 5,
                                               .backoff_base_ms = 1000,
                                               .backoff_cap_ms = 300000});
}

CELER_MODULE("notify", "1.0", init);
