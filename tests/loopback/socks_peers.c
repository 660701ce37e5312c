/* SPDX-License-Identifier: MIT */
/* The tests' SOCKS5 client (socks_peers.h). */
#include "tests/loopback/socks_peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli_socks_codec.h"
#include "tests/harness/pattern.h"

size_t kp_socks_connect_request(uint8_t *out, const char *dst, uint16_t port) {
  out[0] = 5, out[1] = 1, out[2] = 0; /* one method: none */
  kp_cli_socks_addr_t a;
  memset(&a, 0, sizeof(a));
  a.port = port;
  if (uv_inet_pton(AF_INET, dst, a.ip) == 0) {
    a.type = KP_CLI_SOCKS_ATYP_IPV4;
  } else if (uv_inet_pton(AF_INET6, dst, a.ip) == 0) {
    a.type = KP_CLI_SOCKS_ATYP_IPV6;
  } else {
    a.type = KP_CLI_SOCKS_ATYP_NAME;
    snprintf(a.name, sizeof(a.name), "%s", dst);
  }
  return 3 + kp_cli_socks_put_request(out + 3, KP_CLI_SOCKS_CONNECT, &a);
}

static void on_closed(uv_handle_t *h) {
  kp_socks_client_t *c = h->data;
  c->closed = true;
}

void kp_socks_client_close(kp_socks_client_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void fail(kp_socks_client_t *c, int err) {
  if (!c->error) c->error = err;
  kp_socks_client_close(c);
}

static void on_written(uv_write_t *req, int status) {
  kp_socks_client_t *c = req->handle->data;
  if (status && status != UV_ECANCELED) fail(c, status);
  free(req);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  kp_socks_client_t *c = req->data;
  if (!status) c->shut = true;
}

static void write_bytes(kp_socks_client_t *c, const void *data, size_t len) {
  uv_write_t *req = malloc(sizeof(*req));
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  if (!req || uv_write(req, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
    free(req);
    fail(c, UV_ENOMEM);
  }
}

static void shut(kp_socks_client_t *c) {
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown)) fail(c, UV_EPIPE);
}

/* After a success: the pattern, then EOF. Its bytes live as long as the
 * process (pattern.h). */
static void send_pattern(kp_socks_client_t *c) {
  while (c->written < c->tx_len) {
    size_t avail;
    const uint8_t *p = kp_pattern_at(c->tx_id, c->written, &avail);
    if (avail > c->tx_len - c->written) avail = (size_t)(c->tx_len - c->written);
    if (avail > 65536) avail = 65536;
    write_bytes(c, p, avail);
    c->written += avail;
  }
  shut(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  kp_socks_client_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void answers(kp_socks_client_t *c, const uint8_t *data, size_t n) {
  size_t take = n < sizeof(c->in) - c->in_len ? n : sizeof(c->in) - c->in_len;
  memcpy(c->in + c->in_len, data, take);
  c->in_len += take;
  if (c->rep >= 0 || c->in_len < 2 || c->in[1] != 0) return;
  uint8_t rep;
  kp_cli_socks_addr_t bnd;
  int used = kp_cli_socks_parse_reply(c->in + 2, c->in_len - 2, &rep, &bnd);
  if (used <= 0) return;
  c->rep = rep;
  if (rep == 0 && c->tx_len) {
    c->bridged = true;
    size_t extra = c->in_len - 2 - (size_t)used;
    if (extra) c->mismatches += extra; /* nothing comes before our own bytes */
    send_pattern(c);
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kp_socks_client_t *c = s->data;
  if (n > 0 && c->bridged) {
    c->mismatches +=
        kp_pattern_mismatches(c->tx_id, c->received, (const uint8_t *)buf->base, (size_t)n);
    c->received += (uint64_t)n;
  } else if (n > 0) {
    answers(c, (const uint8_t *)buf->base, (size_t)n);
  } else if (n == UV_EOF) {
    c->eof = true;
    kp_socks_client_close(c);
  } else if (n < 0) {
    fail(c, (int)n);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  kp_socks_client_t *c = req->data;
  if (status) {
    fail(c, status);
    return;
  }
  c->connected = true;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  write_bytes(c, c->out, c->out_len);
  if (c->eof_after) shut(c);
}

void kp_socks_client_start(uv_loop_t *loop, kp_socks_client_t *c, int port) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  c->rep = -1;
  c->in_len = 0;
  c->written = c->received = c->mismatches = 0;
  c->connected = c->bridged = c->eof = c->closed = c->shut = false;
  c->error = 0;
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->connect_req.data = c;
  if (uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&a, on_connect))
    fail(c, UV_ECONNREFUSED);
}
