/* Reaching a relay over TCP, for a peer whose UDP is blocked (docs/protocol.md
 * "Relaying over TCP"; docs/architecture.md "Relays").
 *
 * One TCP connection to the relay's port carries channels. Each channel is
 * a virtual UDP socket (common/udp.h): the peer's node runs on one as if it
 * were its main socket, and opens more for pairing, exactly as it would
 * over UDP. At the relay each channel is an allocation: a UDP socket of its
 * own on the relay's address, whose datagrams the relay frames back. What
 * an allocation may send is narrow (node/node_relay_tcp.c): DHT messages,
 * and anything to the relay itself, whose pairing then forwards only to the
 * one peer that paired. So the relay cannot be used to reach anyone else,
 * and the streams stay end-to-end encrypted as over UDP.
 *
 * Frames, both ways: u16 length of what follows, u8 type, u16 channel, body.
 *   OPEN    (peer -> relay)  no body: make an allocation for this channel
 *   OPENED  (relay -> peer)  the allocation's address (compact form)
 *   REFUSED (relay -> peer)  u8 reason (kp_relay_refusal_t): no allocation
 *   DATA    (both)           u8 address length, address (compact), datagram;
 *                            to the relay: where to send it; from: who sent it
 *   CLOSE   (both)           no body: the channel is gone */
#ifndef KP_RELAY_TUNNEL_H
#define KP_RELAY_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/addr.h"
#include "common/uv/udp.h"

#define KP_TUNNEL_CHANNELS 16 /* per TCP connection: a main socket and pairings */
#define KP_TUNNEL_FRAME_HEAD 5
#define KP_TUNNEL_FRAME_MAX (KP_TUNNEL_FRAME_HEAD + 1 + KP_ADDR_COMPACT_MAX + KP_UDP_MAX_DATAGRAM)
/* Bytes a side queues for its TCP connection before it drops datagrams, as
 * a full socket buffer would, and stops reading (so a peer that sends
 * without reading what it is sent fills its own buffers, not ours). Control
 * frames get a little more; past that the link is over (io->overflow). */
#define KP_TUNNEL_BACKLOG (1u << 20)
#define KP_TUNNEL_CONTROL_SLACK (16u * 1024)
/* What one read takes: 21 full frames (a bigger read costs memory per link,
 * a smaller one a system call per frame or two). */
#define KP_TUNNEL_READ_BUF (32u * 1024)

typedef enum {
  KP_TUNNEL_OPEN = 1,
  KP_TUNNEL_OPENED = 2,
  KP_TUNNEL_REFUSED = 3,
  KP_TUNNEL_DATA = 4,
  KP_TUNNEL_CLOSE = 5,
} kp_tunnel_type_t;

typedef struct kp_tunnel_frame_s {
  uint8_t type;
  uint16_t channel;
  kp_addr_t addr;      /* OPENED, DATA */
  uint8_t reason;      /* REFUSED */
  const uint8_t *data; /* DATA: the datagram (points into the parsed buffer) */
  size_t len;
} kp_tunnel_frame_t;

/* Writes f to out (KP_TUNNEL_FRAME_MAX bytes); returns its size, 0 if f is
 * not encodable (no address for DATA, a datagram too big). */
size_t kp_tunnel_frame_encode(const kp_tunnel_frame_t *f, uint8_t *out);
/* One frame from the start of buf: 1 and *used, 0 if more bytes are
 * needed, -1 if malformed (the connection is then dropped). */
int kp_tunnel_frame_decode(const uint8_t *buf, size_t len, kp_tunnel_frame_t *out, size_t *used);

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
