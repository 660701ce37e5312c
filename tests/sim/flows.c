/* SPDX-License-Identifier: MIT */
#include "tests/sim/flows.h"

#include <stdlib.h>
#include <string.h>

#include "tests/harness/test.h"

#define RENO_MIN_RTO_US 200000 /* Linux's TCP_RTO_MIN */
#define RENO_DATA 1
#define RENO_ACK 2

static const uint8_t zeros[FLOW_WRITE_BYTES];

/* ---- kadpunch flows --------------------------------------------------------------- */

static void ev_opened(void *ctx, uint64_t id) {
  (void)ctx, (void)id;
}

static void ev_data(void *ctx, uint64_t id, const uint8_t *data, size_t len) {
  flow_end_t *e = ctx;
  (void)id, (void)data;
  e->flow->delivered += len;
}

static void ev_write_done(void *ctx, kp_swrite_t *w, int status) {
  (void)ctx;
  flow_write_t *fw = (flow_write_t *)w;
  if (!status) fw->flow->acked += w->end - w->start;
}

static void kp_start(flows_t *f, flow_t *fl, unsigned i) {
  for (int side = 0; side < 2; side++) {
    flow_end_t *e = &fl->end[side];
    e->flows = f;
    e->flow = fl;
    e->side = side;
    kp_rng_seeded_init(&e->rng, 1000 + 2 * i + (uint64_t)side);
    kp_sconn_config_t cfg;
    kp_sconn_config_defaults(&cfg);
    cfg.initiator = side == 0;
    cfg.local_cid = 0x2000 + 2 * i + (uint64_t)side;
    cfg.remote_cid = 0x2000 + 2 * i + (uint64_t)(1 - side);
    memset(cfg.tx_key, 0x30 + side, 32);
    memset(cfg.rx_key, 0x31 - side, 32);
    cfg.remote = fl->addr[1 - side];
    cfg.cc = fl->cc;
    cfg.rng = kp_rng_seeded(&e->rng);
    kp_sconn_events_t ev = {
        .stream_opened = ev_opened, .stream_data = ev_data, .write_done = ev_write_done, .ctx = e};
    KP_CHECK_OK(kp_sconn_new(&cfg, &ev, f->now, &fl->conn[side]));
  }
  KP_CHECK_OK(kp_sconn_stream_open(fl->conn[0], &fl->stream));
}

static void kp_feed(flow_t *fl) {
  while (fl->written - fl->acked < (uint64_t)FLOW_WRITES * FLOW_WRITE_BYTES) {
    flow_write_t *fw = &fl->writes[(fl->written / FLOW_WRITE_BYTES) % FLOW_WRITES];
    fw->flow = fl;
    kp_buf_t b = {(char *)zeros, FLOW_WRITE_BYTES};
    KP_CHECK_OK(kp_sconn_stream_write(fl->conn[0], fl->stream, &fw->w, &b, 1));
    fl->written += FLOW_WRITE_BYTES;
  }
}

static void kp_flush(flows_t *f, flow_t *fl) {
  uint8_t buf[1500];
  kp_addr_t to;
  for (int side = 0; side < 2; side++) {
    size_t len;
    unsigned n = 0;
    while ((len = kp_sconn_write_datagram(fl->conn[side], buf, sizeof(buf), &to, f->now))) {
      KP_CHECK_MSG(++n < 100000, "write_datagram does not stop");
      kp_link_send_from(f->link, side, &fl->addr[side], &to, buf, len, f->now);
    }
  }
}

/* ---- Reno-like flows --------------------------------------------------------------- */

static void reno_put(flows_t *f, flow_t *fl, int from_side, uint8_t type, uint64_t value,
                     size_t len) {
  uint8_t buf[RENO_PACKET] = {0};
  buf[0] = type;
  memcpy(buf + 1, &value, sizeof(value));
  kp_link_send_from(f->link, from_side, &fl->addr[from_side], &fl->addr[1 - from_side], buf, len,
                    f->now);
}

static void reno_send(flows_t *f, flow_t *fl, uint64_t seq) {
  reno_t *r = fl->reno;
  r->sent_at[seq % RENO_WINDOW] = f->now;
  r->retransmitted[seq % RENO_WINDOW] = seq < r->high;
  if (seq >= r->high) r->high = seq + 1;
  if (!r->rto_at) r->rto_at = f->now + r->rto;
  reno_put(f, fl, 0, RENO_DATA, seq, RENO_PACKET);
}

/* Sends what the window allows (ack-clocked: no pacing, as TCP Reno). */
static void reno_flush(flows_t *f, flow_t *fl) {
  reno_t *r = fl->reno;
  while (r->next - r->una < (uint64_t)r->cwnd && r->next - r->una < RENO_WINDOW)
    reno_send(f, fl, r->next++);
}

static void reno_rtt(reno_t *r, uint64_t rtt) {
  if (!r->have_rtt) {
    r->have_rtt = true;
    r->srtt = rtt;
    r->rttvar = rtt / 2;
  } else {
    uint64_t err = rtt > r->srtt ? rtt - r->srtt : r->srtt - rtt;
    r->rttvar = (3 * r->rttvar + err) / 4;
    r->srtt = (7 * r->srtt + rtt) / 8;
  }
  r->rto = r->srtt + 4 * r->rttvar;
  if (r->rto < RENO_MIN_RTO_US) r->rto = RENO_MIN_RTO_US;
}

/* NewReno (RFC 6582) without SACK: three duplicate acks retransmit and halve
 * the window; a partial ack retransmits the next hole; a timeout goes back
 * to one packet and resends from the first unacknowledged one. */
static void reno_on_ack(flows_t *f, flow_t *fl, uint64_t ack) {
  reno_t *r = fl->reno;
  if (ack > r->una && ack <= r->high) {
    uint64_t newly = ack - r->una;
    if (!r->retransmitted[(ack - 1) % RENO_WINDOW])
      reno_rtt(r, f->now - r->sent_at[(ack - 1) % RENO_WINDOW]);
    r->una = ack;
    if (r->next < r->una) r->next = r->una;
    r->dupacks = 0;
    if (r->recovery) {
      if (ack > r->recover) {
        r->recovery = false;
        r->cwnd = (double)r->ssthresh;
      } else {
        reno_send(f, fl, r->una); /* a partial ack: the next hole */
      }
    } else if (r->cwnd < (double)r->ssthresh) {
      r->cwnd += (double)newly;
    } else {
      r->cwnd += (double)newly / r->cwnd;
    }
    r->rto_at = r->una < r->next ? f->now + r->rto : 0;
  } else if (ack == r->una && r->una < r->next) {
    if (++r->dupacks == 3 && !r->recovery) {
      uint64_t half = (uint64_t)(r->cwnd / 2);
      r->ssthresh = half > 2 ? half : 2;
      r->cwnd = (double)r->ssthresh + 3;
      r->recovery = true;
      r->recover = r->next - 1;
      r->fast_retransmits++;
      reno_send(f, fl, r->una);
    } else if (r->recovery) {
      r->cwnd += 1; /* each duplicate ack: a packet left the network */
    }
  }
}

static void reno_timer(flows_t *f, flow_t *fl) {
  reno_t *r = fl->reno;
  if (!r->rto_at || f->now < r->rto_at) return;
  r->timeouts++;
  uint64_t flight = r->next - r->una;
  r->ssthresh = flight / 2 > 2 ? flight / 2 : 2;
  r->cwnd = 1;
  r->next = r->una;
  r->recovery = false;
  r->dupacks = 0;
  r->rto = 2 * r->rto < 60000000 ? 2 * r->rto : 60000000;
  r->rto_at = 0;
  reno_send(f, fl, r->next++);
}

static void reno_on_data(flows_t *f, flow_t *fl, uint64_t seq) {
  reno_t *r = fl->reno;
  if (seq == r->rcv_nxt) {
    r->rcv_nxt++;
    while (r->ooo[(r->rcv_nxt % RENO_WINDOW) / 8] & (1u << (r->rcv_nxt % 8))) {
      r->ooo[(r->rcv_nxt % RENO_WINDOW) / 8] &= (uint8_t) ~(1u << (r->rcv_nxt % 8));
      r->rcv_nxt++;
    }
    fl->delivered = r->rcv_nxt * RENO_PACKET;
  } else if (seq > r->rcv_nxt && seq < r->rcv_nxt + RENO_WINDOW) {
    r->ooo[(seq % RENO_WINDOW) / 8] |= (uint8_t)(1u << (seq % 8));
  }
  reno_put(f, fl, 1, RENO_ACK, r->rcv_nxt, 40);
}

/* ---- The run ------------------------------------------------------------------------- */

void flows_init(flows_t *f, uint64_t seed, const kp_link_params_t *fwd,
                const kp_link_params_t *back) {
  memset(f, 0, sizeof(*f));
  f->link = kp_link_new(seed);
  kp_link_set(f->link, 0, fwd);
  kp_link_set(f->link, 1, back);
}

flow_t *flows_add(flows_t *f, flow_kind_t kind, kp_cc_t cc, uint64_t start_us) {
  KP_CHECK(f->n < FLOWS_MAX);
  unsigned i = f->n++;
  flow_t *fl = &f->flow[i];
  fl->kind = kind;
  fl->cc = cc;
  fl->start_us = start_us;
  char a[64];
  snprintf(a, sizeof(a), "198.51.100.%u:1000", 10 + i);
  KP_CHECK_OK(kp_addr_parse(&fl->addr[0], a));
  snprintf(a, sizeof(a), "203.0.113.%u:2000", 10 + i);
  KP_CHECK_OK(kp_addr_parse(&fl->addr[1], a));
  for (int side = 0; side < 2; side++) {
    if (i == 0)
      kp_link_set_addr(f->link, side, &fl->addr[side]);
    else
      kp_link_add_addr(f->link, side, &fl->addr[side]);
  }
  if (kind == FLOW_RENO) {
    fl->reno = calloc(1, sizeof(reno_t));
    KP_CHECK(fl->reno);
    fl->reno->cwnd = 10; /* RFC 6928 */
    fl->reno->ssthresh = UINT64_MAX;
    fl->reno->rto = 1000000; /* RFC 6298's initial 1 s */
  }
  return fl;
}

static void sample(flows_t *f) {
  while (f->nsamples < FLOWS_SAMPLES && f->now >= f->nsamples * FLOWS_SAMPLE_US) {
    for (unsigned i = 0; i < f->n; i++) f->flow[i].samples[f->nsamples] = f->flow[i].delivered;
    f->queue[f->nsamples] = kp_link_queued(f->link, 0, f->now);
    f->nsamples++;
  }
}

/* The earliest time anything has work. */
static uint64_t next_event(flows_t *f, uint64_t until) {
  uint64_t next = kp_link_next(f->link);
  uint64_t s = f->nsamples * FLOWS_SAMPLE_US;
  if (f->nsamples < FLOWS_SAMPLES && s < next) next = s;
  if (until < next) next = until;
  for (unsigned i = 0; i < f->n; i++) {
    flow_t *fl = &f->flow[i];
    if (!fl->started) {
      if (fl->start_us < next) next = fl->start_us;
    } else if (fl->kind == FLOW_KADPUNCH) {
      for (int side = 0; side < 2; side++) {
        uint64_t t = kp_sconn_next_deadline(fl->conn[side]);
        if (t < next) next = t;
      }
    } else if (fl->reno->rto_at && fl->reno->rto_at < next) {
      next = fl->reno->rto_at;
    }
  }
  return next;
}

static flow_t *flow_at(flows_t *f, const kp_addr_t *addr, int side) {
  for (unsigned i = 0; i < f->n; i++)
    if (kp_addr_eq(addr, &f->flow[i].addr[side])) return &f->flow[i];
  return NULL;
}

void flows_run(flows_t *f, uint64_t until) {
  uint64_t stuck = 0, last = f->now;
  for (;;) {
    sample(f);
    for (unsigned i = 0; i < f->n; i++) {
      flow_t *fl = &f->flow[i];
      if (!fl->started && f->now >= fl->start_us) {
        fl->started = true;
        if (fl->kind == FLOW_KADPUNCH) kp_start(f, fl, i);
      }
      if (!fl->started) continue;
      if (fl->kind == FLOW_KADPUNCH) {
        kp_feed(fl);
        kp_flush(f, fl);
      } else {
        reno_flush(f, fl);
      }
    }
    if (f->now >= until) return;
    uint64_t next = next_event(f, until);
    if (next > f->now) f->now = next;
    if (f->now == last) {
      KP_CHECK_MSG(++stuck < 100000, "the clock stopped at %" PRIu64 " us", f->now);
    } else {
      stuck = 0;
      last = f->now;
    }
    kp_link_packet_t pkt;
    while (kp_link_pop(f->link, f->now, &pkt)) {
      flow_t *fl = flow_at(f, &pkt.to, pkt.side);
      if (!fl || !fl->started) continue;
      if (fl->kind == FLOW_KADPUNCH) {
        kp_sconn_read_datagram(fl->conn[pkt.side], &pkt.from, pkt.data, pkt.len, f->now);
      } else {
        uint64_t value;
        memcpy(&value, pkt.data + 1, sizeof(value));
        if (pkt.side == 1 && pkt.data[0] == RENO_DATA) reno_on_data(f, fl, value);
        if (pkt.side == 0 && pkt.data[0] == RENO_ACK) reno_on_ack(f, fl, value);
      }
    }
    for (unsigned i = 0; i < f->n; i++) {
      flow_t *fl = &f->flow[i];
      if (!fl->started) continue;
      if (fl->kind == FLOW_RENO) {
        reno_timer(f, fl);
        continue;
      }
      for (int side = 0; side < 2; side++)
        if (kp_sconn_next_deadline(fl->conn[side]) <= f->now) kp_sconn_tick(fl->conn[side], f->now);
    }
  }
}

static unsigned sample_index(const flows_t *f, uint64_t t) {
  unsigned k = (unsigned)(t / FLOWS_SAMPLE_US);
  KP_CHECK_MSG(k < f->nsamples, "no sample at %" PRIu64 " us", t);
  return k;
}

double flows_mbit(const flows_t *f, unsigned i, uint64_t from_us, uint64_t to_us) {
  unsigned a = sample_index(f, from_us), b = sample_index(f, to_us);
  KP_CHECK(b > a);
  uint64_t bytes = f->flow[i].samples[b] - f->flow[i].samples[a];
  return (double)bytes * 8 / ((double)(b - a) * FLOWS_SAMPLE_US);
}

double flows_queue(const flows_t *f, uint64_t from_us, uint64_t to_us) {
  unsigned a = sample_index(f, from_us), b = sample_index(f, to_us);
  KP_CHECK(b > a);
  double sum = 0;
  for (unsigned k = a; k < b; k++) sum += (double)f->queue[k];
  return sum / (b - a);
}

void flows_destroy(flows_t *f) {
  for (unsigned i = 0; i < f->n; i++) {
    for (int side = 0; side < 2; side++) kp_sconn_free(f->flow[i].conn[side]);
    free(f->flow[i].reno);
  }
  kp_link_free(f->link);
}
