/* SPDX-License-Identifier: MIT */
/* TCP ends for the forwarding tests, in the test process on its loop: a
 * server (an echo, or one that answers once the request has ended) and
 * clients that send patterned bytes (tests/harness/pattern.h) and check
 * every byte they get back. Both sides keep at most 1 MiB queued for
 * writing, so a test measures kadpunch's buffering, not its own. */
#ifndef KP_TEST_TCP_PEERS_H
#define KP_TEST_TCP_PEERS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum {
  KP_TCP_ECHO = 0,        /* every byte back; EOF after the client's EOF */
  KP_TCP_REPLY_AFTER_EOF, /* read the request to EOF, then send the reply */
  KP_TCP_BANNER           /* send banner; keep what arrives in heard; end after a line */
} kp_tcp_mode_t;

typedef struct kp_tcp_server_s {
  uv_tcp_t tcp;
  int port;
  kp_tcp_mode_t mode;
  /* KP_TCP_REPLY_AFTER_EOF: the request's pattern id (checked), the
   * reply's id and length. */
  uint64_t request_id, reply_id, reply_len;
  const char *banner; /* KP_TCP_BANNER */
  char heard[1024];
  size_t heard_len;
  unsigned accepted, closed;
  uint64_t request_bytes, request_mismatches;
} kp_tcp_server_t;

/* Listens on 127.0.0.1, port 0 (port gets the one bound). Set mode and
 * the reply first. */
void kp_tcp_server_start(uv_loop_t *loop, kp_tcp_server_t *srv);
/* Stops listening; connections finish by themselves. */
void kp_tcp_server_stop(kp_tcp_server_t *srv);

typedef struct kp_tcp_client_s {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  uint64_t tx_id, tx_len; /* what to send (pattern), then shut down */
  uint64_t rx_id;         /* the pattern expected back */
  uint64_t queued, written, received, mismatches;
  bool hold_open; /* kp_tcp_client_start_silent */
  bool reading, connected, shut, shut_done, eof, closed;
  int error; /* the first one: connect, write or read */
  char buf[65536];
} kp_tcp_client_t;

/* Connects to 127.0.0.1:port, sends tx_len bytes of pattern tx_id and
 * shuts down its write side, reads (if reading) and checks against rx_id;
 * closes once both sides have ended, or at the first error. */
void kp_tcp_client_start(uv_loop_t *loop, kp_tcp_client_t *c, int port, uint64_t tx_id,
                         uint64_t tx_len, uint64_t rx_id, bool reading);
/* Connects and reads, sends nothing and keeps its side open (for a
 * server that speaks first). */
void kp_tcp_client_start_silent(uv_loop_t *loop, kp_tcp_client_t *c, int port);
/* Starts or stops reading (a slow reader). */
void kp_tcp_client_set_reading(kp_tcp_client_t *c, bool reading);
/* Closes it now (if it is not closed or closing). */
void kp_tcp_client_close(kp_tcp_client_t *c);

#endif
