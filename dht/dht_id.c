/* SPDX-License-Identifier: MIT */
#include "dht/dht_id.h"

#include <sodium.h>
#include <string.h>

void kp_dht_id_from_addr(const kp_addr_t *addr, uint8_t id[KP_ID_LEN]) {
  uint8_t compact[KP_ADDR_COMPACT_MAX];
  size_t n = kp_addr_encode_compact(addr, compact);
  crypto_generichash(id, KP_ID_LEN, compact, n, NULL, 0);
}

unsigned kp_dht_id_prefix_len(const uint8_t a[KP_ID_LEN], const uint8_t b[KP_ID_LEN]) {
  for (unsigned i = 0; i < KP_ID_LEN; i++) {
    uint8_t x = a[i] ^ b[i];
    if (x) return i * 8 + (unsigned)__builtin_clz((unsigned)x) - 24;
  }
  return KP_ID_LEN * 8;
}

bool kp_dht_prefix_exempt(const kp_addr_t *a) {
  return kp_addr_is_loopback(a) || kp_addr_is_private(a);
}

bool kp_dht_same_prefix(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != b->family || kp_dht_prefix_exempt(a) || kp_dht_prefix_exempt(b)) return false;
  return memcmp(a->ip, b->ip, a->family == KP_AF_INET6 ? 6 : 3) == 0;
}

bool kp_dht_same_wide_prefix(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != KP_AF_INET6 || b->family != KP_AF_INET6) return false;
  if (kp_dht_prefix_exempt(a) || kp_dht_prefix_exempt(b)) return false;
  return memcmp(a->ip, b->ip, 4) == 0;
}

void kp_dht_id_random_in_bucket(const uint8_t self[KP_ID_LEN], unsigned bucket, const kp_rng_t *rng,
                                uint8_t out[KP_ID_LEN]) {
  kp_rng_fill(rng, out, KP_ID_LEN);
  if (bucket >= KP_ID_LEN * 8) {
    memcpy(out, self, KP_ID_LEN);
    return;
  }
  unsigned byte = bucket / 8, bit = bucket % 8;
  memcpy(out, self, byte);
  uint8_t keep = (uint8_t)(0xff00 >> bit); /* the shared bits of this byte */
  uint8_t flip = (uint8_t)(0x80 >> bit);   /* the first differing bit */
  out[byte] =
      (uint8_t)((self[byte] & keep) | ((self[byte] ^ flip) & flip) | (out[byte] & ~(keep | flip)));
}

char *kp_dht_id_hex(const uint8_t *id, size_t n, char *buf) {
  return sodium_bin2hex(buf, 2 * n + 1, id, n);
}
