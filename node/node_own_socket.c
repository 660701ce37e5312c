/* SPDX-License-Identifier: MIT */
/* A proxied node's own socket (kp_node_options_t.proxy_private unset): a
 * real UDP socket beside the proxy's channels. It learns its public
 * address the way every node does, from DHT nodes: a PING from it to two
 * of them, whose replies say where the packet came from. When both agree
 * (a NAT that keeps one mapping for every destination, or none) the
 * holepunch layer gets socket and address (kp_hp_set_own_socket) and its
 * links punch from there, so a proxied connection moves direct where a
 * path proves itself. When they agree on the IP only (a NAT that maps each
 * destination anew) the socket is offered all the same, its port a hint:
 * the peer's probe to it is lost, but ours from it reach a peer whose
 * filter lets anyone in (no NAT, or an endpoint-independent one), and
 * its answer comes back through the mapping ours made. A NAT like ours
 * against a filtering one needs the birthday strategy, which a proxied
 * connection does not run: the other side would spray an address nobody
 * but us vouches for (docs/architecture.md, "Proxied connections go
 * direct"). When they disagree on the IP, nothing is offered. Asked again
 * every REFRESH_MS, which also keeps the NAT's mapping.
 *
 * What an answer can do is bounded: the two nodes are drawn at random
 * from the routing table (at different IPs), each PING has a random
 * transaction id and takes its first answer only, an address outside the
 * answering node's scope (a LAN or loopback address from a node on the
 * internet) is refused, and an address once offered is withdrawn only
 * after two rounds in a row disagree. The worst a lying node does is name
 * an address this node's peers then send one probe per punch request to,
 * at a rate (holepunch/hp_link.c). */
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_msg.h"
#include "dht/dht_table.h"
#include "node/node_internal.h"
#include "node/socket_pool.h"

#define ASK 2            /* DHT nodes asked each time */
#define RETRY_MS 1000    /* no (or no agreeing) answers: ask again, backing off ... */
#define REFRESH_MS 25000 /* ... to this; answered: ask again then */
#define WITHDRAW_AFTER 2 /* rounds in a row that disagree before an offer is withdrawn */

struct kp_node_own_s {
  kp_node_t *node;
  void *sock; /* the socket pool's */
  kp_addr_t asked[ASK];
  uint16_t tid[ASK];
  kp_addr_t seen[ASK]; /* what each said (family 0: no answer yet) */
  uint64_t next_at, retry_ms;
  kp_addr_t offered;   /* the address the holepunch layer has */
  bool offered_random; /* its port is a hint: the NAT maps each destination anew */
  unsigned disagreed;
  bool said_random;
};

/* Two DHT nodes at different IPs (a NAT's mapping per destination shows
 * only across IPs), drawn at random from the routing table. */
static unsigned pick(kp_node_own_t *o) {
  const kp_dht_table_t *t = kp_dht_table(o->node->dht);
  unsigned n = 0;
  if (!t->count) return 0;
  uint32_t start = kp_rng_u32(&o->node->rng) % t->count;
  for (uint32_t k = 0; k < t->count && n < ASK; k++) {
    kp_addr_t a;
    kp_dht_entry_addr(t, kp_dht_table_at(t, (start + k) % t->count), &a);
    if (n && kp_addr_same_ip(&a, &o->asked[0])) continue;
    o->asked[n++] = a;
  }
  return n;
}

static void ask(kp_node_own_t *o, uint64_t now) {
  kp_node_t *node = o->node;
  memset(o->seen, 0, sizeof(o->seen));
  memset(o->asked, 0, sizeof(o->asked));
  o->next_at = now + o->retry_ms;
  o->retry_ms = o->retry_ms * 2 < REFRESH_MS ? o->retry_ms * 2 : REFRESH_MS;
  unsigned n = pick(o);
  for (unsigned i = 0; i < n; i++) {
    o->tid[i] = (uint16_t)kp_rng_u32(&node->rng);
    kp_dht_msg_t m = {.type = KP_DHT_REQUEST, .tid = o->tid[i], .command = KP_DHT_CMD_PING};
    m.to = o->asked[i];
    uint8_t buf[KP_DHT_MAX_DATAGRAM];
    size_t len;
    /* Padded as every request without a token is: the reply is no bigger. */
    size_t min =
        kp_dht_msg_reply_bound(m.to.family == KP_AF_INET6 ? KP_AF_INET6 : KP_AF_INET, 0, 0);
    if (!kp_dht_msg_encode_min(&m, min, buf, sizeof(buf), &len))
      kp_socket_pool_send(node->sockets, o->sock, &o->asked[i], buf, len);
  }
}

/* addr: what both DHT nodes saw (NULL: they named different IPs);
 * random: the same IP at different ports. */
static void offer(kp_node_own_t *o, const kp_addr_t *addr, bool random, uint64_t now) {
  kp_node_t *node = o->node;
  char text[KP_ADDR_STRLEN];
  if (!addr) {
    if (o->offered.family && ++o->disagreed < WITHDRAW_AFTER) return;
    if (o->offered.family) kp_hp_set_own_socket(node->hp, NULL, NULL, false, now);
    memset(&o->offered, 0, sizeof(o->offered));
    return;
  }
  o->disagreed = 0;
  /* Each round of a random NAT names another port: the same offer. */
  bool same = random ? o->offered_random && kp_addr_same_ip(addr, &o->offered)
                     : !o->offered_random && kp_addr_eq(addr, &o->offered);
  if (same) return;
  o->offered = *addr;
  o->offered_random = random;
  if (!random)
    KP_INFO(&node->log, "own socket at %s: proxied connections go direct where they can",
            kp_addr_format(addr, text, sizeof(text)));
  else if (!o->said_random)
    KP_INFO(&node->log, "own socket: this host's NAT maps each destination anew: proxied "
                        "connections go direct only to peers that let anyone in");
  o->said_random = o->said_random || random;
  kp_hp_set_own_socket(node->hp, o->sock, addr, random, now);
}

static void on_other(void *ctx, const kp_addr_t *from, const uint8_t *data, size_t len) {
  kp_node_own_t *o = ctx;
  kp_node_t *node = o->node;
  kp_dht_msg_t m;
  if (kp_dht_msg_decode(data, len, from->family, &m) || m.type != KP_DHT_RESPONSE) {
    node->drops_other++;
    return;
  }
  unsigned i = 0;
  while (i < ASK && !(o->asked[i].family && m.tid == o->tid[i] && kp_addr_eq(from, &o->asked[i])))
    i++;
  /* Unasked, answered already, or naming an address out of the
   * answerer's scope. */
  bool inside = kp_addr_is_private(&m.to) || kp_addr_is_loopback(&m.to);
  bool from_inside = kp_addr_is_private(from) || kp_addr_is_loopback(from);
  if (i == ASK || o->seen[i].family || !m.to.family || !m.to.port || (inside && !from_inside)) {
    node->drops_other++;
    return;
  }
  o->seen[i] = m.to;
  if (!o->seen[0].family || !o->seen[1].family) return;
  uint64_t now = kp__node_now(node);
  bool same_ip = kp_addr_same_ip(&o->seen[0], &o->seen[1]);
  bool random = same_ip && o->seen[0].port != o->seen[1].port;
  KP_NODE_FEED(node, offer(o, same_ip ? &o->seen[0] : NULL, random, now));
  o->next_at = now + REFRESH_MS;
  o->retry_ms = RETRY_MS;
}

static void tick(void *ctx, uint64_t now) {
  kp_node_own_t *o = ctx;
  if (now >= o->next_at) ask(o, now);
}

static uint64_t deadline(void *ctx) {
  return ((kp_node_own_t *)ctx)->next_at;
}

int kp__node_own_start(kp_node_t *node) {
  kp_node_own_t *o = kp_calloc(1, sizeof(*o));
  if (!o) return UV_ENOMEM;
  o->node = node;
  o->retry_ms = RETRY_MS;
  o->next_at = kp__node_now(node) + RETRY_MS; /* the DHT has nodes by then */
  kp_dht_ticker_t t = {.tick = tick, .deadline = deadline, .ctx = o};
  int err = kp_dht_add_ticker(node->dht, &t);
  if (err) {
    kp_free(o);
    return err;
  }
  o->sock = kp_socket_pool_open_own(node->sockets, on_other, o);
  if (!o->sock) {
    kp_dht_remove_ticker(node->dht, o);
    kp_free(o);
    return UV_EMFILE;
  }
  node->own = o;
  return 0;
}

void kp__node_own_free(kp_node_t *node) {
  if (!node->own) return;
  if (node->dht) kp_dht_remove_ticker(node->dht, node->own);
  kp_free(node->own);
  node->own = NULL;
}
