/* SPDX-License-Identifier: MIT */
/* The node's port mapping (portmap.h): whether to ask for one, and the DHT
 * datagrams held until the gateway's first answer. Held because a NAT
 * keeps the port it chose for a flow for as long as the flow lives: a
 * bootstrap PING that left before the mapping existed would go on leaving
 * from a random port, and the DHT would see two public ports and call the
 * NAT random. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "node/portmap.h"

/* What 250 ms of a starting node sends: its bootstrap PINGs and the first
 * FIND_NODEs. More are dropped, counted, as a full socket buffer would. */
#define HELD_MAX 64

typedef struct kp_node_held_s {
  int sock;
  kp_addr_t to;
  size_t len;
  uint8_t data[KP_UDP_MAX_DATAGRAM];
} held_t;

/* A node on loopback, an IPv6 one (NAT-PMP is IPv4), one bound to a public
 * address, one that reaches the network through a relay or a proxy, and
 * one whose bootstrap nodes are all on loopback has no use for a mapping;
 * the last rule also keeps a local testnet from talking to the host's
 * gateway. */
static bool wants_mapping(const kp_node_t *node, const kp_node_options_t *opts) {
  const kp_addr_t *local = &node->sock.local;
  if (!opts->port_mapping || node->tunnel || node->proxy_link) return false;
  if (local->family != KP_AF_INET || kp_addr_is_loopback(local)) return false;
  if (!kp_addr_is_any(local) && !kp_addr_is_private(local)) return false;
  for (size_t i = 0; i < opts->bootstrap_count; i++) {
    kp_addr_t a;
    const char *b = opts->bootstrap[i];
    if (!kp_addr_parse(&a, b) ? !kp_addr_is_loopback(&a) : strncmp(b, "localhost:", 10))
      return true;
  }
  return false;
}

static void release(kp_node_t *node) {
  node->portmap_hold = false;
  for (unsigned i = 0; i < node->held_count; i++) {
    held_t *h = &node->held[i];
    kp_udp_t *udp = h->sock == KP_DHT_SOCK_ALT ? &node->alt : &node->sock;
    if (node->closing || (h->sock == KP_DHT_SOCK_ALT && !(node->open_handles & OPEN_ALT))) continue;
    kp_udp_send(udp, &h->to, h->data, h->len);
  }
  kp_free(node->held);
  node->held = NULL;
  node->held_count = 0;
}

static void on_mapping(void *ctx, const kp_port_mapping_t *now, bool settled) {
  kp_node_t *node = ctx;
  if (settled && node->portmap_hold) release(node);
  if (!node->dht || node->closing) return;
  /* The DHT takes the mapped address as ours (while reporters see its IP):
   * a mapping that came after the first flows would not show in them. */
  kp_dht_set_mapped(node->dht, now->state == KP_PORT_MAPPING_ACTIVE ? &now->external : NULL,
                    kp__node_now(node));
  kp__node_rearm(node);
}

int kp__node_portmap_start(kp_node_t *node, const kp_node_options_t *opts) {
  if (!wants_mapping(node, opts)) return 0;
  node->portmap_hold = true;
  kp_portmap_t *pm;
  int err =
      kp_portmap_start(node->loop, node->sock.local.port, NULL, &node->log, on_mapping, node, &pm);
  if (err) {
    release(node);
    return err;
  }
  node->portmap = pm;
  return 0;
}

bool kp__node_portmap_hold(kp_node_t *node, int sock, const kp_addr_t *to, const uint8_t *data,
                           size_t len) {
  if (!node->portmap_hold) return false;
  if (!node->held) node->held = kp_calloc(HELD_MAX, sizeof(*node->held));
  if (node->held && node->held_count < HELD_MAX && len <= sizeof(node->held->data)) {
    held_t *h = &node->held[node->held_count++];
    h->sock = sock;
    h->to = *to;
    h->len = len;
    memcpy(h->data, data, len);
  } else {
    node->drops_other++;
  }
  return true;
}

static void on_portmap_closed(void *ctx) {
  kp_node_t *node = ctx;
  node->portmap = NULL;
  kp__node_maybe_finish_close(node);
}

void kp__node_portmap_close(kp_node_t *node) {
  if (node->portmap_hold) release(node); /* closing: dropped */
  if (node->portmap) kp_portmap_close(node->portmap, on_portmap_closed, node);
}

void kp_node_port_mapping(const kp_node_t *node, kp_port_mapping_t *out) {
  memset(out, 0, sizeof(*out));
  if (node->portmap) kp_portmap_info(node->portmap, out);
}
