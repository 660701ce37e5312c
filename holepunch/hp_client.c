/* SPDX-License-Identifier: MIT */
/* The client's role: look the key up, shake hands through one of the
 * server's relay nodes, run holepunch rounds until an address of the
 * server is proven, or meet it at a blind relay (holepunch.h, hp_path.c).
 *
 * The lookup and the handshake overlap: the first node that answers the
 * lookup with the server's record stores it, so it can relay at once; the
 * rest of the lookup only supplies more relay nodes should that one fail,
 * and is stopped as soon as the handshake succeeds. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_record.h"
#include "holepunch/hp_internal.h"
#include "relay/relay.h"

static const char PROLOGUE[] = "kadpunch/handshake/v1";

typedef enum { C_HANDSHAKE, C_PUNCH, C_LINGER } cstate_t;

struct kp_hp_connect_s {
  kp_hp_connect_t *next;
  kp_hp_t *hp;
  cstate_t state;
  kp_keypair_t self;
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  uint8_t target[KP_ID_LEN];
  kp_hp_connect_cb cb;
  void *arg;

  kp_dht_query_t *lookup;
  bool lookup_over;
  bool lookup_fallback; /* given relay nodes; look the key up if they fail */
  kp_addr_t seeds[HP_MAX_SEEDS];
  size_t seed_count;
  kp_addr_t relays[HP_MAX_RELAYS];
  unsigned relay_count, relay_next;
  /* Nodes that answered with a record announced over the other family
   * only (a dual-stack node: it would forward our hello there, and a
   * dual-stack server would answer from its other family's side): tried
   * once every node of our family has been. */
  kp_addr_t later[HP_MAX_LATER];
  unsigned later_count;
  kp_dht_req_t *req; /* the handshake or round in flight */
  kp_addr_t relay;   /* where req went */
  int last_error;    /* the most telling relay error so far */
  unsigned busy_rounds;
  uint64_t retry_at; /* every relay said BUSY: all again at this time */

  kp_noise_t noise;
  uint64_t started, hs_sent, hs_done, lookup_done;
  uint64_t deadline;
  uint64_t session;
  uint8_t hp_key[32];
  kp_addr_t server_seen;                   /* where the relay node says the server is: a claim */
  kp_addr_t server_addrs[KP_HS_MAX_ADDRS]; /* where the server says it is (public) */
  size_t server_addr_count;
  kp_addr_t server_lan[KP_HS_MAX_ADDRS];
  size_t server_lan_count;
  hp_path_t path;
  hp_bday_t *bday;
  bool bday_wanted, bday_sockets; /* waiting for a slot in the pool */
  uint64_t bday_retry_at;
  hp_pairing_t pairing; /* no direct path: at a blind relay */
  kp_relay_pair_t relay_pair;
  uint64_t invite_id; /* the asks (kp_hp_connect_opts_t) */
  uint8_t invite_proof[32];
  char service[KP_SERVICE_MAX + 1];
  bool want_info;
  kp_addr_t fallback_relay; /* where to go if the punch has not worked by fallback_at */
  uint64_t fallback_at;     /* 0: no relay known */
  uint32_t round_no;
  uint64_t next_round_at; /* rounds go on until an address is proven (UINT64_MAX: none) */
  unsigned datagrams;
  kp_hp_result_t res;
};

kp_hp_connect_t *kp__hp_connect_next(kp_hp_connect_t *c) {
  return c->next;
}

void kp__hp_connect_forget_sock(kp_hp_connect_t *c, const void *sock) {
  kp__hp_path_forget_sock(&c->path, sock);
}

static void unlink_connect(kp_hp_connect_t *c) {
  for (kp_hp_connect_t **p = &c->hp->connects; *p; p = &(*p)->next) {
    if (*p == c) {
      *p = c->next;
      return;
    }
  }
}

static void stop_work(kp_hp_connect_t *c, void *keep_socket) {
  if (c->bday) kp__hp_birthday_end(c->bday, keep_socket);
  c->bday = NULL;
  kp__hp_pairing_end(c->hp, &c->pairing, false);
  if (c->lookup) kp_dht_query_cancel(c->hp->dht, c->lookup);
  c->lookup = NULL;
  if (c->req) kp_dht_request_abandon(c->hp->dht, c->req);
  c->req = NULL;
}

static void connect_free(kp_hp_connect_t *c) {
  stop_work(c, NULL);
  unlink_connect(c);
  kp_noise_clear(&c->noise);
  sodium_memzero(&c->relay_pair, sizeof(c->relay_pair));
  sodium_memzero(c, sizeof(*c));
  kp_free(c);
}

static unsigned lookup_requests(const kp_hp_connect_t *c) {
  return c->lookup ? kp_dht_query_stats(c->lookup)->requests : 0;
}

/* Ends the attempt: the callback, then a linger on success (to answer the
 * server's probes until it has ours), else freed. */
static void finish(kp_hp_connect_t *c, int status, uint64_t now) {
  kp_hp_result_t *r = &c->res;
  r->datagrams = c->datagrams + lookup_requests(c) + c->path.sent + (c->bday ? c->bday->sent : 0);
  if (!c->lookup_done) c->lookup_done = now;
  r->lookup_ms = c->lookup_done - c->started;
  if (c->hs_done) r->handshake_ms = c->hs_done - c->hs_sent;
  if (c->hs_done && !status) r->punch_ms = now - c->hs_done;
  r->relay = c->relay;
  stop_work(c, r->socket);
  kp_hp_connect_cb cb = c->cb;
  void *arg = c->arg;
  kp_hp_result_t copy = *r;
  c->cb = NULL;
  if (status) {
    connect_free(c);
  } else {
    /* Linger: the proven path's after-proof probes (hp_path.c) go on, so
     * the server proves us even if our first answer was lost. */
    c->state = C_LINGER;
    c->deadline = now + HP_LINGER_MS;
    c->next_round_at = UINT64_MAX;
  }
  cb(arg, status, &copy);
  sodium_memzero(&copy, sizeof(copy));
}

/* ---- Handshake ------------------------------------------------------------------- */

static void try_next_relay(kp_hp_connect_t *c, uint64_t now);

static int relay_error(uint8_t wire) {
  switch (wire) {
    case KP_HS_ERR_NO_PEER: return KP_EPEERNOTFOUND;
    case KP_HS_ERR_BUSY: return KP_EOVERLOADED;
    default: return KP_EHANDSHAKE;
  }
}

static int refusal_error(kp_hs_refusal_t why) {
  switch (why) {
    case KP_HS_REFUSE_NOT_ALLOWED: return KP_ENOTALLOWED;
    case KP_HS_REFUSE_VERSION: return KP_EPEERVERSION;
    case KP_HS_REFUSE_INVITE: return KP_EINVITE;
    case KP_HS_REFUSE_INVITE_USED: return KP_EINVITEUSED;
    case KP_HS_REFUSE_INVITE_EXPIRED: return KP_EINVITEEXPIRED;
    case KP_HS_REFUSE_NO_SERVICE: return KP_ENOSERVICE;
    case KP_HS_REFUSE_LIMIT: return KP_ECONNLIMIT;
    default: return KP_EOVERLOADED;
  }
}

static bool same_network(const kp_hp_connect_t *c) {
  const kp_dht_nat_t *nat = kp_dht_nat(c->hp->dht);
  return nat->has_public && kp_addr_same_ip(&nat->public_addr, &c->server_seen);
}

static void send_round(kp_hp_connect_t *c, uint64_t now);

/* The server's addresses from its welcome: its LAN, and its public
 * address as it reported it. */
static void server_reports(kp_hp_connect_t *c, const kp_addr_t *addrs, size_t count) {
  c->server_addr_count = 0;
  for (size_t i = 0; i < count; i++) {
    if (kp_addr_is_private(&addrs[i]) || kp_addr_is_loopback(&addrs[i])) {
      if (c->server_lan_count < KP_HS_MAX_ADDRS) c->server_lan[c->server_lan_count++] = addrs[i];
    } else if (c->server_addr_count < KP_HS_MAX_ADDRS) {
      c->server_addrs[c->server_addr_count++] = addrs[i];
    }
  }
  c->res.peer_addr_count = c->server_addr_count < 2 ? c->server_addr_count : 2;
  memcpy(c->res.peer_addrs, c->server_addrs, c->res.peer_addr_count * sizeof(kp_addr_t));
}

/* Hints for the server: where the relay node says it is, and where it says
 * it is itself. One probe each now, and more as rounds come back only for
 * an IP both name (hp_internal.h, "Paths"). */
static void hint_server(kp_hp_connect_t *c, uint64_t now) {
  bool agreed = kp__hp_corroborated(&c->server_seen, c->server_addrs, c->server_addr_count, false);
  kp__hp_path_hint(&c->path, &c->server_seen, NULL, agreed ? HP_HINTS_PER_ADDR : 1);
  for (size_t i = 0; i < c->server_addr_count; i++) {
    bool same = agreed && kp_addr_same_ip(&c->server_addrs[i], &c->server_seen);
    kp__hp_path_hint(&c->path, &c->server_addrs[i], NULL, same ? HP_HINTS_PER_ADDR : 1);
  }
  kp__hp_path_hints(c->hp, &c->path, now);
}

/* The first of addrs of our family (a dual-stack server names relays of
 * both), or NULL. */
static const kp_addr_t *first_ours(const kp_hp_t *hp, const kp_addr_t *addrs, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (addrs[i].family == kp_dht_family(hp->dht)) return &addrs[i];
  return NULL;
}

/* A relay to fall back to: ours first, else one the server named. */
static const kp_addr_t *fallback_relay(const kp_hp_t *hp, const kp_hs_welcome_t *wl) {
  const kp_addr_t *ours = first_ours(hp, hp->relays, hp->relay_count);
  return ours ? ours : first_ours(hp, wl->relays, wl->relay_count);
}

/* No direct path: a blind relay, ours first, else one the server named;
 * the server's if it can be reached nowhere else. */
static bool go_relayed(kp_hp_connect_t *c, const kp_hs_welcome_t *wl, uint64_t now) {
  kp_hp_t *hp = c->hp;
  const kp_addr_t *relay =
      wl->relay_only ? first_ours(hp, wl->relays, wl->relay_count) : fallback_relay(hp, wl);
  if (!relay || !kp__hp_pairing_start(hp, &c->pairing, relay, &c->relay_pair, 0, now)) {
    finish(c, hp->cfg.relay_only || wl->relay_only ? KP_ERELAY : KP_ENODIRECT, now);
    return false;
  }
  c->res.strategy = KP_PUNCH_RELAYED;
  return true;
}

/* The welcome is in: pick the strategy. */
static void start_punch(kp_hp_connect_t *c, const kp_hs_welcome_t *wl, uint64_t now) {
  kp_hp_t *hp = c->hp;
  kp_hp_result_t *r = &c->res;
  c->state = C_PUNCH;
  c->deadline = now + hp->cfg.punch_timeout_ms;
  c->session = wl->session;
  r->remote_nat = wl->nat;
  /* The lookup's replies were more samples: a fresh node knows more now
   * than when it said hello. */
  kp_nat_type_t nat = kp_dht_nat(hp->dht)->type;
  if (nat != KP_NAT_UNKNOWN) r->local_nat = nat;
  r->remote_id = wl->conn_id;
  r->cipher = wl->cipher;
  kp__hp_path_init(&c->path, r->local_id, r->remote_id, KP_PROBE_FROM_CLIENT, r->probe_key, now);
  server_reports(c, wl->addrs, wl->addr_count);
  bool lan = c->server_lan_count && same_network(c);
  /* A server of the other family only (reached through a dual-stack relay
   * node) has no address our socket can send to: a relay at once. */
  bool other_family =
      c->server_seen.family != kp_dht_family(hp->dht) && !first_ours(hp, wl->addrs, wl->addr_count);
  if ((r->local_nat == KP_NAT_RANDOM && wl->nat == KP_NAT_RANDOM && !lan) || hp->cfg.relay_only ||
      wl->relay_only || other_family) {
    if (!go_relayed(c, wl, now)) return;
  } else {
    /* A punch that has not worked by then goes to a relay, when one is
     * known, and goes on from there in the background (hp_upgrade.c): a
     * user waits at most this long for a path. Most punches take a round
     * trip; the birthday strategy's p99 is 1.4 s. */
    const kp_addr_t *relay = fallback_relay(hp, wl);
    bool sockets;
    uint64_t wait = kp__hp_birthday_applies(r->local_nat, wl->nat, &sockets)
                        ? HP_RELAY_AFTER_BDAY_MS
                        : HP_RELAY_AFTER_MS;
    /* Nothing can happen before the first round's REPLY. */
    wait += c->hs_done - c->hs_sent;
    if (wait > hp->cfg.punch_timeout_ms / 2) wait = hp->cfg.punch_timeout_ms / 2;
    if (relay) {
      c->fallback_relay = *relay;
      c->fallback_at = now + wait;
    }
    /* Behind one public IP: the LAN first; an open server: just knock.
     * Either way the first probes also open our NAT's mapping towards the
     * server before its own probes arrive. */
    if (lan) {
      r->strategy = KP_PUNCH_LAN;
      /* Our own network: the peer cannot aim us at anyone else's. */
      for (size_t i = 0; i < c->server_lan_count; i++)
        kp__hp_path_hint(&c->path, &c->server_lan[i], NULL, HP_HINTS_PER_ADDR);
    } else if (wl->nat == KP_NAT_OPEN) {
      r->strategy = KP_PUNCH_OPEN;
    }
    hint_server(c, now);
  }
  send_round(c, now);
}

static void on_welcome(kp_hp_connect_t *c, const kp_hs_wire_t *w, const kp_addr_t *from,
                       uint64_t now) {
  uint8_t payload[KP_HS_PAYLOAD_MAX];
  size_t plen;
  kp_hs_welcome_t wl;
  if (kp_noise_read_msg2(&c->noise, w->data, w->len, payload, sizeof(payload), &plen) ||
      kp_hs_welcome_decode(payload, plen, &wl)) {
    /* Forged or damaged: this relay node is no good. */
    c->last_error = KP_EHANDSHAKE;
    try_next_relay(c, now);
    return;
  }
  c->hs_done = now;
  c->lookup_done = c->lookup_done ? c->lookup_done : now;
  /* The rest of the lookup would only find more relay nodes. */
  c->datagrams += lookup_requests(c);
  if (c->lookup) kp_dht_query_cancel(c->hp->dht, c->lookup);
  c->lookup = NULL;

  c->res.has_info = wl.has_info;
  c->res.info = wl.info;
  if (wl.version != KP_HS_VERSION || wl.refusal) {
    finish(c, wl.version != KP_HS_VERSION ? KP_EPEERVERSION : refusal_error(wl.refusal), now);
    return;
  }
  kp_noise_split_t split;
  kp_noise_split(&c->noise, &split);
  memcpy(c->res.tx_key, split.tx, 32);
  memcpy(c->res.rx_key, split.rx, 32);
  memcpy(c->res.remote_key, split.remote_key, KP_PUBLIC_KEY_LEN);
  kp__hp_derive_keys(&split, c->hp_key, c->res.probe_key, &c->relay_pair);
  memcpy(c->res.path_secret, split.path, sizeof(c->res.path_secret));
  sodium_memzero(&split, sizeof(split));
  kp_noise_clear(&c->noise); /* its secrets are in the keys now */
  /* No peer address: the relay node was the server itself. */
  c->server_seen = w->has_peer ? w->peer : *from;
  start_punch(c, &wl, now);
}

static void on_handshake_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                               const kp_addr_t *from, uint64_t now) {
  kp_hp_connect_t *c = arg;
  kp_hs_wire_t w;
  (void)req;
  c->req = NULL;
  if (status == KP_ECANCELED) {
    finish(c, KP_ECANCELED, now);
    return;
  }
  if (status) {
    c->last_error = KP_EHANDSHAKE;
  } else if (resp->error) {
    int e = relay_error(resp->error);
    /* "Not found" only if nobody knew better. */
    if (e != KP_EPEERNOTFOUND || !c->last_error) c->last_error = e;
  } else if (resp->value && !kp_hs_wire_decode(resp->value, resp->value_len, &w) &&
             w.mode == KP_HS_REPLY) {
    on_welcome(c, &w, from, now);
    return;
  }
  try_next_relay(c, now);
}

static int send_hello(kp_hp_connect_t *c, const kp_addr_t *relay, uint64_t now) {
  kp_hp_t *hp = c->hp;
  const kp_dht_nat_t *nat = kp_dht_nat(hp->dht);
  kp_hs_hello_t h = {.version = KP_HS_VERSION,
                     .nat = nat->type,
                     .conn_id = c->res.local_id,
                     .ciphers = hp->cfg.ciphers,
                     .timestamp = kp__hp_wall(hp, now)};
  /* relay_only: the client's addresses stay its own (none are sent). */
  memcpy(h.client_key, c->self.public_key, KP_PUBLIC_KEY_LEN);
  h.invite_id = c->invite_id;
  memcpy(h.invite_proof, c->invite_proof, 32);
  memcpy(h.service, c->service, sizeof(h.service));
  h.want_info = c->want_info;
  h.addr_count = kp__hp_public_addrs(hp, h.addrs);
  for (size_t i = 0; i < hp->lan_count && h.addr_count < KP_HS_MAX_ADDRS && !hp->cfg.relay_only;
       i++)
    h.addrs[h.addr_count++] = hp->lan[i];
  c->res.local_nat = nat->type;

  uint8_t payload[KP_HS_PAYLOAD_MAX], msg[KP_HS_MAX_DATA], e[32], buf[KP_HS_MAX_DATA + 64];
  size_t plen = 0, mlen = 0, len = 0;
  /* A fresh Noise state per attempt: each relay gets a new hello. */
  kp_noise_clear(&c->noise);
  int err = kp_hs_hello_encode(&h, payload, sizeof(payload), &plen);
  if (!err)
    err = kp_noise_init_initiator(&c->noise, &c->self, c->server_key, (const uint8_t *)PROLOGUE,
                                  sizeof(PROLOGUE) - 1);
  kp__hp_random(hp, e, sizeof(e));
  if (!err) err = kp_noise_write_msg1(&c->noise, e, payload, plen, msg, sizeof(msg), &mlen);
  sodium_memzero(e, sizeof(e));
  kp_hs_wire_t w = {.mode = KP_HS_FROM_CLIENT, .data = msg, .len = mlen};
  if (!err) err = kp_hs_wire_encode(&w, buf, sizeof(buf), &len);
  if (!err)
    err = kp_dht_request(hp->dht, relay, KP_DHT_CMD_PEER_HANDSHAKE, c->target, buf, len, NULL,
                         on_handshake_reply, c, now, &c->req);
  if (err) return err;
  c->relay = *relay;
  c->hs_sent = now;
  c->datagrams++;
  return 0;
}

static int start_lookup(kp_hp_connect_t *c, uint64_t now);
static void add_relay(kp_hp_connect_t *c, const kp_addr_t *a, uint64_t now);

static void try_next_relay(kp_hp_connect_t *c, uint64_t now) {
  while (c->relay_next < c->relay_count) {
    if (!send_hello(c, &c->relays[c->relay_next++], now)) return;
  }
  if (!c->lookup_over) return; /* it may find more */
  if (c->later_count) {
    unsigned n = c->later_count;
    c->later_count = 0;
    for (unsigned i = 0; i < n; i++) add_relay(c, &c->later[i], now);
    if (c->req || c->state != C_HANDSHAKE) return;
  }
  if (c->lookup_fallback && c->last_error != KP_EOVERLOADED) {
    /* The remembered relay nodes are gone: find the current ones. */
    c->lookup_fallback = false;
    if (!start_lookup(c, now)) return;
  }
  /* A busy server sheds load first come, first served: a little later,
   * with a fresh hello, the same relay nodes may well get through. */
  if (c->last_error == KP_EOVERLOADED && c->busy_rounds < HP_BUSY_RETRIES) {
    c->relay_next = 0;
    c->retry_at = now + (HP_BUSY_BACKOFF_MS << c->busy_rounds++);
    return;
  }
  finish(c, c->last_error ? c->last_error : KP_EPEERNOTFOUND, now);
}

static void add_relay(kp_hp_connect_t *c, const kp_addr_t *a, uint64_t now) {
  if (c->relay_count == HP_MAX_RELAYS) return;
  for (unsigned i = 0; i < c->relay_count; i++)
    if (kp_addr_eq(&c->relays[i], a)) return;
  c->relays[c->relay_count++] = *a;
  if (c->state == C_HANDSHAKE && !c->req) try_next_relay(c, now);
}

/* ---- Lookup ------------------------------------------------------------------- */

typedef struct record_ctx_s {
  kp_hp_connect_t *c;
  const kp_addr_t *from;
  uint64_t now;
} record_ctx_t;

static bool record_wanted(void *ctx, const uint8_t pk[KP_PUBLIC_KEY_LEN], uint64_t seq) {
  record_ctx_t *rc = ctx;
  (void)seq;
  return !memcmp(pk, rc->c->server_key, KP_PUBLIC_KEY_LEN);
}

static void record_found(void *ctx, const kp_record_t *rec) {
  record_ctx_t *rc = ctx;
  kp_hp_connect_t *c = rc->c;
  if (!c->lookup_done) c->lookup_done = rc->now;
  bool ours = !rec->relay_count;
  for (size_t i = 0; i < rec->relay_count; i++)
    ours = ours || rec->relays[i].family == kp_dht_family(c->hp->dht);
  if (!ours) {
    for (unsigned i = 0; i < c->later_count; i++)
      if (kp_addr_eq(&c->later[i], rc->from)) return;
    if (c->later_count < HP_MAX_LATER) c->later[c->later_count++] = *rc->from;
    return;
  }
  /* The node that answered stores the record: it can relay. */
  add_relay(c, rc->from, rc->now);
  for (size_t i = 0; i < rec->relay_count && c->state == C_HANDSHAKE; i++)
    add_relay(c, &rec->relays[i], rc->now);
}

static void lookup_reply(void *arg, kp_dht_query_t *q, const kp_dht_msg_t *reply,
                         const kp_addr_t *from, uint64_t now) {
  kp_hp_connect_t *c = arg;
  (void)q;
  if (c->state != C_HANDSHAKE || !reply->value || !reply->value_len || reply->error) return;
  record_ctx_t rc = {c, from, now};
  kp_dht_record_list_decode(reply->value, reply->value_len, c->target, record_wanted, record_found,
                            &rc, NULL);
}

static void lookup_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *closest,
                        size_t count, uint64_t now) {
  kp_hp_connect_t *c = arg;
  (void)closest, (void)count;
  c->datagrams += kp_dht_query_stats(q)->requests;
  c->lookup = NULL;
  c->lookup_over = true;
  if (status == KP_ECANCELED) {
    finish(c, KP_ECANCELED, now);
    return;
  }
  if (!c->lookup_done) c->lookup_done = now;
  if (c->state == C_HANDSHAKE && !c->req) try_next_relay(c, now);
}

/* ---- Holepunch rounds ------------------------------------------------------------ */

/* Towards the server's corroborated address; retried every tick while the
 * node's birthday pool is full. */
static void start_birthday(kp_hp_connect_t *c, uint64_t now) {
  c->bday_wanted = kp__hp_birthday_pool_full(c->hp);
  c->bday_retry_at = now + HP_BIRTHDAY_RETRY_MS;
  if (c->bday_wanted) return;
  c->bday = kp__hp_birthday_start(c->hp, c->bday_sockets, &c->server_seen, &c->path, NULL, now);
  if (c->bday) kp__hp_birthday_run(c->hp, c->bday, now);
}

/* The birthday halves aim where no proof can come from first, so only at
 * what the relay node and the server itself agree on (hp_birthday.c). */
static void maybe_birthday(kp_hp_connect_t *c, kp_nat_type_t remote_nat, uint64_t now) {
  bool sockets;
  if (c->bday || c->bday_wanted || !kp__hp_birthday_applies(c->res.local_nat, remote_nat, &sockets))
    return;
  c->res.strategy = KP_PUNCH_BIRTHDAY;
  c->bday_sockets = sockets;
  if (!kp__hp_corroborated(&c->server_seen, c->server_addrs, c->server_addr_count, sockets)) {
    c->hp->stats.claims_refused++;
    return;
  }
  start_birthday(c, now);
}

static void on_round_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                           const kp_addr_t *from, uint64_t now) {
  kp_hp_connect_t *c = arg;
  kp_hs_wire_t w;
  kp_hp_round_t r;
  (void)req;
  c->req = NULL;
  if (status == KP_ECANCELED) {
    finish(c, KP_ECANCELED, now);
    return;
  }
  /* Without an answer the next round tries again; the deadline ends it. */
  if (status || resp->error || !resp->value ||
      kp_hs_wire_decode(resp->value, resp->value_len, &w) || w.mode != KP_HS_REPLY ||
      kp_hp_round_open(w.data, w.len, c->hp_key, false, &r) || r.round != c->round_no)
    return;
  if (c->pairing.sock || c->state != C_PUNCH || !r.punch) return; /* relaying: nothing to punch */
  /* What the relay node says now, what the server says: both hints. */
  c->server_seen = w.has_peer ? w.peer : *from;
  if (r.addr_count) server_reports(c, r.addrs, r.addr_count);
  if (!c->res.strategy || c->res.strategy == KP_PUNCH_OPEN) c->res.strategy = KP_PUNCH_SIMULTANEOUS;
  hint_server(c, now);
  maybe_birthday(c, r.nat, now);
}

static void send_round(kp_hp_connect_t *c, uint64_t now) {
  c->round_no++;
  if (c->req) kp_dht_request_abandon(c->hp->dht, c->req);
  c->req = NULL;
  kp_hp_round_t r = {.round = c->round_no, .nat = c->res.local_nat, .punch = true};
  r.addr_count = kp__hp_public_addrs(c->hp, r.addrs);
  uint64_t rtt = c->hs_done - c->hs_sent;
  r.delay_ms = (uint32_t)(rtt / 2);
  if (c->pairing.sock) {
    r.has_relay = true;
    r.relay = c->pairing.relay;
    r.relay_alt = kp__hp_relay_alt(c->hp, &r.relay);
    r.punch = false;
  }
  /* Until an address is proven (or we pair at a relay), another round in
   * a while: each lets both sides send their hints one more probe. Not
   * before this one's REPLY can be back (the handshake took the same
   * path): a new round abandons the last, and on a slow path no REPLY
   * would ever arrive. */
  uint64_t interval = rtt + rtt / 4;
  if (interval < HP_ROUND_INTERVAL_MS) interval = HP_ROUND_INTERVAL_MS;
  c->next_round_at = c->pairing.sock ? UINT64_MAX : now + interval;
  uint8_t sealed[256], buf[512];
  size_t slen, len;
  if (kp_hp_round_seal(&r, c->hp_key, true, sealed, sizeof(sealed), &slen)) return;
  kp_hs_wire_t w = {.mode = KP_HS_FROM_CLIENT, .data = sealed, .len = slen, .session = c->session};
  if (kp_hs_wire_encode(&w, buf, sizeof(buf), &len)) return;
  if (!kp_dht_request(c->hp->dht, &c->relay, KP_DHT_CMD_PEER_HOLEPUNCH, c->target, buf, len, NULL,
                      on_round_reply, c, now, &c->req))
    c->datagrams++;
}

/* ---- Probes and time ---------------------------------------------------------------- */

static bool is_server_lan(const kp_hp_connect_t *c, const kp_addr_t *a) {
  for (size_t i = 0; i < c->server_lan_count; i++)
    if (kp_addr_eq(a, &c->server_lan[i])) return true;
  return false;
}

bool kp__hp_connect_probe(kp_hp_connect_t *c, void *sock, const kp_addr_t *from, uint64_t conn_id,
                          const uint8_t *data, size_t len, uint64_t now) {
  /* Relayed: the connection's socket belongs to its upgrade (hp_upgrade.c). */
  if (c->state == C_HANDSHAKE || conn_id != c->res.local_id || c->res.strategy == KP_PUNCH_RELAYED)
    return false;
  /* An extra socket counts only if it is this attempt's. */
  if (sock && sock != c->res.socket && !kp__hp_birthday_owns(c->bday, sock)) return false;
  bool ok;
  hp_cand_t *cand = kp__hp_path_input(c->hp, &c->path, sock, from, data, len, now, &ok);
  if (!ok) return false;
  /* Gone to a relay: a late proof must not pull the two sides apart. */
  if (cand && c->state == C_PUNCH && !c->pairing.sock) {
    c->res.path = cand->addr;
    c->res.socket = cand->sock;
    if (is_server_lan(c, &cand->addr)) c->res.strategy = KP_PUNCH_LAN;
    if (cand->sock) c->res.strategy = KP_PUNCH_BIRTHDAY;
    /* The server's probe came before its REPLY: it punched towards us.
     * Behind a random NAT it can only have found the port our own probes
     * opened with its birthday spray, which may beat the REPLY it sent
     * through the relay node. */
    if (c->res.strategy == KP_PUNCH_NONE)
      c->res.strategy =
          c->res.local_nat == KP_NAT_RANDOM ? KP_PUNCH_BIRTHDAY : KP_PUNCH_SIMULTANEOUS;
    finish(c, 0, now);
  }
  return true;
}

/* The punch has not worked: stop it and meet the server at the relay (a
 * new round tells it to; it stops probing too). */
static void fall_back_to_relay(kp_hp_connect_t *c, uint64_t now) {
  kp_hp_t *hp = c->hp;
  c->fallback_at = 0;
  if (!kp__hp_pairing_start(hp, &c->pairing, &c->fallback_relay, &c->relay_pair, 0, now)) return;
  if (c->bday) kp__hp_birthday_end(c->bday, NULL);
  c->bday = NULL;
  c->bday_wanted = false;
  c->res.strategy = KP_PUNCH_RELAYED;
  c->deadline = now + hp->cfg.punch_timeout_ms / 2;
  send_round(c, now);
}

bool kp__hp_connect_relay(kp_hp_connect_t *c, void *sock, const kp_addr_t *from,
                          const uint8_t *data, size_t len, uint64_t now) {
  kp_relay_ctrl_t ctrl;
  if (c->state != C_PUNCH || !c->pairing.sock || c->pairing.sock != sock ||
      !kp_addr_eq(from, &c->pairing.relay) || kp_relay_ctrl_decode(data, len, &ctrl) ||
      sodium_memcmp(ctrl.id, c->relay_pair.id, KP_RELAY_ID_LEN))
    return false;
  c->datagrams += c->pairing.sent;
  if (ctrl.type == KP_RELAY_REFUSED) {
    bool limit = ctrl.arg == KP_RELAY_REFUSE_ATTEMPTS || ctrl.arg == KP_RELAY_REFUSE_IP_LIMIT;
    finish(c, limit ? KP_ERELAYLIMIT : KP_ERELAYFULL, now);
    return true;
  }
  if (ctrl.type != KP_RELAY_PAIRED) return true;
  c->res.path = c->pairing.relay;
  c->res.peer_link = ctrl.link[1];
  c->res.socket = sock;
  kp__hp_pairing_end(c->hp, &c->pairing, true);
  finish(c, 0, now);
  return true;
}

uint64_t kp__hp_connect_deadline(const kp_hp_connect_t *c) {
  uint64_t d = c->deadline, pd = kp__hp_path_deadline(&c->path);
  if (pd < d) d = pd;
  if (c->bday_wanted && c->bday_retry_at < d) d = c->bday_retry_at;
  if (c->retry_at && c->retry_at < d) d = c->retry_at;
  if (c->pairing.sock && c->pairing.next_at < d) d = c->pairing.next_at;
  if (c->state == C_PUNCH && c->fallback_at && !c->pairing.sock && c->fallback_at < d)
    d = c->fallback_at;
  if (c->state == C_PUNCH && c->next_round_at < d) d = c->next_round_at;
  return d;
}

void kp__hp_connect_tick(kp_hp_connect_t *c, uint64_t now) {
  if (c->state == C_LINGER) {
    if (c->deadline <= now) {
      connect_free(c);
    } else {
      kp__hp_path_keep(c->hp, &c->path, now);
    }
    return;
  }

  if (c->deadline <= now) {
    int why = c->state == C_HANDSHAKE ? (c->last_error ? c->last_error : KP_EHANDSHAKE)
              : c->pairing.sock       ? KP_ERELAY
                                      : KP_EPUNCH;
    finish(c, why, now);
    return;
  }
  if (c->state == C_HANDSHAKE && c->retry_at && c->retry_at <= now && !c->req) {
    c->retry_at = 0;
    try_next_relay(c, now);
    return;
  }
  if (c->state != C_PUNCH) return;
  if (c->fallback_at && c->fallback_at <= now && !c->pairing.sock) fall_back_to_relay(c, now);
  if (c->bday_wanted && c->bday_retry_at <= now) start_birthday(c, now);
  kp__hp_pairing_run(c->hp, &c->pairing, now);
  if (c->next_round_at <= now && !c->pairing.sock) send_round(c, now);
}

/* ---- API ------------------------------------------------------------------------------ */

int kp_hp_connect(kp_hp_t *hp, const kp_keypair_t *self,
                  const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *opts,
                  kp_hp_connect_cb cb, void *arg, uint64_t now, kp_hp_connect_t **out) {
  if (out) *out = NULL;
  kp_hp_connect_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return KP_ENOMEM;
  c->hp = hp;
  c->self = *self;
  memcpy(c->server_key, server_key, KP_PUBLIC_KEY_LEN);
  kp_target_from_key(server_key, c->target);
  c->cb = cb;
  c->arg = arg;
  c->started = now;
  c->deadline = now + hp->cfg.handshake_timeout_ms;
  c->next_round_at = UINT64_MAX;
  c->path.best = -1;
  c->path.keep_next = UINT64_MAX;
  c->res.initiator = true;
  c->res.local_id = kp__hp_random_id(hp);
  if (opts) {
    c->seed_count = opts->seed_count < HP_MAX_SEEDS ? opts->seed_count : HP_MAX_SEEDS;
    if (c->seed_count) memcpy(c->seeds, opts->seeds, c->seed_count * sizeof(*c->seeds));
    c->lookup_fallback = opts->relay_count && opts->lookup_fallback;
    c->invite_id = opts->invite_id;
    memcpy(c->invite_proof, opts->invite_proof, 32);
    if (opts->service && strlen(opts->service) <= KP_SERVICE_MAX)
      snprintf(c->service, sizeof(c->service), "%s", opts->service);
    c->want_info = opts->want_info;
  }
  if (!opts || !opts->relay_count) {
    int err = start_lookup(c, now);
    if (err) {
      kp_free(c);
      return err;
    }
  } else {
    c->lookup_over = true;
    c->lookup_done = now;
  }
  c->next = hp->connects;
  hp->connects = c;
  for (size_t i = 0; opts && i < opts->relay_count; i++) add_relay(c, &opts->relays[i], now);
  if (out) *out = c;
  return 0;
}

static int start_lookup(kp_hp_connect_t *c, uint64_t now) {
  /* Narrow: the first node holding the record ends the search (the
   * handshake goes through it), so wide parallelism mostly sends requests
   * whose answers nobody reads. */
  kp_dht_query_opts_t q = {.command = KP_DHT_CMD_LOOKUP,
                           .concurrency = HP_LOOKUP_CONCURRENCY,
                           .on_reply = lookup_reply,
                           .on_done = lookup_done,
                           .arg = c,
                           .seeds = c->seed_count ? c->seeds : NULL,
                           .seed_count = c->seed_count};
  int err = kp_dht_query_start(c->hp->dht, c->target, &q, now, &c->lookup);
  if (!err) c->lookup_over = false;
  return err;
}

void kp_hp_connect_cancel(kp_hp_connect_t *c) {
  connect_free(c);
}

void kp__hp_connects_free(kp_hp_t *hp) {
  while (hp->connects) connect_free(hp->connects);
}
