/* SPDX-License-Identifier: MIT */
/* The records a DHT node stores for others: announce records (and the
 * tombstones unannounce leaves), mutable and immutable values.
 *
 * Every record expires ttl_ms after it was last written. Memory is bounded by
 * max_records and max_bytes whatever arrives, and by two quotas: records per
 * source (IPv4 address, or IPv6 /64) and announce records per target. When a
 * new record does not fit, it may displace only a record of a source that
 * holds strictly more records than the newcomer's own source (at that target,
 * or in the whole store), the one holding most, its oldest record. A source
 * at its quota replaces its own oldest. So one flooding source can fill its
 * own quota and churn it, but never push out anyone else's records; and a
 * saturated honest topic refuses newcomers rather than evict.
 *
 * Pure: driven by `now`, no I/O. Callers verify signatures first. */
#ifndef KP_DHT_STORE_H
#define KP_DHT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"
#include "dht/dht_record.h"
#include "kadpunch_base.h"

/* How long a record lives after its last write, by default. */
#define KP_DHT_DEFAULT_TTL_MS (20 * 60 * 1000)

typedef enum {
  KP_STORE_ANNOUNCE = 0,

  KP_STORE_MUTABLE = 1,
  KP_STORE_IMMUTABLE = 2,
} kp_dht_store_kind_t;

typedef struct kp_dht_store_config_s {
  size_t max_records;      /* default 16384 */
  size_t max_bytes;        /* memory for records, headers included (default 8 MiB) */
  unsigned max_per_target; /* announce records and tombstones per target (default 128) */
  unsigned max_per_source; /* records per source address (default 64) */
  unsigned ttl_ms;         /* default 20 minutes */
} kp_dht_store_config_t;

typedef struct kp_dht_store_stats_s {
  size_t records;  /* gauge */
  size_t bytes;    /* gauge */
  uint64_t stored; /* new records and newer versions */
  uint64_t expired;
  uint64_t evicted; /* displaced by a newcomer under a quota */
  uint64_t refused; /* newcomers that found no room */
} kp_dht_store_stats_t;

typedef struct kp_dht_store_s kp_dht_store_t;

/* A stored announce record, as handed to kp_dht_store_each. */
typedef struct kp_dht_stored_s {
  const uint8_t *raw; /* the record exactly as received (signed) */
  size_t raw_len;
  const uint8_t *public_key;
  uint64_t seq;
  uint64_t expires;
  const kp_addr_t *source; /* the writer's quota key: its IP (or IPv6 /64), no port */
  const kp_addr_t *origin; /* the writer's address: where a relay node reaches the announcer */
} kp_dht_stored_t;

void kp_dht_store_config_defaults(kp_dht_store_config_t *cfg);
int kp_dht_store_new(const kp_dht_store_config_t *cfg, const kp_rng_t *rng, kp_dht_store_t **out);
/* Drops a reference (the last frees it); kp_dht_store_ref adds one. */
void kp_dht_store_free(kp_dht_store_t *store);
void kp_dht_store_ref(kp_dht_store_t *store);

/* Stores a verified announce record (raw: its exact bytes). Returns 0
 * (stored, or an identical copy of what is stored), KP_ESEQ (not newer than
 * the stored record or tombstone for that key), KP_ELIMIT (no room). */
int kp_dht_store_announce(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                          const kp_record_t *rec, const uint8_t *raw, size_t raw_len,
                          const kp_addr_t *source, uint64_t now);

/* Removes the key's record if seq is not older, leaving a tombstone so the
 * record cannot be replayed back. KP_ESEQ if older. */
int kp_dht_store_unannounce(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                            const uint8_t public_key[KP_PUBLIC_KEY_LEN], uint64_t seq,
                            const kp_addr_t *source, uint64_t now);

/* Calls fn for each live announce record of target, starting at a rotating
 * offset (so repeated lookups see different subsets of a big topic), until
 * fn returns false. Returns how many records the target holds. */
size_t kp_dht_store_each(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                         bool (*fn)(void *ctx, const kp_dht_stored_t *rec), void *ctx);

/* Stores a verified mutable value. KP_ECAS (m->has_cas and the stored seq,
 * 0 if none, differs), KP_ESEQ (older, or the same seq with another value),
 * KP_ELIMIT. The same value again refreshes its expiry. */
int kp_dht_store_put_mutable(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                             const kp_dht_mutable_t *m, const kp_addr_t *source, uint64_t now);
/* Fills m's seq, value (a view into the store) and signature; false if none. */
bool kp_dht_store_get_mutable(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                              kp_dht_mutable_t *m);

/* Stores an immutable value (the caller checked target = its hash). */
int kp_dht_store_put_immutable(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                               const uint8_t *value, size_t len, const kp_addr_t *source,
                               uint64_t now);
bool kp_dht_store_get_immutable(kp_dht_store_t *store, const uint8_t target[KP_ID_LEN],
                                const uint8_t **value, size_t *len);

/* Any stored record, as handed to kp_dht_store_walk (for inspection). */
typedef struct kp_dht_store_item_s {
  uint8_t kind; /* kp_dht_store_kind_t */
  bool tombstone;
  const uint8_t *target;
  const uint8_t *public_key; /* announce and mutable; NULL for immutable */
  uint64_t seq;
  uint64_t expires;
  const uint8_t *data; /* announce: the raw record; mutable: signature, value; immutable: value */
  size_t data_len;
  const kp_addr_t *origin; /* the writer's address */
} kp_dht_store_item_t;

/* Calls fn for every record, tombstones included, soonest expiry first,
 * until fn returns false. Views are valid during the call; fn must not
 * change the store. */
void kp_dht_store_walk(const kp_dht_store_t *store,
                       bool (*fn)(void *ctx, const kp_dht_store_item_t *item), void *ctx);

/* Drops what has expired; returns when the next record expires. */
uint64_t kp_dht_store_tick(kp_dht_store_t *store, uint64_t now);
uint64_t kp_dht_store_next_expiry(const kp_dht_store_t *store);

void kp_dht_store_stats(const kp_dht_store_t *store, kp_dht_store_stats_t *out);

#endif
