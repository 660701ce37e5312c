/* The node's extra sockets: the birthday strategy's (holepunch/hp_birthday.c)
 * while a punch runs, and afterwards the one that won, which then carries
 * that connection (the punched NAT mapping belongs to it); a relay
 * pairing's, which carries a relayed connection and keeps punching to the
 * peer's (holepunch/hp_link.c). A socket handed over stays until no
 * connection runs on it and no connection's link holds it. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"
#include "stream/endpoint.h"
#include "stream/stream_frame.h"
#include "relay/relay.h"
#include "relay/tunnel.h"
#include "node/node_proxy.h"

/* A won socket outlives its last connection by the holepunch linger, when
 * the state machine may still send a probe on it. */
#define WON_GRACE_MS 6000

struct kp_node_xsock_s {
  kp_udp_t udp;
  kp_node_t *node;
  kp_node_xsock_t *next;
  kp_endpoint_t *ep; /* made for the first connection on it */
  bool won;          /* the state machine handed it over */
  uint64_t idle_since;
};

static void unlink_xsock(kp_node_xsock_t *x) {
  for (kp_node_xsock_t **p = &x->node->xsocks; *p; p = &(*p)->next) {
    if (*p == x) {
      *p = x->next;
      return;
    }
  }
}

static void on_closed(kp_udp_t *udp) {
  kp_node_xsock_t *x = udp->data;
  kp_node_t *node = x->node;
  kp_free(x);
  node->xsock_closing--;
  kp__node_maybe_finish_close(node);
}

static void on_ep_closed(kp_endpoint_t *ep) {
  kp_node_xsock_t *x = ep->udp->data;
  x->ep = NULL;
  kp_udp_close(&x->udp, on_closed);
}

static void xsock_close(kp_node_xsock_t *x) {
  /* No path may send from it any more. */
  if (x->node->hp) kp_hp_socket_closed(x->node->hp, x);
  unlink_xsock(x);
  x->node->xsock_count--;
  x->node->xsock_closing++;
  if (x->ep) {
    kp_endpoint_close(x->ep, on_ep_closed);
  } else {
    kp_udp_close(&x->udp, on_closed);
  }
}

static void on_datagram(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  kp_node_xsock_t *x = udp->data;
  kp_node_t *node = x->node;
  if (node->closing) return;
  if (kp_stream_is_packet(data, len) && x->ep) {
    kp__endpoint_input(x->ep, from, data, len);
  } else if (kp_probe_is_packet(data, len)) {
    KP_NODE_FEED(node, kp_hp_recv_probe(node->hp, x, from, data, len, kp__node_now(node)));
  } else if (kp_relay_is_ctrl(data, len)) {
    KP_NODE_FEED(node, kp_hp_recv_relay(node->hp, x, from, data, len, kp__node_now(node)));
  } else {
    node->drops_other++;
  }
}

static void *xsock_open(void *ctx) {
  kp_node_t *node = ctx;
  if (node->closing) return NULL;
  kp_node_xsock_t *x = kp_calloc(1, sizeof(*x));
  if (!x) return NULL;
  kp_addr_t any = node->sock.local;
  memset(&any.ip, 0, sizeof(any.ip));
  any.port = 0;
  if (node->proxy_link ? kp_proxy_link_socket(node->proxy_link, &x->udp)
      : node->tunnel   ? kp_tunnel_socket(node->tunnel, &x->udp)
                       : kp_udp_init(node->loop, &x->udp, &any, NULL)) {
    /* Out of descriptors, most likely: the punch goes on with fewer. */
    kp_free(x);
    return NULL;
  }
  x->udp.data = x;
  x->node = node;
  kp_udp_recv_start(&x->udp, on_datagram);
  x->next = node->xsocks;
  node->xsocks = x;
  node->xsock_count++;
  return x;
}

static void xsock_send(void *ctx, void *sock, const kp_addr_t *to, const uint8_t *data,
                       size_t len) {
  kp_node_t *node = ctx;
  kp_node_xsock_t *x = sock;
  /* Closing: every extra socket is already on its way out. */
  if (!node->closing) kp_udp_send(&x->udp, to, data, len);
}

static void xsock_release(void *ctx, void *sock) {
  kp_node_t *node = ctx;
  if (!node->closing) xsock_close(sock);
}

void kp__node_xsock_io(kp_node_t *node, kp_hp_io_t *io) {
  io->open = xsock_open;
  io->send_from = xsock_send;
  io->close = xsock_release;
  (void)node;
}

int kp__node_xsock_endpoint(kp_node_t *node, void *sock, kp_endpoint_t **out) {
  kp_node_xsock_t *x = sock;
  x->won = true;
  x->idle_since = kp__node_now(node);
  if (!x->ep) {
    int err = kp__endpoint_attach(node->loop, &x->udp, &x->ep);
    if (err) return err;
    kp__endpoint_set_rx_budget(x->ep, &node->rx_budget);
  }
  *out = x->ep;
  return 0;
}

void kp__node_xsock_sweep(kp_node_t *node, uint64_t now) {
  kp_node_xsock_t *x = node->xsocks;
  while (x) {
    kp_node_xsock_t *next = x->next;
    if (x->won) {
      if ((x->ep && x->ep->conn_count) || kp__node_conns_hold(node, x)) {
        x->idle_since = now;
      } else if (now >= x->idle_since + WON_GRACE_MS) {
        xsock_close(x);
      }
    }
    x = next;
  }
}

void kp__node_xsock_close_all(kp_node_t *node) {
  while (node->xsocks) xsock_close(node->xsocks);
}
