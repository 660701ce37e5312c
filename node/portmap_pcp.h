/* SPDX-License-Identifier: MIT */
/* A UDP mapping at the gateway asked for with PCP (RFC 6887), the successor
 * of NAT-PMP that gateways speak on the same port: one socket connected to
 * gateway:5351, one request in flight at a time, retransmitted at 250 ms
 * doubling. No Debian package offers a PCP client, so the exchange is ours
 * (pcp_msg.c, fuzzed); it is one message and its answer. */
#ifndef KP_NODE_PORTMAP_PCP_H
#define KP_NODE_PORTMAP_PCP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kadpunch_base.h"

typedef struct kp_pcp_s kp_pcp_t;

typedef enum kp_pcp_outcome_e {
  KP_PCP_MAPPED,  /* external forwards to the port */
  KP_PCP_DELETED, /* the gateway confirmed the delete */
  KP_PCP_REFUSED, /* the gateway speaks PCP and said no: why */
  KP_PCP_NO_PCP,  /* it does not (an older version, or nobody there, or silence): ask NAT-PMP */
} kp_pcp_outcome_t;

typedef struct kp_pcp_result_s {
  kp_pcp_outcome_t outcome;
  const char *why; /* not MAPPED: a static string */
  kp_addr_t external;
  uint32_t lifetime_s;
} kp_pcp_result_t;

typedef void (*kp_pcp_cb)(void *ctx, const kp_pcp_result_t *r);
typedef void (*kp_pcp_closed_cb)(void *ctx);

/* A client for UDP `port` of this host at gateway (port 5351 when 0): the
 * socket, and a nonce for the mapping's life. */
int kp_pcp_new(uv_loop_t *loop, const kp_addr_t *gateway, uint16_t port, kp_pcp_t **out);
/* Asks for (or renews: the same nonce and the port it had) a mapping of
 * lifetime_s, sending up to `tries` times; reports once. */
int kp_pcp_map(kp_pcp_t *p, uint32_t lifetime_s, unsigned tries, kp_pcp_cb cb, void *ctx);
/* Deletes the mapping (lifetime 0, the same nonce); reports once. */
int kp_pcp_unmap(kp_pcp_t *p, unsigned tries, kp_pcp_cb cb, void *ctx);
/* A request in flight stops unreported. */
void kp_pcp_cancel(kp_pcp_t *p);
bool kp_pcp_busy(const kp_pcp_t *p);
/* The gateway mapped the port once (from then on only answers with our
 * nonce count; and a close deletes). */
bool kp_pcp_has_mapped(const kp_pcp_t *p);
/* Answers that were not for us (counted drops). */
uint64_t kp_pcp_dropped(const kp_pcp_t *p);
/* Cancels, closes the socket, frees, then calls closed. */
void kp_pcp_close(kp_pcp_t *p, kp_pcp_closed_cb closed, void *ctx);

#endif
