/* SPDX-License-Identifier: MIT */
/* The forwarding tests' TCP ends (tcp_peers.h). */
#include "tests/loopback/tcp_peers.h"

#include <stdlib.h>
#include <string.h>

#include "tests/harness/pattern.h"
#include "tests/harness/test.h"

#define QUEUE_MAX (1u << 20)
#define CHUNK 65536

/* One connection the server accepted. */
typedef struct conn_s {
  uv_tcp_t tcp;
  kp_tcp_server_t *srv;
  uv_shutdown_t shutdown_req;
  uint64_t queued, received, replied;
  bool paused, eof;
  char buf[CHUNK];
} conn_t;

typedef struct wreq_s {
  uv_write_t req;
  size_t len;
  void *owner;
  char data[]; /* echo copies; pattern writes point into the pattern */
} wreq_t;

/* ---- Server ------------------------------------------------------------------------ */

static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  c->srv->closed++;
  free(c);
}

static void conn_close(conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

static void conn_shut(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  (void)status;
  /* Echo: the client's EOF came first. Reply: it did too. */
  conn_close(c);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void conn_written(uv_write_t *req, int status);

static void reply_pump(conn_t *c) {
  kp_tcp_server_t *srv = c->srv;
  while (c->replied < srv->reply_len && c->queued < QUEUE_MAX) {
    size_t avail;
    const uint8_t *p = kp_pattern_at(srv->reply_id, c->replied, &avail);
    size_t n = avail < CHUNK ? avail : CHUNK;
    if (n > srv->reply_len - c->replied) n = (size_t)(srv->reply_len - c->replied);
    wreq_t *w = calloc(1, sizeof(*w));
    w->len = n;
    w->owner = c;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_written)) {
      free(w);
      conn_close(c);
      return;
    }
    c->queued += n;
    c->replied += n;
  }
  if (c->replied == srv->reply_len && !c->shutdown_req.data) {
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, conn_shut)) conn_close(c);
  }
}

static void conn_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->owner;
  c->queued -= w->len;
  free(w);
  if (status) {
    conn_close(c); /* reset: a paused reader would never hear of it */
    return;
  }
  if (c->srv->mode == KP_TCP_REPLY_AFTER_EOF) {
    if (c->eof) reply_pump(c);
  } else if (c->paused && c->queued < QUEUE_MAX / 4 && !c->eof) {
    c->paused = false;
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
  }
}

static void echo(conn_t *c, const char *data, size_t n) {
  wreq_t *w = malloc(sizeof(*w) + n);
  w->len = n;
  w->owner = c;
  memcpy(w->data, data, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_written)) {
    free(w);
    conn_close(c);
    return;
  }
  c->queued += n;
  if (c->queued >= QUEUE_MAX) {
    c->paused = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  kp_tcp_server_t *srv = c->srv;
  if (n > 0) {
    if (srv->mode == KP_TCP_ECHO) {
      echo(c, buf->base, (size_t)n);
    } else if (srv->mode == KP_TCP_BANNER) {
      size_t room = sizeof(srv->heard) - 1 - srv->heard_len;
      size_t take = (size_t)n < room ? (size_t)n : room;
      memcpy(srv->heard + srv->heard_len, buf->base, take);
      srv->heard_len += take;
      srv->heard[srv->heard_len] = '\0';
      /* A line heard: end our side, read on to the client's end. */
      if (strchr(srv->heard, '\n') && !c->shutdown_req.data) {
        c->shutdown_req.data = c;
        uv_shutdown(&c->shutdown_req, s, NULL);
      }
    } else {
      srv->request_mismatches +=
          kp_pattern_mismatches(srv->request_id, c->received, (uint8_t *)buf->base, (size_t)n);
      srv->request_bytes += (uint64_t)n;
    }
    c->received += (uint64_t)n;
    return;
  }
  if (n == 0) return;
  if (n != UV_EOF) {
    conn_close(c);
    return;
  }
  c->eof = true;
  if (srv->mode == KP_TCP_REPLY_AFTER_EOF) {
    reply_pump(c);
    return;
  }
  if (srv->mode == KP_TCP_BANNER) {
    conn_close(c);
    return;
  }
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, s, conn_shut)) conn_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
  kp_tcp_server_t *srv = server->data;
  KP_CHECK_OK(status);
  conn_t *c = calloc(1, sizeof(*c));
  c->srv = srv;
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  KP_CHECK_OK(uv_accept(server, (uv_stream_t *)&c->tcp));
  srv->accepted++;
  uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
  if (srv->mode == KP_TCP_BANNER) {
    uv_buf_t b = uv_buf_init((char *)srv->banner, (unsigned)strlen(srv->banner));
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  }
}

void kp_tcp_server_start(uv_loop_t *loop, kp_tcp_server_t *srv) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(loop, &srv->tcp);
  srv->tcp.data = srv;
  KP_CHECK_OK(uv_tcp_bind(&srv->tcp, (struct sockaddr *)&a, 0));
  KP_CHECK_OK(uv_listen((uv_stream_t *)&srv->tcp, 128, on_connection));
  int len = sizeof(a);
  KP_CHECK_OK(uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&a, &len));
  srv->port = ntohs(a.sin_port);
}

void kp_tcp_server_stop(kp_tcp_server_t *srv) {
  uv_close((uv_handle_t *)&srv->tcp, NULL);
}

/* ---- Client ------------------------------------------------------------------------ */

static void client_closed(uv_handle_t *h) {
  kp_tcp_client_t *c = h->data;
  c->closed = true;
}

void kp_tcp_client_close(kp_tcp_client_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_fail(kp_tcp_client_t *c, int err) {
  if (!c->error) c->error = err;
  kp_tcp_client_close(c);
}

static void client_pump(kp_tcp_client_t *c);

static void client_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  kp_tcp_client_t *c = w->owner;
  c->written += w->len;
  free(w);
  if (status) {
    if (status != UV_ECANCELED) client_fail(c, status);
    return;
  }
  client_pump(c);
}

static void client_shut(uv_shutdown_t *req, int status) {
  kp_tcp_client_t *c = req->data;
  if (status) {
    if (status != UV_ECANCELED) client_fail(c, status);
    return;
  }
  c->shut_done = true;
  if (c->eof) kp_tcp_client_close(c);
}

static void client_pump(kp_tcp_client_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  while (c->queued < c->tx_len && c->queued - c->written < QUEUE_MAX) {
    size_t avail;
    const uint8_t *p = kp_pattern_at(c->tx_id, c->queued, &avail);
    size_t n = avail < CHUNK ? avail : CHUNK;
    if (n > c->tx_len - c->queued) n = (size_t)(c->tx_len - c->queued);
    wreq_t *w = calloc(1, sizeof(*w));
    w->len = n;
    w->owner = c;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int err = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, client_written);
    if (err) {
      free(w);
      client_fail(c, err);
      return;
    }
    c->queued += n;
  }
  if (c->written == c->tx_len && !c->shut && !c->hold_open) {
    c->shut = true;
    c->shutdown_req.data = c;
    int err = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, client_shut);
    if (err) client_fail(c, err);
  }
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  kp_tcp_client_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kp_tcp_client_t *c = s->data;
  if (n > 0) {
    c->mismatches += kp_pattern_mismatches(c->rx_id, c->received, (uint8_t *)buf->base, (size_t)n);
    c->received += (uint64_t)n;
  } else if (n == UV_EOF) {
    /* A half-close: our side may still have bytes to send. (A reset can
     * look like this too when a write took the error: the writes then
     * fail and say so.) */
    c->eof = true;
    if (c->shut_done) kp_tcp_client_close(c);
  } else if (n < 0) {
    client_fail(c, (int)n);
  }
}

static void client_connected(uv_connect_t *req, int status) {
  kp_tcp_client_t *c = req->data;
  if (status) {
    client_fail(c, status);
    return;
  }
  c->connected = true;
  if (c->reading) uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  client_pump(c);
}

void kp_tcp_client_start(uv_loop_t *loop, kp_tcp_client_t *c, int port, uint64_t tx_id,
                         uint64_t tx_len, uint64_t rx_id, bool reading) {
  memset(c, 0, sizeof(*c));
  c->tx_id = tx_id;
  c->tx_len = tx_len;
  c->rx_id = rx_id;
  c->reading = reading;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->connect_req.data = c;
  KP_CHECK_OK(uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&a, client_connected));
}

void kp_tcp_client_start_silent(uv_loop_t *loop, kp_tcp_client_t *c, int port) {
  kp_tcp_client_start(loop, c, port, 0, 0, 0, true);
  c->hold_open = true; /* before the connect completes, where it would shut down */
}

void kp_tcp_client_set_reading(kp_tcp_client_t *c, bool reading) {
  if (c->reading == reading) return;
  c->reading = reading;
  if (!c->connected || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  if (reading)
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
  else
    uv_read_stop((uv_stream_t *)&c->tcp);
}
