/* SPDX-License-Identifier: MIT */
/* A connection's unreliable datagrams (stream_datagram.h): the bounded send
 * queue, filling packets from it, and delivery on receipt. */
#include <string.h>

#include "common/alloc.h"
#include "stream/stream_conn_internal.h"

/* Datagrams in one packet at most (kp_sent_t counts them in a byte). */
#define DGRAMS_PER_PACKET 64

size_t kp_dgram_max_for_mtu(unsigned mtu) {
  size_t overhead = KP_STREAM_HEADER_MAX + KP_STREAM_TAG_LEN + kp_frame_datagram_len(0) + 1;
  return mtu > overhead ? mtu - overhead : 0;
}

size_t kp_sconn_datagram_max(const kp_sconn_t *c) {
  return kp_dgram_max_for_mtu(c->mtu);
}

int kp_sconn_datagram_send(kp_sconn_t *c, const void *data, size_t len) {
  if (c->state != S_OPEN) return KP_EPIPE;
  if (len > kp_sconn_datagram_max(c)) {
    c->stats.datagrams_dropped++;
    return KP_EMSGSIZE;
  }
  kp_dgram_queue_t *q = &c->dgrams;
  if (q->count >= KP_DGRAM_QUEUE_MAX || q->bytes + len > KP_DGRAM_QUEUE_BYTES) {
    c->stats.datagrams_dropped++;
    return KP_ENOBUFS;
  }
  kp_dgram_t *d = kp_malloc(sizeof(*d) + len);
  if (!d) {
    c->stats.datagrams_dropped++;
    return KP_ENOMEM;
  }
  d->next = NULL;
  d->len = len;
  if (len) memcpy(d->data, data, len);
  if (q->tail)
    q->tail->next = d;
  else
    q->head = d;
  q->tail = d;
  q->count++;
  q->bytes += len;
  return 0;
}

bool kp__dgrams_queued(const kp_sconn_t *c) {
  return c->dgrams.head != NULL;
}

static kp_dgram_t *pop(kp_dgram_queue_t *q) {
  kp_dgram_t *d = q->head;
  q->head = d->next;
  if (!q->head) q->tail = NULL;
  q->count--;
  q->bytes -= d->len;
  return d;
}

size_t kp__dgrams_reserve(kp_sconn_t *c, size_t room) {
  kp_dgram_queue_t *q = &c->dgrams;
  /* The path's datagrams shrank under a queued one (a move, a black hole):
   * it fits no packet now and never will until probing says so. */
  size_t max = kp_sconn_datagram_max(c);
  while (q->head && q->head->len > max) {
    kp_free(pop(q));
    c->stats.datagrams_dropped++;
  }
  size_t need = 0;
  unsigned n = 0;
  for (const kp_dgram_t *d = q->head; d && n < DGRAMS_PER_PACKET; d = d->next, n++) {
    size_t len = kp_frame_datagram_len(d->len);
    if (need + len > room) break;
    need += len;
  }
  return need;
}

unsigned kp__dgrams_fill(kp_sconn_t *c, kp_wbuf_t *w) {
  kp_dgram_queue_t *q = &c->dgrams;
  unsigned n = 0;
  while (q->head && n < DGRAMS_PER_PACKET &&
         kp_frame_datagram_len(q->head->len) <= w->cap - w->len) {
    kp_dgram_t *d = pop(q);
    kp_frame_put_datagram(w, d->data, d->len);
    kp_free(d);
    n++;
  }
  c->stats.datagrams_sent += n;
  return n;
}

void kp__dgrams_free(kp_sconn_t *c) {
  while (c->dgrams.head) {
    kp_free(pop(&c->dgrams));
    c->stats.datagrams_dropped++;
  }
}

void kp__dgram_received(kp_sconn_t *c, const uint8_t *data, size_t len) {
  c->stats.datagrams_received++;
  if (c->ev.datagram)
    c->ev.datagram(c->ev.ctx, data, len);
  else
    c->stats.datagrams_dropped++;
}
