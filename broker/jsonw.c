/* Writing JSON text straight into a buffer, for the two documents made on
 * every task's path (the envelope a producer sends and the record a worker
 * stores), and the UTF-8 rules both the writers and the envelope decoder
 * apply. Building a jansson object only to dump it cost about 20,000
 * instructions a document; the handler's own values (args, kwargs, meta,
 * result), which are jansson values already, still go through json_dumpb. */
#include <stdlib.h>
#include <string.h>
#include "broker/internal.h"

/* A buffer starts with room for a small document; strings grow it. */
#define JBUF_FIRST_BYTES 256
#define UNICODE_MAX 0x10FFFF
#define SURROGATE_FIRST 0xD800
#define SURROGATE_LAST 0xDFFF

size_t broker_utf8_decode(const unsigned char *s, size_t len, uint32_t *out) {
  unsigned char c = s[0];
  size_t n;
  uint32_t cp, min;
  if (c < 0x80) {
    *out = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2, cp = c & 0x1Fu, min = 0x80;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, cp = c & 0x0Fu, min = 0x800;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, cp = c & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (len < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0u) != 0x80u) return 0;
    cp = (cp << 6) | (s[i] & 0x3Fu);
  }
  if (cp < min || cp > UNICODE_MAX || (cp >= SURROGATE_FIRST && cp <= SURROGATE_LAST)) return 0;
  *out = cp;
  return n;
}

bool broker_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    uint32_t cp;
    size_t n = broker_utf8_decode(p + i, len - i, &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/* Makes room for more bytes plus a terminator; false (and b->failed) when
 * memory runs out. */
static bool reserve(broker_jbuf *b, size_t more) {
  if (b->failed) return false;
  if (b->len + more + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : JBUF_FIRST_BYTES;
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

void broker_jbuf_put(broker_jbuf *b, const char *s, size_t n) {
  if (!reserve(b, n)) return;
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void broker_jbuf_string(broker_jbuf *b, const char *s) {
  if (s == NULL) {
    broker_jbuf_put(b, "null", 4);
    return;
  }
  size_t n = strlen(s);
  bool ascii_only = !broker_utf8_valid(s, n);
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

void broker_jbuf_int(broker_jbuf *b, int64_t v) {
  char num[24];
  char *end = num + sizeof num, *p = end;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (v < 0) *--p = '-';
  broker_jbuf_put(b, p, (size_t)(end - p));
}

void broker_jbuf_json(broker_jbuf *b, const json_t *v) {
  if (v == NULL || json_is_null(v)) {
    broker_jbuf_put(b, "null", 4);
    return;
  }
  /* Empty args and kwargs are the common case: no call into jansson. */
  if ((json_is_array(v) && json_array_size(v) == 0) ||
      (json_is_object(v) && json_object_size(v) == 0)) {
    broker_jbuf_put(b, json_is_array(v) ? "[]" : "{}", 2);
    return;
  }
  /* One pass when the value fits the room left; json_dumpb tells the size
   * it needs, and a second pass writes it when it did not fit. */
  const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY;
  if (!reserve(b, JBUF_FIRST_BYTES)) return;
  size_t room = b->cap - b->len - 1;
  size_t need = json_dumpb(v, b->s + b->len, room, flags);
  if (need > room) {
    if (!reserve(b, need)) return;
    need = json_dumpb(v, b->s + b->len, need, flags);
  }
  if (need == 0) {
    b->failed = true;
    return;
  }
  b->len += need;
  b->s[b->len] = '\0';
}

char *broker_jbuf_finish(broker_jbuf *b, size_t *len) {
  if (b->failed || b->s == NULL) {
    free(b->s);
    b->s = NULL;
    return NULL;
  }
  if (len) *len = b->len;
  char *s = b->s;
  b->s = NULL;
  return s;
}
