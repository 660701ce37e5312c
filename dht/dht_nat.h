/* SPDX-License-Identifier: MIT */
/* What the DHT learns about our own address and NAT.
 *
 * Every response carries `to`: our address as the responder saw it. Samples
 * from distinct reporters give the public address and the mapping behaviour
 * (RFC 4787 terms: endpoint-independent mapping shows up as the same address
 * towards everyone, CONSISTENT; address-dependent mapping as a new port per
 * destination, RANDOM). PING_NAT results give the filtering behaviour: a reply
 * from a port we never sent to reaches us only when unsolicited packets do.
 * A reporter is a host, not a socket: every port of one IPv4 address (one
 * IPv6 /64) counts as one reporter, so one machine cannot outvote the
 * others by answering from many ports (docs/protocol.md, "Membership").
 * Pure bookkeeping; the DHT decides when to ask (docs/architecture.md). */
#ifndef KP_DHT_NAT_H
#define KP_DHT_NAT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/addr.h"
#include "kadpunch_base.h"

#define KP_DHT_NAT_SAMPLES 8
/* Distinct nodes that must see our address / reach us unsolicited. */
#define KP_DHT_NAT_QUORUM 2

typedef struct kp_dht_nat_sample_s {
  kp_addr_t reporter; /* its latest address: one sample per host */
  kp_addr_t seen;
} kp_dht_nat_sample_t;

typedef struct kp_dht_nat_s {
  kp_dht_nat_sample_t samples[KP_DHT_NAT_SAMPLES]; /* newest first */
  unsigned count;
  kp_addr_t reach_ok[KP_DHT_NAT_QUORUM]; /* distinct hosts whose PING_NAT reply reached us */
  unsigned reach_ok_count;
  unsigned reach_fails; /* consecutive PING_NAT failures */
  bool reachable;
  bool has_public;
  kp_addr_t public_addr; /* for RANDOM only the IP is meaningful */
  uint64_t public_since; /* when the public address last changed */
  kp_nat_type_t type;
  /* A port mapping the gateway granted for our socket (kp_dht_nat_set_mapped). */
  bool has_mapped;
  kp_addr_t mapped;
} kp_dht_nat_t;

void kp_dht_nat_init(kp_dht_nat_t *nat);

/* Whether two addresses are one reporting host: the same IPv4 address or
 * IPv6 /64. On loopback, where every node of a testnet shares one address,
 * the host is the whole address (only that machine can send from there). */
bool kp_dht_nat_same_host(const kp_addr_t *a, const kp_addr_t *b);

/* Records that `reporter` saw us as `seen`. Returns true if the public
 * address changed (or became known). */
bool kp_dht_nat_add_sample(kp_dht_nat_t *nat, const kp_addr_t *reporter, const kp_addr_t *seen,
                           uint64_t now);

/* Records a PING_NAT outcome. Returns true if reachability flipped. */
bool kp_dht_nat_reach_result(kp_dht_nat_t *nat, const kp_addr_t *reporter, bool ok);

/* The address a port mapping at our gateway forwards to our socket, or NULL
 * when there is none (any longer). It is our public address while the
 * two newest reporters see the same IP (a gateway behind another NAT, carrier-
 * grade NAT say, maps an address nobody can reach, and reporters show it),
 * and the NAT then counts as OPEN: the gateway forwards whatever arrives at
 * the port, and sends from it toward everyone (membership still waits for
 * PING_NAT witnesses: `reachable`). Samples alone would say so
 * too, but only for flows that started after the mapping: a flow older
 * than it keeps the port the NAT gave it, and the DHT keeps its flows
 * alive. Returns true if the public address changed. */
bool kp_dht_nat_set_mapped(kp_dht_nat_t *nat, const kp_addr_t *mapped, uint64_t now);

/* Forgets everything it learnt (the network may have changed); a mapping
 * stays until its owner withdraws it. */
void kp_dht_nat_reset(kp_dht_nat_t *nat);

/* True if reporter's host already confirmed we are reachable. */
bool kp_dht_nat_reach_confirmed_by(const kp_dht_nat_t *nat, const kp_addr_t *reporter);

#endif
