/* SPDX-License-Identifier: MIT */
/* The peer's end of a tunnel to a relay (relay/tunnel.h): one TCP
 * connection, channels as virtual UDP sockets. */
#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "relay/uv/tunnel.h"

typedef struct channel_s {
  kp_udp_t *udp; /* NULL: free */
  bool closing;  /* kp_udp_close called: its callback is owed */
  bool refused;
} channel_t;

/* A lost connection is dialled again after 1, 2, 4 ... 30 s; the channels
 * are opened anew there (new allocations, so new addresses, which the DHT
 * learns as it would a NAT rebinding). */
#define REDIAL_FIRST_MS 1000
#define REDIAL_MAX_MS 30000

struct kp_tunnel_s {
  kp_tunnel_io_t io;
  uv_loop_t *loop;
  uv_connect_t connect;
  kp_addr_t relay;
  bool connected, down, close_wanted;
  bool io_live; /* io's handles are open (not closed for a redial) */
  uv_timer_t redial;
  unsigned redial_ms;
  uint64_t redials;
  channel_t ch[KP_TUNNEL_CHANNELS];
  uint16_t opened; /* OPEN frames queued before the connection was up: bit per channel */
  kp_tunnel_down_cb down_cb;
  void *arg;
  uv_idle_t reaper; /* reports closed channels on a later tick */
  bool reaper_open;
  uint64_t refused;
};

static kp_tunnel_t *of_io(kp_tunnel_io_t *io) {
  return (kp_tunnel_t *)((char *)io - offsetof(kp_tunnel_t, io));
}

static int channel_of(const kp_tunnel_t *t, const kp_udp_t *udp) {
  for (int i = 0; i < KP_TUNNEL_CHANNELS; i++)
    if (t->ch[i].udp == udp) return i;
  return -1;
}

static void redial_later(kp_tunnel_io_t *io);

static void go_down(kp_tunnel_t *t, int status) {
  if (t->down || t->close_wanted) return;
  t->down = true;
  t->connected = false;
  if (t->down_cb) t->down_cb(t, status, t->arg);
  /* The old connection's handles go first; the timer waits for them. */
  t->io_live = false;
  kp_tunnel_io_close(&t->io, redial_later);
}

/* ---- Virtual socket operations ------------------------------------------------------------- */

static unsigned ch_send(kp_udp_t *udp, const kp_udp_out_t *out, unsigned n) {
  kp_tunnel_t *t = udp->vctx;
  int c = channel_of(t, udp);
  if (c < 0 || t->down || t->ch[c].refused) return n; /* lost, as the network would */
  for (unsigned i = 0; i < n; i++) {
    kp_tunnel_frame_t f = {.type = KP_TUNNEL_DATA,
                           .channel = (uint16_t)c,
                           .addr = out[i].to,
                           .data = out[i].data,
                           .len = out[i].len};
    if (!kp_tunnel_io_has_room(&t->io, KP_TUNNEL_FRAME_MAX)) {
      t->io.full = true;
      return i;
    }
    kp_tunnel_io_send(&t->io, &f);
  }
  return n;
}

static void reap(uv_idle_t *h) {
  kp_tunnel_t *t = h->data;
  uv_idle_stop(h);
  for (int i = 0; i < KP_TUNNEL_CHANNELS; i++) {
    if (!t->ch[i].closing) continue;
    kp_udp_t *udp = t->ch[i].udp;
    t->ch[i] = (channel_t){0};
    kp_udp_virtual_closed(udp); /* may close more, or the tunnel */
  }
}

static void ch_close(kp_udp_t *udp) {
  kp_tunnel_t *t = udp->vctx;
  int c = channel_of(t, udp);
  if (c < 0) return;
  t->ch[c].closing = true;
  if (!t->down) {
    kp_tunnel_frame_t f = {.type = KP_TUNNEL_CLOSE, .channel = (uint16_t)c};
    kp_tunnel_io_send(&t->io, &f);
  }
  uv_idle_start(&t->reaper, reap);
}

static const kp_udp_vops_t channel_ops = {ch_send, ch_close};

/* ---- Frames from the relay ------------------------------------------------------------------- */

static bool on_frame(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f) {
  kp_tunnel_t *t = of_io(io);
  channel_t *ch = &t->ch[f->channel];
  if (!ch->udp || ch->closing) return true;
  switch (f->type) {
    case KP_TUNNEL_OPENED: ch->udp->local = f->addr; break;
    case KP_TUNNEL_REFUSED:
      ch->refused = true;
      t->refused++;
      break;
    case KP_TUNNEL_DATA:
      /* The receive callback may write into it (scratch), so a copy. */
      {
        uint8_t buf[KP_UDP_MAX_DATAGRAM];
        memcpy(buf, f->data, f->len);
        kp_udp_virtual_deliver(ch->udp, &f->addr, buf, f->len);
      }
      break;
    case KP_TUNNEL_CLOSE: ch->refused = true; break; /* the relay dropped it */
    default: break;
  }
  return !t->down;
}

static void on_end(kp_tunnel_io_t *io, int status) {
  go_down(of_io(io), status);
}

static void on_room(kp_tunnel_io_t *io) {
  kp_tunnel_t *t = of_io(io);
  for (int i = 0; i < KP_TUNNEL_CHANNELS; i++)
    if (t->ch[i].udp && !t->ch[i].closing) kp_udp_virtual_writable(t->ch[i].udp);
}

static void on_connected(uv_connect_t *req, int status) {
  kp_tunnel_t *t = req->data;
  if (t->close_wanted || status == UV_ECANCELED) return;
  if (status) {
    go_down(t, status);
    return;
  }
  t->connected = true;
  t->redial_ms = 0;
  kp_tunnel_io_release(&t->io);
  int err = kp_tunnel_io_start(&t->io);
  if (err) go_down(t, err);
}

/* A fresh connection: OPEN for every channel queued behind it. */
static int dial(kp_tunnel_t *t) {
  int err = kp_tunnel_io_init(t->loop, &t->io);
  if (err) return err;
  t->io_live = true;
  t->io.on_frame = on_frame;
  t->io.on_end = on_end;
  t->io.on_room = on_room;
  t->io.hold = true; /* frames wait for the connection */
  for (int i = 0; i < KP_TUNNEL_CHANNELS; i++) {
    if (!t->ch[i].udp || t->ch[i].closing) continue;
    t->ch[i].refused = false;
    kp_tunnel_frame_t f = {.type = KP_TUNNEL_OPEN, .channel = (uint16_t)i};
    kp_tunnel_io_send(&t->io, &f);
  }
  struct sockaddr_storage ss;
  kp_addr_to_sockaddr(&t->relay, &ss);
  t->connect.data = t;
  err = uv_tcp_connect(&t->connect, &t->io.tcp, (struct sockaddr *)&ss, on_connected);
  if (err) {
    t->io_live = false;
    kp_tunnel_io_close(&t->io, NULL);
  }
  return err;
}

static void on_redial(uv_timer_t *h) {
  kp_tunnel_t *t = h->data;
  if (t->close_wanted) return;
  t->down = false;
  t->redials++;
  int err = dial(t);
  if (err) {
    /* Not even a socket (out of descriptors?): later, as for a failure. */
    t->down = true;
    uv_timer_start(&t->redial, on_redial, t->redial_ms, 0);
  }
}

static void redial_later(kp_tunnel_io_t *io) {
  kp_tunnel_t *t = of_io(io);
  if (t->close_wanted) return;
  t->redial_ms = t->redial_ms ? t->redial_ms * 2 : REDIAL_FIRST_MS;
  if (t->redial_ms > REDIAL_MAX_MS) t->redial_ms = REDIAL_MAX_MS;
  uv_timer_start(&t->redial, on_redial, t->redial_ms, 0);
}

/* ---- API ------------------------------------------------------------------------------------ */

/* Closing: the reaper, the redial timer, then the connection if it is
 * open (kp_tunnel_io_close calls back when its handles are closed). */
static void on_io_closed(kp_tunnel_io_t *io) {
  kp_free(of_io(io));
}

static void on_timer_closed(uv_handle_t *h) {
  kp_tunnel_t *t = h->data;
  if (t->io_live || t->io.handles) {
    /* Open, or closing on its way to a redial: its callback frees us. */
    t->io.on_closed = on_io_closed;
    if (t->io_live) kp_tunnel_io_close(&t->io, on_io_closed);
    return;
  }
  kp_free(t);
}

static void on_reaper_closed(uv_handle_t *h) {
  kp_tunnel_t *t = h->data;
  uv_close((uv_handle_t *)&t->redial, on_timer_closed);
}

int kp_tunnel_new(uv_loop_t *loop, const kp_addr_t *relay, kp_tunnel_down_cb down, void *arg,
                  kp_tunnel_t **out) {
  *out = NULL;
  kp_tunnel_t *t = kp_calloc(1, sizeof(*t));
  if (!t) return UV_ENOMEM;
  t->loop = loop;
  t->relay = *relay;
  t->down_cb = down;
  t->arg = arg;
  uv_idle_init(loop, &t->reaper);
  uv_timer_init(loop, &t->redial);
  t->reaper.data = t->redial.data = t;
  t->reaper_open = true;
  int err = dial(t);
  if (err) {
    t->close_wanted = true;
    uv_close((uv_handle_t *)&t->reaper, on_reaper_closed);
    return err;
  }
  *out = t;
  return 0;
}

int kp_tunnel_socket(kp_tunnel_t *t, kp_udp_t *udp) {
  for (int i = 0; i < KP_TUNNEL_CHANNELS; i++) {
    if (t->ch[i].udp) continue;
    kp_addr_t local = {0};
    local.family = t->relay.family;
    kp_udp_init_virtual(t->loop, udp, &channel_ops, t, &local);
    t->ch[i] = (channel_t){.udp = udp};
    /* Queued until the connection is up (the write waits for it); while
     * it is down, the next dial opens it. */
    kp_tunnel_frame_t f = {.type = KP_TUNNEL_OPEN, .channel = (uint16_t)i};
    if (t->io_live) kp_tunnel_io_send(&t->io, &f);
    return 0;
  }
  return UV_EMFILE;
}

const kp_addr_t *kp_tunnel_relay(const kp_tunnel_t *t) {
  return &t->relay;
}

void kp_tunnel_stats(const kp_tunnel_t *t, kp_tunnel_stats_t *out) {
  memset(out, 0, sizeof(*out));
  out->frames_in = t->io.frames_in;
  out->frames_out = t->io.frames_out;
  out->drops = t->io.drops;
  out->refused = t->refused;
  out->redials = t->redials;
  out->connected = t->connected && !t->down;
  for (int i = 0; i < KP_TUNNEL_CHANNELS; i++) out->channels += t->ch[i].udp != NULL;
}

void kp_tunnel_close(kp_tunnel_t *t) {
  if (t->close_wanted) return;
  t->close_wanted = true;
  uv_timer_stop(&t->redial);
  uv_close((uv_handle_t *)&t->reaper, on_reaper_closed);
}
