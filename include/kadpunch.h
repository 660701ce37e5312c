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
  X(ERESET, "stream reset by the peer")

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

/* ---- DHT node ---------------------------------------------------------- */

typedef struct kp_node_s kp_node_t;

typedef enum {
  KP_NODE_AUTO = 0,      /* start ephemeral; become a member once reachable and stable */
  KP_NODE_EPHEMERAL = 1, /* never join others' routing tables */
  KP_NODE_MEMBER = 2     /* always a member (bootstrap nodes, servers with a public address) */
} kp_node_mode_t;

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

#ifdef __cplusplus
}
#endif
#endif
