/* SPDX-License-Identifier: MIT */
/* Transfers over real sockets through the public API: two endpoints on one
 * loop, a connection between them, and an application on each side that
 * writes patterned bytes (tests/harness/pattern.h) with libuv-style
 * backpressure and checks every byte it reads. */
#ifndef KP_TEST_XFER_H
#define KP_TEST_XFER_H

#include "kadpunch.h"

#define XFER_MAX_STREAMS 16

typedef struct xfer_side_s xfer_side_t;

typedef struct xfer_stream_s {
  xfer_side_t *side;
  kp_stream_t *s;
  uint64_t id;
  uint64_t total, written, completed; /* sending: bytes, queued, acknowledged */
  uint64_t received, mismatches;      /* receiving */
  bool eof;
  int read_error, write_error;
  bool closed;
} xfer_stream_t;

struct xfer_side_s {
  struct xfer_s *x;
  int index;
  kp_endpoint_t *ep;
  kp_conn_t *conn;
  kp_conn_options_t opts;
  xfer_stream_t streams[XFER_MAX_STREAMS];
  unsigned nstreams;
  uint64_t reply_total; /* sent back on each stream the peer opens */
  size_t chunk;         /* bytes per write */
  bool conn_over;
  int close_status;
  uint64_t close_code;
};

typedef struct xfer_s {
  uv_loop_t loop;
  xfer_side_t side[2];
} xfer_t;

/* Two endpoints bound to bind (port 0) and a connection; side 0 initiates.
 * cipher 0: ChaCha20-Poly1305. */
void xfer_init(xfer_t *x, const char *bind, kp_cipher_t cipher);
/* Side opens a stream that sends total bytes (then ends). */
xfer_stream_t *xfer_open(xfer_t *x, int side, uint64_t total);
/* Runs until every stream is delivered whole both ways, or timeout_ms. */
bool xfer_run(xfer_t *x, uint64_t timeout_ms);
/* Checks every stream arrived exactly, closes everything, and checks the
 * loop is left empty. */
void xfer_finish(xfer_t *x);
xfer_stream_t *xfer_find(xfer_t *x, int side, uint64_t id);

#endif
