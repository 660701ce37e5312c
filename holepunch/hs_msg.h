/* SPDX-License-Identifier: MIT */
/* The handshake and holepunch messages (docs/protocol.md, "Connecting by
 * key"): the routed envelope the DHT carries, the payloads sealed inside it,
 * and the probe datagrams. Pure codecs; decoded views point into the input;
 * every field is checked, every failure is an error, never a crash. */
#ifndef KP_HS_MSG_H
#define KP_HS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "kadpunch_base.h"

/* 2: every key after the handshake comes from the chaining key (hs_noise.h). */
#define KP_HS_VERSION 2

/* DHT commands (after the swarm's 16..22). PEER_RESUME carries a round
 * for a connection that lost its path, sealed under its resume key. */
enum {
  KP_DHT_CMD_PEER_HANDSHAKE = 24,
  KP_DHT_CMD_PEER_HOLEPUNCH = 25,
  KP_DHT_CMD_PEER_RESUME = 26
};

/* Who sent a routed message, and towards whom. */
typedef enum {
  KP_HS_FROM_CLIENT = 0, /* client -> relay node */
  KP_HS_FROM_RELAY = 1,  /* relay node -> server (carries the client's address) */
  KP_HS_FROM_SERVER = 2, /* server -> relay node (the answer) */
  KP_HS_REPLY = 3        /* relay node -> client (carries the server's address) */
} kp_hs_mode_t;

/* Response errors of the two commands (plain, before any crypto). */
enum {
  KP_HS_ERR_NO_PEER = 32,     /* the relay holds no announcement for that key */
  KP_HS_ERR_UNREACHABLE = 33, /* the relay could not reach the server */
  KP_HS_ERR_BUSY = 34,        /* relay or server over a rate or table limit */
  KP_HS_ERR_NO_SESSION = 35,  /* holepunch or resume for an unknown session */
  KP_HS_ERR_REJECTED = 36,    /* undecryptable, malformed or replayed: not retried */

};

/* Why a server refused, inside its sealed reply. */
typedef enum {
  KP_HS_OK = 0,
  KP_HS_REFUSE_NOT_ALLOWED = 1,
  KP_HS_REFUSE_OVERLOADED = 2,
  KP_HS_REFUSE_VERSION = 3,
  KP_HS_REFUSE_INVITE = 4,         /* an invitation the server does not know */
  KP_HS_REFUSE_INVITE_USED = 5,    /* ... that was used */
  KP_HS_REFUSE_INVITE_EXPIRED = 6, /* ... that expired */
  KP_HS_REFUSE_NO_SERVICE = 7,     /* no service by the name asked for */
  KP_HS_REFUSE_LIMIT = 8,          /* this key or address holds its share of connections */
} kp_hs_refusal_t;

/* The envelope: [mode, data, peer address or nil, session]. */
typedef struct kp_hs_wire_s {
  kp_hs_mode_t mode;
  const uint8_t *data; /* Noise message or holepunch ciphertext */
  size_t len;
  bool has_peer;
  kp_addr_t peer; /* FROM_RELAY: the client as the relay saw it; REPLY: the server */
  uint64_t session;
} kp_hs_wire_t;

#define KP_HS_MAX_DATA 700
int kp_hs_wire_encode(const kp_hs_wire_t *m, uint8_t *buf, size_t cap, size_t *len);
int kp_hs_wire_decode(const uint8_t *buf, size_t len, kp_hs_wire_t *out);

/* Addresses a peer can be tried at: public, LAN, IPv6. */
#define KP_HS_MAX_ADDRS 6
#define KP_HS_MAX_RELAYS 2

/* The client's payload in Noise message 1. */
typedef struct kp_hs_hello_s {
  uint8_t version;
  uint8_t client_key[KP_PUBLIC_KEY_LEN]; /* ed25519 identity (Noise's s is X25519) */
  kp_nat_type_t nat;
  kp_addr_t addrs[KP_HS_MAX_ADDRS];
  size_t addr_count;
  uint64_t conn_id;   /* stream packets to the client carry it */
  uint8_t ciphers;    /* bit (1 << kp_cipher_t) per cipher it can run fast */
  uint64_t timestamp; /* wall clock, ms: replays of old hellos are refused */
  /* What the client asks for besides a path: an invitation it proves (id
   * 0: none), a service by name ("": the default), the device info. */
  uint64_t invite_id;
  uint8_t invite_proof[32];
  char service[KP_SERVICE_MAX + 1];
  bool want_info;
} kp_hs_hello_t;

/* The server's payload in Noise message 2. */
typedef struct kp_hs_welcome_s {
  uint8_t version;
  kp_hs_refusal_t refusal;
  kp_nat_type_t nat;
  kp_addr_t addrs[KP_HS_MAX_ADDRS];
  size_t addr_count;
  uint64_t conn_id; /* stream packets to the server carry it */
  kp_cipher_t cipher;
  uint64_t session;                   /* names this connection in holepunch rounds */
  kp_addr_t relays[KP_HS_MAX_RELAYS]; /* blind relays the server suggests */
  size_t relay_count;
  /* The server is reachable only through relays[0] (its UDP is blocked: it
   * reaches the relay over TCP): no punch, pair there at once. */
  bool relay_only;
  bool has_info; /* the client asked and may know */
  kp_device_info_t info;
} kp_hs_welcome_t;

#define KP_HS_PAYLOAD_MAX 400
int kp_hs_hello_encode(const kp_hs_hello_t *h, uint8_t *buf, size_t cap, size_t *len);
int kp_hs_hello_decode(const uint8_t *buf, size_t len, kp_hs_hello_t *out);
int kp_hs_welcome_encode(const kp_hs_welcome_t *w, uint8_t *buf, size_t cap, size_t *len);
int kp_hs_welcome_decode(const uint8_t *buf, size_t len, kp_hs_welcome_t *out);

/* A holepunch round, sealed under the session's holepunch key: only the
 * two peers can make one. */
#define KP_HP_ROUND_ADDRS 2
typedef struct kp_hp_round_s {
  uint32_t round;
  kp_nat_type_t nat;
  bool punch;        /* the sender is probing now */
  uint32_t delay_ms; /* client: fire this long after receiving (half the relay RTT) */
  bool has_relay;    /* client: no direct path; pair at this blind relay */
  kp_addr_t relay;
  /* ... which is also at this address of the other family (a dual-stack
   * relay: a server of that family pairs there; family 0: none). */
  kp_addr_t relay_alt;
  /* client, with a relay: the round whose pairing material both use (the
   * round that first named the relay may not be the one that arrives). */
  uint32_t pair_round;
  /* The sender's public address(es) as its own DHT contacts report them
   * (for a RANDOM NAT only the IP means anything): what a relay node
   * claims about the sender is checked against this. */
  kp_addr_t addrs[KP_HP_ROUND_ADDRS];
  size_t addr_count;
} kp_hp_round_t;

int kp_hp_round_seal(const kp_hp_round_t *r, const uint8_t key[32], bool from_client, uint8_t *buf,
                     size_t cap, size_t *len);
int kp_hp_round_open(const uint8_t *buf, size_t len, const uint8_t key[32], bool from_client,
                     kp_hp_round_t *out);

/* Probe datagrams on the peers' own sockets (docs/protocol.md, "Probes").
 * Every probe has one size, so an answer is never bigger than what it
 * answers:
 *   0      u8   0x50 (class "probe")
 *   1      u8   flags (KP_PROBE_*)
 *   2..9   u64  the receiver's connection id (big-endian)
 *   10..17      nonce: the sender's challenge, bound to the address it is sent to
 *   18..25      echo: a nonce the sender received from the receiver (zeros: none)
 *   26     u8   length of the observed address (0, 6 or 18)
 *   27..44      observed: where the echoed nonce's probe came from, as the sender
 *               saw it (compact, zero padded)
 *   45..60      BLAKE2b-128 of bytes 0..44, keyed with the session's probe key
 * An authenticated probe from X that echoes a nonce we sent to X proves X:
 * only a holder of the probe key who received at X could have made it. */
#define KP_PROBE_FIRST_BYTE 0x50
#define KP_PROBE_LEN 61
#define KP_PROBE_NONCE_LEN 8
enum {
  KP_PROBE_FROM_CLIENT = 1, /* sent by the connection's client */
  KP_PROBE_ANSWER = 2,      /* sent because a probe arrived: not answered again */
  KP_PROBE_PUNCH = 4,       /* through a relay: "probe my link now" (hp_link.c) */
  KP_PROBE_BIRTHDAY = 8,    /* through a relay: "birthday punch with me now" (hp_link.c) */
  /* Through a proxy: "observed" is not an echo's but the sender's own
   * socket's public address, where it would go direct (hp_link.c). */
  KP_PROBE_OWN_ADDR = 16,
};
/* Bits 5..6: the sender's NAT type (kp_nat_type_t) as its DHT sees it now.
 * A side that knew too little at the handshake (a fresh client whose
 * lookup was cut short) tells its peer later, and the background birthday
 * can start (hp_link.c). */
#define KP_PROBE_NAT_SHIFT 5
#define KP_PROBE_NAT_MASK (3u << KP_PROBE_NAT_SHIFT)
static inline uint8_t kp_probe_nat_flags(kp_nat_type_t nat) {
  return (uint8_t)(((unsigned)nat << KP_PROBE_NAT_SHIFT) & KP_PROBE_NAT_MASK);
}
static inline kp_nat_type_t kp_probe_nat(uint8_t flags) {
  return (kp_nat_type_t)((flags & KP_PROBE_NAT_MASK) >> KP_PROBE_NAT_SHIFT);
}

typedef struct kp_probe_s {
  uint8_t flags;
  uint64_t conn_id;
  uint8_t nonce[KP_PROBE_NONCE_LEN];
  uint8_t echo[KP_PROBE_NONCE_LEN];
  bool has_observed;
  kp_addr_t observed;
} kp_probe_t;

void kp_probe_encode(const kp_probe_t *p, const uint8_t key[32], uint8_t out[KP_PROBE_LEN]);
/* The connection id and flags only (to find the session that holds the key). */
int kp_probe_peek(const uint8_t *buf, size_t len, uint64_t *conn_id, uint8_t *flags);
/* Authenticates and decodes: KP_EMALFORMED for anything else. */
int kp_probe_decode(const uint8_t *buf, size_t len, const uint8_t key[32], kp_probe_t *out);

static inline bool kp_probe_is_packet(const uint8_t *buf, size_t len) {
  return len == KP_PROBE_LEN && buf[0] == KP_PROBE_FIRST_BYTE;
}

/* A key from the path secret of a finished handshake (kp_noise_split_t),
 * one label per use: BLAKE2b-256(key = secret, message = label). */
void kp_hs_derive(const uint8_t secret[64], const char *label, uint8_t out[32]);

#endif
