/* SPDX-License-Identifier: MIT */
#include "dht/dht_rpc.h"

#include <string.h>

#include "common/alloc.h"
#include "kadpunch_base.h"

void kp_dht_rpc_config_defaults(kp_dht_rpc_config_t *cfg) {
  cfg->timeout_ms = 1000;
  cfg->min_timeout_ms = 100;
  cfg->retries = 2;
  cfg->max_inflight = 256;
  cfg->max_queued = 1024;
  cfg->rate = 10000;
}

static void list_push(kp_dht_req_list_t *l, kp_dht_req_t *r) {
  r->next = NULL;
  r->prev = l->tail;
  if (l->tail)
    l->tail->next = r;
  else
    l->head = r;
  l->tail = r;
  l->count++;
}

/* Inserts r by deadline, walking from the tail (where it nearly always goes). */
static void list_insert_sorted(kp_dht_req_list_t *l, kp_dht_req_t *r) {
  kp_dht_req_t *after = l->tail;
  while (after && after->deadline > r->deadline) after = after->prev;
  r->prev = after;
  r->next = after ? after->next : l->head;
  if (r->next)
    r->next->prev = r;
  else
    l->tail = r;
  if (after)
    after->next = r;
  else
    l->head = r;
  l->count++;
}

static void list_remove(kp_dht_req_list_t *l, kp_dht_req_t *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    l->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    l->tail = r->prev;
  r->prev = r->next = NULL;
  l->count--;
}

static double burst(const kp_dht_rpc_t *rpc) {
  double b = rpc->cfg.rate / 4.0;
  return b < 16 ? 16 : b;
}

static void refill(kp_dht_rpc_t *rpc, uint64_t now) {
  if (now <= rpc->refilled_at) return;
  rpc->tokens += (double)(now - rpc->refilled_at) * rpc->cfg.rate / 1000.0;
  if (rpc->tokens > burst(rpc)) rpc->tokens = burst(rpc);
  rpc->refilled_at = now;
}

void kp_dht_rpc_init(kp_dht_rpc_t *rpc, const kp_dht_rpc_config_t *cfg, kp_dht_rpc_send_fn send,
                     void *ctx, const kp_rng_t *rng, uint64_t now) {
  memset(rpc, 0, sizeof(*rpc));
  kp_dht_rpc_config_defaults(&rpc->cfg);
  if (cfg) {
    if (cfg->timeout_ms) rpc->cfg.timeout_ms = cfg->timeout_ms;
    if (cfg->min_timeout_ms) rpc->cfg.min_timeout_ms = cfg->min_timeout_ms;
    rpc->cfg.retries = cfg->retries;
    if (cfg->max_inflight) rpc->cfg.max_inflight = cfg->max_inflight;
    if (cfg->max_queued) rpc->cfg.max_queued = cfg->max_queued;
    if (cfg->rate) rpc->cfg.rate = cfg->rate;
  }
  rpc->send = send;
  rpc->send_ctx = ctx;
  rpc->rng = rng;
  rpc->tokens = burst(rpc);
  rpc->refilled_at = now;
}

unsigned kp_dht_rpc_rto(const kp_dht_rpc_t *rpc) {
  if (!rpc->have_rtt) return rpc->cfg.timeout_ms;
  double rto = (rpc->srtt_us + 4 * rpc->rttvar_us) / 1000.0;
  if (rto < rpc->cfg.min_timeout_ms) return rpc->cfg.min_timeout_ms;
  if (rto > rpc->cfg.timeout_ms) return rpc->cfg.timeout_ms;
  return (unsigned)rto;
}

void kp_dht_rpc_sample_rtt(kp_dht_rpc_t *rpc, double rtt_ms) {
  double r = rtt_ms * 1000.0;
  if (r < 0) return;
  if (!rpc->have_rtt) {
    rpc->srtt_us = r;
    rpc->rttvar_us = r / 2;
    rpc->have_rtt = true;
    return;
  }
  /* RFC 6298 section 2.3, alpha = 1/8, beta = 1/4. */
  double err = r > rpc->srtt_us ? r - rpc->srtt_us : rpc->srtt_us - r;
  rpc->rttvar_us = 0.75 * rpc->rttvar_us + 0.25 * err;
  rpc->srtt_us = 0.875 * rpc->srtt_us + 0.125 * r;
}

static void transmit(kp_dht_rpc_t *rpc, kp_dht_req_t *r, uint64_t now) {
  /* Each retry waits twice as long, up to the configured timeout. */
  uint64_t timeout = (uint64_t)kp_dht_rpc_rto(rpc) << (r->sends < 8 ? r->sends : 8);
  if (timeout > rpc->cfg.timeout_ms) timeout = rpc->cfg.timeout_ms;
  r->queued = false;
  r->sent_at = now;
  r->deadline = now + timeout + kp_rng_below(rpc->rng, (uint32_t)(timeout / 4 + 1));
  r->sends++;
  list_insert_sorted(&rpc->inflight, r);
  rpc->stats.requests++;
  rpc->send(rpc->send_ctx, &r->to, r->packet, r->len);
}

static void drain(kp_dht_rpc_t *rpc, uint64_t now) {
  refill(rpc, now);
  while (rpc->queue.head && rpc->inflight.count < rpc->cfg.max_inflight && rpc->tokens >= 1) {
    kp_dht_req_t *r = rpc->queue.head;
    list_remove(&rpc->queue, r);
    rpc->tokens -= 1;
    transmit(rpc, r, now);
  }
}

/* ---- The index by tid --------------------------------------------------- */

/* 32 buckets: a node has a few dozen requests out at a time; at the cap of
 * 256 a chain is 8 long, still cheaper than a walk of the list, and a busy
 * node does not keep a larger index once the busy moment has passed. */
#define INDEX_BUCKETS 32

static kp_dht_req_t **bucket(const kp_dht_rpc_t *rpc, uint16_t tid) {
  return &rpc->by_tid[tid & rpc->by_tid_mask];
}

static int index_add(kp_dht_rpc_t *rpc, kp_dht_req_t *r) {
  if (!rpc->by_tid) {
    if (!(rpc->by_tid = kp_calloc(INDEX_BUCKETS, sizeof(*rpc->by_tid)))) return KP_ENOMEM;
    rpc->by_tid_mask = INDEX_BUCKETS - 1;
  }
  r->tid_next = *bucket(rpc, r->tid);
  *bucket(rpc, r->tid) = r;
  rpc->indexed++;
  return 0;
}

static void index_remove(kp_dht_rpc_t *rpc, kp_dht_req_t *r) {
  for (kp_dht_req_t **p = bucket(rpc, r->tid); *p; p = &(*p)->tid_next) {
    if (*p == r) {
      *p = r->tid_next;
      break;
    }
  }
  if (--rpc->indexed == 0) {
    kp_free(rpc->by_tid);
    rpc->by_tid = NULL;
    rpc->by_tid_mask = 0;
  }
}

static bool tid_taken(const kp_dht_rpc_t *rpc, uint16_t tid, uint8_t command, const kp_addr_t *to) {
  if (!rpc->by_tid) return false;
  for (const kp_dht_req_t *r = *bucket(rpc, tid); r; r = r->tid_next)
    if (r->tid == tid && r->command == command && kp_addr_same_ip(&r->to, to)) return true;
  return false;
}

/* A random transaction id: one that follows from the last cannot be
 * guessed, so forging an answer takes a guess among 65536 per request, not
 * one (docs/protocol.md, "Transactions"). A draw that would match another
 * request to the same IP with the same command is drawn again, so a
 * response never fits two requests. */
static uint16_t new_tid(kp_dht_rpc_t *rpc, uint8_t command, const kp_addr_t *to) {
  uint16_t tid;
  unsigned tries = 0;
  do tid = (uint16_t)kp_rng_u32(rpc->rng);
  while (++tries < 8 && tid_taken(rpc, tid, command, to));
  return tid;
}

int kp_dht_rpc_request(kp_dht_rpc_t *rpc, kp_dht_msg_t *msg, const kp_addr_t *to,
                       const kp_dht_req_opts_t *opts, kp_dht_req_cb cb, void *arg, uint64_t now,
                       kp_dht_req_t **out) {
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  size_t len;
  if (out) *out = NULL;
  if (rpc->queue.count >= rpc->cfg.max_queued) {
    rpc->stats.rejected++;
    return KP_ELIMIT;
  }
  msg->type = KP_DHT_REQUEST;
  msg->tid = new_tid(rpc, msg->command, to);
  msg->error = 0;
  int err = kp_dht_msg_encode_min(msg, opts ? opts->min_len : 0, buf, sizeof(buf), &len);
  if (err) return err;

  kp_dht_req_t *r = kp_malloc(sizeof(*r) + len);
  if (!r) return KP_ENOMEM;
  memset(r, 0, sizeof(*r));
  r->to = *to;
  r->tid = msg->tid;
  r->command = msg->command;
  r->tries_left = (uint8_t)(opts && opts->retries >= 0 ? opts->retries : (int)rpc->cfg.retries);
  r->any_port = opts && opts->any_port;
  r->cb = cb;
  r->arg = arg;
  r->len = (uint16_t)len;
  memcpy(r->packet, buf, len);
  if (index_add(rpc, r)) {
    kp_free(r);
    return KP_ENOMEM;
  }

  refill(rpc, now);
  if (!rpc->queue.head && rpc->inflight.count < rpc->cfg.max_inflight && rpc->tokens >= 1) {
    rpc->tokens -= 1;
    transmit(rpc, r, now);
  } else {
    r->queued = true;
    list_push(&rpc->queue, r);
  }
  if (out) *out = r;
  return 0;
}

void kp_dht_rpc_abandon(kp_dht_rpc_t *rpc, kp_dht_req_t *r) {
  list_remove(r->queued ? &rpc->queue : &rpc->inflight, r);
  index_remove(rpc, r);
  kp_free(r);
}

static bool matches(const kp_dht_req_t *r, const kp_dht_msg_t *msg, const kp_addr_t *from) {
  if (r->tid != msg->tid || r->command != msg->command) return false;
  if (r->any_port) return kp_addr_same_ip(&r->to, from) && r->to.port != from->port;
  return kp_addr_eq(&r->to, from);
}

kp_dht_req_t *kp_dht_rpc_take(kp_dht_rpc_t *rpc, const kp_dht_msg_t *msg, const kp_addr_t *from) {
  for (kp_dht_req_t *r = rpc->by_tid ? *bucket(rpc, msg->tid) : NULL; r; r = r->tid_next) {
    /* A queued request was never sent: nothing can answer it yet. */
    if (r->queued || !matches(r, msg, from)) continue;
    list_remove(&rpc->inflight, r);
    index_remove(rpc, r);
    rpc->stats.responses++;
    return r;
  }
  rpc->stats.unmatched++;
  return NULL;
}

void kp_dht_rpc_finish(kp_dht_rpc_t *rpc, kp_dht_req_t *r, const kp_dht_msg_t *msg,
                       const kp_addr_t *from, uint64_t now) {
  /* Karn: a retried request's answer could be to any of its copies. */
  if (r->sends == 1) kp_dht_rpc_sample_rtt(rpc, (double)(now - r->sent_at));
  r->cb(r->arg, r, 0, msg, from, now);
  kp_free(r);
  drain(rpc, now);
}

void kp_dht_rpc_tick(kp_dht_rpc_t *rpc, uint64_t now) {
  kp_dht_req_t *r;
  while ((r = rpc->inflight.head) && r->deadline <= now) {
    list_remove(&rpc->inflight, r);
    if (r->tries_left) {
      r->tries_left--;
      transmit(rpc, r, now);
      continue;
    }
    rpc->stats.timeouts++;
    index_remove(rpc, r);
    if (rpc->on_timeout) rpc->on_timeout(rpc->send_ctx, r);
    r->cb(r->arg, r, KP_ETIMEDOUT, NULL, NULL, now);
    kp_free(r);
  }
  drain(rpc, now);
}

uint64_t kp_dht_rpc_next_deadline(const kp_dht_rpc_t *rpc) {
  uint64_t next = rpc->inflight.head ? rpc->inflight.head->deadline : UINT64_MAX;
  if (rpc->queue.head && rpc->inflight.count < rpc->cfg.max_inflight) {
    /* Waiting only for the rate limiter: the time the next token arrives. */
    double missing = rpc->tokens >= 1 ? 0 : 1 - rpc->tokens;
    uint64_t t = rpc->refilled_at + (uint64_t)(missing * 1000.0 / rpc->cfg.rate) + 1;
    if (t < next) next = t;
  }
  return next;
}

void kp_dht_rpc_destroy(kp_dht_rpc_t *rpc, uint64_t now) {
  kp_dht_req_list_t *lists[2] = {&rpc->queue, &rpc->inflight};
  for (int i = 0; i < 2; i++) {
    kp_dht_req_t *r;
    while ((r = lists[i]->head)) {
      list_remove(lists[i], r);
      index_remove(rpc, r);
      r->cb(r->arg, r, KP_ECANCELED, NULL, NULL, now);
      kp_free(r);
    }
  }
}
