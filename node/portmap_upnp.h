/* SPDX-License-Identifier: MIT */
/* UPnP-IGD port mapping through libminiupnpc, for gateways that do not
 * speak NAT-PMP (most home routers speak UPnP only). The library's calls
 * block (SSDP discovery, then HTTP/SOAP to the gateway), so each runs on
 * libuv's thread pool and reports on the loop. One call at a time. */
#ifndef KP_NODE_PORTMAP_UPNP_H
#define KP_NODE_PORTMAP_UPNP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kadpunch_base.h"

typedef struct kp_upnp_s kp_upnp_t;

typedef struct kp_upnp_result_s {
  int status;          /* 0: mapped (or deleted) */
  const char *why;     /* status != 0: a static string */
  kp_addr_t gateway;   /* the IGD's control address */
  kp_addr_t external;  /* mapped: the public address and port */
  uint32_t lifetime_s; /* 0: the gateway only takes permanent mappings */
} kp_upnp_result_t;

typedef void (*kp_upnp_cb)(void *ctx, const kp_upnp_result_t *res);
typedef void (*kp_upnp_closed_cb)(void *ctx);

kp_upnp_t *kp_upnp_new(uv_loop_t *loop, uint16_t port);
/* Finds the gateway (the first time; up to 1 s of SSDP) and maps UDP `port`
 * for lifetime_s, the external port the socket's own if free. */
int kp_upnp_map(kp_upnp_t *u, uint32_t lifetime_s, kp_upnp_cb cb, void *ctx);
/* Deletes the mapping made. */
int kp_upnp_unmap(kp_upnp_t *u, kp_upnp_cb cb, void *ctx);
bool kp_upnp_busy(const kp_upnp_t *u);
/* A gateway search in flight is left to end on its own (nothing was mapped
 * yet); true if there was one. No longer busy then, unless mapping. */
bool kp_upnp_leave_search(kp_upnp_t *u);
/* A mapping made and not deleted (not while busy). */
bool kp_upnp_has_mapping(const kp_upnp_t *u);
/* Only when no mapping or deletion is in flight (a search may be): leaves
 * the search, then frees everything and calls closed. */
void kp_upnp_close(kp_upnp_t *u, kp_upnp_closed_cb closed, void *ctx);

#endif
