/* SPDX-License-Identifier: MIT */
/* A SOCKS5 client for the tests, on the test's libuv loop: it sends a
 * greeting and a request (or any bytes: a malformed one), reads the
 * answers, and after a success sends patterned bytes (pattern.h) and
 * checks the echo, like kp_tcp_client_t. */
#ifndef KP_TEST_SOCKS_PEERS_H
#define KP_TEST_SOCKS_PEERS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct kp_socks_client_s {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  uint8_t out[600]; /* what it sends first */
  size_t out_len;
  bool eof_after;         /* shut its side down after those bytes (a truncated request) */
  uint64_t tx_id, tx_len; /* after a success: pattern bytes sent, then EOF */
  uint8_t in[600];        /* the answers, as they came (before any echo) */
  size_t in_len;
  int rep; /* the reply code read, -1 before one */
  uint64_t written, received, mismatches;
  bool connected, bridged, eof, closed, shut;
  int error;
  char buf[65536];
} kp_socks_client_t;

/* Greeting (no authentication) and a CONNECT to dst (an IPv4 or IPv6
 * literal, or a name) port, in one write. */
size_t kp_socks_connect_request(uint8_t *out, const char *dst, uint16_t port);

/* Connects to 127.0.0.1:port and sends c->out (fill it first). After a
 * reply with code 0 and tx_len > 0, sends tx_len bytes of pattern tx_id,
 * shuts down and checks the echo. Closes at EOF or the first error. */
void kp_socks_client_start(uv_loop_t *loop, kp_socks_client_t *c, int port);
void kp_socks_client_close(kp_socks_client_t *c);

#endif
