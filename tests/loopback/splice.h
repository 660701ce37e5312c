/* SPDX-License-Identifier: MIT */
/* Splices for tests, in the test process on its loop.
 *
 * The TCP splice listens on 127.0.0.1:port and joins each connection to
 * 127.0.0.1:to_port, bytes both ways, until either side ends. With a UDP
 * splice on the same port, closed, it makes a host whose UDP is blocked
 * and whose TCP reaches a service elsewhere (test_proxy_loop's proxy over
 * TCP).
 *
 * The UDP splice, closed, drops what reaches 127.0.0.1:port; open, it
 * sends what one sender sends there to 127.0.0.1:to_port, from a port of
 * its own, and the answers back, but drops any datagram longer than
 * max_len (0: none), as a path that lets only small ones through. */
#ifndef KP_TEST_SPLICE_H
#define KP_TEST_SPLICE_H

#include <stdbool.h>
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

typedef struct kp_udp_splice_s {
  uv_udp_t at;  /* port */
  uv_udp_t out; /* to to_port */
  bool open;
  size_t max_len;
  struct sockaddr_storage sender; /* the one sender, once heard */
  bool heard;
  int to_port;
  uint64_t datagrams; /* carried, both ways */
  uint64_t too_long;  /* dropped for max_len */
} kp_udp_splice_t;

/* Closed (checked: the test fails if it cannot bind). */
void kp_udp_splice_start(uv_loop_t *loop, kp_udp_splice_t *sp, int port, int to_port);
void kp_udp_splice_open(kp_udp_splice_t *sp);
void kp_udp_splice_close(kp_udp_splice_t *sp); /* drops again */
void kp_udp_splice_stop(kp_udp_splice_t *sp);

#endif
