/* SPDX-License-Identifier: MIT */
/* kp_hp_t's insides, shared by hp.c (core, relay role), hp_path.c (probes
 * and proofs), hp_birthday.c, hp_server.c, hp_client.c and hp_link.c.
 * Never included outside holepunch/. */
#ifndef KP_HP_INTERNAL_H
#define KP_HP_INTERNAL_H

#include "common/ratelimit.h"
#include "holepunch/holepunch.h"
#include "holepunch/hs_noise.h"
#include "relay/relay.h"

#define HP_MAX_SERVERS 4
#define HP_LINGER_MS 5000 /* a finished side keeps answering probes */
#define HP_MAX_LAN 4
#define HP_MAX_RELAYS 8             /* relay nodes a client tries */
#define HP_MAX_LATER 4              /* ... answering over the other family's record only */
#define HP_MAX_SEEDS 8              /* bootstrap nodes a client's lookup starts from */
#define HP_LOOKUP_CONCURRENCY 3     /* a client's lookup: requests in flight */
#define HP_MAX_RELAY_CANDIDATES 4   /* blind relays a node keeps */
#define HP_PAIR_INTERVAL_MS 250     /* PAIR retransmissions until the relay answers */
#define HP_RELAY_AFTER_MS 1000      /* a punch not through by then goes to a relay ... */
#define HP_RELAY_AFTER_BDAY_MS 3000 /* ... or by then, for the birthday strategy */
#define HP_ROUND_INTERVAL_MS 250    /* a client sends rounds this often until a path is proven */
#define HP_REPLAY_WAYS 4
#define HP_REPLAY_SETS 256
#define HP_REPLAY_WINDOW_MS (5 * 60 * 1000) /* hellos older than this are replays */
#define HP_REPLY_MAX 512
#define HP_MAX_BIRTHDAYS 8      /* the pool's size; config.max_birthdays of it is used */
#define HP_BIRTHDAY_RETRY_MS 50 /* a punch waiting for a slot in the pool looks again */
#define HP_BUSY_RETRIES 3       /* rounds over the relay nodes when all say BUSY ... */
#define HP_BUSY_BACKOFF_MS 250  /* ... after 250, 500, 1000 ms */

/* Admission (common/ratelimit.h). A relay node forwards relay_rate
 * requests per second per sender; a server admits relay_rate hellos per
 * second per client IP, a quarter of server_rate per sender (the node
 * that handed it the hello), server_rate in all, and past that a reserve
 * of a quarter for senders and clients that sent little. */
#define HP_FORWARD_SENDERS 1024
#define HP_HELLO_SENDERS 4096
#define HP_LIGHT_SENDER 2 /* hellos per second a sender may have spent and still be light */
/* Birthday targets: at most config.birthday_probes probes (or sockets)
 * per target IP per minute, from this node. */
#define HP_BDAY_TARGETS 256

/* ---- Paths: probes, proofs, answers (hp_path.c) ------------------------------------ */

/* An address is proven when an authenticated probe from it echoes a
 * nonce we sent to it: only the peer (it holds the probe key) receiving
 * at that address could have made it. Until then it is a hint: one probe
 * in all, or, when a relay node that stores our record and the peer itself
 * both name its IP, up to HP_HINTS_PER_ADDR over the punch, one per round
 * the peer paid for. A proven address gets what it needs. Nonces are
 * BLAKE2b(secret, our id || where || epoch): nothing to store, and an
 * answer older than two epochs proves nothing. */
#define HP_PATH_CANDIDATES 12
#define HP_HINTS_PER_ADDR 8
#define HP_PROBE_EPOCH_MS 8000
#define HP_ANSWER_RATE 8   /* answers per second a path sends (bucket) ... */
#define HP_ANSWER_BURST 16 /* ... with this burst */

typedef struct hp_cand_s {
  kp_addr_t addr;
  void *sock;     /* the socket it is reached from (NULL: the main one) */
  uint8_t hints;  /* probes sent while unproven */
  uint8_t budget; /* ... at most this many: 1 for a bare claim */
  bool proven;    /* it echoed one of our nonces */
  bool has_echo;  /* it sent us a nonce: the next probe to it echoes it */
  bool answered;  /* our answer carried that nonce already */
  bool held;      /* the link keeps a pointer to it (its kept path, the peer's link) */
  uint32_t used;  /* the path's use counter when last hinted or heard from */
  uint8_t echo[KP_PROBE_NONCE_LEN];
} hp_cand_t;

typedef struct hp_path_s {
  uint64_t local_id, remote_id; /* probes to us carry local_id; ours carry remote_id */
  uint8_t flags;                /* ours: KP_PROBE_FROM_CLIENT or 0 */
  uint8_t key[32];              /* the probe key */
  hp_cand_t cand[HP_PATH_CANDIDATES];
  unsigned count;
  uint32_t uses; /* counts hints and probes heard: which candidate is the stalest */
  kp_bucket_t answers;
  int best; /* index of the candidate proven first; -1: none */
  /* After the proof, probes to it on a schedule: the peer may not have
   * our proof yet, and each probe gives it an echo to prove us with. */
  uint64_t keep_start, keep_next;
  unsigned keep_step;
  unsigned sent; /* probes, for the connect's datagram count */
  /* The last authenticated probe echoed a nonce of ours of this epoch or
   * the last: sent lately by the peer, not a replay of an old one. */
  bool last_fresh;
} hp_path_t;

void kp__hp_path_init(hp_path_t *p, uint64_t local_id, uint64_t remote_id, uint8_t flags,
                      const uint8_t key[32], uint64_t now);
/* A hint: an address to try with up to budget probes while unproven
 * (deduplicated, keeping the larger budget). When the table is full the
 * stalest candidate that is neither proven, the best, nor held gives way;
 * NULL when there is none. */
hp_cand_t *kp__hp_path_hint(hp_path_t *p, const kp_addr_t *addr, void *sock, unsigned budget);
/* One probe to each unproven candidate within its budget (a round's worth). */
void kp__hp_path_hints(kp_hp_t *hp, hp_path_t *p, uint64_t now);
/* A probe datagram: NULL and *ok false if it is not this path's; *ok true
 * if it authenticated. Returns the candidate it newly proved. */
hp_cand_t *kp__hp_path_input(kp_hp_t *hp, hp_path_t *p, void *sock, const kp_addr_t *from,
                             const uint8_t *data, size_t len, uint64_t now, bool *ok);
/* One probe (not an answer) to a candidate, echoing what it sent us. */
void kp__hp_path_probe(kp_hp_t *hp, hp_path_t *p, hp_cand_t *c, uint8_t extra_flags, uint64_t now);
/* A hint a resume round paid for: as kp__hp_path_hint, and an address
 * whose budget is spent (and that is not proven) gets one probe more. */
hp_cand_t *kp__hp_path_hint_round(hp_path_t *p, const kp_addr_t *addr, void *sock, unsigned budget);
/* The candidate for addr on sock, if the path has one. */
hp_cand_t *kp__hp_path_find(hp_path_t *p, const kp_addr_t *addr, const void *sock);
/* Through a proxy: "punch with me, at own" (KP_PROBE_PUNCH | KP_PROBE_OWN_ADDR). */
void kp__hp_path_probe_own(kp_hp_t *hp, hp_path_t *p, hp_cand_t *c, const kp_addr_t *own,
                           uint64_t now);
/* Sends what the after-proof schedule says is due; its next deadline. */
uint64_t kp__hp_path_keep(kp_hp_t *hp, hp_path_t *p, uint64_t now);
uint64_t kp__hp_path_deadline(const hp_path_t *p);
hp_cand_t *kp__hp_path_best(hp_path_t *p);
/* The glue closed sock: its candidates are forgotten (their slots free),
 * so nothing is ever sent from it again. Candidates on other sockets stay
 * where they are (callers may hold pointers to them). */
void kp__hp_path_forget_sock(hp_path_t *p, const void *sock);
/* Our nonce for a probe to `to` (epoch from now). */
void kp__hp_nonce(kp_hp_t *hp, uint64_t local_id, const kp_addr_t *to, uint64_t now,
                  uint8_t out[KP_PROBE_NONCE_LEN]);
/* Sends a probe from sock (NULL: the main socket). */
void kp__hp_send_probe(kp_hp_t *hp, void *sock, const kp_addr_t *to, const kp_probe_t *p,
                       const uint8_t key[32]);
/* Whether claimed (what a relay node or relay says the peer's address is)
 * is what the peer itself reported (addrs, from its sealed hello,
 * welcome or round): the same IP, and with exact the same port too. */
bool kp__hp_corroborated(const kp_addr_t *claimed, const kp_addr_t *addrs, size_t count,
                         bool exact);

/* Pairing at a blind relay (relay/relay.h) from a socket of its own: the
 * relay tells sessions apart by source address. */
typedef struct hp_pairing_s {
  void *sock; /* NULL: not pairing */
  kp_addr_t relay;
  kp_relay_pair_t pair;
  uint8_t role; /* 0 client, 1 server */
  uint64_t next_at;
  unsigned sent;
} hp_pairing_t;

/* One birthday punch in progress (hp_birthday.c): the random side's
 * sockets, or the consistent side's spray at random ports. */
typedef struct hp_bday_s {
  kp_hp_t *hp; /* NULL: free */
  bool sockets;
  kp_addr_t to; /* the peer's corroborated address (the spray: its IP) */
  void **socks;
  unsigned sock_count;
  void *sock;      /* the spray's socket: the one the peer's sockets aim at (NULL: the main one) */
  hp_path_t *path; /* whose probes these are */
  unsigned sent;
  uint64_t next_at;
} hp_bday_t;

typedef struct hp_session_s {
  kp_hp_server_t *server; /* NULL: free */
  uint64_t id;
  uint64_t created, expires;
  uint64_t admitted_light; /* budget its sender and client IP had left (eviction order) */
  bool proven;             /* a round came back: the client holds the keys */
  uint8_t client_e[32];    /* a repeated hello (a retry) gets the same answer */
  uint8_t reply[HP_REPLY_MAX];
  size_t reply_len;
  uint8_t round_reply[HP_REPLY_MAX];
  size_t round_reply_len;
  uint32_t last_round;
  kp_hp_result_t res;
  uint8_t hp_key[32];
  kp_addr_t client_seen; /* as the relay node saw it when the last round passed */
  bool claim_trusted;    /* ... and that node stores our record (or it was the client) */
  kp_addr_t client_addrs[KP_HS_MAX_ADDRS]; /* what the client says its addresses are */
  size_t client_addr_count;
  hp_path_t path;
  uint64_t hint_at; /* the next round's probes leave then (UINT64_MAX: none due) */
  hp_bday_t *bday;
  bool bday_wanted, bday_sockets; /* waiting for a slot in the pool */
  uint64_t bday_retry_at;
  hp_pairing_t pairing;
  kp_relay_pair_t relay_pair;
  bool done;
} hp_session_t;

typedef struct hp_replay_s {
  uint8_t key[16]; /* a prefix of the client key */
  uint64_t timestamp;
  uint64_t used;
} hp_replay_t;

struct kp_hp_server_s {
  kp_hp_t *hp;
  kp_keypair_t kp;
  uint8_t target[KP_ID_LEN];
  kp_hp_firewall_fn firewall;
  kp_device_info_t info;
  kp_info_policy_t info_policy;
  kp_hp_connection_fn on_connection;
  void *ctx;
  hp_session_t *sessions;
  unsigned session_count;
  hp_replay_t replay[HP_REPLAY_SETS][HP_REPLAY_WAYS];
  kp_ratelimit_t per_client; /* hellos per client IP (as claimed) */
  kp_ratelimit_t per_sender; /* hellos per sender (the node that handed them to us) */
  kp_bucket_t all, reserve;
  kp_hp_server_stats_t stats;
};

typedef struct hp_relay_entry_s {
  kp_hp_t *hp; /* NULL: free */
  kp_dht_reply_to_t rt;
  kp_dht_req_t *req;
  kp_dht_t *via; /* the DHT req went out on: ours, or the other family's */
} hp_relay_entry_t;

struct kp_hp_s {
  kp_dht_t *dht;
  kp_dht_t *other; /* a dual-stack node's other family (kp_hp_set_other_family) */
  kp_dht_swarm_t *swarm;
  kp_hp_config_t cfg;
  kp_hp_io_t io;
  uint8_t secret[32]; /* probe nonces, admission hash keys */
  kp_addr_t lan[HP_MAX_LAN];
  size_t lan_count;
  kp_hp_server_t *servers[HP_MAX_SERVERS];
  kp_hp_connect_t *connects; /* live and lingering, linked */
  kp_hp_link_t *links;       /* connections made: their paths (hp_link.c) */
  hp_relay_entry_t *relay;
  kp_ratelimit_t forward_rate; /* the relay role's, made on first use */
  kp_ratelimit_t bday_targets; /* birthday probes per target IP, made on first use */
  /* Allocated on first use: most nodes of a big network never punch with
   * the birthday strategy. */
  hp_bday_t *bday;                               /* HP_MAX_BIRTHDAYS */
  kp_addr_t relays[HP_MAX_RELAY_CANDIDATES];     /* blind relays we know (explicit or found) */
  kp_addr_t relay_alts[HP_MAX_RELAY_CANDIDATES]; /* ... at the other family (dual-stack ones) */
  size_t relay_count;
  /* A proxied node's socket of its own, out of the proxy, and its public
   * address (kp_hp_set_own_socket): its connections punch from there. */
  void *own_sock;
  kp_addr_t own_addr;
  bool own_port_hint; /* own_addr's port is a guess: a NAT that maps each destination anew */
  kp_hp_stats_t stats;
};

/* hp.c */
uint64_t kp__hp_wall(kp_hp_t *hp, uint64_t now);
void kp__hp_random(kp_hp_t *hp, void *buf, size_t len);
uint64_t kp__hp_random_id(kp_hp_t *hp);
/* A key for an admission table, from the node's secret and a label. */
void kp__hp_table_key(const kp_hp_t *hp, const char *label, uint8_t key[KP_RATELIMIT_KEY_LEN]);
/* Answers a request with a routed envelope. */
void kp__hp_reply(kp_hp_t *hp, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w, uint64_t now);
void kp__hp_reply_error(kp_hp_t *hp, const kp_dht_reply_to_t *rt, uint8_t error, uint64_t now);
/* The keys a finished handshake gives both sides (from its path secret). */
void kp__hp_derive_keys(const kp_noise_split_t *split, uint8_t hp_key[32], uint8_t probe_key[32],
                        kp_relay_pair_t *pair);
/* Our public address as our DHT contacts report it, for hellos, welcomes
 * and rounds (0 or 1). */
size_t kp__hp_public_addrs(kp_hp_t *hp, kp_addr_t *out);
/* A dual-stack relay's address of the other family, if relay is one we
 * know (family 0: none). */
kp_addr_t kp__hp_relay_alt(const kp_hp_t *hp, const kp_addr_t *relay);
/* Where we pair for a round that names a relay: its address of our
 * family (the other one a dual-stack relay named in relay_alt). */
const kp_addr_t *kp__hp_relay_ours(const kp_hp_t *hp, const kp_hp_round_t *r);

/* Pairing (hp.c): opens the socket and sends the first PAIR; false if no
 * socket could be opened. */
bool kp__hp_pairing_start(kp_hp_t *hp, hp_pairing_t *p, const kp_addr_t *relay,
                          const kp_relay_pair_t *pair, uint8_t role, uint64_t now);
void kp__hp_pairing_run(kp_hp_t *hp, hp_pairing_t *p, uint64_t now);
/* Closes the socket unless keep (the connection now runs on it). */
void kp__hp_pairing_end(kp_hp_t *hp, hp_pairing_t *p, bool keep);

/* hp_birthday.c */
/* Whether a NAT pair needs the birthday strategy, and if so which half is
 * ours: sockets (we are the random side) or the spray. */
bool kp__hp_birthday_applies(kp_nat_type_t local, kp_nat_type_t remote, bool *sockets);
/* The pool has no free slot (counted): wait and look again. */
bool kp__hp_birthday_pool_full(kp_hp_t *hp);
/* NULL: the pool is busy, the target's budget is spent, or no socket could
 * be opened (counted). sock: the spray's socket. */
hp_bday_t *kp__hp_birthday_start(kp_hp_t *hp, bool sockets, const kp_addr_t *to, hp_path_t *path,
                                 void *sock, uint64_t at);
void kp__hp_birthday_run(kp_hp_t *hp, hp_bday_t *b, uint64_t now);
bool kp__hp_birthday_owns(const hp_bday_t *b, const void *sock);
/* Closes every socket but keep (the winner, now the caller's). */
void kp__hp_birthday_end(hp_bday_t *b, void *keep);
void kp__hp_birthdays_free(kp_hp_t *hp);

/* hp_server.c */
/* A hello or a round for s. sender: the node that handed it to us (the
 * client itself when direct); client_seen: the client's address as that
 * node says it saw it. */
void kp__hp_server_handshake(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                             const kp_addr_t *sender, const kp_addr_t *client_seen, bool direct,
                             uint64_t now);
void kp__hp_server_round(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                         const kp_addr_t *sender, const kp_addr_t *client_seen, bool direct,
                         uint64_t now);
void kp__hp_server_forget_sock(kp_hp_server_t *s, const void *sock);
bool kp__hp_server_probe(kp_hp_server_t *s, void *sock, const kp_addr_t *from, uint64_t conn_id,
                         const uint8_t *data, size_t len, uint64_t now);
void kp__hp_server_tick(kp_hp_server_t *s, uint64_t now);
uint64_t kp__hp_server_deadline(const kp_hp_server_t *s);
/* A relay's answer on sock; false if no session of s paired from it. */
bool kp__hp_server_relay(kp_hp_server_t *s, void *sock, const kp_addr_t *from, const uint8_t *data,
                         size_t len, uint64_t now);
kp_hp_server_t *kp__hp_server_for(kp_hp_t *hp, const uint8_t target[KP_ID_LEN]);

/* hp_link.c */
/* The server side's link of the connection whose id is local_id. */
kp_hp_link_t *kp__hp_link_for(kp_hp_t *hp, uint64_t local_id);
/* A resume round for l (the arguments as for kp__hp_server_round;
 * trusted: the sender stores our record, or was the client itself). */
void kp__hp_link_resume(kp_hp_link_t *l, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                        const kp_addr_t *client_seen, bool direct, bool trusted, uint64_t now);
/* A probe or a relay's answer for one of the links; false if none's. */
bool kp__hp_links_probe(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                        size_t len, uint64_t now);
bool kp__hp_links_relay(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                        size_t len, uint64_t now);
uint64_t kp__hp_links_deadline(kp_hp_t *hp);
void kp__hp_links_forget_sock(kp_hp_t *hp, const void *sock);
/* Runs due work; callbacks may stop links. */
void kp__hp_links_tick(kp_hp_t *hp, uint64_t now);
void kp__hp_links_free(kp_hp_t *hp);

/* hp_client.c */
bool kp__hp_connect_probe(kp_hp_connect_t *c, void *sock, const kp_addr_t *from, uint64_t conn_id,
                          const uint8_t *data, size_t len, uint64_t now);

/* Runs due work (may free c); the next deadline. */
void kp__hp_connect_tick(kp_hp_connect_t *c, uint64_t now);
bool kp__hp_connect_relay(kp_hp_connect_t *c, void *sock, const kp_addr_t *from,
                          const uint8_t *data, size_t len, uint64_t now);
uint64_t kp__hp_connect_deadline(const kp_hp_connect_t *c);
kp_hp_connect_t *kp__hp_connect_next(kp_hp_connect_t *c);
void kp__hp_connect_forget_sock(kp_hp_connect_t *c, const void *sock);
void kp__hp_connects_free(kp_hp_t *hp);

#endif
