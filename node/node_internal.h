/* SPDX-License-Identifier: MIT */
/* kp_node's insides: the libuv glue around the DHT state machine. Shared with
 * the programs in node/cli and tools/ that need more than the public API
 * (the testnet, benchmarks); never installed. */
#ifndef KP_NODE_INTERNAL_H
#define KP_NODE_INTERNAL_H

#include "common/log.h"
#include "common/rng.h"
#include "common/uv/udp.h"
#include "dht/dht.h"
#include "dht/dht_swarm.h"
#include "holepunch/holepunch.h"
#include "kadpunch.h"
#include "stream/stream_conn.h"

typedef struct kp_node_dns_s kp_node_dns_t;
typedef struct kp_node_conn_s kp_node_conn_t;

/* A connection the node made or accepted, and its paths (node_paths.c). */
struct kp_node_conn_s {
  kp_node_conn_t *next;
  kp_node_t *node;
  kp_conn_t *conn;
  kp_hp_link_t *link;             /* NULL: no path recovery (out of memory) */
  uint8_t key[KP_PUBLIC_KEY_LEN]; /* the peer's */
  /* The server that accepted it (node_connect.c): counted until the end,
   * reachable when the path dies. */
  void *server;
  kp_addr_t ip; /* where the relay node saw the client, port 0 */
  void (*on_end)(kp_node_conn_t *rec);
  void (*reach)(kp_node_conn_t *rec);
  /* A dual-stack node's connections have a record on each family's node:
   * the one they were made on (it holds the transport's hooks) and a
   * standby on the other (node_paths.c). Each points at the other. */
  kp_node_conn_t *other;
  bool standby_rec;
  bool initiator;             /* we are the client */
  kp_node_conn_t *index_next; /* the node's index of paired records (node_paths.c) */
};

/* The relay node a connect to a key last went through: the next connect
 * to that key tries it first and skips the lookup (node_connect.c). */
#define KP_NODE_RELAY_MEMOS 16
#define KP_NODE_RELAY_MEMO_MS 60000
typedef struct kp_node_relay_memo_s {
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  kp_addr_t relay;
  uint64_t at; /* 0: empty */
} kp_node_relay_memo_t;

enum { OPEN_SOCK = 1, OPEN_ALT = 2, OPEN_TIMER = 4 };
typedef struct kp_tunnel_s kp_tunnel_t;
typedef struct kp_relay_service_s kp_relay_service_t;
typedef struct kp_socket_pool_s kp_socket_pool_t;

struct kp_node_s {
  void *data;
  uv_loop_t *loop;
  kp_udp_t sock;       /* everything (a channel of the tunnel, if there is one) */
  kp_tunnel_t *tunnel; /* UDP blocked: everything goes over TCP to a relay */
  kp_udp_t alt;        /* only sends: PING_NAT replies from a second port */
  uv_timer_t timer;
  uint64_t armed; /* the deadline the timer is set for */
  kp_dht_t *dht;
  kp_dht_swarm_t *swarm;
  kp_hp_t *hp;               /* handshakes: relay, server and client roles */
  kp_endpoint_t *ep;         /* stream connections on sock, made on first use */
  kp_rx_budget_t rx_budget;  /* what all its connections may hold */
  bool ep_closing;           /* the socket closes once the endpoint has */
  kp_announce_t *announces;  /* live announcements, told of a close */
  kp_socket_pool_t *sockets; /* extra sockets: birthday punches, pairings, winners */
  kp_node_conn_t *conns;     /* connections made and accepted, with their links */
  /* Those with a record on the other family's node too, by local id: a
   * stream packet over this family for one that runs on the other's
   * sockets finds it here (node_paths.c). */
  kp_node_conn_t **conn_index;
  size_t conn_index_size, conn_index_count;
  unsigned resume_grace_ms;         /* a connection without a path is resumed this long */
  kp_node_relay_memo_t *relay_memo; /* KP_NODE_RELAY_MEMOS, from the first connect */
  /* The blind relay this node runs (relay_service.h), if it does. */
  kp_relay_service_t *relay_service;
  /* The relays its connections may use (node_relay.c). */
  bool relays_explicit, relay_lookup;
  uint64_t relays_due;      /* the next lookup of the relay topic; 0: none wanted */
  unsigned relays_retry_ms; /* after a lookup that found none: 1 s, doubling to 64 s */
  kp_addr_t found_relays[4];
  kp_addr_t found_alts[4]; /* a dual-stack relay's address of the other family */
  size_t found_count;
  unsigned found_foreign; /* ... records of the other family only, seen by that lookup */
  kp_log_t log;
  char log_prefix[KP_ADDR_STRLEN + 8];
  kp_rng_t rng;
  kp_node_dns_t *dns; /* name resolutions in progress */
  uint64_t drops_other;
  bool closing;
  unsigned open_handles; /* OPEN_* bits of what still needs closing */
  kp_node_close_cb close_cb;
  /* Proxies (node_proxy.c, node_proxy_link.c): the one this node runs,
   * and the one it speaks through (every socket a channel of it). */
  kp_proxy_service_t *proxy_svc;
  struct kp_proxy_link_s *proxy_link;
  /* A proxied node's own socket, unless it keeps its addresses private
   * (node_own_socket.c). */
  struct kp_node_own_s *own;
  /* The gateway's port mapping of sock, and the DHT datagrams held until
   * its first answer (node_portmap.c). */
  struct kp_portmap_s *portmap;
  struct kp_node_held_s *held;
  unsigned held_count;
  bool portmap_hold;
  /* A dual-stack node (node_stacks.c): the node of the other family, made
   * and closed by the first (its primary). */
  kp_node_t *sibling;
  kp_node_t *primary;
  struct kp_node_race_s *races; /* its connects running over both families */
};

/* node_stacks.c: makes the other family's node of a dual-stack node
 * (opts->bind_also), joined to this one: lookups answered from both
 * stores, hellos forwarded across. */
int kp__node_sibling_start(kp_node_t *node, const kp_node_options_t *opts);
/* The node of a dual-stack pair that speaks family (this one, its
 * sibling), or NULL. */
kp_node_t *kp__node_of_family(kp_node_t *node, int family);
/* The sibling is closing: what of it this node used is let go. */
void kp__node_sibling_gone(kp_node_t *node);

typedef struct kp_node_own_s kp_node_own_t;
/* node_own_socket.c: opens a proxied node's own socket (UV_EMFILE: none),
 * and frees what it keeps (the socket pool closes the socket). */
int kp__node_own_start(kp_node_t *node);
void kp__node_own_free(kp_node_t *node);

/* The DHT state machine of a node (for tools and tests). */
static inline kp_dht_t *kp__node_dht(kp_node_t *node) {
  return node->dht;
}

/* Re-arms the node's timer after the caller fed its state machine. */
void kp__node_rearm(kp_node_t *node);

/* Runs a statement that feeds the node's state machines: what it sends
 * leaves in one batch, then the timer is re-armed for whatever it scheduled. */
#define KP_NODE_FEED(node, stmt)                                                                   \
  do {                                                                                             \
    kp_udp_batch_t batch_;                                                                         \
    kp_udp_batch_begin(&(node)->sock, &batch_);                                                    \
    stmt;                                                                                          \
    kp_udp_batch_end(&(node)->sock, &batch_);                                                      \
    kp__node_rearm(node);                                                                          \
  } while (0)

/* The node's clock (ms, the loop's) and the wall clock (ms since 1970). */
uint64_t kp__node_now(const kp_node_t *node);
uint64_t kp__node_wall_ms(void *ctx);

/* Frees the node once nothing is left open (node.c). */
void kp__node_maybe_finish_close(kp_node_t *node);

/* node_paths.c: a stream connection for a finished handshake r, on the
 * socket r names, with a link that keeps it on a path from now on
 * (*rec_out: its record, for the server's limits; may be NULL). */
int kp__node_conn_open(kp_node_t *node, const kp_hp_result_t *r, const kp_conn_callbacks_t *cb,
                       kp_conn_t **out, kp_node_conn_t **rec_out);
/* The endpoint on sock (NULL: the node's main socket), made on first use. */
int kp__node_endpoint_for(kp_node_t *node, void *sock, kp_endpoint_t **out);
/* Whether a connection's link still needs sock. */
bool kp__node_conns_hold(const kp_node_t *node, const void *sock);
/* A stream packet on the node's main socket: to its connection, or, for a
 * connection on the other family's socket, to it there (a server follows
 * its client across: kp_hp_link_follow). */
void kp__node_stream_input(kp_node_t *node, const kp_addr_t *from, uint8_t *data, size_t len);
/* Frees the index of paired records (once the node's records are gone). */
void kp__node_index_free(kp_node_t *node);
/* Stops every link (the node is going away). */
void kp__node_conns_forget(kp_node_t *node);
unsigned kp__node_resume_grace(const kp_node_options_t *opts);

/* node_relay.c: the relay topic's DHT target. */
void kp__node_relay_target(uint8_t target[KP_ID_LEN]);
/* What this node stores for others (kp_dht_store_policy_fn): a relay
 * record only from the address it names. */
bool kp__node_store_policy(void *ctx, const uint8_t target[KP_ID_LEN], const kp_record_t *rec,
                           const kp_addr_t *origin);
int kp__node_relay_set_explicit(kp_node_t *node, const char *const *relays, size_t count);
/* node_portmap.c: asks the gateway for a port mapping of sock when the
 * options want one and the node could use it (not on loopback); until the
 * first answer (at most 250 ms) the DHT's datagrams wait, so that the NAT
 * sees every flow leave from the mapped port. */
int kp__node_portmap_start(kp_node_t *node, const kp_node_options_t *opts);
/* True if the datagram was held (sent when the mapping settles). */
bool kp__node_portmap_hold(kp_node_t *node, int sock, const kp_addr_t *to, const uint8_t *data,
                           size_t len);
/* Deletes the mapping at the gateway; the node finishes closing after. */
void kp__node_portmap_close(kp_node_t *node);

/* From now on, keeps a set of relays found on the DHT (unless they are
 * explicit): looks the relay topic up now, again soon while it finds none,
 * and every 10 minutes after. */
void kp__node_relay_discover(kp_node_t *node);
/* The node's timer: a lookup due by now starts; the next one's time, or
 * UINT64_MAX. */
void kp__node_relay_tick(kp_node_t *node, uint64_t now);
uint64_t kp__node_relay_deadline(const kp_node_t *node);

/* node_relay.c: this node's own way out when UDP is blocked: node->sock
 * (and every extra socket) as channels of a TCP connection to a relay. */
int kp__node_tunnel_open(kp_node_t *node, const char *relay);
/* The tunnel's relay is this node's only relay. */
void kp__node_relay_set_tunnel(kp_node_t *node);

/* node_connect.c: one connect attempt on the node `on` (one family of a
 * dual-stack node), reported to cb with `on` as the node; *out (may be
 * NULL) until then, or until kp__node_attempt_cancel (no callback). */
typedef struct kp_node_attempt_s kp_node_attempt_t;
int kp__node_attempt(kp_node_t *on, const kp_keypair_t *self,
                     const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *opts,
                     const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg,
                     kp_node_attempt_t **out);
void kp__node_attempt_cancel(kp_node_attempt_t *a);
/* node_race.c: a dual-stack node's connect: IPv6 first, IPv4 after a head
 * start, the first to connect wins (RFC 8305's spirit). */
int kp__node_race(kp_node_t *node, const kp_keypair_t *self,
                  const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *opts,
                  const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg);
/* Every race still running ends with UV_ECANCELED (the node closes). */
void kp__node_races_cancel(kp_node_t *node);

/* node_swarm.c: ends the node's announcements when it closes. */
void kp__node_announces_cancel(kp_node_t *node);
/* The sibling is closing: each announcement's half there ends. */
void kp__node_announces_unpair(kp_node_t *node);
/* kp_node_announce over this node's family only (no twin). */
int kp__node_announce_here(kp_node_t *node, const uint8_t target[KP_ID_LEN], const kp_keypair_t *kp,
                           const void *data, size_t data_len, kp_announce_t **out);
/* A service's record on one family's node `on` (a relay's, a proxy's):
 * its public address there, and `other`'s (the sibling, or NULL) after it
 * once known, as the storing nodes check (kp__node_store_policy). Made
 * anew once the other address appears; nothing until `on` is a member
 * with a public address. 0, or the announcement's error. */
/* A relay's or a proxy's socket carries everyone's forwarded streams, in
 * bursts: coalesced receives (udp.c) and room to queue them. */
void kp__node_forwarder_socket(kp_udp_t *sock);

int kp__node_announce_addrs(kp_node_t *on, kp_node_t *other, const uint8_t target[KP_ID_LEN],
                            const kp_keypair_t *kp, kp_announce_t **slot, bool *named_both);

#endif
