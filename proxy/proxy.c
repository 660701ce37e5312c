/* SPDX-License-Identifier: MIT */
/* The proxy's state machine (proxy.h; docs/protocol.md, "Proxying"). */
#include "proxy/proxy.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"
#include "common/mp.h"
#include "common/ratelimit.h"
#include "holepunch/hs_noise.h"

#define PROLOGUE "kadpunch/proxy/v1"
#define TICK_MS 1000
#define LEFT_MS 30000 /* a session unheard this long was left by its peer (it pings every 15 s) */
#define WELCOME_MAX (KP_PROXY_WELCOME_HEAD + KP_PROXY_WELCOME_PAYLOAD + KP_NOISE_MSG2_OVERHEAD)
#define DHT_MAX 1200
#define NO_ALLOC 0xffff
/* Datagrams to and from an address before the peer is given a token for it
 * (a binding): a DHT node's few never are, a connection's are at once. */
#define BIND_AFTER 16
/* An unconfirmed BIND goes again after this, when the peer still seals. */
#define BIND_RESEND_MS 1000
/* A session hears at most one UNBIND per this for PASSes with stale tokens,
 * and only for a PASS at least as big as the UNBIND (no amplification). */
#define UNBIND_EVERY_MS 200
#define UNBIND_LEN (KP_PROXY_DATA_HEAD + 10 + KP_PROXY_TAG_LEN)

enum { FREE = 0, HALF_OPEN = 1, OPEN = 2 };

typedef struct session_s {
  uint8_t state;
  uint32_t index, peer_index;
  kp_addr_t addr;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  uint8_t hello_e[32]; /* the HELLO's ephemeral: a retransmission has the same */
  uint8_t welcome[WELCOME_MAX];
  uint8_t welcome_len;
  kp_proxy_keys_t keys;
  uint64_t created, heard, unbind_at;
  uint16_t ch[KP_PROXY_CHANNELS]; /* allocation slots, NO_ALLOC */
} session_t;

/* An IP the allocation sent to: what arrives from it passes. */
typedef struct permit_s {
  kp_addr_t ip; /* port 0 */
  uint64_t used;
  uint8_t unproven; /* small datagrams sent to it before it answered */
  bool answered;
} permit_t;

typedef struct proven_s {
  kp_addr_t addr;
  uint64_t used;
  /* The binding (docs/protocol.md, "PASS"): once BIND_AFTER datagrams
   * went to or came from this address, the peer is given a token for it,
   * and its datagrams go unsealed both ways. The token names this entry
   * (random high bits, then the allocation's slot and the entry's index),
   * so a PASS finds it without a search. */
  uint64_t token; /* 0: not bound */
  uint64_t bind_sent;
  uint16_t uses;
  bool confirmed;     /* a PASS came with the token: the peer has it, arrivals go as PASS */
  uint32_t scope_gen; /* dest_ok held for addr at this px->scope_gen */
} proven_t;

typedef struct alloc_s {
  bool used;
  uint16_t session;
  uint8_t channel;
  kp_addr_t bound;
  uint64_t created, expires, carried;
  kp_bucket_t out_bytes, out_pkts, in_bytes, in_pkts, unproven;
  permit_t *permits; /* cfg.permits, then cfg.proven proven_t: one block */
  proven_t *proven;
  unsigned proven_last, permit_last; /* where the last match was: forwarding hits it */
} alloc_t;

struct kp_proxy_s {
  kp_proxy_config_t cfg;
  kp_keypair_t kp;
  kp_rng_t rng;
  kp_proxy_io_t io;
  session_t *sessions;
  alloc_t *allocs;
  unsigned alloc_count;
  uint8_t (*allow)[KP_PUBLIC_KEY_LEN];
  kp_ratelimit_t hello_rl;
  kp_bucket_t total;
  /* Our socket's address and our public one, by family (fam_index): a
   * dual-stack proxy lends addresses of either family, whichever family
   * the peer's session runs on. */
  kp_addr_t bound[2], public_addr[2];
  uint8_t *alloc_ports; /* bitmaps, by family: ports allocations are bound to */
  /* Moves when what dest_ok answers may change (our addresses, a port
   * given back): a binding checks its address again then, not per PASS. */
  uint32_t scope_gen;
  kp_proxy_stats_t st;
};

void kp_proxy_config_defaults(kp_proxy_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->max_sessions = 256;
  cfg->max_allocs = 512;
  cfg->allocs_per_key = 4;
  cfg->per_ip = 16;
  cfg->hello_rate = 10;
  cfg->lifetime_s = 600;
  cfg->max_lifetime_s = 86400;
  cfg->alloc_rate = 8u << 20;
  cfg->alloc_pps = 8192;
  cfg->total_rate = 64u << 20;
  cfg->idle_ms = 60000;
  cfg->half_open_ms = 10000;
  cfg->permits = 64;
  cfg->proven = 32;
  cfg->unproven_count = 8;
  cfg->unproven_max_len = 128;
  cfg->unproven_rate = 200;
}

/* ---- Addresses --------------------------------------------------------------------------------
 */

static bool is_multicast(const kp_addr_t *a) {
  if (a->family == KP_AF_INET) return (a->ip[0] & 0xf0) == 0xe0 || a->ip[0] == 255;
  return a->ip[0] == 0xff;
}

/* An IPv6 address a translator on the proxy's network may turn into an
 * IPv4 one: NAT64's well-known prefix 64:ff9b::/96 (RFC 6052) and 6to4's
 * 2002::/16 (RFC 3056); *v4 is that address. */
static bool embeds_v4(const kp_addr_t *a, kp_addr_t *v4) {
  static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b};
  const uint8_t *ip = NULL;
  if (a->family != KP_AF_INET6) return false;
  if (!memcmp(a->ip, nat64, sizeof(nat64)))
    ip = a->ip + 12;
  else if (a->ip[0] == 0x20 && a->ip[1] == 0x02)
    ip = a->ip + 2;
  if (!ip) return false;
  memset(v4, 0, sizeof(*v4));
  v4->family = KP_AF_INET;
  memcpy(v4->ip, ip, 4);
  v4->port = a->port;
  return true;
}

/* NAT64's local-use prefix 64:ff9b:1::/48 (RFC 8215): whatever the
 * network's translator maps it to, a LAN's business. */
static bool is_local_nat64(const kp_addr_t *a) {
  static const uint8_t prefix[6] = {0, 0x64, 0xff, 0x9b, 0, 1};
  return a->family == KP_AF_INET6 && !memcmp(a->ip, prefix, sizeof(prefix));
}

static bool is_public(const kp_addr_t *a) {
  return kp_addr_is_set(a) && !kp_addr_is_any(a) && !is_multicast(a) && !kp_addr_is_loopback(a) &&
         !kp_addr_is_private(a) && !is_local_nat64(a);
}

bool kp_proxy_in_scope(const kp_addr_t *self, const kp_addr_t *to) {
  if (!kp_addr_is_set(to) || !to->port || kp_addr_is_any(to) || is_multicast(to)) return false;
  if (self->family != to->family) return false;
  kp_addr_t v4;
  bool embeds = embeds_v4(to, &v4);
  if (embeds && (kp_addr_is_any(&v4) || is_multicast(&v4))) return false;
  bool self_loop = kp_addr_is_loopback(self), self_priv = kp_addr_is_private(self);
  if (kp_addr_is_loopback(to) || (embeds && kp_addr_is_loopback(&v4))) return self_loop;
  if (kp_addr_is_private(to) || is_local_nat64(to) || (embeds && kp_addr_is_private(&v4)))
    return self_loop || self_priv;
  return true;
}

/* One host: an IPv4 address, an IPv6 /64. */
static bool same_host(const kp_addr_t *a, const kp_addr_t *b) {
  if (a->family != b->family) return false;
  return !memcmp(a->ip, b->ip, a->family == KP_AF_INET ? 4 : 8);
}

static unsigned fam_index(uint8_t family) {
  return family == KP_AF_INET6;
}

static uint8_t *port_byte(const kp_proxy_t *px, const kp_addr_t *a) {
  return &px->alloc_ports[fam_index(a->family) * (65536 / 8) + a->port / 8];
}

static bool port_taken(const kp_proxy_t *px, const kp_addr_t *a) {
  return *port_byte(px, a) >> (a->port % 8) & 1;
}

/* A destination allocation a may aim at (before the proof rules): of its
 * family, in the scope of our address of that family. */
static bool dest_ok(const kp_proxy_t *px, const alloc_t *a, const kp_addr_t *to) {
  if (to->family != a->bound.family) return false;
  const kp_addr_t *bound = &px->bound[fam_index(to->family)];
  const kp_addr_t *pub = &px->public_addr[fam_index(to->family)];
  const kp_addr_t *self = kp_addr_is_any(bound) && pub->family ? pub : bound;
  if (!kp_proxy_in_scope(self, to)) return false;
  /* Our own IPv4 address through a translator: never. */
  kp_addr_t v4;
  const kp_addr_t *bound4 = &px->bound[0], *pub4 = &px->public_addr[0];
  if (embeds_v4(to, &v4) && ((bound4->family && kp_addr_same_ip(&v4, bound4)) ||
                             (pub4->family && kp_addr_same_ip(&v4, pub4))))
    return false;
  bool own = kp_addr_same_ip(to, bound) || (pub->family && kp_addr_same_ip(to, pub));
  if (!own && !kp_addr_is_loopback(to)) return true;
  /* Our own IP: the DHT port, and the allocations (two peers of one
   * proxy talk as any two peers do; each datagram is still one a peer
   * asked for, so nothing loops); on a public address nothing else (our
   * own services are not the peers'). */
  if (to->port == bound->port || port_taken(px, to)) return true;
  return kp_addr_is_loopback(self) || kp_addr_is_private(self);
}

/* ---- Sessions ---------------------------------------------------------------------------------
 */

static session_t *session_of(kp_proxy_t *px, uint32_t index) {
  unsigned slot = index & 0xffff;
  if (slot >= px->cfg.max_sessions) return NULL;
  session_t *s = &px->sessions[slot];
  return s->state != FREE && s->index == index ? s : NULL;
}

static void send_body(kp_proxy_t *px, session_t *s, const kp_proxy_body_t *b) {
  uint8_t body[KP_PROXY_MAX_DATAGRAM], out[KP_PROXY_MAX_DATAGRAM];
  size_t n = kp_proxy_body_encode(b, body, sizeof(body));
  if (!n) return;
  size_t m = kp_proxy_seal(&s->keys, s->peer_index, body, n, out, sizeof(out));
  if (m) px->io.send(px->io.ctx, &s->addr, out, m);
}

static void close_alloc(kp_proxy_t *px, unsigned slot, uint8_t reason, bool notify) {
  alloc_t *a = &px->allocs[slot];
  if (!a->used) return;
  session_t *s = &px->sessions[a->session];
  if (notify) {
    kp_proxy_body_t b = {.op = KP_PROXY_OP_CLOSE, .channel = a->channel, .reason = reason};
    send_body(px, s, &b);
  }
  s->ch[a->channel] = NO_ALLOC;
  px->scope_gen++;
  px->io.alloc_close(px->io.ctx, slot);
  *port_byte(px, &a->bound) &= (uint8_t) ~(1u << (a->bound.port % 8));
  kp_free(a->permits);
  memset(a, 0, sizeof(*a));
  px->alloc_count--;
  px->st.allocs_closed++;
}

static void end_session(kp_proxy_t *px, session_t *s) {
  for (unsigned c = 0; c < KP_PROXY_CHANNELS; c++)
    if (s->ch[c] != NO_ALLOC) close_alloc(px, s->ch[c], 0, false);
  sodium_memzero(&s->keys, sizeof(s->keys));
  memset(s, 0, sizeof(*s));
}

static unsigned host_sessions(const kp_proxy_t *px, const kp_addr_t *from) {
  unsigned n = 0;
  for (unsigned i = 0; i < px->cfg.max_sessions; i++)
    n += px->sessions[i].state != FREE && same_host(&px->sessions[i].addr, from);
  return n;
}

/* A free session slot; else the oldest half-open one (a flood of HELLOs
 * under fresh keys displaces only sessions nobody has used yet); else
 * none. */
static session_t *take_session(kp_proxy_t *px) {
  session_t *oldest = NULL;
  for (unsigned i = 0; i < px->cfg.max_sessions; i++) {
    session_t *s = &px->sessions[i];
    if (s->state == FREE) return s;
    if (s->state == HALF_OPEN && (!oldest || s->created < oldest->created)) oldest = s;
  }
  if (oldest) end_session(px, oldest);
  return oldest;
}

static bool allowed(const kp_proxy_t *px, const uint8_t key[KP_PUBLIC_KEY_LEN]) {
  if (!px->allow) return true;
  for (size_t i = 0; i < px->cfg.allow_count; i++)
    if (!sodium_memcmp(px->allow[i], key, KP_PUBLIC_KEY_LEN)) return true;
  return false;
}

static void refuse_plain(kp_proxy_t *px, const kp_addr_t *to, uint32_t receiver, uint8_t reason) {
  uint8_t out[KP_PROXY_REFUSED_LEN];
  kp_proxy_refused_encode(receiver, reason, out);
  px->st.refused[reason]++;
  px->io.send(px->io.ctx, to, out, sizeof(out));
}

/* A retransmitted HELLO (same ephemeral) gets the same WELCOME, from the
 * address it came from only: a copy raced from elsewhere gets nothing. */
static bool hello_again(kp_proxy_t *px, const kp_addr_t *from, const kp_proxy_dgram_t *d) {
  for (unsigned i = 0; i < px->cfg.max_sessions; i++) {
    session_t *s = &px->sessions[i];
    if (s->state == FREE || sodium_memcmp(s->hello_e, d->noise, 32)) continue;
    if (kp_addr_eq(&s->addr, from) && s->state == HALF_OPEN) {
      px->st.retransmits++;
      px->io.send(px->io.ctx, from, s->welcome, s->welcome_len);
    } else {
      px->st.replayed++;
    }
    return true;
  }
  return false;
}

static uint8_t admit(kp_proxy_t *px, const kp_addr_t *from, const uint8_t *payload, size_t len,
                     kp_noise_t *st, session_t **out) {
  *out = NULL;
  if (len != KP_PROXY_HELLO_PAYLOAD || payload[0] != KP_PROXY_VERSION)
    return KP_PROXY_VERSION_REFUSED;
  if (!allowed(px, payload + 1)) return KP_PROXY_NOT_ALLOWED;
  if (host_sessions(px, from) >= px->cfg.per_ip) return KP_PROXY_IP_LIMIT;
  if (!(*out = take_session(px))) return KP_PROXY_FULL;
  (void)st;
  return KP_PROXY_OK;
}

static void on_hello(kp_proxy_t *px, const kp_addr_t *from, const kp_proxy_dgram_t *d,
                     uint64_t now) {
  px->st.hellos++;
  if (!kp_ratelimit_take(&px->hello_rl, from, 1, now, NULL)) {
    refuse_plain(px, from, d->sender, KP_PROXY_RATE);
    return;
  }
  if (d->noise_len >= 32 && hello_again(px, from, d)) return;
  kp_noise_t st;
  uint8_t payload[64];
  size_t plen = 0;
  kp_noise_init_responder(&st, &px->kp, (const uint8_t *)PROLOGUE, sizeof(PROLOGUE) - 1);
  if (kp_noise_read_msg1(&st, d->noise, d->noise_len, payload, sizeof(payload), &plen)) {
    px->st.forged++;
    kp_noise_clear(&st);
    return;
  }
  if (plen == KP_PROXY_HELLO_PAYLOAD && !kp_noise_remote_matches(&st, payload + 1)) {
    px->st.forged++; /* names a key its static key is not */
    kp_noise_clear(&st);
    return;
  }
  session_t *s;
  uint8_t reason = admit(px, from, payload, plen, &st, &s);
  uint8_t wp[KP_PROXY_WELCOME_PAYLOAD] = {reason,
                                          (uint8_t)(px->cfg.lifetime_s >> 24),
                                          (uint8_t)(px->cfg.lifetime_s >> 16),
                                          (uint8_t)(px->cfg.lifetime_s >> 8),
                                          (uint8_t)px->cfg.lifetime_s,
                                          KP_PROXY_CHANNELS,
                                          KP_PROXY_MAX_PAYLOAD >> 8,
                                          KP_PROXY_MAX_PAYLOAD & 0xff};
  uint8_t e[32], msg2[KP_PROXY_WELCOME_PAYLOAD + KP_NOISE_MSG2_OVERHEAD], out[WELCOME_MAX];
  size_t mlen = 0, olen = 0;
  kp_rng_fill(&px->rng, e, sizeof(e));
  uint32_t index = 0;
  if (s) index = (uint32_t)(kp_rng_u32(&px->rng) << 16) | (uint32_t)(s - px->sessions);
  if (!kp_noise_write_msg2(&st, e, wp, sizeof(wp), msg2, sizeof(msg2), &mlen))
    olen = kp_proxy_welcome_encode(d->sender, index, msg2, mlen, out, sizeof(out));
  sodium_memzero(e, sizeof(e));
  if (olen) px->io.send(px->io.ctx, from, out, olen);
  if (reason || !olen) {
    px->st.refused[reason]++;
    kp_noise_clear(&st);
    return;
  }
  kp_noise_split_t sp;
  kp_noise_split(&st, &sp);
  kp_noise_clear(&st);
  memset(s, 0, sizeof(*s));
  s->state = HALF_OPEN;
  s->index = index;
  s->peer_index = d->sender;
  s->addr = *from;
  memcpy(s->key, payload + 1, KP_PUBLIC_KEY_LEN);
  memcpy(s->hello_e, d->noise, 32);
  memcpy(s->welcome, out, olen);
  s->welcome_len = (uint8_t)olen;
  memcpy(s->keys.tx, sp.tx, 32);
  memcpy(s->keys.rx, sp.rx, 32);
  sodium_memzero(&sp, sizeof(sp));
  s->created = s->heard = now;
  for (unsigned c = 0; c < KP_PROXY_CHANNELS; c++) s->ch[c] = NO_ALLOC;
  px->st.welcomed++;
}

/* ---- Allocations ------------------------------------------------------------------------------
 */

static unsigned allocs_where(const kp_proxy_t *px, const session_t *like, bool by_key) {
  unsigned n = 0;
  for (unsigned i = 0; i < px->cfg.max_allocs; i++) {
    const alloc_t *a = &px->allocs[i];
    if (!a->used) continue;
    const session_t *s = &px->sessions[a->session];
    n += by_key ? !memcmp(s->key, like->key, KP_PUBLIC_KEY_LEN) : same_host(&s->addr, &like->addr);
  }
  return n;
}

/* Allocations held by sessions over family. */
static unsigned allocs_over(const kp_proxy_t *px, uint8_t family) {
  unsigned n = 0;
  for (unsigned i = 0; i < px->cfg.max_allocs; i++)
    n += px->allocs[i].used && px->sessions[px->allocs[i].session].addr.family == family;
  return n;
}

static void reply_opened(kp_proxy_t *px, session_t *s, const alloc_t *a, uint64_t now) {
  uint64_t left = a->expires > now ? (a->expires - now) / 1000 : 0;
  kp_proxy_body_t b = {.op = KP_PROXY_OP_OPENED,
                       .channel = a->channel,
                       .addr = a->bound,
                       .lifetime_s = (uint32_t)left};
  send_body(px, s, &b);
}

static uint64_t expiry(const kp_proxy_t *px, const alloc_t *a, uint64_t now) {
  uint64_t e = now + (uint64_t)px->cfg.lifetime_s * 1000;
  uint64_t cap = a->created + (uint64_t)px->cfg.max_lifetime_s * 1000;
  return e < cap ? e : cap;
}

/* A key at its cap may hold allocations in a session it has left: it
 * moved (to TCP, another address, a new session) and the old one fell
 * silent, to be ended only when idle_ms is over. A session of the key
 * that has not been heard for LEFT_MS, two of its peer's pings, is ended
 * now, for the one the key speaks from. Only the key's holder opens
 * sessions under it (Noise IK), so nobody else can end one this way; a
 * session that pings is never left. */
static bool end_left_session(kp_proxy_t *px, const session_t *s, uint64_t now) {
  for (unsigned i = 0; i < px->cfg.max_sessions; i++) {
    session_t *o = &px->sessions[i];
    if (o == s || o->state != OPEN || now - o->heard < LEFT_MS ||
        sodium_memcmp(o->key, s->key, KP_PUBLIC_KEY_LEN))
      continue;
    end_session(px, o);
    px->st.left_ended++;
    return true;
  }
  return false;
}

static uint8_t open_alloc(kp_proxy_t *px, session_t *s, uint8_t ch, uint8_t family, uint64_t now) {
  if (!px->bound[fam_index(family)].family) return KP_PROXY_FAMILY;
  while (allocs_where(px, s, true) >= px->cfg.allocs_per_key)
    if (!end_left_session(px, s, now)) return KP_PROXY_KEY_LIMIT;
  if (px->alloc_count >= px->cfg.max_allocs) return KP_PROXY_FULL;
  if (allocs_where(px, s, false) >= px->cfg.per_ip) return KP_PROXY_IP_LIMIT;
  /* A dual-stack proxy: sessions over one family hold at most three
   * quarters of the allocations, so a flood over IPv6 (where one
   * subscriber may hold many /64s) leaves IPv4's users room, and the
   * other way round. */
  if (px->bound[0].family && px->bound[1].family &&
      allocs_over(px, s->addr.family) >= px->cfg.max_allocs - px->cfg.max_allocs / 4)
    return KP_PROXY_FULL;
  unsigned slot = 0;
  while (slot < px->cfg.max_allocs && px->allocs[slot].used) slot++;
  if (slot == px->cfg.max_allocs) return KP_PROXY_FULL;
  alloc_t *a = &px->allocs[slot];
  size_t bytes = px->cfg.permits * sizeof(permit_t) + px->cfg.proven * sizeof(proven_t);
  if (!(a->permits = kp_calloc(1, bytes))) return KP_PROXY_FULL;
  a->proven = (proven_t *)(void *)(a->permits + px->cfg.permits);
  int err = px->io.alloc_open(px->io.ctx, slot, family, &a->bound);
  if (!err && a->bound.family != family) { /* the glue's mistake: not lent */
    px->io.alloc_close(px->io.ctx, slot);
    err = KP_EINVAL;
  }
  if (err) {
    memset(&a->bound, 0, sizeof(a->bound));
    kp_free(a->permits);
    a->permits = NULL;
    return KP_PROXY_FULL;
  }
  a->used = true;
  a->session = (uint16_t)(s - px->sessions);
  a->channel = ch;
  a->created = now;
  a->expires = expiry(px, a, now);
  kp_bucket_init(&a->out_bytes, px->cfg.alloc_rate, now);
  kp_bucket_init(&a->in_bytes, px->cfg.alloc_rate, now);
  kp_bucket_init(&a->out_pkts, px->cfg.alloc_pps, now);
  kp_bucket_init(&a->in_pkts, px->cfg.alloc_pps, now);
  kp_bucket_init(&a->unproven, px->cfg.unproven_rate * 2, now);
  *port_byte(px, &a->bound) |= (uint8_t)(1u << (a->bound.port % 8));
  s->ch[ch] = (uint16_t)slot;
  px->alloc_count++;
  px->st.allocs_opened++;
  reply_opened(px, s, a, now);
  return KP_PROXY_OK;
}

static permit_t *permit_find(alloc_t *a, unsigned n, const kp_addr_t *from) {
  permit_t *last = &a->permits[a->permit_last < n ? a->permit_last : 0];
  if (last->used && kp_addr_same_ip(&last->ip, from)) return last;
  for (unsigned i = 0; i < n; i++) {
    if (a->permits[i].used && kp_addr_same_ip(&a->permits[i].ip, from)) {
      a->permit_last = i;
      return &a->permits[i];
    }
  }
  return NULL;
}

/* The permit for to's IP, made (the least recently used making room). */
static permit_t *permit_make(alloc_t *a, unsigned n, const kp_addr_t *to, uint64_t now) {
  permit_t *p = permit_find(a, n, to), *lru = &a->permits[0];
  if (!p) {
    for (unsigned i = 0; i < n; i++)
      if (a->permits[i].used < lru->used) lru = &a->permits[i];
    p = lru;
    memset(p, 0, sizeof(*p));
    p->ip = *to;
    p->ip.port = 0;
  }
  p->used = now + 1; /* 0 means free */
  return p;
}

static proven_t *proven_find(alloc_t *a, unsigned n, const kp_addr_t *to) {
  proven_t *last = &a->proven[a->proven_last < n ? a->proven_last : 0];
  if (last->used && kp_addr_eq(&last->addr, to)) return last;
  for (unsigned i = 0; i < n; i++) {
    if (a->proven[i].used && kp_addr_eq(&a->proven[i].addr, to)) {
      a->proven_last = i;
      return &a->proven[i];
    }
  }
  return NULL;
}

/* The peer's binding for a proven address is gone: it seals again. */
static void unbind(kp_proxy_t *px, alloc_t *a, proven_t *p) {
  kp_proxy_body_t b = {.op = KP_PROXY_OP_UNBIND, .channel = a->channel, .token = p->token};
  send_body(px, &px->sessions[a->session], &b);
  p->token = 0;
  p->confirmed = false;
}

/* from answered the allocation: proven (the least recently used entry
 * making room, its binding ended). */
static proven_t *prove(kp_proxy_t *px, alloc_t *a, const kp_addr_t *from, uint64_t now) {
  unsigned n = px->cfg.proven;
  proven_t *p = proven_find(a, n, from), *lru = &a->proven[0];
  if (!p) {
    for (unsigned i = 0; i < n; i++)
      if (a->proven[i].used < lru->used) lru = &a->proven[i];
    p = lru;
    if (p->token) unbind(px, a, p);
    memset(p, 0, sizeof(*p));
    p->addr = *from;
  }
  p->used = now + 1;
  return p;
}

/* A stream packet went sealed to or from a proven address: after
 * BIND_AFTER of them the peer is given a token for it (again, while it does
 * not use it). peer_sealed: the peer sealed it, so whatever it did with the
 * token it no longer has it (its table made room): arrivals go sealed again
 * until it uses the one sent anew. */
static void note_use(kp_proxy_t *px, unsigned slot, proven_t *p, bool peer_sealed, uint64_t now) {
  alloc_t *a = &px->allocs[slot];
  bool forgotten = p->token && peer_sealed && p->confirmed;
  if (forgotten) p->confirmed = false;
  if (!p->token) {
    if (++p->uses < BIND_AFTER || !dest_ok(px, a, &p->addr)) return;
    p->scope_gen = px->scope_gen;
    uint64_t high = (uint64_t)kp_rng_u32(&px->rng) << 32 | kp_rng_u32(&px->rng);
    p->token = (high & ~(uint64_t)0xffffff) | (uint64_t)slot << 8 | (uint64_t)(p - a->proven);
    p->token |= (uint64_t)1 << 63; /* never 0 */
    px->st.bindings++;
  } else if (!forgotten && (p->confirmed || now - p->bind_sent < BIND_RESEND_MS)) {
    return;
  }
  p->bind_sent = now;
  kp_proxy_body_t b = {
      .op = KP_PROXY_OP_BIND, .channel = a->channel, .token = p->token, .addr = p->addr};
  send_body(px, &px->sessions[a->session], &b);
}

/* Whether a datagram is a DHT message: a msgpack array (the control
 * plane's first byte, docs/protocol.md "Datagram classes") that is one
 * well-formed value, of a size any DHT node may send anyone. */
static bool is_dht_message(const uint8_t *data, size_t len) {
  return len <= DHT_MAX && (data[0] & 0xf0) == 0x90 && kp_mp_check(data, len, 8) == 0;
}

static bool charge(kp_bucket_t *bytes, kp_bucket_t *pkts, const kp_proxy_config_t *c, size_t len,
                   uint64_t now) {
  if (!kp_bucket_take(pkts, c->alloc_pps, c->alloc_pps, 1, now)) return false;
  return kp_bucket_take(bytes, c->alloc_rate, c->alloc_rate, len, now);
}

/* Sends from allocation slot, within its rates and quota; p: the
 * destination IP's permit, if it has one (made if not). */
static bool send_from(kp_proxy_t *px, unsigned slot, permit_t *p, const kp_addr_t *to,
                      const uint8_t *data, size_t len, uint64_t now) {
  alloc_t *a = &px->allocs[slot];
  const kp_proxy_config_t *c = &px->cfg;
  if (!charge(&a->out_bytes, &a->out_pkts, c, len, now) ||
      !kp_bucket_take(&px->total, c->total_rate, c->total_rate, len, now)) {
    px->st.drops[KP_PROXY_DROP_RATE]++;
    return false;
  }
  if (c->alloc_quota && a->carried + len > c->alloc_quota) {
    close_alloc(px, slot, KP_PROXY_QUOTA, true);
    return false;
  }
  a->carried += len;
  if (!p) p = permit_make(a, c->permits, to, now);
  p->used = now + 1;
  px->st.sent++;
  px->st.sent_bytes += len;
  px->io.alloc_send(px->io.ctx, slot, to, data, len);
  return true;
}

static void on_send(kp_proxy_t *px, session_t *s, const kp_proxy_body_t *b, uint64_t now) {
  uint16_t slot = s->ch[b->channel];
  if (slot == NO_ALLOC) {
    px->st.drops[KP_PROXY_DROP_NO_ALLOC]++;
    return;
  }
  alloc_t *a = &px->allocs[slot];
  const kp_proxy_config_t *c = &px->cfg;
  if (!dest_ok(px, a, &b->addr)) {
    px->st.drops[KP_PROXY_DROP_SCOPE]++;
    return;
  }
  permit_t *p = permit_find(a, c->permits, &b->addr);
  proven_t *pv = proven_find(a, c->proven, &b->addr);
  if (!pv) {
    bool dht = is_dht_message(b->data, b->len);
    bool small = b->len <= c->unproven_max_len && (!p || p->unproven < c->unproven_count);
    if (!dht && !small) {
      px->st.drops[KP_PROXY_DROP_UNPROVEN]++;
      return;
    }
    if (!kp_bucket_take(&a->unproven, c->unproven_rate, c->unproven_rate * 2, 1, now)) {
      px->st.drops[KP_PROXY_DROP_RATE]++;
      return;
    }
    p = permit_make(a, c->permits, &b->addr, now);
    if (!dht) p->unproven++;
  }
  if (send_from(px, slot, p, &b->addr, b->data, b->len, now) && pv &&
      kp_proxy_passable(b->data, b->len))
    note_use(px, slot, pv, true, now);
}

/* A PASS: a datagram to a bound address, from the session's (proven)
 * address, with the token the proxy gave it for that destination. */
static void on_pass(kp_proxy_t *px, const kp_addr_t *from, const kp_proxy_dgram_t *d,
                    uint64_t now) {
  session_t *s = session_of(px, d->receiver);
  if (!s || s->state != OPEN || !kp_addr_eq(from, &s->addr)) {
    px->st.drops[KP_PROXY_DROP_STALE]++;
    return;
  }
  if (!kp_proxy_passable(d->payload, d->payload_len)) { /* only stream packets go unsealed */
    px->st.malformed++;
    return;
  }
  unsigned slot = (unsigned)(d->token >> 8 & 0xffff), index = (unsigned)(d->token & 0xff);
  alloc_t *a = slot < px->cfg.max_allocs ? &px->allocs[slot] : NULL;
  proven_t *pv = NULL;
  if (a && a->used && &px->sessions[a->session] == s && index < px->cfg.proven)
    pv = &a->proven[index];
  if (!pv || !pv->used || !pv->token || pv->token != d->token) {
    /* Ended (evicted, or its UNBIND lost): told again, at a bounded pace,
     * to the session's own address only. */
    px->st.drops[KP_PROXY_DROP_STALE]++;
    if (KP_PROXY_PASS_HEAD + d->payload_len >= UNBIND_LEN &&
        now - s->unbind_at >= UNBIND_EVERY_MS) {
      s->unbind_at = now;
      kp_proxy_body_t b = {.op = KP_PROXY_OP_UNBIND, .token = d->token};
      send_body(px, s, &b);
    }
    return;
  }
  if (pv->scope_gen != px->scope_gen) { /* a port of ours given back, say */
    if (!dest_ok(px, a, &pv->addr)) {
      px->st.drops[KP_PROXY_DROP_SCOPE]++;
      return;
    }
    pv->scope_gen = px->scope_gen;
  }
  /* Not s->heard: anyone who saw a PASS could replay it, so only the
   * session's sealed datagrams (the peer PINGs while it passes) keep it. */
  pv->confirmed = true;
  pv->used = now + 1;
  if (send_from(px, slot, permit_find(a, px->cfg.permits, &pv->addr), &pv->addr, d->payload,
                d->payload_len, now))
    px->st.passed++;
}

static void on_op(kp_proxy_t *px, session_t *s, const kp_proxy_body_t *b, uint64_t now) {
  uint16_t slot = s->ch[b->channel];
  switch (b->op) {
    case KP_PROXY_OP_SEND: on_send(px, s, b, now); break;
    case KP_PROXY_OP_OPEN: {
      /* A 2-byte OPEN (a peer from before families): the session's. */
      uint8_t family = b->family ? b->family : s->addr.family;
      if (slot != NO_ALLOC && px->allocs[slot].bound.family != family) {
        close_alloc(px, slot, 0, false); /* the channel wants the other family now */
        slot = NO_ALLOC;
      }
      if (slot != NO_ALLOC) {
        reply_opened(px, s, &px->allocs[slot], now); /* our OPENED was lost */
      } else {
        uint8_t reason = open_alloc(px, s, b->channel, family, now);
        if (reason) {
          px->st.refused[reason]++;
          kp_proxy_body_t r = {.op = KP_PROXY_OP_CLOSE, .channel = b->channel, .reason = reason};
          send_body(px, s, &r);
        }
      }
      break;
    }
    case KP_PROXY_OP_REFRESH:
      if (slot == NO_ALLOC) {
        kp_proxy_body_t r = {
            .op = KP_PROXY_OP_CLOSE, .channel = b->channel, .reason = KP_PROXY_EXPIRED};
        send_body(px, s, &r);
      } else {
        px->allocs[slot].expires = expiry(px, &px->allocs[slot], now);
        reply_opened(px, s, &px->allocs[slot], now);
      }
      break;
    case KP_PROXY_OP_CLOSE:
      if (slot != NO_ALLOC) close_alloc(px, slot, 0, false);
      break;
    case KP_PROXY_OP_PING: {
      kp_proxy_body_t r = {.op = KP_PROXY_OP_PONG, .channel = b->channel};
      send_body(px, s, &r);
      break;
    }
    default: px->st.malformed++; break; /* a proxy's op from a peer */
  }
}

static void on_data(kp_proxy_t *px, const kp_addr_t *from, const uint8_t *raw,
                    const kp_proxy_dgram_t *d, uint64_t now) {
  session_t *s = session_of(px, d->receiver);
  if (!s) {
    px->st.unknown_session++;
    return;
  }
  uint8_t body[KP_PROXY_MAX_DATAGRAM];
  bool replayed;
  long n = kp_proxy_open(&s->keys, raw, d, body, &replayed);
  if (n < 0) {
    if (replayed)
      px->st.replayed++;
    else
      px->st.forged++;
    return;
  }
  kp_proxy_body_t b;
  if (kp_proxy_body_decode(body, (size_t)n, &b)) {
    px->st.malformed++;
    return;
  }
  /* The peer has the session's keys and receives at this address: the
   * session is open, and follows the peer when its NAT maps it anew. */
  s->state = OPEN;
  s->addr = *from;
  s->heard = now;
  on_op(px, s, &b, now);
}

/* ---- API --------------------------------------------------------------------------------------
 */

int kp_proxy_new(const kp_proxy_config_t *cfg, const kp_keypair_t *kp, const kp_rng_t *rng,
                 const kp_proxy_io_t *io, kp_proxy_t **out) {
  *out = NULL;
  if (!cfg->max_sessions || cfg->max_sessions > 0xffff || !cfg->max_allocs ||
      cfg->max_allocs >= NO_ALLOC || !cfg->permits || !cfg->proven || cfg->proven > 256 ||
      !cfg->hello_rate || !cfg->alloc_rate || !cfg->alloc_pps || !cfg->total_rate ||
      !cfg->lifetime_s || !cfg->unproven_rate)
    return KP_EINVAL;
  kp_proxy_t *px = kp_calloc(1, sizeof(*px));
  if (!px) return KP_ENOMEM;
  px->cfg = *cfg;
  px->kp = *kp;
  px->rng = *rng;
  px->io = *io;
  uint8_t key[KP_RATELIMIT_KEY_LEN];
  kp_rng_fill(rng, key, sizeof(key));
  px->sessions = kp_calloc(cfg->max_sessions, sizeof(session_t));
  px->allocs = kp_calloc(cfg->max_allocs, sizeof(alloc_t));
  px->alloc_ports = kp_calloc(2 * 65536 / 8, 1);
  if (cfg->allow_count && (px->allow = kp_malloc(cfg->allow_count * KP_PUBLIC_KEY_LEN)))
    memcpy(px->allow, cfg->allow, cfg->allow_count * KP_PUBLIC_KEY_LEN);
  if (!px->sessions || !px->allocs || !px->alloc_ports || (cfg->allow_count && !px->allow) ||
      kp_ratelimit_init(&px->hello_rl, 1024, cfg->hello_rate, cfg->hello_rate * 2, key)) {
    kp_free(px->sessions), kp_free(px->allocs), kp_free(px->alloc_ports), kp_free(px->allow);
    kp_free(px);
    return KP_ENOMEM;
  }
  px->cfg.allow = NULL;
  if (!cfg->allow) px->cfg.allow_count = 0;
  kp_bucket_init(&px->total, cfg->total_rate, 0);
  *out = px;
  return 0;
}

void kp_proxy_free(kp_proxy_t *px) {
  if (!px) return;
  for (unsigned i = 0; i < px->cfg.max_sessions; i++)
    if (px->sessions[i].state != FREE) end_session(px, &px->sessions[i]);
  kp_keypair_wipe(&px->kp);
  kp_ratelimit_destroy(&px->hello_rl);
  kp_free(px->sessions);
  kp_free(px->allocs);
  kp_free(px->alloc_ports);
  kp_free(px->allow);
  kp_free(px);
}

void kp_proxy_set_local(kp_proxy_t *px, const kp_addr_t *bound, const kp_addr_t *public_addr) {
  if (bound->family != KP_AF_INET && bound->family != KP_AF_INET6) return;
  unsigned f = fam_index(bound->family);
  kp_addr_t pub = px->public_addr[f];
  /* What DHT nodes say our address is never widens the scope a wildcard
   * bind has (public): two of them agreeing on "127.0.0.1" must not open
   * loopback to every allocation. */
  bool usable = public_addr && public_addr->family == bound->family &&
                (!kp_addr_is_any(bound) || is_public(public_addr));
  if (usable) pub = *public_addr;
  bool same = kp_addr_eq(&px->bound[f], bound) && kp_addr_eq(&px->public_addr[f], &pub);
  px->bound[f] = *bound;
  px->public_addr[f] = pub;
  if (same) return; /* bindings need not check their addresses again */
  px->scope_gen++;
}

void kp_proxy_input(kp_proxy_t *px, const kp_addr_t *from, const uint8_t *data, size_t len,
                    uint64_t now) {
  kp_proxy_dgram_t d;
  if (len > 1 && data[1] == KP_PROXY_PASS) { /* the data plane: only what it needs */
    if (!kp_proxy_pass_decode(data, len, &d)) {
      px->st.malformed++;
      return;
    }
    on_pass(px, from, &d, now);
    return;
  }
  if (kp_proxy_dgram_decode(data, len, &d)) {
    px->st.malformed++;
    return;
  }
  switch (d.type) {
    case KP_PROXY_KEY_REQ: {
      uint8_t out[KP_PROXY_KEY_LEN];
      kp_proxy_key_encode(px->kp.public_key, out);
      px->io.send(px->io.ctx, from, out, sizeof(out)); /* the same size as the request */
      break;
    }
    case KP_PROXY_HELLO: on_hello(px, from, &d, now); break;
    case KP_PROXY_DATA: on_data(px, from, data, &d, now); break;
    case KP_PROXY_PASS: on_pass(px, from, &d, now); break;
    default: px->st.malformed++; break; /* a proxy's message, sent to a proxy */
  }
}

/* A datagram from a bound address, unsealed to the peer: the PASS header,
 * then the datagram as it came. */
static void send_pass(kp_proxy_t *px, const session_t *s, uint64_t token, const uint8_t *data,
                      size_t len) {
  if (px->io.send_parts) {
    uint8_t head[KP_PROXY_PASS_HEAD];
    kp_proxy_pass_head(s->peer_index, token, head);
    px->io.send_parts(px->io.ctx, &s->addr, head, sizeof(head), data, len);
    return;
  }
  uint8_t out[KP_PROXY_MAX_DATAGRAM];
  size_t n = kp_proxy_pass_encode(s->peer_index, token, data, len, out, sizeof(out));
  if (n) px->io.send(px->io.ctx, &s->addr, out, n);
}

void kp_proxy_alloc_input(kp_proxy_t *px, unsigned slot, const kp_addr_t *from, const uint8_t *data,
                          size_t len, uint64_t now) {
  if (slot >= px->cfg.max_allocs || !px->allocs[slot].used) return;
  alloc_t *a = &px->allocs[slot];
  const kp_proxy_config_t *c = &px->cfg;
  permit_t *p = permit_find(a, c->permits, from);
  if (!p) {
    px->st.drops[KP_PROXY_DROP_PERMIT]++;
    return;
  }
  if (!len || len > KP_PROXY_MAX_PASS_PAYLOAD) {
    px->st.drops[KP_PROXY_DROP_TOO_BIG]++;
    return;
  }
  if (!charge(&a->in_bytes, &a->in_pkts, c, len, now) ||
      !kp_bucket_take(&px->total, c->total_rate, c->total_rate, len, now)) {
    px->st.drops[KP_PROXY_DROP_RATE]++;
    return;
  }
  if (c->alloc_quota && a->carried + len > c->alloc_quota) {
    close_alloc(px, slot, KP_PROXY_QUOTA, true);
    return;
  }
  a->carried += len;
  p->answered = true;
  proven_t *pv = prove(px, a, from, now);
  session_t *s = &px->sessions[a->session];
  px->st.received++;
  px->st.received_bytes += len;
  bool passable = kp_proxy_passable(data, len);
  if (pv->confirmed && passable) {
    px->st.passed++;
    send_pass(px, s, pv->token, data, len);
    return;
  }
  if (len > KP_PROXY_MAX_PAYLOAD) { /* passes bound only: too big to seal */
    px->st.drops[KP_PROXY_DROP_TOO_BIG]++;
    return;
  }
  kp_proxy_body_t b = {
      .op = KP_PROXY_OP_RECV, .channel = a->channel, .addr = *from, .data = data, .len = len};
  send_body(px, s, &b);
  if (passable) note_use(px, slot, pv, false, now);
}

void kp_proxy_forget(kp_proxy_t *px, const kp_addr_t *addr) {
  for (unsigned i = 0; i < px->cfg.max_sessions; i++)
    if (px->sessions[i].state != FREE && kp_addr_eq(&px->sessions[i].addr, addr))
      end_session(px, &px->sessions[i]);
}

uint64_t kp_proxy_tick(kp_proxy_t *px, uint64_t now) {
  for (unsigned i = 0; i < px->cfg.max_allocs; i++)
    if (px->allocs[i].used && now >= px->allocs[i].expires)
      close_alloc(px, i, KP_PROXY_EXPIRED, true);
  for (unsigned i = 0; i < px->cfg.max_sessions; i++) {
    session_t *s = &px->sessions[i];
    if ((s->state == HALF_OPEN && now - s->created >= px->cfg.half_open_ms) ||
        (s->state == OPEN && now - s->heard >= px->cfg.idle_ms))
      end_session(px, s);
  }
  return now + TICK_MS;
}

void kp_proxy_stats(const kp_proxy_t *px, kp_proxy_stats_t *out) {
  *out = px->st;
  out->sessions = out->half_open = 0;
  for (unsigned i = 0; i < px->cfg.max_sessions; i++) {
    out->sessions += px->sessions[i].state == OPEN;
    out->half_open += px->sessions[i].state == HALF_OPEN;
  }
  out->allocs = px->alloc_count;
}

const uint8_t *kp_proxy_public_key(const kp_proxy_t *px) {
  return px->kp.public_key;
}
