/* SPDX-License-Identifier: MIT */
/* Node ids and the XOR metric. A node's id is BLAKE2b-256 of its public
 * address in compact form, so an id cannot be chosen freely and a receiver
 * can check it against the packet's source (docs/protocol.md, "Node ids"). */
#ifndef KP_DHT_ID_H
#define KP_DHT_ID_H

#include <stdbool.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"
#include "kadpunch_base.h"

void kp_dht_id_from_addr(const kp_addr_t *addr, uint8_t id[KP_ID_LEN]);

/* Number of leading bits a and b share (256 when equal). */
unsigned kp_dht_id_prefix_len(const uint8_t a[KP_ID_LEN], const uint8_t b[KP_ID_LEN]);

/* Negative if a is closer to target than b, positive if farther, 0 if equal.
 * Inline: sorting candidates calls it constantly. */
static inline int kp_dht_id_cmp(const uint8_t target[KP_ID_LEN], const uint8_t a[KP_ID_LEN],
                                const uint8_t b[KP_ID_LEN]) {
  for (unsigned i = 0; i < KP_ID_LEN; i++) {
    uint8_t da = (uint8_t)(a[i] ^ target[i]), db = (uint8_t)(b[i] ^ target[i]);
    if (da != db) return da < db ? -1 : 1;
  }
  return 0;
}

/* Eclipse limits (docs/protocol.md, "Eclipse limits"). An id is the hash of
 * an address, so ids are as cheap as addresses: one IPv4 address has 65,535
 * ports, a /24 16.7 million addresses. Whoever holds one prefix may
 * therefore have at most this many ids in a bucket, and among a lookup's
 * candidates and results: */
#define KP_DHT_PREFIX_MAX 2      /* per IPv4 /24 or IPv6 /48 */
#define KP_DHT_WIDE_PREFIX_MAX 4 /* per IPv6 /32 (65,536 /48s) */

/* Loopback and private addresses are exempt (each counts as a prefix of its
 * own): only hosts on that machine or network can use them, and a testnet
 * or a LAN has all its nodes there. */
bool kp_dht_prefix_exempt(const kp_addr_t *a);
/* Same IPv4 /24 or IPv6 /48 (neither exempt). */
bool kp_dht_same_prefix(const kp_addr_t *a, const kp_addr_t *b);
/* Same IPv6 /32 (neither exempt); never for IPv4. */
bool kp_dht_same_wide_prefix(const kp_addr_t *a, const kp_addr_t *b);

/* A random id sharing exactly `bucket` leading bits with self. */
void kp_dht_id_random_in_bucket(const uint8_t self[KP_ID_LEN], unsigned bucket, const kp_rng_t *rng,
                                uint8_t out[KP_ID_LEN]);

/* Lowercase hex of the first n bytes of id into buf (2n+1 bytes). */
char *kp_dht_id_hex(const uint8_t *id, size_t n, char *buf);

#endif
