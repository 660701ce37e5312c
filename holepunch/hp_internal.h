/* kp_hp_t's insides, shared by hp.c (core, relay role, probes),
 * hp_server.c and hp_client.c. Never included outside holepunch/. */
#ifndef KP_HP_INTERNAL_H
#define KP_HP_INTERNAL_H

#include "holepunch/holepunch.h"
#include "holepunch/hs_noise.h"

#define HP_MAX_SERVERS 4
#define HP_UNVERIFIED_PROBES 3 /* "a handful": to addresses no token proved */
#define HP_MAX_ANSWERS 16      /* answers per session: no reflection loops */
#define HP_LINGER_MS 5000      /* a finished side keeps answering probes */
#define HP_MAX_LAN 4
#define HP_MAX_RELAYS 8             /* relay nodes a client tries */
#define HP_MAX_SEEDS 8              /* bootstrap nodes a client's lookup starts from */
#define HP_LOOKUP_CONCURRENCY 3     /* a client's lookup: requests in flight */
#define HP_MAX_RELAY_CANDIDATES 4   /* blind relays a node keeps */
#define HP_PAIR_INTERVAL_MS 250     /* PAIR retransmissions until the relay answers */
#define HP_RELAY_AFTER_MS 1000      /* a punch not through by then goes to a relay ... */
#define HP_RELAY_AFTER_BDAY_MS 3000 /* ... or by then, for the birthday strategy */
#define HP_RATE_SLOTS 256           /* per-source forward counters (hashed) */
#define HP_CLIENT_RATE_SLOTS 4096   /* a server's per-client-IP hello counters */
#define HP_LIGHT_SENDER 2           /* hellos per second an IP may send past a spent budget */
#define HP_REPLAY_WAYS 4
#define HP_REPLAY_SETS 256
#define HP_REPLAY_WINDOW_MS (5 * 60 * 1000) /* hellos older than this are replays */
#define HP_REPLY_MAX 512
#define HP_MAX_BIRTHDAYS 8      /* the pool's size; config.max_birthdays of it is used */
#define HP_BIRTHDAY_RETRY_MS 50 /* a punch waiting for a slot in the pool looks again */
#define HP_BUSY_RETRIES 3       /* rounds over the relay nodes when all say BUSY ... */
#define HP_BUSY_BACKOFF_MS 250  /* ... after 250, 500, 1000 ms */

/* Probes towards a set of addresses on a fixed schedule (hp.c). */
typedef struct hp_probes_s {
  kp_addr_t to[HP_MAX_LAN + 1];
  unsigned count;
  bool verified;    /* a token proved the addresses: the whole schedule */
  unsigned step;    /* next offset in the schedule */
  uint64_t start;   /* when the schedule began */
  uint64_t next_at; /* UINT64_MAX: idle */
  unsigned sent;
  void *sock; /* the socket they leave from: NULL, the node's main one */
} hp_probes_t;

/* Pairing at a blind relay (relay/relay.h) from a socket of its own: the
 * relay tells sessions apart by source address. */
typedef struct hp_pairing_s {
  void *sock; /* NULL: not pairing */
  kp_addr_t relay;
  uint8_t token[32];
  uint8_t role; /* 0 client, 1 server */
  uint64_t next_at;
  unsigned sent;
} hp_pairing_t;

/* One birthday punch in progress (hp_birthday.c): the random side's
 * sockets, or the consistent side's spray at random ports. */
typedef struct hp_bday_s {
  kp_hp_t *hp; /* NULL: free */
  bool sockets;
  kp_addr_t to; /* the peer's verified address (the spray: its IP) */
  void **socks;
  unsigned sock_count;
  uint64_t conn_id;
  uint8_t flags, key[32];
  unsigned sent;
  uint64_t next_at;
} hp_bday_t;

typedef struct hp_rate_slot_s hp_rate_slot_t;

typedef struct hp_session_s {
  kp_hp_server_t *server; /* NULL: free */
  uint64_t id;
  uint64_t created, expires;
  bool proven;          /* a round echoed our token: the client is real */
  uint8_t client_e[32]; /* a repeated hello (a retry) gets the same answer */
  uint8_t reply[HP_REPLY_MAX];
  size_t reply_len;
  uint8_t round_reply[HP_REPLY_MAX];
  size_t round_reply_len;
  uint32_t last_round;
  kp_hp_result_t res;
  uint8_t hp_key[32], probe_key[32];
  kp_addr_t client_seen; /* as the relay saw it when the hello passed */
  hp_probes_t probes;
  hp_bday_t *bday;
  bool bday_wanted, bday_sockets; /* waiting for a slot in the pool */
  uint64_t bday_retry_at;
  hp_pairing_t pairing;
  uint8_t relay_token[32];
  unsigned answers;
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
  uint8_t secret[32]; /* tokens */
  kp_hp_firewall_fn firewall;
  kp_device_info_t info;
  kp_info_policy_t info_policy;
  kp_hp_connection_fn on_connection;
  void *ctx;
  hp_session_t *sessions;
  unsigned session_count;
  hp_replay_t replay[HP_REPLAY_SETS][HP_REPLAY_WAYS];
  uint64_t rate_second;
  unsigned rate_count, reserve_count;
  hp_rate_slot_t *client_rate; /* HP_CLIENT_RATE_SLOTS, hellos per client IP */
  kp_hp_server_stats_t stats;
};

typedef struct hp_relay_entry_s {
  kp_hp_t *hp; /* NULL: free */
  kp_dht_reply_to_t rt;
  kp_dht_req_t *req;
} hp_relay_entry_t;

struct hp_rate_slot_s {
  uint64_t second;
  unsigned count;
};

struct kp_hp_s {
  kp_dht_t *dht;
  kp_dht_swarm_t *swarm;
  kp_hp_config_t cfg;
  kp_hp_io_t io;
  uint8_t secret[32]; /* client tokens */
  kp_addr_t lan[HP_MAX_LAN];
  size_t lan_count;
  kp_hp_server_t *servers[HP_MAX_SERVERS];
  kp_hp_connect_t *connects; /* live and lingering, linked */
  kp_hp_upgrade_t *upgrades; /* relayed connections punching in the background */
  hp_relay_entry_t *relay;
  /* Allocated on first use, as the relay table is: most nodes of a big
   * network never relay a handshake or punch with the birthday strategy. */
  hp_rate_slot_t *rate;                      /* HP_RATE_SLOTS */
  hp_bday_t *bday;                           /* HP_MAX_BIRTHDAYS */
  kp_addr_t relays[HP_MAX_RELAY_CANDIDATES]; /* blind relays we know (explicit or found) */
  size_t relay_count;
  kp_hp_stats_t stats;
};

/* hp.c */
uint64_t kp__hp_wall(kp_hp_t *hp, uint64_t now);
void kp__hp_random(kp_hp_t *hp, void *buf, size_t len);
uint64_t kp__hp_random_id(kp_hp_t *hp);
/* Counts one forward for from's IP; false if it is over the rate. */
bool kp__hp_rate_ok(kp_hp_t *hp, const kp_addr_t *from, uint64_t now);
/* Answers a request with a routed envelope. */
void kp__hp_reply(kp_hp_t *hp, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w, uint64_t now);
void kp__hp_reply_error(kp_hp_t *hp, const kp_dht_reply_to_t *rt, uint8_t error, uint64_t now);
/* The keys a finished handshake gives both sides. */
void kp__hp_derive_keys(const kp_noise_split_t *split, uint8_t hp_key[32], uint8_t probe_key[32]);

void kp__hp_probes_start(hp_probes_t *p, const kp_addr_t *to, size_t count, bool verified,
                         uint64_t at);
/* Sends what is due; returns the next deadline. */
uint64_t kp__hp_probes_run(kp_hp_t *hp, hp_probes_t *p, uint64_t conn_id, uint8_t flags,
                           const uint8_t key[32], uint64_t now);
void kp__hp_send_probe(kp_hp_t *hp, void *sock, const kp_addr_t *to, uint64_t conn_id,
                       uint8_t flags, uint32_t seq, const uint8_t key[32]);

/* Pairing (hp.c): opens the socket and sends the first PAIR; false if no
 * socket could be opened. */
bool kp__hp_pairing_start(kp_hp_t *hp, hp_pairing_t *p, const kp_addr_t *relay,
                          const uint8_t token[32], uint8_t role, uint64_t now);
void kp__hp_pairing_run(kp_hp_t *hp, hp_pairing_t *p, uint64_t now);
/* Closes the socket unless keep (the connection now runs on it). */
void kp__hp_pairing_end(kp_hp_t *hp, hp_pairing_t *p, bool keep);

/* hp_birthday.c */
/* Whether a NAT pair needs the birthday strategy, and if so which half is
 * ours: sockets (we are the random side) or the spray. */
bool kp__hp_birthday_applies(kp_nat_type_t local, kp_nat_type_t remote, bool *sockets);
/* NULL: the pool is busy or no socket could be opened (counted). */
hp_bday_t *kp__hp_birthday_start(kp_hp_t *hp, bool sockets, const kp_addr_t *to, uint64_t conn_id,
                                 uint8_t flags, const uint8_t key[32], uint64_t at);
void kp__hp_birthday_run(kp_hp_t *hp, hp_bday_t *b, uint64_t now);
bool kp__hp_birthday_owns(const hp_bday_t *b, const void *sock);
/* Closes every socket but keep (the winner, now the caller's). */
void kp__hp_birthday_end(hp_bday_t *b, void *keep);
void kp__hp_birthdays_free(kp_hp_t *hp);

/* hp_server.c */
/* A hello or a round for s. direct: the client sent it to us (we are our
 * own relay node); client_seen: its address as the relay node saw it. */
void kp__hp_server_handshake(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                             const kp_addr_t *client_seen, bool direct, uint64_t now);
void kp__hp_server_round(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                         const kp_addr_t *client_seen, bool direct, uint64_t now);
bool kp__hp_server_probe(kp_hp_server_t *s, void *sock, const kp_addr_t *from, const kp_probe_t *p,
                         const uint8_t *data, size_t len, uint64_t now);
void kp__hp_server_tick(kp_hp_server_t *s, uint64_t now);
/* A relay's answer on sock; false if no session of s paired from it. */
bool kp__hp_server_relay(kp_hp_server_t *s, void *sock, const kp_addr_t *from, const uint8_t *data,
                         size_t len, uint64_t now);
kp_hp_server_t *kp__hp_server_for(kp_hp_t *hp, const uint8_t target[KP_ID_LEN]);

/* hp_upgrade.c */
/* A probe on an upgrade's socket; false if it is not the upgrade's. */
bool kp__hp_upgrade_probe(kp_hp_upgrade_t *u, const kp_addr_t *from, const kp_probe_t *p,
                          const uint8_t *data, size_t len, uint64_t now);
uint64_t kp__hp_upgrades_deadline(kp_hp_t *hp);
/* Runs due work; callbacks may stop upgrades. */
void kp__hp_upgrades_tick(kp_hp_t *hp, uint64_t now);
/* Finds the upgrade running on sock (NULL: none). */
kp_hp_upgrade_t *kp__hp_upgrade_on(kp_hp_t *hp, const void *sock);
void kp__hp_upgrades_free(kp_hp_t *hp);

/* hp_client.c */
bool kp__hp_connect_probe(kp_hp_connect_t *c, void *sock, const kp_addr_t *from,
                          const kp_probe_t *p, const uint8_t *data, size_t len, uint64_t now);

/* Runs due work (may free c); the next deadline. */
void kp__hp_connect_tick(kp_hp_connect_t *c, uint64_t now);
bool kp__hp_connect_relay(kp_hp_connect_t *c, void *sock, const kp_addr_t *from,
                          const uint8_t *data, size_t len, uint64_t now);
uint64_t kp__hp_connect_deadline(const kp_hp_connect_t *c);
kp_hp_connect_t *kp__hp_connect_next(kp_hp_connect_t *c);
void kp__hp_connects_free(kp_hp_t *hp);

#endif
