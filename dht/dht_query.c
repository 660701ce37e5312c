/* SPDX-License-Identifier: MIT */
/* Iterative Kademlia queries and the commit step.
 *
 * A query keeps up to QUERY_MAX candidates sorted by distance to the target
 * and asks the closest ones it has not asked, `concurrency` at a time. It
 * ends when the k closest candidates still standing have all answered (or
 * there is nobody left to ask). Only members (answers carrying a verified
 * id) count towards the result; others still contribute the nodes they
 * return. A candidate that times out is reported with DOWN_HINT to the node
 * that referred us to it, which re-checks it. */
#include "dht/dht_internal.h"

#include <string.h>

#include "common/alloc.h"
#include "dht/dht_id.h"

/* Room for k results plus the failures and non-members around them. */
#define QUERY_MAX 64
#define QUERY_MAX_HINTS 3

enum { C_NEW, C_INFLIGHT, C_DONE, C_FAILED, C_NONMEMBER };

typedef struct cand_s {
  uint8_t id[KP_ID_LEN];
  kp_addr_t addr;
  kp_addr_t referrer; /* unset for seeds */
  uint8_t token[32];
  bool has_token;
  uint8_t state;
  uint8_t hops;
  kp_dht_req_t *req;
} cand_t;

struct kp_dht_query_s {
  kp_dht_query_t *prev;
  kp_dht_query_t *next;
  kp_dht_t *dht;
  uint8_t target[KP_ID_LEN];
  uint8_t command;
  uint8_t *value;
  size_t value_len;
  unsigned concurrency;
  kp_dht_query_reply_cb on_reply;
  kp_dht_query_done_cb on_done;
  void *arg;
  kp_dht_query_stats_t stats;
  unsigned inflight;
  unsigned hints;
  bool finished;
  bool in_reply;  /* inside on_reply: a cancel must wait until it returns */
  bool cancelled; /* cancelled from inside on_reply */
  unsigned count;
  uint8_t order[QUERY_MAX]; /* cands[] indices, closest first */
  /* The last four IP bytes of each cands[i].addr, apart: finding a
   * candidate by address scans these 256 bytes, not 64 candidates. */
  uint32_t tail[QUERY_MAX];
  /* Each candidate's eclipse-limit groups as numbers (group_key), apart for
   * the same reason. */
  uint64_t narrow[QUERY_MAX], wide[QUERY_MAX];
  cand_t cands[QUERY_MAX];
};

/* An address's prefix (its /24 or /48, or with wide its IPv6 /32) as a
 * number; 0 for none (exempt, or IPv4 asked for a /32). */
static uint64_t group_key(const kp_addr_t *a, bool wide) {
  if (kp_dht_prefix_exempt(a) || (wide && a->family != KP_AF_INET6)) return 0;
  size_t n = wide ? 4 : a->family == KP_AF_INET6 ? 6 : 3;
  uint64_t k = (uint64_t)a->family << 56;
  for (size_t i = 0; i < n; i++) k |= (uint64_t)a->ip[i] << (8 * (5 - i));
  return k;
}

static uint32_t addr_tail(const kp_addr_t *a) {
  uint32_t t;
  memcpy(&t, a->family == KP_AF_INET ? a->ip : a->ip + 12, 4);
  return t;
}

static void on_query_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                           const kp_addr_t *from, uint64_t now);

static bool is_self(const kp_dht_t *dht, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr) {
  if (dht->has_id && memcmp(id, dht->table.self, KP_ID_LEN) == 0) return true;
  if (dht->nat.has_public && kp_addr_eq(addr, &dht->nat.public_addr)) return true;
  return kp_addr_eq(addr, &dht->cfg.local);
}

static void forget_request(kp_dht_query_t *q, cand_t *c) {
  if (!c->req) return;
  q->stats.requests += c->req->sends;
  kp_dht_rpc_abandon(&q->dht->rpc, c->req);
  c->req = NULL;
  q->inflight--;
}

/* The eclipse limits among candidates (dht_id.h): a prefix may hold at
 * most KP_DHT_PREFIX_MAX of them (an IPv6 /32 KP_DHT_WIDE_PREFIX_MAX), its
 * closest. For a newcomer that would go in at position `at`: -1 if it fits,
 * PREFIX_REFUSE if it is farther than all of its prefix's, else the
 * position (in order[]) of the candidate it displaces. Since the results
 * are candidates, they obey the same limits. */
#define PREFIX_REFUSE (-2)

static int prefix_victim(const kp_dht_query_t *q, uint64_t nkey, uint64_t wkey, unsigned at) {
  if (!nkey) return -1;
  unsigned narrow = 0, wide = 0;
  int far_narrow = -1, far_wide = -1;
  for (unsigned i = 0; i < q->count; i++) {
    unsigned slot = q->order[i];
    if (wkey && q->wide[slot] == wkey) wide++, far_wide = (int)i;
    if (q->narrow[slot] == nkey) narrow++, far_narrow = (int)i;
  }
  int victim = narrow >= KP_DHT_PREFIX_MAX      ? far_narrow
               : wide >= KP_DHT_WIDE_PREFIX_MAX ? far_wide
                                                : -1;
  if (victim < 0) return -1;
  return (unsigned)victim >= at ? victim : PREFIX_REFUSE;
}

static void add_candidate(kp_dht_query_t *q, const uint8_t id[KP_ID_LEN], const kp_addr_t *addr,
                          const kp_addr_t *referrer, unsigned hops) {
  if (addr->family != q->dht->cfg.family || is_self(q->dht, id, addr)) return;
  /* Binary search: candidates are sorted by distance, and a duplicate has
   * the same distance as the one we hold. */
  unsigned lo = 0, hi = q->count;
  while (lo < hi) {
    unsigned mid = (lo + hi) / 2;
    cand_t *known = &q->cands[q->order[mid]];
    int c = kp_dht_id_cmp(q->target, id, known->id);
    if (c == 0) {
      /* Known already (perhaps from our own table): remember who else
       * vouches for it, so a timeout can be reported to them. */
      if (referrer && !kp_addr_is_set(&known->referrer)) known->referrer = *referrer;
      return;
    }
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  unsigned slot;
  uint64_t nkey = group_key(addr, false), wkey = group_key(addr, true);
  int victim = prefix_victim(q, nkey, wkey, lo);
  if (victim == PREFIX_REFUSE) return;
  if (victim >= 0) {
    /* Its prefix's farthest candidate makes room (and its slot is reused). */
    slot = q->order[victim];
    forget_request(q, &q->cands[slot]);
    memmove(&q->order[victim], &q->order[victim + 1], q->count - (unsigned)victim - 1);
    q->count--;
  } else if (q->count == QUERY_MAX) {
    if (lo == QUERY_MAX) return; /* farther than everything we hold */
    slot = q->order[QUERY_MAX - 1];
    forget_request(q, &q->cands[slot]);
    q->count--;
  } else {
    slot = q->count;
  }
  memmove(&q->order[lo + 1], &q->order[lo], q->count - lo);
  q->order[lo] = (uint8_t)slot;
  q->count++;
  cand_t *c = &q->cands[slot];
  memset(c, 0, sizeof(*c));
  memcpy(c->id, id, KP_ID_LEN);
  c->addr = *addr;
  q->tail[slot] = addr_tail(addr);
  q->narrow[slot] = nkey;
  q->wide[slot] = wkey;
  if (referrer) c->referrer = *referrer;
  c->hops = (uint8_t)(hops > 255 ? 255 : hops);
}

static cand_t *find_by_addr(kp_dht_query_t *q, const kp_addr_t *addr) {
  uint32_t tail = addr_tail(addr);
  for (unsigned i = 0; i < q->count; i++)
    if (q->tail[i] == tail && kp_addr_eq(&q->cands[i].addr, addr)) return &q->cands[i];
  return NULL;
}

static void add_seed(kp_dht_query_t *q, const kp_addr_t *addr) {
  uint8_t id[KP_ID_LEN];
  kp_dht_id_from_addr(addr, id);
  add_candidate(q, id, addr, NULL, 1);
}

static void finish(kp_dht_query_t *q) {
  for (unsigned i = 0; i < q->count; i++) forget_request(q, &q->cands[q->order[i]]);
  q->finished = true;
  q->dht->queries_due = true;
}

static void send_to(kp_dht_query_t *q, cand_t *c, uint64_t now) {
  kp_dht_t *dht = q->dht;
  c->state = C_INFLIGHT;
  int err = kp__dht_request_ex(dht, &c->addr, q->command, q->target, q->value, q->value_len, NULL,
                               (int)dht->cfg.query_retries, 0, on_query_reply, q, now, &c->req);
  if (err) {
    c->state = C_FAILED;
    c->req = NULL;
    return;
  }
  c->req->known_id = true;
  memcpy(c->req->id, c->id, KP_ID_LEN);
  q->inflight++;
}

/* Sends to the closest unasked candidates, or ends the query when the k
 * closest still standing have all answered. */
/* Parallel requests before the first answer. Our own table's nodes closest
 * to an arbitrary target usually share only a bit or two with it; the first
 * answers bring nodes far closer, which displace the other seeds from the
 * window. So the first hop asks few and the full concurrency follows. */
#define FIRST_HOP 3

static void pump(kp_dht_query_t *q, uint64_t now) {
  if (q->finished) return;
  unsigned live = 0;
  bool settled = true;
  unsigned width = q->stats.responses || q->stats.timeouts ? q->concurrency : FIRST_HOP;
  if (width > q->concurrency) width = q->concurrency;
  for (unsigned i = 0; i < q->count && live < q->dht->cfg.k; i++) {
    cand_t *c = &q->cands[q->order[i]];
    if (c->state == C_FAILED || c->state == C_NONMEMBER) continue;
    live++;
    if (c->state == C_DONE) continue;
    settled = false;
    if (c->state == C_NEW && q->inflight < width) send_to(q, c, now);
  }
  if (settled) finish(q);
}

static void send_down_hint(kp_dht_query_t *q, const cand_t *c, uint64_t now);

static void on_query_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                           const kp_addr_t *from, uint64_t now) {
  kp_dht_query_t *q = arg;
  cand_t *c = NULL;
  uint32_t tail = addr_tail(&req->to);
  for (unsigned i = 0; i < q->count && !c; i++)
    if (q->tail[i] == tail && q->cands[i].req == req) c = &q->cands[i];
  if (!c) return;
  c->req = NULL;
  q->inflight--;
  q->stats.requests += req->sends;
  if (status == KP_ECANCELED) return;
  if (status) {
    c->state = C_FAILED;
    q->stats.timeouts++;
    send_down_hint(q, c, now);
    pump(q, now);
    return;
  }
  q->stats.responses++;
  c->state = resp->has_id ? C_DONE : C_NONMEMBER;
  c->has_token = resp->has_token;
  memcpy(c->token, resp->token, sizeof(c->token));
  unsigned hops = c->hops + 1u;
  kp_addr_t referrer = c->addr; /* c may move as candidates are added */
  size_t step = kp_addr_compact_len(q->dht->cfg.family);
  for (size_t off = 0; off + step <= resp->nodes_len; off += step) {
    kp_addr_t addr;
    uint8_t id[KP_ID_LEN];
    if (kp_addr_decode_compact(&addr, resp->nodes + off, step)) continue;
    /* Most nodes in later replies are ones we hold already: a scan of our
     * candidates' addresses is far cheaper than hashing the id again. */
    cand_t *known = find_by_addr(q, &addr);
    if (known) {
      if (!kp_addr_is_set(&known->referrer)) known->referrer = referrer;
      continue;
    }
    kp_dht_id_from_addr(&addr, id);
    add_candidate(q, id, &addr, &referrer, hops);
  }
  if (q->on_reply) {
    q->in_reply = true;
    q->on_reply(q->arg, q, resp, from, now);
    q->in_reply = false;
    if (q->cancelled) {
      kp_dht_query_cancel(q->dht, q);
      return;
    }
  }
  pump(q, now);
}

static void ignore_reply(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                         const kp_addr_t *from, uint64_t now) {
  (void)arg, (void)req, (void)status, (void)resp, (void)from, (void)now;
}

static void send_down_hint(kp_dht_query_t *q, const cand_t *c, uint64_t now) {
  if (!kp_addr_is_set(&c->referrer) || q->hints >= QUERY_MAX_HINTS) return;
  uint8_t value[KP_ADDR_COMPACT_MAX];
  size_t n = kp_addr_encode_compact(&c->addr, value);
  if (kp__dht_request_ex(q->dht, &c->referrer, KP_DHT_CMD_DOWN_HINT, NULL, value, n, NULL, 0, 0,
                         ignore_reply, NULL, now, NULL) == 0)
    q->hints++;
}

int kp_dht_query_start(kp_dht_t *dht, const uint8_t target[KP_ID_LEN],
                       const kp_dht_query_opts_t *opts, uint64_t now, kp_dht_query_t **out) {
  if (out) *out = NULL;
  kp_dht_query_t *q = kp_calloc(1, sizeof(*q));
  if (!q) return KP_ENOMEM;
  if (opts->value_len) {
    if (opts->value_len > KP_DHT_MAX_VALUE || !(q->value = kp_malloc(opts->value_len))) {
      kp_free(q);
      return opts->value_len > KP_DHT_MAX_VALUE ? KP_ETOOBIG : KP_ENOMEM;
    }
    memcpy(q->value, opts->value, opts->value_len);
    q->value_len = opts->value_len;
  }
  q->dht = dht;
  memcpy(q->target, target, KP_ID_LEN);
  q->command = opts->command ? opts->command : KP_DHT_CMD_FIND_NODE;
  q->concurrency = opts->concurrency ? opts->concurrency : dht->cfg.concurrency;
  q->on_reply = opts->on_reply;
  q->on_done = opts->on_done;
  q->arg = opts->arg;

  const kp_dht_entry_t *closest[KP_DHT_MAX_NODES];
  size_t n = kp_dht_table_closest(&dht->table, target, NULL, closest, dht->cfg.k);
  for (size_t i = 0; i < n; i++) {
    kp_addr_t addr;
    uint8_t id[KP_ID_LEN];
    kp_dht_entry_addr(&dht->table, closest[i], &addr);
    kp_dht_id_from_addr(&addr, id);
    add_candidate(q, id, &addr, NULL, 1);
  }
  for (size_t i = 0; i < opts->seed_count; i++) add_seed(q, &opts->seeds[i]);
  /* Until the table can seed a query on its own, lean on the bootstrap nodes. */
  if (n < dht->cfg.k)
    for (unsigned i = 0; i < dht->bootstrap_count; i++) add_seed(q, &dht->bootstrap[i]);

  unsigned b = kp_dht_table_bucket_of(&dht->table, target);
  if (b < KP_DHT_REFRESH_BUCKETS) {
    dht->refreshed_s[b] = (uint16_t)kp__dht_seconds(now);
    dht->refresh_due &= ~(UINT64_C(1) << b);
  }

  q->next = dht->queries;
  if (dht->queries) dht->queries->prev = q;
  dht->queries = q;
  pump(q, now);
  if (out) *out = q;
  return 0;
}

static void unlink_query(kp_dht_t *dht, kp_dht_query_t *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    dht->queries = q->next;
  if (q->next) q->next->prev = q->prev;
}

static void free_query(kp_dht_query_t *q) {
  kp_free(q->value);
  kp_free(q);
}

void kp_dht_query_cancel(kp_dht_t *dht, kp_dht_query_t *q) {
  if (q->in_reply) {
    q->cancelled = true;
    return;
  }

  for (unsigned i = 0; i < q->count; i++) forget_request(q, &q->cands[q->order[i]]);
  if (dht->bootstrap_query == q) dht->bootstrap_query = NULL;
  unlink_query(dht, q);
  free_query(q);
}

static void deliver(kp_dht_t *dht, kp_dht_query_t *q, int status, uint64_t now) {
  kp_dht_result_t results[KP_DHT_MAX_NODES];
  size_t n = 0;
  for (unsigned i = 0; i < q->count && n < dht->cfg.k && status == 0; i++) {
    const cand_t *c = &q->cands[q->order[i]];
    if (c->state != C_DONE) continue;
    kp_dht_result_t *r = &results[n++];
    memcpy(r->id, c->id, KP_ID_LEN);
    r->addr = c->addr;
    r->has_token = c->has_token;
    memcpy(r->token, c->token, sizeof(r->token));
    if (n == 1) q->stats.hops = c->hops;
  }
  if (status == 0 && n == 0) status = KP_ENONODES;
  unlink_query(dht, q);
  if (q->on_done) q->on_done(q->arg, q, status, results, n, now);
  free_query(q);
}

void kp__dht_queries_tick(kp_dht_t *dht, uint64_t now) {
  if (!dht->queries_due) return;
  dht->queries_due = false;
  /* A callback may start or cancel queries: restart the walk after each. */
  for (;;) {
    kp_dht_query_t *q = dht->queries;
    while (q && !q->finished) q = q->next;
    if (!q) return;
    deliver(dht, q, 0, now);
  }
}

uint64_t kp__dht_queries_deadline(const kp_dht_t *dht, uint64_t fallback) {
  return dht->queries_due ? 0 : fallback;
}

void kp__dht_queries_cancel_all(kp_dht_t *dht, uint64_t now) {
  kp_dht_query_t *q;
  while ((q = dht->queries)) {
    for (unsigned i = 0; i < q->count; i++) forget_request(q, &q->cands[q->order[i]]);
    deliver(dht, q, KP_ECANCELED, now);
  }
  dht->bootstrap_query = NULL;
}

const kp_dht_query_stats_t *kp_dht_query_stats(const kp_dht_query_t *q) {
  return &q->stats;
}

const uint8_t *kp_dht_query_target(const kp_dht_query_t *q) {
  return q->target;
}
