/* SPDX-License-Identifier: MIT */
/* The data plane's libuv glue (the third layer, docs/architecture.md): an endpoint owns
 * a UDP socket and the connections on it, feeds each connection's state
 * machine (stream_conn.h) with datagrams and the time, and sends what they
 * produce in GSO batches.
 *
 * When things happen:
 * - a datagram arrives: its connection reads it at once; the connection is
 *   marked dirty.
 * - the application writes, ends, resets, closes: the request is recorded
 *   and the connection marked dirty.
 * - dirty connections are served once per loop iteration, in a uv_check
 *   callback (a uv_idle keeps the poll from blocking meanwhile): deferred
 *   requests run, every datagram the connection may send now is built into
 *   the endpoint's transmit buffer, and runs of them go to the kernel in
 *   one sendmmsg of GSO sends. So a burst of incoming acks, or many small
 *   writes, cost one round of sends.
 * - each connection has one timer, at its state machine's next deadline:
 *   a libuv timer, or for deadlines under 2 ms the endpoint's timerfd,
 *   which keeps microseconds (libuv rounds to milliseconds).
 *
 * Callbacks into the application never come from inside a call it made
 * (write callbacks after a reset or close come in the check phase). */
#ifndef KP_STREAM_ENDPOINT_H
#define KP_STREAM_ENDPOINT_H

#include "common/uv/udp.h"
#include "kadpunch.h"
#include "stream/stream_conn.h"

/* Datagrams built before a send: 64 x 1500 bytes. */
#define KP_EP_TX_SLOTS 64

struct kp_stream_s {
  kp_conn_t *conn;
  uint64_t id;
  kp_stream_t *prev, *next; /* the connection's handles */
  kp_stream_t *work_next;   /* deferred work (reset, close, a status to report) */
  bool in_work;
  kp_stream_read_cb read_cb;
  kp_stream_drain_cb drain_cb;
  kp_stream_close_cb close_cb;
  void *data;
  size_t queued; /* bytes written, not yet acknowledged */
  unsigned writes_pending;
  bool reading;
  bool ended;     /* kp_stream_end called */
  bool full;      /* reached the high-water mark, drain owed */
  bool read_over; /* EOF or an error was reported */
  bool reset_wanted, closing, close_started;
  uint64_t reset_wanted_code;
  int pending_status;  /* EOF or error to report once reading */
  uint64_t reset_code; /* the peer's */
};

/* What the owner of a connection hears besides its user: ended once, when
 * conn ends or is freed (before on_close); path_state when its path stops
 * or starts carrying again (kp_sconn_events_t.path_state). */
typedef struct kp_conn_hooks_s {
  void (*ended)(kp_conn_t *conn, void *ctx);
  void (*path_state)(kp_conn_t *conn, bool alive, void *ctx);
} kp_conn_hooks_t;

struct kp_conn_s {
  kp_endpoint_t *ep;
  kp_sconn_t *sc;
  uint64_t local_id;
  kp_conn_t *hnext; /* the endpoint's table */
  kp_conn_t *dirty_next;
  bool dirty;
  uv_timer_t timer;
  kp_conn_callbacks_t cb;
  void *data;
  /* The owner's hooks (the node: a server counting its clients, the
   * connection's paths). */
  kp_conn_hooks_t hooks;
  void *hooks_ctx;
  /* A move the owner is making (kp__conn_set_path), told to the user when
   * the transport takes it; and whether it runs through a relay now. */
  kp_path_event_t move;
  bool moving, relayed;
  size_t high_water;
  kp_stream_t *streams;
  size_t stream_handles;
  bool in_fine; /* waiting on the endpoint's fine timer */
  uint64_t fine_at;
  kp_conn_t *fine_next;
  bool close_wanted;
  uint64_t close_code;
  bool over;           /* on_close was called */
  bool closed_by_user; /* kp_conn_close (or the endpoint's) was called */
  bool released;       /* timer closing, memory going */
};

struct kp_endpoint_s {
  uv_loop_t *loop;
  kp_udp_t *udp; /* own_udp, or the socket of whoever attached us */
  kp_udp_t own_udp;
  bool attached;
  uv_check_t check;
  uv_idle_t idle;
  int tfd; /* timerfd for deadlines closer than a millisecond or two */
  uv_poll_t tpoll;
  uint64_t fine_armed; /* what tfd is set to, UINT64_MAX: disarmed */
  kp_conn_t *fine_head;
  bool scheduled;
  bool flushing;
  bool close_requested; /* kp_endpoint_close: teardown in the check phase */
  bool closing;         /* torn down: the socket is closed */
  bool handles_closing;
  unsigned uv_handles; /* open: the socket, check, idle */
  kp_endpoint_close_cb close_cb;
  kp_conn_t **buckets;
  size_t bucket_count, conn_count;
  size_t conns_closing; /* released, their timers still closing */
  kp_conn_t *dirty_head, *dirty_tail;
  kp_stream_t *work_head, *work_tail;
  uint8_t *tx;
  kp_udp_out_t out[KP_EP_TX_SLOTS];
  unsigned nout;
  bool blocked; /* the socket buffer is full: waiting for writable */
  uint64_t drops_unknown, drops_other;
  kp_rx_budget_t *rx_budget; /* shared by its connections (and maybe other endpoints') */
};

/* An endpoint on a socket someone else owns and reads (a node's main
 * socket: the punched NAT mapping belongs to it). The owner passes stream
 * packets to kp__endpoint_input and keeps the socket open until the
 * endpoint's close callback has run. */
int kp__endpoint_attach(uv_loop_t *loop, kp_udp_t *udp, kp_endpoint_t **out);
void kp__endpoint_input(kp_endpoint_t *ep, const kp_addr_t *from, uint8_t *data, size_t len);
/* The same for a stream packet, but a packet for no live connection is
 * left to the caller (false), uncounted. */
bool kp__endpoint_deliver(kp_endpoint_t *ep, const kp_addr_t *from, uint8_t *data, size_t len);
/* The live connection with that local id (NULL: none, or over). */
kp_conn_t *kp__endpoint_find(const kp_endpoint_t *ep, uint64_t local_id);
/* Only kp_conn_set_remote moves conn from now on (kp_sconn_pin_path). */
void kp__conn_pin_path(kp_conn_t *conn);
/* The user's callbacks from now on (a connection made before it was
 * handed out: a dual-stack node's race keeps its callbacks from the one
 * that loses). */
void kp__conn_set_callbacks(kp_conn_t *conn, const kp_conn_callbacks_t *callbacks);
/* Replaces the hooks (NULL: none). */
void kp__conn_set_hooks(kp_conn_t *conn, const kp_conn_hooks_t *hooks, void *ctx);
/* Moves conn to another endpoint of the same loop (another socket: the
 * one a new path was punched from). The handle stays the same for the
 * user. UV_EEXIST: its id is taken there; UV_EINVAL: over, or closing. */
int kp__conn_move(kp_conn_t *conn, kp_endpoint_t *to);
/* Sends conn to ev->remote from now on and tells the user why (its
 * on_path); the transport's state follows (kp_sconn_set_remote). */
void kp__conn_set_path(kp_conn_t *conn, const kp_path_event_t *ev);
/* Connections opened on ep from now on hold at most what budget allows
 * (shared: the caller keeps it alive as long as ep). */
void kp__endpoint_set_rx_budget(kp_endpoint_t *ep, kp_rx_budget_t *budget);

/* Microseconds on the monotonic clock. */
uint64_t kp__ep_now(void);
/* Serves conn at the end of this loop iteration. */
void kp__ep_mark_dirty(kp_conn_t *conn);
/* Runs the stream's deferred work at the end of this loop iteration. */
void kp__ep_queue_work(kp_stream_t *s);

/* stream_api.c: the state machine's stream events, and deferred work. */
void kp__on_stream_opened(void *ctx, uint64_t id);
void kp__on_stream_data(void *ctx, uint64_t id, const uint8_t *data, size_t len);
void kp__on_stream_eof(void *ctx, uint64_t id);
void kp__on_stream_reset(void *ctx, uint64_t id, uint64_t code);
void kp__on_stream_done(void *ctx, uint64_t id, void *user);
void kp__on_write_done(void *ctx, kp_swrite_t *w, int status);
void kp__on_datagram(void *ctx, const uint8_t *data, size_t len);
/* The connection ended: reads report status. */
void kp__streams_conn_over(kp_conn_t *conn, int status);
/* Deferred work for one stream; may free it. */
void kp__stream_work(kp_stream_t *s);

#endif
