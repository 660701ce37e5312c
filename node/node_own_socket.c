/* SPDX-License-Identifier: MIT */
/* A proxied node's own socket (kp_node_options_t.proxy_private unset): a
 * real UDP socket beside the proxy's channels. It learns its public
 * address the way every node does, from DHT nodes: a PING from it to two
 * of them, whose replies say where the packet came from. When both agree
 * (a NAT that keeps one mapping for every destination, or none) the
 * holepunch layer gets socket and address (kp_hp_set_own_socket) and its
 * links punch from there, so a proxied connection moves direct where a
 * path proves itself. When they disagree (a NAT that maps each destination
 * anew) nothing is offered: such a NAT is punched only by the birthday
 * strategy, which a proxied connection does not run. Asked again every
 * REFRESH_MS, which also keeps the NAT's mapping. */
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_msg.h"
#include "dht/dht_table.h"
#include "node/node_internal.h"
#include "node/socket_pool.h"

#define ASK 2            /* DHT nodes asked each time */
#define RETRY_MS 1000    /* no (or no agreeing) answers: ask again */
#define REFRESH_MS 25000 /* answered: ask again then */
#define TID_BASE 0xd170  /* transaction ids of our PINGs (the DHT's own never reach here) */

struct kp_node_own_s {
  kp_node_t *node;
  void *sock; /* the socket pool's */
  kp_addr_t asked[ASK];
  kp_addr_t seen[ASK]; /* what each said (family 0: no answer yet) */
  uint16_t round;      /* tids TID_BASE + 2 * round + i */
  uint64_t next_at;
  kp_addr_t offered; /* the address the holepunch layer has */
  bool said_random;
};

static uint16_t tid_of(const kp_node_own_t *o, unsigned i) {
  return (uint16_t)(TID_BASE + 2u * o->round + i);
}

/* Two DHT nodes at different IPs (a NAT's mapping per destination shows
 * only across IPs); the first two when there is no choice. */
static unsigned pick(kp_node_own_t *o) {
  const kp_dht_table_t *t = kp_dht_table(o->node->dht);
  unsigned n = 0;
  for (uint32_t i = 0; i < t->count && n < ASK; i++) {
    kp_addr_t a;
    kp_dht_entry_addr(t, kp_dht_table_at(t, i), &a);
    if (n && kp_addr_same_ip(&a, &o->asked[0])) continue;
    o->asked[n++] = a;
  }
  return n;
}

static void ask(kp_node_own_t *o, uint64_t now) {
  kp_node_t *node = o->node;
  o->round++;
  memset(o->seen, 0, sizeof(o->seen));
  memset(o->asked, 0, sizeof(o->asked));
  o->next_at = now + RETRY_MS;
  unsigned n = pick(o);
  for (unsigned i = 0; i < n; i++) {
    kp_dht_msg_t m = {.type = KP_DHT_REQUEST, .tid = tid_of(o, i), .command = KP_DHT_CMD_PING};
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

static void offer(kp_node_own_t *o, const kp_addr_t *addr, uint64_t now) {
  kp_node_t *node = o->node;
  char text[KP_ADDR_STRLEN];
  if (!addr) {
    if (!o->said_random)
      KP_INFO(&node->log, "own socket: this host's NAT maps each destination anew: connections "
                          "stay proxied");
    o->said_random = true;
    if (o->offered.family) kp_hp_set_own_socket(node->hp, NULL, NULL, now);
    memset(&o->offered, 0, sizeof(o->offered));
    return;
  }
  if (kp_addr_eq(addr, &o->offered)) return;
  o->offered = *addr;
  KP_INFO(&node->log, "own socket at %s: proxied connections go direct where they can",
          kp_addr_format(addr, text, sizeof(text)));
  kp_hp_set_own_socket(node->hp, o->sock, addr, now);
}

static void on_other(void *ctx, const kp_addr_t *from, const uint8_t *data, size_t len) {
  kp_node_own_t *o = ctx;
  kp_node_t *node = o->node;
  kp_dht_msg_t m;
  if (kp_dht_msg_decode(data, len, from->family, &m) || m.type != KP_DHT_RESPONSE) {
    node->drops_other++;
    return;
  }
  unsigned i = (unsigned)(uint16_t)(m.tid - tid_of(o, 0));
  if (i >= ASK || !kp_addr_eq(from, &o->asked[i]) || !m.to.family) {
    node->drops_other++;
    return;
  }
  o->seen[i] = m.to;
  if (!o->seen[0].family || !o->seen[1].family) return;
  uint64_t now = kp__node_now(node);
  KP_NODE_FEED(node, offer(o, kp_addr_eq(&o->seen[0], &o->seen[1]) ? &o->seen[0] : NULL, now));
  o->next_at = now + REFRESH_MS;
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
  o->sock = kp_socket_pool_open_own(node->sockets, on_other, o);
  if (!o->sock) {
    kp_free(o);
    return UV_EMFILE;
  }
  o->next_at = kp__node_now(node) + RETRY_MS; /* the DHT has nodes by then */
  kp_dht_ticker_t t = {.tick = tick, .deadline = deadline, .ctx = o};
  int err = kp_dht_add_ticker(node->dht, &t);
  if (err) {
    kp_free(o);
    return err;
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
