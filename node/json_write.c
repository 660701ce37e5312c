/* SPDX-License-Identifier: MIT */
/* The JSON writer (node/json.h). */
#include "node/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#define DEFAULT_MAX (16u << 20)

void kp_jw_init(kp_jw_t *w, size_t max) {
  memset(w, 0, sizeof(*w));
  w->max = max ? max : DEFAULT_MAX;
}

void kp_jw_free(kp_jw_t *w) {
  kp_free(w->buf);
  size_t max = w->max;
  kp_jw_init(w, max);
}

void kp_jw_reset(kp_jw_t *w) {
  w->len = 0;
  if (w->buf) w->buf[0] = '\0';
  w->failed = false;
  w->after_key = false;
  w->depth = 0;
}

char *kp_jw_release(kp_jw_t *w, size_t *len) {
  char *buf = w->buf;
  *len = w->len;
  size_t max = w->max;
  kp_jw_init(w, max);
  return buf;
}

static void put(kp_jw_t *w, const char *s, size_t n) {
  if (w->failed) return;
  if (n > w->max || w->len + n > w->max) {
    w->failed = true;
    return;
  }
  if (w->len + n + 1 > w->cap) {
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n + 1) cap *= 2;
    char *grown = kp_realloc(w->buf, cap);
    if (!grown) {
      w->failed = true;
      return;
    }
    w->buf = grown;
    w->cap = cap;
  }
  memcpy(w->buf + w->len, s, n);
  w->len += n;
  w->buf[w->len] = '\0';
}

/* The comma before a value or key, unless it is the first in its container
 * or the value of the key just written. */
static void sep(kp_jw_t *w) {
  if (w->after_key) {
    w->after_key = false;
    return;
  }
  if (!w->depth) return;
  if (!w->first[w->depth - 1]) put(w, ",", 1);
  w->first[w->depth - 1] = 0;
}

static void begin(kp_jw_t *w, const char *c) {
  sep(w);
  put(w, c, 1);
  if (w->depth == KP_JW_MAX_DEPTH) {
    w->failed = true;
    return;
  }
  w->first[w->depth++] = 1;
}

static void end(kp_jw_t *w, const char *c) {
  if (w->depth) w->depth--;
  put(w, c, 1);
}

void kp_jw_obj(kp_jw_t *w) {
  begin(w, "{");
}
void kp_jw_obj_end(kp_jw_t *w) {
  end(w, "}");
}
void kp_jw_arr(kp_jw_t *w) {
  begin(w, "[");
}
void kp_jw_arr_end(kp_jw_t *w) {
  end(w, "]");
}

size_t kp_json_utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, min = 0x10000;
  else
    return 0;
  if (len > n) return 0;
  unsigned cp = c & (0x3f >> (len - 1));
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

static void str_body(kp_jw_t *w, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  put(w, "\"", 1);
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      put(w, esc, 2);
      i++;
    } else if (c < 0x20) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      put(w, esc, 6);
      i++;
    } else {
      size_t len = kp_json_utf8_len(p + i, n - i);
      if (len)
        put(w, s + i, len);
      else
        put(w, "\\ufffd", 6);
      i += len ? len : 1;
    }
  }
  put(w, "\"", 1);
}

void kp_jw_key(kp_jw_t *w, const char *key) {
  sep(w);
  str_body(w, key, strlen(key));
  put(w, ":", 1);
  w->after_key = true;
}

void kp_jw_strn(kp_jw_t *w, const char *s, size_t n) {
  sep(w);
  str_body(w, s, n);
}

void kp_jw_str(kp_jw_t *w, const char *s) {
  if (!s) {
    kp_jw_null(w);
    return;
  }
  kp_jw_strn(w, s, strlen(s));
}

static void scalar(kp_jw_t *w, const char *text) {
  sep(w);
  put(w, text, strlen(text));
}

void kp_jw_u64(kp_jw_t *w, uint64_t v) {
  char t[24];
  snprintf(t, sizeof(t), "%llu", (unsigned long long)v);
  scalar(w, t);
}

void kp_jw_i64(kp_jw_t *w, int64_t v) {
  char t[24];
  snprintf(t, sizeof(t), "%lld", (long long)v);
  scalar(w, t);
}

void kp_jw_num(kp_jw_t *w, double v, int decimals) {
  char t[64];
  if (!isfinite(v) || fabs(v) > 1e18) {
    kp_jw_null(w);
    return;
  }
  snprintf(t, sizeof(t), "%.*f", decimals < 0 ? 0 : decimals > 9 ? 9 : decimals, v);
  /* "-0.00" is valid JSON but reads oddly in a report. */
  if (t[0] == '-' && strspn(t + 1, "0.") == strlen(t + 1)) memmove(t, t + 1, strlen(t));
  scalar(w, t);
}

void kp_jw_bool(kp_jw_t *w, bool v) {
  scalar(w, v ? "true" : "false");
}

void kp_jw_null(kp_jw_t *w) {
  scalar(w, "null");
}

void kp_jw_hex(kp_jw_t *w, const uint8_t *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  sep(w);
  put(w, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    char two[2] = {digits[p[i] >> 4], digits[p[i] & 15]};
    put(w, two, 2);
  }
  put(w, "\"", 1);
}

void kp_jw_raw(kp_jw_t *w, const char *s, size_t n) {
  put(w, s, n);
}

void kp_jw_kstr(kp_jw_t *w, const char *key, const char *s) {
  kp_jw_key(w, key);
  kp_jw_str(w, s);
}

void kp_jw_ku64(kp_jw_t *w, const char *key, uint64_t v) {
  kp_jw_key(w, key);
  kp_jw_u64(w, v);
}

void kp_jw_knum(kp_jw_t *w, const char *key, double v, int decimals) {
  kp_jw_key(w, key);
  kp_jw_num(w, v, decimals);
}

void kp_jw_kbool(kp_jw_t *w, const char *key, bool v) {
  kp_jw_key(w, key);
  kp_jw_bool(w, v);
}

void kp_jw_khex(kp_jw_t *w, const char *key, const uint8_t *p, size_t n) {
  kp_jw_key(w, key);
  kp_jw_hex(w, p, n);
}
