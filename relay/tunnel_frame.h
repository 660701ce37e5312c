/* SPDX-License-Identifier: MIT */
/* The frames of the TCP tunnel to a relay, for a peer whose UDP is blocked (docs/protocol.md
 * "Relaying over TCP"; docs/architecture.md "Relays").
 *
 * One TCP connection to the relay's port carries channels. Each channel is
 * a virtual UDP socket (common/uv/udp.h): the peer's node runs on one as if it
 * were its main socket, and opens more for pairing, exactly as it would
 * over UDP. At the relay each channel is an allocation: a UDP socket of its
 * own on the relay's address, whose datagrams the relay frames back. What
 * an allocation may send is narrow (node/relay_service_tcp.c): DHT messages,
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
#ifndef KP_RELAY_TUNNEL_FRAME_H
#define KP_RELAY_TUNNEL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"

/* The largest datagram a frame carries (a UDP payload on a 1500-byte
 * path's worth, as common/uv/udp.h reads them). */
#define KP_TUNNEL_MAX_DATAGRAM 1500
#define KP_TUNNEL_CHANNELS 16 /* per TCP connection: a main socket and pairings */
#define KP_TUNNEL_FRAME_HEAD 5
#define KP_TUNNEL_FRAME_MAX                                                                        \
  (KP_TUNNEL_FRAME_HEAD + 1 + KP_ADDR_COMPACT_MAX + KP_TUNNEL_MAX_DATAGRAM)
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

#endif
