/* SPDX-License-Identifier: MIT */
/* Swarms on the DHT: announce, lookup, unannounce, and mutable and
 * immutable values (docs/protocol.md, "Records").
 *
 * kp_dht_swarm_new() registers the storing side on a kp_dht_t (the command
 * handlers, backed by a kp_dht_store_t) and gives the client side: lookups
 * that report each verified record as it arrives, announcements that keep
 * themselves fresh and keep a NAT mapping open to their relay nodes, puts
 * and gets. Pure like the DHT it rides on: time comes in through the DHT's
 * ticks; the wall clock (used only to pick growing sequence numbers) is
 * injected. */
#ifndef KP_DHT_SWARM_H
#define KP_DHT_SWARM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/dht.h"
#include "dht/dht_record.h"
#include "dht/dht_store.h"
#include "kadpunch_base.h"

enum {
  KP_DHT_CMD_ANNOUNCE = 16,
  KP_DHT_CMD_UNANNOUNCE = 17,
  KP_DHT_CMD_LOOKUP = 18,
  KP_DHT_CMD_MUTABLE_PUT = 19,
  KP_DHT_CMD_MUTABLE_GET = 20,
  KP_DHT_CMD_IMMUTABLE_PUT = 21,
  KP_DHT_CMD_IMMUTABLE_GET = 22,
};

/* Errors in responses to the commands above. */
enum {
  KP_SWARM_ERR_BAD_SIGNATURE = 16,
  KP_SWARM_ERR_SEQ = 17,
  KP_SWARM_ERR_CAS = 18,
  KP_SWARM_ERR_FULL = 19,
  KP_SWARM_ERR_MALFORMED = 20,
  KP_SWARM_ERR_BUSY = 21,
  KP_SWARM_ERR_POLICY = 22, /* the node does not store such a record from there */
};

/* The most bytes of records a LOOKUP reply carries; lookups pad their
 * requests so that an answer this large is no amplification. */
#define KP_SWARM_LOOKUP_REPLY_MAX 600

typedef struct kp_dht_swarm_s kp_dht_swarm_t;
typedef struct kp_dht_announce_s kp_dht_announce_t;

typedef struct kp_dht_swarm_config_s {
  kp_dht_store_config_t store;
  unsigned refresh_ms;            /* re-announce period (default: half the TTL) */
  unsigned keepalive_ms;          /* ping period towards relay nodes (default 20 s) */
  unsigned verify_rate;           /* signature checks a source may cause per second (default 100) */
  uint64_t (*wall_ms)(void *ctx); /* the wall clock, ms; NULL: the DHT's clock */
  void *wall_ctx;
} kp_dht_swarm_config_t;

void kp_dht_swarm_config_defaults(kp_dht_swarm_config_t *cfg);

/* What a node stores, beyond a valid signature: called for each record it
 * is asked to store, with the address the request came from; false
 * refuses it (error 22). One policy per swarm (NULL: store anything). */
typedef bool (*kp_dht_store_policy_fn)(void *ctx, const uint8_t target[KP_ID_LEN],
                                       const kp_record_t *rec, const kp_addr_t *origin);
void kp_dht_swarm_set_policy(kp_dht_swarm_t *swarm, kp_dht_store_policy_fn fn, void *ctx);

/* Attaches to dht: registers its commands and a ticker. The swarm must be
 * freed after the DHT (whose teardown ends the swarm's operations with
 * KP_ECANCELED); announcements still running are dropped silently. */
int kp_dht_swarm_new(kp_dht_t *dht, const kp_dht_swarm_config_t *cfg, kp_dht_swarm_t **out);
void kp_dht_swarm_free(kp_dht_swarm_t *swarm);
kp_dht_store_t *kp_dht_swarm_store(kp_dht_swarm_t *swarm);
/* A dual-stack node's swarms, one per address family, each with its own
 * store: a LOOKUP over one family is answered with this family's records
 * and then the other's (for keys this family holds none of), so a record
 * announced over either family is found over both; the relay role forwards
 * a hello to the other family's announcer through that family's DHT
 * (holepunch.h, kp_hp_set_other_family). NULL unpairs (the other swarm is
 * going away: its store is no longer read). */
void kp_dht_swarm_set_other(kp_dht_swarm_t *swarm, kp_dht_swarm_t *other);
kp_dht_store_t *kp_dht_swarm_other_store(kp_dht_swarm_t *swarm);

/* The KP_E* error for one of the swarm's response error codes. */
int kp_dht_swarm_error(uint8_t wire);

/* ---- Lookup ---------------------------------------------------------------- */

/* Each verified record, once per (key, seq); newer seqs of a key are
 * reported again. Views are valid during the call. */
typedef void (*kp_dht_lookup_record_cb)(void *arg, const kp_record_t *rec);
/* Once at the end: status 0 (found may be 0) or KP_ENONODES. */
typedef void (*kp_dht_lookup_done_cb)(void *arg, int status, size_t found,
                                      const kp_dht_query_stats_t *stats);

int kp_dht_swarm_lookup(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                        kp_dht_lookup_record_cb on_record, kp_dht_lookup_done_cb on_done, void *arg,
                        uint64_t now);

/* ---- Announce -------------------------------------------------------------- */

/* After each announce round: status 0 and how many nodes stored the
 * record, or the error (the announcement retries by itself). */
typedef void (*kp_dht_announce_cb)(void *arg, int status, unsigned stored);

/* Announces kp's public key under target, with data (<= KP_RECORD_MAX_DATA
 * bytes, copied), and keeps it fresh until stopped. The key pair is copied
 * (and wiped on stop). */
int kp_dht_swarm_announce(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                          const kp_keypair_t *kp, const uint8_t *data, size_t data_len,
                          kp_dht_announce_cb cb, void *arg, uint64_t now, kp_dht_announce_t **out);

/* Stops refreshing; with unannounce, also asks the nodes to drop the
 * record (in the background). No callback fires after this. */
void kp_dht_announce_stop(kp_dht_swarm_t *swarm, kp_dht_announce_t *a, bool unannounce,
                          uint64_t now);

/* Announces again now (after a network change, say). */
void kp_dht_announce_refresh(kp_dht_swarm_t *swarm, kp_dht_announce_t *a, uint64_t now);

/* Whether one of our announcements under target was stored at node in its
 * last two rounds: the nodes a client's handshake can come through. */
bool kp_dht_swarm_stored_at(const kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                            const kp_addr_t *node);

/* The relay nodes of the last successful round. */
size_t kp_dht_announce_relays(const kp_dht_announce_t *a, kp_addr_t *out, size_t cap);

/* ---- Mutable and immutable values -------------------------------------------- */

/* status 0 when at least one node stored the value. Otherwise the error
 * the nodes gave: KP_ECAS (compare-and-swap conflict), KP_ESEQ (not newer),
 * KP_ELIMIT, KP_ENONODES. */
typedef void (*kp_dht_put_cb)(void *arg, int status, unsigned stored, unsigned failed);
/* status 0 with the newest valid value (valid during the call), or
 * KP_ENOTFOUND. seq is 0 for immutable values. */
typedef void (*kp_dht_get_cb)(void *arg, int status, uint64_t seq, const uint8_t *value,
                              size_t len);

int kp_dht_swarm_put_mutable(kp_dht_swarm_t *swarm, const kp_keypair_t *kp, const uint8_t *salt,
                             size_t salt_len, uint64_t seq, const uint8_t *value, size_t len,
                             bool has_cas, uint64_t cas, kp_dht_put_cb cb, void *arg, uint64_t now);
int kp_dht_swarm_get_mutable(kp_dht_swarm_t *swarm, const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                             const uint8_t *salt, size_t salt_len, kp_dht_get_cb cb, void *arg,
                             uint64_t now);
/* target (may be NULL) receives the value's hash, its address on the DHT. */
int kp_dht_swarm_put_immutable(kp_dht_swarm_t *swarm, const uint8_t *value, size_t len,
                               kp_dht_put_cb cb, void *arg, uint64_t now,
                               uint8_t target[KP_ID_LEN]);
int kp_dht_swarm_get_immutable(kp_dht_swarm_t *swarm, const uint8_t target[KP_ID_LEN],
                               kp_dht_get_cb cb, void *arg, uint64_t now);

#endif
