/* Result records: the JSON object stored at <ns>:{q}:result:<id> (CONTRACT
 * "Results and states"). Field order is fixed so records read the same in
 * redis-cli as in docs/protocol.md.
 *
 * One record is written per task, so this is the worker's hot path: the
 * record is written straight into one buffer instead of being built as a
 * jansson object and dumped (which cost about 40,000 instructions a record,
 * most of a no-op task's CPU). Only the handler's result and the error
 * history, which are already jansson values, go through json_dumpb. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker/broker.h"

/* Room for the fixed fields and six integers; strings are added on top. */
#define RECORD_BASE_BYTES 256

/* A growing output buffer; `failed` sticks after the first allocation
 * failure so callers check once at the end. */
typedef struct out_buf {
  char *s;
  size_t len, cap;
  bool failed;
} out_buf;

static bool reserve(out_buf *b, size_t more) {
  if (b->failed) return false;
  if (b->len + more + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : RECORD_BASE_BYTES;
  while (cap < b->len + more + 1) cap *= 2;
  char *s = realloc(b->s, cap);
  if (s == NULL) {
    b->failed = true;
    return false;
  }
  b->s = s;
  b->cap = cap;
  return true;
}

static void put(out_buf *b, const char *s, size_t n) {
  if (!reserve(b, n)) return;
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 when
 * it is not one: overlong forms, surrogates and code points past U+10FFFF
 * are invalid, as they are to jansson. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

static bool valid_utf8(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t k = utf8_seq(p + i, n - i);
    if (k == 0) return false;
    i += k;
  }
  return true;
}

/* Appends s as a JSON string. Strings in a record may come from hostile
 * input or from a handler's message: when s is not valid UTF-8, each of
 * its non-ASCII bytes is stored as '?' rather than losing the record. */
static void put_string(out_buf *b, const char *s) {
  if (s == NULL) {
    PUT_LIT(b, "null");
    return;
  }
  size_t n = strlen(s);
  bool ascii_only = !valid_utf8(s, n);
  /* Worst case: every byte becomes \u00XX. */
  if (!reserve(b, n * 6 + 2)) return;
  char *o = b->s + b->len;
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
    } else if (c < 0x20) {
      *o++ = '\\';
      switch (c) {
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default: {
          static const char hex[] = "0123456789abcdef";
          *o++ = 'u';
          *o++ = '0';
          *o++ = '0';
          *o++ = hex[c >> 4];
          *o++ = hex[c & 0xF];
        }
      }
    } else if (c >= 0x80 && ascii_only) {
      *o++ = '?';
    } else {
      *o++ = (char)c;
    }
  }
  *o++ = '"';
  *o = '\0';
  b->len = (size_t)(o - b->s);
}

/* Decimal digits by hand: snprintf was a tenth of a record's cost. */
static void put_int(out_buf *b, int64_t v) {
  char num[24];
  char *end = num + sizeof num, *p = end;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (v < 0) *--p = '-';
  put(b, p, (size_t)(end - p));
}

/* A timestamp: ms since epoch, or null when unknown. */
static void put_time(out_buf *b, int64_t ms) {
  if (ms > 0) put_int(b, ms);
  else PUT_LIT(b, "null");
}

/* Appends a jansson value (borrowed; NULL = null) in compact form. */
static void put_json(out_buf *b, const json_t *v) {
  if (v == NULL || json_is_null(v)) {
    PUT_LIT(b, "null");
    return;
  }
  const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
  size_t need = json_dumpb(v, NULL, 0, flags);
  if (need == 0 || !reserve(b, need)) {
    b->failed = true;
    return;
  }
  b->len += json_dumpb(v, b->s + b->len, need, flags);
  b->s[b->len] = '\0';
}

int broker_record_encode(const broker_outcome *o, char **out, size_t *len) {
  out_buf b = {NULL, 0, 0, false};
  reserve(&b, RECORD_BASE_BYTES);
  PUT_LIT(&b, "{\"id\":");
  put_string(&b, o->id);
  PUT_LIT(&b, ",\"task\":");
  put_string(&b, o->task);
  PUT_LIT(&b, ",\"queue\":");
  put_string(&b, o->queue);
  PUT_LIT(&b, ",\"state\":");
  put_string(&b, celer_state_name(o->state));
  PUT_LIT(&b, ",\"attempt\":");
  put_int(&b, o->attempt);
  PUT_LIT(&b, ",\"redeliveries\":");
  put_int(&b, o->redeliveries);
  if (o->state == CELER_SUCCEEDED) {
    PUT_LIT(&b, ",\"result\":");
    put_json(&b, o->result);
  } else {
    PUT_LIT(&b, ",\"error\":{\"type\":");
    put_string(&b, o->error_type ? o->error_type : "TaskError");
    PUT_LIT(&b, ",\"message\":");
    put_string(&b, o->error_message ? o->error_message : "");
    PUT_LIT(&b, "}");
  }
  if (o->errors) {
    PUT_LIT(&b, ",\"errors\":");
    put_json(&b, o->errors);
  }
  if (o->state == CELER_RETRYING) {
    PUT_LIT(&b, ",\"next_run_at\":");
    put_time(&b, o->next_run_at);
  }
  PUT_LIT(&b, ",\"enqueued_at\":");
  put_time(&b, o->enqueued_at);
  PUT_LIT(&b, ",\"started_at\":");
  put_time(&b, o->started_at);
  PUT_LIT(&b, ",\"finished_at\":");
  put_time(&b, o->finished_at);
  PUT_LIT(&b, ",\"worker\":");
  put_string(&b, o->worker);
  if (o->entry_id) {
    PUT_LIT(&b, ",\"entry\":");
    put_string(&b, o->entry_id);
  }
  PUT_LIT(&b, "}");
  if (b.failed) {
    free(b.s);
    return CELER_ENOMEM;
  }
  *out = b.s;
  if (len) *len = b.len;
  return 0;
}
