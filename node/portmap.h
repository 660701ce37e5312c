/* SPDX-License-Identifier: MIT */
/* A port mapping for the node's socket at the IPv4 default gateway, asked
 * for with PCP (RFC 6887), NAT-PMP (RFC 6886, through libnatpmp) or
 * UPnP-IGD (libminiupnpc), the first the gateway speaks: it forwards a
 * public port to the socket and sends what the socket sends from that same
 * port, so a node behind a NAT that would give every destination a new port
 * has one stable public address that anyone can reach. Renewed at half its
 * lifetime, deleted on close. Glue: one socket to the gateway, two handles. */
#ifndef KP_NODE_PORTMAP_H
#define KP_NODE_PORTMAP_H

#include <uv.h>

#include "common/log.h"
#include "kadpunch.h"

typedef struct kp_portmap_s kp_portmap_t;

/* Called when the mapping's state changes, and once when the first attempt
 * has settled: mapped, refused, or no answer within 250 ms (the node holds
 * its first DHT datagrams until then, so that the NAT sees them leave from
 * the mapped port). */
typedef void (*kp_portmap_cb)(void *ctx, const kp_port_mapping_t *now, bool settled);
typedef void (*kp_portmap_closed_cb)(void *ctx);

/* Asks the default gateway (or `gateway`'s IP, when set: tests) to map UDP
 * `port` (the node's socket). Returns 0 and the portmap, whose callback
 * reports the outcome; a host with no IPv4 default gateway gets an
 * UNAVAILABLE report at once. */
int kp_portmap_start(uv_loop_t *loop, uint16_t port, const kp_addr_t *gateway, kp_log_t *log,
                     kp_portmap_cb cb, void *ctx, kp_portmap_t **out);

void kp_portmap_info(const kp_portmap_t *pm, kp_port_mapping_t *out);

/* Deletes the mapping at the gateway (waiting up to 500 ms for NAT-PMP's
 * answer, 750 ms for PCP's),
 * then frees everything and calls closed. */
void kp_portmap_close(kp_portmap_t *pm, kp_portmap_closed_cb closed, void *ctx);

#endif
