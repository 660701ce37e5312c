/* The server's role: answer hellos for a listening key, run the holepunch
 * rounds, fix the path on the first authenticated probe (holepunch.h).
 *
 * What a hello costs: two X25519 operations and, if accepted, one slot of
 * a fixed table. A flood therefore meets, in order: the relay node's
 * per-source rate, this server's global rate (answered BUSY before any
 * crypto), and the table (answered OVERLOADED, sealed). No socket, file
 * descriptor or allocation is ever spent on a hello. */
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

/* A free slot; with none, the oldest session whose client never came back
 * with a proven round. A flood of valid hellos (fresh keys cost an
 * attacker nothing) thus churns only unproven sessions, each living at
 * least max_sessions / server_rate seconds (0.2 s by default), while any
 * client that answers within that keeps its slot. */
static hp_session_t *session_new(kp_hp_server_t *s, uint64_t now) {
  hp_session_t *victim = NULL;
  for (unsigned i = 0; i < s->hp->cfg.max_sessions; i++) {
    hp_session_t *se = &s->sessions[i];
    if (!se->server) {
      victim = se;
      break;
    }
    if (!se->proven && (!victim || se->created < victim->created)) victim = se;
  }
  if (!victim) return NULL;
  if (victim->server) {
    s->stats.evicted++;
    session_free(victim);
  }
  memset(victim, 0, sizeof(*victim));
  victim->server = s;
  victim->created = now;
  victim->probes.next_at = UINT64_MAX;
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

/* Hellos this second from client's IP (IPv6: its /64), counted. */
static unsigned client_count(kp_hp_server_t *s, const kp_addr_t *client, uint64_t now) {
  uint8_t b[KP_ADDR_COMPACT_MAX], h[8];
  size_t n = kp_addr_encode_compact(client, b);
  size_t ip_len = client->family == KP_AF_INET6 ? 8 : n - 2;
  crypto_generichash(h, sizeof(h), b, ip_len, s->secret, sizeof(s->secret));
  hp_rate_slot_t *slot = &s->client_rate[(h[0] | h[1] << 8) % HP_CLIENT_RATE_SLOTS];
  if (slot->second != now / 1000) slot->second = now / 1000, slot->count = 0;
  return ++slot->count;
}

/* Admission before any crypto. Each client IP gets relay_rate hellos per
 * second; all of them together get server_rate. Past that budget an IP
 * that sent at most HP_LIGHT_SENDER this second still gets in, from a
 * reserve of a quarter of the budget: a flood spends the budget early in
 * every second, and a real client, one hello from one IP, must not wait
 * for the next. */
static bool admit(kp_hp_server_t *s, const kp_addr_t *client, uint64_t now) {
  unsigned per_ip = client_count(s, client, now);
  if (per_ip > s->hp->cfg.relay_rate) return false;
  uint64_t second = now / 1000;
  if (s->rate_second != second) s->rate_second = second, s->rate_count = s->reserve_count = 0;
  if (++s->rate_count <= s->hp->cfg.server_rate) return true;
  return per_ip <= HP_LIGHT_SENDER && ++s->reserve_count <= s->hp->cfg.server_rate / 4;
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
  size_t n = 0;
  const kp_dht_nat_t *nat = kp_dht_nat(hp->dht);
  if (nat->has_public) out[n++] = nat->public_addr;
  for (size_t i = 0; i < hp->lan_count && n < KP_HS_MAX_ADDRS; i++) out[n++] = hp->lan[i];
  return n;
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
                             const kp_addr_t *client_seen, bool direct, uint64_t now) {
  kp_hp_t *hp = s->hp;
  if (w->len < 32) return;
  /* A retry of a hello we answered: the same answer, no new work. */
  hp_session_t *dup = find_by_ephemeral(s, w->data);
  if (dup) {
    reply_routed(s, rt, dup->reply, dup->reply_len, dup->id, direct, now);
    return;
  }
  /* Relayed or direct, the client's IP has one budget, however many relay
   * nodes it goes through. */
  if (!admit(s, client_seen, now)) {
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
  kp_hs_refusal_t why = s->firewall ? s->firewall(s->ctx, &hello) : KP_HS_OK;
  hp_session_t *se = why ? NULL : session_new(s, now);
  if (!why && !se) why = KP_HS_REFUSE_OVERLOADED;
  if (why) {
    refuse(s, &st, rt, &hello, why, direct, now);
    goto out;
  }
  se->id = kp__hp_random_id(hp);
  se->expires = now + hp->cfg.handshake_timeout_ms + hp->cfg.punch_timeout_ms;
  memcpy(se->client_e, w->data, 32);
  se->client_seen = *client_seen;
  kp_hs_welcome_t wl = {.version = KP_HS_VERSION,
                        .nat = kp_dht_nat(hp->dht)->type,
                        .conn_id = kp__hp_random_id(hp),
                        .cipher = choose_cipher(hp->cfg.ciphers, hello.ciphers),
                        .session = se->id};
  wl.addr_count = our_addrs(hp, wl.addrs);
  wl.relay_count = hp->relay_count < KP_HS_MAX_RELAYS ? hp->relay_count : KP_HS_MAX_RELAYS;
  memcpy(wl.relays, hp->relays, wl.relay_count * sizeof(*wl.relays));
  wl.relay_only = hp->cfg.relay_only && wl.relay_count;
  kp_hs_token(s->secret, se->id, client_seen, wl.token);
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
  kp__hp_derive_keys(&split, se->hp_key, se->probe_key);
  memcpy(se->res.probe_key, se->probe_key, 32);
  kp_relay_token(split.path, se->relay_token);
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

/* Towards where the relay saw the client; retried while the pool is full. */
static void start_birthday(hp_session_t *se, uint64_t at) {
  se->bday = kp__hp_birthday_start(se->server->hp, se->bday_sockets, &se->client_seen,
                                   se->res.remote_id, 0, se->probe_key, at);
  se->bday_wanted = !se->bday;
  se->bday_retry_at = at + HP_BIRTHDAY_RETRY_MS;
}

void kp__hp_server_round(kp_hp_server_t *s, const kp_dht_reply_to_t *rt, const kp_hs_wire_t *w,
                         const kp_addr_t *client_seen, bool direct, uint64_t now) {
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
  se->last_round = r.round;
  /* The echo proves the client receives at the address the relay saw. */
  uint8_t expect[32];
  kp_hs_token(s->secret, se->id, client_seen, expect);
  bool proven = r.has_remote_token && !sodium_memcmp(expect, r.remote_token, 32);
  se->proven |= proven;
  kp_hp_round_t answer = {.round = r.round, .nat = se->res.local_nat, .punch = proven};
  if (r.has_token) {
    answer.has_remote_token = true;
    memcpy(answer.remote_token, r.token, 32);
  }
  if (kp_hp_round_seal(&answer, se->hp_key, false, se->round_reply, sizeof(se->round_reply),
                       &se->round_reply_len))
    return;
  reply_routed(s, rt, se->round_reply, se->round_reply_len, se->id, direct, now);
  if (proven && r.has_relay && !se->done) {
    /* No direct path: meet the client at the blind relay it chose. */
    se->res.strategy = KP_PUNCH_RELAYED;
    se->expires = now + hp->cfg.punch_timeout_ms;
    /* A client that falls back from a punch: ours stops too. */
    se->probes.next_at = UINT64_MAX;
    if (se->bday) kp__hp_birthday_end(se->bday, NULL);
    se->bday = NULL;
    se->bday_wanted = false;
    if (!se->pairing.sock)
      kp__hp_pairing_start(hp, &se->pairing, &r.relay, se->relay_token, 1, now);
    return;
  }
  if (proven && r.punch && !se->done && !hp->cfg.relay_only) {
    /* Fire when the answer reaches the client: half its relay round trip. */
    uint64_t at = now + r.delay_ms;
    se->res.strategy = KP_PUNCH_SIMULTANEOUS;
    kp__hp_probes_start(&se->probes, client_seen, 1, true, at);
    if (!se->bday && kp__hp_birthday_applies(se->res.local_nat, r.nat, &se->bday_sockets)) {
      se->res.strategy = KP_PUNCH_BIRTHDAY;
      se->bday_wanted = true;
      start_birthday(se, at);
    }
  }
}

bool kp__hp_server_probe(kp_hp_server_t *s, void *sock, const kp_addr_t *from, const kp_probe_t *p,
                         const uint8_t *data, size_t len, uint64_t now) {
  hp_session_t *se = NULL;
  for (unsigned i = 0; i < s->hp->cfg.max_sessions && !se; i++)
    if (s->sessions[i].server && s->sessions[i].res.local_id == p->conn_id) se = &s->sessions[i];
  /* Relay only (UDP blocked here): no path but the relay, whatever comes. */
  if (!se || s->hp->cfg.relay_only || !kp_probe_verify(data, len, se->probe_key)) return false;
  /* An extra socket counts only if it is this session's. */
  if (sock && sock != se->res.socket && !kp__hp_birthday_owns(se->bday, sock)) return false;
  if (!(p->flags & KP_PROBE_ANSWER) && se->answers < HP_MAX_ANSWERS) {
    se->answers++;
    kp__hp_send_probe(s->hp, sock, from, se->res.remote_id, KP_PROBE_ANSWER, p->seq, se->probe_key);
  }
  /* Gone to a relay: a late probe must not pull the two sides apart. */
  if (!se->done && !se->pairing.sock) {
    se->done = true;
    se->probes.next_at = UINT64_MAX;
    se->expires = now + HP_LINGER_MS;
    se->res.path = *from;
    se->res.socket = sock;
    if (se->bday) kp__hp_birthday_end(se->bday, sock);
    se->bday = NULL;
    se->bday_wanted = false;
    if (sock) {
      /* Our answer may be lost, and the client's spray will rarely hit
       * this one port again: knock from it until the linger ends. */
      se->res.strategy = KP_PUNCH_BIRTHDAY;
      kp__hp_probes_start(&se->probes, from, 1, true, now + 1);
      se->probes.sock = sock;
    } else if (kp_addr_same_ip(from, &se->client_seen) == false) {
      se->res.strategy = KP_PUNCH_LAN;
    } else if (!se->res.strategy) {
      se->res.strategy = KP_PUNCH_OPEN;
    }

    s->stats.connections++;
    if (s->on_connection) s->on_connection(s->ctx, &se->res);
  }
  return true;
}

bool kp__hp_server_relay(kp_hp_server_t *s, void *sock, const kp_addr_t *from, const uint8_t *data,
                         size_t len, uint64_t now) {
  hp_session_t *se = NULL;
  for (unsigned i = 0; i < s->hp->cfg.max_sessions && !se; i++)
    if (s->sessions[i].server && s->sessions[i].pairing.sock == sock) se = &s->sessions[i];
  kp_relay_ctrl_t c;
  if (!se || !kp_addr_eq(from, &se->pairing.relay) || kp_relay_ctrl_decode(data, len, &c) ||
      sodium_memcmp(c.token, se->relay_token, 32))
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
    if (se->probes.next_at <= now)
      kp__hp_probes_run(s->hp, &se->probes, se->res.remote_id, 0, se->probe_key, now);
    kp__hp_pairing_run(s->hp, &se->pairing, now);
  }
}

int kp_hp_listen(kp_hp_t *hp, const kp_keypair_t *kp, kp_hp_firewall_fn firewall,
                 kp_hp_connection_fn on_connection, void *ctx, kp_hp_server_t **out) {
  *out = NULL;
  unsigned slot = 0;
  while (slot < HP_MAX_SERVERS && hp->servers[slot]) slot++;
  if (slot == HP_MAX_SERVERS) return KP_ELIMIT;
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(kp->public_key, target);
  if (kp__hp_server_for(hp, target)) return UV_EEXIST;
  kp_hp_server_t *s = kp_calloc(1, sizeof(*s));
  if (!s) return UV_ENOMEM;
  s->sessions = kp_calloc(hp->cfg.max_sessions, sizeof(*s->sessions));
  s->client_rate = kp_calloc(HP_CLIENT_RATE_SLOTS, sizeof(*s->client_rate));
  if (!s->sessions || !s->client_rate) {
    kp_free(s->sessions);
    kp_free(s->client_rate);
    kp_free(s);
    return UV_ENOMEM;
  }
  s->hp = hp;
  s->kp = *kp;
  memcpy(s->target, target, KP_ID_LEN);
  kp__hp_random(hp, s->secret, sizeof(s->secret));
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
  sodium_memzero(s->sessions, hp->cfg.max_sessions * sizeof(*s->sessions));
  kp_free(s->sessions);
  kp_free(s->client_rate);
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
