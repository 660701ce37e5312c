/* SPDX-License-Identifier: MIT */
#include "dht/dht_store.h"

#include <sodium.h>
#include <string.h>

#include "common/alloc.h"

typedef struct entry_s entry_t;
typedef struct slot_s slot_t;
typedef struct source_s source_t;

/* One stored record. All live in one list ordered by expiry (every write
 * gets the same TTL, so appending keeps it sorted) and in their source's
 * list, oldest write first. */
struct entry_s {
  entry_t *eprev, *enext;
  entry_t *sprev, *snext;
  slot_t *slot;
  source_t *source;
  kp_addr_t origin; /* the writer's full address (the source drops the port) */
  uint64_t expires;
  uint64_t seq;
  uint8_t key[KP_PUBLIC_KEY_LEN]; /* announce and mutable: the public key */
  bool tombstone;
  uint16_t len;
  uint8_t data[]; /* announce: the raw record; mutable: signature then value; immutable: value */
};

/* The records of one (kind, target). */
struct slot_s {
  slot_t *next;
  uint8_t kind;
  uint8_t target[KP_ID_LEN];
  uint32_t count;
  uint32_t cap;
  uint32_t rotate;
  entry_t **items;
};

/* A source: an IPv4 address or an IPv6 /64 (port ignored). */
struct source_s {
  source_t *next;
  kp_addr_t addr;
  uint32_t count;
  entry_t *oldest, *newest;
};

struct kp_dht_store_s {
  kp_dht_store_config_t cfg;
  uint8_t hash_key[crypto_shorthash_KEYBYTES];
  slot_t **slots;
  size_t slot_buckets, slot_count;
  source_t **sources;
  size_t source_buckets, source_count;
  entry_t *head, *tail;
  kp_dht_store_stats_t stats;
  unsigned refs; /* its swarm, and a dual-stack node's other swarm reading it */
};

void kp_dht_store_config_defaults(kp_dht_store_config_t *cfg) {
  cfg->max_records = 16384;
  cfg->max_bytes = 8u << 20;
  cfg->max_per_target = 128;
  cfg->max_per_source = 64;
  cfg->ttl_ms = KP_DHT_DEFAULT_TTL_MS;
}

int kp_dht_store_new(const kp_dht_store_config_t *cfg, const kp_rng_t *rng, kp_dht_store_t **out) {
  kp_dht_store_t *s = kp_calloc(1, sizeof(*s));
  *out = NULL;
  if (!s) return KP_ENOMEM;
  kp_dht_store_config_defaults(&s->cfg);
  if (cfg) {
    if (cfg->max_records) s->cfg.max_records = cfg->max_records;
    if (cfg->max_bytes) s->cfg.max_bytes = cfg->max_bytes;
    if (cfg->max_per_target) s->cfg.max_per_target = cfg->max_per_target;
    if (cfg->max_per_source) s->cfg.max_per_source = cfg->max_per_source;
    if (cfg->ttl_ms) s->cfg.ttl_ms = cfg->ttl_ms;
  }
  kp_rng_fill(rng, s->hash_key, sizeof(s->hash_key));
  s->refs = 1;
  *out = s;
  return 0;
}

void kp_dht_store_ref(kp_dht_store_t *s) {
  s->refs++;
}

/* ---- Hash tables (keyed SipHash: nobody can aim collisions) -------------- */

static size_t slot_hash(const kp_dht_store_t *s, uint8_t kind, const uint8_t *target) {
  uint8_t in[1 + KP_ID_LEN], h[crypto_shorthash_BYTES];
  in[0] = kind;
  memcpy(in + 1, target, KP_ID_LEN);
  crypto_shorthash(h, in, sizeof(in), s->hash_key);
  uint64_t v;
  memcpy(&v, h, sizeof(v));
  return (size_t)v;
}

static kp_addr_t source_key(const kp_addr_t *addr) {
  kp_addr_t k = *addr;
  k.port = 0;
  if (k.family == KP_AF_INET6) memset(k.ip + 8, 0, 8); /* one /64 is one source */
  return k;
}

/* Doubles a chained table when it holds more items than buckets. */
static int grow(void ***buckets, size_t *nbuckets, size_t count, size_t (*hash)(void *, void *),
                void *ctx, void **(*next_of)(void *)) {
  if (count < *nbuckets) return 0;
  size_t n = *nbuckets ? *nbuckets * 2 : 64;
  void **nb = kp_calloc(n, sizeof(void *));
  if (!nb) return KP_ENOMEM;
  for (size_t i = 0; i < *nbuckets; i++) {
    void *item = (*buckets)[i];
    while (item) {
      void *next = *next_of(item);
      size_t b = hash(ctx, item) & (n - 1);
      *next_of(item) = nb[b];
      nb[b] = item;
      item = next;
    }
  }
  kp_free(*buckets);
  *buckets = nb;
  *nbuckets = n;
  return 0;
}

static size_t slot_item_hash(void *ctx, void *item) {
  slot_t *sl = item;
  return slot_hash(ctx, sl->kind, sl->target);
}
static void **slot_next(void *item) {
  return (void **)&((slot_t *)item)->next;
}

static size_t source_item_hash(void *ctx, void *item) {
  return (size_t)kp_addr_hash(&((source_t *)item)->addr, ((kp_dht_store_t *)ctx)->hash_key);
}
static void **source_next(void *item) {
  return (void **)&((source_t *)item)->next;
}

static slot_t *find_slot(const kp_dht_store_t *s, uint8_t kind, const uint8_t *target) {
  if (!s->slot_buckets) return NULL;
  for (slot_t *sl = s->slots[slot_hash(s, kind, target) & (s->slot_buckets - 1)]; sl; sl = sl->next)
    if (sl->kind == kind && !memcmp(sl->target, target, KP_ID_LEN)) return sl;
  return NULL;
}

static slot_t *get_slot(kp_dht_store_t *s, uint8_t kind, const uint8_t *target) {
  slot_t *sl = find_slot(s, kind, target);
  if (sl) return sl;
  if (grow((void ***)&s->slots, &s->slot_buckets, s->slot_count, slot_item_hash, s, slot_next))
    return NULL;
  sl = kp_calloc(1, sizeof(*sl));
  if (!sl) return NULL;
  sl->kind = kind;
  memcpy(sl->target, target, KP_ID_LEN);
  size_t b = slot_hash(s, kind, target) & (s->slot_buckets - 1);
  sl->next = s->slots[b];
  s->slots[b] = sl;
  s->slot_count++;
  return sl;
}

static void free_slot(kp_dht_store_t *s, slot_t *sl) {
  for (slot_t **p = &s->slots[slot_hash(s, sl->kind, sl->target) & (s->slot_buckets - 1)]; *p;
       p = &(*p)->next) {
    if (*p == sl) {
      *p = sl->next;
      break;
    }
  }
  s->slot_count--;
  kp_free(sl->items);
  kp_free(sl);
}

static source_t *find_source(const kp_dht_store_t *s, const kp_addr_t *key) {
  if (!s->source_buckets) return NULL;
  for (source_t *src = s->sources[kp_addr_hash(key, s->hash_key) & (s->source_buckets - 1)]; src;
       src = src->next)
    if (kp_addr_eq(&src->addr, key)) return src;
  return NULL;
}

static source_t *get_source(kp_dht_store_t *s, const kp_addr_t *addr) {
  kp_addr_t key = source_key(addr);
  source_t *src = find_source(s, &key);
  if (src) return src;
  if (grow((void ***)&s->sources, &s->source_buckets, s->source_count, source_item_hash, s,
           source_next))
    return NULL;
  src = kp_calloc(1, sizeof(*src));
  if (!src) return NULL;
  src->addr = key;
  size_t b = kp_addr_hash(&key, s->hash_key) & (s->source_buckets - 1);
  src->next = s->sources[b];
  s->sources[b] = src;
  s->source_count++;
  return src;
}

static void free_source(kp_dht_store_t *s, source_t *src) {
  for (source_t **p = &s->sources[kp_addr_hash(&src->addr, s->hash_key) & (s->source_buckets - 1)];
       *p; p = &(*p)->next) {
    if (*p == src) {
      *p = src->next;
      break;
    }
  }
  s->source_count--;
  kp_free(src);
}

/* ---- Entries -------------------------------------------------------------- */

static size_t entry_bytes(size_t len) {
  return sizeof(entry_t) + len;
}

/* Unlinks and frees e. Its slot and source go too when emptied, unless they
 * are `keep_slot` / `keep_source` (what the caller is inserting into). */
static void remove_entry(kp_dht_store_t *s, entry_t *e, slot_t *keep_slot, source_t *keep_source) {
  if (e->eprev)
    e->eprev->enext = e->enext;
  else
    s->head = e->enext;
  if (e->enext)
    e->enext->eprev = e->eprev;
  else
    s->tail = e->eprev;

  source_t *src = e->source;
  if (e->sprev)
    e->sprev->snext = e->snext;
  else
    src->oldest = e->snext;
  if (e->snext)
    e->snext->sprev = e->sprev;
  else
    src->newest = e->sprev;
  src->count--;

  slot_t *sl = e->slot;
  for (uint32_t i = 0; i < sl->count; i++) {
    if (sl->items[i] == e) {
      sl->items[i] = sl->items[--sl->count];
      break;
    }
  }
  s->stats.records--;
  s->stats.bytes -= entry_bytes(e->len);
  kp_free(e);
  if (!sl->count && sl != keep_slot) free_slot(s, sl);
  if (!src->count && src != keep_source) free_source(s, src);
}

static entry_t *find_entry(const slot_t *sl, const uint8_t *key) {
  for (uint32_t i = 0; sl && i < sl->count; i++)
    if (!key || !memcmp(sl->items[i]->key, key, KP_PUBLIC_KEY_LEN)) return sl->items[i];
  return NULL;
}

/* The source holding the most records in sl, and its oldest one there. */
static entry_t *slot_victim(const slot_t *sl, const source_t *newcomer, uint32_t *newcomer_count,
                            uint32_t *max_count) {
  entry_t *victim = NULL;
  *newcomer_count = *max_count = 0;
  for (uint32_t i = 0; i < sl->count; i++) {
    const source_t *src = sl->items[i]->source;
    uint32_t c = 0;
    entry_t *oldest = NULL;
    for (uint32_t j = 0; j < sl->count; j++) {
      if (sl->items[j]->source != src) continue;
      c++;
      if (!oldest || sl->items[j]->expires < oldest->expires) oldest = sl->items[j];
    }
    if (src == newcomer) *newcomer_count = c;
    if (c > *max_count) *max_count = c, victim = oldest;
  }
  return victim;
}

static source_t *largest_source(const kp_dht_store_t *s) {
  source_t *big = NULL;
  for (size_t b = 0; b < s->source_buckets; b++)
    for (source_t *src = s->sources[b]; src; src = src->next)
      if (src->count && (!big || src->count > big->count)) big = src;
  return big;
}

/* Frees room for one more record of `size` bytes from src in sl, by the
 * rules in dht_store.h. Returns 0 or KP_ELIMIT. */
static int make_room(kp_dht_store_t *s, slot_t *sl, source_t *src, size_t size) {
  if (size > s->cfg.max_bytes) return KP_ELIMIT;
  if (src->count >= s->cfg.max_per_source) {
    remove_entry(s, src->oldest, sl, src);
    s->stats.evicted++;
  }
  if (sl->kind == KP_STORE_ANNOUNCE && sl->count >= s->cfg.max_per_target) {
    uint32_t mine, most;
    entry_t *victim = slot_victim(sl, src, &mine, &most);
    if (!victim || most <= mine) return KP_ELIMIT;
    remove_entry(s, victim, sl, src);
    s->stats.evicted++;
  }
  while (s->stats.records + 1 > s->cfg.max_records || s->stats.bytes + size > s->cfg.max_bytes) {
    source_t *big = largest_source(s);
    entry_t *victim = big && big->count > src->count ? big->oldest : src->oldest;
    if (!victim) return KP_ELIMIT;
    remove_entry(s, victim, sl, src);
    s->stats.evicted++;
  }
  return 0;
}

static int insert(kp_dht_store_t *s, uint8_t kind, const uint8_t *target, const uint8_t *key,
                  uint64_t seq, bool tombstone, const uint8_t *d1, size_t l1, const uint8_t *d2,
                  size_t l2, const kp_addr_t *source, uint64_t now) {
  size_t len = l1 + l2;
  if (len > UINT16_MAX) return KP_ETOOBIG;
  slot_t *sl = get_slot(s, kind, target);
  source_t *src = sl ? get_source(s, source) : NULL;
  int err = src ? make_room(s, sl, src, entry_bytes(len)) : KP_ENOMEM;
  entry_t *e = NULL;
  if (!err && sl->count == sl->cap) {
    uint32_t cap = sl->cap ? sl->cap * 2 : 2;
    entry_t **items = kp_realloc(sl->items, cap * sizeof(*items));
    if (!items)
      err = KP_ENOMEM;
    else
      sl->items = items, sl->cap = cap;
  }
  if (!err && !(e = kp_malloc(entry_bytes(len)))) err = KP_ENOMEM;
  if (err) {
    if (err == KP_ELIMIT) s->stats.refused++;
    if (sl && !sl->count) free_slot(s, sl);
    if (src && !src->count) free_source(s, src);
    return err;
  }
  memset(e, 0, sizeof(*e));
  e->slot = sl;
  e->source = src;
  e->origin = *source;
  e->expires = now + s->cfg.ttl_ms;
  e->seq = seq;
  if (key) memcpy(e->key, key, KP_PUBLIC_KEY_LEN);
  e->tombstone = tombstone;
  e->len = (uint16_t)len;
  if (l1) memcpy(e->data, d1, l1);
  if (l2) memcpy(e->data + l1, d2, l2);
  sl->items[sl->count++] = e;
  e->eprev = s->tail;
  if (s->tail)
    s->tail->enext = e;
  else
    s->head = e;
  s->tail = e;
  e->sprev = src->newest;
  if (src->newest)
    src->newest->snext = e;
  else
    src->oldest = e;
  src->newest = e;
  src->count++;
  s->stats.records++;
  s->stats.bytes += entry_bytes(len);
  s->stats.stored++;
  return 0;
}

/* Moves e to the end of the expiry order with a fresh TTL. */
static void refresh(kp_dht_store_t *s, entry_t *e, uint64_t now) {
  e->expires = now + s->cfg.ttl_ms;
  if (s->tail == e) return;
  if (e->eprev)
    e->eprev->enext = e->enext;
  else
    s->head = e->enext;
  e->enext->eprev = e->eprev;
  e->eprev = s->tail;
  e->enext = NULL;
  s->tail->enext = e;
  s->tail = e;
}

/* ---- Announce records ---------------------------------------------------- */

int kp_dht_store_announce(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                          const kp_record_t *rec, const uint8_t *raw, size_t raw_len,
                          const kp_addr_t *source, uint64_t now) {
  slot_t *sl = find_slot(s, KP_STORE_ANNOUNCE, target);
  entry_t *old = find_entry(sl, rec->public_key);
  if (old) {
    /* Equal seq: a retransmission of what we hold is fine, and changes
     * nothing (not even the expiry: a replay must not keep a record alive). */
    if (old->seq == rec->seq && !old->tombstone && old->len == raw_len &&
        !memcmp(old->data, raw, raw_len))
      return 0;
    if (old->seq >= rec->seq) return KP_ESEQ;
    remove_entry(s, old, NULL, NULL);
  }
  return insert(s, KP_STORE_ANNOUNCE, target, rec->public_key, rec->seq, false, raw, raw_len, NULL,
                0, source, now);
}

int kp_dht_store_unannounce(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                            const uint8_t public_key[KP_PUBLIC_KEY_LEN], uint64_t seq,
                            const kp_addr_t *source, uint64_t now) {
  slot_t *sl = find_slot(s, KP_STORE_ANNOUNCE, target);
  entry_t *old = find_entry(sl, public_key);
  if (old) {
    if (old->seq > seq) return KP_ESEQ;
    if (old->seq == seq && old->tombstone) return 0;
    remove_entry(s, old, NULL, NULL);
  }
  return insert(s, KP_STORE_ANNOUNCE, target, public_key, seq, true, NULL, 0, NULL, 0, source, now);
}

size_t kp_dht_store_each(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                         bool (*fn)(void *ctx, const kp_dht_stored_t *rec), void *ctx) {
  slot_t *sl = find_slot(s, KP_STORE_ANNOUNCE, target);
  if (!sl) return 0;
  size_t live = 0;
  for (uint32_t i = 0; i < sl->count; i++) live += !sl->items[i]->tombstone;
  uint32_t start = sl->rotate++;
  for (uint32_t i = 0; i < sl->count; i++) {
    entry_t *e = sl->items[(start + i) % sl->count];
    if (e->tombstone) continue;
    kp_dht_stored_t view = {e->data,    e->len,           e->key,    e->seq,
                            e->expires, &e->source->addr, &e->origin};

    if (!fn(ctx, &view)) break;
  }
  return live;
}

void kp_dht_store_walk(const kp_dht_store_t *s,
                       bool (*fn)(void *ctx, const kp_dht_store_item_t *item), void *ctx) {
  for (const entry_t *e = s->head; e; e = e->enext) {
    kp_dht_store_item_t it = {
        .kind = e->slot->kind,
        .tombstone = e->tombstone,
        .target = e->slot->target,
        .public_key = e->slot->kind == KP_STORE_IMMUTABLE ? NULL : e->key,
        .seq = e->seq,
        .expires = e->expires,
        .data = e->data,
        .data_len = e->len,
        .origin = &e->origin,
    };
    if (!fn(ctx, &it)) return;
  }
}

/* ---- Mutable and immutable values ---------------------------------------------- */

int kp_dht_store_put_mutable(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                             const kp_dht_mutable_t *m, const kp_addr_t *source, uint64_t now) {
  slot_t *sl = find_slot(s, KP_STORE_MUTABLE, target);
  entry_t *old = find_entry(sl, NULL);
  /* BEP 44 order: compare-and-swap first, then the sequence number. */
  if (m->has_cas && m->cas != (old ? old->seq : 0)) return KP_ECAS;
  if (old) {
    if (m->seq < old->seq) return KP_ESEQ;
    if (m->seq == old->seq) {
      bool same = old->len == KP_SIGNATURE_LEN + m->value_len &&
                  !memcmp(old->data + KP_SIGNATURE_LEN, m->value, m->value_len);
      if (!same) return KP_ESEQ;
      refresh(s, old, now); /* anyone may republish a value to keep it alive */
      return 0;
    }
    remove_entry(s, old, NULL, NULL);
  }
  return insert(s, KP_STORE_MUTABLE, target, m->public_key, m->seq, false, m->signature,
                KP_SIGNATURE_LEN, m->value, m->value_len, source, now);
}

bool kp_dht_store_get_mutable(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                              kp_dht_mutable_t *m) {
  entry_t *e = find_entry(find_slot(s, KP_STORE_MUTABLE, target), NULL);
  if (!e) return false;
  memcpy(m->public_key, e->key, KP_PUBLIC_KEY_LEN);
  m->seq = e->seq;
  memcpy(m->signature, e->data, KP_SIGNATURE_LEN);
  m->value = e->data + KP_SIGNATURE_LEN;
  m->value_len = e->len - KP_SIGNATURE_LEN;
  return true;
}

int kp_dht_store_put_immutable(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                               const uint8_t *value, size_t len, const kp_addr_t *source,
                               uint64_t now) {
  entry_t *old = find_entry(find_slot(s, KP_STORE_IMMUTABLE, target), NULL);
  if (old) {
    refresh(s, old, now);
    return 0;
  }
  return insert(s, KP_STORE_IMMUTABLE, target, NULL, 0, false, value, len, NULL, 0, source, now);
}

bool kp_dht_store_get_immutable(kp_dht_store_t *s, const uint8_t target[KP_ID_LEN],
                                const uint8_t **value, size_t *len) {
  entry_t *e = find_entry(find_slot(s, KP_STORE_IMMUTABLE, target), NULL);
  if (!e) return false;
  *value = e->data;
  *len = e->len;
  return true;
}

/* ---- Expiry and teardown ----------------------------------------------------- */

uint64_t kp_dht_store_tick(kp_dht_store_t *s, uint64_t now) {
  while (s->head && s->head->expires <= now) {
    remove_entry(s, s->head, NULL, NULL);
    s->stats.expired++;
  }
  return kp_dht_store_next_expiry(s);
}

uint64_t kp_dht_store_next_expiry(const kp_dht_store_t *s) {
  return s->head ? s->head->expires : UINT64_MAX;
}

void kp_dht_store_stats(const kp_dht_store_t *s, kp_dht_store_stats_t *out) {
  *out = s->stats;
}

void kp_dht_store_free(kp_dht_store_t *s) {
  if (!s || --s->refs) return;
  while (s->head) remove_entry(s, s->head, NULL, NULL);
  kp_free(s->slots);
  kp_free(s->sources);
  kp_free(s);
}
