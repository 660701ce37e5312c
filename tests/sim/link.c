/* SPDX-License-Identifier: MIT */
#include "tests/sim/link.h"

#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

typedef struct event_s {
  uint64_t at, seq;
  kp_link_packet_t *pkt;
} event_t;

typedef struct direction_s {
  kp_link_params_t p;
  uint64_t free_at; /* when the bottleneck finishes what it holds */
  kp_link_stats_t stats;
} direction_t;

struct kp_link_s {
  kp_rng_seeded_t rng;
  direction_t dir[2];
  kp_addr_t addr[2];
  kp_addr_t more[2][KP_LINK_MAX_HOSTS]; /* other hosts on each side */
  unsigned nmore[2];
  event_t *heap;
  size_t count, cap;
  uint64_t seq;
};

kp_link_t *kp_link_new(uint64_t seed) {
  kp_link_t *l = calloc(1, sizeof(*l));
  if (!l) abort();
  kp_rng_seeded_init(&l->rng, seed);
  return l;
}

void kp_link_free(kp_link_t *l) {
  for (size_t i = 0; i < l->count; i++) free(l->heap[i].pkt);
  free(l->heap);
  free(l);
}

void kp_link_set(kp_link_t *l, int from_side, const kp_link_params_t *p) {
  l->dir[from_side].p = *p;
}

void kp_link_set_addr(kp_link_t *l, int side, const kp_addr_t *addr) {
  l->addr[side] = *addr;
}

const kp_addr_t *kp_link_addr(const kp_link_t *l, int side) {
  return &l->addr[side];
}

void kp_link_add_addr(kp_link_t *l, int side, const kp_addr_t *addr) {
  if (l->nmore[side] == KP_LINK_MAX_HOSTS) abort();
  l->more[side][l->nmore[side]++] = *addr;
}

/* The side holding addr, or -1. */
static int side_of(const kp_link_t *l, const kp_addr_t *addr) {
  for (int side = 0; side < 2; side++) {
    if (kp_addr_eq(addr, &l->addr[side])) return side;
    for (unsigned i = 0; i < l->nmore[side]; i++)
      if (kp_addr_eq(addr, &l->more[side][i])) return side;
  }
  return -1;
}

uint64_t kp_link_queued(const kp_link_t *l, int from_side, uint64_t now) {
  const direction_t *d = &l->dir[from_side];
  if (!d->p.rate || d->free_at <= now) return 0;
  return (d->free_at - now) * d->p.rate / 1000000;
}

const kp_link_stats_t *kp_link_stats(const kp_link_t *l, int from_side) {
  return &l->dir[from_side].stats;
}

static double uniform(kp_link_t *l) {
  return (double)(kp_rng_seeded_next(&l->rng) >> 11) / (double)(1ull << 53);
}

static bool before(const event_t *a, const event_t *b) {
  return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void push(kp_link_t *l, uint64_t at, kp_link_packet_t *pkt) {
  if (l->count == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 256;
    l->heap = realloc(l->heap, l->cap * sizeof(*l->heap));
    if (!l->heap) abort();
  }
  size_t i = l->count++;
  event_t e = {at, l->seq++, pkt};
  while (i && before(&e, &l->heap[(i - 1) / 2])) {
    l->heap[i] = l->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  l->heap[i] = e;
}

static event_t pop_min(kp_link_t *l) {
  event_t top = l->heap[0], last = l->heap[--l->count];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= l->count) break;
    if (c + 1 < l->count && before(&l->heap[c + 1], &l->heap[c])) c++;
    if (!before(&l->heap[c], &last)) break;
    l->heap[i] = l->heap[c];
    i = c;
  }
  if (l->count) l->heap[i] = last;
  return top;
}

static void schedule(kp_link_t *l, int from_side, const kp_addr_t *from, const kp_addr_t *to,
                     const uint8_t *data, size_t len, uint64_t depart) {
  direction_t *d = &l->dir[from_side];
  kp_link_packet_t *pkt = malloc(sizeof(*pkt));
  if (!pkt) abort();
  pkt->side = -1;
  pkt->from = *from;
  pkt->to = *to;
  pkt->len = len;
  memcpy(pkt->data, data, len);
  uint64_t jitter = d->p.jitter_us ? (uint64_t)(uniform(l) * (double)(d->p.jitter_us + 1)) : 0;
  push(l, depart + d->p.delay_us + jitter, pkt);
}

void kp_link_send(kp_link_t *l, int from_side, const kp_addr_t *to, const uint8_t *data, size_t len,
                  uint64_t now) {
  kp_link_send_from(l, from_side, &l->addr[from_side], to, data, len, now);
}

void kp_link_send_from(kp_link_t *l, int from_side, const kp_addr_t *from, const kp_addr_t *to,
                       const uint8_t *data, size_t len, uint64_t now) {
  direction_t *d = &l->dir[from_side];
  d->stats.sent++;
  if (len > sizeof(((kp_link_packet_t *)0)->data) || (d->p.mtu && len > d->p.mtu)) {
    d->stats.mtu_drops++;
    return;
  }
  uint64_t depart = now;
  if (d->p.rate) {
    /* The bottleneck: serialise behind what it holds; drop at the tail
     * when its queue is full. */
    size_t queue = d->p.queue_bytes ? d->p.queue_bytes : 256 << 10;
    uint64_t start = d->free_at > now ? d->free_at : now;
    uint64_t queued = (start - now) * d->p.rate / 1000000;
    if (queued + len > queue) {
      d->stats.queue_drops++;
      return;
    }
    d->free_at = start + (uint64_t)len * 1000000 / d->p.rate;
    depart = d->free_at;
  }
  if (d->p.loss > 0 && uniform(l) < d->p.loss) {
    d->stats.lost++;
    return;
  }
  schedule(l, from_side, from, to, data, len, depart);
  if (d->p.duplicate > 0 && uniform(l) < d->p.duplicate) {
    d->stats.duplicated++;
    schedule(l, from_side, from, to, data, len, depart);
  }
}

uint64_t kp_link_next(const kp_link_t *l) {
  return l->count ? l->heap[0].at : UINT64_MAX;
}

bool kp_link_pop(kp_link_t *l, uint64_t now, kp_link_packet_t *out) {
  while (l->count && l->heap[0].at <= now) {
    event_t e = pop_min(l);
    int side = side_of(l, &e.pkt->to);
    int from_side = side < 0 ? -1 : 1 - side;
    if (side < 0) {
      /* Nobody is at that address (any more). */
      l->dir[side_of(l, &e.pkt->from) == 0 ? 0 : 1].stats.unroutable++;
      free(e.pkt);
      continue;
    }
    l->dir[from_side].stats.delivered++;
    *out = *e.pkt;
    out->side = side;
    free(e.pkt);
    return true;
  }
  return false;
}
