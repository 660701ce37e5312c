/* SPDX-License-Identifier: MIT */
/* Admission: one module for every per-source budget (docs/architecture.md,
 * "Trusting nothing on the path": admission is charged to the sender a node
 * can see).
 *
 * kp_bucket_t is an integer token bucket: `rate` units per second, holding
 * at most `burst`. Tokens are kept in thousandths of a unit, so a rate of
 * 20 per second refills one token every 50 ms without any rounding drift,
 * and no floating point is involved anywhere.
 *
 * kp_ratelimit_t is a bounded table of such buckets, one per sender, keyed
 * by the sender's IPv4 address or IPv6 /64 (one host, or one customer of an
 * ISP) through a keyed hash, so nobody can aim collisions. The table never
 * grows: a new sender takes a free way of its 4-way set, else the way
 * whose bucket is the fullest (the least active sender), which then starts
 * over with a full bucket. Evicting therefore only ever hands an evicted
 * sender its full budget back; it never takes budget from anyone.
 *
 * Pure: time is an argument (ms) and the hash key comes from the caller. */
#ifndef KP_COMMON_RATELIMIT_H
#define KP_COMMON_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"

typedef struct kp_bucket_s {
  uint64_t milli; /* tokens x 1000 */
  uint64_t at_ms; /* the last refill */
} kp_bucket_t;

/* A full bucket at now_ms. */
void kp_bucket_init(kp_bucket_t *b, uint64_t burst, uint64_t now_ms);
/* Refills for the time since the last call, then takes cost if there is
 * that much: true. Otherwise takes nothing: false. */
bool kp_bucket_take(kp_bucket_t *b, uint64_t rate, uint64_t burst, uint64_t cost, uint64_t now_ms);
/* Whole tokens in the bucket at now_ms (refilled; nothing taken). */
uint64_t kp_bucket_level(kp_bucket_t *b, uint64_t rate, uint64_t burst, uint64_t now_ms);

#define KP_RATELIMIT_WAYS 4
#define KP_RATELIMIT_KEY_LEN 16

typedef struct kp_ratelimit_slot_s {
  uint64_t key; /* 0: free */
  kp_bucket_t bucket;
} kp_ratelimit_slot_t;

typedef struct kp_ratelimit_s {
  kp_ratelimit_slot_t *slots;
  size_t set_mask; /* sets - 1 */
  uint64_t rate, burst;
  uint8_t key[KP_RATELIMIT_KEY_LEN];
  uint64_t evictions;
} kp_ratelimit_t;

/* At least `senders` slots (rounded up to a power of two of 4-way sets).
 * `key` (KP_RATELIMIT_KEY_LEN random bytes) keys the hash. KP_ENOMEM,
 * KP_EINVAL for a zero rate, burst or size. */
int kp_ratelimit_init(kp_ratelimit_t *rl, size_t senders, uint64_t rate, uint64_t burst,
                      const uint8_t key[KP_RATELIMIT_KEY_LEN]);
void kp_ratelimit_destroy(kp_ratelimit_t *rl);

/* Charges cost to from's bucket: true if it had that much. *level (may be
 * NULL) is set to the whole tokens the sender had before this charge, so a
 * caller can tell a light sender from a heavy one. */
bool kp_ratelimit_take(kp_ratelimit_t *rl, const kp_addr_t *from, uint64_t cost, uint64_t now_ms,
                       uint64_t *level);

/* Gives from's bucket back its whole burst (it earned it: say, it proved
 * something the budget was guarding against). */
void kp_ratelimit_refill(kp_ratelimit_t *rl, const kp_addr_t *from, uint64_t now_ms);

/* The sender key: the IPv4 address, or the IPv6 /64 (an IPv4-mapped IPv6
 * address counts as its IPv4 address). Exposed for tests. */
uint64_t kp_ratelimit_key(const kp_ratelimit_t *rl, const kp_addr_t *from);

#endif
