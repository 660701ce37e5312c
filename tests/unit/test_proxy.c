/* SPDX-License-Identifier: MIT */
/* The proxy (proxy/): its codec, the session between a peer and its proxy,
 * what an allocation may send and hear, each refusal with its reason,
 * forged and replayed messages, and a flood of sessions and allocations
 * that leaves the proxy's memory where it was. A small world wires a
 * kp_proxy_client_t to a kp_proxy_t through queues, on a virtual clock. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "holepunch/hs_noise.h"
#include "proxy/proxy.h"
#include "proxy/proxy_client.h"
#include "proxy/proxy_msg.h"
#include "tests/harness/test.h"

/* ---- The world ----------------------------------------------------------------------------------
 */

#define QUEUE 512

typedef struct dgram_s {
  kp_addr_t from, to;
  unsigned slot; /* allocation datagrams: which one sent it */
  size_t len;
  uint8_t data[1500];
} dgram_t;

typedef struct world_s {
  kp_proxy_t *px;
  kp_addr_t proxy_addr, proxy_addr6; /* the second: when it serves both families */
  kp_addr_t peer_addr[8];            /* where each client sends from */
  kp_proxy_client_t *cl[8];
  unsigned ncl;
  /* datagrams from the proxy's socket, to a client (or anyone) */
  dgram_t to_peer[QUEUE];
  unsigned n_to_peer;
  /* datagrams sent from allocations */
  dgram_t out[QUEUE];
  unsigned n_out;
  uint64_t out_bytes;
  bool open_fails;
  bool open[1024];
  kp_addr_t bound[1024];
  /* what the clients heard */
  unsigned opened[8][KP_PROXY_CHANNELS], closed[8][KP_PROXY_CHANNELS], downs[8];
  uint8_t close_reason[8][KP_PROXY_CHANNELS], down_reason[8];
  kp_addr_t alloc_addr[8][KP_PROXY_CHANNELS];
  dgram_t heard[8][8];
  unsigned n_heard[8];
  uint8_t cl_last[8][1500], cl_hello[8][KP_PROXY_HELLO_LEN];
  size_t cl_last_len[8];
  kp_addr_t watch; /* bytes the proxy sent it */
  size_t watch_bytes;
  bool cl_mute[8]; /* what the client sends is kept, not delivered */
  kp_keypair_t kp; /* the proxy's */
  uint64_t now;
  kp_rng_seeded_t seed;
  kp_rng_t rng;
} world_t;

static world_t W;

static void addr(kp_addr_t *a, const char *text) {
  KP_CHECK_OK(kp_addr_parse(a, text));
}

static void px_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  world_t *w = ctx;
  KP_CHECK(w->n_to_peer < QUEUE && len <= 1500);
  if (kp_addr_eq(to, &w->watch)) w->watch_bytes += len;
  dgram_t *d = &w->to_peer[w->n_to_peer++];
  d->from = w->proxy_addr, d->to = *to, d->len = len;
  memcpy(d->data, data, len);
}

/* The proxy's PASSes in parts, as the node takes them (joined here). */
static void px_send_parts(void *ctx, const kp_addr_t *to, const uint8_t *head, size_t hlen,
                          const uint8_t *body, size_t blen) {
  uint8_t whole[1500];
  KP_CHECK(hlen == KP_PROXY_PASS_HEAD && hlen + blen <= sizeof(whole));
  memcpy(whole, head, hlen);
  memcpy(whole + hlen, body, blen);
  px_send(ctx, to, whole, hlen + blen);
}

static int px_alloc_open(void *ctx, unsigned slot, uint8_t family, kp_addr_t *bound) {
  world_t *w = ctx;
  if (w->open_fails) return KP_EMFILE;
  KP_CHECK(slot < 1024 && !w->open[slot]);
  KP_CHECK(family == w->proxy_addr.family || family == w->proxy_addr6.family);
  w->open[slot] = true;
  *bound = family == w->proxy_addr.family ? w->proxy_addr : w->proxy_addr6;
  bound->port = (uint16_t)(40000 + slot);
  w->bound[slot] = *bound;
  return 0;
}

static void px_alloc_send(void *ctx, unsigned slot, const kp_addr_t *to, const uint8_t *data,
                          size_t len) {
  world_t *w = ctx;
  KP_CHECK(w->open[slot]);
  w->out_bytes += len;
  if (w->n_out == QUEUE) return;
  dgram_t *d = &w->out[w->n_out++];
  d->from = w->bound[slot], d->to = *to, d->slot = slot, d->len = len;
  memcpy(d->data, data, len);
}

static void px_alloc_close(void *ctx, unsigned slot) {
  world_t *w = ctx;
  KP_CHECK(w->open[slot]);
  w->open[slot] = false;
}

static void cl_send(void *ctx, const uint8_t *data, size_t len) {
  unsigned i = (unsigned)(uintptr_t)ctx;
  memcpy(W.cl_last[i], data, len);
  W.cl_last_len[i] = len;
  if (data[1] == KP_PROXY_HELLO) memcpy(W.cl_hello[i], data, KP_PROXY_HELLO_LEN);
  if (!W.cl_mute[i]) kp_proxy_input(W.px, &W.peer_addr[i], data, len, W.now);
}

/* Half the clients hand their PASSes over in parts, as the node does; the
 * others have them joined by the client. Which half: the first client
 * (one_client's) gives its parts when first_gives_parts is set. */
static bool first_gives_parts;
static unsigned parts_given;

static void cl_send_parts(void *ctx, const uint8_t *head, size_t hlen, const uint8_t *body,
                          size_t blen) {
  uint8_t whole[KP_PROXY_MAX_DATAGRAM];
  parts_given++;
  KP_CHECK(hlen == KP_PROXY_PASS_HEAD && hlen + blen <= sizeof(whole));
  memcpy(whole, head, hlen);
  memcpy(whole + hlen, body, blen);
  cl_send(ctx, whole, hlen + blen);
}

static void cl_opened(void *ctx, unsigned ch, const kp_addr_t *a) {
  unsigned i = (unsigned)(uintptr_t)ctx;
  W.opened[i][ch]++;
  W.alloc_addr[i][ch] = *a;
}

static void cl_recv(void *ctx, unsigned ch, const kp_addr_t *from, const uint8_t *data,
                    size_t len) {
  unsigned i = (unsigned)(uintptr_t)ctx;
  (void)ch;
  if (W.n_heard[i] == 8) return;
  dgram_t *d = &W.heard[i][W.n_heard[i]++];
  d->from = *from, d->len = len;
  memcpy(d->data, data, len);
}

static void cl_closed(void *ctx, unsigned ch, uint8_t reason) {
  unsigned i = (unsigned)(uintptr_t)ctx;
  W.closed[i][ch]++;
  W.close_reason[i][ch] = reason;
}

static void cl_down(void *ctx, uint8_t reason) {
  unsigned i = (unsigned)(uintptr_t)ctx;
  W.downs[i]++;
  W.down_reason[i] = reason;
}

static void world_init(const kp_proxy_config_t *cfg, const char *proxy_addr) {
  memset(&W, 0, sizeof(W));
  kp_rng_seeded_init(&W.seed, 7);
  W.rng = kp_rng_seeded(&W.seed);
  W.now = 1000;
  addr(&W.proxy_addr, proxy_addr);
  kp_proxy_config_t defaults;
  if (!cfg) {
    kp_proxy_config_defaults(&defaults);
    cfg = &defaults;
  }
  kp_keypair_generate(&W.kp);
  kp_proxy_io_t io = {&W, px_send, px_alloc_open, px_alloc_send, px_alloc_close, px_send_parts};
  KP_CHECK_OK(kp_proxy_new(cfg, &W.kp, &W.rng, &io, &W.px));
  kp_proxy_set_local(W.px, &W.proxy_addr, NULL);
}

/* Delivers what the proxy sent to the clients, until nothing moves. */
static void pump(void) {
  for (int round = 0; round < 16 && W.n_to_peer; round++) {
    dgram_t q[QUEUE];
    unsigned n = W.n_to_peer;
    memcpy(q, W.to_peer, n * sizeof(dgram_t));
    W.n_to_peer = 0;
    for (unsigned k = 0; k < n; k++)
      for (unsigned i = 0; i < W.ncl; i++)
        if (kp_addr_eq(&q[k].to, &W.peer_addr[i]))
          kp_proxy_client_input(W.cl[i], q[k].data, q[k].len, W.now);
  }
}

static void tick(uint64_t ms) {
  W.now += ms;
  kp_proxy_tick(W.px, W.now);
  for (unsigned i = 0; i < W.ncl; i++) kp_proxy_client_tick(W.cl[i], W.now);
  pump();
}

/* A client from `from`, knowing the proxy's key or asking for it. */
static unsigned add_client(const char *from, bool know_key, const kp_keypair_t *kp_in) {
  unsigned i = W.ncl++;
  kp_keypair_t kp;
  if (kp_in)
    kp = *kp_in;
  else
    kp_keypair_generate(&kp);
  addr(&W.peer_addr[i], from);
  kp_proxy_client_io_t io = {(void *)(uintptr_t)i,
                             cl_send,
                             cl_opened,
                             cl_recv,
                             cl_closed,
                             cl_down,
                             (i % 2 == 0) == first_gives_parts ? cl_send_parts : NULL};
  KP_CHECK_OK(kp_proxy_client_new(&kp, know_key ? kp_proxy_public_key(W.px) : NULL, &W.rng, &io,
                                  W.now, &W.cl[i]));
  kp_proxy_client_tick(W.cl[i], W.now);
  pump();
  return i;
}

static void world_free(void) {
  for (unsigned i = 0; i < W.ncl; i++) kp_proxy_client_free(W.cl[i]);
  kp_proxy_free(W.px);
  for (unsigned s = 0; s < 1024; s++) KP_CHECK(!W.open[s]);
}

/* The last datagram an allocation sent, or NULL. */
static const dgram_t *last_out(void) {
  return W.n_out ? &W.out[W.n_out - 1] : NULL;
}

/* A datagram arriving at client i's channel ch allocation from `from`. */
static void arrive(unsigned i, unsigned ch, const kp_addr_t *from, const void *data, size_t len) {
  unsigned slot = (unsigned)(W.alloc_addr[i][ch].port - 40000);
  kp_proxy_alloc_input(W.px, slot, from, data, len, W.now);
  pump();
}

static kp_proxy_stats_t stats(void) {
  kp_proxy_stats_t st;
  kp_proxy_stats(W.px, &st);
  return st;
}

/* ---- Codec --------------------------------------------------------------------------------------
 */

static void test_codec(void) {
  uint8_t buf[1500], key[32];
  kp_proxy_dgram_t d;
  memset(key, 9, sizeof(key));
  kp_proxy_key_req_encode(buf);
  KP_CHECK_OK(kp_proxy_dgram_decode(buf, KP_PROXY_KEY_LEN, &d));
  KP_CHECK(d.type == KP_PROXY_KEY_REQ);
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_KEY_LEN - 1, &d) != 0);
  buf[20] = 1; /* a KEY? carries nothing */
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_KEY_LEN, &d) != 0);
  kp_proxy_key_encode(key, buf);
  KP_CHECK_OK(kp_proxy_dgram_decode(buf, KP_PROXY_KEY_LEN, &d));
  KP_CHECK(d.type == KP_PROXY_KEY && !memcmp(d.key, key, 32));
  buf[2] = 2;
  KP_CHECK_ERR(kp_proxy_dgram_decode(buf, KP_PROXY_KEY_LEN, &d), KP_EVERSION);

  uint8_t msg[129];
  memset(msg, 0x33, sizeof(msg));
  KP_CHECK_EQ(kp_proxy_hello_encode(0x01020304, msg, sizeof(msg), buf), KP_PROXY_HELLO_LEN);
  KP_CHECK_OK(kp_proxy_dgram_decode(buf, KP_PROXY_HELLO_LEN, &d));
  KP_CHECK(d.sender == 0x01020304 && d.noise_len == sizeof(msg) && !memcmp(d.noise, msg, 129));
  buf[KP_PROXY_HELLO_LEN - 1] = 1; /* padding is zeros */
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_HELLO_LEN, &d) != 0);
  buf[KP_PROXY_HELLO_LEN - 1] = 0;
  buf[6] = 1; /* a length past the datagram */
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_HELLO_LEN, &d) != 0);
  KP_CHECK_EQ(kp_proxy_hello_encode(1, msg, 300, buf), 0);

  size_t n = kp_proxy_welcome_encode(5, 6, msg, 56, buf, sizeof(buf));
  KP_CHECK_EQ(n, KP_PROXY_WELCOME_HEAD + 56);
  KP_CHECK_OK(kp_proxy_dgram_decode(buf, n, &d));
  KP_CHECK(d.receiver == 5 && d.sender == 6 && d.noise_len == 56);
  KP_CHECK(n < KP_PROXY_HELLO_LEN); /* no amplification */

  kp_proxy_refused_encode(77, KP_PROXY_RATE, buf);
  KP_CHECK_OK(kp_proxy_dgram_decode(buf, KP_PROXY_REFUSED_LEN, &d));
  KP_CHECK(d.receiver == 77 && d.reason == KP_PROXY_RATE);
  buf[6] = 0;
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_REFUSED_LEN, &d) != 0);
  buf[6] = 99;
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_REFUSED_LEN, &d) != 0);
  buf[1] = 0;
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_REFUSED_LEN, &d) != 0);
  buf[0] = 0x52;
  KP_CHECK(kp_proxy_dgram_decode(buf, KP_PROXY_REFUSED_LEN, &d) != 0);

  /* Bodies: each op round-trips; every truncation fails. */
  kp_proxy_body_t b[6], e;
  uint8_t payload[KP_PROXY_MAX_PAYLOAD];
  memset(payload, 0x41, sizeof(payload));
  b[0] = (kp_proxy_body_t){.op = KP_PROXY_OP_OPEN, .channel = 3, .family = KP_AF_INET6};
  b[1] = (kp_proxy_body_t){.op = KP_PROXY_OP_OPENED, .channel = 15, .lifetime_s = 600};
  addr(&b[1].addr, "203.0.113.9:40001");
  b[2] = (kp_proxy_body_t){.op = KP_PROXY_OP_CLOSE, .channel = 1, .reason = KP_PROXY_QUOTA};
  b[3] = (kp_proxy_body_t){
      .op = KP_PROXY_OP_SEND, .channel = 2, .data = payload, .len = KP_PROXY_MAX_PAYLOAD};
  addr(&b[3].addr, "[2001:db8::1]:443");
  b[4] = (kp_proxy_body_t){.op = KP_PROXY_OP_RECV, .channel = 0, .data = payload, .len = 1};
  addr(&b[4].addr, "198.51.100.3:9");
  b[5] = (kp_proxy_body_t){.op = KP_PROXY_OP_PING};
  for (int i = 0; i < 6; i++) {
    n = kp_proxy_body_encode(&b[i], buf, sizeof(buf));
    KP_CHECK(n >= 2);
    KP_CHECK_OK(kp_proxy_body_decode(buf, n, &e));
    KP_CHECK(e.op == b[i].op && e.channel == b[i].channel && e.reason == b[i].reason &&
             e.lifetime_s == b[i].lifetime_s && e.len == b[i].len && e.family == b[i].family);
    if (b[i].addr.family) KP_CHECK(kp_addr_eq(&e.addr, &b[i].addr));
    if (b[i].len) KP_CHECK(!memcmp(e.data, b[i].data, b[i].len));
    /* (a SEND's or RECV's datagram is the rest: cutting it is another datagram) */
    for (size_t cut = 0; cut < n - (b[i].len ? b[i].len : 0); cut++)
      if (b[i].op != KP_PROXY_OP_OPEN || cut != 2) /* (that one is below) */
        KP_CHECK(kp_proxy_body_decode(buf, cut, &e) != 0);
  }
  /* The biggest SEND fills exactly one 1500-byte DATA. */
  n = kp_proxy_body_encode(&b[3], buf, sizeof(buf));
  KP_CHECK_EQ(KP_PROXY_DATA_HEAD + n + KP_PROXY_TAG_LEN, 1500);
  b[3].len++;
  KP_CHECK_EQ(kp_proxy_body_encode(&b[3], buf, sizeof(buf)), 0);
  /* An OPEN names a family, 4 or 6, and nothing else. */
  n = kp_proxy_body_encode(&b[0], buf, sizeof(buf));
  KP_CHECK_EQ(n, 3);
  KP_CHECK_EQ(buf[2], 6);
  buf[2] = 5;
  KP_CHECK(kp_proxy_body_decode(buf, n, &e) != 0);
  /* Without it (a peer from before families): the session's family. */
  KP_CHECK_OK(kp_proxy_body_decode(buf, 2, &e));
  KP_CHECK(e.op == KP_PROXY_OP_OPEN && e.family == 0);
  /* ... and family 0 encodes as that form (every body decoded encodes
   * back to its bytes); a family neither 4 nor 6 is refused. */
  b[0].family = 0;
  KP_CHECK_EQ(kp_proxy_body_encode(&b[0], buf, sizeof(buf)), 2);
  KP_CHECK(buf[0] == KP_PROXY_OP_OPEN && buf[1] == b[0].channel);
  b[0].family = 5;
  KP_CHECK_EQ(kp_proxy_body_encode(&b[0], buf, sizeof(buf)), 0);
  b[0].family = KP_AF_INET;
  b[0].channel = KP_PROXY_CHANNELS;
  KP_CHECK_EQ(kp_proxy_body_encode(&b[0], buf, sizeof(buf)), 0);
  buf[0] = 99, buf[1] = 0;
  KP_CHECK(kp_proxy_body_decode(buf, 2, &e) != 0);

  /* Sealing: opens once; a flipped bit, another key, or a second time
   * does not. */
  kp_proxy_keys_t a = {0}, z = {0};
  memset(a.tx, 1, 32), memset(z.rx, 1, 32);
  uint8_t body[4] = {KP_PROXY_OP_PING, 0}, plain[1500], sealed[1500];
  size_t m = kp_proxy_seal(&a, 42, body, 2, sealed, sizeof(sealed));
  KP_CHECK_EQ(m, KP_PROXY_DATA_HEAD + 2 + KP_PROXY_TAG_LEN);
  KP_CHECK_OK(kp_proxy_dgram_decode(sealed, m, &d));
  bool replayed;
  KP_CHECK_EQ(kp_proxy_open(&z, sealed, &d, plain, &replayed), 2);
  KP_CHECK_EQ(kp_proxy_open(&z, sealed, &d, plain, &replayed), -1);
  KP_CHECK(replayed);
  m = kp_proxy_seal(&a, 42, body, 2, sealed, sizeof(sealed));
  sealed[3] ^= 1; /* the header is associated data */
  KP_CHECK_OK(kp_proxy_dgram_decode(sealed, m, &d));
  KP_CHECK_EQ(kp_proxy_open(&z, sealed, &d, plain, &replayed), -1);
  KP_CHECK(!replayed);
}

static void test_replay_window(void) {
  kp_proxy_replay_t w = {0};
  KP_CHECK(kp_proxy_replay_fresh(&w, 0));
  kp_proxy_replay_mark(&w, 0);
  KP_CHECK(!kp_proxy_replay_fresh(&w, 0));
  kp_proxy_replay_mark(&w, 5000);
  KP_CHECK(!kp_proxy_replay_fresh(&w, 5000));
  KP_CHECK(kp_proxy_replay_fresh(&w, 4999) && kp_proxy_replay_fresh(&w, 5000 - 1023));
  KP_CHECK(!kp_proxy_replay_fresh(&w, 5000 - 1025)); /* older than the window */
  kp_proxy_replay_mark(&w, 4999);
  KP_CHECK(!kp_proxy_replay_fresh(&w, 4999));
  kp_proxy_replay_mark(&w, 5001);
  KP_CHECK(!kp_proxy_replay_fresh(&w, 4999) && !kp_proxy_replay_fresh(&w, 5001));
  KP_CHECK(kp_proxy_replay_fresh(&w, 5002));
  /* Sliding past a counter clears its bit for the one 1024 later. */
  kp_proxy_replay_mark(&w, 5001 + 1024);
  KP_CHECK(kp_proxy_replay_fresh(&w, 5002 + 1023 - 1));
}

/* ---- Sessions and allocations
 * -------------------------------------------------------------------- */

static void open_channel(unsigned i, unsigned ch) {
  kp_proxy_client_open(W.cl[i], ch, W.proxy_addr.family, W.now);
  pump();
}

/* The usual world: a proxy on 203.0.113.1, one client that knows its key,
 * channel 0 open. */
static unsigned one_client(const kp_proxy_config_t *cfg) {
  world_init(cfg, "203.0.113.1:4000");
  unsigned c = add_client("198.51.100.7:5000", true, NULL);
  open_channel(c, 0);
  return c;
}

static void test_session_and_forwarding(void) {
  world_init(NULL, "203.0.113.1:4000");
  unsigned c = add_client("198.51.100.7:5000", false, NULL); /* asks for the key first */
  kp_proxy_client_stats_t cs;
  kp_proxy_client_stats(W.cl[c], &cs);
  KP_CHECK(cs.up);
  KP_CHECK(!memcmp(kp_proxy_client_proxy_key(W.cl[c]), kp_proxy_public_key(W.px), 32));
  KP_CHECK_EQ(stats().half_open, 1); /* until its first DATA */
  open_channel(c, 0);
  KP_CHECK_EQ(W.opened[c][0], 1);
  KP_CHECK_EQ(stats().sessions, 1);
  KP_CHECK_EQ(stats().allocs, 1);
  KP_CHECK(W.alloc_addr[c][0].port >= 40000 && kp_addr_same_ip(&W.alloc_addr[c][0], &W.proxy_addr));

  /* A DHT message to anyone leaves from the allocation, unchanged. */
  kp_addr_t dht_node, peer;
  addr(&dht_node, "198.51.100.20:49737");
  addr(&peer, "198.51.100.30:7000");
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  KP_CHECK_OK(kp_proxy_client_send(W.cl[c], 0, &dht_node, ping, sizeof(ping), W.now));
  KP_CHECK(last_out() && kp_addr_eq(&last_out()->to, &dht_node) &&
           kp_addr_eq(&last_out()->from, &W.alloc_addr[c][0]) && last_out()->len == sizeof(ping) &&
           !memcmp(last_out()->data, ping, sizeof(ping)));
  /* Its answer comes back with where it came from. */
  static const uint8_t pong[] = {0x93, 0x02, 0x02, 0xc0};
  arrive(c, 0, &dht_node, pong, sizeof(pong));
  KP_CHECK_EQ(W.n_heard[c], 1);
  KP_CHECK(kp_addr_eq(&W.heard[c][0].from, &dht_node) && !memcmp(W.heard[c][0].data, pong, 4));

  /* A stream packet to a peer that never sent anything: dropped. A probe
   * (small) goes; once the peer answers, stream packets flow both ways. */
  uint8_t packet[1200], probe[61];
  memset(packet, 0x41, sizeof(packet));
  memset(probe, 0x50, sizeof(probe));
  unsigned before = W.n_out;
  kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_UNPROVEN], 1);
  kp_proxy_client_send(W.cl[c], 0, &peer, probe, sizeof(probe), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before + 1);
  arrive(c, 0, &peer, probe, sizeof(probe));
  KP_CHECK_EQ(W.n_heard[c], 2);
  for (int k = 0; k < 50; k++)
    kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before + 51);
  KP_CHECK(!memcmp(last_out()->data, packet, sizeof(packet)));
  arrive(c, 0, &peer, packet, sizeof(packet));
  KP_CHECK_EQ(W.n_heard[c], 3);
  KP_CHECK_EQ(W.heard[c][2].len, sizeof(packet));

  /* The largest datagram passes both ways; one byte more is refused at
   * the client, and arriving at the allocation is dropped. */
  static uint8_t big[KP_PROXY_MAX_PAYLOAD + 1];
  KP_CHECK_OK(kp_proxy_client_send(W.cl[c], 0, &peer, big, KP_PROXY_MAX_PAYLOAD, W.now));
  KP_CHECK_EQ(last_out()->len, KP_PROXY_MAX_PAYLOAD);
  KP_CHECK_ERR(kp_proxy_client_send(W.cl[c], 0, &peer, big, sizeof(big), W.now), KP_ETOOBIG);
  arrive(c, 0, &peer, big, sizeof(big));
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_TOO_BIG], 1);

  /* The allocation is refreshed and outlives its first lifetime. */
  for (int s = 0; s < 360; s++) tick(5000);
  KP_CHECK_EQ(stats().allocs, 1);
  KP_CHECK_EQ(W.closed[c][0], 0);
  KP_CHECK_EQ(W.opened[c][0], 1); /* refreshed at the same address: no news */
  world_free();
}

/* A dual-stack proxy lends an address of either family over a session of
 * either: an IPv6-only peer gets an IPv4 address (and the other way
 * round), which sends only to its own family; a proxy of one family
 * refuses the other with its reason. */
static void test_bridges_families(void) {
  world_init(NULL, "203.0.113.1:4000");
  addr(&W.proxy_addr6, "[2001:db8::1]:4000");
  kp_proxy_set_local(W.px, &W.proxy_addr6, NULL);
  unsigned v6 = add_client("[2001:db8:5::7]:5000", true, NULL);
  unsigned v4 = add_client("198.51.100.7:5000", true, NULL);
  kp_proxy_client_open(W.cl[v6], 0, KP_AF_INET, W.now);
  kp_proxy_client_open(W.cl[v4], 0, KP_AF_INET6, W.now);
  pump();
  KP_CHECK_EQ(W.opened[v6][0], 1);
  KP_CHECK_EQ(W.opened[v4][0], 1);
  KP_CHECK(kp_addr_same_ip(&W.alloc_addr[v6][0], &W.proxy_addr));
  KP_CHECK(kp_addr_same_ip(&W.alloc_addr[v4][0], &W.proxy_addr6));

  /* The IPv6 peer speaks to an IPv4 DHT node and hears its answer. */
  kp_addr_t dht4, dht6;
  addr(&dht4, "198.51.100.20:49737");
  addr(&dht6, "[2001:db8:7::20]:49737");
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  unsigned before = W.n_out;
  KP_CHECK_OK(kp_proxy_client_send(W.cl[v6], 0, &dht4, ping, sizeof(ping), W.now));
  KP_CHECK_EQ(W.n_out, before + 1);
  KP_CHECK(kp_addr_eq(&last_out()->from, &W.alloc_addr[v6][0]) &&
           kp_addr_eq(&last_out()->to, &dht4));
  arrive(v6, 0, &dht4, ping, sizeof(ping));
  KP_CHECK_EQ(W.n_heard[v6], 1);
  KP_CHECK(kp_addr_eq(&W.heard[v6][0].from, &dht4));
  /* An IPv4 allocation sends nothing to an IPv6 address, nor the other
   * way round. */
  kp_proxy_client_send(W.cl[v6], 0, &dht6, ping, sizeof(ping), W.now);
  kp_proxy_client_send(W.cl[v4], 0, &dht4, ping, sizeof(ping), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before + 1);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_SCOPE], 2);
  KP_CHECK_OK(kp_proxy_client_send(W.cl[v4], 0, &dht6, ping, sizeof(ping), W.now));
  KP_CHECK_EQ(W.n_out, before + 2);
  KP_CHECK(kp_addr_eq(&last_out()->from, &W.alloc_addr[v4][0]));
  /* Nor does an IPv6 allocation reach our IPv4 address through NAT64. */
  kp_addr_t own64;
  addr(&own64, "[64:ff9b::cb00:7101]:4000");
  kp_proxy_client_send(W.cl[v4], 0, &own64, ping, sizeof(ping), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before + 2);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_SCOPE], 3);
  /* A channel asked for the other family gets it (the old one closed). */
  kp_proxy_client_open(W.cl[v6], 0, KP_AF_INET6, W.now);
  pump();
  KP_CHECK_EQ(W.opened[v6][0], 2);
  KP_CHECK(kp_addr_same_ip(&W.alloc_addr[v6][0], &W.proxy_addr6));
  KP_CHECK_EQ(stats().allocs, 2);
  world_free();

  /* Sessions over one family hold at most 3/4 of a dual-stack proxy's
   * allocations: a flood over IPv6 leaves IPv4's users room. */
  kp_proxy_config_t small;
  kp_proxy_config_defaults(&small);
  small.max_allocs = 8;
  world_init(&small, "203.0.113.1:4000");
  addr(&W.proxy_addr6, "[2001:db8::1]:4000");
  kp_proxy_set_local(W.px, &W.proxy_addr6, NULL);
  for (int k = 0; k < 7; k++) {
    char from[64];
    snprintf(from, sizeof(from), "[2001:db8:%x::7]:5000", 0x100 + k);
    unsigned f = add_client(from, true, NULL);
    kp_proxy_client_open(W.cl[f], 0, KP_AF_INET, W.now);
    pump();
  }
  KP_CHECK_EQ(stats().allocs, 6);
  KP_CHECK_EQ(stats().refused[KP_PROXY_FULL], 1);
  unsigned late = add_client("198.51.100.7:5000", true, NULL);
  kp_proxy_client_open(W.cl[late], 0, KP_AF_INET, W.now);
  pump();
  KP_CHECK_EQ(W.opened[late][0], 1);
  world_free();

  /* An IPv4-only proxy: an IPv6 allocation is refused, and says why. */
  world_init(NULL, "203.0.113.1:4000");
  unsigned c = add_client("198.51.100.7:5000", true, NULL);
  kp_proxy_client_open(W.cl[c], 0, KP_AF_INET6, W.now);
  pump();
  KP_CHECK_EQ(W.opened[c][0], 0);
  KP_CHECK_EQ(W.closed[c][0], 1);
  KP_CHECK_EQ(W.close_reason[c][0], KP_PROXY_FAMILY);
  KP_CHECK_EQ(stats().refused[KP_PROXY_FAMILY], 1);
  KP_CHECK_EQ(stats().allocs, 0);
  KP_CHECK(!strcmp(kp_proxy_reason_name(KP_PROXY_FAMILY), "no address of that family"));
  world_free();
}

static void test_inbound_needs_permit(void) {
  unsigned c = one_client(NULL);
  kp_addr_t stranger, other_port;
  addr(&stranger, "198.51.100.66:1234");
  addr(&other_port, "198.51.100.20:9999");
  static const uint8_t junk[] = {0x41, 1, 2, 3};
  arrive(c, 0, &stranger, junk, sizeof(junk));
  KP_CHECK_EQ(W.n_heard[c], 0);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_PERMIT], 1);
  /* Sending to an IP permits its other ports too (a birthday side's
   * sockets), as an address-restricted NAT's mapping does... */
  kp_addr_t dht_node;
  addr(&dht_node, "198.51.100.20:49737");
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  kp_proxy_client_send(W.cl[c], 0, &dht_node, ping, sizeof(ping), W.now);
  pump();
  arrive(c, 0, &other_port, junk, sizeof(junk));
  KP_CHECK_EQ(W.n_heard[c], 1);
  /* ...and proves the port it came from, not the one we sent to. */
  uint8_t packet[1000] = {0x41};
  unsigned before = W.n_out;
  kp_proxy_client_send(W.cl[c], 0, &dht_node, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before);
  kp_proxy_client_send(W.cl[c], 0, &other_port, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, before + 1);
  world_free();
}

static void test_scope(void) {
  unsigned c = one_client(NULL);
  open_channel(c, 1);
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  const char *refused[] = {"127.0.0.1:4000",    "10.0.0.1:53",    "192.168.1.1:80",
                           "169.254.1.1:80",    "0.0.0.0:80",     "224.0.0.1:5353",
                           "255.255.255.255:9", "203.0.113.1:22", "198.51.100.9:0"};
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    kp_addr_t to;
    addr(&to, refused[i]);
    kp_proxy_client_send(W.cl[c], 0, &to, ping, sizeof(ping), W.now);
  }
  pump();
  KP_CHECK_EQ(W.n_out, 0);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_SCOPE], 9);
  /* The proxy's own DHT port is a DHT node like any other, and another
   * allocation is a peer like any other (two peers of one proxy). */
  kp_proxy_client_send(W.cl[c], 0, &W.proxy_addr, ping, sizeof(ping), W.now);
  kp_proxy_client_send(W.cl[c], 0, &W.alloc_addr[c][1], ping, sizeof(ping), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 2);
  /* Scope follows the proxy's own address: one on loopback (the tests')
   * reaches loopback. */
  kp_addr_t self, to;
  addr(&self, "127.0.0.1:1");
  addr(&to, "127.0.0.1:2");
  KP_CHECK(kp_proxy_in_scope(&self, &to));
  addr(&self, "10.1.0.1:1");
  KP_CHECK(!kp_proxy_in_scope(&self, &to));
  addr(&to, "10.2.0.9:2");
  KP_CHECK(kp_proxy_in_scope(&self, &to));
  /* An IPv6 address a translator turns into IPv4 (NAT64, 6to4) is judged
   * by that address too; NAT64's local-use prefix is a LAN's. */
  addr(&self, "[2001:db8::1]:1");
  const char *v6_refused[] = {"[64:ff9b::7f00:1]:53", "[64:ff9b::a00:1]:53",
                              "[2002:c0a8:101::1]:80", "[64:ff9b:1::cb00:7105]:80",
                              "[64:ff9b::e000:1]:80"};
  for (size_t i = 0; i < sizeof(v6_refused) / sizeof(v6_refused[0]); i++) {
    addr(&to, v6_refused[i]);
    KP_CHECK_MSG(!kp_proxy_in_scope(&self, &to), "%s", v6_refused[i]);
  }
  addr(&to, "[64:ff9b::cb00:7105]:80"); /* 203.0.113.5 */
  KP_CHECK(kp_proxy_in_scope(&self, &to));
  world_free();

  /* A proxy bound to a wildcard address: what DHT nodes say its address
   * is never opens loopback or the LAN (two lying nodes agreeing on
   * 127.0.0.1), and a public one counts as its own. */
  world_init(NULL, "0.0.0.0:4000");
  kp_addr_t lie, pub;
  addr(&lie, "127.0.0.1:4000");
  kp_proxy_set_local(W.px, &W.proxy_addr, &lie);
  c = add_client("198.51.100.7:5000", true, NULL);
  open_channel(c, 0);
  addr(&to, "127.0.0.1:22");
  kp_proxy_client_send(W.cl[c], 0, &to, ping, sizeof(ping), W.now);
  addr(&to, "10.0.0.1:53");
  kp_proxy_client_send(W.cl[c], 0, &to, ping, sizeof(ping), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 0);
  addr(&pub, "203.0.113.1:4000");
  kp_proxy_set_local(W.px, &W.proxy_addr, &pub);
  addr(&to, "203.0.113.1:22"); /* our own address, not our DHT port */
  kp_proxy_client_send(W.cl[c], 0, &to, ping, sizeof(ping), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 0);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_SCOPE], 3);
  world_free();
}

static void test_unproven_limits(void) {
  unsigned c = one_client(NULL);
  kp_addr_t victim;
  addr(&victim, "198.51.100.99:443");
  uint8_t probe[61], medium[129];
  memset(probe, 0x50, sizeof(probe));
  memset(medium, 0x50, sizeof(medium));
  /* 8 small datagrams to an address that never answers, then nothing. */
  for (int k = 0; k < 20; k++)
    kp_proxy_client_send(W.cl[c], 0, &victim, probe, sizeof(probe), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 8);
  /* More than 128 bytes is never "small". */
  kp_addr_t other;
  addr(&other, "198.51.100.98:443");
  kp_proxy_client_send(W.cl[c], 0, &other, medium, sizeof(medium), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 8);
  /* A message that looks like a DHT message but is not one well-formed
   * msgpack value is no DHT message. */
  static const uint8_t fake[] = {0x93, 0xdc, 0xff, 0xff};
  kp_proxy_client_send(W.cl[c], 0, &other, fake, sizeof(fake), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 9); /* small: allowed as one of the 8 */
  uint8_t fake_big[300];
  memset(fake_big, 0, sizeof(fake_big));
  fake_big[0] = 0x93;
  fake_big[1] = 0xdc;
  kp_proxy_client_send(W.cl[c], 0, &other, fake_big, sizeof(fake_big), W.now);
  pump();
  KP_CHECK_EQ(W.n_out, 9);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_UNPROVEN], 14);
  /* DHT messages to fresh addresses: at most the unproven rate's burst
   * at once (400), then 200 a second. */
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  W.n_out = 0;
  tick(10 * 1000);
  for (unsigned k = 0; k < 1000; k++) {
    kp_addr_t to;
    kp_addr_set_v4(&to, 0xc6336400u + (k % 200), (uint16_t)(1000 + k));
    kp_proxy_client_send(W.cl[c], 0, &to, ping, sizeof(ping), W.now);
  }
  pump();
  KP_CHECK_EQ(W.n_out, 400);
  KP_CHECK(stats().drops[KP_PROXY_DROP_RATE] >= 600);
  world_free();
}

static void test_rate_limits(void) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.alloc_rate = 100000; /* bytes/s */
  cfg.alloc_pps = 1000000;
  unsigned c = one_client(&cfg);
  kp_addr_t peer;
  addr(&peer, "198.51.100.30:7000");
  uint8_t probe[61] = {0x50};
  kp_proxy_client_send(W.cl[c], 0, &peer, probe, sizeof(probe), W.now);
  arrive(c, 0, &peer, probe, sizeof(probe));
  uint8_t packet[1000] = {0x41};
  W.out_bytes = 0;
  for (int k = 0; k < 300; k++)
    kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  /* A second's burst, and no more. */
  KP_CHECK(W.out_bytes <= 100000 && W.out_bytes >= 99000);
  KP_CHECK(stats().drops[KP_PROXY_DROP_RATE] >= 200);
  tick(1000);
  W.out_bytes = 0;
  for (int k = 0; k < 300; k++)
    kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK(W.out_bytes <= 100000 && W.out_bytes >= 99000);
  /* Inbound too. */
  unsigned heard = 0;
  for (int k = 0; k < 300; k++) {
    W.n_heard[c] = 0;
    arrive(c, 0, &peer, packet, sizeof(packet));
    heard += W.n_heard[c];
  }
  KP_CHECK(heard >= 99 && heard <= 100);
  world_free();
}

/* ---- Refusals -----------------------------------------------------------------------------------
 */

static void test_refusals(void) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  kp_keypair_t allowed_kp, other_kp;
  kp_keypair_generate(&allowed_kp);
  kp_keypair_generate(&other_kp);
  uint8_t allow[1][KP_PUBLIC_KEY_LEN];
  memcpy(allow[0], allowed_kp.public_key, 32);
  cfg.allow = (const uint8_t(*)[KP_PUBLIC_KEY_LEN])allow;
  cfg.allow_count = 1;
  cfg.allocs_per_key = 2;
  cfg.per_ip = 3;
  cfg.max_allocs = 5;
  cfg.lifetime_s = 10;
  cfg.max_lifetime_s = 30;
  cfg.alloc_quota = 5000;
  world_init(&cfg, "203.0.113.1:4000");

  /* NOT_ALLOWED: an authenticated refusal; the client says so and keeps
   * trying, slowly. */
  unsigned bad = add_client("198.51.100.8:5000", true, &other_kp);
  KP_CHECK_EQ(W.downs[bad], 1);
  KP_CHECK_EQ(W.down_reason[bad], KP_PROXY_NOT_ALLOWED);
  KP_CHECK_EQ(stats().refused[KP_PROXY_NOT_ALLOWED], 1);
  KP_CHECK_EQ(stats().half_open + stats().sessions, 0);

  /* KEY_LIMIT: the allowed key's third allocation. */
  unsigned c = add_client("198.51.100.7:5000", true, &allowed_kp);
  open_channel(c, 0);
  open_channel(c, 1);
  open_channel(c, 2);
  KP_CHECK(W.opened[c][0] == 1 && W.opened[c][1] == 1 && W.opened[c][2] == 0);
  KP_CHECK_EQ(W.close_reason[c][2], KP_PROXY_KEY_LIMIT);
  KP_CHECK_EQ(stats().refused[KP_PROXY_KEY_LIMIT], 1);
  kp_proxy_client_close(W.cl[c], 2, W.now);

  /* QUOTA: the allocation ends once it has carried its bytes. */
  kp_addr_t peer;
  addr(&peer, "198.51.100.30:7000");
  uint8_t probe[61] = {0x50}, packet[1000] = {0x41};
  kp_proxy_client_send(W.cl[c], 0, &peer, probe, sizeof(probe), W.now);
  arrive(c, 0, &peer, probe, sizeof(probe));
  for (int k = 0; k < 6; k++)
    kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(W.closed[c][0], 1);
  KP_CHECK_EQ(W.close_reason[c][0], KP_PROXY_QUOTA);
  KP_CHECK_EQ(stats().allocs, 1);

  /* EXPIRED: the allocation reaches its longest lifetime, refreshes or
   * not (channel 1 has been refreshed all along). */
  for (int s = 0; s < 40; s++) tick(1000);
  KP_CHECK(W.closed[c][1] >= 1);
  KP_CHECK_EQ(W.close_reason[c][1], KP_PROXY_EXPIRED);
  world_free();

  /* IP_LIMIT and FULL: sessions from one IP, then allocations in all. */
  kp_proxy_config_defaults(&cfg);
  cfg.per_ip = 2;
  cfg.max_allocs = 3;
  world_init(&cfg, "203.0.113.1:4000");
  unsigned a = add_client("198.51.100.7:5000", true, NULL);
  unsigned b = add_client("198.51.100.7:5001", true, NULL);
  unsigned d = add_client("198.51.100.7:5002", true, NULL);
  KP_CHECK(W.downs[a] == 0 && W.downs[b] == 0);
  KP_CHECK_EQ(W.down_reason[d], KP_PROXY_IP_LIMIT);
  open_channel(a, 0);
  open_channel(a, 1);
  open_channel(b, 0);
  KP_CHECK_EQ(W.close_reason[b][0], KP_PROXY_IP_LIMIT); /* allocations per IP, too */
  unsigned e = add_client("198.51.100.9:5000", true, NULL);
  unsigned f = add_client("198.51.100.10:5000", true, NULL);
  open_channel(e, 0);
  open_channel(f, 0);
  KP_CHECK(W.opened[e][0] == 1);
  KP_CHECK_EQ(W.close_reason[f][0], KP_PROXY_FULL);
  /* An allocation the glue cannot open (out of descriptors) is FULL. */
  kp_proxy_client_close(W.cl[e], 0, W.now);
  W.open_fails = true;
  open_channel(f, 0);
  tick(5000);
  KP_CHECK_EQ(W.close_reason[f][0], KP_PROXY_FULL);
  KP_CHECK(stats().refused[KP_PROXY_FULL] >= 2);
  world_free();

  /* RATE: HELLOs past 20 at once from one IP get a plain REFUSED, 7
   * bytes for 256, before any crypto. */
  kp_proxy_config_defaults(&cfg);
  cfg.per_ip = 100;
  world_init(&cfg, "203.0.113.1:4000");
  for (int k = 0; k < 25; k++) {
    char text[64];
    snprintf(text, sizeof(text), "198.51.100.50:%d", 1000 + k);
    unsigned n = add_client(text, true, NULL);
    kp_proxy_client_stats_t cs;
    kp_proxy_client_stats(W.cl[n], &cs);
    KP_CHECK_EQ(cs.up, k < 20);
    if (k >= 20) KP_CHECK_EQ(cs.last_refusal, KP_PROXY_RATE);
    if (W.ncl == 8) {
      for (unsigned j = 0; j < W.ncl; j++) kp_proxy_client_free(W.cl[j]);
      W.ncl = 0;
    }
  }
  KP_CHECK_EQ(stats().refused[KP_PROXY_RATE], 5);
  /* A second later the IP may try again. */
  tick(1000);
  unsigned late = add_client("198.51.100.50:2000", true, NULL);
  kp_proxy_client_stats_t cs;
  kp_proxy_client_stats(W.cl[late], &cs);
  KP_CHECK(cs.up);
  world_free();

  /* VERSION: a HELLO whose payload names another version. */
  world_init(NULL, "203.0.113.1:4000");
  KP_CHECK_EQ(stats().refused[KP_PROXY_VERSION_REFUSED], 0);
  {
    kp_keypair_t kp;
    kp_keypair_generate(&kp);
    kp_noise_t st;
    uint8_t payload[KP_PROXY_HELLO_PAYLOAD], eph[32], msg[200], out[KP_PROXY_HELLO_LEN];
    size_t len;
    payload[0] = 9;
    memcpy(payload + 1, kp.public_key, 32);
    memset(eph, 3, sizeof(eph));
    KP_CHECK_OK(kp_noise_init_initiator(&st, &kp, kp_proxy_public_key(W.px),
                                        (const uint8_t *)"kadpunch/proxy/v1", 17));
    KP_CHECK_OK(kp_noise_write_msg1(&st, eph, payload, sizeof(payload), msg, sizeof(msg), &len));
    kp_proxy_hello_encode(1, msg, len, out);
    kp_addr_t from;
    addr(&from, "198.51.100.60:1");
    kp_proxy_input(W.px, &from, out, sizeof(out), W.now);
    KP_CHECK_EQ(stats().refused[KP_PROXY_VERSION_REFUSED], 1);
    KP_CHECK_EQ(stats().half_open, 0);
    kp_noise_clear(&st);
  }
  world_free();
}

/* ---- Forged and replayed ------------------------------------------------------------------------
 */

static void test_forged_and_replayed(void) {
  world_init(NULL, "203.0.113.1:4000");
  /* Capture what the client sends to replay it. */
  unsigned c = add_client("198.51.100.7:5000", true, NULL);
  open_channel(c, 0);
  kp_addr_t attacker, peer;
  addr(&attacker, "198.51.100.66:6666");
  addr(&peer, "198.51.100.30:7000");

  /* A DATA the client sealed, sent again from elsewhere and from the same
   * place: dropped as replayed; nothing leaves twice, and the session
   * does not move to the copier. */
  uint8_t probe[61] = {0x50};
  kp_proxy_client_send(W.cl[c], 0, &peer, probe, sizeof(probe), W.now);
  KP_CHECK_EQ(W.n_out, 1);
  uint8_t copy[1500];
  size_t copy_len = W.cl_last_len[c];
  memcpy(copy, W.cl_last[c], copy_len);
  kp_proxy_input(W.px, &attacker, copy, copy_len, W.now);
  kp_proxy_input(W.px, &W.peer_addr[c], copy, copy_len, W.now);
  KP_CHECK_EQ(W.n_out, 1);
  KP_CHECK_EQ(stats().replayed, 2);
  for (unsigned k = 0; k < W.n_to_peer; k++) KP_CHECK(!kp_addr_eq(&W.to_peer[k].to, &attacker));
  /* Forged: a fresh counter (the tag covers it, as nonce and associated
   * data), another bit of the counter, an unknown index. */
  copy[13] = (uint8_t)(copy[13] + 100);
  kp_proxy_input(W.px, &attacker, copy, copy_len, W.now);
  copy[9] ^= 1;
  kp_proxy_input(W.px, &attacker, copy, copy_len, W.now);
  copy[2] ^= 0x80; /* the index */
  kp_proxy_input(W.px, &attacker, copy, copy_len, W.now);
  KP_CHECK_EQ(stats().forged, 2);
  KP_CHECK_EQ(stats().unknown_session, 1);
  KP_CHECK_EQ(W.n_out, 1);
  /* The session still works, from where it was. */
  KP_CHECK_OK(kp_proxy_client_send(W.cl[c], 0, &peer, probe, sizeof(probe), W.now));
  KP_CHECK_EQ(W.n_out, 2);

  /* A HELLO copied off the wire and raced from elsewhere: no answer, no
   * second session; the peer's own session goes on. */
  uint64_t welcomed = stats().welcomed;
  unsigned to_peer = W.n_to_peer;
  kp_proxy_input(W.px, &attacker, W.cl_hello[c], KP_PROXY_HELLO_LEN, W.now);
  KP_CHECK_EQ(stats().welcomed, welcomed);
  KP_CHECK_EQ(W.n_to_peer, to_peer);
  KP_CHECK_EQ(stats().sessions, 1);

  /* A forged WELCOME (the client's index, noise that does not open) costs
   * the client nothing: it makes a new HELLO and gets in. */
  unsigned d = W.ncl;
  W.cl_mute[d] = true;
  d = add_client("198.51.100.8:5000", true, NULL);
  uint32_t index = (uint32_t)W.cl_hello[d][2] << 24 | (uint32_t)W.cl_hello[d][3] << 16 |
                   (uint32_t)W.cl_hello[d][4] << 8 | W.cl_hello[d][5];
  uint8_t junk[56], forged[100];
  memset(junk, 0x77, sizeof(junk));
  size_t n = kp_proxy_welcome_encode(index, 1, junk, sizeof(junk), forged, sizeof(forged));
  kp_proxy_client_input(W.cl[d], forged, n, W.now);
  kp_proxy_client_stats_t cs;
  kp_proxy_client_stats(W.cl[d], &cs);
  KP_CHECK(cs.forged == 1 && !cs.up);
  W.cl_mute[d] = false;
  for (int k = 0; k < 10 && !cs.up; k++) {
    tick(500);
    kp_proxy_client_stats(W.cl[d], &cs);
  }
  KP_CHECK(cs.up);
  /* A plain REFUSED under its index is noted, and changes nothing. */
  uint8_t refused[KP_PROXY_REFUSED_LEN];
  kp_proxy_refused_encode(index, KP_PROXY_FULL, refused);
  kp_proxy_client_input(W.cl[d], refused, sizeof(refused), W.now);
  kp_proxy_client_stats(W.cl[d], &cs);
  KP_CHECK(cs.up);
  /* DATA to the client under another key: forged. */
  kp_proxy_keys_t wrong = {0};
  uint8_t body[2] = {KP_PROXY_OP_PONG, 0}, sealed[100];
  index = (uint32_t)W.cl_hello[d][2] << 24 | (uint32_t)W.cl_hello[d][3] << 16 |
          (uint32_t)W.cl_hello[d][4] << 8 | W.cl_hello[d][5]; /* its HELLO's, anew */
  n = kp_proxy_seal(&wrong, index, body, 2, sealed, sizeof(sealed));
  kp_proxy_client_input(W.cl[d], sealed, n, W.now);
  kp_proxy_client_stats(W.cl[d], &cs);
  KP_CHECK(cs.forged == 2 && cs.up);
  world_free();
}

/* Sessions that were never used make room; used ones are never
 * displaced by a flood of HELLOs under fresh keys. */
static void test_half_open_never_displaces(void) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.max_sessions = 2;
  cfg.hello_rate = 1000;
  world_init(&cfg, "203.0.113.1:4000");
  unsigned a = add_client("198.51.100.7:5000", true, NULL);
  open_channel(a, 0);
  for (int k = 0; k < 200; k++) {
    char text[64];
    snprintf(text, sizeof(text), "198.51.%d.%d:5000", 100 + k / 200, 1 + k % 200);
    unsigned n = add_client(text, true, NULL);
    kp_proxy_client_free(W.cl[n]);
    W.ncl--;
  }
  KP_CHECK_EQ(stats().sessions, 1);
  KP_CHECK_EQ(stats().half_open, 1);
  kp_addr_t peer;
  addr(&peer, "198.51.100.30:7000");
  uint8_t probe[61] = {0x50};
  unsigned before = W.n_out;
  KP_CHECK_OK(kp_proxy_client_send(W.cl[a], 0, &peer, probe, sizeof(probe), W.now));
  KP_CHECK_EQ(W.n_out, before + 1);
  /* Half-open sessions end by themselves. */
  tick(11000);
  KP_CHECK_EQ(stats().half_open, 0);
  world_free();
}

/* A key at its cap, whose older session fell silent (its peer moved: to
 * TCP, another address, a new session): the new session's allocation
 * ends the old session once it has been unheard for 30 s, two of its
 * pings, and not before; a session that pings is never ended so. */
static void test_left_session_frees_its_allocations(void) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.allocs_per_key = 2;
  world_init(&cfg, "203.0.113.1:4000");
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  unsigned old = add_client("198.51.100.7:5000", true, &kp);
  open_channel(old, 0);
  open_channel(old, 1);
  KP_CHECK(W.opened[old][0] == 1 && W.opened[old][1] == 1);
  /* The peer leaves it: what it sends goes nowhere from now on. */
  W.cl_mute[old] = true;
  uint64_t left_at = W.now;
  unsigned fresh = add_client("198.51.100.7:5001", true, &kp);
  open_channel(fresh, 0);
  KP_CHECK_EQ(W.opened[fresh][0], 0);
  KP_CHECK_EQ(W.close_reason[fresh][0], KP_PROXY_KEY_LIMIT);
  /* Unheard for 30 s: a retry of the fresh session's takes over. */
  for (int i = 0; i < 45 && !W.opened[fresh][0]; i++) tick(1000);
  printf("a left session's allocations freed for its key's new one %llu s after it fell silent\n",
         (unsigned long long)(W.now - left_at) / 1000);
  KP_CHECK(W.now - left_at >= 30000 && W.now - left_at <= 36000);
  KP_CHECK_EQ(W.opened[fresh][0], 1);
  KP_CHECK_EQ(stats().left_ended, 1);
  KP_CHECK_EQ(stats().sessions, 1);
  open_channel(fresh, 1);
  KP_CHECK_EQ(W.opened[fresh][1], 1);
  /* A third session of the key: the fresh one pings, and is never left. */
  unsigned third = add_client("198.51.100.7:5002", true, &kp);
  for (int i = 0; i < 90; i++) tick(1000);
  open_channel(third, 0);
  KP_CHECK_EQ(W.opened[third][0], 0);
  KP_CHECK_EQ(W.close_reason[third][0], KP_PROXY_KEY_LIMIT);
  KP_CHECK_EQ(stats().left_ended, 1);
  KP_CHECK_EQ(W.downs[fresh], 0);
  KP_CHECK_EQ(stats().sessions, 2);
  world_free();
}

/* A peer whose NAT maps it anew keeps its session and allocations. */
static void test_session_follows_rebinding(void) {
  unsigned c = one_client(NULL);
  addr(&W.peer_addr[c], "198.51.100.7:6000");
  kp_addr_t peer;
  addr(&peer, "198.51.100.30:7000");
  uint8_t probe[61] = {0x50};
  kp_proxy_client_send(W.cl[c], 0, &peer, probe, sizeof(probe), W.now);
  arrive(c, 0, &peer, probe, sizeof(probe));
  KP_CHECK_EQ(W.n_heard[c], 1); /* delivered to the new address */
  KP_CHECK_EQ(W.opened[c][0], 1);
  /* A proxy that restarts (its sessions forgotten): the client hears
   * nothing for 45 s, makes a session anew and reopens its channel, at a
   * new allocation (so the glue hears the news). */
  kp_proxy_free(W.px);
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  kp_proxy_io_t io = {&W, px_send, px_alloc_open, px_alloc_send, px_alloc_close, NULL};
  KP_CHECK_OK(kp_proxy_new(&cfg, &W.kp, &W.rng, &io, &W.px));
  kp_proxy_set_local(W.px, &W.proxy_addr, NULL);
  kp_proxy_client_open(W.cl[c], 1, KP_AF_INET, W.now); /* takes slot 0 first at the new proxy */
  for (int s = 0; s < 50; s++) tick(1000);
  KP_CHECK_EQ(W.downs[c], 1);
  KP_CHECK_EQ(W.opened[c][0], 2);
  KP_CHECK(!kp_addr_eq(kp_proxy_client_addr(W.cl[c], 0), kp_proxy_client_addr(W.cl[c], 1)));
  world_free();
}

/* A peer whose TCP link to the proxy closed is forgotten there, with its
 * allocations; it makes a new session and gets its channels back. */
static void test_forget_and_restart(void) {
  unsigned c = one_client(NULL);
  open_channel(c, 1);
  KP_CHECK_EQ(stats().allocs, 2);
  kp_proxy_forget(W.px, &W.peer_addr[c]);
  KP_CHECK_EQ(stats().allocs, 0);
  KP_CHECK_EQ(stats().sessions, 0);
  addr(&W.peer_addr[c], "198.51.100.7:5001"); /* dialled again: another port */
  kp_proxy_client_restart(W.cl[c], W.now);
  KP_CHECK_EQ(W.downs[c], 1);
  for (int k = 0; k < 4; k++) tick(300);
  KP_CHECK_EQ(stats().sessions, 1);
  KP_CHECK_EQ(stats().allocs, 2);
  KP_CHECK(W.opened[c][0] == 2 && W.opened[c][1] == 2);
  world_free();
}

/* ---- Bounds
 * --------------------------------------------------------------------------------------- */

static size_t live_bytes;

static void *count_malloc(size_t n) {
  size_t *p = malloc(n + 16);
  if (!p) return NULL;
  *p = n;
  live_bytes += n;
  return (uint8_t *)p + 16;
}

static void *count_calloc(size_t count, size_t n) {
  void *p = count_malloc(count * n);
  if (p) memset(p, 0, count * n);
  return p;
}

static void count_free(void *ptr) {
  if (!ptr) return;
  size_t *p = (size_t *)((uint8_t *)ptr - 16);
  live_bytes -= *p;
  free(p);
}

static void *count_realloc(void *ptr, size_t n) {
  void *q = count_malloc(n);
  if (q && ptr) {
    size_t old = *(size_t *)((uint8_t *)ptr - 16);
    memcpy(q, ptr, old < n ? old : n);
    count_free(ptr);
  }
  return q;
}

/* 5000 peers from 5000 addresses, each opening every channel: the tables
 * hold their caps, memory tops out at the allocations' permit tables, and
 * goes back to where it started once the sessions are silent. */
static void test_alloc_flood(void) {
  KP_CHECK_OK(kp_replace_allocator(count_malloc, count_realloc, count_calloc, count_free));
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  world_init(&cfg, "203.0.113.1:4000");
  size_t base = live_bytes;
  size_t per_alloc = cfg.permits * 40 + cfg.proven * 56;
  size_t one_client = 32 << 10; /* the live client, its bindings included */
  size_t peak = 0;
  for (int k = 0; k < 5000; k++) {
    char text[64];
    snprintf(text, sizeof(text), "198.%d.%d.%d:5000", 18 + k / 60000, (k / 250) % 240, 1 + k % 250);
    unsigned n = add_client(text, true, NULL);
    for (unsigned ch = 0; ch < KP_PROXY_CHANNELS; ch++)
      kp_proxy_client_open(W.cl[n], ch, KP_AF_INET, W.now);
    pump();
    if (live_bytes - base > peak) peak = live_bytes - base;
    kp_proxy_client_free(W.cl[n]); /* gone silent */
    W.ncl--;
    if (k % 500 == 0) tick(10);
  }
  kp_proxy_stats_t st = stats();
  KP_CHECK(st.sessions <= cfg.max_sessions && st.allocs <= cfg.max_allocs);
  KP_CHECK_EQ(st.allocs, cfg.max_allocs);
  KP_CHECK(st.refused[KP_PROXY_FULL] > 0);
  KP_CHECK_MSG(peak <= cfg.max_allocs * per_alloc + one_client + 4096, "peak %zu", peak);
  for (int s = 0; s < 70; s++) tick(1000);
  st = stats();
  KP_CHECK(st.sessions == 0 && st.half_open == 0 && st.allocs == 0);
  KP_CHECK_EQ(live_bytes, base);
  world_free();
}

/* Whatever an unauthenticated sender sends, the proxy answers it with no
 * more bytes, and only to it. */
static void test_no_amplification(void) {
  world_init(NULL, "203.0.113.1:4000");
  kp_addr_t from;
  addr(&from, "198.51.100.40:1000");
  W.watch = from;
  size_t in = 0;
  uint8_t buf[KP_PROXY_HELLO_LEN];
  kp_proxy_key_req_encode(buf);
  for (int k = 0; k < 50; k++) {
    kp_proxy_input(W.px, &from, buf, KP_PROXY_KEY_LEN, W.now);
    in += KP_PROXY_KEY_LEN;
  }
  /* HELLOs: real ones (each a WELCOME), past the rate (each a REFUSED),
   * and garbage (nothing). */
  W.cl_mute[0] = true;
  unsigned c = add_client("198.51.100.41:1000", true, NULL);
  for (int k = 0; k < 50; k++) {
    kp_proxy_input(W.px, &from, W.cl_hello[c], KP_PROXY_HELLO_LEN, W.now);
    in += KP_PROXY_HELLO_LEN;
    kp_proxy_client_free(W.cl[c]);
    W.ncl = 0;
    c = add_client("198.51.100.41:1000", true, NULL);
  }
  memset(buf, 0x5a, sizeof(buf));
  buf[0] = KP_PROXY_MAGIC;
  for (uint8_t type = 0; type < 10; type++) {
    buf[1] = type;
    kp_proxy_input(W.px, &from, buf, sizeof(buf), W.now);
    in += sizeof(buf);
  }
  size_t out = W.watch_bytes;
  KP_CHECK_MSG(out > 0 && out <= in, "%zu bytes out for %zu in", out, in);
  KP_CHECK_EQ(W.n_out, 0);
  world_free();
}

/* ---- Bindings (PASS) ----------------------------------------------------------------------------
 */

/* Client c's channel 0 talks to `peer` until the proxy binds it: a probe
 * out, then `rounds` datagrams each way, sealed. */
static void talk(unsigned c, const kp_addr_t *peer, int rounds) {
  uint8_t probe[61], packet[1200];
  memset(probe, 0x50, sizeof(probe));
  memset(packet, 0x41, sizeof(packet));
  kp_proxy_client_send(W.cl[c], 0, peer, probe, sizeof(probe), W.now);
  pump();
  for (int k = 0; k < rounds; k++) {
    arrive(c, 0, peer, packet, sizeof(packet));
    kp_proxy_client_send(W.cl[c], 0, peer, packet, sizeof(packet), W.now);
    pump();
  }
}

static uint8_t last_type(unsigned c) {
  return W.cl_last[c][1];
}

/* Client c sends on channel 0: how it went to the proxy (PASS or DATA). */
static uint8_t send_as(unsigned c, const kp_addr_t *to, const uint8_t *data, size_t len) {
  KP_CHECK_OK(kp_proxy_client_send(W.cl[c], 0, to, data, len, W.now));
  return last_type(c);
}

static void bound_pass(void) {
  unsigned c = one_client(NULL);
  kp_addr_t peer, dht_node;
  addr(&peer, "198.51.100.30:7000");
  addr(&dht_node, "198.51.100.20:49737");
  /* A DHT node's few answers never make a binding. */
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  for (int k = 0; k < 3; k++) {
    kp_proxy_client_send(W.cl[c], 0, &dht_node, ping, sizeof(ping), W.now);
    arrive(c, 0, &dht_node, ping, sizeof(ping));
  }
  KP_CHECK_EQ(stats().bindings, 0);
  /* A connection's datagrams do, after 16 (each way counts). */
  talk(c, &peer, 7);
  KP_CHECK_EQ(stats().bindings, 0);
  KP_CHECK_EQ(last_type(c), KP_PROXY_DATA);
  talk(c, &peer, 2);
  KP_CHECK_EQ(stats().bindings, 1);
  /* The client's next datagram to it goes as PASS: 14 bytes of header, the
   * datagram as it is, and it leaves the allocation the same. */
  kp_proxy_client_stats_t cs;
  kp_proxy_client_stats(W.cl[c], &cs);
  uint64_t client_passed = cs.passed, proxy_passed = stats().passed;
  uint8_t packet[1200];
  for (size_t i = 0; i < sizeof(packet); i++) packet[i] = (uint8_t)i;
  packet[0] = 0x41; /* a stream packet: only those go unsealed */
  unsigned before = W.n_out;
  KP_CHECK_OK(kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now));
  KP_CHECK_EQ(last_type(c), KP_PROXY_PASS);
  KP_CHECK_EQ(W.cl_last_len[c], KP_PROXY_PASS_HEAD + sizeof(packet));
  KP_CHECK(!memcmp(W.cl_last[c] + KP_PROXY_PASS_HEAD, packet, sizeof(packet)));
  KP_CHECK_EQ(W.n_out, before + 1);
  KP_CHECK(kp_addr_eq(&last_out()->to, &peer) && last_out()->len == sizeof(packet) &&
           !memcmp(last_out()->data, packet, sizeof(packet)));
  /* Having seen the client use the token, the proxy passes arrivals too,
   * and the client hears them from the address the token stands for. */
  W.n_heard[c] = 0;
  kp_proxy_alloc_input(W.px, (unsigned)(W.alloc_addr[c][0].port - 40000), &peer, packet,
                       sizeof(packet), W.now);
  const dgram_t *passed = W.n_to_peer ? &W.to_peer[W.n_to_peer - 1] : NULL;
  KP_CHECK(passed && passed->data[1] == KP_PROXY_PASS &&
           passed->len == KP_PROXY_PASS_HEAD + sizeof(packet));
  pump();
  KP_CHECK_EQ(W.n_heard[c], 1);
  KP_CHECK(kp_addr_eq(&W.heard[c][0].from, &peer) && W.heard[c][0].len == sizeof(packet) &&
           !memcmp(W.heard[c][0].data, packet, sizeof(packet)));
  kp_proxy_client_stats(W.cl[c], &cs);
  KP_CHECK_EQ(cs.passed, client_passed + 2);
  KP_CHECK_EQ(stats().passed, proxy_passed + 2);
  /* Unsealed, a bound datagram may be bigger than a SEND's: all of 1500
   * bytes but the PASS header, both ways; one byte more is refused. */
  static uint8_t big[KP_PROXY_MAX_PASS_PAYLOAD + 1];
  memset(big, 0x41, sizeof(big));
  KP_CHECK(KP_PROXY_MAX_PASS_PAYLOAD > KP_PROXY_MAX_PAYLOAD);
  KP_CHECK_EQ(send_as(c, &peer, big, KP_PROXY_MAX_PASS_PAYLOAD), KP_PROXY_PASS);
  KP_CHECK_EQ(W.cl_last_len[c], KP_PROXY_MAX_DATAGRAM);
  KP_CHECK(last_out()->len == KP_PROXY_MAX_PASS_PAYLOAD);
  KP_CHECK_ERR(kp_proxy_client_send(W.cl[c], 0, &peer, big, sizeof(big), W.now), KP_ETOOBIG);
  W.n_heard[c] = 0;
  kp_proxy_alloc_input(W.px, (unsigned)(W.alloc_addr[c][0].port - 40000), &peer, big,
                       KP_PROXY_MAX_PASS_PAYLOAD, W.now);
  pump();
  KP_CHECK(W.n_heard[c] == 1 && W.heard[c][0].len == KP_PROXY_MAX_PASS_PAYLOAD);
  uint64_t too_big = stats().drops[KP_PROXY_DROP_TOO_BIG];
  kp_proxy_alloc_input(W.px, (unsigned)(W.alloc_addr[c][0].port - 40000), &peer, big, sizeof(big),
                       W.now);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_TOO_BIG], too_big + 1);
  /* To an address not bound, it would go sealed: refused over a SEND's
   * size. */
  KP_CHECK_ERR(kp_proxy_client_send(W.cl[c], 0, &dht_node, big, KP_PROXY_MAX_PAYLOAD + 1, W.now),
               KP_ETOOBIG);
  /* Other destinations still go sealed. */
  KP_CHECK_EQ(send_as(c, &dht_node, ping, sizeof(ping)), KP_PROXY_DATA);
  /* The session still lives on PASS alone: a minute of it. */
  for (int k = 0; k < 90; k++) {
    tick(1000);
    kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
    arrive(c, 0, &peer, packet, sizeof(packet));
  }
  KP_CHECK_EQ(stats().sessions, 1);
  KP_CHECK_EQ(W.downs[c], 0);
  KP_CHECK_EQ(last_type(c), KP_PROXY_PASS);
  world_free();
}

/* The client's PASSes joined by the client, then given in parts. */
static void test_bound_pass(void) {
  for (int parts = 0; parts < 2; parts++) {
    first_gives_parts = parts, parts_given = 0;
    bound_pass();
    KP_CHECK(parts ? parts_given > 90 : parts_given == 0);
  }
  first_gives_parts = false;
}

static void test_pass_forged_and_stale(void) {
  unsigned c = one_client(NULL);
  kp_addr_t peer, spoofer;
  addr(&peer, "198.51.100.30:7000");
  addr(&spoofer, "198.51.100.66:5000");
  talk(c, &peer, 9);
  uint8_t packet[1000];
  memset(packet, 0x41, sizeof(packet));
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  uint8_t pass[KP_PROXY_PASS_HEAD + sizeof(packet)];
  memcpy(pass, W.cl_last[c], sizeof(pass));
  /* The right token from anywhere but the session's address: dropped, and
   * nobody told. */
  unsigned before = W.n_out, to_peer = W.n_to_peer;
  kp_proxy_input(W.px, &spoofer, pass, sizeof(pass), W.now);
  KP_CHECK_EQ(W.n_out, before);
  KP_CHECK_EQ(W.n_to_peer, to_peer);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_STALE], 1);
  /* A wrong token from the session's address: dropped; the session hears
   * one UNBIND however many come at once. */
  pass[13] ^= 1;
  for (int k = 0; k < 50; k++) kp_proxy_input(W.px, &W.peer_addr[c], pass, sizeof(pass), W.now);
  KP_CHECK_EQ(W.n_out, before);
  KP_CHECK_EQ(W.n_to_peer, to_peer + 1);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_STALE], 51);
  pump(); /* names no binding of the client's: nothing changes */
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  /* Token 0, and an empty PASS: never. */
  memset(pass + 6, 0, 8);
  kp_proxy_input(W.px, &W.peer_addr[c], pass, sizeof(pass), W.now);
  kp_proxy_input(W.px, &W.peer_addr[c], pass, KP_PROXY_PASS_HEAD, W.now);
  KP_CHECK_EQ(W.n_out, before + 1);
  KP_CHECK_EQ(stats().malformed, 1);
  /* A PASS to the client with a token it was never given: dropped. */
  memcpy(pass, W.cl_last[c], sizeof(pass));
  pass[12] ^= 0x80;
  unsigned heard = W.n_heard[c];
  kp_proxy_client_input(W.cl[c], pass, sizeof(pass), W.now);
  KP_CHECK_EQ(W.n_heard[c], heard);
  kp_proxy_client_stats_t cs;
  kp_proxy_client_stats(W.cl[c], &cs);
  KP_CHECK_EQ(cs.stale, 1);
  world_free();
}

static void test_binding_lost_and_ended(void) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.proven = 2;
  unsigned c = one_client(&cfg);
  kp_addr_t peer, b, d;
  addr(&peer, "198.51.100.30:7000");
  addr(&b, "198.51.100.31:7000");
  addr(&d, "198.51.100.32:7000");
  uint8_t packet[1000];
  memset(packet, 0x41, sizeof(packet));
  /* The BIND is lost: the client goes on sealing, and a second later the
   * proxy sends it again. */
  talk(c, &peer, 7);
  arrive(c, 0, &peer, packet, sizeof(packet));
  kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  KP_CHECK_EQ(stats().bindings, 1);
  W.n_to_peer = 0; /* the BIND, lost */
  kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(last_type(c), KP_PROXY_DATA);
  tick(1000);
  kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  pump();
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  /* The proven table makes room (2 entries, least recently used first):
   * the binding ends, the client is told and seals again. */
  tick(10);
  talk(c, &b, 1);
  tick(10);
  talk(c, &d, 1);
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_DATA);
  /* The UNBIND is lost: the stale PASS is answered by another. */
  tick(10);
  talk(c, &peer, 9);
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  tick(10);
  talk(c, &b, 1);
  tick(10);
  unsigned slot = (unsigned)(W.alloc_addr[c][0].port - 40000);
  kp_proxy_alloc_input(W.px, slot, &d, packet, sizeof(packet), W.now); /* peer's entry goes */
  W.n_to_peer = 0;                                                     /* with its UNBIND */
  uint64_t drops = stats().drops[KP_PROXY_DROP_STALE];
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  KP_CHECK_EQ(stats().drops[KP_PROXY_DROP_STALE], drops + 1);
  pump();
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_DATA);
  tick(10);
  /* A channel's bindings end with its allocation. */
  talk(c, &peer, 9);
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  kp_proxy_client_close(W.cl[c], 0, W.now);
  open_channel(c, 0);
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_DATA);
  world_free();
}

static void test_pass_only_stream_packets(void) {
  unsigned c = one_client(NULL);
  /* A DHT node the peer talks to all day is never bound: DHT messages
   * name addresses, so they stay sealed. */
  kp_addr_t dht_node, peer;
  addr(&dht_node, "198.51.100.20:49737");
  addr(&peer, "198.51.100.30:7000");
  static const uint8_t ping[] = {0x93, 0x01, 0x02, 0xc0};
  for (int k = 0; k < 40; k++) {
    kp_proxy_client_send(W.cl[c], 0, &dht_node, ping, sizeof(ping), W.now);
    arrive(c, 0, &dht_node, ping, sizeof(ping));
    tick(20000);
  }
  KP_CHECK_EQ(stats().bindings, 0);
  KP_CHECK_EQ(last_type(c), KP_PROXY_DATA);
  /* Bound for its stream packets, a peer's other datagrams (a probe)
   * still go sealed both ways. */
  talk(c, &peer, 9);
  uint8_t probe[61];
  memset(probe, 0x50, sizeof(probe));
  KP_CHECK_EQ(send_as(c, &peer, probe, sizeof(probe)), KP_PROXY_DATA);
  kp_proxy_alloc_input(W.px, (unsigned)(W.alloc_addr[c][0].port - 40000), &peer, probe,
                       sizeof(probe), W.now);
  KP_CHECK(W.n_to_peer && W.to_peer[W.n_to_peer - 1].data[1] == KP_PROXY_DATA);
  pump();
  /* A PASS carrying anything but a stream packet is refused. */
  uint8_t packet[500];
  memset(packet, 0x41, sizeof(packet));
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  uint8_t pass[KP_PROXY_PASS_HEAD + sizeof(packet)];
  memcpy(pass, W.cl_last[c], sizeof(pass));
  pass[KP_PROXY_PASS_HEAD] = 0x93;
  unsigned before = W.n_out;
  kp_proxy_input(W.px, &W.peer_addr[c], pass, sizeof(pass), W.now);
  KP_CHECK_EQ(W.n_out, before);
  world_free();
}

/* The client's table (32 a channel) is smaller than the proxy's (64 here):
 * a binding the client let go is noticed by its sealing again, and given
 * anew; what arrives from that address keeps reaching it. */
static void test_binding_forgotten_by_client(void) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.proven = 64;
  unsigned c = one_client(&cfg);
  kp_addr_t peers[33];
  uint8_t packet[500];
  memset(packet, 0x41, sizeof(packet));
  for (unsigned i = 0; i < 33; i++) {
    kp_addr_set_v4(&peers[i], 0xc6336400u + 40 + i, 7000);
    talk(c, &peers[i], 9);
    kp_proxy_client_send(W.cl[c], 0, &peers[i], packet, sizeof(packet), W.now);
    KP_CHECK_EQ(last_type(c), KP_PROXY_PASS);
    tick(10);
  }
  /* peers[0]'s binding is gone from the client; the proxy still has it. */
  KP_CHECK_EQ(send_as(c, &peers[0], packet, sizeof(packet)), KP_PROXY_DATA);
  pump();
  W.n_heard[c] = 0;
  arrive(c, 0, &peers[0], packet, sizeof(packet));
  KP_CHECK_EQ(W.n_heard[c], 1); /* sealed again, not a PASS the client drops */
  kp_proxy_client_send(W.cl[c], 0, &peers[0], packet, sizeof(packet), W.now);
  KP_CHECK_EQ(last_type(c), KP_PROXY_PASS); /* the BIND came again */
  world_free();
}

/* PASSes prove nothing: a peer whose NAT rebinds moves its session with
 * the sealed PING it sends each second it passes, and replayed PASSes do
 * not keep a session whose peer is gone. A stale PASS smaller than an
 * UNBIND gets none. */
static void test_pass_liveness(void) {
  unsigned c = one_client(NULL);
  kp_addr_t peer;
  addr(&peer, "198.51.100.30:7000");
  talk(c, &peer, 9);
  uint8_t packet[500];
  memset(packet, 0x41, sizeof(packet));
  KP_CHECK_EQ(send_as(c, &peer, packet, sizeof(packet)), KP_PROXY_PASS);
  /* The NAT rebinds: PASSes from the new port are dropped until the
   * PING, at most a second later, moves the session. */
  addr(&W.peer_addr[c], "198.51.100.7:5999");
  unsigned before = W.n_out;
  kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  KP_CHECK_EQ(W.n_out, before);
  W.now += 1000;
  kp_proxy_client_send(W.cl[c], 0, &peer, packet, sizeof(packet), W.now);
  KP_CHECK_EQ(W.n_out, before + 1);
  /* A short stale PASS: dropped, no UNBIND. */
  uint8_t short_pass[KP_PROXY_PASS_HEAD + 4];
  memcpy(short_pass, W.cl_last[c], KP_PROXY_PASS_HEAD);
  memset(short_pass + KP_PROXY_PASS_HEAD, 0x41, 4);
  short_pass[13] ^= 1;
  unsigned to_peer = W.n_to_peer;
  kp_proxy_input(W.px, &W.peer_addr[c], short_pass, sizeof(short_pass), W.now);
  KP_CHECK_EQ(W.n_to_peer, to_peer);
  /* The peer goes; its last PASS, replayed every second, does not keep
   * the session past its idle time (60 s). */
  uint8_t pass[KP_PROXY_PASS_HEAD + sizeof(packet)];
  memcpy(pass, W.cl_last[c], sizeof(pass));
  kp_addr_t from = W.peer_addr[c];
  kp_proxy_client_free(W.cl[c]);
  W.ncl = 0;
  for (int k = 0; k < 70; k++) {
    W.now += 1000;
    kp_proxy_tick(W.px, W.now);
    kp_proxy_input(W.px, &from, pass, sizeof(pass), W.now);
  }
  KP_CHECK_EQ(stats().sessions, 0);
  KP_CHECK_EQ(stats().allocs, 0);
  world_free();
}

static const kp_test_case_t cases[] = {
    KP_CASE(codec, unit, 10),
    KP_CASE(replay_window, unit, 10),
    KP_CASE(session_and_forwarding, unit, 10),
    KP_CASE(bridges_families, unit, 10),
    KP_CASE(inbound_needs_permit, unit, 10),
    KP_CASE(scope, unit, 10),
    KP_CASE(unproven_limits, unit, 10),
    KP_CASE(rate_limits, unit, 10),
    KP_CASE(refusals, unit, 10),
    KP_CASE(forged_and_replayed, unit, 10),
    KP_CASE(half_open_never_displaces, unit, 10),
    KP_CASE(left_session_frees_its_allocations, unit, 10),
    KP_CASE(session_follows_rebinding, unit, 10),
    KP_CASE(forget_and_restart, unit, 10),
    KP_CASE(alloc_flood, unit, 60),
    KP_CASE(no_amplification, unit, 10),
    KP_CASE(bound_pass, unit, 10),
    KP_CASE(pass_forged_and_stale, unit, 10),
    KP_CASE(binding_lost_and_ended, unit, 10),
    KP_CASE(pass_only_stream_packets, unit, 10),
    KP_CASE(binding_forgotten_by_client, unit, 10),
    KP_CASE(pass_liveness, unit, 10),
};

KP_TEST_MAIN(cases)
