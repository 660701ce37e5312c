/* SPDX-License-Identifier: MIT */
/* DHT requests in flight: transaction ids, timeouts, retries, caps.
 *
 * A response is matched by transaction id AND source address (PING_NAT
 * alone accepts another port of the same IP: that is its point). Requests
 * beyond the in-flight cap or the per-second rate wait in a bounded queue;
 * past that, kp_dht_rpc_request() fails with KP_ELIMIT.
 *
 * Timeouts adapt to the round trips measured (RFC 6298's estimator: RTO =
 * SRTT + 4 RTTVAR, sampled only from requests answered on their first try,
 * per Karn), clamped to [min_timeout_ms, timeout_ms]; each retry doubles it,
 * up to timeout_ms. A dead node is then given up on in a few round trips, not
 * seconds. Each deadline also gets up to a quarter of jitter, so a burst of
 * losses does not come back as a synchronized burst of retries. The in-flight
 * list is kept ordered by deadline by inserting from the tail, where a new
 * deadline almost always belongs. */
#ifndef KP_DHT_RPC_H
#define KP_DHT_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"
#include "dht/dht_msg.h"

typedef struct kp_dht_req_s kp_dht_req_t;

/* status: 0 (resp and from set), KP_ETIMEDOUT after every retry, or
 * KP_ECANCELED when the rpc layer shuts down. */
typedef void (*kp_dht_req_cb)(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                              const kp_addr_t *from, uint64_t now);

typedef void (*kp_dht_rpc_send_fn)(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len);

struct kp_dht_req_s {
  kp_dht_req_t *prev;
  kp_dht_req_t *next;
  kp_dht_req_t *tid_next; /* chain in the rpc's index by tid */
  kp_addr_t to;
  uint64_t deadline;
  uint64_t sent_at;
  uint16_t tid;
  uint8_t command;
  uint8_t tries_left;
  uint8_t sends; /* datagrams sent so far, retries included */
  bool queued;
  bool any_port;
  /* Set by a caller that knows the id of the node at `to`: an answer's id
   * is then checked against it, without hashing the address again. */
  bool known_id;
  uint8_t id[KP_ID_LEN];
  kp_dht_req_cb cb;
  void *arg;
  uint16_t len;
  uint8_t packet[]; /* the encoded request, resent as is on retry */
};

typedef struct kp_dht_req_list_s {
  kp_dht_req_t *head;
  kp_dht_req_t *tail;
  unsigned count;
} kp_dht_req_list_t;

typedef struct kp_dht_rpc_config_s {
  unsigned timeout_ms;     /* per try, before any RTT is measured, and the cap (default 1000) */
  unsigned min_timeout_ms; /* the floor of the adaptive timeout (default 100) */
  unsigned retries;        /* extra tries after the first (default 2) */
  unsigned max_inflight;   /* default 256 */
  unsigned max_queued;     /* default 1024 */
  unsigned rate;           /* requests per second (default 10000) */
} kp_dht_rpc_config_t;

typedef struct kp_dht_rpc_stats_s {
  uint64_t requests;  /* datagrams sent, retries included */
  uint64_t responses; /* matched responses */
  uint64_t timeouts;  /* requests that exhausted their retries */
  uint64_t unmatched; /* responses matching nothing in flight */
  uint64_t rejected;  /* requests refused: queue full */
} kp_dht_rpc_stats_t;

typedef struct kp_dht_rpc_s {
  kp_dht_rpc_config_t cfg;
  kp_dht_req_list_t inflight;
  kp_dht_req_list_t queue;
  /* Every request (queued or in flight) by tid, so an answer is matched
   * without walking the list: chains of kp_dht_req_t.tid_next. Allocated
   * while requests exist, freed when the last one goes. */
  kp_dht_req_t **by_tid;
  unsigned by_tid_mask; /* buckets - 1 */
  unsigned indexed;
  kp_dht_rpc_send_fn send;
  const kp_rng_t *rng;
  /* Optional: told of every request that exhausted its retries, before its
   * callback (the DHT counts failures against routing-table entries). */
  void (*on_timeout)(void *ctx, const kp_dht_req_t *req);
  void *send_ctx;
  double tokens; /* rate limiter: requests that may leave now */
  uint64_t refilled_at;
  bool have_rtt; /* RTT estimator (RFC 6298), in microseconds */
  double srtt_us;
  double rttvar_us;
  kp_dht_rpc_stats_t stats;
} kp_dht_rpc_t;

typedef struct kp_dht_req_opts_s {
  int retries;    /* -1: the configured default */
  bool any_port;  /* accept the reply from another port of the same IP */
  size_t min_len; /* pad the request to this many bytes (no-amplification) */
} kp_dht_req_opts_t;

void kp_dht_rpc_config_defaults(kp_dht_rpc_config_t *cfg);
/* rng (which must outlive the rpc) picks every tid and the jitter. */
void kp_dht_rpc_init(kp_dht_rpc_t *rpc, const kp_dht_rpc_config_t *cfg, kp_dht_rpc_send_fn send,
                     void *ctx, const kp_rng_t *rng, uint64_t now);
/* Fails every pending request with KP_ECANCELED and frees them. */
void kp_dht_rpc_destroy(kp_dht_rpc_t *rpc, uint64_t now);

/* Encodes msg (type REQUEST; a random tid assigned here, docs/protocol.md
 * "Transactions") and sends or queues it.
 * On success *out (may be NULL) is the request handle, valid until its
 * callback returns or kp_dht_rpc_abandon(). cb fires exactly once, never
 * from inside this call. Errors: KP_ELIMIT, KP_ETOOBIG, KP_ENOMEM. */
int kp_dht_rpc_request(kp_dht_rpc_t *rpc, kp_dht_msg_t *msg, const kp_addr_t *to,
                       const kp_dht_req_opts_t *opts, kp_dht_req_cb cb, void *arg, uint64_t now,
                       kp_dht_req_t **out);

/* Forgets a request without calling its callback. */
void kp_dht_rpc_abandon(kp_dht_rpc_t *rpc, kp_dht_req_t *req);

/* Finds and unlinks the request a decoded response answers, or NULL. The
 * caller then calls kp_dht_rpc_finish() on it. */
kp_dht_req_t *kp_dht_rpc_take(kp_dht_rpc_t *rpc, const kp_dht_msg_t *msg, const kp_addr_t *from);
/* Runs a taken request's callback with the response, frees it, and sends
 * queued requests into the freed slot. */
void kp_dht_rpc_finish(kp_dht_rpc_t *rpc, kp_dht_req_t *req, const kp_dht_msg_t *msg,
                       const kp_addr_t *from, uint64_t now);

/* Retries or fails requests whose time is up and sends queued ones. */
void kp_dht_rpc_tick(kp_dht_rpc_t *rpc, uint64_t now);

/* When kp_dht_rpc_tick next has work, or UINT64_MAX. */
uint64_t kp_dht_rpc_next_deadline(const kp_dht_rpc_t *rpc);

/* The current retransmission timeout for a first try, in ms. */
unsigned kp_dht_rpc_rto(const kp_dht_rpc_t *rpc);

/* Feeds one round-trip sample (ms, fractional allowed) to the estimator. */
void kp_dht_rpc_sample_rtt(kp_dht_rpc_t *rpc, double rtt_ms);

#endif
