/* SPDX-License-Identifier: MIT */
/* Endpoints and connections: the socket, the table of connections, the
 * send path and the timers (see endpoint.h). Streams are in stream_api.c. */
#include "stream/uv/endpoint.h"

#include <sodium.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "stream/stream_frame.h"

/* Socket buffers big enough for a few milliseconds at full speed: a
 * smaller receive buffer drops bursts before we read them. */
#define EP_SOCKET_BUFFER (4 << 20)

uint64_t kp__ep_now(void) {
  return uv_hrtime() / 1000;
}

static void flush(kp_endpoint_t *ep);
static void maybe_free_endpoint(kp_endpoint_t *ep);
static void on_check(uv_check_t *h);

/* ---- Scheduling ---------------------------------------------------------------- */

static void on_idle(uv_idle_t *h) {
  (void)h; /* only here so the loop polls without blocking */
}

static void schedule(kp_endpoint_t *ep) {
  if (ep->scheduled || ep->handles_closing) return;
  ep->scheduled = true;
  uv_check_start(&ep->check, on_check);
  uv_idle_start(&ep->idle, on_idle);
}

void kp__ep_mark_dirty(kp_conn_t *conn) {
  kp_endpoint_t *ep = conn->ep;
  if (!conn->dirty) {
    conn->dirty = true;
    conn->dirty_next = NULL;
    if (ep->dirty_tail)
      ep->dirty_tail->dirty_next = conn;
    else
      ep->dirty_head = conn;
    ep->dirty_tail = conn;
  }
  schedule(ep);
}

void kp__ep_queue_work(kp_stream_t *s) {
  kp_endpoint_t *ep = s->conn->ep;
  if (!s->in_work) {
    s->in_work = true;
    s->work_next = NULL;
    if (ep->work_tail)
      ep->work_tail->work_next = s;
    else
      ep->work_head = s;
    ep->work_tail = s;
  }
  kp__ep_mark_dirty(s->conn);
}

static void run_work(kp_endpoint_t *ep) {
  while (ep->work_head) {
    kp_stream_t *s = ep->work_head;
    ep->work_head = s->work_next;
    if (!ep->work_head) ep->work_tail = NULL;
    s->in_work = false;
    kp__stream_work(s);
  }
}

static void teardown(kp_endpoint_t *ep);

static void on_check(uv_check_t *h) {
  kp_endpoint_t *ep = h->data;
  uv_check_stop(&ep->check);
  uv_idle_stop(&ep->idle);
  ep->scheduled = false;
  /* Deferred stream work first: it may make more to send. */
  run_work(ep);
  if (ep->close_requested && !ep->closing) {
    teardown(ep);
    run_work(ep);
  }
  flush(ep);
}

/* ---- The table of connections ------------------------------------------------------ */

static size_t bucket_of(const kp_endpoint_t *ep, uint64_t id) {
  return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 40) & (ep->bucket_count - 1);
}

static kp_conn_t *find_conn(const kp_endpoint_t *ep, uint64_t id) {
  if (!ep->bucket_count) return NULL;
  for (kp_conn_t *c = ep->buckets[bucket_of(ep, id)]; c; c = c->hnext)
    if (c->local_id == id) return c;
  return NULL;
}

static int insert_conn(kp_endpoint_t *ep, kp_conn_t *conn) {
  if (ep->conn_count >= ep->bucket_count) {
    size_t n = ep->bucket_count ? ep->bucket_count * 2 : 16;
    kp_conn_t **b = kp_calloc(n, sizeof(*b));
    if (!b) return UV_ENOMEM;
    kp_conn_t **old = ep->buckets;
    size_t old_count = ep->bucket_count;
    ep->buckets = b;
    ep->bucket_count = n;
    for (size_t i = 0; i < old_count; i++) {
      for (kp_conn_t *c = old[i], *next; c; c = next) {
        next = c->hnext;
        size_t k = bucket_of(ep, c->local_id);
        c->hnext = b[k];
        b[k] = c;
      }
    }
    kp_free(old);
  }
  size_t k = bucket_of(ep, conn->local_id);
  conn->hnext = ep->buckets[k];
  ep->buckets[k] = conn;
  ep->conn_count++;
  return 0;
}

static void remove_conn(kp_endpoint_t *ep, kp_conn_t *conn) {
  for (kp_conn_t **p = &ep->buckets[bucket_of(ep, conn->local_id)]; *p; p = &(*p)->hnext) {
    if (*p == conn) {
      *p = conn->hnext;
      ep->conn_count--;
      return;
    }
  }
}

/* ---- Sending ------------------------------------------------------------------------ */

static void on_writable(kp_udp_t *udp);

/* Hands the queued datagrams to the kernel; keeps what it would not take. */
static void send_out(kp_endpoint_t *ep) {
  if (!ep->nout) return;
  unsigned sent = kp_udp_send_datagrams(ep->udp, ep->out, ep->nout);
  if (sent == ep->nout) {
    ep->nout = 0;
    return;
  }
  /* The socket buffer is full: move the rest to the front and wait. */
  for (unsigned i = sent, j = 0; i < ep->nout; i++, j++) {
    uint8_t *slot = ep->tx + (size_t)j * KP_UDP_MAX_DATAGRAM;
    memmove(slot, ep->out[i].data, ep->out[i].len);
    ep->out[j] = ep->out[i];
    ep->out[j].data = slot;
  }
  ep->nout -= sent;
  ep->blocked = true;
  ep->udp->writable_data = ep;
  kp_udp_want_writable(ep->udp, on_writable);
}

static void on_writable(kp_udp_t *udp) {
  kp_endpoint_t *ep = udp->writable_data;
  ep->blocked = false;
  send_out(ep);
  if (!ep->blocked) flush(ep);
}

static void on_timer(uv_timer_t *t);

/* ---- Fine timers --------------------------------------------------------------------- */

/* libuv's timers count whole milliseconds. On a fast path that is many
 * round trips: a loss timer due in 50 us would wait 1 ms. Deadlines closer
 * than FINE_HORIZON_US go to one timerfd per endpoint instead, armed to
 * the microsecond; connections waiting on it are on the fine list. */
#define FINE_HORIZON_US 2000

static void fine_remove(kp_conn_t *conn) {
  if (!conn->in_fine) return;
  kp_endpoint_t *ep = conn->ep;
  for (kp_conn_t **p = &ep->fine_head; *p; p = &(*p)->fine_next) {
    if (*p == conn) {
      *p = conn->fine_next;
      break;
    }
  }
  conn->in_fine = false;
}

static void fine_arm(kp_endpoint_t *ep) {
  uint64_t at = UINT64_MAX;
  for (kp_conn_t *c = ep->fine_head; c; c = c->fine_next)
    if (c->fine_at < at) at = c->fine_at;
  if (at == ep->fine_armed) return;
  ep->fine_armed = at;
  struct itimerspec its;
  memset(&its, 0, sizeof(its));
  if (at != UINT64_MAX) {
    /* uv_hrtime() is CLOCK_MONOTONIC, like the timerfd. 0 disarms, so
     * never ask for it. */
    its.it_value.tv_sec = (time_t)(at / 1000000);
    its.it_value.tv_nsec = (long)(at % 1000000) * 1000 + 1;
  }
  timerfd_settime(ep->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_fine(uv_poll_t *h, int status, int events) {
  kp_endpoint_t *ep = h->data;
  (void)status, (void)events;
  uint64_t expirations;
  if (read(ep->tfd, &expirations, sizeof(expirations)) < 0) { /* spurious wakeup */
  }
  ep->fine_armed = UINT64_MAX;
  uint64_t now = kp__ep_now();
  for (kp_conn_t **p = &ep->fine_head; *p;) {
    kp_conn_t *c = *p;
    if (c->fine_at > now) {
      p = &c->fine_next;
      continue;
    }
    *p = c->fine_next;
    c->in_fine = false;
    kp_sconn_tick(c->sc, now);
    kp__ep_mark_dirty(c);
  }
  fine_arm(ep);
  flush(ep);
}

/* Sets the connection's timer to its next deadline. */
static void arm_timer(kp_conn_t *conn, uint64_t now) {
  kp_endpoint_t *ep = conn->ep;
  uint64_t at = kp_sconn_next_deadline(conn->sc);
  if (at == UINT64_MAX) {
    uv_timer_stop(&conn->timer);
    fine_remove(conn);
    return;
  }
  if (ep->tfd >= 0 && at < now + FINE_HORIZON_US) {
    uv_timer_stop(&conn->timer);
    conn->fine_at = at;
    if (!conn->in_fine) {
      conn->in_fine = true;
      conn->fine_next = ep->fine_head;
      ep->fine_head = conn;
    }
    if (at < ep->fine_armed) fine_arm(ep);
    return;
  }
  fine_remove(conn);
  /* Round up: early would only find nothing to do. */
  uv_timer_start(&conn->timer, on_timer, at <= now ? 0 : (at - now + 999) / 1000, 0);
}

static void release_conn(kp_conn_t *conn);

/* Builds and queues every datagram conn may send now. false: the socket
 * is full (conn still has more). */
static bool serve(kp_endpoint_t *ep, kp_conn_t *conn, uint64_t now) {
  if (conn->close_wanted && !kp_sconn_is_closed(conn->sc)) {
    conn->close_wanted = false;
    kp_sconn_close(conn->sc, conn->close_code, "");
  }
  for (;;) {
    if (ep->nout == KP_EP_TX_SLOTS) {
      send_out(ep);
      if (ep->blocked) return false;
    }
    uint8_t *slot = ep->tx + (size_t)ep->nout * KP_UDP_MAX_DATAGRAM;
    kp_udp_out_t *o = &ep->out[ep->nout];
    o->len = kp_sconn_write_datagram(conn->sc, slot, KP_UDP_MAX_DATAGRAM, &o->to, now);
    if (!o->len) break;
    o->data = slot;
    ep->nout++;
  }
  return true;
}

static void flush(kp_endpoint_t *ep) {
  if (ep->flushing || ep->blocked) return;
  ep->flushing = true;
  uint64_t now = kp__ep_now();
  while (ep->dirty_head) {
    kp_conn_t *conn = ep->dirty_head;
    if (!serve(ep, conn, now)) break; /* stays first in line */
    ep->dirty_head = conn->dirty_next;
    if (!ep->dirty_head) ep->dirty_tail = NULL;
    conn->dirty = false;
    if (conn->over) {
      uv_timer_stop(&conn->timer);
      fine_remove(conn);
      if (conn->closed_by_user && !conn->stream_handles) release_conn(conn);
    } else {
      arm_timer(conn, now);
    }
  }
  send_out(ep);
  ep->flushing = false;
}

static void on_timer(uv_timer_t *t) {
  kp_conn_t *conn = t->data;
  kp_sconn_tick(conn->sc, kp__ep_now());
  kp__ep_mark_dirty(conn);
  flush(conn->ep);
}

/* ---- Receiving ---------------------------------------------------------------------- */

static void on_recv(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  kp__endpoint_input(udp->data, from, data, len);
}

bool kp__endpoint_deliver(kp_endpoint_t *ep, const kp_addr_t *from, uint8_t *data, size_t len) {
  kp_conn_t *conn = find_conn(ep, kp_stream_packet_cid(data));
  if (!conn || conn->over) return false;
  kp_sconn_read_datagram(conn->sc, from, data, len, kp__ep_now());
  kp__ep_mark_dirty(conn);
  return true;
}

void kp__endpoint_input(kp_endpoint_t *ep, const kp_addr_t *from, uint8_t *data, size_t len) {
  if (!kp_stream_is_packet(data, len)) {
    ep->drops_other++;
    return;
  }
  if (!kp__endpoint_deliver(ep, from, data, len)) ep->drops_unknown++;
}

/* ---- Connections ---------------------------------------------------------------------- */

static void tell_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  if (conn->cb.on_path) conn->cb.on_path(conn, ev);
}

/* The connection moved: the owner's move (kp__conn_set_path, with its
 * reason), or the peer's own validated migration. */
static void on_sconn_path(void *ctx, const kp_addr_t *remote) {
  kp_conn_t *conn = ctx;
  kp_path_event_t ev = {.why = KP_PATH_MIGRATED, .direct = true, .remote = *remote};
  if (conn->moving) {
    ev = conn->move;
    conn->moving = false;
  }
  tell_path(conn, &ev);
}

static void on_sconn_path_state(void *ctx, bool alive) {
  kp_conn_t *conn = ctx;
  if (conn->hooks.path_state) conn->hooks.path_state(conn, alive, conn->hooks_ctx);
  /* Alive again because the owner moved it: the move says so. */
  if (conn->moving || conn->over) return;
  kp_path_event_t ev = {.why = alive ? KP_PATH_BACK : KP_PATH_LOST};
  ev.remote = *kp_sconn_remote(conn->sc);
  ev.direct = !conn->relayed;
  if (conn->relayed) ev.relay = ev.remote;
  tell_path(conn, &ev);
}

/* The owner hears of the end once, whichever way it comes. */
static void ended(kp_conn_t *conn) {
  void (*fn)(kp_conn_t *, void *) = conn->hooks.ended;
  memset(&conn->hooks, 0, sizeof(conn->hooks));
  if (fn) fn(conn, conn->hooks_ctx);
}

static void on_sconn_closed(void *ctx, int status, uint64_t code) {
  kp_conn_t *conn = ctx;
  conn->over = true;
  ended(conn);
  kp__streams_conn_over(conn, status ? status : UV_ECANCELED);
  if (conn->cb.on_close) conn->cb.on_close(conn, status, code);
  kp__ep_mark_dirty(conn); /* freed from the check phase, never from here */
}

void kp_conn_options_init(kp_conn_options_t *opts) {
  memset(opts, 0, sizeof(*opts));
}

int kp_conn_open(kp_endpoint_t *ep, const kp_conn_options_t *opts,
                 const kp_conn_callbacks_t *callbacks, kp_conn_t **out) {
  *out = NULL;
  if (ep->close_requested) return UV_EINVAL;
  if (find_conn(ep, opts->local_id)) return UV_EEXIST;
  kp_sconn_config_t cfg;
  kp_sconn_config_defaults(&cfg);
  cfg.rng = kp_rng_system();
  cfg.initiator = opts->initiator;
  cfg.local_cid = opts->local_id;
  cfg.remote_cid = opts->remote_id;
  if (opts->cipher) cfg.cipher = opts->cipher;
  cfg.cc = opts->cc;
  memcpy(cfg.tx_key, opts->tx_key, 32);
  memcpy(cfg.rx_key, opts->rx_key, 32);
  cfg.remote = opts->remote;
  if (opts->mtu) cfg.mtu = opts->mtu;
  cfg.pmtu_probe = !opts->no_mtu_probe;
  if (opts->stream_window) cfg.stream_window = opts->stream_window;
  if (opts->conn_window) cfg.conn_window = opts->conn_window;
  if (opts->stream_window_max) cfg.stream_window_max = opts->stream_window_max;
  if (opts->conn_window_max) cfg.conn_window_max = opts->conn_window_max;
  if (opts->max_streams) cfg.max_streams = opts->max_streams;
  if (opts->idle_timeout_ms) cfg.idle_timeout_ms = opts->idle_timeout_ms;
  if (opts->keepalive_ms) cfg.keepalive_ms = opts->keepalive_ms;
  if (opts->path_dead_ms) cfg.path_dead_ms = opts->path_dead_ms;
  cfg.resume_grace_ms = opts->resume_grace_ms;
  cfg.rx_budget = ep->rx_budget;
  if (opts->remote.family && opts->remote.family != ep->udp->local.family) return KP_EBADADDR;

  kp_conn_t *conn = kp_calloc(1, sizeof(*conn));
  if (!conn) return UV_ENOMEM;
  conn->ep = ep;
  conn->local_id = opts->local_id;
  conn->high_water = opts->high_water ? opts->high_water : 4u << 20;
  if (callbacks) conn->cb = *callbacks;
  kp_sconn_events_t ev = {.stream_opened = kp__on_stream_opened,
                          .stream_data = kp__on_stream_data,
                          .stream_eof = kp__on_stream_eof,
                          .stream_reset = kp__on_stream_reset,
                          .stream_done = kp__on_stream_done,
                          .write_done = kp__on_write_done,
                          .datagram = conn->cb.on_datagram ? kp__on_datagram : NULL,
                          .path_changed = on_sconn_path,
                          .path_state = on_sconn_path_state,
                          .closed = on_sconn_closed,
                          .ctx = conn};
  int err = kp_sconn_new(&cfg, &ev, kp__ep_now(), &conn->sc);
  sodium_memzero(&cfg, sizeof(cfg));
  if (!err && (err = insert_conn(ep, conn))) kp_sconn_free(conn->sc);
  if (err) {
    kp_free(conn);
    return err;
  }
  uv_timer_init(ep->loop, &conn->timer);
  conn->timer.data = conn;
  /* Bulk receive pays off from the first connection on. */
  kp_udp_enable_gro(ep->udp);
  kp__ep_mark_dirty(conn);
  *out = conn;
  return 0;
}

void kp_conn_close(kp_conn_t *conn, uint64_t code) {
  if (conn->closed_by_user) return;
  conn->closed_by_user = true;
  if (!conn->over) {
    conn->close_wanted = true;
    conn->close_code = code;
  }
  kp__ep_mark_dirty(conn); /* over already: released from the check phase */
}

kp_conn_t *kp__endpoint_find(const kp_endpoint_t *ep, uint64_t local_id) {
  kp_conn_t *conn = find_conn(ep, local_id);
  return conn && !conn->over ? conn : NULL;
}

void kp__conn_pin_path(kp_conn_t *conn) {
  kp_sconn_pin_path(conn->sc);
}

void kp__conn_set_callbacks(kp_conn_t *conn, const kp_conn_callbacks_t *callbacks) {
  memset(&conn->cb, 0, sizeof(conn->cb));
  if (callbacks) conn->cb = *callbacks;
  kp_sconn_set_datagram_cb(conn->sc, conn->cb.on_datagram ? kp__on_datagram : NULL);
}

void kp__conn_set_hooks(kp_conn_t *conn, const kp_conn_hooks_t *hooks, void *ctx) {
  if (hooks) {
    conn->hooks = *hooks;
  } else {
    memset(&conn->hooks, 0, sizeof(conn->hooks));
  }
  conn->hooks_ctx = ctx;
}

/* Moves conn's streams' deferred work from one endpoint's list to the
 * other's, in order. */
static void move_work(kp_endpoint_t *from, kp_endpoint_t *to, kp_conn_t *conn) {
  kp_stream_t **p = &from->work_head, *last = NULL;
  while (*p) {
    kp_stream_t *s = *p;
    if (s->conn != conn) {
      last = s;
      p = &s->work_next;
      continue;
    }
    *p = s->work_next;
    s->work_next = NULL;
    if (to->work_tail)
      to->work_tail->work_next = s;
    else
      to->work_head = s;
    to->work_tail = s;
  }
  from->work_tail = last;
}

static void undirty(kp_endpoint_t *from, kp_conn_t *conn) {
  if (!conn->dirty) return;
  kp_conn_t **p = &from->dirty_head, *last = NULL;
  while (*p) {
    if (*p == conn) {
      *p = conn->dirty_next;
      continue;
    }
    last = *p;
    p = &(*p)->dirty_next;
  }
  from->dirty_tail = last;
  conn->dirty = false;
}

int kp__conn_move(kp_conn_t *conn, kp_endpoint_t *to) {
  kp_endpoint_t *from = conn->ep;
  if (from == to) return 0;
  if (conn->over || conn->released || to->close_requested || from->flushing) return UV_EINVAL;
  if (find_conn(to, conn->local_id)) return UV_EEXIST;
  conn->ep = to;
  int err = insert_conn(to, conn);
  conn->ep = from;
  if (err) return err;
  undirty(from, conn);
  move_work(from, to, conn);
  fine_remove(conn);
  remove_conn(from, conn);
  conn->ep = to;
  kp_udp_enable_gro(to->udp);
  kp__ep_mark_dirty(conn);
  return 0;
}

void kp__endpoint_set_rx_budget(kp_endpoint_t *ep, kp_rx_budget_t *budget) {
  ep->rx_budget = budget;
}

void kp_conn_set_remote(kp_conn_t *conn, const kp_addr_t *remote) {
  kp_path_event_t ev = {.why = KP_PATH_MIGRATED, .direct = true, .remote = *remote};
  kp__conn_set_path(conn, &ev);
}

void kp__conn_set_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  if (conn->over) return;
  conn->move = *ev;
  conn->moving = true;
  conn->relayed = !ev->direct;
  kp_sconn_set_remote(conn->sc, &ev->remote, kp__ep_now());
  /* The same address, on another socket: no move for the transport, one
   * for the user. */
  if (conn->moving) {
    conn->moving = false;
    tell_path(conn, ev);
  }
  kp__ep_mark_dirty(conn);
}

const char *kp_path_why_str(kp_path_why_t why) {
  switch (why) {
    case KP_PATH_LOST: return "path lost";
    case KP_PATH_BACK: return "path back";
    case KP_PATH_DIRECT: return "upgraded to direct";
    case KP_PATH_REBOUND: return "rebound: a new direct path";
    case KP_PATH_TO_RELAY: return "direct path lost: back to the relay";
    case KP_PATH_RELAYED: return "path lost: moved to a relay";
    case KP_PATH_FAILOVER: return "relay lost: moved to another relay";
    case KP_PATH_MIGRATED: return "the peer moved";
  }
  return "?";
}

void kp_conn_stats(const kp_conn_t *conn, kp_conn_stats_t *out) {
  kp_sconn_stats(conn->sc, out);
}

void *kp_conn_get_data(const kp_conn_t *conn) {
  return conn->data;
}

void kp_conn_set_data(kp_conn_t *conn, void *data) {
  conn->data = data;
}

static void on_conn_timer_closed(uv_handle_t *h) {
  kp_conn_t *conn = h->data;
  kp_endpoint_t *ep = conn->ep;
  kp_sconn_free(conn->sc);
  kp_free(conn);
  ep->conns_closing--;
  maybe_free_endpoint(ep);
}

/* The connection is over and no stream handle refers to it: let it go. */
static void release_conn(kp_conn_t *conn) {
  if (conn->released) return;
  conn->released = true;
  /* Gone without an end seen (its endpoint closed): the owner still hears. */
  ended(conn);
  remove_conn(conn->ep, conn);
  conn->ep->conns_closing++; /* the endpoint outlives its timer's close */
  fine_remove(conn);
  uv_close((uv_handle_t *)&conn->timer, on_conn_timer_closed);
}

/* A stream handle went away (stream_api.c calls it through this). */
void kp__conn_handle_closed(kp_conn_t *conn);
void kp__conn_handle_closed(kp_conn_t *conn) {
  if (conn->over && conn->closed_by_user && !conn->stream_handles && !conn->dirty)
    release_conn(conn);
}

/* ---- Endpoints ------------------------------------------------------------------------- */

static void endpoint_init_handles(uv_loop_t *loop, kp_endpoint_t *ep);

int kp_endpoint_create(uv_loop_t *loop, const char *bind, kp_endpoint_t **out) {
  *out = NULL;
  kp_addr_t addr;
  int err = kp_addr_parse(&addr, bind);
  if (err) return err;
  kp_endpoint_t *ep = kp_calloc(1, sizeof(*ep));
  if (!ep) return UV_ENOMEM;
  ep->tx = kp_malloc((size_t)KP_EP_TX_SLOTS * KP_UDP_MAX_DATAGRAM);
  kp_udp_options_t uo = {EP_SOCKET_BUFFER, EP_SOCKET_BUFFER};
  if (!ep->tx) err = UV_ENOMEM;
  if (!err) err = kp_udp_init(loop, &ep->own_udp, &addr, &uo);
  if (err) {
    kp_free(ep->tx);
    kp_free(ep);
    return err;
  }
  ep->udp = &ep->own_udp;
  ep->udp->data = ep;
  endpoint_init_handles(loop, ep);
  kp_udp_recv_start(ep->udp, on_recv);
  *out = ep;
  return 0;
}

int kp__endpoint_attach(uv_loop_t *loop, kp_udp_t *udp, kp_endpoint_t **out) {
  *out = NULL;
  kp_endpoint_t *ep = kp_calloc(1, sizeof(*ep));
  if (ep) ep->tx = kp_malloc((size_t)KP_EP_TX_SLOTS * KP_UDP_MAX_DATAGRAM);
  if (!ep || !ep->tx) {
    if (ep) kp_free(ep);
    return UV_ENOMEM;
  }
  ep->udp = udp;
  ep->attached = true;
  kp_udp_enable_gro(udp); /* best effort: bulk receives get cheaper */
  endpoint_init_handles(loop, ep);
  *out = ep;
  return 0;
}

static void endpoint_init_handles(uv_loop_t *loop, kp_endpoint_t *ep) {
  ep->loop = loop;
  uv_check_init(loop, &ep->check);
  uv_idle_init(loop, &ep->idle);
  ep->check.data = ep->idle.data = ep;
  ep->uv_handles = 3;
  ep->fine_armed = UINT64_MAX;
  /* Without a timerfd, millisecond timers do (slower on fast paths). */
  ep->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep->tfd >= 0 && uv_poll_init(loop, &ep->tpoll, ep->tfd) == 0) {
    ep->tpoll.data = ep;
    uv_poll_start(&ep->tpoll, UV_READABLE, on_fine);
    ep->uv_handles++;
  } else if (ep->tfd >= 0) {
    close(ep->tfd);
    ep->tfd = -1;
  }
}

int kp_endpoint_local_addr(const kp_endpoint_t *ep, kp_addr_t *out) {
  *out = ep->udp->local;
  return 0;
}

void kp_endpoint_stats(const kp_endpoint_t *ep, kp_endpoint_stats_t *out) {
  memset(out, 0, sizeof(*out));
  const kp_udp_stats_t *u = &ep->udp->stats;
  out->packets_in = u->packets_in;
  out->packets_out = u->packets_out;
  out->bytes_in = u->bytes_in;
  out->bytes_out = u->bytes_out;
  out->gso_sends = u->gso_sends;
  out->gro_receives = u->gro_receives;
  out->send_drops = u->send_drops;
  out->drops_unknown = ep->drops_unknown;
  out->drops_other = ep->drops_other;
  out->conns = (unsigned)ep->conn_count;
}

static void on_ep_handle_closed(uv_handle_t *h) {
  kp_endpoint_t *ep = h->data;
  if (h == (uv_handle_t *)&ep->tpoll) {
    close(ep->tfd);
    ep->tfd = -1;
  }
  if (!--ep->uv_handles) {
    kp_free(ep->buckets);
    kp_free(ep->tx);
    kp_free(ep);
  }
}

/* A closing endpoint keeps its check handle (stream handles closed late
 * still get their callbacks from it) until the last connection is gone. */
static void maybe_free_endpoint(kp_endpoint_t *ep) {
  if (!ep->closing || ep->conn_count || ep->conns_closing || ep->handles_closing) return;
  ep->handles_closing = true;
  uv_close((uv_handle_t *)&ep->check, on_ep_handle_closed);
  uv_close((uv_handle_t *)&ep->idle, on_ep_handle_closed);
  if (ep->tfd >= 0) uv_close((uv_handle_t *)&ep->tpoll, on_ep_handle_closed);
}

static void udp_released(kp_endpoint_t *ep) {
  if (ep->close_cb) ep->close_cb(ep);
  on_ep_handle_closed((uv_handle_t *)&ep->check);
}

void kp_endpoint_close(kp_endpoint_t *ep, kp_endpoint_close_cb cb) {
  if (ep->close_requested) return;
  /* From the check phase: this may be called from any callback, even one
   * the state machine is in the middle of. */
  ep->close_requested = true;
  ep->close_cb = cb;
  schedule(ep);
}

static void on_udp_closed(kp_udp_t *udp) {
  udp_released(udp->data);
}

static void teardown(kp_endpoint_t *ep) {
  /* Tell every peer, in one last flush, then end the connections here. */
  uint64_t now = kp__ep_now();
  for (size_t i = 0; i < ep->bucket_count; i++) {
    for (kp_conn_t *c = ep->buckets[i]; c; c = c->hnext) {
      if (c->over) continue;
      kp_sconn_close(c->sc, 0, "endpoint closed");
      serve(ep, c, now);
    }
  }
  if (!ep->blocked) send_out(ep);
  ep->closing = true;
  for (size_t i = 0; i < ep->bucket_count; i++) {
    for (kp_conn_t *c = ep->buckets[i]; c; c = c->hnext) {
      if (!c->over) kp_sconn_abort(c->sc, UV_ECANCELED);
      c->closed_by_user = true; /* the endpoint's close covers them all */
      kp__ep_mark_dirty(c);     /* released from the check phase */
    }
  }
  /* Connections go as their stream handles do, from the check phase. */
  if (ep->attached) {
    /* Not ours to close: stop waiting on it and let its owner go on. */
    if (ep->udp->writable_data == ep) kp_udp_want_writable(ep->udp, NULL);
    udp_released(ep);
  } else {
    kp_udp_close(ep->udp, on_udp_closed);
  }
  ep->blocked = false; /* nothing waits for the socket any more */
  ep->nout = 0;
  maybe_free_endpoint(ep);
}
