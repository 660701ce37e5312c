/* SPDX-License-Identifier: MIT */
/* The simulated internet of the holepunch tests: DHT nodes that all relay
 * handshakes, peers behind NATs of each kind (with extra sockets for the
 * birthday strategy and pairing), a blind relay, and the steps of a
 * connect (tests/unit/test_holepunch*.c). */
#ifndef KP_TEST_HP_WORLD_H
#define KP_TEST_HP_WORLD_H

#include "holepunch/holepunch.h"
#include "relay/relay.h"
#include "tests/sim/sim_dht.h"

#define SEC 1000ull

typedef enum { K_OPEN, K_CONSISTENT, K_RANDOM, K_FIREWALLED, K_KINDS } kind_t;
extern const char *kind_name[];

typedef struct peer_s {
  kp_sim_dht_node_t *n;
  kp_hp_t *hp;
  kp_keypair_t kp;
  kp_hp_server_t *server;
  kp_dht_announce_t *announce;
  unsigned stored;
  unsigned connections;
  kp_hp_result_t conn;
  /* client side */
  bool done;
  int status;
  kp_hp_result_t res;
  uint64_t done_at;
  /* firewall */
  bool refuse_all;
  /* birthday sockets (io.open) */
  kp_sim_nat_t *nat;
  kp_addr_t home;
  kp_sim_socket_t *extra[600];
  unsigned extra_count, extra_opened, extra_peak;
  /* what arrived on extra sockets that was neither probe nor relay control */
  uint8_t got[64];
  size_t got_len;
  kp_sim_socket_t *got_on;
} peer_t;

typedef struct world_s {
  kp_sim_dht_net_t net;
  kp_sim_t *sim;
  peer_t peers[8];
  unsigned peer_count;
  unsigned next_ip;
} world_t;

/* A blind relay on the simulated internet: a DHT node's socket that
 * forwards for paired addresses (what node.c does with kp_relay_t). */
typedef struct sim_relay_s {
  kp_sim_dht_node_t *n;
  kp_relay_t *relay;
  void *saved_ctx; /* the node's kp_hp_t, given back by relay_down */
} sim_relay_t;

/* A deterministic key pair from one byte. */
void keypair(kp_keypair_t *kp, uint8_t seed);
/* 24 DHT nodes (every one relaying), links of 5-15 ms with this loss and
 * duplication. */
void world_init(world_t *w, uint64_t seed, double loss, double dup);
/* A peer of a kind on the simulated internet (cfg may be NULL), or a
 * second host behind p's NAT. */
peer_t *peer_new_cfg(world_t *w, kind_t kind, uint8_t seed, const kp_hp_config_t *cfg);
peer_t *peer_new(world_t *w, kind_t kind, uint8_t seed);
peer_t *peer_beside(world_t *w, peer_t *p, uint8_t seed);
void world_free(world_t *w);
/* The glue closes an extra socket of p (as the node does with one no
 * connection or link holds): its paths forget it, the socket is freed. */
void peer_close_extra(peer_t *p, void *sock);
/* The glue opens an extra socket of p (behind its NAT), as io.open does. */
void *peer_open_extra(peer_t *p);
/* The server's firewall and connection callbacks (ctx: the peer). */
kp_hs_refusal_t firewall(void *ctx, const kp_hs_hello_t *hello, const kp_addr_t *client);
void on_connection(void *ctx, const kp_hp_result_t *r);
/* p listens on its key and announces it (checked). */
void serve(world_t *w, peer_t *p);
void on_connected(void *arg, int status, const kp_hp_result_t *r);
bool connected(void *ctx);
/* Connects client to server's key and runs until it is done (30 s at
 * most); the status, and how long it took. */
int connect_to(world_t *w, peer_t *client, const peer_t *server, uint64_t *took);
/* DHT node 3 of w becomes a blind relay (its other datagrams go to the
 * relay, not its kp_hp_t), and stops being one. */
void relay_up(world_t *w, sim_relay_t *sr);
void relay_down(sim_relay_t *sr);
/* A DHT node's other datagrams, fed to a sim_relay_t (ctx). */
void relay_other(void *ctx, const kp_addr_t *from, const uint8_t *data, size_t len, uint64_t now);
/* A reply nobody waits for. */
void ignore_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                  const kp_addr_t *from, uint64_t now);
/* kp_sim_set_drop: probes that neither come from nor go to the relay at
 * ctx (a path that eats punches). */
bool drop_direct_probes(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                        size_t len);

/* The cases of test_holepunch_trust.c, in the binary's table. */
void test_keys_not_from_public_hash(void);
void test_no_probes_to_unproven_address(void);
void test_no_probes_for_posing_client(void);
void test_client_ignores_forged_reply_peer(void);
void test_admission_charges_sender(void);
void test_no_amplification(void);
void test_relay_only_hides_addresses(void);
/* ... and of test_holepunch_resume.c. */
void test_resume_after_rebind(void);
void test_rebind_many(void);
void test_resume_rejects_replay_and_forgery(void);
void test_resume_after_grace(void);
void test_closed_socket_forgotten(void);
void test_resume_without_handshake_node(void);
void test_proxied_link_goes_direct(void);
void test_proxied_random_link_goes_direct(void);
void test_proxied_link_requests_bounded(void);
void test_proxied_link_refuses_birthday(void);
void test_proxied_random_to_proxied_stays(void);

#endif
