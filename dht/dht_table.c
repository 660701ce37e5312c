/* SPDX-License-Identifier: MIT */
#include "dht/dht_table.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_id.h"

/* Grow the entry array this many entries at a time: the table grows to a
 * few hundred entries at most, and doubling would waste up to half. */
#define GROW_STEP 16

static uint64_t load_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static uint64_t entry_key(const kp_dht_entry_t *e) {
  return (uint64_t)e->key_hi << 32 | e->key_lo;
}

void kp_dht_table_init(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN], unsigned k, int family) {
  memset(t, 0, sizeof(*t));
  memcpy(t->self, self, KP_ID_LEN);
  t->k = (uint8_t)(k && k <= UINT8_MAX ? k : KP_DHT_K);
  t->family = (uint8_t)family;
  t->iplen = family == KP_AF_INET6 ? 16 : 4;
  t->stride = (uint8_t)(sizeof(kp_dht_entry_t) + t->iplen);
}

void kp_dht_table_destroy(kp_dht_table_t *t) {
  kp_free(t->slab);
  memset(t, 0, sizeof(*t));
}

void kp_dht_entry_addr(const kp_dht_table_t *t, const kp_dht_entry_t *e, kp_addr_t *out) {
  memset(out, 0, sizeof(*out));
  out->family = t->family;
  out->port = e->port;
  memcpy(out->ip, e->ip, t->iplen);
}

void kp_dht_entry_id(const kp_dht_table_t *t, const kp_dht_entry_t *e, uint8_t id[KP_ID_LEN]) {
  kp_addr_t a;
  kp_dht_entry_addr(t, e, &a);
  kp_dht_id_from_addr(&a, id);
}

size_t kp_dht_entry_compact(const kp_dht_table_t *t, const kp_dht_entry_t *e, uint8_t *out) {
  memcpy(out, e->ip, t->iplen);
  out[t->iplen] = (uint8_t)(e->port >> 8);
  out[t->iplen + 1] = (uint8_t)e->port;
  return t->iplen + 2u;
}

bool kp_dht_entry_is(const kp_dht_table_t *t, const kp_dht_entry_t *e, const kp_addr_t *addr) {
  return addr->family == t->family && addr->port == e->port &&
         memcmp(addr->ip, e->ip, t->iplen) == 0;
}

static unsigned key_bucket(const kp_dht_table_t *t, uint64_t key) {
  uint64_t x = key ^ load_be64(t->self);
  unsigned b = x ? (unsigned)__builtin_clzll(x) : KP_DHT_BUCKETS;
  return b < KP_DHT_BUCKETS ? b : KP_DHT_BUCKETS - 1;
}

unsigned kp_dht_table_bucket_of(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]) {
  return key_bucket(t, load_be64(id));
}

unsigned kp_dht_entry_bucket(const kp_dht_table_t *t, const kp_dht_entry_t *e) {
  return key_bucket(t, entry_key(e));
}

static uint32_t bucket_start(const kp_dht_table_t *t, unsigned b) {
  uint32_t start = 0;
  for (unsigned i = 0; i < b; i++) start += t->bucket_count[i];
  return start;
}

static kp_dht_entry_t *find_key(const kp_dht_table_t *t, uint64_t key, unsigned b) {
  uint32_t start = bucket_start(t, b);
  for (uint32_t i = start; i < start + t->bucket_count[b]; i++) {
    kp_dht_entry_t *e = kp_dht_table_at(t, i);
    if (entry_key(e) == key) return e;
  }
  return NULL;
}

kp_dht_entry_t *kp_dht_table_find(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]) {
  uint64_t key = load_be64(id);
  return find_key(t, key, key_bucket(t, key));
}

int kp_dht_table_reserve(kp_dht_table_t *t, uint32_t n) {
  if (n <= t->cap) return 0;
  uint8_t *slab = kp_realloc(t->slab, (size_t)n * t->stride);
  if (!slab) return KP_ENOMEM;
  t->slab = slab;
  t->cap = n;
  return 0;
}

static int reserve(kp_dht_table_t *t) {
  return t->count < t->cap ? 0 : kp_dht_table_reserve(t, t->cap + GROW_STEP);
}

/* Whether e and addr share `bytes` leading IP bytes, e not being exempt
 * (the caller has checked addr). */
static bool same_group(const kp_dht_entry_t *e, const kp_addr_t *addr, size_t bytes) {
  return !(e->flags & KP_DHT_ENTRY_EXEMPT) && memcmp(e->ip, addr->ip, bytes) == 0;
}

/* The least recently seen entry of bucket b, of those sharing `bytes` IP
 * bytes with addr (0: all), and how many those are. */
static kp_dht_entry_t *least_recent(const kp_dht_table_t *t, unsigned b, const kp_addr_t *addr,
                                    size_t bytes, unsigned *count) {
  uint32_t start = bucket_start(t, b);
  kp_dht_entry_t *lru = NULL;
  *count = 0;
  for (uint32_t i = start; i < start + t->bucket_count[b]; i++) {
    kp_dht_entry_t *e = kp_dht_table_at(t, i);
    if (bytes && !same_group(e, addr, bytes)) continue;
    ++*count;
    if (!lru || e->last_seen < lru->last_seen) lru = e;
  }
  return lru;
}

/* The entry to ping for a newcomer at addr in bucket b when its prefix
 * group already holds its share of the bucket, else NULL. */
static kp_dht_entry_t *group_full(const kp_dht_table_t *t, unsigned b, const kp_addr_t *addr) {
  unsigned n;
  if (kp_dht_prefix_exempt(addr)) return NULL;
  kp_dht_entry_t *lru = least_recent(t, b, addr, t->family == KP_AF_INET6 ? 6 : 3, &n);
  if (n >= KP_DHT_PREFIX_MAX) return lru;
  if (t->family != KP_AF_INET6) return NULL;
  lru = least_recent(t, b, addr, 4, &n);
  return n >= KP_DHT_WIDE_PREFIX_MAX ? lru : NULL;
}

/* Room for one more entry at the end of bucket b; NULL without memory. */
static kp_dht_entry_t *insert_at(kp_dht_table_t *t, unsigned b) {
  if (reserve(t)) return NULL;
  uint32_t at = bucket_start(t, b) + t->bucket_count[b];
  if (t->count > at)
    memmove(t->slab + (size_t)(at + 1) * t->stride, t->slab + (size_t)at * t->stride,
            (size_t)(t->count - at) * t->stride);
  t->bucket_count[b]++;
  t->count++;
  kp_dht_entry_t *e = kp_dht_table_at(t, at);
  memset(e, 0, t->stride);
  return e;
}

/* Where id goes: *found (if known) or its bucket; KP_DHT_TABLE_ADDED means
 * there is room. */
static int place(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                 kp_dht_entry_t **found, kp_dht_entry_t **lru) {
  *found = NULL;
  if (lru) *lru = NULL;
  if (memcmp(id, t->self, KP_ID_LEN) == 0) return KP_DHT_TABLE_SELF;
  if (addr->family != t->family) return KP_EINVAL;
  uint64_t key = load_be64(id);
  unsigned b = key_bucket(t, key);
  /* Another address with the same 64 bits (a hash collision) changes
   * nothing: Kademlia keeps the node it knows. */
  if ((*found = find_key(t, key, b))) return KP_DHT_TABLE_UPDATED;
  kp_dht_entry_t *oldest = group_full(t, b, addr);
  unsigned n;
  if (!oldest && t->bucket_count[b] >= t->k) oldest = least_recent(t, b, addr, 0, &n);
  if (!oldest) return KP_DHT_TABLE_ADDED;
  if (lru) *lru = oldest;
  return KP_DHT_TABLE_FULL;
}

int kp_dht_table_would_add(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN],
                           const kp_addr_t *addr, kp_dht_entry_t **lru) {
  kp_dht_entry_t *found;
  return place(t, id, addr, &found, lru);
}

int kp_dht_table_add(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                     uint32_t now_s, kp_dht_entry_t **lru) {
  kp_dht_entry_t *e;
  int r = place(t, id, addr, &e, lru);
  if (r == KP_DHT_TABLE_UPDATED && kp_dht_entry_is(t, e, addr)) {
    e->last_seen = now_s;
    e->fails = 0;
  }
  if (r != KP_DHT_TABLE_ADDED) return r;
  uint64_t key = load_be64(id);
  if (!(e = insert_at(t, key_bucket(t, key)))) return KP_ENOMEM;
  e->key_hi = (uint32_t)(key >> 32);
  e->key_lo = (uint32_t)key;
  e->port = addr->port;
  memcpy(e->ip, addr->ip, t->iplen);
  e->last_seen = now_s;
  if (kp_dht_prefix_exempt(addr)) e->flags |= KP_DHT_ENTRY_EXEMPT;
  return KP_DHT_TABLE_ADDED;
}

bool kp_dht_table_remove(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]) {
  kp_dht_entry_t *e = kp_dht_table_find(t, id);
  if (!e) return false;
  uint32_t at = (uint32_t)(((uint8_t *)e - t->slab) / t->stride);
  t->bucket_count[kp_dht_entry_bucket(t, e)]--;
  if (t->count > at + 1)
    memmove(t->slab + (size_t)at * t->stride, t->slab + (size_t)(at + 1) * t->stride,
            (size_t)(t->count - at - 1) * t->stride);
  t->count--;
  return true;
}

/* New bucket ascending, then most recently seen first. */
static int by_bucket_then_recency(const void *a, const void *b, void *ctx) {
  const kp_dht_table_t *t = ctx;
  const kp_dht_entry_t *x = a, *y = b;
  unsigned bx = kp_dht_entry_bucket(t, x), by = kp_dht_entry_bucket(t, y);
  if (bx != by) return bx < by ? -1 : 1;
  return x->last_seen > y->last_seen ? -1 : x->last_seen < y->last_seen;
}

void kp_dht_table_set_self(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN]) {
  if (memcmp(t->self, self, KP_ID_LEN) == 0) return;
  memcpy(t->self, self, KP_ID_LEN);
  /* Re-filed in place, so a node that learns its id mid-join does not
   * leave its table among the join's short-lived allocations: sorted into
   * the new buckets, then each bucket cut to its k most recently seen. */
  if (t->count) qsort_r(t->slab, t->count, t->stride, by_bucket_then_recency, t);
  memset(t->bucket_count, 0, sizeof(t->bucket_count));
  uint32_t kept = 0;
  for (uint32_t i = 0; i < t->count; i++) {
    kp_dht_entry_t *e = kp_dht_table_at(t, i);
    unsigned b = kp_dht_entry_bucket(t, e);
    if (t->bucket_count[b] == t->k) continue;
    t->bucket_count[b]++;
    if (kept != i) memcpy(kp_dht_table_at(t, kept), e, t->stride);
    kept++;
  }
  t->count = kept;
}

/* Orders two entries at the same 64-bit distance: by address, so that the
 * order is total (only a hash collision gets here). */
static int tie_break(const kp_dht_table_t *t, const kp_dht_entry_t *a, const kp_dht_entry_t *b) {
  int c = memcmp(a->ip, b->ip, t->iplen);
  return c ? c : (int)a->port - (int)b->port;
}

typedef struct closest_s {
  const kp_dht_table_t *t;
  uint64_t t64;
  const kp_addr_t *exclude;
  const kp_dht_entry_t **out;
  uint64_t dist[KP_DHT_MAX_CLOSEST]; /* key ^ target of each out[i] */
  size_t n;
  size_t have;
} closest_t;

/* Offers entries [from, to) to the sorted top-n. */
static void offer(closest_t *c, uint32_t from, uint32_t to) {
  for (uint32_t i = from; i < to; i++) {
    const kp_dht_entry_t *e = kp_dht_table_at(c->t, i);
    uint64_t d = entry_key(e) ^ c->t64;
    size_t last = c->n - 1;
    if (c->have == c->n &&
        (d > c->dist[last] || (d == c->dist[last] && tie_break(c->t, e, c->out[last]) >= 0)))
      continue;
    if (c->exclude && kp_dht_entry_is(c->t, e, c->exclude)) continue;
    size_t at = c->have < c->n ? c->have : last;
    while (at > 0 && (d < c->dist[at - 1] ||
                      (d == c->dist[at - 1] && tie_break(c->t, e, c->out[at - 1]) < 0))) {
      c->out[at] = c->out[at - 1];
      c->dist[at] = c->dist[at - 1];
      at--;
    }
    c->out[at] = e;
    c->dist[at] = d;
    if (c->have < c->n) c->have++;
  }
}

size_t kp_dht_table_closest(const kp_dht_table_t *t, const uint8_t target[KP_ID_LEN],
                            const kp_addr_t *exclude, const kp_dht_entry_t **out, size_t n) {
  closest_t c = {t, load_be64(target), exclude, out, {0}, n, 0};
  if (c.n > KP_DHT_MAX_CLOSEST) c.n = KP_DHT_MAX_CLOSEST;
  if (!c.n) return 0;
  /* With bt the target's bucket, every entry of bucket bt is closer to the
   * target than any entry of a deeper bucket, and those are closer than
   * bucket bt-1's, then bt-2's, and so on (they share exactly bt, bt, bt-1,
   * bt-2... leading bits with it). So scan in that order and stop once a
   * whole stage leaves us with n: a FIND_NODE looks at about k entries, not
   * the whole table. */
  unsigned bt = kp_dht_table_bucket_of(t, target);
  uint32_t start = bucket_start(t, bt);
  uint32_t deeper = start + t->bucket_count[bt];
  offer(&c, start, deeper);
  if (c.have < c.n) offer(&c, deeper, t->count);
  for (unsigned b = bt; b-- > 0 && c.have < c.n;) {
    start -= t->bucket_count[b];
    offer(&c, start, start + t->bucket_count[b]);
  }
  return c.have;
}

kp_dht_entry_t *kp_dht_table_oldest(const kp_dht_table_t *t, uint32_t older_than) {
  kp_dht_entry_t *best = NULL;
  for (uint32_t i = 0; i < t->count; i++) {
    kp_dht_entry_t *e = kp_dht_table_at(t, i);
    if ((e->flags & KP_DHT_ENTRY_PINGING) || e->last_seen >= older_than) continue;
    if (!best || e->last_seen < best->last_seen) best = e;
  }
  return best;
}

int kp_dht_table_depth(const kp_dht_table_t *t) {
  for (int b = KP_DHT_BUCKETS - 1; b >= 0; b--)
    if (t->bucket_count[b]) return b;
  return -1;
}
