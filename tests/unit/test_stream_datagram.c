/* SPDX-License-Identifier: MIT */
/* Unreliable datagrams on a connection (stream/stream_datagram.h): the
 * frame's bytes, and on the simulated link (tests/sim/link.h) what a user
 * of them counts on: a clean path delivers every one in order, a lossy one
 * loses some and sends none again, a flood is held to a bounded queue and
 * to the path's rate, and datagrams keep flowing beside a bulk stream. */
#include <inttypes.h>
#include <string.h>

#include "stream/stream_conn_internal.h"
#include "tests/harness/test.h"
#include "tests/sim/stream_pair.h"
#include "tests/unit/test_stream.h"

#define SEC (1000ull * 1000)
#define MS 1000ull

void test_datagram_frame(void) {
  uint8_t buf[64];
  const uint8_t data[3] = {0xaa, 0xbb, 0xcc};
  kp_wbuf_t w;
  kp_wbuf_init(&w, buf, sizeof(buf));
  kp_frame_put_datagram(&w, data, sizeof(data));
  kp_frame_put_datagram(&w, NULL, 0);
  KP_CHECK(!w.overflow);
  const uint8_t want[] = {0x30, 0x03, 0xaa, 0xbb, 0xcc, 0x30, 0x00};
  KP_CHECK_EQ(w.len, sizeof(want));
  KP_CHECK_MEM(buf, want, sizeof(want));
  KP_CHECK_EQ(kp_frame_datagram_len(3), 5);
  kp_rbuf_t r;
  kp_frame_t f;
  kp_rbuf_init(&r, buf, w.len);
  KP_CHECK_EQ(kp_frame_next(&r, &f), 1);
  KP_CHECK(f.type == KP_FRAME_DATAGRAM && f.len == 3 && !memcmp(f.data, data, 3));
  KP_CHECK_EQ(kp_frame_next(&r, &f), 1);
  KP_CHECK(f.type == KP_FRAME_DATAGRAM && f.len == 0);
  KP_CHECK_EQ(kp_frame_next(&r, &f), 0);
  /* Every truncation of the first frame is malformed, never a shorter one. */
  for (size_t len = 1; len < 5; len++) {
    kp_rbuf_init(&r, buf, len);
    KP_CHECK_EQ(kp_frame_next(&r, &f), -1);
  }
  /* A length past the packet. */
  const uint8_t liar[] = {0x30, 0x44, 0x00, 1, 2, 3};
  kp_rbuf_init(&r, liar, sizeof(liar));
  KP_CHECK_EQ(kp_frame_next(&r, &f), -1);
  /* What fits: 1200-byte packets, whatever their header holds. */
  KP_CHECK_EQ(kp_dgram_max_for_mtu(1200), 1078);
  KP_CHECK_EQ(kp_dgram_max_for_mtu(1472), 1350);
  KP_CHECK_EQ(kp_dgram_max_for_mtu(100), 0);
}

/* Offers `count` datagrams of len bytes from side 0, `per_ms` each
 * millisecond (retrying later when the queue is full), and runs until
 * quiet. Returns how many were accepted. */
static uint64_t offer(pair_t *p, uint64_t count, unsigned per_ms, size_t len, uint64_t limit_us) {
  uint64_t accepted = 0;
  while (accepted < count && p->now < limit_us) {
    for (unsigned i = 0; i < per_ms && accepted < count; i++) {
      int err = pair_send_datagram(p, 0, len);
      if (err == KP_ENOBUFS) break;
      KP_CHECK_OK(err);
      accepted++;
    }
    pair_run(p, p->now + MS, NULL);
  }
  pair_run(p, p->now + 2 * SEC, NULL); /* the last ones arrive, losses are declared */
  return accepted;
}

/* 10,000 datagrams over a clean 20 ms path with a 10 MB/s bottleneck:
 * every one arrives once, in order, and none is counted lost. */
void test_datagram_clean(void) {
  kp_link_params_t link = {.delay_us = 10000, .rate = 10000000};
  pair_t p;
  pair_init(&p, 60, &link, NULL);
  uint64_t sent = offer(&p, 10000, 10, 200, 60 * SEC);
  KP_CHECK_EQ(sent, 10000);
  pair_side_t *rx = &p.side[1];
  kp_sconn_stats_t st;
  kp_sconn_stats(p.side[0].conn, &st);
  KP_CHECK_MSG(rx->dgrams_received == sent && rx->dgrams_reordered == 0 &&
                   rx->dgrams_duplicated == 0 && st.datagrams_lost == 0,
               "received %" PRIu64 " of %" PRIu64 ", %" PRIu64 " reordered, %" PRIu64
               " lost, %" PRIu64 " dropped",
               rx->dgrams_received, sent, rx->dgrams_reordered, st.datagrams_lost,
               st.datagrams_dropped);
  KP_CHECK_EQ(st.datagrams_sent, sent);
  kp_sconn_stats_t rs;
  kp_sconn_stats(rx->conn, &rs);
  KP_CHECK_EQ(rs.datagrams_received, sent);
  pair_destroy(&p);
}

/* 5% loss: about that many datagrams are lost, every loss is counted by
 * the sender, and nothing arrives twice (nothing is sent again). */
void test_datagram_loss(void) {
  kp_link_params_t link = {.delay_us = 10000, .rate = 10000000, .loss = 0.05};
  pair_t p;
  pair_init(&p, 61, &link, NULL);
  uint64_t sent = offer(&p, 5000, 5, 300, 60 * SEC);
  KP_CHECK_EQ(sent, 5000);
  pair_side_t *rx = &p.side[1];
  kp_sconn_stats_t st;
  kp_sconn_stats(p.side[0].conn, &st);
  printf("5%% loss: %" PRIu64 " of %" PRIu64 " datagrams arrived, %" PRIu64
         " counted lost by the sender\n",
         rx->dgrams_received, sent, st.datagrams_lost);
  KP_CHECK_EQ(rx->dgrams_duplicated, 0);
  KP_CHECK(rx->dgrams_received < sent && rx->dgrams_received > sent * 90 / 100);
  /* Each one either arrived or was in a packet declared lost (a late
   * packet can be both, so allow a little over). */
  uint64_t accounted = rx->dgrams_received + st.datagrams_lost;
  KP_CHECK_MSG(accounted >= sent && accounted <= sent + sent / 100, "%" PRIu64, accounted);
  pair_destroy(&p);
}

/* 100,000 datagrams offered at once to a 100 kB/s path: 256 are queued,
 * the rest refused at once and counted; what is queued leaves at the
 * path's pace (its bottleneck queue barely drops), and too big a datagram
 * is refused outright. */
void test_datagram_queue_bounded(void) {
  kp_link_params_t link = {.delay_us = 20000, .rate = 100000, .queue_bytes = 32768};
  pair_t p;
  pair_init(&p, 62, &link, NULL);
  uint64_t accepted = 0, refused = 0;
  for (int i = 0; i < 100000; i++) {
    int err = pair_send_datagram(&p, 0, 1000);
    if (!err)
      accepted++;
    else if (err == KP_ENOBUFS)
      refused++;
    else
      KP_CHECK_OK(err);
  }
  KP_CHECK_EQ(accepted, KP_DGRAM_QUEUE_MAX);
  kp_sconn_t *c = p.side[0].conn;
  KP_CHECK_EQ(c->dgrams.count, KP_DGRAM_QUEUE_MAX);
  KP_CHECK(c->dgrams.bytes <= KP_DGRAM_QUEUE_BYTES);
  uint8_t big[1100] = {0};
  KP_CHECK_EQ(kp_sconn_datagram_max(c), 1078);
  KP_CHECK_EQ(kp_sconn_datagram_send(c, big, 1079), KP_EMSGSIZE);
  kp_sconn_stats_t st;
  kp_sconn_stats(c, &st);
  KP_CHECK_EQ(st.datagrams_dropped, refused + 1);
  pair_run(&p, p.now + 10 * SEC, NULL);
  const kp_link_stats_t *ls = kp_link_stats(p.link, 0);
  kp_sconn_stats(c, &st);
  printf("flood: %" PRIu64 " queued, %" PRIu64 " refused; %" PRIu64 " arrived, %" PRIu64
         " lost; the bottleneck dropped %" PRIu64 " of %" PRIu64 " packets\n",
         accepted, refused, p.side[1].dgrams_received, st.datagrams_lost, ls->queue_drops,
         ls->sent);
  KP_CHECK_EQ(c->dgrams.count, 0);
  KP_CHECK_EQ(p.side[1].dgrams_received + st.datagrams_lost, accepted);
  KP_CHECK(ls->queue_drops * 10 <= ls->sent);
  pair_destroy(&p);
}

static bool stream_done(pair_t *p) {
  return pair_all_delivered(p);
}

/* A 4 MB stream and a datagram every millisecond share a 5 MB/s path:
 * the stream completes, the datagrams keep arriving meanwhile (they go
 * ahead of stream data in the packets the window allows). */
void test_datagram_beside_stream(void) {
  kp_link_params_t link = {.delay_us = 10000, .rate = 5000000, .queue_bytes = 65536};
  pair_t p;
  pair_init(&p, 63, &link, NULL);
  pair_open(&p, 0, 4000000);
  uint64_t sent = 0;
  uint64_t gap_max = 0, last = 0;
  while (!pair_all_delivered(&p) && p.now < 30 * SEC) {
    if (!pair_send_datagram(&p, 0, 100)) sent++;
    uint64_t before = p.side[1].dgrams_received;
    pair_run(&p, p.now + MS, stream_done);
    if (p.side[1].dgrams_received > before) {
      if (last && p.now - last > gap_max) gap_max = p.now - last;
      last = p.now;
    }
  }
  KP_CHECK(pair_all_delivered(&p));
  pair_run(&p, p.now + SEC, NULL);
  kp_sconn_stats_t st;
  kp_sconn_stats(p.side[0].conn, &st);
  printf("beside a 4 MB stream: %" PRIu64 " of %" PRIu64 " datagrams arrived (%" PRIu64
         " lost), longest gap between arrivals %" PRIu64 " ms\n",
         p.side[1].dgrams_received, sent, st.datagrams_lost, (uint64_t)(gap_max / MS));
  KP_CHECK(sent > 500);
  KP_CHECK(p.side[1].dgrams_received + st.datagrams_lost == sent);
  KP_CHECK(p.side[1].dgrams_received >= sent * 95 / 100);
  KP_CHECK_MSG(gap_max < 200 * MS, "%" PRIu64 " us", gap_max);
  pair_destroy(&p);
}
