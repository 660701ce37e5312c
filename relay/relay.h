/* SPDX-License-Identifier: MIT */
/* A blind relay (docs/architecture.md, "Relays"): when two peers cannot punch, both
 * send a PAIR datagram for the same pair id to a relay node, which then
 * forwards every datagram from one peer's address to the other's. Id and
 * secrets come from the peers' path secret (the Noise chaining key): the
 * relay learns no key, and the streams stay end-to-end encrypted. Each PAIR
 * reveals its own role's secret and commits to the other role's, so
 * someone who copies one peer's PAIR off the wire still cannot pair as the
 * other, and a waiting peer cannot be displaced. The relay forwards only
 * between addresses that paired, so nobody can aim it at a third party.
 *
 * Pure: fed the time and datagrams; returns where a datagram goes. The glue
 * (node/) sends. docs/protocol.md "Relaying" has the wire format. */
#ifndef KP_RELAY_H
#define KP_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"

#define KP_RELAY_MAGIC 0x52 /* 'R': the first byte of a relay control datagram */
#define KP_RELAY_ID_LEN 16
#define KP_RELAY_SECRET_LEN 16
/* Every control datagram has one size (so a PAIR earns no bigger answer):
 * magic, type, arg, pair id, reveal, commit, and two address slots (length
 * byte + compact address) that only PAIRED fills. */
#define KP_RELAY_CTRL_LEN                                                                          \
  (3 + KP_RELAY_ID_LEN + 2 * KP_RELAY_SECRET_LEN + 2 * (1 + KP_ADDR_COMPACT_MAX))

typedef enum {
  KP_RELAY_PAIR = 1,    /* peer -> relay: id, role, reveal, commit */
  KP_RELAY_PAIRED = 2,  /* relay -> peer: id, both links; the session is up */
  KP_RELAY_REFUSED = 3, /* relay -> peer: id, reason */
} kp_relay_type_t;

typedef enum {
  KP_RELAY_REFUSE_FULL = 1,     /* max_sessions reached */
  KP_RELAY_REFUSE_ATTEMPTS = 2, /* this source IP pairs too often */
  KP_RELAY_REFUSE_EXPIRED = 3,  /* the session reached its lifetime */
  KP_RELAY_REFUSE_IP_LIMIT = 4, /* this source IP holds its share of sessions or half pairs */
} kp_relay_refusal_t;

/* What two peers pair with, from their path secret: the pair's id, and a
 * secret per role (index 0 client, 1 server). */
typedef struct kp_relay_pair_s {
  uint8_t id[KP_RELAY_ID_LEN];
  uint8_t secret[2][KP_RELAY_SECRET_LEN];
} kp_relay_pair_t;

typedef struct kp_relay_ctrl_s {
  uint8_t type;
  uint8_t arg; /* PAIR: role (0 client, 1 server); REFUSED: reason */
  uint8_t id[KP_RELAY_ID_LEN];
  /* PAIR: the sender's role secret, and BLAKE2b-128 of the other role's. */
  uint8_t reveal[KP_RELAY_SECRET_LEN];
  uint8_t commit[KP_RELAY_SECRET_LEN];
  /* PAIRED: each role's address as the relay sees it (index: role). A
   * relayed pair punches between them in the background, from the sockets
   * the relay already reaches (docs/architecture.md, "Relays"). */
  kp_addr_t link[2];
} kp_relay_ctrl_t;

bool kp_relay_is_ctrl(const uint8_t *data, size_t len);
void kp_relay_ctrl_encode(const kp_relay_ctrl_t *c, uint8_t out[KP_RELAY_CTRL_LEN]);
int kp_relay_ctrl_decode(const uint8_t *data, size_t len, kp_relay_ctrl_t *out);
/* The pairing material both peers derive from the path secret their
 * handshake gave them (holepunch/hs_noise.h): nobody else can compute it. */
void kp_relay_pair_derive(const uint8_t path_secret[64], kp_relay_pair_t *out);
/* The PAIR a peer of this role sends. */
void kp_relay_pair_request(const kp_relay_pair_t *pair, uint8_t role, kp_relay_ctrl_t *out);

typedef struct kp_relay_config_s {
  unsigned max_sessions;    /* paired sessions at once (default 1024) */
  unsigned max_pending;     /* half pairs waiting (default 256) */
  uint64_t session_rate;    /* bytes/s per session and direction (default 4 MiB/s) */
  uint64_t total_rate;      /* bytes/s for everything (default 64 MiB/s) */
  unsigned idle_ms;         /* a session nobody used this long ends (default 10 min) */
  uint64_t max_lifetime_ms; /* and any session after this (default 24 h) */
  unsigned pending_ms;      /* a half pair waits this long (default 10 s) */
  unsigned pair_rate;       /* PAIR datagrams per second per source IP (default 10) */
  unsigned sessions_per_ip; /* sessions one IP (IPv6: /64) may be a side of (default 32) */
  unsigned pending_per_ip;  /* half pairs one IP may have waiting (default 8) */
} kp_relay_config_t;

void kp_relay_config_defaults(kp_relay_config_t *cfg);

typedef struct kp_relay_stats_s {
  uint64_t paired;    /* sessions made */
  uint64_t forwarded; /* datagrams */
  uint64_t forwarded_bytes;
  uint64_t dropped_rate; /* over a session's or the total rate */
  uint64_t refused_full, refused_attempts, refused_expired, refused_ip_limit;
  uint64_t pair_mismatched; /* PAIRs whose secrets do not open the waiting half's */
  uint64_t expired_idle, expired_lifetime;
  unsigned sessions, pending; /* gauges */
} kp_relay_stats_t;

typedef struct kp_relay_s kp_relay_t;

/* rng keys the relay's hash tables (drawn from once, here). */
int kp_relay_new(const kp_relay_config_t *cfg, const kp_rng_t *rng, kp_relay_t **out);
void kp_relay_free(kp_relay_t *r);

typedef enum {
  KP_RELAY_NOT_MINE,   /* not from a paired address, not a control datagram */
  KP_RELAY_FORWARD,    /* send data unchanged to *to */
  KP_RELAY_REPLY,      /* send reply (KP_RELAY_CTRL_LEN bytes) to *to */
  KP_RELAY_REPLY_BOTH, /* ... and to *other (a pair completed: both hear at once) */
  KP_RELAY_DROP,       /* consumed (over a rate, malformed control) */
} kp_relay_action_t;

/* A datagram arrived. Control datagrams and traffic from paired addresses
 * are the relay's; everything else is left to the caller. */
kp_relay_action_t kp_relay_input(kp_relay_t *r, const kp_addr_t *from, const uint8_t *data,
                                 size_t len, uint64_t now, kp_addr_t *to, kp_addr_t *other,
                                 uint8_t reply[KP_RELAY_CTRL_LEN]);
/* Charges bytes the relay carries another way (its TCP allocations) to
 * the total rate: false if over it (then they are dropped). */
bool kp_relay_charge(kp_relay_t *r, size_t bytes, uint64_t now);
/* Ends idle and old sessions, forgets stale half pairs; next deadline. */
uint64_t kp_relay_tick(kp_relay_t *r, uint64_t now);
void kp_relay_stats(const kp_relay_t *r, kp_relay_stats_t *out);
/* The address is gone (a TCP allocation closed): its session ends and
 * its half pair is forgotten, so whoever gets the port next starts clean. */
void kp_relay_forget(kp_relay_t *r, const kp_addr_t *addr);
/* PAIRs from this IP (the relay's own: its TCP allocations, which share
 * it) skip the per-IP pairing rate; the TCP side rates them per link. */
void kp_relay_set_own_ip(kp_relay_t *r, const kp_addr_t *ip);

#endif
