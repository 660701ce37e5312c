/* SPDX-License-Identifier: MIT */
/* The connection core: receiving and building packets, acks, timers, paths,
 * MTU probing and closing. Streams are in stream_streams.c. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "stream/stream_conn_internal.h"

/* Path MTU probing (RFC 8899 style): sizes to try, largest first, each
 * given three chances before the next smaller one. */
#define PROBE_TRIES 3
#define PROBE_AGAIN_US (600ull * 1000 * 1000) /* re-probe after ten minutes */
#define PATH_CHALLENGES 5
#define MAX_UDP_V4 1472 /* a 1500-byte link: 20 (IPv4) + 8 (UDP) */
#define MAX_UDP_V6 1452 /* 40 (IPv6) + 8 (UDP) */
/* What every path carries (IPv6's minimum MTU, less headers, with room):
 * where a path move or a black hole sends the datagram size back. */
#define BASE_MTU 1200
/* Bytes an ACK_FREQUENCY frame may take: a type and two varints. */
#define ACK_FREQUENCY_ROOM 17
/* Datagrams bigger than BASE_MTU lost in a row that mean a black hole. */
#define BLACK_HOLE_RUN 32

static const unsigned probe_sizes[KP_MTU_PROBE_SIZES] = {MAX_UDP_V4, MAX_UDP_V6, 1400, 1280};

void kp_sconn_config_defaults(kp_sconn_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->cipher = KP_CIPHER_CHACHA20_POLY1305;
  cfg->mtu = 1200;
  cfg->pmtu_probe = true;
  cfg->stream_window = 2u << 20;
  cfg->conn_window = 16u << 20;
  cfg->stream_window_max = 64u << 20;
  cfg->conn_window_max = 64u << 20;
  cfg->max_streams = 256;
  cfg->idle_timeout_ms = 30000;
  cfg->keepalive_ms = 10000;
  cfg->path_dead_ms = 1000;
  /* cfg->rng: the creator's (a core draws no randomness of its own). */
}

/* ---- Congestion control ------------------------------------------------------- */

/* The model paces in bursts of at most this long at its rate (and two
 * packets at least): the timers run to the microsecond under 2 ms, and a
 * shallow queue at the bottleneck takes what a millisecond brings. */
#define PACING_BURST_US 1000

static uint64_t cwnd(const kp_sconn_t *c) {
  return c->model ? c->bbr.cwnd : c->cc.cwnd;
}

/* What a wait for the pacer waits for: PACING_QUANTUM_US at the rate (a
 * packet at least, a burst at most), so a paced sender wakes a few
 * thousand times a second and sends a batch, not once per packet. */
#define PACING_QUANTUM_US 250

static uint64_t pacing_quantum(const kp_sconn_t *c) {
  if (!c->model) return c->mtu;
  double q = c->pacer.rate * PACING_QUANTUM_US;
  if (q > c->pacer.burst) q = c->pacer.burst;
  return q > c->mtu ? (uint64_t)q : c->mtu;
}

/* A new controller, for a new connection or a new path. */
static void cc_start(kp_sconn_t *c, uint64_t mss, uint64_t now) {
  kp_cubic_init(&c->cc, mss);
  kp_bbr_init(&c->bbr, mss, c->cfg.rng, now);
  kp_pacer_init(&c->pacer);
}

static void cc_set_mss(kp_sconn_t *c, uint64_t mss) {
  kp_cubic_set_mss(&c->cc, mss);
  kp_bbr_set_mss(&c->bbr, mss);
}

static void pace(kp_sconn_t *c, uint64_t now) {
  if (!c->model) {
    kp_pacer_update(&c->pacer, &c->cc, c->rec.have_rtt ? c->rec.srtt_us : KP_INITIAL_RTT_US, now);
    return;
  }
  double rate = (double)c->bbr.pacing_rate;
  double burst = rate * PACING_BURST_US / 1e6;
  if (burst < 2.0 * c->mtu) burst = 2.0 * c->mtu;
  kp_pacer_set(&c->pacer, rate, burst, now);
}

/* ---- Recovery hooks ----------------------------------------------------------- */

static void on_frame_acked(void *ctx, const kp_sent_frame_t *f) {
  kp_sconn_t *c = ctx;
  if (f->type == KP_FRAME_STREAM || f->type == KP_FRAME_RESET_STREAM ||
      f->type == KP_FRAME_STOP_SENDING)
    kp__sstream_frame_acked(c, f);
}

static void on_frame_lost(void *ctx, const kp_sent_frame_t *f) {
  kp_sconn_t *c = ctx;
  switch (f->type) {
    case KP_FRAME_STREAM:
    case KP_FRAME_RESET_STREAM:
    case KP_FRAME_STOP_SENDING:
    case KP_FRAME_MAX_STREAM_DATA: kp__sstream_frame_lost(c, f); break;
    case KP_FRAME_ACK_FREQUENCY:
      if (f->offset == c->ack_freq_seq) c->ack_freq_pending = true; /* still the latest */
      break;
    default: break; /* PING, PATH_*, CLOSE: regenerated when still needed */
  }
}

/* ---- Path MTU ---------------------------------------------------------------- */

/* Every candidate size is probed at once, one probe of each in flight (RFC
 * 8899 section 5.3.1 allows several), so finding a path's size takes the
 * round trips of three failures, not of three per size tried in turn. */

static unsigned probe_bit(unsigned size) {
  for (unsigned i = 0; i < KP_MTU_PROBE_SIZES; i++)
    if (probe_sizes[i] == size) return 1u << i;
  return 0;
}

/* Bigger than what the path is known to carry, within the family's limit,
 * and not failed three times. */
static bool probe_candidate(const kp_sconn_t *c, unsigned i) {
  return probe_sizes[i] > c->mtu && probe_sizes[i] <= c->mtu_max &&
         c->probe_failures[i] < PROBE_TRIES;
}

/* Probing starts over from the top at `at` (a new path, a black hole, or a
 * while after the last search). */
static void probe_restart(kp_sconn_t *c, uint64_t at) {
  memset(c->probe_failures, 0, sizeof(c->probe_failures));
  c->probe_inflight = 0;
  c->probe_at = at;
}

/* The largest candidate without a probe in flight, 0 if none (or none is
 * due). */
static unsigned probe_now(const kp_sconn_t *c, uint64_t now) {
  if (!c->rec.have_rtt || now < c->probe_at) return 0;
  for (unsigned i = 0; i < KP_MTU_PROBE_SIZES; i++)
    if (probe_candidate(c, i) && !(c->probe_inflight & (1u << i))) return probe_sizes[i];
  return 0;
}

/* After a probe's verdict: when no candidate is left, the search is over
 * until bigger sizes may pass again (a route changes). */
static void probe_settle(kp_sconn_t *c, uint64_t now) {
  if (c->probe_inflight) return;
  for (unsigned i = 0; i < KP_MTU_PROBE_SIZES; i++)
    if (probe_candidate(c, i)) return;
  probe_restart(c, c->mtu < c->mtu_max ? now + PROBE_AGAIN_US : UINT64_MAX);
}

/* Nothing big gets through: maybe only big datagrams do not (the route
 * changed under us, RFC 8899's black hole). Back to the safe size; probing
 * finds the new limit. */
static void black_hole(kp_sconn_t *c, uint64_t now) {
  if (c->mtu <= BASE_MTU) return;
  c->mtu = BASE_MTU;
  cc_set_mss(c, c->mtu);
  probe_restart(c, now);
}

static void on_packet_acked(void *ctx, const kp_sent_t *p, uint64_t now) {
  kp_sconn_t *c = ctx;
  if (p->flags & KP_SENT_MTU_PROBE) {
    /* The path carries datagrams this large. */
    c->probe_inflight &= ~probe_bit(p->size);
    if (p->size > c->mtu) {
      c->mtu = p->size;
      cc_set_mss(c, c->mtu);
    }
    probe_settle(c, now);
    return;
  }
  if (p->size > BASE_MTU && p->sent_us >= c->big_acked_sent_us) {
    c->big_acked_sent_us = p->sent_us;
    c->big_lost_run = 0;
  }
  if (!(p->flags & KP_SENT_IN_FLIGHT)) return;
  if (c->model) {
    kp_bbr_on_acked(&c->bbr, &p->rate, p->size, p->sent_us, now);
    return;
  }
  kp_loss_gate_on_outcome(&c->loss_gate, false);
  kp_cubic_on_ack(&c->cc, p->size, p->sent_us, now, c->rec.srtt_us, c->cwnd_limited);
}

static void on_packet_lost(void *ctx, const kp_sent_t *p, uint64_t now) {
  kp_sconn_t *c = ctx;
  c->stats.datagrams_lost += p->datagrams; /* gone: datagrams are never sent again */
  if (p->flags & KP_SENT_MTU_PROBE) {
    /* Too big for the path (or plain loss): a lost probe says nothing about
     * congestion. Three strikes and that size is out. */
    unsigned bit = probe_bit(p->size);
    c->probe_inflight &= ~bit;
    for (unsigned i = 0; i < KP_MTU_PROBE_SIZES; i++)
      if (bit == 1u << i) c->probe_failures[i]++;
    probe_settle(c, now);
    return;
  }
  /* Big datagrams lost, every one sent after the last big one that got
   * through, while small ones do (acks, window updates: they keep the
   * timeouts from ever firing), are a black hole too. Random loss does not
   * make runs this long, and an overflowing queue drops runs of packets
   * but delivers later ones. */
  if (p->size > BASE_MTU && p->sent_us > c->big_acked_sent_us &&
      ++c->big_lost_run >= BLACK_HOLE_RUN)
    black_hole(c, now);
  if (c->model) {
    kp_bbr_on_lost(&c->bbr, p->size); /* the model decides at the round's end */
    return;
  }
  kp_loss_gate_on_outcome(&c->loss_gate, true);
  /* The floor of recent RTTs, not the latest or the average: one slow
   * sample (the peer's scheduler) must not make every loss look like
   * congestion; a standing queue raises the floor. */
  if (kp_loss_gate_congestive(&c->loss_gate, kp_recovery_rtt_floor(&c->rec), c->rec.min_rtt_us))
    kp_cubic_on_loss(&c->cc, p->sent_us, now);
}

/* ---- Lifecycle --------------------------------------------------------------- */

int kp_sconn_new(const kp_sconn_config_t *cfg, const kp_sconn_events_t *ev, uint64_t now,
                 kp_sconn_t **out) {
  *out = NULL;
  if (!cfg->rng.fill) return KP_EINVAL;
  kp_sconn_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return KP_ENOMEM;
  kp_sconn_config_t d;
  kp_sconn_config_defaults(&d);
  c->cfg = *cfg;
  if (!c->cfg.mtu) c->cfg.mtu = d.mtu;
  if (!c->cfg.stream_window) c->cfg.stream_window = d.stream_window;
  if (!c->cfg.conn_window) c->cfg.conn_window = d.conn_window;
  if (!c->cfg.stream_window_max) c->cfg.stream_window_max = d.stream_window_max;
  if (!c->cfg.conn_window_max) c->cfg.conn_window_max = d.conn_window_max;
  if (!c->cfg.max_streams) c->cfg.max_streams = d.max_streams;
  if (!c->cfg.idle_timeout_ms) c->cfg.idle_timeout_ms = d.idle_timeout_ms;
  if (!c->cfg.keepalive_ms) c->cfg.keepalive_ms = d.keepalive_ms;
  if (!c->cfg.path_dead_ms) c->cfg.path_dead_ms = d.path_dead_ms;
  unsigned family_max = cfg->remote.family == KP_AF_INET6 ? MAX_UDP_V6 : MAX_UDP_V4;
  if (c->cfg.mtu < BASE_MTU || c->cfg.mtu > family_max || !kp_addr_is_set(&cfg->remote) ||
      c->cfg.stream_window < KP_STREAM_INITIAL_WINDOW ||
      c->cfg.conn_window < KP_CONN_INITIAL_WINDOW) {
    kp_free(c);
    return KP_ECONFIG;
  }
  if (ev) c->ev = *ev;
  int err = kp_aead_init(&c->tx, cfg->cipher, cfg->tx_key);
  if (!err && (err = kp_aead_init(&c->rx, cfg->cipher, cfg->rx_key))) kp_aead_destroy(&c->tx);
  /* The cipher states hold the keys now; the copies go. */
  sodium_memzero(c->cfg.tx_key, sizeof(c->cfg.tx_key));
  sodium_memzero(c->cfg.rx_key, sizeof(c->cfg.rx_key));
  kp_recovery_hooks_t hooks = {on_frame_acked, on_frame_lost, on_packet_acked, on_packet_lost, c};
  if (!err && (err = kp_recovery_init(&c->rec, &hooks))) {
    kp_aead_destroy(&c->tx);
    kp_aead_destroy(&c->rx);
  }
  if (err) {
    kp_free(c);
    return err;
  }
  c->remote = cfg->remote;
  c->mtu = c->cfg.mtu;
  c->mtu_max = family_max;
  if (!c->cfg.pmtu_probe) c->mtu_max = c->mtu;
  probe_restart(c, c->mtu < c->mtu_max ? now : UINT64_MAX);
  c->model = c->cfg.cc != KP_CC_CUBIC;
  c->ack_every = 2; /* RFC 9000 13.2.2, until the peer asks for fewer */
  c->conn_window = c->cfg.conn_window;
  c->stream_window = c->cfg.stream_window;
  cc_start(c, c->mtu, now);
  /* Until the peer's first ack says more, the protocol's initial limit. */
  c->peer_max_data = KP_CONN_INITIAL_WINDOW;
  c->max_data_sent = KP_CONN_INITIAL_WINDOW;
  c->next_local_id = cfg->initiator ? 0 : 1;
  c->next_peer_min = cfg->initiator ? 1 : 0;
  c->last_recv_us = c->last_eliciting_sent_us = now;
  c->state = S_OPEN;
  *out = c;
  return 0;
}

void kp_sconn_free(kp_sconn_t *c) {
  if (!c) return;
  kp__sstreams_free(c);
  kp__dgrams_free(c);
  kp_recovery_destroy(&c->rec);
  kp_aead_destroy(&c->tx);
  kp_aead_destroy(&c->rx);
  sodium_memzero(c, sizeof(*c));
  kp_free(c);
}

static void finish(kp_sconn_t *c, int status, uint64_t code) {
  if (c->state == S_CLOSED) return;
  c->state = S_CLOSED;
  kp__sstreams_fail_all(c, status ? status : KP_ECANCELED);
  kp__dgrams_free(c);
  if (c->ev.closed) c->ev.closed(c->ev.ctx, status, code);
}

void kp_sconn_close(kp_sconn_t *c, uint64_t code, const char *reason) {
  if (c->state != S_OPEN) return;
  c->state = S_CLOSING;
  c->close_pending = true;
  c->close_code = code;
  snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason ? reason : "");
  c->close_deadline_us = 0; /* set when the CLOSE leaves */
  c->closed_status = 0;
  kp__sstreams_fail_all(c, KP_ECANCELED);
  kp__dgrams_free(c);
}

void kp_sconn_abort(kp_sconn_t *c, int status) {
  finish(c, status, 0);
}

bool kp_sconn_is_closed(const kp_sconn_t *c) {
  return c->state == S_CLOSED;
}

uint64_t kp_sconn_local_cid(const kp_sconn_t *c) {
  return c->cfg.local_cid;
}

/* ---- Receiving ----------------------------------------------------------------- */

/* Receive windows follow the bandwidth-delay product the application's
 * reads measure. Every round trip, what was consumed in it is the path's
 * delivery for one RTT; the windows become three times that (one BDP in
 * flight, one held behind a loss until its retransmission fills the gap,
 * and room for the window update's own trip), never below the configured
 * sizes nor above the maxima. Only consumption grows them: a peer cannot
 * inflate them without delivering, and a paused stream keeps its window
 * (stream_streams.c grows a stream's only while it is read). */
static void autotune_windows(kp_sconn_t *c, uint64_t now) {
  /* (Not twice in one microsecond: a zero RTT is possible on a fast or a
   * forged clock, and the rate below would be 0/0.) */
  if (!c->rec.have_rtt || now - c->rwnd_at_us < c->rec.srtt_us || now == c->rwnd_at_us) return;
  uint64_t consumed = c->consumed - c->rwnd_consumed, elapsed = now - c->rwnd_at_us;
  c->rwnd_at_us = now;
  c->rwnd_consumed = c->consumed;
  uint64_t want = 3 * (uint64_t)((double)consumed * (double)c->rec.srtt_us / (double)elapsed);
  if (want > c->conn_window && c->conn_window < c->cfg.conn_window_max) {
    c->conn_window = want < c->cfg.conn_window_max ? want : c->cfg.conn_window_max;
    c->window_update_due = true;
  }
  if (want > c->stream_window && c->stream_window < c->cfg.stream_window_max)
    c->stream_window = want < c->cfg.stream_window_max ? want : c->cfg.stream_window_max;
}

/* Remembers pn for the acks we send: ranges newest first, the oldest
 * forgotten beyond KP_RECV_RANGES (the sender has declared those lost). */
static void note_received(kp_sconn_t *c, uint64_t pn, uint64_t now) {
  unsigned n = c->recv_range_count;
  unsigned i = 0;
  while (i < n && c->recv_ranges[i].lo > pn + 1) i++;
  if (i < n && pn + 1 >= c->recv_ranges[i].lo && pn <= c->recv_ranges[i].hi + 1) {
    if (pn > c->recv_ranges[i].hi) c->recv_ranges[i].hi = pn;
    if (pn < c->recv_ranges[i].lo) c->recv_ranges[i].lo = pn;
    /* Now touching the next (older) range? Merge. */
    if (i + 1 < n && c->recv_ranges[i + 1].hi + 1 >= c->recv_ranges[i].lo) {
      c->recv_ranges[i].lo = c->recv_ranges[i + 1].lo;
      memmove(&c->recv_ranges[i + 1], &c->recv_ranges[i + 2],
              (n - i - 2) * sizeof(c->recv_ranges[0]));
      c->recv_range_count--;
    }
  } else {
    if (n == KP_RECV_RANGES) {
      if (i == n) return; /* older than anything we still track */
      n--;
    }
    memmove(&c->recv_ranges[i + 1], &c->recv_ranges[i], (n - i) * sizeof(c->recv_ranges[0]));
    c->recv_ranges[i].lo = c->recv_ranges[i].hi = pn;
    c->recv_range_count = n + 1;
  }
  if (c->recv_ranges[0].hi == pn) c->largest_recv_us = now;
}

static void start_validation(kp_sconn_t *c, const kp_addr_t *from) {
  if (c->validating && kp_addr_eq(&c->candidate, from)) return;
  c->validating = true;
  c->candidate = *from;
  kp_rng_fill(&c->cfg.rng, c->challenge, sizeof(c->challenge));
  c->challenge_at = 0;
  c->challenges = 0;
}

/* The path carries again (or the connection moved to one that does). */
static void path_alive(kp_sconn_t *c, uint64_t now) {
  if (!c->path_dead) return;
  c->path_dead = false;
  c->stats.pathless_ms += (now - c->dead_since) / 1000;
  if (c->ev.path_state) c->ev.path_state(c->ev.ctx, true);
}

/* Nothing heard this long ends the connection. */
static uint64_t idle_limit(const kp_sconn_t *c) {
  unsigned ms = c->cfg.idle_timeout_ms;
  if (c->cfg.resume_grace_ms > ms) ms = c->cfg.resume_grace_ms;
  return (uint64_t)ms * 1000;
}

/* How long the unanswered may last: path_dead_ms, or three probe
 * timeouts on a slow path. */
static uint64_t dead_after(const kp_sconn_t *c) {
  uint64_t t = (uint64_t)c->cfg.path_dead_ms * 1000, pto = 3 * kp_recovery_pto(&c->rec);
  return pto > t ? pto : t;
}

/* When a silence is worth a question: a peer that sent more than a
 * keepalive has been quiet for dead_after while nothing of ours is out. */
static uint64_t silence_due(const kp_sconn_t *c) {
  if (c->path_dead || c->unanswered_since || c->heard_since_probe < 2) return UINT64_MAX;
  return c->heard_eliciting_us + dead_after(c);
}

static void switch_path(kp_sconn_t *c, const kp_addr_t *to, uint64_t now) {
  bool was_dead = c->path_dead;
  c->remote = *to;
  c->validating = false;
  c->stats.path_changes++;
  c->unanswered_since = 0;
  path_alive(c, now);
  if (was_dead) {
    /* What is out went to a path that does not carry: send it again now,
     * on this one, without waiting out the back-off. */
    kp_recovery_all_lost(&c->rec, now);
    c->rec.pto_count = 0;
    c->probe_wanted = true;
  }
  /* A new path: its capacity is unknown; start the controller over. The
   * round-trip estimate stays (most migrations are NAT rebindings or a
   * relay giving way to a direct path, close to the old one). */
  cc_start(c, BASE_MTU, now);
  /* Its MTU too: back to the safe size, and probe again. */
  c->mtu = BASE_MTU;
  probe_restart(c, now);
  if (c->ev.path_changed) c->ev.path_changed(c->ev.ctx, to);
}

static void peer_max_data(kp_sconn_t *c, uint64_t max) {
  if (max <= c->peer_max_data) return;
  bool was_blocked = c->peer_max_data <= c->sent_new;
  c->peer_max_data = max;
  if (!was_blocked) return;
  for (size_t i = 0; i < c->bucket_count; i++)
    for (kp_sstream_t *s = c->buckets[i]; s; s = s->hnext)
      if (s->write_end > s->send_offset) kp__sstream_mark_ready(c, s);
}

/* Handles one frame; false on a malformed or forbidden one. */
static bool on_frame(kp_sconn_t *c, const kp_frame_t *f, const kp_addr_t *from, uint64_t now) {
  kp_sstream_t *s;
  switch (f->type) {
    case KP_FRAME_PING: return true;
    case KP_FRAME_STREAM:
      if ((s = kp__sstream_for_peer(c, f->stream_id, now)))
        kp__sstream_on_data(c, s, f->offset, f->data, f->len, f->fin);
      return true;
    case KP_FRAME_RESET_STREAM:
      s = kp__sstream_for_peer(c, f->stream_id, now);
      return !s || kp__sstream_on_reset(c, s, f->value, f->final_size);
    /* These may come before the stream's first data (control frames lead a
     * packet), so they open a peer's stream too. */
    case KP_FRAME_STOP_SENDING:
      if ((s = kp__sstream_for_peer(c, f->stream_id, now))) kp__sstream_on_stop(c, s, f->value);
      return true;
    case KP_FRAME_MAX_STREAM_DATA:
      if ((s = kp__sstream_for_peer(c, f->stream_id, now))) kp__sstream_on_max_data(c, s, f->value);
      return true;
    case KP_FRAME_PATH_CHALLENGE:
      c->response_pending = true;
      c->response_to = *from;
      memcpy(c->response, f->data, 8);
      return true;
    case KP_FRAME_PATH_RESPONSE:
      if (c->validating && kp_addr_eq(from, &c->candidate) && !memcmp(f->data, c->challenge, 8))
        switch_path(c, from, now);
      return true;
    case KP_FRAME_CLOSE: finish(c, KP_ECLOSED, f->value); return true;
    case KP_FRAME_DATAGRAM: kp__dgram_received(c, f->data, f->len); return true;
    case KP_FRAME_ACK_FREQUENCY:
      /* The newest request counts (they may arrive out of order). */
      if (f->stream_id > c->ack_freq_seen) {
        c->ack_freq_seen = f->stream_id;
        c->ack_every = f->value < 2                  ? 2
                       : f->value > KP_ACK_EVERY_MAX ? KP_ACK_EVERY_MAX
                                                     : (unsigned)f->value;
      }
      return true;
    default: return false;
  }
}

void kp_sconn_read_datagram(kp_sconn_t *c, const kp_addr_t *from, uint8_t *data, size_t len,
                            uint64_t now) {
  if (c->state == S_CLOSED) return;
  kp_stream_header_t h;
  size_t hlen = kp_stream_header_decode(&h, data, len);
  if (!hlen || len < hlen + KP_STREAM_TAG_LEN || h.cid != c->cfg.local_cid) {
    c->stats.malformed++;
    return;
  }
  if (!kp_replay_check(&c->replay, h.pn)) {
    c->stats.replays++;
    return;
  }
  size_t plen = len - hlen - KP_STREAM_TAG_LEN;
  if (kp_aead_open(&c->rx, h.pn, data, hlen, data + hlen, plen, data + hlen + plen)) {
    c->stats.auth_failures++;
    return;
  }
  /* Authentic: from here on the peer sent it. */
  bool newest = !c->replay.any || h.pn > c->replay.largest;
  kp_replay_mark(&c->replay, h.pn);
  c->stats.packets_received++;
  c->stats.bytes_received += len;
  c->last_recv_us = now;
  if (c->state != S_OPEN) return;

  /* Packets from a new address move us only after a PATH_CHALLENGE there is
   * answered: an authentic packet proves the peer sent it, not that it can
   * receive there (it may be a captured copy raced from elsewhere). */
  if (!kp_addr_eq(from, &c->remote) && newest && !c->path_pinned) start_validation(c, from);
  bool in_order = !c->recv_range_count || h.pn == c->recv_ranges[0].hi + 1;

  if (h.flags & KP_STREAM_FLAG_ACK_NOW) c->ack_now = true;
  /* Frames before the ack: a peer that refuses a stream acks its data and
   * resets it in one packet, and the writes must hear of the refusal, not
   * of a delivery. */
  kp_rbuf_t r;
  kp_rbuf_init(&r, data + hlen, plen);
  kp_frame_t f;
  bool eliciting = false;
  int rc;
  c->recv_unstored = false;
  bool carrying = false; /* more than a PING: the peer has something to say */
  while ((rc = kp_frame_next(&r, &f)) == 1) {
    eliciting = true;
    if (f.type != KP_FRAME_PING && f.type != KP_FRAME_PADDING) carrying = true;
    if (!on_frame(c, &f, from, now)) rc = -1;
    if (rc < 0 || c->state != S_OPEN) break;
  }
  if (rc < 0) c->stats.malformed++;
  if (c->state == S_OPEN && (h.flags & KP_STREAM_FLAG_ACK)) {
    peer_max_data(c, h.ack.max_data);
    if (kp_recovery_on_ack(&c->rec, &h.ack, now)) {
      /* Answered: what is still out has path_dead_ms from now. Only acks
       * count: a peer that hears nothing from us still sends (its own
       * probes), and that is no sign our packets arrive. */
      c->unanswered_since = c->rec.bytes_in_flight ? now : 0;
      if (kp_addr_eq(from, &c->remote)) path_alive(c, now);
    }
    if (c->model)
      kp_bbr_on_ack_done(&c->bbr, c->rec.bytes_in_flight, kp_recovery_rtt_floor(&c->rec), now);
  }
  if (c->state != S_OPEN) return;
  autotune_windows(c, now);
  /* Data we could not keep is not acknowledged: it comes again. */
  if (c->recv_unstored) return;
  note_received(c, h.pn, now);
  if (carrying) {
    /* Busy: two within dead_after of each other (PINGs, keepalives and
     * these questions among them, do not count). */
    bool close_to_last = c->heard_since_probe && now - c->heard_eliciting_us < dead_after(c);
    c->heard_since_probe = close_to_last ? c->heard_since_probe + 1 : 1;
    c->heard_eliciting_us = now;
  }
  if (eliciting && c->state == S_OPEN) {
    if (!c->ack_pending) c->ack_due_us = now + KP_MAX_ACK_DELAY_US;
    c->ack_pending = true;
    c->unacked_eliciting++;
    /* Out of order (a gap before it, or a late one): the sender's loss
     * detection wants to hear now. */
    if (!in_order) c->ack_now = true;
  }
}

/* ---- Sending -------------------------------------------------------------------- */

static void build_ack(kp_sconn_t *c, kp_stream_header_t *h, uint64_t now) {
  if (!c->recv_range_count) return;
  kp_stream_ack_t *a = &h->ack;
  h->flags |= KP_STREAM_FLAG_ACK;
  a->largest = c->recv_ranges[0].hi;
  uint64_t delay = (now - c->largest_recv_us) / 8;
  a->delay_8us = (uint16_t)(delay > UINT16_MAX ? UINT16_MAX : delay);
  a->max_data = c->consumed + c->conn_window;
  if (a->max_data > c->max_data_sent) c->max_data_sent = a->max_data;
  c->window_update_due = false;
  uint64_t first = c->recv_ranges[0].hi - c->recv_ranges[0].lo;
  a->first = (uint16_t)(first > UINT16_MAX ? UINT16_MAX : first);
  a->count = 0;
  uint64_t prev_lo = a->largest - a->first;
  for (unsigned i = 1; i < c->recv_range_count && a->count < KP_STREAM_MAX_ACK_RANGES; i++) {
    if (first > UINT16_MAX) break; /* the first range was cut: the rest would be off */
    uint64_t gap = prev_lo - c->recv_ranges[i].hi - 2;
    uint64_t length = c->recv_ranges[i].hi - c->recv_ranges[i].lo;
    if (gap > UINT16_MAX || length > UINT16_MAX) break;
    a->ranges[a->count].gap = (uint16_t)gap;
    a->ranges[a->count].length = (uint16_t)length;
    a->count++;
    prev_lo = c->recv_ranges[i].lo;
  }
}

/* Seals the packet in buf (header of hlen, then the frames in w) and records
 * it. Returns its length. */
static size_t seal(kp_sconn_t *c, uint8_t *buf, size_t hlen, kp_wbuf_t *w, kp_sent_t *sent,
                   uint64_t pn, uint64_t now) {
  size_t plen = w->len;
  kp_aead_seal(&c->tx, pn, buf, hlen, buf + hlen, plen, buf + hlen + plen);
  size_t len = hlen + plen + KP_STREAM_TAG_LEN;
  sent->sent_us = now;
  sent->size = (uint32_t)len;
  if (c->model && (sent->flags & KP_SENT_IN_FLIGHT))
    kp_bbr_on_sent(&c->bbr, &sent->rate, len, c->rec.bytes_in_flight, now);
  kp_recovery_on_sent(&c->rec, sent); /* reserved: cannot fail */
  if (sent->flags & KP_SENT_ACK_ELICITING) {
    c->last_eliciting_sent_us = now;
    if (!c->unanswered_since) c->unanswered_since = now;
  }
  if (sent->flags & KP_SENT_IN_FLIGHT) kp_pacer_on_sent(&c->pacer, len);
  c->stats.packets_sent++;
  c->stats.bytes_sent += len;
  c->ack_pending = c->ack_now = false;
  c->unacked_eliciting = 0;
  return len;
}

/* Starts a packet: header (with an ack) into buf, the frame area in w. */
static size_t begin(kp_sconn_t *c, uint8_t *buf, size_t size, kp_wbuf_t *w, uint64_t now) {
  kp_stream_header_t h;
  memset(&h, 0, sizeof(h));
  h.cid = c->cfg.remote_cid;
  h.pn = kp_recovery_next_pn(&c->rec);
  /* An ack block only when there is something to acknowledge (or a bigger
   * window to announce). A data sender receives mostly ack-only packets,
   * which need no ack; some are lost, and acking their gaps in every data
   * packet would cost up to 85 bytes each (6% of the throughput at 1%
   * loss). */
  if (c->ack_pending || c->window_update_due) build_ack(c, &h, now);
  size_t hlen = kp_stream_header_encode(&h, buf, size);
  kp_wbuf_init(w, buf + hlen, size - hlen - KP_STREAM_TAG_LEN);
  return hlen;
}

/* Something waits for the congestion window: stream data or datagrams. */
static bool have_payload(const kp_sconn_t *c) {
  return kp__sstreams_have_data(c) || kp__dgrams_queued(c);
}

static bool blocked_probe_due(const kp_sconn_t *c, uint64_t now) {
  return !c->rec.bytes_in_flight && now >= c->last_eliciting_sent_us + kp_recovery_pto(&c->rec) &&
         kp__sstreams_blocked_on_conn(c);
}

/* How many ack-eliciting packets per ack to ask the peer for: one ack per
 * sixteenth of the window, between 2 and KP_ACK_EVERY_MAX. On a long fat
 * path an ack every second packet is tens of thousands of packets a second
 * each way for nothing: the model needs a few samples a round trip, and
 * losses and reordering still draw an ack at once. Asked again when the
 * window has doubled or halved since. */
static void want_ack_frequency(kp_sconn_t *c) {
  uint64_t n = cwnd(c) / c->mtu / 16;
  if (n < 2) n = 2;
  if (n > KP_ACK_EVERY_MAX) n = KP_ACK_EVERY_MAX;
  uint64_t asked = c->ack_freq_asked ? c->ack_freq_asked : 2;
  if (n >= 2 * asked || 2 * n <= asked) {
    c->ack_freq_asked = (unsigned)n;
    c->ack_freq_seq++;
    c->ack_freq_pending = true;
  }
}

/* A packet being built: its header is in buf, frames go to w. */
typedef struct packet_s {
  uint8_t *buf;
  size_t hlen;
  uint64_t pn;
  kp_wbuf_t w;
  kp_sent_t sent;
} packet_t;

static void open_packet(kp_sconn_t *c, packet_t *p, uint8_t *buf, size_t size, uint64_t now) {
  memset(&p->sent, 0, sizeof(p->sent));
  p->buf = buf;
  p->pn = kp_recovery_next_pn(&c->rec);
  p->hlen = begin(c, buf, size, &p->w, now);
}

static size_t close_packet(kp_sconn_t *c, packet_t *p, uint8_t flags, uint64_t now) {
  p->sent.flags = flags;
  return seal(c, p->buf, p->hlen, &p->w, &p->sent, p->pn, now);
}

/* A PATH_RESPONSE owed, or a PATH_CHALLENGE due; 0 if neither. */
static size_t write_path(kp_sconn_t *c, uint8_t *buf, kp_addr_t *to, uint64_t now) {
  packet_t p;
  if (c->response_pending) {
    open_packet(c, &p, buf, c->mtu, now);
    kp_frame_put_path(&p.w, true, c->response);
    c->response_pending = false;
    *to = c->response_to;
    return close_packet(c, &p, KP_SENT_ACK_ELICITING, now);
  }
  if (!c->validating || now < c->challenge_at) return 0;
  if (c->challenges++ >= PATH_CHALLENGES) {
    c->validating = false; /* it never answered: not a path */
    return 0;
  }
  open_packet(c, &p, buf, c->mtu, now);
  kp_frame_put_path(&p.w, false, c->challenge);
  c->challenge_at = now + kp_recovery_pto(&c->rec);
  *to = c->candidate;
  return close_packet(c, &p, KP_SENT_ACK_ELICITING, now);
}

/* The next packet of frames: control frames, stream data the windows
 * allow, probes and keepalives, or an ack on its own; 0 if nothing is
 * due. */
static size_t write_frames(kp_sconn_t *c, uint8_t *buf, bool window_open, bool paced,
                           uint64_t now) {
  packet_t p;
  open_packet(c, &p, buf, c->mtu, now);
  bool eliciting = kp__sstreams_fill_control(c, &p.w, &p.sent);
  bool probe = c->probe_wanted;
  if (window_open && paced && kp__sstreams_have_data(c)) want_ack_frequency(c);
  /* ACK_FREQUENCY goes last, after the data (room kept for it): a receiver
   * that does not know the frame reads what came before it. */
  size_t keep = c->ack_freq_pending ? ACK_FREQUENCY_ROOM : 0;
  p.w.cap -= keep;
  /* Datagrams go last of all (a receiver that does not know the frame
   * takes everything before it), but their room is kept first: they are
   * few, small and waiting against a bounded queue, while a stream can
   * fill any room it gets. */
  bool send_ok = (window_open && paced) || probe;
  size_t dgram_room = send_ok ? kp__dgrams_reserve(c, p.w.cap - p.w.len) : 0;
  p.w.cap -= dgram_room;
  if (send_ok) {
    bool new_ok = c->peer_max_data > c->sent_new;
    if (kp__sstreams_fill(c, &p.w, &p.sent, new_ok)) eliciting = true;
  } else if (!window_open && have_payload(c)) {
    c->cwnd_limited = true; /* data waits on the window: it may grow (RFC 9438 4.8) */
  }
  p.w.cap += keep;
  if (c->ack_freq_pending && p.sent.nframes < KP_SENT_MAX_FRAMES) {
    kp_frame_put_ack_frequency(&p.w, c->ack_freq_seq, c->ack_freq_asked);
    kp_sent_frame_t *f = &p.sent.frames[p.sent.nframes++];
    memset(f, 0, sizeof(*f));
    f->type = KP_FRAME_ACK_FREQUENCY;
    f->offset = c->ack_freq_seq;
    c->ack_freq_pending = false;
    eliciting = true;
  }
  p.w.cap += dgram_room;
  if (send_ok && (p.sent.datagrams = (uint8_t)kp__dgrams_fill(c, &p.w))) eliciting = true;
  c->probe_wanted = false;
  /* A PING when an ack is wanted and nothing else asks for one: a
   * tail-loss probe; waiting on the connection window with nothing in
   * flight (the update may have been lost with an ack-only packet); a
   * keepalive (the peer's ack proves it alive). */
  if (!eliciting && (probe || blocked_probe_due(c, now) ||
                     now - c->last_eliciting_sent_us >= (uint64_t)c->cfg.keepalive_ms * 1000)) {
    kp_frame_put_ping(&p.w);
    eliciting = true;
  }
  if (!eliciting) {
    /* An ack on its own: every second packet (RFC 9000 13.2.2), at once on
     * reordering or ACK_NOW, else when the delay runs out; or news of a
     * bigger connection window. */
    bool ack_due = (c->ack_pending &&
                    (c->ack_now || c->unacked_eliciting >= c->ack_every || now >= c->ack_due_us)) ||
                   (c->window_update_due && c->recv_range_count);
    return ack_due ? close_packet(c, &p, 0, now) : 0;
  }
  if (window_open) c->cwnd_limited = c->rec.bytes_in_flight + 2 * c->mtu > cwnd(c);
  /* Full packets are padded to exactly the MTU so runs of them are equal in
   * size: the glue hands those to the kernel as one GSO send. */
  if (p.w.cap - p.w.len < 64) kp_frame_put_padding(&p.w, p.w.cap - p.w.len);
  /* The last packet for now (the window is full, or nothing else waits):
   * ask for the ack at once, or the receiver would sit on a lone packet for
   * its ack delay while we sit on an empty pipe. */
  bool window_full = c->rec.bytes_in_flight + 2 * c->mtu > cwnd(c);
  if (window_full || probe || !have_payload(c)) buf[1] |= KP_STREAM_FLAG_ACK_NOW;
  return close_packet(c, &p, KP_SENT_ACK_ELICITING | KP_SENT_IN_FLIGHT, now);
}

size_t kp_sconn_write_datagram(kp_sconn_t *c, uint8_t *buf, size_t cap, kp_addr_t *to,
                               uint64_t now) {
  if (c->state == S_CLOSED || c->state == S_DRAINING) return 0;
  if (cap < 1500) return 0;
  if (kp_recovery_reserve(&c->rec)) return 0; /* out of memory: try again later */
  packet_t p;
  if (c->state == S_CLOSING) {
    if (!c->close_pending) return 0;
    open_packet(c, &p, buf, c->mtu, now);
    kp_frame_put_close(&p.w, c->close_code, c->close_reason);
    c->close_pending = false;
    c->close_deadline_us = now + 3 * kp_recovery_pto(&c->rec);
    *to = c->remote;
    return close_packet(c, &p, 0, now);
  }
  size_t len = write_path(c, buf, to, now);
  if (len) return len;

  pace(c, now);
  bool window_open = c->rec.bytes_in_flight + c->mtu <= cwnd(c);
  bool paced = kp_pacer_next(&c->pacer, c->mtu, now) == 0;
  /* Room in the window and the pacer's leave, but nothing to send: what is
   * delivered until then measures the application, not the path. */
  if (c->model && window_open && paced && !have_payload(c))
    kp_bbr_on_app_limited(&c->bbr, c->rec.bytes_in_flight);
  *to = c->remote;
  unsigned probe = window_open && paced ? probe_now(c, now) : 0;
  if (probe) {
    /* A path MTU probe: a PING padded to the size being tried. */
    open_packet(c, &p, buf, probe, now);
    kp_frame_put_ping(&p.w);
    kp_frame_put_padding(&p.w, p.w.cap - p.w.len);
    c->probe_inflight |= probe_bit(probe);
    return close_packet(c, &p, KP_SENT_ACK_ELICITING | KP_SENT_IN_FLIGHT | KP_SENT_MTU_PROBE, now);
  }
  return write_frames(c, buf, window_open, paced, now);
}

/* ---- Time ------------------------------------------------------------------------ */

void kp_sconn_tick(kp_sconn_t *c, uint64_t now) {
  if (c->state == S_CLOSED) return;
  if (c->state == S_CLOSING) {
    if (c->close_deadline_us && now >= c->close_deadline_us) finish(c, c->closed_status, 0);
    return;
  }
  if (now - c->last_recv_us >= idle_limit(c)) {
    /* Nothing authentic for the whole idle timeout (or the grace a
     * resumable connection gets), keepalives included. */
    finish(c, KP_EPEERDEAD, 0);
    return;
  }
  if (!c->path_dead && c->unanswered_since && now - c->unanswered_since >= dead_after(c)) {
    c->path_dead = true;
    c->dead_since = now;
    if (c->ev.path_state) c->ev.path_state(c->ev.ctx, false);
    if (c->state != S_OPEN) return;
  }
  if (silence_due(c) <= now) {
    /* The peer was sending and went quiet while we had nothing out: ask
     * once. Unanswered, the path is dead path_dead_ms later, not at the
     * next keepalive (a server echoing what it gets hears nothing when its
     * NAT moves, and sends nothing either). */
    c->heard_since_probe = 0;
    c->probe_wanted = true;
  }
  if (c->path_dead) {
    /* Keep knocking at least once a second: when the path heals (or the
     * owner moves us) recovery should not wait out a long back-off. */
    while (c->rec.pto_count > 1 && (kp_recovery_pto(&c->rec) << c->rec.pto_count) > 1000000)
      c->rec.pto_count--;
  }
  bool rto;
  if (kp_recovery_deadline(&c->rec) <= now && kp_recovery_on_timeout(&c->rec, now, &rto)) {
    c->probe_wanted = true;
    if (rto) {
      kp_cubic_on_rto(&c->cc, now);
      kp_bbr_on_rto(&c->bbr, now);
      black_hole(c, now);
    }
  }
  kp__sstreams_deliver(c);
}

uint64_t kp_sconn_next_deadline(const kp_sconn_t *c) {
  if (c->state == S_CLOSED) return UINT64_MAX;
  if (c->state == S_CLOSING) return c->close_deadline_us ? c->close_deadline_us : UINT64_MAX;
  uint64_t next = c->last_recv_us + idle_limit(c);
  uint64_t t = kp_recovery_deadline(&c->rec);
  if (t < next) next = t;
  if (!c->path_dead && c->unanswered_since && c->unanswered_since + dead_after(c) < next)
    next = c->unanswered_since + dead_after(c);
  t = silence_due(c);
  if (t < next) next = t;
  t = c->last_eliciting_sent_us + (uint64_t)c->cfg.keepalive_ms * 1000;
  if (t < next) next = t;
  if (c->ack_pending && c->ack_due_us < next) next = c->ack_due_us;
  if (c->deliver_due || c->probe_wanted || c->response_pending) next = 0;
  if (c->validating && c->challenge_at < next) next = c->challenge_at;
  if (c->ack_pending && (c->ack_now || c->unacked_eliciting >= c->ack_every)) next = 0;
  if (c->window_update_due && c->recv_range_count) next = 0;
  if (!c->rec.bytes_in_flight && kp__sstreams_blocked_on_conn(c)) {
    t = c->last_eliciting_sent_us + kp_recovery_pto(&c->rec);
    if (t < next) next = t;
  }
  if (kp__sstreams_have_control(c)) next = 0;
  /* Data and MTU probes wait for the congestion window (an ack reopens
   * it), then for the pacer. */
  if (c->rec.bytes_in_flight + c->mtu <= cwnd(c)) {
    uint64_t want = UINT64_MAX;
    if (have_payload(c)) want = 0;
    if (c->probe_at < want && probe_now(c, c->probe_at)) want = c->probe_at;
    if (want != UINT64_MAX) {
      uint64_t paced = kp_pacer_next(&c->pacer, pacing_quantum(c), c->pacer.at_us);
      if (paced > want) want = paced;
    }
    if (want < next) next = want;
  }
  return next;
}

void kp_sconn_set_remote(kp_sconn_t *c, const kp_addr_t *remote, uint64_t now) {
  /* The same address may be a new path (another socket of ours). */
  if (kp_addr_eq(remote, &c->remote) && !c->path_dead) return;
  switch_path(c, remote, now);
}

uint64_t kp_sconn_newest_received(const kp_sconn_t *c) {
  return c->replay.any ? c->replay.largest + 1 : 0;
}

bool kp_sconn_path_alive(const kp_sconn_t *c) {
  return !c->path_dead;
}

const kp_addr_t *kp_sconn_remote(const kp_sconn_t *c) {
  return &c->remote;
}

void kp_sconn_set_datagram_cb(kp_sconn_t *c,
                              void (*fn)(void *ctx, const uint8_t *data, size_t len)) {
  c->ev.datagram = fn;
}

void kp_sconn_pin_path(kp_sconn_t *c) {
  c->path_pinned = true;
  c->validating = false;
}

uint64_t kp_sconn_cwnd(const kp_sconn_t *c) {
  return cwnd(c);
}

void kp_sconn_stats(const kp_sconn_t *c, kp_sconn_stats_t *out) {
  *out = c->stats;
  out->srtt_us = c->rec.srtt_us;
  out->min_rtt_us = c->rec.min_rtt_us == UINT64_MAX ? 0 : c->rec.min_rtt_us;
  out->rttvar_us = c->rec.rttvar_us;
  out->cwnd = cwnd(c);
  out->bytes_in_flight = c->rec.bytes_in_flight;
  out->packets_lost = c->rec.lost_packets;
  out->retransmits = c->rec.retransmits;
  out->retransmitted_bytes = c->rec.retransmit_bytes;
  out->congestion_events = c->model ? c->bbr.congestion_events : c->cc.congestion_events;
  out->probe_timeouts = c->rec.probe_timeouts;
  out->mtu = c->mtu;
  out->remote = c->remote;
  out->streams = (unsigned)c->stream_count;
}
