/* SPDX-License-Identifier: MIT */
/* Dual-stack nodes (kp_node_options_t.bind_also). The DHT is one network
 * per address family, as the mainline DHT's BEP 32: ids are hashes of
 * addresses, compact node lists have one family, a node reachable on both
 * is listed in both. So a dual-stack node is two single-family nodes on one
 * loop, joined where it matters (docs/architecture.md, "Dual stack"):
 *   - paired record stores: a lookup over one family is answered with the
 *     records of both (kp_dht_swarm_set_other), so a record announced over
 *     either family is found over both;
 *   - a hello that reaches us over one family for an announcer of the
 *     other is forwarded through the other family's DHT (kp_hp_set_other_family);
 *   - announcements, lookups, servers and connects of the node run over
 *     both (node_swarm.c, node_connect.c, node_race.c);
 *   - a relay pairs a peer of one family with a peer of the other.
 * The first node (the one the user holds) makes, owns and closes the
 * other, its sibling. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"

#define SIBLING_RELAYS_MAX 8

int kp__node_sibling_start(kp_node_t *node, const kp_node_options_t *opts) {
  kp_addr_t mine, other;
  if (kp_addr_parse(&mine, opts->bind ? opts->bind : "0.0.0.0:0") ||
      kp_addr_parse(&other, opts->bind_also))
    return KP_EBADADDR;
  if (mine.family == other.family || opts->proxy || opts->tcp_relay) return KP_ECONFIG;
  kp_node_options_t o = *opts;
  o.bind = opts->bind_also;
  o.bind_also = NULL;
  /* Bootstrap nodes: the first node hands each its family's
   * (kp_node_bootstrap). Explicit relays: those of its family, and names. */
  o.bootstrap = NULL;
  o.bootstrap_count = 0;
  o.relay = false; /* the first node's relay serves both sockets (relay_service.c) */
  const char *relays[SIBLING_RELAYS_MAX];
  o.relays = relays;
  o.relay_count = 0;
  for (size_t i = 0; i < opts->relay_count && o.relay_count < SIBLING_RELAYS_MAX; i++) {
    kp_addr_t a;
    if (kp_addr_parse(&a, opts->relays[i]) || a.family == other.family)
      relays[o.relay_count++] = opts->relays[i];
  }
  kp_node_t *sib;
  int err = kp_node_create(node->loop, &o, &sib);
  if (err) return err;
  sib->primary = node;
  node->sibling = sib;
  kp_dht_swarm_set_other(node->swarm, sib->swarm);
  kp_dht_swarm_set_other(sib->swarm, node->swarm);
  kp_hp_set_other_family(node->hp, sib->dht);
  kp_hp_set_other_family(sib->hp, node->dht);
  return 0;
}

kp_node_t *kp__node_of_family(kp_node_t *node, int family) {
  if (kp_dht_family(node->dht) == family) return node;
  kp_node_t *twin = node->sibling ? node->sibling : node->primary;
  return twin && !twin->closing && kp_dht_family(twin->dht) == family ? twin : NULL;
}

void kp__node_sibling_gone(kp_node_t *node) {
  node->sibling = NULL;
  if (node->hp) kp_hp_set_other_family(node->hp, NULL);
  if (node->swarm) kp_dht_swarm_set_other(node->swarm, NULL);
  if (node->closing) kp__node_maybe_finish_close(node);
}
