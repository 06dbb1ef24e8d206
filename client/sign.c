/* The producer's signer: turns an encoded envelope into a compact JWS
 * whose claims are the envelope plus iss, iat, jti (= the task id) and an
 * optional exp. libjwt does the signature arithmetic; which algorithm,
 * key and claims go in is decided here. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jwt.h>
#include "celer/envelope.h"
#include "client/sign.h"
#include "common/common.h"

struct client_signer {
  jwt_alg_t alg;
  unsigned char *key; /* owned: the secret or the PEM private key */
  size_t key_len;
  char kid[SIGN_KID_MAX + 1];
  char iss[SIGN_ISS_MAX + 1];
  int64_t ttl_s;      /* 0 = no exp claim */
};

void client_signer_free(client_signer *s) {
  if (s == NULL) return;
  if (s->key) explicit_bzero(s->key, s->key_len);
  free(s->key);
  explicit_bzero(s, sizeof *s);
  free(s);
}

static const char *env_value(const char *name) {
  const char *v = getenv(name);
  return v && v[0] ? v : NULL;
}

/* Reads the key file into s->key (at most SIGN_KEY_FILE_MAX bytes). */
static int read_key(client_signer *s, const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    celer_fmt(err, errlen, "CELER_SIGNING_KEY_FILE: cannot open %s: %s", path, strerror(errno));
    return CELER_EIO;
  }
  s->key = malloc(SIGN_KEY_FILE_MAX + 2);
  if (s->key == NULL) {
    close(fd);
    return CELER_ENOMEM;
  }
  size_t n = 0;
  int rc = 0;
  while (n <= SIGN_KEY_FILE_MAX) {
    ssize_t r = read(fd, s->key + n, SIGN_KEY_FILE_MAX + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      celer_fmt(err, errlen, "CELER_SIGNING_KEY_FILE: cannot read %s: %s", path,
                strerror(errno));
      rc = CELER_EIO;
      break;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  s->key_len = n;
  if (rc == 0 && n > SIGN_KEY_FILE_MAX) {
    celer_fmt(err, errlen, "CELER_SIGNING_KEY_FILE: %s is larger than %d bytes", path,
              SIGN_KEY_FILE_MAX);
    rc = CELER_EINVAL;
  }
  if (rc == 0) s->key[n] = '\0';
  return rc;
}

static int check_key(client_signer *s, char *err, size_t errlen) {
  static const char pem[] = "-----BEGIN ";
  int is_pem = s->key_len >= sizeof pem - 1 && memcmp(s->key, pem, sizeof pem - 1) == 0;
  if (s->alg == JWT_ALG_HS256) {
    /* The secret is the file's bytes, one trailing newline ignored. */
    if (s->key_len > 0 && s->key[s->key_len - 1] == '\n') s->key[--s->key_len] = '\0';
    if (s->key_len < SIGN_HS_SECRET_MIN) {
      celer_fmt(err, errlen, "CELER_SIGNING_KEY_FILE: an HS256 secret must be at least %d bytes",
                SIGN_HS_SECRET_MIN);
      return CELER_EINVAL;
    }
    if (is_pem) {
      celer_fmt(err, errlen, "CELER_SIGNING_KEY_FILE holds a PEM key, not an HS256 secret");
      return CELER_EINVAL;
    }
  } else if (!is_pem || strstr((const char *)s->key, "PRIVATE KEY-----") == NULL) {
    celer_fmt(err, errlen, "CELER_SIGNING_KEY_FILE: %s needs a PEM private key",
              jwt_alg_str(s->alg));
    return CELER_EINVAL;
  }
  return 0;
}

static int copy_name(char *dst, size_t size, const char *var, const char *value, char *err,
                     size_t errlen) {
  if (value == NULL) {
    celer_fmt(err, errlen, "%s is required when CELER_SIGNING_KEY_FILE is set", var);
    return CELER_EINVAL;
  }
  if (strlen(value) >= size) {
    celer_fmt(err, errlen, "%s is longer than %zu bytes", var, size - 1);
    return CELER_EINVAL;
  }
  memcpy(dst, value, strlen(value) + 1);
  return 0;
}

static int setup(client_signer *s, const char *path, char *err, size_t errlen) {
  const char *alg = env_value("CELER_SIGNING_ALG");
  if (alg == NULL) alg = "HS256";
  if (strcmp(alg, "HS256") == 0) s->alg = JWT_ALG_HS256;
  else if (strcmp(alg, "RS256") == 0) s->alg = JWT_ALG_RS256;
  else if (strcmp(alg, "ES256") == 0) s->alg = JWT_ALG_ES256;
  else {
    celer_fmt(err, errlen, "CELER_SIGNING_ALG must be HS256, RS256 or ES256");
    return CELER_EINVAL;
  }
  int rc = copy_name(s->kid, sizeof s->kid, "CELER_SIGNING_KID", env_value("CELER_SIGNING_KID"),
                     err, errlen);
  if (rc == 0)
    rc = copy_name(s->iss, sizeof s->iss, "CELER_ISSUER", env_value("CELER_ISSUER"), err, errlen);
  const char *ttl = env_value("CELER_SIGNING_TTL");
  if (rc == 0 && ttl != NULL &&
      (celer_parse_i64(ttl, &s->ttl_s) != 0 || s->ttl_s < 1 || s->ttl_s > SIGN_TTL_MAX_S)) {
    celer_fmt(err, errlen, "CELER_SIGNING_TTL must be whole seconds from 1 to %d",
              SIGN_TTL_MAX_S);
    rc = CELER_EINVAL;
  }
  if (rc == 0) rc = read_key(s, path, err, errlen);
  if (rc == 0) rc = check_key(s, err, errlen);
  return rc;
}

int client_signer_from_env(client_signer **out, char *err, size_t errlen) {
  *out = NULL;
  const char *path = env_value("CELER_SIGNING_KEY_FILE");
  if (path == NULL) {
    static const char *const others[] = {"CELER_SIGNING_ALG", "CELER_SIGNING_KID",
                                         "CELER_ISSUER", "CELER_SIGNING_TTL"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
      if (env_value(others[i])) {
        celer_fmt(err, errlen, "%s is set but CELER_SIGNING_KEY_FILE is not", others[i]);
        return CELER_EINVAL;
      }
    }
    return 0;
  }
  client_signer *s = calloc(1, sizeof *s);
  if (s == NULL) return CELER_ENOMEM;
  int rc = setup(s, path, err, errlen);
  if (rc) {
    if (rc == CELER_ENOMEM) celer_fmt(err, errlen, "out of memory reading the signing key");
    client_signer_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

int client_sign(const client_signer *s, const char *json, size_t len, const char *id,
                int64_t eta_ms, size_t max_payload, char **token, size_t *token_len,
                char *err, size_t errlen) {
  (void)len; /* json is terminated; libjwt reads it as a string */
  jwt_t *jwt = NULL;
  if (jwt_new(&jwt) != 0) return CELER_ENOMEM;
  int64_t now_s = celer_now_ms() / 1000;
  int64_t from = eta_ms / 1000 > now_s ? eta_ms / 1000 : now_s;
  int rc = jwt_add_grants_json(jwt, json);
  if (rc == 0) rc = jwt_add_grant(jwt, "iss", s->iss);
  if (rc == 0) rc = jwt_add_grant_int(jwt, "iat", (long)now_s);
  if (rc == 0 && s->ttl_s > 0) rc = jwt_add_grant_int(jwt, "exp", (long)(from + s->ttl_s));
  if (rc == 0) rc = jwt_add_grant(jwt, "jti", id);
  if (rc == 0) rc = jwt_add_header(jwt, "kid", s->kid);
  if (rc == 0) rc = jwt_set_alg(jwt, s->alg, s->key, (int)s->key_len);
  char *out = NULL;
  if (rc == 0 && (out = jwt_encode_str(jwt)) == NULL) rc = errno == ENOMEM ? ENOMEM : EINVAL;
  jwt_free(jwt);
  if (rc == ENOMEM) return CELER_ENOMEM;
  if (rc != 0) {
    /* libjwt says nothing more precise; the key is the usual suspect. */
    celer_fmt(err, errlen, "signing failed: the %s key of kid %s is not usable",
              jwt_alg_str(s->alg), s->kid);
    return CELER_EINVAL;
  }
  size_t n = strlen(out);
  if (max_payload == 0) max_payload = CELER_DEFAULT_MAX_PAYLOAD;
  if (n > max_payload) {
    free(out);
    celer_fmt(err, errlen, "the signed task is %zu bytes, over the %zu-byte payload limit", n,
              max_payload);
    return CELER_ETOOBIG;
  }
  *token = out;
  *token_len = n;
  return 0;
}
