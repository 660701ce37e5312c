/* SPDX-License-Identifier: MIT */
/* Fuzz target: a data-plane connection driven by a script. Besides raw
 * datagrams (which must fail to parse or to authenticate), the script makes
 * authentic packets: its header fields and frame bytes, sealed with the
 * peer's key, so the fuzzer reaches frame parsing, streams, flow control,
 * acks and paths. It also moves the clock and plays the application
 * (open, write, end, reset, pause, close, datagrams: DATAGRAM frames are
 * decoded here too). Every datagram the connection
 * sends must be a well-formed packet that opens under its key. */
#include <string.h>

#include "stream/stream_conn.h"
#include "stream/stream_crypto.h"
#include "stream/stream_frame.h"
#include "tests/fuzz/fuzz.h"

#define LOCAL_CID 0x1111
#define REMOTE_CID 0x2222
#define WRITES 16

typedef struct {
  const uint8_t *p, *end;
} script_t;

static unsigned next(script_t *s) {
  return s->p < s->end ? *s->p++ : 0;
}

static size_t take(script_t *s, size_t n, const uint8_t **out) {
  size_t left = (size_t)(s->end - s->p);
  if (n > left) n = left;
  *out = s->p;
  s->p += n;
  return n;
}

static kp_swrite_t writes[WRITES];
static bool write_busy[WRITES];
static uint8_t payload[4096];

static void on_write_done(void *ctx, kp_swrite_t *w, int status) {
  (void)ctx, (void)status;
  KP_FUZZ_ASSERT(write_busy[w - writes]);
  write_busy[w - writes] = false;
}

static void on_data(void *ctx, uint64_t id, const uint8_t *data, size_t len) {
  (void)ctx, (void)id;
  KP_FUZZ_ASSERT(len > 0 && len <= 1500 && data);
}

static void on_datagram(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  KP_FUZZ_ASSERT(len <= 1500 && (data || !len));
}

static void on_closed(void *ctx, int status, uint64_t code) {
  (void)ctx, (void)code;
  KP_FUZZ_ASSERT(status == 0 || status == KP_ECLOSED || status == KP_EPEERDEAD ||
                 status == KP_ECANCELED);
}

static void key_of(uint8_t key[32], uint8_t dir) {
  memset(key, 0x40 + dir, 32);
}

/* Everything the connection sends must be a packet for the peer, sealed
 * with our key. */
static void check_output(kp_sconn_t *c, kp_aead_t *peer_rx, uint64_t now) {
  uint8_t buf[1500];
  kp_addr_t to;
  for (int i = 0; i < 256; i++) {
    size_t len = kp_sconn_write_datagram(c, buf, sizeof(buf), &to, now);
    if (!len) return;
    KP_FUZZ_ASSERT(len <= 1472 && kp_stream_is_packet(buf, len));
    kp_stream_header_t h;
    size_t hlen = kp_stream_header_decode(&h, buf, len);
    KP_FUZZ_ASSERT(hlen && h.cid == REMOTE_CID && len >= hlen + KP_STREAM_TAG_LEN);
    size_t plen = len - hlen - KP_STREAM_TAG_LEN;
    KP_FUZZ_ASSERT(kp_aead_open(peer_rx, h.pn, buf, hlen, buf + hlen, plen, buf + hlen + plen) ==
                   0);
    kp_rbuf_t r;
    kp_rbuf_init(&r, buf + hlen, plen);
    kp_frame_t f;
    int rc;
    while ((rc = kp_frame_next(&r, &f)) == 1) {
    }
    KP_FUZZ_ASSERT(rc == 0); /* our frames always parse */
  }
}

/* An authentic packet: header fields and frames from the script. */
static void peer_packet(kp_sconn_t *c, script_t *s, kp_aead_t *peer_tx, uint64_t *pn,
                        uint64_t now) {
  kp_stream_header_t h;
  memset(&h, 0, sizeof(h));
  unsigned flags = next(s);
  h.cid = LOCAL_CID;
  /* Mostly new packet numbers, sometimes old ones. */
  int delta = (int)next(s) - 16;
  *pn = delta < 0 && (uint64_t)-delta > *pn ? 0 : *pn + (uint64_t)(int64_t)delta;
  h.pn = *pn;
  if (flags & 1) {
    h.flags |= KP_STREAM_FLAG_ACK;
    h.ack.largest = next(s) | next(s) << 8;
    h.ack.delay_8us = (uint16_t)next(s);
    h.ack.max_data = (uint64_t)next(s) << (next(s) % 40);
    h.ack.first = (uint16_t)next(s);
    h.ack.count = (uint8_t)(next(s) % 5);
    for (unsigned i = 0; i < h.ack.count; i++) {
      h.ack.ranges[i].gap = (uint16_t)next(s);
      h.ack.ranges[i].length = (uint16_t)next(s);
    }
  }
  if (flags & 2) h.flags |= KP_STREAM_FLAG_ACK_NOW;
  uint8_t buf[1500];
  size_t hlen = kp_stream_header_encode(&h, buf, sizeof(buf));
  KP_FUZZ_ASSERT(hlen);
  const uint8_t *frames;
  size_t n = take(s, next(s) * 4, &frames);
  if (n > sizeof(buf) - hlen - KP_STREAM_TAG_LEN) n = sizeof(buf) - hlen - KP_STREAM_TAG_LEN;
  memcpy(buf + hlen, frames, n);
  kp_aead_seal(peer_tx, h.pn, buf, hlen, buf + hlen, n, buf + hlen + n);
  kp_addr_t from;
  kp_addr_parse(&from, flags & 4 ? "203.0.113.9:9" : "203.0.113.1:2000");
  kp_sconn_read_datagram(c, &from, buf, hlen + n + KP_STREAM_TAG_LEN, now);
}

static void app(kp_sconn_t *c, script_t *s) {
  unsigned op = next(s), id = next(s) * 2; /* our streams are even */
  switch (op % 6) {
    case 0: {
      uint64_t got;
      kp_sconn_stream_open(c, &got);
      break;
    }
    case 1:
      for (int i = 0; i < WRITES; i++) {
        if (write_busy[i]) continue;
        kp_buf_t b = {(char *)payload, (size_t)next(s) * 16};
        if (kp_sconn_stream_write(c, id | (op >> 7), &writes[i], &b, 1) == 0) write_busy[i] = true;
        break;
      }
      break;
    case 2: kp_sconn_stream_end(c, id); break;
    case 3: kp_sconn_stream_reset(c, id | (op >> 7), next(s)); break;
    case 4: kp_sconn_stream_pause(c, id | (op >> 7), op & 0x40); break;
    case 5:
      if (op & 0x80) {
        kp_sconn_close(c, next(s), "fuzz");
      } else if (op & 0x40) {
        size_t len = next(s) * 8; /* up to 2040: too big is refused */
        int err = kp_sconn_datagram_send(c, payload, len);
        KP_FUZZ_ASSERT(err == 0 || err == KP_EMSGSIZE || err == KP_ENOBUFS || err == KP_EPIPE);
        KP_FUZZ_ASSERT(err != KP_EMSGSIZE || len > kp_sconn_datagram_max(c));
      }
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kp_sconn_config_t cfg;
  kp_sconn_config_defaults(&cfg);
  cfg.initiator = true;
  cfg.local_cid = LOCAL_CID;
  cfg.remote_cid = REMOTE_CID;
  key_of(cfg.tx_key, 0);
  key_of(cfg.rx_key, 1);
  kp_addr_parse(&cfg.remote, "203.0.113.1:2000");
  cfg.max_streams = 8;
  kp_rng_seeded_t rs;
  kp_rng_seeded_init(&rs, 1);
  cfg.rng = kp_rng_seeded(&rs);
  kp_aead_t peer_tx, peer_rx;
  KP_FUZZ_ASSERT(kp_aead_init(&peer_tx, cfg.cipher, cfg.rx_key) == 0);
  KP_FUZZ_ASSERT(kp_aead_init(&peer_rx, cfg.cipher, cfg.tx_key) == 0);
  kp_sconn_events_t ev = {.stream_data = on_data,
                          .write_done = on_write_done,
                          .closed = on_closed,
                          .datagram = on_datagram};
  uint64_t now = 1000000, pn = 0;
  kp_sconn_t *c;
  KP_FUZZ_ASSERT(kp_sconn_new(&cfg, &ev, now, &c) == 0);
  memset(write_busy, 0, sizeof(write_busy));

  script_t s = {data, data + size};
  for (int steps = 0; s.p < s.end && steps < 512; steps++) {
    unsigned op = next(&s);
    switch (op % 4) {
      case 0: peer_packet(c, &s, &peer_tx, &pn, now); break;
      case 1: {
        uint8_t buf[1500];
        const uint8_t *raw;
        size_t n = take(&s, next(&s) * 6, &raw);
        memcpy(buf, raw, n);
        kp_addr_t from;
        kp_addr_parse(&from, "203.0.113.1:2000");
        kp_sconn_read_datagram(c, &from, buf, n, now);
        break;
      }
      case 2:
        now += (uint64_t)(next(&s) | next(&s) << 8) * 100;
        kp_sconn_tick(c, now);
        break;
      case 3: app(c, &s); break;
    }
    check_output(c, &peer_rx, now);
    uint64_t deadline = kp_sconn_next_deadline(c);
    KP_FUZZ_ASSERT(deadline == UINT64_MAX || deadline < now + 3600ull * 1000000);
  }
  kp_sconn_stats_t st;
  kp_sconn_stats(c, &st);
  KP_FUZZ_ASSERT(st.mtu >= 1200 && st.mtu <= 1472);
  kp_sconn_free(c);
  kp_aead_destroy(&peer_tx);
  kp_aead_destroy(&peer_rx);
  return 0;
}

size_t kp_fuzz_seeds(kp_fuzz_seed_t *seeds, size_t cap) {
  /* The peer opens stream 1 with data and a FIN, acks our packet 0, asks
   * for a path check, sends MAX_STREAM_DATA, resets, closes; time passes;
   * we open and write. */
  static const uint8_t s1[] = {
      0x00, 0x00, 0x10, 0x03, 0x08 | 1, 0x01, 0x00, 0x04, 'd',  'a',  't',  'a',  0x00, 0x00,
      0x03, 0x00, 0x00, 0x10, 0x00,     0x00, 0x00, 0x01, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00,
      0x00, 0x02, 0x1a, 1,    2,        3,    4,    5,    6,    7,    8,    0x02, 0x10, 0x27,
      0x03, 0x01, 0x00, 0x07, 0x03,     0x01, 0x00, 0x40, 0x02, 0x00, 0x11, 0x00, 0x00, 0x00,
      0x00, 0x11, 0x02, 0x12, 0x01,     0x44, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x03, 0x00,
      0x00, 0x10, 0x01, 0x10, 0x01,     0x05, 0x02, 0x00, 0x00, 0x00, 0x11, 0x01, 0x1c, 0x05,
      0x00, 0x00, 0x02, 0xff, 0xff,     0x02, 0xff, 0xff};
  static uint8_t s2[256]; /* a raw datagram: a stream header and garbage */
  s2[0] = 0x01;
  s2[1] = 40;
  s2[2] = 0x41;
  memset(s2 + 3, 0x5a, sizeof(s2) - 3);
  static const uint8_t s3[] = {0x03, 0x00, 0x00, 0x03, 0x01, 0x00, 0x20, 0x02, 0x10, 0x00,
                               0x02, 0x00, 0x10, 0x02, 0x00, 0x10, 0x02, 0x00, 0x40};
  /* The peer sends two DATAGRAM frames; we send one of 80 bytes and one
   * too big (2040). */
  static const uint8_t s4[] = {0x00, 0x00, 0x10, 0x03, 0x30, 0x05, 'h',  'e',  'l',
                               'l',  'o',  0x30, 0x01, 'x',  0x00, 0x00, 0x03, 0x41,
                               0x00, 0x0a, 0x03, 0x41, 0x00, 0xff, 0x02, 0x10, 0x00};
  size_t n = 0;
  if (n < cap) seeds[n++] = (kp_fuzz_seed_t){s1, sizeof(s1)};
  if (n < cap) seeds[n++] = (kp_fuzz_seed_t){s4, sizeof(s4)};
  if (n < cap) seeds[n++] = (kp_fuzz_seed_t){s2, sizeof(s2)};
  if (n < cap) seeds[n++] = (kp_fuzz_seed_t){s3, sizeof(s3)};
  return n;
}
