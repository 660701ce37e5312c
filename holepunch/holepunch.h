/* SPDX-License-Identifier: MIT */
/* Connecting by public key (docs/architecture.md, "Connecting"): the handshake
 * routed through DHT nodes, the PEER_HOLEPUNCH rounds and the probes that
 * open a direct path. docs/protocol.md "Connecting by key" has the wire
 * format, docs/architecture.md "Connecting" the reasoning.
 *
 * One kp_hp_t rides on a node's DHT and swarm, like the swarm rides on the
 * DHT, and plays three roles at once:
 * - relay node: forwards handshake and holepunch messages between a client
 *   and a server whose announcement it stores (a bounded table of entries
 *   that live as long as one forwarded request; it reads nothing sealed);
 * - server: kp_hp_listen() answers handshakes for a key pair (a firewall
 *   callback decides per client key; sessions come from a fixed table, so a
 *   flood costs no memory, sockets or file descriptors);
 * - client: kp_hp_connect() looks the key up, shakes hands through one of
 *   the server's relay nodes, punches, and reports the path and the keys.
 *
 * Pure: fed the time and datagrams, sends through the DHT and the io
 * callback (probes), draws randomness from the DHT's rng. The glue (node/)
 * opens the stream connection on the reported path with the reported keys. */
#ifndef KP_HOLEPUNCH_H
#define KP_HOLEPUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "dht/dht.h"
#include "dht/dht_swarm.h"
#include "holepunch/hs_msg.h"
#include "kadpunch_base.h"

typedef struct kp_hp_s kp_hp_t;
typedef struct kp_hp_server_s kp_hp_server_t;
typedef struct kp_hp_connect_s kp_hp_connect_t;

typedef struct kp_hp_config_s {
  unsigned handshake_timeout_ms; /* whole handshake, every relay tried (default 10000) */
  unsigned punch_timeout_ms;     /* from the handshake to a path (default 10000) */
  unsigned max_sessions;         /* a server's handshakes in progress (default 1024) */
  unsigned max_relay_entries;    /* forwarded requests in flight (default 512) */
  unsigned relay_rate;           /* forwards per second per source IP (default 20) */
  unsigned server_rate;          /* handshakes a server answers per second (default 2000) */
  /* The birthday strategy (docs/architecture.md): sockets the random side
   * opens (256), probes the consistent side sprays (2000) and how fast
   * (1000/s), and how many such punches run at once per node (2). */
  unsigned birthday_sockets, birthday_probes, birthday_rate, max_birthdays;
  uint8_t ciphers;                /* bit (1 << kp_cipher_t) per cipher this machine runs fast */
  bool relay_only;                /* client: through a blind relay even if a direct path may open */
  uint64_t (*wall_ms)(void *ctx); /* the wall clock (replay window); NULL: the DHT's clock */
  void *wall_ctx;
} kp_hp_config_t;

typedef struct kp_hp_io_s {
  /* Sends a probe from the node's main socket. */
  void (*send)(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len);
  /* Extra sockets for the birthday strategy (NULL: this node runs only its
   * spray half). open returns a handle (NULL: none left); the glue feeds
   * probes arriving on it to kp_hp_recv_probe with that handle. */
  void *(*open)(void *ctx);
  void (*send_from)(void *ctx, void *sock, const kp_addr_t *to, const uint8_t *data, size_t len);
  void (*close)(void *ctx, void *sock);
  void *ctx;         /* send's */
  void *sockets_ctx; /* open's, send_from's and close's (NULL: ctx) */
} kp_hp_io_t;

/* A finished connection, as either side sees it. */
typedef struct kp_hp_result_s {
  bool initiator;
  uint8_t remote_key[KP_PUBLIC_KEY_LEN];
  kp_addr_t path; /* where the peer's authenticated probe came from */
  /* The extra socket the path runs on (a birthday win), now the glue's to
   * keep and close; NULL: the main socket. The state machine may still send
   * probes on it for HP_LINGER_MS (5 s). */
  void *socket;
  kp_addr_t relay;       /* the relay node the handshake went through */
  kp_addr_t client_seen; /* server: where that relay node said the client was */
  /* Relayed: the peer's pairing socket as the blind relay saw it, and the
   * probe key; its link (kp_hp_link_start) punches to it in the background. */
  kp_addr_t peer_link;
  uint8_t probe_key[32];
  /* The peer's public address(es) as it reported them, sealed: what a
   * relay says about the peer is checked against them. */
  kp_addr_t peer_addrs[2];
  size_t peer_addr_count;
  /* The handshake's path secret: resume keys and relay pairings to come
   * derive from it (wiped by whoever copies it out). */
  uint8_t path_secret[64];
  char service[KP_SERVICE_MAX + 1]; /* server: what the client asked for */
  bool has_info;                    /* client: the device info the server gave */
  kp_device_info_t info;
  uint64_t local_id, remote_id;
  kp_cipher_t cipher;
  uint8_t tx_key[32], rx_key[32];
  kp_nat_type_t local_nat, remote_nat;
  kp_punch_t strategy;
  /* Client only: the phases (ms) and the datagrams it took. */
  uint64_t lookup_ms, handshake_ms, punch_ms;
  unsigned datagrams;
} kp_hp_result_t;

void kp_hp_config_defaults(kp_hp_config_t *cfg);

/* Attaches to dht and swarm (registers the two commands and a ticker).
 * Free it before them: that abandons its requests and queries and detaches
 * (no callback fires). */

int kp_hp_new(kp_dht_t *dht, kp_dht_swarm_t *swarm, const kp_hp_config_t *cfg, const kp_hp_io_t *io,
              kp_hp_t **out);
void kp_hp_free(kp_hp_t *hp);

/* A dual-stack node: the DHT of its other address family, whose swarm is
 * paired with ours (kp_dht_swarm_set_other). As a relay node we forward a
 * hello to an announcer found only in that family's store through it, so a
 * client of one family reaches a server of the other. NULL detaches
 * (forwards still out on it end unanswered). */
void kp_hp_set_other_family(kp_hp_t *hp, kp_dht_t *other);

/* Addresses on the local networks the node's socket is reachable at (the
 * glue lists interfaces; the simulator sets them). Copied. */
void kp_hp_set_lan(kp_hp_t *hp, const kp_addr_t *addrs, size_t count);

/* Blind relays this node may use when no direct path exists: a server
 * names them in its welcome, a client prefers its own. Copied (up to 4). */
void kp_hp_set_relays(kp_hp_t *hp, const kp_addr_t *addrs, size_t count);
/* The same relays' addresses of the other family, index by index (family
 * 0: none), for dual-stack relays: a round that names one names both, so a
 * peer of the other family pairs at the same relay. After kp_hp_set_relays. */
void kp_hp_set_relay_alts(kp_hp_t *hp, const kp_addr_t *alts, size_t count);

/* The glue closed an extra socket (io.close, or its own sweep): every
 * path forgets the addresses it reached from there, so nothing is sent
 * from it again. The glue calls this before the handle is gone. */
void kp_hp_socket_closed(kp_hp_t *hp, const void *sock);

/* A proxied node's own socket (an extra socket of the glue's, out of the
 * proxy) and its public address as DHT nodes saw it; NULL: none. Every
 * connection that runs through a proxy (ours or the peer's) then punches
 * from it in the background and moves direct when a path proves itself,
 * as a relayed one does; the proxy path is kept to fall back to. A node
 * that keeps its addresses to itself (a private proxied node) never calls
 * this. port_hint: the NAT maps each destination anew, so only the IP is
 * sure (a peer proxied too cannot follow such a move: none is made). */
void kp_hp_set_own_socket(kp_hp_t *hp, void *sock, const kp_addr_t *public_addr, bool port_hint,
                          uint64_t now);

/* The node's address changed under its connections (a proxy's new
 * allocation after it moved to another proxy, a new network): a client
 * link looking for a path sends its next resume round now and densely
 * again; a server link without a path asks to be reachable again (its
 * reach callback: the glue announces from where it is now). */
void kp_hp_rebound(kp_hp_t *hp, uint64_t now);

/* A relay control datagram (relay/relay.h) arrived on an extra socket. */
void kp_hp_recv_relay(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now);

/* A probe datagram arrived on the node's main socket (sock NULL) or on an
 * extra socket io.open made. */
void kp_hp_recv_probe(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now);

/* ---- Server ------------------------------------------------------------------ */

/* 0 accepts; a refusal reason refuses (the client gets it, authenticated).
 * client: where the relay node says the client is (a claim). */
typedef kp_hs_refusal_t (*kp_hp_firewall_fn)(void *ctx, const kp_hs_hello_t *hello,
                                             const kp_addr_t *client);
/* A client reached us: open the stream connection on r->path with r's keys. */
typedef void (*kp_hp_connection_fn)(void *ctx, const kp_hp_result_t *r);

typedef struct kp_hp_server_stats_s {
  uint64_t handshakes;  /* Noise message 1 read */
  uint64_t accepted;    /* ... and accepted by the firewall */
  uint64_t refused;     /* ... refused (any reason) */
  uint64_t busy;        /* answered BUSY: table full or over the rate */
  uint64_t dropped;     /* hellos sent straight to us past the sender's own rate: unanswered */
  uint64_t bad;         /* failed to decrypt or decode */
  uint64_t replays;     /* hellos not newer than the client's last one */
  uint64_t evicted;     /* unproven sessions dropped for newer hellos */
  uint64_t connections; /* sessions that ended on a path */
  uint64_t punch_timeouts;
  unsigned sessions; /* gauge */
} kp_hp_server_stats_t;

/* Listens on kp (copied; wiped on close). Announcing the key is the
 * glue's job (kp_dht_swarm_announce under kp_target_from_key). */
int kp_hp_listen(kp_hp_t *hp, const kp_keypair_t *kp, kp_hp_firewall_fn firewall,
                 kp_hp_connection_fn on_connection, void *ctx, kp_hp_server_t **out);
/* Stops answering; sessions in progress are dropped. No callback after. */
void kp_hp_server_close(kp_hp_server_t *s);
/* The device info a welcome carries for clients that ask, if who allows. */
void kp_hp_server_set_info(kp_hp_server_t *s, const kp_device_info_t *info, kp_info_policy_t who);
void kp_hp_server_stats(const kp_hp_server_t *s, kp_hp_server_stats_t *out);

/* ---- Client ------------------------------------------------------------------ */

/* Once: status 0 and r, or KP_EPEERNOTFOUND, KP_ENOTALLOWED, KP_EOVERLOADED,
 * KP_EPEERVERSION, KP_EHANDSHAKE (timeout), KP_ENODIRECT (r->local_nat and
 * r->remote_nat say why), KP_EPUNCH (timeout), KP_ECANCELED (the DHT
 * closed). r is valid during the call; on errors only its NAT types, relay
 * and phases are set. */
typedef void (*kp_hp_connect_cb)(void *arg, int status, const kp_hp_result_t *r);

typedef struct kp_hp_connect_opts_s {
  /* Asks (kp_hs_hello_t): an invitation proof (id 0: none), a service, the
   * device info. */
  uint64_t invite_id;
  uint8_t invite_proof[32];
  const char *service;
  bool want_info;
  const kp_addr_t *relays; /* skip the lookup: the server's relay nodes */
  size_t relay_count;
  bool lookup_fallback;   /* ... and look the key up if none of them answers */
  const kp_addr_t *seeds; /* bootstrap nodes for the lookup (the first 8, copied) */
  size_t seed_count;
} kp_hp_connect_opts_t;

int kp_hp_connect(kp_hp_t *hp, const kp_keypair_t *self,
                  const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *opts,
                  kp_hp_connect_cb cb, void *arg, uint64_t now, kp_hp_connect_t **out);
/* Stops it; the callback does not fire. */
void kp_hp_connect_cancel(kp_hp_connect_t *c);

/* ---- A connection's paths --------------------------------------------------- */

/* A connection is its keys and ids, not a path (docs/architecture.md, "Connections that survive").
 * Once connected, each side runs a link (hp_link.c) for it: a relayed one keeps punching in the
 * background (from the pairing socket, and with the birthday strategy when the NATs need it) and
 * moves to the direct path it proves; when the transport says the path stopped carrying, the client
 * resumes: rounds under the connection's resume key through the server's relay nodes (looked up
 * again if they are gone), a punch from the sockets it has, and within a second a relay (another
 * one if the relay was what failed), upgraded again later. The server answers resume rounds for the
 * connections it still holds. The glue moves the stream connection (its socket and address) when
 * told. */
typedef struct kp_hp_link_s kp_hp_link_t;

typedef enum {
  KP_HP_MOVE_UPGRADE = 1,   /* relayed -> a direct path proven */
  KP_HP_MOVE_BACK_TO_RELAY, /* the direct path died; the relay kept meanwhile carries */
  KP_HP_MOVE_RESUMED,       /* the path died; a new direct one proven (a rebound NAT, a move) */
  KP_HP_MOVE_RELAYED,       /* the path died; paired at a relay */
  KP_HP_MOVE_FAILOVER,      /* the relay stopped forwarding; paired at another one */
} kp_hp_move_why_t;

typedef struct kp_hp_move_s {
  kp_hp_move_why_t why;
  bool direct;
  kp_addr_t to;    /* where the connection sends now */
  void *sock;      /* from this socket (NULL: the node's main one), now the glue's too */
  kp_addr_t relay; /* relayed: the relay */
} kp_hp_move_t;

typedef struct kp_hp_link_cb_s {
  void (*moved)(void *ctx, const kp_hp_move_t *m);
  /* Server: the path died; make sure resume rounds can reach us (refresh
   * the announcement: our NAT may have a new mapping, or none). */
  void (*reach)(void *ctx);
  void *ctx;
} kp_hp_link_cb_t;

/* For a connection just made from r (its socket, if any, stays the
 * caller's). r->path_secret is copied (and wiped in the link on stop).
 * KP_ENOMEM. */
int kp_hp_link_start(kp_hp_t *hp, const kp_hp_result_t *r, const kp_hp_link_cb_t *cb, uint64_t now,
                     kp_hp_link_t **out);
/* A dual-stack node's standby for a connection that runs on its other
 * family (docs/architecture.md, "Dual stack"): r as for kp_hp_link_start,
 * of which only the ids, keys and NAT types count. It carries nothing and
 * sends nothing until the transport says the path died; then, as a client,
 * it resumes over this family (the server looked up here, rounds through
 * its relay nodes here, a punch from the main socket: no relay, no
 * birthday), and a path it proves takes the connection (moved); as a
 * server it answers those rounds and follows (kp_hp_link_follow). Its
 * rounds and pairings are keyed apart from the links the handshake made
 * (both sides' standbys are of the family the connection was not made
 * on). */
int kp_hp_link_start_standby(kp_hp_t *hp, const kp_hp_result_t *r, const kp_hp_link_cb_t *cb,
                             uint64_t now, kp_hp_link_t **out);
/* The connection moved to the other family's link: this one lets go of
 * what it ran on and kept (sockets, relay, punches, a resume) and stands
 * by, as kp_hp_link_start_standby's. */
void kp_hp_link_release(kp_hp_link_t *l, uint64_t now);
/* Server: the client's authenticated stream packets arrive over this
 * standby's family, from `from`: if this link proved that address (an
 * echo of our nonce came from it), the connection follows the client
 * there (moved, RESUMED) and true. A server's standby never moves on its
 * own proofs: the client chooses the family, the server follows. */
bool kp_hp_link_follow(kp_hp_link_t *l, const kp_addr_t *from, uint64_t now);
/* The transport's word on the current path (stream path_state). */
void kp_hp_link_path_state(kp_hp_link_t *l, bool alive, uint64_t now);
/* Whether the link still needs sock (the connection's, the kept relay's,
 * a pairing's): the glue closes its sockets only when no link does. */
bool kp_hp_link_holds(const kp_hp_link_t *l, const void *sock);
/* Stops it (NULL: nothing); no callback after. */
void kp_hp_link_stop(kp_hp_link_t *l);

typedef struct kp_hp_stats_s {
  uint64_t relay_forwards; /* requests forwarded to a server */
  uint64_t relay_no_peer;  /* for keys we hold no announcement of */
  uint64_t relay_busy;     /* refused: table full or source over its rate */
  uint64_t probes_sent;
  uint64_t probes_unproven; /* ... of them to addresses nothing proved yet (hints) */
  uint64_t probes_bad;      /* failed authentication, or for no session */
  uint64_t probes_ok;
  uint64_t proofs;            /* addresses proven by an echo of our nonce */
  uint64_t proofs_refused;    /* ... echoes from where the peer saw someone else, not us */
  uint64_t claims_refused;    /* a relay said the peer is where the peer says it is not */
  uint64_t birthdays;         /* birthday punches started (either half) */
  uint64_t birthday_busy;     /* not started: config.max_birthdays already running */
  uint64_t birthday_denied;   /* not started: the target IP's budget is spent */
  uint64_t upgrades;          /* relayed connections that found a direct path */
  uint64_t upgrade_fallbacks; /* ... and went back to the relay when it died */
  uint64_t resumes;           /* dead paths the client set out to replace */
  uint64_t resumed;           /* ... and replaced (direct or relayed) */
  uint64_t resume_rounds_bad; /* resume rounds that failed to open, or replays */
} kp_hp_stats_t;
void kp_hp_stats(const kp_hp_t *hp, kp_hp_stats_t *out);

#endif
