/* The Lua scripts: each state change of a queue is one script. Scripts are
 * loaded with SCRIPT LOAD on first use and run with EVALSHA; a restarted
 * or flushed Redis answers NOSCRIPT, and the script is loaded again. */
#include <stdio.h>
#include <string.h>
#include "broker/internal.h"

static const char *script_source(broker_script s) {
  switch (s) {
    case BROKER_SCRIPT_COMPLETE: return celer_lua_complete;
    case BROKER_SCRIPT_PROMOTE: return celer_lua_promote;
    case BROKER_SCRIPT_RESCHEDULE: return celer_lua_reschedule;
  }
  return NULL;
}

static const char *script_name(broker_script s) {
  switch (s) {
    case BROKER_SCRIPT_COMPLETE: return "complete";
    case BROKER_SCRIPT_PROMOTE: return "promote";
    case BROKER_SCRIPT_RESCHEDULE: return "reschedule";
  }
  return "?";
}

static int load_script(broker_conn *b, broker_script s) {
  const char *argv[3] = {"SCRIPT", "LOAD", script_source(s)};
  int code;
  redisReply *r = broker_command(b, &code, 3, argv, NULL);
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
 * numkeys. */
#define SCRIPT_ARGC_MAX 16

void *broker_eval(broker_conn *b, int *code, broker_script s, int nkeys,
                  const char **argv, const size_t *argvlen, int argc) {
  const char *full[SCRIPT_ARGC_MAX + 3];
  size_t fulllen[SCRIPT_ARGC_MAX + 3];
  char nk[16];
  if (argc > SCRIPT_ARGC_MAX) {
    *code = broker_fail(b, CELER_EINVAL, "too many script arguments (%d)", argc);
    return NULL;
  }
  snprintf(nk, sizeof nk, "%d", nkeys);
  for (int attempt = 0; attempt < 2; attempt++) {
    /* A reconnect clears the shas, so check after ensure, not before. */
    if ((*code = broker_ensure(b)) != 0) return NULL;
    if (b->scripts_sha[s][0] == '\0' && (*code = load_script(b, s)) != 0) return NULL;
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
    redisReply *r = broker_command(b, code, argc + 3, full, fulllen);
    if (r == NULL) return NULL;
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
      freeReplyObject(r);
      b->scripts_sha[s][0] = '\0';
      continue;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      *code = broker_fail(b, CELER_ESCRIPT, "the %s script failed: %s", script_name(s),
                          r->str);
      freeReplyObject(r);
      return NULL;
    }
    return r;
  }
  *code = broker_fail(b, CELER_ESCRIPT, "the %s script keeps disappearing from the broker",
                      script_name(s));
  return NULL;
}

void broker_reply_free(void *reply) {
  if (reply) freeReplyObject(reply);
}
