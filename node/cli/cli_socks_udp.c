/* SPDX-License-Identifier: MIT */
/* connect --socks, UDP ASSOCIATE (RFC 1928 section 7): a UDP socket on the
 * SOCKS port's address for the program's datagrams, answered with its
 * address. Each datagram (a SOCKS UDP header naming the destination, then
 * the payload) goes to the peer as a datagram of the connection: the
 * association's flow id, the destination, the payload (docs/protocol.md,
 * "UDP services"); the peer's answers come back with their source and are
 * handed to the program with a SOCKS UDP header. Only datagrams from the
 * program's own host are taken (the first one fixes its port), and the
 * association lasts as long as the program's TCP connection. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_socks_client_internal.h"

static void on_udp_closed(uv_handle_t *h) {
  session_t *s = h->data;
  s->udp_open = false;
  /* The TCP connection goes after (the bridge's end frees the session). */
  if (!s->bridge_done)
    kp_cli_bridge_decline(s->b, 0);
  else
    kp__socks_maybe_free(s);
}

void kp__socks_udp_close(session_t *s) {
  if (s->udp_open && !uv_is_closing((uv_handle_t *)&s->udp))
    uv_close((uv_handle_t *)&s->udp, on_udp_closed);
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr *b) {
  kp_cli_socks_addr_t x, y;
  kp_cli_socks_addr_from_sockaddr(&x, (const struct sockaddr *)a);
  kp_cli_socks_addr_from_sockaddr(&y, b);
  return x.type == y.type && !memcmp(x.ip, y.ip, 16);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b) {
  kp_cli_socks_addr_t x, y;
  kp_cli_socks_addr_from_sockaddr(&x, (const struct sockaddr *)a);
  kp_cli_socks_addr_from_sockaddr(&y, b);
  return x.type == y.type && !memcmp(x.ip, y.ip, 16) && x.port == y.port;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  session_t *s = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)s->cl->dgram, sizeof(s->cl->dgram));
}

/* From the program: to the peer. */
static void on_app_datagram(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                            const struct sockaddr *from, unsigned flags) {
  session_t *s = h->data;
  (void)flags;
  if (n <= 0 || !from || s->state != S_UDP) return;
  if (!same_host(&s->peer, from)) return; /* not the program's host: dropped */
  if (!s->app_known) {
    memcpy(&s->app, from,
           from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    s->app_known = true;
  } else if (!same_addr(&s->app, from)) {
    return;
  }
  kp_cli_socks_addr_t dst;
  int hdr = kp_cli_socks_parse_udp((const uint8_t *)buf->base, (size_t)n, &dst);
  if (hdr < 0 || dst.type == KP_CLI_SOCKS_ATYP_NAME) return; /* names: see the server's flows */
  kp_conn_t *conn = s->cl->link.conn(s->cl->link.ctx);
  if (!conn) return; /* connecting: UDP's way is to drop */
  /* flow id | ATYP ADDR PORT | payload */
  uint8_t *out = s->cl->out;
  size_t len = kp_cli_udp_put_flow(out, s->flow);
  len += kp_cli_socks_put_addr(out + len, &dst);
  size_t payload = (size_t)n - (size_t)hdr;
  if (len + payload > sizeof(s->cl->out)) return;
  memcpy(out + len, buf->base + hdr, payload);
  kp_conn_datagram_send(conn, out, len + payload); /* a refusal is a counted drop */
}

/* From the peer: to the program. */
void kp_cli_socks_client_datagram(kp_cli_socks_client_t *cl, const uint8_t *data, size_t len) {
  uint64_t flow;
  size_t used = kp_cli_udp_get_flow(data, len, &flow);
  if (!used) return;
  session_t *s = cl->sessions;
  while (s && !(s->state == S_UDP && s->flow == flow)) s = s->next;
  if (!s || !s->app_known) return;
  kp_cli_socks_addr_t src;
  int n = kp_cli_socks_parse_addr(data + used, len - used, &src);
  if (n <= 0) return;
  used += (size_t)n;
  size_t hdr = kp_cli_socks_put_udp(cl->dgram, &src);
  if (!hdr || hdr + len - used > sizeof(cl->dgram)) return;
  memcpy(cl->dgram + hdr, data + used, len - used);
  uv_buf_t b = uv_buf_init((char *)cl->dgram, (unsigned)(hdr + len - used));
  uv_udp_try_send(&s->udp, &b, 1, (const struct sockaddr *)&s->app);
}

/* The TCP connection only says how long the association lasts. */
static void on_control_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  session_t *s = kp_cli_bridge_get_data(h->data);
  (void)suggested;
  *buf = uv_buf_init((char *)s->in, sizeof(s->in));
}

static void on_control_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf) {
  session_t *s = kp_cli_bridge_get_data(h->data);
  (void)buf;
  if (n >= 0 || s->state != S_UDP) return;
  s->state = S_DONE;
  kp__socks_udp_close(s);
}

void kp__socks_udp_start(session_t *s) {
  uv_tcp_t *tcp = (uv_tcp_t *)kp_cli_bridge_local(s->b);
  struct sockaddr_storage local;
  int len = sizeof(local), err = uv_tcp_getsockname(tcp, (struct sockaddr *)&local, &len);
  len = sizeof(s->peer);
  if (!err) err = uv_tcp_getpeername(tcp, (struct sockaddr *)&s->peer, &len);
  /* A socket on the SOCKS port's own address (loopback by default). */
  if (local.ss_family == AF_INET6)
    ((struct sockaddr_in6 *)&local)->sin6_port = 0;
  else
    ((struct sockaddr_in *)&local)->sin_port = 0;
  if (!err) err = uv_udp_init(s->cl->loop, &s->udp);
  if (err) {
    kp__socks_decline(s, KP_CLI_SOCKS_FAILURE);
    return;
  }
  s->udp.data = s;
  s->udp_open = true;
  s->state = S_UDP;
  s->flow = ++s->cl->next_flow;
  err = uv_udp_bind(&s->udp, (const struct sockaddr *)&local, 0);
  len = sizeof(local);
  if (!err) err = uv_udp_getsockname(&s->udp, (struct sockaddr *)&local, &len);
  if (!err) err = uv_udp_recv_start(&s->udp, on_alloc, on_app_datagram);
  if (!err) err = uv_read_start((uv_stream_t *)tcp, on_control_alloc, on_control_read);
  if (err) {
    kp__socks_decline(s, KP_CLI_SOCKS_FAILURE);
    return;
  }
  kp_cli_socks_addr_t bnd;
  kp_cli_socks_addr_from_sockaddr(&bnd, (const struct sockaddr *)&local);
  uint8_t reply[KP_CLI_SOCKS_MSG_MAX];
  kp__socks_local_write(s, reply, kp_cli_socks_put_reply(reply, KP_CLI_SOCKS_OK, &bnd));
  kp__socks_stop_timer(s);
}
