/* SPDX-License-Identifier: MIT */
/* A relay's TCP port (relay/uv/tunnel.h): peers whose UDP is blocked connect
 * here, and each channel they open gets an allocation, a UDP socket of its
 * own on the relay's address. Through it the peer is an ordinary DHT node
 * and pairs at this relay like anyone else, so the relay state machine and
 * the rest of the node need not know TCP exists.
 *
 * What an allocation may do is narrow, so the relay cannot be aimed at a
 * third party: it sends DHT messages (any DHT node does), and anything to
 * this relay itself (pairing, then paired traffic, which the relay forwards
 * only to the one peer that paired); it passes back DHT messages, and
 * anything from this relay. Per link: a byte rate (the relay's per-session
 * rate, each way) and a pairing-attempt rate. */
#include <string.h>

#include "common/alloc.h"
#include "common/ratelimit.h"
#include "dht/dht_msg.h"
#include "node/relay_service_internal.h"
#include "relay/uv/tunnel.h"

#define TCP_BACKLOG 64
#define LINK_PAIRS_PER_S 10
/* A link that leaves its frames unread this long is closed: its peer is
 * not reading, and holding its backlog would only cost us memory. */
#define LINK_STALL_MS 10000
/* Allocations over all links: each is a file descriptor, and the relay's
 * own sockets must not run out (links x 16 channels would). */
#define MAX_ALLOCS 512

typedef struct alloc_s {
  tlink_t *link;
  uint16_t channel;
  kp_udp_t udp;
  kp_addr_t addr; /* as the peer and the world know it */
} alloc_t;

struct tlink_s {
  kp_tunnel_io_t io;
  kp_relay_service_t *svc;
  tlink_t *next;
  kp_addr_t peer; /* the TCP peer's address */
  alloc_t *alloc[KP_TUNNEL_CHANNELS];
  unsigned allocs_closing;
  bool closing;
  kp_bucket_t pairs;
  kp_bucket_t bytes[2]; /* each way (0: from the peer) */
};

static tlink_t *of_io(kp_tunnel_io_t *io) {
  return (tlink_t *)((char *)io - offsetof(tlink_t, io));
}

typedef enum { SCOPE_BAD, SCOPE_LOOPBACK, SCOPE_PRIVATE, SCOPE_PUBLIC } scope_t;

static scope_t scope_of(const kp_addr_t *a) {
  const uint8_t *ip = a->ip;
  bool v4 = a->family == KP_AF_INET;
  if (!a->port || kp_addr_is_any(a) || (v4 && (ip[0] >= 224 || ip[0] == 0)) ||
      (!v4 && ip[0] == 0xff))
    return SCOPE_BAD; /* multicast, broadcast, reserved, unspecified */
  if (kp_addr_is_loopback(a)) return SCOPE_LOOPBACK;
  return kp_addr_is_private(a) ? SCOPE_PRIVATE : SCOPE_PUBLIC;
}

/* A datagram an allocation may carry to or from `peer`: a well-formed DHT
 * message, and only with addresses of the relay's own scope (a public
 * relay must not become a way into its loopback or its LAN). */
static bool dht_ok(const alloc_t *a, const kp_addr_t *peer, const uint8_t *data, size_t len) {
  kp_dht_msg_t msg;
  return kp_dht_msg_is_control(data, len) && scope_of(peer) != SCOPE_BAD &&
         scope_of(peer) == scope_of(&a->addr) && !kp_dht_msg_decode(data, len, peer->family, &msg);
}

/* The relay's own UDP address as an allocation reaches it. */
static void self_addr(const alloc_t *a, kp_addr_t *out) {
  *out = a->addr;
  out->port = a->link->svc->node->sock.local.port;
}

/* The relay's per-session rate each way (a second of burst), and the
 * relay's total rate: TCP allocations are not a way around it. */
static bool rate_ok(tlink_t *l, int dir, size_t len) {
  kp_relay_service_t *svc = l->svc;
  uint64_t rate = svc->tcp_rate, now = kp__node_now(svc->node);
  return kp_bucket_take(&l->bytes[dir], rate, rate, len, now) &&
         kp_relay_charge(svc->relay, len, now);
}

/* ---- Allocations --------------------------------------------------------------------- */

static void on_alloc_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  alloc_t *a = udp->data;
  tlink_t *l = a->link;
  kp_addr_t self;
  self_addr(a, &self);
  bool ok = kp_addr_eq(from, &self) || dht_ok(a, from, data, len);
  kp_tunnel_frame_t f = {
      .type = KP_TUNNEL_DATA, .channel = a->channel, .addr = *from, .data = data, .len = len};
  if (!ok || !rate_ok(l, 1, len) || !kp_tunnel_io_send(&l->io, &f)) l->svc->tcp_drops++;
}

static void link_maybe_free(tlink_t *l);

static void on_alloc_closed(kp_udp_t *udp) {
  alloc_t *a = udp->data;
  tlink_t *l = a->link;
  kp_free(a);
  l->allocs_closing--;
  link_maybe_free(l);
}

static void alloc_close(tlink_t *l, uint16_t c) {
  alloc_t *a = l->alloc[c];
  if (!a) return;
  l->alloc[c] = NULL;
  l->allocs_closing++;
  l->svc->tcp_allocs--;
  /* The kernel will hand the port to someone else; the pairing must not
   * follow it there. */
  kp_relay_forget(l->svc->relay, &a->addr);
  kp_udp_close(&a->udp, on_alloc_closed);
}

static void alloc_open(tlink_t *l, uint16_t c) {
  kp_relay_service_t *svc = l->svc;
  kp_node_t *node = svc->node;
  kp_tunnel_frame_t f = {.type = KP_TUNNEL_REFUSED, .channel = c, .reason = KP_RELAY_REFUSE_FULL};
  alloc_t *a = l->alloc[c] || svc->tcp_allocs >= MAX_ALLOCS ? NULL : kp_calloc(1, sizeof(*a));
  if (!a) {
    kp_tunnel_io_send(&l->io, &f);
    return;
  }
  kp_addr_t bind = node->sock.local;
  bind.port = 0;
  if (kp_udp_init(node->loop, &a->udp, &bind, NULL)) {
    kp_free(a);
    kp_tunnel_io_send(&l->io, &f);
    return;
  }
  a->link = l;
  a->channel = c;
  a->udp.data = a;
  /* Known to the world by the relay's public IP (the bound one, else what
   * the DHT says it is). */
  kp_addr_t pub;
  a->addr = a->udp.local;
  if (kp_addr_is_any(&node->sock.local) && !kp_node_public_addr(node, &pub)) {
    pub.port = a->addr.port;
    a->addr = pub;
  }
  kp_udp_recv_start(&a->udp, on_alloc_datagram);
  kp_relay_set_own_ip(svc->relay, &a->addr);
  l->alloc[c] = a;
  svc->tcp_allocs++;
  f = (kp_tunnel_frame_t){.type = KP_TUNNEL_OPENED, .channel = c, .addr = a->addr};
  kp_tunnel_io_send(&l->io, &f);
}

/* A datagram the peer wants sent from its allocation. */
static void alloc_send(tlink_t *l, const kp_tunnel_frame_t *f) {
  alloc_t *a = l->alloc[f->channel];
  kp_relay_service_t *svc = l->svc;
  if (!a) return;
  kp_addr_t self;
  self_addr(a, &self);
  bool to_self = kp_addr_eq(&f->addr, &self);
  bool ok = to_self || dht_ok(a, &f->addr, f->data, f->len);
  if (ok && to_self && kp_relay_is_ctrl(f->data, f->len))
    ok = kp_bucket_take(&l->pairs, LINK_PAIRS_PER_S, LINK_PAIRS_PER_S, 1, kp__node_now(svc->node));
  if (!ok || !rate_ok(l, 0, f->len) || kp_udp_send(&a->udp, &f->addr, f->data, f->len))
    svc->tcp_drops++;
}

/* ---- Links ------------------------------------------------------------------------------ */

static void unlink_link(tlink_t *l) {
  for (tlink_t **p = &l->svc->tlinks; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      return;
    }
  }
}

static void on_link_closed(kp_tunnel_io_t *io) {
  tlink_t *l = of_io(io);
  kp_relay_service_t *svc = l->svc;
  kp_free(l);
  svc->tcp_closing--;
  kp__relay_service_maybe_finish(svc);
}

static void link_maybe_free(tlink_t *l) {
  if (l->closing && !l->allocs_closing) kp_tunnel_io_close(&l->io, on_link_closed);
}

static void link_close(tlink_t *l) {
  if (l->closing) return;
  l->closing = true;
  /* Nothing more is read: a frame now could open an allocation on a link
   * about to be freed. */
  uv_read_stop((uv_stream_t *)&l->io.tcp);
  l->io.ended = true;
  unlink_link(l);
  l->svc->tcp_links--;
  l->svc->tcp_closing++;
  for (uint16_t c = 0; c < KP_TUNNEL_CHANNELS; c++) alloc_close(l, c);
  link_maybe_free(l);
}

static bool on_frame(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f) {
  tlink_t *l = of_io(io);
  if (l->closing) return false;
  switch (f->type) {
    case KP_TUNNEL_OPEN: alloc_open(l, f->channel); break;
    case KP_TUNNEL_DATA: alloc_send(l, f); break;
    case KP_TUNNEL_CLOSE: alloc_close(l, f->channel); break;
    default: break; /* relay -> peer frames from a peer: ignored */
  }
  /* Our answers found no room even with the control frames' slack: the
   * peer sends without reading. */
  if (io->overflow) {
    l->svc->tcp_stalled++;
    link_close(l);
    return false;
  }
  return true;
}

static void on_end(kp_tunnel_io_t *io, int status) {
  (void)status;
  link_close(of_io(io));
}

/* Links the same IP (IPv6: /64) holds already. */
static unsigned links_of(const kp_relay_service_t *svc, const kp_addr_t *peer) {
  unsigned n = 0;
  for (const tlink_t *l = svc->tlinks; l; l = l->next) n += kp_addr_same_host(&l->peer, peer);
  return n;
}

static void on_connection(uv_stream_t *server, int status) {
  kp_relay_service_t *svc = server->data;
  if (status || svc->closing) return;
  tlink_t *l = kp_calloc(1, sizeof(*l));
  if (!l || kp_tunnel_io_init(svc->node->loop, &l->io)) {
    /* Accept and drop it anyway: libuv polls the listener again only
     * after an accept. */
    kp_free(l);
    svc->tcp_refused++;
    kp_tunnel_refuse(svc->node->loop, server);
    return;
  }
  l->svc = svc;
  l->io.on_frame = on_frame;
  l->io.on_end = on_end;
  l->next = svc->tlinks;
  svc->tlinks = l;
  svc->tcp_links++;
  uint64_t now = kp__node_now(svc->node);
  kp_bucket_init(&l->bytes[0], svc->tcp_rate, now);
  kp_bucket_init(&l->bytes[1], svc->tcp_rate, now);
  kp_bucket_init(&l->pairs, LINK_PAIRS_PER_S, now);
  if (kp_tunnel_io_accept(&l->io, server, &l->peer) || kp_tunnel_io_start(&l->io) ||
      svc->tcp_links > svc->tcp_max || links_of(svc, &l->peer) > svc->tcp_per_ip) {
    /* Over the limit: the peer sees the connection close at once. */
    svc->tcp_refused++;
    link_close(l);
  }
}

/* ---- The port ------------------------------------------------------------------------------ */

void kp__relay_tcp_sweep(kp_relay_service_t *svc) {
  for (tlink_t *l = svc->tlinks, *next; l; l = next) {
    next = l->next;
    if (!kp_tunnel_io_stalled(&l->io, LINK_STALL_MS)) continue;
    svc->tcp_stalled++;
    link_close(l);
  }
}

int kp__relay_tcp_start(kp_relay_service_t *svc, uint64_t rate, unsigned max_links,
                        unsigned per_ip) {
  kp_node_t *node = svc->node;
  struct sockaddr_storage ss;
  kp_addr_to_sockaddr(&node->sock.local, &ss);
  int err = uv_tcp_init(node->loop, &svc->tcp);
  if (err) return err;
  svc->tcp.data = svc;
  svc->handles++;
  svc->tcp_rate = rate;
  svc->tcp_max = max_links;
  svc->tcp_per_ip = per_ip;
  err = uv_tcp_bind(&svc->tcp, (struct sockaddr *)&ss, 0);
  if (!err) err = uv_listen((uv_stream_t *)&svc->tcp, TCP_BACKLOG, on_connection);
  return err;
}

static void on_listener_closed(uv_handle_t *h) {
  kp_relay_service_t *svc = h->data;
  svc->handles--;
  kp__relay_service_maybe_finish(svc);
}

void kp__relay_tcp_close(kp_relay_service_t *svc) {
  if (svc->tcp.data && !uv_is_closing((uv_handle_t *)&svc->tcp))
    uv_close((uv_handle_t *)&svc->tcp, on_listener_closed);
  kp_relay_service_drop_links(svc);
}

void kp_relay_service_drop_links(kp_relay_service_t *svc) {
  while (svc->tlinks) link_close(svc->tlinks);
}
