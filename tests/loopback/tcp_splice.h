/* SPDX-License-Identifier: MIT */
/* A TCP splice for tests, in the test process on its loop: it listens on
 * 127.0.0.1:port and joins each connection to 127.0.0.1:to_port, bytes
 * both ways, until either side ends. With a UDP socket that never reads
 * bound to the same port, it makes a host whose UDP is blocked and whose
 * TCP reaches a service elsewhere (test_proxy_loop's proxy over TCP). */
#ifndef KP_TEST_TCP_SPLICE_H
#define KP_TEST_TCP_SPLICE_H

#include <stdint.h>
#include <uv.h>

typedef struct kp_tcp_splice_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int to_port;
  unsigned accepted;
  uint64_t bytes; /* carried, both ways */
} kp_tcp_splice_t;

/* Listens (checked: the test fails if it cannot). */
void kp_tcp_splice_start(uv_loop_t *loop, kp_tcp_splice_t *sp, int port, int to_port);
/* Stops listening and ends every joined pair. */
void kp_tcp_splice_stop(kp_tcp_splice_t *sp);

#endif
