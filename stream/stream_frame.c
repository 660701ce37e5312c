/* SPDX-License-Identifier: MIT */
#include "stream/stream_frame.h"

#include <string.h>

uint64_t kp_stream_packet_cid(const uint8_t *data) {
  kp_rbuf_t r;
  kp_rbuf_init(&r, data + 2, 8);
  return kp_rbuf_u64(&r);
}

size_t kp_stream_header_encode(const kp_stream_header_t *h, uint8_t *buf, size_t cap) {
  kp_wbuf_t w;
  kp_wbuf_init(&w, buf, cap);
  kp_wbuf_put_u8(&w, KP_STREAM_FIRST_BYTE);
  kp_wbuf_put_u8(&w, h->flags);
  kp_wbuf_put_u64(&w, h->cid);
  kp_wbuf_put_u64(&w, h->pn);
  if (h->flags & KP_STREAM_FLAG_ACK) {
    const kp_stream_ack_t *a = &h->ack;
    kp_wbuf_put_u64(&w, a->largest);
    kp_wbuf_put_u16(&w, a->delay_8us);
    kp_wbuf_put_u64(&w, a->max_data);
    kp_wbuf_put_u8(&w, a->count);
    kp_wbuf_put_u16(&w, a->first);
    for (unsigned i = 0; i < a->count && i < KP_STREAM_MAX_ACK_RANGES; i++) {
      kp_wbuf_put_u16(&w, a->ranges[i].gap);
      kp_wbuf_put_u16(&w, a->ranges[i].length);
    }
  }
  return w.overflow ? 0 : w.len;
}

size_t kp_stream_header_decode(kp_stream_header_t *h, const uint8_t *buf, size_t len) {
  kp_rbuf_t r;
  kp_rbuf_init(&r, buf, len);
  memset(h, 0, sizeof(*h));
  if (kp_rbuf_u8(&r) != KP_STREAM_FIRST_BYTE) return 0;
  h->flags = kp_rbuf_u8(&r);
  if (h->flags & ~(KP_STREAM_FLAG_ACK | KP_STREAM_FLAG_ACK_NOW))
    return 0; /* unknown flags: a newer format */
  h->cid = kp_rbuf_u64(&r);
  h->pn = kp_rbuf_u64(&r);
  if (h->flags & KP_STREAM_FLAG_ACK) {
    kp_stream_ack_t *a = &h->ack;
    a->largest = kp_rbuf_u64(&r);
    a->delay_8us = kp_rbuf_u16(&r);
    a->max_data = kp_rbuf_u64(&r);
    a->count = kp_rbuf_u8(&r);
    if (a->count > KP_STREAM_MAX_ACK_RANGES) return 0;
    a->first = kp_rbuf_u16(&r);
    for (unsigned i = 0; i < a->count; i++) {
      a->ranges[i].gap = kp_rbuf_u16(&r);
      a->ranges[i].length = kp_rbuf_u16(&r);
    }
  }
  return r.error ? 0 : len - kp_rbuf_left(&r);
}

void kp_varint_put(kp_wbuf_t *w, uint64_t v) {
  switch (kp_varint_len(v)) {
    case 1: kp_wbuf_put_u8(w, (uint8_t)v); break;
    case 2: kp_wbuf_put_u16(w, (uint16_t)(0x4000 | v)); break;
    case 4: kp_wbuf_put_u32(w, (uint32_t)(0x80000000u | v)); break;
    default: kp_wbuf_put_u64(w, 0xc000000000000000ull | v); break;
  }
}

uint64_t kp_varint_get(kp_rbuf_t *r) {
  const uint8_t *p = kp_rbuf_take(r, 1);
  if (!p) return 0;
  unsigned extra = (1u << (p[0] >> 6)) - 1;
  uint64_t v = p[0] & 0x3f;
  const uint8_t *q = kp_rbuf_take(r, extra);
  if (!q) return 0;
  for (unsigned i = 0; i < extra; i++) v = v << 8 | q[i];
  return v;
}

int kp_frame_next(kp_rbuf_t *r, kp_frame_t *f) {
  memset(f, 0, sizeof(*f));
  while (kp_rbuf_left(r) && r->pos[0] == KP_FRAME_PADDING) r->pos++;
  if (!kp_rbuf_left(r)) return 0;
  uint8_t type = kp_rbuf_u8(r);
  f->type = type;
  switch (type) {
    case KP_FRAME_PING: break;
    case KP_FRAME_STREAM:
    case KP_FRAME_STREAM | 1:
      f->type = KP_FRAME_STREAM;
      f->fin = type & 1;
      f->stream_id = kp_varint_get(r);
      f->offset = kp_varint_get(r);
      f->len = (size_t)kp_varint_get(r);
      if (!r->error && f->len > kp_rbuf_left(r)) return -1;
      f->data = kp_rbuf_take(r, f->len);
      if (f->offset + f->len < f->offset || f->offset + f->len > KP_VARINT_MAX) return -1;
      break;
    case KP_FRAME_RESET_STREAM:
      f->stream_id = kp_varint_get(r);
      f->value = kp_varint_get(r);
      f->final_size = kp_varint_get(r);
      break;
    case KP_FRAME_STOP_SENDING:
      f->stream_id = kp_varint_get(r);
      f->value = kp_varint_get(r);
      break;
    case KP_FRAME_MAX_STREAM_DATA:
      f->stream_id = kp_varint_get(r);
      f->value = kp_varint_get(r);
      break;
    case KP_FRAME_PATH_CHALLENGE:
    case KP_FRAME_PATH_RESPONSE:
      f->data = kp_rbuf_take(r, 8);
      f->len = 8;
      break;
    case KP_FRAME_ACK_FREQUENCY:
      f->stream_id = kp_varint_get(r);
      f->value = kp_varint_get(r);
      break;
    case KP_FRAME_DATAGRAM:
      f->len = (size_t)kp_varint_get(r);
      if (!r->error && f->len > kp_rbuf_left(r)) return -1;
      f->data = kp_rbuf_take(r, f->len);
      break;
    case KP_FRAME_CLOSE:
      f->value = kp_varint_get(r);
      f->len = (size_t)kp_varint_get(r);
      if (!r->error && f->len > kp_rbuf_left(r)) return -1;
      f->data = kp_rbuf_take(r, f->len);
      break;
    default: return -1;
  }
  return r->error ? -1 : 1;
}

size_t kp_frame_stream_header_len(uint64_t id, uint64_t offset, size_t len) {
  return 1 + kp_varint_len(id) + kp_varint_len(offset) + kp_varint_len(len);
}

void kp_frame_put_stream_header(kp_wbuf_t *w, uint64_t id, uint64_t offset, size_t len, bool fin) {
  kp_wbuf_put_u8(w, (uint8_t)(KP_FRAME_STREAM | (fin ? 1 : 0)));
  kp_varint_put(w, id);
  kp_varint_put(w, offset);
  kp_varint_put(w, len);
}

void kp_frame_put_stream(kp_wbuf_t *w, uint64_t id, uint64_t offset, const uint8_t *data,
                         size_t len, bool fin) {
  kp_frame_put_stream_header(w, id, offset, len, fin);
  kp_wbuf_put(w, data, len);
}

void kp_frame_put_ping(kp_wbuf_t *w) {
  kp_wbuf_put_u8(w, KP_FRAME_PING);
}

void kp_frame_put_padding(kp_wbuf_t *w, size_t n) {
  if (!kp_wbuf_room(w, n)) return;
  memset(w->base + w->len, 0, n);
  w->len += n;
}

void kp_frame_put_reset(kp_wbuf_t *w, uint64_t id, uint64_t code, uint64_t final_size) {
  kp_wbuf_put_u8(w, KP_FRAME_RESET_STREAM);
  kp_varint_put(w, id);
  kp_varint_put(w, code);
  kp_varint_put(w, final_size);
}

void kp_frame_put_stop(kp_wbuf_t *w, uint64_t id, uint64_t code) {
  kp_wbuf_put_u8(w, KP_FRAME_STOP_SENDING);
  kp_varint_put(w, id);
  kp_varint_put(w, code);
}

void kp_frame_put_max_stream_data(kp_wbuf_t *w, uint64_t id, uint64_t max) {
  kp_wbuf_put_u8(w, KP_FRAME_MAX_STREAM_DATA);
  kp_varint_put(w, id);
  kp_varint_put(w, max);
}

void kp_frame_put_path(kp_wbuf_t *w, bool response, const uint8_t data[8]) {
  kp_wbuf_put_u8(w, response ? KP_FRAME_PATH_RESPONSE : KP_FRAME_PATH_CHALLENGE);
  kp_wbuf_put(w, data, 8);
}

void kp_frame_put_close(kp_wbuf_t *w, uint64_t code, const char *reason) {
  size_t n = reason ? strlen(reason) : 0;
  kp_wbuf_put_u8(w, KP_FRAME_CLOSE);
  kp_varint_put(w, code);
  kp_varint_put(w, n);
  kp_wbuf_put(w, reason, n);
}

void kp_frame_put_ack_frequency(kp_wbuf_t *w, uint64_t seq, uint64_t packets) {
  kp_wbuf_put_u8(w, KP_FRAME_ACK_FREQUENCY);
  kp_varint_put(w, seq);
  kp_varint_put(w, packets);
}

void kp_frame_put_datagram(kp_wbuf_t *w, const uint8_t *data, size_t len) {
  kp_wbuf_put_u8(w, KP_FRAME_DATAGRAM);
  kp_varint_put(w, len);
  kp_wbuf_put(w, data, len);
}
