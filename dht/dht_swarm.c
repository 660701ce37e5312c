/* SPDX-License-Identifier: MIT */
/* The storing side of swarms: the command handlers every node runs for
 * others, backed by the record store. Client operations are in
 * dht_swarm_ops.c. */
#include "dht/dht_swarm_internal.h"

#include <string.h>

#include "common/alloc.h"
#include "common/mp.h"

void kp_dht_swarm_config_defaults(kp_dht_swarm_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  kp_dht_store_config_defaults(&cfg->store);
  cfg->refresh_ms = cfg->store.ttl_ms / 2;
  cfg->keepalive_ms = 20000;
  cfg->verify_rate = 100;
}

void kp_dht_swarm_set_policy(kp_dht_swarm_t *swarm, kp_dht_store_policy_fn fn, void *ctx) {
  swarm->policy = fn;
  swarm->policy_ctx = ctx;
}

int kp_dht_swarm_error(uint8_t wire) {
  switch (wire) {
    case KP_SWARM_ERR_BAD_SIGNATURE: return KP_EBADSIG;
    case KP_SWARM_ERR_SEQ: return KP_ESEQ;
    case KP_SWARM_ERR_CAS: return KP_ECAS;
    case KP_SWARM_ERR_FULL: return KP_ELIMIT;
    case KP_SWARM_ERR_BUSY: return KP_ELIMIT;
    case KP_SWARM_ERR_MALFORMED: return KP_EFIELD;
    case KP_SWARM_ERR_POLICY: return KP_EREFUSED;
    default: return kp_dht_wire_error(wire);
  }
}

static uint8_t wire_error(int err) {
  switch (err) {
    case 0: return KP_DHT_ERR_NONE;
    case KP_EBADSIG: return KP_SWARM_ERR_BAD_SIGNATURE;
    case KP_ESEQ: return KP_SWARM_ERR_SEQ;
    case KP_ECAS: return KP_SWARM_ERR_CAS;
    case KP_ELIMIT:
    case KP_ENOMEM: return KP_SWARM_ERR_FULL;
    case KP_EREFUSED: return KP_SWARM_ERR_POLICY;
    default: return KP_SWARM_ERR_MALFORMED;
  }
}

uint64_t kp__swarm_wall_ms(const kp_dht_swarm_t *swarm, uint64_t now) {
  return swarm->cfg.wall_ms ? swarm->cfg.wall_ms(swarm->cfg.wall_ctx) : now;
}

void kp__swarm_op_link(kp_dht_swarm_t *swarm, kp_swarm_op_t *op) {
  op->prev = NULL;
  op->next = swarm->ops;
  if (swarm->ops) swarm->ops->prev = op;
  swarm->ops = op;
}

void kp__swarm_op_unlink(kp_dht_swarm_t *swarm, kp_swarm_op_t *op) {
  if (op->prev)
    op->prev->next = op->next;
  else
    swarm->ops = op->next;
  if (op->next) op->next->prev = op->prev;
}

/* ---- Per-source budget for signature checks ---------------------------- */

/* An ed25519 verification costs ~50 us: without a budget, a source holding
 * a token could keep a core busy with garbage signatures. */
static bool take_verify_budget(kp_dht_swarm_t *swarm, const kp_addr_t *from, uint64_t now) {
  /* Made on the first write: most nodes of a big network never store. */
  if (!swarm->limiter.slots &&
      kp_ratelimit_init(&swarm->limiter, KP_SWARM_LIMITER_SLOTS, swarm->cfg.verify_rate,
                        2 * (uint64_t)swarm->cfg.verify_rate, swarm->limiter_key))
    return false;
  return kp_ratelimit_take(&swarm->limiter, from, 1, now, NULL);
}

/* Replies with an error code only (and the closer nodes the core adds). */
static void reply_error(kp_dht_t *dht, const kp_dht_request_t *req, uint8_t error, uint64_t now) {
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  kp_dht_reply(dht, &rt, NULL, 0, error, now);
}

/* A write needs a valid token (proof that the writer receives at its
 * address) and budget for the signature check. Returns false after having
 * answered. */
static bool admit_write(kp_dht_swarm_t *swarm, const kp_dht_request_t *req, uint64_t now) {
  if (!req->msg->value) {
    reply_error(swarm->dht, req, KP_SWARM_ERR_MALFORMED, now);
    return false;
  }
  if (!req->token_valid) {
    reply_error(swarm->dht, req, KP_DHT_ERR_BAD_TOKEN, now);
    return false;
  }
  if (!take_verify_budget(swarm, &req->from, now)) {
    reply_error(swarm->dht, req, KP_SWARM_ERR_BUSY, now);
    return false;
  }
  return true;
}

/* ---- Handlers ---------------------------------------------------------------- */

static void on_announce(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  const kp_dht_msg_t *m = req->msg;
  if (!m->has_target) {
    reply_error(dht, req, KP_SWARM_ERR_MALFORMED, now);
    return;
  }
  if (!admit_write(swarm, req, now)) return;
  /* value = record, then the origin proof (dht_record.h): the request's
   * sender holds the key, so its address may be where hellos go. */
  kp_record_t rec;
  size_t len = m->value_len > KP_ORIGIN_PROOF_LEN ? m->value_len - KP_ORIGIN_PROOF_LEN : 0;
  int err = len ? kp_dht_record_decode(m->value, len, m->target, &rec) : KP_EMALFORMED;
  if (!err) err = kp_dht_origin_verify(m->target, m->token, rec.public_key, m->value + len);
  if (!err && swarm->policy && !swarm->policy(swarm->policy_ctx, m->target, &rec, &req->from))
    err = KP_EREFUSED;
  if (!err)
    err = kp_dht_store_announce(swarm->store, m->target, &rec, m->value, len, &req->from, now);
  reply_error(dht, req, wire_error(err), now);
}

static void on_unannounce(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  const kp_dht_msg_t *m = req->msg;
  if (!m->has_target) {
    reply_error(dht, req, KP_SWARM_ERR_MALFORMED, now);
    return;
  }
  if (!admit_write(swarm, req, now)) return;
  uint8_t pk[KP_PUBLIC_KEY_LEN];
  uint64_t seq;
  int err = kp_dht_unannounce_decode(m->value, m->value_len, m->target, pk, &seq);
  if (!err) err = kp_dht_store_unannounce(swarm->store, m->target, pk, seq, &req->from, now);
  reply_error(dht, req, wire_error(err), now);
}

typedef struct pack_s {
  uint8_t *buf;
  size_t room;
  size_t used;
  unsigned count;
} pack_t;

static bool pack_record(void *ctx, const kp_dht_stored_t *rec) {
  pack_t *p = ctx;
  if (p->used + rec->raw_len > p->room) return true; /* a smaller one may still fit */
  memcpy(p->buf + p->used, rec->raw, rec->raw_len);
  p->used += rec->raw_len;
  p->count++;
  return p->count < UINT16_MAX;
}

/* The keys one target's records in our own store are under (the first
 * OWN_KEYS of them). */
#define OWN_KEYS 32
typedef struct own_keys_s {
  uint8_t key[OWN_KEYS][KP_PUBLIC_KEY_LEN];
  unsigned count;
  bool more; /* past OWN_KEYS: ours fill any reply anyway */
} own_keys_t;

static bool collect_key(void *ctx, const kp_dht_stored_t *rec) {
  own_keys_t *k = ctx;
  if (k->count == OWN_KEYS) {
    k->more = true;
    return false;
  }
  memcpy(k->key[k->count++], rec->public_key, KP_PUBLIC_KEY_LEN);
  return true;
}

typedef struct pack_other_s {
  pack_t *p;
  const own_keys_t *own;
} pack_other_t;

/* The other family's records, but for keys we hold ourselves (ours are
 * this family's: the announcer reached over it). The walk ends when no
 * record could fit any more (a reply holds a few). */
#define SMALLEST_RECORD 100
static bool pack_other(void *ctx, const kp_dht_stored_t *rec) {
  pack_other_t *o = ctx;
  pack_t *p = o->p;
  if (p->used + SMALLEST_RECORD > p->room) return false;
  for (unsigned i = 0; i < o->own->count; i++)
    if (!memcmp(o->own->key[i], rec->public_key, KP_PUBLIC_KEY_LEN)) return true;
  return pack_record(p, rec);
}

static void on_lookup(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  if (!req->msg->has_target) {
    reply_error(dht, req, KP_SWARM_ERR_MALFORMED, now);
    return;
  }
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  /* As many records as fit next to the closer nodes; the array header (at
   * most 3 bytes) goes in front once their number is known. */
  size_t room = kp_dht_reply_room(dht, &rt);
  if (room > KP_SWARM_LOOKUP_REPLY_MAX) room = KP_SWARM_LOOKUP_REPLY_MAX;
  uint8_t buf[3 + KP_SWARM_LOOKUP_REPLY_MAX];
  pack_t p = {buf + 3, room > 3 ? room - 3 : 0, 0, 0};
  kp_dht_store_each(swarm->store, req->msg->target, pack_record, &p);
  if (swarm->other_store) {
    own_keys_t own = {.count = 0};
    kp_dht_store_each(swarm->store, req->msg->target, collect_key, &own);
    pack_other_t o = {&p, &own};
    if (!own.more) kp_dht_store_each(swarm->other_store, req->msg->target, pack_other, &o);
  }
  if (!p.count) {
    kp_dht_reply(dht, &rt, NULL, 0, 0, now);
    return;
  }
  size_t head = p.count < 16 ? 1 : 3;
  uint8_t *start = buf + 3 - head;
  if (head == 1)
    start[0] = (uint8_t)(0x90 | p.count);
  else
    start[0] = 0xdc, start[1] = (uint8_t)(p.count >> 8), start[2] = (uint8_t)p.count;
  kp_dht_reply(dht, &rt, start, head + p.used, 0, now);
}

static void on_mutable_put(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  if (!admit_write(swarm, req, now)) return;
  kp_dht_mutable_t m;
  uint8_t target[KP_ID_LEN];
  int err = kp_dht_mutable_put_decode(req->msg->value, req->msg->value_len, &m, target);
  if (!err) err = kp_dht_store_put_mutable(swarm->store, target, &m, &req->from, now);
  reply_error(dht, req, wire_error(err), now);
}

/* Whether a value of len bytes fits a reply, if need be without the closer
 * nodes (a holder asked for the value itself wants the value). */
static bool value_fits(kp_dht_t *dht, kp_dht_reply_to_t *rt, size_t len) {
  if (len <= kp_dht_reply_room(dht, rt)) return true;
  rt->has_target = false;
  return len <= kp_dht_reply_room(dht, rt);
}

static void on_mutable_get(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {

  kp_dht_swarm_t *swarm = ctx;
  if (!req->msg->has_target) {
    reply_error(dht, req, KP_SWARM_ERR_MALFORMED, now);
    return;
  }
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  kp_dht_mutable_t m;
  if (!kp_dht_store_get_mutable(swarm->store, req->msg->target, &m)) {
    kp_dht_reply(dht, &rt, NULL, 0, 0, now);
    return;
  }
  /* The full value only to a requester that proved its address; anyone else
   * learns the seq and asks again with its token. */
  uint8_t buf[KP_DHT_MAX_VALUE];
  size_t len;
  bool full = req->token_valid &&
              kp_dht_mutable_reply_encode(&m, false, buf, sizeof(buf), &len) == 0 &&
              value_fits(dht, &rt, len);
  if (!full) kp_dht_mutable_reply_encode(&m, true, buf, sizeof(buf), &len);
  kp_dht_reply(dht, &rt, buf, len, full ? 0 : KP_DHT_ERR_TRUNCATED, now);
}

static void on_immutable_put(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  if (!admit_write(swarm, req, now)) return;
  const kp_dht_msg_t *m = req->msg;
  int err = KP_ETOOBIG;
  if (m->value_len <= KP_IMMUTABLE_MAX_VALUE) {
    uint8_t target[KP_ID_LEN];
    kp_dht_target_immutable(m->value, m->value_len, target);
    err = kp_dht_store_put_immutable(swarm->store, target, m->value, m->value_len, &req->from, now);
  }
  reply_error(dht, req, wire_error(err), now);
}

static void on_immutable_get(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  if (!req->msg->has_target) {
    reply_error(dht, req, KP_SWARM_ERR_MALFORMED, now);
    return;
  }
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  const uint8_t *value;
  size_t len;
  if (!kp_dht_store_get_immutable(swarm->store, req->msg->target, &value, &len)) {
    kp_dht_reply(dht, &rt, NULL, 0, 0, now);
  } else if (req->token_valid && value_fits(dht, &rt, len)) {
    kp_dht_reply(dht, &rt, value, len, 0, now);
  } else {
    kp_dht_reply(dht, &rt, NULL, 0, KP_DHT_ERR_TRUNCATED, now);
  }
}

/* ---- Lifecycle and time ---------------------------------------------------- */

static void swarm_tick(void *ctx, uint64_t now) {
  kp_dht_swarm_t *swarm = ctx;
  kp_dht_store_tick(swarm->store, now);
  kp__swarm_announces_tick(swarm, now);
}

static uint64_t swarm_deadline(void *ctx) {
  kp_dht_swarm_t *swarm = ctx;
  uint64_t a = kp_dht_store_next_expiry(swarm->store);
  uint64_t b = kp__swarm_announces_deadline(swarm);
  return a < b ? a : b;
}

int kp_dht_swarm_new(kp_dht_t *dht, const kp_dht_swarm_config_t *cfg, kp_dht_swarm_t **out) {
  *out = NULL;
  kp_dht_swarm_t *swarm = kp_calloc(1, sizeof(*swarm));
  if (!swarm) return KP_ENOMEM;
  swarm->dht = dht;
  if (cfg)
    swarm->cfg = *cfg;
  else
    kp_dht_swarm_config_defaults(&swarm->cfg);
  if (!swarm->cfg.refresh_ms) swarm->cfg.refresh_ms = KP_DHT_DEFAULT_TTL_MS / 2;
  if (!swarm->cfg.keepalive_ms) swarm->cfg.keepalive_ms = 20000;
  if (!swarm->cfg.verify_rate) swarm->cfg.verify_rate = 100;
  const kp_rng_t *rng = kp_dht_rng(dht);
  kp_rng_fill(rng, swarm->limiter_key, sizeof(swarm->limiter_key));
  int err = kp_dht_store_new(&swarm->cfg.store, rng, &swarm->store);
  static const struct {
    uint8_t command;
    kp_dht_handler_fn fn;
    size_t reply_max;
  } handlers[] = {
      {KP_DHT_CMD_ANNOUNCE, on_announce, 0},
      {KP_DHT_CMD_UNANNOUNCE, on_unannounce, 0},
      {KP_DHT_CMD_LOOKUP, on_lookup, KP_SWARM_LOOKUP_REPLY_MAX + 3},
      {KP_DHT_CMD_MUTABLE_PUT, on_mutable_put, 0},
      /* A get's first answer is a summary (the seq); the value itself goes
       * only to a requester holding a token, which needs no padding. */
      {KP_DHT_CMD_MUTABLE_GET, on_mutable_get, 16},
      {KP_DHT_CMD_IMMUTABLE_PUT, on_immutable_put, 0},
      {KP_DHT_CMD_IMMUTABLE_GET, on_immutable_get, 0},
  };
  size_t registered = 0, count = sizeof(handlers) / sizeof(handlers[0]);
  while (!err && registered < count) {
    err = kp_dht_register(dht, handlers[registered].command, handlers[registered].fn, swarm,
                          handlers[registered].reply_max);
    if (!err) registered++;
  }

  kp_dht_ticker_t ticker = {swarm_tick, swarm_deadline, swarm};
  if (!err) err = kp_dht_add_ticker(dht, &ticker);
  if (err) {
    /* Leave the DHT as we found it. */
    for (size_t i = 0; i < registered; i++) kp_dht_unregister(dht, handlers[i].command);
    kp_dht_store_free(swarm->store);
    kp_free(swarm);
    return err;
  }

  *out = swarm;
  return 0;
}

kp_dht_store_t *kp_dht_swarm_store(kp_dht_swarm_t *swarm) {
  return swarm->store;
}

void kp_dht_swarm_set_other(kp_dht_swarm_t *swarm, kp_dht_swarm_t *other) {
  kp_dht_store_free(swarm->other_store); /* a reference */
  swarm->other_store = other ? other->store : NULL;
  if (swarm->other_store) kp_dht_store_ref(swarm->other_store);
}

kp_dht_store_t *kp_dht_swarm_other_store(kp_dht_swarm_t *swarm) {
  return swarm->other_store;
}

void kp_dht_swarm_free(kp_dht_swarm_t *swarm) {
  if (!swarm) return;
  while (swarm->ops) {
    kp_swarm_op_t *op = swarm->ops;
    kp__swarm_op_unlink(swarm, op);
    op->drop(swarm, op);
  }
  kp__swarm_announces_free(swarm);
  kp_dht_store_free(swarm->store);
  kp_dht_store_free(swarm->other_store);
  kp_ratelimit_destroy(&swarm->limiter);
  kp_free(swarm);
}
