/* SPDX-License-Identifier: MIT */
/* A model-based congestion controller in the manner of BBR
 * (draft-cardwell-iccrg-bbr-congestion-control): the sender measures the
 * path's bottleneck bandwidth (the highest delivery rate of the last ten
 * round trips) and its round-trip propagation time (the lowest RTT of the
 * last ten seconds), paces at the bandwidth and keeps about two
 * bandwidth-delay products in flight. Random loss does not move the model:
 * at 1% or 5% random loss the delivery rate is still the path's.
 *
 * Loss does bound it when it is congestion. A round trip whose loss rate
 * passes KP_BBR_LOSS_THRESH while the round trips show a standing queue
 * (the RTT floor a sixteenth, and at least 1 ms, over the minimum) sets a
 * ceiling on the data in flight (BBRv2's inflight_hi) that then creeps back
 * up, and lowers the bandwidth it paces at until the next probe (BBRv2's
 * bw_lo). That is what keeps two flows on a shallow buffer, or one flow
 * against a loss-based TCP, from overflowing the queue every round and lets
 * the bigger flow yield; random loss on an idle path, which comes with no
 * queue, lowers neither.
 *
 * Pure: bytes, microseconds, and an injected random source (for where the
 * bandwidth-probing cycle starts). */
#ifndef KP_STREAM_BBR_H
#define KP_STREAM_BBR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/rng.h"

/* A round trip's losses count as congestion above this share of what it
 * delivered (BBRv2's loss_thresh), when it also shows a queue. */
#define KP_BBR_LOSS_THRESH 0.02
/* How long the RTT minimum is trusted before PROBE_RTT looks again. */
#define KP_BBR_MIN_RTT_WINDOW_US (10u * 1000 * 1000)
/* The bandwidth filter's span, in round trips. */
#define KP_BBR_BW_WINDOW_ROUNDS 10

typedef enum {
  KP_BBR_STARTUP,
  KP_BBR_DRAIN,
  KP_BBR_PROBE_BW,
  KP_BBR_PROBE_RTT,
} kp_bbr_mode_t;

/* What a sent packet remembers for the delivery rate (the draft's
 * per-packet state). */
typedef struct kp_rate_stamp_s {
  uint64_t delivered;    /* bytes delivered when it left */
  uint64_t delivered_us; /* when the last of those was acknowledged */
  uint64_t first_sent_us;
  bool app_limited;
} kp_rate_stamp_t;

/* One ack's rate sample, built while its newly acknowledged packets are
 * walked. */
typedef struct kp_rate_sample_s {
  uint64_t prior_delivered, prior_us;
  uint64_t send_elapsed, ack_elapsed;
  uint64_t acked;  /* bytes newly acknowledged by this ack */
  uint64_t lost;   /* bytes newly declared lost since the last ack */
  uint64_t rtt_us; /* of the newest packet acknowledged, 0 if none */
  bool app_limited;
  bool any; /* a packet was acknowledged */
} kp_rate_sample_t;

/* A windowed maximum (Kathleen Nichols' algorithm, as in Linux's
 * win_minmax): the best, second and third best of the window. */
typedef struct kp_minmax_s {
  struct {
    uint64_t t, v;
  } s[3];
} kp_minmax_t;

typedef struct kp_bbr_s {
  uint64_t mss;
  kp_rng_t rng;
  kp_bbr_mode_t mode;
  /* Delivery accounting (the rate estimator's connection state). */
  uint64_t delivered, delivered_us, first_sent_us;
  uint64_t app_limited_until; /* delivered count; 0: not app-limited */
  kp_rate_sample_t rs;
  /* Round trips, counted by delivery: a round ends when a packet sent
   * after it began is acknowledged. */
  uint64_t round_count, next_round_delivered;
  bool round_start;
  /* The model. */
  kp_minmax_t bw;     /* bytes per second, over rounds */
  uint64_t bw_lo;     /* after congestion, until the next probe; UINT64_MAX: none */
  uint64_t bw_latest; /* the best sample of this round */
  uint64_t min_rtt_us, min_rtt_stamp_us;
  uint64_t extra_acked; /* ack aggregation allowance, bytes */
  kp_minmax_t extra_acked_filter;
  uint64_t ack_epoch_us, ack_epoch_acked;
  /* Startup: has the bandwidth stopped growing? */
  uint64_t full_bw;
  unsigned full_bw_count;
  bool full_pipe;
  /* PROBE_BW's gain cycle. */
  unsigned cycle_index;
  uint64_t cycle_stamp_us;
  /* PROBE_RTT. */
  uint64_t probe_rtt_done_us, probe_rtt_min_us;
  bool probe_rtt_round_done;
  bool idle_restart;
  /* Congestion: the ceiling on data in flight, and this round's losses. */
  uint64_t inflight_hi; /* UINT64_MAX: none */
  unsigned hi_growth_rounds;
  uint64_t round_lost, round_delivered, round_max_inflight;
  uint64_t congestion_events;
  /* After a retransmission timeout: a few packets until an ack comes. */
  bool rto_recovery;
  uint64_t rto_us;
  /* Outputs. */
  double pacing_gain, cwnd_gain;
  uint64_t pacing_rate; /* bytes per second */
  uint64_t cwnd;
} kp_bbr_t;

void kp_bbr_init(kp_bbr_t *b, uint64_t mss, kp_rng_t rng, uint64_t now_us);
/* The path MTU changed: the model stays, the floors follow. */
void kp_bbr_set_mss(kp_bbr_t *b, uint64_t mss);

/* A packet of size bytes leaves with in_flight bytes outstanding before
 * it: fills its stamp. */
void kp_bbr_on_sent(kp_bbr_t *b, kp_rate_stamp_t *stamp, uint64_t size, uint64_t in_flight,
                    uint64_t now_us);
/* The sender has nothing to send and room in the window: samples taken
 * until what is in flight now is delivered say little about the path. */
void kp_bbr_on_app_limited(kp_bbr_t *b, uint64_t in_flight);
/* A packet (size bytes, sent at sent_us, stamped at sending) was newly
 * acknowledged; call for each, then kp_bbr_on_ack_done. */
void kp_bbr_on_acked(kp_bbr_t *b, const kp_rate_stamp_t *stamp, uint64_t size, uint64_t sent_us,
                     uint64_t now_us);
/* A packet was declared lost. */
void kp_bbr_on_lost(kp_bbr_t *b, uint64_t size);
/* The ack (or the loss timer) has been processed: update the model and
 * the outputs. rtt_floor_us: kp_recovery_rtt_floor; in_flight after the
 * ack. */
void kp_bbr_on_ack_done(kp_bbr_t *b, uint64_t in_flight, uint64_t rtt_floor_us, uint64_t now_us);
/* A retransmission timeout: everything outstanding was declared lost. */
void kp_bbr_on_rto(kp_bbr_t *b, uint64_t now_us);

/* The bandwidth estimate, bytes per second (0 before any sample). */
uint64_t kp_bbr_bw(const kp_bbr_t *b);
/* The estimated bandwidth-delay product, bytes. */
uint64_t kp_bbr_bdp(const kp_bbr_t *b);

#endif
