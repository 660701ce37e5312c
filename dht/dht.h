/* SPDX-License-Identifier: MIT */
/* The DHT node state machine.
 *
 * Pure (docs/architecture.md, "Three layers per protocol"): it is fed the time (`now`, ms) and
 * decoded datagrams, emits datagrams through kp_dht_io_t, and says when it next needs to run
 * (kp_dht_next_deadline). It never touches libuv, a socket or the clock, and draws randomness only
 * from the injected rng, so the simulator can run thousands of them on a virtual clock. node/ is
 * the libuv glue.
 *
 * Extension point: higher layers (records, handshake, holepunch) register
 * their own commands with kp_dht_register(); the core dispatches requests for
 * them to the handler, appends the closest nodes to every reply whose request
 * named a target, and enforces the no-amplification rule on every reply. */
#ifndef KP_DHT_H
#define KP_DHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/log.h"
#include "common/rng.h"
#include "dht/dht_msg.h"
#include "dht/dht_nat.h"
#include "dht/dht_rpc.h"
#include "dht/dht_table.h"
#include "kadpunch_base.h"

typedef struct kp_dht_s kp_dht_t;
typedef struct kp_dht_query_s kp_dht_query_t;

/* Which socket a datagram leaves from: the main one, or the second socket
 * that exists only so PING_NAT replies come from another port. */
enum { KP_DHT_SOCK_MAIN = 0, KP_DHT_SOCK_ALT = 1 };

typedef struct kp_dht_io_s {
  void (*send)(void *ctx, int sock, const kp_addr_t *to, const uint8_t *data, size_t len);
  /* Optional: membership changed (the glue logs it, tests observe it). */
  void (*on_membership)(void *ctx, bool member);
  void *ctx;
} kp_dht_io_t;

typedef struct kp_dht_config_s {
  int family;      /* KP_AF_INET or KP_AF_INET6 */
  kp_addr_t local; /* the bound address */
  kp_node_mode_t mode;
  unsigned k;           /* bucket size and result count (default 20) */
  unsigned concurrency; /* parallel requests per query (default 10) */
  kp_dht_rpc_config_t rpc;
  unsigned query_retries;    /* retries per query request (default 2) */
  unsigned member_stable_ms; /* default 20000 */
  unsigned refresh_ms;       /* stale-bucket refresh (default 15 min) */
  unsigned ping_stale_ms;    /* ping table entries not heard from this long (default 10 min) */
  unsigned natcheck_ms;      /* re-run PING_NAT while a member (default 5 min) */
  unsigned suspend_ms;       /* a gap between ticks this long means we slept (default 60 s) */
  kp_rng_t rng;
  const kp_log_t *log;
} kp_dht_config_t;

/* An incoming request, as a handler sees it. Views are valid during the call. */
typedef struct kp_dht_request_s {
  const kp_dht_msg_t *msg;
  kp_addr_t from;
  bool token_valid;   /* msg->token is one we issued to `from` */
  bool token_current; /* ... with the current secret: the reply can echo it */
  bool from_member;   /* carried an id matching its source */
  size_t wire_len;    /* size of the request datagram */
} kp_dht_request_t;

/* What answering a request needs; copy it to answer later. */
typedef struct kp_dht_reply_to_s {
  kp_addr_t to;
  uint16_t tid;
  uint8_t command;
  bool has_target;
  uint8_t target[KP_ID_LEN];
  uint16_t limit; /* largest reply allowed: the request size unless it held a valid token */
  bool has_token; /* token is the one to give the requester (saves hashing it again) */
  uint8_t token[32];
} kp_dht_reply_to_t;

typedef void (*kp_dht_handler_fn)(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req,
                                  uint64_t now);

/* A node a query heard from, with the token it gave us (for commits). */
typedef struct kp_dht_result_s {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
  bool has_token;
  uint8_t token[32];
} kp_dht_result_t;

typedef struct kp_dht_query_stats_s {
  unsigned requests; /* datagrams sent, retries included */
  unsigned responses;
  unsigned timeouts;
  unsigned hops; /* referral depth of the closest result (1 = a seed) */
} kp_dht_query_stats_t;

/* Called for each response (reply is valid only during the call). */
typedef void (*kp_dht_query_reply_cb)(void *arg, kp_dht_query_t *q, const kp_dht_msg_t *reply,
                                      const kp_addr_t *from, uint64_t now);
/* Called once at the end: status 0 with the up to k closest responsive
 * members, closest first; KP_ENONODES if none answered; KP_ECANCELED. */
typedef void (*kp_dht_query_done_cb)(void *arg, kp_dht_query_t *q, int status,
                                     const kp_dht_result_t *closest, size_t count, uint64_t now);

typedef struct kp_dht_query_opts_s {
  uint8_t command; /* what each visited node is asked (default FIND_NODE) */
  const uint8_t *value;
  size_t value_len;
  unsigned concurrency; /* 0: the configured default */
  kp_dht_query_reply_cb on_reply;
  kp_dht_query_done_cb on_done;
  void *arg;
  const kp_addr_t *seeds; /* extra starting points (bootstrap nodes) */
  size_t seed_count;
} kp_dht_query_opts_t;

typedef struct kp_dht_commit_s kp_dht_commit_t;

/* Request flags (kp_dht_commit): leave out our id, e.g. so a large value
 * fits the datagram (a write needs no routing information). */
enum { KP_DHT_REQ_NO_ID = 1 };

/* Called once per node of a commit, then once with the totals. */
typedef void (*kp_dht_commit_node_cb)(void *arg, const kp_dht_result_t *node, int status,
                                      const kp_dht_msg_t *reply);
typedef void (*kp_dht_commit_done_cb)(void *arg, unsigned ok, unsigned failed, uint64_t now);

typedef struct kp_dht_stats_s {
  kp_dht_rpc_stats_t rpc;
  uint64_t requests_in;
  uint64_t responses_in;
  uint64_t drops_malformed;
  uint64_t drops_truncated;
  uint64_t drops_too_big;
  uint64_t drops_version;
  uint64_t drops_field;
  uint64_t drops_command;
  uint64_t drops_bad_id;
  uint64_t drops_rate;
} kp_dht_stats_t;

void kp_dht_config_defaults(kp_dht_config_t *cfg);

/* Creates the state machine. cfg and io are copied; cfg->log must outlive it. */
int kp_dht_new(const kp_dht_config_t *cfg, const kp_dht_io_t *io, uint64_t now, kp_dht_t **out);

/* Cancels everything (query callbacks get KP_ECANCELED) and frees. */
void kp_dht_free(kp_dht_t *dht, uint64_t now);

/* One received datagram (a control-plane message). */
void kp_dht_recv(kp_dht_t *dht, const kp_addr_t *from, const uint8_t *data, size_t len,
                 uint64_t now);

/* Runs whatever is due; call it at kp_dht_next_deadline() (or any time). */
void kp_dht_tick(kp_dht_t *dht, uint64_t now);
uint64_t kp_dht_next_deadline(const kp_dht_t *dht);

/* Adds a bootstrap node (a resolved address) and (re)starts joining. */
int kp_dht_add_bootstrap(kp_dht_t *dht, const kp_addr_t *addr, uint64_t now);
/* (Re)joins: a lookup of our own id seeded with the bootstrap nodes. */
void kp_dht_bootstrap(kp_dht_t *dht, uint64_t now);

/* Registers a handler for command (KP_DHT_CMD_USER..KP_DHT_CMD_MAX).
 * reply_value_max: the largest value a handler puts in a reply, so that
 * requesters without a token pad their requests enough for it. Errors: KP_EINVAL, KP_EEXIST. */
int kp_dht_register(kp_dht_t *dht, uint8_t command, kp_dht_handler_fn fn, void *ctx,
                    size_t reply_value_max);

void kp_dht_reply_to_init(kp_dht_reply_to_t *rt, const kp_dht_request_t *req);

/* Answers a request: our id (if a member), a fresh token for the requester,
 * the closest nodes to its target (if it named one), value and error. A
 * reply over rt->limit sheds nodes, then the value (error becomes
 * KP_DHT_ERR_TRUNCATED), so it is never larger than an unproven request. */
int kp_dht_reply(kp_dht_t *dht, const kp_dht_reply_to_t *rt, const uint8_t *value, size_t len,
                 uint8_t error, uint64_t now);

/* Sends a request (any command) to one node. token may be NULL (then the
 * request is padded to the command's reply bound). See kp_dht_rpc_request. */
int kp_dht_request(kp_dht_t *dht, const kp_addr_t *to, uint8_t command, const uint8_t *target,
                   const uint8_t *value, size_t value_len, const uint8_t *token, kp_dht_req_cb cb,
                   void *arg, uint64_t now, kp_dht_req_t **out);
void kp_dht_request_abandon(kp_dht_t *dht, kp_dht_req_t *req);

/* Iterative query towards target. on_done fires exactly once, never inside
 * this call. *out (may be NULL) is valid until then. */
int kp_dht_query_start(kp_dht_t *dht, const uint8_t target[KP_ID_LEN],
                       const kp_dht_query_opts_t *opts, uint64_t now, kp_dht_query_t **out);
/* Stops a query; its on_done does not fire. Safe from inside its on_reply
 * (the query then ends when that callback returns), not from on_done. */
void kp_dht_query_cancel(kp_dht_t *dht, kp_dht_query_t *q);
const kp_dht_query_stats_t *kp_dht_query_stats(const kp_dht_query_t *q);
const uint8_t *kp_dht_query_target(const kp_dht_query_t *q);

/* Sends command (with target, which may be NULL, value, and each node's
 * token) to each node, typically a query's closest. on_node fires per node
 * and on_done once, from later calls; *out (may be NULL) is valid until
 * on_done returns. KP_ENONODES if no request could be sent. */
int kp_dht_commit(kp_dht_t *dht, const kp_dht_result_t *nodes, size_t count, uint8_t command,
                  const uint8_t *target, const uint8_t *value, size_t value_len, unsigned flags,
                  kp_dht_commit_node_cb on_node, kp_dht_commit_done_cb on_done, void *arg,
                  uint64_t now, kp_dht_commit_t **out);
/* Builds the value a commit sends to one node, when it differs per node (an
 * announce signs each node's token): up to cap bytes into buf; returns the
 * length, or 0 to skip the node (it counts as failed). */
typedef size_t (*kp_dht_commit_value_fn)(void *arg, const kp_dht_result_t *node, uint8_t *buf,
                                         size_t cap);

/* kp_dht_commit with each node's value built by value_fn (called with arg,
 * once per node, during this call). */
int kp_dht_commit_each(kp_dht_t *dht, const kp_dht_result_t *nodes, size_t count, uint8_t command,
                       const uint8_t *target, kp_dht_commit_value_fn value_fn, unsigned flags,
                       kp_dht_commit_node_cb on_node, kp_dht_commit_done_cb on_done, void *arg,
                       uint64_t now, kp_dht_commit_t **out);
/* Stops a commit; none of its callbacks fire afterwards. */
void kp_dht_commit_cancel(kp_dht_t *dht, kp_dht_commit_t *c);

/* Bytes of value a reply to rt can carry next to its closer nodes without
 * exceeding rt->limit (the no-amplification bound). */
size_t kp_dht_reply_room(kp_dht_t *dht, const kp_dht_reply_to_t *rt);

/* Higher layers that need time (expiry, refreshes) add a ticker: tick runs
 * from kp_dht_tick, and the DHT's next deadline includes theirs. */
typedef struct kp_dht_ticker_s {
  void (*tick)(void *ctx, uint64_t now);
  uint64_t (*deadline)(void *ctx);
  void *ctx;
} kp_dht_ticker_t;
int kp_dht_add_ticker(kp_dht_t *dht, const kp_dht_ticker_t *ticker);
/* Removes the ticker whose ctx is ctx. */
void kp_dht_remove_ticker(kp_dht_t *dht, void *ctx);

/* The KP_E* error for a core error code in a response (kp_dht_wire_error_t). */
int kp_dht_wire_error(uint8_t code);

/* The injected randomness, for the layers built on this DHT. */

const kp_rng_t *kp_dht_rng(const kp_dht_t *dht);
/* Stops dispatching a registered command (undoes kp_dht_register). */
void kp_dht_unregister(kp_dht_t *dht, uint8_t command);

/* State, for the glue, tests and inspection. */

bool kp_dht_is_member(const kp_dht_t *dht);
/* A member whose join lookups (its own id, then every bucket) have run. */
bool kp_dht_is_joined(const kp_dht_t *dht);
/* Our id; false while we have none (no public address known yet). */
bool kp_dht_id(const kp_dht_t *dht, uint8_t id[KP_ID_LEN]);
const kp_dht_nat_t *kp_dht_nat(const kp_dht_t *dht);
/* A port mapping of our socket at the gateway, or NULL: kp_dht_nat_set_mapped. */
void kp_dht_set_mapped(kp_dht_t *dht, const kp_addr_t *mapped, uint64_t now);
/* The node's address changed under it (a proxy's new allocation, another
 * network): what it knew of its public address and reachability is
 * forgotten and learnt again, as after a suspend. */
void kp_dht_network_changed(kp_dht_t *dht, uint64_t now);
const kp_dht_table_t *kp_dht_table(const kp_dht_t *dht);
void kp_dht_stats(const kp_dht_t *dht, kp_dht_stats_t *out);
int kp_dht_family(const kp_dht_t *dht);
size_t kp_dht_inflight(const kp_dht_t *dht);

#endif
