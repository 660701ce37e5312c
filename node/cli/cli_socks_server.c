/* SPDX-License-Identifier: MIT */
/* serve --socks: every stream of a client's "socks" connection starts with
 * a SOCKS5 request (docs/protocol.md, "SOCKS through a peer"). It is read
 * (within KP_CLI_SOCKS_REQUEST_MS), its name resolved here (the client's
 * own DNS never sees the names of this network), checked against the
 * allow list, connected, and answered with a SOCKS5 reply on the stream;
 * then the stream is a bridge to that TCP connection (cli_bridge.c), with
 * its backpressure and half-closes. Every refusal is answered with its
 * reply code and logged on stderr. */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_bridge.h"
#include "node/cli/cli_socks.h"

/* Requests waiting for their bytes or their name, and connections made,
 * over all clients: each connection is a file descriptor. Past either a
 * stream is refused (a client may hold 256 streams open per connection,
 * and 32 connections: without the first bound, half-sent requests would
 * hold 8192 of these per client key). */
#define MAX_REQUESTS 256
#define MAX_BRIDGES 512

typedef struct request_s request_t;

struct kp_cli_socks_server_s {
  uv_loop_t *loop;
  kp_cli_socks_allow_t allow;
  kp_cli_bridges_t bridges;
  request_t *requests;
  unsigned request_count;
  kp_cli_socks_stats_t stats;
};

/* A stream whose request is being read or resolved, or refused and
 * being answered. */
struct request_s {
  request_t *prev, *next;
  kp_cli_socks_server_t *sv;
  const kp_conn_t *conn;
  kp_stream_t *stream; /* ours until handed to a bridge or closed */
  char who[KP_KEY_TEXT_LEN + 1];
  uint8_t buf[KP_CLI_SOCKS_MSG_MAX];
  size_t len;
  char *rest; /* bytes after the request: the service's, once connected */
  size_t rest_len;
  kp_cli_socks_addr_t dst;
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  bool resolving, timer_open, done;
  kp_write_t reply_req;
  uint8_t reply[KP_CLI_SOCKS_MSG_MAX];
};

/* A bridge's data: where it went, for the reply and the log. */
typedef struct bridged_s {
  kp_cli_socks_server_t *sv;
  char who[KP_KEY_TEXT_LEN + 1];
  char dst[300];
  kp_write_t reply_req;
  uint8_t reply[KP_CLI_SOCKS_MSG_MAX];
} bridged_t;

/* ---- Requests going away ----------------------------------------------------------------- */

static void maybe_free(request_t *r) {
  if (!r->done || r->stream || r->resolving || r->timer_open) return;
  kp_cli_socks_server_t *sv = r->sv;
  if (r->prev)
    r->prev->next = r->next;
  else
    sv->requests = r->next;
  if (r->next) r->next->prev = r->prev;
  sv->request_count--;
  free(r->rest);
  free(r);
}

static void on_timer_closed(uv_handle_t *h) {
  request_t *r = h->data;
  r->timer_open = false;
  maybe_free(r);
}

static void on_stream_closed(kp_stream_t *s) {
  request_t *r = kp_stream_get_data(s);
  r->stream = NULL;
  maybe_free(r);
}

/* The request is over (answered, handed on or abandoned). */
static void finish(request_t *r) {
  if (r->done) return;
  r->done = true;
  if (r->resolving) uv_cancel((uv_req_t *)&r->gai);
  if (r->timer_open && !uv_is_closing((uv_handle_t *)&r->timer))
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
  maybe_free(r);
}

static void abandon(request_t *r) {
  if (r->stream) {
    kp_stream_reset(r->stream, KP_CLI_RESET_LOCAL);
    kp_stream_close(r->stream, on_stream_closed);
  }
  finish(r);
}

/* Answers with rep, says why on stderr, and ends the stream. */
static void refuse(request_t *r, uint8_t rep, const char *why) {
  char dst[300] = "?";
  if (r->dst.type) kp_cli_socks_addr_text(&r->dst, dst, sizeof(dst));
  fprintf(stderr, "kadpunch serve: socks: %.12s... -> %s refused: %s%s%s\n", r->who, dst,
          kp_cli_socks_reply_text(rep), why ? ": " : "", why ? why : "");
  fflush(stderr);
  r->sv->stats.refused++;
  size_t n = kp_cli_socks_put_reply(r->reply, rep, NULL);
  uv_buf_t b = uv_buf_init((char *)r->reply, (unsigned)n);
  kp_stream_read_stop(r->stream);
  if (kp_stream_write(&r->reply_req, r->stream, &b, 1, NULL) || kp_stream_end(r->stream))
    kp_stream_reset(r->stream, KP_CLI_RESET_LOCAL);
  kp_stream_close(r->stream, on_stream_closed);
  finish(r);
}

/* ---- Connecting ---------------------------------------------------------------------------- */

static void on_bridge_done(kp_cli_bridge_t *b, int status, uint64_t reset_code) {
  bridged_t *x = kp_cli_bridge_get_data(b);
  (void)status, (void)reset_code;
  free(x);
}

static void on_connected(kp_cli_bridge_t *b, int status, const struct sockaddr *local) {
  bridged_t *x = kp_cli_bridge_get_data(b);
  kp_cli_socks_addr_t bnd;
  uint8_t rep = kp_cli_socks_reply_for(status);
  if (status) {
    fprintf(stderr, "kadpunch serve: socks: %.12s... -> %s failed: %s (%s)\n", x->who, x->dst,
            kp_cli_socks_reply_text(rep), uv_strerror(status));
    fflush(stderr);
    x->sv->stats.failed++;
  } else {
    kp_cli_socks_addr_from_sockaddr(&bnd, local);
    x->sv->stats.connected++;
  }
  /* The reply goes out ahead of the service's bytes; after an error the
   * bridge ends the stream behind it. */
  size_t n = kp_cli_socks_put_reply(x->reply, rep, status ? NULL : &bnd);
  uv_buf_t buf = uv_buf_init((char *)x->reply, (unsigned)n);
  kp_cli_bridge_write_stream(b, &x->reply_req, &buf);
}

static void connect_to(request_t *r, const struct sockaddr *addr) {
  kp_cli_socks_server_t *sv = r->sv;
  bridged_t *x = calloc(1, sizeof(*x));
  kp_cli_bridge_t *b = NULL;
  if (!x || sv->bridges.count >= MAX_BRIDGES ||
      kp_cli_bridge_new(sv->loop, &sv->bridges, on_bridge_done, x, &b)) {
    free(x);
    refuse(r, KP_CLI_SOCKS_FAILURE, "too many connections at once");
    return;
  }
  x->sv = sv;
  memcpy(x->who, r->who, sizeof(x->who));
  kp_cli_socks_addr_text(&r->dst, x->dst, sizeof(x->dst));
  kp_cli_bridge_on_connect(b, on_connected);
  kp_stream_t *s = r->stream;
  r->stream = NULL; /* the bridge's from here */
  kp_stream_read_stop(s);
  int err = kp_cli_bridge_preload(b, r->rest, r->rest_len, NULL, 0);
  if (!err) err = kp_cli_bridge_connect(b, s, addr);
  if (err) kp_cli_bridge_abort(b, err);
  finish(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  request_t *r = req->data;
  r->resolving = false;
  if (r->done || status) {
    if (res) uv_freeaddrinfo(res);
    if (!r->done) refuse(r, kp_cli_socks_reply_for(status), uv_strerror(status));
    maybe_free(r);
    return;
  }
  /* The first address the rules allow for this name (getaddrinfo's order:
   * RFC 6724's preferences). */
  const struct addrinfo *ok = NULL;
  for (const struct addrinfo *ai = res; ai && !ok; ai = ai->ai_next)
    if (kp_cli_socks_allowed(&r->sv->allow, r->dst.name, ai->ai_addr)) ok = ai;
  if (ok) {
    struct sockaddr_storage ss;
    memcpy(&ss, ok->ai_addr, ok->ai_addrlen);
    uv_freeaddrinfo(res);
    connect_to(r, (const struct sockaddr *)&ss);
    return;
  }
  char ip[64] = "?";
  if (res && res->ai_family == AF_INET)
    uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
  else if (res)
    uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
  char why[128];
  snprintf(why, sizeof(why), "resolves to %s", ip);
  uv_freeaddrinfo(res);
  refuse(r, KP_CLI_SOCKS_NOT_ALLOWED, why);
}

/* A whole request: CONNECT to an allowed address, or a name to resolve. */
static void serve_request(request_t *r, uint8_t cmd) {
  r->sv->stats.requests++;
  if (cmd != KP_CLI_SOCKS_CONNECT) {
    refuse(r, KP_CLI_SOCKS_BAD_COMMAND, "streams carry CONNECT only");
    return;
  }
  if (r->dst.type != KP_CLI_SOCKS_ATYP_NAME) {
    struct sockaddr_storage ss;
    kp_cli_socks_addr_to_sockaddr(&r->dst, &ss);
    if (!kp_cli_socks_allowed(&r->sv->allow, NULL, (const struct sockaddr *)&ss)) {
      refuse(r, KP_CLI_SOCKS_NOT_ALLOWED, NULL);
      return;
    }
    connect_to(r, (const struct sockaddr *)&ss);
    return;
  }
  char port[8];
  snprintf(port, sizeof(port), "%u", r->dst.port);
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  r->gai.data = r;
  int err = uv_getaddrinfo(r->sv->loop, &r->gai, on_resolved, r->dst.name, port, &hints);
  if (err) {
    refuse(r, KP_CLI_SOCKS_FAILURE, uv_strerror(err));
    return;
  }
  r->resolving = true;
}

/* ---- Reading the request ----------------------------------------------------------------- */

static void on_request_data(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  request_t *r = kp_stream_get_data(s);
  if (r->done) return;
  if (n < 0) {
    /* The client ended or reset the stream before asking anything. */
    kp_stream_close(r->stream, on_stream_closed);
    finish(r);
    return;
  }
  size_t take = (size_t)n < sizeof(r->buf) - r->len ? (size_t)n : sizeof(r->buf) - r->len;
  memcpy(r->buf + r->len, buf->base, take);
  size_t before = r->len;
  r->len += take;
  uint8_t cmd;
  int used = kp_cli_socks_parse_request(r->buf, r->len, &cmd, &r->dst);
  if (used == 0) return; /* more to come (a request is never longer than buf) */
  if (used == KP_CLI_SOCKS_EVERSION) {
    fprintf(stderr, "kadpunch serve: socks: %.12s...: not a SOCKS5 request: stream reset\n",
            r->who);
    r->sv->stats.refused++;
    abandon(r);
    return;
  }
  if (used < 0) {
    memset(&r->dst, 0, sizeof(r->dst));
    refuse(r, (uint8_t)-used, "malformed request");
    return;
  }
  /* What followed the request in this read is the service's. */
  size_t rest = (size_t)n - ((size_t)used - before);
  if (rest) {
    r->rest = malloc(rest);
    if (!r->rest) {
      refuse(r, KP_CLI_SOCKS_FAILURE, "out of memory");
      return;
    }
    memcpy(r->rest, buf->base + ((size_t)used - before), rest);
    r->rest_len = rest;
  }
  kp_stream_read_stop(s);
  serve_request(r, cmd);
}

static void on_request_timeout(uv_timer_t *t) {
  request_t *r = t->data;
  fprintf(stderr, "kadpunch serve: socks: %.12s...: no whole request in %d ms: stream reset\n",
          r->who, KP_CLI_SOCKS_REQUEST_MS);
  r->sv->stats.refused++;
  abandon(r);
}

void kp_cli_socks_server_stream(kp_cli_socks_server_t *sv, kp_conn_t *conn, kp_stream_t *s,
                                const char *who) {
  request_t *r = sv->request_count < MAX_REQUESTS ? calloc(1, sizeof(*r)) : NULL;
  if (!r) {
    kp_stream_reset(s, KP_STREAM_REFUSED);
    kp_stream_close(s, NULL);
    return;
  }
  r->sv = sv;
  r->conn = conn;
  r->stream = s;
  snprintf(r->who, sizeof(r->who), "%s", who);
  r->next = sv->requests;
  if (sv->requests) sv->requests->prev = r;
  sv->requests = r;
  sv->request_count++;
  kp_stream_set_data(s, r);
  uv_timer_init(sv->loop, &r->timer);
  r->timer.data = r;
  r->timer_open = true;
  uv_timer_start(&r->timer, on_request_timeout, KP_CLI_SOCKS_REQUEST_MS, 0);
  if (kp_stream_read_start(s, on_request_data)) abandon(r);
}

/* ---- The service ------------------------------------------------------------------------------
 */

int kp_cli_socks_server_new(uv_loop_t *loop, const kp_cli_socks_allow_t *allow,
                            kp_cli_socks_server_t **out) {
  kp_cli_socks_server_t *sv = calloc(1, sizeof(*sv));
  *out = sv;
  if (!sv) return UV_ENOMEM;
  sv->loop = loop;
  sv->allow = *allow;
  return 0;
}

void kp_cli_socks_server_conn_closed(kp_cli_socks_server_t *sv, const kp_conn_t *conn) {
  for (request_t *r = sv->requests, *next; r; r = next) {
    next = r->next;
    if (r->conn == conn && !r->done) abandon(r);
  }
  kp_cli_bridges_abort(&sv->bridges, conn, UV_ECANCELED);
}

void kp_cli_socks_server_stats(const kp_cli_socks_server_t *sv, kp_cli_socks_stats_t *out) {
  *out = sv->stats;
  out->pending = sv->request_count;
}

void kp_cli_socks_server_stop(kp_cli_socks_server_t *sv) {
  for (request_t *r = sv->requests, *next; r; r = next) {
    next = r->next;
    if (!r->done) abandon(r);
  }
  kp_cli_bridges_abort(&sv->bridges, NULL, UV_ECANCELED);
}

void kp_cli_socks_server_free(kp_cli_socks_server_t *sv) {
  free(sv);
}
