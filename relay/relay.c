/* SPDX-License-Identifier: MIT */
/* The blind relay's state machine (relay.h). Sessions live in a fixed
 * table; an open-addressing index maps each paired address to its session,
 * so forwarding costs one keyed hash and a probe or two. */
#include "relay/relay.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "common/ratelimit.h"

#define PAIR_SENDERS 1024 /* the pairing-rate table's size */

typedef struct session_s {
  bool used;
  uint8_t id[KP_RELAY_ID_LEN];
  kp_addr_t side[2];
  uint8_t client_side;   /* which side paired as the client */
  kp_bucket_t bucket[2]; /* bytes from side i */
  uint64_t created, last;
} session_t;

typedef struct pending_s {
  bool used;
  uint8_t role;
  uint8_t id[KP_RELAY_ID_LEN];
  uint8_t reveal[KP_RELAY_SECRET_LEN], commit[KP_RELAY_SECRET_LEN];
  kp_addr_t addr;
  uint64_t created, last; /* last: its latest PAIR */
} pending_t;

typedef struct slot_s {
  uint32_t session; /* index + 1; 0: empty */
  uint8_t side;
} slot_t;

#define RELAY_STALE_MS 60000 /* a paired address silent this long may pair anew */
/* A waiting half pair retransmits every 250 ms: one silent this long is
 * gone, and another address may take its place. */
#define PENDING_SILENT_MS 1000

struct kp_relay_s {
  kp_relay_config_t cfg;
  session_t *sessions;
  pending_t *pending;
  slot_t *index;
  size_t index_mask;
  uint8_t hash_key[crypto_shorthash_KEYBYTES];
  kp_ratelimit_t pair_rate; /* PAIRs per source IP */
  kp_bucket_t total;
  kp_addr_t own_ip; /* the relay host's TCP allocations: rated per link there */
  kp_relay_stats_t stats;
};

void kp_relay_config_defaults(kp_relay_config_t *cfg) {
  cfg->max_sessions = 1024;
  cfg->max_pending = 256;
  cfg->session_rate = 4u << 20;
  cfg->total_rate = 64u << 20;
  cfg->idle_ms = 10 * 60 * 1000;
  cfg->max_lifetime_ms = 24ull * 3600 * 1000;
  cfg->pending_ms = 10 * 1000;
  cfg->pair_rate = 10;
  cfg->sessions_per_ip = 32;
  cfg->pending_per_ip = 8;
}

/* ---- Wire ----------------------------------------------------------------------- */

bool kp_relay_is_ctrl(const uint8_t *data, size_t len) {
  return len == KP_RELAY_CTRL_LEN && data[0] == KP_RELAY_MAGIC;
}

#define ID_AT 3
#define REVEAL_AT (ID_AT + KP_RELAY_ID_LEN)
#define COMMIT_AT (REVEAL_AT + KP_RELAY_SECRET_LEN)
#define LINK_OFFSET (COMMIT_AT + KP_RELAY_SECRET_LEN)
#define LINK_SLOT (1 + KP_ADDR_COMPACT_MAX)

void kp_relay_ctrl_encode(const kp_relay_ctrl_t *c, uint8_t out[KP_RELAY_CTRL_LEN]) {
  memset(out, 0, KP_RELAY_CTRL_LEN);
  out[0] = KP_RELAY_MAGIC;
  out[1] = c->type;
  out[2] = c->arg;
  memcpy(out + ID_AT, c->id, KP_RELAY_ID_LEN);
  memcpy(out + REVEAL_AT, c->reveal, KP_RELAY_SECRET_LEN);
  memcpy(out + COMMIT_AT, c->commit, KP_RELAY_SECRET_LEN);
  for (int i = 0; i < 2; i++) {
    uint8_t *slot = out + LINK_OFFSET + i * LINK_SLOT;
    if (c->link[i].family) slot[0] = (uint8_t)kp_addr_encode_compact(&c->link[i], slot + 1);
  }
}

int kp_relay_ctrl_decode(const uint8_t *data, size_t len, kp_relay_ctrl_t *out) {
  if (!kp_relay_is_ctrl(data, len) || data[1] < KP_RELAY_PAIR || data[1] > KP_RELAY_REFUSED)
    return -1;
  if (data[1] == KP_RELAY_PAIR && data[2] > 1) return -1; /* a role: client or server */
  memset(out, 0, sizeof(*out));
  out->type = data[1];
  out->arg = data[2];
  memcpy(out->id, data + ID_AT, KP_RELAY_ID_LEN);
  memcpy(out->reveal, data + REVEAL_AT, KP_RELAY_SECRET_LEN);
  memcpy(out->commit, data + COMMIT_AT, KP_RELAY_SECRET_LEN);
  for (int i = 0; i < 2; i++) {
    const uint8_t *slot = data + LINK_OFFSET + i * LINK_SLOT;
    if (slot[0] && kp_addr_decode_compact(&out->link[i], slot + 1, slot[0])) return -1;
  }
  return 0;
}

void kp_relay_pair_derive(const uint8_t path_secret[64], kp_relay_pair_t *out) {
  static const char label[] = "kadpunch/relay-pair/v2";
  uint8_t k[KP_RELAY_ID_LEN + 2 * KP_RELAY_SECRET_LEN];
  crypto_generichash(k, sizeof(k), (const uint8_t *)label, sizeof(label) - 1, path_secret, 64);
  memcpy(out->id, k, KP_RELAY_ID_LEN);
  memcpy(out->secret[0], k + KP_RELAY_ID_LEN, KP_RELAY_SECRET_LEN);
  memcpy(out->secret[1], k + KP_RELAY_ID_LEN + KP_RELAY_SECRET_LEN, KP_RELAY_SECRET_LEN);
  sodium_memzero(k, sizeof(k));
}

static void commitment(const uint8_t secret[KP_RELAY_SECRET_LEN],
                       uint8_t out[KP_RELAY_SECRET_LEN]) {
  crypto_generichash(out, KP_RELAY_SECRET_LEN, secret, KP_RELAY_SECRET_LEN, NULL, 0);
}

void kp_relay_pair_request(const kp_relay_pair_t *pair, uint8_t role, kp_relay_ctrl_t *out) {
  memset(out, 0, sizeof(*out));
  out->type = KP_RELAY_PAIR;
  out->arg = role;
  memcpy(out->id, pair->id, KP_RELAY_ID_LEN);
  memcpy(out->reveal, pair->secret[role & 1], KP_RELAY_SECRET_LEN);
  commitment(pair->secret[!(role & 1)], out->commit);
}

/* Whether two PAIRs of opposite roles open each other's commitments. */
static bool halves_match(const pending_t *p, const kp_relay_ctrl_t *c) {
  uint8_t h[KP_RELAY_SECRET_LEN], g[KP_RELAY_SECRET_LEN];
  commitment(c->reveal, h);
  commitment(p->reveal, g);
  return !sodium_memcmp(h, p->commit, KP_RELAY_SECRET_LEN) &&
         !sodium_memcmp(g, c->commit, KP_RELAY_SECRET_LEN);
}

/* ---- The address index ---------------------------------------------------------- */

static size_t addr_hash(const kp_relay_t *r, const kp_addr_t *a) {
  uint8_t b[KP_ADDR_COMPACT_MAX], h[crypto_shorthash_BYTES];
  size_t n = kp_addr_encode_compact(a, b);
  crypto_shorthash(h, b, n, r->hash_key);
  uint64_t v;
  memcpy(&v, h, sizeof(v));
  return (size_t)v & r->index_mask;
}

static const kp_addr_t *slot_addr(const kp_relay_t *r, const slot_t *s) {
  return &r->sessions[s->session - 1].side[s->side];
}

static slot_t *index_find(kp_relay_t *r, const kp_addr_t *a) {
  /* Bounded even if the invariant (each address once, the table at most
   * half full) were ever broken: a slow lookup, never a hang. */
  size_t i = addr_hash(r, a);
  for (size_t n = 0; n <= r->index_mask; n++, i = (i + 1) & r->index_mask) {
    slot_t *s = &r->index[i];
    if (!s->session) return NULL;
    if (kp_addr_eq(slot_addr(r, s), a)) return s;
  }
  return NULL;
}

static void index_add(kp_relay_t *r, uint32_t session, uint8_t side) {
  size_t i = addr_hash(r, &r->sessions[session].side[side]);
  while (r->index[i].session) i = (i + 1) & r->index_mask;
  r->index[i] = (slot_t){session + 1, side};
}

/* Linear probing's deletion: shift later members of the run back so no
 * lookup stops early at the hole. */
static void index_remove(kp_relay_t *r, slot_t *s) {
  size_t i = (size_t)(s - r->index);
  r->index[i].session = 0;
  for (size_t j = (i + 1) & r->index_mask; r->index[j].session; j = (j + 1) & r->index_mask) {
    size_t home = addr_hash(r, slot_addr(r, &r->index[j]));
    /* Can j's member live at i? Only if i lies on its path from home. */
    bool on_path = i <= j ? (home <= i || home > j) : (home <= i && home > j);
    if (!on_path) continue;
    r->index[i] = r->index[j];
    r->index[j].session = 0;
    i = j;
  }
}

/* ---- Sessions ------------------------------------------------------------------- */

static void session_end(kp_relay_t *r, session_t *se) {
  for (int side = 0; side < 2; side++) {
    slot_t *s = index_find(r, &se->side[side]);
    if (s) index_remove(r, s);
  }
  sodium_memzero(se, sizeof(*se));
  r->stats.sessions--;
}

static session_t *session_for_id(kp_relay_t *r, const uint8_t *id) {
  for (unsigned i = 0; i < r->cfg.max_sessions; i++)
    if (r->sessions[i].used && !sodium_memcmp(r->sessions[i].id, id, KP_RELAY_ID_LEN))
      return &r->sessions[i];
  return NULL;
}

static void ctrl_reply(uint8_t type, uint8_t arg, const uint8_t *id, uint8_t *out) {
  kp_relay_ctrl_t c = {.type = type, .arg = arg};
  memcpy(c.id, id, KP_RELAY_ID_LEN);
  kp_relay_ctrl_encode(&c, out);
}

/* PAIRED tells each side both links: where to punch to later. */
static void paired_reply(const session_t *se, uint8_t *out) {
  kp_relay_ctrl_t c = {.type = KP_RELAY_PAIRED};
  memcpy(c.id, se->id, KP_RELAY_ID_LEN);
  c.link[0] = se->side[se->client_side];
  c.link[1] = se->side[1 - se->client_side];
  kp_relay_ctrl_encode(&c, out);
}

static kp_relay_action_t refuse(kp_relay_t *r, kp_relay_refusal_t why, const uint8_t *id,
                                uint8_t *reply) {
  if (why == KP_RELAY_REFUSE_FULL) r->stats.refused_full++;
  if (why == KP_RELAY_REFUSE_ATTEMPTS) r->stats.refused_attempts++;
  if (why == KP_RELAY_REFUSE_IP_LIMIT) r->stats.refused_ip_limit++;
  ctrl_reply(KP_RELAY_REFUSED, (uint8_t)why, id, reply);
  return KP_RELAY_REPLY;
}

static void forget_pending(kp_relay_t *r, const kp_addr_t *addr) {
  for (unsigned i = 0; i < r->cfg.max_pending; i++) {
    pending_t *p = &r->pending[i];
    if (p->used && kp_addr_eq(&p->addr, addr)) {
      sodium_memzero(p, sizeof(*p));
      r->stats.pending--;
    }
  }
}

static void drop_pending(kp_relay_t *r, pending_t *p) {
  sodium_memzero(p, sizeof(*p));
  r->stats.pending--;
}

/* What one IP (IPv6: /64) holds: sessions it is a side of, half pairs it
 * left waiting. Pairing is rare (rated per IP), so a scan is cheap. */
static unsigned sessions_of(const kp_relay_t *r, const kp_addr_t *ip) {
  unsigned n = 0;
  for (unsigned i = 0; i < r->cfg.max_sessions; i++) {
    const session_t *se = &r->sessions[i];
    if (se->used &&
        (kp_ratelimit_key(&r->pair_rate, &se->side[0]) == kp_ratelimit_key(&r->pair_rate, ip) ||
         kp_ratelimit_key(&r->pair_rate, &se->side[1]) == kp_ratelimit_key(&r->pair_rate, ip)))
      n++;
  }
  return n;
}

static unsigned pending_of(const kp_relay_t *r, const kp_addr_t *ip) {
  unsigned n = 0;
  uint64_t key = kp_ratelimit_key(&r->pair_rate, ip);
  for (unsigned i = 0; i < r->cfg.max_pending; i++)
    n += r->pending[i].used && kp_ratelimit_key(&r->pair_rate, &r->pending[i].addr) == key;
  return n;
}

/* A PAIR from an address that is already paired: a retransmission gets
 * the same answer; another pair id from it would make its traffic
 * ambiguous, unless that session has been silent for a minute (its peers
 * keep even a direct connection's relay session alive every 20 s) and a
 * NAT has given the port to someone new. Returns DROP when from is free. */
static kp_relay_action_t pair_from_paired(kp_relay_t *r, slot_t *s, const kp_relay_ctrl_t *c,
                                          uint64_t now, uint8_t *reply) {
  session_t *se = &r->sessions[s->session - 1];
  if (!sodium_memcmp(se->id, c->id, KP_RELAY_ID_LEN)) {
    paired_reply(se, reply);
    return KP_RELAY_REPLY;
  }
  if (now - se->last < RELAY_STALE_MS) return refuse(r, KP_RELAY_REFUSE_FULL, c->id, reply);
  session_end(r, se);
  return KP_RELAY_DROP;
}

/* The first half of a pair waits (it retransmits until the second comes),
 * in a free slot or the oldest's. */
static kp_relay_action_t wait_half(kp_relay_t *r, pending_t *free_slot, pending_t *oldest,
                                   const kp_addr_t *from, const kp_relay_ctrl_t *c, uint64_t now,
                                   uint8_t *reply) {
  bool own = r->own_ip.family && kp_addr_same_ip(from, &r->own_ip);
  if (!own && pending_of(r, from) >= r->cfg.pending_per_ip)
    return refuse(r, KP_RELAY_REFUSE_IP_LIMIT, c->id, reply);
  pending_t *p = free_slot ? free_slot : oldest;
  if (!free_slot) r->stats.pending--; /* the oldest half pair makes room */
  *p = (pending_t){.used = true, .role = c->arg, .addr = *from, .created = now, .last = now};
  memcpy(p->id, c->id, KP_RELAY_ID_LEN);
  memcpy(p->reveal, c->reveal, KP_RELAY_SECRET_LEN);
  memcpy(p->commit, c->commit, KP_RELAY_SECRET_LEN);
  r->stats.pending++;
  return KP_RELAY_DROP;
}

static kp_relay_action_t make_session(kp_relay_t *r, pending_t *match, const kp_addr_t *from,
                                      const kp_relay_ctrl_t *c, uint64_t now, kp_addr_t *other,
                                      uint8_t *reply) {
  session_t *se = NULL;
  for (unsigned i = 0; i < r->cfg.max_sessions && !se; i++)
    if (!r->sessions[i].used) se = &r->sessions[i];
  if (!se || session_for_id(r, c->id)) return refuse(r, KP_RELAY_REFUSE_FULL, c->id, reply);
  uint32_t idx = (uint32_t)(se - r->sessions);
  *se = (session_t){.used = true, .created = now, .last = now};
  memcpy(se->id, c->id, KP_RELAY_ID_LEN);
  se->side[0] = match->addr;
  se->side[1] = *from;
  se->client_side = c->arg == 0 ? 1 : 0;
  kp_bucket_init(&se->bucket[0], r->cfg.session_rate, now);
  kp_bucket_init(&se->bucket[1], r->cfg.session_rate, now);
  index_add(r, idx, 0);
  index_add(r, idx, 1);
  drop_pending(r, match);
  /* Other half pairs of the two addresses are void now. */
  forget_pending(r, &se->side[0]);
  forget_pending(r, &se->side[1]);
  r->stats.sessions++;
  r->stats.paired++;
  paired_reply(se, reply);
  *other = se->side[0];
  return KP_RELAY_REPLY_BOTH;
}

static kp_relay_action_t on_pair(kp_relay_t *r, const kp_addr_t *from, const kp_relay_ctrl_t *c,
                                 uint64_t now, kp_addr_t *other, uint8_t *reply) {
  slot_t *s = index_find(r, from);
  if (s) {
    kp_relay_action_t a = pair_from_paired(r, s, c, now, reply);
    if (a != KP_RELAY_DROP) return a;
  }
  /* The relay's own IP is its TCP allocations': rated and capped per link
   * there, since many peers share it. */
  bool own = r->own_ip.family && kp_addr_same_ip(from, &r->own_ip);
  if (!own && !kp_ratelimit_take(&r->pair_rate, from, 1, now, NULL))
    return refuse(r, KP_RELAY_REFUSE_ATTEMPTS, c->id, reply);
  /* Full: both peers hear it on their first PAIR, not one of them never. */
  if (r->stats.sessions >= r->cfg.max_sessions)
    return refuse(r, KP_RELAY_REFUSE_FULL, c->id, reply);
  pending_t *match = NULL, *free_slot = NULL, *oldest = NULL;
  for (unsigned i = 0; i < r->cfg.max_pending; i++) {
    pending_t *p = &r->pending[i];
    if (!p->used) {
      if (!free_slot) free_slot = p;
      continue;
    }
    if (!oldest || p->created < oldest->created) oldest = p;
    if (!sodium_memcmp(p->id, c->id, KP_RELAY_ID_LEN)) match = p;
  }
  if (!match) return wait_half(r, free_slot, oldest, from, c, now, reply);
  if (kp_addr_eq(&match->addr, from)) {
    /* A retransmission (an address never pairs with itself). */
    match->last = now;
    return KP_RELAY_DROP;
  }
  if (match->role == c->arg) {
    /* The same half again, from elsewhere: a copy, or the peer after its
     * NAT rebound. The waiting address keeps its place while it is alive;
     * only one that has gone quiet may be replaced. */
    if (now - match->last >= PENDING_SILENT_MS &&
        !sodium_memcmp(match->reveal, c->reveal, KP_RELAY_SECRET_LEN)) {
      match->addr = *from;
      match->last = now;
    }
    return KP_RELAY_DROP;
  }
  if (!halves_match(match, c)) {
    /* Someone who saw one half cannot make the other. */
    r->stats.pair_mismatched++;
    return KP_RELAY_DROP;
  }
  /* The waiting half paired elsewhere since: an address is in at most one
   * session (the index holds each once, so it can never fill). */
  if (index_find(r, &match->addr)) {
    drop_pending(r, match);
    return refuse(r, KP_RELAY_REFUSE_FULL, c->id, reply);
  }
  if (!own && (sessions_of(r, from) >= r->cfg.sessions_per_ip ||
               sessions_of(r, &match->addr) >= r->cfg.sessions_per_ip))
    return refuse(r, KP_RELAY_REFUSE_IP_LIMIT, c->id, reply);
  return make_session(r, match, from, c, now, other, reply);
}

kp_relay_action_t kp_relay_input(kp_relay_t *r, const kp_addr_t *from, const uint8_t *data,
                                 size_t len, uint64_t now, kp_addr_t *to, kp_addr_t *other,
                                 uint8_t reply[KP_RELAY_CTRL_LEN]) {
  kp_relay_ctrl_t c;
  *to = *from;
  if (kp_relay_is_ctrl(data, len) && !kp_relay_ctrl_decode(data, len, &c) &&
      c.type == KP_RELAY_PAIR)
    return on_pair(r, from, &c, now, other, reply);
  slot_t *s = index_find(r, from);
  if (!s) return kp_relay_is_ctrl(data, len) ? KP_RELAY_DROP : KP_RELAY_NOT_MINE;
  session_t *se = &r->sessions[s->session - 1];
  if (!kp_bucket_take(&se->bucket[s->side], r->cfg.session_rate, r->cfg.session_rate, len, now) ||
      !kp_relay_charge(r, len, now)) {
    r->stats.dropped_rate++;
    return KP_RELAY_DROP;
  }
  se->last = now;
  *to = se->side[1 - s->side];
  r->stats.forwarded++;
  r->stats.forwarded_bytes += len;
  return KP_RELAY_FORWARD;
}

bool kp_relay_charge(kp_relay_t *r, size_t bytes, uint64_t now) {
  return kp_bucket_take(&r->total, r->cfg.total_rate, r->cfg.total_rate, bytes, now);
}

uint64_t kp_relay_tick(kp_relay_t *r, uint64_t now) {
  uint64_t next = UINT64_MAX;
  for (unsigned i = 0; i < r->cfg.max_sessions; i++) {
    session_t *se = &r->sessions[i];
    if (!se->used) continue;
    uint64_t idle_at = se->last + r->cfg.idle_ms, end_at = se->created + r->cfg.max_lifetime_ms;
    if (now >= end_at) {
      r->stats.expired_lifetime++;
      session_end(r, se);
    } else if (now >= idle_at) {
      r->stats.expired_idle++;
      session_end(r, se);
    } else {
      next = idle_at < next ? idle_at : next;
      next = end_at < next ? end_at : next;
    }
  }
  for (unsigned i = 0; i < r->cfg.max_pending; i++) {
    pending_t *p = &r->pending[i];
    if (!p->used) continue;
    if (now >= p->created + r->cfg.pending_ms) {
      drop_pending(r, p);
    } else if (p->created + r->cfg.pending_ms < next) {
      next = p->created + r->cfg.pending_ms;
    }
  }
  return next;
}

void kp_relay_forget(kp_relay_t *r, const kp_addr_t *addr) {
  slot_t *s = index_find(r, addr);
  if (s) session_end(r, &r->sessions[s->session - 1]);
  forget_pending(r, addr);
}

void kp_relay_set_own_ip(kp_relay_t *r, const kp_addr_t *ip) {
  r->own_ip = *ip;
}

void kp_relay_stats(const kp_relay_t *r, kp_relay_stats_t *out) {
  *out = r->stats;
}

int kp_relay_new(const kp_relay_config_t *cfg, const kp_rng_t *rng, kp_relay_t **out) {
  *out = NULL;
  if (!rng || !rng->fill) return KP_EINVAL;
  kp_relay_config_t c;
  if (cfg) {
    c = *cfg;
  } else {
    kp_relay_config_defaults(&c);
  }
  if (!c.max_sessions || c.max_sessions > (1u << 24) || !c.max_pending || !c.session_rate ||
      !c.total_rate || !c.pair_rate || !c.sessions_per_ip || !c.pending_per_ip)
    return KP_ECONFIG;
  kp_relay_t *r = kp_calloc(1, sizeof(*r));
  if (!r) return KP_ENOMEM;
  r->cfg = c;
  size_t cap = 4;
  while (cap < (size_t)c.max_sessions * 4) cap <<= 1; /* two addresses per session, half full */
  r->index_mask = cap - 1;
  r->sessions = kp_calloc(c.max_sessions, sizeof(*r->sessions));
  r->pending = kp_calloc(c.max_pending, sizeof(*r->pending));
  r->index = kp_calloc(cap, sizeof(*r->index));
  uint8_t rate_key[KP_RATELIMIT_KEY_LEN];
  kp_rng_fill(rng, r->hash_key, sizeof(r->hash_key));
  kp_rng_fill(rng, rate_key, sizeof(rate_key));
  if (!r->sessions || !r->pending || !r->index ||
      kp_ratelimit_init(&r->pair_rate, PAIR_SENDERS, c.pair_rate, c.pair_rate, rate_key)) {
    kp_relay_free(r);
    return KP_ENOMEM;
  }
  kp_bucket_init(&r->total, c.total_rate, 0);
  *out = r;
  return 0;
}

void kp_relay_free(kp_relay_t *r) {
  if (!r) return;
  if (r->sessions) sodium_memzero(r->sessions, r->cfg.max_sessions * sizeof(*r->sessions));
  if (r->pending) sodium_memzero(r->pending, r->cfg.max_pending * sizeof(*r->pending));
  kp_free(r->sessions);
  kp_free(r->pending);
  kp_free(r->index);
  kp_ratelimit_destroy(&r->pair_rate);
  sodium_memzero(r, sizeof(*r));
  kp_free(r);
}
