/* SPDX-License-Identifier: MIT */
/* Data-plane packet codec (docs/protocol.md, "Stream packets").
 *
 *   header (plaintext, authenticated as associated data)
 *     0   u8   0x41: class "stream", version 1
 *     1   u8   flags: 0x01 an ack block follows; 0x02 acknowledge at once
 *     2   u64  destination connection id (the receiver's)
 *     10  u64  packet number (unique per packet and direction: the nonce)
 *     ack block (flag 0x01):
 *     18  u64  largest packet number received
 *     26  u16  ack delay, in units of 8 us
 *     28  u64  max data: the total stream bytes the receiver accepts
 *     36  u8   n: extra ack ranges (<= KP_STREAM_MAX_ACK_RANGES)
 *     37  u16  first range: packets below the largest also received
 *          n x (u16 gap, u16 length), descending
 *   frames (encrypted), then a 16-byte AEAD tag
 *
 * Frames use QUIC's variable-length integers. Pure: no allocation; decoded
 * views point into the packet. */
#ifndef KP_STREAM_FRAME_H
#define KP_STREAM_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define KP_STREAM_FIRST_BYTE 0x41
#define KP_STREAM_FLAG_ACK 0x01
#define KP_STREAM_FLAG_ACK_NOW 0x02 /* the sender has nothing more in flight for now */
#define KP_STREAM_MAX_ACK_RANGES 16
#define KP_STREAM_TAG_LEN 16
#define KP_STREAM_HEADER_MIN 18
#define KP_STREAM_HEADER_MAX (37 + 2 + 4 * KP_STREAM_MAX_ACK_RANGES)
/* Flow-control limits both ends assume before the receiver says more: per
 * stream, and for the connection's stream bytes in total. Receivers raise
 * them at once (MAX_STREAM_DATA, and the max data of every ack). */
#define KP_STREAM_INITIAL_WINDOW (64u << 10)
#define KP_CONN_INITIAL_WINDOW (1u << 20)

/* True if a datagram's first byte marks a stream packet. */
static inline bool kp_stream_is_packet(const uint8_t *data, size_t len) {
  return len >= KP_STREAM_HEADER_MIN + KP_STREAM_TAG_LEN && data[0] == KP_STREAM_FIRST_BYTE;
}

/* The destination connection id of a stream packet (check is_packet first). */
uint64_t kp_stream_packet_cid(const uint8_t *data);

/* An ack: the largest packet received and the ranges below it. The first
 * range is [largest - first, largest]; each next one ends gap + 2 below
 * the previous one's start and holds length + 1 packets (QUIC's ACK frame
 * layout). */
typedef struct kp_stream_ack_s {
  uint64_t largest;
  uint16_t delay_8us;
  uint64_t max_data;
  uint16_t first;
  uint8_t count;
  struct {
    uint16_t gap;
    uint16_t length;
  } ranges[KP_STREAM_MAX_ACK_RANGES];
} kp_stream_ack_t;

typedef struct kp_stream_header_s {
  uint8_t flags;
  uint64_t cid;
  uint64_t pn;
  kp_stream_ack_t ack;
} kp_stream_header_t;

/* Writes the header; returns its length or 0 if cap is too small. */
size_t kp_stream_header_encode(const kp_stream_header_t *h, uint8_t *buf, size_t cap);
/* Parses the header; returns its length, or 0 if malformed or truncated. */
size_t kp_stream_header_decode(kp_stream_header_t *h, const uint8_t *buf, size_t len);

/* ---- Variable-length integers (RFC 9000, section 16) ---------------------- */

#define KP_VARINT_MAX (((uint64_t)1 << 62) - 1)

static inline size_t kp_varint_len(uint64_t v) {
  return v < 64 ? 1 : v < 16384 ? 2 : v < 1073741824 ? 4 : 8;
}

void kp_varint_put(kp_wbuf_t *w, uint64_t v);
uint64_t kp_varint_get(kp_rbuf_t *r);

/* ---- Frames ---------------------------------------------------------------- */

typedef enum {
  KP_FRAME_PADDING = 0x00,
  KP_FRAME_PING = 0x01,
  KP_FRAME_STREAM = 0x08, /* | 0x01: FIN */
  KP_FRAME_RESET_STREAM = 0x10,
  KP_FRAME_STOP_SENDING = 0x11,
  KP_FRAME_MAX_STREAM_DATA = 0x12,
  KP_FRAME_PATH_CHALLENGE = 0x1a,
  KP_FRAME_PATH_RESPONSE = 0x1b,
  KP_FRAME_CLOSE = 0x1c,
  KP_FRAME_ACK_FREQUENCY = 0x1d,
  KP_FRAME_DATAGRAM = 0x30, /* unreliable: never sent again (RFC 9221's spirit) */
} kp_frame_type_t;

typedef struct kp_frame_s {
  uint8_t type; /* kp_frame_type_t; STREAM without the FIN bit */
  bool fin;
  uint64_t stream_id;  /* ACK_FREQUENCY: its sequence number */
  uint64_t offset;     /* STREAM */
  uint64_t value;      /* RESET/STOP/CLOSE: error code; MAX_STREAM_DATA: max;
                          ACK_FREQUENCY: packets per ack */
  uint64_t final_size; /* RESET_STREAM */
  const uint8_t *data; /* STREAM data, PATH_* (8 bytes), CLOSE reason, DATAGRAM */
  size_t len;
} kp_frame_t;

/* Reads the next frame (PADDING runs are skipped whole). Returns 1 with a
 * frame, 0 at the end, -1 on a malformed frame. */
int kp_frame_next(kp_rbuf_t *r, kp_frame_t *f);

/* Bytes a STREAM frame header takes for these values (data not included). */
size_t kp_frame_stream_header_len(uint64_t id, uint64_t offset, size_t len);

void kp_frame_put_stream(kp_wbuf_t *w, uint64_t id, uint64_t offset, const uint8_t *data,
                         size_t len, bool fin);
/* Writes a STREAM frame header only (the caller copies len bytes after it). */
void kp_frame_put_stream_header(kp_wbuf_t *w, uint64_t id, uint64_t offset, size_t len, bool fin);
void kp_frame_put_ping(kp_wbuf_t *w);
void kp_frame_put_padding(kp_wbuf_t *w, size_t n);
void kp_frame_put_reset(kp_wbuf_t *w, uint64_t id, uint64_t code, uint64_t final_size);
void kp_frame_put_stop(kp_wbuf_t *w, uint64_t id, uint64_t code);
void kp_frame_put_max_stream_data(kp_wbuf_t *w, uint64_t id, uint64_t max);
void kp_frame_put_path(kp_wbuf_t *w, bool response, const uint8_t data[8]);
void kp_frame_put_close(kp_wbuf_t *w, uint64_t code, const char *reason);
/* Asks the peer to acknowledge every `packets` ack-eliciting packets (its
 * other reasons to ack at once stand); seq orders the requests. */
void kp_frame_put_ack_frequency(kp_wbuf_t *w, uint64_t seq, uint64_t packets);
/* A DATAGRAM frame: its length (a varint), then the bytes. */
void kp_frame_put_datagram(kp_wbuf_t *w, const uint8_t *data, size_t len);
/* Bytes a DATAGRAM frame of len bytes takes. */
static inline size_t kp_frame_datagram_len(size_t len) {
  return 1 + kp_varint_len(len) + len;
}

#endif
