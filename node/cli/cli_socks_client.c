/* SPDX-License-Identifier: MIT */
/* connect --socks: a SOCKS5 server on a local port (RFC 1928: no
 * authentication, which a port bound to loopback does not need; CONNECT
 * to IPv4, IPv6 and names; UDP ASSOCIATE in cli_socks_udp.c). Each
 * CONNECT becomes a stream of the one kadpunch connection: the request
 * goes on the stream as it came (the server resolves names and applies its
 * allow list), the server's reply comes back the same way and is passed
 * on, and then the stream is a bridge (cli_bridge.c) with the backpressure
 * and half-closes of --listen. A program that does not speak SOCKS5 is
 * closed; one that sends a bad request gets its reply code, then closed. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_socks_client_internal.h"

/* From the TCP connection to the answer of its request. */
#define NEGOTIATE_MS 20000

static void on_local_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf);

/* ---- Sessions going away ----------------------------------------------------------------------
 */

void kp__socks_maybe_free(session_t *s) {
  if (!s->bridge_done || s->stream || s->timer_open || s->udp_open) return;
  kp_cli_socks_client_t *cl = s->cl;
  if (s->prev)
    s->prev->next = s->next;
  else
    cl->sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  cl->count--;
  free(s);
}

static void on_timer_closed(uv_handle_t *h) {
  session_t *s = h->data;
  s->timer_open = false;
  kp__socks_maybe_free(s);
}

static void on_stream_closed(kp_stream_t *st) {
  session_t *s = kp_stream_get_data(st);
  s->stream = NULL;
  kp__socks_maybe_free(s);
}

static void on_bridge_done(kp_cli_bridge_t *b, int status, uint64_t reset_code) {
  session_t *s = kp_cli_bridge_get_data(b);
  char why[160];
  if (status && status != UV_ECANCELED && s->state == S_BRIDGED && !s->cl->stopping) {
    fprintf(stderr, "kadpunch connect: socks: a connection ended: %s\n",
            kp_cli_bridge_why(status, reset_code, why, sizeof(why)));
    fflush(stderr);
  }
  s->bridge_done = true;
  s->state = S_DONE;
  kp__socks_maybe_free(s);
}

/* The negotiation is over, one way or the other. */
void kp__socks_stop_timer(session_t *s) {
  if (s->timer_open && !uv_is_closing((uv_handle_t *)&s->timer))
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

static void close_stream(session_t *s) {
  if (!s->stream) return;
  kp_stream_read_stop(s->stream);
  kp_stream_close(s->stream, on_stream_closed);
}

/* Something failed on our side: no answer, the connection is reset. */
static void fail(session_t *s, int status) {
  if (s->state == S_DONE) return;
  bool udp = s->state == S_UDP;
  s->state = S_DONE;
  kp__socks_stop_timer(s);
  close_stream(s);
  if (udp) kp__socks_udp_close(s);
  kp_cli_bridge_abort(s->b, status);
}

static void on_local_written(uv_write_t *req, int status) {
  session_t *s = req->data;
  (void)status; /* a failed write shows on the connection as a read error */
  s->lw_pending--;
}

void kp__socks_local_write(session_t *s, const uint8_t *data, size_t len) {
  uv_stream_t *h = kp_cli_bridge_local(s->b);
  if (!h || s->lw_next == 2 || len > sizeof(s->lbuf[0])) return;
  unsigned i = s->lw_next++;
  memcpy(s->lbuf[i], data, len);
  uv_buf_t buf = uv_buf_init((char *)s->lbuf[i], (unsigned)len);
  s->lw[i].data = s;
  if (!uv_write(&s->lw[i], h, &buf, 1, on_local_written)) s->lw_pending++;
}

void kp__socks_decline(session_t *s, uint8_t rep) {
  if (s->state == S_DONE) return;
  bool udp = s->state == S_UDP;
  s->state = S_DONE;
  uint8_t msg[KP_CLI_SOCKS_MSG_MAX];
  size_t n = kp_cli_socks_put_reply(msg, rep, NULL);
  kp__socks_local_write(s, msg, n);
  kp__socks_stop_timer(s);
  close_stream(s);
  if (udp) kp__socks_udp_close(s);
  kp_cli_bridge_decline(s->b, rep == KP_CLI_SOCKS_OK ? 0 : UV_ECONNREFUSED);
}

static void on_timeout(uv_timer_t *t) {
  session_t *s = t->data;
  if (s->state == S_GREETING || s->state == S_REQUEST) {
    fail(s, UV_ETIMEDOUT); /* a program that never asked gets no answer */
    return;
  }
  fprintf(stderr, "kadpunch connect: socks: no answer from the peer in %d ms\n", NEGOTIATE_MS);
  fflush(stderr);
  kp__socks_decline(s, KP_CLI_SOCKS_TTL_EXPIRED);
}

/* ---- The server's reply, then the bridge ------------------------------------------------------
 */

static void on_reply(kp_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  session_t *s = kp_stream_get_data(st);
  if (s->state != S_WAIT_REPLY) return;
  if (n < 0) {
    /* The peer could not take the stream (too many, the connection died). */
    fprintf(stderr, "kadpunch connect: socks: the peer did not answer: %s\n", kp_strerror((int)n));
    fflush(stderr);
    kp__socks_decline(s, KP_CLI_SOCKS_FAILURE);
    return;
  }
  size_t take = (size_t)n < sizeof(s->rep) - s->rep_len ? (size_t)n : sizeof(s->rep) - s->rep_len;
  memcpy(s->rep + s->rep_len, buf->base, take);
  size_t before = s->rep_len;
  s->rep_len += take;
  uint8_t rep;
  kp_cli_socks_addr_t bnd;
  int used = kp_cli_socks_parse_reply(s->rep, s->rep_len, &rep, &bnd);
  if (used == 0) return;
  if (used < 0) {
    kp__socks_decline(s, KP_CLI_SOCKS_FAILURE);
    return;
  }
  char dst[300];
  kp_cli_socks_addr_text(&s->dst, dst, sizeof(dst));
  if (rep != KP_CLI_SOCKS_OK) {
    fprintf(stderr, "kadpunch connect: socks: %s: %s\n", dst, kp_cli_socks_reply_text(rep));
    fflush(stderr);
    kp__socks_decline(s, rep);
    return;
  }
  /* The reply as the server made it, then the bytes: what came behind the
   * reply goes to the program, what the program sent behind its request
   * goes on the stream. */
  kp__socks_local_write(s, s->rep, (size_t)used);
  size_t rest = (size_t)n - ((size_t)used - before);
  const uint8_t *after = (const uint8_t *)buf->base + ((size_t)used - before);
  if (kp_cli_bridge_preload(s->b, after, rest, s->in + s->in_used, s->in_len - s->in_used)) {
    fail(s, UV_ENOMEM);
    return;
  }
  kp_stream_read_stop(st);
  s->stream = NULL; /* the bridge's from here */
  s->state = S_BRIDGED;
  kp__socks_stop_timer(s);
  kp_cli_bridge_start(s->b, st);
}

static void open_stream(session_t *s, kp_conn_t *conn) {
  kp_stream_t *st;
  int err = kp_stream_open(conn, &st);
  if (err) {
    kp__socks_decline(s, KP_CLI_SOCKS_FAILURE);
    return;
  }
  s->stream = st;
  kp_stream_set_data(st, s);
  s->state = S_WAIT_REPLY;
  size_t n = kp_cli_socks_put_request(s->req, KP_CLI_SOCKS_CONNECT, &s->dst);
  uv_buf_t buf = uv_buf_init((char *)s->req, (unsigned)n);
  memset(&s->sreq, 0, sizeof(s->sreq));
  if (!n || kp_stream_write(&s->sreq, st, &buf, 1, NULL) || kp_stream_read_start(st, on_reply))
    kp__socks_decline(s, KP_CLI_SOCKS_FAILURE);
}

/* ---- The program's greeting and request -------------------------------------------------------
 */

static void request(session_t *s) {
  int used =
      kp_cli_socks_parse_request(s->in + s->in_used, s->in_len - s->in_used, &s->cmd, &s->dst);
  if (used == 0) return;
  if (used == KP_CLI_SOCKS_EVERSION) {
    fail(s, UV_EPROTO);
    return;
  }
  if (used < 0) {
    fprintf(stderr, "kadpunch connect: socks: a malformed request: %s\n",
            kp_cli_socks_reply_text((uint8_t)-used));
    fflush(stderr);
    kp__socks_decline(s, (uint8_t)-used);
    return;
  }
  s->in_used += (size_t)used;
  uv_read_stop(kp_cli_bridge_local(s->b));
  if (s->cmd == KP_CLI_SOCKS_UDP_ASSOCIATE) {
    kp__socks_udp_start(s);
    return;
  }
  if (s->cmd != KP_CLI_SOCKS_CONNECT) {
    fprintf(stderr, "kadpunch connect: socks: command %u: %s\n", s->cmd,
            kp_cli_socks_reply_text(KP_CLI_SOCKS_BAD_COMMAND));
    fflush(stderr);
    kp__socks_decline(s, KP_CLI_SOCKS_BAD_COMMAND);
    return;
  }
  s->state = S_WAIT_CONN;
  kp_conn_t *conn = s->cl->link.conn(s->cl->link.ctx);
  if (conn && s->state == S_WAIT_CONN) open_stream(s, conn);
}

static void negotiate(session_t *s) {
  if (s->state == S_GREETING) {
    bool no_auth;
    int used = kp_cli_socks_parse_greeting(s->in, s->in_len, &no_auth);
    if (used == 0) return;
    if (used < 0) {
      fail(s, UV_EPROTO); /* not SOCKS5: nothing to answer in */
      return;
    }
    s->in_used = (size_t)used;
    /* "No authentication" or nothing: X'FF', then the program closes. */
    const uint8_t choice[2] = {KP_CLI_SOCKS_VERSION, no_auth ? 0x00 : 0xff};
    kp__socks_local_write(s, choice, 2);
    if (!no_auth) {
      s->state = S_DONE;
      kp__socks_stop_timer(s);
      kp_cli_bridge_decline(s->b, UV_EACCES);
      return;
    }
    s->state = S_REQUEST;
  }
  if (s->state == S_REQUEST) request(s);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  session_t *s = kp_cli_bridge_get_data(h->data);
  (void)suggested;
  *buf = uv_buf_init((char *)s->in + s->in_len, (unsigned)(sizeof(s->in) - s->in_len));
}

static void on_local_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf) {
  session_t *s = kp_cli_bridge_get_data(h->data);
  (void)buf;
  if (n < 0) {
    fail(s, n == UV_EOF ? UV_ECANCELED : (int)n); /* gone before it asked */
    return;
  }
  s->in_len += (size_t)n;
  negotiate(s);
  if (s->in_len == sizeof(s->in) && (s->state == S_GREETING || s->state == S_REQUEST))
    fail(s, UV_EPROTO); /* no request is this long */
}

void kp_cli_socks_client_accept(kp_cli_socks_client_t *cl, uv_stream_t *server) {
  session_t *s = calloc(1, sizeof(*s));
  int err = s ? kp_cli_bridge_new(cl->loop, &cl->bridges, on_bridge_done, s, &s->b) : UV_ENOMEM;
  if (err) {
    free(s);
    fprintf(stderr, "kadpunch connect: accepting a SOCKS connection: %s\n", uv_strerror(err));
    return;
  }
  s->cl = cl;
  s->next = cl->sessions;
  if (cl->sessions) cl->sessions->prev = s;
  cl->sessions = s;
  cl->count++;
  uv_timer_init(cl->loop, &s->timer);
  s->timer.data = s;
  s->timer_open = true;
  err = kp_cli_bridge_accept(s->b, server);
  if (!err && (cl->stopping || cl->count > KP_CLI_SOCKS_CLIENT_MAX)) err = UV_EMFILE;
  if (!err) err = uv_read_start(kp_cli_bridge_local(s->b), on_alloc, on_local_read);
  if (!err) err = uv_timer_start(&s->timer, on_timeout, NEGOTIATE_MS, 0);
  if (err) fail(s, err);
}

/* ---- The connection comes and goes ------------------------------------------------------------
 */

void kp_cli_socks_client_connected(kp_cli_socks_client_t *cl, kp_conn_t *conn) {
  for (session_t *s = cl->sessions, *next; s; s = next) {
    next = s->next;
    if (s->state == S_WAIT_CONN) open_stream(s, conn);
  }
}

void kp_cli_socks_client_conn_failed(kp_cli_socks_client_t *cl, int status) {
  (void)status; /* the connect's own message said why */
  for (session_t *s = cl->sessions, *next; s; s = next) {
    next = s->next;
    if (s->state == S_WAIT_CONN) kp__socks_decline(s, KP_CLI_SOCKS_HOST_UNREACHABLE);
  }
}

void kp_cli_socks_client_conn_closed(kp_cli_socks_client_t *cl, const kp_conn_t *conn) {
  /* Streams waiting for a reply hear of it on their reads; bridges are
   * reset, as --listen's are. */
  kp_cli_bridges_abort(&cl->bridges, conn, UV_ECANCELED);
}

unsigned kp_cli_socks_client_count(const kp_cli_socks_client_t *cl) {
  return cl->count;
}

int kp_cli_socks_client_new(uv_loop_t *loop, const kp_cli_link_t *link,
                            kp_cli_socks_client_t **out) {
  kp_cli_socks_client_t *cl = calloc(1, sizeof(*cl));
  *out = cl;
  if (!cl) return UV_ENOMEM;
  cl->loop = loop;
  cl->link = *link;
  return 0;
}

void kp_cli_socks_client_stop(kp_cli_socks_client_t *cl) {
  cl->stopping = true;
  for (session_t *s = cl->sessions, *next; s; s = next) {
    next = s->next;
    fail(s, UV_ECANCELED);
  }
}

void kp_cli_socks_client_free(kp_cli_socks_client_t *cl) {
  free(cl);
}
