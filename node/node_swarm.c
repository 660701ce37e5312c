/* SPDX-License-Identifier: MIT */
/* kp_node's swarm API: announce, lookup, put and get, translated onto the
 * swarm state machine (dht/dht_swarm.h) with the node's clock, batching and
 * timer. */
#include <string.h>

#include "common/alloc.h"
#include "node/node_internal.h"

/* ---- Announce ----------------------------------------------------------------- */

struct kp_announce_s {
  void *data;
  kp_node_t *node;
  kp_dht_announce_t *inner;
  kp_dht_announce_t *twin; /* a dual-stack node's, over its other family (no callback) */
  kp_announce_cb cb;
  kp_announce_t *prev, *next;
  bool cancelled_reported;
};

static void unlink_announce(kp_announce_t *a) {
  if (a->prev)
    a->prev->next = a->next;
  else
    a->node->announces = a->next;
  if (a->next) a->next->prev = a->prev;
}

static void on_round(void *arg, int status, unsigned stored) {
  kp_announce_t *a = arg;
  if (status == UV_ECANCELED) a->cancelled_reported = true;
  if (a->cb) a->cb(a, status, stored);
}

static int announce(kp_node_t *node, const uint8_t target[KP_ID_LEN], const kp_keypair_t *kp,
                    const void *data, size_t data_len, kp_announce_cb cb, bool twin,
                    kp_announce_t **out);

int kp_node_announce(kp_node_t *node, const uint8_t target[KP_ID_LEN], const kp_keypair_t *kp,
                     const void *data, size_t data_len, kp_announce_cb cb, kp_announce_t **out) {
  return announce(node, target, kp, data, data_len, cb, true, out);
}

int kp__node_announce_here(kp_node_t *node, const uint8_t target[KP_ID_LEN], const kp_keypair_t *kp,
                           const void *data, size_t data_len, kp_announce_t **out) {
  return announce(node, target, kp, data, data_len, NULL, false, out);
}

int kp__node_announce_addrs(kp_node_t *on, kp_node_t *other, const uint8_t target[KP_ID_LEN],
                            const kp_keypair_t *kp, kp_announce_t **slot, bool *named_both) {
  kp_addr_t pub, pub2;
  if (!on || on->closing || !kp_node_is_member(on) || kp_node_public_addr(on, &pub)) return 0;
  bool both = other && !other->closing && !kp_node_public_addr(other, &pub2);
  if (*slot && (*named_both || !both)) return 0;
  char text[2 * KP_ADDR_STRLEN];
  kp_addr_format(&pub, text, sizeof(text));
  if (both) {
    size_t n = strlen(text);
    text[n++] = ' ';
    kp_addr_format(&pub2, text + n, sizeof(text) - n);
  }
  /* The other address appeared: the record names it from now on. */
  if (*slot) kp_announce_stop(*slot, false);
  *slot = NULL;
  int err = kp__node_announce_here(on, target, kp, text, strlen(text), slot);
  *named_both = !err && both;
  return err;
}

static int announce(kp_node_t *node, const uint8_t target[KP_ID_LEN], const kp_keypair_t *kp,
                    const void *data, size_t data_len, kp_announce_cb cb, bool twin,
                    kp_announce_t **out) {
  *out = NULL;
  if (node->closing) return UV_EINVAL;
  kp_announce_t *a = kp_calloc(1, sizeof(*a));
  if (!a) return UV_ENOMEM;
  a->node = node;
  a->cb = cb;
  int err;
  KP_NODE_FEED(node, err = kp_dht_swarm_announce(node->swarm, target, kp, data, data_len, on_round,
                                                 a, kp__node_now(node), &a->inner));
  if (err) {
    kp_free(a);
    return err;
  }
  /* A dual-stack node announces over both families. Without the twin the
   * record is still found over the other family where a dual-stack node
   * holds it (one store): a warning, not a failure. */
  kp_node_t *sib = twin ? node->sibling : NULL;
  if (sib && !sib->closing) {
    KP_NODE_FEED(sib, err = kp_dht_swarm_announce(sib->swarm, target, kp, data, data_len, NULL,
                                                  NULL, kp__node_now(sib), &a->twin));
    if (err) KP_WARN(&node->log, "announcing over the other family: %s", kp_strerror(err));
  }
  a->next = node->announces;
  if (a->next) a->next->prev = a;
  node->announces = a;
  *out = a;
  return 0;
}

static void stop_twin(kp_announce_t *a, bool unannounce) {
  kp_node_t *sib = a->node->sibling;
  if (!a->twin || !sib || sib->closing) return;
  KP_NODE_FEED(sib, kp_dht_announce_stop(sib->swarm, a->twin, unannounce, kp__node_now(sib)));
  a->twin = NULL;
}

void kp__node_announces_unpair(kp_node_t *node) {
  for (kp_announce_t *a = node->announces; a; a = a->next) stop_twin(a, false);
}

void kp_announce_stop(kp_announce_t *a, bool unannounce) {
  kp_node_t *node = a->node;
  stop_twin(a, unannounce);
  unlink_announce(a);
  if (!node->closing) {
    KP_NODE_FEED(node, kp_dht_announce_stop(node->swarm, a->inner, unannounce, kp__node_now(node)));
  }
  kp_free(a);
}

void kp_announce_refresh(kp_announce_t *a) {
  kp_node_t *node = a->node;
  if (node->closing) return;
  KP_NODE_FEED(node, kp_dht_announce_refresh(node->swarm, a->inner, kp__node_now(node)));
  kp_node_t *sib = node->sibling;
  if (a->twin && sib && !sib->closing)
    KP_NODE_FEED(sib, kp_dht_announce_refresh(sib->swarm, a->twin, kp__node_now(sib)));
}

size_t kp_announce_relays(const kp_announce_t *a, kp_addr_t *out, size_t cap) {
  return kp_dht_announce_relays(a->inner, out, cap);
}

void *kp_announce_get_data(const kp_announce_t *a) {
  return a->data;
}

void kp_announce_set_data(kp_announce_t *a, void *data) {
  a->data = data;
}

void kp__node_announces_cancel(kp_node_t *node) {
  /* The node is closing: every announcement not stopped yet hears of it
   * once, then its handle is gone (the swarm drops the state behind it). */
  while (node->announces) {
    kp_announce_t *a = node->announces;
    unlink_announce(a);
    /* Its queries and requests go first: the DHT's teardown must not call
     * back into the handle freed here. */
    if (a->inner) kp_dht_announce_stop(node->swarm, a->inner, false, kp__node_now(node));
    a->inner = NULL;
    if (!a->cancelled_reported && a->cb) a->cb(a, UV_ECANCELED, 0);
    kp_free(a);
  }
}

/* ---- Lookup ---------------------------------------------------------------- */

/* A dual-stack node looks up over both families at once: each record is
 * reported once (the first SEEN_MAX keys and seqs are remembered), the end
 * once both are done, with the sums of both. */
#define SEEN_MAX 32

typedef struct lookup_s {
  kp_node_t *node;
  kp_lookup_record_cb on_record;
  kp_lookup_done_cb on_done;
  void *arg;
  uint64_t started_ns;
  unsigned running;
  int status; /* 0 if either family's lookup ended well */
  size_t found;
  kp_node_query_stats_t stats;
  struct {
    uint8_t key[8];
    uint64_t seq;
  } seen[SEEN_MAX];
  unsigned seen_count;
} lookup_t;

static bool seen_before(lookup_t *l, const kp_record_t *rec) {
  for (unsigned i = 0; i < l->seen_count; i++)
    if (l->seen[i].seq == rec->seq && !memcmp(l->seen[i].key, rec->public_key, 8)) return true;
  if (l->seen_count < SEEN_MAX) {
    memcpy(l->seen[l->seen_count].key, rec->public_key, 8);
    l->seen[l->seen_count++].seq = rec->seq;
  }
  return false;
}

static void on_lookup_record(void *arg, const kp_record_t *rec) {
  lookup_t *l = arg;
  if (l->on_record && !seen_before(l, rec)) l->on_record(l->node, rec, l->arg);
}

static void on_lookup_done(void *arg, int status, size_t found, const kp_dht_query_stats_t *qs) {
  lookup_t *l = arg;
  l->found += found;
  l->stats.requests += qs->requests;
  l->stats.responses += qs->responses;
  l->stats.timeouts += qs->timeouts;
  if (qs->hops > l->stats.hops) l->stats.hops = qs->hops;
  if (!status || l->status == 1) l->status = status;
  if (--l->running) return;
  l->stats.duration_us = (uv_hrtime() - l->started_ns) / 1000;
  if (l->on_done) l->on_done(l->node, l->status, l->found, &l->stats, l->arg);
  kp_free(l);
}

int kp_node_lookup(kp_node_t *node, const uint8_t target[KP_ID_LEN], kp_lookup_record_cb on_record,
                   kp_lookup_done_cb on_done, void *arg) {
  if (node->closing || !on_done) return UV_EINVAL;
  lookup_t *l = kp_calloc(1, sizeof(*l));
  if (!l) return UV_ENOMEM;
  l->node = node;
  l->on_record = on_record;
  l->on_done = on_done;
  l->arg = arg;
  l->started_ns = uv_hrtime();
  l->status = 1; /* none ended yet */
  kp_node_t *sib = node->sibling && !node->sibling->closing ? node->sibling : NULL;
  l->running = sib ? 2 : 1;
  int err;
  KP_NODE_FEED(node, err = kp_dht_swarm_lookup(node->swarm, target, on_lookup_record,
                                               on_lookup_done, l, kp__node_now(node)));
  if (err) {
    kp_free(l);
    return err;
  }
  if (sib) {
    int err2;
    KP_NODE_FEED(sib, err2 = kp_dht_swarm_lookup(sib->swarm, target, on_lookup_record,
                                                 on_lookup_done, l, kp__node_now(sib)));
    if (err2) {
      /* The first family's alone. */
      kp_dht_query_stats_t none = {0};
      on_lookup_done(l, err2, 0, &none);
    }
  }
  return 0;
}

/* ---- Values ----------------------------------------------------------------- */

/* A dual-stack node puts over both families and gets over both: a put is
 * done when both are (stored: their sum; 0 if either stored), a get gives
 * the newest value either found. */
#define VALUE_MAX                                                                                  \
  (KP_MUTABLE_MAX_VALUE > KP_IMMUTABLE_MAX_VALUE ? KP_MUTABLE_MAX_VALUE : KP_IMMUTABLE_MAX_VALUE)

typedef struct value_op_s {
  kp_node_t *node;
  kp_put_cb on_put;
  kp_get_cb on_get;
  void *arg;
  unsigned running;
  int status; /* 1: none ended yet */
  unsigned stored;
  uint64_t seq;
  size_t len;
  uint8_t value[VALUE_MAX];
} value_op_t;

static void merge_status(value_op_t *op, int status) {
  if (!status || op->status == 1) op->status = status;
}

static void on_put(void *arg, int status, unsigned stored, unsigned failed) {
  value_op_t *op = arg;
  (void)failed;
  merge_status(op, status);
  op->stored += stored;
  if (--op->running) return;
  op->on_put(op->node, op->status, op->stored, op->arg);
  kp_free(op);
}

static void on_get(void *arg, int status, uint64_t seq, const uint8_t *value, size_t len) {
  value_op_t *op = arg;
  bool newer = !status && (op->status || seq > op->seq) && len <= sizeof(op->value);
  if (newer) {
    op->seq = seq;
    op->len = len;
    memcpy(op->value, value, len);
  }
  merge_status(op, newer ? 0 : status);
  if (--op->running) return;
  bool ok = !op->status;
  op->on_get(op->node, op->status, op->seq, ok ? op->value : NULL, ok ? op->len : 0, op->arg);
  kp_free(op);
}

static value_op_t *value_op(kp_node_t *node, kp_put_cb put, kp_get_cb get, void *arg) {
  if (node->closing || (!put && !get)) return NULL;
  value_op_t *op = kp_malloc(sizeof(*op));
  if (op) *op = (value_op_t){node, put, get, arg, .status = 1};
  return op;
}

/* The node of each family the op runs on: this one, and its sibling. */
static size_t op_nodes(kp_node_t *node, kp_node_t *on[2]) {
  on[0] = node;
  on[1] = node->sibling && !node->sibling->closing ? node->sibling : NULL;
  return on[1] ? 2 : 1;
}

/* Runs start on each family's node; op ends when all did. 0, or the first
 * family's error (op freed). */
#define RUN_ON_FAMILIES(node, op, call)                                                            \
  do {                                                                                             \
    kp_node_t *on_[2];                                                                             \
    size_t n_ = op_nodes(node, on_);                                                               \
    (op)->running = (unsigned)n_;                                                                  \
    for (size_t i_ = 0; i_ < n_; i_++) {                                                           \
      kp_node_t *at = on_[i_];                                                                     \
      int e_;                                                                                      \
      KP_NODE_FEED(at, e_ = (call));                                                               \
      if (e_ && i_ == 0) {                                                                         \
        kp_free(op);                                                                               \
        return e_;                                                                                 \
      }                                                                                            \
      if (e_ && (op)->on_put) on_put(op, e_, 0, 0); /* the first family's alone */                 \
      if (e_ && (op)->on_get) on_get(op, e_, 0, NULL, 0);                                          \
    }                                                                                              \
    return 0;                                                                                      \
  } while (0)

int kp_node_put_mutable(kp_node_t *node, const kp_keypair_t *kp, const void *salt, size_t salt_len,
                        uint64_t seq, const void *value, size_t len, const uint64_t *cas,
                        kp_put_cb cb, void *arg) {
  value_op_t *op = cb ? value_op(node, cb, NULL, arg) : NULL;
  if (!op) return cb && !node->closing ? UV_ENOMEM : UV_EINVAL;
  RUN_ON_FAMILIES(node, op,
                  kp_dht_swarm_put_mutable(at->swarm, kp, salt, salt_len, seq, value, len,
                                           cas != NULL, cas ? *cas : 0, on_put, op,
                                           kp__node_now(at)));
}

int kp_node_get_mutable(kp_node_t *node, const uint8_t public_key[KP_PUBLIC_KEY_LEN],
                        const void *salt, size_t salt_len, kp_get_cb cb, void *arg) {
  value_op_t *op = cb ? value_op(node, NULL, cb, arg) : NULL;
  if (!op) return cb && !node->closing ? UV_ENOMEM : UV_EINVAL;
  RUN_ON_FAMILIES(node, op,
                  kp_dht_swarm_get_mutable(at->swarm, public_key, salt, salt_len, on_get, op,
                                           kp__node_now(at)));
}

int kp_node_put_immutable(kp_node_t *node, const void *value, size_t len, uint8_t hash[KP_ID_LEN],
                          kp_put_cb cb, void *arg) {
  value_op_t *op = cb ? value_op(node, cb, NULL, arg) : NULL;
  if (!op) return cb && !node->closing ? UV_ENOMEM : UV_EINVAL;
  RUN_ON_FAMILIES(
      node, op,
      kp_dht_swarm_put_immutable(at->swarm, value, len, on_put, op, kp__node_now(at), hash));
}

int kp_node_get_immutable(kp_node_t *node, const uint8_t hash[KP_ID_LEN], kp_get_cb cb, void *arg) {
  value_op_t *op = cb ? value_op(node, NULL, cb, arg) : NULL;
  if (!op) return cb && !node->closing ? UV_ENOMEM : UV_EINVAL;
  RUN_ON_FAMILIES(node, op,
                  kp_dht_swarm_get_immutable(at->swarm, hash, on_get, op, kp__node_now(at)));
}
