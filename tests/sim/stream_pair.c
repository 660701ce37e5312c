/* SPDX-License-Identifier: MIT */
#include "tests/sim/stream_pair.h"

#include <stdlib.h>
#include <string.h>

#include "tests/harness/pattern.h"
#include "tests/harness/test.h"

uint8_t pair_pattern(uint64_t id, uint64_t off) {
  size_t avail;
  return *kp_pattern_at(id, off, &avail);
}

typedef struct write_req_s {
  kp_swrite_t w;
  pair_side_t *side;
  uint64_t id, len;
} write_req_t;

pair_stream_t *pair_stream(pair_t *p, int side, uint64_t id) {
  for (int i = 0; i < PAIR_MAX_STREAMS; i++)
    if (p->side[side].streams[i].used && p->side[side].streams[i].id == id)
      return &p->side[side].streams[i];
  return NULL;
}

static pair_stream_t *add_stream(pair_side_t *s, uint64_t id, uint64_t total) {
  for (int i = 0; i < PAIR_MAX_STREAMS; i++) {
    pair_stream_t *st = &s->streams[i];
    if (st->used) continue;
    memset(st, 0, sizeof(*st));
    st->used = true;
    st->id = id;
    st->total = total;
    return st;
  }
  kp_test_fail(__FILE__, __LINE__, "too many streams");
}

/* Keeps up to high_water bytes unacknowledged, like an application that
 * waits for write callbacks; ends the stream after the last byte. */
static void feed(pair_side_t *s, pair_stream_t *st) {
  if (!s->conn || kp_sconn_is_closed(s->conn) || st->write_error || st->reset) return;
  while (st->written < st->total && st->written - st->acked < s->high_water) {
    uint64_t n = st->total - st->written;
    size_t avail;
    const uint8_t *bytes = kp_pattern_at(st->id, st->written, &avail);
    if (n > s->chunk) n = s->chunk;
    if (n > avail) n = avail;
    write_req_t *req = calloc(1, sizeof(*req));
    KP_CHECK(req);
    req->side = s;
    req->id = st->id;
    req->len = n;
    kp_buf_t buf = {(char *)bytes, (size_t)n};
    int err = kp_sconn_stream_write(s->conn, st->id, &req->w, &buf, 1);
    if (err) {
      free(req);
      st->write_error = err;
      return;
    }
    st->written += n;
    st->writes_pending++;
  }
  if (st->written == st->total && !st->ended) {
    st->ended = true;
    KP_CHECK_OK(kp_sconn_stream_end(s->conn, st->id));
  }
}

static void ev_opened(void *ctx, uint64_t id) {
  pair_side_t *s = ctx;
  pair_stream_t *st = add_stream(s, id, s->reply_total);
  st->opened_by_peer = true;
  if (s->pause_new) kp_sconn_stream_pause(s->conn, id, true);
}

static void ev_data(void *ctx, uint64_t id, const uint8_t *data, size_t len) {
  pair_side_t *s = ctx;
  pair_stream_t *st = pair_stream(s->pair, s->side, id);
  KP_CHECK_MSG(st, "data on unknown stream %" PRIu64, id);
  KP_CHECK(!st->eof);
  st->mismatches += kp_pattern_mismatches(id, st->received, data, len);
  st->received += len;
}

static void ev_eof(void *ctx, uint64_t id) {
  pair_side_t *s = ctx;
  pair_stream_t *st = pair_stream(s->pair, s->side, id);
  KP_CHECK(st && !st->eof);
  st->eof = true;
}

static void ev_reset(void *ctx, uint64_t id, uint64_t code) {
  pair_side_t *s = ctx;
  pair_stream_t *st = pair_stream(s->pair, s->side, id);
  KP_CHECK(st);
  st->reset = true;
  st->reset_code = code;
}

static void ev_done(void *ctx, uint64_t id, void *user) {
  (void)user;
  pair_side_t *s = ctx;
  pair_stream_t *st = pair_stream(s->pair, s->side, id);
  if (st) st->done = true;
}

static void ev_write_done(void *ctx, kp_swrite_t *w, int status) {
  pair_side_t *s = ctx;
  write_req_t *req = (write_req_t *)w;
  pair_stream_t *st = pair_stream(s->pair, s->side, req->id);
  KP_CHECK(st && st->writes_pending > 0);
  st->writes_pending--;
  if (status) {
    if (!st->write_error) st->write_error = status;
  } else {
    st->acked += req->len;
  }
  free(req);
}

static void ev_path(void *ctx, const kp_addr_t *remote) {
  pair_side_t *s = ctx;
  (void)remote;
  s->path_changes++;
}

static void ev_path_state(void *ctx, bool alive) {
  pair_side_t *s = ctx;
  KP_CHECK(alive == s->path_dead); /* each event a change */
  s->path_dead = !alive;
  if (alive) {
    s->path_alive_events++;
  } else {
    s->path_dead_events++;
    s->path_dead_at = s->pair->now;
  }
}

static void start(pair_t *p);

static void ev_datagram(void *ctx, const uint8_t *data, size_t len) {
  pair_side_t *s = ctx;
  KP_CHECK(len >= 8);
  uint64_t seq = 0;
  for (int i = 0; i < 8; i++) seq = seq << 8 | data[i];
  for (size_t i = 8; i < len; i++) KP_CHECK_EQ(data[i], (uint8_t)(seq + i));
  KP_CHECK(seq < PAIR_DGRAM_SEQS);
  if (!s->dgram_seen) KP_CHECK((s->dgram_seen = calloc(PAIR_DGRAM_SEQS / 8, 1)) != NULL);
  if (s->dgram_seen[seq / 8] & (1u << (seq % 8))) {
    s->dgrams_duplicated++;
    return;
  }
  s->dgram_seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
  if (s->dgrams_received && seq < s->dgram_high) s->dgrams_reordered++;
  if (seq > s->dgram_high || !s->dgrams_received) s->dgram_high = seq;
  s->dgrams_received++;
  s->dgram_last_at = s->pair->now;
}

int pair_send_datagram(pair_t *p, int side, size_t len) {
  start(p);
  pair_side_t *s = &p->side[side];
  uint8_t buf[2048];
  KP_CHECK(len >= 8 && len <= sizeof(buf));
  uint64_t seq = s->dgram_next_seq;
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(seq >> (56 - 8 * i));
  for (size_t i = 8; i < len; i++) buf[i] = (uint8_t)(seq + i);
  int err = kp_sconn_datagram_send(s->conn, buf, len);
  if (!err) s->dgram_next_seq++;
  return err;
}

static void ev_closed(void *ctx, int status, uint64_t code) {
  pair_side_t *s = ctx;
  KP_CHECK(!s->closed);
  s->closed = true;
  s->closed_status = status;
  s->closed_code = code;
  s->closed_at = s->pair->now;
}

static void derive_key(uint8_t key[32], int dir) {
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)(i * 13 + dir * 101 + 7);
}

void pair_init(pair_t *p, uint64_t seed, const kp_link_params_t *link,
               void (*cfg_fn)(int side, kp_sconn_config_t *cfg)) {
  memset(p, 0, sizeof(*p));
  p->link = kp_link_new(seed);
  kp_link_set(p->link, 0, link);
  kp_link_set(p->link, 1, link);
  kp_addr_t addr[2];
  KP_CHECK_OK(kp_addr_parse(&addr[0], "198.51.100.1:1000"));
  KP_CHECK_OK(kp_addr_parse(&addr[1], "203.0.113.1:2000"));
  for (int i = 0; i < 2; i++) {
    pair_side_t *s = &p->side[i];
    s->pair = p;
    s->side = i;
    s->high_water = 1 << 20;
    s->chunk = 64 << 10;
    kp_link_set_addr(p->link, i, &addr[i]);
    kp_sconn_config_t *cfg = &s->cfg;
    kp_sconn_config_defaults(cfg);
    cfg->initiator = i == 0;
    cfg->local_cid = 0x1000 + (uint64_t)i;
    cfg->remote_cid = 0x1000 + (uint64_t)(1 - i);
    derive_key(cfg->tx_key, i);
    derive_key(cfg->rx_key, 1 - i);
    cfg->remote = addr[1 - i];
    /* Seeded in start() unless cfg_fn brings its own: a run is a function
     * of its seeds (the defaults draw from the system). */
    cfg->rng.fill = NULL;
    if (cfg_fn) cfg_fn(i, cfg);
  }
}

static void start(pair_t *p) {
  static kp_rng_seeded_t rng[2];
  for (int i = 0; i < 2; i++) {
    pair_side_t *s = &p->side[i];
    if (s->conn) continue;
    const char *env = getenv("KP_PAIR_RNG_SEED");
    kp_rng_seeded_init(&rng[i], (env ? strtoull(env, NULL, 10) : 99) + (uint64_t)i);
    if (!s->cfg.rng.fill) s->cfg.rng = kp_rng_seeded(&rng[i]);
    kp_sconn_events_t ev = {.stream_opened = ev_opened,
                            .stream_data = ev_data,
                            .stream_eof = ev_eof,
                            .stream_reset = ev_reset,
                            .stream_done = ev_done,
                            .write_done = ev_write_done,
                            .path_changed = ev_path,
                            .path_state = ev_path_state,
                            .closed = ev_closed,
                            .datagram = ev_datagram,
                            .ctx = s};
    KP_CHECK_OK(kp_sconn_new(&s->cfg, &ev, p->now, &s->conn));
  }
}

void pair_destroy(pair_t *p) {
  for (int i = 0; i < 2; i++) {
    kp_sconn_free(p->side[i].conn);
    free(p->side[i].dgram_seen);
  }
  kp_link_free(p->link);
}

pair_stream_t *pair_open(pair_t *p, int side, uint64_t total) {
  start(p);
  uint64_t id;
  KP_CHECK_OK(kp_sconn_stream_open(p->side[side].conn, &id));
  return add_stream(&p->side[side], id, total);
}

static void flush(pair_t *p, pair_side_t *s) {
  uint8_t buf[1500];
  kp_addr_t to;
  size_t len;
  unsigned n = 0;
  while ((len = kp_sconn_write_datagram(s->conn, buf, sizeof(buf), &to, p->now))) {
    KP_CHECK_MSG(++n < 100000, "write_datagram does not stop");
    kp_link_send(p->link, s->side, &to, buf, len, p->now);
  }
}

bool pair_all_delivered(pair_t *p) {
  for (int i = 0; i < 2; i++) {
    for (int k = 0; k < PAIR_MAX_STREAMS; k++) {
      const pair_stream_t *st = &p->side[i].streams[k];
      if (!st->used || !st->total) continue;
      const pair_stream_t *peer = pair_stream(p, 1 - i, st->id);
      if (st->acked < st->total || !peer || !peer->eof || peer->received != st->total) return false;
    }
  }
  return true;
}

void pair_dump(pair_t *p) {
  for (int i = 0; i < 2; i++) {
    for (int k = 0; k < PAIR_MAX_STREAMS; k++) {
      const pair_stream_t *st = &p->side[i].streams[k];
      if (!st->used) continue;
      printf("  side %d stream %" PRIu64 ": total %" PRIu64 " written %" PRIu64 " acked %" PRIu64
             " ended %d pending %u err %d | received %" PRIu64 " eof %d reset %d done %d\n",
             i, st->id, st->total, st->written, st->acked, st->ended, st->writes_pending,
             st->write_error, st->received, st->eof, st->reset, st->done);
    }
  }
}

bool pair_streams_gone(pair_t *p) {
  for (int i = 0; i < 2; i++) {
    kp_sconn_stats_t st;
    kp_sconn_stats(p->side[i].conn, &st);
    if (st.streams) return false;
  }
  return true;
}

bool pair_run(pair_t *p, uint64_t until, bool (*done)(pair_t *p)) {
  start(p);
  uint64_t stuck = 0, last_now = p->now;
  for (;;) {
    for (int i = 0; i < 2; i++) {
      pair_side_t *s = &p->side[i];
      for (int k = 0; k < PAIR_MAX_STREAMS; k++)
        if (s->streams[k].used) feed(s, &s->streams[k]);
      flush(p, s);
    }
    if (done && done(p)) return true;
    uint64_t next = kp_link_next(p->link);
    for (int i = 0; i < 2; i++) {
      uint64_t t = kp_sconn_next_deadline(p->side[i].conn);
      if (t < next) next = t;
    }
    if (next > until) {
      p->now = until;
      return false;
    }
    if (next > p->now) p->now = next;
    if (p->now == last_now) {
      KP_CHECK_MSG(++stuck < 100000, "the clock stopped at %" PRIu64 " us", p->now);
    } else {
      stuck = 0;
      last_now = p->now;
    }
    kp_link_packet_t pkt;
    while (kp_link_pop(p->link, p->now, &pkt)) {
      p->events++;
      if (p->filter && !p->filter(p, &pkt)) continue;
      kp_sconn_read_datagram(p->side[pkt.side].conn, &pkt.from, pkt.data, pkt.len, p->now);
    }
    for (int i = 0; i < 2; i++)
      if (kp_sconn_next_deadline(p->side[i].conn) <= p->now) kp_sconn_tick(p->side[i].conn, p->now);
  }
}
