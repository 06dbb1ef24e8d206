/* Signing envelopes as compact JWS (CONTRACT "Signed tasks"): the
 * producer side of docs/security.md. Private to the project: libceler's
 * enqueue and the worker's follow-ups (worker/task_api.c) use it. */
#ifndef CELER_CLIENT_SIGN_H
#define CELER_CLIENT_SIGN_H

#include <stddef.h>
#include <stdint.h>

/* A signing key file: an HMAC secret or one PEM private key. */
#define SIGN_KEY_FILE_MAX (64 * 1024)
/* kid and iss are names, the same bounds the worker's keyring applies. */
#define SIGN_KID_MAX 128
#define SIGN_ISS_MAX 128
/* RFC 7518 3.2: an HS256 secret at least as long as the hash. */
#define SIGN_HS_SECRET_MIN 32
/* CELER_SIGNING_TTL (seconds after the later of now and the eta) beyond
 * a year is no expiry at all. */
#define SIGN_TTL_MAX_S (366 * 24 * 3600)

typedef struct client_signer client_signer;

/* Reads the signing variables (CELER_SIGNING_KEY_FILE, CELER_SIGNING_ALG,
 * CELER_SIGNING_KID, CELER_ISSUER and the optional CELER_SIGNING_TTL).
 * Returns 0 with *out NULL when signing is off (no key file named), 0 with
 * *out set (caller frees with client_signer_free), or CELER_EINVAL /
 * CELER_EIO / CELER_ENOMEM with a sentence in err that never holds the
 * key. */
int client_signer_from_env(client_signer **out, char *err, size_t errlen);
/* Wipes the key and releases s. NULL is accepted. */
void client_signer_free(client_signer *s);

/* Signs the envelope json (len bytes) of task id, due at eta_ms (0 = now):
 * the claims are the envelope's fields plus iss, iat, jti = id and exp
 * when a TTL is set. On 0 the caller frees *token (terminated, *token_len
 * bytes). Returns CELER_EINVAL (err says why), CELER_ETOOBIG (over
 * max_payload) or CELER_ENOMEM. */
int client_sign(const client_signer *s, const char *json, size_t len, const char *id,
                int64_t eta_ms, size_t max_payload, char **token, size_t *token_len,
                char *err, size_t errlen);

#endif
