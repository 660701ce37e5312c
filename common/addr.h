/* SPDX-License-Identifier: MIT */
/* UDP endpoints (kp_addr_t, defined in kadpunch.h): comparison, hashing,
 * conversion to and from sockaddr, and the compact wire form (IPv4: 4-byte
 * address then 2-byte big-endian port = 6 bytes; IPv6: 16 + 2 = 18 bytes). */
#ifndef KP_COMMON_ADDR_H
#define KP_COMMON_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "kadpunch_base.h"

#define KP_ADDR_COMPACT_V4 6
#define KP_ADDR_COMPACT_V6 18
#define KP_ADDR_COMPACT_MAX 18

/* Length of the compact form for a family (0 for an unknown family). */
size_t kp_addr_compact_len(int family);

/* Writes the compact form into out (at least kp_addr_compact_len bytes) and
 * returns its length, or 0 when addr has no family. */
size_t kp_addr_encode_compact(const kp_addr_t *addr, uint8_t *out);

/* Reads a compact address; the family follows from len (6 or 18). Returns
 * KP_EBADADDR for any other length. */
int kp_addr_decode_compact(kp_addr_t *out, const uint8_t *in, size_t len);

bool kp_addr_eq(const kp_addr_t *a, const kp_addr_t *b);
bool kp_addr_same_ip(const kp_addr_t *a, const kp_addr_t *b);
/* The same host as far as per-source limits go: one IPv4 address, or one
 * IPv6 /64 (what one subscriber is handed). */
bool kp_addr_same_host(const kp_addr_t *a, const kp_addr_t *b);
/* A total order: family, then ip bytes, then port. */
int kp_addr_cmp(const kp_addr_t *a, const kp_addr_t *b);

/* Keyed hash (SipHash-2-4 via crypto_shorthash) for tables an attacker can
 * feed: with a secret per-table key, nobody can aim collisions at a bucket. */
uint64_t kp_addr_hash(const kp_addr_t *addr, const uint8_t key[16]);

void kp_addr_set_v4(kp_addr_t *out, uint32_t ip_host_order, uint16_t port);
bool kp_addr_is_set(const kp_addr_t *addr);
bool kp_addr_is_any(const kp_addr_t *addr);
bool kp_addr_is_loopback(const kp_addr_t *addr);
/* RFC 1918 / RFC 6598 / link-local v4, ULA / link-local v6: addresses that
 * only mean something inside one LAN. */
bool kp_addr_is_private(const kp_addr_t *addr);

int kp_addr_from_sockaddr(kp_addr_t *out, const struct sockaddr *sa);
/* Fills ss and returns the sockaddr length, or 0 for an unset address. */
socklen_t kp_addr_to_sockaddr(const kp_addr_t *addr, struct sockaddr_storage *ss);

#endif
