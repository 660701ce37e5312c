/* SPDX-License-Identifier: MIT */
/* A virtual network on a virtual clock, for running protocol state machines
 * by the thousand, deterministically from a seed.
 *
 * Hosts own sockets (an address and a receive callback). A host is either
 * on the simulated internet directly or behind a NAT. A NAT translates and
 * filters like a real one, in RFC 4787 terms:
 *   mapping    CONSISTENT (endpoint-independent, port-preserving when free)
 *              RANDOM     (a fresh port for every destination)
 *              NONE       (no translation: a firewall in front of a public host)
 *   filtering  OPEN       (anything reaches a mapped port)
 *              ADDRESS    (only from IPs the host has sent to)
 *              PORT       (only from the exact ip:port the host has sent to)
 * Hosts behind one NAT share a LAN: packets to a private (or loopback)
 * address reach a host behind the same NAT untranslated, in 1 ms. NATs do not hairpin (what
 * a host sends to its own NAT's public address is dropped).
 * Links add latency (uniform in [min, max]), random loss and duplication.
 *
 * Timers and packet deliveries are events in one queue ordered by time.
 * Sockets, NATs and NAT state are found by hash, so the cost of a packet
 * does not grow with the number of hosts. */
#ifndef KP_TEST_SIM_H
#define KP_TEST_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"

typedef struct kp_sim_s kp_sim_t;
typedef struct kp_sim_nat_s kp_sim_nat_t;
typedef struct kp_sim_socket_s kp_sim_socket_t;

typedef enum { KP_SIM_MAP_NONE, KP_SIM_MAP_CONSISTENT, KP_SIM_MAP_RANDOM } kp_sim_mapping_t;
typedef enum { KP_SIM_FILTER_OPEN, KP_SIM_FILTER_ADDRESS, KP_SIM_FILTER_PORT } kp_sim_filter_t;

typedef void (*kp_sim_recv_fn)(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from,
                               const uint8_t *data, size_t len, uint64_t now);
typedef void (*kp_sim_timer_fn)(void *ctx, uint64_t now);

typedef struct kp_sim_link_s {
  unsigned latency_min_ms;
  unsigned latency_max_ms;
  double loss;      /* probability a datagram is lost */
  double duplicate; /* probability a datagram arrives twice */
} kp_sim_link_t;

typedef struct kp_sim_stats_s {
  uint64_t sent;
  uint64_t delivered;
  uint64_t lost;
  uint64_t filtered;   /* dropped by a NAT's filter */
  uint64_t unroutable; /* no socket at the destination */
} kp_sim_stats_t;

kp_sim_t *kp_sim_new(uint64_t seed);
void kp_sim_free(kp_sim_t *sim);

uint64_t kp_sim_now(const kp_sim_t *sim);
kp_rng_t kp_sim_rng(kp_sim_t *sim);
void kp_sim_set_link(kp_sim_t *sim, const kp_sim_link_t *link);
/* Optional: the one-way latency (ms) of a datagram between two internet
 * addresses, instead of the link's uniform [min, max] (the link's loss and
 * duplication still apply; a LAN is still 1 ms). rng is the simulator's. */
typedef unsigned (*kp_sim_latency_fn)(void *ctx, const kp_addr_t *from, const kp_addr_t *to,
                                      kp_rng_t *rng);
void kp_sim_set_latency(kp_sim_t *sim, kp_sim_latency_fn fn, void *ctx);
const kp_sim_stats_t *kp_sim_stats(const kp_sim_t *sim);

/* A NAT with one public IPv4 address. */
kp_sim_nat_t *kp_sim_nat_new(kp_sim_t *sim, const kp_addr_t *public_ip, kp_sim_mapping_t mapping,
                             kp_sim_filter_t filter);
void kp_sim_nat_set_filter(kp_sim_nat_t *nat, kp_sim_filter_t filter);
/* Forgets a mapping, and a filter entry, idle for ms (as real NATs do after
 * 30 s to a few minutes). 0, the default: never. */
void kp_sim_nat_set_timeout(kp_sim_nat_t *nat, unsigned ms);
/* Forgets every mapping (a NAT reboot, or the mappings timing out). */
void kp_sim_nat_flush(kp_sim_nat_t *nat);
/* Removes a NAT whose hosts are gone (no socket may still use it). */
void kp_sim_nat_free(kp_sim_nat_t *nat);

/* A socket bound to addr. nat NULL: addr is reachable on the internet. */
kp_sim_socket_t *kp_sim_socket_new(kp_sim_t *sim, const kp_addr_t *addr, kp_sim_nat_t *nat,
                                   kp_sim_recv_fn recv, void *ctx);
void kp_sim_socket_free(kp_sim_socket_t *sock);
const kp_addr_t *kp_sim_socket_addr(const kp_sim_socket_t *sock);
/* Moves a socket behind another NAT (or none) and to a new address: the
 * host changed networks. */
void kp_sim_socket_move(kp_sim_socket_t *sock, const kp_addr_t *addr, kp_sim_nat_t *nat);

void kp_sim_send(kp_sim_socket_t *sock, const kp_addr_t *to, const uint8_t *data, size_t len);

/* Sees every datagram as it is sent: from is the sender's own address (inside
 * its NAT), to the destination. For tests that check what goes on the wire. */
typedef void (*kp_sim_tap_fn)(void *ctx, const kp_addr_t *from, const kp_addr_t *to,
                              const uint8_t *data, size_t len);
void kp_sim_set_tap(kp_sim_t *sim, kp_sim_tap_fn fn, void *ctx);

/* Drops every datagram fn says to (a path that eats one kind of packet);
 * from and to as for the tap. */
typedef bool (*kp_sim_drop_fn)(void *ctx, const kp_addr_t *from, const kp_addr_t *to,
                               const uint8_t *data, size_t len);
void kp_sim_set_drop(kp_sim_t *sim, kp_sim_drop_fn fn, void *ctx);

/* Schedules fn at time `at` (>= now). Returns an id for kp_sim_timer_cancel. */
uint64_t kp_sim_timer(kp_sim_t *sim, uint64_t at, kp_sim_timer_fn fn, void *ctx);
void kp_sim_timer_cancel(kp_sim_t *sim, uint64_t id);

/* Processes events up to and including time `until`; returns the number of
 * events processed. The clock ends at `until`. */
size_t kp_sim_run_until(kp_sim_t *sim, uint64_t until);
/* Runs until pred(ctx) holds (checked after every event) or `until`. */
bool kp_sim_run_while(kp_sim_t *sim, uint64_t until, bool (*pred)(void *ctx), void *ctx);

/* Jumps the clock forward without running anything in between (a machine
 * that slept): events that fell due are delivered late, at the new time. */
void kp_sim_jump(kp_sim_t *sim, uint64_t to);

#endif
