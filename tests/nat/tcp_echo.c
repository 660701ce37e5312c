/* SPDX-License-Identifier: MIT */
/* tcp_echo ADDR:PORT: a TCP echo server for the NAT lab's forwarding test
 * (the service behind `kadpunch serve --forward`). Echoes every connection
 * until its peer ends, then ends; runs until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct conn_s {
  uv_tcp_t tcp;
  uv_shutdown_t shut;
  char buf[65536];
} conn_t;

typedef struct wr_s {
  uv_write_t req;
  char data[];
} wr_t;

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void on_shut(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  (void)status;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)hint;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (n < 0) {
    uv_read_stop(s);
    c->shut.data = c;
    if (n != UV_EOF || uv_shutdown(&c->shut, s, on_shut)) uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  wr_t *w = malloc(sizeof(*w) + (size_t)n);
  if (!w) abort();
  memcpy(w->data, buf->base, (size_t)n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, s, &b, 1, on_written)) free(w);
}

static void on_conn(uv_stream_t *server, int status) {
  if (status) return;
  conn_t *c = calloc(1, sizeof(*c));
  if (!c) abort();
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv) {
  char host[64];
  const char *colon = argc == 2 ? strrchr(argv[1], ':') : NULL;
  if (!colon || colon - argv[1] >= (long)sizeof(host)) {
    fprintf(stderr, "usage: tcp_echo ADDR:PORT\n");
    return 2;
  }
  memcpy(host, argv[1], (size_t)(colon - argv[1]));
  host[colon - argv[1]] = '\0';
  struct sockaddr_in a;
  uv_tcp_t server;
  if (uv_ip4_addr(host, atoi(colon + 1), &a) || uv_tcp_init(uv_default_loop(), &server) ||
      uv_tcp_bind(&server, (struct sockaddr *)&a, 0) ||
      uv_listen((uv_stream_t *)&server, 64, on_conn)) {
    fprintf(stderr, "tcp_echo: cannot listen on %s\n", argv[1]);
    return 1;
  }
  printf("listening\n");
  fflush(stdout);
  return uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}
