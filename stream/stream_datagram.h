/* SPDX-License-Identifier: MIT */
/* Unreliable datagrams on a connection (docs/protocol.md, "Datagrams"), in
 * the spirit of RFC 9221 (QUIC DATAGRAM): each goes out once, in a DATAGRAM
 * frame of an ack-eliciting packet that counts against the congestion
 * window and the pacer like any other, and is never sent again when that
 * packet is lost. They wait in a bounded queue until the window lets them
 * out; one that finds the queue full, or is too big for the packets the
 * path carries, is dropped and counted, never held.
 *
 * Pure, like the rest of the connection's state machine: the queue lives
 * in kp_sconn_t and is filled into the packets kp_sconn_write_datagram
 * builds (stream_conn.c). */
#ifndef KP_STREAM_DATAGRAM_H
#define KP_STREAM_DATAGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Datagrams waiting to be sent, and their bytes: past either, a new one is
 * dropped (KP_ENOBUFS). 256 small datagrams are a few round trips of a
 * game or a VPN at full tilt; a queue much longer only adds delay. */
#define KP_DGRAM_QUEUE_MAX 256
#define KP_DGRAM_QUEUE_BYTES (256u << 10)

typedef struct kp_dgram_s {
  struct kp_dgram_s *next;
  size_t len;
  uint8_t data[];
} kp_dgram_t;

typedef struct kp_dgram_queue_s {
  kp_dgram_t *head, *tail;
  size_t count, bytes;
} kp_dgram_queue_t;

/* The largest datagram a packet of mtu bytes always has room for, whatever
 * its header carries (an ack block of every range). */
size_t kp_dgram_max_for_mtu(unsigned mtu);

#endif
