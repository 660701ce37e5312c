/* SPDX-License-Identifier: MIT */
/* A set of byte ranges [lo, hi), kept sorted and merged: acknowledged data
 * above a stream's acked prefix, and data waiting to be retransmitted. */
#ifndef KP_STREAM_RANGES_H
#define KP_STREAM_RANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kp_range_s {
  uint64_t lo, hi;
} kp_range_t;

typedef struct kp_ranges_s {
  kp_range_t *r;
  size_t n, cap;
} kp_ranges_t;

void kp_ranges_init(kp_ranges_t *s);
void kp_ranges_free(kp_ranges_t *s);
/* Adds [lo, hi); KP_ENOMEM if the set cannot grow. */
int kp_ranges_add(kp_ranges_t *s, uint64_t lo, uint64_t hi);
/* Removes [lo, hi) (possibly splitting a range). */
int kp_ranges_remove(kp_ranges_t *s, uint64_t lo, uint64_t hi);
/* Removes everything below x. */
void kp_ranges_drop_below(kp_ranges_t *s, uint64_t x);
/* Takes up to max bytes from the front: returns false if empty. */
bool kp_ranges_pop(kp_ranges_t *s, uint64_t max, uint64_t *lo, uint64_t *hi);
static inline bool kp_ranges_empty(const kp_ranges_t *s) {
  return s->n == 0;
}

#endif
