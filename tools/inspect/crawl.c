/* SPDX-License-Identifier: MIT */
/* The crawler (crawl.h): who to ask next, pacing, and what the answers
 * teach. */
#include <string.h>

#include "common/addr.h"
#include "common/alloc.h"
#include "dht/dht_id.h"
#include "tools/inspect/crawl.h"

#define PACER_MS 5

struct kp_crawl_slot_s {
  kp_crawl_t *c;
  uint32_t node;
  kp_crawl_slot_t *next_free;
};

static kp_crawl_slot_t *free_slots(kp_crawl_t *c);

void kp_crawl_opts_init(kp_crawl_opts_t *o) {
  o->rate = 200;
  o->parallel = 64;
  o->max_nodes = 100000;
  o->max_requests = 2000000;
  o->timeout_ms = 600000;
  o->buckets = -1;
}

unsigned kp_crawl_planned(const kp_crawl_t *c) {
  if (c->o.buckets >= 0) return 1u + (unsigned)c->o.buckets;
  return 1 + c->depth + 1;
}

/* Buckets 0 .. depth hold k nodes each in a network of k * 2^depth nodes;
 * one more catches the partly filled bucket after them. */
static unsigned depth_for(size_t nodes) {
  unsigned d = 0;
  while (d < 30 && ((size_t)KP_DHT_K << d) < nodes) d++;
  return d + 1;
}

/* ---- Nodes, the index and the queue ----------------------------------------- */

static size_t slot_of(const kp_crawl_t *c, const kp_addr_t *a) {
  return (size_t)kp_addr_hash(a, c->index_key) & (c->index_cap - 1);
}

static kp_crawl_node_t *find(kp_crawl_t *c, const kp_addr_t *a) {
  for (size_t i = slot_of(c, a);; i = (i + 1) & (c->index_cap - 1)) {
    if (!c->index[i]) return NULL;
    kp_crawl_node_t *n = &c->nodes[c->index[i] - 1];
    if (kp_addr_eq(&n->addr, a)) return n;
  }
}

static void push(kp_crawl_t *c, kp_crawl_node_t *n) {
  if (n->queued || n->busy) return;
  n->queued = true;
  c->queue[(c->q_head + c->q_len++) % c->o.max_nodes] = (uint32_t)(n - c->nodes);
}

static void add(kp_crawl_t *c, const kp_addr_t *a, unsigned hops) {
  if (find(c, a)) return;
  if (c->count == c->o.max_nodes) {
    c->over_max_nodes++;
    return;
  }
  kp_crawl_node_t *n = &c->nodes[c->count];
  memset(n, 0, sizeof(*n));
  n->addr = *a;
  kp_dht_id_from_addr(a, n->id);
  n->hops = (uint16_t)(hops > UINT16_MAX ? UINT16_MAX : hops);
  n->rtt_ms = -1;
  size_t i = slot_of(c, a);
  while (c->index[i]) i = (i + 1) & (c->index_cap - 1);
  c->index[i] = (uint32_t)++c->count;
  push(c, n);
  unsigned d = depth_for(c->count);
  if (d == c->depth || c->o.buckets >= 0) return;
  /* The network is larger than it looked: nodes already done get the
   * deeper buckets asked too. */
  c->depth = d;
  for (size_t j = 0; j < c->count; j++) {
    kp_crawl_node_t *m = &c->nodes[j];
    if (m->state == KP_CRAWL_ANSWERED && m->fails < 2 && m->probes < kp_crawl_planned(c))
      push(c, m);
  }
}

/* ---- Requests --------------------------------------------------------------- */

static void finish(kp_crawl_t *c, const char *why) {
  if (c->finished) return;
  c->finished = true;
  c->stopped_by = why;
  c->ended_ns = uv_hrtime();
  if (c->on_tick) c->on_tick(c);
  uv_close((uv_handle_t *)&c->pacer, NULL); /* the session's close runs it to the end */
}

static void learn(kp_crawl_t *c, const kp_dht_msg_t *resp, const kp_addr_t *from, unsigned hops) {
  size_t step = kp_addr_compact_len(from->family);
  for (size_t off = 0; step && off + step <= resp->nodes_len; off += step) {
    kp_addr_t a;
    if (kp_addr_decode_compact(&a, resp->nodes + off, step) == 0 && a.family == from->family)
      add(c, &a, hops);
  }
}

static void pump(kp_crawl_t *c);

static void on_reply(void *arg, int status, const kp_dht_msg_t *resp, const kp_addr_t *from,
                     double rtt_ms, unsigned sends) {
  kp_crawl_slot_t *slot = arg;
  kp_crawl_t *c = slot->c;
  kp_crawl_node_t *n = &c->nodes[slot->node];
  (void)sends;
  slot->next_free = free_slots(c);
  c->slots[0].next_free = slot; /* slots[0] heads the free list */
  c->inflight--;
  n->busy = false;
  if (status == UV_ECANCELED || c->finished) return;
  n->probes++;
  if (status) {
    c->timeouts++;
    /* Two requests (each with the DHT's retries) that got nothing: the
     * node is gone, or was never there. */
    if (++n->fails >= 2) {
      if (n->state == KP_CRAWL_NEW) n->state = KP_CRAWL_SILENT;
    } else if (n->probes < kp_crawl_planned(c) || n->state == KP_CRAWL_NEW) {
      push(c, n);
    }
  } else {
    c->answers++;
    n->state = KP_CRAWL_ANSWERED;
    n->member |= resp->has_id;
    if (rtt_ms >= 0 && (n->rtt_ms < 0 || rtt_ms < n->rtt_ms)) n->rtt_ms = (float)rtt_ms;
    learn(c, resp, from, n->hops + 1u);
    if (n->probes < kp_crawl_planned(c)) push(c, n);
  }
  pump(c);
}

static kp_crawl_slot_t *free_slots(kp_crawl_t *c) {
  return c->slots[0].next_free;
}

static bool send_next(kp_crawl_t *c) {
  kp_crawl_node_t *n = &c->nodes[c->queue[c->q_head]];
  c->q_head = (c->q_head + 1) % c->o.max_nodes;
  c->q_len--;
  n->queued = false;
  if (n->state == KP_CRAWL_SILENT) return true;
  uint8_t target[KP_ID_LEN];
  if (n->probes == 0)
    memcpy(target, n->id, KP_ID_LEN); /* its neighbourhood */
  else
    kp_dht_id_random_in_bucket(n->id, n->probes - 1u, kp_dht_rng(kp_inspect_dht(c->s)), target);
  kp_crawl_slot_t *slot = free_slots(c);
  slot->node = (uint32_t)(n - c->nodes);
  int err = kp_inspect_request(c->s, &n->addr, KP_DHT_CMD_FIND_NODE, target, on_reply, slot, NULL);
  if (err == KP_ELIMIT) { /* the node's own queue is full: try again next tick */
    push(c, n);
    return false;
  }
  if (err) {
    n->probes++;
    return true;
  }
  c->slots[0].next_free = slot->next_free;
  n->busy = true;
  c->inflight++;
  c->requests++;
  c->tokens -= 1;
  return true;
}

static void pump(kp_crawl_t *c) {
  while (!c->finished && c->tokens >= 1 && c->inflight < c->o.parallel && c->q_len &&
         c->requests < c->o.max_requests)
    if (!send_next(c)) break;
  if (c->finished || c->inflight) return;
  if (!c->q_len)
    finish(c, NULL);
  else if (c->requests >= c->o.max_requests)
    finish(c, "max-requests");
}

static void on_pacer(uv_timer_t *t) {
  kp_crawl_t *c = t->data;
  uint64_t now = uv_hrtime();
  double burst = c->o.rate / 20.0 > 1 ? c->o.rate / 20.0 : 1;
  c->tokens += (double)c->o.rate * (double)(now - c->refilled_ns) / 1e9;
  if (c->tokens > burst) c->tokens = burst;
  c->refilled_ns = now;
  if ((now - c->started_ns) / 1000000 >= c->o.timeout_ms) {
    finish(c, "timeout");
    return;
  }
  pump(c);
  if (c->on_tick && !c->finished) c->on_tick(c);
}

int kp_crawl_start(kp_crawl_t *c, kp_inspect_session_t *s, const kp_addr_t *seeds, size_t n,
                   const kp_crawl_opts_t *o) {
  memset(c, 0, sizeof(*c));
  c->s = s;
  c->o = *o;
  c->index_cap = 1;
  while (c->index_cap < 2 * (size_t)o->max_nodes) c->index_cap *= 2;
  /* calloc: pages are touched only as the crawl grows into them. */
  c->nodes = kp_calloc(o->max_nodes, sizeof(*c->nodes));
  c->queue = kp_calloc(o->max_nodes, sizeof(*c->queue));
  c->index = kp_calloc(c->index_cap, sizeof(*c->index));
  /* slots[0] is the free list's head, never used for a request. */
  c->slots = kp_calloc(o->parallel + 1, sizeof(*c->slots));
  if (!c->nodes || !c->queue || !c->index || !c->slots) {
    kp_crawl_free(c);
    return UV_ENOMEM;
  }
  for (unsigned i = o->parallel; i >= 1; i--) {
    c->slots[i].c = c;
    c->slots[i].next_free = c->slots[0].next_free;
    c->slots[0].next_free = &c->slots[i];
  }
  kp_rng_fill(kp_dht_rng(kp_inspect_dht(s)), c->index_key, sizeof(c->index_key));
  c->depth = depth_for(0);
  for (size_t i = 0; i < n; i++) add(c, &seeds[i], 0);
  c->started_ns = c->refilled_ns = uv_hrtime();
  c->tokens = 1;
  uv_timer_init(&s->loop, &c->pacer);
  c->pacer.data = c;
  uv_timer_start(&c->pacer, on_pacer, 0, PACER_MS);
  return 0;
}

bool kp_crawl_finished(void *c) {
  return ((kp_crawl_t *)c)->finished;
}

void kp_crawl_stop(kp_crawl_t *c, const char *why) {
  finish(c, why);
}

void kp_crawl_free(kp_crawl_t *c) {
  kp_free(c->nodes);
  kp_free(c->queue);
  kp_free(c->index);
  kp_free(c->slots);
  c->nodes = NULL;
  c->queue = NULL;
  c->index = NULL;
  c->slots = NULL;
}
