/* Signed tasks, worker side (CONTRACT "Signed tasks", docs/security.md):
 * the keyring a worker trusts (keyring.c) and the verification of one
 * stored task against it (verify.c). Private to worker/ and its tests. */
#ifndef CELER_WORKER_VERIFY_H
#define CELER_WORKER_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "celer/envelope.h"

/* A keyring names a few dozen keys and rules; a megabyte is a mistake. */
#define KEYRING_FILE_MAX (1024 * 1024)
/* A PEM public key of RSA-16384 is under 3 KiB; an HMAC secret is bytes
 * of a hash's size. Anything larger is not a key. */
#define KEYRING_KEY_FILE_MAX (64 * 1024)
/* Live keys at once: a few per producer during a rotation. */
#define KEYRING_KEYS_MAX 256
/* Policy rules, and patterns in one rule's tasks or queues. */
#define KEYRING_RULES_MAX 1024
#define KEYRING_PATTERNS_MAX 256
/* kid and iss are names, not documents. */
#define KEYRING_KID_MAX 128
#define KEYRING_ISS_MAX 128
/* RFC 7518 3.2: an HS256 key must be at least as long as the hash (32
 * bytes); a shorter secret is refused on both sides. */
#define KEYRING_HS_SECRET_MIN 32
/* Clock difference tolerated between producers and workers when judging
 * iat, nbf and exp ("clock_skew" in the keyring, seconds). */
#define KEYRING_DEFAULT_SKEW_S 30
#define KEYRING_MAX_SKEW_S 600

typedef enum keyring_alg { KEYRING_HS256, KEYRING_RS256, KEYRING_ES256 } keyring_alg;

typedef struct keyring_key {
  char kid[KEYRING_KID_MAX + 1];
  keyring_alg alg;        /* fixed by the keyring, never by a token */
  unsigned char *key;     /* owned: the secret or the PEM public key */
  size_t key_len;
} keyring_key;

typedef struct keyring_rule {
  char *iss;              /* owned */
  char **tasks;           /* owned: fnmatch patterns of task names */
  size_t ntasks;
  char **queues;          /* owned: fnmatch patterns of queue names */
  size_t nqueues;
} keyring_rule;

typedef struct celer_keyring {
  bool require_signed;    /* refuse unsigned tasks (default true) */
  int64_t skew_s;
  keyring_key *keys;      /* owned */
  size_t nkeys;
  keyring_rule *rules;    /* owned */
  size_t nrules;
} celer_keyring;

/* Reads the keyring file at path (key files relative to its directory).
 * On 0 the caller owns *out (keyring_free). Returns CELER_EIO, CELER_EINVAL
 * or CELER_ENOMEM with a sentence in err that never holds key bytes. */
int keyring_load(const char *path, celer_keyring **out, char *err, size_t errlen);
/* The same from len bytes of JSON (not terminated); key files are found
 * relative to base_dir. */
int keyring_parse(const char *json, size_t len, const char *base_dir, celer_keyring **out,
                  char *err, size_t errlen);
/* Wipes the key bytes and releases kr. NULL is accepted. */
void keyring_free(celer_keyring *kr);
/* The key named kid, borrowed from kr; NULL when there is none. */
const keyring_key *keyring_find(const celer_keyring *kr, const char *kid);
/* "HS256", "RS256" or "ES256". */
const char *keyring_alg_name(keyring_alg alg);
/* Parses one of those names; 0 or CELER_EINVAL. */
int keyring_alg_parse(const char *name, keyring_alg *out);

/* Why a task was refused: the label of celer_tasks_refused_total and the
 * first word of the record's message. */
#define VERIFY_REASONS(X)                              \
  X(VERIFY_TOO_LARGE, "too_large")                     \
  X(VERIFY_UNSIGNED, "unsigned")                       \
  X(VERIFY_MALFORMED, "malformed")                     \
  X(VERIFY_BAD_ENCODING, "bad_encoding")               \
  X(VERIFY_BAD_HEADER, "bad_header")                   \
  X(VERIFY_ALG_NONE, "alg_none")                       \
  X(VERIFY_UNKNOWN_KID, "unknown_kid")                 \
  X(VERIFY_ALG_MISMATCH, "alg_mismatch")               \
  X(VERIFY_BAD_SIGNATURE, "bad_signature")             \
  X(VERIFY_BAD_CLAIMS, "bad_claims")                   \
  X(VERIFY_EXPIRED, "expired")                         \
  X(VERIFY_NOT_YET_VALID, "not_yet_valid")             \
  X(VERIFY_JTI_MISMATCH, "jti_mismatch")               \
  X(VERIFY_UNKNOWN_ISSUER, "unknown_issuer")           \
  X(VERIFY_TASK_NOT_ALLOWED, "task_not_allowed")       \
  X(VERIFY_QUEUE_NOT_ALLOWED, "queue_not_allowed")

#define VERIFY_ENUM_ENTRY(name, label) name,
typedef enum verify_reason {
  VERIFY_OK = 0,
  VERIFY_REASONS(VERIFY_ENUM_ENTRY) VERIFY_REASON_COUNT
} verify_reason;
#undef VERIFY_ENUM_ENTRY

/* The stored form of a signed task that was retried: the worker cannot
 * sign, so it keeps the producer's token and its own bookkeeping beside
 * it: {"signed": "<token>", "attempt": N, "errors": [...]}. */
#define VERIFY_WRAPPER_FIELD "signed"

typedef struct verify_result {
  verify_reason reason;    /* VERIFY_OK, or why the task was refused */
  char message[300];       /* the refusal, "<label>: <sentence>"; never key bytes */
  char *claims;            /* owned: the envelope to decode in place of the
                            * payload (a verified token's claims); NULL =
                            * the payload is an unsigned envelope */
  size_t claims_len;
  char id[CELER_ID_MAX + 1]; /* the task id the token names, "" when unknown */
} verify_result;

/* Judges one stored task (len bytes of payload, not terminated) read
 * from queue at now_s (seconds since epoch) against kr. Returns 0 when the
 * task may go on (out->claims set for a signed one), 1 when refused
 * (out->reason, out->message, and out->id when the token named a valid
 * one), or CELER_ENOMEM. Release out with verify_result_clear. */
int verify_task(const celer_keyring *kr, const char *payload, size_t len, const char *queue,
                size_t max_payload, int64_t now_s, verify_result *out);
void verify_result_clear(verify_result *out);
/* "SignatureRejected" or "PolicyRejected": the record's error type. */
const char *verify_error_type(verify_reason r);
const char *verify_reason_label(verify_reason r);
/* 1 when payload has the shape of a compact JWS (three base64url parts). */
int verify_is_token(const char *payload, size_t len);
/* The id a signed task (a token, or a retried task's wrapper) names, read
 * WITHOUT verifying anything: only for lookups whose answer can do no more
 * than skip work, such as "was it canceled". Returns 1 and fills out, or 0. */
int verify_peek_id(const char *payload, size_t len, char out[CELER_ID_MAX + 1]);

#endif
