/* SPDX-License-Identifier: MIT */
/* kp_hp_t: the relay node's role, probes, and what the server and client
 * roles share (holepunch.h). */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_store.h"
#include "holepunch/hp_internal.h"
#include "relay/relay.h"

/* The routed envelope's largest reply value: a sealed welcome, an address
 * and the session. Requests without a token are padded to it. */
#define HP_REPLY_VALUE_MAX 560

void kp_hp_config_defaults(kp_hp_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->handshake_timeout_ms = 10000;
  cfg->punch_timeout_ms = 10000;
  cfg->max_sessions = 1024;
  cfg->max_relay_entries = 512;
  cfg->relay_rate = 20;
  cfg->server_rate = 2000;
  cfg->birthday_sockets = 256;
  cfg->birthday_probes = 2000;
  cfg->birthday_rate = 1000;
  cfg->max_birthdays = 2;
  cfg->ciphers = 1u << KP_CIPHER_CHACHA20_POLY1305;
}

uint64_t kp__hp_wall(kp_hp_t *hp, uint64_t now) {
  return hp->cfg.wall_ms ? hp->cfg.wall_ms(hp->cfg.wall_ctx) : now;
}

void kp__hp_random(kp_hp_t *hp, void *buf, size_t len) {
  kp_rng_fill(kp_dht_rng(hp->dht), buf, len);
}

uint64_t kp__hp_random_id(kp_hp_t *hp) {
  uint64_t id = 0;
  while (!id) id = kp_rng_u64(kp_dht_rng(hp->dht));
  return id;
}

void kp__hp_table_key(const kp_hp_t *hp, const char *label, uint8_t key[KP_RATELIMIT_KEY_LEN]) {
  crypto_generichash(key, KP_RATELIMIT_KEY_LEN, (const uint8_t *)label, strlen(label), hp->secret,
                     sizeof(hp->secret));
}

/* The relay node's budget: relay_rate forwards per second per sender. The
 * table is made on first use: most nodes of a big network never relay. */
static bool forward_ok(kp_hp_t *hp, const kp_addr_t *from, uint64_t now) {
  if (!hp->forward_rate.slots) {
    uint8_t key[KP_RATELIMIT_KEY_LEN];
    kp__hp_table_key(hp, "relay node forwards", key);
    if (kp_ratelimit_init(&hp->forward_rate, HP_FORWARD_SENDERS, hp->cfg.relay_rate,
                          hp->cfg.relay_rate, key))
      return false;
  }
  return kp_ratelimit_take(&hp->forward_rate, from, 1, now, NULL);
}

size_t kp__hp_public_addrs(kp_hp_t *hp, kp_addr_t *out) {
  const kp_dht_nat_t *nat = kp_dht_nat(hp->dht);
  /* relay_only: nothing about where we are (docs/protocol.md, "Who learns what"). */
  if (hp->cfg.relay_only || !nat->has_public) return 0;
  out[0] = nat->public_addr;
  return 1;
}

void kp__hp_reply(kp_hp_t *hp, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w, uint64_t now) {
  uint8_t buf[HP_REPLY_VALUE_MAX + 64];
  size_t len;
  if (kp_hs_wire_encode(w, buf, sizeof(buf), &len)) return;
  kp_dht_reply(hp->dht, rt, buf, len, 0, now);
}

void kp__hp_reply_error(kp_hp_t *hp, const kp_dht_reply_to_t *rt, uint8_t error, uint64_t now) {
  kp_dht_reply(hp->dht, rt, NULL, 0, error, now);
}

void kp__hp_derive_keys(const kp_noise_split_t *split, uint8_t hp_key[32], uint8_t probe_key[32],
                        kp_relay_pair_t *pair) {
  kp_hs_derive(split->path, "kadpunch/holepunch/v2", hp_key);
  kp_hs_derive(split->path, "kadpunch/probe/v2", probe_key);
  kp_relay_pair_derive(split->path, pair);
}

/* ---- Probes ----------------------------------------------------------------------- */

void kp_hp_recv_probe(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now) {
  uint64_t conn_id;
  uint8_t flags;
  bool ok = false;
  if (!kp_probe_peek(data, len, &conn_id, &flags)) {
    /* The connections made first (a handshake that made one only lingers
     * to answer, which the connection's link does as well), then the
     * handshakes running. */
    ok = kp__hp_links_probe(hp, sock, from, data, len, now);
    if (!ok && (flags & KP_PROBE_FROM_CLIENT)) {
      for (unsigned i = 0; i < HP_MAX_SERVERS && !ok; i++)
        if (hp->servers[i])
          ok = kp__hp_server_probe(hp->servers[i], sock, from, conn_id, data, len, now);
    } else if (!ok) {
      for (kp_hp_connect_t *c = hp->connects, *next; c && !ok; c = next) {
        next = kp__hp_connect_next(c);
        ok = kp__hp_connect_probe(c, sock, from, conn_id, data, len, now);
      }
    }
  }
  if (ok) {
    hp->stats.probes_ok++;
  } else {
    hp->stats.probes_bad++;
  }
}

/* ---- The relay node's role ---------------------------------------------------------- */

typedef struct find_announcer_s {
  const uint8_t *target;
  kp_addr_t addr;
  bool found;
} find_announcer_t;

static bool find_announcer_fn(void *ctx, const kp_dht_stored_t *rec) {
  find_announcer_t *f = ctx;
  uint8_t t[KP_ID_LEN];
  kp_target_from_key(rec->public_key, t);
  if (memcmp(t, f->target, KP_ID_LEN)) return true;
  f->addr = *rec->origin;
  f->found = true;
  return false;
}

static hp_relay_entry_t *relay_entry_new(kp_hp_t *hp) {
  /* Allocated on first use: most nodes of a big testnet never relay. */
  if (!hp->relay) hp->relay = kp_calloc(hp->cfg.max_relay_entries, sizeof(*hp->relay));
  if (!hp->relay) return NULL;
  for (unsigned i = 0; i < hp->cfg.max_relay_entries; i++)
    if (!hp->relay[i].hp) return &hp->relay[i];
  return NULL;
}

static void relay_done(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                       const kp_addr_t *from, uint64_t now) {
  hp_relay_entry_t *e = arg;
  kp_hp_t *hp = e->hp;
  kp_hs_wire_t w;
  (void)req;
  e->hp = NULL;
  if (status == KP_ECANCELED) return;
  if (status) {
    kp__hp_reply_error(hp, &e->rt, KP_HS_ERR_UNREACHABLE, now);
  } else if (resp->error) {
    kp__hp_reply_error(hp, &e->rt, resp->error, now);
  } else if (resp->value && !kp_hs_wire_decode(resp->value, resp->value_len, &w) &&
             w.mode == KP_HS_FROM_SERVER) {
    /* The server's answer, with where the server's packets come from. */
    w.mode = KP_HS_REPLY;
    w.has_peer = true;
    w.peer = *from;
    kp__hp_reply(hp, &e->rt, &w, now);
  } else {
    kp__hp_reply_error(hp, &e->rt, KP_HS_ERR_UNREACHABLE, now);
  }
}

static void relay_forward(kp_hp_t *hp, const kp_dht_request_t *req, const kp_dht_reply_to_t *rt,
                          const kp_hs_wire_t *w, uint64_t now) {
  const kp_dht_msg_t *m = req->msg;
  find_announcer_t f = {.target = m->target};
  kp_dht_store_each(kp_dht_swarm_store(hp->swarm), m->target, find_announcer_fn, &f);
  /* A dual-stack node: the announcer may have reached us over the other
   * family only. */
  kp_dht_store_t *other = hp->other ? kp_dht_swarm_other_store(hp->swarm) : NULL;
  if (!f.found && other) kp_dht_store_each(other, m->target, find_announcer_fn, &f);
  if (!f.found) {
    hp->stats.relay_no_peer++;
    kp__hp_reply_error(hp, rt, KP_HS_ERR_NO_PEER, now);
    return;
  }
  /* A dual-stack node forwards to an announcer of the other family (the
   * two share one store) through that family's DHT. */
  kp_dht_t *via = f.addr.family == kp_dht_family(hp->dht)                  ? hp->dht
                  : hp->other && f.addr.family == kp_dht_family(hp->other) ? hp->other
                                                                           : NULL;
  if (!via) {
    hp->stats.relay_no_peer++;
    kp__hp_reply_error(hp, rt, KP_HS_ERR_NO_PEER, now);
    return;
  }
  hp_relay_entry_t *e = forward_ok(hp, &req->from, now) ? relay_entry_new(hp) : NULL;
  if (!e) {
    hp->stats.relay_busy++;
    kp__hp_reply_error(hp, rt, KP_HS_ERR_BUSY, now);
    return;
  }
  kp_hs_wire_t fw = *w;
  fw.mode = KP_HS_FROM_RELAY;
  fw.has_peer = true;
  fw.peer = req->from;
  uint8_t buf[KP_HS_MAX_DATA + 64];
  size_t len;
  if (kp_hs_wire_encode(&fw, buf, sizeof(buf), &len)) return;
  e->hp = hp;
  e->rt = *rt;
  e->via = via;
  if (kp_dht_request(via, &f.addr, m->command, m->target, buf, len, NULL, relay_done, e, now,
                     &e->req)) {
    e->hp = NULL;
    return;
  }
  hp->stats.relay_forwards++;
}

kp_hp_server_t *kp__hp_server_for(kp_hp_t *hp, const uint8_t target[KP_ID_LEN]) {
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++)
    if (hp->servers[i] && !memcmp(hp->servers[i]->target, target, KP_ID_LEN)) return hp->servers[i];
  return NULL;
}

/* A resume round: forwarded like a holepunch round by a relay node, or
 * for one of our connections (found by its id: the round names ours). */
static void on_resume(kp_hp_t *hp, const kp_dht_request_t *req, const kp_dht_reply_to_t *rt,
                      const kp_hs_wire_t *w, uint64_t now) {
  const kp_dht_msg_t *m = req->msg;
  kp_hp_server_t *s = kp__hp_server_for(hp, m->target);
  if (w->mode == KP_HS_FROM_CLIENT && !s) {
    relay_forward(hp, req, rt, w, now);
    return;
  }
  bool direct = w->mode == KP_HS_FROM_CLIENT;
  if (!s || (!direct && (w->mode != KP_HS_FROM_RELAY || !w->has_peer))) return;
  kp_hp_link_t *l = kp__hp_link_for(hp, w->session);
  if (!l) {
    kp__hp_reply_error(hp, rt, KP_HS_ERR_NO_SESSION, now);
    return;
  }
  /* The address a relay node claims for the client is trusted as far as
   * that node stores our record, as for a handshake (hp_server.c). */
  bool trusted = direct || kp_dht_swarm_stored_at(hp->swarm, s->target, &req->from);
  kp__hp_link_resume(l, rt, w, direct ? &req->from : &w->peer, direct, trusted, now);
}

static void on_request(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_hp_t *hp = ctx;
  const kp_dht_msg_t *m = req->msg;
  kp_hs_wire_t w;
  (void)dht;
  if (!m->has_target || !m->value || kp_hs_wire_decode(m->value, m->value_len, &w)) return;
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  if (m->command == KP_DHT_CMD_PEER_RESUME) {
    on_resume(hp, req, &rt, &w, now);
    return;
  }
  bool handshake = m->command == KP_DHT_CMD_PEER_HANDSHAKE;
  kp_hp_server_t *s = kp__hp_server_for(hp, m->target);
  /* The server is told who sent it (what admission charges) and where
   * that sender says the client is (a claim, checked later). */
  if (w.mode == KP_HS_FROM_CLIENT) {
    if (!s) {
      relay_forward(hp, req, &rt, &w, now);
    } else if (handshake) {
      kp__hp_server_handshake(s, &rt, &w, &req->from, &req->from, true, now);
    } else {
      kp__hp_server_round(s, &rt, &w, &req->from, &req->from, true, now);
    }
  } else if (w.mode == KP_HS_FROM_RELAY && w.has_peer) {
    if (!s) {
      kp__hp_reply_error(hp, &rt, KP_HS_ERR_NO_PEER, now);
    } else if (handshake) {
      kp__hp_server_handshake(s, &rt, &w, &req->from, &w.peer, false, now);
    } else {
      kp__hp_server_round(s, &rt, &w, &req->from, &w.peer, false, now);
    }
  }
}

/* ---- Lifetime ----------------------------------------------------------------------- */

static void hp_tick(void *ctx, uint64_t now) {
  kp_hp_t *hp = ctx;
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++)
    if (hp->servers[i]) kp__hp_server_tick(hp->servers[i], now);
  kp_hp_connect_t *c = hp->connects;
  while (c) {
    kp_hp_connect_t *next = kp__hp_connect_next(c);
    kp__hp_connect_tick(c, now);
    c = next;
  }
  for (unsigned i = 0; hp->bday && i < HP_MAX_BIRTHDAYS; i++)
    if (hp->bday[i].hp) kp__hp_birthday_run(hp, &hp->bday[i], now);
  kp__hp_links_tick(hp, now);
}

static uint64_t hp_deadline(void *ctx) {
  kp_hp_t *hp = ctx;
  uint64_t d = UINT64_MAX;
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++) {
    if (!hp->servers[i]) continue;
    uint64_t sd = kp__hp_server_deadline(hp->servers[i]);
    if (sd < d) d = sd;
  }
  for (kp_hp_connect_t *c = hp->connects; c; c = kp__hp_connect_next(c)) {
    uint64_t cd = kp__hp_connect_deadline(c);
    if (cd < d) d = cd;
  }
  for (unsigned i = 0; hp->bday && i < HP_MAX_BIRTHDAYS; i++)
    if (hp->bday[i].hp && hp->bday[i].next_at < d) d = hp->bday[i].next_at;
  uint64_t ld = kp__hp_links_deadline(hp);
  return ld < d ? ld : d;
}

int kp_hp_new(kp_dht_t *dht, kp_dht_swarm_t *swarm, const kp_hp_config_t *cfg, const kp_hp_io_t *io,
              kp_hp_t **out) {
  *out = NULL;
  kp_hp_t *hp = kp_calloc(1, sizeof(*hp));
  if (!hp) return KP_ENOMEM;
  hp->dht = dht;
  hp->swarm = swarm;
  if (cfg) {
    hp->cfg = *cfg;
  } else {
    kp_hp_config_defaults(&hp->cfg);
  }
  if (!hp->cfg.max_relay_entries || !hp->cfg.max_sessions ||
      hp->cfg.max_birthdays > HP_MAX_BIRTHDAYS) {

    kp_free(hp);
    return KP_ECONFIG;
  }
  hp->io = *io;
  if (!hp->io.sockets_ctx) hp->io.sockets_ctx = hp->io.ctx;
  kp__hp_random(hp, hp->secret, sizeof(hp->secret));
  int err = kp_dht_register(dht, KP_DHT_CMD_PEER_HANDSHAKE, on_request, hp, HP_REPLY_VALUE_MAX);
  if (!err)
    err = kp_dht_register(dht, KP_DHT_CMD_PEER_HOLEPUNCH, on_request, hp, HP_REPLY_VALUE_MAX);
  if (!err) err = kp_dht_register(dht, KP_DHT_CMD_PEER_RESUME, on_request, hp, HP_REPLY_VALUE_MAX);
  kp_dht_ticker_t ticker = {hp_tick, hp_deadline, hp};
  if (!err) err = kp_dht_add_ticker(dht, &ticker);
  if (err) {
    kp_dht_unregister(dht, KP_DHT_CMD_PEER_HANDSHAKE);
    kp_dht_unregister(dht, KP_DHT_CMD_PEER_HOLEPUNCH);
    kp_dht_unregister(dht, KP_DHT_CMD_PEER_RESUME);
    kp_free(hp->relay);
    kp_free(hp);
    return err;
  }
  *out = hp;
  return 0;
}

void kp_hp_free(kp_hp_t *hp) {
  if (!hp) return;
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++)
    if (hp->servers[i]) kp_hp_server_close(hp->servers[i]);
  kp__hp_connects_free(hp);
  kp__hp_links_free(hp);
  kp__hp_birthdays_free(hp);
  for (unsigned i = 0; hp->relay && i < hp->cfg.max_relay_entries; i++)
    if (hp->relay[i].hp) kp_dht_request_abandon(hp->relay[i].via, hp->relay[i].req);
  kp_dht_unregister(hp->dht, KP_DHT_CMD_PEER_HANDSHAKE);
  kp_dht_unregister(hp->dht, KP_DHT_CMD_PEER_HOLEPUNCH);
  kp_dht_unregister(hp->dht, KP_DHT_CMD_PEER_RESUME);
  kp_dht_remove_ticker(hp->dht, hp);

  kp_free(hp->relay);
  kp_ratelimit_destroy(&hp->forward_rate);
  kp_ratelimit_destroy(&hp->bday_targets);
  kp_free(hp->bday);
  sodium_memzero(hp->secret, sizeof(hp->secret));
  kp_free(hp);
}

void kp_hp_set_other_family(kp_hp_t *hp, kp_dht_t *other) {
  if (hp->other == other) return;
  /* Forwards still out on the DHT going away end here, unanswered (the
   * client tries its next relay node). */
  for (unsigned i = 0; hp->other && hp->relay && i < hp->cfg.max_relay_entries; i++) {
    hp_relay_entry_t *e = &hp->relay[i];
    if (!e->hp || e->via != hp->other) continue;
    kp_dht_request_abandon(e->via, e->req);
    e->hp = NULL;
  }
  hp->other = other;
}

kp_addr_t kp__hp_relay_alt(const kp_hp_t *hp, const kp_addr_t *relay) {
  for (size_t i = 0; i < hp->relay_count; i++)
    if (kp_addr_eq(&hp->relays[i], relay)) return hp->relay_alts[i];
  return (kp_addr_t){0};
}

const kp_addr_t *kp__hp_relay_ours(const kp_hp_t *hp, const kp_hp_round_t *r) {
  int family = kp_dht_family(hp->dht);
  if (r->relay.family == family) return &r->relay;
  if (r->relay_alt.family == family) return &r->relay_alt;
  /* One of our relays at its other address (the peer took it from our
   * welcome). */
  for (size_t i = 0; i < hp->relay_count; i++)
    if (kp_addr_eq(&hp->relay_alts[i], &r->relay)) return &hp->relays[i];
  return &r->relay;
}

void kp_hp_set_relay_alts(kp_hp_t *hp, const kp_addr_t *alts, size_t count) {
  memset(hp->relay_alts, 0, sizeof(hp->relay_alts));
  if (count > hp->relay_count) count = hp->relay_count;
  memcpy(hp->relay_alts, alts, count * sizeof(*alts));
}

void kp_hp_set_relays(kp_hp_t *hp, const kp_addr_t *addrs, size_t count) {
  memset(hp->relay_alts, 0, sizeof(hp->relay_alts));
  if (count > HP_MAX_RELAY_CANDIDATES) count = HP_MAX_RELAY_CANDIDATES;
  memcpy(hp->relays, addrs, count * sizeof(*addrs));
  hp->relay_count = count;
}

/* ---- Pairing at a blind relay ------------------------------------------------- */

static void send_pair(kp_hp_t *hp, hp_pairing_t *p) {
  kp_relay_ctrl_t c;
  uint8_t msg[KP_RELAY_CTRL_LEN];
  kp_relay_pair_request(&p->pair, p->role, &c);
  kp_relay_ctrl_encode(&c, msg);
  hp->io.send_from(hp->io.sockets_ctx, p->sock, &p->relay, msg, sizeof(msg));
  p->sent++;
}

bool kp__hp_pairing_start(kp_hp_t *hp, hp_pairing_t *p, const kp_addr_t *relay,
                          const kp_relay_pair_t *pair, uint8_t role, uint64_t now) {
  if (!hp->io.open) return false;
  p->sock = hp->io.open(hp->io.sockets_ctx);
  if (!p->sock) return false;
  p->relay = *relay;
  p->pair = *pair;
  p->role = role;
  send_pair(hp, p);
  p->next_at = now + HP_PAIR_INTERVAL_MS;
  return true;
}

void kp__hp_pairing_run(kp_hp_t *hp, hp_pairing_t *p, uint64_t now) {
  if (!p->sock || p->next_at > now) return;
  send_pair(hp, p);
  p->next_at = now + HP_PAIR_INTERVAL_MS;
}

void kp__hp_pairing_end(kp_hp_t *hp, hp_pairing_t *p, bool keep) {
  if (p->sock && !keep) hp->io.close(hp->io.sockets_ctx, p->sock);
  p->sock = NULL;
  p->next_at = UINT64_MAX;
  sodium_memzero(&p->pair, sizeof(p->pair));
}

void kp_hp_recv_relay(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now) {
  bool ok = false;
  for (unsigned i = 0; i < HP_MAX_SERVERS && !ok; i++)
    if (hp->servers[i]) ok = kp__hp_server_relay(hp->servers[i], sock, from, data, len, now);
  /* A refusal frees the attempt: take the next one first. */
  for (kp_hp_connect_t *c = hp->connects, *next; c && !ok; c = next) {
    next = kp__hp_connect_next(c);
    ok = kp__hp_connect_relay(c, sock, from, data, len, now);
  }
  if (!ok) kp__hp_links_relay(hp, sock, from, data, len, now);
}

void kp_hp_socket_closed(kp_hp_t *hp, const void *sock) {
  if (sock && sock == hp->own_sock) hp->own_sock = NULL;
  kp__hp_links_forget_sock(hp, sock);
  for (kp_hp_connect_t *c = hp->connects; c; c = kp__hp_connect_next(c))
    kp__hp_connect_forget_sock(c, sock);
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++)
    if (hp->servers[i]) kp__hp_server_forget_sock(hp->servers[i], sock);
}

void kp_hp_set_lan(kp_hp_t *hp, const kp_addr_t *addrs, size_t count) {
  if (count > HP_MAX_LAN) count = HP_MAX_LAN;
  memcpy(hp->lan, addrs, count * sizeof(*addrs));
  hp->lan_count = count;
}

void kp_hp_stats(const kp_hp_t *hp, kp_hp_stats_t *out) {
  *out = hp->stats;
}
