/* SPDX-License-Identifier: MIT */
/* A node's extra sockets (socket_pool.h). */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "node/socket_pool.h"
#include "stream/uv/endpoint.h"
#include "stream/stream_frame.h"
#include "relay/relay.h"
#include "relay/uv/tunnel.h"
#include "node/node_proxy.h"

/* A won socket outlives its last connection by the holepunch linger, when
 * the state machine may still send a probe on it. */
#define WON_GRACE_MS 6000

typedef struct xsock_s xsock_t;

struct xsock_s {
  kp_udp_t udp;
  kp_socket_pool_t *pool;
  xsock_t *next;
  kp_endpoint_t *ep; /* made for the first connection on it */
  bool won;          /* the state machine handed it over */
  uint64_t idle_since;
  /* A proxied node's own socket: kept, and what is not ours goes here. */
  kp_socket_pool_other_fn other;
  void *other_ctx;
};

struct kp_socket_pool_s {
  kp_node_t *node;
  xsock_t *socks;
  unsigned count, closing; /* open, and closing */
  bool closed;
  kp_socket_pool_close_cb close_cb;
  void *close_arg;
};

static void unlink_xsock(xsock_t *x) {
  for (xsock_t **p = &x->pool->socks; *p; p = &(*p)->next) {
    if (*p == x) {
      *p = x->next;
      return;
    }
  }
}

static void maybe_finish(kp_socket_pool_t *pool) {
  if (!pool->closed || pool->socks || pool->closing) return;
  if (pool->close_cb) pool->close_cb(pool, pool->close_arg);
  kp_free(pool);
}

static void on_closed(kp_udp_t *udp) {
  xsock_t *x = udp->data;
  kp_socket_pool_t *pool = x->pool;
  kp_free(x);
  pool->closing--;
  maybe_finish(pool);
}

static void on_ep_closed(kp_endpoint_t *ep) {
  xsock_t *x = ep->udp->data;
  x->ep = NULL;
  kp_udp_close(&x->udp, on_closed);
}

static void xsock_close(xsock_t *x) {
  kp_socket_pool_t *pool = x->pool;
  /* No path may send from it any more. */
  if (pool->node->hp) kp_hp_socket_closed(pool->node->hp, x);
  unlink_xsock(x);
  pool->count--;
  pool->closing++;
  if (x->ep) {
    kp_endpoint_close(x->ep, on_ep_closed);
  } else {
    kp_udp_close(&x->udp, on_closed);
  }
}

static void on_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  xsock_t *x = udp->data;
  kp_node_t *node = x->pool->node;
  if (node->closing) return;
  if (kp_stream_is_packet(data, len) && x->ep) {
    kp__endpoint_input(x->ep, from, data, len);
  } else if (kp_probe_is_packet(data, len)) {
    KP_NODE_FEED(node, kp_hp_recv_probe(node->hp, x, from, data, len, kp__node_now(node)));
  } else if (kp_relay_is_ctrl(data, len)) {
    KP_NODE_FEED(node, kp_hp_recv_relay(node->hp, x, from, data, len, kp__node_now(node)));
  } else if (x->other) {
    x->other(x->other_ctx, from, data, len);
  } else {
    node->drops_other++;
  }
}

static xsock_t *open_sock(kp_socket_pool_t *pool, bool real) {
  kp_node_t *node = pool->node;
  if (node->closing || pool->closed) return NULL;
  xsock_t *x = kp_calloc(1, sizeof(*x));
  if (!x) return NULL;
  kp_addr_t any = node->sock.local;
  memset(&any.ip, 0, sizeof(any.ip));
  any.port = 0;
  if (real               ? kp_udp_init(node->loop, &x->udp, &any, NULL)
      : node->proxy_link ? kp_proxy_link_socket(node->proxy_link, &x->udp)
      : node->tunnel     ? kp_tunnel_socket(node->tunnel, &x->udp)
                         : kp_udp_init(node->loop, &x->udp, &any, NULL)) {
    /* Out of descriptors, most likely: the punch goes on with fewer. */
    kp_free(x);
    return NULL;
  }
  x->udp.data = x;
  x->pool = pool;
  kp_udp_recv_start(&x->udp, on_datagram);
  x->next = pool->socks;
  pool->socks = x;
  pool->count++;
  return x;
}

static void *xsock_open(void *ctx) {
  return open_sock(ctx, false);
}

void *kp_socket_pool_open_own(kp_socket_pool_t *pool, kp_socket_pool_other_fn other, void *ctx) {
  xsock_t *x = open_sock(pool, true);
  if (!x) return NULL;
  x->other = other;
  x->other_ctx = ctx;
  return x;
}

static void xsock_send(void *ctx, void *sock, const kp_addr_t *to, const uint8_t *data,
                       size_t len) {
  kp_socket_pool_t *pool = ctx;
  xsock_t *x = sock;
  /* Closing: every extra socket is already on its way out. */
  if (!pool->closed) kp_udp_send(&x->udp, to, data, len);
}

void kp_socket_pool_send(kp_socket_pool_t *pool, void *sock, const kp_addr_t *to,
                         const uint8_t *data, size_t len) {
  xsock_send(pool, sock, to, data, len);
}

static void xsock_release(void *ctx, void *sock) {
  kp_socket_pool_t *pool = ctx;
  if (!pool->closed) xsock_close(sock);
}

int kp_socket_pool_create(kp_node_t *node, kp_socket_pool_t **out) {
  *out = kp_calloc(1, sizeof(**out));
  if (!*out) return UV_ENOMEM;
  (*out)->node = node;
  return 0;
}

void kp_socket_pool_io(kp_socket_pool_t *pool, kp_hp_io_t *io) {
  io->open = xsock_open;
  io->send_from = xsock_send;
  io->close = xsock_release;
  io->sockets_ctx = pool;
}

int kp_socket_pool_endpoint(kp_socket_pool_t *pool, void *sock, kp_endpoint_t **out) {
  kp_node_t *node = pool->node;
  xsock_t *x = sock;
  x->won = true;
  x->idle_since = kp__node_now(node);
  if (!x->ep) {
    int err = kp__endpoint_attach(node->loop, &x->udp, &x->ep);
    if (err) return err;
    /* A connection's socket now (a relay's session, a punched path): the
     * room the node's main socket has for its bursts. Only these: a
     * birthday's hundreds of sockets keep the kernel's default. */
    kp_udp_set_buffers(&x->udp, KP_UDP_NODE_BUF, KP_UDP_NODE_BUF);
    kp__endpoint_set_rx_budget(x->ep, &node->rx_budget);
  }
  *out = x->ep;
  return 0;
}

void kp_socket_pool_sweep(kp_socket_pool_t *pool, uint64_t now) {
  xsock_t *x = pool->socks;
  while (x) {
    xsock_t *next = x->next;
    if (x->won && !x->other) {
      if ((x->ep && x->ep->conn_count) || kp__node_conns_hold(pool->node, x)) {
        x->idle_since = now;
      } else if (now >= x->idle_since + WON_GRACE_MS) {
        xsock_close(x);
      }
    }
    x = next;
  }
}

unsigned kp_socket_pool_count(const kp_socket_pool_t *pool) {
  return pool->count;
}

void kp_socket_pool_close(kp_socket_pool_t *pool, kp_socket_pool_close_cb cb, void *arg) {
  if (pool->closed) return;
  pool->closed = true;
  pool->close_cb = cb;
  pool->close_arg = arg;
  while (pool->socks) xsock_close(pool->socks);
  maybe_finish(pool);
}
