/* Verifying one stored task against the keyring. libjwt 1.10 picks the
 * algorithm from the token's own header and skips the check when no key
 * is given, so it is only trusted with the signature arithmetic: this file
 * decides everything else itself, before and after it.
 *
 *   size over the payload limit             -> too_large (libjwt never sees it)
 *   not a token (plain JSON envelope)       -> unsigned when required, else on
 *   not three base64url parts               -> malformed / bad_encoding
 *   header: not JSON, no kid, alg "none"    -> bad_header / alg_none
 *   kid not in the keyring                  -> unknown_kid
 *   header alg != the keyring's for the kid -> alg_mismatch
 *   signature (libjwt, the kid's key always passed, alg checked again)
 *                                           -> bad_signature
 *   claims: iss, iat, exp, nbf (our clock, with the keyring's skew)
 *                                           -> bad_claims / expired / not_yet_valid
 *   jti != id                               -> jti_mismatch
 *   policy: iss, task, queue                -> unknown_issuer / task_not_allowed /
 *                                              queue_not_allowed */
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <jwt.h>
#include "common/common.h"
#include "worker/verify.h"

#define VERIFY_LABEL_ENTRY(name, label) [name] = label,
static const char *const reason_labels[VERIFY_REASON_COUNT] = {
    [VERIFY_OK] = "ok", VERIFY_REASONS(VERIFY_LABEL_ENTRY)};
#undef VERIFY_LABEL_ENTRY

/* A JOSE header is a few short fields; anything larger is not ours. */
#define VERIFY_HEADER_MAX 1024
/* Longest alg, kid or iss quoted back in a refusal. */
#define VERIFY_ECHO_MAX 40

/* A name from a token as quoted in a refusal: at most VERIFY_ECHO_MAX
 * bytes, anything but printable ASCII shown as '?', so that a hostile
 * token cannot write lines into the log. */
typedef struct echo_buf {
  char s[VERIFY_ECHO_MAX + 1];
} echo_buf;

static const char *echo(echo_buf *b, const char *s) {
  size_t n = 0;
  for (; s[n] != '\0' && n < VERIFY_ECHO_MAX; n++)
    b->s[n] = s[n] >= 0x20 && s[n] < 0x7f ? s[n] : '?';
  b->s[n] = '\0';
  return b->s;
}

const char *verify_reason_label(verify_reason r) {
  return r < VERIFY_REASON_COUNT ? reason_labels[r] : "?";
}

const char *verify_error_type(verify_reason r) {
  switch (r) {
    case VERIFY_UNKNOWN_ISSUER:
    case VERIFY_TASK_NOT_ALLOWED:
    case VERIFY_QUEUE_NOT_ALLOWED:
      return "PolicyRejected";
    default:
      return "SignatureRejected";
  }
}

void verify_result_clear(verify_result *out) {
  free(out->claims);
  memset(out, 0, sizeof *out);
}

static int refuse(verify_result *out, verify_reason r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(verify_result *out, verify_reason r, const char *fmt, ...) {
  out->reason = r;
  int n = snprintf(out->message, sizeof out->message, "%s: ", verify_reason_label(r));
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && (size_t)n < sizeof out->message)
    vsnprintf(out->message + n, sizeof out->message - (size_t)n, fmt, ap);
  va_end(ap);
  free(out->claims);
  out->claims = NULL;
  out->claims_len = 0;
  return 1;
}

/* Value of one base64url character, or -1. */
static int b64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

/* Decodes unpadded base64url (RFC 7515 2) into a fresh terminated buffer.
 * Returns 0, CELER_EINVAL (not base64url) or CELER_ENOMEM. */
static int b64url_decode(const char *s, size_t len, char **out, size_t *out_len) {
  if (len % 4 == 1) return CELER_EINVAL;
  char *buf = malloc(len / 4 * 3 + 3);
  if (buf == NULL) return CELER_ENOMEM;
  size_t n = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64url_value((unsigned char)s[i]);
    if (v < 0) {
      free(buf);
      return CELER_EINVAL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf[n++] = (char)((acc >> bits) & 0xff);
    }
  }
  buf[n] = '\0';
  *out = buf;
  *out_len = n;
  return 0;
}

/* The three parts of a compact JWS: offsets of the two dots. */
typedef struct token_parts {
  size_t dot1, dot2;
} token_parts;

/* 0 when payload is three base64url parts, header and claims not empty
 * (an empty signature is left for the header check: alg "none" says so);
 * else 1 with the refusal in out. */
static int split_token(const char *p, size_t len, token_parts *t, verify_result *out) {
  size_t dots = 0;
  for (size_t i = 0; i < len; i++) {
    if (p[i] == '.') {
      if (dots == 0) t->dot1 = i;
      else if (dots == 1) t->dot2 = i;
      dots++;
    } else if (b64url_value((unsigned char)p[i]) < 0) {
      return refuse(out, VERIFY_BAD_ENCODING,
                    "the token holds a byte outside base64url at offset %zu", i);
    }
  }
  if (dots != 2)
    return refuse(out, VERIFY_MALFORMED,
                  "a compact JWS has three dot-separated parts; this token has %zu", dots + 1);
  if (t->dot1 == 0 || t->dot2 == t->dot1 + 1)
    return refuse(out, VERIFY_MALFORMED, "the header or the claims part of the token is empty");
  return 0;
}

int verify_is_token(const char *payload, size_t len) {
  verify_result scratch;
  memset(&scratch, 0, sizeof scratch);
  token_parts t;
  return payload != NULL && len > 0 && split_token(payload, len, &t, &scratch) == 0;
}

/* Decodes one base64url part holding a JSON object; NULL when it is not. */
static json_t *decode_part(const char *s, size_t len, int *oom);

/* Peeking is for the cancellation check of a batch; a payload larger than
 * any the worker accepts is not worth a parse. */
#define VERIFY_PEEK_MAX (16 * 1024 * 1024)

int verify_peek_id(const char *payload, size_t len, char out[CELER_ID_MAX + 1]) {
  if (payload == NULL || len == 0 || len > VERIFY_PEEK_MAX) return 0;
  json_t *wrapper = NULL;
  if (payload[0] == '{') {
    wrapper = json_loadb(payload, len, 0, NULL);
    const json_t *inner = json_object_get(wrapper, VERIFY_WRAPPER_FIELD);
    payload = json_string_value(inner);
    len = json_string_length(inner);
  }
  verify_result scratch;
  memset(&scratch, 0, sizeof scratch);
  token_parts t;
  int ok = 0, oom = 0;
  if (payload != NULL && split_token(payload, len, &t, &scratch) == 0) {
    json_t *claims = decode_part(payload + t.dot1 + 1, t.dot2 - t.dot1 - 1, &oom);
    const char *id = json_string_value(json_object_get(claims, "id"));
    ok = id && strlen(id) <= CELER_ID_MAX && celer_valid_id(id);
    if (ok) strcpy(out, id);
    json_decref(claims);
  }
  json_decref(wrapper);
  return ok;
}

static json_t *decode_part(const char *s, size_t len, int *oom) {
  char *text = NULL;
  size_t n = 0;
  int rc = b64url_decode(s, len, &text, &n);
  if (rc == CELER_ENOMEM) *oom = 1;
  if (rc) return NULL;
  json_t *doc = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
  free(text);
  if (doc && !json_is_object(doc)) {
    json_decref(doc);
    doc = NULL;
  }
  return doc;
}

/* libjwt's name for our algorithm. */
static jwt_alg_t jwt_alg_of(keyring_alg a) {
  switch (a) {
    case KEYRING_HS256: return JWT_ALG_HS256;
    case KEYRING_RS256: return JWT_ALG_RS256;
    case KEYRING_ES256: return JWT_ALG_ES256;
  }
  return JWT_ALG_INVAL;
}

/* Checks the header and the signature of the terminated token. */
static int check_signature(const celer_keyring *kr, const char *token, const token_parts *t,
                           verify_result *out) {
  if (t->dot1 > VERIFY_HEADER_MAX)
    return refuse(out, VERIFY_BAD_HEADER, "the header is longer than %d bytes",
                  VERIFY_HEADER_MAX);
  int oom = 0;
  json_t *head = decode_part(token, t->dot1, &oom);
  if (oom) return CELER_ENOMEM;
  if (head == NULL)
    return refuse(out, VERIFY_BAD_HEADER, "the header is not a base64url JSON object");
  const char *alg = json_string_value(json_object_get(head, "alg"));
  const char *kid = json_string_value(json_object_get(head, "kid"));
  int rc = 0;
  echo_buf e1;
  const keyring_key *key = kid ? keyring_find(kr, kid) : NULL;
  if (alg == NULL) {
    rc = refuse(out, VERIFY_BAD_HEADER, "the header names no alg");
  } else if (strcasecmp(alg, "none") == 0) {
    rc = refuse(out, VERIFY_ALG_NONE, "alg \"none\" (an unsigned token) is never accepted");
  } else if (kid == NULL || kid[0] == '\0') {
    rc = refuse(out, VERIFY_BAD_HEADER, "the header names no kid");
  } else if (key == NULL) {
    rc = refuse(out, VERIFY_UNKNOWN_KID, "kid \"%s\" is not in this worker's keyring",
                echo(&e1, kid));
  } else if (strcmp(alg, keyring_alg_name(key->alg)) != 0) {
    rc = refuse(out, VERIFY_ALG_MISMATCH,
                "the token says alg \"%s\" but the keyring fixes %s for kid \"%s\"",
                echo(&e1, alg), keyring_alg_name(key->alg), key->kid);
  }
  json_decref(head);
  if (rc || key == NULL) return rc;
  /* The key is always passed: libjwt never gets the chance to skip the
   * check, and its algorithm is compared with ours once more after. */
  jwt_t *jwt = NULL;
  int jrc = jwt_decode(&jwt, token, key->key, (int)key->key_len);
  if (jrc == ENOMEM) return CELER_ENOMEM;
  if (jrc != 0 || jwt == NULL)
    rc = refuse(out, VERIFY_BAD_SIGNATURE, "the signature does not verify with kid \"%s\" (%s)",
                key->kid, keyring_alg_name(key->alg));
  else if (jwt_get_alg(jwt) != jwt_alg_of(key->alg))
    rc = refuse(out, VERIFY_ALG_MISMATCH, "the verifier used another algorithm than %s",
                keyring_alg_name(key->alg));
  jwt_free(jwt);
  return rc;
}

/* An integer claim in seconds: 1 present and valid, 0 absent, -1 invalid. */
static int time_claim(const json_t *claims, const char *name, int64_t *out) {
  const json_t *v = json_object_get(claims, name);
  if (v == NULL) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < 0 ||
      json_integer_value(v) > CELER_MAX_JSON_INT / 1000)
    return -1;
  *out = json_integer_value(v);
  return 1;
}

static int check_times(const celer_keyring *kr, const json_t *claims, int64_t now,
                       verify_result *out) {
  int64_t iat = 0, exp = 0, nbf = 0;
  int has_iat = time_claim(claims, "iat", &iat);
  int has_exp = time_claim(claims, "exp", &exp);
  int has_nbf = time_claim(claims, "nbf", &nbf);
  if (has_iat < 0 || has_exp < 0 || has_nbf < 0)
    return refuse(out, VERIFY_BAD_CLAIMS, "iat, exp and nbf must be whole seconds since epoch");
  if (has_iat == 0) return refuse(out, VERIFY_BAD_CLAIMS, "the token has no iat");
  int64_t skew = kr->skew_s;
  if (has_exp && now > exp + skew)
    return refuse(out, VERIFY_EXPIRED, "the token expired at %lld, %lld s ago (clock skew %lld s)",
                  (long long)exp, (long long)(now - exp), (long long)skew);
  if (has_nbf && now + skew < nbf)
    return refuse(out, VERIFY_NOT_YET_VALID,
                  "the token is not valid before %lld, %lld s from now (clock skew %lld s)",
                  (long long)nbf, (long long)(nbf - now), (long long)skew);
  if (now + skew < iat)
    return refuse(out, VERIFY_NOT_YET_VALID,
                  "the token was issued at %lld, %lld s in the future (clock skew %lld s)",
                  (long long)iat, (long long)(iat - now), (long long)skew);
  return 0;
}

static int matches_any(char *const *patterns, size_t n, const char *s) {
  for (size_t i = 0; i < n; i++)
    if (fnmatch(patterns[i], s, 0) == 0) return 1;
  return 0;
}

static int check_policy(const celer_keyring *kr, const char *iss, const char *task,
                        const char *queue, verify_result *out) {
  int known = 0, task_ok = 0;
  echo_buf e;
  for (size_t i = 0; i < kr->nrules; i++) {
    const keyring_rule *r = &kr->rules[i];
    if (strcmp(r->iss, iss) != 0) continue;
    known = 1;
    if (!matches_any(r->tasks, r->ntasks, task)) continue;
    task_ok = 1;
    if (matches_any(r->queues, r->nqueues, queue)) return 0;
  }
  if (!known)
    return refuse(out, VERIFY_UNKNOWN_ISSUER, "issuer \"%s\" has no rule in the policy",
                  echo(&e, iss));
  if (!task_ok)
    return refuse(out, VERIFY_TASK_NOT_ALLOWED, "issuer \"%s\" may not run task \"%s\"",
                  echo(&e, iss), task);
  return refuse(out, VERIFY_QUEUE_NOT_ALLOWED,
                "issuer \"%s\" may not run task \"%s\" on queue \"%s\"", echo(&e, iss), task,
                queue);
}

/* The verified claims: times, jti, policy; on 0 out->claims holds the
 * envelope to decode, with the wrapper's bookkeeping (when given) laid
 * over it. */
static int check_claims(const celer_keyring *kr, const char *token, const token_parts *t,
                        const json_t *wrapper, const char *queue, int64_t now,
                        verify_result *out) {
  int oom = 0;
  json_t *claims = decode_part(token + t->dot1 + 1, t->dot2 - t->dot1 - 1, &oom);
  if (oom) return CELER_ENOMEM;
  if (claims == NULL)
    return refuse(out, VERIFY_BAD_CLAIMS, "the payload is not a base64url JSON object");
  const char *id = json_string_value(json_object_get(claims, "id"));
  if (id && strlen(id) <= CELER_ID_MAX && celer_valid_id(id))
    snprintf(out->id, sizeof out->id, "%s", id);
  const char *jti = json_string_value(json_object_get(claims, "jti"));
  const char *iss = json_string_value(json_object_get(claims, "iss"));
  const char *task = json_string_value(json_object_get(claims, "task"));
  int rc = check_times(kr, claims, now, out);
  if (rc == 0 && (iss == NULL || iss[0] == '\0'))
    rc = refuse(out, VERIFY_BAD_CLAIMS, "the token names no issuer (iss)");
  if (rc == 0 && (id == NULL || jti == NULL || strcmp(jti, id) != 0))
    rc = refuse(out, VERIFY_JTI_MISMATCH, "jti must equal the envelope's id");
  if (rc == 0 && (task == NULL || !celer_valid_task_name(task)))
    rc = refuse(out, VERIFY_BAD_CLAIMS, "the envelope names no valid task");
  if (rc == 0) rc = check_policy(kr, iss, task, queue, out);
  if (rc == 0 && wrapper != NULL) {
    /* Retries are counted by the worker, outside what the producer signed. */
    static const char *const kept[] = {"attempt", "errors"};
    for (size_t i = 0; rc == 0 && i < sizeof kept / sizeof kept[0]; i++) {
      json_t *v = json_object_get(wrapper, kept[i]);
      if (v != NULL && json_object_set(claims, kept[i], v) != 0) rc = CELER_ENOMEM;
    }
  }
  if (rc == 0) {
    out->claims = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (out->claims == NULL) rc = CELER_ENOMEM;
    else out->claims_len = strlen(out->claims);
  }
  json_decref(claims);
  return rc;
}

/* Verifies a token (len bytes, not terminated). */
static int verify_token(const celer_keyring *kr, const char *p, size_t len,
                        const json_t *wrapper, const char *queue, int64_t now,
                        verify_result *out) {
  token_parts t;
  if (split_token(p, len, &t, out)) return 1;
  char *token = malloc(len + 1);
  if (token == NULL) return CELER_ENOMEM;
  memcpy(token, p, len);
  token[len] = '\0';
  int rc = check_signature(kr, token, &t, out);
  if (rc == 0) rc = check_claims(kr, token, &t, wrapper, queue, now, out);
  free(token);
  return rc;
}

int verify_task(const celer_keyring *kr, const char *payload, size_t len, const char *queue,
                size_t max_payload, int64_t now_s, verify_result *out) {
  memset(out, 0, sizeof *out);
  if (max_payload == 0) max_payload = CELER_DEFAULT_MAX_PAYLOAD;
  if (len > max_payload)
    return refuse(out, VERIFY_TOO_LARGE, "%zu bytes is over the %zu-byte payload limit", len,
                  max_payload);
  size_t i = 0;
  while (i < len && (payload[i] == ' ' || payload[i] == '\t' || payload[i] == '\r' ||
                     payload[i] == '\n'))
    i++;
  if (i == len || payload[i] != '{') return verify_token(kr, payload, len, NULL, queue, now_s, out);
  /* A JSON object: an unsigned envelope, or a retried signed task. */
  json_t *doc = json_loadb(payload, len, 0, NULL);
  const json_t *inner = json_object_get(doc, VERIFY_WRAPPER_FIELD);
  int rc;
  if (json_is_string(inner)) {
    rc = verify_token(kr, json_string_value(inner), json_string_length(inner), doc, queue,
                      now_s, out);
  } else if (kr->require_signed) {
    rc = refuse(out, VERIFY_UNSIGNED, "this worker runs signed tasks only");
  } else {
    rc = 0;
  }
  json_decref(doc);
  return rc;
}
