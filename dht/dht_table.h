/* SPDX-License-Identifier: MIT */
/* The Kademlia routing table: buckets by shared-prefix length with our id,
 * k entries each.
 *
 * A node's id is the hash of its address (docs/protocol.md, "Node ids"), so
 * an entry keeps the address and only the id's first 64 bits: the key that
 * orders and files it. The whole id is recomputed on the rare occasions
 * someone needs it (kp_dht_entry_id). Two nodes whose ids share 64 bits are
 * as unlikely as a hash collision, and nobody can aim for one, as nobody
 * chooses an id. An entry is 20 bytes with an IPv4 address, 32 with IPv6;
 * a table has one family, so all its entries have one size.
 *
 * Entries live in one flat array grouped by bucket (bucket 0 first), grown in
 * small steps beyond what was reserved: a node in a 1000-node network holds
 * about 140 entries, and a table of pointers per bucket would cost more than
 * the entries themselves. Re-filing under a new id happens in place.
 * A full bucket never evicts on its own: kp_dht_table_add() reports the
 * least recently seen entry, the caller pings it, and only a failed ping
 * evicts it (kp_dht_table_remove + add). The same holds within a bucket for
 * one network prefix, which may hold at most KP_DHT_PREFIX_MAX entries of
 * it (KP_DHT_WIDE_PREFIX_MAX of an IPv6 /32; dht_id.h). */
#ifndef KP_DHT_TABLE_H
#define KP_DHT_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "kadpunch_base.h"

/* Bucket b < 63 holds the ids sharing exactly b leading bits with ours; the
 * last holds every id sharing 63 or more (a network would need 2^63 k
 * members to fill it). */
#define KP_DHT_BUCKETS 64
/* The most entries kp_dht_table_closest returns at once. */
#define KP_DHT_MAX_CLOSEST 64

/* Entry flags. */
enum {
  KP_DHT_ENTRY_PINGING = 1, /* a liveness ping is in flight */
  KP_DHT_ENTRY_EXEMPT = 2   /* loopback or private: no prefix limit (dht_id.h) */
};

typedef struct kp_dht_entry_s {
  uint32_t key_hi, key_lo; /* the id's first 64 bits, big-endian halves */
  uint32_t last_seen;      /* seconds on the owner's clock */
  uint16_t port;
  uint8_t fails; /* consecutive unanswered requests */
  uint8_t flags; /* KP_DHT_ENTRY_* */
  uint8_t ip[];  /* 4 or 16 bytes, by the table's family */
} kp_dht_entry_t;

typedef struct kp_dht_table_s {
  uint8_t self[KP_ID_LEN];
  uint8_t *slab; /* count entries of `stride` bytes each */
  uint32_t count;
  uint32_t cap;
  uint8_t k;
  uint8_t family;
  uint8_t iplen;
  uint8_t stride;
  uint8_t bucket_count[KP_DHT_BUCKETS];
} kp_dht_table_t;

typedef enum {
  KP_DHT_TABLE_ADDED,
  KP_DHT_TABLE_UPDATED, /* already present: last_seen refreshed */
  KP_DHT_TABLE_FULL, /* bucket, or the newcomer's prefix in it, full: *lru is the entry to ping */
  KP_DHT_TABLE_SELF  /* our own id: never stored */
} kp_dht_table_result_t;

/* family: KP_AF_INET or KP_AF_INET6, the only kind of address it holds. */
void kp_dht_table_init(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN], unsigned k, int family);
void kp_dht_table_destroy(kp_dht_table_t *t);
/* Makes room for n entries now (KP_ENOMEM), so the table need not grow
 * while they come in. */
int kp_dht_table_reserve(kp_dht_table_t *t, uint32_t n);

static inline kp_dht_entry_t *kp_dht_table_at(const kp_dht_table_t *t, uint32_t i) {
  return (kp_dht_entry_t *)(t->slab + (size_t)i * t->stride);
}

/* An entry's address, and its whole id (a hash: not for hot paths). */
void kp_dht_entry_addr(const kp_dht_table_t *t, const kp_dht_entry_t *e, kp_addr_t *out);
void kp_dht_entry_id(const kp_dht_table_t *t, const kp_dht_entry_t *e, uint8_t id[KP_ID_LEN]);
/* Writes e's address in compact form (docs/protocol.md) and returns its length. */
size_t kp_dht_entry_compact(const kp_dht_table_t *t, const kp_dht_entry_t *e, uint8_t *out);
/* Whether e is the node at addr. */
bool kp_dht_entry_is(const kp_dht_table_t *t, const kp_dht_entry_t *e, const kp_addr_t *addr);
unsigned kp_dht_entry_bucket(const kp_dht_table_t *t, const kp_dht_entry_t *e);

/* Changes our id and re-files every entry; buckets left over k keep their
 * most recently seen entries. */
void kp_dht_table_set_self(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN]);

unsigned kp_dht_table_bucket_of(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]);
/* The entry whose id begins with id's first 64 bits, or NULL. */
kp_dht_entry_t *kp_dht_table_find(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]);

/* Adds or refreshes a node; id must be the id of addr. Returns one of
 * kp_dht_table_result_t or KP_ENOMEM. *lru is set for KP_DHT_TABLE_FULL:
 * the least recently seen entry of the newcomer's prefix when that is what
 * is full, else of the bucket. */
int kp_dht_table_add(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                     uint32_t now_s, kp_dht_entry_t **lru);
/* What kp_dht_table_add would return (and *lru), without changing anything. */
int kp_dht_table_would_add(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN],
                           const kp_addr_t *addr, kp_dht_entry_t **lru);
bool kp_dht_table_remove(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]);

/* The up to n (<= KP_DHT_MAX_CLOSEST) entries closest to target, closest
 * first, skipping one with address `exclude` (may be NULL). Returns how many
 * were written. The pointers are valid until the table next changes. */
size_t kp_dht_table_closest(const kp_dht_table_t *t, const uint8_t target[KP_ID_LEN],
                            const kp_addr_t *exclude, const kp_dht_entry_t **out, size_t n);

/* The entry seen longest ago that is not being pinged and was last seen
 * before `older_than`, or NULL. */
kp_dht_entry_t *kp_dht_table_oldest(const kp_dht_table_t *t, uint32_t older_than);

/* Index of the deepest non-empty bucket, or -1 when the table is empty. */
int kp_dht_table_depth(const kp_dht_table_t *t);

#endif
