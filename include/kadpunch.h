/* SPDX-License-Identifier: MIT */
/* kadpunch: peer-to-peer connectivity by public key.
 *
 * The one header an embedder includes. The objects here (nodes, endpoints,
 * connections, streams, servers) run on a libuv loop the caller owns; every
 * function is "loop thread only" unless it says otherwise. The plain values
 * (errors, addresses, keys, records, options) are in kadpunch_base.h, which
 * this includes. Functions return 0 on success or a negative error: the
 * system's (libuv's UV_E* codes, equal to the KP_E* names for them in
 * kadpunch_base.h) or kadpunch's own KP_E* codes. kp_strerror() and
 * kp_err_name() describe both.
 */
#ifndef KADPUNCH_H
#define KADPUNCH_H

#ifdef KP_CORE_BUILD
#error "the protocol cores include kadpunch_base.h: kadpunch.h is the libuv-facing API"
#endif

#include <uv.h>

#include "kadpunch_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The system's errors under kadpunch's names are libuv's, and a kp_buf_t
 * is a uv_buf_t. */
#ifndef __cplusplus
#define KP__SAME(a, b) _Static_assert((a) == (b), #a " must equal " #b)
KP__SAME(KP_EOF, UV_EOF);
KP__SAME(KP_EACCES, UV_EACCES);
KP__SAME(KP_EADDRINUSE, UV_EADDRINUSE);
KP__SAME(KP_EAGAIN, UV_EAGAIN);
KP__SAME(KP_EBADF, UV_EBADF);
KP__SAME(KP_ECANCELED, UV_ECANCELED);
KP__SAME(KP_EEXIST, UV_EEXIST);
KP__SAME(KP_EINVAL, UV_EINVAL);
KP__SAME(KP_EISDIR, UV_EISDIR);
KP__SAME(KP_EMFILE, UV_EMFILE);
KP__SAME(KP_EMSGSIZE, UV_EMSGSIZE);
KP__SAME(KP_ENAMETOOLONG, UV_ENAMETOOLONG);
KP__SAME(KP_ENOBUFS, UV_ENOBUFS);
KP__SAME(KP_ENOENT, UV_ENOENT);
KP__SAME(KP_ENOMEM, UV_ENOMEM);
KP__SAME(KP_EPIPE, UV_EPIPE);
KP__SAME(KP_EPROTO, UV_EPROTO);
KP__SAME(KP_ETIMEDOUT, UV_ETIMEDOUT);
KP__SAME(sizeof(kp_buf_t), sizeof(uv_buf_t));
KP__SAME(offsetof(kp_buf_t, base), offsetof(uv_buf_t, base));
KP__SAME(offsetof(kp_buf_t, len), offsetof(uv_buf_t, len));
#undef KP__SAME
#endif

/* ---- DHT node ---------------------------------------------------------- */

typedef struct kp_node_s kp_node_t;

typedef struct kp_node_options_s {
  /* Local address to bind, e.g. "0.0.0.0:0", "[::]:49737", "127.0.0.1:0". */
  const char *bind;
  /* Bootstrap nodes: "host:port" strings (IPv4/IPv6 literals or names),
   * bootstrap_count of them. The strings are copied. */
  const char *const *bootstrap;
  size_t bootstrap_count;
  kp_node_mode_t mode;
  /* Parallel requests of an iterative query (default 10). */
  unsigned concurrency;
  /* Request timeout in ms (default 1000): used until round trips are
   * measured, then the cap of the adaptive timeout (SRTT + 4 RTTVAR, at
   * least 100 ms, doubling per retry). Retries per request (default 2). */
  unsigned request_timeout_ms;
  unsigned request_retries;
  /* How long the public address and reachability must hold before an AUTO
   * node becomes a member, in ms (default 20000). Testnets set it low. */
  unsigned member_stable_ms;
  /* Logging: NULL callback logs to stderr. Default level KP_LOG_WARN. */
  kp_log_cb log_cb;
  void *log_ctx;
  kp_log_level_t log_level;
  /* Records stored for others: caps on their number and memory (0: 16384
   * and 8 MiB) and their lifetime in ms (0: 20 minutes). */
  size_t store_max_records;
  size_t store_max_bytes;
  unsigned record_ttl_ms;
  /* Where randomness comes from; NULL means libsodium's randombytes_buf. */
  void (*rng)(void *ctx, void *buf, size_t len);
  void *rng_ctx;
  /* Run a blind relay on this node's socket (it needs a public address) and
   * announce it on the DHT under the relay topic. */
  bool relay;
  kp_relay_limits_t relay_limits;
  /* Relays to use when no direct path exists ("host:port"); without them
   * the node finds relays on the DHT when it first listens. */
  const char *const *relays;
  size_t relay_count;
  /* Connections this node makes go through a relay even where a direct
   * path might open (for testing a relay, or to hide one's address). */
  bool relay_only;
  /* Received data all this node's connections may hold at once (out of
   * order, or not yet read): past it a sender must send again later. 0:
   * 256 MiB. */
  size_t rx_budget;
  /* UDP is blocked here: reach everything through this relay ("ip:port")
   * over TCP. The node is then an ephemeral DHT node at the relay's
   * address, and its connections are relayed there (relay_only). */
  const char *tcp_relay;
  /* A connection whose path died is resumed for this long (ms; 0: 60000):
   * the server keeps it, the client looks for a new path; nothing heard
   * for this long ends it (KP_EPEERDEAD). */
  unsigned resume_grace_ms;
  /* Speak through this proxy ("ip:port", or "KEY@ip:port" to hold it to
   * its key; docs/protocol.md "Proxying"), or the first of a comma
   * separated list of up to 4, moving to the next when one stops answering
   * for 5 s (a "tcp:" prefix: all over TCP; the list over TCP too once
   * every proxy was silent over UDP and none ever answered): every socket of the node is an
   * allocation of the proxy's, so peers and DHT nodes see the proxy's
   * address (see proxy_private for what changes once a connection is made).
   * The node is then an ephemeral DHT node at the proxy, and tells no peer
   * its LAN addresses. */
  const char *proxy;
  /* The key the node shows its proxy (what its allow list names); NULL: a
   * fresh one, for open proxies. Copied. */
  const kp_keypair_t *proxy_identity;
  /* With proxy: keep this host's addresses from everyone; its connections
   * stay proxied. Without it, a proxied node also opens a socket of its
   * own, learns that socket's public address from two DHT nodes and
   * punches from it: a connection through the proxy moves direct where a
   * path proves itself (the proxy path is kept to fall back to), and the
   * peer and those DHT nodes learn this host's public address. */
  bool proxy_private;
  /* Ask the IPv4 default gateway for a port mapping of the node's socket
   * (NAT-PMP, RFC 6886): a NAT that would give each destination a new port
   * then forwards one stable public port, and the node can be reached,
   * punched and even become a DHT member. On by default; never asked for
   * by a node bound to loopback, an IPv6 node, a proxied or tunnelled one,
   * or one whose bootstrap nodes (those given here: it is decided when
   * the node is created) are all on loopback or none (a local testnet). */
  bool port_mapping;
  /* A second local address, of the other family (say "[::]:0" beside a
   * bind of "0.0.0.0:0"): the node is then dual-stack, a socket, routing
   * table, DHT instance and record store per family (as BEP 32). Its
   * announcements go out over both; lookups, connects and its server's
   * clients come over both, connects preferring IPv6 (a head start, then
   * whichever proves itself first); as a DHT node it forwards hellos between
   * the families; as a relay it pairs a peer of one with a peer of the
   * other. Bootstrap nodes of both families may be given. Not with a proxy
   * or a TCP relay. NULL: one family. */
  const char *bind_also;
} kp_node_options_t;

/* One node found by a query. */
typedef struct kp_node_peer_s {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
} kp_node_peer_t;

/* Counters a node keeps; all monotonic except the gauges marked so. */
typedef struct kp_node_stats_s {
  uint64_t packets_in;
  uint64_t packets_out;
  uint64_t bytes_in;
  uint64_t bytes_out;
  uint64_t requests_in;
  uint64_t responses_in;
  uint64_t requests_out;
  uint64_t timeouts;
  uint64_t drops_malformed; /* bad msgpack structure or trailing bytes */
  uint64_t drops_truncated; /* input ended inside a message */
  uint64_t drops_too_big;   /* datagram over 1200 bytes or a field over its bound */
  uint64_t drops_version;   /* unknown protocol version */
  uint64_t drops_field;     /* a field of the wrong type, length or range */
  uint64_t drops_command;   /* unknown or unregistered command */
  uint64_t drops_bad_id;    /* sender id does not match the source address */
  uint64_t drops_unmatched; /* response matching no request (tid + source) */
  uint64_t drops_rate;      /* over a request rate or in-flight cap */
  uint64_t drops_send;      /* datagrams the socket refused (buffer full) */
  uint64_t drops_other;     /* datagrams of a class this node does not speak */
  uint32_t table_size;      /* gauge: nodes in the routing table */
  uint32_t inflight;        /* gauge: requests awaiting a response */
  uint64_t rx_held;         /* gauge: received bytes its connections hold (rx_budget) */
} kp_node_stats_t;

/* What one query cost. */
typedef struct kp_node_query_stats_s {
  unsigned requests; /* datagrams sent, retries included */
  unsigned responses;
  unsigned timeouts;
  unsigned hops; /* referral depth of the closest result (1 = known at the start) */
  uint64_t duration_us;
} kp_node_query_stats_t;

typedef void (*kp_node_close_cb)(kp_node_t *node);

/* Called once when a find-node query ends. On success (status 0) peers holds
 * the up to KP_DHT_K closest responsive nodes, closest first (a dual-stack
 * node asks over both families, as BEP 32 has it: up to KP_DHT_K of each,
 * mixed by distance; stats add both up); peers and stats are valid only
 * during the call. status is KP_ENONODES when no node
 * answered, UV_ECANCELED when the node closed first. */
typedef void (*kp_node_find_cb)(kp_node_t *node, int status, const kp_node_peer_t *peers,
                                size_t count, const kp_node_query_stats_t *stats, void *arg);

/* Fills opts with defaults (bind "0.0.0.0:0", AUTO, no bootstrap). */
KP_EXTERN void kp_node_options_init(kp_node_options_t *opts);

/* Creates a node on loop: binds its UDP socket, starts its timer and, if
 * bootstrap nodes were given, starts joining. All or nothing: on error
 * nothing is left allocated or open and *out is NULL. Errors: KP_EBADADDR,
 * KP_ECONFIG, UV_EADDRINUSE and other bind errors, UV_ENOMEM. */
KP_EXTERN int kp_node_create(uv_loop_t *loop, const kp_node_options_t *opts, kp_node_t **out);

/* Closes the node: pending queries finish with UV_ECANCELED, then cb fires
 * once, on a later loop tick, after which the node's memory is gone. */
KP_EXTERN void kp_node_close(kp_node_t *node, kp_node_close_cb cb);

/* Adds bootstrap nodes ("host:port", names resolved asynchronously) and
 * starts (re)joining the DHT. */
KP_EXTERN int kp_node_bootstrap(kp_node_t *node, const char *const *hosts, size_t count);

/* Starts an iterative query for the nodes closest to target. cb fires once,
 * later (never from inside this call). Errors: UV_ENOMEM. */
KP_EXTERN int kp_node_find_node(kp_node_t *node, const uint8_t target[KP_ID_LEN],
                                kp_node_find_cb cb, void *arg);

/* The node's id (valid once its public address is known; else all zero),
 * and whether it is currently a routing-table member. */
KP_EXTERN const uint8_t *kp_node_id(const kp_node_t *node);
KP_EXTERN bool kp_node_is_member(const kp_node_t *node);

/* The locally bound address, and the public address others report (returns
 * KP_ENOTFOUND while unknown). */
KP_EXTERN int kp_node_local_addr(const kp_node_t *node, kp_addr_t *out);
KP_EXTERN int kp_node_public_addr(const kp_node_t *node, kp_addr_t *out);

/* The port mapping at the gateway (kp_node_options_t.port_mapping). */
typedef enum kp_port_mapping_state_e {
  KP_PORT_MAPPING_OFF,         /* not asked for */
  KP_PORT_MAPPING_ASKING,      /* asked; no answer yet */
  KP_PORT_MAPPING_ACTIVE,      /* external forwards to the node's socket */
  KP_PORT_MAPPING_UNAVAILABLE, /* no gateway, or it refused or never answered: why */
} kp_port_mapping_state_t;
typedef struct kp_port_mapping_s {
  kp_port_mapping_state_t state;
  const char *protocol; /* "NAT-PMP" */
  kp_addr_t gateway;
  kp_addr_t external;  /* ACTIVE: the gateway's public address and the mapped port */
  uint32_t lifetime_s; /* as granted; renewed at half of it */
  uint32_t renewals;
  const char *why; /* UNAVAILABLE: a static string */
} kp_port_mapping_t;
KP_EXTERN void kp_node_port_mapping(const kp_node_t *node, kp_port_mapping_t *out);

/* A node that speaks through proxies (kp_node_options_t.proxy): through
 * which, and whether it fell back on this host's own sockets because
 * every proxy went silent (docs/architecture.md, "Losing every proxy"). */
typedef struct kp_node_proxy_info_s {
  bool proxied;    /* false: no proxy was given; nothing else is set */
  kp_addr_t proxy; /* the one in use, or being tried */
  bool up;         /* the session with it is up */
  bool tcp;        /* over TCP: asked for ("tcp:"), or UDP does not get through now */
  bool on_own;     /* speaking from this host's own sockets meanwhile */
  uint32_t falls;  /* times it fell back on them */
  /* Sessions tried over the other transport (over TCP: UDP; over UDP with
   * every proxy silent: TCP), and those welcomed, on which the link moved
   * (docs/architecture.md, "Proxies", Over TCP). */
  uint32_t udp_trials, tcp_trials;
  uint32_t moves_to_udp, moves_to_tcp;
} kp_node_proxy_info_t;
KP_EXTERN void kp_node_proxy_info(const kp_node_t *node, kp_node_proxy_info_t *out);

KP_EXTERN void kp_node_stats(const kp_node_t *node, kp_node_stats_t *out);

/* Copies up to cap routing-table entries into out and returns how many the
 * table holds (which may exceed cap). */
KP_EXTERN size_t kp_node_table(const kp_node_t *node, kp_node_peer_t *out, size_t cap);

/* A relay node's counters; UV_EINVAL if the node runs no relay. */
KP_EXTERN int kp_node_relay_counters(const kp_node_t *node, kp_relay_counters_t *out);

/* Free for the caller's use. */
KP_EXTERN void *kp_node_get_data(const kp_node_t *node);
KP_EXTERN void kp_node_set_data(kp_node_t *node, void *data);

/* ---- Swarms: announce and lookup ------------------------------------------ */

typedef struct kp_announce_s kp_announce_t;

/* After each announce round: status 0 and how many nodes stored the record
 * (the relays are then valid), or an error (the announcement keeps
 * retrying). Rounds run every 10 minutes (at first after 1 s, 2 s, 4 s...
 * while fewer than 20 nodes store it) and whenever a relay stops
 * answering. UV_ECANCELED once if the node closes first. */
typedef void (*kp_announce_cb)(kp_announce_t *a, int status, unsigned stored);

/* Announces kp's public key under target (kp_target_from_topic or
 * kp_target_from_key) with up to KP_RECORD_MAX_DATA bytes of data, and keeps
 * the announcement alive until kp_announce_stop: refreshed before it expires
 * (20 minutes), with a NAT mapping kept open to the relay nodes. kp and data
 * are copied. Errors: KP_ETOOBIG, UV_ENOMEM, UV_EINVAL (node closing). */
KP_EXTERN int kp_node_announce(kp_node_t *node, const uint8_t target[KP_ID_LEN],
                               const kp_keypair_t *kp, const void *data, size_t data_len,
                               kp_announce_cb cb, kp_announce_t **out);

/* Stops the announcement; its callback never fires again and the handle is
 * freed. With unannounce, the record is also withdrawn from the nodes that
 * hold it (in the background). */
KP_EXTERN void kp_announce_stop(kp_announce_t *a, bool unannounce);

/* Announces again now (after a network change, say). */
KP_EXTERN void kp_announce_refresh(kp_announce_t *a);

/* Copies up to cap relay addresses of the last good round; returns how many
 * there are. */
KP_EXTERN size_t kp_announce_relays(const kp_announce_t *a, kp_addr_t *out, size_t cap);
KP_EXTERN void *kp_announce_get_data(const kp_announce_t *a);
KP_EXTERN void kp_announce_set_data(kp_announce_t *a, void *data);

/* Each verified record, once per key (again if a newer seq shows up); rec
 * is valid during the call. */
typedef void (*kp_lookup_record_cb)(kp_node_t *node, const kp_record_t *rec, void *arg);
/* Once, last: status 0 (found may be 0), KP_ENONODES, UV_ECANCELED. */
typedef void (*kp_lookup_done_cb)(kp_node_t *node, int status, size_t found,
                                  const kp_node_query_stats_t *stats, void *arg);

/* Looks up who announced under target. on_record may be NULL. */
KP_EXTERN int kp_node_lookup(kp_node_t *node, const uint8_t target[KP_ID_LEN],
                             kp_lookup_record_cb on_record, kp_lookup_done_cb on_done, void *arg);

/* ---- Mutable and immutable values ----------------------------------------- */

/* status 0 once at least one node stored the value; else KP_ECAS (a
 * compare-and-swap conflict: re-read and retry), KP_ESEQ (not newer than
 * what nodes hold), KP_ELIMIT, KP_ENONODES, UV_ECANCELED. */
typedef void (*kp_put_cb)(kp_node_t *node, int status, unsigned stored, void *arg);
/* status 0 with the newest valid value (valid during the call; seq is 0 for
 * an immutable one), or KP_ENOTFOUND, UV_ECANCELED. */
typedef void (*kp_get_cb)(kp_node_t *node, int status, uint64_t seq, const uint8_t *value,
                          size_t len, void *arg);

/* Stores value (<= KP_MUTABLE_MAX_VALUE bytes) under kp's public key and
 * salt (<= KP_MUTABLE_MAX_SALT bytes; salt + value <= 1006), signed, with
 * sequence number seq. With cas non-NULL, each node stores it only if the
 * seq it holds (0 if none) equals *cas. Errors: KP_ETOOBIG, UV_ENOMEM. */
KP_EXTERN int kp_node_put_mutable(kp_node_t *node, const kp_keypair_t *kp, const void *salt,
                                  size_t salt_len, uint64_t seq, const void *value, size_t len,
                                  const uint64_t *cas, kp_put_cb cb, void *arg);
KP_EXTERN int kp_node_get_mutable(kp_node_t *node, const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                                  const void *salt, size_t salt_len, kp_get_cb cb, void *arg);

/* Stores value (<= KP_IMMUTABLE_MAX_VALUE bytes) under its own hash, which
 * is written to hash. */
KP_EXTERN int kp_node_put_immutable(kp_node_t *node, const void *value, size_t len,
                                    uint8_t hash[KP_ID_LEN], kp_put_cb cb, void *arg);
KP_EXTERN int kp_node_get_immutable(kp_node_t *node, const uint8_t hash[KP_ID_LEN], kp_get_cb cb,
                                    void *arg);

/* ---- Connections and streams (the data plane) ------------------------------ */

/* A connection carries reliable, ordered, encrypted byte streams between
 * two peers over UDP, with congestion control, flow control, keepalives
 * and path migration (docs/architecture.md, "The data plane"). Connections
 * live on an endpoint (a UDP socket). Streams are libuv-shaped: writes
 * reference the caller's buffers until the peer has acknowledged them, then
 * complete; reads hand over data that is valid during the callback. */
typedef struct kp_endpoint_s kp_endpoint_t;
typedef struct kp_conn_s kp_conn_t;
typedef struct kp_stream_s kp_stream_t;
typedef struct kp_write_s kp_write_t;

typedef void (*kp_write_cb)(kp_write_t *req, int status);

/* A write request, like uv_write_t: owned by the caller, who keeps it and
 * the bytes it points to unchanged until its callback. */
struct kp_write_s {
  void *data; /* free for the caller */
  kp_stream_t *stream;
  kp_write_cb cb;
  kp__swrite_t private_;
};

typedef struct kp_endpoint_stats_s {
  uint64_t packets_in, packets_out, bytes_in, bytes_out;
  uint64_t gso_sends;     /* sends that carried several datagrams (UDP GSO) */
  uint64_t gro_receives;  /* receives that carried several (UDP GRO) */
  uint64_t send_drops;    /* datagrams the kernel refused */
  uint64_t drops_unknown; /* stream packets for no connection here */
  uint64_t drops_other;   /* datagrams that are not stream packets */
  unsigned conns;         /* gauge */
} kp_endpoint_stats_t;

typedef void (*kp_endpoint_close_cb)(kp_endpoint_t *ep);

/* An endpoint on its own UDP socket bound to bind ("127.0.0.1:0", ...).
 * Errors: KP_EBADADDR, bind errors, UV_ENOMEM. */
KP_EXTERN int kp_endpoint_create(uv_loop_t *loop, const char *bind, kp_endpoint_t **out);
/* Closes every connection (peers are told, on_close fires with
 * UV_ECANCELED) and the socket; cb fires on a later tick. Stream handles
 * still open must be closed as usual; the memory goes with the last. */
KP_EXTERN void kp_endpoint_close(kp_endpoint_t *ep, kp_endpoint_close_cb cb);
KP_EXTERN int kp_endpoint_local_addr(const kp_endpoint_t *ep, kp_addr_t *out);
KP_EXTERN void kp_endpoint_stats(const kp_endpoint_t *ep, kp_endpoint_stats_t *out);

/* The peer opened stream; start reading it (kp_stream_read_start) or close
 * it. Until read starts its data waits, up to the stream window. */
typedef void (*kp_conn_stream_cb)(kp_conn_t *conn, kp_stream_t *stream);
/* The connection is over: status 0 (kp_conn_close), KP_ECLOSED (the peer
 * closed it, with code), KP_EPEERDEAD (nothing heard for the idle timeout),
 * UV_ECANCELED (the endpoint closed). Fires once. The handle stays valid
 * (every call on it fails or does nothing) until kp_conn_close. */
typedef void (*kp_conn_close_cb)(kp_conn_t *conn, int status, uint64_t code);
/* The connection's path changed (or stopped carrying, or carries again). */
typedef void (*kp_conn_path_cb)(kp_conn_t *conn, const kp_path_event_t *ev);

/* The peer sent a datagram (kp_conn_datagram_send): data is valid during
 * the call only. Called from the loop as packets are read, once per
 * datagram that arrived (none is sent again when lost). */
typedef void (*kp_conn_datagram_cb)(kp_conn_t *conn, const uint8_t *data, size_t len);

typedef struct kp_conn_callbacks_s {
  kp_conn_stream_cb on_stream; /* NULL: the peer's streams are refused */
  kp_conn_close_cb on_close;
  kp_conn_path_cb on_path;         /* may be NULL */
  kp_conn_datagram_cb on_datagram; /* NULL: datagrams are dropped (and counted) */
} kp_conn_callbacks_t;

/* Zeroes opts (every tunable at its default). */
KP_EXTERN void kp_conn_options_init(kp_conn_options_t *opts);
/* Starts a connection on ep with what opts say. Errors: KP_ECONFIG (a bad
 * option, a cipher this machine lacks), UV_EEXIST (local_id in use),
 * UV_ENOMEM. */
KP_EXTERN int kp_conn_open(kp_endpoint_t *ep, const kp_conn_options_t *opts,
                           const kp_conn_callbacks_t *callbacks, kp_conn_t **out);
/* Closes gracefully: the peer gets code; pending writes fail with
 * UV_ECANCELED; on_close fires with 0 once the close went out. Call it once
 * for every connection, also after on_close reported its end (like
 * uv_close for a handle): the memory goes when it was called and the
 * connection's last stream handle is closed. kp_endpoint_close does it for
 * every connection left. */
KP_EXTERN void kp_conn_close(kp_conn_t *conn, uint64_t code);
/* Moves the connection to another address of the peer now (one the caller
 * has verified, e.g. by a hole punch). Packets from a new address move it
 * by themselves, once the peer answers a check there. */
KP_EXTERN void kp_conn_set_remote(kp_conn_t *conn, const kp_addr_t *remote);
KP_EXTERN void kp_conn_stats(const kp_conn_t *conn, kp_conn_stats_t *out);
KP_EXTERN void *kp_conn_get_data(const kp_conn_t *conn);
KP_EXTERN void kp_conn_set_data(kp_conn_t *conn, void *data);

/* Sends an unreliable datagram to the peer (docs/protocol.md, "Datagrams"):
 * copied (the caller keeps its buffer), sent once when the congestion
 * window allows (it shares the connection's window and pacing with the
 * streams, and goes ahead of stream data), delivered to the peer's
 * on_datagram at most once, maybe not at all, maybe out of order; never
 * sent again. At most 256 (or 256 KiB) wait to be sent. Errors, each a
 * counted drop (kp_conn_stats_t.datagrams_dropped) but UV_EPIPE:
 * UV_EMSGSIZE (len over kp_conn_datagram_max), UV_ENOBUFS (the queue is
 * full: the path is slower than the sender), UV_ENOMEM; UV_EPIPE (the
 * connection is closing or over). Loop thread only. */
KP_EXTERN int kp_conn_datagram_send(kp_conn_t *conn, const void *data, size_t len);
/* The largest datagram the connection's packets carry now: 1078 bytes on
 * the 1200-byte packets every path starts with, up to 1350 once path MTU
 * probing found 1472; back to 1078 after a move (queued datagrams that no
 * longer fit are dropped). 0 once the connection is over. */
KP_EXTERN size_t kp_conn_datagram_max(const kp_conn_t *conn);

/* nread > 0: data (valid during the call). UV_EOF: the peer finished
 * sending. Else an error: KP_ERESET (the peer reset the stream; see
 * kp_stream_reset_code), KP_ECLOSED, KP_EPEERDEAD, UV_ECANCELED (the
 * connection closed here). Nothing follows EOF or an error. */
typedef void (*kp_stream_read_cb)(kp_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
typedef void (*kp_stream_close_cb)(kp_stream_t *stream);
/* The write queue fell below half the high-water mark after reaching it. */
typedef void (*kp_stream_drain_cb)(kp_stream_t *stream);

/* Opens a stream; the peer learns of it with the first data or end.
 * Errors: UV_EPIPE (the connection is closing), UV_ENOMEM. */
KP_EXTERN int kp_stream_open(kp_conn_t *conn, kp_stream_t **out);
KP_EXTERN int kp_stream_read_start(kp_stream_t *stream, kp_stream_read_cb cb);
/* Stops reading: data waits, and once the window is full the peer waits. */
KP_EXTERN int kp_stream_read_stop(kp_stream_t *stream);
/* Queues bufs (the array is copied, the bytes are not); cb fires once the
 * peer acknowledged every byte (0) or they cannot be delivered (UV_ECANCELED
 * after a reset or close here; KP_ERESET if the peer stopped reading;
 * KP_ECLOSED, KP_EPEERDEAD). Queues whatever the high-water mark says:
 * kp_stream_is_writable tells when to wait for drain. Errors: UV_EPIPE (the
 * stream was ended, reset or closed), UV_ENOMEM. */
KP_EXTERN int kp_stream_write(kp_write_t *req, kp_stream_t *stream, const uv_buf_t bufs[],
                              unsigned nbufs, kp_write_cb cb);
/* Half-close: the peer reads EOF after everything written. */
KP_EXTERN int kp_stream_end(kp_stream_t *stream);
/* Abandons the stream both ways: pending writes fail with UV_ECANCELED, the
 * peer's reads fail with KP_ERESET and its writes stop. */
KP_EXTERN void kp_stream_reset(kp_stream_t *stream, uint64_t code);
/* Releases the handle. Data written before kp_stream_end still reaches the
 * peer; a stream not ended is reset (code 0). cb fires on a later tick,
 * after every write callback of the stream. */
KP_EXTERN void kp_stream_close(kp_stream_t *stream, kp_stream_close_cb cb);
/* Bytes written and not yet acknowledged. */
KP_EXTERN size_t kp_stream_write_queue_size(const kp_stream_t *stream);
/* False once the write queue reached the high-water mark (until drain). */
KP_EXTERN bool kp_stream_is_writable(const kp_stream_t *stream);
KP_EXTERN void kp_stream_set_drain_cb(kp_stream_t *stream, kp_stream_drain_cb cb);
/* The code of the peer's reset (valid after a KP_ERESET read). */
KP_EXTERN uint64_t kp_stream_reset_code(const kp_stream_t *stream);
KP_EXTERN uint64_t kp_stream_id(const kp_stream_t *stream);
KP_EXTERN kp_conn_t *kp_stream_conn(const kp_stream_t *stream);
KP_EXTERN void *kp_stream_get_data(const kp_stream_t *stream);
KP_EXTERN void kp_stream_set_data(kp_stream_t *stream, void *data);

/* ---- Connecting by key -------------------------------------------------------------- */

/* A server listens on a key pair from wherever it is (behind a NAT too); a
 * client connects to that public key. They shake hands through the DHT
 * nodes the server announced to, punch a direct path through both NATs,
 * and get an end-to-end encrypted kp_conn_t (docs/architecture.md,
 * "Connecting"). Both ends' connections live on their node's socket. */

typedef struct kp_server_s kp_server_t;

/* 0 lets the client in; else the reason it is refused, which it gets:
 * KP_ENOTALLOWED, KP_ENOSERVICE, KP_EINVITE, KP_EINVITEUSED,
 * KP_EINVITEEXPIRED (anything else counts as KP_ENOTALLOWED). */
typedef int (*kp_firewall_cb)(kp_server_t *server, const kp_client_hello_t *hello, void *arg);
/* A client connected: conn is open, with conn_callbacks installed. */
typedef void (*kp_server_connection_cb)(kp_server_t *server, kp_conn_t *conn,
                                        const kp_connect_info_t *info, void *arg);

/* Listens on kp (copied) and announces it on the DHT. firewall may be NULL
 * (everyone is let in). Errors: UV_EEXIST (already listening on that key),
 * KP_ELIMIT (4 servers per node), UV_ENOMEM. */
KP_EXTERN int kp_server_listen(kp_node_t *node, const kp_keypair_t *kp, kp_firewall_cb firewall,
                               const kp_conn_callbacks_t *conn_callbacks,
                               kp_server_connection_cb on_connection, void *arg, kp_server_t **out);
/* Stops listening and withdraws the announcement. Open connections stay. */
KP_EXTERN void kp_server_close(kp_server_t *server);

KP_EXTERN void kp_server_set_limits(kp_server_t *server, const kp_server_limits_t *limits);

/* What became of the hellos a server was sent, counted since it started
 * listening. */
typedef struct kp_server_stats_s {
  uint64_t handshakes;     /* hellos read (Noise message 1 opened) */
  uint64_t accepted;       /* ... and let in by the firewall */
  uint64_t refused;        /* ... and refused by it (any reason) */
  uint64_t busy;           /* answered BUSY: the session table full or over the rate */
  uint64_t dropped;        /* sent past the sender's own rate: unanswered */
  uint64_t bad;            /* failed to decrypt or decode */
  uint64_t replays;        /* not newer than the client's last hello */
  uint64_t evicted;        /* unproven sessions dropped for newer hellos */
  uint64_t connections;    /* sessions that ended on a proven path */
  uint64_t punch_timeouts; /* sessions let in whose punch found no path */
  unsigned sessions;       /* gauge: handshakes in progress */
} kp_server_stats_t;
KP_EXTERN void kp_server_stats(const kp_server_t *server, kp_server_stats_t *out);

KP_EXTERN void kp_server_set_info(kp_server_t *server, const kp_device_info_t *info,
                                  kp_info_policy_t who);

/* Once: status 0 and the open connection, or KP_EPEERNOTFOUND,
 * KP_ENOTALLOWED, KP_EOVERLOADED, KP_EPEERVERSION, KP_EHANDSHAKE,
 * KP_ENODIRECT (both NAT types random and no relay known; info has both
 * NAT types), KP_EPUNCH, KP_ERELAY / KP_ERELAYFULL / KP_ERELAYLIMIT (the
 * relay did not answer or refused), UV_ECANCELED (the
 * node closed). info is valid during the call. */
typedef void (*kp_connect_cb)(kp_node_t *node, int status, kp_conn_t *conn,
                              const kp_connect_info_t *info, void *arg);

/* Connects to the peer whose public key is server_key, as self. */
KP_EXTERN int kp_node_connect(kp_node_t *node, const kp_keypair_t *self,
                              const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                              const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb,
                              void *arg);

/* What a client may ask for besides a connection. */
typedef struct kp_connect_options_s {
  const char *service;       /* NULL or "": the server's default service */
  const kp_invite_t *invite; /* prove it (its server key must be server_key's) */
  bool want_info;            /* ask for the device info (info->has_device) */
} kp_connect_options_t;

/* kp_node_connect with options (opts may be NULL). A refusal still
 * reports the device info if the server gave it. */
KP_EXTERN int kp_node_connect_with(kp_node_t *node, const kp_keypair_t *self,
                                   const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                                   const kp_connect_options_t *opts,
                                   const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb,
                                   void *arg);

/* ---- Proxies ------------------------------------------------------------- */

/* A proxy lends peers a public endpoint (docs/protocol.md, "Proxying";
 * docs/architecture.md, "Proxies"): it runs on a node's socket, and each
 * peer that opens a session to its key gets allocations, UDP sockets on
 * the proxy's address that the peer's node runs on. Blind: it forwards the
 * peers' sealed bytes unopened. */
typedef struct kp_proxy_service_s kp_proxy_service_t;

/* A proxy's limits (0 takes the default). */
typedef struct kp_proxy_limits_s {
  unsigned max_sessions;   /* peers at once: 256 */
  unsigned max_allocs;     /* allocations (sockets) in all: 512 */
  unsigned allocs_per_key; /* allocations one peer key may hold: 4 */
  unsigned per_ip;         /* sessions, and allocations, one IP (IPv6 /64) may hold: 16 */
  unsigned lifetime_s;     /* an allocation not refreshed ends after this: 600 */
  unsigned max_lifetime_s; /* any allocation ends after this: 86400 */
  uint64_t alloc_rate;     /* bytes/s per allocation, each way: 8 MiB/s (and a datagram
                              per KiB of it per second) */
  uint64_t alloc_quota;    /* bytes one allocation may carry in all: no quota */
  uint64_t total_rate;     /* bytes/s through all allocations: 64 MiB/s */
} kp_proxy_limits_t;

typedef struct kp_proxy_service_options_s {
  const kp_keypair_t *identity; /* the proxy's key (copied); NULL: a fresh one */
  kp_proxy_limits_t limits;
  /* Peer keys that may use it (allow_count of them, copied); NULL: anyone. */
  const uint8_t (*allow)[KP_PUBLIC_KEY_LEN];
  size_t allow_count;
  /* Announce it on the DHT under the topic "kadpunch/proxies/v1" once the
   * node is a member with a public address. */
  bool announce;
} kp_proxy_service_options_t;

typedef struct kp_proxy_counters_s {
  unsigned sessions, allocs;  /* now */
  uint64_t welcomed, refused; /* sessions made; HELLOs and OPENs refused, every reason */
  uint64_t forged, replayed;  /* session datagrams that did not open, or came again */
  uint64_t sent, sent_bytes, received, received_bytes; /* through allocations */
  uint64_t dropped; /* datagrams an allocation was not let send or pass on */
} kp_proxy_counters_t;

KP_EXTERN void kp_proxy_service_options_init(kp_proxy_service_options_t *opts);
/* Runs a proxy on node's socket (node must outlive it, or close it: a node
 * that closes closes its proxy first). Errors: UV_ENOMEM, UV_EBUSY (the node
 * runs one already), UV_EINVAL. Loop thread only. */
KP_EXTERN int kp_proxy_service_create(kp_node_t *node, const kp_proxy_service_options_t *opts,
                                      kp_proxy_service_t **out);
typedef void (*kp_proxy_service_close_cb)(kp_proxy_service_t *svc);
/* Ends every session and allocation; cb (may be NULL) fires once, on a
 * later tick, when every allocation's socket is closed. */
KP_EXTERN void kp_proxy_service_close(kp_proxy_service_t *svc, kp_proxy_service_close_cb cb);
KP_EXTERN void kp_proxy_service_counters(const kp_proxy_service_t *svc, kp_proxy_counters_t *out);
KP_EXTERN const uint8_t *kp_proxy_service_key(const kp_proxy_service_t *svc);

#ifdef __cplusplus
}
#endif

#endif
