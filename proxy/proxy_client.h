/* SPDX-License-Identifier: MIT */
/* A peer's end of its session with a proxy (docs/protocol.md, "Proxying"):
 * fetches the proxy's key when only its address is known, runs the Noise
 * handshake, opens and refreshes an allocation per channel the peer uses,
 * and seals and opens the datagrams the peer sends and receives through
 * them. A session that goes silent is made again, and its channels
 * reopened (new allocations: new addresses, which the DHT takes as it
 * would a NAT rebinding).
 *
 * Pure: fed the time and the proxy's datagrams; sends through io. The
 * glue is node/node_proxy_client.c. */
#ifndef KP_PROXY_CLIENT_H
#define KP_PROXY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"
#include "kadpunch_base.h"
#include "proxy/proxy_msg.h"

typedef struct kp_proxy_client_io_s {
  void *ctx;
  /* A datagram for the proxy. */
  void (*send)(void *ctx, const uint8_t *data, size_t len);
  /* Channel ch has an allocation at addr (again after a refresh, or at a
   * new address after the session was made again). */
  void (*on_opened)(void *ctx, unsigned ch, const kp_addr_t *addr);
  /* A datagram arrived at channel ch's allocation from `from`. */
  void (*on_recv)(void *ctx, unsigned ch, const kp_addr_t *from, const uint8_t *data, size_t len);
  /* The proxy refused or ended channel ch's allocation (reason,
   * kp_proxy_reason_t); it is asked for again later. */
  void (*on_closed)(void *ctx, unsigned ch, uint8_t reason);
  /* The proxy refused the session (an authenticated refusal) or the
   * session went silent (reason 0): the client keeps trying. */
  void (*on_down)(void *ctx, uint8_t reason);
  /* Optional: a datagram for the proxy in two parts, a PASS's header and
   * the payload it carries, so the glue copies it once; without it the
   * parts are joined here and go through send. */
  void (*send_parts)(void *ctx, const uint8_t *head, size_t hlen, const uint8_t *body, size_t blen);
} kp_proxy_client_io_t;

typedef struct kp_proxy_client_stats_s {
  uint64_t sent, received, dropped; /* datagrams through the allocations */
  uint64_t passed;                  /* of sent and received: as PASS, unsealed */
  uint64_t stale;                   /* PASSes whose token names no binding */
  uint64_t forged, replayed, sessions, refusals;
  uint8_t last_refusal;
  bool up;
} kp_proxy_client_stats_t;

typedef struct kp_proxy_client_s kp_proxy_client_t;

/* self: the peer's identity (copied); proxy_key: the proxy's, or NULL to
 * ask the proxy for it (trusting the address the peer was given). */
int kp_proxy_client_new(const kp_keypair_t *self, const uint8_t *proxy_key, const kp_rng_t *rng,
                        const kp_proxy_client_io_t *io, uint64_t now, kp_proxy_client_t **out);
void kp_proxy_client_free(kp_proxy_client_t *c);
/* Its io from now on (a trial session taken on as the glue's own). */
void kp_proxy_client_set_io(kp_proxy_client_t *c, const kp_proxy_client_io_t *io);

/* A datagram from the proxy. */
void kp_proxy_client_input(kp_proxy_client_t *c, const uint8_t *data, size_t len, uint64_t now);
/* Wants an allocation on channel ch, an address of `family` (KP_AF_INET
 * or KP_AF_INET6: a dual-stack proxy lends either, whichever family the
 * session runs on), asked for until the proxy answers. */
void kp_proxy_client_open(kp_proxy_client_t *c, unsigned ch, uint8_t family, uint64_t now);
/* Whether channel ch has its allocation now, and where (*addr). */
bool kp_proxy_client_opened(const kp_proxy_client_t *c, unsigned ch, kp_addr_t *addr);
/* Gives channel ch's allocation back. */
void kp_proxy_client_close(kp_proxy_client_t *c, unsigned ch, uint64_t now);
/* Sends a datagram from channel ch's allocation: 0, KP_ESTATE (no
 * allocation yet: the datagram is lost, as on a network not yet up) or
 * KP_ETOOBIG (over KP_PROXY_MAX_PAYLOAD, or over KP_PROXY_MAX_PASS_PAYLOAD for
 * a bound connection's datagram, which goes as PASS). */
int kp_proxy_client_send(kp_proxy_client_t *c, unsigned ch, const kp_addr_t *to,
                         const uint8_t *data, size_t len, uint64_t now);
/* The way to the proxy was lost (a TCP connection dropped, and with it
 * the proxy's side of the session): a new session, and every channel
 * opened anew in it, as when the proxy goes silent. */
void kp_proxy_client_restart(kp_proxy_client_t *c, uint64_t now);
/* Retransmits, refreshes, keepalives; the next deadline. */
uint64_t kp_proxy_client_tick(kp_proxy_client_t *c, uint64_t now);
/* Channel ch's allocation address (unset: none yet). */
const kp_addr_t *kp_proxy_client_addr(const kp_proxy_client_t *c, unsigned ch);
const uint8_t *kp_proxy_client_proxy_key(const kp_proxy_client_t *c); /* NULL: not known yet */
void kp_proxy_client_stats(const kp_proxy_client_t *c, kp_proxy_client_stats_t *out);

#endif
