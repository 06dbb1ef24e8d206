/* Cross-file internals of client/: the client object and the helpers the
 * producer API (client.c) and the operator API (admin.c) share. */
#ifndef CELER_CLIENT_INTERNAL_H
#define CELER_CLIENT_INTERNAL_H

#include <signal.h>
#include "broker/broker.h"
#include "celer/client.h"

struct celer_client {
  broker_conn conn;        /* requests */
  broker_conn sub;         /* result waits (subscribed while waiting) */
  broker_url url;
  char ns[CELER_NAMESPACE_MAX + 1];
  char *password_file;     /* owned; NULL = none */
  int timeout_ms;
  size_t max_payload;
  int64_t result_ttl_ms;   /* for records the client writes (CANCELED) */
  int setup_error;         /* 0, or why the options were unusable */
  struct client_signer *signer; /* owned; NULL = tasks go unsigned (client/sign.h) */
  char errstr[CELER_ERRSTR_LEN];
};

/* Sets c->errstr; returns code for tail calls. */
int client_fail(celer_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Copies a broker connection's sentence into the client; returns code. */
int client_fail_broker(celer_client *c, const broker_conn *b, int code);
/* 0 unless the client was made with unusable options (each broker call
 * connects or reconnects by itself). */
int client_ready(celer_client *c);
/* Validates a task id and (when not NULL) a queue name. */
int client_check_names(celer_client *c, const char *queue, const char *id);

/* hiredis writes with write(2); on a socket the server has closed, Linux
 * raises SIGPIPE, whose default action kills the producer. Every call that
 * may write runs between block and restore: SIGPIPE is blocked in the
 * calling thread, and one it raised itself is consumed. */
typedef struct client_sigpipe_guard {
  sigset_t old;
} client_sigpipe_guard;
void client_sigpipe_block(client_sigpipe_guard *g);
/* rc: the guarded call's result (only a failed call can have raised one). */
void client_sigpipe_restore(const client_sigpipe_guard *g, int rc);
/* Evaluates call (an int expression) with SIGPIPE guarded. */
#define CLIENT_GUARDED(call)                 \
  __extension__({                            \
    client_sigpipe_guard guard_;             \
    client_sigpipe_block(&guard_);           \
    int rc_ = (call);                        \
    client_sigpipe_restore(&guard_, rc_);    \
    rc_;                                     \
  })

#endif
