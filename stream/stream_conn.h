/* SPDX-License-Identifier: MIT */
/* A data-plane connection: reliable, ordered, flow- and congestion-
 * controlled, encrypted byte streams over UDP datagrams.
 *
 * Pure (the state machine layer, docs/architecture.md): fed datagrams and the time in
 * microseconds, it hands datagrams out when asked (kp_sconn_write_datagram,
 * so the glue can batch them into GSO sends) and reports events through
 * callbacks. It never touches a socket, a clock or libuv.
 *
 * Streams are identified by numbers: those the connection's initiator opens
 * are even, the other side's odd. Data is referenced in the writers' buffers
 * (kp_swrite_t, like uv_write_t) until the peer acknowledges it, then the
 * write completes. See docs/protocol.md, "Stream packets", and
 * docs/architecture.md, "The data plane". */
#ifndef KP_STREAM_CONN_H
#define KP_STREAM_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/rng.h"
#include "kadpunch_base.h"

typedef struct kp_sconn_s kp_sconn_t;

/* A write: bytes the caller keeps valid until done fires (once, with 0 when
 * the peer acknowledged all of them, or an error). Caller-owned storage,
 * embedded in the public kp_write_t; start and end are stream offsets. */
typedef kp__swrite_t kp_swrite_t;
#define KP_SWRITE_INLINE_BUFS 4

typedef struct kp_sconn_events_s {
  /* The peer opened a stream. */
  void (*stream_opened)(void *ctx, uint64_t id);
  /* In-order data (valid during the call). */
  void (*stream_data)(void *ctx, uint64_t id, const uint8_t *data, size_t len);
  /* The peer finished sending (all its data was delivered before). */
  void (*stream_eof)(void *ctx, uint64_t id);
  /* The peer reset its sending side (or refused a stream we opened). */
  void (*stream_reset)(void *ctx, uint64_t id, uint64_t code);
  /* Both directions of a stream are over: its state is gone (user: what
   * kp_sconn_stream_set_user gave it). */
  void (*stream_done)(void *ctx, uint64_t id, void *user);
  /* A datagram arrived (valid during the call; NULL: they are dropped). */
  void (*datagram)(void *ctx, const uint8_t *data, size_t len);
  /* A write completed (0) or failed. */
  void (*write_done)(void *ctx, kp_swrite_t *w, int status);
  /* The connection moved to another remote address. */
  void (*path_changed)(void *ctx, const kp_addr_t *remote);
  /* The path stopped carrying (alive false: we sent what must be answered
   * and heard nothing for path_dead_ms), or carries again. */
  void (*path_state)(void *ctx, bool alive);
  /* The connection is over: 0 (closed by us), KP_ECLOSED (by the peer),
   * KP_EPEERDEAD (the peer stopped answering). Last event. */
  void (*closed)(void *ctx, int status, uint64_t code);
  void *ctx;
} kp_sconn_events_t;

/* Bytes of received data held (out of order, or for a paused reader) by
 * every connection that shares this: past max, data that would need
 * holding is refused unacknowledged, and its sender sends it again later.
 * Whatever the windows, many connections cannot hold more. */
typedef struct kp_rx_budget_s {
  size_t used, max;
} kp_rx_budget_t;

typedef struct kp_sconn_config_s {
  bool initiator;
  uint64_t local_cid;  /* ours: the peer's packets carry it */
  uint64_t remote_cid; /* theirs */
  kp_cipher_t cipher;
  kp_cc_t cc; /* 0: KP_CC_MODEL */
  uint8_t tx_key[32];
  uint8_t rx_key[32];
  kp_addr_t remote;
  unsigned mtu;               /* starting datagram size (default 1200) */
  bool pmtu_probe;            /* probe up to 1472 (IPv4) / 1452 (IPv6) (default on) */
  uint32_t stream_window;     /* per-stream receive window to start with (default 2 MiB) */
  uint32_t conn_window;       /* connection receive window to start with (default 16 MiB) */
  uint32_t stream_window_max; /* what measured bandwidth-delay products may grow them */
  uint32_t conn_window_max;   /* to (default 64 MiB each; below the starting size: no growth) */
  unsigned max_streams;       /* streams the peer may have open (default 256) */
  unsigned idle_timeout_ms;   /* nothing heard this long: dead (default 30000) */
  unsigned keepalive_ms;      /* send something at least this often (default 10000) */
  /* Sending what must be answered and hearing nothing this long (or three
   * probe timeouts, if longer) makes the path dead (default 1000). */
  unsigned path_dead_ms;
  /* With a way to find another path (the connection's owner resumes it),
   * nothing heard for this long, not idle_timeout_ms, ends it (0: no
   * resumption, idle_timeout_ms applies). */
  unsigned resume_grace_ms;
  kp_rng_t rng;
  kp_rx_budget_t *rx_budget; /* shared with other connections (NULL: none) */
} kp_sconn_config_t;

typedef kp_conn_stats_t kp_sconn_stats_t;

void kp_sconn_config_defaults(kp_sconn_config_t *cfg);
int kp_sconn_new(const kp_sconn_config_t *cfg, const kp_sconn_events_t *ev, uint64_t now_us,
                 kp_sconn_t **out);
/* Frees everything; pending writes are not called back. */
void kp_sconn_free(kp_sconn_t *c);

/* A datagram for this connection (its destination id checked by the
 * caller). data is decrypted in place. */
void kp_sconn_read_datagram(kp_sconn_t *c, const kp_addr_t *from, uint8_t *data, size_t len,
                            uint64_t now_us);
/* The next datagram to send, written into buf (cap >= 1500); returns its
 * length (to is where it goes) or 0 when nothing may leave now. */
size_t kp_sconn_write_datagram(kp_sconn_t *c, uint8_t *buf, size_t cap, kp_addr_t *to,
                               uint64_t now_us);
void kp_sconn_tick(kp_sconn_t *c, uint64_t now_us);
/* When kp_sconn_tick next has work, or UINT64_MAX. */
uint64_t kp_sconn_next_deadline(const kp_sconn_t *c);

/* Streams. */
int kp_sconn_stream_open(kp_sconn_t *c, uint64_t *id);
/* Queues bufs (copied as an array; the bytes are referenced). */
int kp_sconn_stream_write(kp_sconn_t *c, uint64_t id, kp_swrite_t *w, const kp_buf_t bufs[],
                          unsigned nbufs);
/* Half-close: a FIN after everything written. */
int kp_sconn_stream_end(kp_sconn_t *c, uint64_t id);
/* Abandons the stream both ways: pending writes fail with KP_ECANCELED,
 * the peer gets RESET_STREAM and STOP_SENDING with code. */
void kp_sconn_stream_reset(kp_sconn_t *c, uint64_t id, uint64_t code);
/* Abandons the receiving side only: buffered data is dropped, the peer gets
 * STOP_SENDING with code (unless it finished already). */
void kp_sconn_stream_stop(kp_sconn_t *c, uint64_t id, uint64_t code);
/* The caller's pointer for a stream (NULL when unset or the stream is
 * gone). */
void kp_sconn_stream_set_user(kp_sconn_t *c, uint64_t id, void *user);
void *kp_sconn_stream_user(kp_sconn_t *c, uint64_t id);
/* Pauses delivery (data is buffered, the window closes) or resumes it (what
 * was buffered is delivered at the next tick). */
void kp_sconn_stream_pause(kp_sconn_t *c, uint64_t id, bool paused);
/* Bytes written and not yet acknowledged. */
uint64_t kp_sconn_stream_unacked(const kp_sconn_t *c, uint64_t id);

/* Queues an unreliable datagram (copied; stream_datagram.h). Errors:
 * KP_EMSGSIZE (over kp_sconn_datagram_max), KP_ENOBUFS (the queue is full),
 * KP_ENOMEM, KP_EPIPE (closing); all but the last are counted drops. */
int kp_sconn_datagram_send(kp_sconn_t *c, const void *data, size_t len);
/* The largest datagram the path's packets carry now (1078 bytes at the
 * starting 1200-byte packets, more once the path MTU is probed). */
size_t kp_sconn_datagram_max(const kp_sconn_t *c);

/* Closes the connection: the peer is told with code; closed fires later. */
void kp_sconn_close(kp_sconn_t *c, uint64_t code, const char *reason);
/* Ends it now (after a close was sent, or when there is no time to): closed
 * fires with status, writes fail with KP_ECANCELED. */
void kp_sconn_abort(kp_sconn_t *c, int status);
/* Moves to another remote address now (the caller validated it, e.g. by a
 * hole punch). */
void kp_sconn_set_remote(kp_sconn_t *c, const kp_addr_t *remote, uint64_t now_us);
/* From now on only kp_sconn_set_remote moves the connection: packets from
 * another address are read but start no path check. For a connection whose
 * path someone else manages (a relayed one that punches in the background:
 * both the relay and the direct path deliver, and each side moves on its
 * own evidence, so following the newest packet would flap). */
void kp_sconn_pin_path(kp_sconn_t *c);
/* Who hears of the peer's datagrams from now on (NULL: dropped, counted). */
void kp_sconn_set_datagram_cb(kp_sconn_t *c,
                              void (*fn)(void *ctx, const uint8_t *data, size_t len));
/* Whether the path carries (kp_sconn_events_t.path_state). */
bool kp_sconn_path_alive(const kp_sconn_t *c);
/* The newest packet number authenticated so far, plus one (0: none yet):
 * a packet that raised it was the newest the peer has sent us. */
uint64_t kp_sconn_newest_received(const kp_sconn_t *c);
/* Where packets go. */
const kp_addr_t *kp_sconn_remote(const kp_sconn_t *c);

void kp_sconn_stats(const kp_sconn_t *c, kp_sconn_stats_t *out);
/* The congestion window in force, bytes. */
uint64_t kp_sconn_cwnd(const kp_sconn_t *c);
uint64_t kp_sconn_local_cid(const kp_sconn_t *c);
bool kp_sconn_is_closed(const kp_sconn_t *c);

#endif
