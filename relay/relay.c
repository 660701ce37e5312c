/* The blind relay's state machine (relay.h). Sessions live in a fixed
 * table; an open-addressing index maps each paired address to its session,
 * so forwarding costs one keyed hash and a probe or two. */
#include "relay/relay.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"

#define RATE_SLOTS 256

typedef struct bucket_s {
  uint64_t tokens; /* bytes */
  uint64_t at;     /* ms of the last refill */
} bucket_t;

typedef struct session_s {
  bool used;
  uint8_t token[KP_RELAY_TOKEN_LEN];
  kp_addr_t side[2];
  uint8_t client_side; /* which side paired as the client */
  bucket_t bucket[2];  /* bytes from side i */
  uint64_t created, last;
} session_t;

typedef struct pending_s {
  bool used;
  uint8_t role;
  uint8_t token[KP_RELAY_TOKEN_LEN];
  kp_addr_t addr;
  uint64_t created;
} pending_t;

typedef struct slot_s {
  uint32_t session; /* index + 1; 0: empty */
  uint8_t side;
} slot_t;

typedef struct rate_slot_s {
  uint64_t second;
  unsigned count;
} rate_slot_t;

#define RELAY_STALE_MS 60000 /* a paired address silent this long may pair anew */

struct kp_relay_s {
  kp_relay_config_t cfg;
  session_t *sessions;
  pending_t *pending;
  slot_t *index;
  size_t index_mask;
  uint8_t hash_key[crypto_shorthash_KEYBYTES];
  rate_slot_t rate[RATE_SLOTS];
  bucket_t total;
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
}

/* ---- Wire ----------------------------------------------------------------------- */

bool kp_relay_is_ctrl(const uint8_t *data, size_t len) {
  return len == KP_RELAY_CTRL_LEN && data[0] == KP_RELAY_MAGIC;
}

#define LINK_OFFSET (3 + KP_RELAY_TOKEN_LEN)
#define LINK_SLOT (1 + KP_ADDR_COMPACT_MAX)

void kp_relay_ctrl_encode(const kp_relay_ctrl_t *c, uint8_t out[KP_RELAY_CTRL_LEN]) {
  memset(out, 0, KP_RELAY_CTRL_LEN);
  out[0] = KP_RELAY_MAGIC;
  out[1] = c->type;
  out[2] = c->arg;
  memcpy(out + 3, c->token, KP_RELAY_TOKEN_LEN);
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
  memcpy(out->token, data + 3, KP_RELAY_TOKEN_LEN);
  for (int i = 0; i < 2; i++) {
    const uint8_t *slot = data + LINK_OFFSET + i * LINK_SLOT;
    if (slot[0] && kp_addr_decode_compact(&out->link[i], slot + 1, slot[0])) return -1;
  }
  return 0;
}

void kp_relay_token(const uint8_t path_secret[64], uint8_t token[KP_RELAY_TOKEN_LEN]) {
  static const char label[] = "kadpunch/relay-pair/v2";
  crypto_generichash(token, KP_RELAY_TOKEN_LEN, (const uint8_t *)label, sizeof(label) - 1,
                     path_secret, 64);
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

static session_t *session_for_token(kp_relay_t *r, const uint8_t *token) {
  for (unsigned i = 0; i < r->cfg.max_sessions; i++)
    if (r->sessions[i].used && !sodium_memcmp(r->sessions[i].token, token, KP_RELAY_TOKEN_LEN))
      return &r->sessions[i];
  return NULL;
}

static bool take(bucket_t *b, uint64_t rate, uint64_t bytes, uint64_t now) {
  /* One second's worth of burst. */
  if (now > b->at) {
    uint64_t add = (now - b->at) * rate / 1000;
    b->tokens = b->tokens + add > rate ? rate : b->tokens + add;
    b->at = now;
  }
  if (b->tokens < bytes) return false;
  b->tokens -= bytes;
  return true;
}

static bool pair_rate_ok(kp_relay_t *r, const kp_addr_t *from, uint64_t now) {
  uint8_t b[KP_ADDR_COMPACT_MAX], h[crypto_shorthash_BYTES];
  size_t n = kp_addr_encode_compact(from, b);
  size_t ip_len = from->family == KP_AF_INET6 ? 8 : n - 2; /* the IP (IPv6: its /64) */
  crypto_shorthash(h, b, ip_len, r->hash_key);
  rate_slot_t *s = &r->rate[h[0] % RATE_SLOTS];
  if (s->second != now / 1000) s->second = now / 1000, s->count = 0;
  return ++s->count <= r->cfg.pair_rate;
}

static void ctrl_reply(uint8_t type, uint8_t arg, const uint8_t *token, uint8_t *out) {
  kp_relay_ctrl_t c = {.type = type, .arg = arg};
  memcpy(c.token, token, KP_RELAY_TOKEN_LEN);
  kp_relay_ctrl_encode(&c, out);
}

/* PAIRED tells each side both links: where to punch to later. */
static void paired_reply(const session_t *se, uint8_t *out) {
  kp_relay_ctrl_t c = {.type = KP_RELAY_PAIRED};
  memcpy(c.token, se->token, KP_RELAY_TOKEN_LEN);
  c.link[0] = se->side[se->client_side];
  c.link[1] = se->side[1 - se->client_side];
  kp_relay_ctrl_encode(&c, out);
}

static kp_relay_action_t refuse(kp_relay_t *r, kp_relay_refusal_t why, const uint8_t *token,
                                uint8_t *reply) {
  if (why == KP_RELAY_REFUSE_FULL) r->stats.refused_full++;
  if (why == KP_RELAY_REFUSE_ATTEMPTS) r->stats.refused_attempts++;
  ctrl_reply(KP_RELAY_REFUSED, (uint8_t)why, token, reply);
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

static kp_relay_action_t on_pair(kp_relay_t *r, const kp_addr_t *from, const kp_relay_ctrl_t *c,
                                 uint64_t now, kp_addr_t *other, uint8_t *reply) {
  slot_t *s = index_find(r, from);
  if (s) {
    /* A retransmission once paired: the same answer. Another token from a
     * paired address would make its traffic ambiguous. */
    session_t *se = &r->sessions[s->session - 1];
    if (!sodium_memcmp(se->token, c->token, KP_RELAY_TOKEN_LEN)) {
      paired_reply(se, reply);
      return KP_RELAY_REPLY;
    }
    /* A session silent this long is gone (its peers keep even a direct
     * connection's relay session alive every 20 s), and a NAT has given
     * the port to someone new: make way. */
    if (now - se->last < RELAY_STALE_MS) return refuse(r, KP_RELAY_REFUSE_FULL, c->token, reply);
    session_end(r, se);
  }
  bool own = r->own_ip.family && kp_addr_same_ip(from, &r->own_ip);
  if (!own && !pair_rate_ok(r, from, now))
    return refuse(r, KP_RELAY_REFUSE_ATTEMPTS, c->token, reply);
  /* Full: both peers hear it on their first PAIR, not one of them never. */
  if (r->stats.sessions >= r->cfg.max_sessions)
    return refuse(r, KP_RELAY_REFUSE_FULL, c->token, reply);
  pending_t *match = NULL, *free_slot = NULL, *oldest = NULL;
  for (unsigned i = 0; i < r->cfg.max_pending; i++) {
    pending_t *p = &r->pending[i];
    if (!p->used) {
      if (!free_slot) free_slot = p;
      continue;
    }
    if (!oldest || p->created < oldest->created) oldest = p;
    if (!sodium_memcmp(p->token, c->token, KP_RELAY_TOKEN_LEN)) match = p;
  }
  if (match && (kp_addr_eq(&match->addr, from) || match->role == c->arg)) {
    match->addr = *from; /* a retransmission, maybe from a rebound port */
    return KP_RELAY_DROP;
  }
  if (!match) {
    /* First of the two: wait for the other (it retransmits until then). */
    pending_t *p = free_slot ? free_slot : oldest;
    if (!free_slot) r->stats.pending--; /* the oldest half pair makes room */
    *p = (pending_t){.used = true, .role = c->arg, .addr = *from, .created = now};
    memcpy(p->token, c->token, KP_RELAY_TOKEN_LEN);
    r->stats.pending++;
    return KP_RELAY_DROP;
  }
  /* The waiting half paired elsewhere since: an address is in at most one
   * session (the index holds each once, so it can never fill). */
  if (index_find(r, &match->addr)) {
    sodium_memzero(match, sizeof(*match));
    r->stats.pending--;
    return refuse(r, KP_RELAY_REFUSE_FULL, c->token, reply);
  }
  session_t *se = NULL;
  for (unsigned i = 0; i < r->cfg.max_sessions && !se; i++)
    if (!r->sessions[i].used) se = &r->sessions[i];
  if (!se) return refuse(r, KP_RELAY_REFUSE_FULL, c->token, reply);
  if (session_for_token(r, c->token)) return refuse(r, KP_RELAY_REFUSE_FULL, c->token, reply);
  uint32_t idx = (uint32_t)(se - r->sessions);
  *se = (session_t){.used = true, .created = now, .last = now};
  memcpy(se->token, c->token, KP_RELAY_TOKEN_LEN);
  se->side[0] = match->addr;
  se->side[1] = *from;
  se->client_side = c->arg == 0 ? 1 : 0;
  se->bucket[0] = se->bucket[1] = (bucket_t){r->cfg.session_rate, now};
  index_add(r, idx, 0);
  index_add(r, idx, 1);
  sodium_memzero(match, sizeof(*match));
  r->stats.pending--;
  /* Other half pairs of the two addresses are void now. */
  forget_pending(r, &se->side[0]);
  forget_pending(r, &se->side[1]);
  r->stats.sessions++;
  r->stats.paired++;
  paired_reply(se, reply);
  *other = se->side[0];
  return KP_RELAY_REPLY_BOTH;
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
  if (!take(&se->bucket[s->side], r->cfg.session_rate, len, now) ||
      !take(&r->total, r->cfg.total_rate, len, now)) {
    r->stats.dropped_rate++;
    return KP_RELAY_DROP;
  }
  se->last = now;
  *to = se->side[1 - s->side];
  r->stats.forwarded++;
  r->stats.forwarded_bytes += len;
  return KP_RELAY_FORWARD;
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
      sodium_memzero(p, sizeof(*p));
      r->stats.pending--;
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

int kp_relay_new(const kp_relay_config_t *cfg, kp_relay_t **out) {
  *out = NULL;
  kp_relay_config_t c;
  if (cfg) {
    c = *cfg;
  } else {
    kp_relay_config_defaults(&c);
  }
  if (!c.max_sessions || c.max_sessions > (1u << 24) || !c.max_pending || !c.session_rate ||
      !c.total_rate || !c.pair_rate)
    return KP_ECONFIG;
  kp_relay_t *r = kp_calloc(1, sizeof(*r));
  if (!r) return UV_ENOMEM;
  r->cfg = c;
  size_t cap = 4;
  while (cap < (size_t)c.max_sessions * 4) cap <<= 1; /* two addresses per session, half full */
  r->index_mask = cap - 1;
  r->sessions = kp_calloc(c.max_sessions, sizeof(*r->sessions));
  r->pending = kp_calloc(c.max_pending, sizeof(*r->pending));
  r->index = kp_calloc(cap, sizeof(*r->index));
  if (!r->sessions || !r->pending || !r->index) {
    kp_relay_free(r);
    return UV_ENOMEM;
  }
  randombytes_buf(r->hash_key, sizeof(r->hash_key));
  r->total = (bucket_t){c.total_rate, 0};
  *out = r;
  return 0;
}

void kp_relay_free(kp_relay_t *r) {
  if (!r) return;
  if (r->sessions) sodium_memzero(r->sessions, r->cfg.max_sessions * sizeof(*r->sessions));
  kp_free(r->sessions);
  kp_free(r->pending);
  kp_free(r->index);
  kp_free(r);
}
