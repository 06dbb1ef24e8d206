/* The Lua scripts: each state change of a queue is one script. Scripts are
 * loaded with SCRIPT LOAD on first use and run with EVALSHA; a restarted
 * or flushed Redis answers NOSCRIPT, and the script is loaded again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/internal.h"

/* Every script, by broker_script value. */
static const struct {
  const char *name;
  const char *source;
} scripts[BROKER_SCRIPT_COUNT] = {
    [BROKER_SCRIPT_COMPLETE] = {"complete", celer_lua_complete},
    [BROKER_SCRIPT_PROMOTE] = {"promote", celer_lua_promote},
    [BROKER_SCRIPT_RESCHEDULE] = {"reschedule", celer_lua_reschedule},
    [BROKER_SCRIPT_RECLAIM] = {"reclaim", celer_lua_reclaim},
    [BROKER_SCRIPT_REFRESH] = {"refresh", celer_lua_refresh},
    [BROKER_SCRIPT_CANCEL] = {"cancel", celer_lua_cancel},
    [BROKER_SCRIPT_DEAD_RETRY] = {"dead_retry", celer_lua_dead_retry},
    [BROKER_SCRIPT_PURGE] = {"purge", celer_lua_purge},
    [BROKER_SCRIPT_HANDBACK] = {"handback", celer_lua_handback},
};

static const char *script_name(broker_script s) { return scripts[s].name; }

/* Loads lib.lua followed by the script as one script. */
static int load_script(broker_conn *b, broker_script s) {
  size_t lib = strlen(celer_lua_lib), body = strlen(scripts[s].source);
  char *source = malloc(lib + body + 2);
  if (source == NULL) return broker_fail(b, CELER_ENOMEM, "out of memory loading scripts");
  memcpy(source, celer_lua_lib, lib);
  source[lib] = '\n';
  memcpy(source + lib + 1, scripts[s].source, body + 1);
  const char *argv[3] = {"SCRIPT", "LOAD", source};
  int code;
  redisReply *r = broker_command(b, &code, 3, argv, NULL);
  free(source);
  if (r == NULL) return code;
  int rc = 0;
  if (r->type == REDIS_REPLY_STRING && r->len == 40) {
    memcpy(b->scripts_sha[s], r->str, 40);
    b->scripts_sha[s][40] = '\0';
  } else {
    rc = broker_fail(b, CELER_ESCRIPT, "cannot load the %s script: %s", script_name(s),
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
  }
  freeReplyObject(r);
  return rc;
}

/* The most arguments any of our scripts takes, plus EVALSHA, sha and
 * numkeys: a complete.lua call of a full batch (ops.c: 11 + 6 x 200) or a
 * handback of a full prefetch (1000 ids + 3). */
#define SCRIPT_ARGC_MAX 1300

void *broker_eval(broker_conn *b, int *code, broker_script s, int nkeys,
                  const char **argv, const size_t *argvlen, int argc) {
  for (int attempt = 0; attempt < 2; attempt++) {
    /* broker_eval_append loads the script after any reconnect. */
    if ((*code = broker_eval_append(b, s, nkeys, argv, argvlen, argc)) != 0) return NULL;
    bool noscript = false;
    redisReply *r = broker_eval_reply(b, code, s, &noscript);
    if (r != NULL || !noscript) return r;
  }
  *code = broker_fail(b, CELER_ESCRIPT, "the %s script keeps disappearing from the broker",
                      script_name(s));
  return NULL;
}

int broker_eval_append(broker_conn *b, broker_script s, int nkeys, const char **argv,
                       const size_t *argvlen, int argc) {
  const char *full[SCRIPT_ARGC_MAX + 3];
  size_t fulllen[SCRIPT_ARGC_MAX + 3];
  char nk[16];
  if (argc > SCRIPT_ARGC_MAX)
    return broker_fail(b, CELER_EINVAL, "too many script arguments (%d)", argc);
  int rc = broker_ensure(b);
  if (rc == 0 && b->scripts_sha[s][0] == '\0') rc = load_script(b, s);
  if (rc != 0) return rc;
  snprintf(nk, sizeof nk, "%d", nkeys);
  full[0] = "EVALSHA";
  fulllen[0] = 7;
  full[1] = b->scripts_sha[s];
  fulllen[1] = 40;
  full[2] = nk;
  fulllen[2] = strlen(nk);
  for (int i = 0; i < argc; i++) {
    full[3 + i] = argv[i];
    fulllen[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
  }
  if (broker_append(b, argc + 3, full, fulllen) != REDIS_OK) {
    broker_close(b);
    return broker_fail(b, CELER_ENOMEM, "out of memory building the %s call", script_name(s));
  }
  return 0;
}

redisReply *broker_eval_reply(broker_conn *b, int *code, broker_script s, bool *noscript) {
  redisReply *r = NULL;
  *noscript = false;
  if (redisGetReply(b->ctx, (void **)&r) != REDIS_OK || r == NULL) {
    *code = broker_io_error(b, script_name(s));
    return NULL;
  }
  *code = 0;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
    b->scripts_sha[s][0] = '\0';
    *noscript = true;
  } else if (r->type == REDIS_REPLY_ERROR) {
    *code = broker_fail(b, CELER_ESCRIPT, "the %s script failed: %s", script_name(s), r->str);
  } else {
    return r;
  }
  freeReplyObject(r);
  return NULL;
}

void broker_reply_free(void *reply) {
  if (reply) freeReplyObject(reply);
}
