/* SPDX-License-Identifier: MIT */
/* Streams of a connection: the send queue (writes referenced until
 * acknowledged), retransmission, reassembly, flow control, and the round
 * robin that keeps one busy stream from starving the others. */
#include <string.h>

#include "common/alloc.h"
#include "stream/stream_conn_internal.h"

/* A stream's receive window is re-advertised once the reader has consumed a
 * quarter of it: often enough to keep a sender busy, rarely enough to cost
 * nothing. */
#define WINDOW_UPDATE_FRACTION 4
/* Refused streams keep a little state until the refusal is acknowledged;
 * past this many over the limit, new ones are simply ignored. */
#define REFUSED_SLACK 16

static void maybe_update_window(kp_sconn_t *c, kp_sstream_t *s);

static bool local_id(const kp_sconn_t *c, uint64_t id) {
  return (id & 1) == (c->cfg.initiator ? 0 : 1);
}

/* ---- The table of streams ------------------------------------------------- */

static size_t bucket_of(const kp_sconn_t *c, uint64_t id) {
  return (size_t)((id >> 1) * 0x9e3779b97f4a7c15ull >> 32) & (c->bucket_count - 1);
}

kp_sstream_t *kp__sstream_find(kp_sconn_t *c, uint64_t id) {
  if (!c->bucket_count) return NULL;
  for (kp_sstream_t *s = c->buckets[bucket_of(c, id)]; s; s = s->hnext)
    if (s->id == id) return s;
  return NULL;
}

static int grow_table(kp_sconn_t *c) {
  if (c->stream_count < c->bucket_count) return 0;
  size_t n = c->bucket_count ? c->bucket_count * 2 : 16;
  kp_sstream_t **b = kp_calloc(n, sizeof(*b));
  if (!b) return KP_ENOMEM;
  for (size_t i = 0; i < c->bucket_count; i++) {
    for (kp_sstream_t *s = c->buckets[i], *next; s; s = next) {
      next = s->hnext;
      size_t k = (size_t)((s->id >> 1) * 0x9e3779b97f4a7c15ull >> 32) & (n - 1);
      s->hnext = b[k];
      b[k] = s;
    }
  }
  kp_free(c->buckets);
  c->buckets = b;
  c->bucket_count = n;
  return 0;
}

static kp_sstream_t *new_stream(kp_sconn_t *c, uint64_t id) {
  if (grow_table(c)) return NULL;
  kp_sstream_t *s = kp_calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->id = id;
  kp_ranges_init(&s->acked);
  kp_ranges_init(&s->resend);
  /* Both ends start from the protocol's initial window; the receiver raises
   * it to its configured one with its first frames. */
  s->peer_max = KP_STREAM_INITIAL_WINDOW;
  s->recv_limit_sent = KP_STREAM_INITIAL_WINDOW;
  s->window = c->cfg.stream_window;
  size_t b = bucket_of(c, id);
  s->hnext = c->buckets[b];
  c->buckets[b] = s;
  c->stream_count++;
  if (!local_id(c, id)) c->peer_streams++;
  maybe_update_window(c, s);
  return s;
}

static void unready(kp_sconn_t *c, kp_sstream_t *s) {
  if (!s->in_ready) return;
  kp_sstream_t **p = &c->ready_head, *prev = NULL;
  while (*p && *p != s) prev = *p, p = &(*p)->next_ready;
  if (*p) *p = s->next_ready;
  if (c->ready_tail == s) c->ready_tail = prev;
  s->in_ready = false;
  s->next_ready = NULL;
}

static void drop_chunks(kp_sconn_t *c, kp_sstream_t *s);

static void free_stream(kp_sconn_t *c, kp_sstream_t *s) {
  for (kp_sstream_t **p = &c->buckets[bucket_of(c, s->id)]; *p; p = &(*p)->hnext) {
    if (*p == s) {
      *p = s->hnext;
      break;
    }
  }
  unready(c, s);
  c->stream_count--;
  if (!local_id(c, s->id)) c->peer_streams--;
  drop_chunks(c, s);
  kp_ranges_free(&s->acked);
  kp_ranges_free(&s->resend);
  kp_free(s);
}

void kp__sstreams_free(kp_sconn_t *c) {
  for (size_t i = 0; i < c->bucket_count; i++) {
    while (c->buckets[i]) free_stream(c, c->buckets[i]);
  }
  kp_free(c->buckets);
  c->buckets = NULL;
  c->bucket_count = 0;
}

void kp__sstream_maybe_done(kp_sconn_t *c, kp_sstream_t *s) {
  /* Receiving is over once nothing more is delivered and the final size is
   * known (a FIN or a RESET_STREAM): until then, the peer's bytes still
   * count against the connection window and must be credited. */
  if (!s->send_done || !s->recv_done || !s->fin_received || s->reset_pending || s->stop_pending)
    return;
  uint64_t id = s->id;
  void *user = s->user;
  free_stream(c, s);
  if (c->ev.stream_done) c->ev.stream_done(c->ev.ctx, id, user);
}

void kp__sstream_mark_ready(kp_sconn_t *c, kp_sstream_t *s) {
  if (s->in_ready) return;
  s->in_ready = true;
  s->next_ready = NULL;
  if (c->ready_tail)
    c->ready_tail->next_ready = s;
  else
    c->ready_head = s;
  c->ready_tail = s;
}

/* ---- Opening ------------------------------------------------------------------ */

int kp_sconn_stream_open(kp_sconn_t *c, uint64_t *id) {
  if (c->state != S_OPEN) return KP_EPIPE;
  kp_sstream_t *s = new_stream(c, c->next_local_id);
  if (!s) return KP_ENOMEM;
  *id = c->next_local_id;
  c->next_local_id += 2;
  return 0;
}

kp_sstream_t *kp__sstream_for_peer(kp_sconn_t *c, uint64_t id, uint64_t now) {
  (void)now;
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (s || local_id(c, id)) return s; /* a local id we no longer know: over */
  /* The peer's streams open in order: an id below the next one was opened
   * and is finished (a late retransmission must not reopen it). A higher
   * one opens every id below it too, as the peer opened them first and
   * reordering brought this frame early. */
  if (id < c->next_peer_min) return NULL;
  uint64_t opening = (id - c->next_peer_min) / 2 + 1;
  if (opening > c->cfg.max_streams + REFUSED_SLACK - c->peer_streams) {
    /* Too many at once, even to refuse: not acknowledged, so the peer
     * sends it again once refusals have freed room. */
    c->recv_unstored = true;
    return NULL;
  }
  for (uint64_t next = c->next_peer_min; next <= id; next += 2) {
    if (!(s = new_stream(c, next))) {
      c->recv_unstored = true; /* out of memory: the retransmission retries */
      return NULL;
    }
    c->next_peer_min = next + 2;
    if (c->peer_streams > c->cfg.max_streams) {
      /* Over the limit: refuse it (RESET_STREAM and STOP_SENDING with
       * KP_STREAM_REFUSED). It goes once our reset is acknowledged and the
       * peer's reset has told its final size. */
      s->reset_pending = s->stop_pending = true;
      s->reset_code = s->stop_code = KP_STREAM_REFUSED;
      s->recv_done = true;
      kp__sstream_mark_ready(c, s);
    } else if (c->ev.stream_opened) {
      c->ev.stream_opened(c->ev.ctx, next);
      if (c->state != S_OPEN) return NULL; /* the callback closed the connection */
    }
  }
  return kp__sstream_find(c, id); /* a callback may have reset it */
}

/* ---- Writing -------------------------------------------------------------------- */

int kp_sconn_stream_write(kp_sconn_t *c, uint64_t id, kp_swrite_t *w, const kp_buf_t bufs[],
                          unsigned nbufs) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (c->state != S_OPEN) return KP_EPIPE;
  if (!s || s->fin_wanted || s->reset_pending || s->reset_sent) return KP_EPIPE;
  uint64_t total = 0;
  for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
  w->bufs = nbufs <= KP_SWRITE_INLINE_BUFS ? w->inline_bufs : kp_malloc(nbufs * sizeof(kp_buf_t));
  if (!w->bufs) return KP_ENOMEM;
  memcpy(w->bufs, bufs, nbufs * sizeof(kp_buf_t));
  w->nbufs = nbufs;
  w->next = NULL;
  w->start = s->write_end;
  w->end = s->write_end + total;
  s->write_end = w->end;
  if (s->wq_tail)
    s->wq_tail->next = w;
  else
    s->wq_head = w;
  s->wq_tail = w;
  if (!s->cursor) s->cursor = w;
  if (total) {
    kp__sstream_mark_ready(c, s);
  } else if (s->acked_prefix >= w->end) {
    /* Nothing to send and everything before it acknowledged: no ack will
     * come for it, so it completes at the next tick (never from inside this
     * call). */
    s->deliver_due = true;
    c->deliver_due = true;
  }
  return 0;
}

int kp_sconn_stream_end(kp_sconn_t *c, uint64_t id) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (!s || c->state != S_OPEN) return KP_EPIPE;
  if (s->fin_wanted || s->reset_pending || s->reset_sent) return 0;
  s->fin_wanted = true;
  kp__sstream_mark_ready(c, s);
  return 0;
}

static void release_write(kp_swrite_t *w) {
  if (w->bufs != w->inline_bufs) kp_free(w->bufs);
  w->bufs = NULL;
}

/* Completes (status 0) or fails every write ending at or below upto. */
static void complete_writes(kp_sconn_t *c, kp_sstream_t *s, uint64_t upto, int status) {
  while (s->wq_head && (status || s->wq_head->end <= upto)) {
    kp_swrite_t *w = s->wq_head;
    s->wq_head = w->next;
    if (!s->wq_head) s->wq_tail = NULL;
    if (s->cursor == w) s->cursor = s->wq_head;
    release_write(w);
    if (c->ev.write_done) c->ev.write_done(c->ev.ctx, w, status);
  }
}

static void reset_send_side(kp_sconn_t *c, kp_sstream_t *s, uint64_t code, int status) {
  if (s->reset_pending || s->reset_sent || s->send_done) return;
  s->reset_pending = true;
  s->reset_code = code;
  kp_ranges_free(&s->resend);
  kp_ranges_init(&s->resend);
  complete_writes(c, s, 0, status);
  kp__sstream_mark_ready(c, s);
}

static void free_chunk(kp_sconn_t *c, kp_sstream_t *s, kp_chunk_t *k) {
  s->chunk_count--;
  c->chunk_count--;
  s->buffered -= k->len;
  if (c->cfg.rx_budget) c->cfg.rx_budget->used -= k->len;
  kp_free(k);
}

static void drop_chunks(kp_sconn_t *c, kp_sstream_t *s) {
  while (s->chunks) {
    kp_chunk_t *k = s->chunks;
    s->chunks = k->next;
    free_chunk(c, s, k);
  }
  s->chunks_tail = NULL;
}

/* Counts the stream's bytes below upto as consumed for the connection's
 * flow control: delivered, or never to be (dropped, reset). The peer
 * counted every byte it sent; if we did not, its window would shrink for
 * good with every abandoned stream. */
static void credit(kp_sconn_t *c, kp_sstream_t *s, uint64_t upto) {
  if (upto <= s->credited) return;
  c->consumed += upto - s->credited;
  s->credited = upto;
  /* A quarter of the window freed: say so even with nothing else to send. */
  if (c->consumed + c->conn_window - c->max_data_sent >= c->conn_window / 4)
    c->window_update_due = true;
}

static void stop_receiving(kp_sconn_t *c, kp_sstream_t *s, uint64_t code) {
  if (s->recv_done) return;
  /* Tell the peer to stop sending (unless it already sent everything);
   * drop what we hold. */
  s->recv_done = true;
  drop_chunks(c, s);
  credit(c, s, s->fin_received ? s->final_size : s->recv_high);
  if (!s->fin_received || s->recv_high < s->final_size) {
    s->stop_pending = true;
    s->stop_code = code;
    kp__sstream_mark_ready(c, s);
  }
}

void kp_sconn_stream_reset(kp_sconn_t *c, uint64_t id, uint64_t code) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (!s || c->state == S_CLOSED) return;
  reset_send_side(c, s, code, KP_ECANCELED);
  stop_receiving(c, s, code);
  kp__sstream_maybe_done(c, s);
}

void kp_sconn_stream_stop(kp_sconn_t *c, uint64_t id, uint64_t code) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (!s || c->state == S_CLOSED) return;
  stop_receiving(c, s, code);
  kp__sstream_maybe_done(c, s);
}

void kp_sconn_stream_set_user(kp_sconn_t *c, uint64_t id, void *user) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (s) s->user = user;
}

void *kp_sconn_stream_user(kp_sconn_t *c, uint64_t id) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  return s ? s->user : NULL;
}

uint64_t kp_sconn_stream_unacked(const kp_sconn_t *c, uint64_t id) {
  kp_sstream_t *s = kp__sstream_find((kp_sconn_t *)c, id);
  return s ? s->write_end - s->acked_prefix : 0;
}

/* Copies stream bytes [off, off + len) out of the writes (which hold them
 * until acknowledged). from: a write at or before off. */
static void copy_out(const kp_swrite_t *from, uint64_t off, uint8_t *dst, size_t len) {
  const kp_swrite_t *w = from;
  while (w && w->end <= off) w = w->next;
  while (len && w) {
    uint64_t pos = w->start;
    for (unsigned i = 0; i < w->nbufs && len; i++) {
      uint64_t blen = w->bufs[i].len;
      if (off < pos + blen) {
        size_t skip = (size_t)(off - pos), n = (size_t)(blen - skip);
        if (n > len) n = len;
        memcpy(dst, (const uint8_t *)w->bufs[i].base + skip, n);
        dst += n;
        off += n;
        len -= n;
      }
      pos += blen;
    }
    w = w->next;
  }
}

/* Room for a STREAM frame's data after its header, in what w has left. */
static size_t data_room(const kp_wbuf_t *w, uint64_t id, uint64_t offset) {
  size_t left = w->cap - w->len;
  size_t head = kp_frame_stream_header_len(id, offset, left);
  return left > head ? left - head : 0;
}

static bool record(kp_sent_t *sent, uint8_t type, uint64_t id, uint64_t offset, uint32_t len,
                   bool fin) {
  if (sent->nframes == KP_SENT_MAX_FRAMES) return false;
  kp_sent_frame_t *f = &sent->frames[sent->nframes++];
  f->type = type;
  f->stream_id = id;
  f->offset = offset;
  f->len = len;
  f->fin = fin;
  return true;
}

/* One stream's contribution to a packet. Returns true if it wrote. */
static bool fill_stream(kp_sconn_t *c, kp_sstream_t *s, kp_wbuf_t *w, kp_sent_t *sent,
                        bool new_data_allowed) {
  bool wrote = false;
  /* Lost data first: it holds the receiver's window. (Bytes acknowledged
   * meanwhile are not resent; their writes may be gone.) */
  kp_ranges_drop_below(&s->resend, s->acked_prefix);
  while (!kp_ranges_empty(&s->resend) && sent->nframes < KP_SENT_MAX_FRAMES) {
    uint64_t lo = s->resend.r[0].lo;
    size_t room = data_room(w, s->id, lo);
    uint64_t hi;
    if (room < 64 || !kp_ranges_pop(&s->resend, room, &lo, &hi)) return wrote;
    size_t len = (size_t)(hi - lo);
    bool fin = s->fin_lost && hi == s->write_end && s->fin_wanted;
    kp_frame_put_stream_header(w, s->id, lo, len, fin);
    copy_out(s->wq_head, lo, w->base + w->len, len);
    w->len += len;
    if (fin) s->fin_lost = false;
    record(sent, KP_FRAME_STREAM, s->id, lo, (uint32_t)len, fin);
    wrote = true;
  }
  if (s->fin_lost && kp_ranges_empty(&s->resend) && sent->nframes < KP_SENT_MAX_FRAMES &&
      w->cap - w->len > 32) {
    kp_frame_put_stream_header(w, s->id, s->write_end, 0, true);
    s->fin_lost = false;
    record(sent, KP_FRAME_STREAM, s->id, s->write_end, 0, true);
    wrote = true;
  }
  /* New data, within the stream's and the connection's flow control. */
  if (new_data_allowed && sent->nframes < KP_SENT_MAX_FRAMES && !s->reset_pending &&
      !s->reset_sent) {
    uint64_t avail = s->write_end - s->send_offset;
    uint64_t stream_credit = s->peer_max > s->send_offset ? s->peer_max - s->send_offset : 0;
    uint64_t conn_credit = c->peer_max_data > c->sent_new ? c->peer_max_data - c->sent_new : 0;
    size_t room = data_room(w, s->id, s->send_offset);
    uint64_t n = avail;
    if (n > stream_credit) n = stream_credit;
    if (n > conn_credit) n = conn_credit;
    if (n > room) n = room;
    bool fin = s->fin_wanted && !s->fin_sent && s->send_offset + n == s->write_end;
    if ((n && (room >= 64 || n == avail)) || (fin && w->cap - w->len > 32)) {
      kp_frame_put_stream_header(w, s->id, s->send_offset, (size_t)n, fin);
      while (s->cursor && s->cursor->end <= s->send_offset) s->cursor = s->cursor->next;
      copy_out(s->cursor, s->send_offset, w->base + w->len, (size_t)n);
      w->len += (size_t)n;
      record(sent, KP_FRAME_STREAM, s->id, s->send_offset, (uint32_t)n, fin);
      s->send_offset += n;
      c->sent_new += n;
      c->stats.stream_bytes_sent += n;
      if (fin) s->fin_sent = true;
      wrote = true;
    }
  }
  return wrote;
}

static bool stream_has_work(const kp_sconn_t *c, const kp_sstream_t *s) {
  if (!kp_ranges_empty(&s->resend) || s->fin_lost) return true;
  if (s->reset_pending || s->reset_sent) return false;
  bool data = s->write_end > s->send_offset && s->peer_max > s->send_offset &&
              c->peer_max_data > c->sent_new;
  return data || (s->fin_wanted && !s->fin_sent && s->send_offset == s->write_end);
}

bool kp__sstreams_fill(kp_sconn_t *c, kp_wbuf_t *w, kp_sent_t *sent, bool new_data_allowed) {
  bool wrote = false;
  size_t visits = 0;
  for (const kp_sstream_t *s = c->ready_head; s; s = s->next_ready) visits++;
  /* Round robin: each ready stream in turn gets the rest of the packet, then
   * goes to the back of the queue if it has more, or leaves it (until it
   * has something again). One pass at most, so nothing can spin. */
  while (visits-- && c->ready_head && sent->nframes < KP_SENT_MAX_FRAMES && w->cap - w->len > 64) {
    kp_sstream_t *s = c->ready_head;
    c->ready_head = s->next_ready;
    if (!c->ready_head) c->ready_tail = NULL;
    s->in_ready = false;
    s->next_ready = NULL;
    wrote |= fill_stream(c, s, w, sent, new_data_allowed);
    if (stream_has_work(c, s) || s->reset_pending || s->stop_pending || s->limit_pending)
      kp__sstream_mark_ready(c, s);
  }
  return wrote;
}

bool kp__sstreams_have_data(const kp_sconn_t *c) {
  for (const kp_sstream_t *s = c->ready_head; s; s = s->next_ready)
    if (stream_has_work(c, s)) return true;
  return false;
}

bool kp__sstreams_blocked_on_conn(const kp_sconn_t *c) {
  if (c->peer_max_data > c->sent_new) return false;
  for (size_t i = 0; i < c->bucket_count; i++)
    for (const kp_sstream_t *s = c->buckets[i]; s; s = s->hnext)
      if (s->write_end > s->send_offset && s->peer_max > s->send_offset && !s->reset_pending &&
          !s->reset_sent)
        return true;
  return false;
}

bool kp__sstreams_have_control(const kp_sconn_t *c) {
  for (const kp_sstream_t *s = c->ready_head; s; s = s->next_ready)
    if (s->reset_pending || s->stop_pending || s->limit_pending) return true;
  return false;
}

bool kp__sstreams_fill_control(kp_sconn_t *c, kp_wbuf_t *w, kp_sent_t *sent) {
  bool wrote = false;
  for (kp_sstream_t *s = c->ready_head; s && sent->nframes < KP_SENT_MAX_FRAMES;
       s = s->next_ready) {
    if (w->cap - w->len < 32) break;
    if (s->reset_pending) {
      kp_frame_put_reset(w, s->id, s->reset_code, s->send_offset);
      record(sent, KP_FRAME_RESET_STREAM, s->id, 0, 0, false);
      s->reset_pending = false;
      s->reset_sent = true;
      wrote = true;
    }
    if (s->stop_pending && sent->nframes < KP_SENT_MAX_FRAMES) {
      kp_frame_put_stop(w, s->id, s->stop_code);
      record(sent, KP_FRAME_STOP_SENDING, s->id, 0, 0, false);
      s->stop_pending = false;
      s->stop_sent = true;
      wrote = true;
    }
    if (s->limit_pending && sent->nframes < KP_SENT_MAX_FRAMES) {
      uint64_t limit = s->recv_next + s->window;
      kp_frame_put_max_stream_data(w, s->id, limit);
      record(sent, KP_FRAME_MAX_STREAM_DATA, s->id, limit, 0, false);
      s->recv_limit_sent = limit;
      s->limit_pending = false;
      wrote = true;
    }
  }
  return wrote;
}

/* ---- Acknowledgements and losses -------------------------------------------- */

void kp__sstream_frame_acked(kp_sconn_t *c, const kp_sent_frame_t *f) {
  kp_sstream_t *s = kp__sstream_find(c, f->stream_id);
  if (!s) return;
  switch (f->type) {
    case KP_FRAME_STREAM: {
      uint64_t lo = f->offset, hi = f->offset + f->len;
      kp_ranges_remove(&s->resend, lo, hi); /* acked after all: no need to resend */
      if (hi > s->acked_prefix) {
        kp_ranges_add(&s->acked, lo > s->acked_prefix ? lo : s->acked_prefix, hi);
        if (s->acked.n && s->acked.r[0].lo <= s->acked_prefix) {
          s->acked_prefix = s->acked.r[0].hi;
          kp_ranges_drop_below(&s->acked, s->acked_prefix);
        }
      }
      if (f->fin) s->fin_acked = true;
      complete_writes(c, s, s->acked_prefix, 0);
      if (s->fin_acked && s->acked_prefix >= s->write_end) s->send_done = true;
      break;
    }
    case KP_FRAME_RESET_STREAM: s->send_done = true; break;
    default: break;
  }
  kp__sstream_maybe_done(c, s);
}

void kp__sstream_frame_lost(kp_sconn_t *c, const kp_sent_frame_t *f) {
  kp_sstream_t *s = kp__sstream_find(c, f->stream_id);
  if (!s) return;
  switch (f->type) {
    case KP_FRAME_STREAM:
      if (s->reset_pending || s->reset_sent) return;
      if (f->len) {
        uint64_t lo = f->offset > s->acked_prefix ? f->offset : s->acked_prefix;
        uint64_t hi = f->offset + f->len;
        if (lo < hi) {
          kp_ranges_add(&s->resend, lo, hi);
          for (size_t i = 0; i < s->acked.n; i++)
            kp_ranges_remove(&s->resend, s->acked.r[i].lo, s->acked.r[i].hi);
        }
      }
      if (f->fin && !s->fin_acked) s->fin_lost = true;
      break;
    case KP_FRAME_RESET_STREAM:
      if (!s->send_done) s->reset_pending = true;
      break;
    case KP_FRAME_STOP_SENDING: s->stop_pending = true; break;
    case KP_FRAME_MAX_STREAM_DATA:
      if (!s->recv_done && f->offset >= s->recv_limit_sent) s->limit_pending = true;
      break;
    default: return;
  }
  kp__sstream_mark_ready(c, s);
}

void kp__sstreams_fail_all(kp_sconn_t *c, int status) {
  for (size_t i = 0; i < c->bucket_count; i++)
    for (kp_sstream_t *s = c->buckets[i]; s; s = s->hnext) complete_writes(c, s, 0, status);
}

/* ---- Receiving --------------------------------------------------------------- */

static void maybe_update_window(kp_sconn_t *c, kp_sstream_t *s) {
  uint64_t limit = s->recv_next + s->window;
  if (!s->recv_done && !s->fin_received &&
      limit - s->recv_limit_sent >= s->window / WINDOW_UPDATE_FRACTION) {
    s->limit_pending = true;
    kp__sstream_mark_ready(c, s);
  }
}

static void deliver(kp_sconn_t *c, kp_sstream_t *s, const uint8_t *data, size_t len) {
  /* Read: it may use the window the connection's measurements allow. */
  if (s->window < c->stream_window) s->window = c->stream_window;
  s->recv_next += len;
  credit(c, s, s->recv_next);
  c->stats.stream_bytes_received += len;
  if (c->ev.stream_data) c->ev.stream_data(c->ev.ctx, s->id, data, len);
}

/* Delivers buffered chunks that now continue the stream, then EOF. */
static void drain(kp_sconn_t *c, kp_sstream_t *s) {
  uint64_t id = s->id;
  while (!s->paused && !s->recv_done && s->chunks && s->chunks->offset <= s->recv_next) {
    kp_chunk_t *k = s->chunks;
    s->chunks = k->next;
    if (!s->chunks) s->chunks_tail = NULL;
    if (k->offset + k->len > s->recv_next) {
      size_t skip = (size_t)(s->recv_next - k->offset);
      deliver(c, s, k->data + skip, k->len - skip);
    }
    free_chunk(c, s, k);
    /* The application may have reset the stream from its callback. */
    if (!(s = kp__sstream_find(c, id))) return;
  }
  if (!s->paused && !s->recv_done && s->fin_received && s->recv_next == s->final_size) {
    s->recv_done = true;
    if (c->ev.stream_eof) c->ev.stream_eof(c->ev.ctx, s->id);
    if (!(s = kp__sstream_find(c, id))) return;
  }
  maybe_update_window(c, s);
  kp__sstream_maybe_done(c, s);
}

/* Out-of-order data is held in chunks, each a small allocation: a peer
 * sending one-byte frames at every other offset could otherwise make
 * millions of them inside the windows. Past these counts, data is refused
 * (and not acknowledged) until the gaps fill. Data that continues the last
 * chunk goes into it while it has room, and each chunk of such a run is
 * allocated twice the size of the one before (up to CHUNK_RUN_MAX): a
 * sender of full packets needs a few chunks per gap, not one per packet
 * (at 5% loss and a 64 MiB window, a few thousand per stream), while a
 * peer of one-byte frames gets exactly sized ones, as before. */
#define MAX_CHUNKS_PER_STREAM 16384
#define MAX_CHUNKS 65536
#define CHUNK_RUN_MAX (64u << 10)

/* Stores [offset, offset + len) of data, skipping what is held already.
 * false if it could not (memory, or the chunk limits): the caller must not
 * acknowledge the packet, so the sender sends the data again. */
static bool store(kp_sconn_t *c, kp_sstream_t *s, uint64_t offset, const uint8_t *data,
                  size_t len) {
  kp_chunk_t **p = &s->chunks;
  /* After a gap, data mostly arrives in order: straight to the end. */
  if (s->chunks_tail && offset >= s->chunks_tail->offset + s->chunks_tail->len)
    p = &s->chunks_tail->next;
  while (len) {
    while (*p && (*p)->offset + (*p)->len <= offset) p = &(*p)->next;
    uint64_t end = offset + len;
    if (*p && (*p)->offset <= offset) {
      /* Overlaps an existing chunk at its start: skip the covered part. */
      uint64_t covered = (*p)->offset + (*p)->len;
      if (covered >= end) return true;
      data += covered - offset;
      len = (size_t)(end - covered);
      offset = covered;
      continue;
    }
    uint64_t stop = *p && (*p)->offset < end ? (*p)->offset : end;
    size_t n = (size_t)(stop - offset);
    /* What a node's connections hold together is bounded (rx_budget). */
    kp_rx_budget_t *b = c->cfg.rx_budget;
    /* Continuing the last chunk, at the end of the list: into its room. */
    kp_chunk_t *t = s->chunks_tail;
    bool run = !*p && t && p == &t->next && t->offset + t->len == offset;
    if (run && t->len < t->cap) {
      size_t m = n < t->cap - t->len ? n : t->cap - t->len;
      if (b && b->used + m > b->max) return false;
      memcpy(t->data + t->len, data, m);
      t->len += m;
      s->buffered += m;
      if (b) b->used += m;
      data += m;
      offset += m;
      len -= m;
      continue;
    }
    if (s->chunk_count >= MAX_CHUNKS_PER_STREAM || c->chunk_count >= MAX_CHUNKS ||
        (b && b->used + n > b->max))
      return false;
    size_t cap = n;
    if (run && 2 * t->cap > cap) cap = 2 * t->cap < CHUNK_RUN_MAX ? 2 * t->cap : CHUNK_RUN_MAX;
    if (cap < n) cap = n;
    kp_chunk_t *k = kp_malloc(sizeof(*k) + cap);
    if (!k) return false;
    s->chunk_count++;
    c->chunk_count++;
    if (b) b->used += n;
    k->offset = offset;
    k->len = n;
    k->cap = cap;
    memcpy(k->data, data, n);
    k->next = *p;
    *p = k;
    if (!k->next) s->chunks_tail = k;
    s->buffered += n;
    p = &k->next;
    data += n;
    offset += n;
    len -= n;
  }
  return true;
}

void kp__sstream_on_data(kp_sconn_t *c, kp_sstream_t *s, uint64_t offset, const uint8_t *data,
                         size_t len, bool fin) {
  uint64_t end = offset + len;
  /* Beyond what we advertised, for the stream or the connection: the peer
   * ignores flow control; drop it. So is data past a known end. */
  if (end > s->recv_limit_sent || (s->fin_received && end > s->final_size)) return;
  if (end > s->recv_high && c->recv_total_high + (end - s->recv_high) > c->max_data_sent) return;
  if (fin) {
    /* A final size must not change, nor fall below data already seen. */
    if ((s->fin_received && s->final_size != end) || end < s->recv_high) return;
    s->fin_received = true;
    s->final_size = end;
  }
  if (end > s->recv_high) {
    c->recv_total_high += end - s->recv_high;
    s->recv_high = end;
  }
  if (s->recv_done) {
    /* Stopped, or finished: nothing to deliver, but the bytes count. */
    credit(c, s, s->fin_received ? s->final_size : s->recv_high);
    kp__sstream_maybe_done(c, s);
    return;
  }
  if (end > s->recv_next) {
    if (offset <= s->recv_next && !s->paused && (!s->chunks || s->chunks->offset > s->recv_next)) {
      /* In order: hand it over straight from the packet. */
      size_t skip = (size_t)(s->recv_next - offset);
      uint64_t id = s->id;
      deliver(c, s, data + skip, len - skip);
      if (!(s = kp__sstream_find(c, id))) return;
    } else {
      uint64_t from = offset > s->recv_next ? offset : s->recv_next;
      if (!store(c, s, from, data + (from - offset), (size_t)(end - from))) c->recv_unstored = true;
    }
  }
  drain(c, s);
}

bool kp__sstream_on_reset(kp_sconn_t *c, kp_sstream_t *s, uint64_t code, uint64_t final_size) {
  /* The final size is the peer's word on how much it sent: it must agree
   * with what we saw and with flow control. */
  if (final_size < s->recv_high || (s->fin_received && final_size != s->final_size) ||
      final_size > s->recv_limit_sent ||
      c->recv_total_high + (final_size - s->recv_high) > c->max_data_sent)
    return false;
  c->recv_total_high += final_size - s->recv_high;
  s->recv_high = final_size;
  s->fin_received = true;
  s->final_size = final_size;
  credit(c, s, final_size);
  uint64_t id = s->id;
  if (!s->recv_done) {
    s->recv_done = true;
    drop_chunks(c, s);
    if (c->ev.stream_reset) c->ev.stream_reset(c->ev.ctx, id, code);
  }
  if ((s = kp__sstream_find(c, id))) kp__sstream_maybe_done(c, s);
  return true;
}

void kp__sstream_on_stop(kp_sconn_t *c, kp_sstream_t *s, uint64_t code) {
  /* The peer will not read: stop sending, and fail what is pending. */
  uint64_t id = s->id;
  reset_send_side(c, s, code, KP_ERESET);
  if ((s = kp__sstream_find(c, id))) kp__sstream_maybe_done(c, s);
}

void kp__sstream_on_max_data(kp_sconn_t *c, kp_sstream_t *s, uint64_t max) {
  if (max <= s->peer_max) return;
  s->peer_max = max;
  if (stream_has_work(c, s)) kp__sstream_mark_ready(c, s);
}

void kp_sconn_stream_pause(kp_sconn_t *c, uint64_t id, bool paused) {
  kp_sstream_t *s = kp__sstream_find(c, id);
  if (!s || s->paused == paused) return;
  s->paused = paused;
  if (!paused && (s->chunks || (s->fin_received && s->recv_next == s->final_size))) {
    s->deliver_due = true;
    c->deliver_due = true;
  }
}

void kp__sstreams_deliver(kp_sconn_t *c) {
  if (!c->deliver_due) return;
  c->deliver_due = false;
  /* A delivery may reset or finish streams: restart the walk after each. */
  for (bool again = true; again;) {
    again = false;
    for (size_t i = 0; i < c->bucket_count && !again; i++) {
      for (kp_sstream_t *s = c->buckets[i]; s; s = s->hnext) {
        if (!s->deliver_due) continue;
        s->deliver_due = false;
        uint64_t id = s->id;
        complete_writes(c, s, s->acked_prefix, 0);
        if ((s = kp__sstream_find(c, id))) drain(c, s);
        again = true;
        break;
      }
    }
  }
}
