/* SPDX-License-Identifier: MIT */
/* A DHT of many real nodes on loopback in one process: the demo, the
 * loopback tests and the benchmarks all build their networks with it.
 *
 * Node 0 is the bootstrap node (a member by configuration); every other node
 * starts in AUTO mode, bootstraps from node 0, and becomes a member by the
 * same rules as on the internet (PING_NAT, a settled address), with the
 * stability window shortened so the network forms in seconds. */
#ifndef KP_NODE_TESTNET_H
#define KP_NODE_TESTNET_H

#include <stdbool.h>
#include <stddef.h>

#include "kadpunch.h"

typedef struct kp_testnet_options_s {
  size_t size; /* nodes, the bootstrap node included */
  /* "127.0.0.1" (default), "::1", or "dual": node 0 on both (a dual-stack
   * member), nodes added of either family or both (kp_testnet_add_stacks) */
  const char *host;
  unsigned member_stable_ms; /* default 0 */
  kp_log_level_t log_level;  /* default KP_LOG_WARN */
  /* Seed for each node's deterministic rng (0: the system CSPRNG). */
  uint64_t seed;
} kp_testnet_options_t;

typedef struct kp_testnet_s {
  uv_loop_t *loop;
  kp_node_t **nodes;
  size_t count;
  char bootstrap[KP_ADDR_STRLEN];  /* node 0's address */
  char bootstrap6[KP_ADDR_STRLEN]; /* a dual-stack testnet: node 0's IPv6 address */
  unsigned stacks;                 /* KP_TESTNET_V4 | KP_TESTNET_V6: what nodes may have */
  void *rngs;                      /* per-node seeded generators when a seed is set */
} kp_testnet_t;

void kp_testnet_options_init(kp_testnet_options_t *opts);

/* Creates the nodes (all or nothing). Returns 0 or the first error. */
int kp_testnet_create(uv_loop_t *loop, const kp_testnet_options_t *opts, kp_testnet_t *tn);

/* Adds one more node bootstrapping from node 0 (of the testnet's family;
 * a dual-stack testnet's are dual-stack). */
int kp_testnet_add(kp_testnet_t *tn, kp_node_mode_t mode, unsigned member_stable_ms,
                   kp_node_t **out);
/* ... on the families given (UV_EINVAL for one the testnet lacks). */
#define KP_TESTNET_V4 1u
#define KP_TESTNET_V6 2u
int kp_testnet_add_stacks(kp_testnet_t *tn, unsigned stacks, kp_node_mode_t mode,
                          unsigned member_stable_ms, kp_node_t **out);

/* Runs the loop until pred(ctx) is true or timeout_ms passes. Returns true
 * if pred held. */
bool kp_testnet_run_until(uv_loop_t *loop, bool (*pred)(void *ctx), void *ctx, unsigned timeout_ms);

/* A loopback port free (a moment ago) for both UDP and TCP, as a relay
 * takes both; 0 if none was found. */
int kp_testnet_free_port(void);

/* Runs the loop until every node has joined (a member whose join lookups
 * have run; true) or timeout_ms passes. */
bool kp_testnet_wait_joined(kp_testnet_t *tn, unsigned timeout_ms);
size_t kp_testnet_joined(const kp_testnet_t *tn);

/* Nodes that are members now. */
size_t kp_testnet_members(const kp_testnet_t *tn);

/* Closes one node (the slot becomes NULL) and runs the loop until it is gone. */
void kp_testnet_kill(kp_testnet_t *tn, size_t index);

/* Closes every node and runs the loop until all are gone. */
void kp_testnet_destroy(kp_testnet_t *tn);

/* Runs one find-node query from node `from` and waits for it. On success
 * peers/count/stats (each may be NULL) hold the result; returns the query
 * status. */
int kp_testnet_find(kp_testnet_t *tn, kp_node_t *from, const uint8_t target[KP_ID_LEN],
                    kp_node_peer_t peers[KP_DHT_K], size_t *count, kp_node_query_stats_t *stats,
                    unsigned timeout_ms);

/* The ids of the KP_DHT_K members closest to target, by brute force over
 * every live member except `skip` (may be NULL). Returns how many. */
size_t kp_testnet_true_closest(const kp_testnet_t *tn, const uint8_t target[KP_ID_LEN],
                               const kp_node_t *skip, uint8_t out[KP_DHT_K][KP_ID_LEN]);

#endif
