/* SPDX-License-Identifier: MIT */
#include "tests/loopback/xfer.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tests/harness/pattern.h"
#include "tests/harness/test.h"

typedef struct {
  kp_write_t req;
  xfer_stream_t *st;
} xfer_write_t;

static void feed(xfer_stream_t *st);

static void on_write(kp_write_t *req, int status) {
  xfer_write_t *w = (xfer_write_t *)req;
  xfer_stream_t *st = w->st;
  size_t len = (size_t)(req->private_.end - req->private_.start);
  free(w);
  if (status) {
    if (!st->write_error) st->write_error = status;
    return;
  }
  st->completed += len;
}

static void on_drain(kp_stream_t *s) {
  feed(kp_stream_get_data(s));
}

/* Writes until the high-water mark, then waits for drain. */
static void feed(xfer_stream_t *st) {
  while (st->written < st->total && kp_stream_is_writable(st->s)) {
    size_t avail;
    const uint8_t *p = kp_pattern_at(st->id, st->written, &avail);
    uint64_t n = st->total - st->written;
    if (n > st->side->chunk) n = st->side->chunk;
    if (n > avail) n = avail;
    xfer_write_t *w = malloc(sizeof(*w));
    KP_CHECK(w);
    w->st = st;
    uv_buf_t buf = uv_buf_init((char *)p, (unsigned)n);
    int err = kp_stream_write(&w->req, st->s, &buf, 1, on_write);
    if (err) {
      free(w);
      st->write_error = err;
      return;
    }
    st->written += n;
  }
  if (st->written == st->total) kp_stream_end(st->s);
}

static void on_read(kp_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  xfer_stream_t *st = kp_stream_get_data(s);
  if (nread > 0) {
    st->mismatches +=
        kp_pattern_mismatches(st->id, st->received, (const uint8_t *)buf->base, (size_t)nread);
    st->received += (uint64_t)nread;
  } else if (nread == UV_EOF) {
    st->eof = true;
  } else {
    st->read_error = (int)nread;
  }
}

static xfer_stream_t *adopt(xfer_side_t *side, kp_stream_t *s, uint64_t total) {
  KP_CHECK(side->nstreams < XFER_MAX_STREAMS);
  xfer_stream_t *st = &side->streams[side->nstreams++];
  memset(st, 0, sizeof(*st));
  st->side = side;
  st->s = s;
  st->id = kp_stream_id(s);
  st->total = total;
  kp_stream_set_data(s, st);
  kp_stream_set_drain_cb(s, on_drain);
  KP_CHECK_OK(kp_stream_read_start(s, on_read));
  feed(st);
  return st;
}

static void on_stream(kp_conn_t *conn, kp_stream_t *s) {
  xfer_side_t *side = kp_conn_get_data(conn);
  adopt(side, s, side->reply_total);
}

static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  xfer_side_t *side = kp_conn_get_data(conn);
  side->conn_over = true;
  side->close_status = status;
  side->close_code = code;
}

void xfer_init(xfer_t *x, const char *bind, kp_cipher_t cipher) {
  memset(x, 0, sizeof(*x));
  KP_CHECK_OK(uv_loop_init(&x->loop));
  kp_addr_t addr[2];
  for (int i = 0; i < 2; i++) {
    KP_CHECK_OK(kp_endpoint_create(&x->loop, bind, &x->side[i].ep));
    kp_endpoint_local_addr(x->side[i].ep, &addr[i]);
  }
  uint8_t keys[2][32];
  randombytes_buf(keys, sizeof(keys));
  for (int i = 0; i < 2; i++) {
    xfer_side_t *side = &x->side[i];
    side->x = x;
    side->index = i;
    side->chunk = 256 << 10;
    kp_conn_options_t *o = &side->opts;
    kp_conn_options_init(o);
    o->initiator = i == 0;
    o->local_id = 0x100 + (uint64_t)i;
    o->remote_id = 0x100 + (uint64_t)(1 - i);
    o->cipher = cipher;
    memcpy(o->tx_key, keys[i], 32);
    memcpy(o->rx_key, keys[1 - i], 32);
    o->remote = addr[1 - i];
    kp_conn_callbacks_t cb = {on_stream, on_close, NULL, NULL};
    KP_CHECK_OK(kp_conn_open(side->ep, o, &cb, &side->conn));
    kp_conn_set_data(side->conn, side);
  }
}

xfer_stream_t *xfer_open(xfer_t *x, int side, uint64_t total) {
  kp_stream_t *s;
  KP_CHECK_OK(kp_stream_open(x->side[side].conn, &s));
  return adopt(&x->side[side], s, total);
}

xfer_stream_t *xfer_find(xfer_t *x, int side, uint64_t id) {
  for (unsigned i = 0; i < x->side[side].nstreams; i++)
    if (x->side[side].streams[i].id == id) return &x->side[side].streams[i];
  return NULL;
}

static bool delivered(xfer_t *x) {
  for (int i = 0; i < 2; i++) {
    for (unsigned k = 0; k < x->side[i].nstreams; k++) {
      const xfer_stream_t *st = &x->side[i].streams[k];
      if (st->write_error || st->read_error) return true; /* over: let the checks say */
      if (st->completed < st->total) return false;
      const xfer_stream_t *peer = xfer_find(x, 1 - i, st->id);
      if (!peer || !peer->eof) return false;
    }
  }
  return true;
}

static void on_tick(uv_timer_t *t) {
  xfer_t *x = t->data;
  if (delivered(x) || x->side[0].conn_over || x->side[1].conn_over) uv_stop(&x->loop);
}

bool xfer_run(xfer_t *x, uint64_t timeout_ms) {
  uv_timer_t tick;
  uv_timer_init(&x->loop, &tick);
  tick.data = x;
  uv_timer_start(&tick, on_tick, 5, 5);
  uint64_t deadline = kp_test_now_ms() + timeout_ms;
  while (!delivered(x) && kp_test_now_ms() < deadline && !x->side[0].conn_over)
    uv_run(&x->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&x->loop, UV_RUN_NOWAIT);
  return delivered(x);
}

static void on_stream_closed(kp_stream_t *s) {
  xfer_stream_t *st = kp_stream_get_data(s);
  st->closed = true;
}

void xfer_finish(xfer_t *x) {
  for (int i = 0; i < 2; i++) {
    for (unsigned k = 0; k < x->side[i].nstreams; k++) {
      xfer_stream_t *st = &x->side[i].streams[k];
      KP_CHECK_EQ(st->mismatches, 0);
      KP_CHECK_EQ(st->write_error, 0);
      KP_CHECK_EQ(st->read_error, 0);
      KP_CHECK_EQ(st->completed, st->total);
      const xfer_stream_t *peer = xfer_find(x, 1 - i, st->id);
      KP_CHECK(peer && peer->eof && peer->received == st->total);
      kp_stream_close(st->s, on_stream_closed);
    }
  }
  for (int i = 0; i < 2; i++) kp_conn_close(x->side[i].conn, 0);
  for (int i = 0; i < 2; i++) kp_endpoint_close(x->side[i].ep, NULL);
  uv_run(&x->loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 2; i++)
    for (unsigned k = 0; k < x->side[i].nstreams; k++) KP_CHECK(x->side[i].streams[k].closed);
  KP_CHECK_EQ(uv_loop_close(&x->loop), 0);
}
