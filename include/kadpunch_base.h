/* SPDX-License-Identifier: MIT */
/* kadpunch: the plain part of the API.
 *
 * Errors, addresses, keys, records and the value types the protocol cores
 * (dht/, holepunch/, relay/, stream/) share: nothing here needs libuv, a
 * clock or a source of randomness. Embedders include kadpunch.h, which adds
 * the objects that run on a libuv loop; the cores include only this.
 */
#ifndef KADPUNCH_BASE_H
#define KADPUNCH_BASE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the shared library exports: the functions declared in kadpunch.h and
 * here, nothing else (everything is built with hidden visibility). */
#if defined(__GNUC__) && !defined(KP_STATIC_ONLY)
#define KP_EXTERN __attribute__((visibility("default")))
#else
#define KP_EXTERN
#endif

/* A buffer: pointer and length, laid out as libuv's uv_buf_t and POSIX's
 * struct iovec on Unix (kadpunch.h checks it), so arrays of either pass
 * through unchanged. */
typedef struct kp_buf_s {
  char *base;
  size_t len;
} kp_buf_t;

#define KP_VERSION_MAJOR 0
#define KP_VERSION_MINOR 1
#define KP_VERSION_PATCH 0

/* Returns the library version as "MAJOR.MINOR.PATCH". */
KP_EXTERN const char *kp_version_string(void);

/* ---- Errors ------------------------------------------------------------ */

/* Errors from the system are negated errno values, exactly libuv's UV_E*
 * codes on Unix (kadpunch.h checks that they agree), so a caller may test
 * KP_ENOMEM or KP_ENOMEM alike. These are the ones kadpunch returns. */
#define KP_EOF (-4095) /* KP_EOF: the peer finished sending */
#define KP_EACCES (-EACCES)
#define KP_EADDRINUSE (-EADDRINUSE)
#define KP_EAGAIN (-EAGAIN)
#define KP_EBADF (-EBADF)
#define KP_ECANCELED (-ECANCELED)
#define KP_EEXIST (-EEXIST)
#define KP_EINVAL (-EINVAL)
#define KP_EISDIR (-EISDIR)
#define KP_EMFILE (-EMFILE)
#define KP_EMSGSIZE (-EMSGSIZE)
#define KP_ENAMETOOLONG (-ENAMETOOLONG)
#define KP_ENOBUFS (-ENOBUFS)
#define KP_ENOENT (-ENOENT)
#define KP_ENOMEM (-ENOMEM)
#define KP_EPIPE (-EPIPE)
#define KP_EPROTO (-EPROTO)
#define KP_ETIMEDOUT (-ETIMEDOUT)

/* The one list of kadpunch's own errors: name, message. Values count down
 * from KP__ERR_BASE so they never collide with the system's or libuv's
 * (negated errno values and KP_EAI_* / KP_EOF, all above -5000). */
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

/* A readable message for any error this library returns (KP_E*, system or UV_E*).
 * Returns a static string; never NULL. */
KP_EXTERN const char *kp_strerror(int err);

/* The symbolic name ("KP_EBADTOKEN", "ETIMEDOUT", ...) of an error. */
KP_EXTERN const char *kp_err_name(int err);

/* ---- Allocator --------------------------------------------------------- */

typedef void *(*kp_malloc_func)(size_t size);
typedef void *(*kp_realloc_func)(void *ptr, size_t size);
typedef void *(*kp_calloc_func)(size_t count, size_t size);
typedef void (*kp_free_func)(void *ptr);

/* Replaces the allocator every kadpunch allocation goes through. Call it
 * before creating any object; all four functions are required. Returns
 * KP_EINVAL if one is NULL. Not thread safe, like libuv's uv_replace_allocator(). */
KP_EXTERN int kp_replace_allocator(kp_malloc_func malloc_func, kp_realloc_func realloc_func,
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
KP_EXTERN int kp_addr_parse(kp_addr_t *out, const char *text);

/* Writes "1.2.3.4:5" or "[::1]:5" into buf (at least KP_ADDR_STRLEN bytes
 * are always enough) and returns buf. */
KP_EXTERN char *kp_addr_format(const kp_addr_t *addr, char *buf, size_t size);

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

KP_EXTERN void kp_keypair_generate(kp_keypair_t *kp);
KP_EXTERN void kp_keypair_from_seed(kp_keypair_t *kp, const uint8_t seed[KP_SEED_LEN]);
/* Overwrites the key pair with zeros. */
KP_EXTERN void kp_keypair_wipe(kp_keypair_t *kp);

/* Writes kp to path, mode 0600 (docs/protocol.md, "Key files"). Without
 * overwrite an existing file is an error (KP_EEXIST); with it the file is
 * replaced atomically. Other errors: KP_EACCES, KP_ENOENT, ... */
KP_EXTERN int kp_key_file_write(const char *path, const kp_keypair_t *kp, bool overwrite);

/* Reads a key file. Errors: KP_EKEYPERM (group/world access: the file is
 * not used), KP_EKEYFORMAT (not a key file, damaged, or the public key does
 * not match the seed), KP_ENOENT, KP_EACCES, KP_EISDIR. */
KP_EXTERN int kp_key_file_read(const char *path, kp_keypair_t *kp);

/* Public key <-> text. out gets KP_KEY_TEXT_LEN characters and a NUL.
 * kp_key_from_text accepts upper or lower case and nothing else
 * (KP_EKEYFORMAT). */
KP_EXTERN void kp_key_to_text(const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                              char out[KP_KEY_TEXT_LEN + 1]);
KP_EXTERN int kp_key_from_text(const char *text, uint8_t public_key[KP_PUBLIC_KEY_LEN]);

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
KP_EXTERN void kp_target_from_topic(const void *topic, size_t len, uint8_t target[KP_ID_LEN]);
KP_EXTERN void kp_target_from_key(const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                                  uint8_t target[KP_ID_LEN]);

/* ---- Ciphers ------------------------------------------------------------- */

/* The AEAD protecting stream packets. */
typedef enum {
  KP_CIPHER_CHACHA20_POLY1305 = 1, /* everywhere */
  KP_CIPHER_AES256_GCM = 2         /* when both ends have hardware AES */
} kp_cipher_t;

/* KP_CIPHER_AES256_GCM if this machine has hardware AES, else ChaCha20. */
KP_EXTERN kp_cipher_t kp_cipher_preferred(void);

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
KP_EXTERN const char *kp_nat_type_name(kp_nat_type_t type);

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
KP_EXTERN const char *kp_punch_name(kp_punch_t punch);

/* Whether a DHT node joins others' routing tables. */
typedef enum {
  KP_NODE_AUTO = 0,      /* start ephemeral; become a member once reachable and stable */
  KP_NODE_EPHEMERAL = 1, /* never join others' routing tables */
  KP_NODE_MEMBER = 2     /* always a member (bootstrap nodes, servers with a public address) */
} kp_node_mode_t;

/* ---- Relays -------------------------------------------------------------- */

/* A blind relay's limits (0 takes the default). A session is one relayed
 * connection; its rate applies to each direction. */
typedef struct kp_relay_limits_s {
  unsigned max_sessions; /* 1024 */
  uint64_t session_rate; /* bytes/s: 4 MiB/s */
  uint64_t total_rate;   /* bytes/s, all sessions: 64 MiB/s */
  unsigned idle_ms;      /* a session nobody used this long ends: 600000 */
  uint64_t lifetime_ms;  /* and any session after this: 86400000 */
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

/* ---- Connections: the values -------------------------------------------- */

/* The reset code of a stream the peer refused: it had too many open. */
#define KP_STREAM_REFUSED 1

/* Private: the data plane's bookkeeping inside a kp_write_t. */
typedef struct kp__swrite_s {
  struct kp__swrite_s *next;
  uint64_t start, end;
  unsigned nbufs;
  kp_buf_t *bufs;
  kp_buf_t inline_bufs[4];
} kp__swrite_t;

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
KP_EXTERN const char *kp_path_why_str(kp_path_why_t why);

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
KP_EXTERN bool kp_service_name_ok(const char *name);

/* A one-time invitation: the server's key, an id and a secret. A client
 * that proves the secret in its handshake gets in once (the server decides
 * what that means, e.g. adds the client's key to its allowlist). */
typedef struct kp_invite_s {
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  uint64_t id;
  uint8_t secret[16];
} kp_invite_t;

#define KP_INVITE_TEXT_LEN 90 /* z-base-32 of key, id and secret */
KP_EXTERN void kp_invite_generate(const uint8_t server_key[KP_PUBLIC_KEY_LEN], kp_invite_t *out);
KP_EXTERN void kp_invite_to_text(const kp_invite_t *inv, char out[KP_INVITE_TEXT_LEN + 1]);
/* KP_EKEYFORMAT: not an invitation. */
KP_EXTERN int kp_invite_from_text(const char *text, kp_invite_t *out);
/* The proof a client sends for inv: bound to both keys, so it is worth
 * nothing to anyone who sees it. kp_invite_check compares in constant time. */
KP_EXTERN void kp_invite_proof(const kp_invite_t *inv, const uint8_t client_key[KP_PUBLIC_KEY_LEN],
                               uint8_t proof[32]);
KP_EXTERN bool kp_invite_check(const kp_invite_t *inv, const uint8_t client_key[KP_PUBLIC_KEY_LEN],
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

/* Who gets the device info when they ask (kp_connect_options_t.want_info):
 * nobody (the default), clients the firewall lets in, or everyone (also
 * refused clients: a way to show "this is my-laptop; ask for an invite"). */
typedef enum { KP_INFO_NOBODY = 0, KP_INFO_ALLOWED = 1, KP_INFO_EVERYONE = 2 } kp_info_policy_t;

/* What clients may hold of a server at once (0 takes the default); past
 * it a client is refused with KP_ECONNLIMIT. */
typedef struct kp_server_limits_s {
  unsigned conns_per_key; /* live connections of one client key: 32 */
  unsigned conns_per_ip;  /* of one client IPv4 address or IPv6 /64: 64 */
  unsigned max_conns;     /* of all clients together: 4096 */
} kp_server_limits_t;

#ifdef __cplusplus
}
#endif

#endif
