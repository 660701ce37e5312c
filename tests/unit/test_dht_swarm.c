/* SPDX-License-Identifier: MIT */
/* Swarms on the simulator: announce, lookup, expiry, unannounce, relay
 * replacement, forged and replayed records, mutable and immutable values. */
#include <sodium.h>

#include "dht/dht_id.h"
#include "dht/dht_swarm.h"
#include "tests/harness/test.h"
#include "tests/sim/sim_dht.h"
#include "tests/unit/test_dht.h"

#define SEC 1000ull
#define MINUTE (60 * SEC)

static void make_net(kp_sim_dht_net_t *net, size_t n, uint64_t seed) {
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.member_stable_ms = 0;
  kp_sim_dht_net_init(net, kp_sim_new(seed), n, 2, &c, seed);
  KP_CHECK(kp_sim_dht_net_run_joined(net, 2 * MINUTE));
  kp_sim_dht_net_add_swarms(net, NULL);
}

/* ---- Waiting for operations ------------------------------------------------ */

typedef struct {
  bool done;
  int status;
  size_t found;
  unsigned records;
  uint64_t first_at, done_at, started;
  kp_record_t last;
  uint8_t last_data[KP_RECORD_MAX_DATA];
  kp_sim_t *sim;
} lookup_wait_t;

static void on_record(void *arg, const kp_record_t *rec) {
  lookup_wait_t *w = arg;
  if (!w->records++) w->first_at = kp_sim_now(w->sim);
  w->last = *rec;
  if (rec->data_len) memcpy(w->last_data, rec->data, rec->data_len);

  w->last.data = w->last_data;
}

static void on_lookup_done(void *arg, int status, size_t found, const kp_dht_query_stats_t *st) {
  lookup_wait_t *w = arg;
  (void)st;
  w->done = true;
  w->status = status;
  w->found = found;
  w->done_at = kp_sim_now(w->sim);
}

static bool lookup_finished(void *ctx) {
  return ((lookup_wait_t *)ctx)->done;
}

static lookup_wait_t lookup(kp_sim_dht_node_t *from, const uint8_t target[KP_ID_LEN]) {
  lookup_wait_t w = {0};
  w.sim = from->sim;
  w.started = kp_sim_now(from->sim);
  KP_CHECK_OK(kp_dht_swarm_lookup(from->swarm, target, on_record, on_lookup_done, &w,
                                  kp_sim_now(from->sim)));
  kp_sim_dht_node_kick(from);
  KP_CHECK(kp_sim_run_while(from->sim, kp_sim_now(from->sim) + MINUTE, lookup_finished, &w));
  return w;
}

typedef struct {
  int rounds;
  int last_status;
  unsigned stored;
} announce_wait_t;

static void on_announce(void *arg, int status, unsigned stored) {
  announce_wait_t *w = arg;
  w->rounds++;
  w->last_status = status;
  w->stored = stored;
}

static bool announced(void *ctx) {
  return ((announce_wait_t *)ctx)->rounds > 0;
}

static kp_dht_announce_t *announce(kp_sim_dht_node_t *n, const uint8_t target[KP_ID_LEN],
                                   const kp_keypair_t *kp, const char *data, announce_wait_t *w) {
  kp_dht_announce_t *a;
  KP_CHECK_OK(kp_dht_swarm_announce(n->swarm, target, kp, (const uint8_t *)data,
                                    data ? strlen(data) : 0, on_announce, w, kp_sim_now(n->sim),
                                    &a));
  kp_sim_dht_node_kick(n);
  KP_CHECK(kp_sim_run_while(n->sim, kp_sim_now(n->sim) + MINUTE, announced, w));
  KP_CHECK_OK(w->last_status);
  KP_CHECK(w->stored >= KP_DHT_K - 2);
  return a;
}

/* ---- Announce and lookup ---------------------------------------------------- */

void test_swarm_announce_lookup(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 300, 301);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t topic[KP_ID_LEN];
  kp_target_from_topic("kadpunch-test", 13, topic);
  announce_wait_t aw = {0};
  kp_dht_announce_t *a = announce(net.nodes[17], topic, &kp, "hello", &aw);
  kp_addr_t relays[KP_RECORD_MAX_RELAYS];
  KP_CHECK_EQ(kp_dht_announce_relays(a, relays, 3), 3);

  for (int i = 0; i < 20; i++) {

    kp_sim_dht_node_t *from = net.nodes[(size_t)(i * 13 + 5) % net.count];
    lookup_wait_t w = lookup(from, topic);
    KP_CHECK_OK(w.status);
    KP_CHECK_EQ(w.found, 1);
    KP_CHECK_EQ(w.records, 1); /* reported once, though ~20 nodes returned it */
    KP_CHECK_MEM(w.last.public_key, kp.public_key, 32);
    KP_CHECK(w.last.data_len == 5 && !memcmp(w.last.data, "hello", 5));
    KP_CHECK_EQ(w.last.relay_count, 3);
    for (int r = 0; r < 3; r++) KP_CHECK(kp_addr_eq(&w.last.relays[r], &relays[r]));
    KP_CHECK(w.first_at <= w.done_at);
  }
  /* Another topic has nothing. */
  uint8_t other[KP_ID_LEN];
  kp_target_from_topic("nothing here", 12, other);
  lookup_wait_t w = lookup(net.nodes[3], other);
  KP_CHECK(w.status == 0 && w.found == 0);
  kp_dht_announce_stop(net.nodes[17]->swarm, a, false, kp_sim_now(net.sim));
  kp_sim_dht_net_destroy(&net);
}

void test_swarm_expiry_refresh(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 100, 302);
  kp_keypair_t kp, kp2;
  kp_keypair_generate(&kp);
  kp_keypair_generate(&kp2);
  uint8_t t1[KP_ID_LEN], t2[KP_ID_LEN];
  kp_target_from_topic("kept", 4, t1);
  kp_target_from_topic("dropped", 7, t2);
  announce_wait_t w1 = {0}, w2 = {0};
  kp_dht_announce_t *kept = announce(net.nodes[5], t1, &kp, NULL, &w1);
  kp_dht_announce_t *dropped = announce(net.nodes[6], t2, &kp2, NULL, &w2);
  /* The second announcer stops refreshing (without unannouncing): after the
   * TTL its record is gone everywhere. The first keeps refreshing. */
  kp_dht_announce_stop(net.nodes[6]->swarm, dropped, false, kp_sim_now(net.sim));
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 19 * MINUTE);
  KP_CHECK_EQ(lookup(net.nodes[50], t2).found, 1);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 2 * MINUTE);
  KP_CHECK_EQ(lookup(net.nodes[50], t2).found, 0);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 60 * MINUTE);
  KP_CHECK_EQ(lookup(net.nodes[50], t1).found, 1);
  KP_CHECK(w1.rounds >= 7); /* a round every 10 minutes */
  KP_CHECK_EQ(w1.last_status, 0);
  kp_dht_announce_stop(net.nodes[5]->swarm, kept, false, kp_sim_now(net.sim));
  kp_sim_dht_net_destroy(&net);
}

void test_swarm_unannounce(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 100, 303);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t t[KP_ID_LEN];
  kp_target_from_key(kp.public_key, t);
  announce_wait_t w = {0};
  kp_dht_announce_t *a = announce(net.nodes[9], t, &kp, NULL, &w);
  KP_CHECK_EQ(lookup(net.nodes[40], t).found, 1);
  kp_dht_announce_stop(net.nodes[9]->swarm, a, true, kp_sim_now(net.sim));
  kp_sim_dht_node_kick(net.nodes[9]);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 10 * SEC);
  KP_CHECK_EQ(lookup(net.nodes[40], t).found, 0);
  kp_sim_dht_net_destroy(&net);
}

void test_swarm_relay_replacement(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 150, 304);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t t[KP_ID_LEN];
  kp_target_from_key(kp.public_key, t);
  announce_wait_t w = {0};
  kp_sim_dht_node_t *server = net.nodes[20];
  kp_dht_announce_t *a = announce(server, t, &kp, NULL, &w);
  kp_addr_t before[3], after[3];
  kp_dht_announce_relays(a, before, 3);
  /* The first relay leaves. The next keepalive ping (every 20 s) fails, and
   * the announcement picks new relays at once, well before its refresh. */
  for (size_t i = 0; i < net.count; i++)
    if (net.nodes[i]->dht && kp_addr_eq(kp_sim_socket_addr(net.nodes[i]->sock), &before[0]))
      kp_sim_dht_node_free(net.nodes[i]);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 45 * SEC);
  KP_CHECK(w.rounds >= 2);
  KP_CHECK_EQ(kp_dht_announce_relays(a, after, 3), 3);
  for (int i = 0; i < 3; i++) KP_CHECK(!kp_addr_eq(&after[i], &before[0]));
  /* From a node still there (the relay that left may have been node 77). */
  size_t from = 77;
  while (!net.nodes[from]->swarm) from++;
  lookup_wait_t lw = lookup(net.nodes[from], t);
  KP_CHECK_EQ(lw.found, 1);
  for (size_t r = 0; r < lw.last.relay_count; r++)
    KP_CHECK(!kp_addr_eq(&lw.last.relays[r], &before[0]));
  kp_dht_announce_stop(server->swarm, a, false, kp_sim_now(net.sim));
  kp_sim_dht_net_destroy(&net);
}

/* ---- Forged, altered, replayed records at the wire ------------------------------- */

typedef struct {
  unsigned got;
  unsigned busy; /* replies saying the verification budget is spent */
  kp_dht_msg_t msg;
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  uint8_t token[32];
} raw_t;

static void raw_recv(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                     size_t len, uint64_t now) {
  raw_t *r = ctx;
  (void)sock, (void)from, (void)now;
  memcpy(r->buf, data, len);
  if (kp_dht_msg_decode(r->buf, len, KP_AF_INET, &r->msg) == 0) {
    r->got++;
    r->busy += r->msg.error == KP_SWARM_ERR_BUSY;
    if (r->msg.has_token) memcpy(r->token, r->msg.token, 32);
  }
}

/* Sends one request from a raw socket and returns the reply's error. */
static int raw_request(kp_sim_t *sim, kp_sim_socket_t *s, raw_t *r, const kp_addr_t *to,
                       uint8_t command, const uint8_t *target, const uint8_t *value, size_t len,
                       bool with_token) {
  kp_dht_msg_t m = {0};
  m.type = KP_DHT_REQUEST;
  m.tid = (uint16_t)(r->got + 100);
  m.to = *to;
  m.command = command;
  if (target) {
    m.has_target = true;
    memcpy(m.target, target, KP_ID_LEN);
  }
  if (with_token) {
    m.has_token = true;
    memcpy(m.token, r->token, 32);
  }
  m.value = value;
  m.value_len = len;
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  size_t n;
  KP_CHECK_OK(kp_dht_msg_encode_min(&m, 900, buf, sizeof(buf), &n));
  unsigned before = r->got;
  kp_sim_send(s, to, buf, n);
  kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
  KP_CHECK_EQ(r->got, before + 1);
  return r->msg.error;
}

/* An ANNOUNCE value: the record, then the proof that sk's holder sends
 * from the address `token` was given to (dht_record.h). Returns its length. */
static size_t with_proof(const uint8_t *rec, size_t len, const uint8_t target[KP_ID_LEN],
                         const uint8_t token[32], const uint8_t *sk, uint8_t *out) {
  memcpy(out, rec, len);
  kp_dht_origin_sign(target, token, sk, out + len);
  return len + KP_ORIGIN_PROOF_LEN;
}

void test_swarm_forged_records(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 60, 305);
  kp_sim_dht_node_t *victim = net.nodes[12];
  const kp_addr_t *to = kp_sim_socket_addr(victim->sock);
  raw_t r = {0};
  kp_addr_t me;
  kp_addr_parse(&me, "10.99.0.7:7000");
  kp_sim_socket_t *s = kp_sim_socket_new(net.sim, &me, NULL, raw_recv, &r);
  /* A token first: any request's reply carries one. */
  raw_request(net.sim, s, &r, to, KP_DHT_CMD_PING, NULL, NULL, 0, false);

  kp_keypair_t kp, other;
  kp_keypair_generate(&kp);
  kp_keypair_generate(&other);
  /* A topic right next to the victim, so lookups ask it. */
  uint8_t t[KP_ID_LEN], buf[KP_RECORD_MAX_SIZE], victim_id[KP_ID_LEN];
  char topic[32];
  kp_dht_id(victim->dht, victim_id);
  for (unsigned i = 0;; i++) {
    snprintf(topic, sizeof(topic), "forgery %u", i);
    kp_target_from_topic(topic, strlen(topic), t);
    if (kp_dht_id_prefix_len(t, victim_id) >= 10) break;
  }
  size_t len;
  kp_record_t rec = {0};
  memcpy(rec.public_key, kp.public_key, 32);
  rec.seq = 1000;
  rec.relay_count = 1;
  rec.relays[0] = me;

  uint8_t value[KP_RECORD_MAX_SIZE + KP_ORIGIN_PROOF_LEN], t2[KP_ID_LEN], token2[32];
  size_t vlen;
  /* Signed by someone else, naming kp. */
  kp_dht_record_encode(&rec, t, other.secret_key, buf, sizeof(buf), &len);
  vlen = with_proof(buf, len, t, r.token, other.secret_key, value);
  KP_CHECK_EQ(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, value, vlen, true),
              KP_SWARM_ERR_BAD_SIGNATURE);
  /* Genuine but altered (the seq, inside the signed body). */
  kp_dht_record_encode(&rec, t, kp.secret_key, buf, sizeof(buf), &len);
  vlen = with_proof(buf, len, t, r.token, kp.secret_key, value);
  value[40] ^= 1;
  KP_CHECK(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, value, vlen, true) != 0);
  /* Genuine, for another target. */
  kp_target_from_topic("elsewhere", 9, t2);
  vlen = with_proof(buf, len, t2, r.token, kp.secret_key, value);
  KP_CHECK_EQ(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t2, value, vlen, true),
              KP_SWARM_ERR_BAD_SIGNATURE);
  /* Genuine without a token: refused before anything is checked. */
  vlen = with_proof(buf, len, t, r.token, kp.secret_key, value);
  KP_CHECK_EQ(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, value, vlen, false),
              KP_DHT_ERR_BAD_TOKEN);
  /* Genuine, with the token, but bare (a copy, as any lookup gets one), or
   * with the proof made for another address's token: refused. */
  KP_CHECK(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, buf, len, true) != 0);
  memset(token2, 0x5a, sizeof(token2));
  vlen = with_proof(buf, len, t, token2, kp.secret_key, value);
  KP_CHECK_EQ(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, value, vlen, true),
              KP_SWARM_ERR_BAD_SIGNATURE);
  /* Genuine, with the token and its proof: stored. */
  vlen = with_proof(buf, len, t, r.token, kp.secret_key, value);
  KP_CHECK_EQ(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, value, vlen, true), 0);
  /* The same record replayed with a lower seq, properly signed. */
  rec.seq = 999;
  kp_dht_record_encode(&rec, t, kp.secret_key, buf, sizeof(buf), &len);
  vlen = with_proof(buf, len, t, r.token, kp.secret_key, value);
  KP_CHECK_EQ(raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, value, vlen, true),
              KP_SWARM_ERR_SEQ);
  /* Garbage where a record should be. */
  KP_CHECK_EQ(
      raw_request(net.sim, s, &r, to, KP_DHT_CMD_ANNOUNCE, t, (const uint8_t *)"\x92\x01", 2, true),
      KP_SWARM_ERR_MALFORMED);

  /* Only the genuine record is there, at seq 1000. */
  lookup_wait_t w = lookup(net.nodes[30], t);
  KP_CHECK_EQ(w.found, 1);
  KP_CHECK_EQ(w.last.seq, 1000);

  /* A source that keeps sending signatures to check runs out of budget
   * (200 at once, then 100 a second) and is told so. */
  for (int i = 0; i < 400; i++) {
    rec.seq = 2000 + (uint64_t)i;
    kp_dht_record_encode(&rec, t, other.secret_key, buf, sizeof(buf), &len);
    kp_dht_msg_t m = {0};
    m.type = KP_DHT_REQUEST;
    m.tid = (uint16_t)i;
    m.to = *to;
    m.command = KP_DHT_CMD_ANNOUNCE;
    m.has_target = m.has_token = true;
    memcpy(m.target, t, 32);
    memcpy(m.token, r.token, 32);
    m.value = buf;
    m.value_len = len;
    uint8_t dg[KP_DHT_MAX_DATAGRAM];
    size_t n;
    kp_dht_msg_encode(&m, dg, sizeof(dg), &n);
    kp_sim_send(s, to, dg, n);
  }
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 200);
  KP_CHECK_MSG(r.busy >= 150 && r.busy <= 220, "%u refused for budget", r.busy);
  /* And none of it got in. */
  w = lookup(net.nodes[31], t);

  KP_CHECK_EQ(w.found, 1);
  KP_CHECK_EQ(w.last.seq, 1000);
  kp_sim_dht_net_destroy(&net);
}

/* ---- Where a relay node finds the announcer --------------------------------------- */

/* The record of a key a node stores: its exact bytes and its origin, the
 * address the node relays the announcer's hellos to. */
typedef struct {
  const uint8_t *key;
  bool found;
  uint64_t seq;
  kp_addr_t origin;
  uint8_t raw[KP_RECORD_MAX_SIZE];
  size_t raw_len;
} stored_t;

static bool find_stored(void *ctx, const kp_dht_stored_t *rec) {
  stored_t *s = ctx;
  if (memcmp(rec->public_key, s->key, KP_PUBLIC_KEY_LEN)) return true;
  s->found = true;
  s->seq = rec->seq;
  s->origin = *rec->origin;
  memcpy(s->raw, rec->raw, rec->raw_len);
  s->raw_len = rec->raw_len;
  return false;
}

static stored_t stored_at(kp_sim_dht_node_t *n, const uint8_t target[KP_ID_LEN],
                          const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  stored_t s = {.key = key};
  kp_dht_store_each(kp_dht_swarm_store(n->swarm), target, find_stored, &s);
  return s;
}

static kp_sim_dht_node_t *node_at(kp_sim_dht_net_t *net, const kp_addr_t *addr) {
  for (size_t i = 0; i < net->count; i++)
    if (net->nodes[i]->dht && kp_addr_eq(kp_sim_socket_addr(net->nodes[i]->sock), addr))
      return net->nodes[i];
  return NULL;
}

typedef struct {
  kp_addr_t from, to; /* datagrams between these two are lost */
} cut_t;

static bool cut_link(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                     size_t len) {
  cut_t *c = ctx;
  (void)data, (void)len;
  return kp_addr_eq(from, &c->from) && kp_addr_eq(to, &c->to);
}

/* A record copied from any node (a lookup returns it) and sent again from
 * elsewhere cannot move where a relay node forwards the announcer's hellos:
 * not the round the node holds, nor a newer one that reached it late. The
 * announcer itself, moved to another address, moves it. */
void test_record_origin_not_rehomed(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 60, 307);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t t[KP_ID_LEN];
  kp_target_from_key(kp.public_key, t);
  kp_sim_dht_node_t *server = net.nodes[20];
  kp_addr_t home = *kp_sim_socket_addr(server->sock);
  announce_wait_t aw = {0};
  kp_dht_announce_t *a = announce(server, t, &kp, NULL, &aw);
  kp_addr_t relays[3];
  KP_CHECK_EQ(kp_dht_announce_relays(a, relays, 3), 3);
  kp_sim_dht_node_t *relay = node_at(&net, &relays[0]), *holder = node_at(&net, &relays[1]);
  stored_t s = stored_at(relay, t, kp.public_key);
  KP_CHECK(s.found && kp_addr_eq(&s.origin, &home));

  /* The replayer: a token of its own from the relay node, and the record as
   * any lookup returns it. */
  raw_t r = {0};
  kp_addr_t evil;
  kp_addr_parse(&evil, "10.99.0.66:6666");
  kp_sim_socket_t *sock = kp_sim_socket_new(net.sim, &evil, NULL, raw_recv, &r);
  raw_request(net.sim, sock, &r, &relays[0], KP_DHT_CMD_PING, NULL, NULL, 0, false);
  raw_request(net.sim, sock, &r, &relays[0], KP_DHT_CMD_ANNOUNCE, t, s.raw, s.raw_len, true);
  s = stored_at(relay, t, kp.public_key);
  KP_CHECK(s.found && kp_addr_eq(&s.origin, &home));

  /* A new round, whose commit to the relay node is lost: the other holders
   * have the newer record, and the replayer hands it to the relay node
   * before the announcer's retries do. */
  cut_t cut = {home, relays[0]};
  kp_sim_set_drop(net.sim, cut_link, &cut);
  aw.rounds = 0;
  kp_dht_announce_refresh(server->swarm, a, kp_sim_now(net.sim));
  kp_sim_dht_node_kick(server);
  stored_t newer;
  for (int i = 0; i < 100; i++) {
    kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 20);
    newer = stored_at(holder, t, kp.public_key);
    if (newer.found && newer.seq > s.seq) break;
  }
  KP_CHECK(newer.seq > s.seq);
  raw_request(net.sim, sock, &r, &relays[0], KP_DHT_CMD_PING, NULL, NULL, 0, false);
  raw_request(net.sim, sock, &r, &relays[0], KP_DHT_CMD_ANNOUNCE, t, newer.raw, newer.raw_len,
              true);
  s = stored_at(relay, t, kp.public_key);
  KP_CHECK_MSG(s.found && kp_addr_eq(&s.origin, &home), "the replay moved the origin");
  kp_sim_set_drop(net.sim, NULL, NULL);

  /* The announcer moves (a new network): its next round, from there, is
   * proof that it holds the key, and the origin follows it. */
  kp_addr_t moved, moved_alt;
  kp_addr_parse(&moved, "10.200.0.9:4000");
  kp_addr_parse(&moved_alt, "10.200.0.9:4001");
  kp_sim_socket_move(server->sock, &moved, NULL);
  kp_sim_socket_move(server->alt, &moved_alt, NULL);
  aw.rounds = 0;
  kp_dht_announce_refresh(server->swarm, a, kp_sim_now(net.sim));
  kp_sim_dht_node_kick(server);
  KP_CHECK(kp_sim_run_while(net.sim, kp_sim_now(net.sim) + MINUTE, announced, &aw));
  KP_CHECK_OK(aw.last_status);
  size_t followed = 0;
  for (size_t i = 0; i < net.count; i++) {
    if (!net.nodes[i]->dht) continue;
    stored_t here = stored_at(net.nodes[i], t, kp.public_key);
    followed += here.found && kp_addr_eq(&here.origin, &moved);
  }
  KP_CHECK(followed >= KP_DHT_K / 2);
  kp_dht_announce_stop(server->swarm, a, false, kp_sim_now(net.sim));
  kp_sim_dht_net_destroy(&net);
}

/* ---- Mutable and immutable values ---------------------------------------------- */

typedef struct {
  bool done;
  int status;
  unsigned stored;
  uint64_t seq;
  size_t len;
  uint8_t value[KP_MUTABLE_MAX_VALUE];
} value_wait_t;

static void on_put(void *arg, int status, unsigned stored, unsigned failed) {
  value_wait_t *w = arg;
  (void)failed;
  w->done = true;
  w->status = status;
  w->stored = stored;
}

static void on_get(void *arg, int status, uint64_t seq, const uint8_t *value, size_t len) {
  value_wait_t *w = arg;
  w->done = true;
  w->status = status;
  w->seq = seq;
  w->len = len;
  if (status == 0) memcpy(w->value, value, len);
}

static bool value_done(void *ctx) {
  return ((value_wait_t *)ctx)->done;
}

static value_wait_t wait_value(kp_sim_dht_node_t *n, value_wait_t *w) {
  kp_sim_dht_node_kick(n);
  KP_CHECK(kp_sim_run_while(n->sim, kp_sim_now(n->sim) + MINUTE, value_done, w));
  return *w;
}

static value_wait_t put_mutable(kp_sim_dht_node_t *n, const kp_keypair_t *kp, const char *salt,
                                uint64_t seq, const uint8_t *value, size_t len, bool has_cas,
                                uint64_t cas) {
  value_wait_t w = {0};
  KP_CHECK_OK(kp_dht_swarm_put_mutable(n->swarm, kp, (const uint8_t *)salt, salt ? strlen(salt) : 0,
                                       seq, value, len, has_cas, cas, on_put, &w,
                                       kp_sim_now(n->sim)));
  return wait_value(n, &w);
}

static value_wait_t get_mutable(kp_sim_dht_node_t *n, const kp_keypair_t *kp, const char *salt) {
  value_wait_t w = {0};
  KP_CHECK_OK(kp_dht_swarm_get_mutable(n->swarm, kp->public_key, (const uint8_t *)salt,
                                       salt ? strlen(salt) : 0, on_get, &w, kp_sim_now(n->sim)));
  return wait_value(n, &w);
}

void test_swarm_mutable(void) {
  kp_sim_dht_net_t net;
  make_net(&net, 120, 306);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  kp_sim_dht_node_t *writer = net.nodes[4], *reader = net.nodes[90];

  value_wait_t w = put_mutable(writer, &kp, "s", 1, (const uint8_t *)"first", 5, false, 0);
  KP_CHECK_OK(w.status);
  KP_CHECK(w.stored >= KP_DHT_K - 2);
  w = get_mutable(reader, &kp, "s");
  KP_CHECK(w.status == 0 && w.seq == 1 && w.len == 5 && !memcmp(w.value, "first", 5));
  /* No salt is another value (another target). */
  KP_CHECK_EQ(get_mutable(reader, &kp, NULL).status, KP_ENOTFOUND);

  /* Compare-and-swap: read seq 1, write seq 2 expecting 1. */
  w = put_mutable(writer, &kp, "s", 2, (const uint8_t *)"second", 6, true, 1);
  KP_CHECK_OK(w.status);
  /* A writer that also read seq 1 loses the race, with a distinct error. */
  w = put_mutable(writer, &kp, "s", 3, (const uint8_t *)"stale", 5, true, 1);
  KP_CHECK_EQ(w.status, KP_ECAS);
  /* A replay of an older seq is refused. */
  w = put_mutable(writer, &kp, "s", 1, (const uint8_t *)"first", 5, false, 0);
  KP_CHECK_EQ(w.status, KP_ESEQ);
  w = get_mutable(reader, &kp, "s");
  KP_CHECK(w.status == 0 && w.seq == 2 && w.len == 6 && !memcmp(w.value, "second", 6));

  /* The largest value, fetched with a token after the summaries. */
  uint8_t big[KP_MUTABLE_MAX_VALUE];
  for (size_t i = 0; i < sizeof(big); i++) big[i] = (uint8_t)(i * 7);
  w = put_mutable(writer, &kp, NULL, 10, big, sizeof(big), false, 0);
  KP_CHECK_OK(w.status);
  w = get_mutable(reader, &kp, NULL);
  KP_CHECK_MSG(w.status == 0 && w.seq == 10 && w.len == sizeof(big),
               "status %s seq %" PRIu64 " len %zu", kp_err_name(w.status), w.seq, w.len);
  KP_CHECK_MEM(w.value, big, sizeof(big));

  kp_sim_dht_net_destroy(&net);
}

/* A node that answers IMMUTABLE_GET with a value that is not the one asked
 * for, as a malicious or broken node would. */
static void lie(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  (void)ctx;
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  kp_dht_reply(dht, &rt, (const uint8_t *)"forged value", 12, 0, now);
}

void test_swarm_immutable(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.member_stable_ms = 0;
  kp_sim_dht_net_init(&net, kp_sim_new(307), 150, 2, &c, 307);
  KP_CHECK(kp_sim_dht_net_run_joined(&net, 2 * MINUTE));
  /* Node 33 lies; the others are honest. */
  kp_sim_dht_node_t *liar = net.nodes[33];
  KP_CHECK_OK(kp_dht_register(liar->dht, KP_DHT_CMD_IMMUTABLE_GET, lie, NULL, 0));
  for (size_t i = 0; i < net.count; i++)
    if (net.nodes[i] != liar) kp_sim_dht_node_add_swarm(net.nodes[i], NULL);
  /* A value whose hash lands right next to the liar, so the get asks it. */
  uint8_t liar_id[KP_ID_LEN], value[64], target[KP_ID_LEN];
  kp_dht_id(liar->dht, liar_id);
  uint32_t n = 0;
  do {
    snprintf((char *)value, sizeof(value), "value %u", n++);
    kp_dht_target_immutable(value, strlen((char *)value), target);
  } while (kp_dht_id_prefix_len(target, liar_id) < 12);
  size_t vlen = strlen((char *)value);

  value_wait_t w = {0};
  uint8_t got_target[KP_ID_LEN];
  KP_CHECK_OK(kp_dht_swarm_put_immutable(net.nodes[3]->swarm, value, vlen, on_put, &w,
                                         kp_sim_now(net.sim), got_target));
  KP_CHECK_MEM(got_target, target, KP_ID_LEN);
  KP_CHECK_OK(wait_value(net.nodes[3], &w).status);
  w = (value_wait_t){0};
  KP_CHECK_OK(
      kp_dht_swarm_get_immutable(net.nodes[100]->swarm, target, on_get, &w, kp_sim_now(net.sim)));
  w = wait_value(net.nodes[100], &w);
  KP_CHECK_OK(w.status);
  KP_CHECK(w.len == vlen && !memcmp(w.value, value, vlen));
  /* Unknown hashes are not found. */
  uint8_t unknown[KP_ID_LEN] = {1, 2, 3};
  w = (value_wait_t){0};
  KP_CHECK_OK(
      kp_dht_swarm_get_immutable(net.nodes[100]->swarm, unknown, on_get, &w, kp_sim_now(net.sim)));
  KP_CHECK_EQ(wait_value(net.nodes[100], &w).status, KP_ENOTFOUND);
  kp_sim_dht_net_destroy(&net);
}

/* A network coming up: a record announced while the tables are still
 * filling sits only where that first round converged, and a lookup that
 * converges elsewhere misses it (a relay, announced as a lab's DHT came up,
 * found by no server). Rounds that store at fewer than k nodes are
 * repeated soon (1 s, doubling), so within seconds every node finds it. */
void test_swarm_young_network_announce(void) {
  enum { NODES = 8 };
  size_t misses_early = 0;
  for (uint64_t seed = 1; seed <= 6; seed++) {
    kp_dht_config_t c;
    kp_dht_config_defaults(&c);
    c.member_stable_ms = 0;
    kp_sim_dht_net_t net;
    kp_sim_dht_net_init(&net, kp_sim_new(900 + seed), NODES, 2, &c, 900 + seed);
    kp_sim_dht_net_add_swarms(&net, NULL);
    kp_sim_t *sim = net.sim;
    kp_sim_run_until(sim, kp_sim_now(sim) + 20); /* the announcer knows a node or two */
    kp_keypair_t kp;
    kp_keypair_generate(&kp);
    uint8_t topic[KP_ID_LEN];
    kp_target_from_topic("kadpunch/relays/v1", 18, topic);
    announce_wait_t aw = {0};
    kp_sim_dht_node_t *announcer = net.nodes[NODES - 1];
    kp_dht_announce_t *a;
    KP_CHECK_OK(kp_dht_swarm_announce(announcer->swarm, topic, &kp, (const uint8_t *)"r", 1,
                                      on_announce, &aw, kp_sim_now(sim), &a));
    kp_sim_dht_node_kick(announcer);
    KP_CHECK(kp_sim_run_while(sim, kp_sim_now(sim) + MINUTE, announced, &aw));
    /* Three seconds on, from every node (without the early rounds, 6 of 42 missed). */
    kp_sim_run_until(sim, kp_sim_now(sim) + 3 * SEC);
    for (size_t i = 0; i < NODES - 1; i++) {
      lookup_wait_t w = lookup(net.nodes[i], topic);
      KP_CHECK_OK(w.status);
      if (w.found != 1) misses_early++;
    }
    kp_dht_announce_stop(announcer->swarm, a, false, kp_sim_now(sim));
    kp_sim_dht_net_destroy(&net);
  }
  printf("lookups 3 s after a young network's announce that missed the record: %zu of %d\n",
         misses_early, 6 * (NODES - 1));
  KP_CHECK_EQ(misses_early, 0);
}
