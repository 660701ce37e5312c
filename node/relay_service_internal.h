/* SPDX-License-Identifier: MIT */
/* The relay service's insides, shared by relay_service.c (UDP, tick,
 * announcement) and relay_service_tcp.c (the TCP port). */
#ifndef KP_NODE_RELAY_SERVICE_INTERNAL_H
#define KP_NODE_RELAY_SERVICE_INTERNAL_H

#include "node/node_internal.h"
#include "node/relay_service.h"
#include "relay/relay.h"

typedef struct tlink_s tlink_t;

struct kp_relay_service_s {
  kp_node_t *node;
  kp_relay_t *relay;
  kp_keypair_t kp; /* the key the relay announces under */
  kp_announce_t *announce;
  /* A dual-stack relay announces over each family from that family's
   * node, its own address first (the one the storing nodes check), then
   * the other's once known ([1]: the sibling's). */
  kp_announce_t *announce_other;
  bool named_both[2];
  uv_timer_t timer;
  uv_tcp_t tcp;     /* the TCP port */
  unsigned handles; /* libuv handles not closed yet (timer, TCP port) */
  /* TCP links from peers whose UDP is blocked. */
  tlink_t *tlinks;
  unsigned tcp_links, tcp_max, tcp_per_ip, tcp_closing, tcp_allocs;
  uint64_t tcp_rate, tcp_drops, tcp_refused, tcp_stalled;
  void (*tap)(void *ctx, const uint8_t *data, size_t len);
  void *tap_ctx;
  bool closing;
  kp_relay_service_close_cb close_cb;
  void *close_arg;
};

/* relay_service_tcp.c: the TCP port (max_links links at most, per_ip of
 * them from one IP, rate bytes/s each way per link); closing links that
 * leave their frames unread (each second); closing the port and every link. */
int kp__relay_tcp_start(kp_relay_service_t *svc, uint64_t rate, unsigned max_links,
                        unsigned per_ip);
void kp__relay_tcp_sweep(kp_relay_service_t *svc);
void kp__relay_tcp_close(kp_relay_service_t *svc);

/* Frees the service once nothing of it is open (relay_service.c). */
void kp__relay_service_maybe_finish(kp_relay_service_t *svc);

#endif
