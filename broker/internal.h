/* Cross-file internals of broker/ that name hiredis types. Included only by
 * the files of broker/. */
#ifndef CELER_BROKER_INTERNAL_H
#define CELER_BROKER_INTERNAL_H

#include <sys/time.h>
#include <hiredis/hiredis.h>
#include "broker/broker.h"

struct timeval broker_tv(int ms);
/* Applies ms as the socket's send and receive timeout. */
int broker_set_timeout(broker_conn *b, int ms);
/* Records the context's I/O error (or timeout) in b->errstr, closes the
 * dead context and returns CELER_ECONNECT or CELER_ETIMEDOUT. */
int broker_io_error(broker_conn *b, const char *what);
/* Appends one command (not sent until a reply is read) to the live
 * connection's output; argvlen may be NULL for C strings. REDIS_OK, or
 * REDIS_ERR when out of memory. */
int broker_append(broker_conn *b, int argc, const char *const *argv, const size_t *argvlen);
/* Sends argv and reads the reply on a live (or re-made) connection.
 * argvlen may be NULL for NUL-terminated arguments. */
redisReply *broker_command(broker_conn *b, int *code, int argc, const char **argv,
                           const size_t *argvlen);

/* Turns an error reply into CELER_EAUTH (NOAUTH, NOPERM) or CELER_EPROTO
 * with a sentence naming what failed. Does not free r. */
int broker_reply_error(broker_conn *b, redisReply *r, const char *what);
/* Reads an integer script reply into *outcome and frees r. */
int broker_integer_reply(broker_conn *b, redisReply *r, const char *script, int *outcome);
/* Fills e from one [id, [field, value, ...]] stream entry. Returns
 * CELER_ENOMEM or 0; shape problems land in e->problem. */
int broker_parse_entry(redisReply *item, broker_entry *e);
/* Parses a decimal count the system stored (len bytes, not terminated);
 * a malformed or empty one reads as absent: false, *out untouched. */
bool broker_parse_count(const char *s, size_t len, int64_t *out);
/* A NUL-terminated malloc'd copy of len bytes, or NULL. */
char *broker_copy_bytes(const char *s, size_t len);

/* Appends (does not send) an EVALSHA of script s to the connection's
 * output, loading the script first when its sha is not known: a pipeline
 * step. The connection must be live (broker_ensure) and, when something is
 * already appended, the script loaded; nothing else may touch the
 * connection until broker_eval_reply has read the answer. */
int broker_eval_append(broker_conn *b, broker_script s, int nkeys, const char **argv,
                       const size_t *argvlen, int argc);
/* Reads the answer to an appended EVALSHA: the reply (caller frees), or
 * NULL with *code set (an error reply: CELER_ESCRIPT; I/O: the connection
 * is closed), or NULL with *code 0 and *noscript set when the server had
 * lost the script (it is loaded again on next use: call again). */
redisReply *broker_eval_reply(broker_conn *b, int *code, broker_script s, bool *noscript);

/* ---- jsonw.c: JSON text written straight into a buffer ---- */
/* Length of the well-formed UTF-8 sequence at s (len bytes available), its
 * code point in *out; 0 when it is not one (overlong forms, surrogates and
 * code points past U+10FFFF included). */
size_t broker_utf8_decode(const unsigned char *s, size_t len, uint32_t *out);
bool broker_utf8_valid(const char *s, size_t len);
/* A growing JSON text; zero-initialise it. After an allocation failure
 * every write is ignored and broker_jbuf_finish returns NULL. */
typedef struct broker_jbuf {
  char *s;
  size_t len, cap;
  bool failed;
} broker_jbuf;
/* Appends n raw bytes (punctuation, keys written by the caller). */
void broker_jbuf_put(broker_jbuf *b, const char *s, size_t n);
#define BROKER_JBUF_LIT(b, lit) broker_jbuf_put((b), (lit), sizeof(lit) - 1)
/* Appends s as a JSON string (NULL: null). A string that is not valid
 * UTF-8 (hostile input, a handler's message) is written with each of its
 * non-ASCII bytes as '?' rather than failing the document. */
void broker_jbuf_string(broker_jbuf *b, const char *s);
void broker_jbuf_int(broker_jbuf *b, int64_t v);
/* Appends a jansson value (borrowed; NULL: null) in compact form. */
void broker_jbuf_json(broker_jbuf *b, const json_t *v);
/* The text (caller frees) and its length, or NULL when memory ran out;
 * either way b no longer owns anything. */
char *broker_jbuf_finish(broker_jbuf *b, size_t *len);

/* Embedded script sources (generated from broker/lua/ at build time). */
extern const char celer_lua_lib[];
extern const char celer_lua_complete[];
extern const char celer_lua_promote[];
extern const char celer_lua_reschedule[];
extern const char celer_lua_reclaim[];
extern const char celer_lua_refresh[];
extern const char celer_lua_cancel[];
extern const char celer_lua_dead_retry[];
extern const char celer_lua_purge[];
extern const char celer_lua_handback[];

#endif
