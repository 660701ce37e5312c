/* SPDX-License-Identifier: MIT */
/* JSON for the control socket (node/control.c) and the programs that talk
 * to it or print for scripts (kadpunch-inspect): a writer into a growable,
 * capped buffer, and a strict RFC 8259 reader that builds a small tree.
 *
 * Neither is on a protocol path: the wire is msgpack. JSON is what
 * operators and their scripts read. */
#ifndef KP_NODE_JSON_H
#define KP_NODE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Writer ---------------------------------------------------------------- */

#define KP_JW_MAX_DEPTH 32

/* Commas between members and elements are the writer's business: callers
 * open and close containers and write keys and values in order. The first
 * write that fails (no memory, or the text would pass `max`) sets `failed`
 * and every later write is ignored, so a caller checks once at the end. */
typedef struct kp_jw_s {
  char *buf; /* NUL-terminated while !failed; owned, kp_jw_free releases it */
  size_t len, cap, max;
  bool failed;
  bool after_key;
  unsigned depth;
  uint8_t first[KP_JW_MAX_DEPTH]; /* per open container: nothing written in it yet */
} kp_jw_t;

/* Length of the valid UTF-8 sequence at s (n bytes left: 1 for ASCII), or
 * 0 (overlong, a surrogate, past U+10FFFF, cut short). Reader and writer
 * share it: what one accepts the other writes. */
size_t kp_json_utf8_len(const unsigned char *s, size_t n);

/* max: the most bytes the text may take (0: 16 MiB). */
void kp_jw_init(kp_jw_t *w, size_t max);
void kp_jw_free(kp_jw_t *w);
/* Empties the text (keeping the buffer) and clears failed. */
void kp_jw_reset(kp_jw_t *w);
/* Hands the buffer to the caller (free it with kp_free); the writer is empty. */
char *kp_jw_release(kp_jw_t *w, size_t *len);

void kp_jw_obj(kp_jw_t *w);
void kp_jw_obj_end(kp_jw_t *w);
void kp_jw_arr(kp_jw_t *w);
void kp_jw_arr_end(kp_jw_t *w);
void kp_jw_key(kp_jw_t *w, const char *key);
/* Any bytes: escaped, and invalid UTF-8 becomes U+FFFD, so the text stays JSON. */
void kp_jw_strn(kp_jw_t *w, const char *s, size_t n);
void kp_jw_str(kp_jw_t *w, const char *s); /* NULL writes null */
void kp_jw_u64(kp_jw_t *w, uint64_t v);
void kp_jw_i64(kp_jw_t *w, int64_t v);
/* Fixed-point with `decimals` digits; NaN and infinities write null. */
void kp_jw_num(kp_jw_t *w, double v, int decimals);
void kp_jw_bool(kp_jw_t *w, bool v);
void kp_jw_null(kp_jw_t *w);
/* Lowercase hex of n bytes, as a string. */
void kp_jw_hex(kp_jw_t *w, const uint8_t *p, size_t n);

/* Appends text as is (the caller vouches that the result is JSON). */
void kp_jw_raw(kp_jw_t *w, const char *s, size_t n);

/* key + value in one call, for flat objects. */
void kp_jw_kstr(kp_jw_t *w, const char *key, const char *s);
void kp_jw_ku64(kp_jw_t *w, const char *key, uint64_t v);
void kp_jw_knum(kp_jw_t *w, const char *key, double v, int decimals);
void kp_jw_kbool(kp_jw_t *w, const char *key, bool v);
void kp_jw_khex(kp_jw_t *w, const char *key, const uint8_t *p, size_t n);

/* ---- Reader ---------------------------------------------------------------- */

typedef enum {
  KP_JSON_NULL,
  KP_JSON_BOOL,
  KP_JSON_NUMBER,
  KP_JSON_STRING,
  KP_JSON_ARRAY,
  KP_JSON_OBJECT
} kp_json_type_t;

typedef struct kp_json_s kp_json_t;
struct kp_json_s {
  kp_json_type_t type;
  bool boolean;
  double number;
  char *str;  /* KP_JSON_STRING: unescaped UTF-8, NUL-terminated (may hold NULs: see len) */
  size_t len; /* string length; element or member count of a container */
  char *key;  /* set on the members of an object */
  kp_json_t *child, *next;
};

/* Nesting deeper than this is refused (a stack bound, not a JSON rule). */
#define KP_JSON_MAX_DEPTH 64

/* Parses exactly one JSON value (surrounding whitespace allowed) from
 * text[0..len). Strict: no trailing commas, comments, bare control
 * characters, invalid UTF-8 or escapes, leading zeros, lone surrogates.
 * Returns 0 and *out (free it with kp_json_free), KP_EMALFORMED (and
 * *err_at: the offset where parsing stopped; may be NULL), or UV_ENOMEM. */
int kp_json_parse(const char *text, size_t len, kp_json_t **out, size_t *err_at);
void kp_json_free(kp_json_t *v);

/* The member named key of an object (the first, if repeated), or NULL. */
const kp_json_t *kp_json_get(const kp_json_t *obj, const char *key);
/* The member's string, or NULL if missing or not a string. */
const char *kp_json_get_str(const kp_json_t *obj, const char *key);
/* The member's number, or fallback if missing or not a number. */
double kp_json_get_num(const kp_json_t *obj, const char *key, double fallback);
/* The member's boolean, or fallback. */
bool kp_json_get_bool(const kp_json_t *obj, const char *key, bool fallback);

#endif
