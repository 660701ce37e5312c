/* SPDX-License-Identifier: MIT */
/* The echo service of `kadpunch serve` and the demo: every stream a peer
 * opens is sent back, with backpressure (a peer that sends faster than it
 * reads waits, not our memory). */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"

typedef struct echo_write_s {
  kp_write_t req;
  uint8_t data[];
} echo_write_t;

static void echo_written(kp_write_t *req, int status) {
  (void)status;
  free(req->data);
}

static void echo_drained(kp_stream_t *s);

static void echo_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    kp_stream_end(s);
    kp_stream_close(s, NULL);
    return;
  }
  echo_write_t *w = malloc(sizeof(*w) + (size_t)n);
  if (!w) {
    kp_stream_reset(s, 0);
    kp_stream_close(s, NULL);
    return;
  }
  memset(&w->req, 0, sizeof(w->req));
  memcpy(w->data, buf->base, (size_t)n);
  w->req.data = w;
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
  if (kp_stream_write(&w->req, s, &b, 1, echo_written)) {
    free(w);
    return;
  }
  /* A client that sends faster than it reads waits, not our memory. */
  if (!kp_stream_is_writable(s)) {
    kp_stream_read_stop(s);
    kp_stream_set_drain_cb(s, echo_drained);
  }
}

static void echo_drained(kp_stream_t *s) {
  kp_stream_read_start(s, echo_read);
}

void kp_cli_echo_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  kp_stream_read_start(s, echo_read);
}
