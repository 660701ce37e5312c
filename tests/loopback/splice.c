/* SPDX-License-Identifier: MIT */
/* Splices for tests (splice.h). */
#include "tests/loopback/splice.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tests/harness/test.h"

#define CHUNK 65536

/* An accepted connection (side 0) and the one made for it (side 1). */
typedef struct pair_s {
  kp_tcp_splice_t *sp;
  uv_tcp_t side[2];
  uv_connect_t connect;
  unsigned open; /* handles not yet closed */
  bool ending;
  struct pair_s *next;
} pair_t;

typedef struct chunk_s {
  uv_write_t req;
  char data[CHUNK];
} chunk_t;

static pair_t *pairs; /* every pair alive, for kp_tcp_splice_stop */

static void side_closed(uv_handle_t *h) {
  pair_t *p = h->data;
  if (--p->open) return;
  for (pair_t **q = &pairs; *q; q = &(*q)->next)
    if (*q == p) {
      *q = p->next;
      break;
    }
  free(p);
}

static void pair_end(pair_t *p) {
  if (p->ending) return;
  p->ending = true;
  for (int i = 0; i < 2; i++) uv_close((uv_handle_t *)&p->side[i], side_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h, (void)suggested;
  chunk_t *c = malloc(sizeof(*c));
  *buf = uv_buf_init(c ? c->data : NULL, c ? CHUNK : 0);
}

static void on_written(uv_write_t *req, int status) {
  (void)status; /* a failed write ends the pair at its next read */
  free(req->data);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pair_t *p = s->data;
  chunk_t *c = buf->base ? (chunk_t *)(buf->base - offsetof(chunk_t, data)) : NULL;
  if (n <= 0 || p->ending) {
    free(c);
    if (n < 0) pair_end(p);
    return;
  }
  uv_stream_t *other = (uv_stream_t *)&p->side[s == (uv_stream_t *)&p->side[0] ? 1 : 0];
  uv_buf_t out = uv_buf_init(c->data, (unsigned)n);
  c->req.data = c;
  p->sp->bytes += (uint64_t)n;
  if (uv_write(&c->req, other, &out, 1, on_written)) {
    free(c);
    pair_end(p);
  }
}

static void on_connected(uv_connect_t *req, int status) {
  pair_t *p = req->data;
  if (p->ending) return;
  if (status) {
    pair_end(p);
    return;
  }
  for (int i = 0; i < 2; i++) uv_read_start((uv_stream_t *)&p->side[i], on_alloc, on_read);
}

static void on_connection(uv_stream_t *listener, int status) {
  kp_tcp_splice_t *sp = listener->data;
  if (status) return;
  pair_t *p = calloc(1, sizeof(*p));
  KP_CHECK(p != NULL);
  if (!p) return; /* the test has failed; the connection waits in the backlog */
  p->sp = sp;
  for (int i = 0; i < 2; i++) {
    uv_tcp_init(sp->loop, &p->side[i]);
    p->side[i].data = p;
  }
  p->open = 2;
  p->next = pairs;
  pairs = p;
  if (uv_accept(listener, (uv_stream_t *)&p->side[0])) {
    pair_end(p);
    return;
  }
  sp->accepted++;
  struct sockaddr_in to;
  uv_ip4_addr("127.0.0.1", sp->to_port, &to);
  p->connect.data = p;
  if (uv_tcp_connect(&p->connect, &p->side[1], (struct sockaddr *)&to, on_connected)) pair_end(p);
}

void kp_tcp_splice_start(uv_loop_t *loop, kp_tcp_splice_t *sp, int port, int to_port) {
  memset(sp, 0, sizeof(*sp));
  sp->loop = loop;
  sp->to_port = to_port;
  struct sockaddr_in at;
  uv_ip4_addr("127.0.0.1", port, &at);
  KP_CHECK_OK(uv_tcp_init(loop, &sp->listener));
  sp->listener.data = sp;
  KP_CHECK_OK(uv_tcp_bind(&sp->listener, (struct sockaddr *)&at, 0));
  KP_CHECK_OK(uv_listen((uv_stream_t *)&sp->listener, 16, on_connection));
}

void kp_tcp_splice_stop(kp_tcp_splice_t *sp) {
  uv_close((uv_handle_t *)&sp->listener, NULL);
  for (pair_t *p = pairs; p; p = p->next)
    if (p->sp == sp) pair_end(p);
}

/* ---- UDP ---------------------------------------------------------------------------------------
 */

static char udp_buf[65536]; /* one datagram at a time: sent before the next is read */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h, (void)suggested;
  *buf = uv_buf_init(udp_buf, sizeof(udp_buf));
}

/* Sent at once or lost, as UDP may be. */
static void udp_pass(kp_udp_splice_t *sp, uv_udp_t *via, const struct sockaddr *to,
                     const char *data, ssize_t n) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
  if (sp->max_len && (size_t)n > sp->max_len) {
    sp->too_long++;
    return;
  }
  if (uv_udp_try_send(via, &b, 1, to) == n) sp->datagrams++;
}

static void on_at_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                       unsigned flags) {
  kp_udp_splice_t *sp = h->data;
  (void)flags;
  if (n <= 0 || !from || !sp->open) return;
  memcpy(&sp->sender, from,
         from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  sp->heard = true;
  struct sockaddr_in to;
  uv_ip4_addr("127.0.0.1", sp->to_port, &to);
  udp_pass(sp, &sp->out, (struct sockaddr *)&to, buf->base, n);
}

static void on_out_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                        unsigned flags) {
  kp_udp_splice_t *sp = h->data;
  (void)flags;
  if (n <= 0 || !from || !sp->heard) return;
  udp_pass(sp, &sp->at, (struct sockaddr *)&sp->sender, buf->base, n);
}

void kp_udp_splice_start(uv_loop_t *loop, kp_udp_splice_t *sp, int port, int to_port) {
  memset(sp, 0, sizeof(*sp));
  sp->to_port = to_port;
  struct sockaddr_in at, any;
  uv_ip4_addr("127.0.0.1", port, &at);
  uv_ip4_addr("127.0.0.1", 0, &any);
  KP_CHECK_OK(uv_udp_init(loop, &sp->at));
  KP_CHECK_OK(uv_udp_init(loop, &sp->out));
  KP_CHECK_OK(uv_udp_bind(&sp->at, (struct sockaddr *)&at, 0));
  KP_CHECK_OK(uv_udp_bind(&sp->out, (struct sockaddr *)&any, 0));
  sp->at.data = sp->out.data = sp;
  KP_CHECK_OK(uv_udp_recv_start(&sp->at, udp_alloc, on_at_recv));
  KP_CHECK_OK(uv_udp_recv_start(&sp->out, udp_alloc, on_out_recv));
}

void kp_udp_splice_open(kp_udp_splice_t *sp) {
  sp->open = true;
}

void kp_udp_splice_close(kp_udp_splice_t *sp) {
  sp->open = false;
}

void kp_udp_splice_stop(kp_udp_splice_t *sp) {
  uv_close((uv_handle_t *)&sp->at, NULL);
  uv_close((uv_handle_t *)&sp->out, NULL);
}
