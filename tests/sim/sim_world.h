/* SPDX-License-Identifier: MIT */
/* A DHT population as the internet has one, on the simulator: public hosts
 * and hosts behind NATs and firewalls in a chosen mix, public addresses
 * spread over /24s with some shared, a latency that depends on where each
 * end sits, and churn: every node leaves when its session ends (abruptly,
 * as a closed laptop does) and a newcomer at a new address takes its place,
 * so the population stays the same size. Deterministic from its seed.
 *
 * tools/sim_dht prints phases of it; the test dht.sim_10k holds it to its
 * figures. docs/benchmarks.md, "The DHT at scale", describes the model and
 * where its numbers come from. */
#ifndef KP_TEST_SIM_WORLD_H
#define KP_TEST_SIM_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/sim/sim_dht.h"

/* How a host reaches the internet. */
typedef enum {
  KP_WORLD_PUBLIC,     /* its own public address, nothing in the way: a member */
  KP_WORLD_FULL_CONE,  /* consistent NAT, open filtering: reachable, a member */
  KP_WORLD_FIREWALLED, /* public address, stateful firewall: ephemeral */
  KP_WORLD_RESTRICTED, /* consistent NAT, port-restricted filtering: ephemeral */
  KP_WORLD_SYMMETRIC,  /* a new port per destination: ephemeral, RANDOM */
  KP_WORLD_CGNAT,      /* a carrier NAT shared by many hosts: ephemeral */
  KP_WORLD_KINDS
} kp_sim_world_kind_t;

typedef struct kp_sim_world_opts_s {
  size_t nodes; /* the population, bootstrap nodes included */
  uint64_t seed;
  unsigned bootstrap; /* stable public members everyone starts from (4) */
  unsigned join_ms;   /* the first population arrives over this long */
  double share[KP_WORLD_KINDS];
  double shared_prefix;    /* public hosts in a /24 with others (0.2) */
  unsigned cgnat_hosts;    /* hosts per carrier NAT (50) */
  double loss;             /* per datagram (0.005) */
  unsigned nat_timeout_ms; /* idle NAT state forgotten after (120 s) */
  /* Sessions: Weibull(shape, scale minutes). 0 scale: nobody leaves. */
  double session_shape;
  double session_scale_min;
  unsigned member_stable_ms; /* as in kp_dht_config_t (20 s) */
  bool swarms;               /* every node stores records and can announce and look up */
} kp_sim_world_opts_t;

typedef struct kp_sim_world_s kp_sim_world_t;

void kp_sim_world_opts_init(kp_sim_world_opts_t *o);
kp_sim_world_t *kp_sim_world_new(const kp_sim_world_opts_t *o);
void kp_sim_world_free(kp_sim_world_t *w);
kp_sim_t *kp_sim_world_sim(kp_sim_world_t *w);

/* Runs the network (and its churn) for ms of virtual time. */
void kp_sim_world_run(kp_sim_world_t *w, uint64_t ms);
/* Runs until the reachable hosts (those that can be members) that have
 * been up for member_stable_ms and a minute more have all joined, or
 * within_ms passes. */
bool kp_sim_world_run_settled(kp_sim_world_t *w, uint64_t within_ms);

typedef struct kp_sim_world_census_s {
  size_t live;
  size_t members;   /* DHT members */
  size_t joined;    /* members whose join lookups have run: what lookups must find */
  size_t reachable; /* hosts that can be members (public or full-cone) */
  size_t by_kind[KP_WORLD_KINDS];
  uint64_t departed;    /* sessions ended so far */
  size_t table_entries; /* routing-table entries, summed */
} kp_sim_world_census_t;

void kp_sim_world_census(const kp_sim_world_t *w, kp_sim_world_census_t *c);

typedef struct kp_sim_world_lookups_s {
  unsigned lookups;
  unsigned exact;  /* results equal the 20 closest live members when it ends */
  unsigned failed; /* no result at all */
  uint64_t hops, requests;
  uint64_t ms; /* summed virtual durations */
} kp_sim_world_lookups_t;

/* Runs n lookups of random targets from random live nodes, `parallel` at a
 * time, while the network runs on, and checks each against the brute-force
 * truth when it ends. */
void kp_sim_world_lookups(kp_sim_world_t *w, unsigned n, unsigned parallel,
                          kp_sim_world_lookups_t *out);

/* A live node chosen at random (NULL if none), and the ids of the k live
 * members closest to target: the truth a lookup is held to. */
kp_sim_dht_node_t *kp_sim_world_random_node(kp_sim_world_t *w);
size_t kp_sim_world_truth(const kp_sim_world_t *w, const uint8_t target[KP_ID_LEN],
                          const kp_sim_dht_node_t *skip, uint8_t out[][KP_ID_LEN], size_t k);
/* The same k live members themselves, closest first. */
size_t kp_sim_world_closest(const kp_sim_world_t *w, const uint8_t target[KP_ID_LEN],
                            kp_sim_dht_node_t **out, size_t k);

/* Bytes the DHT state machines hold, counted by the allocator hook that
 * kp_sim_world_count_memory() installs (call it before anything is made). */
void kp_sim_world_count_memory(void);
uint64_t kp_sim_world_dht_bytes(void);

#endif
