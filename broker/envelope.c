/* The envelope codec.
 *
 * An envelope arrives from any producer, in any language, so decoding is a
 * border crossing: everything is checked before the worker trusts a byte.
 * The order of checks is size, NUL bytes, JSON syntax (jansson, duplicate
 * keys refused), shape (one object), nesting depth, then each known field
 * in turn. The first broken rule wins and is reported as a field name plus
 * one sentence that says what the rule is and what was found; untrusted
 * text is never copied into a message without being made printable.
 *
 * Encoding runs the same rules over the struct, so what we write is always
 * something we would accept, and emits compact JSON with a fixed field
 * order (stable output makes logs and tests easy to compare). */
#include "celer/envelope.h"
#include "broker/internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The envelope object itself is nesting level 1, its members' values 2. */
#define ENVELOPE_LEVEL 1
#define MEMBER_LEVEL 2
/* Smallest timeout_ms a producer may send; 0 would mean "no time at all". */
#define TIMEOUT_MIN_MS 1
/* Room for one described character, e.g. "the control character U+001F". */
#define CHAR_DESC_LEN 64
/* Room for jansson's error text once made printable (it is at most
 * JSON_ERROR_TEXT_LENGTH bytes; escaping can grow it). */
#define PARSE_TEXT_LEN 200
/* Unicode facts used when describing and checking UTF-8. */
#define ASCII_MAX 0x7F
#define ASCII_PRINTABLE_FIRST 0x20
#define ASCII_DEL 0x7F
/* Size of celer_envelope_error.field, for building a field name first. */
#define ERROR_FIELD_LEN sizeof(((celer_envelope_error *)0)->field)
/* Bytes an escape such as \xFF takes in a made-printable string. */
#define HEX_ESCAPE_LEN 4

/* ---- small helpers ---- */

static void set_error(celer_envelope_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(celer_envelope_error *err, const char *field, const char *fmt, ...) {
  if (!err) {
    return;
  }
  snprintf(err->field, sizeof err->field, "%s", field ? field : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
}

static void reset_error(celer_envelope_error *err) {
  if (err) {
    err->field[0] = '\0';
    err->message[0] = '\0';
  }
}

/* Copies len bytes of untrusted text into dst, keeping printable ASCII and
 * writing every other byte as \xNN; stops early (never mid-escape) when dst
 * is full. dst is always terminated. */
static void make_printable(char *dst, size_t size, const char *src, size_t len) {
  size_t o = 0;
  if (size == 0) {
    return;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)src[i];
    if (c >= ASCII_PRINTABLE_FIRST && c < ASCII_DEL) {
      if (o + 1 >= size) {
        break;
      }
      dst[o++] = (char)c;
    } else {
      if (o + HEX_ESCAPE_LEN >= size) {
        break;
      }
      snprintf(dst + o, size - o, "\\x%02X", c);
      o += HEX_ESCAPE_LEN;
    }
  }
  dst[o] = '\0';
}

/* Names the character at s[at] for a message without echoing anything
 * unprintable: "'{'", "a space", "the control character U+0001",
 * "the non-ASCII character U+00E9", "the byte 0xFF (not UTF-8)". */
static void describe_char(const char *s, size_t len, size_t at, char *buf, size_t size) {
  const unsigned char *p = (const unsigned char *)s;
  unsigned char c = p[at];
  uint32_t cp;
  if (c == ' ') {
    snprintf(buf, size, "a space");
  } else if (c == '\'') {
    snprintf(buf, size, "an apostrophe");
  } else if (c < ASCII_PRINTABLE_FIRST || c == ASCII_DEL) {
    snprintf(buf, size, "the control character U+%04X", (unsigned)c);
  } else if (c <= ASCII_MAX) {
    snprintf(buf, size, "'%c'", c);
  } else if (broker_utf8_decode(p + at, len - at, &cp) > 0) {
    snprintf(buf, size, "the non-ASCII character U+%04" PRIX32, cp);
  } else {
    snprintf(buf, size, "the byte 0x%02X (not UTF-8)", (unsigned)c);
  }
}

static const char *type_name(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "an object";
  case JSON_ARRAY:
    return "an array";
  case JSON_STRING:
    return "a string";
  case JSON_INTEGER:
    return "an integer";
  case JSON_REAL:
    return "a real";
  case JSON_TRUE:
    return "true";
  case JSON_FALSE:
    return "false";
  case JSON_NULL:
    return "null";
  }
  return "an unknown value";
}

/* ---- names: id, task, queue ---- */

typedef struct name_rule {
  const char *field;
  size_t max_len;
  const char *punctuation; /* allowed besides ASCII letters and digits */
  const char *charset;     /* the rule as messages spell it */
} name_rule;

static const name_rule ID_RULE = {"id", CELER_ID_MAX, "_-", "[A-Za-z0-9_-]"};
static const name_rule TASK_RULE = {"task", CELER_TASK_NAME_MAX, "_.:-", "[A-Za-z0-9_.:-]"};
static const name_rule QUEUE_RULE = {"queue", CELER_QUEUE_NAME_MAX, "_.-", "[A-Za-z0-9_.-]"};

/* Locale-independent on purpose: isalnum() would let a locale widen the
 * contract's charset. */
static bool name_char_ok(const name_rule *rule, char c) {
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
    return true;
  }
  return c != '\0' && strchr(rule->punctuation, c) != NULL;
}

/* Index of the first character the rule refuses, or len when none. */
static size_t name_first_bad(const name_rule *rule, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (!name_char_ok(rule, s[i])) {
      return i;
    }
  }
  return len;
}

static bool name_valid(const name_rule *rule, const char *s) {
  if (!s) {
    return false;
  }
  size_t len = strlen(s);
  return len >= 1 && len <= rule->max_len && name_first_bad(rule, s, len) == len;
}

/* Checks s (len bytes) against rule; on failure reports under `field`
 * with `what` prefixed to the sentence ("" normally). */
static int check_name(const name_rule *rule, const char *field, const char *what,
                      const char *s, size_t len, celer_envelope_error *err) {
  if (len == 0) {
    set_error(err, field, "%smust be 1 to %zu characters from %s, got an empty string", what,
              rule->max_len, rule->charset);
    return CELER_EINVAL;
  }
  size_t bad = name_first_bad(rule, s, len);
  if (bad < len) {
    char desc[CHAR_DESC_LEN];
    describe_char(s, len, bad, desc, sizeof desc);
    set_error(err, field,
              "%scontains %s (byte offset %zu) which is not allowed; use 1 to %zu characters "
              "from %s",
              what, desc, bad, rule->max_len, rule->charset);
    return CELER_EINVAL;
  }
  if (len > rule->max_len) {
    set_error(err, field, "%smust be 1 to %zu characters from %s, got %zu characters", what,
              rule->max_len, rule->charset, len);
    return CELER_EINVAL;
  }
  return CELER_OK;
}

CELER_API int celer_valid_id(const char *s) { return name_valid(&ID_RULE, s) ? 1 : 0; }

CELER_API int celer_valid_task_name(const char *s) { return name_valid(&TASK_RULE, s) ? 1 : 0; }

CELER_API int celer_valid_queue_name(const char *s) {
  return name_valid(&QUEUE_RULE, s) ? 1 : 0;
}

/* ---- integers: times, durations, counts ---- */

typedef struct int_rule {
  const char *field;
  int64_t min;
  int64_t max;
  bool millis;          /* a time or duration in milliseconds */
  const char *max_name; /* the maximum as messages name it */
} int_rule;

static const int_rule ETA_RULE = {"eta", 0, CELER_MAX_JSON_INT, true, "2^53 - 1"};
static const int_rule EXPIRES_RULE = {"expires", 0, CELER_MAX_JSON_INT, true, "2^53 - 1"};
static const int_rule MAX_RETRIES_RULE = {"max_retries", 0, CELER_MAX_RETRIES_LIMIT, false,
                                          "CELER_MAX_RETRIES_LIMIT"};
static const int_rule TIMEOUT_RULE = {"timeout_ms", TIMEOUT_MIN_MS, CELER_MAX_JSON_INT, true,
                                      "2^53 - 1"};
static const int_rule ENQUEUED_AT_RULE = {"enqueued_at", 0, CELER_MAX_JSON_INT, true,
                                          "2^53 - 1"};
static const int_rule ATTEMPT_RULE = {"attempt", 0, CELER_MAX_JSON_INT, false, "2^53 - 1"};

static const int_rule *const INT_RULES[] = {&ETA_RULE,     &EXPIRES_RULE,     &MAX_RETRIES_RULE,
                                            &TIMEOUT_RULE, &ENQUEUED_AT_RULE, &ATTEMPT_RULE};

static const int_rule *int_rule_for(const char *field) {
  for (size_t i = 0; i < sizeof INT_RULES / sizeof INT_RULES[0]; i++) {
    if (strcmp(INT_RULES[i]->field, field) == 0) {
      return INT_RULES[i];
    }
  }
  return NULL;
}

static int check_int_range(const int_rule *rule, int64_t v, celer_envelope_error *err) {
  if (v < rule->min) {
    if (rule->min == 0) {
      set_error(err, rule->field, "must not be negative, got %" PRId64, v);
    } else {
      set_error(err, rule->field, "must be at least %" PRId64 " when present, got %" PRId64,
                rule->min, v);
    }
    return CELER_EINVAL;
  }
  if (v > rule->max) {
    set_error(err, rule->field, "must be at most %" PRId64 " (%s), got %" PRId64, rule->max,
              rule->max_name, v);
    return CELER_EINVAL;
  }
  return CELER_OK;
}

/* ---- nesting depth ---- */

/* True when v, sitting at nesting level `level`, is or holds an array or
 * object deeper than CELER_MAX_JSON_DEPTH. The walk stops one level past
 * the limit, so its stack use is bounded by the limit, not by the input
 * (and a cycle in a caller-built value is reported, not followed). */
static bool too_deep(json_t *v, int level) {
  if (!json_is_object(v) && !json_is_array(v)) {
    return false;
  }
  if (level > CELER_MAX_JSON_DEPTH) {
    return true;
  }
  if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (too_deep(json_array_get(v, i), level + 1)) {
        return true;
      }
    }
    return false;
  }
  const char *key;
  json_t *child;
  json_object_foreach(v, key, child) {
    if (too_deep(child, level + 1)) {
      return true;
    }
  }
  return false;
}

static int report_too_deep(const char *field, celer_envelope_error *err) {
  set_error(err, field,
            "nests arrays and objects deeper than %d levels (CELER_MAX_JSON_DEPTH, the "
            "envelope counting as level %d)",
            CELER_MAX_JSON_DEPTH, ENVELOPE_LEVEL);
  return CELER_EINVAL;
}

/* Every member of the envelope, known or not, obeys the depth limit. */
static int check_member_depths(json_t *root, celer_envelope_error *err) {
  const char *key;
  json_t *value;
  json_object_foreach(root, key, value) {
    if (too_deep(value, MEMBER_LEVEL)) {
      char field[ERROR_FIELD_LEN];
      make_printable(field, sizeof field, key, strlen(key));
      return report_too_deep(field, err);
    }
  }
  return CELER_OK;
}

/* ---- naming the field behind a parser error ---- */

typedef enum scan_state {
  SCAN_OUTSIDE,    /* not inside the envelope object */
  SCAN_EXPECT_KEY, /* inside it, before a member's key */
  SCAN_IN_KEY,     /* inside a member's key string */
  SCAN_IN_MEMBER   /* after a member's key, through its value */
} scan_state;

/* When jansson gives up, it knows the byte offset but not the field. This
 * light scan of the raw text (strings and brackets only; it validates
 * nothing) finds which top-level member covers offset `at` and writes its
 * key, made printable, into field; "" when `at` lies outside every member
 * (before the object, after it, or within a key). */
static void locate_member(const char *json, size_t len, size_t at, char *field, size_t size) {
  size_t depth = 0;
  size_t key_start = 0;
  size_t key_len = 0;
  bool in_string = false;
  bool escaped = false;
  scan_state state = SCAN_OUTSIDE;
  field[0] = '\0';
  if (at > len) {
    at = len;
  }
  for (size_t i = 0; i < at; i++) {
    char c = json[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
        if (state == SCAN_IN_KEY) {
          key_len = i - key_start;
          state = SCAN_IN_MEMBER;
        }
      }
      continue;
    }
    switch (c) {
    case '"':
      in_string = true;
      if (depth == 1 && state == SCAN_EXPECT_KEY) {
        state = SCAN_IN_KEY;
        key_start = i + 1;
      }
      break;
    case '{':
    case '[':
      depth++;
      if (depth == 1) {
        state = c == '{' ? SCAN_EXPECT_KEY : SCAN_OUTSIDE;
      }
      break;
    case '}':
    case ']':
      if (depth > 0) {
        depth--;
      }
      if (depth == 0) {
        state = SCAN_OUTSIDE;
      }
      break;
    case ',':
      if (depth == 1 && state != SCAN_OUTSIDE) {
        state = SCAN_EXPECT_KEY;
      }
      break;
    default:
      break;
    }
  }
  if (state == SCAN_IN_MEMBER) {
    make_printable(field, size, json + key_start, key_len);
  }
}

static int report_parse_error(const char *json, size_t len, const json_error_t *jerr,
                              celer_envelope_error *err) {
  enum json_error_code code = json_error_code(jerr);
  char field[ERROR_FIELD_LEN];
  char text[PARSE_TEXT_LEN];
  if (code == json_error_out_of_memory) {
    set_error(err, "", "out of memory while parsing the envelope");
    return CELER_ENOMEM;
  }
  locate_member(json, len, jerr->position > 0 ? (size_t)jerr->position : 0, field,
                sizeof field);
  if (code == json_error_stack_overflow) {
    return report_too_deep(field, err);
  }
  make_printable(text, sizeof text, jerr->text, strnlen(jerr->text, sizeof jerr->text));
  if (code == json_error_numeric_overflow) {
    const int_rule *rule = int_rule_for(field);
    bool negative = strstr(jerr->text, "negative") != NULL;
    if (rule && negative) {
      set_error(err, field, "must not be negative, got a number below the 64-bit range");
    } else if (rule) {
      set_error(err, field, "must be at most %" PRId64 " (%s), got a number past the 64-bit range",
                rule->max, rule->max_name);
    } else {
      set_error(err, field, "holds an integer outside the 64-bit range: %s (line %d, column %d)",
                text, jerr->line, jerr->column);
    }
    return CELER_EINVAL;
  }
  if (code == json_error_duplicate_key) {
    set_error(err, field, "%s (line %d, column %d); each key may appear only once", text,
              jerr->line, jerr->column);
    return CELER_EINVAL;
  }
  set_error(err, field, "not valid JSON: %s (line %d, column %d)", text, jerr->line,
            jerr->column);
  return CELER_EINVAL;
}

/* ---- decoding the members ---- */

/* Copies the name `rule->field` into dst (at least max_len + 1 bytes).
 * Absent or null: "is required", or fallback when one is given. */
static int take_name(json_t *root, const name_rule *rule, const char *fallback, char *dst,
                     celer_envelope_error *err) {
  json_t *v = json_object_get(root, rule->field);
  if (!v || json_is_null(v)) {
    if (!fallback) {
      set_error(err, rule->field, "is required: a string of 1 to %zu characters from %s",
                rule->max_len, rule->charset);
      return CELER_EINVAL;
    }
    int rc = check_name(rule, rule->field, "none given, and the default queue name ", fallback,
                        strlen(fallback), err);
    if (rc != CELER_OK) {
      return rc;
    }
    memcpy(dst, fallback, strlen(fallback) + 1);
    return CELER_OK;
  }
  if (!json_is_string(v)) {
    set_error(err, rule->field, "must be a string, got %s", type_name(v));
    return CELER_EINVAL;
  }
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  int rc = check_name(rule, rule->field, "", s, len, err);
  if (rc != CELER_OK) {
    return rc;
  }
  memcpy(dst, s, len);
  dst[len] = '\0';
  return CELER_OK;
}

/* Takes a new reference to an array or object member into *out. Absent or
 * null leaves *out NULL. */
static int take_container(json_t *root, const char *field, json_type type, json_t **out,
                          celer_envelope_error *err) {
  json_t *v = json_object_get(root, field);
  if (!v || json_is_null(v)) {
    return CELER_OK;
  }
  if (json_typeof(v) != type) {
    set_error(err, field, "must be %s, got %s", type == JSON_ARRAY ? "an array" : "an object",
              type_name(v));
    return CELER_EINVAL;
  }
  *out = json_incref(v);
  return CELER_OK;
}

/* Reads an optional integer member; absent or null leaves *out alone. */
static int take_int(json_t *root, const int_rule *rule, int64_t *out,
                    celer_envelope_error *err) {
  json_t *v = json_object_get(root, rule->field);
  if (!v || json_is_null(v)) {
    return CELER_OK;
  }
  if (!json_is_integer(v)) {
    set_error(err, rule->field, "expected an integer%s, got %s",
              rule->millis ? " number of milliseconds" : "", type_name(v));
    return CELER_EINVAL;
  }
  int64_t n = (int64_t)json_integer_value(v);
  int rc = check_int_range(rule, n, err);
  if (rc == CELER_OK) {
    *out = n;
  }
  return rc;
}

static int take_origin(json_t *root, char **out, celer_envelope_error *err) {
  json_t *v = json_object_get(root, "origin");
  if (!v || json_is_null(v)) {
    return CELER_OK;
  }
  if (!json_is_string(v)) {
    set_error(err, "origin", "must be a string, got %s", type_name(v));
    return CELER_EINVAL;
  }
  size_t len = json_string_length(v);
  if (len > CELER_ORIGIN_MAX) {
    set_error(err, "origin", "must be at most %d bytes, got %zu", CELER_ORIGIN_MAX, len);
    return CELER_EINVAL;
  }
  char *copy = malloc(len + 1);
  if (!copy) {
    set_error(err, "origin", "out of memory");
    return CELER_ENOMEM;
  }
  memcpy(copy, json_string_value(v), len + 1);
  *out = copy;
  return CELER_OK;
}

static int decode_members(json_t *root, const char *default_queue, celer_envelope *env,
                          celer_envelope_error *err) {
  int64_t max_retries = -1;
  int rc;
  if ((rc = check_member_depths(root, err)) != CELER_OK ||
      (rc = take_name(root, &ID_RULE, NULL, env->id, err)) != CELER_OK ||
      (rc = take_name(root, &TASK_RULE, NULL, env->task, err)) != CELER_OK ||
      (rc = take_name(root, &QUEUE_RULE, default_queue, env->queue, err)) != CELER_OK ||
      (rc = take_container(root, "args", JSON_ARRAY, &env->args, err)) != CELER_OK ||
      (rc = take_container(root, "kwargs", JSON_OBJECT, &env->kwargs, err)) != CELER_OK ||
      (rc = take_container(root, "meta", JSON_OBJECT, &env->meta, err)) != CELER_OK ||
      (rc = take_int(root, &ETA_RULE, &env->eta, err)) != CELER_OK ||
      (rc = take_int(root, &EXPIRES_RULE, &env->expires, err)) != CELER_OK ||
      (rc = take_int(root, &MAX_RETRIES_RULE, &max_retries, err)) != CELER_OK ||
      (rc = take_int(root, &TIMEOUT_RULE, &env->timeout_ms, err)) != CELER_OK ||
      (rc = take_int(root, &ENQUEUED_AT_RULE, &env->enqueued_at, err)) != CELER_OK ||
      (rc = take_int(root, &ATTEMPT_RULE, &env->attempt, err)) != CELER_OK ||
      (rc = take_origin(root, &env->origin, err)) != CELER_OK) {
    return rc;
  }
  env->max_retries = (int)max_retries;
  if (!env->args) {
    env->args = json_array();
  }
  if (!env->kwargs) {
    env->kwargs = json_object();
  }
  if (!env->args || !env->kwargs) {
    set_error(err, "", "out of memory");
    return CELER_ENOMEM;
  }
  return CELER_OK;
}

/* ---- public: lifecycle and decoding ---- */

CELER_API void celer_envelope_init(celer_envelope *env) {
  if (!env) {
    return;
  }
  memset(env, 0, sizeof *env);
  env->max_retries = -1;
}

CELER_API void celer_envelope_clear(celer_envelope *env) {
  if (!env) {
    return;
  }
  json_decref(env->args);
  json_decref(env->kwargs);
  json_decref(env->meta);
  free(env->origin);
  celer_envelope_init(env);
}

CELER_API int celer_envelope_decode(const char *json, size_t len, size_t max_payload,
                                    const char *default_queue, celer_envelope *env,
                                    celer_envelope_error *err) {
  reset_error(err);
  if (!env) {
    set_error(err, "", "no envelope to decode into");
    return CELER_EINVAL;
  }
  celer_envelope_init(env);
  if (max_payload == 0) {
    max_payload = CELER_DEFAULT_MAX_PAYLOAD;
  }
  if (len > max_payload) {
    set_error(err, "", "payload is %zu bytes, over the limit of %zu bytes (CELER_MAX_PAYLOAD)",
              len, max_payload);
    return CELER_ETOOBIG;
  }
  if (len == 0 || !json) {
    set_error(err, "", "payload is empty; expected a JSON object");
    return CELER_EINVAL;
  }
  const char *nul = memchr(json, '\0', len);
  if (nul) {
    char field[ERROR_FIELD_LEN];
    size_t at = (size_t)(nul - json);
    locate_member(json, len, at, field, sizeof field);
    set_error(err, field,
              "contains a NUL byte at offset %zu; JSON text must not hold raw NUL bytes", at);
    return CELER_EINVAL;
  }
  json_error_t jerr;
  json_t *root = json_loadb(json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    return report_parse_error(json, len, &jerr, err);
  }
  int rc;
  if (!json_is_object(root)) {
    set_error(err, "", "expected a JSON object, got %s", type_name(root));
    rc = CELER_EINVAL;
  } else {
    if (!default_queue) {
      default_queue = CELER_DEFAULT_QUEUE;
    }
    rc = decode_members(root, default_queue, env, err);
  }
  json_decref(root);
  if (rc != CELER_OK) {
    celer_envelope_clear(env);
  }
  return rc;
}

/* ---- encoding ---- */

/* A name stored in a fixed char array must be terminated inside it. */
static int check_stored_name(const name_rule *rule, const char *s, size_t cap,
                             celer_envelope_error *err) {
  if (!memchr(s, '\0', cap)) {
    set_error(err, rule->field, "is not NUL-terminated within its %zu bytes", cap);
    return CELER_EINVAL;
  }
  return check_name(rule, rule->field, "", s, strlen(s), err);
}

/* An optional integer of the struct: 0 means absent, else the JSON rule. */
static int check_optional_int(const int_rule *rule, int64_t v, celer_envelope_error *err) {
  return v == 0 ? CELER_OK : check_int_range(rule, v, err);
}

/* A json_t member of the struct: NULL means absent (args and kwargs are
 * then written as [] and {}), anything else must have the right type. */
static int check_container(const char *field, const json_t *v, json_type type,
                           celer_envelope_error *err) {
  if (!v) {
    return CELER_OK;
  }
  if (json_typeof(v) != type) {
    set_error(err, field, "must be %s, got %s", type == JSON_ARRAY ? "an array" : "an object",
              type_name(v));
    return CELER_EINVAL;
  }
  if (too_deep((json_t *)v, MEMBER_LEVEL)) {
    return report_too_deep(field, err);
  }
  return CELER_OK;
}

static int check_struct(const celer_envelope *env, celer_envelope_error *err) {
  int rc;
  if ((rc = check_stored_name(&ID_RULE, env->id, sizeof env->id, err)) != CELER_OK ||
      (rc = check_stored_name(&TASK_RULE, env->task, sizeof env->task, err)) != CELER_OK ||
      (rc = check_stored_name(&QUEUE_RULE, env->queue, sizeof env->queue, err)) != CELER_OK ||
      (rc = check_container("args", env->args, JSON_ARRAY, err)) != CELER_OK ||
      (rc = check_container("kwargs", env->kwargs, JSON_OBJECT, err)) != CELER_OK ||
      (rc = check_container("meta", env->meta, JSON_OBJECT, err)) != CELER_OK ||
      (rc = check_optional_int(&ETA_RULE, env->eta, err)) != CELER_OK ||
      (rc = check_optional_int(&EXPIRES_RULE, env->expires, err)) != CELER_OK ||
      (rc = check_optional_int(&TIMEOUT_RULE, env->timeout_ms, err)) != CELER_OK ||
      (rc = check_optional_int(&ENQUEUED_AT_RULE, env->enqueued_at, err)) != CELER_OK ||
      (rc = check_optional_int(&ATTEMPT_RULE, env->attempt, err)) != CELER_OK) {
    return rc;
  }
  if (env->max_retries != -1 &&
      (rc = check_int_range(&MAX_RETRIES_RULE, env->max_retries, err)) != CELER_OK) {
    return rc;
  }
  if (env->origin) {
    size_t len = strlen(env->origin);
    if (len > CELER_ORIGIN_MAX) {
      set_error(err, "origin", "must be at most %d bytes, got %zu", CELER_ORIGIN_MAX, len);
      return CELER_EINVAL;
    }
    if (!broker_utf8_valid(env->origin, len)) {
      set_error(err, "origin", "must be valid UTF-8");
      return CELER_EINVAL;
    }
  }
  return CELER_OK;
}

/* Appends ,"key":v when present. */
static void put_optional_int(broker_jbuf *b, const char *key, int64_t v, bool present) {
  if (!present) return;
  BROKER_JBUF_LIT(b, ",\"");
  broker_jbuf_put(b, key, strlen(key));
  BROKER_JBUF_LIT(b, "\":");
  broker_jbuf_int(b, v);
}

/* Writes the envelope in the contract's field order (check_struct has
 * passed: every string is valid UTF-8 and within its limits). */
static char *write_envelope(const celer_envelope *env, size_t *len) {
  broker_jbuf b = {NULL, 0, 0, false};
  BROKER_JBUF_LIT(&b, "{\"id\":");
  broker_jbuf_string(&b, env->id);
  BROKER_JBUF_LIT(&b, ",\"task\":");
  broker_jbuf_string(&b, env->task);
  BROKER_JBUF_LIT(&b, ",\"queue\":");
  broker_jbuf_string(&b, env->queue);
  BROKER_JBUF_LIT(&b, ",\"args\":");
  if (env->args) broker_jbuf_json(&b, env->args);
  else BROKER_JBUF_LIT(&b, "[]");
  BROKER_JBUF_LIT(&b, ",\"kwargs\":");
  if (env->kwargs) broker_jbuf_json(&b, env->kwargs);
  else BROKER_JBUF_LIT(&b, "{}");
  put_optional_int(&b, "eta", env->eta, env->eta != 0);
  put_optional_int(&b, "expires", env->expires, env->expires != 0);
  put_optional_int(&b, "max_retries", env->max_retries, env->max_retries != -1);
  put_optional_int(&b, "timeout_ms", env->timeout_ms, env->timeout_ms != 0);
  put_optional_int(&b, "enqueued_at", env->enqueued_at, env->enqueued_at != 0);
  if (env->origin) {
    BROKER_JBUF_LIT(&b, ",\"origin\":");
    broker_jbuf_string(&b, env->origin);
  }
  if (env->meta) {
    BROKER_JBUF_LIT(&b, ",\"meta\":");
    broker_jbuf_json(&b, env->meta);
  }
  put_optional_int(&b, "attempt", env->attempt, env->attempt > 0);
  BROKER_JBUF_LIT(&b, "}");
  return broker_jbuf_finish(&b, len);
}

CELER_API int celer_envelope_encode(const celer_envelope *env, size_t max_payload, char **out,
                                    size_t *out_len, celer_envelope_error *err) {
  reset_error(err);
  if (out) {
    *out = NULL;
  }
  if (out_len) {
    *out_len = 0;
  }
  if (!env || !out) {
    set_error(err, "", "no envelope to encode or nowhere to put it");
    return CELER_EINVAL;
  }
  if (max_payload == 0) {
    max_payload = CELER_DEFAULT_MAX_PAYLOAD;
  }
  int rc = check_struct(env, err);
  if (rc != CELER_OK) {
    return rc;
  }
  size_t len = 0;
  char *text = write_envelope(env, &len);
  if (!text) {
    set_error(err, "", "out of memory while encoding the envelope");
    return CELER_ENOMEM;
  }
  if (len > max_payload) {
    free(text);
    set_error(err, "",
              "encoded envelope is %zu bytes, over the limit of %zu bytes (CELER_MAX_PAYLOAD)",
              len, max_payload);
    return CELER_ETOOBIG;
  }
  *out = text;
  if (out_len) {
    *out_len = len;
  }
  return CELER_OK;
}

CELER_API void celer_envelope_error_format(const celer_envelope_error *err, char *buf,
                                           size_t size) {
  if (!buf || size == 0) {
    return;
  }
  if (!err) {
    buf[0] = '\0';
    return;
  }
  if (err->field[0] != '\0') {
    snprintf(buf, size, "%s: %s", err->field, err->message);
  } else {
    snprintf(buf, size, "%s", err->message);
  }
}
