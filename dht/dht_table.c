#include "dht/dht_table.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_id.h"

/* Grow the entry array this many entries at a time: the table grows to a
 * few hundred entries at most, and doubling would waste up to half. */
#define GROW_STEP 16

void kp_dht_table_init(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN], unsigned k) {
  memset(t, 0, sizeof(*t));
  memcpy(t->self, self, KP_ID_LEN);
  t->k = k ? k : KP_DHT_K;
}

void kp_dht_table_destroy(kp_dht_table_t *t) {
  kp_free(t->entries);
  memset(t, 0, sizeof(*t));
}

unsigned kp_dht_table_bucket_of(const kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]) {
  unsigned b = kp_dht_id_prefix_len(t->self, id);
  return b < KP_DHT_BUCKETS ? b : KP_DHT_BUCKETS - 1;
}

static uint32_t bucket_start(const kp_dht_table_t *t, unsigned b) {
  uint32_t start = 0;
  for (unsigned i = 0; i < b; i++) start += t->bucket_count[i];
  return start;
}

kp_dht_entry_t *kp_dht_table_find(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]) {
  unsigned b = kp_dht_table_bucket_of(t, id);
  uint32_t start = bucket_start(t, b);
  for (uint32_t i = start; i < start + t->bucket_count[b]; i++)
    if (memcmp(t->entries[i].id, id, KP_ID_LEN) == 0) return &t->entries[i];
  return NULL;
}

static int reserve(kp_dht_table_t *t) {
  if (t->count < t->cap) return 0;
  uint32_t cap = t->cap + GROW_STEP;
  kp_dht_entry_t *e = kp_realloc(t->entries, cap * sizeof(*e));
  if (!e) return UV_ENOMEM;
  t->entries = e;
  t->cap = cap;
  return 0;
}

static kp_dht_entry_t *least_recent(kp_dht_table_t *t, unsigned b) {
  uint32_t start = bucket_start(t, b);
  kp_dht_entry_t *lru = NULL;
  for (uint32_t i = start; i < start + t->bucket_count[b]; i++)
    if (!lru || t->entries[i].last_seen < lru->last_seen) lru = &t->entries[i];
  return lru;
}

int kp_dht_table_add(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                     uint32_t now_s, kp_dht_entry_t **lru) {
  if (lru) *lru = NULL;
  if (memcmp(id, t->self, KP_ID_LEN) == 0) return KP_DHT_TABLE_SELF;
  kp_dht_entry_t *e = kp_dht_table_find(t, id);
  if (e) {
    e->addr = *addr;
    e->last_seen = now_s;
    e->fails = 0;
    return KP_DHT_TABLE_UPDATED;
  }
  unsigned b = kp_dht_table_bucket_of(t, id);
  if (t->bucket_count[b] >= t->k) {
    if (lru) *lru = least_recent(t, b);
    return KP_DHT_TABLE_FULL;
  }
  if (reserve(t)) return UV_ENOMEM;
  uint32_t at = bucket_start(t, b) + t->bucket_count[b];
  if (t->count > at)
    memmove(&t->entries[at + 1], &t->entries[at], (t->count - at) * sizeof(*t->entries));
  e = &t->entries[at];
  memset(e, 0, sizeof(*e));
  memcpy(e->id, id, KP_ID_LEN);
  e->addr = *addr;
  e->last_seen = now_s;
  t->bucket_count[b]++;
  t->count++;
  return KP_DHT_TABLE_ADDED;
}

bool kp_dht_table_remove(kp_dht_table_t *t, const uint8_t id[KP_ID_LEN]) {
  kp_dht_entry_t *e = kp_dht_table_find(t, id);
  if (!e) return false;
  uint32_t at = (uint32_t)(e - t->entries);
  t->bucket_count[kp_dht_table_bucket_of(t, id)]--;
  if (t->count > at + 1)
    memmove(&t->entries[at], &t->entries[at + 1], (t->count - at - 1) * sizeof(*t->entries));
  t->count--;
  return true;
}

static int by_recency(const void *a, const void *b) {
  const kp_dht_entry_t *x = a, *y = b;
  return x->last_seen > y->last_seen ? -1 : x->last_seen < y->last_seen;
}

void kp_dht_table_set_self(kp_dht_table_t *t, const uint8_t self[KP_ID_LEN]) {
  if (memcmp(t->self, self, KP_ID_LEN) == 0) return;
  kp_dht_entry_t *old = t->entries;
  uint32_t n = t->count;
  /* Re-add the most recently seen first, so overfull buckets keep those. */
  if (n) qsort(old, n, sizeof(*old), by_recency);
  t->entries = NULL;
  t->count = t->cap = 0;
  memset(t->bucket_count, 0, sizeof(t->bucket_count));
  memcpy(t->self, self, KP_ID_LEN);
  for (uint32_t i = 0; i < n; i++) {
    if (kp_dht_table_add(t, old[i].id, &old[i].addr, old[i].last_seen, NULL) ==
        KP_DHT_TABLE_ADDED) {
      kp_dht_entry_t *e = kp_dht_table_find(t, old[i].id);
      e->fails = old[i].fails;
    }
  }
  kp_free(old);
}

static uint64_t load_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

typedef struct closest_s {
  const uint8_t *target;
  uint64_t t64;
  const kp_addr_t *exclude;
  const kp_dht_entry_t **out;
  uint64_t dist[KP_DHT_MAX_CLOSEST]; /* first 64 bits of each out[i]'s distance */
  size_t n;
  size_t have;
} closest_t;

/* Offers entries [from, to) to the sorted top-n. Distances compare on their
 * first 64 bits (XOR as an integer) and on all 256 only on a tie. */
static void offer(closest_t *c, const kp_dht_table_t *t, uint32_t from, uint32_t to) {
  for (uint32_t i = from; i < to; i++) {
    const kp_dht_entry_t *e = &t->entries[i];
    uint64_t d = load_be64(e->id) ^ c->t64;
    size_t last = c->n - 1;
    if (c->have == c->n &&
        (d > c->dist[last] ||
         (d == c->dist[last] && kp_dht_id_cmp(c->target, e->id, c->out[last]->id) >= 0)))
      continue;
    if (c->exclude && kp_addr_eq(&e->addr, c->exclude)) continue;
    size_t at = c->have < c->n ? c->have : last;
    while (at > 0 &&
           (d < c->dist[at - 1] ||
            (d == c->dist[at - 1] && kp_dht_id_cmp(c->target, e->id, c->out[at - 1]->id) < 0))) {
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
  closest_t c = {target, load_be64(target), exclude, out, {0}, n, 0};
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
  offer(&c, t, start, deeper);
  if (c.have < c.n) offer(&c, t, deeper, t->count);
  for (unsigned b = bt; b-- > 0 && c.have < c.n;) {
    start -= t->bucket_count[b];
    offer(&c, t, start, start + t->bucket_count[b]);
  }
  return c.have;
}

kp_dht_entry_t *kp_dht_table_oldest(kp_dht_table_t *t, uint32_t older_than) {
  kp_dht_entry_t *best = NULL;
  for (uint32_t i = 0; i < t->count; i++) {
    kp_dht_entry_t *e = &t->entries[i];
    if (e->pinging || e->last_seen >= older_than) continue;
    if (!best || e->last_seen < best->last_seen) best = e;
  }
  return best;
}

int kp_dht_table_depth(const kp_dht_table_t *t) {
  for (int b = KP_DHT_BUCKETS - 1; b >= 0; b--)
    if (t->bucket_count[b]) return b;
  return -1;
}
