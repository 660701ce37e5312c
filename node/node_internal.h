/* kp_node's insides: the libuv glue around the DHT state machine. Shared with
 * the programs in node/cli and tools/ that need more than the public API
 * (the testnet, benchmarks); never installed. */
#ifndef KP_NODE_INTERNAL_H
#define KP_NODE_INTERNAL_H

#include "common/log.h"
#include "common/rng.h"
#include "common/udp.h"
#include "dht/dht.h"
#include "dht/dht_swarm.h"
#include "holepunch/holepunch.h"
#include "kadpunch.h"
#include "stream/stream_conn.h"

typedef struct kp_node_dns_s kp_node_dns_t;
typedef struct kp_node_xsock_s kp_node_xsock_t;
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

enum { OPEN_SOCK = 1, OPEN_ALT = 2, OPEN_TIMER = 4, OPEN_RELAY_TIMER = 8, OPEN_RELAY_TCP = 16 };
typedef struct kp_relay_s kp_relay_t;
typedef struct kp_tunnel_s kp_tunnel_t;
struct tlink_s;

/* A relay's handles and key, allocated when the node runs one (most never
 * do: 500 bytes a node would otherwise carry for nothing). */
typedef struct kp_node_relay_svc_s {
  uv_timer_t timer;
  uv_tcp_t tcp; /* the TCP port (node_relay_tcp.c) */
  kp_keypair_t kp;
} kp_node_relay_svc_t;

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
  kp_hp_t *hp;                      /* handshakes: relay, server and client roles */
  kp_endpoint_t *ep;                /* stream connections on sock, made on first use */
  kp_rx_budget_t rx_budget;         /* what all its connections may hold */
  bool ep_closing;                  /* the socket closes once the endpoint has */
  kp_announce_t *announces;         /* live announcements, told of a close */
  kp_node_xsock_t *xsocks;          /* extra sockets: birthday punches and their winners */
  kp_node_conn_t *conns;            /* connections made and accepted, with their links */
  unsigned resume_grace_ms;         /* a connection without a path is resumed this long */
  kp_node_relay_memo_t *relay_memo; /* KP_NODE_RELAY_MEMOS, from the first connect */
  /* Blind relays (node_relay.c): the one this node runs, and the ones its
   * connections may use. */
  kp_relay_t *relay;
  kp_node_relay_svc_t *relay_svc;
  kp_announce_t *relay_announce;
  bool relays_explicit, relay_lookup;
  uint64_t relays_found_at;
  kp_addr_t found_relays[4];
  size_t found_count;
  /* The relay's TCP port (node_relay_tcp.c): links from peers whose UDP
   * is blocked. */
  struct tlink_s *relay_tlinks;
  unsigned relay_tcp_links, relay_tcp_max, relay_tcp_per_ip, relay_tcp_closing, relay_tcp_allocs;
  uint64_t relay_tcp_rate, relay_tcp_drops, relay_tcp_refused, relay_tcp_stalled;
  /* Tests: sees every datagram the relay forwards. */
  void (*relay_tap)(void *ctx, const uint8_t *data, size_t len);
  void *relay_tap_ctx;
  unsigned xsock_count, xsock_closing;
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
};

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

/* node_sockets.c: the extra sockets behind the holepunch io's open,
 * send_from and close; the endpoint for a connection on a won one; closing
 * won sockets whose connections are gone; closing them all. */
void kp__node_xsock_io(kp_node_t *node, kp_hp_io_t *io);
int kp__node_xsock_endpoint(kp_node_t *node, void *sock, kp_endpoint_t **out);
void kp__node_xsock_sweep(kp_node_t *node, uint64_t now);
void kp__node_xsock_close_all(kp_node_t *node);

/* node_paths.c: a stream connection for a finished handshake r, on the
 * socket r names, with a link that keeps it on a path from now on
 * (*rec_out: its record, for the server's limits; may be NULL). */
int kp__node_conn_open(kp_node_t *node, const kp_hp_result_t *r, const kp_conn_callbacks_t *cb,
                       kp_conn_t **out, kp_node_conn_t **rec_out);
/* The endpoint on sock (NULL: the node's main socket), made on first use. */
int kp__node_endpoint_for(kp_node_t *node, void *sock, kp_endpoint_t **out);
/* Whether a connection's link still needs sock. */
bool kp__node_conns_hold(const kp_node_t *node, const void *sock);
/* Stops every link (the node is going away). */
void kp__node_conns_forget(kp_node_t *node);
unsigned kp__node_resume_grace(const kp_node_options_t *opts);

/* node_relay.c */
int kp__node_relay_start(kp_node_t *node, const kp_node_options_t *opts);
/* What this node stores for others (kp_dht_store_policy_fn): a relay
 * record only from the address it names. */
bool kp__node_store_policy(void *ctx, const uint8_t target[KP_ID_LEN], const kp_record_t *rec,
                           const kp_addr_t *origin);
/* A datagram for the relay (forwarded or answered here): true. */
bool kp__node_relay_input(kp_node_t *node, const kp_addr_t *from, const uint8_t *data, size_t len);
void kp__node_relay_announce(kp_node_t *node);
int kp__node_relay_set_explicit(kp_node_t *node, const char *const *relays, size_t count);
/* Looks the relay topic up unless relays are explicit or found lately. */
void kp__node_relay_discover(kp_node_t *node);

/* node_relay_tcp.c: the relay's TCP port (max_links links at most, per_ip
 * of them from one IP, rate bytes/s each way per link); closing links that
 * leave their frames unread (each second); closing it and every link. */
int kp__node_relay_tcp_start(kp_node_t *node, uint64_t rate, unsigned max_links, unsigned per_ip);
void kp__node_relay_tcp_sweep(kp_node_t *node);
void kp__node_relay_tcp_close(kp_node_t *node);
/* Tests: ends every TCP link now (as a network that drops them would). */
void kp__node_relay_tcp_drop_links(kp_node_t *node);

/* node_tunnel.c: this node's own way out when UDP is blocked: node->sock
 * (and every extra socket) as channels of a TCP connection to a relay. */
int kp__node_tunnel_open(kp_node_t *node, const char *relay);
/* The tunnel's relay is this node's only relay. */
void kp__node_relay_set_tunnel(kp_node_t *node);

/* node_swarm.c: ends the node's announcements when it closes. */
void kp__node_announces_cancel(kp_node_t *node);

#endif
