/* SPDX-License-Identifier: MIT */
/* Bounded byte buffers for fixed binary fields (big-endian on the wire).
 *
 * A writer never writes past cap: the first write that does not fit sets
 * `overflow` and every later write is ignored, so an encoder can write all
 * its fields and check once at the end. A reader works the same way with
 * `error`: reads past the end return zeros and set the flag. */
#ifndef KP_COMMON_BUF_H
#define KP_COMMON_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct kp_wbuf_s {
  uint8_t *base;
  size_t cap;
  size_t len;
  bool overflow;
} kp_wbuf_t;

typedef struct kp_rbuf_s {
  const uint8_t *pos;
  const uint8_t *end;
  bool error;
} kp_rbuf_t;

static inline void kp_wbuf_init(kp_wbuf_t *w, void *base, size_t cap) {
  w->base = base;
  w->cap = cap;
  w->len = 0;
  w->overflow = false;
}

static inline bool kp_wbuf_room(kp_wbuf_t *w, size_t n) {
  if (w->overflow || n > w->cap - w->len) {
    w->overflow = true;
    return false;
  }
  return true;
}

static inline void kp_wbuf_put(kp_wbuf_t *w, const void *p, size_t n) {
  if (!kp_wbuf_room(w, n)) return;
  if (n) memcpy(w->base + w->len, p, n);
  w->len += n;
}

/* head then body into out (cap bytes): their length, or 0 if they do not
 * fit (a datagram given in parts, sent where parts cannot go apart). */
static inline size_t kp_join_parts(uint8_t *out, size_t cap, const void *head, size_t hlen,
                                   const void *body, size_t blen) {
  kp_wbuf_t w;
  kp_wbuf_init(&w, out, cap);
  kp_wbuf_put(&w, head, hlen);
  kp_wbuf_put(&w, body, blen);
  return w.overflow ? 0 : w.len;
}

static inline void kp_wbuf_put_u8(kp_wbuf_t *w, uint8_t v) {
  kp_wbuf_put(w, &v, 1);
}

static inline void kp_wbuf_put_u16(kp_wbuf_t *w, uint16_t v) {
  uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
  kp_wbuf_put(w, b, 2);
}

static inline void kp_wbuf_put_u32(kp_wbuf_t *w, uint32_t v) {
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  kp_wbuf_put(w, b, 4);
}

static inline void kp_wbuf_put_u64(kp_wbuf_t *w, uint64_t v) {
  kp_wbuf_put_u32(w, (uint32_t)(v >> 32));
  kp_wbuf_put_u32(w, (uint32_t)v);
}

static inline void kp_rbuf_init(kp_rbuf_t *r, const void *p, size_t n) {
  r->pos = p;
  r->end = r->pos + n;
  r->error = false;
}

static inline size_t kp_rbuf_left(const kp_rbuf_t *r) {
  return (size_t)(r->end - r->pos);
}

/* Returns a view of the next n bytes, or NULL (and sets error) if fewer remain. */
static inline const uint8_t *kp_rbuf_take(kp_rbuf_t *r, size_t n) {
  if (r->error || n > kp_rbuf_left(r)) {
    r->error = true;
    return NULL;
  }
  const uint8_t *p = r->pos;
  r->pos += n;
  return p;
}

static inline uint8_t kp_rbuf_u8(kp_rbuf_t *r) {
  const uint8_t *p = kp_rbuf_take(r, 1);
  return p ? p[0] : 0;
}

static inline uint16_t kp_rbuf_u16(kp_rbuf_t *r) {
  const uint8_t *p = kp_rbuf_take(r, 2);
  return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

static inline uint32_t kp_rbuf_u32(kp_rbuf_t *r) {
  const uint8_t *p = kp_rbuf_take(r, 4);
  return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

static inline uint64_t kp_rbuf_u64(kp_rbuf_t *r) {
  uint64_t hi = kp_rbuf_u32(r);
  return hi << 32 | kp_rbuf_u32(r);
}

#endif
