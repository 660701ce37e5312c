/* A blind relay (DESIGN.md, "fallback"): when two peers cannot punch, both
 * send a PAIR datagram with the same pairing token to a relay node, which
 * then forwards every datagram from one peer's address to the other's. The
 * token is a hash of their handshake hash: the relay learns neither it nor
 * any key, and the streams stay end-to-end encrypted. It forwards only
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

#define KP_RELAY_MAGIC 0x52 /* 'R': the first byte of a relay control datagram */
#define KP_RELAY_TOKEN_LEN 32
/* Every control datagram has one size (so a PAIR earns no bigger answer):
 * magic, type, arg, token, and two address slots (length byte + compact
 * address) that only PAIRED fills. */
#define KP_RELAY_CTRL_LEN (3 + KP_RELAY_TOKEN_LEN + 2 * (1 + KP_ADDR_COMPACT_MAX))

typedef enum {
  KP_RELAY_PAIR = 1,    /* peer -> relay: token, role */
  KP_RELAY_PAIRED = 2,  /* relay -> peer: token, both links; the session is up */
  KP_RELAY_REFUSED = 3, /* relay -> peer: token, reason */
} kp_relay_type_t;

typedef enum {
  KP_RELAY_REFUSE_FULL = 1,     /* max_sessions reached */
  KP_RELAY_REFUSE_ATTEMPTS = 2, /* this source IP pairs too often */
  KP_RELAY_REFUSE_EXPIRED = 3,  /* the session reached its lifetime */
} kp_relay_refusal_t;

typedef struct kp_relay_ctrl_s {
  uint8_t type;
  uint8_t arg; /* PAIR: role (0 client, 1 server); REFUSED: reason */
  uint8_t token[KP_RELAY_TOKEN_LEN];
  /* PAIRED: each role's address as the relay sees it (index: role). A
   * relayed pair punches between them in the background, from the sockets
   * the relay already reaches (docs/architecture.md, "Relays"). */
  kp_addr_t link[2];
} kp_relay_ctrl_t;

bool kp_relay_is_ctrl(const uint8_t *data, size_t len);
void kp_relay_ctrl_encode(const kp_relay_ctrl_t *c, uint8_t out[KP_RELAY_CTRL_LEN]);
int kp_relay_ctrl_decode(const uint8_t *data, size_t len, kp_relay_ctrl_t *out);
/* The token both peers derive from the path secret their handshake gave
 * them (holepunch/hs_noise.h): nobody else can compute it. */
void kp_relay_token(const uint8_t path_secret[64], uint8_t token[KP_RELAY_TOKEN_LEN]);

typedef struct kp_relay_config_s {
  unsigned max_sessions;    /* paired sessions at once (default 1024) */
  unsigned max_pending;     /* half-paired tokens waiting (default 256) */
  uint64_t session_rate;    /* bytes/s per session and direction (default 4 MiB/s) */
  uint64_t total_rate;      /* bytes/s for everything (default 64 MiB/s) */
  unsigned idle_ms;         /* a session nobody used this long ends (default 10 min) */
  uint64_t max_lifetime_ms; /* and any session after this (default 24 h) */
  unsigned pending_ms;      /* a half pair waits this long (default 10 s) */
  unsigned pair_rate;       /* PAIR datagrams per second per source IP (default 10) */
} kp_relay_config_t;

void kp_relay_config_defaults(kp_relay_config_t *cfg);

typedef struct kp_relay_stats_s {
  uint64_t paired;    /* sessions made */
  uint64_t forwarded; /* datagrams */
  uint64_t forwarded_bytes;
  uint64_t dropped_rate; /* over a session's or the total rate */
  uint64_t refused_full, refused_attempts, refused_expired;
  uint64_t expired_idle, expired_lifetime;
  unsigned sessions, pending; /* gauges */
} kp_relay_stats_t;

typedef struct kp_relay_s kp_relay_t;

int kp_relay_new(const kp_relay_config_t *cfg, kp_relay_t **out);
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
