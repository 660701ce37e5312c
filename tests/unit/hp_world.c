/* SPDX-License-Identifier: MIT */
/* The simulated internet of the holepunch tests (hp_world.h). */
#include "tests/unit/hp_world.h"

#include <sodium.h>

#include "tests/harness/test.h"

void keypair(kp_keypair_t *kp, uint8_t seed) {
  uint8_t s[32];
  memset(s, seed, sizeof(s));
  crypto_sign_seed_keypair(kp->public_key, kp->secret_key, s);
}

const char *kind_name[] = {"open", "consistent", "random", "firewalled"};

static void hp_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  peer_t *p = ctx;
  kp_sim_send(p->n->sock, to, data, len);
}

static void on_other(void *ctx, const kp_addr_t *from, const uint8_t *data, size_t len,
                     uint64_t now) {
  peer_t *p = ctx;
  if (p->hp && kp_probe_is_packet(data, len)) kp_hp_recv_probe(p->hp, NULL, from, data, len, now);
}

static void extra_recv(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                       size_t len, uint64_t now) {
  peer_t *p = ctx;
  if (!p->hp) return;
  if (kp_probe_is_packet(data, len)) {
    kp_hp_recv_probe(p->hp, sock, from, data, len, now);
  } else if (kp_relay_is_ctrl(data, len)) {
    kp_hp_recv_relay(p->hp, sock, from, data, len, now);
  } else if (len <= sizeof(p->got)) {
    memcpy(p->got, data, len);
    p->got_len = len;
    p->got_on = sock;
  }
  kp_sim_dht_node_kick(p->n);
}

/* Extra sockets on the peer's host, behind its NAT: each gets its own
 * mapping, as on a real machine. */
static void *extra_open(void *ctx) {
  peer_t *p = ctx;
  if (p->extra_count == sizeof(p->extra) / sizeof(p->extra[0])) return NULL;
  kp_addr_t a = p->home;
  a.port = (uint16_t)(10000 + p->extra_opened++);
  kp_sim_socket_t *s = kp_sim_socket_new(p->n->sim, &a, p->nat, extra_recv, p);
  p->extra[p->extra_count++] = s;
  if (p->extra_count > p->extra_peak) p->extra_peak = p->extra_count;
  return s;
}

static void extra_send(void *ctx, void *sock, const kp_addr_t *to, const uint8_t *data,
                       size_t len) {
  peer_t *p = ctx;
  bool open = false;
  for (unsigned i = 0; i < p->extra_count && !open; i++) open = p->extra[i] == sock;
  KP_CHECK_MSG(open, "sending from a socket that was closed");
  if (open) kp_sim_send(sock, to, data, len);
}

void *peer_open_extra(peer_t *p) {
  return extra_open(p);
}

static void extra_close(void *ctx, void *sock) {
  peer_close_extra(ctx, sock);
}

void peer_close_extra(peer_t *p, void *sock) {
  /* As the node's glue does: the paths forget it first. */
  if (p->hp) kp_hp_socket_closed(p->hp, sock);
  for (unsigned i = 0; i < p->extra_count; i++) {
    if (p->extra[i] != sock) continue;
    kp_sim_socket_free(sock);
    p->extra[i] = p->extra[--p->extra_count];
    return;
  }
  KP_CHECK_MSG(false, "closing a socket that is not open");
}

void world_init(world_t *w, uint64_t seed, double loss, double dup) {
  memset(w, 0, sizeof(*w));
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.member_stable_ms = 0;
  w->sim = kp_sim_new(seed);
  kp_sim_dht_net_init(&w->net, w->sim, 24, 2, &c, seed);
  KP_CHECK(kp_sim_dht_net_run_joined(&w->net, 120 * SEC));
  kp_sim_dht_net_add_swarms(&w->net, NULL);
  kp_sim_link_t link = {.latency_min_ms = 5, .latency_max_ms = 15, .loss = loss, .duplicate = dup};
  kp_sim_set_link(w->sim, &link);
  /* Relay nodes need the role too: every DHT node forwards. */
  for (size_t i = 0; i < w->net.count; i++) {
    kp_hp_io_t io = {.send = hp_send};
    kp_hp_t *hp;
    KP_CHECK_OK(kp_hp_new(w->net.nodes[i]->dht, w->net.nodes[i]->swarm, NULL, &io, &hp));
    w->net.nodes[i]->other_ctx = hp; /* freed in world_free */
  }
}

peer_t *peer_new_cfg(world_t *w, kind_t kind, uint8_t seed, const kp_hp_config_t *cfg) {
  peer_t *p = &w->peers[w->peer_count++];
  unsigned ip = ++w->next_ip;
  kp_addr_t pub, inside;
  kp_addr_set_v4(&pub, 0xcb007100u + ip, 4000);         /* 203.0.113.ip */
  kp_addr_set_v4(&inside, 0xc0a80002u | ip << 8, 5000); /* 192.168.ip.2: a LAN each */
  kp_sim_nat_t *nat = NULL;
  if (kind == K_CONSISTENT)
    nat = kp_sim_nat_new(w->sim, &pub, KP_SIM_MAP_CONSISTENT, KP_SIM_FILTER_PORT);
  if (kind == K_RANDOM) nat = kp_sim_nat_new(w->sim, &pub, KP_SIM_MAP_RANDOM, KP_SIM_FILTER_PORT);
  if (kind == K_FIREWALLED) nat = kp_sim_nat_new(w->sim, &pub, KP_SIM_MAP_NONE, KP_SIM_FILTER_PORT);
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.mode = KP_NODE_EPHEMERAL;
  p->nat = nat;
  p->home = nat && kind != K_FIREWALLED ? inside : pub;
  p->n = kp_sim_dht_node_new(w->sim, &p->home, nat, &c, 1000 + seed);
  kp_sim_dht_node_add_swarm(p->n, NULL);
  kp_hp_io_t io = {
      .send = hp_send, .open = extra_open, .send_from = extra_send, .close = extra_close, .ctx = p};
  KP_CHECK_OK(kp_hp_new(p->n->dht, p->n->swarm, cfg, &io, &p->hp));
  p->n->on_other = on_other;
  p->n->other_ctx = p;
  keypair(&p->kp, seed);
  kp_addr_t boot;
  kp_sim_dht_addr(0, &boot);
  kp_dht_add_bootstrap(p->n->dht, &boot, kp_sim_now(w->sim));
  kp_sim_dht_node_kick(p->n);
  return p;
}

peer_t *peer_new(world_t *w, kind_t kind, uint8_t seed) {
  return peer_new_cfg(w, kind, seed, NULL);
}

/* A second host behind p's NAT, on its LAN. */
peer_t *peer_beside(world_t *w, peer_t *p, uint8_t seed) {
  peer_t *q = &w->peers[w->peer_count++];
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.mode = KP_NODE_EPHEMERAL;
  q->nat = p->nat;
  q->home = p->home;
  q->home.ip[3] = 3; /* the next host on p's LAN */
  q->n = kp_sim_dht_node_new(w->sim, &q->home, q->nat, &c, 1000 + seed);
  kp_sim_dht_node_add_swarm(q->n, NULL);
  kp_hp_io_t io = {.send = hp_send, .ctx = q};
  KP_CHECK_OK(kp_hp_new(q->n->dht, q->n->swarm, NULL, &io, &q->hp));
  q->n->on_other = on_other;
  q->n->other_ctx = q;
  keypair(&q->kp, seed);
  kp_addr_t boot;
  kp_sim_dht_addr(0, &boot);
  kp_dht_add_bootstrap(q->n->dht, &boot, kp_sim_now(w->sim));
  kp_sim_dht_node_kick(q->n);
  return q;
}

void world_free(world_t *w) {
  for (unsigned i = 0; i < w->peer_count; i++) {
    kp_hp_t *hp = w->peers[i].hp;
    w->peers[i].hp = NULL; /* its own closes need not tell it */
    kp_hp_free(hp);
  }
  for (size_t i = 0; i < w->net.count; i++) kp_hp_free(w->net.nodes[i]->other_ctx);
  for (unsigned i = 0; i < w->peer_count; i++) {
    peer_t *p = &w->peers[i];
    /* What is left is the winners, which the test (the glue) owns. */
    KP_CHECK(p->extra_count <= 1);
    while (p->extra_count) kp_sim_socket_free(p->extra[--p->extra_count]);
    if (p->n) kp_sim_dht_node_free(p->n);
  }
  kp_sim_dht_net_destroy(&w->net); /* and the simulator, then the husks */
  for (unsigned i = 0; i < w->peer_count; i++) free(w->peers[i].n);
}

kp_hs_refusal_t firewall(void *ctx, const kp_hs_hello_t *hello, const kp_addr_t *client) {
  peer_t *p = ctx;
  (void)hello, (void)client;
  return p->refuse_all ? KP_HS_REFUSE_NOT_ALLOWED : KP_HS_OK;
}

void on_connection(void *ctx, const kp_hp_result_t *r) {
  peer_t *p = ctx;
  p->connections++;
  p->conn = *r;
}

static void on_announced(void *arg, int status, unsigned stored) {
  peer_t *p = arg;
  if (!status) p->stored = stored;
}

static bool announced(void *ctx) {
  return ((peer_t *)ctx)->stored > 0;
}

void serve(world_t *w, peer_t *p) {
  /* Let NAT sampling settle first (a few lookups' worth of replies). */
  kp_sim_run_until(w->sim, kp_sim_now(w->sim) + 3 * SEC);
  KP_CHECK_OK(kp_hp_listen(p->hp, &p->kp, firewall, on_connection, p, &p->server));
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(p->kp.public_key, target);
  KP_CHECK_OK(kp_dht_swarm_announce(p->n->swarm, target, &p->kp, NULL, 0, on_announced, p,
                                    kp_sim_now(w->sim), &p->announce));
  kp_sim_dht_node_kick(p->n);
  KP_CHECK(kp_sim_run_while(w->sim, kp_sim_now(w->sim) + 30 * SEC, announced, p));
}

void on_connected(void *arg, int status, const kp_hp_result_t *r) {
  peer_t *p = arg;
  p->done = true;
  p->status = status;
  p->res = *r;
}

bool connected(void *ctx) {
  return ((peer_t *)ctx)->done;
}

int connect_to(world_t *w, peer_t *client, const peer_t *server, uint64_t *took) {
  kp_addr_t boot;
  kp_sim_dht_addr(0, &boot);
  kp_hp_connect_opts_t o = {.seeds = &boot, .seed_count = 1};
  client->done = false;
  uint64_t t0 = kp_sim_now(w->sim);
  KP_CHECK_OK(kp_hp_connect(client->hp, &client->kp, server->kp.public_key, &o, on_connected,
                            client, t0, NULL));
  kp_sim_dht_node_kick(client->n);
  KP_CHECK(kp_sim_run_while(w->sim, t0 + 30 * SEC, connected, client));
  if (took) *took = kp_sim_now(w->sim) - t0;
  return client->status;
}

void relay_up(world_t *w, sim_relay_t *sr) {
  *sr = (sim_relay_t){.n = w->net.nodes[3]};
  KP_CHECK_OK(kp_relay_new(NULL, &(kp_rng_t){kp_rng_system().fill, NULL}, &sr->relay));
  sr->saved_ctx = sr->n->other_ctx;
  sr->n->on_other = relay_other;
  sr->n->other_ctx = sr;
}

void relay_down(sim_relay_t *sr) {
  sr->n->other_ctx = sr->saved_ctx;
  sr->n->on_other = NULL;
  kp_relay_free(sr->relay);
}

void relay_other(void *ctx, const kp_addr_t *from, const uint8_t *data, size_t len, uint64_t now) {
  sim_relay_t *sr = ctx;
  kp_addr_t to, other;
  uint8_t reply[KP_RELAY_CTRL_LEN];
  switch (kp_relay_input(sr->relay, from, data, len, now, &to, &other, reply)) {
    case KP_RELAY_FORWARD: kp_sim_send(sr->n->sock, &to, data, len); break;
    case KP_RELAY_REPLY_BOTH:
      kp_sim_send(sr->n->sock, &other, reply, sizeof(reply));
      kp_sim_send(sr->n->sock, &to, reply, sizeof(reply));
      break;
    case KP_RELAY_REPLY: kp_sim_send(sr->n->sock, &to, reply, sizeof(reply)); break;
    default: break;
  }
}

void ignore_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                  const kp_addr_t *from, uint64_t now) {
  (void)arg, (void)req, (void)status, (void)resp, (void)from, (void)now;
}

/* Drops probes that do not go to or come from the relay: a path between
 * the peers that eats punches. */
bool drop_direct_probes(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                        size_t len) {
  const kp_addr_t *relay = ctx;
  return kp_probe_is_packet(data, len) && !kp_addr_eq(from, relay) && !kp_addr_eq(to, relay);
}
