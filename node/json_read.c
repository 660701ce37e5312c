/* SPDX-License-Identifier: MIT */
/* The strict JSON reader (node/json.h): RFC 8259, recursive descent over a
 * (pos, end) cursor, every byte checked. */
#include "node/json.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "kadpunch.h"

typedef struct {
  const unsigned char *pos, *end, *start;
  int err;
} cur_t;

static void ws(cur_t *c) {
  while (c->pos < c->end &&
         (*c->pos == ' ' || *c->pos == '\t' || *c->pos == '\n' || *c->pos == '\r'))
    c->pos++;
}

static bool fail(cur_t *c, int err) {
  if (!c->err) c->err = err;
  return false;
}

static bool literal(cur_t *c, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(c->end - c->pos) < n || memcmp(c->pos, word, n)) return fail(c, KP_EMALFORMED);
  c->pos += n;
  return true;
}

static size_t digits(cur_t *c) {
  size_t n = 0;
  while (c->pos < c->end && *c->pos >= '0' && *c->pos <= '9') c->pos++, n++;
  return n;
}

static bool number(cur_t *c, kp_json_t *v) {
  const unsigned char *start = c->pos;
  if (c->pos < c->end && *c->pos == '-') c->pos++;
  if (c->pos < c->end && *c->pos == '0') {
    c->pos++; /* no leading zeros: "0" alone, or "0." / "0e" */
  } else if (!digits(c)) {
    return fail(c, KP_EMALFORMED);
  }
  if (c->pos < c->end && *c->pos == '.') {
    c->pos++;
    if (!digits(c)) return fail(c, KP_EMALFORMED);
  }
  if (c->pos < c->end && (*c->pos == 'e' || *c->pos == 'E')) {
    c->pos++;
    if (c->pos < c->end && (*c->pos == '+' || *c->pos == '-')) c->pos++;
    if (!digits(c)) return fail(c, KP_EMALFORMED);
  }
  char text[64];
  size_t n = (size_t)(c->pos - start);
  if (n >= sizeof(text)) n = sizeof(text) - 1; /* precision beyond this is noise */
  memcpy(text, start, n);
  text[n] = '\0';
  v->type = KP_JSON_NUMBER;
  v->number = strtod(text, NULL);
  return true;
}

static int hex4(const unsigned char *p) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int d = p[i] >= '0' && p[i] <= '9'   ? p[i] - '0'
            : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
            : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10
                                         : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

static size_t put_utf8(unsigned cp, char *out) {
  if (cp < 0x80) return out[0] = (char)cp, 1;
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* A \uXXXX escape (c->pos after the 'u'), pairing surrogates. */
static bool unicode_escape(cur_t *c, char *out, size_t *n) {
  if (c->end - c->pos < 4) return fail(c, KP_EMALFORMED);
  int hi = hex4(c->pos);
  if (hi < 0) return fail(c, KP_EMALFORMED);
  c->pos += 4;
  unsigned cp = (unsigned)hi;
  if (hi >= 0xdc00 && hi <= 0xdfff) return fail(c, KP_EMALFORMED);
  if (hi >= 0xd800 && hi <= 0xdbff) {
    if (c->end - c->pos < 6 || c->pos[0] != '\\' || c->pos[1] != 'u') return fail(c, KP_EMALFORMED);
    int lo = hex4(c->pos + 2);
    if (lo < 0xdc00 || lo > 0xdfff) return fail(c, KP_EMALFORMED);
    c->pos += 6;
    cp = 0x10000 + (((unsigned)hi - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
  }
  *n += put_utf8(cp, out + *n);
  return true;
}

/* A string at c->pos (the opening quote). Unescaping never lengthens the
 * text, so the span's length bounds the allocation. */
static bool string(cur_t *c, char **out, size_t *out_len) {
  c->pos++;
  const unsigned char *start = c->pos;
  while (c->pos < c->end && *c->pos != '"')
    c->pos += *c->pos == '\\' && c->pos + 1 < c->end ? 2 : 1;
  if (c->pos >= c->end) return fail(c, KP_EMALFORMED);
  const unsigned char *stop = c->pos;
  char *s = kp_malloc((size_t)(stop - start) + 1);
  if (!s) return fail(c, UV_ENOMEM);
  size_t n = 0;
  c->pos = start;
  while (c->pos < stop) {
    unsigned ch = *c->pos;
    if (ch < 0x20) break;
    if (ch == '\\') {
      unsigned e = c->pos[1];
      static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
      const char *at = e ? strchr(from, (int)e) : NULL;
      c->pos += 2;
      if (at) {
        s[n++] = to[at - from];
      } else if (e != 'u' || !unicode_escape(c, s, &n)) {
        c->pos = start; /* a bad escape: make sure the check below fails */
        break;
      }
    } else if (ch < 0x80) {
      s[n++] = (char)ch;
      c->pos++;
    } else {
      size_t len = kp_json_utf8_len(c->pos, (size_t)(stop - c->pos));
      if (!len) break;
      memcpy(s + n, c->pos, len);
      n += len, c->pos += len;
    }
  }
  if (c->pos != stop) {
    kp_free(s);
    return fail(c, KP_EMALFORMED);
  }
  c->pos++;
  s[n] = '\0';
  *out = s;
  *out_len = n;
  return true;
}

static bool value(cur_t *c, kp_json_t *v, unsigned depth);

/* Members or elements up to the closing bracket; c->pos is past the opener. */
static bool container(cur_t *c, kp_json_t *v, unsigned depth, bool object) {
  kp_json_t **tail = &v->child;
  ws(c);
  if (c->pos < c->end && *c->pos == (object ? '}' : ']')) {
    c->pos++;
    return true;
  }
  for (;;) {
    kp_json_t *item = kp_calloc(1, sizeof(*item));
    if (!item) return fail(c, UV_ENOMEM);
    *tail = item;
    tail = &item->next;
    v->len++;
    ws(c);
    if (object) {
      size_t klen;
      if (c->pos >= c->end || *c->pos != '"' || !string(c, &item->key, &klen))
        return fail(c, KP_EMALFORMED);
      ws(c);
      if (c->pos >= c->end || *c->pos != ':') return fail(c, KP_EMALFORMED);
      c->pos++;
    }
    if (!value(c, item, depth + 1)) return false;
    ws(c);
    if (c->pos >= c->end) return fail(c, KP_EMALFORMED);
    if (*c->pos == ',') {
      c->pos++;
      continue;
    }
    if (*c->pos != (object ? '}' : ']')) return fail(c, KP_EMALFORMED);
    c->pos++;
    return true;
  }
}

static bool value(cur_t *c, kp_json_t *v, unsigned depth) {
  if (depth > KP_JSON_MAX_DEPTH) return fail(c, KP_EMALFORMED);
  ws(c);
  if (c->pos >= c->end) return fail(c, KP_EMALFORMED);
  switch (*c->pos) {
    case '{': c->pos++, v->type = KP_JSON_OBJECT; return container(c, v, depth, true);
    case '[': c->pos++, v->type = KP_JSON_ARRAY; return container(c, v, depth, false);
    case '"': v->type = KP_JSON_STRING; return string(c, &v->str, &v->len);
    case 't': v->type = KP_JSON_BOOL, v->boolean = true; return literal(c, "true");
    case 'f': v->type = KP_JSON_BOOL; return literal(c, "false");
    case 'n': v->type = KP_JSON_NULL; return literal(c, "null");
    default: return number(c, v);
  }
}

int kp_json_parse(const char *text, size_t len, kp_json_t **out, size_t *err_at) {
  *out = NULL;
  cur_t c = {(const unsigned char *)text, (const unsigned char *)text + len,
             (const unsigned char *)text, 0};
  kp_json_t *root = kp_calloc(1, sizeof(*root));
  if (!root) return UV_ENOMEM;
  if (value(&c, root, 0)) {
    ws(&c);
    if (c.pos != c.end) fail(&c, KP_EMALFORMED);
  }
  if (c.err) {
    if (err_at) *err_at = (size_t)(c.pos - c.start);
    kp_json_free(root);
    return c.err;
  }
  *out = root;
  return 0;
}

void kp_json_free(kp_json_t *v) {
  /* Siblings iteratively, children recursively: depth is bounded by the parse. */
  while (v) {
    kp_json_t *next = v->next;
    kp_json_free(v->child);
    kp_free(v->str);
    kp_free(v->key);
    kp_free(v);
    v = next;
  }
}

const kp_json_t *kp_json_get(const kp_json_t *obj, const char *key) {
  if (!obj || obj->type != KP_JSON_OBJECT) return NULL;
  for (const kp_json_t *m = obj->child; m; m = m->next)
    if (!strcmp(m->key, key)) return m;
  return NULL;
}

const char *kp_json_get_str(const kp_json_t *obj, const char *key) {
  const kp_json_t *v = kp_json_get(obj, key);
  return v && v->type == KP_JSON_STRING ? v->str : NULL;
}

double kp_json_get_num(const kp_json_t *obj, const char *key, double fallback) {
  const kp_json_t *v = kp_json_get(obj, key);
  return v && v->type == KP_JSON_NUMBER ? v->number : fallback;
}

bool kp_json_get_bool(const kp_json_t *obj, const char *key, bool fallback) {
  const kp_json_t *v = kp_json_get(obj, key);
  return v && v->type == KP_JSON_BOOL ? v->boolean : fallback;
}
