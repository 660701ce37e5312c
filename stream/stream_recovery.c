/* SPDX-License-Identifier: MIT */
#include "stream/stream_recovery.h"

#include <string.h>

#include "common/alloc.h"
#include "kadpunch_base.h"
#include "stream/stream_frame.h"

int kp_recovery_init(kp_recovery_t *r, const kp_recovery_hooks_t *hooks) {
  memset(r, 0, sizeof(*r));
  r->hooks = *hooks;
  r->srtt_us = KP_INITIAL_RTT_US;
  r->rttvar_us = KP_INITIAL_RTT_US / 2;
  r->min_rtt_us = UINT64_MAX;
  r->packet_threshold = KP_PACKET_THRESHOLD;
  for (size_t i = 0; i < KP_RECENT_LOST; i++) r->recent_lost[i] = UINT64_MAX;
  r->cap = 16; /* grows (doubling) with the window: an idle connection stays small */
  r->ring = kp_malloc(r->cap * sizeof(*r->ring));
  return r->ring ? 0 : KP_ENOMEM;
}

void kp_recovery_destroy(kp_recovery_t *r) {
  kp_free(r->ring);
  memset(r, 0, sizeof(*r));
}

static kp_sent_t *at(kp_recovery_t *r, uint64_t pn) {
  return &r->ring[(r->head + (size_t)(pn - r->first_pn)) & (r->cap - 1)];
}

static int grow(kp_recovery_t *r) {
  size_t cap = r->cap * 2;
  kp_sent_t *ring = kp_malloc(cap * sizeof(*ring));
  if (!ring) return KP_ENOMEM;
  for (size_t i = 0; i < r->count; i++) ring[i] = r->ring[(r->head + i) & (r->cap - 1)];
  kp_free(r->ring);
  r->ring = ring;
  r->cap = cap;
  r->head = 0;
  return 0;
}

/* Drops the oldest entries nobody waits for any more. */
static void trim(kp_recovery_t *r) {
  while (r->count) {
    kp_sent_t *p = &r->ring[r->head];
    if (!(p->flags & (KP_SENT_ACKED | KP_SENT_LOST)) && (p->flags & KP_SENT_ACK_ELICITING)) break;
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
    r->first_pn++;
  }
  if (!r->count) r->first_pn = r->next_pn;
}

int kp_recovery_reserve(kp_recovery_t *r) {
  return r->count == r->cap ? grow(r) : 0;
}

int kp_recovery_on_sent(kp_recovery_t *r, const kp_sent_t *p) {
  if (r->count == r->cap && grow(r)) return KP_ENOMEM;
  if (!r->count) r->first_pn = r->next_pn;
  r->ring[(r->head + r->count) & (r->cap - 1)] = *p;
  r->count++;
  r->next_pn++;
  if (p->flags & KP_SENT_IN_FLIGHT) r->bytes_in_flight += p->size;
  if (p->flags & KP_SENT_ACK_ELICITING) r->last_eliciting_us = p->sent_us;
  trim(r);
  return 0;
}

/* The floor of recent round trips: the minimum over the last two windows
 * of max(2 SRTT, 2 ms). A one-off slow sample (the peer's scheduler, a
 * delayed ack) does not raise it; a standing queue does. */
static void track_floor(kp_recovery_t *r, uint64_t rtt, uint64_t now) {
  uint64_t window = 2 * r->srtt_us > 2000 ? 2 * r->srtt_us : 2000;
  if (!r->floor_start_us || now - r->floor_start_us >= window) {
    r->floor_prev_us = r->floor_start_us ? r->floor_cur_us : rtt;
    r->floor_cur_us = rtt;
    r->floor_start_us = now;
  } else if (rtt < r->floor_cur_us) {
    r->floor_cur_us = rtt;
  }
}

uint64_t kp_recovery_rtt_floor(const kp_recovery_t *r) {
  if (!r->have_rtt) return r->srtt_us;
  return r->floor_cur_us < r->floor_prev_us ? r->floor_cur_us : r->floor_prev_us;
}

static void rtt_sample(kp_recovery_t *r, uint64_t rtt, uint64_t ack_delay, uint64_t now) {
  r->latest_rtt_us = rtt;
  if (rtt < r->min_rtt_us) r->min_rtt_us = rtt;
  track_floor(r, rtt, now);
  /* The peer's ack delay is not network time, unless it would take the
   * sample below the minimum seen (RFC 9002 section 5.3). */
  if (ack_delay > KP_MAX_ACK_DELAY_US) ack_delay = KP_MAX_ACK_DELAY_US;
  if (rtt >= r->min_rtt_us + ack_delay) rtt -= ack_delay;
  if (!r->have_rtt) {
    r->have_rtt = true;
    r->srtt_us = rtt;
    r->rttvar_us = rtt / 2;
    return;
  }
  /* RFC 6298 section 2.3. */
  uint64_t err = rtt > r->srtt_us ? rtt - r->srtt_us : r->srtt_us - rtt;
  r->rttvar_us = (3 * r->rttvar_us + err) / 4;
  r->srtt_us = (7 * r->srtt_us + rtt) / 8;
}

/* reordering: declared by the thresholds (a timeout's verdict is not
 * remembered: a late ack then says nothing about reordering). */
static void declare_lost(kp_recovery_t *r, uint64_t pn, kp_sent_t *p, uint64_t now,
                         bool reordering) {
  p->flags |= KP_SENT_LOST;
  if (p->flags & KP_SENT_IN_FLIGHT) r->bytes_in_flight -= p->size;
  r->lost_packets++;
  if (reordering) {
    r->recent_lost[r->recent_lost_next] = pn;
    r->recent_lost_next = (r->recent_lost_next + 1) % KP_RECENT_LOST;
  }
  /* The hooks get a copy: whatever they do, the ring may not move under
   * them. */
  kp_sent_t copy = *p;
  p = &copy;
  if (r->hooks.packet_lost) r->hooks.packet_lost(r->hooks.ctx, p, now);
  for (unsigned i = 0; i < p->nframes; i++) {
    r->retransmits++;
    if (p->frames[i].type == KP_FRAME_STREAM) r->retransmit_bytes += p->frames[i].len;
    r->hooks.frame_lost(r->hooks.ctx, &p->frames[i]);
  }
}

static uint64_t loss_delay(const kp_recovery_t *r) {
  uint64_t base = r->latest_rtt_us > r->srtt_us ? r->latest_rtt_us : r->srtt_us;
  uint64_t d = base * 9 / 8;
  if (r->reorder_mult && r->min_rtt_us != UINT64_MAX) d += r->reorder_mult * r->min_rtt_us / 4;
  return d > KP_GRANULARITY_US ? d : KP_GRANULARITY_US;
}

/* Declares lost what the latest ack shows missing (RFC 9002 section 6.1). */
static void detect_losses(kp_recovery_t *r, uint64_t now) {
  r->loss_time_us = 0;
  if (!r->any_acked) return;
  uint64_t delay = loss_delay(r);
  for (uint64_t pn = r->first_pn; pn < r->largest_acked && pn < r->next_pn; pn++) {
    kp_sent_t *p = at(r, pn);
    if (p->flags & (KP_SENT_ACKED | KP_SENT_LOST) || !(p->flags & KP_SENT_ACK_ELICITING)) continue;
    if (r->largest_acked >= pn + r->packet_threshold || now >= p->sent_us + delay) {
      declare_lost(r, pn, p, now, true);
    } else {
      uint64_t t = p->sent_us + delay;
      if (!r->loss_time_us || t < r->loss_time_us) r->loss_time_us = t;
    }
  }
}

/* Whether ack reports pn received (QUIC's range walk). */
static bool ack_covers(const kp_stream_ack_t *ack, uint64_t pn) {
  uint64_t hi = ack->largest;
  for (int i = -1; i < (int)ack->count; i++) {
    uint64_t len = i < 0 ? ack->first : ack->ranges[i].length;
    if (i >= 0) {
      uint64_t skip = (uint64_t)ack->ranges[i].gap + 2;
      if (hi < skip) return false;
      hi -= skip;
    }
    if (pn > hi) return false; /* in the gap above this range */
    if (pn + len >= hi) return true;
    hi = hi >= len ? hi - len : 0;
  }
  return false;
}

/* The lowest packet number an ack's ranges reach. */
static uint64_t ack_lowest(const kp_stream_ack_t *ack) {
  uint64_t lo = ack->largest >= ack->first ? ack->largest - ack->first : 0;
  for (unsigned i = 0; i < ack->count; i++) {
    uint64_t step = (uint64_t)ack->ranges[i].gap + 2 + ack->ranges[i].length;
    if (lo < step) return 0;
    lo -= step;
  }
  return lo;
}

/* Packets we declared lost that the ack reports received arrived after
 * all: widen the thresholds that misjudged them. */
static void spurious_losses(kp_recovery_t *r, const kp_stream_ack_t *ack) {
  uint64_t lowest = ack_lowest(ack);
  for (size_t i = 0; i < KP_RECENT_LOST; i++) {
    uint64_t pn = r->recent_lost[i];
    if (pn == UINT64_MAX || pn > ack->largest) continue;
    if (pn < lowest) {
      /* Below what acks still report: the receiver has forgotten that
       * far back, so no ack will ever show it. */
      r->recent_lost[i] = UINT64_MAX;
      continue;
    }
    if (!ack_covers(ack, pn)) continue;
    r->recent_lost[i] = UINT64_MAX;
    r->spurious_losses++;
    if (r->packet_threshold < KP_PACKET_THRESHOLD_MAX) r->packet_threshold *= 2;
    if (r->reorder_mult < KP_REORDER_MULT_MAX) r->reorder_mult++;
  }
}

size_t kp_recovery_on_ack(kp_recovery_t *r, const kp_stream_ack_t *ack, uint64_t now) {
  size_t newly = 0;
  uint64_t hi = ack->largest, lo;
  if (hi >= r->next_pn) return 0; /* acks a packet we never sent: ignore it all */
  bool largest_new = false;
  spurious_losses(r, ack);
  /* Every packet a packet threshold below the largest acked is settled
   * (acked or declared lost) already: ranges repeat in every ack, and
   * walking them again would cost O(window) per ack. */
  uint64_t settled = r->any_acked && r->largest_acked > r->packet_threshold
                         ? r->largest_acked - r->packet_threshold
                         : 0;
  for (int i = -1; i < (int)ack->count; i++) {
    uint64_t len = i < 0 ? ack->first : ack->ranges[i].length;
    if (i >= 0) {
      uint64_t skip = (uint64_t)ack->ranges[i].gap + 2;
      if (hi < skip) break;
      hi -= skip;
    }
    lo = hi >= len ? hi - len : 0;
    for (uint64_t pn = hi < r->next_pn ? hi : r->next_pn - 1;; pn--) {
      if (pn < r->first_pn || pn < lo || pn < settled) break;
      kp_sent_t *p = at(r, pn);
      if (!(p->flags & (KP_SENT_ACKED | KP_SENT_LOST)) && (p->flags & KP_SENT_ACK_ELICITING)) {
        p->flags |= KP_SENT_ACKED;
        if (p->flags & KP_SENT_IN_FLIGHT) r->bytes_in_flight -= p->size;
        if (pn == ack->largest) largest_new = true;
        kp_sent_t copy = *p; /* as in declare_lost */
        if (r->hooks.packet_acked) r->hooks.packet_acked(r->hooks.ctx, &copy, now);
        for (unsigned f = 0; f < copy.nframes; f++)
          r->hooks.frame_acked(r->hooks.ctx, &copy.frames[f]);
        newly++;
      }
      if (pn == 0) break;
    }
    if (lo == 0) break;
    hi = lo;
  }
  if (!r->any_acked || ack->largest > r->largest_acked) {
    r->largest_acked = ack->largest;
    r->any_acked = true;
  }
  if (largest_new && ack->largest >= r->first_pn) {
    const kp_sent_t *p = at(r, ack->largest);
    if (now >= p->sent_us) rtt_sample(r, now - p->sent_us, (uint64_t)ack->delay_8us * 8, now);
  }
  if (newly) r->pto_count = 0;
  detect_losses(r, now);
  trim(r);
  return newly;
}

uint64_t kp_recovery_pto(const kp_recovery_t *r) {
  uint64_t var = 4 * r->rttvar_us;
  if (var < KP_GRANULARITY_US) var = KP_GRANULARITY_US;
  /* No allowance for the peer's ack delay (QUIC adds max_ack_delay): the
   * last packet before a pause asks for its ack at once (ACK_NOW). */
  return r->srtt_us + var + KP_GRANULARITY_US;
}

static bool anything_outstanding(const kp_recovery_t *r) {
  for (uint64_t pn = r->first_pn; pn < r->next_pn; pn++) {
    const kp_sent_t *p = &r->ring[(r->head + (size_t)(pn - r->first_pn)) & (r->cap - 1)];
    if ((p->flags & KP_SENT_ACK_ELICITING) && !(p->flags & (KP_SENT_ACKED | KP_SENT_LOST)))
      return true;
  }
  return false;
}

uint64_t kp_recovery_deadline(const kp_recovery_t *r) {
  if (r->loss_time_us) return r->loss_time_us;
  if (!r->count || !anything_outstanding(r)) return UINT64_MAX;
  unsigned shift = r->pto_count < 16 ? r->pto_count : 16;
  return r->last_eliciting_us + (kp_recovery_pto(r) << shift);
}

int kp_recovery_on_timeout(kp_recovery_t *r, uint64_t now, bool *rto) {
  *rto = false;
  if (r->loss_time_us && now >= r->loss_time_us) {
    detect_losses(r, now);
    trim(r);
    return 0;
  }
  if (now < kp_recovery_deadline(r)) return 0;
  /* The first expiry probes the tail (a lost last packet gets no later ack
   * to reveal it); after that it is an RTO: give up on everything out. */
  r->probe_timeouts++;
  if (r->pto_count++ > 0) {
    *rto = true;
    kp_recovery_all_lost(r, now);
  }
  r->last_eliciting_us = now;
  return 1;
}

void kp_recovery_all_lost(kp_recovery_t *r, uint64_t now) {
  for (uint64_t pn = r->first_pn; pn < r->next_pn; pn++) {
    kp_sent_t *p = at(r, pn);
    if ((p->flags & KP_SENT_ACK_ELICITING) && !(p->flags & (KP_SENT_ACKED | KP_SENT_LOST)))
      declare_lost(r, pn, p, now, false);
  }
  r->loss_time_us = 0;
  trim(r);
}
