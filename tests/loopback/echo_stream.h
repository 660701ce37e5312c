/* SPDX-License-Identifier: MIT */
/* The server side of the loopback tests' connects: every stream the peer
 * opens is echoed back byte for byte, and ended when the peer's ends. */
#ifndef KP_TEST_ECHO_STREAM_H
#define KP_TEST_ECHO_STREAM_H

#include "kadpunch.h"

/* A kp_conn_callbacks_t on_stream. */
void kp_test_echo_stream(kp_conn_t *conn, kp_stream_t *s);

#endif
