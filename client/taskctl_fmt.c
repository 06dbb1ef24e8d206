/* taskctl's text for people: human times, counts with separators, rates,
 * the colour rules, and aligned tables (see taskctl.h). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "client/taskctl.h"

/* "3s ago", "in 2m 5s", "just now". */
void tc_format_relative(int64_t delta_ms, char *buf, size_t size) {
  bool future = delta_ms < 0;
  int64_t s = (future ? -delta_ms : delta_ms) / TC_MS_PER_S;
  char span[48];
  if (s == 0) {
    snprintf(buf, size, "just now");
    return;
  }
  if (s < TC_S_PER_MIN)
    snprintf(span, sizeof span, "%llds", (long long)s);
  else if (s < TC_S_PER_HOUR)
    snprintf(span, sizeof span, "%lldm %llds", (long long)(s / TC_S_PER_MIN),
             (long long)(s % TC_S_PER_MIN));
  else if (s < TC_S_PER_DAY)
    snprintf(span, sizeof span, "%lldh %lldm", (long long)(s / TC_S_PER_HOUR),
             (long long)(s % TC_S_PER_HOUR / TC_S_PER_MIN));
  else
    snprintf(span, sizeof span, "%lldd %lldh", (long long)(s / TC_S_PER_DAY),
             (long long)(s % TC_S_PER_DAY / TC_S_PER_HOUR));
  snprintf(buf, size, future ? "in %s" : "%s ago", span);
}

void tc_format_count(int64_t n, char *buf, size_t size) {
  char digits[TC_COUNT_TEXT_MAX];
  uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
  int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)u);
  char out[TC_COUNT_TEXT_MAX];
  size_t k = 0;
  if (n < 0) out[k++] = '-';
  for (int i = 0; i < len; i++) {
    if (i > 0 && (len - i) % 3 == 0) out[k++] = ',';
    out[k++] = digits[i];
  }
  out[k] = '\0';
  snprintf(buf, size, "%s", out);
}

void tc_format_rate(double per_s, char *buf, size_t size) {
  if (per_s <= 0) {
    snprintf(buf, size, "0");
  } else if (per_s < 10) {
    /* Two decimals, trailing zeros dropped: 0.25, 1.5, 3. */
    int n = snprintf(buf, size, "%.2f", per_s);
    while (n > 0 && (size_t)n < size && buf[n - 1] == '0') buf[--n] = '\0';
    if (n > 0 && (size_t)n < size && buf[n - 1] == '.') buf[--n] = '\0';
  } else if (per_s < 100) {
    snprintf(buf, size, "%.1f", per_s);
  } else {
    tc_format_count((int64_t)(per_s + 0.5), buf, size);
  }
}

const char *tc_tasks_word(int64_t n) { return n == 1 ? "task" : "tasks"; }

bool tc_color(void) {
  static int decided = -1;
  if (decided < 0) {
    const char *no_color = getenv("NO_COLOR"), *term = getenv("TERM");
    decided = isatty(STDOUT_FILENO) && (no_color == NULL || no_color[0] == '\0') &&
              !(term && strcmp(term, "dumb") == 0);
  }
  return decided == 1;
}

/* Rows a table makes room for at first; it doubles as it fills. */
#define TC_TABLE_INITIAL_ROWS 16

void tc_table_init(tc_table *t, const tc_column *cols, size_t ncols) {
  memset(t, 0, sizeof *t);
  t->cols = cols;
  t->ncols = ncols;
}

int tc_table_add(tc_table *t, const char *const *cells, const char *const *colors) {
  if (t->nrows == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : TC_TABLE_INITIAL_ROWS;
    char **c = realloc(t->cells, cap * t->ncols * sizeof *c);
    if (c == NULL) return CELER_ENOMEM;
    t->cells = c;
    const char **k = realloc(t->colors, cap * t->ncols * sizeof *k);
    if (k == NULL) return CELER_ENOMEM;
    t->colors = k;
    t->cap = cap;
  }
  size_t base = t->nrows * t->ncols;
  for (size_t i = 0; i < t->ncols; i++) {
    t->cells[base + i] = strdup(cells[i] ? cells[i] : "");
    t->colors[base + i] = colors ? colors[i] : NULL;
    if (t->cells[base + i] == NULL) {
      for (size_t j = 0; j < i; j++) free(t->cells[base + j]);
      return CELER_ENOMEM;
    }
  }
  t->nrows++;
  return 0;
}

/* Characters text takes on screen: UTF-8 continuation bytes take none. */
static size_t text_width(const char *text) {
  size_t w = 0;
  for (const unsigned char *p = (const unsigned char *)text; *p; p++)
    if ((*p & 0xC0) != 0x80) w++;
  return w;
}

/* Prints one cell padded to width; *used counts the line's columns so far
 * and nothing is printed past max_width (0 = no limit). */
static void print_cell(FILE *out, const char *text, const char *color, size_t width, bool right,
                       bool last, size_t max_width, size_t *used) {
  size_t w = text_width(text), pad = width > w ? width - w : 0;
  size_t room = max_width ? (max_width > *used ? max_width - *used : 0) : SIZE_MAX;
  if (room == 0) return;
  bool paint = color && tc_color();
  size_t lead = right ? pad : 0, trail = right || last ? 0 : pad;
  for (; lead > 0 && room > 0; lead--, room--, (*used)++) fputc(' ', out);
  if (paint) fprintf(out, "\033[%sm", color);
  size_t bytes = 0, shown = 0;
  for (const unsigned char *p = (const unsigned char *)text; *p; p++, bytes++) {
    if ((*p & 0xC0) != 0x80) {
      if (shown == room) break;
      shown++;
    }
  }
  fwrite(text, 1, bytes, out);
  room -= shown;
  *used += shown;
  if (paint) fputs("\033[0m", out);
  for (; trail > 0 && room > 0; trail--, room--, (*used)++) fputc(' ', out);
}

void tc_table_print(const tc_table *t, FILE *out, size_t max_width) {
  size_t width[t->ncols > 0 ? t->ncols : 1];
  for (size_t c = 0; c < t->ncols; c++) {
    width[c] = text_width(t->cols[c].header);
    for (size_t r = 0; r < t->nrows; r++) {
      size_t w = text_width(t->cells[r * t->ncols + c]);
      if (w > width[c]) width[c] = w;
    }
  }
  for (size_t r = 0; r <= t->nrows; r++) {
    size_t used = 0;
    for (size_t c = 0; c < t->ncols; c++) {
      bool header = r == 0;
      const char *text = header ? t->cols[c].header : t->cells[(r - 1) * t->ncols + c];
      const char *color = header ? TC_BOLD : t->colors[(r - 1) * t->ncols + c];
      if (c > 0) print_cell(out, "  ", NULL, 2, false, false, max_width, &used);
      print_cell(out, text, color, width[c], t->cols[c].right, c + 1 == t->ncols, max_width,
                 &used);
    }
    fputc('\n', out);
  }
}

void tc_table_free(tc_table *t) {
  for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
  free(t->cells);
  free(t->colors);
  memset(t, 0, sizeof *t);
}
