/* SPDX-License-Identifier: MIT */
/* The DHT state machine's insides, shared by dht.c (core, membership,
 * maintenance) and dht_query.c (iterative queries and commits). Never
 * included outside dht/. */
#ifndef KP_DHT_INTERNAL_H
#define KP_DHT_INTERNAL_H

#include "dht/dht.h"
#include "dht/dht_token.h"

/* Bounds that keep a node's memory fixed whatever its peers do. */
#define KP_DHT_MAX_HANDLERS 16
#define KP_DHT_MAX_BOOTSTRAP 16
#define KP_DHT_MAX_MAINT_PINGS 4  /* liveness and full-bucket pings in flight */
#define KP_DHT_MAX_VERIFY 16      /* pings proving a requester's address, in flight */
#define KP_DHT_REFRESH_BUCKETS 64 /* deeper buckets never fill in practice */
#define KP_DHT_TICK_MS 1000       /* background work: at most once a second ... */
/* ... and at least this often: otherwise only when something falls due (a
 * NAT check, a bootstrap retry, a bucket to refresh, a keepalive), so an
 * idle node (a phone) is not woken every second. Under suspend_ms / 2, so a
 * gap between ticks still means the machine slept. */
#define KP_DHT_IDLE_TICK_MS 10000
/* A member that has sent nothing for this long pings someone: behind a NAT
 * that filters nothing (the only kind a member can be behind), the mapping
 * that makes it reachable lasts only while packets leave through it, and
 * home NATs drop an idle UDP mapping after as little as 30 s. */
#define KP_DHT_KEEPALIVE_MS 25000
/* An entry heard from within this long is taken to be alive: a newcomer to
 * its full bucket is dropped without pinging it (BEP 5's "good" node, for
 * which it uses 15 minutes). Pinging the least recently seen entry for
 * every newcomer made a quarter of all traffic while a network formed. */
#define KP_DHT_FRESH_S (5 * 60)
#define KP_DHT_MAX_TICKERS 4 /* higher layers with timers of their own */
/* Routing-table room reserved when a node is made: 10 full buckets, the
 * table of a network of up to about 10,000 members. Made then, next to the
 * node's other long-lived state, the table need not grow during the join,
 * when every other allocation is short-lived: grown then, each node's table
 * ends up among freed memory whose pages it keeps resident (measured at
 * 2.6 KB per node in a 1000-node testnet, docs/benchmarks.md). */
#define KP_DHT_TABLE_RESERVE_BUCKETS 10

typedef struct kp_dht_handler_s {
  uint8_t command;
  uint16_t reply_value_max;
  kp_dht_handler_fn fn;
  void *ctx;
} kp_dht_handler_t;

typedef struct kp_dht_pending_insert_s {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
  bool proven; /* it answered us or showed a token; else it is pinged first */
} kp_dht_pending_insert_t;

typedef struct kp_dht_verify_s kp_dht_verify_t;

struct kp_dht_s {
  kp_dht_config_t cfg;
  kp_dht_io_t io;
  kp_dht_rpc_t rpc;
  kp_dht_table_t table;
  kp_dht_tokens_t tokens;
  kp_dht_nat_t nat;
  kp_dht_stats_t stats;

  bool member;
  bool joined; /* member, and the join lookups have run */
  bool has_id; /* table.self is our id (before that, a random stand-in) */
  uint64_t reachable_since;

  uint64_t last_tick;
  uint64_t sent;       /* datagrams out of the main socket, ever */
  uint64_t sent_mark;  /* `sent` when idle_since was set */
  uint64_t idle_since; /* nothing has left the main socket since (to a tick) */
  uint64_t next_background;
  uint64_t natcheck_next;
  bool natcheck_inflight;

  /* Arrays sized to what was added (up to the KP_DHT_MAX_* above): a node
   * in a big network should not pay for slots it never uses. */
  kp_dht_handler_t *handlers;
  unsigned handler_count;
  kp_dht_ticker_t *tickers;
  unsigned ticker_count;
  kp_addr_t *bootstrap;
  unsigned bootstrap_count;
  uint64_t bootstrap_next;
  unsigned bootstrap_backoff_ms;
  kp_dht_query_t *bootstrap_query;
  /* A join that heard one reporter of our address is repeated (dht.c
   * seek_reporters): when, and how often it was since the network changed. */
  uint64_t reporters_next;
  unsigned reporters_tries;
  bool reporters_seeking; /* the bootstrap query in flight is such a repeat */

  kp_dht_query_t *queries; /* doubly linked, all live queries */
  bool queries_due;        /* a query finished and awaits its callback */

  unsigned maint_pings;
  kp_dht_verify_t *verifying; /* requesters being pinged for proof of address */
  unsigned verify_count;
  uint16_t refreshed_s[KP_DHT_REFRESH_BUCKETS]; /* last query into each bucket, seconds mod 2^16 */
  uint64_t refresh_due;                         /* buckets to refresh now (after joining) */
};

static inline uint32_t kp__dht_seconds(uint64_t now) {
  return (uint32_t)(now / 1000);
}

/* dht_query.c */
void kp__dht_queries_tick(kp_dht_t *dht, uint64_t now);
void kp__dht_queries_cancel_all(kp_dht_t *dht, uint64_t now);
uint64_t kp__dht_queries_deadline(const kp_dht_t *dht, uint64_t fallback);

/* dht.c */
/* kp_dht_request with an explicit retry count (-1: the configured one) and
 * KP_DHT_REQ_* flags. */
int kp__dht_request_ex(kp_dht_t *dht, const kp_addr_t *to, uint8_t command, const uint8_t *target,
                       const uint8_t *value, size_t value_len, const uint8_t *token, int retries,
                       unsigned flags, kp_dht_req_cb cb, void *arg, uint64_t now,
                       kp_dht_req_t **out);

/* The largest reply value a command may carry (for request padding). */
size_t kp__dht_reply_value_max(const kp_dht_t *dht, uint8_t command);

#endif
