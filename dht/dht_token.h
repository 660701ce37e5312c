/* SPDX-License-Identifier: MIT */
/* Write tokens: proof that a requester receives packets at its address.
 *
 * token = BLAKE2b-256(key = secret, message = compact(requester address)).
 * The secret rotates every KP_DHT_TOKEN_ROTATE_MS; a token is accepted while
 * it matches the current or the previous secret, so it stays valid for one to
 * two rotation periods (docs/protocol.md, "Tokens"). */
#ifndef KP_DHT_TOKEN_H
#define KP_DHT_TOKEN_H

#include <stdbool.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"

#define KP_DHT_TOKEN_LEN 32
#define KP_DHT_TOKEN_ROTATE_MS (5 * 60 * 1000)

typedef struct kp_dht_tokens_s {
  uint8_t current[32];
  uint8_t previous[32];
  uint64_t rotated_at;
} kp_dht_tokens_t;

void kp_dht_tokens_init(kp_dht_tokens_t *t, const kp_rng_t *rng, uint64_t now);
void kp_dht_tokens_destroy(kp_dht_tokens_t *t);
/* Rotates if a period has passed since the last rotation; returns the time
 * the next rotation is due. */
uint64_t kp_dht_tokens_tick(kp_dht_tokens_t *t, const kp_rng_t *rng, uint64_t now);
void kp_dht_token_make(const kp_dht_tokens_t *t, const kp_addr_t *addr,
                       uint8_t out[KP_DHT_TOKEN_LEN]);
/* 0: invalid; KP_DHT_TOKEN_CURRENT: made with the current secret (so it is
 * exactly what kp_dht_token_make would return now); KP_DHT_TOKEN_PREVIOUS. */
enum { KP_DHT_TOKEN_CURRENT = 1, KP_DHT_TOKEN_PREVIOUS = 2 };
int kp_dht_token_check(const kp_dht_tokens_t *t, const kp_addr_t *addr,
                       const uint8_t token[KP_DHT_TOKEN_LEN]);

#endif
