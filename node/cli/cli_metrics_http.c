/* SPDX-License-Identifier: MIT */
/* --metrics: the HTTP side (cli_metrics.h). Each connection sends one
 * request head; it gets one answer and is closed. A connection past the
 * limit is closed at once; one that has not finished its head within
 * KP_CLI_METRICS_TIMEOUT_MS is closed too. */
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"
#include "node/cli/cli.h"
#include "node/cli/cli_http.h"
#include "node/cli/cli_metrics.h"

typedef struct client_s client_t;

struct kp_cli_metrics_s {
  uv_loop_t *loop;
  kp_node_t *node;
  uv_tcp_t server;
  kp_cli_metrics_fn extra;
  void *ctx;
  client_t *clients;
  unsigned count;   /* clients */
  unsigned handles; /* open handles: the server's and two per client */
  bool closing;
};

struct client_s {
  kp_cli_metrics_t *m;
  client_t *next, *prev;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write;
  char head[KP_CLI_HTTP_HEAD_MAX];
  size_t len;
  bool answered, closing;
  int open;          /* its handles not closed yet: freed at 0 */
  kp_cli_text_t out; /* the answer, alive until written */
};

static void maybe_free(kp_cli_metrics_t *m) {
  if (m->closing && !m->handles) free(m);
}

static void on_client_handle_closed(uv_handle_t *h) {
  client_t *c = h->data;
  kp_cli_metrics_t *m = c->m;
  m->handles--;
  /* libuv runs close callbacks in no promised order: the last one frees. */
  if (--c->open == 0) {
    free(c->out.buf);
    free(c);
  }
  maybe_free(m);
}

static void client_close(client_t *c) {
  if (c->closing) return;
  c->closing = true;
  kp_cli_metrics_t *m = c->m;
  if (c->prev)
    c->prev->next = c->next;
  else
    m->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  m->count--;
  uv_close((uv_handle_t *)&c->tcp, on_client_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void on_timeout(uv_timer_t *t) {
  client_close(t->data);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  client_close(w->data);
}

static void answer(client_t *c, kp_cli_http_result_t r) {
  kp_cli_metrics_t *m = c->m;
  const char *reason;
  int code = kp_cli_http_status(r, &reason);
  kp_cli_text_t body = {0};
  if (r == KP_CLI_HTTP_GET_METRICS || r == KP_CLI_HTTP_HEAD_METRICS) {
    kp_cli_metrics_node(m->node, &body);
    if (m->extra) m->extra(m->ctx, &body);
    if (body.failed) code = 500, reason = "Internal Server Error";
  } else {
    kp_cli_text_printf(&body, "%d %s: the metrics are at /metrics\n", code, reason);
  }
  size_t body_len = body.failed ? 0 : body.len;
  kp_cli_text_printf(&c->out,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     code, reason, body_len, code == 405 ? "Allow: GET, HEAD\r\n" : "");
  c->answered = true;
  uv_buf_t bufs[2] = {uv_buf_init(c->out.buf, (unsigned)c->out.len),
                      uv_buf_init(body.buf, (unsigned)body_len)};
  bool with_body = r != KP_CLI_HTTP_HEAD_METRICS && body_len;
  /* The head and the body go in one write; the body is copied into out so
   * that one buffer outlives the call. */
  if (with_body) {
    kp_cli_text_printf(&c->out, "%.*s", (int)body_len, body.buf);
    bufs[0] = uv_buf_init(c->out.buf, (unsigned)c->out.len);
  }
  free(body.buf);
  c->write.data = c;
  if (c->out.failed || uv_write(&c->write, (uv_stream_t *)&c->tcp, bufs, 1, on_written))
    client_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->head + c->len, (unsigned)(sizeof(c->head) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (c->answered) return; /* whatever else it sends is not read */
  if (n < 0) {
    client_close(c);
    return;
  }
  c->len += (size_t)n;
  kp_cli_http_result_t r = kp_cli_http_parse(c->head, c->len);
  if (r == KP_CLI_HTTP_INCOMPLETE && c->len == sizeof(c->head)) r = KP_CLI_HTTP_TOO_LARGE;
  if (r == KP_CLI_HTTP_INCOMPLETE) return;
  uv_read_stop(s);
  answer(c, r);
}

static void on_connection(uv_stream_t *server, int status) {
  kp_cli_metrics_t *m = server->data;
  if (status || m->closing) return;
  client_t *c = calloc(1, sizeof(*c));
  if (!c) return;
  c->m = m;
  uv_tcp_init(m->loop, &c->tcp);
  uv_timer_init(m->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  m->handles += 2;
  c->open = 2;
  c->next = m->clients;
  if (m->clients) m->clients->prev = c;
  m->clients = c;
  m->count++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) || m->count > KP_CLI_METRICS_CONNS_MAX) {
    client_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_timeout, KP_CLI_METRICS_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* "PORT", "localhost:PORT", "IP:PORT" or "[IPv6]:PORT". */
static bool parse_addr(const char *text, struct sockaddr_storage *out) {
  unsigned long port;
  kp_addr_t a;
  memset(out, 0, sizeof(*out));
  if (kp_cli_parse_uint(text, 0, 65535, &port) ||
      (!strncmp(text, "localhost:", 10) && kp_cli_parse_uint(text + 10, 0, 65535, &port)))
    return !uv_ip4_addr("127.0.0.1", (int)port, (struct sockaddr_in *)out);
  const char *colon = strrchr(text, ':');
  if (kp_addr_parse(&a, text) || !colon || (text[0] == '[' && colon[-1] != ']')) return false;
  char ip[KP_ADDR_STRLEN];
  kp_addr_format(&a, ip, sizeof(ip));
  /* kp_addr_format gives "1.2.3.4:5" or "[::1]:5": the address part. */
  char *end = strrchr(ip, ':');
  *end = '\0';
  if (a.family == KP_AF_INET) return !uv_ip4_addr(ip, a.port, (struct sockaddr_in *)out);
  ip[strlen(ip) - 1] = '\0';
  return !uv_ip6_addr(ip + 1, a.port, (struct sockaddr_in6 *)out);
}

static void on_server_closed(uv_handle_t *h) {
  kp_cli_metrics_t *m = h->data;
  m->handles--;
  maybe_free(m);
}

int kp_cli_metrics_start(uv_loop_t *loop, kp_node_t *node, const char *addr, const char *cmd,
                         kp_cli_metrics_fn extra, void *ctx, kp_cli_metrics_t **out) {
  struct sockaddr_storage ss;
  *out = NULL;
  if (!parse_addr(addr, &ss))
    return kp_cli_usage_error(cmd, "--metrics '%s': expected ADDR:PORT, localhost:PORT or PORT",
                              addr);
  kp_cli_metrics_t *m = calloc(1, sizeof(*m));
  if (!m) return KP_EXIT_FAIL;
  m->loop = loop;
  m->node = node;
  m->extra = extra;
  m->ctx = ctx;
  uv_tcp_init(loop, &m->server);
  m->server.data = m;
  m->handles = 1;
  int err = uv_tcp_bind(&m->server, (const struct sockaddr *)&ss, 0);
  if (!err) err = uv_listen((uv_stream_t *)&m->server, 64, on_connection);
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  if (!err) err = uv_tcp_getsockname(&m->server, (struct sockaddr *)&bound, &len);
  char text[64];
  if (err) {
    fprintf(stderr, "kadpunch %s: --metrics: cannot listen on %s: %s\n", cmd,
            kp_cli_sockaddr_format(&ss, text), uv_strerror(err));
    m->closing = true;
    uv_close((uv_handle_t *)&m->server, on_server_closed);
    return KP_EXIT_FAIL;
  }
  printf("metrics on http://%s/metrics\n", kp_cli_sockaddr_format(&bound, text));
  fflush(stdout);
  *out = m;
  return 0;
}

void kp_cli_metrics_close(kp_cli_metrics_t *m) {
  if (!m || m->closing) return;
  m->closing = true;
  while (m->clients) client_close(m->clients);
  uv_close((uv_handle_t *)&m->server, on_server_closed);
}
