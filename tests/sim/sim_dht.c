/* SPDX-License-Identifier: MIT */
#include "tests/sim/sim_dht.h"

#include <stdlib.h>
#include <string.h>

static void on_timer(void *ctx, uint64_t now);

void kp_sim_dht_node_kick(kp_sim_dht_node_t *n) {
  uint64_t deadline = kp_dht_next_deadline(n->dht);
  uint64_t now = kp_sim_now(n->sim);
  if (deadline < now) deadline = now;
  /* Only ever add an earlier timer; a stale later one just ticks early. */
  if (deadline >= n->timer_at) return;
  n->timer_at = deadline;
  kp_sim_timer(n->sim, deadline, on_timer, n);
}

static void on_timer(void *ctx, uint64_t now) {
  kp_sim_dht_node_t *n = ctx;
  if (!n->dht) return; /* freed: a husk */
  if (now >= n->timer_at) n->timer_at = UINT64_MAX;
  kp_dht_tick(n->dht, now);
  kp_sim_dht_node_kick(n);
}

static void on_recv(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                    size_t len, uint64_t now) {
  kp_sim_dht_node_t *n = ctx;
  (void)sock;
  if (!n->dht) return;
  if (!kp_dht_msg_is_control(data, len) && n->on_other) {
    n->on_other(n->other_ctx, from, data, len, now);
  } else {
    kp_dht_recv(n->dht, from, data, len, now);
  }

  kp_sim_dht_node_kick(n);
}

static void dht_send(void *ctx, int which, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_sim_dht_node_t *n = ctx;
  n->datagrams_out++;
  kp_sim_send(which == KP_DHT_SOCK_ALT ? n->alt : n->sock, to, data, len);
}

static void on_membership(void *ctx, bool member) {
  kp_sim_dht_node_t *n = ctx;
  (void)member;
  n->membership_changes++;
}

static void rng_fill(void *ctx, void *buf, size_t len) {
  kp_rng_t r = kp_rng_seeded(ctx);
  kp_rng_fill(&r, buf, len);
}

kp_sim_dht_node_t *kp_sim_dht_node_new(kp_sim_t *sim, const kp_addr_t *addr, kp_sim_nat_t *nat,
                                       const kp_dht_config_t *cfg, uint64_t seed) {
  kp_sim_dht_node_t *n = calloc(1, sizeof(*n));
  if (!n) abort();
  n->sim = sim;
  n->timer_at = UINT64_MAX;
  kp_rng_seeded_init(&n->rng, seed);
  kp_log_init(&n->log, getenv("KP_SIM_LOG") ? KP_LOG_DEBUG : KP_LOG_ERROR, kp_log_stderr, NULL);
  kp_addr_t alt = *addr;
  alt.port = (uint16_t)(addr->port + 1);
  n->sock = kp_sim_socket_new(sim, addr, nat, on_recv, n);
  n->alt = kp_sim_socket_new(sim, &alt, nat, on_recv, n);

  kp_dht_config_t c;
  if (cfg)
    c = *cfg;
  else
    kp_dht_config_defaults(&c);
  c.family = KP_AF_INET;
  c.local = *addr;
  c.rng = (kp_rng_t){rng_fill, &n->rng};
  c.log = &n->log;
  kp_dht_io_t io = {.send = dht_send, .on_membership = on_membership, .ctx = n};
  if (kp_dht_new(&c, &io, kp_sim_now(sim), &n->dht)) abort();
  kp_sim_dht_node_kick(n);
  return n;
}

static uint64_t sim_wall_ms(void *ctx) {
  /* Virtual time since 2026-01-01: sequence numbers look like real ones. */
  return 1767225600000ull + kp_sim_now(ctx);
}

void kp_sim_dht_node_add_swarm(kp_sim_dht_node_t *n, const kp_dht_swarm_config_t *cfg) {
  kp_dht_swarm_config_t c;
  if (cfg)
    c = *cfg;
  else
    kp_dht_swarm_config_defaults(&c);
  c.wall_ms = sim_wall_ms;
  c.wall_ctx = n->sim;
  if (kp_dht_swarm_new(n->dht, &c, &n->swarm)) abort();
  kp_sim_dht_node_kick(n);
}

void kp_sim_dht_net_add_swarms(kp_sim_dht_net_t *net, const kp_dht_swarm_config_t *cfg) {
  for (size_t i = 0; i < net->count; i++)
    if (net->nodes[i]->dht && !net->nodes[i]->swarm) kp_sim_dht_node_add_swarm(net->nodes[i], cfg);
}

void kp_sim_dht_node_free(kp_sim_dht_node_t *n) {
  if (!n || !n->dht) return;
  kp_dht_free(n->dht, kp_sim_now(n->sim));
  kp_dht_swarm_free(n->swarm); /* after the DHT, which cancels its operations */
  n->swarm = NULL;

  kp_sim_socket_free(n->sock);
  kp_sim_socket_free(n->alt);
  /* Timers still queued point at n: keep it as a husk that ignores them. */
  n->dht = NULL;
}

void kp_sim_dht_addr(size_t i, kp_addr_t *out) {
  kp_addr_set_v4(out, (10u << 24) | (uint32_t)(i + 1), 4000);
}

static kp_sim_dht_node_t *spawn(kp_sim_dht_net_t *net, size_t i, const kp_dht_config_t *cfg,
                                uint64_t seed) {
  kp_dht_config_t c;
  if (cfg)
    c = *cfg;
  else
    kp_dht_config_defaults(&c);
  c.mode = i == 0 ? KP_NODE_MEMBER : c.mode;
  kp_addr_t addr;
  kp_sim_dht_addr(i, &addr);
  kp_sim_dht_node_t *n = kp_sim_dht_node_new(net->sim, &addr, NULL, &c, seed * 7919 + i);
  if (i > 0) {
    kp_addr_t boot;
    kp_sim_dht_addr(0, &boot);
    kp_dht_add_bootstrap(n->dht, &boot, kp_sim_now(net->sim));
    kp_sim_dht_node_kick(n);
  }
  return n;
}

void kp_sim_dht_net_init(kp_sim_dht_net_t *net, kp_sim_t *sim, size_t count, unsigned spread_ms,
                         const kp_dht_config_t *cfg, uint64_t seed) {
  memset(net, 0, sizeof(*net));
  net->sim = sim;
  net->nodes = calloc(count, sizeof(*net->nodes));
  if (!net->nodes) abort();
  for (size_t i = 0; i < count; i++) {
    if (spread_ms && i) kp_sim_run_until(sim, kp_sim_now(sim) + spread_ms);
    net->nodes[i] = spawn(net, i, cfg, seed);
    net->count++;
  }
}

void kp_sim_dht_net_destroy(kp_sim_dht_net_t *net) {
  for (size_t i = 0; i < net->count; i++) kp_sim_dht_node_free(net->nodes[i]);
  /* Free the husks only after the simulator, whose queue may point at them. */
  kp_sim_free(net->sim);
  for (size_t i = 0; i < net->count; i++) free(net->nodes[i]);
  free(net->nodes);
  memset(net, 0, sizeof(*net));
}

size_t kp_sim_dht_net_joined(const kp_sim_dht_net_t *net) {
  size_t n = 0;
  for (size_t i = 0; i < net->count; i++)
    if (net->nodes[i]->dht && kp_dht_is_joined(net->nodes[i]->dht)) n++;
  return n;
}

static bool net_all_joined(void *ctx) {
  const kp_sim_dht_net_t *net = ctx;
  return kp_sim_dht_net_joined(net) == net->count;
}

bool kp_sim_dht_net_run_joined(kp_sim_dht_net_t *net, uint64_t within_ms) {
  /* Looked at every 100 ms of virtual time, not after every event: the
   * look is a pass over every node. */
  uint64_t end = kp_sim_now(net->sim) + within_ms;
  while (!net_all_joined(net)) {
    uint64_t now = kp_sim_now(net->sim);
    if (now >= end) return false;
    kp_sim_run_until(net->sim, now + 100 < end ? now + 100 : end);
  }
  return true;
}
