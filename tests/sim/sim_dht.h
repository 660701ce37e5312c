/* SPDX-License-Identifier: MIT */
/* DHT state machines running on the simulator: each node has a main and an
 * alt socket (for PING_NAT replies) and a timer armed at its next deadline. */
#ifndef KP_TEST_SIM_DHT_H
#define KP_TEST_SIM_DHT_H

#include "common/log.h"
#include "dht/dht.h"
#include "dht/dht_swarm.h"
#include "tests/sim/sim.h"

typedef struct kp_sim_dht_node_s {
  kp_sim_t *sim;
  kp_dht_t *dht;
  kp_dht_swarm_t *swarm; /* when the network was made with swarms */
  kp_sim_socket_t *sock;
  kp_sim_socket_t *alt;
  uint64_t timer_at; /* earliest timer event pending, UINT64_MAX if none */
  kp_rng_seeded_t rng;
  kp_log_t log;
  unsigned membership_changes;
  uint64_t datagrams_out;
  /* Datagrams that are not DHT messages (probes, stream packets) go here. */
  void (*on_other)(void *ctx, const kp_addr_t *from, const uint8_t *data, size_t len, uint64_t now);
  void *other_ctx;

} kp_sim_dht_node_t;

/* cfg may be NULL (defaults). cfg->local is replaced by addr. */
kp_sim_dht_node_t *kp_sim_dht_node_new(kp_sim_t *sim, const kp_addr_t *addr, kp_sim_nat_t *nat,
                                       const kp_dht_config_t *cfg, uint64_t seed);
/* Frees the DHT and closes the sockets; the struct stays as a husk that
 * ignores timers still queued. free() it after kp_sim_free(). */
void kp_sim_dht_node_free(kp_sim_dht_node_t *n);
/* Re-arms the node's timer after the caller fed it (e.g. started a query). */
void kp_sim_dht_node_kick(kp_sim_dht_node_t *n);

/* A network of `count` nodes on 10.0.x.y:4000 (node 0 a configured member,
 * the rest AUTO bootstrapping from it), created `spread_ms` apart. */
typedef struct kp_sim_dht_net_s {
  kp_sim_t *sim;
  kp_sim_dht_node_t **nodes;
  size_t count;
} kp_sim_dht_net_t;

void kp_sim_dht_net_init(kp_sim_dht_net_t *net, kp_sim_t *sim, size_t count, unsigned spread_ms,
                         const kp_dht_config_t *cfg, uint64_t seed);

/* Gives every node of the network a swarm (records, announce, lookup). */
void kp_sim_dht_net_add_swarms(kp_sim_dht_net_t *net, const kp_dht_swarm_config_t *cfg);
/* Gives one node a swarm; the wall clock is the virtual one plus a fixed epoch. */
void kp_sim_dht_node_add_swarm(kp_sim_dht_node_t *n, const kp_dht_swarm_config_t *cfg);

void kp_sim_dht_net_destroy(kp_sim_dht_net_t *net);
size_t kp_sim_dht_net_joined(const kp_sim_dht_net_t *net);
/* Runs the simulation until every node has joined; false after within_ms. */
bool kp_sim_dht_net_run_joined(kp_sim_dht_net_t *net, uint64_t within_ms);

/* The address of node i in such a network. */
void kp_sim_dht_addr(size_t i, kp_addr_t *out);

#endif
