/* SPDX-License-Identifier: MIT */
/* A UDP socket on a libuv loop, with batched system calls.
 *
 * libuv's uv_udp_t cannot do what the data plane needs: its recvmmsg path
 * asks for a 64 KiB slot per datagram (1.28 MiB per batch, per socket, which
 * would dominate the memory of a node in a testnet of thousands), and it has
 * no UDP GSO. So this module owns a nonblocking socket and drives it with a
 * uv_poll_t:
 *
 * - receive: recvmmsg() into scratch buffers on the stack of the poll
 *   callback. A socket costs no receive memory between callbacks, however
 *   many sockets a process runs.
 * - send: kp_udp_send() sends at once (sendto), or, between
 *   kp_udp_batch_begin() and kp_udp_batch_end(), queues into a caller-owned
 *   batch flushed with one sendmmsg(). Every receive callback runs inside a
 *   batch, so replies to a burst of requests leave in one system call.
 *
 * - bulk send (the data plane): kp_udp_send_datagrams() hands the kernel
 *   runs of equal-size datagrams to one destination as single UDP GSO sends
 *   (UDP_SEGMENT), many per sendmmsg(), and stops at a full socket buffer
 *   so the caller keeps what did not go.
 * - bulk receive: after kp_udp_enable_gro() the kernel may hand over several
 *   datagrams of a flow coalesced (UDP_GRO); they are split again here, so
 *   the receive callback still sees one datagram at a time. Its buffers
 *   (512 KiB) live on the heap, allocated only for sockets that ask.
 * - every datagram leaves with Don't Fragment set and the route's path MTU
 *   ignored (IP_PMTUDISC_PROBE), so a datagram too big for the path is lost
 *   rather than fragmented: path MTU probes then mean something.
 *
 * A datagram the kernel will not take (socket buffer full) is dropped and
 * counted, as the network would drop it; callers that need to know (the data
 * plane) get UV_EAGAIN from kp_udp_send() outside a batch, or a short count
 * from kp_udp_send_datagrams(), and can wait for the socket to become
 * writable.
 *
 * An open batch is about 96 KiB of stack (nested ones too, unused), and a
 * receive callback's scratch about 50 KiB: a loop thread wants a stack of
 * a megabyte or more (a main thread's 8 MiB is plenty). Loop thread only. */
#ifndef KP_COMMON_UDP_H
#define KP_COMMON_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/addr.h"

/* Largest datagram we ever send or accept (path MTU probes top out here). */
#define KP_UDP_MAX_DATAGRAM 1500
/* Datagrams per recvmmsg/sendmmsg call. */
#define KP_UDP_BATCH 32
/* Datagrams a batch holds before it is sent: two GSO sends' worth, so a
 * burst of a stream through a forwarder leaves in one system call. */
#define KP_UDP_BATCH_DGRAMS 64

typedef struct kp_udp_s kp_udp_t;
typedef struct kp_udp_batch_s kp_udp_batch_t;

/* data is writable scratch, valid only during the call. */
typedef void (*kp_udp_recv_cb)(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len);
typedef void (*kp_udp_writable_cb)(kp_udp_t *udp);
typedef void (*kp_udp_close_cb)(kp_udp_t *udp);

typedef struct kp_udp_stats_s {
  uint64_t packets_in;
  uint64_t packets_out;
  uint64_t bytes_in;
  uint64_t bytes_out;
  uint64_t send_drops;    /* refused by the kernel (buffer full, unreachable) */
  uint64_t recv_oversize; /* larger than KP_UDP_MAX_DATAGRAM */
  uint64_t gso_sends;     /* system-call messages that carried several datagrams */
  uint64_t gro_receives;  /* received buffers that held several datagrams */
} kp_udp_stats_t;

struct kp_udp_s {
  void *data;
  uv_loop_t *loop;
  uv_poll_t poll;
  int fd;
  int poll_events;
  bool closing;
  bool in_callback;
  kp_addr_t local;
  kp_udp_recv_cb on_recv;
  kp_udp_writable_cb on_writable;
  void *writable_data; /* for whoever waits on writable (not always the owner) */
  kp_udp_close_cb on_close;
  kp_udp_batch_t *batch;
  bool gso_off; /* the kernel refused UDP_SEGMENT: one datagram per message */
  unsigned gso_failures;
  uint8_t *gro_buf;                 /* GRO receive buffers, when enabled */
  const struct kp_udp_vops_s *vops; /* a virtual socket: no descriptor */
  void *vctx;
  kp_udp_stats_t stats;
};

struct kp_udp_batch_s {
  kp_udp_t *udp;
  kp_udp_batch_t *outer;
  unsigned count;
  kp_addr_t to[KP_UDP_BATCH_DGRAMS];
  uint16_t len[KP_UDP_BATCH_DGRAMS];
  uint8_t data[KP_UDP_BATCH_DGRAMS][KP_UDP_MAX_DATAGRAM];
};

typedef struct kp_udp_options_s {
  int rcvbuf; /* SO_RCVBUF in bytes; 0 keeps the kernel default */
  int sndbuf; /* SO_SNDBUF in bytes; 0 keeps the kernel default */
} kp_udp_options_t;

/* Opens a socket bound to bind (port 0 picks one). On success udp->local
 * holds the bound address. IPv6 sockets are v6-only. All or nothing. */
int kp_udp_init(uv_loop_t *loop, kp_udp_t *udp, const kp_addr_t *bind,
                const kp_udp_options_t *opts);

/* Starts delivering datagrams to cb. */
int kp_udp_recv_start(kp_udp_t *udp, kp_udp_recv_cb cb);
int kp_udp_recv_stop(kp_udp_t *udp);

/* Sends one datagram (len <= KP_UDP_MAX_DATAGRAM). Inside a batch it is
 * copied and queued and 0 is returned. Otherwise 0, UV_EAGAIN (socket
 * buffer full; nothing sent) or another negative errno. */
int kp_udp_send(kp_udp_t *udp, const kp_addr_t *to, const void *data, size_t len);

/* kp_udp_send of a datagram in two parts, a header then a body (blen may
 * be 0), copied once: a forwarder frames a datagram without a copy of its
 * own. */
int kp_udp_send_parts(kp_udp_t *udp, const kp_addr_t *to, const void *head, size_t hlen,
                      const void *body, size_t blen);

/* Sends now, bypassing an open batch (for callers that must see UV_EAGAIN). */
int kp_udp_send_now(kp_udp_t *udp, const kp_addr_t *to, const void *data, size_t len);

/* Calls cb once the socket can take more datagrams (then stops watching).
 * NULL stops watching. */
void kp_udp_want_writable(kp_udp_t *udp, kp_udp_writable_cb cb);

/* Batches nest: an inner begin/end pair is a no-op, the outermost end sends. */
void kp_udp_batch_begin(kp_udp_t *udp, kp_udp_batch_t *batch);
void kp_udp_batch_end(kp_udp_t *udp, kp_udp_batch_t *batch);

/* One datagram for kp_udp_send_datagrams. */
typedef struct kp_udp_out_s {
  kp_addr_t to;
  const uint8_t *data;
  size_t len;
} kp_udp_out_t;

/* Sends n datagrams in order, bypassing any batch; consecutive ones to one
 * destination of one size (the last of a run may be shorter) go as one GSO
 * send. Returns how many were handed to the kernel or dropped for good
 * (unreachable, too big: counted in send_drops); fewer than n only when
 * the socket buffer is full (wait for writable, then send the rest). */
unsigned kp_udp_send_datagrams(kp_udp_t *udp, const kp_udp_out_t *out, unsigned n);

/* Asks the kernel for coalesced receives (UDP_GRO). UV_ENOMEM, or the
 * setsockopt error (then receiving goes on as before). */
int kp_udp_enable_gro(kp_udp_t *udp);

/* The kernel queue a node's socket asks for (SO_RCVBUF, SO_SNDBUF), and
 * a socket a connection runs on: bursts arrive between two turns of the
 * loop. The kernel caps it at net.core.rmem_max and charges only what is
 * queued. */
#define KP_UDP_NODE_BUF (1 << 20)

/* Asks for bigger kernel buffers (SO_RCVBUF, SO_SNDBUF; 0 leaves one as
 * it is), as kp_udp_options_t does at init; the kernel caps them at
 * net.core.rmem_max / wmem_max. No-op on a virtual socket. */
int kp_udp_set_buffers(kp_udp_t *udp, int rcvbuf, int sndbuf);

/* Sets the IP TTL / hop limit of later datagrams (0 restores the default). */
int kp_udp_set_ttl(kp_udp_t *udp, int ttl);

/* Stops the socket and closes it; cb (may be NULL) fires on a later tick.
 * Safe to call from inside the receive callback. */
void kp_udp_close(kp_udp_t *udp, kp_udp_close_cb cb);

/* ---- Virtual sockets -------------------------------------------------------- */

/* A kp_udp_t whose datagrams go somewhere other than the kernel's UDP (a
 * tunnel to a relay over TCP, relay/tunnel.h), so everything built on
 * kp_udp_t runs over it unchanged. GRO and TTL do nothing there. */
typedef struct kp_udp_vops_s {
  /* Takes datagrams in order; returns how many (fewer: full for now, the
   * backend calls kp_udp_virtual_writable when it has room again). */
  unsigned (*send)(kp_udp_t *udp, const kp_udp_out_t *out, unsigned n);
  /* The socket is closing: deliver nothing more, and call
   * kp_udp_virtual_closed on a later tick. */
  void (*close)(kp_udp_t *udp);
} kp_udp_vops_t;

/* local: the address the socket is known by (may change: set udp->local). */
void kp_udp_init_virtual(uv_loop_t *loop, kp_udp_t *udp, const kp_udp_vops_t *ops, void *ctx,
                         const kp_addr_t *local);
/* The backend's side: a datagram arrived (delivered inside a batch, as from
 * the kernel); there is room to send again; the close is done. */
void kp_udp_virtual_deliver(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len);
void kp_udp_virtual_writable(kp_udp_t *udp);
void kp_udp_virtual_closed(kp_udp_t *udp);

#endif
