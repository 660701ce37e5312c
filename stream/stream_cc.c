/* SPDX-License-Identifier: MIT */
#include "stream/stream_cc.h"

#include <math.h>
#include <string.h>

/* RFC 9438 constants. */
#define CUBIC_C 0.4
#define CUBIC_BETA 0.7
#define INITIAL_WINDOW_PACKETS 10 /* RFC 6928 */
#define MIN_WINDOW_PACKETS 2
/* RFC 9406 section 4.3. */
#define HS_MIN_RTT_THRESH_US 4000
#define HS_MAX_RTT_THRESH_US 16000
#define HS_MIN_RTT_DIVISOR 8
#define HS_N_RTT_SAMPLE 8
#define HS_CSS_GROWTH_DIVISOR 4
#define HS_CSS_ROUNDS 5

void kp_cubic_init(kp_cubic_t *c, uint64_t mss) {
  memset(c, 0, sizeof(*c));
  c->mss = mss;
  c->cwnd = INITIAL_WINDOW_PACKETS * mss;
  c->ssthresh = UINT64_MAX;
  c->round_min_rtt = c->last_round_min_rtt = UINT64_MAX;
}

void kp_cubic_set_mss(kp_cubic_t *c, uint64_t mss) {
  c->cwnd = c->cwnd / c->mss * mss;
  if (c->ssthresh != UINT64_MAX) c->ssthresh = c->ssthresh / c->mss * mss;
  c->mss = mss;
}

static double w_cubic(const kp_cubic_t *c, double t) {
  double d = t - c->k;
  return CUBIC_C * d * d * d + c->w_max;
}

/* Slow start's growth for bytes acked of a packet sent at sent_us
 * (HyStart++, RFC 9406 section 4.2). Rounds are told apart by time: a
 * round ends with the ack of the first packet sent after it began. */
static void slow_start(kp_cubic_t *c, uint64_t bytes, uint64_t sent_us, uint64_t now_us) {
  if (sent_us >= c->round_start_us) {
    if (c->in_css && ++c->css_rounds >= HS_CSS_ROUNDS) {
      c->ssthresh = c->cwnd; /* the queue is real: on to congestion avoidance */
      c->in_css = false;
      return;
    }
    c->round_start_us = now_us;
    c->last_round_min_rtt = c->round_min_rtt;
    c->round_min_rtt = UINT64_MAX;
    c->round_samples = 0;
  }
  uint64_t rtt = now_us - sent_us;
  if (rtt < c->round_min_rtt) c->round_min_rtt = rtt;
  c->round_samples++;
  if (!c->in_css && c->round_samples >= HS_N_RTT_SAMPLE && c->last_round_min_rtt != UINT64_MAX &&
      c->round_min_rtt != UINT64_MAX) {
    uint64_t thresh = c->last_round_min_rtt / HS_MIN_RTT_DIVISOR;
    if (thresh < HS_MIN_RTT_THRESH_US) thresh = HS_MIN_RTT_THRESH_US;
    if (thresh > HS_MAX_RTT_THRESH_US) thresh = HS_MAX_RTT_THRESH_US;
    if (c->round_min_rtt >= c->last_round_min_rtt + thresh) {
      c->in_css = true;
      c->css_baseline_rtt = c->round_min_rtt;
      c->css_rounds = 0;
    }
  } else if (c->in_css && c->round_min_rtt < c->css_baseline_rtt) {
    c->in_css = false; /* the rise was a blip: back to slow start */
  }
  c->cwnd += c->in_css ? bytes / HS_CSS_GROWTH_DIVISOR : bytes;
}

void kp_cubic_on_ack(kp_cubic_t *c, uint64_t bytes, uint64_t sent_us, uint64_t now_us,
                     uint64_t srtt_us, bool cwnd_limited) {
  if (sent_us < c->recovery_start_us) return; /* still recovering from the last cut */
  if (!cwnd_limited) return;
  if (c->cwnd < c->ssthresh) {
    slow_start(c, bytes, sent_us, now_us);
    return;
  }
  double cwnd = (double)c->cwnd / (double)c->mss;
  if (!c->epoch_us) {
    /* An epoch that starts without a loss (after slow start): the plateau
     * is where we are now. */
    c->epoch_us = now_us;
    if (c->w_max < cwnd) {
      c->w_max = cwnd;
      c->k = 0;
    } else {
      c->k = cbrt((c->w_max - cwnd) / CUBIC_C);
    }
    c->w_est = cwnd;
  }
  double t = (double)(now_us - c->epoch_us) / 1e6;
  double rtt = (double)srtt_us / 1e6;
  double acked = (double)bytes / (double)c->mss;
  /* Reno-friendly estimate (section 4.3). */
  double alpha = 3.0 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA);
  c->w_est += alpha * acked / cwnd;
  double target = w_cubic(c, t + rtt);
  if (target < cwnd) target = cwnd;
  if (target > 1.5 * cwnd) target = 1.5 * cwnd;
  double next;
  if (w_cubic(c, t) < c->w_est)
    next = c->w_est;
  else
    next = cwnd + (target - cwnd) * acked / cwnd;
  if (next > cwnd) c->cwnd = (uint64_t)(next * (double)c->mss);
}

void kp_cubic_on_loss(kp_cubic_t *c, uint64_t sent_us, uint64_t now_us) {
  if (sent_us < c->recovery_start_us) return; /* one cut per round trip */
  c->congestion_events++;
  double cwnd = (double)c->cwnd / (double)c->mss;
  /* Fast convergence (section 4.7): yield to newer flows. */
  if (cwnd < c->w_last_max)
    c->w_max = cwnd * (1 + CUBIC_BETA) / 2;
  else
    c->w_max = cwnd;
  c->w_last_max = cwnd;
  uint64_t next = (uint64_t)((double)c->cwnd * CUBIC_BETA);
  if (next < MIN_WINDOW_PACKETS * c->mss) next = MIN_WINDOW_PACKETS * c->mss;
  c->ssthresh = next;
  c->cwnd = next;
  c->in_css = false;
  c->k = cbrt(c->w_max * (1 - CUBIC_BETA) / CUBIC_C);
  c->epoch_us = now_us;
  c->w_est = (double)c->cwnd / (double)c->mss;
  c->recovery_start_us = now_us;
}

void kp_cubic_on_rto(kp_cubic_t *c, uint64_t now_us) {
  kp_cubic_on_loss(c, now_us, now_us);
  c->cwnd = MIN_WINDOW_PACKETS * c->mss;
  c->epoch_us = 0;
}

void kp_pacer_init(kp_pacer_t *p) {
  memset(p, 0, sizeof(*p));
}

static void refill(kp_pacer_t *p, uint64_t now_us) {
  if (p->at_us && now_us > p->at_us)
    p->tokens += p->rate * (double)(now_us - p->at_us);
  else if (!p->at_us)
    p->tokens = p->burst;
  if (p->tokens > p->burst) p->tokens = p->burst;
  p->at_us = now_us;
}

void kp_pacer_update(kp_pacer_t *p, const kp_cubic_t *c, uint64_t srtt_us, uint64_t now_us) {
  double gain = kp_cubic_in_slow_start(c) ? 2.0 : 1.25;
  if (srtt_us < 1) srtt_us = 1;
  p->rate = gain * (double)c->cwnd / (double)srtt_us;
  /* Timers tick in milliseconds: allow a couple of milliseconds' worth (and
   * at least ten packets) at once, or a fast path would stall on them. */
  p->burst = p->rate * 2000.0;
  if (p->burst < 10.0 * (double)c->mss) p->burst = 10.0 * (double)c->mss;
  refill(p, now_us);
}

void kp_pacer_set(kp_pacer_t *p, double bytes_per_s, double burst, uint64_t now_us) {
  /* Tokens earned so far at the old rate first. */
  if (p->at_us && now_us > p->at_us) {
    p->tokens += p->rate * (double)(now_us - p->at_us);
    if (p->tokens > p->burst) p->tokens = p->burst;
    p->at_us = now_us;
  }
  p->rate = bytes_per_s / 1e6;
  p->burst = burst;
  refill(p, now_us);
}

uint64_t kp_pacer_next(const kp_pacer_t *p, uint64_t size, uint64_t now_us) {
  if (p->tokens >= (double)size || p->rate <= 0) return 0;
  return now_us + (uint64_t)(((double)size - p->tokens) / p->rate) + 1;
}

void kp_pacer_on_sent(kp_pacer_t *p, uint64_t size) {
  p->tokens -= (double)size;
}

void kp_loss_gate_on_outcome(kp_loss_gate_t *g, bool lost) {
  g->rate += ((lost ? 1.0 : 0.0) - g->rate) / KP_LOSS_GATE_PACKETS;
}

bool kp_loss_gate_congestive(const kp_loss_gate_t *g, uint64_t rtt_floor_us, uint64_t min_rtt_us) {
  if (g->rate > KP_LOSS_GATE_RATE || min_rtt_us == UINT64_MAX || !min_rtt_us) return true;
  /* A queue: a quarter of the minimum RTT over it, and at least 1 ms (below
   * that, scheduling noise on a fast path looks like queueing). */
  uint64_t slack = min_rtt_us / 4 > 1000 ? min_rtt_us / 4 : 1000;
  return rtt_floor_us > min_rtt_us + slack;
}
