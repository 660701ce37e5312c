/* SPDX-License-Identifier: MIT */
#include "dht/dht_token.h"

#include <sodium.h>
#include <string.h>

static void token_with(const uint8_t secret[32], const kp_addr_t *addr, uint8_t out[32]) {
  uint8_t compact[KP_ADDR_COMPACT_MAX];
  size_t n = kp_addr_encode_compact(addr, compact);
  crypto_generichash(out, 32, compact, n, secret, 32);
}

void kp_dht_tokens_init(kp_dht_tokens_t *t, const kp_rng_t *rng, uint64_t now) {
  kp_rng_fill(rng, t->current, sizeof(t->current));
  kp_rng_fill(rng, t->previous, sizeof(t->previous));
  t->rotated_at = now;
}

void kp_dht_tokens_destroy(kp_dht_tokens_t *t) {
  sodium_memzero(t, sizeof(*t));
}

uint64_t kp_dht_tokens_tick(kp_dht_tokens_t *t, const kp_rng_t *rng, uint64_t now) {
  if (now - t->rotated_at >= KP_DHT_TOKEN_ROTATE_MS) {
    memcpy(t->previous, t->current, sizeof(t->current));
    kp_rng_fill(rng, t->current, sizeof(t->current));
    t->rotated_at = now;
  }
  return t->rotated_at + KP_DHT_TOKEN_ROTATE_MS;
}

void kp_dht_token_make(const kp_dht_tokens_t *t, const kp_addr_t *addr, uint8_t out[32]) {
  token_with(t->current, addr, out);
}

int kp_dht_token_check(const kp_dht_tokens_t *t, const kp_addr_t *addr, const uint8_t token[32]) {
  uint8_t expect[32];
  /* crypto_verify_32: constant time, and much faster than sodium_memcmp. */
  token_with(t->current, addr, expect);
  if (crypto_verify_32(expect, token) == 0) return KP_DHT_TOKEN_CURRENT;
  token_with(t->previous, addr, expect);
  return crypto_verify_32(expect, token) == 0 ? KP_DHT_TOKEN_PREVIOUS : 0;
}
