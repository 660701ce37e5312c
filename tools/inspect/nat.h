/* SPDX-License-Identifier: MIT */
/* What `kadpunch-inspect nat` measures for one address family: the address
 * several DHT nodes saw us at (the mapping), whether a reply from a port we
 * never sent to gets in (the filtering), and what that makes us. */
#ifndef KP_INSPECT_NAT_H
#define KP_INSPECT_NAT_H

#include "tools/inspect/inspect.h"

#define KP_INSPECT_NAT_SAMPLES 8
#define KP_INSPECT_NAT_CHECKS 3

typedef struct kp_inspect_nat_sample_s {
  kp_addr_t reporter;
  kp_addr_t seen; /* unset: no answer */
  double rtt_ms;
} kp_inspect_nat_sample_t;

typedef struct kp_inspect_nat_s kp_inspect_nat_t;

/* What a request's callback needs to file its answer. */
typedef struct kp_inspect_nat_probe_s {
  kp_inspect_nat_t *n;
  kp_inspect_nat_sample_t *sample; /* NULL: a PING_NAT */
} kp_inspect_nat_probe_t;

struct kp_inspect_nat_s {
  int family;
  bool answered; /* a DHT node answered at all */
  kp_addr_t local;
  size_t count;
  kp_inspect_nat_sample_t samples[KP_INSPECT_NAT_SAMPLES];
  unsigned pending;
  unsigned checks_tried, checks_reached; /* PING_NAT */
  kp_nat_type_t dht_type;                /* the node's own conclusion */
  bool dht_reachable;
  kp_port_mapping_t port_mapping; /* what the gateway offered (IPv4) */
  /* Derived by kp_inspect_nat_analyse. */
  kp_addr_t public_addr; /* the address most nodes saw */
  unsigned answers, distinct_seen, public_ips;
  bool behind_nat, port_preserved, consistent;
  const char *mapping; /* "endpoint-independent", "address-dependent", "unknown" */
  kp_nat_type_t type;
  kp_inspect_nat_probe_t probes[KP_INSPECT_NAT_SAMPLES + KP_INSPECT_NAT_CHECKS];
};

/* Joins the DHT of family through hosts and measures. Returns 0 (out->answered
 * false when no node answered), UV_ECANCELED on a signal, or a usage exit
 * code's cause (KP_EBADADDR ...). */
int kp_inspect_nat_probe(const kp_inspect_opts_t *o, int family, const char *const *hosts,
                         size_t count, kp_inspect_nat_t *out);
void kp_inspect_nat_analyse(kp_inspect_nat_t *n);

/* IPv6 on this machine: global addresses and whether a route to the
 * internet exists (no packet is sent). */
typedef struct kp_inspect_v6_s {
  size_t count;
  kp_addr_t addrs[8];
  bool route;
  kp_addr_t route_source;
  int route_error;
} kp_inspect_v6_t;

void kp_inspect_v6_local(kp_inspect_v6_t *v6);

#endif
