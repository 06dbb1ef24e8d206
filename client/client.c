/* libceler: the synchronous producer API (include/celer/client.h). It
 * builds and validates envelopes, hands them to broker/ in pipelined round
 * trips, reads records and waits for final ones over pub/sub. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/broker.h"
#include "celer/client.h"
#include "client/internal.h"
#include "client/sign.h"
#include "common/common.h"


int client_fail(celer_client *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->errstr, sizeof c->errstr, fmt, ap);
  va_end(ap);
  return code;
}

/* Copies a broker connection's sentence into the client. */
int client_fail_broker(celer_client *c, const broker_conn *b, int code) {
  snprintf(c->errstr, sizeof c->errstr, "%s", b->errstr[0] ? b->errstr : celer_strerror(code));
  return code;
}

/* See client/internal.h: why every call that may write guards SIGPIPE. */

static void sigpipe_set(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGPIPE);
}

void client_sigpipe_block(client_sigpipe_guard *g) {
  sigset_t pipe_set;
  sigpipe_set(&pipe_set);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &g->old);
}

void client_sigpipe_restore(const client_sigpipe_guard *g, int rc) {
  int saved = errno;
  /* A SIGPIPE is raised only by a write that failed, so only a failed
   * call looks for one to consume (one the caller had blocked and pending
   * already is theirs, and stays). */
  if (rc != 0 && !sigismember(&g->old, SIGPIPE)) {
    sigset_t pipe_set, pending;
    sigpipe_set(&pipe_set);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
      const struct timespec now = {0, 0};
      while (sigtimedwait(&pipe_set, NULL, &now) < 0 && errno == EINTR) {
      }
    }
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
  errno = saved;
}

void celer_enqueue_options_init(celer_enqueue_options *o) {
  memset(o, 0, sizeof *o);
  o->max_retries = -1;
}

static const char *pick(const char *given, const char *env_name, const char *fallback) {
  if (given && *given) return given;
  const char *env = getenv(env_name);
  return env && *env ? env : fallback;
}

celer_client *celer_client_new(const celer_client_options *opts) {
  celer_client_options none = {0};
  if (opts == NULL) opts = &none;
  celer_client *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  const char *url = pick(opts->broker_url, "CELER_BROKER_URL", CELER_DEFAULT_BROKER_URL);
  const char *ns = pick(opts->ns, "CELER_NAMESPACE", CELER_DEFAULT_NAMESPACE);
  const char *pwfile = pick(opts->password_file, "CELER_BROKER_PASSWORD_FILE", NULL);
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : BROKER_DEFAULT_TIMEOUT_MS;
  c->max_payload = opts->max_payload;
  if (c->max_payload == 0) {
    int64_t v;
    const char *env = getenv("CELER_MAX_PAYLOAD");
    c->max_payload = env && celer_parse_i64(env, &v) == 0 && v > 0 ? (size_t)v
                                                                     : CELER_DEFAULT_MAX_PAYLOAD;
  }
  c->result_ttl_ms = (int64_t)CELER_DEFAULT_RESULT_TTL_S * 1000;
  if (opts->result_ttl_s > 0) {
    c->result_ttl_ms = opts->result_ttl_s * 1000;
  } else {
    int64_t v;
    const char *env = getenv("CELER_RESULT_TTL");
    if (env && celer_parse_i64(env, &v) == 0 && v > 0) c->result_ttl_ms = v * 1000;
  }
  if (strlen(ns) > CELER_NAMESPACE_MAX || !celer_valid_queue_name(ns)) {
    c->setup_error = client_fail(c, CELER_EINVAL,
                          "namespace must be 1 to %d characters from [A-Za-z0-9_.-]",
                          CELER_NAMESPACE_MAX);
  }
  snprintf(c->ns, sizeof c->ns, "%s", ns);
  if (c->setup_error == 0 && broker_url_parse(url, &c->url, c->errstr, sizeof c->errstr) != 0)
    c->setup_error = CELER_EINVAL;
  if (c->setup_error == 0)
    c->setup_error = client_signer_from_env(&c->signer, c->errstr, sizeof c->errstr);
  if (pwfile && (c->password_file = strdup(pwfile)) == NULL) {
    client_signer_free(c->signer);
    free(c);
    return NULL;
  }
  broker_init(&c->conn, &c->url, c->ns, c->timeout_ms);
  c->conn.max_payload = (int64_t)c->max_payload;
  return c;
}

void celer_client_free(celer_client *c) {
  if (c == NULL) return;
  broker_close(&c->conn);
  broker_close(&c->sub);
  memset(&c->sub.url, 0, sizeof c->sub.url);
  /* The password lives in the URL copies; wipe it before the memory goes. */
  memset(&c->url, 0, sizeof c->url);
  memset(&c->conn.url, 0, sizeof c->conn.url);
  free(c->password_file);
  client_signer_free(c->signer);
  free(c);
}

const char *celer_client_errstr(const celer_client *c) { return c->errstr; }
const char *celer_client_namespace(const celer_client *c) { return c->ns; }

static int celer_client_connect_io(celer_client *c) {
  if (c->setup_error) return c->setup_error;
  if (c->password_file &&
      broker_url_read_password(c->password_file, &c->url, c->errstr, sizeof c->errstr) != 0)
    return CELER_EIO;
  broker_init(&c->conn, &c->url, c->ns, c->timeout_ms);
  c->conn.max_payload = (int64_t)c->max_payload;
  int rc = broker_connect(&c->conn);
  if (rc != 0) return client_fail_broker(c, &c->conn, rc);
  c->errstr[0] = '\0';
  return 0;
}

int celer_client_connect(celer_client *c) {
  return CLIENT_GUARDED(celer_client_connect_io(c));
}

/* Every call after a failed or missing connect reports the same cause. */
int client_ready(celer_client *c) {
  /* Every broker call makes sure of its connection itself (one poll per
   * request); here only what no reconnect can fix. */
  return c->setup_error;
}

static int celer_ping_io(celer_client *c) {
  int rc = client_ready(c);
  if (rc == 0 && (rc = broker_ping(&c->conn)) != 0) client_fail_broker(c, &c->conn, rc);
  return rc;
}

int celer_ping(celer_client *c) {
  return CLIENT_GUARDED(celer_ping_io(c));
}

/* Builds an envelope from the producer's inputs and encodes it. On 0 the
 * caller frees *json; *queue is borrowed from opts or static. */
static int build(celer_client *c, const char *task, const json_t *args,
                 const json_t *kwargs, const celer_enqueue_options *opts,
                 char id_out[CELER_ID_MAX + 1], char **json, size_t *len,
                 int64_t *eta_ms) {
  celer_enqueue_options defaults;
  if (opts == NULL) {
    celer_enqueue_options_init(&defaults);
    opts = &defaults;
  }
  if (task == NULL) return client_fail(c, CELER_EINVAL, "task: a task name is required");
  if (args && !json_is_array(args)) return client_fail(c, CELER_EINVAL, "args: expected an array");
  if (kwargs && !json_is_object(kwargs))
    return client_fail(c, CELER_EINVAL, "kwargs: expected an object");
  if (opts->countdown_ms > 0 && opts->eta_ms > 0)
    return client_fail(c, CELER_EINVAL, "countdown and eta exclude each other");

  celer_envelope env;
  celer_envelope_init(&env);
  int64_t now = celer_now_ms();
  if (opts->id) {
    if (strlen(opts->id) > CELER_ID_MAX || !celer_valid_id(opts->id))
      return client_fail(c, CELER_EINVAL, "id: must be 1 to %d characters from [A-Za-z0-9_-]",
                  CELER_ID_MAX);
    celer_copy(env.id, sizeof env.id, opts->id);
  } else if (celer_uuid4(env.id) != 0) {
    return client_fail(c, CELER_EIO, "cannot read the kernel's random source for a task id");
  }
  const char *queue = opts->queue ? opts->queue : CELER_DEFAULT_QUEUE;
  if (strlen(task) > CELER_TASK_NAME_MAX)
    return client_fail(c, CELER_EINVAL, "task: longer than %d characters", CELER_TASK_NAME_MAX);
  if (strlen(queue) > CELER_QUEUE_NAME_MAX)
    return client_fail(c, CELER_EINVAL, "queue: longer than %d characters", CELER_QUEUE_NAME_MAX);
  celer_copy(env.task, sizeof env.task, task);
  celer_copy(env.queue, sizeof env.queue, queue);
  /* The envelope borrows the caller's values; they are detached again
   * below instead of being released by celer_envelope_clear. */
  env.args = args ? (json_t *)args : json_array();
  env.kwargs = kwargs ? (json_t *)kwargs : json_object();
  env.meta = (json_t *)opts->meta;
  env.origin = (char *)opts->origin;
  env.eta = opts->countdown_ms > 0 ? now + opts->countdown_ms : opts->eta_ms;
  env.expires = opts->expires_ms;
  env.max_retries = opts->max_retries;
  env.timeout_ms = opts->timeout_ms;
  env.enqueued_at = now;

  celer_envelope_error err;
  int rc = celer_envelope_encode(&env, c->max_payload, json, len, &err);
  if (rc != 0) {
    char msg[sizeof err.field + sizeof err.message + 4];
    celer_envelope_error_format(&err, msg, sizeof msg);
    client_fail(c, rc, "%s", msg);
  }
  if (rc == 0 && c->signer) {
    /* CONTRACT "Signed tasks": the task field holds the JWS instead. */
    char *token = NULL;
    size_t token_len = 0;
    rc = client_sign(c->signer, *json, *len, env.id, env.eta, c->max_payload, &token,
                     &token_len, c->errstr, sizeof c->errstr);
    free(*json);
    *json = token;
    *len = token_len;
  }
  if (args == NULL) json_decref(env.args);
  if (kwargs == NULL) json_decref(env.kwargs);
  if (rc == 0) {
    if (id_out) memcpy(id_out, env.id, sizeof env.id);
    *eta_ms = env.eta;
  }
  return rc;
}

int celer_enqueue(celer_client *c, const char *task, const json_t *args,
                  const json_t *kwargs, const celer_enqueue_options *opts,
                  char id_out[CELER_ID_MAX + 1]) {
  celer_batch_item item = {.task = task, .args = args, .kwargs = kwargs};
  if (opts) item.opts = *opts;
  else celer_enqueue_options_init(&item.opts);
  int rc = celer_enqueue_batch(c, &item, 1);
  if (rc == 0 && id_out) memcpy(id_out, item.id, sizeof item.id);
  return rc;
}

static int celer_enqueue_batch_io(celer_client *c, celer_batch_item *items, size_t n) {
  int rc = client_ready(c);
  if (rc != 0) {
    for (size_t i = 0; i < n; i++) items[i].status = rc;
    return rc;
  }
  broker_push *pushes = calloc(n ? n : 1, sizeof *pushes);
  char **bodies = calloc(n ? n : 1, sizeof *bodies);
  size_t *index = calloc(n ? n : 1, sizeof *index);
  if (!pushes || !bodies || !index) {
    free(pushes);
    free(bodies);
    free(index);
    return client_fail(c, CELER_ENOMEM, "out of memory preparing %zu tasks", n);
  }
  int first = 0;
  size_t npush = 0;
  char first_err[CELER_ERRSTR_LEN] = "";
  for (size_t i = 0; i < n; i++) {
    size_t len = 0;
    int64_t eta = 0;
    items[i].status = build(c, items[i].task, items[i].args, items[i].kwargs,
                            &items[i].opts, items[i].id, &bodies[i], &len, &eta);
    if (items[i].status != 0) {
      if (!first) {
        first = items[i].status;
        snprintf(first_err, sizeof first_err, "%s", c->errstr);
      }
      continue;
    }
    pushes[npush] = (broker_push){.queue = items[i].opts.queue ? items[i].opts.queue
                                                               : CELER_DEFAULT_QUEUE,
                                  .envelope = bodies[i], .len = len, .eta_ms = eta};
    index[npush++] = i;
  }
  if (npush > 0) {
    rc = broker_enqueue(&c->conn, pushes, npush);
    for (size_t k = 0; k < npush; k++) items[index[k]].status = pushes[k].status;
    if (rc != 0 && !first) {
      first = client_fail_broker(c, &c->conn, rc);
      snprintf(first_err, sizeof first_err, "%s", c->errstr);
    }
  }
  /* The sentence describes the item whose code is returned: the first. */
  if (first) snprintf(c->errstr, sizeof c->errstr, "%s", first_err);
  for (size_t i = 0; i < n; i++) free(bodies[i]);
  free(pushes);
  free(bodies);
  free(index);
  return first;
}

int celer_enqueue_batch(celer_client *c, celer_batch_item *items, size_t n) {
  return CLIENT_GUARDED(celer_enqueue_batch_io(c, items, n));
}

/* Parses a stored record; on 0 the caller owns *record. */
static int parse_record(celer_client *c, const char *id, const char *json, size_t len,
                        json_t **record) {
  json_error_t jerr;
  json_t *rec = json_loadb(json, len, 0, &jerr);
  celer_state st;
  if (rec == NULL || celer_record_state(rec, &st) != 0) {
    json_decref(rec);
    return client_fail(c, CELER_EPROTO, "the record of task %s is not a valid record", id);
  }
  *record = rec;
  return 0;
}

static int get_in_queue(celer_client *c, const char *queue, const char *id, json_t **record) {
  char *json = NULL;
  size_t len = 0;
  int rc = broker_get_record(&c->conn, queue, id, &json, &len);
  if (rc != 0) return client_fail_broker(c, &c->conn, rc);
  rc = parse_record(c, id, json, len, record);
  free(json);
  return rc;
}

int client_check_names(celer_client *c, const char *queue, const char *id) {
  if (id == NULL || strlen(id) > CELER_ID_MAX || !celer_valid_id(id))
    return client_fail(c, CELER_EINVAL, "id: must be 1 to %d characters from [A-Za-z0-9_-]",
                CELER_ID_MAX);
  if (queue && (strlen(queue) > CELER_QUEUE_NAME_MAX || !celer_valid_queue_name(queue)))
    return client_fail(c, CELER_EINVAL, "queue: must be 1 to %d characters from [A-Za-z0-9_.-]",
                CELER_QUEUE_NAME_MAX);
  return 0;
}

static int celer_get_record_io(celer_client *c, const char *queue, const char *id,
                               json_t **record) {
  int rc = client_check_names(c, queue, id);
  if (rc == 0) rc = client_ready(c);
  if (rc != 0) return rc;
  if (queue) return get_in_queue(c, queue, id, record);
  char **names = NULL;
  size_t n = 0;
  rc = broker_list_queues(&c->conn, &names, &n);
  if (rc != 0) return client_fail_broker(c, &c->conn, rc);
  rc = CELER_ENOTFOUND;
  for (size_t i = 0; i < n && rc == CELER_ENOTFOUND; i++)
    rc = get_in_queue(c, names[i], id, record);
  broker_names_free(names, n);
  if (rc == CELER_ENOTFOUND)
    client_fail(c, rc, "no record for task %s in any of %zu queues", id, n);
  return rc;
}

int celer_get_record(celer_client *c, const char *queue, const char *id, json_t **record) {
  return CLIENT_GUARDED(celer_get_record_io(c, queue, id, record));
}

/* Reads the record and reports whether it is final (1), not final or
 * absent (0), or an error (< 0). */
static int read_final(celer_client *c, const char *queue, const char *id, json_t **record) {
  json_t *rec = NULL;
  int rc = get_in_queue(c, queue, id, &rec);
  if (rc == CELER_ENOTFOUND) return 0;
  if (rc != 0) return rc;
  celer_state st;
  celer_record_state(rec, &st);
  if (!celer_state_is_final(st)) {
    json_decref(rec);
    return 0;
  }
  *record = rec;
  return 1;
}

static int celer_wait_io(celer_client *c, const char *queue, const char *id,
                         int64_t timeout_ms, json_t **record) {
  if (queue == NULL) queue = CELER_DEFAULT_QUEUE;
  int rc = client_check_names(c, queue, id);
  if (rc == 0) rc = client_ready(c);
  if (rc != 0) return rc;
  int64_t deadline = timeout_ms < 0 ? -1 : celer_mono_ms() + timeout_ms;
  /* A subscribed connection can do nothing else, so waiting uses one of
   * its own, kept between waits (one channel at a time) and made again
   * after a timeout or an error. */
  broker_conn *sub = &c->sub;
  if (sub->ctx == NULL) broker_init(sub, &c->url, c->ns, c->timeout_ms);
  rc = broker_ensure(sub);
  if (rc == 0) rc = broker_subscribe_done(sub, queue, id);
  if (rc != 0) {
    client_fail_broker(c, sub, rc);
    broker_close(sub);
    return rc;
  }
  /* Subscribed first, read second: a completion landing in between is
   * either in the record we read or in a message we will receive. */
  for (;;) {
    rc = read_final(c, queue, id, record);
    if (rc != 0) break;
    rc = broker_wait_message(sub, deadline);
    if (rc != 0) {
      if (rc == CELER_ETIMEDOUT)
        client_fail(c, rc, "task %s did not finish within %lld ms", id, (long long)timeout_ms);
      else
        client_fail_broker(c, sub, rc);
      break;
    }
  }
  /* Leave the channel so the connection is ready for the next wait; if
   * that fails, the next wait makes a new connection. */
  if (sub->ctx != NULL && broker_unsubscribe_done(sub, queue, id) != 0) broker_close(sub);
  return rc == 1 ? 0 : rc;
}

int celer_wait(celer_client *c, const char *queue, const char *id, int64_t timeout_ms,
               json_t **record) {
  return CLIENT_GUARDED(celer_wait_io(c, queue, id, timeout_ms, record));
}

int celer_record_state(const json_t *record, celer_state *out) {
  const json_t *s = json_object_get(record, "state");
  if (!json_is_string(s)) return CELER_EINVAL;
  return celer_state_parse(json_string_value(s), out);
}
