/* SPDX-License-Identifier: MIT */
/* Trust nothing on the path: what a DHT node that relays a handshake, a
 * relay node that lies about addresses, an admitted client that poses as
 * a relay node, or a flood from one sender can and cannot do
 * (docs/protocol.md, "What a sender can make a node send"). */
#include <sodium.h>

#include "dht/dht_msg.h"
#include "holepunch/hs_noise.h"
#include "tests/harness/test.h"
#include "tests/unit/hp_world.h"

static const char PROLOGUE[] = "kadpunch/handshake/v1";

/* A socket that takes whatever comes (a third party, or an attacker who
 * only sends). */
static void swallow(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                    size_t len, uint64_t now) {
  (void)ctx, (void)sock, (void)from, (void)data, (void)len, (void)now;
}

/* ---- What every relay node can compute ------------------------------------------ */

static void mix(uint8_t h[64], const uint8_t *data, size_t len) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, NULL, 0, 64);
  crypto_generichash_update(&st, h, 64);
  crypto_generichash_update(&st, data, len);
  crypto_generichash_final(&st, h, 64);
}

/* The Noise handshake hash from public bytes only: the protocol name, the
 * prologue, the server's public key, and the two messages as they crossed
 * the relay node (ephemerals in the clear, the rest ciphertext). */
static void public_hash(const uint8_t server_key[32], const uint8_t *m1, size_t l1,
                        const uint8_t *m2, size_t l2, uint8_t h[64]) {
  static const char name[] = "Noise_IK_25519_ChaChaPoly_BLAKE2b";
  uint8_t rs[32];
  memset(h, 0, 64);
  memcpy(h, name, sizeof(name) - 1);
  mix(h, (const uint8_t *)PROLOGUE, sizeof(PROLOGUE) - 1);
  KP_CHECK_OK(crypto_sign_ed25519_pk_to_curve25519(rs, server_key));
  mix(h, rs, 32);
  mix(h, m1, 32);           /* e */
  mix(h, m1 + 32, 48);      /* s, sealed */
  mix(h, m1 + 80, l1 - 80); /* payload, sealed */
  mix(h, m2, 32);           /* e */
  mix(h, m2 + 32, l2 - 32); /* payload, sealed */
}

/* Every key an attacker could try: the derivations of protocol 1 (from
 * the hash) and of protocol 2, applied to the hash. */
static const char *const labels[] = {"kadpunch/holepunch/v1", "kadpunch/holepunch/v2"};
static const char *const probe_labels[] = {"kadpunch/probe/v1", "kadpunch/probe/v2"};

typedef struct wire_s {
  kp_addr_t client, server_pub;
  uint8_t m1[KP_HS_MAX_DATA], m2[KP_HS_MAX_DATA], round[KP_HS_MAX_DATA];
  size_t l1, l2, lr;
  uint8_t pair_ids[4][KP_RELAY_ID_LEN];
  unsigned pairs;
  uint64_t server_conn_id; /* from a probe to the server */
  bool have_probe;
} wire_t;

static void capture(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                    size_t len) {
  wire_t *w = ctx;
  kp_dht_msg_t m;
  kp_hs_wire_t e;
  kp_relay_ctrl_t c;
  if (kp_probe_is_packet(data, len) && kp_addr_eq(to, &w->server_pub) && !w->have_probe) {
    uint8_t flags;
    kp_probe_peek(data, len, &w->server_conn_id, &flags);
    w->have_probe = true;
  }
  if (kp_relay_is_ctrl(data, len) && !kp_relay_ctrl_decode(data, len, &c) &&
      c.type == KP_RELAY_PAIR && w->pairs < 4)
    memcpy(w->pair_ids[w->pairs++], c.id, KP_RELAY_ID_LEN);
  if (kp_dht_msg_decode(data, len, KP_AF_INET, &m) || !m.value ||
      kp_hs_wire_decode(m.value, m.value_len, &e))
    return;
  bool hs = m.command == KP_DHT_CMD_PEER_HANDSHAKE;
  if (m.type == KP_DHT_REQUEST && kp_addr_eq(from, &w->client) && e.mode == KP_HS_FROM_CLIENT) {
    if (hs && !w->l1) memcpy(w->m1, e.data, w->l1 = e.len);
    if (!hs && !w->lr) memcpy(w->round, e.data, w->lr = e.len);
  }
  if (m.type == KP_DHT_RESPONSE && hs && e.mode == KP_HS_REPLY && !w->l2 && e.len >= 48)
    memcpy(w->m2, e.data, w->l2 = e.len);
}

/* The hash is public: anyone who relayed the two handshake messages gets
 * it. Nothing derived from it opens a round, authenticates a probe or
 * pairs at a blind relay; the keys come from the chaining key. */
void test_keys_not_from_public_hash(void) {
  /* First, that the reconstruction is exact (a plain exchange). */
  kp_keypair_t ck, sk;
  keypair(&ck, 1), keypair(&sk, 2);
  kp_noise_t i, r;
  uint8_t e1[32] = {3}, e2[32] = {4}, m1[256], m2[256], p[256], h[64];
  size_t l1, l2, pl;
  KP_CHECK_OK(kp_noise_init_initiator(&i, &ck, sk.public_key, (const uint8_t *)PROLOGUE, 21));
  KP_CHECK_OK(kp_noise_init_responder(&r, &sk, (const uint8_t *)PROLOGUE, 21));
  KP_CHECK_OK(kp_noise_write_msg1(&i, e1, (const uint8_t *)"hello", 5, m1, sizeof(m1), &l1));
  KP_CHECK_OK(kp_noise_read_msg1(&r, m1, l1, p, sizeof(p), &pl));
  KP_CHECK_OK(kp_noise_write_msg2(&r, e2, (const uint8_t *)"welcome", 7, m2, sizeof(m2), &l2));
  KP_CHECK_OK(kp_noise_read_msg2(&i, m2, l2, p, sizeof(p), &pl));
  kp_noise_split_t split;
  kp_noise_split(&i, &split);
  public_hash(sk.public_key, m1, l1, m2, l2, h);
  KP_CHECK_MEM(h, split.hash, 64);
  kp_noise_clear(&i), kp_noise_clear(&r);

  /* Then a real connect with a blind relay, watched on the wire: an open
   * server (so what the attacker sends reaches it) and a client whose
   * direct probes are all lost, so it has rounds, probes and PAIRs. */
  world_t w;
  world_init(&w, 61, 0, 0);
  sim_relay_t sr;
  relay_up(&w, &sr);
  peer_t *server = peer_new(&w, K_OPEN, 50);
  peer_t *client = peer_new(&w, K_CONSISTENT, 60);
  kp_hp_set_relays(server->hp, kp_sim_socket_addr(sr.n->sock), 1);
  serve(&w, server);
  wire_t cap = {.client = client->home};
  cap.server_pub = kp_dht_nat(server->n->dht)->public_addr;
  kp_sim_set_tap(w.sim, capture, &cap);
  kp_sim_set_drop(w.sim, drop_direct_probes, (void *)kp_sim_socket_addr(sr.n->sock));
  KP_CHECK_OK(connect_to(&w, client, server, NULL));
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 2 * SEC);
  kp_sim_set_tap(w.sim, NULL, NULL);
  kp_sim_set_drop(w.sim, NULL, NULL);
  KP_CHECK_EQ(client->res.strategy, KP_PUNCH_RELAYED);
  KP_CHECK(cap.l1 && cap.l2 && cap.lr && cap.pairs >= 2 && cap.have_probe);

  public_hash(server->kp.public_key, cap.m1, cap.l1, cap.m2, cap.l2, h);
  kp_hp_stats_t before, after;
  kp_hp_server_stats_t sb, sa;
  kp_hp_stats(server->hp, &before);
  kp_hp_server_stats(server->server, &sb);
  kp_addr_t evil;
  kp_addr_parse(&evil, "198.51.100.66:6666");
  kp_sim_socket_t *attacker = kp_sim_socket_new(w.sim, &evil, NULL, swallow, NULL);
  for (int v = 0; v < 2; v++) {
    uint8_t hp_key[32], probe_key[32];
    kp_hs_derive(h, labels[v], hp_key);
    kp_hs_derive(h, probe_labels[v], probe_key);
    /* No round opens. */
    kp_hp_round_t round;
    KP_CHECK(kp_hp_round_open(cap.round, cap.lr, hp_key, true, &round) != 0);
    /* No probe authenticates: none moves the server, none is answered. */
    kp_probe_t fake = {.conn_id = cap.server_conn_id, .flags = KP_PROBE_FROM_CLIENT};
    uint8_t pkt[KP_PROBE_LEN];
    for (int k = 0; k < 4; k++) {
      fake.nonce[0] = (uint8_t)k;
      kp_probe_encode(&fake, probe_key, pkt);
      kp_sim_send(attacker, &cap.server_pub, pkt, sizeof(pkt));
      kp_sim_send(attacker, &client->res.peer_link, pkt, sizeof(pkt)); /* its relay socket */
    }
  }
  /* No PAIR: the ids a relay node could compute are not the peers'. */
  kp_relay_pair_t guess;
  kp_relay_pair_derive(h, &guess);
  uint8_t old_token[32];
  crypto_generichash(old_token, 32, (const uint8_t *)"kadpunch/relay-pair/v1", 22, h, 64);
  for (unsigned k = 0; k < cap.pairs; k++) {
    KP_CHECK(memcmp(guess.id, cap.pair_ids[k], KP_RELAY_ID_LEN) != 0);
    KP_CHECK(memcmp(old_token, cap.pair_ids[k], KP_RELAY_ID_LEN) != 0);
  }
  kp_relay_stats_t rb, ra;
  kp_relay_stats(sr.relay, &rb);
  /* Posing as either peer with what it can compute, it pairs with nobody
   * (pairing with itself would be its own business). */
  for (uint8_t role = 0; role < 2; role++) {
    kp_relay_ctrl_t c;
    uint8_t msg[KP_RELAY_CTRL_LEN];
    kp_relay_pair_request(&guess, role, &c);
    kp_relay_ctrl_encode(&c, msg);
    kp_sim_send(attacker, kp_sim_socket_addr(sr.n->sock), msg, sizeof(msg));
    kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 11 * SEC); /* the half pair expires */
  }
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 2 * SEC);
  kp_hp_stats(server->hp, &after);
  kp_hp_server_stats(server->server, &sa);
  kp_relay_stats(sr.relay, &ra);
  KP_CHECK_EQ(after.probes_ok, before.probes_ok);
  KP_CHECK(after.probes_bad >= before.probes_bad + 16);
  KP_CHECK_EQ(sa.connections, sb.connections);
  KP_CHECK_EQ(ra.paired, rb.paired); /* the attacker's two halves opened nothing */
  kp_sim_socket_free(attacker);
  relay_down(&sr);
  while (server->extra_count) kp_sim_socket_free(server->extra[--server->extra_count]);
  while (client->extra_count) kp_sim_socket_free(client->extra[--client->extra_count]);
  world_free(&w);
}

/* ---- Relay nodes that lie --------------------------------------------------------- */

/* A relay node that names a third party (`victim`) as the peer in every
 * envelope it passes: FROM_RELAY to the server, REPLY to the client. It
 * rewrites the datagram and sends the lie in its place. */
typedef struct liar_s {
  world_t *w;
  kp_addr_t victim;
  kp_addr_t server_pub;
  bool lie_to_server, lie_to_client;
  unsigned lies;
  /* What reached the victim's IP, by sender. */
  unsigned to_victim_from_server, to_victim_from_client, to_victim_bytes;
  kp_addr_t server_home, client_home;
} liar_t;

static kp_sim_socket_t *socket_of(world_t *w, const kp_addr_t *addr) {
  for (size_t i = 0; i < w->net.count; i++)
    if (kp_addr_eq(kp_sim_socket_addr(w->net.nodes[i]->sock), addr)) return w->net.nodes[i]->sock;
  return NULL;
}

static bool lie(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                size_t len) {
  liar_t *l = ctx;
  kp_dht_msg_t m;
  kp_hs_wire_t e;
  if (kp_dht_msg_decode(data, len, KP_AF_INET, &m) || !m.value ||
      kp_hs_wire_decode(m.value, m.value_len, &e) || !e.has_peer || kp_addr_eq(&e.peer, &l->victim))
    return false;
  bool to_server = e.mode == KP_HS_FROM_RELAY && l->lie_to_server;
  bool to_client = e.mode == KP_HS_REPLY && l->lie_to_client;
  kp_sim_socket_t *sock = socket_of(l->w, from);
  if ((!to_server && !to_client) || !sock) return false;
  uint8_t value[KP_DHT_MAX_VALUE], out[KP_DHT_MAX_DATAGRAM];
  size_t vlen, olen;
  e.peer = l->victim;
  KP_CHECK_OK(kp_hs_wire_encode(&e, value, sizeof(value), &vlen));
  m.value = value;
  m.value_len = vlen;
  m.padding = 0;
  KP_CHECK_OK(kp_dht_msg_encode_min(&m, len, out, sizeof(out), &olen));
  l->lies++;
  kp_sim_send(sock, to, out, olen);
  return true;
}

static void count_victim(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                         size_t len) {
  liar_t *l = ctx;
  (void)data;
  if (!kp_addr_same_ip(to, &l->victim)) return;
  l->to_victim_bytes += (unsigned)len;
  if (kp_addr_same_ip(from, &l->server_home)) l->to_victim_from_server++;
  if (kp_addr_same_ip(from, &l->client_home)) l->to_victim_from_client++;
}

/* A relay node names a third-party socket as the peer, to the server (in
 * every FROM_RELAY) and to the client (in every REPLY), for a pair that
 * needs the birthday strategy: each side sends that socket at most its
 * one hint, and nobody sprays its IP. */
void test_no_probes_to_unproven_address(void) {
  world_t w;
  world_init(&w, 62, 0, 0);
  sim_relay_t sr;
  relay_up(&w, &sr);
  peer_t *server = peer_new(&w, K_CONSISTENT, 50);
  peer_t *client = peer_new(&w, K_RANDOM, 60);
  kp_hp_set_relays(server->hp, kp_sim_socket_addr(sr.n->sock), 1);
  serve(&w, server);
  liar_t l = {.w = &w, .lie_to_server = true, .lie_to_client = true};
  kp_addr_parse(&l.victim, "198.51.100.66:6666");
  l.server_home = server->home, l.client_home = client->home;
  kp_sim_socket_t *victim = kp_sim_socket_new(w.sim, &l.victim, NULL, swallow, NULL);
  kp_sim_set_drop(w.sim, lie, &l);
  kp_sim_set_tap(w.sim, count_victim, &l);
  int st = connect_to(&w, client, server, NULL);
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 12 * SEC);
  kp_hp_stats_t ss, cs;
  kp_hp_stats(server->hp, &ss);
  kp_hp_stats(client->hp, &cs);
  printf("relay node lying about both peers: %s; the victim got %u datagram(s) from the server, "
         "%u from the client (%u bytes); birthdays started %" PRIu64 "/%" PRIu64
         ", claims refused %" PRIu64 "/%" PRIu64 "\n",
         st ? kp_err_name(st) : "connected", l.to_victim_from_server, l.to_victim_from_client,
         l.to_victim_bytes, ss.birthdays, cs.birthdays, ss.claims_refused, cs.claims_refused);
  KP_CHECK(l.lies >= 2);
  KP_CHECK(l.to_victim_from_server <= 1 && l.to_victim_from_client <= 1);
  KP_CHECK_EQ(ss.birthdays, 0);
  KP_CHECK_EQ(cs.birthdays, 0);
  KP_CHECK(ss.claims_refused > 0 && cs.claims_refused > 0);
  /* The user still gets a connection: through the relay. */
  KP_CHECK_MSG(st == 0 && client->res.strategy == KP_PUNCH_RELAYED, "%s", kp_err_name(st));
  kp_sim_set_drop(w.sim, NULL, NULL);
  kp_sim_set_tap(w.sim, NULL, NULL);
  kp_sim_socket_free(victim);
  relay_down(&sr);
  while (server->extra_count) kp_sim_socket_free(server->extra[--server->extra_count]);
  while (client->extra_count) kp_sim_socket_free(client->extra[--client->extra_count]);
  world_free(&w);
}

/* ---- An admitted client posing as a relay node ----------------------------------- */

typedef struct reply_seen_s {
  uint8_t data[KP_HS_MAX_DATA];
  size_t len;
  uint64_t session;
  bool got;
} reply_seen_t;

static void keep_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                       const kp_addr_t *from, uint64_t now) {
  reply_seen_t *r = arg;
  kp_hs_wire_t e;
  (void)req, (void)from, (void)now;
  if (status || !resp->value || kp_hs_wire_decode(resp->value, resp->value_len, &e)) return;
  memcpy(r->data, e.data, r->len = e.len);
  r->session = e.session;
  r->got = true;
}

static bool reply_in(void *ctx) {
  return ((reply_seen_t *)ctx)->got;
}

/* An admitted client sends its own hello and ten rounds straight to an
 * open server as FROM_RELAY envelopes, each claiming the peer is a
 * third-party socket and reporting that address as its own, and claiming
 * a random NAT (a consistent server would spray). The server is not told
 * that by a node storing its record: the socket gets one hint in all. */
void test_no_probes_for_posing_client(void) {
  world_t w;
  world_init(&w, 63, 0, 0);
  peer_t *server = peer_new(&w, K_OPEN, 50);
  peer_t *att = peer_new(&w, K_OPEN, 70);
  serve(&w, server);
  liar_t l = {.w = &w};
  kp_addr_parse(&l.victim, "198.51.100.66:6666");
  l.server_home = server->home, l.client_home = att->home;
  kp_sim_socket_t *victim = kp_sim_socket_new(w.sim, &l.victim, NULL, swallow, NULL);
  kp_sim_set_tap(w.sim, count_victim, &l);
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(server->kp.public_key, target);
  const kp_addr_t *srv = kp_sim_socket_addr(server->n->sock);

  kp_noise_t st;
  kp_hs_hello_t hello = {.version = KP_HS_VERSION,
                         .nat = KP_NAT_RANDOM,
                         .conn_id = 77,
                         .ciphers = 2,
                         .timestamp = kp_sim_now(w.sim) + 1};
  memcpy(hello.client_key, att->kp.public_key, 32);
  hello.addrs[0] = l.victim;
  hello.addr_count = 1;
  uint8_t payload[KP_HS_PAYLOAD_MAX], msg[KP_HS_MAX_DATA], val[KP_DHT_MAX_VALUE], e[32] = {9};
  size_t plen, mlen, vlen, sent_bytes = 0;
  KP_CHECK_OK(kp_hs_hello_encode(&hello, payload, sizeof(payload), &plen));
  KP_CHECK_OK(
      kp_noise_init_initiator(&st, &att->kp, server->kp.public_key, (const uint8_t *)PROLOGUE, 21));
  KP_CHECK_OK(kp_noise_write_msg1(&st, e, payload, plen, msg, sizeof(msg), &mlen));
  kp_hs_wire_t env = {
      .mode = KP_HS_FROM_RELAY, .data = msg, .len = mlen, .has_peer = true, .peer = l.victim};
  KP_CHECK_OK(kp_hs_wire_encode(&env, val, sizeof(val), &vlen));
  reply_seen_t rep = {0};
  KP_CHECK_OK(kp_dht_request(att->n->dht, srv, KP_DHT_CMD_PEER_HANDSHAKE, target, val, vlen, NULL,
                             keep_reply, &rep, kp_sim_now(w.sim), NULL));
  sent_bytes += vlen;
  kp_sim_dht_node_kick(att->n);
  KP_CHECK(kp_sim_run_while(w.sim, kp_sim_now(w.sim) + 5 * SEC, reply_in, &rep));
  KP_CHECK_OK(kp_noise_read_msg2(&st, rep.data, rep.len, payload, sizeof(payload), &plen));
  kp_noise_split_t split;
  kp_noise_split(&st, &split);
  uint8_t hp_key[32];
  kp_hs_derive(split.path, "kadpunch/holepunch/v2", hp_key);
  for (uint32_t n = 1; n <= 10; n++) {
    kp_hp_round_t r = {.round = n, .nat = KP_NAT_RANDOM, .punch = true, .addr_count = 1};
    r.addrs[0] = l.victim;
    uint8_t sealed[256];
    size_t slen;
    KP_CHECK_OK(kp_hp_round_seal(&r, hp_key, true, sealed, sizeof(sealed), &slen));
    env = (kp_hs_wire_t){.mode = KP_HS_FROM_RELAY,
                         .data = sealed,
                         .len = slen,
                         .has_peer = true,
                         .peer = l.victim,
                         .session = rep.session};
    KP_CHECK_OK(kp_hs_wire_encode(&env, val, sizeof(val), &vlen));
    KP_CHECK_OK(kp_dht_request(att->n->dht, srv, KP_DHT_CMD_PEER_HOLEPUNCH, target, val, vlen, NULL,
                               ignore_reply, NULL, kp_sim_now(w.sim), NULL));
    sent_bytes += vlen;
    kp_sim_dht_node_kick(att->n);
    kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 200);
  }
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 5 * SEC);
  kp_hp_server_stats_t ss;
  kp_hp_server_stats(server->server, &ss);
  printf("a client posing as a relay node: %zu bytes of envelopes sent, the victim got %u "
         "datagram(s) (%u bytes) from the server\n",
         sent_bytes, l.to_victim_from_server, l.to_victim_bytes);
  KP_CHECK_EQ(ss.accepted, 1);
  KP_CHECK(l.to_victim_from_server <= 1);
  KP_CHECK(l.to_victim_bytes <= KP_PROBE_LEN);
  kp_noise_clear(&st);
  sodium_memzero(&split, sizeof(split));
  kp_sim_set_tap(w.sim, NULL, NULL);
  kp_sim_socket_free(victim);
  world_free(&w);
}

/* ---- A relay node sitting on the path --------------------------------------------- */

/* The attacker's socket: relays probes between the two peers, as a NAT
 * would, so each would see the other at the attacker's address. */
typedef struct mitm_s {
  kp_sim_socket_t *sock;
  kp_addr_t client, server;
  unsigned forwarded;
} mitm_t;

static void mitm_recv(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now) {
  mitm_t *m = ctx;
  (void)sock, (void)now;
  if (!kp_probe_is_packet(data, len)) return;
  m->forwarded++;
  kp_sim_send(m->sock, kp_addr_same_ip(from, &m->server) ? &m->client : &m->server, data, len);
}

/* A relay node names its own socket as the server in every REPLY, and that
 * socket passes probes both ways (the server is open, so they reach it).
 * The answers from there say the server saw the probes come from the
 * attacker: nothing there is proven, and the client ends on the server's
 * real address. */
void test_client_ignores_forged_reply_peer(void) {
  world_t w;
  world_init(&w, 64, 0, 0);
  peer_t *server = peer_new(&w, K_OPEN, 50);
  peer_t *client = peer_new(&w, K_CONSISTENT, 60);
  serve(&w, server);
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 3 * SEC);
  mitm_t m = {.server = kp_dht_nat(server->n->dht)->public_addr,
              .client = kp_dht_nat(client->n->dht)->public_addr};
  liar_t l = {.w = &w, .lie_to_client = true};
  kp_addr_parse(&l.victim, "198.51.100.77:7777");
  m.sock = kp_sim_socket_new(w.sim, &l.victim, NULL, mitm_recv, &m);
  kp_sim_set_drop(w.sim, lie, &l);
  uint64_t took;
  KP_CHECK_OK(connect_to(&w, client, server, &took));
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 2 * SEC);
  kp_hp_stats_t cs;
  kp_hp_stats(client->hp, &cs);
  char path[KP_ADDR_STRLEN];
  printf("REPLY names the attacker, who forwards probes: path %s after %" PRIu64
         " ms, %u forwarded, %" PRIu64 " proofs refused\n",
         kp_addr_format(&client->res.path, path, sizeof(path)), took, m.forwarded,
         cs.proofs_refused);
  KP_CHECK(l.lies >= 1);
  KP_CHECK(!kp_addr_same_ip(&client->res.path, &l.victim));
  KP_CHECK(kp_addr_eq(&client->res.path, &m.server));
  KP_CHECK_EQ(server->connections, 1);
  KP_CHECK(!kp_addr_same_ip(&server->conn.path, &l.victim));
  KP_CHECK(m.forwarded >= 2 && cs.proofs_refused > 0);
  kp_sim_set_drop(w.sim, NULL, NULL);
  kp_sim_socket_free(m.sock);
  world_free(&w);
}

/* ---- Admission ---------------------------------------------------------------------- */

typedef struct junk_s {
  kp_sim_t *sim;
  kp_sim_socket_t *sock;
  kp_addr_t server;
  uint8_t target[KP_ID_LEN];
  unsigned sent;
  uint64_t until;
  uint32_t x;
} junk_t;

/* 20 undecryptable hellos every 100 ms, each claiming another client IP,
 * straight from one host: 200 a second, from one sender. */
static void junk_burst(void *ctx, uint64_t now) {
  junk_t *j = ctx;
  for (int i = 0; i < 20; i++) {
    uint8_t noise[80], val[200], out[KP_DHT_MAX_DATAGRAM];
    size_t vlen, olen;
    memset(noise, 0x5a, sizeof(noise));
    j->x = j->x * 1664525u + 1013904223u;
    kp_hs_wire_t e = {
        .mode = KP_HS_FROM_RELAY, .data = noise, .len = sizeof(noise), .has_peer = true};
    kp_addr_set_v4(&e.peer, 0x0b000000u | (j->x >> 8), 4000);
    KP_CHECK_OK(kp_hs_wire_encode(&e, val, sizeof(val), &vlen));
    kp_dht_msg_t m = {.type = KP_DHT_REQUEST,
                      .tid = (uint16_t)j->x,
                      .command = KP_DHT_CMD_PEER_HANDSHAKE,
                      .has_target = true,
                      .value = val,
                      .value_len = vlen,
                      .to = j->server};
    memcpy(m.target, j->target, KP_ID_LEN);
    KP_CHECK_OK(kp_dht_msg_encode(&m, out, sizeof(out), &olen));
    kp_sim_send(j->sock, &j->server, out, olen);
    j->sent++;
  }
  if (now + 100 < j->until) kp_sim_timer(j->sim, now + 100, junk_burst, j);
}

/* One host sends junk hellos that claim a new client IP each, at five
 * times the server's whole budget. Admission charges that host (the sender
 * the server sees), so real clients, coming through real relay nodes, get
 * in at once, never told BUSY, the whole time. */
void test_admission_charges_sender(void) {
  world_t w;
  world_init(&w, 65, 0, 0);
  kp_hp_config_t cfg;
  kp_hp_config_defaults(&cfg);
  cfg.server_rate = 40;
  peer_t *server = peer_new_cfg(&w, K_OPEN, 50, &cfg);
  serve(&w, server);
  enum { CLIENTS = 6 };
  peer_t *clients[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) clients[i] = peer_new(&w, K_CONSISTENT, (uint8_t)(60 + i));
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 3 * SEC);
  junk_t j = {.sim = w.sim, .server = *kp_sim_socket_addr(server->n->sock), .x = 7};
  kp_target_from_key(server->kp.public_key, j.target);
  kp_addr_t flood;
  kp_addr_parse(&flood, "198.51.100.99:9999");
  j.sock = kp_sim_socket_new(w.sim, &flood, NULL, swallow, NULL);
  j.until = kp_sim_now(w.sim) + 12 * SEC;
  junk_burst(&j, kp_sim_now(w.sim));
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + SEC); /* the flood is on */
  for (int i = 0; i < CLIENTS; i++) {
    uint64_t took;
    int st = connect_to(&w, clients[i], server, &took);
    KP_CHECK_MSG(st == 0, "client %d: %s", i, kp_err_name(st));
    /* Told BUSY, a client waits 250 ms before its next hello. */
    KP_CHECK_MSG(clients[i]->res.handshake_ms < 250, "client %d: handshake %" PRIu64 " ms", i,
                 clients[i]->res.handshake_ms);
    kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 1200);
  }
  kp_hp_server_stats_t ss;
  kp_hp_server_stats(server->server, &ss);
  printf("flood: %u junk hellos from one host; server busy %" PRIu64 ", bad %" PRIu64
         ", accepted %" PRIu64 "\n",
         j.sent, ss.busy, ss.bad, ss.accepted);
  KP_CHECK_EQ(ss.accepted, CLIENTS);
  KP_CHECK(ss.busy >= j.sent / 2); /* the flood was charged to its sender */
  kp_sim_run_until(w.sim, j.until + SEC);
  kp_sim_socket_free(j.sock);
  world_free(&w);
}

/* ---- What one datagram buys ---------------------------------------------------------- */

typedef struct ledger_s {
  kp_addr_t client, server, relay_node;
  size_t hs_req, hs_fwd, hs_resp, hs_reply; /* PEER_HANDSHAKE at the relay node */
  size_t rd_req, rd_fwd, rd_resp, rd_reply; /* PEER_HOLEPUNCH */
  size_t probes_to_unproven;
} ledger_t;

static void ledger(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                   size_t len) {
  ledger_t *l = ctx;
  kp_dht_msg_t m;
  if (kp_dht_msg_decode(data, len, KP_AF_INET, &m)) return;
  bool hs = m.command == KP_DHT_CMD_PEER_HANDSHAKE, rd = m.command == KP_DHT_CMD_PEER_HOLEPUNCH;
  if (!hs && !rd) return;
  bool from_client = kp_addr_eq(from, &l->client), to_client = kp_addr_eq(to, &l->client);
  if (from_client && !l->relay_node.family) l->relay_node = *to;
  bool from_relay = kp_addr_eq(from, &l->relay_node), to_relay = kp_addr_eq(to, &l->relay_node);
  size_t *slot = NULL;
  if (m.type == KP_DHT_REQUEST && from_client && to_relay) slot = hs ? &l->hs_req : &l->rd_req;
  if (m.type == KP_DHT_REQUEST && from_relay) slot = hs ? &l->hs_fwd : &l->rd_fwd;
  if (m.type == KP_DHT_RESPONSE && to_relay) slot = hs ? &l->hs_resp : &l->rd_resp;
  if (m.type == KP_DHT_RESPONSE && from_relay && to_client) slot = hs ? &l->hs_reply : &l->rd_reply;
  if (slot && !*slot) *slot = len;
}

/* The no-amplification rule, measured on a real connect, per destination:
 * nobody gets more bytes out of a relay node or a server than the message
 * that made it send them. The relay node's forward is no larger than the
 * client's request, its reply no larger than that request either, and the
 * server's answer no larger than the forward it answers. */
void test_no_amplification(void) {
  world_t w;
  world_init(&w, 66, 0, 0);
  peer_t *server = peer_new(&w, K_OPEN, 50);
  peer_t *client = peer_new(&w, K_OPEN, 60);
  serve(&w, server);
  ledger_t l = {.client = client->home, .server = server->home};
  kp_sim_set_tap(w.sim, ledger, &l);
  KP_CHECK_OK(connect_to(&w, client, server, NULL));
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + SEC);
  kp_sim_set_tap(w.sim, NULL, NULL);
  printf("at the relay node, bytes in -> bytes out:\n"
         "  handshake: request %zu + server's answer %zu -> forward %zu + reply %zu\n"
         "  round:     request %zu + server's answer %zu -> forward %zu + reply %zu\n",
         l.hs_req, l.hs_resp, l.hs_fwd, l.hs_reply, l.rd_req, l.rd_resp, l.rd_fwd, l.rd_reply);
  KP_CHECK(l.hs_req && l.hs_fwd && l.hs_resp && l.hs_reply);
  KP_CHECK(l.rd_req && l.rd_fwd && l.rd_resp && l.rd_reply);
  KP_CHECK(l.hs_reply <= l.hs_req && l.rd_reply <= l.rd_req); /* to the client */
  KP_CHECK(l.hs_fwd <= l.hs_req && l.rd_fwd <= l.rd_req);     /* to the server */
  KP_CHECK(l.hs_resp <= l.hs_fwd && l.rd_resp <= l.rd_fwd);   /* the server's answer */
  world_free(&w);
}

/* ---- Privacy ------------------------------------------------------------------------------ */

static kp_hs_hello_t seen_hello;

static kp_hs_refusal_t keep_hello(void *ctx, const kp_hs_hello_t *hello, const kp_addr_t *client) {
  (void)ctx, (void)client;
  seen_hello = *hello;
  return KP_HS_OK;
}

/* A client that asked for the relay to hide its address tells the server
 * none of its addresses: not its public one, not its LAN's, not in the
 * hello nor in a round. It still connects, through the relay. */
static void on_announced_once(void *arg, int status, unsigned stored) {
  peer_t *p = arg;
  if (!status) p->stored = stored;
}

static bool stored(void *ctx) {
  return ((peer_t *)ctx)->stored > 0;
}

void test_relay_only_hides_addresses(void) {
  world_t w;
  world_init(&w, 67, 0, 0);
  sim_relay_t sr;
  relay_up(&w, &sr);
  kp_hp_config_t cfg;
  kp_hp_config_defaults(&cfg);
  cfg.relay_only = true;
  peer_t *server = peer_new(&w, K_CONSISTENT, 50);
  peer_t *client = peer_new_cfg(&w, K_CONSISTENT, 60, &cfg);
  kp_addr_t lan;
  kp_addr_parse(&lan, "192.168.60.2:5000");
  kp_hp_set_lan(client->hp, &lan, 1);
  kp_hp_set_relays(server->hp, kp_sim_socket_addr(sr.n->sock), 1);
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 3 * SEC);
  KP_CHECK_OK(
      kp_hp_listen(server->hp, &server->kp, keep_hello, on_connection, server, &server->server));
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(server->kp.public_key, target);
  KP_CHECK_OK(kp_dht_swarm_announce(server->n->swarm, target, &server->kp, NULL, 0,
                                    on_announced_once, server, kp_sim_now(w.sim),
                                    &server->announce));
  kp_sim_dht_node_kick(server->n);
  KP_CHECK(kp_sim_run_while(w.sim, kp_sim_now(w.sim) + 30 * SEC, stored, server));
  KP_CHECK(kp_dht_nat(client->n->dht)->has_public); /* it has addresses to hide */
  KP_CHECK_OK(connect_to(&w, client, server, NULL));
  kp_sim_run_until(w.sim, kp_sim_now(w.sim) + 2 * SEC);
  KP_CHECK_EQ(seen_hello.addr_count, 0);
  KP_CHECK_EQ(client->res.strategy, KP_PUNCH_RELAYED);
  KP_CHECK_EQ(server->conn.peer_addr_count, 0); /* no round told it either */
  relay_down(&sr);
  while (server->extra_count) kp_sim_socket_free(server->extra[--server->extra_count]);
  while (client->extra_count) kp_sim_socket_free(client->extra[--client->extra_count]);
  world_free(&w);
}
