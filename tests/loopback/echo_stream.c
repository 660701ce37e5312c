/* SPDX-License-Identifier: MIT */
#include "tests/loopback/echo_stream.h"

#include <stdlib.h>
#include <string.h>

#include "tests/harness/test.h"

static void echo_written(kp_write_t *req, int status) {
  (void)status;
  free(req->data);
  free(req);
}

static void echo_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    kp_stream_end(s);
    kp_stream_close(s, NULL);
    return;
  }
  kp_write_t *w = calloc(1, sizeof(*w));
  uv_buf_t b = uv_buf_init(malloc((size_t)n), (unsigned)n);
  KP_CHECK(w && b.base);
  memcpy(b.base, buf->base, (size_t)n);
  w->data = b.base;
  KP_CHECK_OK(kp_stream_write(w, s, &b, 1, echo_written));
}

void kp_test_echo_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  KP_CHECK_OK(kp_stream_read_start(s, echo_read));
}
