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
  cfg->server_rate = 5000;
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

bool kp__hp_rate_ok(kp_hp_t *hp, const kp_addr_t *from, uint64_t now) {
  uint8_t b[KP_ADDR_COMPACT_MAX], h[8];
  size_t n = kp_addr_encode_compact(from, b);
  /* The IP only (IPv6: its /64), keyed so nobody can aim collisions. */
  size_t ip_len = from->family == KP_AF_INET6 ? 8 : n - 2;
  crypto_generichash(h, sizeof(h), b, ip_len, hp->secret, sizeof(hp->secret));
  if (!hp->rate && !(hp->rate = kp_calloc(HP_RATE_SLOTS, sizeof(*hp->rate)))) return false;
  hp_rate_slot_t *slot = &hp->rate[(h[0] | h[1] << 8) % HP_RATE_SLOTS];
  uint64_t second = now / 1000;
  if (slot->second != second) slot->second = second, slot->count = 0;
  return ++slot->count <= hp->cfg.relay_rate;
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

void kp__hp_derive_keys(const kp_noise_split_t *split, uint8_t hp_key[32], uint8_t probe_key[32]) {
  kp_hs_derive(split->hash, "kadpunch/holepunch/v1", hp_key);
  kp_hs_derive(split->hash, "kadpunch/probe/v1", probe_key);
}

/* ---- Probes ----------------------------------------------------------------------- */

/* Offsets (ms) from the start of a verified schedule: dense at first, when
 * the other side fires too, then sparse, so a late NAT mapping still
 * catches one. 17 probes per address over 9 s. */
static const uint16_t schedule_ms[] = {0,   10,   30,   60,   100,  150,  250,  400, 600,
                                       900, 1300, 1800, 2500, 3500, 5000, 7000, 9000};
#define SCHEDULE_LEN (sizeof(schedule_ms) / sizeof(schedule_ms[0]))

void kp__hp_probes_start(hp_probes_t *p, const kp_addr_t *to, size_t count, bool verified,
                         uint64_t at) {
  if (count > HP_MAX_LAN + 1) count = HP_MAX_LAN + 1;
  memcpy(p->to, to, count * sizeof(*to));
  p->count = (unsigned)count;
  p->verified = verified;
  p->step = 0;
  p->start = at;
  p->next_at = count ? at : UINT64_MAX;
  p->sock = NULL;
}

void kp__hp_send_probe(kp_hp_t *hp, void *sock, const kp_addr_t *to, uint64_t conn_id,
                       uint8_t flags, uint32_t seq, const uint8_t key[32]) {
  uint8_t pkt[KP_PROBE_LEN];
  kp_probe_t p = {.flags = flags, .conn_id = conn_id, .seq = seq};
  kp_probe_encode(&p, key, pkt);
  if (sock) {
    hp->io.send_from(hp->io.ctx, sock, to, pkt, sizeof(pkt));
  } else {
    hp->io.send(hp->io.ctx, to, pkt, sizeof(pkt));
  }
  hp->stats.probes_sent++;
}

uint64_t kp__hp_probes_run(kp_hp_t *hp, hp_probes_t *p, uint64_t conn_id, uint8_t flags,
                           const uint8_t key[32], uint64_t now) {
  /* Unproven addresses get only the first few steps. */
  unsigned limit = p->verified ? SCHEDULE_LEN : HP_UNVERIFIED_PROBES;
  while (p->next_at <= now) {
    for (unsigned i = 0; i < p->count; i++)
      kp__hp_send_probe(hp, p->sock, &p->to[i], conn_id, flags, p->sent++, key);
    p->step++;
    p->next_at = p->step < limit ? p->start + schedule_ms[p->step] : UINT64_MAX;
  }
  return p->next_at;
}

void kp_hp_recv_probe(kp_hp_t *hp, void *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now) {
  kp_probe_t p;
  bool ok = false;
  kp_hp_upgrade_t *u = sock ? kp__hp_upgrade_on(hp, sock) : NULL;
  if (!kp_probe_peek(data, len, &p)) {
    if (u) {
      /* A relayed connection's socket: its punch, nobody else's. */
      ok = kp__hp_upgrade_probe(u, from, &p, data, len, now);
    } else if (p.flags & KP_PROBE_FROM_CLIENT) {
      for (unsigned i = 0; i < HP_MAX_SERVERS && !ok; i++)
        if (hp->servers[i])
          ok = kp__hp_server_probe(hp->servers[i], sock, from, &p, data, len, now);
    } else {
      for (kp_hp_connect_t *c = hp->connects, *next; c && !ok; c = next) {
        next = kp__hp_connect_next(c);
        ok = kp__hp_connect_probe(c, sock, from, &p, data, len, now);
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
  if (status == UV_ECANCELED) return;
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
  if (!f.found) {
    hp->stats.relay_no_peer++;
    kp__hp_reply_error(hp, rt, KP_HS_ERR_NO_PEER, now);
    return;
  }
  hp_relay_entry_t *e = kp__hp_rate_ok(hp, &req->from, now) ? relay_entry_new(hp) : NULL;
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
  if (kp_dht_request(hp->dht, &f.addr, m->command, m->target, buf, len, NULL, relay_done, e, now,
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

static void on_request(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_hp_t *hp = ctx;
  const kp_dht_msg_t *m = req->msg;
  kp_hs_wire_t w;
  (void)dht;
  if (!m->has_target || !m->value || kp_hs_wire_decode(m->value, m->value_len, &w)) return;
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  bool handshake = m->command == KP_DHT_CMD_PEER_HANDSHAKE;
  kp_hp_server_t *s = kp__hp_server_for(hp, m->target);
  if (w.mode == KP_HS_FROM_CLIENT) {
    if (!s) {
      relay_forward(hp, req, &rt, &w, now);
    } else if (handshake) {
      /* The server counts hellos per client IP itself. */
      kp__hp_server_handshake(s, &rt, &w, &req->from, true, now);
    } else {
      kp__hp_server_round(s, &rt, &w, &req->from, true, now);
    }
  } else if (w.mode == KP_HS_FROM_RELAY && w.has_peer) {
    if (!s) {
      kp__hp_reply_error(hp, &rt, KP_HS_ERR_NO_PEER, now);
    } else if (handshake) {
      kp__hp_server_handshake(s, &rt, &w, &w.peer, false, now);
    } else {
      kp__hp_server_round(s, &rt, &w, &w.peer, false, now);
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
  kp__hp_upgrades_tick(hp, now);
}

static uint64_t hp_deadline(void *ctx) {
  kp_hp_t *hp = ctx;
  uint64_t d = UINT64_MAX;
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++) {
    kp_hp_server_t *s = hp->servers[i];
    if (!s) continue;
    for (unsigned j = 0; j < hp->cfg.max_sessions; j++) {
      hp_session_t *se = &s->sessions[j];
      if (!se->server) continue;
      if (se->expires < d) d = se->expires;
      if (se->probes.next_at < d) d = se->probes.next_at;
      if (se->bday_wanted && se->bday_retry_at < d) d = se->bday_retry_at;
      if (se->pairing.sock && se->pairing.next_at < d) d = se->pairing.next_at;
    }
  }
  for (kp_hp_connect_t *c = hp->connects; c; c = kp__hp_connect_next(c)) {
    uint64_t cd = kp__hp_connect_deadline(c);
    if (cd < d) d = cd;
  }
  for (unsigned i = 0; hp->bday && i < HP_MAX_BIRTHDAYS; i++)
    if (hp->bday[i].hp && hp->bday[i].next_at < d) d = hp->bday[i].next_at;
  uint64_t ud = kp__hp_upgrades_deadline(hp);
  return ud < d ? ud : d;
}

int kp_hp_new(kp_dht_t *dht, kp_dht_swarm_t *swarm, const kp_hp_config_t *cfg, const kp_hp_io_t *io,
              kp_hp_t **out) {
  *out = NULL;
  kp_hp_t *hp = kp_calloc(1, sizeof(*hp));
  if (!hp) return UV_ENOMEM;
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
  kp__hp_random(hp, hp->secret, sizeof(hp->secret));
  int err = kp_dht_register(dht, KP_DHT_CMD_PEER_HANDSHAKE, on_request, hp, HP_REPLY_VALUE_MAX);
  if (!err)
    err = kp_dht_register(dht, KP_DHT_CMD_PEER_HOLEPUNCH, on_request, hp, HP_REPLY_VALUE_MAX);
  kp_dht_ticker_t ticker = {hp_tick, hp_deadline, hp};
  if (!err) err = kp_dht_add_ticker(dht, &ticker);
  if (err) {
    kp_dht_unregister(dht, KP_DHT_CMD_PEER_HANDSHAKE);
    kp_dht_unregister(dht, KP_DHT_CMD_PEER_HOLEPUNCH);
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
  kp__hp_upgrades_free(hp);
  kp__hp_birthdays_free(hp);
  for (unsigned i = 0; hp->relay && i < hp->cfg.max_relay_entries; i++)
    if (hp->relay[i].hp) kp_dht_request_abandon(hp->dht, hp->relay[i].req);
  kp_dht_unregister(hp->dht, KP_DHT_CMD_PEER_HANDSHAKE);
  kp_dht_unregister(hp->dht, KP_DHT_CMD_PEER_HOLEPUNCH);
  kp_dht_remove_ticker(hp->dht, hp);

  kp_free(hp->relay);
  kp_free(hp->rate);
  kp_free(hp->bday);
  sodium_memzero(hp->secret, sizeof(hp->secret));
  kp_free(hp);
}

void kp_hp_set_relays(kp_hp_t *hp, const kp_addr_t *addrs, size_t count) {
  if (count > HP_MAX_RELAY_CANDIDATES) count = HP_MAX_RELAY_CANDIDATES;
  memcpy(hp->relays, addrs, count * sizeof(*addrs));
  hp->relay_count = count;
}

/* ---- Pairing at a blind relay ------------------------------------------------- */

static void send_pair(kp_hp_t *hp, hp_pairing_t *p) {
  kp_relay_ctrl_t c = {.type = KP_RELAY_PAIR, .arg = p->role};
  uint8_t msg[KP_RELAY_CTRL_LEN];
  memcpy(c.token, p->token, sizeof(c.token));
  kp_relay_ctrl_encode(&c, msg);
  hp->io.send_from(hp->io.ctx, p->sock, &p->relay, msg, sizeof(msg));
  p->sent++;
}

bool kp__hp_pairing_start(kp_hp_t *hp, hp_pairing_t *p, const kp_addr_t *relay,
                          const uint8_t token[32], uint8_t role, uint64_t now) {
  if (!hp->io.open) return false;
  p->sock = hp->io.open(hp->io.ctx);
  if (!p->sock) return false;
  p->relay = *relay;
  memcpy(p->token, token, 32);
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
  if (p->sock && !keep) hp->io.close(hp->io.ctx, p->sock);
  p->sock = NULL;
  p->next_at = UINT64_MAX;
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
}

void kp_hp_set_lan(kp_hp_t *hp, const kp_addr_t *addrs, size_t count) {
  if (count > HP_MAX_LAN) count = HP_MAX_LAN;
  memcpy(hp->lan, addrs, count * sizeof(*addrs));
  hp->lan_count = count;
}

void kp_hp_stats(const kp_hp_t *hp, kp_hp_stats_t *out) {
  *out = hp->stats;
}
