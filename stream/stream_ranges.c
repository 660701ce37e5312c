/* SPDX-License-Identifier: MIT */
#include "stream/stream_ranges.h"

#include <string.h>

#include "common/alloc.h"
#include "kadpunch_base.h"

void kp_ranges_init(kp_ranges_t *s) {
  memset(s, 0, sizeof(*s));
}

void kp_ranges_free(kp_ranges_t *s) {
  kp_free(s->r);
  memset(s, 0, sizeof(*s));
}

static int reserve(kp_ranges_t *s, size_t n) {
  if (n <= s->cap) return 0;
  size_t cap = s->cap ? s->cap * 2 : 4;
  while (cap < n) cap *= 2;
  kp_range_t *r = kp_realloc(s->r, cap * sizeof(*r));
  if (!r) return KP_ENOMEM;
  s->r = r;
  s->cap = cap;
  return 0;
}

int kp_ranges_add(kp_ranges_t *s, uint64_t lo, uint64_t hi) {
  if (lo >= hi) return 0;
  /* First range that ends at or after lo (can merge with us). */
  size_t i = 0;
  while (i < s->n && s->r[i].hi < lo) i++;
  size_t j = i;
  while (j < s->n && s->r[j].lo <= hi) {
    if (s->r[j].lo < lo) lo = s->r[j].lo;
    if (s->r[j].hi > hi) hi = s->r[j].hi;
    j++;
  }
  if (j > i) {
    /* Ranges i..j-1 collapse into one. */
    s->r[i].lo = lo;
    s->r[i].hi = hi;
    memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof(*s->r));
    s->n -= j - i - 1;
    return 0;
  }
  if (reserve(s, s->n + 1)) return KP_ENOMEM;
  memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(*s->r));
  s->r[i].lo = lo;
  s->r[i].hi = hi;
  s->n++;
  return 0;
}

int kp_ranges_remove(kp_ranges_t *s, uint64_t lo, uint64_t hi) {
  for (size_t i = 0; i < s->n && lo < hi; i++) {
    kp_range_t *x = &s->r[i];
    if (x->hi <= lo || x->lo >= hi) continue;
    if (x->lo < lo && x->hi > hi) {
      /* Split in two. */
      if (reserve(s, s->n + 1)) return KP_ENOMEM;
      x = &s->r[i];
      memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(*s->r));
      s->r[i].hi = lo;
      s->r[i + 1].lo = hi;
      s->n++;
      return 0;
    }
    if (x->lo < lo)
      x->hi = lo;
    else if (x->hi > hi)
      x->lo = hi;
    else {
      memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof(*s->r));
      s->n--;
      i--;
    }
  }
  return 0;
}

void kp_ranges_drop_below(kp_ranges_t *s, uint64_t x) {
  size_t k = 0;
  while (k < s->n && s->r[k].hi <= x) k++;
  if (k) {
    memmove(&s->r[0], &s->r[k], (s->n - k) * sizeof(*s->r));
    s->n -= k;
  }
  if (s->n && s->r[0].lo < x) s->r[0].lo = x;
}

bool kp_ranges_pop(kp_ranges_t *s, uint64_t max, uint64_t *lo, uint64_t *hi) {
  if (!s->n || !max) return false;
  *lo = s->r[0].lo;
  *hi = s->r[0].hi - s->r[0].lo > max ? s->r[0].lo + max : s->r[0].hi;
  if (*hi == s->r[0].hi) {
    memmove(&s->r[0], &s->r[1], (s->n - 1) * sizeof(*s->r));
    s->n--;
  } else {
    s->r[0].lo = *hi;
  }
  return true;
}
