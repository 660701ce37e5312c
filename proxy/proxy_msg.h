/* SPDX-License-Identifier: MIT */
/* The session between a peer and its proxy (docs/protocol.md, "Proxying"):
 * the datagrams' codec, the sealed DATA bodies, and the replay window.
 *
 * Every datagram starts with 0x58 and a type. KEY? and KEY fetch the
 * proxy's key; HELLO and WELCOME carry a Noise IK handshake to it (msg1 and
 * msg2, holepunch/hs_noise.h); REFUSED is an unauthenticated refusal; DATA
 * carries one sealed body: an op on one of the session's channels.
 *
 * Pure: no allocation, no clock, no randomness. Decoded views point into
 * the input and are valid as long as it is. */
#ifndef KP_PROXY_MSG_H
#define KP_PROXY_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"

#define KP_PROXY_MAGIC 0x58 /* 'X' */
#define KP_PROXY_VERSION 1
#define KP_PROXY_KEY_LEN 64
#define KP_PROXY_HELLO_LEN 256
#define KP_PROXY_HELLO_HEAD 8
#define KP_PROXY_WELCOME_HEAD 10
#define KP_PROXY_REFUSED_LEN 7
#define KP_PROXY_DATA_HEAD 14
#define KP_PROXY_PASS_HEAD 14
#define KP_PROXY_TAG_LEN 16
#define KP_PROXY_CHANNELS 16
/* The largest datagram a peer can send or receive through its proxy: what
 * fits in 1500 bytes after the DATA header, a SEND's op, channel and IPv6
 * address, and the tag. */
#define KP_PROXY_MAX_PAYLOAD                                                                       \
  (1500 - KP_PROXY_DATA_HEAD - 3 - KP_ADDR_COMPACT_MAX - KP_PROXY_TAG_LEN)
#define KP_PROXY_MAX_DATAGRAM 1500
/* A bound connection's datagram goes as PASS, behind 14 bytes: up to
 * this. A stream's path MTU search then finds 1452 through a proxy on a
 * 1500-byte path (1466 on the wire), not the 1400 a SEND would allow. */
#define KP_PROXY_MAX_PASS_PAYLOAD (KP_PROXY_MAX_DATAGRAM - KP_PROXY_PASS_HEAD)
/* Noise payloads: HELLO's version and the peer's key; WELCOME's refusal,
 * lifetime, channels and largest datagram. */
#define KP_PROXY_HELLO_PAYLOAD 33
#define KP_PROXY_WELCOME_PAYLOAD 8

typedef enum {
  KP_PROXY_KEY_REQ = 1,
  KP_PROXY_KEY = 2,
  KP_PROXY_HELLO = 3,
  KP_PROXY_WELCOME = 4,
  KP_PROXY_REFUSED = 5,
  KP_PROXY_DATA = 6,
  KP_PROXY_PASS = 7,
} kp_proxy_type_t;

typedef enum {
  KP_PROXY_OP_OPEN = 1,
  KP_PROXY_OP_OPENED = 2,
  KP_PROXY_OP_REFRESH = 3,
  KP_PROXY_OP_CLOSE = 4,
  KP_PROXY_OP_SEND = 5,
  KP_PROXY_OP_RECV = 6,
  KP_PROXY_OP_PING = 7,
  KP_PROXY_OP_PONG = 8,
  KP_PROXY_OP_BIND = 9,
  KP_PROXY_OP_UNBIND = 10,
} kp_proxy_op_t;

/* Why a proxy refused a session or ended an allocation. */
typedef enum {
  KP_PROXY_OK = 0,
  KP_PROXY_NOT_ALLOWED = 1, /* the key is not on the allow list */
  KP_PROXY_FULL = 2,        /* sessions or allocations at their cap */
  KP_PROXY_KEY_LIMIT = 3,   /* this key holds its allocations */
  KP_PROXY_IP_LIMIT = 4,    /* this IP holds its sessions or allocations */
  KP_PROXY_RATE = 5,        /* too many HELLOs from this IP */
  KP_PROXY_EXPIRED = 6,     /* lifetime reached, or not refreshed */
  KP_PROXY_QUOTA = 7,       /* the allocation carried its byte quota */
  KP_PROXY_VERSION_REFUSED = 8,
  KP_PROXY_FAMILY = 9, /* the proxy has no address of the family asked for */
  KP_PROXY_REASON_MAX = 9,
} kp_proxy_reason_t;

/* "ok", "not allowed", "full", ... */
const char *kp_proxy_reason_name(uint8_t reason);

/* One datagram's outer form. */
typedef struct kp_proxy_dgram_s {
  uint8_t type;
  uint32_t receiver;    /* WELCOME, REFUSED, DATA */
  uint32_t sender;      /* HELLO, WELCOME */
  uint8_t reason;       /* REFUSED */
  uint64_t counter;     /* DATA */
  uint64_t token;       /* PASS */
  const uint8_t *key;   /* KEY: the proxy's ed25519 key (32 bytes) */
  const uint8_t *noise; /* HELLO, WELCOME: the Noise message */
  size_t noise_len;
  const uint8_t *sealed; /* DATA: ciphertext and tag */
  size_t sealed_len;
  const uint8_t *payload; /* PASS: the datagram */
  size_t payload_len;
} kp_proxy_dgram_t;

/* An op on a channel. */
typedef struct kp_proxy_body_s {
  uint8_t op, channel;
  kp_addr_t addr;      /* OPENED: the allocation; SEND: where to; RECV: who from; BIND: the
                          address the token stands for */
  uint32_t lifetime_s; /* OPENED */
  uint8_t family;      /* OPEN: the allocation's family (KP_AF_INET or KP_AF_INET6; 0 is
                          the 2-byte OPEN, without one: the session's family) */
  uint8_t reason;      /* CLOSE */
  uint64_t token;      /* BIND, UNBIND */
  const uint8_t *data; /* SEND, RECV: the datagram */
  size_t len;
} kp_proxy_body_t;

static inline bool kp_proxy_is_packet(const uint8_t *data, size_t len) {
  return len >= 2 && data[0] == KP_PROXY_MAGIC;
}

/* 0, or KP_EMALFORMED for anything that is not exactly one well-formed
 * datagram of a known type (KP_EVERSION for a KEY of another version). */
int kp_proxy_dgram_decode(const uint8_t *in, size_t len, kp_proxy_dgram_t *out);

void kp_proxy_key_req_encode(uint8_t out[KP_PROXY_KEY_LEN]);
void kp_proxy_key_encode(const uint8_t key[32], uint8_t out[KP_PROXY_KEY_LEN]);
/* HELLO: msg (Noise msg1) padded to KP_PROXY_HELLO_LEN; 0 if it does not fit. */
size_t kp_proxy_hello_encode(uint32_t sender, const uint8_t *msg, size_t len,
                             uint8_t out[KP_PROXY_HELLO_LEN]);
size_t kp_proxy_welcome_encode(uint32_t receiver, uint32_t sender, const uint8_t *msg, size_t len,
                               uint8_t *out, size_t cap);
void kp_proxy_refused_encode(uint32_t receiver, uint8_t reason, uint8_t out[KP_PROXY_REFUSED_LEN]);

/* Only stream packets (docs/protocol.md, "Datagram classes": first byte
 * 0x41), sealed end to end already, ever go as PASS: everything else (DHT
 * messages, whose `to` names an address; probes; relay PAIRs) stays sealed
 * in the session, and never makes a binding. */
static inline bool kp_proxy_passable(const uint8_t *data, size_t len) {
  return len > 0 && data[0] == 0x41;
}

/* A PASS alone (the data plane's decode): sets only type, receiver, token
 * and payload of out; false for anything else. */
bool kp_proxy_pass_decode(const uint8_t *in, size_t len, kp_proxy_dgram_t *out);
/* A PASS's header alone (the payload follows it in the datagram). */
void kp_proxy_pass_head(uint32_t receiver, uint64_t token, uint8_t out[KP_PROXY_PASS_HEAD]);
/* PASS: a datagram between the peer and a bound address, unsealed (its
 * size, 0 if len is 0, over KP_PROXY_MAX_PASS_PAYLOAD, or over cap). */
size_t kp_proxy_pass_encode(uint32_t receiver, uint64_t token, const uint8_t *data, size_t len,
                            uint8_t *out, size_t cap);
/* A body's bytes (before sealing): its size, 0 if b cannot be encoded
 * (an unknown op, a channel out of range, no address, a datagram too big
 * or a cap too small). */
size_t kp_proxy_body_encode(const kp_proxy_body_t *b, uint8_t *out, size_t cap);
/* 0, or KP_EMALFORMED. */
int kp_proxy_body_decode(const uint8_t *in, size_t len, kp_proxy_body_t *out);

/* Which counters a receiver has seen: the highest, and a window of 1024
 * below it. */
#define KP_PROXY_REPLAY_WINDOW 1024
typedef struct kp_proxy_replay_s {
  uint64_t top; /* highest counter seen + 1 (0: none yet) */
  uint64_t bits[KP_PROXY_REPLAY_WINDOW / 64];
} kp_proxy_replay_t;

/* Whether counter is new (not seen, not older than the window). */
bool kp_proxy_replay_fresh(const kp_proxy_replay_t *w, uint64_t counter);
/* Marks counter seen (after its datagram opened). */
void kp_proxy_replay_mark(kp_proxy_replay_t *w, uint64_t counter);

/* One direction's keys of a session. */
typedef struct kp_proxy_keys_s {
  uint8_t tx[32], rx[32];
  uint64_t next_tx;
  kp_proxy_replay_t rx_seen;
} kp_proxy_keys_t;

/* Seals body (len bytes) into a DATA datagram for receiver, with the next
 * counter: its size, or 0 if it does not fit in cap. */
size_t kp_proxy_seal(kp_proxy_keys_t *k, uint32_t receiver, const uint8_t *body, size_t len,
                     uint8_t *out, size_t cap);
/* Opens a decoded DATA datagram d (whose bytes are `raw`) into body (at
 * least d->sealed_len bytes): its length, or -1 if it is forged or
 * replayed (*replayed says which). Marks the counter seen on success. */
long kp_proxy_open(kp_proxy_keys_t *k, const uint8_t *raw, const kp_proxy_dgram_t *d, uint8_t *body,
                   bool *replayed);

#endif
