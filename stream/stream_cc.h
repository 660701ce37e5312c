/* SPDX-License-Identifier: MIT */
/* Congestion control: CUBIC (RFC 9438) with its Reno-friendly region and
 * fast convergence; slow start leaves early when round trips start growing
 * (HyStart++, RFC 9406) instead of overflowing the bottleneck's queue; a
 * pacer spreads each window over a round trip. Pure; bytes and
 * microseconds. */
#ifndef KP_STREAM_CC_H
#define KP_STREAM_CC_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kp_cubic_s {
  uint64_t mss;
  uint64_t cwnd;
  uint64_t ssthresh;
  double w_max;               /* segments, at the last congestion event */
  double w_last_max;          /* for fast convergence */
  double k;                   /* seconds from the epoch to w_max */
  double w_est;               /* segments: the Reno-friendly estimate */
  uint64_t epoch_us;          /* start of the current congestion-avoidance epoch, 0 if none */
  uint64_t recovery_start_us; /* packets sent before this do not cut again */
  uint64_t congestion_events;
  /* HyStart++: the minimum RTT of this round and the last, samples this
   * round; conservative slow start (CSS) after a rise. */
  uint64_t round_start_us;
  uint64_t round_min_rtt, last_round_min_rtt;
  unsigned round_samples;
  bool in_css;
  uint64_t css_baseline_rtt;
  unsigned css_rounds;
} kp_cubic_t;

void kp_cubic_init(kp_cubic_t *c, uint64_t mss);
/* The path MTU changed: keep the window in packets. */
void kp_cubic_set_mss(kp_cubic_t *c, uint64_t mss);
/* bytes acked of a packet sent at sent_us; cwnd_limited: the sender was
 * limited by the window (RFC 9438 section 4.8: no growth while app-limited). */
void kp_cubic_on_ack(kp_cubic_t *c, uint64_t bytes, uint64_t sent_us, uint64_t now_us,
                     uint64_t srtt_us, bool cwnd_limited);
/* A packet sent at sent_us was lost. */
void kp_cubic_on_loss(kp_cubic_t *c, uint64_t sent_us, uint64_t now_us);
/* A retransmission timeout: the path may have changed completely. */
void kp_cubic_on_rto(kp_cubic_t *c, uint64_t now_us);
static inline bool kp_cubic_in_slow_start(const kp_cubic_t *c) {
  return c->cwnd < c->ssthresh;
}

/* Which losses mean congestion. A loss cuts the window when it comes with
 * a queue (the floor of recent RTTs a quarter over the path's minimum, and
 * at least 1 ms over it) or when more than KP_LOSS_GATE_RATE of recent
 * packets were lost. Random loss on an uncongested path (radio, a flaky
 * link) leaves the window alone: a purely loss-based controller would run
 * at a fraction of the path (at 1% loss Reno and CUBIC keep a few dozen
 * packets in flight). A shallow-buffered bottleneck, whose queue never
 * shows in the RTT, still stops us: there loss climbs past the threshold. */
#define KP_LOSS_GATE_RATE 0.03
/* The average's span, in packets: long enough that 1% random loss almost
 * never looks like 3% by chance (over 256 packets, Poisson bursts often
 * did). */
#define KP_LOSS_GATE_PACKETS 1024.0
typedef struct kp_loss_gate_s {
  double rate; /* moving average of lost (1) / delivered (0) packets */
} kp_loss_gate_t;

void kp_loss_gate_on_outcome(kp_loss_gate_t *g, bool lost);
bool kp_loss_gate_congestive(const kp_loss_gate_t *g, uint64_t rtt_floor_us, uint64_t min_rtt_us);

/* A token bucket: at gain x cwnd / srtt for CUBIC, at the measured
 * bandwidth for the model-based controller. */
typedef struct kp_pacer_s {
  double tokens; /* bytes */
  double rate;   /* bytes per us */
  double burst;  /* bytes */
  uint64_t at_us;
} kp_pacer_t;

void kp_pacer_init(kp_pacer_t *p);
void kp_pacer_update(kp_pacer_t *p, const kp_cubic_t *c, uint64_t srtt_us, uint64_t now_us);
/* The rate in bytes per second, with a bucket of burst bytes: tokens
 * accrue at the rate since the last call, up to the burst. */
void kp_pacer_set(kp_pacer_t *p, double bytes_per_s, double burst, uint64_t now_us);
/* 0 if a packet of size may leave now, else the time it may. */
uint64_t kp_pacer_next(const kp_pacer_t *p, uint64_t size, uint64_t now_us);
void kp_pacer_on_sent(kp_pacer_t *p, uint64_t size);

#endif
