/* SPDX-License-Identifier: MIT */
/* Reaching a relay over TCP, for a peer whose UDP is blocked (docs/protocol.md
 * "Relaying over TCP"; docs/architecture.md "Relays"): frames
 * (relay/tunnel_frame.h) over a libuv TCP stream, for both ends, and the
 * peer's end: channels as virtual UDP sockets (common/uv/udp.h) on one TCP
 * connection to the relay. The relay's end is node/relay_service_tcp.c. */
#ifndef KP_RELAY_TUNNEL_H
#define KP_RELAY_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/addr.h"
#include "common/uv/udp.h"
#include "relay/tunnel_frame.h"

_Static_assert(KP_TUNNEL_MAX_DATAGRAM == KP_UDP_MAX_DATAGRAM,
               "a frame carries any datagram a socket reads");

/* Bytes a side queues for its TCP connection before it drops datagrams, as
 * a full socket buffer would, and stops reading (so a peer that sends
 * without reading what it is sent fills its own buffers, not ours). Control
 * frames get a little more; past that the link is over (io->overflow). */
#define KP_TUNNEL_BACKLOG (1u << 20)
#define KP_TUNNEL_CONTROL_SLACK (16u * 1024)
/* What one read takes: 21 full frames (a bigger read costs memory per link,
 * a smaller one a system call per frame or two). */
#define KP_TUNNEL_READ_BUF (32u * 1024)

/* ---- Both ends: frames over a libuv stream -------------------------------------------- */

typedef struct kp_tunnel_io_s kp_tunnel_io_t;
/* A frame arrived; return false to stop reading (the io is being closed). */
typedef bool (*kp_tunnel_frame_cb)(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f);
/* The connection ended (UV_EOF, an error, or a malformed frame: UV_EPROTO). */
typedef void (*kp_tunnel_end_cb)(kp_tunnel_io_t *io, int status);
/* The backlog fell below half after a send was refused. */
typedef void (*kp_tunnel_room_cb)(kp_tunnel_io_t *io);

struct kp_tunnel_io_s {
  void *data;
  uv_tcp_t tcp;
  uv_idle_t idle; /* keeps the loop from blocking while frames wait */
  uv_check_t check;
  kp_tunnel_frame_cb on_frame;
  kp_tunnel_end_cb on_end;
  kp_tunnel_room_cb on_room;
  uint8_t *out; /* frames not yet handed to the kernel */
  size_t out_len, out_cap, inflight;
  bool full;           /* a send was refused: tell on_room */
  bool hold;           /* not connected yet: frames wait (kp_tunnel_io_release) */
  bool paused;         /* reading stopped until the backlog drains to half */
  bool overflow;       /* a control frame found no room: the peer is not reading */
  uint64_t full_since; /* loop time (ms) the backlog last filled; 0: not full */
  bool ended, closing;
  unsigned handles; /* open libuv handles */
  void (*on_closed)(kp_tunnel_io_t *io);
  uint8_t in[KP_TUNNEL_READ_BUF]; /* frames arrive in bursts: many per read */
  size_t in_len;
  uint64_t frames_in, frames_out, drops;
};

/* Prepares io on loop (its tcp handle initialised, not connected). */
int kp_tunnel_io_init(uv_loop_t *loop, kp_tunnel_io_t *io);
/* Starts reading frames (once the tcp handle is connected or accepted). */
int kp_tunnel_io_start(kp_tunnel_io_t *io);
/* A listener's side: accepts the pending connection into io (initialised)
 * and reads the peer's address. 0, or an error (the connection then goes
 * when io is closed). */
int kp_tunnel_io_accept(kp_tunnel_io_t *io, uv_stream_t *server, kp_addr_t *peer);
/* Accepts the pending connection and closes it at once (the peer sees it
 * end): a listener that cannot take one must still accept, or libuv never
 * polls it again. */
void kp_tunnel_refuse(uv_loop_t *loop, uv_stream_t *server);
/* Queues a frame; false if the backlog is full (the frame is dropped and
 * on_room fires when there is space). Sent at the end of this loop turn. */
bool kp_tunnel_io_send(kp_tunnel_io_t *io, const kp_tunnel_frame_t *f);
/* Sends what waited while io->hold was set, and everything after at once. */
void kp_tunnel_io_release(kp_tunnel_io_t *io);
/* Whether a frame of len more bytes would fit. */
bool kp_tunnel_io_has_room(const kp_tunnel_io_t *io, size_t len);
/* Whether the peer has left our frames unread for stall_ms: the backlog
 * has been full that long, or a control frame overflowed it. */
bool kp_tunnel_io_stalled(const kp_tunnel_io_t *io, uint64_t stall_ms);
/* Closes everything; cb (may be NULL) once every handle is closed. No
 * callback but cb after this. */
void kp_tunnel_io_close(kp_tunnel_io_t *io, void (*cb)(kp_tunnel_io_t *io));

/* ---- The peer's end: channels as virtual UDP sockets -------------------------------- */

typedef struct kp_tunnel_s kp_tunnel_t;
/* The connection to the relay failed or ended: datagrams are lost until
 * it is dialled again (after 1, 2, 4 ... 30 s), when every channel is
 * opened anew (a new allocation, a new address). */
typedef void (*kp_tunnel_down_cb)(kp_tunnel_t *t, int status, void *arg);

typedef struct kp_tunnel_stats_s {
  uint64_t frames_in, frames_out, drops, refused;
  uint64_t redials; /* connections made again after one was lost */
  unsigned channels;
  bool connected;
} kp_tunnel_stats_t;

/* Connects to the relay's TCP port (its UDP port number). */
int kp_tunnel_new(uv_loop_t *loop, const kp_addr_t *relay, kp_tunnel_down_cb down, void *arg,
                  kp_tunnel_t **out);
/* Opens a channel as udp (kp_udp_init_virtual): send, receive and close it
 * like any kp_udp_t. Its local address becomes the allocation's once the
 * relay says. UV_EMFILE: all channels in use. */
int kp_tunnel_socket(kp_tunnel_t *t, kp_udp_t *udp);
const kp_addr_t *kp_tunnel_relay(const kp_tunnel_t *t);
void kp_tunnel_stats(const kp_tunnel_t *t, kp_tunnel_stats_t *out);
/* Closes the connection and frees t. Every channel socket must be closed,
 * its close callback run, before. */
void kp_tunnel_close(kp_tunnel_t *t);

#endif
