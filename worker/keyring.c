/* The keyring: which keys a worker trusts, the algorithm each key is
 * used with, and what each issuer may run (CONTRACT "Signed tasks"). The
 * file is read once at start-up; every mistake in it stops the worker
 * with a sentence naming the field, never the key bytes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "common/common.h"
#include "worker/verify.h"

const char *keyring_alg_name(keyring_alg alg) {
  switch (alg) {
    case KEYRING_HS256: return "HS256";
    case KEYRING_RS256: return "RS256";
    case KEYRING_ES256: return "ES256";
  }
  return "?";
}

int keyring_alg_parse(const char *name, keyring_alg *out) {
  static const keyring_alg all[] = {KEYRING_HS256, KEYRING_RS256, KEYRING_ES256};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    if (strcmp(name, keyring_alg_name(all[i])) == 0) {
      *out = all[i];
      return 0;
    }
  }
  return CELER_EINVAL;
}

/* Reads a whole file of at most max bytes into a fresh buffer with a
 * terminator (*out, *len). 0, CELER_EIO, CELER_EINVAL or CELER_ENOMEM. */
static int slurp(const char *path, size_t max, const char *what, unsigned char **out,
                 size_t *len, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    celer_fmt(err, errlen, "cannot open %s %s: %s", what, path, strerror(errno));
    return CELER_EIO;
  }
  unsigned char *buf = malloc(max + 2);
  if (buf == NULL) {
    close(fd);
    celer_fmt(err, errlen, "out of memory reading %s %s", what, path);
    return CELER_ENOMEM;
  }
  size_t n = 0;
  while (n <= max) {
    ssize_t r = read(fd, buf + n, max + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int saved = errno;
      close(fd);
      explicit_bzero(buf, n);
      free(buf);
      celer_fmt(err, errlen, "cannot read %s %s: %s", what, path, strerror(saved));
      return CELER_EIO;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  if (n > max) {
    explicit_bzero(buf, n);
    free(buf);
    celer_fmt(err, errlen, "%s %s is larger than %zu bytes", what, path, max);
    return CELER_EINVAL;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

void keyring_free(celer_keyring *kr) {
  if (kr == NULL) return;
  for (size_t i = 0; i < kr->nkeys; i++) {
    if (kr->keys[i].key) explicit_bzero(kr->keys[i].key, kr->keys[i].key_len);
    free(kr->keys[i].key);
  }
  free(kr->keys);
  for (size_t i = 0; i < kr->nrules; i++) {
    keyring_rule *r = &kr->rules[i];
    free(r->iss);
    for (size_t k = 0; k < r->ntasks; k++) free(r->tasks[k]);
    for (size_t k = 0; k < r->nqueues; k++) free(r->queues[k]);
    free(r->tasks);
    free(r->queues);
  }
  free(kr->rules);
  free(kr);
}

const keyring_key *keyring_find(const celer_keyring *kr, const char *kid) {
  for (size_t i = 0; i < kr->nkeys; i++)
    if (strcmp(kr->keys[i].kid, kid) == 0) return &kr->keys[i];
  return NULL;
}

/* A string member of obj of 1..max bytes without NUL, or NULL. */
static const char *name_member(const json_t *obj, const char *field, size_t max) {
  const json_t *v = json_object_get(obj, field);
  if (!json_is_string(v)) return NULL;
  size_t n = json_string_length(v);
  const char *s = json_string_value(v);
  if (n == 0 || n > max || strlen(s) != n) return NULL;
  return s;
}

/* path, or base_dir/path when path is relative, into out. */
static int key_path(const char *base_dir, const char *path, char *out, size_t size) {
  if (path[0] == '/' || base_dir == NULL || base_dir[0] == '\0')
    return celer_fmt(out, size, "%s", path);
  return celer_fmt(out, size, "%s/%s", base_dir, path);
}

/* One PEM block of the given kind: its first line names it. */
static int is_pem(const unsigned char *key, size_t len, const char *kind) {
  char head[64];
  celer_fmt(head, sizeof head, "-----BEGIN %s-----", kind);
  size_t h = strlen(head);
  return len >= h && memcmp(key, head, h) == 0;
}

static int load_key(const json_t *item, size_t index, const char *base_dir, keyring_key *k,
                    char *err, size_t errlen) {
  if (!json_is_object(item)) {
    celer_fmt(err, errlen, "keys[%zu]: expected an object", index);
    return CELER_EINVAL;
  }
  const char *kid = name_member(item, "kid", KEYRING_KID_MAX);
  if (kid == NULL) {
    celer_fmt(err, errlen, "keys[%zu].kid: expected a string of 1 to %d bytes", index,
              KEYRING_KID_MAX);
    return CELER_EINVAL;
  }
  snprintf(k->kid, sizeof k->kid, "%s", kid);
  const char *alg = name_member(item, "alg", 16);
  if (alg == NULL || keyring_alg_parse(alg, &k->alg) != 0) {
    celer_fmt(err, errlen, "keys[%zu] (kid %s).alg: expected HS256, RS256 or ES256", index, kid);
    return CELER_EINVAL;
  }
  bool hmac = k->alg == KEYRING_HS256;
  const char *want = hmac ? "secret_file" : "public_key_file";
  const char *other = hmac ? "public_key_file" : "secret_file";
  const char *file = name_member(item, want, PATH_MAX);
  if (file == NULL || json_object_get(item, other) != NULL) {
    celer_fmt(err, errlen, "keys[%zu] (kid %s): an %s key needs \"%s\" (and no \"%s\")", index,
              kid, alg, want, other);
    return CELER_EINVAL;
  }
  char path[PATH_MAX];
  if (key_path(base_dir, file, path, sizeof path) != 0) {
    celer_fmt(err, errlen, "keys[%zu] (kid %s): the key file path is too long", index, kid);
    return CELER_EINVAL;
  }
  char what[KEYRING_KID_MAX + 32];
  celer_fmt(what, sizeof what, "the key file of kid %s,", kid);
  int rc = slurp(path, KEYRING_KEY_FILE_MAX, what, &k->key, &k->key_len, err, errlen);
  if (rc) return rc;
  if (hmac) {
    /* The secret is the file's bytes, one trailing newline ignored. */
    if (k->key_len > 0 && k->key[k->key_len - 1] == '\n') k->key[--k->key_len] = '\0';
    if (k->key_len < KEYRING_HS_SECRET_MIN) {
      celer_fmt(err, errlen, "kid %s: an HS256 secret must be at least %d bytes", kid,
                KEYRING_HS_SECRET_MIN);
      return CELER_EINVAL;
    }
    if (is_pem(k->key, k->key_len, "PUBLIC KEY")) {
      celer_fmt(err, errlen, "kid %s: the HS256 secret file holds a public key", kid);
      return CELER_EINVAL;
    }
  } else if (!is_pem(k->key, k->key_len, "PUBLIC KEY")) {
    /* A worker never needs a private key: refusing one keeps it off
     * machines that only verify. */
    celer_fmt(err, errlen, "kid %s: the public key file must hold one PEM \"PUBLIC KEY\"", kid);
    return CELER_EINVAL;
  }
  return 0;
}

/* A list of 1..KEYRING_PATTERNS_MAX pattern strings into *out. */
static int load_patterns(const json_t *arr, const char *where, char ***out, size_t *n,
                         char *err, size_t errlen) {
  size_t count = json_array_size(arr);
  if (!json_is_array(arr) || count == 0 || count > KEYRING_PATTERNS_MAX) {
    celer_fmt(err, errlen, "%s: expected a list of 1 to %d patterns", where,
              KEYRING_PATTERNS_MAX);
    return CELER_EINVAL;
  }
  *out = calloc(count, sizeof **out);
  if (*out == NULL) return CELER_ENOMEM;
  for (size_t i = 0; i < count; i++) {
    const json_t *v = json_array_get(arr, i);
    const char *s = json_string_value(v);
    if (s == NULL || json_string_length(v) == 0 || strlen(s) != json_string_length(v) ||
        strlen(s) > CELER_TASK_NAME_MAX) {
      celer_fmt(err, errlen, "%s[%zu]: expected a pattern of 1 to %d bytes", where, i,
                CELER_TASK_NAME_MAX);
      return CELER_EINVAL;
    }
    if (((*out)[i] = strdup(s)) == NULL) return CELER_ENOMEM;
    (*n)++;
  }
  return 0;
}

static int load_rule(const json_t *item, size_t index, keyring_rule *r, char *err,
                     size_t errlen) {
  if (!json_is_object(item)) {
    celer_fmt(err, errlen, "policy[%zu]: expected an object", index);
    return CELER_EINVAL;
  }
  const char *iss = name_member(item, "iss", KEYRING_ISS_MAX);
  if (iss == NULL) {
    celer_fmt(err, errlen, "policy[%zu].iss: expected a string of 1 to %d bytes", index,
              KEYRING_ISS_MAX);
    return CELER_EINVAL;
  }
  if ((r->iss = strdup(iss)) == NULL) return CELER_ENOMEM;
  char where[KEYRING_ISS_MAX + 48];
  celer_fmt(where, sizeof where, "policy[%zu] (iss %s).tasks", index, iss);
  int rc = load_patterns(json_object_get(item, "tasks"), where, &r->tasks, &r->ntasks, err,
                         errlen);
  if (rc) return rc;
  celer_fmt(where, sizeof where, "policy[%zu] (iss %s).queues", index, iss);
  return load_patterns(json_object_get(item, "queues"), where, &r->queues, &r->nqueues, err,
                       errlen);
}

static int load_doc(const json_t *doc, const char *base_dir, celer_keyring *kr, char *err,
                    size_t errlen) {
  if (!json_is_object(doc)) {
    celer_fmt(err, errlen, "expected a JSON object");
    return CELER_EINVAL;
  }
  const json_t *req = json_object_get(doc, "require_signed");
  if (req != NULL && !json_is_boolean(req)) {
    celer_fmt(err, errlen, "require_signed: expected true or false");
    return CELER_EINVAL;
  }
  kr->require_signed = req == NULL || json_is_true(req);
  const json_t *skew = json_object_get(doc, "clock_skew");
  kr->skew_s = KEYRING_DEFAULT_SKEW_S;
  if (skew != NULL) {
    if (!json_is_integer(skew) || json_integer_value(skew) < 0 ||
        json_integer_value(skew) > KEYRING_MAX_SKEW_S) {
      celer_fmt(err, errlen, "clock_skew: expected whole seconds from 0 to %d",
                KEYRING_MAX_SKEW_S);
      return CELER_EINVAL;
    }
    kr->skew_s = json_integer_value(skew);
  }
  const json_t *keys = json_object_get(doc, "keys");
  size_t nkeys = json_array_size(keys);
  if (!json_is_array(keys) || nkeys == 0 || nkeys > KEYRING_KEYS_MAX) {
    celer_fmt(err, errlen, "keys: expected a list of 1 to %d keys", KEYRING_KEYS_MAX);
    return CELER_EINVAL;
  }
  if ((kr->keys = calloc(nkeys, sizeof *kr->keys)) == NULL) return CELER_ENOMEM;
  for (size_t i = 0; i < nkeys; i++) {
    int rc = load_key(json_array_get(keys, i), i, base_dir, &kr->keys[i], err, errlen);
    kr->nkeys = i + 1; /* what load_key filled is released with the rest */
    if (rc) return rc;
    for (size_t j = 0; j < i; j++) {
      if (strcmp(kr->keys[j].kid, kr->keys[i].kid) == 0) {
        celer_fmt(err, errlen, "keys[%zu]: kid %s is named twice", i, kr->keys[i].kid);
        return CELER_EINVAL;
      }
    }
  }
  const json_t *policy = json_object_get(doc, "policy");
  size_t nrules = json_array_size(policy);
  if (!json_is_array(policy) || nrules == 0 || nrules > KEYRING_RULES_MAX) {
    celer_fmt(err, errlen, "policy: expected a list of 1 to %d rules", KEYRING_RULES_MAX);
    return CELER_EINVAL;
  }
  if ((kr->rules = calloc(nrules, sizeof *kr->rules)) == NULL) return CELER_ENOMEM;
  for (size_t i = 0; i < nrules; i++) {
    kr->nrules = i + 1;
    int rc = load_rule(json_array_get(policy, i), i, &kr->rules[i], err, errlen);
    if (rc) return rc;
  }
  return 0;
}

int keyring_parse(const char *json, size_t len, const char *base_dir, celer_keyring **out,
                  char *err, size_t errlen) {
  *out = NULL;
  celer_keyring *kr = calloc(1, sizeof *kr);
  if (kr == NULL) {
    celer_fmt(err, errlen, "out of memory loading the keyring");
    return CELER_ENOMEM;
  }
  json_error_t jerr;
  json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  int rc;
  if (doc == NULL) {
    celer_fmt(err, errlen, "not valid JSON: %s (line %d)", jerr.text, jerr.line);
    rc = CELER_EINVAL;
  } else {
    rc = load_doc(doc, base_dir, kr, err, errlen);
    if (rc == CELER_ENOMEM) celer_fmt(err, errlen, "out of memory loading the keyring");
  }
  json_decref(doc);
  if (rc) {
    keyring_free(kr);
    return rc;
  }
  *out = kr;
  return 0;
}

int keyring_load(const char *path, celer_keyring **out, char *err, size_t errlen) {
  *out = NULL;
  unsigned char *text;
  size_t len;
  char why[CELER_ERRSTR_LEN];
  int rc = slurp(path, KEYRING_FILE_MAX, "the keyring", &text, &len, err, errlen);
  if (rc) return rc;
  char dir[PATH_MAX];
  celer_fmt(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == NULL) celer_fmt(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  rc = keyring_parse((const char *)text, len, dir, out, why, sizeof why);
  if (rc) celer_fmt(err, errlen, "keyring %s: %s", path, why);
  free(text);
  return rc;
}
