/* SPDX-License-Identifier: MIT */
/* The server's role: answer hellos for a listening key, run the holepunch
 * rounds, fix the path on the first address the client proves
 * (holepunch.h, hp_path.c).
 *
 * What a hello costs: two X25519 operations and, if accepted, one slot of
 * a fixed table. A flood therefore meets, in order: the relay node's
 * per-sender rate, this server's admission (per sender, per client IP and
 * in all, answered BUSY before any crypto), and the table (answered
 * OVERLOADED, sealed). No socket, file descriptor or allocation is ever
 * spent on a hello. */
#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "holepunch/hp_internal.h"
#include "relay/relay.h"

static const char PROLOGUE[] = "kadpunch/handshake/v1";

static hp_session_t *find_session(kp_hp_server_t *s, uint64_t id) {
  for (unsigned i = 0; i < s->hp->cfg.max_sessions; i++)
    if (s->sessions[i].server && s->sessions[i].id == id) return &s->sessions[i];
  return NULL;
}

static hp_session_t *find_by_ephemeral(kp_hp_server_t *s, const uint8_t e[32]) {
  for (unsigned i = 0; i < s->hp->cfg.max_sessions; i++)
    if (s->sessions[i].server && !memcmp(s->sessions[i].client_e, e, 32)) return &s->sessions[i];
  return NULL;
}

static void session_free(hp_session_t *se) {
  kp_hp_server_t *s = se->server;
  if (se->bday) kp__hp_birthday_end(se->bday, NULL);
  kp__hp_pairing_end(s->hp, &se->pairing, false);
  sodium_memzero(se, sizeof(*se));
  s->session_count--;
}

/* A free slot; with none, a session whose client never came back with a
 * proven round: of those, one that came from the heaviest sender or
 * client IP (the least budget left when it was admitted), the oldest of
 * them. A flood of valid hellos (fresh keys cost an attacker nothing) thus
 * churns its own sessions, and a client that sends little keeps its slot
 * until its first round comes back, however slow its path or its machine. */
static hp_session_t *session_new(kp_hp_server_t *s, uint64_t now) {
  hp_session_t *victim = NULL;
  for (unsigned i = 0; i < s->hp->cfg.max_sessions; i++) {
    hp_session_t *se = &s->sessions[i];
    if (!se->server) {
      victim = se;
      break;
    }
    if (se->proven) continue;
    if (!victim || se->admitted_light < victim->admitted_light ||
        (se->admitted_light == victim->admitted_light && se->created < victim->created))
      victim = se;
  }
  if (!victim) return NULL;
  if (victim->server) {
    s->stats.evicted++;
    session_free(victim);
  }
  memset(victim, 0, sizeof(*victim));
  victim->server = s;
  victim->created = now;
  victim->hint_at = UINT64_MAX;
  victim->path.best = -1;
  victim->path.keep_next = UINT64_MAX;
  s->session_count++;
  return victim;
}

/* A client key's newest hello timestamp; a 4-way set, oldest out. */
static bool replay_check(kp_hp_server_t *s, const uint8_t key[KP_PUBLIC_KEY_LEN], uint64_t ts,
                         uint64_t wall) {
  if (ts + HP_REPLAY_WINDOW_MS < wall || ts > wall + HP_REPLAY_WINDOW_MS) return false;
  hp_replay_t *set = s->replay[(key[0] | key[1] << 8) % HP_REPLAY_SETS];
  hp_replay_t *victim = &set[0];
  for (int i = 0; i < HP_REPLAY_WAYS; i++) {
    if (!memcmp(set[i].key, key, 16)) {
      if (ts <= set[i].timestamp) return false;
      set[i].timestamp = ts;
      set[i].used = wall;
      return true;
    }
    if (set[i].used < victim->used) victim = &set[i];
  }
  memcpy(victim->key, key, 16);
  victim->timestamp = ts;
  victim->used = wall;
  return true;
}

/* Admission before any crypto, charged to who we can see: the sender (the
 * relay node that handed us the hello, or the client itself) gets a
 * quarter of server_rate, so no one sender, whatever client addresses it
 * claims, can spend the budget meant for everyone; the claimed client IP
 * gets relay_rate (a client has one budget however many relay nodes it
 * goes through); all of them together get server_rate. Past that, a
 * sender and a client that both sent little this second still get in,
 * from a reserve of a quarter: a flood spends the budget early in every
 * second, and a real client must not wait for the next one. */
typedef enum { ADMITTED, OVER_OWN_RATE, OVER_ALL } admission_t;

static admission_t admit(kp_hp_server_t *s, const kp_addr_t *sender, const kp_addr_t *client,
                         uint64_t now, uint64_t *left) {
  const kp_hp_config_t *cfg = &s->hp->cfg;
  uint64_t client_level, sender_level;
  if (!kp_ratelimit_take(&s->per_sender, sender, 1, now, &sender_level) ||
      !kp_ratelimit_take(&s->per_client, client, 1, now, &client_level))
    return OVER_OWN_RATE;
  /* What the heavier of the two has left, in thousandths of its burst:
   * what eviction looks at. */
  uint64_t sender_left = sender_level * 1000 / (s->per_sender.burst ? s->per_sender.burst : 1);
  uint64_t client_left = client_level * 1000 / (s->per_client.burst ? s->per_client.burst : 1);
  *left = sender_left < client_left ? sender_left : client_left;
  if (kp_bucket_take(&s->all, cfg->server_rate, cfg->server_rate, 1, now)) return ADMITTED;
  bool light = sender_level + HP_LIGHT_SENDER >= s->per_sender.burst &&
               client_level + HP_LIGHT_SENDER >= s->per_client.burst;
  uint64_t reserve = cfg->server_rate / 4 ? cfg->server_rate / 4 : 1;
  return light && kp_bucket_take(&s->reserve, reserve, reserve, 1, now) ? ADMITTED : OVER_ALL;
}

static void reply_routed(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const uint8_t *data,
                         size_t len, uint64_t session, bool direct, uint64_t now) {
  kp_hs_wire_t w = {.mode = direct ? KP_HS_REPLY : KP_HS_FROM_SERVER,
                    .data = data,
                    .len = len,
                    .session = session};
  kp__hp_reply(s->hp, rt, &w, now);
}

static size_t our_addrs(kp_hp_t *hp, kp_addr_t *out) {
  size_t n = kp__hp_public_addrs(hp, out);
  for (size_t i = 0; i < hp->lan_count && n < KP_HS_MAX_ADDRS && !hp->cfg.relay_only; i++)
    out[n++] = hp->lan[i];
  return n;
}

/* What the client said its public addresses are (hello or round). */
static void client_reports(hp_session_t *se, const kp_addr_t *addrs, size_t count) {
  se->client_addr_count = 0;
  for (size_t i = 0; i < count && se->client_addr_count < KP_HS_MAX_ADDRS; i++)
    if (!kp_addr_is_private(&addrs[i]) && !kp_addr_is_loopback(&addrs[i]))
      se->client_addrs[se->client_addr_count++] = addrs[i];
  se->res.peer_addr_count = se->client_addr_count < 2 ? se->client_addr_count : 2;
  memcpy(se->res.peer_addrs, se->client_addrs, se->res.peer_addr_count * sizeof(kp_addr_t));
}

/* Where a relay node says the client is. Only nodes that store our record
 * can relay for us; anyone else (say a client posing as a relay node) is
 * heard, but its claim is never trusted enough to spray at. */
static void client_claim(kp_hp_server_t *s, hp_session_t *se, const kp_addr_t *sender,
                         const kp_addr_t *client_seen, bool direct) {
  se->client_seen = *client_seen;
  se->claim_trusted = direct || kp_dht_swarm_stored_at(s->hp->swarm, s->target, sender);
}

static kp_cipher_t choose_cipher(uint8_t ours, uint8_t theirs) {
  uint8_t aes = 1u << KP_CIPHER_AES256_GCM;
  return (ours & aes) && (theirs & aes) ? KP_CIPHER_AES256_GCM : KP_CIPHER_CHACHA20_POLY1305;
}

/* Seals the welcome into Noise message 2. */
static int seal_welcome(kp_hp_t *hp, kp_noise_t *st, const kp_hs_welcome_t *wl, uint8_t *out,
                        size_t *out_len) {
  uint8_t payload[KP_HS_PAYLOAD_MAX], e[32];
  size_t plen;
  int err = kp_hs_welcome_encode(wl, payload, sizeof(payload), &plen);
  kp__hp_random(hp, e, sizeof(e));
  if (!err) err = kp_noise_write_msg2(st, e, payload, plen, out, HP_REPLY_MAX, out_len);
  sodium_memzero(e, sizeof(e));
  return err;
}

/* The device info, if the client asked and the policy lets it know. */
static void add_info(const kp_hp_server_t *s, const kp_hs_hello_t *hello, bool accepted,
                     kp_hs_welcome_t *wl) {
  if (!hello || !hello->want_info) return;
  if (s->info_policy == KP_INFO_EVERYONE || (s->info_policy == KP_INFO_ALLOWED && accepted)) {
    wl->has_info = true;
    wl->info = s->info;
  }
}

static void refuse(kp_hp_server_t *s, kp_noise_t *st, const kp_dht_reply_to_t *rt,
                   const kp_hs_hello_t *hello, kp_hs_refusal_t why, bool direct, uint64_t now) {
  kp_hs_welcome_t wl = {.version = KP_HS_VERSION, .refusal = why};
  add_info(s, hello, false, &wl);
  uint8_t msg[HP_REPLY_MAX];
  size_t len;
  s->stats.refused++;
  if (!seal_welcome(s->hp, st, &wl, msg, &len)) reply_routed(s, rt, msg, len, 0, direct, now);
}

void kp__hp_server_handshake(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                             const kp_addr_t *sender, const kp_addr_t *client_seen, bool direct,
                             uint64_t now) {
  kp_hp_t *hp = s->hp;
  if (w->len < 32) return;
  /* A retry of a hello we answered: the same answer, no new work. */
  hp_session_t *dup = find_by_ephemeral(s, w->data);
  if (dup) {
    reply_routed(s, rt, dup->reply, dup->reply_len, dup->id, direct, now);
    return;
  }
  uint64_t light;
  admission_t a = admit(s, sender, client_seen, now, &light);
  if (a == OVER_OWN_RATE && direct) {
    /* A client sending straight to us past its own rate is flooding: it
     * gets no answer, which would only cost us a send per datagram. (A
     * relay node gets BUSY, or it would ask again.) */
    s->stats.dropped++;
    return;
  }
  if (a != ADMITTED) {
    s->stats.busy++;
    kp__hp_reply_error(hp, rt, KP_HS_ERR_BUSY, now);
    return;
  }
  kp_noise_t st;
  uint8_t payload[KP_HS_PAYLOAD_MAX];
  size_t plen;
  kp_hs_hello_t hello;
  s->stats.handshakes++;
  if (kp_noise_init_responder(&st, &s->kp, (const uint8_t *)PROLOGUE, sizeof(PROLOGUE) - 1) ||
      kp_noise_read_msg1(&st, w->data, w->len, payload, sizeof(payload), &plen)) {
    s->stats.bad++;
    goto reject;
  }
  int derr = kp_hs_hello_decode(payload, plen, &hello);
  if (derr == 0 && hello.version != KP_HS_VERSION) {
    refuse(s, &st, rt, NULL, KP_HS_REFUSE_VERSION, direct, now);
    goto out;
  }
  if (derr || !kp_noise_remote_matches(&st, hello.client_key)) {
    s->stats.bad++;
    goto reject;
  }
  if (!replay_check(s, hello.client_key, hello.timestamp, kp__hp_wall(hp, now))) {
    s->stats.replays++;
    goto reject;
  }
  kp_hs_refusal_t why = s->firewall ? s->firewall(s->ctx, &hello, client_seen) : KP_HS_OK;
  hp_session_t *se = why ? NULL : session_new(s, now);
  if (!why && !se) why = KP_HS_REFUSE_OVERLOADED;
  if (why) {
    refuse(s, &st, rt, &hello, why, direct, now);
    goto out;
  }
  se->id = kp__hp_random_id(hp);
  se->admitted_light = light;
  se->expires = now + hp->cfg.handshake_timeout_ms + hp->cfg.punch_timeout_ms;
  memcpy(se->client_e, w->data, 32);
  client_claim(s, se, sender, client_seen, direct);
  client_reports(se, hello.addrs, hello.addr_count);
  se->res.client_seen = *client_seen;
  kp_hs_welcome_t wl = {.version = KP_HS_VERSION,
                        .nat = kp_dht_nat(hp->dht)->type,
                        .conn_id = kp__hp_random_id(hp),
                        .cipher = choose_cipher(hp->cfg.ciphers, hello.ciphers),
                        .session = se->id};
  wl.addr_count = our_addrs(hp, wl.addrs);
  wl.relay_count = hp->relay_count < KP_HS_MAX_RELAYS ? hp->relay_count : KP_HS_MAX_RELAYS;
  memcpy(wl.relays, hp->relays, wl.relay_count * sizeof(*wl.relays));
  /* Dual-stack relays at their other family's address too, for a client
   * of that family (it takes the first of its own). */
  for (size_t i = 0; i < hp->relay_count && wl.relay_count < KP_HS_MAX_RELAYS; i++)
    if (hp->relay_alts[i].family) wl.relays[wl.relay_count++] = hp->relay_alts[i];
  wl.relay_only = hp->cfg.relay_only && wl.relay_count;
  add_info(s, &hello, true, &wl);
  memcpy(se->res.service, hello.service, sizeof(se->res.service));
  if (seal_welcome(hp, &st, &wl, se->reply, &se->reply_len)) {
    session_free(se);
    goto out;
  }
  kp_noise_split_t split;
  kp_noise_split(&st, &split);
  kp_hp_result_t *r = &se->res;
  r->initiator = false;
  memcpy(r->remote_key, hello.client_key, KP_PUBLIC_KEY_LEN);
  r->local_id = wl.conn_id;
  r->remote_id = hello.conn_id;
  r->cipher = wl.cipher;
  memcpy(r->tx_key, split.tx, 32);
  memcpy(r->rx_key, split.rx, 32);
  r->local_nat = wl.nat;
  r->remote_nat = hello.nat;
  r->relay = direct ? (kp_addr_t){0} : rt->to;
  kp__hp_derive_keys(&split, se->hp_key, r->probe_key, &se->relay_pair);
  memcpy(r->path_secret, split.path, sizeof(r->path_secret));
  kp__hp_path_init(&se->path, r->local_id, r->remote_id, 0, r->probe_key, now);
  sodium_memzero(&split, sizeof(split));
  s->stats.accepted++;
  reply_routed(s, rt, se->reply, se->reply_len, se->id, direct, now);
out:
  kp_noise_clear(&st);
  sodium_memzero(payload, sizeof(payload));
  return;
reject:
  /* Said plainly, so the relay node stops retrying on our behalf. */
  kp__hp_reply_error(hp, rt, KP_HS_ERR_REJECTED, now);
  goto out;
}

/* Whether the address a relay node gave for the client is one to aim a
 * birthday half at: the client reported the same itself (the IP; with a
 * port too when we send to that one socket), and the node that said so
 * stores our record. */
static bool claim_corroborated(kp_hp_t *hp, hp_session_t *se, bool exact) {
  if (se->claim_trusted &&
      kp__hp_corroborated(&se->client_seen, se->client_addrs, se->client_addr_count, exact))
    return true;
  hp->stats.claims_refused++;
  return false;
}

/* Towards where the relay saw the client; retried while the pool is full. */
static void start_birthday(hp_session_t *se, uint64_t at) {
  kp_hp_t *hp = se->server->hp;
  se->bday_wanted = kp__hp_birthday_pool_full(hp);
  se->bday_retry_at = at + HP_BIRTHDAY_RETRY_MS;
  if (!se->bday_wanted)
    se->bday = kp__hp_birthday_start(hp, se->bday_sockets, &se->client_seen, &se->path, NULL, at);
}

static void stop_punching(kp_hp_t *hp, hp_session_t *se, void *keep) {
  se->hint_at = UINT64_MAX;
  if (se->bday) kp__hp_birthday_end(se->bday, keep);
  se->bday = NULL;
  se->bday_wanted = false;
  (void)hp;
}

/* A round asks us to punch: hints for the client's addresses (where the
 * relay node saw it, where it says it is), fired when the answer reaches
 * the client; the birthday half when the NAT types need it. An address
 * both a node storing our record and the client name gets the full hint
 * budget; one named by only one of them, a single probe. */
static void punch(kp_hp_server_t *s, hp_session_t *se, const kp_hp_round_t *r, uint64_t now) {
  kp_hp_t *hp = s->hp;
  bool agreed = se->claim_trusted && kp__hp_corroborated(&se->client_seen, se->client_addrs,
                                                         se->client_addr_count, false);
  kp__hp_path_hint(&se->path, &se->client_seen, NULL, agreed ? HP_HINTS_PER_ADDR : 1);
  for (size_t i = 0; i < se->client_addr_count; i++) {
    bool same = agreed && kp_addr_same_ip(&se->client_addrs[i], &se->client_seen);
    kp__hp_path_hint(&se->path, &se->client_addrs[i], NULL, same ? HP_HINTS_PER_ADDR : 1);
  }
  se->hint_at = now + r->delay_ms;
  if (!se->res.strategy) se->res.strategy = KP_PUNCH_SIMULTANEOUS;
  bool sockets;
  if (se->bday || se->bday_wanted || !kp__hp_birthday_applies(se->res.local_nat, r->nat, &sockets))
    return;
  se->res.strategy = KP_PUNCH_BIRTHDAY;
  se->bday_sockets = sockets;
  if (claim_corroborated(hp, se, sockets)) start_birthday(se, now + r->delay_ms);
}

void kp__hp_server_round(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                         const kp_addr_t *sender, const kp_addr_t *client_seen, bool direct,
                         uint64_t now) {
  kp_hp_t *hp = s->hp;
  hp_session_t *se = find_session(s, w->session);
  kp_hp_round_t r;
  if (!se) {
    kp__hp_reply_error(hp, rt, KP_HS_ERR_NO_SESSION, now);
    return;
  }
  if (kp_hp_round_open(w->data, w->len, se->hp_key, true, &r)) {
    s->stats.bad++;
    return;
  }
  if (r.round <= se->last_round) {
    /* A retry gets the same answer; anything older is a replay. */
    if (r.round == se->last_round && se->round_reply_len)
      reply_routed(s, rt, se->round_reply, se->round_reply_len, se->id, direct, now);
    return;
  }
  /* Only the client can seal a round: it holds the keys, it is real. */
  se->last_round = r.round;
  se->proven = true;
  client_claim(s, se, sender, client_seen, direct);
  if (r.addr_count) client_reports(se, r.addrs, r.addr_count);
  kp_hp_round_t answer = {.round = r.round, .nat = se->res.local_nat, .punch = !hp->cfg.relay_only};
  answer.addr_count = kp__hp_public_addrs(hp, answer.addrs);
  if (kp_hp_round_seal(&answer, se->hp_key, false, se->round_reply, sizeof(se->round_reply),
                       &se->round_reply_len))
    return;
  reply_routed(s, rt, se->round_reply, se->round_reply_len, se->id, direct, now);
  if (se->done) return;
  if (r.has_relay) {
    /* No direct path: meet the client at the blind relay it chose. */
    se->res.strategy = KP_PUNCH_RELAYED;
    se->expires = now + hp->cfg.punch_timeout_ms;
    /* A client that falls back from a punch: ours stops too. */
    stop_punching(hp, se, NULL);
    if (!se->pairing.sock)
      kp__hp_pairing_start(hp, &se->pairing, kp__hp_relay_ours(hp, &r), &se->relay_pair, 1, now);
    return;
  }
  if (r.punch && !hp->cfg.relay_only && !se->pairing.sock) punch(s, se, &r, now);
}

/* The client was seen from our own public IP: it is on our network (the
 * client calls this path "lan" for the same reason). */
static bool behind_our_ip(const kp_hp_t *hp, const hp_session_t *se) {
  const kp_dht_nat_t *nat = kp_dht_nat(hp->dht);
  return nat->has_public && kp_addr_same_ip(&nat->public_addr, &se->client_seen);
}

static hp_session_t *session_by_conn(kp_hp_server_t *s, uint64_t conn_id) {
  for (unsigned i = 0; i < s->hp->cfg.max_sessions; i++)
    if (s->sessions[i].server && s->sessions[i].res.local_id == conn_id) return &s->sessions[i];
  return NULL;
}

void kp__hp_server_forget_sock(kp_hp_server_t *s, const void *sock) {
  for (unsigned i = 0; s->sessions && i < s->hp->cfg.max_sessions; i++)
    if (s->sessions[i].server) kp__hp_path_forget_sock(&s->sessions[i].path, sock);
}

bool kp__hp_server_probe(kp_hp_server_t *s, void *sock, const kp_addr_t *from, uint64_t conn_id,
                         const uint8_t *data, size_t len, uint64_t now) {
  hp_session_t *se = session_by_conn(s, conn_id);
  /* Relay only (UDP blocked here): no path but the relay, whatever comes. */
  if (!se || s->hp->cfg.relay_only) return false;
  /* An extra socket counts only if it is this session's. */
  if (sock && sock != se->res.socket && !kp__hp_birthday_owns(se->bday, sock)) return false;
  bool ok;
  hp_cand_t *c = kp__hp_path_input(s->hp, &se->path, sock, from, data, len, now, &ok);
  if (!ok) return false;
  /* Gone to a relay: a late proof must not pull the two sides apart. */
  if (!c || se->done || se->pairing.sock) return true;
  se->done = true;
  se->expires = now + HP_LINGER_MS;
  se->res.path = c->addr;
  se->res.socket = c->sock;
  stop_punching(s->hp, se, c->sock);
  if (c->sock) {
    se->res.strategy = KP_PUNCH_BIRTHDAY;
  } else if ((kp_addr_is_private(&c->addr) || kp_addr_is_loopback(&c->addr)) &&
             (!kp_addr_same_ip(&c->addr, &se->client_seen) || behind_our_ip(s->hp, se))) {
    /* The client's rule mirrored (hp_client.c, same_network): both ends
     * name one connection alike. */
    se->res.strategy = KP_PUNCH_LAN;
  } else if (!se->res.strategy) {
    se->res.strategy = KP_PUNCH_OPEN;
  }
  s->stats.connections++;
  if (s->on_connection) s->on_connection(s->ctx, &se->res);
  return true;
}

bool kp__hp_server_relay(kp_hp_server_t *s, void *sock, const kp_addr_t *from, const uint8_t *data,
                         size_t len, uint64_t now) {
  hp_session_t *se = NULL;
  for (unsigned i = 0; i < s->hp->cfg.max_sessions && !se; i++)
    if (s->sessions[i].server && s->sessions[i].pairing.sock == sock) se = &s->sessions[i];
  kp_relay_ctrl_t c;
  if (!se || !kp_addr_eq(from, &se->pairing.relay) || kp_relay_ctrl_decode(data, len, &c) ||
      sodium_memcmp(c.id, se->relay_pair.id, KP_RELAY_ID_LEN))
    return false;
  if (c.type == KP_RELAY_REFUSED) {
    /* The client hears the same refusal and reports it. */
    kp__hp_pairing_end(s->hp, &se->pairing, false);
    return true;
  }
  if (c.type != KP_RELAY_PAIRED || se->done) return true;
  se->done = true;
  se->expires = now + HP_LINGER_MS;
  se->res.path = se->pairing.relay;
  se->res.peer_link = c.link[0];
  se->res.socket = sock;
  se->res.strategy = KP_PUNCH_RELAYED;
  kp__hp_pairing_end(s->hp, &se->pairing, true);
  s->stats.connections++;
  if (s->on_connection) s->on_connection(s->ctx, &se->res);
  return true;
}

void kp__hp_server_tick(kp_hp_server_t *s, uint64_t now) {
  for (unsigned i = 0; i < s->hp->cfg.max_sessions; i++) {
    hp_session_t *se = &s->sessions[i];
    if (!se->server) continue;
    if (se->expires <= now) {
      if (!se->done) s->stats.punch_timeouts++;
      session_free(se);
      continue;
    }
    if (se->bday_wanted && se->bday_retry_at <= now) start_birthday(se, now);
    if (se->hint_at <= now) {
      se->hint_at = UINT64_MAX;
      kp__hp_path_hints(s->hp, &se->path, now);
    }
    kp__hp_path_keep(s->hp, &se->path, now);
    kp__hp_pairing_run(s->hp, &se->pairing, now);
  }
}

uint64_t kp__hp_server_deadline(const kp_hp_server_t *s) {
  uint64_t d = UINT64_MAX;
  for (unsigned j = 0; j < s->hp->cfg.max_sessions; j++) {
    const hp_session_t *se = &s->sessions[j];
    if (!se->server) continue;
    uint64_t pd = kp__hp_path_deadline(&se->path);
    if (se->expires < d) d = se->expires;
    if (se->hint_at < d) d = se->hint_at;
    if (pd < d) d = pd;
    if (se->bday_wanted && se->bday_retry_at < d) d = se->bday_retry_at;
    if (se->pairing.sock && se->pairing.next_at < d) d = se->pairing.next_at;
  }
  return d;
}

int kp_hp_listen(kp_hp_t *hp, const kp_keypair_t *kp, kp_hp_firewall_fn firewall,
                 kp_hp_connection_fn on_connection, void *ctx, kp_hp_server_t **out) {
  *out = NULL;
  unsigned slot = 0;
  while (slot < HP_MAX_SERVERS && hp->servers[slot]) slot++;
  if (slot == HP_MAX_SERVERS) return KP_ELIMIT;
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(kp->public_key, target);
  if (kp__hp_server_for(hp, target)) return KP_EEXIST;
  kp_hp_server_t *s = kp_calloc(1, sizeof(*s));
  if (!s) return KP_ENOMEM;
  uint8_t k1[KP_RATELIMIT_KEY_LEN], k2[KP_RATELIMIT_KEY_LEN];
  kp__hp_random(hp, k1, sizeof(k1));
  kp__hp_random(hp, k2, sizeof(k2));
  unsigned per_sender = hp->cfg.server_rate / 4 ? hp->cfg.server_rate / 4 : 1;
  s->sessions = kp_calloc(hp->cfg.max_sessions, sizeof(*s->sessions));
  if (!s->sessions ||
      kp_ratelimit_init(&s->per_client, HP_HELLO_SENDERS, hp->cfg.relay_rate, hp->cfg.relay_rate,
                        k1) ||
      kp_ratelimit_init(&s->per_sender, HP_HELLO_SENDERS, per_sender, per_sender, k2)) {
    kp_free(s->sessions);
    kp_ratelimit_destroy(&s->per_client);
    kp_ratelimit_destroy(&s->per_sender);
    kp_free(s);
    return KP_ENOMEM;
  }
  kp_bucket_init(&s->all, hp->cfg.server_rate, 0);
  kp_bucket_init(&s->reserve, per_sender, 0);
  s->hp = hp;
  s->kp = *kp;
  memcpy(s->target, target, KP_ID_LEN);
  s->firewall = firewall;
  s->on_connection = on_connection;
  s->ctx = ctx;
  hp->servers[slot] = s;
  *out = s;
  return 0;
}

void kp_hp_server_close(kp_hp_server_t *s) {
  kp_hp_t *hp = s->hp;
  for (unsigned i = 0; i < HP_MAX_SERVERS; i++)
    if (hp->servers[i] == s) hp->servers[i] = NULL;
  for (unsigned i = 0; i < hp->cfg.max_sessions; i++)
    if (s->sessions[i].server) session_free(&s->sessions[i]);
  kp_free(s->sessions);
  kp_ratelimit_destroy(&s->per_client);
  kp_ratelimit_destroy(&s->per_sender);
  sodium_memzero(s, sizeof(*s));
  kp_free(s);
}

void kp_hp_server_set_info(kp_hp_server_t *s, const kp_device_info_t *info, kp_info_policy_t who) {
  s->info = *info;
  s->info_policy = who;
}

void kp_hp_server_stats(const kp_hp_server_t *s, kp_hp_server_stats_t *out) {
  *out = s->stats;
  out->sessions = s->session_count;
}
