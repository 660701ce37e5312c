/* SPDX-License-Identifier: MIT */
/* Connections that lose their path (holepunch/hp_link.c), on the
 * simulated internet: a client whose NAT forgot its mappings resumes
 * through the server's relay nodes and both punch anew; a relayed copy of
 * a resume round, or a forged one, moves nothing and makes the server send
 * nothing to whoever sent it; a server that no longer holds the connection
 * costs the client a bounded trickle of rounds until its transport gives
 * up (tests/unit/test_stream_paths.c has that end). */
#include <string.h>

#include "dht/dht_msg.h"
#include "holepunch/hs_msg.h"
#include "tests/harness/test.h"
#include "tests/unit/hp_world.h"

typedef struct moves_s {
  kp_sim_t *sim;
  unsigned count;
  kp_hp_move_t last;
  uint64_t at;
} moves_t;

static void on_moved(void *ctx, const kp_hp_move_t *m) {
  moves_t *mv = ctx;
  mv->count++;
  mv->last = *m;
  mv->at = kp_sim_now(mv->sim);
}

/* Resume requests on the wire: how many the client sent, and a copy of
 * the first one with where it went. */
typedef struct resume_tap_s {
  kp_addr_t client;
  unsigned sent;
  uint8_t copy[1400];
  size_t copy_len;
  kp_addr_t copy_to;
  kp_addr_t attacker;
  unsigned to_attacker; /* datagrams anyone sent the attacker, replies aside */
} resume_tap_t;

static void tap(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                size_t len) {
  resume_tap_t *t = ctx;
  kp_dht_msg_t m;
  bool dht = !kp_dht_msg_decode(data, len, KP_AF_INET, &m);
  if (t->attacker.family && kp_addr_eq(to, &t->attacker) && (!dht || m.type == KP_DHT_REQUEST))
    t->to_attacker++;
  if (!dht || m.type != KP_DHT_REQUEST || m.command != KP_DHT_CMD_PEER_RESUME) return;
  if (!kp_addr_same_ip(from, &t->client) || len > sizeof(t->copy)) return;
  if (t->sent++) return;
  memcpy(t->copy, data, len);
  t->copy_len = len;
  t->copy_to = *to;
}

static void swallow(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                    size_t len, uint64_t now) {
  (void)ctx, (void)sock, (void)from, (void)data, (void)len, (void)now;
}

typedef struct pair_links_s {
  world_t w;
  peer_t *server, *client;
  kp_hp_link_t *cl, *sl;
  moves_t cm, sm;
} pair_links_t;

/* A server behind a consistent NAT, a client behind a NAT of the kind
 * given, connected directly, each side with its link; the handshake's
 * lingering state gone. */
static void links_up(pair_links_t *p, uint64_t seed, kind_t client_kind) {
  world_init(&p->w, seed, 0, 0);
  p->server = peer_new(&p->w, K_CONSISTENT, 50);
  p->client = peer_new(&p->w, client_kind, 60);
  serve(&p->w, p->server);
  KP_CHECK_OK(connect_to(&p->w, p->client, p->server, NULL));
  KP_CHECK(p->client->res.strategy != KP_PUNCH_RELAYED);
  kp_sim_run_until(p->w.sim, kp_sim_now(p->w.sim) + 6 * SEC);
  p->cm = (moves_t){.sim = p->w.sim};
  p->sm = (moves_t){.sim = p->w.sim};
  kp_hp_link_cb_t ccb = {.moved = on_moved, .ctx = &p->cm},
                  scb = {.moved = on_moved, .ctx = &p->sm};
  KP_CHECK_OK(kp_hp_link_start(p->client->hp, &p->client->res, &ccb, kp_sim_now(p->w.sim), &p->cl));
  KP_CHECK_OK(
      kp_hp_link_start(p->server->hp, &p->server->conn, &scb, kp_sim_now(p->w.sim), &p->sl));
}

static void links_down(pair_links_t *p) {
  kp_hp_link_stop(p->cl);
  kp_hp_link_stop(p->sl);
  /* The glue's part: the socket a connection left is closed. */
  peer_t *c = p->client;
  for (unsigned i = 0; i < c->extra_count;) {
    if (c->extra[i] != p->cm.last.sock && c->extra[i] != p->client->res.socket) {
      i++;
      continue;
    }
    if (c->extra[i] == p->cm.last.sock && c->extra_count == 1) break;
    kp_sim_socket_free(c->extra[i]);
    c->extra[i] = c->extra[--c->extra_count];
  }
  world_free(&p->w);
}

/* Each socket the client's connection left, closed as the node closes
 * it (none the link or its last move holds). */
static void close_left_sockets(pair_links_t *p) {
  for (unsigned i = 0; i < p->client->extra_count;) {
    void *s = p->client->extra[i];
    if (s == p->cm.last.sock || kp_hp_link_holds(p->cl, s)) {
      i++;
      continue;
    }
    peer_close_extra(p->client, s);
  }
}

static bool both_moved(void *ctx) {
  pair_links_t *p = ctx;
  return p->cm.count && p->sm.count;
}

/* The client's NAT (random: a new port per destination) forgets every
 * mapping, those of the socket its birthday punch won included: its old
 * address is dead. Its transport says so; the link resumes through the
 * server's relay nodes and both punch again (the birthday strategy, the
 * client's half from the socket it is on). Both sides move to what they
 * prove: the server to the client's new mapping, the client to the server
 * from a new socket. */
void test_resume_after_rebind(void) {
  pair_links_t p;
  links_up(&p, 81, K_RANDOM);
  KP_CHECK_EQ(p.client->res.strategy, KP_PUNCH_BIRTHDAY);
  kp_addr_t old_client = p.server->conn.path;
  kp_sim_nat_flush(p.client->nat);
  uint64_t died = kp_sim_now(p.w.sim);
  kp_hp_link_path_state(p.cl, false, died);
  kp_sim_dht_node_kick(p.client->n);
  KP_CHECK(kp_sim_run_while(p.w.sim, died + 10 * SEC, both_moved, &p));
  printf("resumed: client moved after %llu ms, server after %llu ms\n",
         (unsigned long long)(p.cm.at - died), (unsigned long long)(p.sm.at - died));
  KP_CHECK(p.cm.at - died <= 3 * SEC && p.sm.at - died <= 3 * SEC);
  KP_CHECK(p.cm.last.why == KP_HP_MOVE_RESUMED && p.cm.last.direct);
  KP_CHECK(p.sm.last.why == KP_HP_MOVE_RESUMED && p.sm.last.direct);
  KP_CHECK(kp_addr_eq(&p.cm.last.to, &p.client->res.path)); /* the server did not move */
  char a[KP_ADDR_STRLEN], b[KP_ADDR_STRLEN];
  printf("server: client was at %s, now at %s\n", kp_addr_format(&old_client, a, sizeof(a)),
         kp_addr_format(&p.sm.last.to, b, sizeof(b)));
  KP_CHECK(kp_addr_same_ip(&p.sm.last.to, &old_client));
  KP_CHECK(p.sm.last.to.port != old_client.port); /* its new mapping */
  KP_CHECK(p.cm.last.sock && p.cm.last.sock != p.client->res.socket);
  KP_CHECK(!p.sm.last.sock);
  kp_hp_stats_t cs;
  kp_hp_stats(p.client->hp, &cs);
  KP_CHECK_EQ(cs.resumes, 1);
  KP_CHECK_EQ(cs.resumed, 1);
  /* Nothing more moves: both are where the proofs put them. */
  kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 20 * SEC);
  KP_CHECK_EQ(p.cm.count, 1);
  KP_CHECK_EQ(p.sm.count, 1);
  links_down(&p);
}

static bool drop_node(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                      size_t len) {
  const kp_addr_t *gone = ctx;
  (void)data, (void)len;
  return kp_addr_eq(from, gone) || kp_addr_eq(to, gone);
}

/* The relay node the handshake went through (the only one the client
 * knows for the server) is gone when the path dies: its rounds there go
 * unanswered, so the client looks the server up again and resumes
 * through the nodes that store its record. */
void test_resume_without_handshake_node(void) {
  pair_links_t p;
  links_up(&p, 84, K_RANDOM);
  kp_addr_t gone = p.client->res.relay;
  KP_CHECK(gone.family);
  kp_sim_set_drop(p.w.sim, drop_node, &gone);
  kp_sim_nat_flush(p.client->nat);
  uint64_t died = kp_sim_now(p.w.sim);
  kp_hp_link_path_state(p.cl, false, died);
  kp_sim_dht_node_kick(p.client->n);
  KP_CHECK(kp_sim_run_while(p.w.sim, died + 15 * SEC, both_moved, &p));
  printf("resumed without %s's node: client moved after %llu ms\n", "the handshake",
         (unsigned long long)(p.cm.at - died));
  KP_CHECK(p.cm.last.why == KP_HP_MOVE_RESUMED && p.cm.last.direct);
  kp_sim_set_drop(p.w.sim, NULL, NULL);
  links_down(&p);
}

/* The glue closes the socket a connection left (the node does, once no
 * connection or link holds it). The link keeps what it proved from there
 * among its candidates; resuming again, it must not send from it (in the
 * node that was a freed handle: a crash four upgrade attempts after a
 * relay failover). The socket is forgotten, its slots reused; every send
 * below is checked against the open sockets (hp_world.c). */
void test_closed_socket_forgotten(void) {
  pair_links_t p;
  links_up(&p, 83, K_RANDOM);
  KP_CHECK_EQ(p.client->res.strategy, KP_PUNCH_BIRTHDAY);
  void *first = p.client->res.socket;
  for (unsigned round = 1; round <= 3; round++) {
    kp_sim_nat_flush(p.client->nat);
    kp_hp_link_path_state(p.cl, false, kp_sim_now(p.w.sim));
    kp_sim_dht_node_kick(p.client->n);
    unsigned moves = p.cm.count;
    uint64_t died = kp_sim_now(p.w.sim);
    while (p.cm.count == moves && kp_sim_now(p.w.sim) < died + 10 * SEC)
      kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 100);
    KP_CHECK_EQ(p.cm.count, moves + 1);
    KP_CHECK(p.cm.last.direct && p.cm.last.sock);
    close_left_sockets(&p);
    KP_CHECK(p.client->extra_count == 1);
    /* Long enough for the hints and keepalives of every round. */
    kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 20 * SEC);
  }
  KP_CHECK(p.cm.last.sock != first);
  /* The test owns the last one (links_down frees what res.socket and the
   * last move name). */
  p.client->res.socket = p.cm.last.sock;
  links_down(&p);
}

/* Someone on the path (a relay node saw the rounds go by) sends a copy of
 * a resume round from elsewhere, later; another sends one with its sealed
 * part altered. The server opens neither as new: nothing moves, and the
 * sender gets no probe (no address of its choosing is hinted). */
void test_resume_rejects_replay_and_forgery(void) {
  pair_links_t p;
  links_up(&p, 82, K_CONSISTENT);
  resume_tap_t t = {.client = p.client->home};
  t.client = *kp_sim_socket_addr(p.client->n->sock);
  kp_sim_set_tap(p.w.sim, tap, &t);
  kp_sim_nat_flush(p.client->nat);
  uint64_t died = kp_sim_now(p.w.sim);
  kp_hp_link_path_state(p.cl, false, died);
  kp_sim_dht_node_kick(p.client->n);
  KP_CHECK(kp_sim_run_while(p.w.sim, died + 10 * SEC, both_moved, &p));
  kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 2 * SEC);
  KP_CHECK(t.sent >= 1 && t.copy_len);
  /* A second time, so the copy is of a round older than the newest (a
   * copy of the newest gets the same sealed answer again, as a retry
   * does, and nothing else). */
  kp_sim_nat_flush(p.client->nat);
  kp_hp_link_path_state(p.cl, false, kp_sim_now(p.w.sim));
  kp_sim_dht_node_kick(p.client->n);
  unsigned moves = p.cm.count;
  kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 5 * SEC);
  KP_CHECK(p.cm.count == moves + 1);
  kp_hp_stats_t before;
  kp_hp_stats(p.server->hp, &before);

  KP_CHECK_OK(kp_addr_parse(&t.attacker, "198.51.100.66:6666"));
  kp_sim_socket_t *attacker = kp_sim_socket_new(p.w.sim, &t.attacker, NULL, swallow, NULL);
  /* The copy, as it was. */
  kp_sim_send(attacker, &t.copy_to, t.copy, t.copy_len);
  kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 3 * SEC);

  /* The copy, its sealed round altered. */
  kp_dht_msg_t m;
  kp_hs_wire_t wire;
  KP_CHECK_OK(kp_dht_msg_decode(t.copy, t.copy_len, KP_AF_INET, &m));
  KP_CHECK_OK(kp_hs_wire_decode(m.value, m.value_len, &wire));
  uint8_t sealed[KP_HS_MAX_DATA], value[1024], forged[1400];
  memcpy(sealed, wire.data, wire.len);
  sealed[wire.len / 2] ^= 0x40;
  wire.data = sealed;
  size_t vlen, flen;
  KP_CHECK_OK(kp_hs_wire_encode(&wire, value, sizeof(value), &vlen));
  m.value = value;
  m.value_len = vlen;
  m.tid ^= 0x5a5a;
  KP_CHECK_OK(kp_dht_msg_encode(&m, forged, sizeof(forged), &flen));
  kp_sim_send(attacker, &t.copy_to, forged, flen);
  kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 3 * SEC);

  kp_hp_stats_t after;
  kp_hp_stats(p.server->hp, &after);
  printf("resume rounds refused: %llu (a copy and a forgery)\n",
         (unsigned long long)(after.resume_rounds_bad - before.resume_rounds_bad));
  KP_CHECK_EQ(after.resume_rounds_bad - before.resume_rounds_bad, 2);
  KP_CHECK_EQ(p.cm.count, 2);
  KP_CHECK_EQ(p.sm.count, 2);
  KP_CHECK_EQ(t.to_attacker, 0);
  kp_sim_set_tap(p.w.sim, NULL, NULL);
  kp_sim_socket_free(attacker);
  links_down(&p);
}

/* The server no longer holds the connection (its grace ran out, or it
 * restarted): its relay nodes answer the client's rounds with NO_SESSION,
 * which a relay node could forge, so it ends nothing by itself; the client
 * keeps asking, ever more sparsely, and never moves. What ends the
 * connection is its transport's resume grace (a clean KP_EPEERDEAD). */
void test_resume_after_grace(void) {
  pair_links_t p;
  links_up(&p, 83, K_CONSISTENT);
  resume_tap_t t = {0};
  t.client = *kp_sim_socket_addr(p.client->n->sock);
  kp_sim_set_tap(p.w.sim, tap, &t);
  kp_hp_link_stop(p.sl); /* the server let it go */
  p.sl = NULL;
  kp_sim_nat_flush(p.client->nat);
  uint64_t died = kp_sim_now(p.w.sim);
  kp_hp_link_path_state(p.cl, false, died);
  kp_sim_dht_node_kick(p.client->n);
  kp_sim_run_until(p.w.sim, died + 60 * SEC);
  unsigned first_minute = t.sent;
  printf("resume rounds in the minute after the path died: %u\n", first_minute);
  KP_CHECK(first_minute >= 5);
  KP_CHECK(first_minute <= 30); /* 4 a second for 3 s, then at most one per 5 s */
  kp_sim_run_until(p.w.sim, died + 120 * SEC);
  KP_CHECK(t.sent - first_minute <= 13);
  KP_CHECK_EQ(p.cm.count, 0);
  kp_hp_stats_t cs;
  kp_hp_stats(p.client->hp, &cs);
  KP_CHECK_EQ(cs.resumed, 0);
  kp_sim_set_tap(p.w.sim, NULL, NULL);
  links_down(&p);
}

/* What the observer socket heard last: where a datagram came from. */
static void observe(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                    size_t len, uint64_t now) {
  (void)sock, (void)data, (void)len, (void)now;
  *(kp_addr_t *)ctx = *from;
}

typedef struct victim_tap_s {
  kp_addr_t victim;
  unsigned to_victim;
} victim_tap_t;

static void tap_victim(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                       size_t len) {
  victim_tap_t *t = ctx;
  (void)from, (void)data, (void)len;
  if (kp_addr_eq(to, &t->victim)) t->to_victim++;
}

/* A peer's socket of its own, and its public address as an observer
 * sees it (as the node's glue learns it: from where a datagram to someone
 * else came from). */
static void *own_socket_of(pair_links_t *p, peer_t *peer, kp_addr_t *seen) {
  kp_addr_t observer_addr;
  memset(seen, 0, sizeof(*seen));
  KP_CHECK_OK(kp_addr_parse(&observer_addr, "198.51.100.200:3478"));
  kp_sim_socket_t *observer = kp_sim_socket_new(p->w.sim, &observer_addr, NULL, observe, seen);
  void *own = peer_open_extra(peer);
  KP_CHECK(own != NULL);
  kp_sim_send(own, &observer_addr, (const uint8_t *)"?", 1);
  kp_sim_run_until(p->w.sim, kp_sim_now(p->w.sim) + 100);
  KP_CHECK(seen->family != 0);
  kp_sim_socket_free(observer);
  return own;
}

static void *own_socket(pair_links_t *p, kp_addr_t *seen) {
  return own_socket_of(p, p->client, seen);
}

/* A connection through a proxy goes direct (hp_link.c, "through a proxy"):
 * the sim has no proxy, but the link does not care what carries the kept
 * path, so the client's direct path stands in for it. The client gets a
 * socket of its own and that socket's public address (as the node's glue
 * learns it: from where a datagram to someone else came from); its punch
 * requests name it, the server fires there, and both move to the path
 * between the client's own socket and the server, as an upgrade. Before
 * that, a punch request with a valid MAC that names a victim but comes
 * from anywhere but the connection's path makes the server send the victim
 * nothing. */
void test_proxied_link_goes_direct(void) {
  pair_links_t p;
  links_up(&p, 4242, K_CONSISTENT);
  kp_sim_t *sim = p.w.sim;
  victim_tap_t t;
  KP_CHECK_OK(kp_addr_parse(&t.victim, "198.51.100.77:7777"));
  t.to_victim = 0;
  kp_sim_set_tap(sim, tap_victim, &t);
  kp_addr_t attacker_addr;
  KP_CHECK_OK(kp_addr_parse(&attacker_addr, "198.51.100.66:6666"));
  kp_sim_socket_t *attacker = kp_sim_socket_new(sim, &attacker_addr, NULL, swallow, NULL);
  kp_probe_t forged = {.flags = KP_PROBE_FROM_CLIENT | KP_PROBE_PUNCH | KP_PROBE_OWN_ADDR,
                       .conn_id = p.server->conn.local_id,
                       .has_observed = true,
                       .observed = t.victim};
  uint8_t pkt[KP_PROBE_LEN];
  kp_probe_encode(&forged, p.client->res.probe_key, pkt);
  /* The server's NAT lets the attacker in (the worst case). */
  kp_sim_nat_set_filter(p.server->nat, KP_SIM_FILTER_OPEN);
  kp_hp_stats_t before, after;
  kp_hp_stats(p.server->hp, &before);
  for (int i = 0; i < 5; i++) kp_sim_send(attacker, &p.client->res.path, pkt, sizeof(pkt));
  kp_sim_run_until(sim, kp_sim_now(sim) + 3 * SEC);
  kp_hp_stats(p.server->hp, &after);
  KP_CHECK_EQ(after.probes_ok - before.probes_ok, 5); /* they did arrive, authenticated */
  KP_CHECK_EQ(t.to_victim, 0);
  KP_CHECK_EQ(p.sm.count, 0);
  kp_sim_nat_set_filter(p.server->nat, KP_SIM_FILTER_PORT);

  kp_addr_t seen;
  void *own = own_socket(&p, &seen);
  uint64_t t0 = kp_sim_now(sim);
  kp_hp_set_own_socket(p.client->hp, own, &seen, false, t0);
  kp_sim_dht_node_kick(p.client->n); /* the glue re-arms its timer */
  KP_CHECK(kp_sim_run_while(sim, t0 + 10 * SEC, both_moved, &p));
  printf("proxied link: client moved after %llu ms, server after %llu ms\n",
         (unsigned long long)(p.cm.at - t0), (unsigned long long)(p.sm.at - t0));
  KP_CHECK_EQ(p.cm.last.why, KP_HP_MOVE_UPGRADE);
  KP_CHECK(p.cm.last.direct);
  KP_CHECK(p.cm.last.sock == own);
  KP_CHECK(kp_addr_eq(&p.cm.last.to, &p.client->res.path));
  KP_CHECK_EQ(p.sm.last.why, KP_HP_MOVE_UPGRADE);
  KP_CHECK(p.sm.last.direct);
  KP_CHECK(kp_addr_eq(&p.sm.last.to, &seen));
  KP_CHECK_EQ(t.to_victim, 0);
  kp_sim_set_tap(sim, NULL, NULL);
  kp_sim_socket_free(attacker);
  peer_close_extra(p.client, own); /* as the node's glue does: the paths forget it */
  p.cm.last.sock = NULL;
  links_down(&p);
}

/* The proxied side behind a NAT that maps each destination anew: the
 * node's glue offers its own socket all the same, the port an observer saw
 * a hint (node_own_socket.c). The peer's probes to that port are lost, but
 * the client's own from the socket reach a peer whose filter lets anyone
 * in, its answers come back through the mapping they made, and both move
 * there. Against a peer that filters nothing moves: a proxied link runs no
 * birthday (the peer would spray an IP only the client vouches for). */
void test_proxied_random_link_goes_direct(void) {
  for (int open = 1; open >= 0; open--) {
    pair_links_t p;
    links_up(&p, 4343, K_RANDOM);
    kp_sim_t *sim = p.w.sim;
    kp_sim_nat_set_filter(p.server->nat, open ? KP_SIM_FILTER_OPEN : KP_SIM_FILTER_PORT);
    kp_addr_t seen;
    void *own = own_socket(&p, &seen);
    uint64_t t0 = kp_sim_now(sim);
    kp_hp_set_own_socket(p.client->hp, own, &seen, true, t0);
    kp_sim_dht_node_kick(p.client->n);
    bool moved = kp_sim_run_while(sim, t0 + 10 * SEC, both_moved, &p);
    KP_CHECK_EQ(moved, open != 0);
    if (open) {
      printf("proxied link, random NAT, open peer: client moved after %llu ms, server after %llu "
             "ms\n",
             (unsigned long long)(p.cm.at - t0), (unsigned long long)(p.sm.at - t0));
      KP_CHECK_EQ(p.cm.last.why, KP_HP_MOVE_UPGRADE);
      KP_CHECK(p.cm.last.direct && p.cm.last.sock == own);
      KP_CHECK_EQ(p.sm.last.why, KP_HP_MOVE_UPGRADE);
      /* Where the server's answers reach: the mapping toward it, not the
       * port the observer saw. */
      KP_CHECK(kp_addr_same_ip(&p.sm.last.to, &seen) && p.sm.last.to.port != seen.port);
    } else {
      KP_CHECK_EQ(p.cm.count + p.sm.count, 0);
    }
    peer_close_extra(p.client, own);
    p.cm.last.sock = NULL;
    links_down(&p);
  }
}

#define HP_FILL 12 /* holepunch/hp_internal.h HP_PATH_CANDIDATES */

/* A punch request naming an address, as the peer (or whoever captured
 * one) would send it through the connection's path. */
static void own_addr_request(pair_links_t *p, const kp_addr_t *named, uint8_t pkt[KP_PROBE_LEN]) {
  kp_probe_t pr = {.flags = KP_PROBE_FROM_CLIENT | KP_PROBE_PUNCH | KP_PROBE_OWN_ADDR,
                   .conn_id = p->server->conn.local_id,
                   .has_observed = true,
                   .observed = *named};
  kp_probe_encode(&pr, p->client->res.probe_key, pkt);
}

/* What punch requests through a proxy path can make a node send: with
 * its path's candidate slots full (filled by a peer from other ports, none
 * proven), a request's address takes the stalest slot and is probed on the
 * upgrade's back-off only (nothing crashes later); a request
 * replayed 40 times in 2 s makes it probe the named address at most at
 * the requests' rate; a loopback address named from the internet is
 * never probed. */
void test_proxied_link_requests_bounded(void) {
  pair_links_t p;
  links_up(&p, 4343, K_CONSISTENT);
  kp_sim_t *sim = p.w.sim;
  victim_tap_t t;
  KP_CHECK_OK(kp_addr_parse(&t.victim, "198.51.100.77:7777"));
  t.to_victim = 0;
  kp_sim_set_tap(sim, tap_victim, &t);
  /* Twelve ports of the peer's, each with an authenticated probe. */
  kp_sim_nat_set_filter(p.server->nat, KP_SIM_FILTER_OPEN);
  kp_sim_socket_t *fill[HP_FILL];
  for (int i = 0; i < HP_FILL; i++) {
    kp_addr_t a;
    kp_addr_set_v4(&a, 0xc6336400u + 90, (uint16_t)(20000 + i)); /* 198.51.100.90 */
    fill[i] = kp_sim_socket_new(sim, &a, NULL, swallow, NULL);
    kp_probe_t pr = {.flags = KP_PROBE_FROM_CLIENT, .conn_id = p.server->conn.local_id};
    uint8_t pkt[KP_PROBE_LEN];
    kp_probe_encode(&pr, p.client->res.probe_key, pkt);
    kp_sim_send(fill[i], &p.client->res.path, pkt, sizeof(pkt));
  }
  kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
  uint8_t req[KP_PROBE_LEN];
  own_addr_request(&p, &t.victim, req);
  kp_sim_send(p.client->n->sock, &p.client->res.path, req, sizeof(req));
  kp_sim_run_until(sim, kp_sim_now(sim) + 25 * SEC); /* past a keepalive */
  printf("one punch request, slots full: %u probes to the named address in 25 s\n", t.to_victim);
  KP_CHECK(t.to_victim >= 1 && t.to_victim <= 8);
  KP_CHECK_EQ(p.sm.count, 0); /* it never answered: nothing moves */
  for (int i = 0; i < HP_FILL; i++) kp_sim_socket_free(fill[i]);
  kp_sim_set_tap(sim, NULL, NULL);
  links_down(&p);

  /* Replays, on a link with room. */
  links_up(&p, 4344, K_CONSISTENT);
  sim = p.w.sim;
  t.to_victim = 0;
  kp_sim_set_tap(sim, tap_victim, &t);
  own_addr_request(&p, &t.victim, req);
  for (int i = 0; i < 40; i++) {
    kp_sim_send(p.client->n->sock, &p.client->res.path, req, sizeof(req));
    kp_sim_run_until(sim, kp_sim_now(sim) + 50);
  }
  kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
  printf("40 replayed punch requests in 2 s: %u probes to the named address\n", t.to_victim);
  KP_CHECK(t.to_victim >= 1);  /* the first is heeded: it is a hint */
  KP_CHECK(t.to_victim <= 10); /* a burst of 4, 2 a second for 3 s */
  kp_addr_t loop;
  KP_CHECK_OK(kp_addr_parse(&loop, "127.0.0.1:22"));
  t.victim = loop;
  t.to_victim = 0;
  own_addr_request(&p, &loop, req);
  for (int i = 0; i < 5; i++) kp_sim_send(p.client->n->sock, &p.client->res.path, req, sizeof(req));
  kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
  KP_CHECK_EQ(t.to_victim, 0);
  kp_sim_set_tap(sim, NULL, NULL);
  links_down(&p);
}

/* Punch requests that name the sender's own address, from the client. */
static void tap_own_requests(void *ctx, const kp_addr_t *from, const kp_addr_t *to,
                             const uint8_t *data, size_t len) {
  unsigned *n = ctx;
  uint64_t id;
  uint8_t flags;
  (void)from, (void)to;
  if (!kp_probe_peek(data, len, &id, &flags) && (flags & KP_PROBE_FROM_CLIENT) &&
      (flags & KP_PROBE_OWN_ADDR) && !(flags & KP_PROBE_ANSWER))
    (*n)++;
}

/* Both sides proxied, the client behind a NAT that maps each destination
 * anew (its own address a guess: the port an observer saw). Its own
 * socket's mapping toward the peer is not the one it could name, and the
 * peer's own socket heeds only the address named. So once the client
 * knows the peer is proxied too (the peer's own punch requests say so),
 * it names its guess no more, and moves on no proof that reaches its own
 * socket: the peer would not follow, and the path would flap between the
 * two. The peer's filter lets anyone in (the worst case: the client's
 * probes and the answers to them get through). */
void test_proxied_random_to_proxied_stays(void) {
  pair_links_t p;
  links_up(&p, 4346, K_RANDOM);
  kp_sim_t *sim = p.w.sim;
  kp_sim_nat_set_filter(p.server->nat, KP_SIM_FILTER_OPEN);
  kp_addr_t cseen, sseen;
  void *cown = own_socket(&p, &cseen);
  void *sown = own_socket_of(&p, p.server, &sseen);
  unsigned requests = 0;
  kp_sim_set_tap(sim, tap_own_requests, &requests);
  uint64_t t0 = kp_sim_now(sim);
  kp_hp_set_own_socket(p.server->hp, sown, &sseen, false, t0);
  kp_hp_set_own_socket(p.client->hp, cown, &cseen, true, t0);
  kp_sim_dht_node_kick(p.client->n);
  kp_sim_dht_node_kick(p.server->n);
  kp_sim_run_until(sim, t0 + 10 * SEC);
  unsigned early = requests;
  kp_sim_run_until(sim, t0 + 40 * SEC);
  printf("both proxied, the client's own address a guess: %u moves by the client, %u by the "
         "server; the client's punch requests naming it: %u in the first 10 s, %u in the next "
         "30 s\n",
         p.cm.count, p.sm.count, early, requests - early);
  KP_CHECK_EQ(p.cm.count, 0);
  KP_CHECK_EQ(p.sm.count, 0);
  KP_CHECK_EQ(requests - early, 0);
  kp_sim_set_tap(sim, NULL, NULL);
  peer_close_extra(p.client, cown);
  peer_close_extra(p.server, sown);
  links_down(&p);
}

typedef struct ip_tap_s {
  kp_addr_t victim;
  unsigned to_port, to_others; /* to the victim's address; to other ports of its IP */
} ip_tap_t;

static void tap_victim_ip(void *ctx, const kp_addr_t *from, const kp_addr_t *to,
                          const uint8_t *data, size_t len) {
  ip_tap_t *t = ctx;
  (void)from, (void)data, (void)len;
  if (kp_addr_eq(to, &t->victim))
    t->to_port++;
  else if (kp_addr_same_ip(to, &t->victim))
    t->to_others++;
}

/* No birthday through a proxy path (hp_link.c, birthday_request): a peer
 * that turned the connection into a proxy path by naming an address of
 * its own (a victim's), then asks for a birthday through that path, as a
 * random-NAT peer would, makes this node spray nothing at the victim's
 * IP. The peer here is the real client behind a NAT that maps each
 * destination anew, so the server knows it as such from the handshake:
 * only the proxy path stands between the request and a spray. */
void test_proxied_link_refuses_birthday(void) {
  pair_links_t p;
  links_up(&p, 4345, K_RANDOM);
  kp_sim_t *sim = p.w.sim;
  ip_tap_t t = {0};
  KP_CHECK_OK(kp_addr_parse(&t.victim, "198.51.100.77:7777"));
  kp_sim_set_tap(sim, tap_victim_ip, &t);
  /* From the socket the connection runs on, to the server: its path. */
  void *from = p.client->res.socket ? p.client->res.socket : p.client->n->sock;
  uint8_t req[KP_PROBE_LEN];
  own_addr_request(&p, &t.victim, req);
  kp_sim_send(from, &p.client->res.path, req, sizeof(req));
  kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
  kp_hp_stats_t before, after;
  kp_hp_stats(p.server->hp, &before);
  kp_probe_t bday = {.flags = KP_PROBE_FROM_CLIENT | KP_PROBE_BIRTHDAY |
                              kp_probe_nat_flags(KP_NAT_RANDOM),
                     .conn_id = p.server->conn.local_id};
  uint8_t pkt[KP_PROBE_LEN];
  kp_probe_encode(&bday, p.client->res.probe_key, pkt);
  for (int i = 0; i < 3; i++) {
    kp_sim_send(from, &p.client->res.path, pkt, sizeof(pkt));
    kp_sim_run_until(sim, kp_sim_now(sim) + 5 * SEC);
  }
  kp_hp_stats(p.server->hp, &after);
  printf("a birthday asked through a proxy path naming a victim: %llu started, %u datagrams to "
         "other ports of its IP, %u to the address named\n",
         (unsigned long long)(after.birthdays - before.birthdays), t.to_others, t.to_port);
  KP_CHECK(after.probes_ok - before.probes_ok >= 3); /* they did arrive, authenticated */
  KP_CHECK_EQ(after.birthdays, before.birthdays);
  KP_CHECK_EQ(t.to_others, 0);
  KP_CHECK(t.to_port <= 8); /* the upgrade's probes to the hint, on its back-off */
  kp_sim_set_tap(sim, NULL, NULL);
  links_down(&p);
}

/* A NAT that forgets its mappings again and again (the lab's nat.rebind
 * flushes twice; a flaky home router does it all day). Each time both
 * transports see the path die, and both sides must move to what they
 * prove anew: the server to the client's newest mapping. Every rebinding
 * leaves addresses behind among the path's candidates (the birthday's,
 * the old mappings); a table full of them must not keep the newest one
 * from being proven. */
void test_rebind_many(void) {
  pair_links_t p;
  links_up(&p, 85, K_RANDOM);
  KP_CHECK_EQ(p.client->res.strategy, KP_PUNCH_BIRTHDAY);
  for (unsigned round = 1; round <= 8; round++) {
    kp_addr_t was = p.sm.count ? p.sm.last.to : p.server->conn.path;
    unsigned cmoves = p.cm.count, smoves = p.sm.count;
    kp_sim_nat_flush(p.client->nat);
    uint64_t died = kp_sim_now(p.w.sim);
    kp_hp_link_path_state(p.cl, false, died);
    kp_hp_link_path_state(p.sl, false, died);
    kp_sim_dht_node_kick(p.client->n);
    while ((p.cm.count == cmoves || p.sm.count == smoves) && kp_sim_now(p.w.sim) < died + 10 * SEC)
      kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 100);
    printf("rebinding %u: client moved %s, server %s\n", round, p.cm.count > cmoves ? "yes" : "NO",
           p.sm.count > smoves ? "yes" : "NO");
    KP_CHECK(p.cm.count > cmoves && p.sm.count > smoves);
    KP_CHECK(p.sm.last.direct && p.cm.last.direct);
    KP_CHECK(!kp_addr_eq(&p.sm.last.to, &was)); /* the client's new mapping */
    close_left_sockets(&p);
    kp_sim_run_until(p.w.sim, kp_sim_now(p.w.sim) + 5 * SEC);
  }
  p.client->res.socket = p.cm.last.sock;
  links_down(&p);
}
