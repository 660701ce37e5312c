/* kadpunch: peer-to-peer connectivity by public key.
 *
 * The one public header. Everything here runs on a libuv loop the caller owns;
 * every function is "loop thread only" unless it says otherwise. Functions
 * return 0 on success or a negative error: libuv's UV_E* codes pass through
 * unchanged, kadpunch's own KP_E* codes are listed below. kp_strerror() and
 * kp_err_name() describe both.
 */
#ifndef KADPUNCH_H
#define KADPUNCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KP_VERSION_MAJOR 0
#define KP_VERSION_MINOR 1
#define KP_VERSION_PATCH 0

/* Returns the library version as "MAJOR.MINOR.PATCH". */
const char *kp_version_string(void);

/* ---- Errors ------------------------------------------------------------ */

/* The one list of kadpunch's own errors: name, message. Values count down
 * from KP__ERR_BASE so they never collide with libuv's (which are negated
 * errno values and UV_EAI_* / UV_EOF, all above -5000). */
#define KP_ERRNO_MAP(X)                                                                            \
  X(EMALFORMED, "malformed message")                                                               \
  X(ETRUNCATED, "truncated message")                                                               \
  X(ETOOBIG, "message or value too large")                                                         \
  X(EVERSION, "unsupported protocol version")                                                      \
  X(EFIELD, "message field has the wrong type, length or range")                                   \
  X(ECOMMAND, "unknown command")                                                                   \
  X(ENOSPACE, "output buffer too small")                                                           \
  X(EBADID, "node id does not match its address")                                                  \
  X(EBADTOKEN, "invalid or expired token")                                                         \
  X(EBADADDR, "invalid address")                                                                   \
  X(ENOTFOUND, "not found")                                                                        \
  X(ENONODES, "no reachable DHT nodes")                                                            \
  X(ELIMIT, "a configured limit was reached")                                                      \
  X(ESTATE, "operation not valid in the current state")                                            \
  X(ECONFIG, "invalid configuration")                                                              \
  X(EKEYPERM, "secret key file is readable by group or others (chmod 600 it)")                     \
  X(EKEYFORMAT, "not a kadpunch key, or a damaged one")                                            \
  X(EBADSIG, "signature does not verify")                                                          \
  X(ESEQ, "sequence number not newer than the stored one")                                         \
  X(ECAS, "compare-and-swap mismatch: the stored sequence number differs")                         \
  X(EHASH, "value does not match its hash")                                                        \
  X(ECLOSED, "connection closed by the peer")                                                      \
  X(EPEERDEAD, "the peer stopped responding")                                                      \
  X(ERESET, "stream reset by the peer")                                                            \
  X(EPEERNOTFOUND, "no announcement of that key on the DHT")                                       \
  X(ENOTALLOWED, "the peer refused the connection: this key is not allowed")                       \
  X(EOVERLOADED, "the peer refused the connection: overloaded")                                    \
  X(EPEERVERSION, "the peer speaks an incompatible protocol version")                              \
  X(EHANDSHAKE, "handshake timed out: no relay node reached the peer")                             \
  X(ENODIRECT, "no direct path between these NAT types (both random)")                             \
  X(EPUNCH, "holepunch timed out: no probe got through")                                           \
  X(ERELAY, "no direct path, and no relay answered")                                               \
  X(ERELAYFULL, "the relay refused: it carries all the sessions it may")                           \
  X(ERELAYLIMIT, "the relay refused: this address pairs too often, or holds its share")            \
  X(EINVITE, "the peer does not know this invitation")                                             \
  X(EINVITEUSED, "this invitation was already used")                                               \
  X(EINVITEEXPIRED, "this invitation has expired")                                                 \
  X(ENOSERVICE, "the peer offers no service by that name")                                         \
  X(EREFUSED, "refused by the node's policy")                                                      \
  X(ECONNLIMIT, "the peer refused: too many connections from this key or address")

#define KP__ERR_BASE (-30000)

typedef enum {
  KP__ERR_FIRST = KP__ERR_BASE,
#define KP__ERR_ENUM(name, msg) KP_##name,
  KP_ERRNO_MAP(KP__ERR_ENUM)
#undef KP__ERR_ENUM
      KP__ERR_LAST
} kp_errno_t;

/* A readable message for any error this library returns (KP_E* or UV_E*).
 * Returns a static string; never NULL. */
const char *kp_strerror(int err);

/* The symbolic name ("KP_EBADTOKEN", "ETIMEDOUT", ...) of an error. */
const char *kp_err_name(int err);

/* ---- Allocator --------------------------------------------------------- */

typedef void *(*kp_malloc_func)(size_t size);
typedef void *(*kp_realloc_func)(void *ptr, size_t size);
typedef void *(*kp_calloc_func)(size_t count, size_t size);
typedef void (*kp_free_func)(void *ptr);

/* Replaces the allocator every kadpunch allocation goes through. Call it
 * before creating any object; all four functions are required. Returns
 * UV_EINVAL if one is NULL. Not thread safe, like uv_replace_allocator(). */
int kp_replace_allocator(kp_malloc_func malloc_func, kp_realloc_func realloc_func,
                         kp_calloc_func calloc_func, kp_free_func free_func);

/* ---- Addresses --------------------------------------------------------- */

#define KP_AF_INET 4
#define KP_AF_INET6 6

/* An IPv4 or IPv6 UDP endpoint. A plain value: copy it freely. IPv4 uses
 * ip[0..3]; the remaining bytes are zero. port is in host byte order. */
typedef struct kp_addr_s {
  uint8_t family; /* KP_AF_INET, KP_AF_INET6, or 0 when unset */
  uint16_t port;
  uint8_t ip[16];
} kp_addr_t;

/* Longest text kp_addr_format() writes, with its NUL: "[v6]:65535". */
#define KP_ADDR_STRLEN 56

/* Parses "1.2.3.4:5", "[::1]:5" or a bare IP (then port = 0). Returns
 * KP_EBADADDR for anything else. Never resolves names. */
int kp_addr_parse(kp_addr_t *out, const char *text);

/* Writes "1.2.3.4:5" or "[::1]:5" into buf (at least KP_ADDR_STRLEN bytes
 * are always enough) and returns buf. */
char *kp_addr_format(const kp_addr_t *addr, char *buf, size_t size);

/* ---- Logging ----------------------------------------------------------- */

typedef enum {
  KP_LOG_ERROR = 0,
  KP_LOG_WARN = 1,
  KP_LOG_INFO = 2,
  KP_LOG_DEBUG = 3,
  KP_LOG_TRACE = 4
} kp_log_level_t;

/* Receives one formatted log line (no trailing newline). */
typedef void (*kp_log_cb)(void *ctx, kp_log_level_t level, const char *line);

/* Node ids and DHT targets are 32 bytes; a query returns the k = 20 closest. */
#define KP_ID_LEN 32
#define KP_DHT_K 20

/* ---- Identity ---------------------------------------------------------- */

#define KP_PUBLIC_KEY_LEN 32
#define KP_SECRET_KEY_LEN 64
#define KP_SEED_LEN 32
/* A public key as text: z-base-32, 52 lowercase letters and digits (a valid
 * host name label, so `ssh <key>` works). */
#define KP_KEY_TEXT_LEN 52

/* An ed25519 key pair (libsodium's layout: secret_key = seed || public). */
typedef struct kp_keypair_s {
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  uint8_t secret_key[KP_SECRET_KEY_LEN];
} kp_keypair_t;

void kp_keypair_generate(kp_keypair_t *kp);
void kp_keypair_from_seed(kp_keypair_t *kp, const uint8_t seed[KP_SEED_LEN]);
/* Overwrites the key pair with zeros. */
void kp_keypair_wipe(kp_keypair_t *kp);

/* Writes kp to path, mode 0600 (docs/protocol.md, "Key files"). Without
 * overwrite an existing file is an error (UV_EEXIST); with it the file is
 * replaced atomically. Other errors: UV_EACCES, UV_ENOENT, ... */
int kp_key_file_write(const char *path, const kp_keypair_t *kp, bool overwrite);

/* Reads a key file. Errors: KP_EKEYPERM (group/world access: the file is
 * not used), KP_EKEYFORMAT (not a key file, damaged, or the public key does
 * not match the seed), UV_ENOENT, UV_EACCES, UV_EISDIR. */
int kp_key_file_read(const char *path, kp_keypair_t *kp);

/* Public key <-> text. out gets KP_KEY_TEXT_LEN characters and a NUL.
 * kp_key_from_text accepts upper or lower case and nothing else
 * (KP_EKEYFORMAT). */
void kp_key_to_text(const uint8_t public_key[KP_PUBLIC_KEY_LEN], char out[KP_KEY_TEXT_LEN + 1]);
int kp_key_from_text(const char *text, uint8_t public_key[KP_PUBLIC_KEY_LEN]);

/* ---- Records ------------------------------------------------------------- */

#define KP_RECORD_MAX_RELAYS 3
#define KP_RECORD_MAX_DATA 128
#define KP_MUTABLE_MAX_VALUE 1000
#define KP_MUTABLE_MAX_SALT 64
#define KP_IMMUTABLE_MAX_VALUE 1000

/* An announcement: public_key can be reached through the relay nodes (the
 * DHT nodes it announced to and keeps a NAT mapping open with). seq grows
 * with every refresh; data is the announcer's own, at most
 * KP_RECORD_MAX_DATA bytes. Views are valid only during the callback. */
typedef struct kp_record_s {
  uint8_t public_key[KP_PUBLIC_KEY_LEN];
  uint64_t seq;
  kp_addr_t relays[KP_RECORD_MAX_RELAYS];
  size_t relay_count;
  const uint8_t *data;
  size_t data_len;
} kp_record_t;

/* The 32-byte DHT target of a topic (any bytes) and of a peer's own key
 * (docs/protocol.md, "Targets"). */
void kp_target_from_topic(const void *topic, size_t len, uint8_t target[KP_ID_LEN]);
void kp_target_from_key(const uint8_t public_key[KP_PUBLIC_KEY_LEN], uint8_t target[KP_ID_LEN]);

/* ---- Ciphers ------------------------------------------------------------- */

/* The AEAD protecting stream packets. */
typedef enum {
  KP_CIPHER_CHACHA20_POLY1305 = 1, /* everywhere */
  KP_CIPHER_AES256_GCM = 2         /* when both ends have hardware AES */
} kp_cipher_t;

/* KP_CIPHER_AES256_GCM if this machine has hardware AES, else ChaCha20. */
kp_cipher_t kp_cipher_preferred(void);

/* The congestion controller of a connection's sending side
 * (docs/architecture.md, "The data plane"). */
typedef enum {
  KP_CC_DEFAULT = 0, /* KP_CC_MODEL */
  KP_CC_MODEL = 1,   /* measured bandwidth and round trip (BBR-style), paced */
  KP_CC_CUBIC = 2    /* CUBIC with HyStart++, random loss gated out below 3% */
} kp_cc_t;

/* ---- NAT types ----------------------------------------------------------- */

/* What a node learns about its own network from what DHT nodes report
 * (docs/architecture.md, "NAT sampling"). */
typedef enum {
  KP_NAT_UNKNOWN = 0,    /* too few samples */
  KP_NAT_OPEN = 1,       /* unsolicited packets reach us at a stable address */
  KP_NAT_CONSISTENT = 2, /* the same mapped address towards every destination */
  KP_NAT_RANDOM = 3      /* a different mapped port per destination */
} kp_nat_type_t;

/* "unknown", "open", "consistent", "random". */
const char *kp_nat_type_name(kp_nat_type_t type);

/* How a connection's direct path was opened (docs/architecture.md,
 * "Connecting"). */
typedef enum {
  KP_PUNCH_NONE = 0,         /* no direct path */
  KP_PUNCH_LAN = 1,          /* both behind one public IP: over the LAN */
  KP_PUNCH_OPEN = 2,         /* the server takes unsolicited packets: no punching */
  KP_PUNCH_SIMULTANEOUS = 3, /* both sides probe at the same moment */
  KP_PUNCH_BIRTHDAY = 4,     /* many ports against one (a random NAT) */
  KP_PUNCH_RELAYED = 5       /* no direct path: through a blind relay */
} kp_punch_t;

/* "none", "lan", "open", "simultaneous", "birthday". */
const char *kp_punch_name(kp_punch_t punch);

/* ---- DHT node ---------------------------------------------------------- */

typedef struct kp_node_s kp_node_t;

typedef enum {
  KP_NODE_AUTO = 0,      /* start ephemeral; become a member once reachable and stable */
  KP_NODE_EPHEMERAL = 1, /* never join others' routing tables */
  KP_NODE_MEMBER = 2     /* always a member (bootstrap nodes, servers with a public address) */
} kp_node_mode_t;

/* A blind relay's limits (0 takes the default). A session is one relayed
 * connection; its rate applies to each direction. */
typedef struct kp_relay_limits_s {
  unsigned max_sessions; /* 1024 */
  uint64_t session_rate; /* bytes/s: 4 MiB/s */
  uint64_t total_rate;   /* bytes/s, all sessions: 64 MiB/s */
  unsigned idle_s;       /* a session nobody used this long ends: 600 */
  unsigned lifetime_s;   /* and any session after this: 86400 */
  unsigned tcp_links;    /* peers on the TCP port at once: 256 */
  /* Per IPv4 address (IPv6 /64) of the peers: */
  unsigned sessions_per_ip;  /* sessions one may be a side of: 32 */
  unsigned tcp_links_per_ip; /* TCP links one may hold: 16 */
} kp_relay_limits_t;

typedef struct kp_relay_counters_s {
  unsigned sessions;  /* now */
  unsigned tcp_links; /* peers on the TCP port now */
  uint64_t paired, forwarded, forwarded_bytes, dropped_rate;
  uint64_t refused_full, refused_attempts, refused_ip_limit, expired;
  uint64_t tcp_refused, tcp_drops; /* links over the limit; datagrams not let through */
  uint64_t tcp_stalled;            /* links closed for leaving their frames unread */
} kp_relay_counters_t;

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
   * its key; docs/protocol.md "Proxying"): every socket of the node is an
   * allocation of the proxy's, so peers and DHT nodes see the proxy's
   * address and never this host's. The node is then an ephemeral DHT node
   * at the proxy, and tells no peer its LAN addresses. */
  const char *proxy;
  /* The key the node shows its proxy (what its allow list names); NULL: a
   * fresh one, for open proxies. Copied. */
  const kp_keypair_t *proxy_identity;
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
 * the up to KP_DHT_K closest responsive nodes, closest first; peers and stats
 * are valid only during the call. status is KP_ENONODES when no node
 * answered, UV_ECANCELED when the node closed first. */
typedef void (*kp_node_find_cb)(kp_node_t *node, int status, const kp_node_peer_t *peers,
                                size_t count, const kp_node_query_stats_t *stats, void *arg);

/* Fills opts with defaults (bind "0.0.0.0:0", AUTO, no bootstrap). */
void kp_node_options_init(kp_node_options_t *opts);

/* Creates a node on loop: binds its UDP socket, starts its timer and, if
 * bootstrap nodes were given, starts joining. All or nothing: on error
 * nothing is left allocated or open and *out is NULL. Errors: KP_EBADADDR,
 * KP_ECONFIG, UV_EADDRINUSE and other bind errors, UV_ENOMEM. */
int kp_node_create(uv_loop_t *loop, const kp_node_options_t *opts, kp_node_t **out);

/* Closes the node: pending queries finish with UV_ECANCELED, then cb fires
 * once, on a later loop tick, after which the node's memory is gone. */
void kp_node_close(kp_node_t *node, kp_node_close_cb cb);

/* Adds bootstrap nodes ("host:port", names resolved asynchronously) and
 * starts (re)joining the DHT. */
int kp_node_bootstrap(kp_node_t *node, const char *const *hosts, size_t count);

/* Starts an iterative query for the nodes closest to target. cb fires once,
 * later (never from inside this call). Errors: UV_ENOMEM. */
int kp_node_find_node(kp_node_t *node, const uint8_t target[KP_ID_LEN], kp_node_find_cb cb,
                      void *arg);

/* The node's id (valid once its public address is known; else all zero),
 * and whether it is currently a routing-table member. */
const uint8_t *kp_node_id(const kp_node_t *node);
bool kp_node_is_member(const kp_node_t *node);

/* The locally bound address, and the public address others report (returns
 * KP_ENOTFOUND while unknown). */
int kp_node_local_addr(const kp_node_t *node, kp_addr_t *out);
int kp_node_public_addr(const kp_node_t *node, kp_addr_t *out);

void kp_node_stats(const kp_node_t *node, kp_node_stats_t *out);

/* Copies up to cap routing-table entries into out and returns how many the
 * table holds (which may exceed cap). */
size_t kp_node_table(const kp_node_t *node, kp_node_peer_t *out, size_t cap);

/* A relay node's counters; UV_EINVAL if the node runs no relay. */
int kp_node_relay_counters(const kp_node_t *node, kp_relay_counters_t *out);

/* Free for the caller's use. */
void *kp_node_get_data(const kp_node_t *node);
void kp_node_set_data(kp_node_t *node, void *data);

/* ---- Swarms: announce and lookup ------------------------------------------ */

typedef struct kp_announce_s kp_announce_t;

/* After each announce round: status 0 and how many nodes stored the record
 * (the relays are then valid), or an error (the announcement keeps
 * retrying). Rounds run every 10 minutes and whenever a relay stops
 * answering. UV_ECANCELED once if the node closes first. */
typedef void (*kp_announce_cb)(kp_announce_t *a, int status, unsigned stored);

/* Announces kp's public key under target (kp_target_from_topic or
 * kp_target_from_key) with up to KP_RECORD_MAX_DATA bytes of data, and keeps
 * the announcement alive until kp_announce_stop: refreshed before it expires
 * (20 minutes), with a NAT mapping kept open to the relay nodes. kp and data
 * are copied. Errors: KP_ETOOBIG, UV_ENOMEM, UV_EINVAL (node closing). */
int kp_node_announce(kp_node_t *node, const uint8_t target[KP_ID_LEN], const kp_keypair_t *kp,
                     const void *data, size_t data_len, kp_announce_cb cb, kp_announce_t **out);

/* Stops the announcement; its callback never fires again and the handle is
 * freed. With unannounce, the record is also withdrawn from the nodes that
 * hold it (in the background). */
void kp_announce_stop(kp_announce_t *a, bool unannounce);

/* Announces again now (after a network change, say). */
void kp_announce_refresh(kp_announce_t *a);

/* Copies up to cap relay addresses of the last good round; returns how many
 * there are. */
size_t kp_announce_relays(const kp_announce_t *a, kp_addr_t *out, size_t cap);
void *kp_announce_get_data(const kp_announce_t *a);
void kp_announce_set_data(kp_announce_t *a, void *data);

/* Each verified record, once per key (again if a newer seq shows up); rec
 * is valid during the call. */
typedef void (*kp_lookup_record_cb)(kp_node_t *node, const kp_record_t *rec, void *arg);
/* Once, last: status 0 (found may be 0), KP_ENONODES, UV_ECANCELED. */
typedef void (*kp_lookup_done_cb)(kp_node_t *node, int status, size_t found,
                                  const kp_node_query_stats_t *stats, void *arg);

/* Looks up who announced under target. on_record may be NULL. */
int kp_node_lookup(kp_node_t *node, const uint8_t target[KP_ID_LEN], kp_lookup_record_cb on_record,
                   kp_lookup_done_cb on_done, void *arg);

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
int kp_node_put_mutable(kp_node_t *node, const kp_keypair_t *kp, const void *salt, size_t salt_len,
                        uint64_t seq, const void *value, size_t len, const uint64_t *cas,
                        kp_put_cb cb, void *arg);
int kp_node_get_mutable(kp_node_t *node, const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                        const void *salt, size_t salt_len, kp_get_cb cb, void *arg);

/* Stores value (<= KP_IMMUTABLE_MAX_VALUE bytes) under its own hash, which
 * is written to hash. */
int kp_node_put_immutable(kp_node_t *node, const void *value, size_t len, uint8_t hash[KP_ID_LEN],
                          kp_put_cb cb, void *arg);
int kp_node_get_immutable(kp_node_t *node, const uint8_t hash[KP_ID_LEN], kp_get_cb cb, void *arg);

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

/* The reset code of a stream the peer refused: it had too many open. */
#define KP_STREAM_REFUSED 1

typedef void (*kp_write_cb)(kp_write_t *req, int status);

/* Private: the data plane's bookkeeping inside a kp_write_t. */
typedef struct kp__swrite_s {
  struct kp__swrite_s *next;
  uint64_t start, end;
  unsigned nbufs;
  uv_buf_t *bufs;
  uv_buf_t inline_bufs[4];
} kp__swrite_t;

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
int kp_endpoint_create(uv_loop_t *loop, const char *bind, kp_endpoint_t **out);
/* Closes every connection (peers are told, on_close fires with
 * UV_ECANCELED) and the socket; cb fires on a later tick. Stream handles
 * still open must be closed as usual; the memory goes with the last. */
void kp_endpoint_close(kp_endpoint_t *ep, kp_endpoint_close_cb cb);
int kp_endpoint_local_addr(const kp_endpoint_t *ep, kp_addr_t *out);
void kp_endpoint_stats(const kp_endpoint_t *ep, kp_endpoint_stats_t *out);

/* What both ends agreed on (the handshake supplies it; tests may pick
 * anything): who initiates, the connection ids, the cipher and one key per
 * direction. The rest tunes the connection; zero means the default. */
typedef struct kp_conn_options_s {
  bool initiator;     /* opens even-numbered streams; the other end odd */
  uint64_t local_id;  /* packets to us carry it */
  uint64_t remote_id; /* packets to the peer carry it */
  kp_cipher_t cipher; /* 0: ChaCha20-Poly1305 */
  kp_cc_t cc;         /* 0: KP_CC_MODEL */
  uint8_t tx_key[32];
  uint8_t rx_key[32];
  kp_addr_t remote;
  unsigned mtu;           /* first datagram size: 1200..1472, IPv6 1452 (default 1200) */
  bool no_mtu_probe;      /* do not probe the path for bigger datagrams */
  uint32_t stream_window; /* per-stream receive window to start with (default 2 MiB) */
  uint32_t conn_window;   /* whole-connection receive window to start with (default 16 MiB) */
  /* Hard bounds on the windows, which grow to about three times the
   * bandwidth-delay product the reads measure (default 64 MiB each; at or
   * below the starting sizes, the windows stay fixed). */
  uint32_t stream_window_max;
  uint32_t conn_window_max;
  unsigned max_streams;     /* streams the peer may have open at once (default 256) */
  unsigned idle_timeout_ms; /* nothing heard for this long: the peer is dead (30000) */
  unsigned keepalive_ms;    /* send at least this often (default 10000) */
  /* Per-stream write queue high-water mark (default 4 MiB). Writes stay
   * queued until acknowledged, so on a long fat path the mark rises to
   * four congestion windows: the queue holds what is in flight, and after
   * a loss what waits behind it. */
  size_t high_water;
  /* What is sent and unanswered for this long (or three probe timeouts)
   * makes the path dead (default 1000): the owner looks for another. */
  unsigned path_dead_ms;
  /* The owner resumes connections (kp_node's do): nothing heard for this
   * long, not idle_timeout_ms, ends it (0: idle_timeout_ms). */
  unsigned resume_grace_ms;
} kp_conn_options_t;

/* What a connection has seen. */
typedef struct kp_conn_stats_s {
  uint64_t srtt_us, min_rtt_us, rttvar_us;
  uint64_t cwnd, bytes_in_flight;
  uint64_t packets_sent, packets_received, packets_lost;
  uint64_t bytes_sent, bytes_received;               /* on the wire */
  uint64_t stream_bytes_sent, stream_bytes_received; /* application data, first copies */
  uint64_t retransmits;                              /* frames sent again */
  uint64_t retransmitted_bytes; /* application bytes sent again (lost, or on a path that died) */
  uint64_t path_changes;        /* moves to another address */
  uint64_t pathless_ms;         /* time the path did not carry */
  uint64_t congestion_events;   /* window reductions */
  uint64_t probe_timeouts;      /* ack timeouts: tail-loss probes and RTOs */
  uint64_t auth_failures;       /* packets that failed authentication: dropped */
  uint64_t replays;             /* duplicates or too old: dropped */
  uint64_t malformed;           /* unparseable: dropped */
  unsigned mtu;                 /* datagram size in use */
  kp_addr_t remote;             /* the path */
  unsigned streams;             /* gauge: streams with state */
  /* Unreliable datagrams (kp_conn_datagram_send): sent once each; received
   * (and handed to on_datagram); dropped here (the send queue full, too big
   * for the path, the connection over, or received with no on_datagram);
   * lost in packets the path lost (never sent again). */
  uint64_t datagrams_sent, datagrams_received, datagrams_dropped, datagrams_lost;
} kp_conn_stats_t;

/* The peer opened stream; start reading it (kp_stream_read_start) or close
 * it. Until read starts its data waits, up to the stream window. */
typedef void (*kp_conn_stream_cb)(kp_conn_t *conn, kp_stream_t *stream);
/* The connection is over: status 0 (kp_conn_close), KP_ECLOSED (the peer
 * closed it, with code), KP_EPEERDEAD (nothing heard for the idle timeout),
 * UV_ECANCELED (the endpoint closed). Fires once. The handle stays valid
 * (every call on it fails or does nothing) until kp_conn_close. */
typedef void (*kp_conn_close_cb)(kp_conn_t *conn, int status, uint64_t code);
/* What happened to a connection's path. A connection is its keys and
 * ids, not a path: when the path stops carrying, the node finds another
 * (a new punch, a relay) and the connection, its streams and their bytes
 * carry on there. */
typedef enum {
  KP_PATH_LOST = 1, /* the path stopped carrying; looking for another */
  KP_PATH_BACK,     /* ... and it carries again, unchanged */
  KP_PATH_DIRECT,   /* relayed until now: a direct path opened (an upgrade) */
  KP_PATH_REBOUND,  /* a new direct path after the old one died (a NAT rebinding, a move) */
  KP_PATH_TO_RELAY, /* the direct path died: through the relay kept for that */
  KP_PATH_RELAYED,  /* the path died: paired at a relay meanwhile */
  KP_PATH_FAILOVER, /* the relay stopped forwarding: paired at another one */
  KP_PATH_MIGRATED, /* the peer moved by itself (its new address answered a challenge) */
} kp_path_why_t;

typedef struct kp_path_event_s {
  kp_path_why_t why;
  bool direct;      /* where packets go now is the peer itself (not a relay) */
  kp_addr_t remote; /* where packets go now */
  kp_addr_t relay;  /* through a relay: the relay (also remote) */
} kp_path_event_t;

/* Why a path changed, in a few words ("relay lost", "back to direct"). */
const char *kp_path_why_str(kp_path_why_t why);

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
void kp_conn_options_init(kp_conn_options_t *opts);
/* Starts a connection on ep with what opts say. Errors: KP_ECONFIG (a bad
 * option, a cipher this machine lacks), UV_EEXIST (local_id in use),
 * UV_ENOMEM. */
int kp_conn_open(kp_endpoint_t *ep, const kp_conn_options_t *opts,
                 const kp_conn_callbacks_t *callbacks, kp_conn_t **out);
/* Closes gracefully: the peer gets code; pending writes fail with
 * UV_ECANCELED; on_close fires with 0 once the close went out. Call it once
 * for every connection, also after on_close reported its end (like
 * uv_close for a handle): the memory goes when it was called and the
 * connection's last stream handle is closed. kp_endpoint_close does it for
 * every connection left. */
void kp_conn_close(kp_conn_t *conn, uint64_t code);
/* Moves the connection to another address of the peer now (one the caller
 * has verified, e.g. by a hole punch). Packets from a new address move it
 * by themselves, once the peer answers a check there. */
void kp_conn_set_remote(kp_conn_t *conn, const kp_addr_t *remote);
void kp_conn_stats(const kp_conn_t *conn, kp_conn_stats_t *out);
void *kp_conn_get_data(const kp_conn_t *conn);
void kp_conn_set_data(kp_conn_t *conn, void *data);

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
int kp_conn_datagram_send(kp_conn_t *conn, const void *data, size_t len);
/* The largest datagram the connection's packets carry now: 1078 bytes on
 * the 1200-byte packets every path starts with, up to 1350 once path MTU
 * probing found 1472; back to 1078 after a move (queued datagrams that no
 * longer fit are dropped). 0 once the connection is over. */
size_t kp_conn_datagram_max(const kp_conn_t *conn);

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
int kp_stream_open(kp_conn_t *conn, kp_stream_t **out);
int kp_stream_read_start(kp_stream_t *stream, kp_stream_read_cb cb);
/* Stops reading: data waits, and once the window is full the peer waits. */
int kp_stream_read_stop(kp_stream_t *stream);
/* Queues bufs (the array is copied, the bytes are not); cb fires once the
 * peer acknowledged every byte (0) or they cannot be delivered (UV_ECANCELED
 * after a reset or close here; KP_ERESET if the peer stopped reading;
 * KP_ECLOSED, KP_EPEERDEAD). Queues whatever the high-water mark says:
 * kp_stream_is_writable tells when to wait for drain. Errors: UV_EPIPE (the
 * stream was ended, reset or closed), UV_ENOMEM. */
int kp_stream_write(kp_write_t *req, kp_stream_t *stream, const uv_buf_t bufs[], unsigned nbufs,
                    kp_write_cb cb);
/* Half-close: the peer reads EOF after everything written. */
int kp_stream_end(kp_stream_t *stream);
/* Abandons the stream both ways: pending writes fail with UV_ECANCELED, the
 * peer's reads fail with KP_ERESET and its writes stop. */
void kp_stream_reset(kp_stream_t *stream, uint64_t code);
/* Releases the handle. Data written before kp_stream_end still reaches the
 * peer; a stream not ended is reset (code 0). cb fires on a later tick,
 * after every write callback of the stream. */
void kp_stream_close(kp_stream_t *stream, kp_stream_close_cb cb);
/* Bytes written and not yet acknowledged. */
size_t kp_stream_write_queue_size(const kp_stream_t *stream);
/* False once the write queue reached the high-water mark (until drain). */
bool kp_stream_is_writable(const kp_stream_t *stream);
void kp_stream_set_drain_cb(kp_stream_t *stream, kp_stream_drain_cb cb);
/* The code of the peer's reset (valid after a KP_ERESET read). */
uint64_t kp_stream_reset_code(const kp_stream_t *stream);
uint64_t kp_stream_id(const kp_stream_t *stream);
kp_conn_t *kp_stream_conn(const kp_stream_t *stream);
void *kp_stream_get_data(const kp_stream_t *stream);
void kp_stream_set_data(kp_stream_t *stream, void *data);

/* ---- Connecting by key -------------------------------------------------------------- */

/* A server listens on a key pair from wherever it is (behind a NAT too); a
 * client connects to that public key. They shake hands through the DHT
 * nodes the server announced to, punch a direct path through both NATs,
 * and get an end-to-end encrypted kp_conn_t (docs/architecture.md,
 * "Connecting"). Both ends' connections live on their node's socket. */

typedef struct kp_server_s kp_server_t;

/* ---- Services, device info, invitations ---------------------------------------------- */

#define KP_NAME_MAX 32    /* a device name: printable ASCII */
#define KP_SERVICE_MAX 16 /* a service or version name: letters, digits, '.', '_', '-' */
#define KP_SERVICES_MAX 4

/* What a server says about itself to clients that ask (and may). */
typedef struct kp_device_info_s {
  char name[KP_NAME_MAX + 1];
  char version[KP_SERVICE_MAX + 1];
  char services[KP_SERVICES_MAX][KP_SERVICE_MAX + 1];
  unsigned service_count;
} kp_device_info_t;

/* Whether a name fits kp_device_info_t.services (and a service request). */
bool kp_service_name_ok(const char *name);

/* A one-time invitation: the server's key, an id and a secret. A client
 * that proves the secret in its handshake gets in once (the server decides
 * what that means, e.g. adds the client's key to its allowlist). */
typedef struct kp_invite_s {
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  uint64_t id;
  uint8_t secret[16];
} kp_invite_t;

#define KP_INVITE_TEXT_LEN 90 /* z-base-32 of key, id and secret */
void kp_invite_generate(const uint8_t server_key[KP_PUBLIC_KEY_LEN], kp_invite_t *out);
void kp_invite_to_text(const kp_invite_t *inv, char out[KP_INVITE_TEXT_LEN + 1]);
/* KP_EKEYFORMAT: not an invitation. */
int kp_invite_from_text(const char *text, kp_invite_t *out);
/* The proof a client sends for inv: bound to both keys, so it is worth
 * nothing to anyone who sees it. kp_invite_check compares in constant time. */
void kp_invite_proof(const kp_invite_t *inv, const uint8_t client_key[KP_PUBLIC_KEY_LEN],
                     uint8_t proof[32]);
bool kp_invite_check(const kp_invite_t *inv, const uint8_t client_key[KP_PUBLIC_KEY_LEN],
                     const uint8_t proof[32]);

/* How a connection came about: the NATs, the path, the phases. */
typedef struct kp_connect_info_s {
  uint8_t remote_key[KP_PUBLIC_KEY_LEN];
  kp_nat_type_t local_nat, remote_nat;
  kp_punch_t punch;
  kp_addr_t path;  /* the peer's address the connection runs to */
  kp_addr_t relay; /* the DHT node the handshake went through (unset: direct) */
  bool relay_tcp;  /* relayed, and this node reaches the relay over TCP */
  /* Client only: ms spent finding the key, shaking hands, punching, and
   * the datagrams it all took. */
  unsigned lookup_ms, handshake_ms, punch_ms;
  unsigned datagrams;
  char service[KP_SERVICE_MAX + 1]; /* the service the client asked for ("": default) */
  bool has_device;                  /* client: the server told its device info */
  kp_device_info_t device;
  kp_addr_t proxy; /* this node speaks through this proxy (unset: it does not) */
} kp_connect_info_t;

/* What a client asked for in its handshake, for the server's firewall. */
typedef struct kp_client_hello_s {
  uint8_t key[KP_PUBLIC_KEY_LEN];
  const char *service; /* "": the default service */
  bool has_invite;
  uint64_t invite_id;
  uint8_t invite_proof[32];
} kp_client_hello_t;

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
int kp_server_listen(kp_node_t *node, const kp_keypair_t *kp, kp_firewall_cb firewall,
                     const kp_conn_callbacks_t *conn_callbacks,
                     kp_server_connection_cb on_connection, void *arg, kp_server_t **out);
/* Stops listening and withdraws the announcement. Open connections stay. */
void kp_server_close(kp_server_t *server);

/* What clients may hold of a server at once (0 takes the default); past
 * it a client is refused with KP_ECONNLIMIT. */
typedef struct kp_server_limits_s {
  unsigned conns_per_key; /* live connections of one client key: 32 */
  unsigned conns_per_ip;  /* of one client IPv4 address or IPv6 /64: 64 */
  unsigned max_conns;     /* of all clients together: 4096 */
} kp_server_limits_t;
void kp_server_set_limits(kp_server_t *server, const kp_server_limits_t *limits);

/* Who gets the device info when they ask (kp_connect_options_t.want_info):
 * nobody (the default), clients the firewall lets in, or everyone (also
 * refused clients: a way to show "this is my-laptop; ask for an invite"). */
typedef enum { KP_INFO_NOBODY = 0, KP_INFO_ALLOWED = 1, KP_INFO_EVERYONE = 2 } kp_info_policy_t;
void kp_server_set_info(kp_server_t *server, const kp_device_info_t *info, kp_info_policy_t who);

/* Once: status 0 and the open connection, or KP_EPEERNOTFOUND,
 * KP_ENOTALLOWED, KP_EOVERLOADED, KP_EPEERVERSION, KP_EHANDSHAKE,
 * KP_ENODIRECT (both NAT types random and no relay known; info has both
 * NAT types), KP_EPUNCH, KP_ERELAY / KP_ERELAYFULL / KP_ERELAYLIMIT (the
 * relay did not answer or refused), UV_ECANCELED (the
 * node closed). info is valid during the call. */
typedef void (*kp_connect_cb)(kp_node_t *node, int status, kp_conn_t *conn,
                              const kp_connect_info_t *info, void *arg);

/* Connects to the peer whose public key is server_key, as self. */
int kp_node_connect(kp_node_t *node, const kp_keypair_t *self,
                    const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                    const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg);

/* What a client may ask for besides a connection. */
typedef struct kp_connect_options_s {
  const char *service;       /* NULL or "": the server's default service */
  const kp_invite_t *invite; /* prove it (its server key must be server_key's) */
  bool want_info;            /* ask for the device info (info->has_device) */
} kp_connect_options_t;

/* kp_node_connect with options (opts may be NULL). A refusal still
 * reports the device info if the server gave it. */
int kp_node_connect_with(kp_node_t *node, const kp_keypair_t *self,
                         const uint8_t server_key[KP_PUBLIC_KEY_LEN],
                         const kp_connect_options_t *opts,
                         const kp_conn_callbacks_t *conn_callbacks, kp_connect_cb cb, void *arg);

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

void kp_proxy_service_options_init(kp_proxy_service_options_t *opts);
/* Runs a proxy on node's socket (node must outlive it, or close it: a node
 * that closes closes its proxy first). Errors: UV_ENOMEM, UV_EBUSY (the node
 * runs one already), UV_EINVAL. Loop thread only. */
int kp_proxy_service_create(kp_node_t *node, const kp_proxy_service_options_t *opts,
                            kp_proxy_service_t **out);
typedef void (*kp_proxy_service_close_cb)(kp_proxy_service_t *svc);
/* Ends every session and allocation; cb (may be NULL) fires once, on a
 * later tick, when every allocation's socket is closed. */
void kp_proxy_service_close(kp_proxy_service_t *svc, kp_proxy_service_close_cb cb);
void kp_proxy_service_counters(const kp_proxy_service_t *svc, kp_proxy_counters_t *out);
const uint8_t *kp_proxy_service_key(const kp_proxy_service_t *svc);

#ifdef __cplusplus
}
#endif

#endif
