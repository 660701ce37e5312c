/* SPDX-License-Identifier: MIT */
/* Tunnel frames (relay/tunnel_frame.h) over a TCP connection in both
 * directions, with a bounded backlog and one write per loop turn. */
#include <string.h>

#include "common/alloc.h"
#include "relay/uv/tunnel.h"

/* ---- Frames over TCP --------------------------------------------------------------------- */

typedef struct write_req_s {
  uv_write_t req;
  kp_tunnel_io_t *io;
  size_t len;
  uint8_t data[];
} write_req_t;

static void io_handle_closed(uv_handle_t *h) {
  kp_tunnel_io_t *io = h->data;
  if (--io->handles) return;
  kp_free(io->out);
  io->out = NULL;
  if (io->on_closed) io->on_closed(io);
}

static void io_end(kp_tunnel_io_t *io, int status) {
  if (io->ended || io->closing) return;
  io->ended = true;
  uv_read_stop((uv_stream_t *)&io->tcp);
  if (io->on_end) io->on_end(io, status);
}

static int read_start(kp_tunnel_io_t *io);
static void process(kp_tunnel_io_t *io);

static void on_written(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  kp_tunnel_io_t *io = w->io;
  io->inflight -= w->len;
  kp_free(w);
  if (status) {
    io_end(io, status);
    return;
  }
  if (io->closing || io->out_len + io->inflight > KP_TUNNEL_BACKLOG / 2) return;
  io->full_since = 0;
  if (io->paused && !io->ended) {
    /* What was read before the pause first, then more. */
    io->paused = false;
    process(io);
    if (io->closing || io->ended) return;
    if (!io->paused) read_start(io);
  }
  if (io->full) {
    io->full = false;
    if (io->on_room) io->on_room(io);
  }
}

/* Once per loop turn: everything queued goes in one write. */
static void on_check(uv_check_t *h) {
  kp_tunnel_io_t *io = h->data;
  uv_idle_stop(&io->idle);
  uv_check_stop(&io->check);
  if (!io->out_len || io->ended || io->closing || io->hold) return;
  write_req_t *w = kp_malloc(sizeof(*w) + io->out_len);
  if (!w) {
    io->drops++;
    io->out_len = 0;
    return;
  }
  w->io = io;
  w->len = io->out_len;
  memcpy(w->data, io->out, io->out_len);
  io->inflight += io->out_len;
  io->out_len = 0;
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
  int err = uv_write(&w->req, (uv_stream_t *)&io->tcp, &b, 1, on_written);
  if (err) {
    io->inflight -= w->len;
    kp_free(w);
    io_end(io, err);
  }
}

static void on_idle(uv_idle_t *h) {
  (void)h; /* only keeps the poll from blocking until the check runs */
}

int kp_tunnel_io_init(uv_loop_t *loop, kp_tunnel_io_t *io) {
  memset(io, 0, sizeof(*io));
  int err = uv_tcp_init(loop, &io->tcp);
  if (err) return err;
  uv_idle_init(loop, &io->idle);
  uv_check_init(loop, &io->check);
  io->tcp.data = io->idle.data = io->check.data = io;
  io->handles = 3;
  uv_tcp_nodelay(&io->tcp, 1);
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  kp_tunnel_io_t *io = h->data;
  (void)hint;
  *buf = uv_buf_init((char *)io->in + io->in_len, (unsigned)(sizeof(io->in) - io->in_len));
}

/* Hands over the whole frames read so far (until a callback pauses us). */
static void process(kp_tunnel_io_t *io) {
  size_t off = 0, used;
  kp_tunnel_frame_t f;
  int r = 0;
  /* Frames that each make us answer stop being read once our answers
   * back up: the peer's own sending then stalls in its socket. */
  while (!io->paused &&
         (r = kp_tunnel_frame_decode(io->in + off, io->in_len - off, &f, &used)) == 1) {
    off += used;
    io->frames_in++;
    if (!io->on_frame(io, &f) || io->closing || io->ended) return;
  }
  if (r < 0) {
    io_end(io, UV_EPROTO);
    return;
  }
  memmove(io->in, io->in + off, io->in_len - off);
  io->in_len -= off;
  if (io->paused) uv_read_stop((uv_stream_t *)&io->tcp);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kp_tunnel_io_t *io = s->data;
  (void)buf;
  if (n < 0) {
    io_end(io, (int)n);
    return;
  }
  io->in_len += (size_t)n;
  process(io);
}

static int read_start(kp_tunnel_io_t *io) {
  return uv_read_start((uv_stream_t *)&io->tcp, on_alloc, on_read);
}

int kp_tunnel_io_accept(kp_tunnel_io_t *io, uv_stream_t *server, kp_addr_t *peer) {
  struct sockaddr_storage ss;
  int slen = sizeof(ss);
  int err = uv_accept(server, (uv_stream_t *)&io->tcp);
  if (!err) err = uv_tcp_getpeername(&io->tcp, (struct sockaddr *)&ss, &slen);
  if (!err) err = kp_addr_from_sockaddr(peer, (struct sockaddr *)&ss);
  return err;
}

static void on_refused_closed(uv_handle_t *h) {
  kp_free(h);
}

void kp_tunnel_refuse(uv_loop_t *loop, uv_stream_t *server) {
  uv_tcp_t *t = kp_malloc(sizeof(*t));
  if (!t || uv_tcp_init(loop, t)) {
    kp_free(t);
    return;
  }
  uv_accept(server, (uv_stream_t *)t);
  uv_close((uv_handle_t *)t, on_refused_closed);
}

int kp_tunnel_io_start(kp_tunnel_io_t *io) {
  return read_start(io);
}

bool kp_tunnel_io_has_room(const kp_tunnel_io_t *io, size_t len) {
  return io->out_len + io->inflight + len <= KP_TUNNEL_BACKLOG;
}

bool kp_tunnel_io_stalled(const kp_tunnel_io_t *io, uint64_t stall_ms) {
  return io->overflow || (io->full_since && uv_now(io->tcp.loop) - io->full_since >= stall_ms);
}

/* Our backlog is past half: read nothing more until it drains. */
static void backlog_grew(kp_tunnel_io_t *io) {
  if (io->out_len + io->inflight <= KP_TUNNEL_BACKLOG / 2) return;
  io->paused = true;
  if (!io->full_since) io->full_since = uv_now(io->tcp.loop) | 1;
}

bool kp_tunnel_io_send(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f) {
  if (io->ended || io->closing) return false;
  /* Control frames may use a little more than data (a lost CLOSE would
   * orphan an allocation), but not without bound: beyond that the peer is
   * not reading, and the link is over. */
  bool control = f->type != KP_TUNNEL_DATA;
  size_t limit = KP_TUNNEL_BACKLOG + (control ? KP_TUNNEL_CONTROL_SLACK : 0);
  if (io->out_len + io->inflight + KP_TUNNEL_FRAME_MAX > limit) {
    io->full = true;
    io->drops++;
    if (!io->full_since) io->full_since = uv_now(io->tcp.loop) | 1;
    if (control) io->overflow = true;
    return false;
  }
  if (io->out_cap - io->out_len < KP_TUNNEL_FRAME_MAX) {
    size_t cap = io->out_cap ? io->out_cap * 2 : 64 * 1024;
    uint8_t *p = kp_realloc(io->out, cap);
    if (!p) {
      io->drops++;
      return false;
    }
    io->out = p;
    io->out_cap = cap;
  }
  size_t n = kp_tunnel_frame_encode(f, io->out + io->out_len);
  if (!n) return false;
  if (!io->out_len) {
    uv_idle_start(&io->idle, on_idle);
    uv_check_start(&io->check, on_check);
  }
  io->out_len += n;
  io->frames_out++;
  backlog_grew(io);
  return true;
}

void kp_tunnel_io_release(kp_tunnel_io_t *io) {
  io->hold = false;
  if (!io->out_len) return;
  uv_idle_start(&io->idle, on_idle);
  uv_check_start(&io->check, on_check);
}

void kp_tunnel_io_close(kp_tunnel_io_t *io, void (*cb)(kp_tunnel_io_t *io)) {
  if (io->closing) return;
  io->closing = true;
  io->on_closed = cb;
  uv_close((uv_handle_t *)&io->tcp, io_handle_closed);
  uv_close((uv_handle_t *)&io->idle, io_handle_closed);
  uv_close((uv_handle_t *)&io->check, io_handle_closed);
}
