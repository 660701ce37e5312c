/* SPDX-License-Identifier: MIT */
#include "tests/sim/sim.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- An intrusive chained hash table ---------------------------------------
 *
 * Sockets, NATs, mappings and filter entries are all found by hash, so a
 * packet costs the same in a network of a hundred thousand hosts as in one
 * of ten. Hashes are fixed functions of the key (no secret): the simulator
 * must be deterministic, and nobody attacks it. */

typedef struct hnode_s {
  struct hnode_s *next;
  uint64_t hash;
} hnode_t;

typedef struct htable_s {
  hnode_t **buckets;
  size_t mask; /* buckets - 1 */
  size_t count;
} htable_t;

#define CONTAINER(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

static uint64_t mix(uint64_t h, uint64_t v) {
  /* SplitMix64's finalizer over the running value. */
  uint64_t z = h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t hash_ip(uint64_t h, const kp_addr_t *a) {
  uint64_t hi, lo;
  memcpy(&hi, a->ip, 8);
  memcpy(&lo, a->ip + 8, 8);
  return mix(mix(mix(h, (uint64_t)a->family), hi), lo);
}

static uint64_t hash_addr(uint64_t h, const kp_addr_t *a) {
  return mix(hash_ip(h, a), a->port);
}

static uint64_t hash_ptr(const void *p) {
  return mix(0, (uint64_t)(uintptr_t)p);
}

static void ht_grow(htable_t *t) {
  size_t n = t->buckets ? (t->mask + 1) * 2 : 256;
  hnode_t **b = calloc(n, sizeof(*b));
  if (!b) abort();
  for (size_t i = 0; t->buckets && i <= t->mask; i++) {
    hnode_t *e = t->buckets[i];
    while (e) {
      hnode_t *next = e->next;
      e->next = b[e->hash & (n - 1)];
      b[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  free(t->buckets);
  t->buckets = b;
  t->mask = n - 1;
}

static void ht_insert(htable_t *t, hnode_t *n, uint64_t hash) {
  if (!t->buckets || t->count > t->mask) ht_grow(t);
  n->hash = hash;
  n->next = t->buckets[hash & t->mask];
  t->buckets[hash & t->mask] = n;
  t->count++;
}

static void ht_remove(htable_t *t, hnode_t *n) {
  for (hnode_t **p = &t->buckets[n->hash & t->mask]; *p; p = &(*p)->next) {
    if (*p == n) {
      *p = n->next;
      t->count--;
      return;
    }
  }
}

/* The chain a hash lands in; callers compare hash and key. */
static hnode_t *ht_first(const htable_t *t, uint64_t hash) {
  return t->buckets ? t->buckets[hash & t->mask] : NULL;
}

/* ---- Event queue: a binary heap ordered by (time, sequence) -------------- */

/* A datagram on its way, in one allocation with its bytes. */
typedef struct packet_s {
  kp_addr_t from;    /* source as the receiver sees it */
  kp_addr_t to;      /* destination on the internet side */
  kp_sim_nat_t *lan; /* between two hosts behind this NAT */
  size_t len;
  uint8_t data[];
} packet_t;

/* Heap entries stay small (the heap is walked on every event): a packet's
 * details live in its own allocation. */
typedef struct event_s {
  uint64_t at;
  uint64_t seq;
  kp_sim_timer_fn fn; /* NULL: a packet */
  void *ctx;          /* the timer's context, or the packet_t */
} event_t;

/* A NAT's state for one inside socket (and, for RANDOM, one destination):
 * its external port, and the remote endpoints it has sent to (filter
 * entries, `seen_t`). Idle state expires after the NAT's timeout. */
typedef struct mapping_s mapping_t;
typedef struct seen_s seen_t;

struct mapping_s {
  hnode_t by_key;         /* (nat, inside, dest for RANDOM) */
  hnode_t by_port;        /* (nat, external port) */
  mapping_t *prev, *next; /* the NAT's mappings, least recently used first */
  kp_sim_nat_t *nat;
  kp_addr_t inside; /* host address:port */
  kp_addr_t dest;   /* RANDOM: the one destination this mapping serves */
  uint16_t port;    /* external port */
  uint64_t used;
  seen_t *seen; /* this mapping's filter entries */
};

/* One remote endpoint a mapping has sent to, as ip:port, and for a NAT
 * that filters by address also as the IP alone (port 0). A NAT switched to
 * ADDRESS filtering later knows only the IPs it has sent to since. */
struct seen_s {
  hnode_t node;          /* (mapping, remote) */
  seen_t *prev, *next;   /* the NAT's filter entries, least recently used first */
  seen_t *mprev, *mnext; /* the mapping's list */
  mapping_t *mapping;
  kp_addr_t remote;
  uint64_t used;
};

struct kp_sim_nat_s {
  hnode_t node; /* (public IP) */
  kp_sim_t *sim;
  kp_addr_t public_ip;
  kp_sim_mapping_t mapping;
  kp_sim_filter_t filter;
  unsigned timeout_ms;
  mapping_t *lru_head, *lru_tail;
  seen_t *seen_head, *seen_tail;
  kp_sim_nat_t *prev, *next;
};

struct kp_sim_socket_s {
  hnode_t node; /* (nat, addr) */
  kp_sim_t *sim;
  kp_addr_t addr;
  kp_sim_nat_t *nat;
  kp_sim_recv_fn recv;
  void *ctx;
  kp_sim_socket_t *prev, *next;
};

struct kp_sim_s {
  uint64_t now;
  uint64_t seq;
  kp_rng_seeded_t rng;
  kp_sim_link_t link;
  kp_sim_stats_t stats;
  event_t *heap;
  size_t heap_len, heap_cap;
  uint64_t *cancelled; /* timer ids (seq) cancelled before they fired */
  size_t cancelled_len, cancelled_cap;
  kp_sim_socket_t *sockets;
  kp_sim_nat_t *nats;
  htable_t socket_index, nat_index, mapping_index, port_index, seen_index;
  kp_sim_tap_fn tap;
  void *tap_ctx;
  kp_sim_drop_fn drop;
  void *drop_ctx;
  kp_sim_latency_fn latency;
  void *latency_ctx;
};

void kp_sim_set_tap(kp_sim_t *sim, kp_sim_tap_fn fn, void *ctx) {
  sim->tap = fn;
  sim->tap_ctx = ctx;
}

void kp_sim_set_drop(kp_sim_t *sim, kp_sim_drop_fn fn, void *ctx) {
  sim->drop = fn;
  sim->drop_ctx = ctx;
}

static bool before(const event_t *a, const event_t *b) {
  return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(kp_sim_t *sim, event_t ev) {
  if (sim->heap_len == sim->heap_cap) {
    sim->heap_cap = sim->heap_cap ? sim->heap_cap * 2 : 1024;
    sim->heap = realloc(sim->heap, sim->heap_cap * sizeof(event_t));
    if (!sim->heap) abort();
  }
  size_t i = sim->heap_len++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(&ev, &sim->heap[parent])) break;
    sim->heap[i] = sim->heap[parent];
    i = parent;
  }
  sim->heap[i] = ev;
}

static event_t heap_pop(kp_sim_t *sim) {
  event_t top = sim->heap[0];
  event_t last = sim->heap[--sim->heap_len];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const event_t *best = &last;
    if (l < sim->heap_len && before(&sim->heap[l], best)) m = l, best = &sim->heap[l];
    if (r < sim->heap_len && before(&sim->heap[r], best)) m = r;
    if (m == i) break;
    sim->heap[i] = sim->heap[m];
    i = m;
  }
  if (sim->heap_len) sim->heap[i] = last;
  return top;
}

/* ---- Setup ------------------------------------------------------------- */

kp_sim_t *kp_sim_new(uint64_t seed) {
  kp_sim_t *sim = calloc(1, sizeof(*sim));
  if (!sim) abort();
  kp_rng_seeded_init(&sim->rng, seed);
  sim->link.latency_min_ms = 10;
  sim->link.latency_max_ms = 30;
  return sim;
}

void kp_sim_free(kp_sim_t *sim) {
  for (size_t i = 0; i < sim->heap_len; i++)
    if (!sim->heap[i].fn) free(sim->heap[i].ctx);
  free(sim->heap);
  free(sim->cancelled);
  while (sim->sockets) kp_sim_socket_free(sim->sockets);
  while (sim->nats) kp_sim_nat_free(sim->nats);
  free(sim->socket_index.buckets);
  free(sim->nat_index.buckets);
  free(sim->mapping_index.buckets);
  free(sim->port_index.buckets);
  free(sim->seen_index.buckets);
  free(sim);
}

uint64_t kp_sim_now(const kp_sim_t *sim) {
  return sim->now;
}

kp_rng_t kp_sim_rng(kp_sim_t *sim) {
  return kp_rng_seeded(&sim->rng);
}

void kp_sim_set_link(kp_sim_t *sim, const kp_sim_link_t *link) {
  sim->link = *link;
}

void kp_sim_set_latency(kp_sim_t *sim, kp_sim_latency_fn fn, void *ctx) {
  sim->latency = fn;
  sim->latency_ctx = ctx;
}

const kp_sim_stats_t *kp_sim_stats(const kp_sim_t *sim) {
  return &sim->stats;
}

kp_sim_nat_t *kp_sim_nat_new(kp_sim_t *sim, const kp_addr_t *public_ip, kp_sim_mapping_t mapping,
                             kp_sim_filter_t filter) {
  kp_sim_nat_t *nat = calloc(1, sizeof(*nat));
  if (!nat) abort();
  nat->sim = sim;
  nat->public_ip = *public_ip;
  nat->public_ip.port = 0;
  nat->mapping = mapping;
  nat->filter = filter;
  nat->next = sim->nats;
  if (sim->nats) sim->nats->prev = nat;
  sim->nats = nat;
  ht_insert(&sim->nat_index, &nat->node, hash_ip(0, &nat->public_ip));
  return nat;
}

void kp_sim_nat_set_filter(kp_sim_nat_t *nat, kp_sim_filter_t filter) {
  nat->filter = filter;
}

void kp_sim_nat_set_timeout(kp_sim_nat_t *nat, unsigned ms) {
  nat->timeout_ms = ms;
}

static void seen_unlink(kp_sim_nat_t *nat, seen_t *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    nat->seen_head = s->next;
  if (s->next)
    s->next->prev = s->prev;
  else
    nat->seen_tail = s->prev;
}

static void seen_push(kp_sim_nat_t *nat, seen_t *s) {
  s->next = NULL;
  s->prev = nat->seen_tail;
  if (nat->seen_tail)
    nat->seen_tail->next = s;
  else
    nat->seen_head = s;
  nat->seen_tail = s;
}

static void seen_free(kp_sim_t *sim, seen_t *s) {
  mapping_t *m = s->mapping;
  if (s->mprev)
    s->mprev->mnext = s->mnext;
  else
    m->seen = s->mnext;
  if (s->mnext) s->mnext->mprev = s->mprev;
  seen_unlink(m->nat, s);
  ht_remove(&sim->seen_index, &s->node);
  free(s);
}

static void mapping_unlink(kp_sim_nat_t *nat, mapping_t *m) {
  if (m->prev)
    m->prev->next = m->next;
  else
    nat->lru_head = m->next;
  if (m->next)
    m->next->prev = m->prev;
  else
    nat->lru_tail = m->prev;
}

static void mapping_push(kp_sim_nat_t *nat, mapping_t *m) {
  m->next = NULL;
  m->prev = nat->lru_tail;
  if (nat->lru_tail)
    nat->lru_tail->next = m;
  else
    nat->lru_head = m;
  nat->lru_tail = m;
}

static void mapping_free(kp_sim_t *sim, mapping_t *m) {
  while (m->seen) seen_free(sim, m->seen);
  mapping_unlink(m->nat, m);
  ht_remove(&sim->mapping_index, &m->by_key);
  ht_remove(&sim->port_index, &m->by_port);
  free(m);
}

void kp_sim_nat_flush(kp_sim_nat_t *nat) {
  while (nat->lru_head) mapping_free(nat->sim, nat->lru_head);
}

void kp_sim_nat_free(kp_sim_nat_t *nat) {
  kp_sim_t *sim = nat->sim;
  kp_sim_nat_flush(nat);
  if (nat->prev)
    nat->prev->next = nat->next;
  else
    sim->nats = nat->next;
  if (nat->next) nat->next->prev = nat->prev;
  ht_remove(&sim->nat_index, &nat->node);
  free(nat);
}

static bool expired(const kp_sim_nat_t *nat, uint64_t used, uint64_t now) {
  return nat->timeout_ms && now - used >= nat->timeout_ms;
}

/* Forgets what has been idle for the NAT's timeout, oldest first. */
static void nat_expire(kp_sim_nat_t *nat, uint64_t now) {
  if (!nat->timeout_ms) return;
  while (nat->seen_head && expired(nat, nat->seen_head->used, now))
    seen_free(nat->sim, nat->seen_head);
  while (nat->lru_head && expired(nat, nat->lru_head->used, now))
    mapping_free(nat->sim, nat->lru_head);
}

static uint64_t socket_hash(const kp_sim_nat_t *nat, const kp_addr_t *addr) {
  return hash_addr(hash_ptr(nat), addr);
}

static kp_sim_socket_t *find_socket(const kp_sim_t *sim, const kp_sim_nat_t *nat,
                                    const kp_addr_t *addr) {
  uint64_t h = socket_hash(nat, addr);
  for (hnode_t *n = ht_first(&sim->socket_index, h); n; n = n->next) {
    kp_sim_socket_t *s = CONTAINER(n, kp_sim_socket_t, node);
    if (n->hash == h && s->nat == nat && kp_addr_eq(&s->addr, addr)) return s;
  }
  return NULL;
}

kp_sim_socket_t *kp_sim_socket_new(kp_sim_t *sim, const kp_addr_t *addr, kp_sim_nat_t *nat,
                                   kp_sim_recv_fn recv, void *ctx) {
  kp_sim_socket_t *s = calloc(1, sizeof(*s));
  if (!s) abort();
  s->sim = sim;
  s->addr = *addr;
  s->nat = nat;
  s->recv = recv;
  s->ctx = ctx;
  s->next = sim->sockets;
  if (sim->sockets) sim->sockets->prev = s;
  sim->sockets = s;
  ht_insert(&sim->socket_index, &s->node, socket_hash(nat, addr));
  return s;
}

void kp_sim_socket_free(kp_sim_socket_t *sock) {
  kp_sim_t *sim = sock->sim;
  if (sock->prev)
    sock->prev->next = sock->next;
  else
    sim->sockets = sock->next;
  if (sock->next) sock->next->prev = sock->prev;
  ht_remove(&sim->socket_index, &sock->node);
  free(sock);
}

const kp_addr_t *kp_sim_socket_addr(const kp_sim_socket_t *sock) {
  return &sock->addr;
}

void kp_sim_socket_move(kp_sim_socket_t *sock, const kp_addr_t *addr, kp_sim_nat_t *nat) {
  ht_remove(&sock->sim->socket_index, &sock->node);
  sock->addr = *addr;
  sock->nat = nat;
  ht_insert(&sock->sim->socket_index, &sock->node, socket_hash(nat, addr));
}

/* ---- NAT behaviour --------------------------------------------------------- */

static uint64_t port_hash(const kp_sim_nat_t *nat, uint16_t port) {
  return mix(hash_ptr(nat), port);
}

static mapping_t *by_port(const kp_sim_nat_t *nat, uint16_t port) {
  uint64_t h = port_hash(nat, port);
  for (hnode_t *n = ht_first(&nat->sim->port_index, h); n; n = n->next) {
    mapping_t *m = CONTAINER(n, mapping_t, by_port);
    if (n->hash == h && m->nat == nat && m->port == port) return m;
  }
  return NULL;
}

/* The key a mapping is found by: the inside address, and for a RANDOM NAT
 * the destination too (another destination, another mapping). */
static uint64_t mapping_hash(const kp_sim_nat_t *nat, const kp_addr_t *inside,
                             const kp_addr_t *dest) {
  uint64_t h = hash_addr(hash_ptr(nat), inside);
  return nat->mapping == KP_SIM_MAP_RANDOM ? hash_addr(h, dest) : h;
}

static mapping_t *find_mapping(kp_sim_nat_t *nat, const kp_addr_t *inside, const kp_addr_t *dest) {
  uint64_t h = mapping_hash(nat, inside, dest);
  for (hnode_t *n = ht_first(&nat->sim->mapping_index, h); n; n = n->next) {
    mapping_t *m = CONTAINER(n, mapping_t, by_key);
    if (n->hash != h || m->nat != nat || !kp_addr_eq(&m->inside, inside)) continue;
    if (nat->mapping == KP_SIM_MAP_RANDOM && !kp_addr_eq(&m->dest, dest)) continue;
    return m;
  }
  return NULL;
}

static seen_t *find_seen(const kp_sim_t *sim, const mapping_t *m, const kp_addr_t *remote) {
  uint64_t h = hash_addr(hash_ptr(m), remote);
  for (hnode_t *n = ht_first(&sim->seen_index, h); n; n = n->next) {
    seen_t *s = CONTAINER(n, seen_t, node);
    if (n->hash == h && s->mapping == m && kp_addr_eq(&s->remote, remote)) return s;
  }
  return NULL;
}

/* Notes (or refreshes) that m sent to remote. */
static void touch_seen(kp_sim_t *sim, mapping_t *m, const kp_addr_t *remote) {
  seen_t *s = find_seen(sim, m, remote);
  if (s) {
    s->used = sim->now;
    seen_unlink(m->nat, s);
    seen_push(m->nat, s);
    return;
  }
  s = calloc(1, sizeof(*s));
  if (!s) abort();
  s->mapping = m;
  s->remote = *remote;
  s->used = sim->now;
  s->mnext = m->seen;
  if (m->seen) m->seen->mprev = s;
  m->seen = s;
  seen_push(m->nat, s);
  ht_insert(&sim->seen_index, &s->node, hash_addr(hash_ptr(m), remote));
}

static void touch_mapping(mapping_t *m, uint64_t now) {
  m->used = now;
  mapping_unlink(m->nat, m);
  mapping_push(m->nat, m);
}

static mapping_t *outbound(kp_sim_nat_t *nat, const kp_addr_t *inside, const kp_addr_t *dest) {
  kp_sim_t *sim = nat->sim;
  nat_expire(nat, sim->now);
  mapping_t *m = find_mapping(nat, inside, dest);
  if (!m) {
    uint16_t port;
    if (nat->mapping == KP_SIM_MAP_NONE) {
      port = inside->port;
    } else if (nat->mapping == KP_SIM_MAP_CONSISTENT && !by_port(nat, inside->port)) {
      port = inside->port; /* port-preserving, like MASQUERADE */
    } else {
      kp_rng_t rng = kp_rng_seeded(&sim->rng);
      do port = (uint16_t)(1024 + kp_rng_below(&rng, 64511));
      while (by_port(nat, port));
    }
    m = calloc(1, sizeof(*m));
    if (!m) abort();
    m->nat = nat;
    m->inside = *inside;
    m->dest = *dest;
    m->port = port;
    mapping_push(nat, m);
    ht_insert(&sim->mapping_index, &m->by_key, mapping_hash(nat, inside, dest));
    ht_insert(&sim->port_index, &m->by_port, port_hash(nat, port));
  }
  touch_mapping(m, sim->now);
  touch_seen(sim, m, dest);
  if (nat->filter == KP_SIM_FILTER_ADDRESS) {
    kp_addr_t ip = *dest;
    ip.port = 0;
    touch_seen(sim, m, &ip);
  }
  return m;
}

/* ---- Sending and delivery -------------------------------------------------- */

static double uniform(kp_sim_t *sim) {
  return (double)(kp_rng_seeded_next(&sim->rng) >> 11) / 9007199254740992.0;
}

static void schedule_packet(kp_sim_t *sim, const kp_addr_t *from, const kp_addr_t *to,
                            kp_sim_nat_t *lan, const uint8_t *data, size_t len) {
  unsigned span = sim->link.latency_max_ms - sim->link.latency_min_ms;
  kp_rng_t rng = kp_rng_seeded(&sim->rng);
  event_t ev = {0};
  /* A LAN is one switch away: 1 ms. */
  if (lan)
    ev.at = sim->now + 1;
  else if (sim->latency)
    ev.at = sim->now + sim->latency(sim->latency_ctx, from, to, &rng);
  else
    ev.at = sim->now + sim->link.latency_min_ms + (span ? kp_rng_below(&rng, span + 1) : 0);
  packet_t *p = malloc(sizeof(*p) + len);
  if (!p) abort();
  p->lan = lan;
  p->from = *from;
  p->to = *to;
  p->len = len;
  memcpy(p->data, data, len);
  ev.seq = ++sim->seq;
  ev.ctx = p;
  heap_push(sim, ev);
}

static kp_sim_nat_t *nat_at(const kp_sim_t *sim, const kp_addr_t *ip, kp_sim_nat_t *after) {
  uint64_t h = hash_ip(0, ip);
  hnode_t *n = after ? after->node.next : ht_first(&sim->nat_index, h);
  for (; n; n = n->next) {
    kp_sim_nat_t *nat = CONTAINER(n, kp_sim_nat_t, node);
    if (n->hash == h && kp_addr_same_ip(&nat->public_ip, ip)) return nat;
  }
  return NULL;
}

void kp_sim_send(kp_sim_socket_t *sock, const kp_addr_t *to, const uint8_t *data, size_t len) {
  kp_sim_t *sim = sock->sim;
  kp_addr_t from = sock->addr;
  sim->stats.sent++;
  if (sim->tap) sim->tap(sim->tap_ctx, &sock->addr, to, data, len);
  if (sim->drop && sim->drop(sim->drop_ctx, &sock->addr, to, data, len)) {
    sim->stats.lost++;
    return;
  }
  kp_sim_nat_t *lan = NULL;
  if (sock->nat && sock->nat->mapping != KP_SIM_MAP_NONE &&
      (kp_addr_is_private(to) || kp_addr_is_loopback(to)) && find_socket(sim, sock->nat, to)) {
    /* Another host on the same LAN (at a private address): no translation. */
    lan = sock->nat;
  } else if (sock->nat) {
    if (kp_addr_same_ip(&sock->nat->public_ip, to)) {
      /* No hairpinning: a NAT drops what its own hosts send to its outside. */
      sim->stats.filtered++;
      return;
    }
    mapping_t *m = outbound(sock->nat, &sock->addr, to);
    from = sock->nat->public_ip;
    from.port = m->port;
  }
  if (uniform(sim) < sim->link.loss) {
    sim->stats.lost++;
    return;
  }
  schedule_packet(sim, &from, to, lan, data, len);
  if (sim->link.duplicate > 0 && uniform(sim) < sim->link.duplicate)
    schedule_packet(sim, &from, to, lan, data, len);
}

/* The socket a packet reaches, or NULL (counted as filtered or unroutable). */
static kp_sim_socket_t *route(kp_sim_t *sim, const kp_addr_t *to, const kp_addr_t *from) {
  /* A host on the internet itself (an address is a NAT's or a host's, never
   * both, so the order of the two looks does not matter). */
  kp_sim_socket_t *sock = find_socket(sim, NULL, to);
  if (sock) return sock;
  /* A NAT's public address: translate back, then filter. */
  for (kp_sim_nat_t *nat = nat_at(sim, to, NULL); nat; nat = nat_at(sim, to, nat)) {
    nat_expire(nat, sim->now);
    mapping_t *m = by_port(nat, to->port);
    if (m) {
      if (nat->filter != KP_SIM_FILTER_OPEN) {
        /* Only from where the mapping has sent to (the IP, or ip:port). */
        kp_addr_t key = *from;
        if (nat->filter == KP_SIM_FILTER_ADDRESS) key.port = 0;
        seen_t *s = find_seen(sim, m, &key);
        if (!s) {
          sim->stats.filtered++;
          return NULL;
        }
        /* An answer keeps the filter entry alive, and the mapping. */
        s->used = sim->now;
        seen_unlink(nat, s);
        seen_push(nat, s);
      }
      touch_mapping(m, sim->now);
      if (!(sock = find_socket(sim, nat, &m->inside))) sim->stats.unroutable++;
      return sock;
    }
    /* No mapping: unsolicited. Only a NONE-mapping NAT with open filtering
     * (no firewall at all) lets it through to a socket bound there. */
    if (nat->mapping != KP_SIM_MAP_NONE || nat->filter != KP_SIM_FILTER_OPEN) {
      sim->stats.filtered++;
      return NULL;
    }
    if ((sock = find_socket(sim, nat, to))) return sock;
  }
  sim->stats.unroutable++;
  return NULL;
}

static kp_sim_socket_t *route_lan(kp_sim_t *sim, kp_sim_nat_t *lan, const kp_addr_t *to) {
  kp_sim_socket_t *s = find_socket(sim, lan, to);
  if (!s) sim->stats.unroutable++;
  return s;
}

static void deliver(kp_sim_t *sim, packet_t *p) {
  kp_sim_socket_t *s = p->lan ? route_lan(sim, p->lan, &p->to) : route(sim, &p->to, &p->from);
  if (!s) return;
  sim->stats.delivered++;
  s->recv(s->ctx, s, &p->from, p->data, p->len, sim->now);
}

uint64_t kp_sim_timer(kp_sim_t *sim, uint64_t at, kp_sim_timer_fn fn, void *ctx) {
  event_t ev = {0};
  ev.at = at < sim->now ? sim->now : at;
  ev.seq = ++sim->seq;
  ev.fn = fn;
  ev.ctx = ctx;
  heap_push(sim, ev);
  return ev.seq;
}

void kp_sim_timer_cancel(kp_sim_t *sim, uint64_t id) {
  if (sim->cancelled_len == sim->cancelled_cap) {
    sim->cancelled_cap = sim->cancelled_cap ? sim->cancelled_cap * 2 : 64;
    sim->cancelled = realloc(sim->cancelled, sim->cancelled_cap * sizeof(uint64_t));
    if (!sim->cancelled) abort();
  }
  sim->cancelled[sim->cancelled_len++] = id;
}

static bool take_cancelled(kp_sim_t *sim, uint64_t id) {
  for (size_t i = 0; i < sim->cancelled_len; i++) {
    if (sim->cancelled[i] == id) {
      sim->cancelled[i] = sim->cancelled[--sim->cancelled_len];
      return true;
    }
  }
  return false;
}

static void run_one(kp_sim_t *sim) {
  event_t ev = heap_pop(sim);
  if (ev.at > sim->now) sim->now = ev.at;
  if (!ev.fn) {
    deliver(sim, ev.ctx);
    free(ev.ctx);
  } else if (!take_cancelled(sim, ev.seq)) {
    ev.fn(ev.ctx, sim->now);
  }
}

size_t kp_sim_run_until(kp_sim_t *sim, uint64_t until) {
  size_t n = 0;
  while (sim->heap_len && sim->heap[0].at <= until) {
    run_one(sim);
    n++;
  }
  if (sim->now < until) sim->now = until;
  return n;
}

bool kp_sim_run_while(kp_sim_t *sim, uint64_t until, bool (*pred)(void *ctx), void *ctx) {
  if (pred(ctx)) return true;
  while (sim->heap_len && sim->heap[0].at <= until) {
    run_one(sim);
    if (pred(ctx)) return true;
  }
  if (sim->now < until) sim->now = until;
  return pred(ctx);
}

void kp_sim_jump(kp_sim_t *sim, uint64_t to) {
  if (to <= sim->now) return;
  sim->now = to;
  /* Everything that fell due while asleep happens "now", in its old order
   * (the sequence numbers keep it); re-heap since keys changed. */
  event_t *old = sim->heap;
  size_t n = sim->heap_len;
  sim->heap = NULL;
  sim->heap_len = sim->heap_cap = 0;
  for (size_t i = 0; i < n; i++) {
    if (old[i].at < to) old[i].at = to;
    heap_push(sim, old[i]);
  }
  free(old);
}
