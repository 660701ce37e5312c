/* SPDX-License-Identifier: MIT */
/* A two-ended link on a virtual microsecond clock, for the data plane:
 * the things a real path does to datagrams, each on a dial.
 *
 * Each direction has a propagation delay with jitter (jitter reorders), a
 * bottleneck of `rate` bytes per second with a drop-tail queue of
 * `queue_bytes`, random loss and duplication, and an MTU above which
 * datagrams vanish (as they would with DF set). Each side has one current
 * address, and may have more (several hosts behind one bottleneck, for
 * flows that compete); a datagram reaches the side holding the address it
 * was sent to, or nobody (a host that moved stops receiving at its old
 * address). */
#ifndef KP_TEST_LINK_H
#define KP_TEST_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"

typedef struct kp_link_params_s {
  uint64_t delay_us;
  uint64_t jitter_us; /* extra delay, uniform in [0, jitter] */
  double loss;        /* probability a datagram is dropped */
  double duplicate;   /* probability it arrives twice */
  uint64_t rate;      /* bytes per second; 0: unlimited */
  size_t queue_bytes; /* bottleneck queue (with rate); 0: 256 KiB */
  unsigned mtu;       /* largest datagram that passes; 0: any */
} kp_link_params_t;

typedef struct kp_link_stats_s {
  uint64_t sent, delivered, lost, duplicated, queue_drops, mtu_drops, unroutable;
} kp_link_stats_t;

typedef struct kp_link_s kp_link_t;

/* A datagram that arrived: `side` (0 or 1) received it. */
typedef struct kp_link_packet_s {
  int side;
  kp_addr_t from, to;
  size_t len;
  uint8_t data[1500];
} kp_link_packet_t;

kp_link_t *kp_link_new(uint64_t seed);
void kp_link_free(kp_link_t *l);
/* Sets the direction carrying datagrams sent by side `from_side`. */
void kp_link_set(kp_link_t *l, int from_side, const kp_link_params_t *p);
void kp_link_set_addr(kp_link_t *l, int side, const kp_addr_t *addr);
const kp_addr_t *kp_link_addr(const kp_link_t *l, int side);
/* Another host on a side (at most KP_LINK_MAX_HOSTS per side). */
#define KP_LINK_MAX_HOSTS 8
void kp_link_add_addr(kp_link_t *l, int side, const kp_addr_t *addr);

void kp_link_send(kp_link_t *l, int from_side, const kp_addr_t *to, const uint8_t *data, size_t len,
                  uint64_t now_us);
/* The same from one of the side's hosts. */
void kp_link_send_from(kp_link_t *l, int from_side, const kp_addr_t *from, const kp_addr_t *to,
                       const uint8_t *data, size_t len, uint64_t now_us);
/* Bytes waiting in the bottleneck's queue of a direction at now. */
uint64_t kp_link_queued(const kp_link_t *l, int from_side, uint64_t now_us);
/* When the next datagram arrives, or UINT64_MAX. */
uint64_t kp_link_next(const kp_link_t *l);
/* Takes the next datagram due at or before now; false if none. */
bool kp_link_pop(kp_link_t *l, uint64_t now_us, kp_link_packet_t *out);
const kp_link_stats_t *kp_link_stats(const kp_link_t *l, int from_side);

#endif
