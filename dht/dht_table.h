/* The Kademlia routing table: 256 buckets by shared-prefix length with our
 * id, k entries each.
 *
 * Entries live in one flat array grouped by bucket (bucket 0 first), grown in
 * small steps: a node in a 1000-node network holds about 130 entries, and a
 * table of pointers per bucket would cost more than the entries themselves.
 * A full bucket never evicts on its own: kp_dht_table_add() reports the
 * least recently seen entry, the caller pings it, and only a failed ping
 * evicts it (kp_dht_table_remove + add). */
#ifndef KP_DHT_TABLE_H
#define KP_DHT_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "kadpunch.h"

#define KP_DHT_BUCKETS 256
/* The most entries kp_dht_table_closest returns at once. */
#define KP_DHT_MAX_CLOSEST 64

typedef struct kp_dht_entry_s {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
  uint32_t last_seen; /* seconds on the owner's clock */
  uint8_t fails;      /* consecutive unanswered requests */
  uint8_t pinging;    /* a liveness ping is in flight */
} kp_dht_entry_t;

typedef struct kp_dht_table_s {
  uint8_t self[KP_ID_LEN];
  kp_dht_entry_t *entries;
  uint32_t count;
  uint32_t cap;
  unsigned k;
  uint8_t bucket_count[KP_DHT_BUCKETS];
} kp_dht_table_t;

typedef enum {
  KP_DHT_TABLE_ADDED,
  KP_DHT_TABLE_UPDATED, /* already present: last_seen refreshed */
  KP_DHT_TABLE_FULL,    /* bucket full: *lru is the entry to ping */
  KP_DHT_TABLE_SELF     /* our own id: never stored */
} kp_dht_table_result_t;

void kp_dht_table_init(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN], unsigned k);
void kp_dht_table_destroy(kp_dht_table_t *t);

/* Changes our id and re-files every entry; buckets left over k keep their
 * most recently seen entries. */
void kp_dht_table_set_self(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN]);

unsigned kp_dht_table_bucket_of(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]);
kp_dht_entry_t *kp_dht_table_find(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]);

/* Adds or refreshes a node. Returns one of kp_dht_table_result_t or
 * UV_ENOMEM. *lru is set for KP_DHT_TABLE_FULL. */
int kp_dht_table_add(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                     uint32_t now_s, kp_dht_entry_t **lru);
bool kp_dht_table_remove(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]);

/* The up to n (<= KP_DHT_MAX_CLOSEST) entries closest to target, closest
 * first, skipping one with address `exclude` (may be NULL). Returns how many
 * were written. */
size_t kp_dht_table_closest(const kp_dht_table_t *t, const uint8_t target[KP_ID_LEN],
                            const kp_addr_t *exclude, const kp_dht_entry_t **out, size_t n);

/* The entry seen longest ago that is not being pinged and was last seen
 * before `older_than`, or NULL. */
kp_dht_entry_t *kp_dht_table_oldest(kp_dht_table_t *t, uint32_t older_than);

/* Index of the deepest non-empty bucket, or -1 when the table is empty. */
int kp_dht_table_depth(const kp_dht_table_t *t);

#endif
