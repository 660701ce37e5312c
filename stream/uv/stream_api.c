/* SPDX-License-Identifier: MIT */
/* Stream handles: the libuv-shaped API over the connection's numbered
 * streams (see endpoint.h for when callbacks run). */
#include <string.h>

#include "common/alloc.h"
#include "stream/uv/endpoint.h"

void kp__conn_handle_closed(kp_conn_t *conn);

/* ---- Handles -------------------------------------------------------------------- */

/* Writes are held until acknowledged, so the write queue holds everything
 * in flight, and after a loss everything behind the gap until the
 * retransmission is acknowledged (a round trip more): on a path whose
 * bandwidth-delay product is large, a fixed mark would leave the sender
 * waiting on its own application. The mark is the configured one or four
 * congestion windows, whichever is larger (bounded, for a window gone
 * wild: HIGH_WATER_MAX). At 5% loss and 200 ms, two windows held the
 * sender to two thirds of what four give. */
#define HIGH_WATER_MAX ((uint64_t)256 << 20)
#define HIGH_WATER_CWNDS 4

static size_t high_water(const kp_conn_t *conn) {
  uint64_t want = HIGH_WATER_CWNDS * kp_sconn_cwnd(conn->sc);
  if (want > HIGH_WATER_MAX) want = HIGH_WATER_MAX;
  return want > conn->high_water ? (size_t)want : conn->high_water;
}

static kp_stream_t *new_handle(kp_conn_t *conn, uint64_t id) {
  kp_stream_t *s = kp_calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->conn = conn;
  s->id = id;
  s->next = conn->streams;
  if (conn->streams) conn->streams->prev = s;
  conn->streams = s;
  conn->stream_handles++;
  kp_sconn_stream_set_user(conn->sc, id, s);
  /* Data waits until the application reads. */
  kp_sconn_stream_pause(conn->sc, id, true);
  return s;
}

static void free_handle(kp_stream_t *s) {
  kp_conn_t *conn = s->conn;
  if (s->prev)
    s->prev->next = s->next;
  else
    conn->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  conn->stream_handles--;
  kp_sconn_stream_set_user(conn->sc, s->id, NULL);
  kp_free(s);
  kp__conn_handle_closed(conn);
}

static kp_stream_t *handle_of(kp_conn_t *conn, uint64_t id) {
  return kp_sconn_stream_user(conn->sc, id);
}

/* Reports EOF or an error to a reader now, or when it starts reading. */
static void report(kp_stream_t *s, int status) {
  if (s->read_over || s->closing) return;
  if (s->reading) {
    s->read_over = true;
    s->reading = false;
    s->read_cb(s, status, NULL);
  } else if (!s->pending_status) {
    s->pending_status = status;
  }
}

/* ---- The state machine's events ------------------------------------------------- */

void kp__on_stream_opened(void *ctx, uint64_t id) {
  kp_conn_t *conn = ctx;
  kp_stream_t *s = conn->cb.on_stream ? new_handle(conn, id) : NULL;
  if (!s) {
    kp_sconn_stream_reset(conn->sc, id, KP_STREAM_REFUSED);
    return;
  }
  conn->cb.on_stream(conn, s);
}

void kp__on_stream_data(void *ctx, uint64_t id, const uint8_t *data, size_t len) {
  kp_stream_t *s = handle_of(ctx, id);
  if (!s || !s->reading) return; /* paused streams get no data */
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  s->read_cb(s, (ssize_t)len, &buf);
}

void kp__on_stream_eof(void *ctx, uint64_t id) {
  kp_stream_t *s = handle_of(ctx, id);
  if (s) report(s, UV_EOF);
}

void kp__on_stream_reset(void *ctx, uint64_t id, uint64_t code) {
  kp_stream_t *s = handle_of(ctx, id);
  if (!s) return;
  s->reset_code = code;
  report(s, KP_ERESET);
}

void kp__on_stream_done(void *ctx, uint64_t id, void *user) {
  (void)ctx, (void)id;
  kp_stream_t *s = user;
  if (s && s->closing && !s->writes_pending) kp__ep_queue_work(s);
}

void kp__on_write_done(void *ctx, kp_swrite_t *w, int status) {
  (void)ctx;
  kp_write_t *req = (kp_write_t *)((char *)w - offsetof(kp_write_t, private_));
  kp_stream_t *s = req->stream;
  size_t len = (size_t)(w->end - w->start);
  s->queued -= len;
  s->writes_pending--;
  if (req->cb) req->cb(req, status);
  if (s->full && s->queued <= high_water(s->conn) / 2) {
    s->full = false;
    if (s->drain_cb && !s->closing) s->drain_cb(s);
  }
  if (s->closing && !s->writes_pending) kp__ep_queue_work(s);
}

void kp__streams_conn_over(kp_conn_t *conn, int status) {
  for (kp_stream_t *s = conn->streams, *next; s; s = next) {
    next = s->next;
    report(s, status);
    if (s->closing) kp__ep_queue_work(s);
  }
}

/* ---- Deferred work ------------------------------------------------------------------ */

void kp__stream_work(kp_stream_t *s) {
  kp_conn_t *conn = s->conn;
  if (s->reset_wanted && !conn->over) {
    s->reset_wanted = false;
    kp_sconn_stream_reset(conn->sc, s->id, s->reset_wanted_code);
  }
  if (s->closing && !s->close_started) {
    s->close_started = true;
    s->reading = false;
    if (!conn->over) {
      /* Not ended: nobody will finish it. Ended: the data goes on to the
       * peer; we only stop listening. */
      if (!s->ended)
        kp_sconn_stream_reset(conn->sc, s->id, 0);
      else
        kp_sconn_stream_stop(conn->sc, s->id, 0);
    }
  }
  if (s->closing) {
    /* The last write callback requeues us; so may the reset above. */
    if (s->writes_pending || s->in_work) return;
    /* Nothing may queue it again while the callback runs: it is going. */
    s->in_work = true;
    if (s->close_cb) s->close_cb(s);
    free_handle(s);
    return;
  }
  /* A status that waited for reading to start. */
  if (s->reading && s->pending_status) {
    int status = s->pending_status;
    s->pending_status = 0;
    report(s, status);
  }
}

/* ---- The API -------------------------------------------------------------------------- */

int kp_stream_open(kp_conn_t *conn, kp_stream_t **out) {
  *out = NULL;
  if (conn->over || conn->close_wanted) return UV_EPIPE;
  uint64_t id;
  int err = kp_sconn_stream_open(conn->sc, &id);
  if (err) return err;
  kp_stream_t *s = new_handle(conn, id);
  if (!s) {
    kp_sconn_stream_reset(conn->sc, id, 0);
    return UV_ENOMEM;
  }
  *out = s;
  return 0;
}

int kp_stream_read_start(kp_stream_t *s, kp_stream_read_cb cb) {
  if (!cb) return UV_EINVAL;
  if (s->closing || s->read_over) return UV_EPIPE;
  s->read_cb = cb;
  if (s->reading) return 0;
  s->reading = true;
  if (s->pending_status) {
    kp__ep_queue_work(s);
  } else if (!s->conn->over) {
    kp_sconn_stream_pause(s->conn->sc, s->id, false);
    kp__ep_mark_dirty(s->conn);
  }
  return 0;
}

int kp_stream_read_stop(kp_stream_t *s) {
  if (!s->reading) return 0;
  s->reading = false;
  if (!s->conn->over) kp_sconn_stream_pause(s->conn->sc, s->id, true);
  return 0;
}

int kp_stream_write(kp_write_t *req, kp_stream_t *s, const uv_buf_t bufs[], unsigned nbufs,
                    kp_write_cb cb) {
  if (s->closing || s->ended || s->conn->over || s->conn->close_wanted) return UV_EPIPE;
  req->stream = s;
  req->cb = cb;
  /* A uv_buf_t is a kp_buf_t (kadpunch.h asserts the layout). */
  int err =
      kp_sconn_stream_write(s->conn->sc, s->id, &req->private_, (const kp_buf_t *)bufs, nbufs);
  if (err) return err;
  s->queued += (size_t)(req->private_.end - req->private_.start);
  s->writes_pending++;
  if (s->queued >= high_water(s->conn)) s->full = true;
  kp__ep_mark_dirty(s->conn);
  return 0;
}

int kp_stream_end(kp_stream_t *s) {
  if (s->closing || s->conn->over) return UV_EPIPE;
  if (s->ended) return 0;
  int err = kp_sconn_stream_end(s->conn->sc, s->id);
  if (err) return err;
  s->ended = true;
  kp__ep_mark_dirty(s->conn);
  return 0;
}

void kp_stream_reset(kp_stream_t *s, uint64_t code) {
  if (s->closing || s->reset_wanted) return;
  s->reset_wanted = true;
  s->reset_wanted_code = code;
  s->ended = true; /* no more writes */
  kp__ep_queue_work(s);
}

void kp_stream_close(kp_stream_t *s, kp_stream_close_cb cb) {
  if (s->closing) return;
  s->closing = true;
  s->close_cb = cb;
  kp__ep_queue_work(s);
}

size_t kp_stream_write_queue_size(const kp_stream_t *s) {
  return s->queued;
}

bool kp_stream_is_writable(const kp_stream_t *s) {
  return !s->full && !s->ended && !s->closing && !s->conn->over;
}

void kp_stream_set_drain_cb(kp_stream_t *s, kp_stream_drain_cb cb) {
  s->drain_cb = cb;
}

uint64_t kp_stream_reset_code(const kp_stream_t *s) {
  return s->reset_code;
}

uint64_t kp_stream_id(const kp_stream_t *s) {
  return s->id;
}

kp_conn_t *kp_stream_conn(const kp_stream_t *s) {
  return s->conn;
}

void *kp_stream_get_data(const kp_stream_t *s) {
  return s->data;
}

void kp_stream_set_data(kp_stream_t *s, void *data) {
  s->data = data;
}

/* ---- Datagrams ------------------------------------------------------------------------ */

void kp__on_datagram(void *ctx, const uint8_t *data, size_t len) {
  kp_conn_t *conn = ctx;
  if (conn->cb.on_datagram && !conn->close_wanted) conn->cb.on_datagram(conn, data, len);
}

int kp_conn_datagram_send(kp_conn_t *conn, const void *data, size_t len) {
  if (conn->over || conn->close_wanted) return UV_EPIPE;
  int err = kp_sconn_datagram_send(conn->sc, data, len);
  if (!err) kp__ep_mark_dirty(conn);
  return err;
}

size_t kp_conn_datagram_max(const kp_conn_t *conn) {
  return conn->over ? 0 : kp_sconn_datagram_max(conn->sc);
}
