/* The client's role: look the key up, shake hands through one of the
 * server's relay nodes, run a holepunch round, probe (holepunch.h).
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
  kp_dht_req_t *req; /* the handshake or round in flight */
  kp_addr_t relay;   /* where req went */
  int last_error;    /* the most telling relay error so far */
  unsigned busy_rounds;
  uint64_t retry_at; /* every relay said BUSY: all again at this time */

  kp_noise_t noise;
  uint64_t started, hs_sent, hs_done, lookup_done;
  uint64_t deadline;
  uint64_t session;
  uint8_t server_token[32]; /* from the welcome: echoing it proves our address */
  uint8_t hp_key[32], probe_key[32];
  kp_addr_t server_seen; /* the server as the relay saw it */
  kp_addr_t server_lan[KP_HS_MAX_ADDRS];
  size_t server_lan_count;
  hp_probes_t probes;     /* verified: the server's address */
  hp_probes_t lan_probes; /* unverified: LAN, or an open server */
  hp_bday_t *bday;
  bool bday_wanted, bday_sockets; /* waiting for a slot in the pool */
  uint64_t bday_retry_at;
  hp_pairing_t pairing; /* no direct path: at a blind relay */
  uint8_t relay_token[32];
  uint64_t invite_id; /* the asks (kp_hp_connect_opts_t) */
  uint8_t invite_proof[32];
  char service[KP_SERVICE_MAX + 1];
  bool want_info;
  kp_addr_t fallback_relay; /* where to go if the punch has not worked by fallback_at */
  uint64_t fallback_at;     /* 0: no relay known */
  uint32_t round_no;
  unsigned answers;
  unsigned datagrams;
  kp_hp_result_t res;
};

kp_hp_connect_t *kp__hp_connect_next(kp_hp_connect_t *c) {
  return c->next;
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
  r->datagrams = c->datagrams + lookup_requests(c) + c->probes.sent + c->lan_probes.sent +
                 (c->bday ? c->bday->sent : 0);
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
    c->state = C_LINGER;
    c->deadline = now + HP_LINGER_MS;
    c->probes.next_at = c->lan_probes.next_at = UINT64_MAX;
    if (r->socket && r->strategy == KP_PUNCH_BIRTHDAY) {
      /* A birthday win: our answer may be lost, and the server's spray will
       * rarely hit this one port again, so knock from it while lingering. */
      kp__hp_probes_start(&c->probes, &r->path, 1, true, now + 1);
      c->probes.sock = r->socket;
    }
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
    default: return KP_EOVERLOADED;
  }
}

static bool same_network(const kp_hp_connect_t *c) {
  const kp_dht_nat_t *nat = kp_dht_nat(c->hp->dht);
  return nat->has_public && kp_addr_same_ip(&nat->public_addr, &c->server_seen);
}

static void send_round(kp_hp_connect_t *c, uint64_t now);

/* The welcome is in: pick the strategy. */
static void start_punch(kp_hp_connect_t *c, const kp_hs_welcome_t *wl, uint64_t now) {
  kp_hp_t *hp = c->hp;
  kp_hp_result_t *r = &c->res;
  c->state = C_PUNCH;
  c->deadline = now + hp->cfg.punch_timeout_ms;
  c->session = wl->session;
  memcpy(c->server_token, wl->token, 32);
  r->remote_nat = wl->nat;
  /* The lookup's replies were more samples: a fresh node knows more now
   * than when it said hello. */
  kp_nat_type_t nat = kp_dht_nat(hp->dht)->type;
  if (nat != KP_NAT_UNKNOWN) r->local_nat = nat;
  r->remote_id = wl->conn_id;
  r->cipher = wl->cipher;
  for (size_t i = 0; i < wl->addr_count; i++)
    if (kp_addr_is_private(&wl->addrs[i]) || kp_addr_is_loopback(&wl->addrs[i]))
      c->server_lan[c->server_lan_count++] = wl->addrs[i];
  bool lan = c->server_lan_count && same_network(c);
  if ((r->local_nat == KP_NAT_RANDOM && wl->nat == KP_NAT_RANDOM && !lan) || hp->cfg.relay_only ||
      wl->relay_only) {
    /* No direct path: a blind relay, ours first, else one the server named;
     * the server's if it can be reached nowhere else. */
    const kp_addr_t *relay = wl->relay_only    ? &wl->relays[0]
                             : hp->relay_count ? &hp->relays[0]
                             : wl->relay_count ? &wl->relays[0]
                                               : NULL;
    if (!relay || !kp__hp_pairing_start(hp, &c->pairing, relay, c->relay_token, 0, now)) {
      finish(c, hp->cfg.relay_only || wl->relay_only ? KP_ERELAY : KP_ENODIRECT, now);
      return;
    }
    r->strategy = KP_PUNCH_RELAYED;
  } else {
    /* A punch that has not worked by then goes to a relay, when one is
     * known, and goes on from there in the background (hp_upgrade.c): a
     * user waits at most this long for a path. Most punches take a round
     * trip; the birthday strategy's p99 is 1.4 s. */
    const kp_addr_t *relay = hp->relay_count   ? &hp->relays[0]
                             : wl->relay_count ? &wl->relays[0]
                                               : NULL;
    bool sockets;
    uint64_t wait = kp__hp_birthday_applies(r->local_nat, wl->nat, &sockets)
                        ? HP_RELAY_AFTER_BDAY_MS
                        : HP_RELAY_AFTER_MS;
    if (wait > hp->cfg.punch_timeout_ms / 2) wait = hp->cfg.punch_timeout_ms / 2;
    if (relay) {
      c->fallback_relay = *relay;
      c->fallback_at = now + wait;
    }
  }
  if (r->strategy == KP_PUNCH_RELAYED) {
    /* nothing to probe */
  } else if (lan) {
    /* Behind one public IP: the LAN first, before anything else. */
    r->strategy = KP_PUNCH_LAN;
    kp__hp_probes_start(&c->lan_probes, c->server_lan, c->server_lan_count, false, now);
  } else if (wl->nat == KP_NAT_OPEN) {
    /* Unsolicited packets reach the server: just knock. */
    r->strategy = KP_PUNCH_OPEN;
    kp__hp_probes_start(&c->lan_probes, &c->server_seen, 1, false, now);
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
  kp__hp_derive_keys(&split, c->hp_key, c->probe_key);
  memcpy(c->res.probe_key, c->probe_key, 32);
  kp_relay_token(split.path, c->relay_token);
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
  if (status == UV_ECANCELED) {
    finish(c, UV_ECANCELED, now);
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
  memcpy(h.client_key, c->self.public_key, KP_PUBLIC_KEY_LEN);
  h.invite_id = c->invite_id;
  memcpy(h.invite_proof, c->invite_proof, 32);
  memcpy(h.service, c->service, sizeof(h.service));
  h.want_info = c->want_info;
  if (nat->has_public) h.addrs[h.addr_count++] = nat->public_addr;
  for (size_t i = 0; i < hp->lan_count && h.addr_count < KP_HS_MAX_ADDRS; i++)
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

static void try_next_relay(kp_hp_connect_t *c, uint64_t now) {
  while (c->relay_next < c->relay_count) {
    if (!send_hello(c, &c->relays[c->relay_next++], now)) return;
  }
  if (!c->lookup_over) return; /* it may find more */
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
  if (status == UV_ECANCELED) {
    finish(c, UV_ECANCELED, now);
    return;
  }
  if (!c->lookup_done) c->lookup_done = now;
  if (c->state == C_HANDSHAKE && !c->req) try_next_relay(c, now);
}

/* ---- Holepunch round ------------------------------------------------------------ */

/* Towards the server's verified address; retried every tick while the
 * node's birthday pool is full. */
static void start_birthday(kp_hp_connect_t *c, uint64_t now) {
  c->bday = kp__hp_birthday_start(c->hp, c->bday_sockets, &c->probes.to[0], c->res.remote_id,
                                  KP_PROBE_FROM_CLIENT, c->probe_key, now);
  if (!c->bday) {
    c->bday_retry_at = now + HP_BIRTHDAY_RETRY_MS;
    return;
  }
  c->bday_wanted = false;
  kp__hp_birthday_run(c->hp, c->bday, now);
}

static void on_round_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                           const kp_addr_t *from, uint64_t now) {
  kp_hp_connect_t *c = arg;
  kp_hs_wire_t w;
  kp_hp_round_t r;
  (void)req, (void)from;
  c->req = NULL;
  if (status == UV_ECANCELED) {
    finish(c, UV_ECANCELED, now);
    return;
  }
  /* Without the round, only the unverified probes run; the deadline ends it. */
  if (status || resp->error || !resp->value ||
      kp_hs_wire_decode(resp->value, resp->value_len, &w) || w.mode != KP_HS_REPLY ||
      kp_hp_round_open(w.data, w.len, c->hp_key, false, &r) || r.round != c->round_no)
    return;
  kp_addr_t seen = w.has_peer ? w.peer : c->relay;
  uint8_t expect[32];
  kp_hs_token(c->hp->secret, c->session, &seen, expect);
  if (!r.has_remote_token || sodium_memcmp(expect, r.remote_token, 32) || !r.punch) return;
  if (c->pairing.sock) return; /* relaying: nothing to punch */
  if (!c->res.strategy || c->res.strategy == KP_PUNCH_OPEN) c->res.strategy = KP_PUNCH_SIMULTANEOUS;
  kp__hp_probes_start(&c->probes, &seen, 1, true, now);
  kp__hp_probes_run(c->hp, &c->probes, c->res.remote_id, KP_PROBE_FROM_CLIENT, c->probe_key, now);
  if (!c->bday && kp__hp_birthday_applies(c->res.local_nat, r.nat, &c->bday_sockets)) {
    c->res.strategy = KP_PUNCH_BIRTHDAY;
    c->bday_wanted = true;
    start_birthday(c, now);
  }
}

static void send_round(kp_hp_connect_t *c, uint64_t now) {
  c->round_no++;
  if (c->req) kp_dht_request_abandon(c->hp->dht, c->req);
  c->req = NULL;
  kp_hp_round_t r = {.round = c->round_no, .nat = c->res.local_nat, .punch = true};

  r.has_token = true;
  kp_hs_token(c->hp->secret, c->session, &c->server_seen, r.token);
  /* The server's token from the welcome, bound to where the relay saw us. */
  r.has_remote_token = true;
  memcpy(r.remote_token, c->server_token, 32);
  uint64_t rtt = c->hs_done - c->hs_sent;
  r.delay_ms = (uint32_t)(rtt / 2);
  if (c->pairing.sock) {
    r.has_relay = true;
    r.relay = c->pairing.relay;
    r.punch = false;
  }
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

bool kp__hp_connect_probe(kp_hp_connect_t *c, void *sock, const kp_addr_t *from,
                          const kp_probe_t *p, const uint8_t *data, size_t len, uint64_t now) {
  /* Relayed: the connection's socket belongs to its upgrade (hp_upgrade.c). */
  if (c->state == C_HANDSHAKE || p->conn_id != c->res.local_id ||
      c->res.strategy == KP_PUNCH_RELAYED)
    return false;
  if (!kp_probe_verify(data, len, c->probe_key)) return false;
  /* An extra socket counts only if it is this attempt's. */
  if (sock && sock != c->res.socket && !kp__hp_birthday_owns(c->bday, sock)) return false;
  if (!(p->flags & KP_PROBE_ANSWER) && c->answers < HP_MAX_ANSWERS) {
    c->answers++;
    kp__hp_send_probe(c->hp, sock, from, c->res.remote_id, KP_PROBE_FROM_CLIENT | KP_PROBE_ANSWER,
                      p->seq, c->probe_key);
  }
  /* Gone to a relay: a late probe must not pull the two sides apart. */
  if (c->state == C_PUNCH && !c->pairing.sock) {
    c->res.path = *from;
    c->res.socket = sock;
    bool on_lan = false;
    for (size_t i = 0; i < c->server_lan_count; i++) on_lan |= kp_addr_eq(from, &c->server_lan[i]);
    if (on_lan) c->res.strategy = KP_PUNCH_LAN;
    /* The server's probe came first: it punched towards us. */
    if (c->res.strategy == KP_PUNCH_NONE) c->res.strategy = KP_PUNCH_SIMULTANEOUS;

    finish(c, 0, now);
  }
  return true;
}

/* The punch has not worked: stop it and meet the server at the relay (a
 * new round tells it to; it stops probing too). */
static void fall_back_to_relay(kp_hp_connect_t *c, uint64_t now) {
  kp_hp_t *hp = c->hp;
  c->fallback_at = 0;
  if (!kp__hp_pairing_start(hp, &c->pairing, &c->fallback_relay, c->relay_token, 0, now)) return;
  if (c->bday) kp__hp_birthday_end(c->bday, NULL);
  c->bday = NULL;
  c->bday_wanted = false;
  c->datagrams += c->probes.sent + c->lan_probes.sent;
  c->probes.sent = c->lan_probes.sent = 0;
  c->probes.next_at = c->lan_probes.next_at = UINT64_MAX;
  c->res.strategy = KP_PUNCH_RELAYED;
  c->deadline = now + hp->cfg.punch_timeout_ms / 2;
  send_round(c, now);
}

bool kp__hp_connect_relay(kp_hp_connect_t *c, void *sock, const kp_addr_t *from,
                          const uint8_t *data, size_t len, uint64_t now) {
  kp_relay_ctrl_t ctrl;
  if (c->state != C_PUNCH || !c->pairing.sock || c->pairing.sock != sock ||
      !kp_addr_eq(from, &c->pairing.relay) || kp_relay_ctrl_decode(data, len, &ctrl) ||
      sodium_memcmp(ctrl.token, c->relay_token, 32))
    return false;
  c->datagrams += c->pairing.sent;
  if (ctrl.type == KP_RELAY_REFUSED) {
    finish(c, ctrl.arg == KP_RELAY_REFUSE_ATTEMPTS ? KP_ERELAYLIMIT : KP_ERELAYFULL, now);
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
  uint64_t d = c->deadline;

  if (c->probes.next_at < d) d = c->probes.next_at;
  if (c->lan_probes.next_at < d) d = c->lan_probes.next_at;
  if (c->bday_wanted && c->bday_retry_at < d) d = c->bday_retry_at;
  if (c->retry_at && c->retry_at < d) d = c->retry_at;
  if (c->pairing.sock && c->pairing.next_at < d) d = c->pairing.next_at;
  if (c->state == C_PUNCH && c->fallback_at && !c->pairing.sock && c->fallback_at < d)
    d = c->fallback_at;
  return d;
}

void kp__hp_connect_tick(kp_hp_connect_t *c, uint64_t now) {
  if (c->state == C_LINGER) {
    if (c->deadline <= now) {
      connect_free(c);
    } else {
      kp__hp_probes_run(c->hp, &c->probes, c->res.remote_id, KP_PROBE_FROM_CLIENT, c->probe_key,
                        now);
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
  kp__hp_probes_run(c->hp, &c->lan_probes, c->res.remote_id, KP_PROBE_FROM_CLIENT, c->probe_key,
                    now);
  kp__hp_probes_run(c->hp, &c->probes, c->res.remote_id, KP_PROBE_FROM_CLIENT, c->probe_key, now);
}

/* ---- API ------------------------------------------------------------------------------ */

int kp_hp_connect(kp_hp_t *hp, const kp_keypair_t *self,
                  const uint8_t server_key[KP_PUBLIC_KEY_LEN], const kp_hp_connect_opts_t *opts,
                  kp_hp_connect_cb cb, void *arg, uint64_t now, kp_hp_connect_t **out) {
  if (out) *out = NULL;
  kp_hp_connect_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return UV_ENOMEM;
  c->hp = hp;
  c->self = *self;
  memcpy(c->server_key, server_key, KP_PUBLIC_KEY_LEN);
  kp_target_from_key(server_key, c->target);
  c->cb = cb;
  c->arg = arg;
  c->started = now;
  c->deadline = now + hp->cfg.handshake_timeout_ms;
  c->probes.next_at = c->lan_probes.next_at = UINT64_MAX;
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
