/* SPDX-License-Identifier: MIT */
/* Shared by dht_swarm.c (the storing side) and dht_swarm_ops.c (the client
 * operations). Never included outside dht/. */
#ifndef KP_DHT_SWARM_INTERNAL_H
#define KP_DHT_SWARM_INTERNAL_H

#include "dht/dht_swarm.h"

#include "common/ratelimit.h"

/* Per-source budget of signature checks (common/ratelimit.h), made on the
 * first write a node receives (most nodes of a testnet never store). */
#define KP_SWARM_LIMITER_SLOTS 256

/* Every client operation in progress, so the swarm can find and free it. */
typedef struct kp_swarm_op_s kp_swarm_op_t;
struct kp_swarm_op_s {
  kp_swarm_op_t *prev;
  kp_swarm_op_t *next;
  void (*drop)(kp_dht_swarm_t *swarm, kp_swarm_op_t *op); /* free without callbacks */
};

struct kp_dht_swarm_s {
  kp_dht_t *dht;
  kp_dht_swarm_config_t cfg;
  kp_dht_store_t *store;
  kp_dht_store_t *other_store; /* a dual-stack node's other family's (a reference) */
  kp_swarm_op_t *ops;
  kp_dht_announce_t *announces;
  uint8_t limiter_key[KP_RATELIMIT_KEY_LEN];
  kp_ratelimit_t limiter;
  kp_dht_store_policy_fn policy;
  void *policy_ctx;
};

void kp__swarm_op_link(kp_dht_swarm_t *swarm, kp_swarm_op_t *op);
void kp__swarm_op_unlink(kp_dht_swarm_t *swarm, kp_swarm_op_t *op);
uint64_t kp__swarm_wall_ms(const kp_dht_swarm_t *swarm, uint64_t now);

/* dht_swarm_ops.c: the announcers' timers. */
void kp__swarm_announces_tick(kp_dht_swarm_t *swarm, uint64_t now);
uint64_t kp__swarm_announces_deadline(const kp_dht_swarm_t *swarm);
void kp__swarm_announces_free(kp_dht_swarm_t *swarm);

#endif
