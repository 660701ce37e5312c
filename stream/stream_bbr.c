/* SPDX-License-Identifier: MIT */
#include "stream/stream_bbr.h"

#include <string.h>

/* Gains (draft-cardwell-iccrg-bbr-congestion-control-02, section 4.6):
 * startup doubles the delivery rate every round (4 ln 2 = 2.77), drain
 * empties what startup queued, PROBE_BW cycles through a probe (1.25), a
 * drain of the probe's queue (0.75) and six rounds at the estimate. */
#define STARTUP_PACING_GAIN 2.77
#define STARTUP_CWND_GAIN 2.0
#define DRAIN_PACING_GAIN (1 / 2.77)
#define CWND_GAIN 2.0
#define CYCLE_LEN 8
static const double cycle_gains[CYCLE_LEN] = {1.25, 0.75, 1, 1, 1, 1, 1, 1};
/* Pace a little under the estimate, so a queue left by a probe drains. */
#define PACING_MARGIN 0.99
/* Startup ends when three rounds in a row grow the bandwidth by less than
 * a quarter. */
#define FULL_BW_THRESH 1.25
#define FULL_BW_COUNT 3
/* PROBE_RTT (BBRv2's gentler form): half a BDP in flight for 200 ms and a
 * round trip, at most every ten seconds. */
#define PROBE_RTT_CWND_GAIN 0.5
#define PROBE_RTT_US 200000
#define MIN_CWND_PACKETS 4
#define INITIAL_CWND_PACKETS 10 /* RFC 6928 */
/* A round losing more than this is congestion whatever the RTT says: no
 * random loss worth pushing through is that heavy, and a path that only
 * drops (a policer, a black hole) shows no queue. */
#define LOSS_HEAVY 0.15
#define MIN_LOSS_PACKETS 2 /* a round's losses that can be congestion */
/* After a congestive round, the ceiling goes to this share of the most
 * that was in flight (BBRv2's beta), and never under one BDP. */
#define INFLIGHT_HI_BETA 0.7
/* Rounds without congestion raise a ceiling that held us back by a packet,
 * then 2, 4, ... up to 2^INFLIGHT_HI_GROWTH_MAX per round (BBRv2's probing
 * up): the same steps for every flow whatever its share, while the cuts
 * are proportional, so competing flows converge to equal shares (additive
 * increase, multiplicative decrease). The cap is high enough that a
 * window of thousands of packets (100 Mbit/s at 200 ms) is back within a
 * dozen rounds of a cut. */
#define INFLIGHT_HI_GROWTH_MAX 10
/* Ack aggregation allowance: at most 100 ms at the estimated rate. */
#define EXTRA_ACKED_MAX_US 100000
#define EXTRA_ACKED_WINDOW_ROUNDS 10

/* ---- Windowed max ------------------------------------------------------------------- */

static void minmax_reset(kp_minmax_t *m, uint64_t t, uint64_t v) {
  for (int i = 0; i < 3; i++) m->s[i].t = t, m->s[i].v = v;
}

/* Linux's lib/win_minmax.c, for a maximum: keeps the best sample of the
 * last `win` time units and the runners-up that take over as it ages. */
static uint64_t minmax_max(kp_minmax_t *m, uint64_t win, uint64_t t, uint64_t v) {
  if (v >= m->s[0].v || t - m->s[2].t > win) {
    minmax_reset(m, t, v);
    return v;
  }
  if (v >= m->s[1].v) {
    m->s[2].t = m->s[1].t = t;
    m->s[2].v = m->s[1].v = v;
  } else if (v >= m->s[2].v) {
    m->s[2].t = t;
    m->s[2].v = v;
  }
  uint64_t dt = t - m->s[0].t;
  if (dt > win) {
    m->s[0] = m->s[1];
    m->s[1] = m->s[2];
    m->s[2].t = t, m->s[2].v = v;
    if (t - m->s[0].t > win) {
      m->s[0] = m->s[1];
      m->s[1] = m->s[2];
    }
  } else if (m->s[1].t == m->s[0].t && dt > win / 4) {
    m->s[2].t = m->s[1].t = t;
    m->s[2].v = m->s[1].v = v;
  } else if (m->s[2].t == m->s[1].t && dt > win / 2) {
    m->s[2].t = t;
    m->s[2].v = v;
  }
  return m->s[0].v;
}

/* ---- The model ------------------------------------------------------------------------ */

static uint64_t max_bw(const kp_bbr_t *b) {
  return b->bw.s[0].v;
}

uint64_t kp_bbr_bw(const kp_bbr_t *b) {
  return max_bw(b) < b->bw_lo ? max_bw(b) : b->bw_lo;
}

uint64_t kp_bbr_bdp(const kp_bbr_t *b) {
  uint64_t bw = kp_bbr_bw(b);
  if (!bw || b->min_rtt_us == UINT64_MAX) return INITIAL_CWND_PACKETS * b->mss;
  return (uint64_t)((double)bw * (double)b->min_rtt_us / 1e6);
}

static uint64_t min_cwnd(const kp_bbr_t *b) {
  return MIN_CWND_PACKETS * b->mss;
}

void kp_bbr_init(kp_bbr_t *b, uint64_t mss, kp_rng_t rng, uint64_t now) {
  memset(b, 0, sizeof(*b));
  b->mss = mss;
  b->rng = rng;
  b->mode = KP_BBR_STARTUP;
  b->min_rtt_us = UINT64_MAX;
  b->min_rtt_stamp_us = now;
  b->inflight_hi = UINT64_MAX;
  b->bw_lo = UINT64_MAX;
  b->pacing_gain = STARTUP_PACING_GAIN;
  b->cwnd_gain = STARTUP_CWND_GAIN;
  b->cwnd = INITIAL_CWND_PACKETS * mss;
  /* No RTT yet: as if it were 1 ms (Linux's BBR does the same), so the
   * first window goes out nearly at once. */
  b->pacing_rate = (uint64_t)(STARTUP_PACING_GAIN * (double)b->cwnd * 1000);
}

void kp_bbr_set_mss(kp_bbr_t *b, uint64_t mss) {
  if (b->cwnd < MIN_CWND_PACKETS * mss) b->cwnd = MIN_CWND_PACKETS * mss;
  b->mss = mss;
}

void kp_bbr_on_sent(kp_bbr_t *b, kp_rate_stamp_t *stamp, uint64_t size, uint64_t in_flight,
                    uint64_t now) {
  /* The most in flight this round: what a ceiling held back, if anything. */
  if (in_flight + size > b->round_max_inflight) b->round_max_inflight = in_flight + size;
  /* A flight that starts from nothing starts the clocks afresh (the
   * draft's delivery rate estimation, section 3.2). */
  if (!in_flight) b->first_sent_us = b->delivered_us = now;
  stamp->delivered = b->delivered;
  stamp->delivered_us = b->delivered_us;
  stamp->first_sent_us = b->first_sent_us;
  stamp->app_limited = b->app_limited_until != 0;
}

void kp_bbr_on_app_limited(kp_bbr_t *b, uint64_t in_flight) {
  b->app_limited_until = b->delivered + in_flight ? b->delivered + in_flight : 1;
}

void kp_bbr_on_acked(kp_bbr_t *b, const kp_rate_stamp_t *stamp, uint64_t size, uint64_t sent_us,
                     uint64_t now) {
  kp_rate_sample_t *rs = &b->rs;
  b->delivered += size;
  b->delivered_us = now;
  /* The sample is the newest packet's: the one sent last among those
   * this ack covers (the recovery hands them over newest first). */
  if (!rs->any || stamp->delivered > rs->prior_delivered ||
      (stamp->delivered == rs->prior_delivered && sent_us > b->first_sent_us)) {
    rs->prior_delivered = stamp->delivered;
    rs->prior_us = stamp->delivered_us;
    rs->app_limited = stamp->app_limited;
    rs->send_elapsed = sent_us - stamp->first_sent_us;
    rs->ack_elapsed = now - stamp->delivered_us;
    rs->rtt_us = now > sent_us ? now - sent_us : 1;
    b->first_sent_us = sent_us;
  }
  rs->any = true;
  rs->acked += size;
  if (b->app_limited_until && b->delivered > b->app_limited_until) b->app_limited_until = 0;
}

void kp_bbr_on_lost(kp_bbr_t *b, uint64_t size) {
  b->rs.lost += size;
  b->round_lost += size;
}

/* The delivery rate of this ack's sample, bytes per second; 0 if it says
 * nothing (an interval shorter than the path's RTT is an artefact of
 * bunched acks). */
static uint64_t sample_rate(const kp_bbr_t *b) {
  const kp_rate_sample_t *rs = &b->rs;
  uint64_t interval = rs->send_elapsed > rs->ack_elapsed ? rs->send_elapsed : rs->ack_elapsed;
  uint64_t delivered = b->delivered - rs->prior_delivered;
  if (!interval || !delivered || (b->min_rtt_us != UINT64_MAX && interval < b->min_rtt_us))
    return 0;
  return (uint64_t)((double)delivered * 1e6 / (double)interval);
}

/* Ack aggregation (Linux's bbr_update_ack_aggregation): how far acks ran
 * ahead of the estimated rate in a burst; the window keeps that much
 * extra, so bunched acks (GRO, delayed acks) do not starve the pipe. */
static void update_ack_aggregation(kp_bbr_t *b, uint64_t now) {
  uint64_t bw = kp_bbr_bw(b);
  if (!bw || !b->rs.acked) return;
  uint64_t expected = (uint64_t)((double)bw * (double)(now - b->ack_epoch_us) / 1e6);
  if (b->ack_epoch_acked <= expected || b->ack_epoch_acked + b->rs.acked >= (1u << 30)) {
    b->ack_epoch_acked = 0;
    b->ack_epoch_us = now;
    expected = 0;
  }
  b->ack_epoch_acked += b->rs.acked;
  uint64_t extra = b->ack_epoch_acked - expected;
  if (extra > b->cwnd) extra = b->cwnd;
  uint64_t cap = (uint64_t)((double)bw * EXTRA_ACKED_MAX_US / 1e6);
  if (extra > cap) extra = cap;
  b->extra_acked =
      minmax_max(&b->extra_acked_filter, EXTRA_ACKED_WINDOW_ROUNDS, b->round_count, extra);
}

static void enter_probe_bw(kp_bbr_t *b, uint64_t now) {
  b->mode = KP_BBR_PROBE_BW;
  b->cwnd_gain = CWND_GAIN;
  /* Start anywhere but in the drain phase, so flows that start together
   * do not probe in step (the random source is injected). */
  b->cycle_index = (CYCLE_LEN - 1 - kp_rng_below(&b->rng, CYCLE_LEN - 1)) % CYCLE_LEN;
  if (b->cycle_index == 1) b->cycle_index = 2;
  b->cycle_stamp_us = now;
  b->pacing_gain = cycle_gains[b->cycle_index];
}

/* A standing queue: the floor of recent round trips (kp_recovery_rtt_floor)
 * a sixteenth of the path's minimum over it, and at least 1 ms (below that,
 * scheduling noise on a fast path looks like queueing). A shallow buffer
 * when full holds a quarter of a round trip or less; the probes' own queue
 * (a quarter of a BDP for one round) does not last long enough to lift
 * the floor. */
static bool queue_standing(const kp_bbr_t *b, uint64_t rtt_floor) {
  uint64_t slack = b->min_rtt_us / 16 > 1000 ? b->min_rtt_us / 16 : 1000;
  return rtt_floor > b->min_rtt_us + slack;
}

/* A round ended with its losses counted: congestion, if they are many and
 * there is a queue. A startup that meets it is over. */
static void check_congestion(kp_bbr_t *b, uint64_t in_flight, uint64_t rtt_floor) {
  uint64_t lost = b->round_lost, total = b->round_lost + b->round_delivered;
  /* One loss in a round of a few packets is chance (a 1% lossy path does
   * that every few rounds), not a queue: taken as one, each such round
   * would cut the rate again, and a slow round has fewer packets still. */
  bool congested = total && (double)lost > KP_BBR_LOSS_THRESH * (double)total &&
                   lost >= MIN_LOSS_PACKETS * b->mss && b->min_rtt_us != UINT64_MAX &&
                   b->mode != KP_BBR_PROBE_RTT;
  bool heavy = congested && (double)lost > LOSS_HEAVY * (double)total && lost >= 4 * b->mss;
  if (congested && !heavy) congested = queue_standing(b, rtt_floor);
  uint64_t peak = b->round_max_inflight > in_flight ? b->round_max_inflight : in_flight;
  if (congested) {
    b->congestion_events++;
    /* Pace below the estimate until the next probe: what this round
     * delivered, or most of the estimate (BBRv2's bw_lo), so the flow with
     * the bigger share gives way first. */
    uint64_t lo = (uint64_t)(INFLIGHT_HI_BETA * (double)kp_bbr_bw(b));
    b->bw_lo = b->bw_latest > lo ? b->bw_latest : lo;
    uint64_t hi = (uint64_t)(INFLIGHT_HI_BETA * (double)peak);
    uint64_t bdp = kp_bbr_bdp(b);
    /* A queue that overflows still leaves the pipe full: never under one
     * BDP then. Heavy loss says the model itself is stale. */
    if (hi < bdp && !heavy) hi = bdp;
    if (hi < min_cwnd(b)) hi = min_cwnd(b);
    if (hi < b->inflight_hi) b->inflight_hi = hi;
    if (!b->full_pipe) b->full_pipe = true; /* the queue overflowed: the pipe is full */
    b->hi_growth_rounds = 0;
  } else if (b->inflight_hi != UINT64_MAX && peak + b->mss >= b->inflight_hi) {
    /* It held us back and nothing overflowed: let it up. */
    b->inflight_hi += b->mss << b->hi_growth_rounds;
    if (b->hi_growth_rounds < INFLIGHT_HI_GROWTH_MAX) b->hi_growth_rounds++;
    /* Far above what the model wants anyway: gone. */
    if (b->inflight_hi > 4 * kp_bbr_bdp(b) + b->extra_acked) b->inflight_hi = UINT64_MAX;
  }
  b->round_lost = b->round_delivered = 0;
  b->round_max_inflight = 0;
  b->bw_latest = 0;
}

static void check_full_pipe(kp_bbr_t *b) {
  if (b->full_pipe || !b->round_start || b->rs.app_limited) return;
  uint64_t bw = kp_bbr_bw(b);
  if ((double)bw >= (double)b->full_bw * FULL_BW_THRESH) {
    b->full_bw = bw;
    b->full_bw_count = 0;
    return;
  }
  if (++b->full_bw_count >= FULL_BW_COUNT) b->full_pipe = true;
}

static void advance_cycle(kp_bbr_t *b, uint64_t in_flight, uint64_t now) {
  double gain = b->pacing_gain;
  bool full_length = now - b->cycle_stamp_us > b->min_rtt_us;
  bool next;
  if (gain > 1)
    /* The probe runs a round trip and until it has put its extra in
     * flight (or met loss). */
    next = full_length && (b->rs.lost || in_flight >= (uint64_t)(gain * (double)kp_bbr_bdp(b)));
  else if (gain < 1)
    next = full_length || in_flight <= kp_bbr_bdp(b);
  else
    next = full_length;
  if (!next) return;
  b->cycle_index = (b->cycle_index + 1) % CYCLE_LEN;
  b->cycle_stamp_us = now;
  b->pacing_gain = cycle_gains[b->cycle_index];
  if (b->pacing_gain > 1) b->bw_lo = UINT64_MAX; /* a probe looks past it */
}

/* The RTT minimum expires after KP_BBR_MIN_RTT_WINDOW_US: PROBE_RTT then
 * holds half a BDP in flight (the BDP of the old minimum: a standing queue
 * must not size the window meant to drain it) for 200 ms and a round trip,
 * and the lowest sample of that stretch is the new minimum, higher or
 * lower. */
static void update_min_rtt(kp_bbr_t *b, uint64_t in_flight, uint64_t now) {
  uint64_t rtt = b->rs.rtt_us;
  if (b->mode == KP_BBR_PROBE_RTT && rtt && rtt < b->probe_rtt_min_us) b->probe_rtt_min_us = rtt;
  if (now - b->min_rtt_stamp_us > KP_BBR_MIN_RTT_WINDOW_US && b->mode != KP_BBR_PROBE_RTT) {
    if (!b->full_pipe) {
      if (rtt) b->min_rtt_us = rtt, b->min_rtt_stamp_us = now;
      return;
    }
    b->mode = KP_BBR_PROBE_RTT;
    b->pacing_gain = 1;
    b->probe_rtt_done_us = 0;
    b->probe_rtt_min_us = UINT64_MAX;
  }
  if (b->mode != KP_BBR_PROBE_RTT) return;
  uint64_t target = (uint64_t)(PROBE_RTT_CWND_GAIN * (double)kp_bbr_bdp(b));
  if (target < min_cwnd(b)) target = min_cwnd(b);
  if (!b->probe_rtt_done_us && in_flight <= target) {
    b->probe_rtt_done_us = now + PROBE_RTT_US;
    b->probe_rtt_round_done = false;
    b->next_round_delivered = b->delivered;
  } else if (b->probe_rtt_done_us) {
    if (b->round_start) b->probe_rtt_round_done = true;
    if (b->probe_rtt_round_done && now >= b->probe_rtt_done_us) {
      if (b->probe_rtt_min_us != UINT64_MAX) b->min_rtt_us = b->probe_rtt_min_us;
      b->min_rtt_stamp_us = now;
      enter_probe_bw(b, now);
    }
  }
}

static void set_outputs(kp_bbr_t *b) {
  uint64_t bw = kp_bbr_bw(b);
  if (bw) {
    uint64_t rate = (uint64_t)(b->pacing_gain * (double)bw * PACING_MARGIN);
    /* Startup never slows down: a low early sample is not the path. */
    if (b->full_pipe || rate > b->pacing_rate) b->pacing_rate = rate;
  }
  /* Never slower than the smallest window per round trip: whatever the
   * model says, that much is what the window allows anyway, and a model
   * gone wrong (samples from a path just left) must not starve the acks
   * that would correct it. */
  if (b->min_rtt_us != UINT64_MAX && b->min_rtt_us) {
    uint64_t floor = min_cwnd(b) * 1000000 / b->min_rtt_us;
    if (b->pacing_rate < floor) b->pacing_rate = floor;
  }
  uint64_t bdp = kp_bbr_bdp(b);
  uint64_t target = (uint64_t)(b->cwnd_gain * (double)bdp);
  if (b->full_pipe) target += b->extra_acked;
  if (target < min_cwnd(b)) target = min_cwnd(b);
  if (b->full_pipe) {
    uint64_t grown = b->cwnd + b->rs.acked;
    b->cwnd = grown < target ? grown : target;
  } else if (b->cwnd < target || b->delivered < INITIAL_CWND_PACKETS * b->mss) {
    b->cwnd += b->rs.acked; /* startup: a byte more for every byte acked */
  }
  if (b->cwnd > b->inflight_hi) b->cwnd = b->inflight_hi;
  if (b->mode == KP_BBR_PROBE_RTT) {
    uint64_t probe = (uint64_t)(PROBE_RTT_CWND_GAIN * (double)bdp);
    if (b->cwnd > probe) b->cwnd = probe;
  }
  if (b->rto_recovery) b->cwnd = min_cwnd(b);
  if (b->cwnd < min_cwnd(b)) b->cwnd = min_cwnd(b);
}

void kp_bbr_on_ack_done(kp_bbr_t *b, uint64_t in_flight, uint64_t rtt_floor, uint64_t now) {
  kp_rate_sample_t *rs = &b->rs;
  b->round_start = false;
  if (rs->any) {
    if (b->rto_recovery && now > b->rto_us) b->rto_recovery = false;
    /* A round ends when a packet sent after it began is delivered. */
    if (rs->prior_delivered >= b->next_round_delivered) {
      b->next_round_delivered = b->delivered;
      b->round_count++;
      b->round_start = true;
    }
    if (rs->rtt_us && rs->rtt_us < b->min_rtt_us) {
      b->min_rtt_us = rs->rtt_us;
      b->min_rtt_stamp_us = now;
    }
    uint64_t bw = sample_rate(b);
    if (bw && (!rs->app_limited || bw >= max_bw(b)))
      minmax_max(&b->bw, KP_BBR_BW_WINDOW_ROUNDS, b->round_count, bw);
    if (bw > b->bw_latest) b->bw_latest = bw;
    update_ack_aggregation(b, now);
    b->round_delivered += rs->acked;
  }
  if (b->round_start) check_congestion(b, in_flight, rtt_floor);
  check_full_pipe(b);
  if (b->mode == KP_BBR_STARTUP && b->full_pipe) {
    b->mode = KP_BBR_DRAIN;
    b->pacing_gain = DRAIN_PACING_GAIN;
    b->cwnd_gain = STARTUP_CWND_GAIN;
  }
  if (b->mode == KP_BBR_DRAIN && in_flight <= kp_bbr_bdp(b)) enter_probe_bw(b, now);
  if (b->mode == KP_BBR_PROBE_BW && rs->any) advance_cycle(b, in_flight, now);
  update_min_rtt(b, in_flight, now);
  set_outputs(b);
  memset(rs, 0, sizeof(*rs));
}

void kp_bbr_on_rto(kp_bbr_t *b, uint64_t now) {
  /* The model stays (a timeout is a silence, not a measurement); the
   * window shrinks to a few packets until an ack for something sent
   * after now comes back. */
  b->rto_recovery = true;
  b->rto_us = now;
  b->cwnd = min_cwnd(b);
  b->round_lost = b->round_delivered = 0;
}
