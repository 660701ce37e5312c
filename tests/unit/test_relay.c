/* SPDX-License-Identifier: MIT */
/* The blind relay's state machine: pairing, forwarding only between paired
 * addresses, each limit with its reason, expiry, and bounded memory under a
 * flood of pairing requests. */
#include <sodium.h>
#include <string.h>

#include "relay/relay.h"
#include "relay/tunnel_frame.h"
#include "tests/harness/test.h"
#include "tests/unit/test_relay.h"

static void addr(kp_addr_t *a, uint8_t ip, uint16_t port) {
  kp_addr_set_v4(a, 0xcb007100u + ip, port); /* 203.0.113.ip */
}

static void system_fill(void *ctx, void *buf, size_t len) {
  (void)ctx;
  randombytes_buf(buf, len);
}
static const kp_rng_t rng = {system_fill, NULL}; /* the system's */

/* The pairing material two peers with path secret `tok` x 64 derive. */
static void pair_of(uint8_t tok, kp_relay_pair_t *pair) {
  uint8_t secret[64];
  memset(secret, tok, sizeof(secret));
  kp_relay_pair_derive(secret, pair);
}

static void pair_msg(uint8_t out[KP_RELAY_CTRL_LEN], uint8_t role, uint8_t tok) {
  kp_relay_pair_t pair;
  kp_relay_ctrl_t c;
  pair_of(tok, &pair);
  kp_relay_pair_request(&pair, role, &c);
  kp_relay_ctrl_encode(&c, out);
}

static kp_relay_action_t send_pair(kp_relay_t *r, const kp_addr_t *from, uint8_t role, uint8_t tok,
                                   uint64_t now, kp_relay_ctrl_t *answer) {
  uint8_t msg[KP_RELAY_CTRL_LEN], reply[KP_RELAY_CTRL_LEN];
  kp_addr_t to, other;
  pair_msg(msg, role, tok);
  kp_relay_action_t a = kp_relay_input(r, from, msg, sizeof(msg), now, &to, &other, reply);
  if (a == KP_RELAY_REPLY_BOTH) a = KP_RELAY_REPLY; /* the other side is checked by the tests */
  if (a == KP_RELAY_REPLY) {
    KP_CHECK(kp_addr_eq(&to, from));
    KP_CHECK_OK(kp_relay_ctrl_decode(reply, sizeof(reply), answer));
  }
  return a;
}

static void test_codec(void) {
  uint8_t buf[KP_RELAY_CTRL_LEN];
  kp_relay_ctrl_t c = {.type = KP_RELAY_REFUSED, .arg = KP_RELAY_REFUSE_FULL}, d;
  memset(c.id, 7, sizeof(c.id));
  memset(c.reveal, 8, sizeof(c.reveal));
  memset(c.commit, 9, sizeof(c.commit));
  kp_relay_ctrl_encode(&c, buf);
  KP_CHECK_OK(kp_relay_ctrl_decode(buf, sizeof(buf), &d));
  KP_CHECK(d.type == c.type && d.arg == c.arg && !memcmp(d.id, c.id, sizeof(c.id)));
  KP_CHECK(!memcmp(d.reveal, c.reveal, 16) && !memcmp(d.commit, c.commit, 16));
  KP_CHECK(!d.link[0].family && !d.link[1].family);
  KP_CHECK(kp_relay_ctrl_decode(buf, sizeof(buf) - 1, &d) != 0);
  /* PAIRED with an IPv4 and an IPv6 link; a damaged slot length fails. */
  c.type = KP_RELAY_PAIRED;
  addr(&c.link[0], 9, 4242);
  KP_CHECK_OK(kp_addr_parse(&c.link[1], "[2001:db8::7]:9000"));
  kp_relay_ctrl_encode(&c, buf);
  KP_CHECK_OK(kp_relay_ctrl_decode(buf, sizeof(buf), &d));
  KP_CHECK(kp_addr_eq(&d.link[0], &c.link[0]) && kp_addr_eq(&d.link[1], &c.link[1]));
  buf[3 + 16 + 32] = 7;
  KP_CHECK(kp_relay_ctrl_decode(buf, sizeof(buf), &d) != 0);
  /* A PAIR's role is client (0) or server (1). */
  c.type = KP_RELAY_PAIR;
  c.arg = 2;
  kp_relay_ctrl_encode(&c, buf);
  KP_CHECK(kp_relay_ctrl_decode(buf, sizeof(buf), &d) != 0);
  buf[1] = 9;
  KP_CHECK(kp_relay_ctrl_decode(buf, sizeof(buf), &d) != 0);
  /* Two pairs' material differs; a PAIR reveals its role's secret and
   * commits to the other's, never showing it. */
  kp_relay_pair_t p1, p2;
  pair_of(1, &p1), pair_of(2, &p2);
  KP_CHECK(memcmp(p1.id, p2.id, sizeof(p1.id)) && memcmp(p1.secret[0], p1.secret[1], 16));
  kp_relay_pair_request(&p1, 0, &d);
  KP_CHECK(d.type == KP_RELAY_PAIR && d.arg == 0 && !memcmp(d.id, p1.id, 16));
  KP_CHECK(!memcmp(d.reveal, p1.secret[0], 16) && memcmp(d.commit, p1.secret[1], 16));
}

static void test_pair_and_forward(void) {
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(NULL, &rng, &r));
  kp_addr_t a, b, stranger, to, other;
  addr(&a, 1, 1000), addr(&b, 2, 2000), addr(&stranger, 3, 3000);
  kp_relay_ctrl_t ans;
  uint8_t reply[KP_RELAY_CTRL_LEN], data[100] = {0x41, 1, 2, 3};
  /* Before pairing, data from either is not the relay's business. */
  KP_CHECK_EQ(kp_relay_input(r, &a, data, sizeof(data), 0, &to, &other, reply), KP_RELAY_NOT_MINE);
  KP_CHECK_EQ(send_pair(r, &a, 0, 0xaa, 0, &ans), KP_RELAY_DROP);   /* waits for b */
  KP_CHECK_EQ(send_pair(r, &a, 0, 0xaa, 100, &ans), KP_RELAY_DROP); /* a retransmission */
  KP_CHECK_EQ(send_pair(r, &b, 1, 0xaa, 150, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  /* Both links, by role: where the two may punch to later. */
  KP_CHECK(kp_addr_eq(&ans.link[0], &a) && kp_addr_eq(&ans.link[1], &b));
  /* a's next retransmission hears it too. */
  KP_CHECK_EQ(send_pair(r, &a, 0, 0xaa, 200, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  KP_CHECK(kp_addr_eq(&ans.link[0], &a) && kp_addr_eq(&ans.link[1], &b));
  KP_CHECK_EQ(kp_relay_input(r, &a, data, sizeof(data), 300, &to, &other, reply), KP_RELAY_FORWARD);
  KP_CHECK(kp_addr_eq(&to, &b));
  KP_CHECK_EQ(kp_relay_input(r, &b, data, sizeof(data), 300, &to, &other, reply), KP_RELAY_FORWARD);
  KP_CHECK(kp_addr_eq(&to, &a));
  /* Nobody else gets through, and a paired address cannot pair again. */
  KP_CHECK_EQ(kp_relay_input(r, &stranger, data, sizeof(data), 300, &to, &other, reply),
              KP_RELAY_NOT_MINE);
  KP_CHECK_EQ(send_pair(r, &a, 0, 0xbb, 400, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_REFUSED);
  /* ... unless its session has been silent for a minute (a NAT reused the
   * port): then the new pair goes ahead. */
  send_pair(r, &stranger, 1, 0xbb, 60400, &ans);
  KP_CHECK_EQ(send_pair(r, &a, 0, 0xbb, 60400, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  KP_CHECK_EQ(kp_relay_input(r, &b, data, sizeof(data), 60500, &to, &other, reply),
              KP_RELAY_NOT_MINE);
  /* Unless the address is gone (a closed TCP allocation) and reused. */
  kp_relay_t *r2;
  KP_CHECK_OK(kp_relay_new(NULL, &rng, &r2));
  send_pair(r2, &a, 0, 0xaa, 0, &ans);
  KP_CHECK_EQ(send_pair(r2, &b, 1, 0xaa, 0, &ans), KP_RELAY_REPLY);
  kp_relay_forget(r2, &a);
  KP_CHECK_EQ(kp_relay_input(r2, &b, data, sizeof(data), 10, &to, &other, reply),
              KP_RELAY_NOT_MINE);
  KP_CHECK_EQ(send_pair(r2, &a, 0, 0xbb, 20, &ans), KP_RELAY_DROP); /* a fresh half pair */
  kp_relay_stats_t st2;
  kp_relay_stats(r2, &st2);
  KP_CHECK(st2.sessions == 0 && st2.pending == 1);
  kp_relay_free(r2);
  kp_relay_stats_t st;
  kp_relay_stats(r, &st);
  KP_CHECK_EQ(st.sessions, 1);
  KP_CHECK_EQ(st.paired, 2);
  KP_CHECK_EQ(st.forwarded, 2);
  KP_CHECK_EQ(st.pending, 0);
  kp_relay_free(r);
}

static void test_limits(void) {
  kp_relay_config_t cfg;
  kp_relay_config_defaults(&cfg);
  cfg.max_sessions = 2;
  cfg.session_rate = 10000;
  cfg.idle_ms = 1000;
  cfg.max_lifetime_ms = 5000;
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(&cfg, &rng, &r));
  kp_relay_ctrl_t ans;
  kp_addr_t a[3], b[3], to, other;
  for (uint8_t i = 0; i < 3; i++)
    addr(&a[i], (uint8_t)(10 + i), 1000), addr(&b[i], (uint8_t)(20 + i), 2000);
  for (uint8_t i = 0; i < 2; i++) {
    send_pair(r, &a[i], 0, (uint8_t)(1 + i), 0, &ans);
    KP_CHECK_EQ(send_pair(r, &b[i], 1, (uint8_t)(1 + i), 0, &ans), KP_RELAY_REPLY);
    KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  }
  /* Full: the third pair hears why. */
  send_pair(r, &a[2], 0, 3, 0, &ans);
  KP_CHECK_EQ(send_pair(r, &b[2], 1, 3, 0, &ans), KP_RELAY_REPLY);
  KP_CHECK(ans.type == KP_RELAY_REFUSED && ans.arg == KP_RELAY_REFUSE_FULL);

  /* The per-session rate: 10000 bytes/s, a second of burst. */
  uint8_t big[1000] = {0x41}, reply[KP_RELAY_CTRL_LEN];
  unsigned passed = 0;
  for (int i = 0; i < 20; i++)
    passed +=
        kp_relay_input(r, &a[0], big, sizeof(big), 100, &to, &other, reply) == KP_RELAY_FORWARD;
  KP_CHECK_EQ(passed, 10);
  KP_CHECK_EQ(kp_relay_input(r, &a[0], big, sizeof(big), 600, &to, &other, reply),
              KP_RELAY_FORWARD);

  /* Idle: session 1 was never used after pairing and goes at 1 s; session
   * 0, busy at 600 ms, lives to 1.6 s; then its lifetime ends it. */
  kp_relay_tick(r, 1000);
  kp_relay_stats_t st;
  kp_relay_stats(r, &st);
  KP_CHECK_EQ(st.sessions, 1);
  KP_CHECK_EQ(st.expired_idle, 1);
  for (uint64_t t = 1000; t <= 5000; t += 500)
    KP_CHECK_EQ(kp_relay_input(r, &a[0], big, 10, t, &to, &other, reply), KP_RELAY_FORWARD);
  kp_relay_tick(r, 5000);
  kp_relay_stats(r, &st);
  KP_CHECK_EQ(st.sessions, 0);
  KP_CHECK_EQ(st.expired_lifetime, 1);
  KP_CHECK_EQ(kp_relay_input(r, &a[0], big, 10, 5001, &to, &other, reply), KP_RELAY_NOT_MINE);

  /* Pairing attempts per source IP: 10 per second, then refused. */
  kp_addr_t flood;
  unsigned refused = 0;
  for (uint16_t i = 0; i < 30; i++) {
    addr(&flood, 99, (uint16_t)(4000 + i));
    refused += send_pair(r, &flood, 0, (uint8_t)(50 + i), 6000, &ans) == KP_RELAY_REPLY &&
               ans.arg == KP_RELAY_REFUSE_ATTEMPTS;
  }
  KP_CHECK_EQ(refused, 20);
  kp_relay_free(r);
}

/* A flood of half pairs from many sources: memory is the fixed tables,
 * the pending table holds the newest, and a real pair still works. */
static void test_pair_flood(void) {
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(NULL, &rng, &r));
  kp_relay_ctrl_t ans;
  kp_addr_t from;
  for (unsigned i = 0; i < 100000; i++) {
    kp_addr_set_v4(&from, 0x0a000000u + i, 1000); /* each its own IP */
    kp_relay_ctrl_t c = {.type = KP_RELAY_PAIR};
    uint8_t msg[KP_RELAY_CTRL_LEN], reply[KP_RELAY_CTRL_LEN];
    kp_addr_t to, other;
    randombytes_buf(c.id, sizeof(c.id));
    kp_relay_ctrl_encode(&c, msg);
    kp_relay_input(r, &from, msg, sizeof(msg), 1000 + i / 100, &to, &other, reply);
  }
  kp_relay_stats_t st;
  kp_relay_stats(r, &st);
  KP_CHECK_EQ(st.pending, 256);
  KP_CHECK_EQ(st.sessions, 0);
  kp_addr_t a, b;
  addr(&a, 1, 1), addr(&b, 2, 2);
  send_pair(r, &a, 0, 0x77, 3000, &ans);
  KP_CHECK_EQ(send_pair(r, &b, 1, 0x77, 3000, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  kp_relay_free(r);
}

/* Many sessions come and go: the index finds every live address after
 * deletions in the middle of probe runs. */
static void test_index_churn(void) {
  kp_relay_config_t cfg;
  kp_relay_config_defaults(&cfg);
  cfg.max_sessions = 64;
  cfg.pair_rate = 1000000;
  cfg.idle_ms = 100;
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(&cfg, &rng, &r));
  kp_relay_ctrl_t ans;
  uint8_t reply[KP_RELAY_CTRL_LEN], data[10] = {0x41};
  kp_addr_t to, other;
  for (unsigned round = 0; round < 50; round++) {
    uint64_t now = round * 1000;
    kp_addr_t a[64], b[64];
    for (unsigned i = 0; i < 64; i++) {
      kp_addr_set_v4(&a[i], 0x0a000000u + round * 1000 + i, 1);
      kp_addr_set_v4(&b[i], 0x0b000000u + round * 1000 + i, 2);
      send_pair(r, &a[i], 0, (uint8_t)i, now, &ans);
      KP_CHECK_EQ(send_pair(r, &b[i], 1, (uint8_t)i, now, &ans), KP_RELAY_REPLY);
      KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
    }
    /* Keep the odd ones busy; the even ones idle out. */
    for (unsigned i = 1; i < 64; i += 2)
      KP_CHECK_EQ(kp_relay_input(r, &a[i], data, sizeof(data), now + 60, &to, &other, reply),
                  KP_RELAY_FORWARD);
    kp_relay_tick(r, now + 120);
    for (unsigned i = 0; i < 64; i++) {
      kp_relay_action_t act =
          kp_relay_input(r, &b[i], data, sizeof(data), now + 130, &to, &other, reply);
      KP_CHECK_EQ(act, i % 2 ? KP_RELAY_FORWARD : KP_RELAY_NOT_MINE);
      if (act == KP_RELAY_FORWARD) KP_CHECK(kp_addr_eq(&to, &a[i]));
    }
    kp_relay_tick(r, now + 500);
  }
  kp_relay_free(r);
}

/* An address that left a half pair and then paired elsewhere: the old
 * half is forgotten (completing it pairs nobody), so an address is never
 * in two sessions and the index cannot fill up with stale entries. */
static void test_stale_half_pair(void) {
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(NULL, &rng, &r));
  kp_addr_t x, y, z;
  addr(&x, 1, 1000), addr(&y, 2, 2000), addr(&z, 3, 3000);
  kp_relay_ctrl_t ans;
  for (int round = 0; round < 3000; round++) {
    uint8_t a = (uint8_t)(2 * round + 1), b = (uint8_t)(2 * round + 2);
    uint64_t now = 100000ull * (uint64_t)round;                    /* no rate limit in the way */
    KP_CHECK_EQ(send_pair(r, &x, 0, a, now, &ans), KP_RELAY_DROP); /* half with token a */
    send_pair(r, &y, 1, b, now, &ans);
    KP_CHECK_EQ(send_pair(r, &x, 0, b, now, &ans), KP_RELAY_REPLY); /* x and y pair on b */
    KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
    /* x's half on a went when it paired: z only waits, pairing nobody. */
    KP_CHECK_EQ(send_pair(r, &z, 1, a, now, &ans), KP_RELAY_DROP);
    kp_relay_forget(r, &z);
    kp_relay_forget(r, &x);
    kp_relay_stats_t st;
    kp_relay_stats(r, &st);
    KP_CHECK(st.sessions == 0 && st.pending == 0);
  }
  kp_relay_free(r);
}

/* Tunnel frames (relay/uv/tunnel.h): every type round-trips; a frame cut
 * short asks for more; damaged ones are refused; random bytes never crash
 * the decoder or make it read past what it was given. */
static void test_tunnel_frames(void) {
  uint8_t buf[KP_TUNNEL_FRAME_MAX], payload[KP_TUNNEL_MAX_DATAGRAM];
  memset(payload, 0x5a, sizeof(payload));
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_DATA, .channel = 3, .data = payload, .len = 1500}, g;
  KP_CHECK_OK(kp_addr_parse(&f.addr, "[2001:db8::1]:443"));
  size_t n = kp_tunnel_frame_encode(&f, buf), used = 0;
  KP_CHECK_EQ(n, KP_TUNNEL_FRAME_MAX);
  KP_CHECK_EQ(kp_tunnel_frame_decode(buf, n, &g, &used), 1);
  KP_CHECK(used == n && g.type == KP_TUNNEL_DATA && g.channel == 3 && g.len == 1500);
  KP_CHECK(kp_addr_eq(&g.addr, &f.addr) && !memcmp(g.data, payload, 1500));
  for (size_t cut = 0; cut < n; cut++) KP_CHECK_EQ(kp_tunnel_frame_decode(buf, cut, &g, &used), 0);
  f.len = KP_TUNNEL_MAX_DATAGRAM + 1;
  KP_CHECK_EQ(kp_tunnel_frame_encode(&f, buf), 0);
  /* A hostile frame: an IPv4 address and 1512 bytes, within the frame size
   * (sized for IPv6) but over a datagram. */
  f.len = KP_TUNNEL_MAX_DATAGRAM;
  addr(&f.addr, 5, 5);
  n = kp_tunnel_frame_encode(&f, buf);
  size_t big = n + 12;
  buf[0] = (uint8_t)((big - 2) >> 8), buf[1] = (uint8_t)(big - 2);
  memset(buf + n, 0x41, 12);
  KP_CHECK_EQ(kp_tunnel_frame_decode(buf, big, &g, &used), -1);
  const uint8_t types[] = {KP_TUNNEL_OPEN, KP_TUNNEL_OPENED, KP_TUNNEL_REFUSED, KP_TUNNEL_CLOSE};
  for (size_t i = 0; i < sizeof(types); i++) {
    kp_tunnel_frame_t h = {.type = types[i], .channel = 15, .reason = 2};
    addr(&h.addr, 13, 49737);
    n = kp_tunnel_frame_encode(&h, buf);
    KP_CHECK_EQ(kp_tunnel_frame_decode(buf, n, &g, &used), 1);
    KP_CHECK(g.type == h.type && g.channel == 15 && used == n);
    if (h.type == KP_TUNNEL_OPENED) KP_CHECK(kp_addr_eq(&g.addr, &h.addr));
    if (h.type == KP_TUNNEL_REFUSED) KP_CHECK_EQ(g.reason, 2);
  }
  /* A channel out of range, an unknown type, a length under the header. */
  kp_tunnel_frame_t h = {.type = KP_TUNNEL_OPEN, .channel = KP_TUNNEL_CHANNELS};
  n = kp_tunnel_frame_encode(&h, buf);
  KP_CHECK_EQ(kp_tunnel_frame_decode(buf, n, &g, &used), -1);
  buf[4] = 0, buf[2] = 99;
  KP_CHECK_EQ(kp_tunnel_frame_decode(buf, n, &g, &used), -1);
  buf[0] = 0, buf[1] = 1;
  KP_CHECK_EQ(kp_tunnel_frame_decode(buf, n, &g, &used), -1);
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (int i = 0; i < 200000; i++) {
    size_t len = 2 + (size_t)(x % 40);
    for (size_t j = 0; j < len; j++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      buf[j] = (uint8_t)x;
    }
    buf[0] = 0; /* short frames, so some are complete */
    int r = kp_tunnel_frame_decode(buf, len, &g, &used);
    KP_CHECK(r == 0 || r == -1 || (r == 1 && used <= len));
  }
}

/* One IP gets its share and no more: sessions it is a side of, half pairs
 * it leaves waiting; everyone else still pairs. */
static void test_per_ip_caps(void) {
  kp_relay_config_t cfg;
  kp_relay_config_defaults(&cfg);
  cfg.sessions_per_ip = 4;
  cfg.pending_per_ip = 3;
  cfg.pair_rate = 1000;
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(&cfg, &rng, &r));
  kp_relay_ctrl_t ans;
  kp_addr_t hog, other;
  for (uint8_t i = 0; i < 6; i++) {
    addr(&hog, 66, (uint16_t)(1000 + i));
    addr(&other, (uint8_t)(100 + i), 2000);
    send_pair(r, &other, 1, (uint8_t)(10 + i), 0, &ans);
    kp_relay_action_t a = send_pair(r, &hog, 0, (uint8_t)(10 + i), 0, &ans);
    KP_CHECK_EQ(a, KP_RELAY_REPLY);
    if (i < 4) {
      KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
    } else {
      KP_CHECK(ans.type == KP_RELAY_REFUSED && ans.arg == KP_RELAY_REFUSE_IP_LIMIT);
    }
  }
  /* Half pairs: three wait, the fourth is refused. */
  for (uint8_t i = 0; i < 4; i++) {
    addr(&hog, 67, (uint16_t)(3000 + i));
    kp_relay_action_t a = send_pair(r, &hog, 0, (uint8_t)(40 + i), 0, &ans);
    if (i < 3) {
      KP_CHECK_EQ(a, KP_RELAY_DROP);
    } else {
      KP_CHECK(a == KP_RELAY_REPLY && ans.type == KP_RELAY_REFUSED &&
               ans.arg == KP_RELAY_REFUSE_IP_LIMIT);
    }
  }
  /* Others are not held back by the hogs. */
  kp_addr_t a1, b1;
  addr(&a1, 150, 1), addr(&b1, 151, 1);
  send_pair(r, &a1, 0, 99, 0, &ans);
  KP_CHECK_EQ(send_pair(r, &b1, 1, 99, 0, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  kp_relay_stats_t st;
  kp_relay_stats(r, &st);
  KP_CHECK_EQ(st.refused_ip_limit, 3);
  KP_CHECK_EQ(st.sessions, 5);
  kp_relay_free(r);
}

/* What someone on the path who copied a waiting peer's PAIR can do: send
 * it from elsewhere (the waiting peer keeps its place), or make up the
 * other half (it does not open the commitments). The real other half
 * still pairs with the real waiting peer. Only a waiting peer that has
 * gone quiet (its NAT rebound) may be replaced, by the same half. */
static void test_pair_cannot_be_overwritten(void) {
  kp_relay_t *r;
  KP_CHECK_OK(kp_relay_new(NULL, &rng, &r));
  kp_addr_t client, server, thief, to, other;
  addr(&client, 1, 1000), addr(&server, 2, 2000), addr(&thief, 9, 9000);
  kp_relay_pair_t pair;
  pair_of(0x42, &pair);
  kp_relay_ctrl_t c, ans;
  uint8_t copy[KP_RELAY_CTRL_LEN], reply[KP_RELAY_CTRL_LEN];
  kp_relay_pair_request(&pair, 0, &c);
  kp_relay_ctrl_encode(&c, copy);
  KP_CHECK_EQ(kp_relay_input(r, &client, copy, sizeof(copy), 0, &to, &other, reply), KP_RELAY_DROP);
  /* The copy from elsewhere, while the client retransmits. */
  for (uint64_t t = 100; t <= 900; t += 200) {
    KP_CHECK_EQ(kp_relay_input(r, &thief, copy, sizeof(copy), t, &to, &other, reply),
                KP_RELAY_DROP);
    KP_CHECK_EQ(kp_relay_input(r, &client, copy, sizeof(copy), t + 50, &to, &other, reply),
                KP_RELAY_DROP);
  }
  /* The other half, made up: id and the copied commitment's target are
   * known, the server's secret is not. */
  kp_relay_ctrl_t forged = {.type = KP_RELAY_PAIR, .arg = 1};
  memcpy(forged.id, c.id, sizeof(forged.id));
  memset(forged.reveal, 0x77, sizeof(forged.reveal));
  crypto_generichash(forged.commit, 16, c.reveal, 16, NULL, 0); /* opens the client's */
  uint8_t msg[KP_RELAY_CTRL_LEN];
  kp_relay_ctrl_encode(&forged, msg);
  KP_CHECK_EQ(kp_relay_input(r, &thief, msg, sizeof(msg), 1000, &to, &other, reply), KP_RELAY_DROP);
  kp_relay_stats_t st;
  kp_relay_stats(r, &st);
  KP_CHECK_EQ(st.sessions, 0);
  KP_CHECK_EQ(st.pair_mismatched, 1);
  /* The real server pairs with the real client. */
  KP_CHECK_EQ(send_pair(r, &server, 1, 0x42, 1100, &ans), KP_RELAY_REPLY);
  KP_CHECK_EQ(ans.type, KP_RELAY_PAIRED);
  KP_CHECK(kp_addr_eq(&ans.link[0], &client) && kp_addr_eq(&ans.link[1], &server));
  uint8_t data[64] = {0x41};
  KP_CHECK_EQ(kp_relay_input(r, &thief, data, sizeof(data), 1200, &to, &other, reply),
              KP_RELAY_NOT_MINE);
  KP_CHECK_EQ(kp_relay_input(r, &server, data, sizeof(data), 1200, &to, &other, reply),
              KP_RELAY_FORWARD);
  KP_CHECK(kp_addr_eq(&to, &client));

  /* A half whose peer went quiet (a NAT that rebound): the same half from
   * its new address takes the place. */
  kp_addr_t moved;
  addr(&moved, 3, 3333);
  pair_of(0x43, &pair);
  kp_relay_pair_request(&pair, 0, &c);
  kp_relay_ctrl_encode(&c, copy);
  kp_addr_t client2;
  addr(&client2, 4, 4000);
  kp_relay_input(r, &client2, copy, sizeof(copy), 2000, &to, &other, reply);
  KP_CHECK_EQ(kp_relay_input(r, &moved, copy, sizeof(copy), 3100, &to, &other, reply),
              KP_RELAY_DROP);
  kp_addr_t server2;
  addr(&server2, 5, 5000);
  KP_CHECK_EQ(send_pair(r, &server2, 1, 0x43, 3200, &ans), KP_RELAY_REPLY);
  KP_CHECK(ans.type == KP_RELAY_PAIRED && kp_addr_eq(&ans.link[0], &moved));
  kp_relay_free(r);
}

static const kp_test_case_t cases[] = {
    KP_CASE(codec, unit, 10),
    KP_CASE(pair_and_forward, unit, 10),
    KP_CASE(limits, unit, 10),
    KP_CASE(pair_flood, unit, 30),
    KP_CASE(index_churn, unit, 30),
    KP_CASE(tunnel_frames, unit, 10),
    KP_CASE(stale_half_pair, unit, 10),
    KP_CASE(per_ip_caps, unit, 10),
    KP_CASE(pair_cannot_be_overwritten, unit, 10),
    KP_CASE(record_origin_checked, loopback, 60),
    KP_CASE(tcp_control_flood_bounded, loopback, 120),
};

KP_TEST_MAIN(cases)
