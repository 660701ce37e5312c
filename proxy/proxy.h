/* SPDX-License-Identifier: MIT */
/* A proxy node (DESIGN.md, "fallback"; docs/protocol.md, "Proxying"): it
 * lends peers a public endpoint. A peer opens a Noise session to the
 * proxy's key and asks for allocations, each a UDP socket of the proxy's;
 * it sends its own pre-built datagrams from them and hears what arrives
 * there. The proxy is blind: it holds no key of the peers' handshakes or
 * paths, only the session's, and forwards their sealed bytes unopened.
 *
 * What an allocation may send is narrow: destinations in the proxy's
 * scope, anything to an address that has sent to it (proven), and to the
 * others only DHT messages or a few small datagrams (probes) until they
 * answer; what arrives passes only from an IP the allocation has sent to
 * (a permit). Every table is fixed at creation.
 *
 * Pure: fed the time and datagrams; sends, opens and closes allocation
 * sockets through the caller's io. The glue is node/node_proxy.c. */
#ifndef KP_PROXY_H
#define KP_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"
#include "kadpunch_base.h"
#include "proxy/proxy_msg.h"

typedef struct kp_proxy_config_s {
  unsigned max_sessions;     /* sessions at once (256) */
  unsigned max_allocs;       /* allocations at once, all sessions (512) */
  unsigned allocs_per_key;   /* allocations one key may hold (4) */
  unsigned per_ip;           /* sessions, and allocations, one IP (IPv6 /64) may hold (16) */
  unsigned hello_rate;       /* HELLOs per second per IP (10, bursts of 20) */
  unsigned lifetime_s;       /* an allocation lives this long unless refreshed (600) */
  unsigned max_lifetime_s;   /* and never longer than this (86400) */
  uint64_t alloc_rate;       /* bytes/s per allocation and direction (8 MiB/s) */
  uint64_t alloc_pps;        /* datagrams/s per allocation and direction (8192) */
  uint64_t alloc_quota;      /* bytes an allocation may carry in all (0: no quota) */
  uint64_t total_rate;       /* bytes/s through every allocation (64 MiB/s) */
  unsigned idle_ms;          /* a session silent this long ends (60 s) */
  unsigned half_open_ms;     /* a session not yet used ends after this (10 s) */
  unsigned permits;          /* IPs an allocation hears from (64) */
  unsigned proven;           /* addresses an allocation keeps as proven (32, at most 256) */
  unsigned unproven_count;   /* small datagrams to an IP before it answers (8) */
  unsigned unproven_max_len; /* how small (128 bytes) */
  uint64_t unproven_rate;    /* DHT messages and small datagrams to unproven addresses, per
                                second per allocation (200, bursts of 400) */
  /* Keys that may use the proxy (allow_count of them); NULL: anyone. */
  const uint8_t (*allow)[KP_PUBLIC_KEY_LEN];
  size_t allow_count;
} kp_proxy_config_t;

void kp_proxy_config_defaults(kp_proxy_config_t *cfg);

/* Why a SEND or an arrival at an allocation was dropped (stats.drops). */
typedef enum {
  KP_PROXY_DROP_SCOPE = 0,    /* a destination outside the proxy's scope */
  KP_PROXY_DROP_UNPROVEN = 1, /* not a DHT message or small datagram, or over their count */
  KP_PROXY_DROP_RATE = 2,     /* over the allocation's or the total rate */
  KP_PROXY_DROP_PERMIT = 3,   /* arrived from an IP the allocation never sent to */
  KP_PROXY_DROP_TOO_BIG = 4,  /* arrived larger than a RECV can carry */
  KP_PROXY_DROP_NO_ALLOC = 5, /* a SEND on a channel without an allocation */
  KP_PROXY_DROP_STALE = 6,    /* a PASS whose token is no binding's, or from elsewhere */
  KP_PROXY_DROP_KINDS = 7,
} kp_proxy_drop_t;

typedef struct kp_proxy_stats_s {
  uint64_t hellos, welcomed, refused[KP_PROXY_REASON_MAX + 1];
  uint64_t forged, replayed, malformed, unknown_session, retransmits;
  uint64_t allocs_opened, allocs_closed;
  uint64_t left_ended; /* silent sessions ended for their key's newer one (at its cap) */
  uint64_t sent, sent_bytes, received, received_bytes;
  uint64_t passed; /* of those, datagrams that went as PASS (no sealing) */
  uint64_t bindings;
  uint64_t drops[KP_PROXY_DROP_KINDS];
  unsigned sessions, half_open, allocs; /* gauges */
} kp_proxy_stats_t;

/* The glue's side. ctx is passed back to each. */
typedef struct kp_proxy_io_s {
  void *ctx;
  /* A datagram to a peer, from the proxy's own socket. */
  void (*send)(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len);
  /* Opens allocation `slot`'s socket, of `family` (KP_AF_INET or
   * KP_AF_INET6, one kp_proxy_set_local named): 0 and its bound address,
   * or an error (the peer hears FULL). */
  int (*alloc_open)(void *ctx, unsigned slot, uint8_t family, kp_addr_t *bound);
  void (*alloc_send)(void *ctx, unsigned slot, const kp_addr_t *to, const uint8_t *data,
                     size_t len);
  /* The slot's socket is no longer the proxy's (no more input for it). */
  void (*alloc_close)(void *ctx, unsigned slot);
  /* Optional: send's datagram in two parts, a PASS's header and the
   * payload it carries, so the glue copies it once; without it the parts
   * are joined here and go through send. */
  void (*send_parts)(void *ctx, const kp_addr_t *to, const uint8_t *head, size_t hlen,
                     const uint8_t *body, size_t blen);
} kp_proxy_io_t;

typedef struct kp_proxy_s kp_proxy_t;

/* kp is the proxy's identity (copied); rng keys its tables and draws
 * session indexes and the Noise ephemerals. */
int kp_proxy_new(const kp_proxy_config_t *cfg, const kp_keypair_t *kp, const kp_rng_t *rng,
                 const kp_proxy_io_t *io, kp_proxy_t **out);
/* Closes every allocation (io->alloc_close) and frees. */
void kp_proxy_free(kp_proxy_t *px);

/* The proxy's own socket's address, and its public address when known:
 * they set its scope (loopback, private or public) and the IP allocations
 * may not aim at but for that port. Once per family the proxy serves (a
 * dual-stack proxy: both); a peer asks for an allocation of either, over
 * either (docs/protocol.md, "Proxying": a proxy bridges families). */
void kp_proxy_set_local(kp_proxy_t *px, const kp_addr_t *bound, const kp_addr_t *public_addr);

/* A session datagram (kp_proxy_is_packet) at the proxy's socket. */
void kp_proxy_input(kp_proxy_t *px, const kp_addr_t *from, const uint8_t *data, size_t len,
                    uint64_t now);
/* A datagram at allocation slot's socket. */
void kp_proxy_alloc_input(kp_proxy_t *px, unsigned slot, const kp_addr_t *from, const uint8_t *data,
                          size_t len, uint64_t now);
/* The peer at addr can no longer be reached there (its TCP link to the
 * proxy closed): its sessions end, with their allocations. */
void kp_proxy_forget(kp_proxy_t *px, const kp_addr_t *addr);
/* Ends expired allocations and silent sessions; the next deadline. */
uint64_t kp_proxy_tick(kp_proxy_t *px, uint64_t now);
void kp_proxy_stats(const kp_proxy_t *px, kp_proxy_stats_t *out);
const uint8_t *kp_proxy_public_key(const kp_proxy_t *px);

/* Whether a proxy whose own address is `self` may send to `to` (scope
 * only: loopback, private, link-local, unspecified, multicast). */
bool kp_proxy_in_scope(const kp_addr_t *self, const kp_addr_t *to);

#endif
