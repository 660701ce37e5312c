/* SPDX-License-Identifier: MIT */
/* The blind relays a node uses: what it stores of relay records, finding
 * relays for its connections (explicit ones, else a lookup of the relay
 * topic), and reaching the network through one over TCP when UDP is
 * blocked. Running a relay is relay_service.c. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "node/node_proxy.h"
#include "node/relay_service.h"
#include "relay/uv/tunnel.h"

#define RELAY_TOPIC "kadpunch/relays/v1"
#define DISCOVERY_EVERY_MS (10 * 60 * 1000)

void kp__node_relay_target(uint8_t target[KP_ID_LEN]) {
  kp_target_from_topic(RELAY_TOPIC, sizeof(RELAY_TOPIC) - 1, target);
}

/* The addresses a relay record names (its data, as text): one, or a
 * dual-stack relay's two of different families, a space between. How
 * many (0: a malformed record). */
static size_t record_addrs(const kp_record_t *rec, kp_addr_t out[2]) {
  char text[2 * KP_ADDR_STRLEN];
  if (!rec->data || !rec->data_len || rec->data_len >= sizeof(text)) return 0;
  memcpy(text, rec->data, rec->data_len);
  text[rec->data_len] = '\0';
  char *space = strchr(text, ' ');
  if (space) *space = '\0';
  if (kp_addr_parse(&out[0], text)) return 0;
  if (!space) return 1;
  if (kp_addr_parse(&out[1], space + 1) || out[1].family == out[0].family) return 0;
  return 2;
}

/* A relay announces the address it relays at, from that address: a record
 * that names any other would steer peers' PAIRs at someone who never
 * offered to relay (or at an attacker's relay from an address that is not
 * its own). Only what the announcer's own source address vouches for is
 * stored, so it is all a lookup can find. Proxies announce the same way
 * (node_proxy.c), under their own topic. */
bool kp__node_store_policy(void *ctx, const uint8_t target[KP_ID_LEN], const kp_record_t *rec,
                           const kp_addr_t *origin) {
  uint8_t relays[KP_ID_LEN], proxies[KP_ID_LEN];
  (void)ctx;
  kp__node_relay_target(relays);
  kp_target_from_topic(KP_PROXY_TOPIC, sizeof(KP_PROXY_TOPIC) - 1, proxies);
  if (memcmp(target, relays, KP_ID_LEN) && memcmp(target, proxies, KP_ID_LEN)) return true;
  /* The first address is the one it came from; a dual-stack relay's
   * second (of the other family) is its word, checked there. */
  kp_addr_t named[2];
  return record_addrs(rec, named) && kp_addr_eq(&named[0], origin);
}

int kp_node_relay_counters(const kp_node_t *node, kp_relay_counters_t *out) {
  if (!node->relay_service) return UV_EINVAL;
  kp_relay_service_counters(node->relay_service, out);
  return 0;
}

/* ---- Finding relays --------------------------------------------------------------- */

int kp__node_relay_set_explicit(kp_node_t *node, const char *const *relays, size_t count) {
  kp_addr_t addrs[4];
  size_t n = 0;
  for (size_t i = 0; i < count && n < 4; i++)
    if (kp_addr_parse(&addrs[n++], relays[i])) return KP_EBADADDR;
  kp_hp_set_relays(node->hp, addrs, n);
  node->relays_explicit = n > 0;
  return 0;
}

static void on_relay_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  kp_addr_t named[2];
  (void)arg;
  size_t n = record_addrs(rec, named);
  if (node->found_count >= 4 || !n) return;
  /* The first address, the one its storing node checked, if it is of our
   * family; a dual-stack relay's second is what a peer of the other family
   * pairs at. A record of the other family's store (a dual-stack node
   * serves one when its own store has none under that key) is used for
   * its second address, if that one is ours: the relay's word, checked by
   * nobody, as the other address in a welcome or a round is (a peer pairs
   * there unproven, docs/architecture.md "Dual stack"). Without it a node
   * of one family found no relay at all whenever the nodes it asked held
   * the relay's record of the other family only (nat.ipv6_matrix: a v4
   * server, 3 runs in 45, so a v6 client got "no direct path"). */
  int ours = node->sock.local.family;
  size_t first = named[0].family == ours ? 0 : n == 2 && named[1].family == ours ? 1 : 2;
  if (first == 2) {
    node->found_foreign++;
    return;
  }
  kp_addr_t alt = n == 2 ? named[1 - first] : (kp_addr_t){0};
  for (size_t i = 0; i < node->found_count; i++) {
    if (!kp_addr_eq(&node->found_relays[i], &named[first])) continue;
    /* The same relay again: one node may hold its record from before it
     * knew its other address (nat.ipv6_matrix: a v4 server kept that one,
     * named no IPv6 address in its welcomes, and a v6 client got "no
     * direct path"). The other address counts from whichever has it. */
    if (!node->found_alts[i].family) node->found_alts[i] = alt;
    return;
  }
  node->found_alts[node->found_count] = alt;
  node->found_relays[node->found_count++] = named[first];
}

/* A lookup that found none (the relays may not have announced yet, or the
 * node is still joining) is tried again soon, backing off; a set that was
 * found is refreshed, so relays that left are dropped and new ones used. */
#define RETRY_FIRST_MS 1000
#define RETRY_MAX_MS (64 * 1000)

static void on_relay_lookup(kp_node_t *node, int status, size_t found,
                            const kp_node_query_stats_t *stats, void *arg) {
  (void)arg;
  node->relay_lookup = false;
  KP_DEBUG(&node->log,
           "relay lookup: %s, %zu record(s), %u request(s), %u response(s), %u timeout(s)",
           kp_strerror(status), found, stats ? stats->requests : 0, stats ? stats->responses : 0,
           stats ? stats->timeouts : 0);
  if (node->relays_explicit || node->closing) return;
  uint64_t now = kp__node_now(node);
  if (status || !node->found_count) {
    node->relays_due = now + node->relays_retry_ms;
    KP_INFO(&node->log,
            "no relay found on the DHT (%s, %u response(s), %u record(s) of no use here); "
            "looking again in %u ms",
            status ? kp_strerror(status) : "no record", stats ? stats->responses : 0,
            node->found_foreign, node->relays_retry_ms);
    node->relays_retry_ms =
        node->relays_retry_ms * 2 < RETRY_MAX_MS ? node->relays_retry_ms * 2 : RETRY_MAX_MS;
    kp__node_rearm(node);
    return;
  }
  kp_hp_set_relays(node->hp, node->found_relays, node->found_count);
  kp_hp_set_relay_alts(node->hp, node->found_alts, node->found_count);
  KP_INFO(&node->log, "found %zu relay(s) on the DHT", node->found_count);
  node->relays_due = now + DISCOVERY_EVERY_MS;
  node->relays_retry_ms = RETRY_FIRST_MS;
  kp__node_rearm(node);
}

void kp__node_relay_tick(kp_node_t *node, uint64_t now) {
  if (node->relays_explicit || node->relay_lookup || node->closing) return;
  if (!node->relays_due || now < node->relays_due) return;
  uint8_t target[KP_ID_LEN];
  kp__node_relay_target(target);
  node->found_count = 0;
  node->found_foreign = 0;
  node->relays_due = UINT64_MAX; /* set again when the lookup ends */
  if (!kp_node_lookup(node, target, on_relay_record, on_relay_lookup, NULL))
    node->relay_lookup = true;
  else
    node->relays_due = now + RETRY_MAX_MS;
}

uint64_t kp__node_relay_deadline(const kp_node_t *node) {
  if (node->relays_explicit || node->relay_lookup || !node->relays_due) return UINT64_MAX;
  return node->relays_due;
}

void kp__node_relay_discover(kp_node_t *node) {
  if (node->relays_due) return; /* already kept */
  node->relays_retry_ms = RETRY_FIRST_MS;
  node->relays_due = 1;
  kp__node_relay_tick(node, kp__node_now(node));
}

/* ---- Through a relay over TCP ----------------------------------------------------------- */

static void on_tunnel_down(kp_tunnel_t *t, int status, void *arg) {
  kp_node_t *node = arg;
  char text[KP_ADDR_STRLEN];
  kp_addr_format(kp_tunnel_relay(t), text, sizeof(text));
  KP_ERROR(&node->log, "the TCP connection to relay %s: %s", text,
           status == UV_EOF ? "closed by the relay" : kp_strerror(status));
}

int kp__node_tunnel_open(kp_node_t *node, const char *relay) {
  kp_addr_t addr;
  if (kp_addr_parse(&addr, relay)) return KP_EBADADDR;
  int err = kp_tunnel_new(node->loop, &addr, on_tunnel_down, node, &node->tunnel);
  if (!err) err = kp_tunnel_socket(node->tunnel, &node->sock);
  if (err && node->tunnel) {
    kp_tunnel_close(node->tunnel);
    node->tunnel = NULL;
  }
  return err;
}

void kp__node_relay_set_tunnel(kp_node_t *node) {
  kp_hp_set_relays(node->hp, kp_tunnel_relay(node->tunnel), 1);
  node->relays_explicit = true;
}
