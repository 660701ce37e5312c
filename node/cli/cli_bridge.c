/* SPDX-License-Identifier: MIT */
/* A kadpunch stream joined to a TCP connection or to stdin and stdout
 * (cli_bridge.h). Each direction is a small pipeline with its own
 * backpressure:
 *
 *   local -> stream: every local read is copied into a kp_write_t that
 *     lives until the peer acknowledged it; while the stream is not
 *     writable (its high-water mark) the local side is not read, and the
 *     drain callback resumes it.
 *   stream -> local: stream data is written at once where the socket takes
 *     it (uv_try_write), the rest is copied into a uv_write_t; above
 *     KP_CLI_BRIDGE_HIGH_WATER bytes queued the stream is not read (its
 *     window then holds the peer back) until half of that is written.
 *
 * stdin and stdout as a local side are in cli_bridge_stdio.c. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli_bridge_internal.h"

typedef struct stream_write_s {
  kp_write_t req;
  char data[];
} stream_write_t;

typedef struct local_write_s {
  uv_write_t req;
  kp_cli_bridge_t *b;
  size_t len;
  char data[];
} local_write_t;

static void on_stream_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* ---- Teardown --------------------------------------------------------------------- */

static void maybe_free(kp_cli_bridge_t *b) {
  if (!b->closing || b->handles || b->stream) return;
  if (b->prev)
    b->prev->next = b->next;
  else
    b->list->head = b->next;
  if (b->next) b->next->prev = b->prev;
  b->list->count--;
  b->done(b, b->status, b->reset_code);
  free(b->pre_local);
  free(b->pre_stream);
  free(b);
}

static void on_handle_closed(uv_handle_t *h) {
  kp_cli_bridge_t *b = h->data;
  b->handles--;
  maybe_free(b);
}

static void on_stream_closed(kp_stream_t *s) {
  kp_cli_bridge_t *b = kp_stream_get_data(s);
  b->stream = NULL;
  maybe_free(b);
}

/* A connected TCP socket torn down by an error is reset, so the program at
 * the other end sees an error rather than a clean (and short) end. */
static void close_local(kp_cli_bridge_t *b, local_handle_t *h, bool *open, bool reset) {
  if (!*open) return;
  *open = false;
  if (reset && b->tcp && b->connected && !uv_tcp_close_reset(&h->tcp, on_handle_closed)) return;
  uv_close(&h->handle, on_handle_closed);
  if (!b->tcp) kp__cli_bridge_detach_fd(h == &b->rd_h ? STDIN_FILENO : STDOUT_FILENO);
}

void kp__cli_bridge_fail(kp_cli_bridge_t *b, int status, uint64_t code) {
  if (b->closing) return;
  b->closing = true;
  b->status = status;
  if (b->stream) {
    kp_stream_reset(b->stream, code);
    kp_stream_close(b->stream, on_stream_closed);
  }
  close_local(b, &b->rd_h, &b->rd_open, true);
  close_local(b, &b->wr_h, &b->wr_open, true);
  maybe_free(b);
}

/* Both directions are over: close what is left, gracefully. The stream's
 * close callback waits for the peer to acknowledge the last bytes. */
static void maybe_finish(kp_cli_bridge_t *b) {
  if (b->closing || !b->local_eof || !b->shut_done) return;
  b->closing = true;
  kp_stream_close(b->stream, on_stream_closed);
  close_local(b, &b->rd_h, &b->rd_open, false);
  close_local(b, &b->wr_h, &b->wr_open, false);
}

/* ---- Local -> stream ---------------------------------------------------------------- */

static void on_stream_written(kp_write_t *req, int status) {
  kp_cli_bridge_t *b = req->data;
  free((stream_write_t *)req);
  if (!status) return;
  /* Closing gracefully, the bytes were to reach the peer: they did not. */
  if (b->closing && !b->status) b->status = status;
  kp__cli_bridge_fail(b, status, KP_CLI_RESET_LOCAL);
}

static void local_read_stop(kp_cli_bridge_t *b) {
  if (!b->reading) return;
  b->reading = false;
  if (b->rd_fd >= 0)
    uv_idle_stop(&b->rd_h.idle);
  else
    uv_read_stop(&b->rd_h.stream);
}

void kp__cli_bridge_to_stream(kp_cli_bridge_t *b, const char *data, size_t len) {
  if (b->closing) return;
  stream_write_t *w = malloc(sizeof(*w) + len);
  if (!w) {
    kp__cli_bridge_fail(b, UV_ENOMEM, KP_CLI_RESET_LOCAL);
    return;
  }
  memset(&w->req, 0, sizeof(w->req));
  memcpy(w->data, data, len);
  w->req.data = b;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)len);
  int err = kp_stream_write(&w->req, b->stream, &buf, 1, on_stream_written);
  if (err) {
    free(w);
    kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
    return;
  }
  /* The drain callback reads on. */
  if (!kp_stream_is_writable(b->stream)) local_read_stop(b);
}

void kp__cli_bridge_local_eof(kp_cli_bridge_t *b) {
  local_read_stop(b);
  b->local_eof = true;
  int err = kp_stream_end(b->stream);
  if (err) {
    kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
    return;
  }
  /* stdin is done with; a TCP connection still carries the other way. */
  if (!b->tcp) close_local(b, &b->rd_h, &b->rd_open, false);
  maybe_finish(b);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  kp_cli_bridge_t *b = h->data;
  (void)suggested;
  *buf = uv_buf_init(b->scratch, sizeof(b->scratch));
}

static void on_local_read(uv_stream_t *h, ssize_t n, const uv_buf_t *buf) {
  kp_cli_bridge_t *b = h->data;
  if (n > 0)
    kp__cli_bridge_to_stream(b, buf->base, (size_t)n);
  else if (n == UV_EOF)
    kp__cli_bridge_local_eof(b);
  else if (n < 0)
    kp__cli_bridge_fail(b, (int)n, KP_CLI_RESET_LOCAL);
}

static void local_read_start(kp_cli_bridge_t *b) {
  if (b->reading || b->local_eof || b->closing) return;
  b->reading = true;
  int err = b->rd_fd >= 0 ? uv_idle_start(&b->rd_h.idle, kp__cli_bridge_file_readable)
                          : uv_read_start(&b->rd_h.stream, on_alloc, on_local_read);
  if (err) kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
}

static void on_drain(kp_stream_t *s) {
  local_read_start(kp_stream_get_data(s));
}

/* ---- Stream -> local ---------------------------------------------------------------- */

static void on_local_written(uv_write_t *req, int status) {
  local_write_t *w = (local_write_t *)req;
  kp_cli_bridge_t *b = w->b;
  b->local_queued -= w->len;
  free(w);
  if (b->closing) return;
  if (status) {
    kp__cli_bridge_fail(b, status, KP_CLI_RESET_LOCAL);
    return;
  }
  if (b->stream_paused && b->local_queued <= KP_CLI_BRIDGE_HIGH_WATER / 2) {
    b->stream_paused = false;
    int err = kp_stream_read_start(b->stream, on_stream_read);
    if (err) kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
  }
}

static void to_local(kp_cli_bridge_t *b, const char *data, size_t len) {
  if (b->closing) return;
  if (!b->wr) {
    kp__cli_bridge_to_file(b, data, len);
    return;
  }
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_try_write(b->wr, &buf, 1);
  if (n >= 0 && (size_t)n == len) return;
  if (n < 0 && n != UV_EAGAIN) {
    kp__cli_bridge_fail(b, n, KP_CLI_RESET_LOCAL);
    return;
  }
  size_t done = n > 0 ? (size_t)n : 0;
  local_write_t *w = malloc(sizeof(*w) + len - done);
  if (!w) {
    kp__cli_bridge_fail(b, UV_ENOMEM, KP_CLI_RESET_LOCAL);
    return;
  }
  w->b = b;
  w->len = len - done;
  memcpy(w->data, data + done, w->len);
  buf = uv_buf_init(w->data, (unsigned)w->len);
  int err = uv_write(&w->req, b->wr, &buf, 1, on_local_written);
  if (err) {
    free(w);
    kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
    return;
  }
  b->local_queued += w->len;
  if (!b->stream_paused && b->local_queued >= KP_CLI_BRIDGE_HIGH_WATER) {
    b->stream_paused = true;
    kp_stream_read_stop(b->stream);
  }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  kp_cli_bridge_t *b = req->data;
  if (b->closing) return;
  /* stdout as a pipe or terminal cannot be shut down, only closed (below),
   * once everything is written: that is what the shutdown waited for. */
  if (status && (b->tcp || status != UV_ENOTSOCK)) {
    kp__cli_bridge_fail(b, status, KP_CLI_RESET_LOCAL);
    return;
  }
  b->shut_done = true;
  if (!b->tcp) close_local(b, &b->wr_h, &b->wr_open, false);
  maybe_finish(b);
}

static void on_stream_eof(kp_cli_bridge_t *b) {
  if (!b->wr) {
    b->shut_done = true;
    maybe_finish(b);
    return;
  }
  b->shutdown_req.data = b;
  int err = uv_shutdown(&b->shutdown_req, b->wr, on_shutdown);
  if (err) kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
}

static void on_stream_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kp_cli_bridge_t *b = kp_stream_get_data(s);
  if (n > 0) {
    to_local(b, buf->base, (size_t)n);
  } else if (n == UV_EOF) {
    on_stream_eof(b);
  } else if (n < 0) {
    if (n == KP_ERESET) b->reset_code = kp_stream_reset_code(s);
    kp__cli_bridge_fail(b, (int)n, KP_CLI_RESET_LOCAL);
  }
}

/* ---- Setting up --------------------------------------------------------------------- */

int kp_cli_bridge_new(uv_loop_t *loop, kp_cli_bridges_t *list, kp_cli_bridge_done_cb done,
                      void *data, kp_cli_bridge_t **out) {
  kp_cli_bridge_t *b = calloc(1, sizeof(*b));
  *out = b;
  if (!b) return UV_ENOMEM;
  b->loop = loop;
  b->list = list;
  b->done = done;
  b->data = data;
  b->rd_fd = b->wr_fd = -1;
  b->next = list->head;
  if (list->head) list->head->prev = b;
  list->head = b;
  list->count++;
  return 0;
}

static void attach(kp_cli_bridge_t *b, kp_stream_t *stream) {
  b->stream = stream;
  b->conn = kp_stream_conn(stream);
  kp_stream_set_data(stream, b);
}

/* What came behind a preamble goes first, each way. */
static void send_preloaded(kp_cli_bridge_t *b) {
  if (b->pre_stream_len) kp__cli_bridge_to_stream(b, b->pre_stream, b->pre_stream_len);
  if (b->pre_local_len && !b->closing) to_local(b, b->pre_local, b->pre_local_len);
  b->pre_stream_len = b->pre_local_len = 0;
}

static void begin(kp_cli_bridge_t *b) {
  kp_stream_set_drain_cb(b->stream, on_drain);
  int err = kp_stream_read_start(b->stream, on_stream_read);
  if (err) {
    kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
    return;
  }
  send_preloaded(b);
  if (!b->closing && kp_stream_is_writable(b->stream)) local_read_start(b);
}

static int tcp_init(kp_cli_bridge_t *b) {
  int err = uv_tcp_init(b->loop, &b->rd_h.tcp);
  if (err) return err;
  b->handles++;
  b->rd_open = b->tcp = true;
  b->rd_h.handle.data = b;
  b->wr = &b->rd_h.stream;
  return 0;
}

static void on_connect(uv_connect_t *req, int status) {
  kp_cli_bridge_t *b = req->data;
  if (b->closing) return;
  if (b->connect_cb) {
    struct sockaddr_storage local;
    int len = sizeof(local);
    memset(&local, 0, sizeof(local));
    if (!status) uv_tcp_getsockname(&b->rd_h.tcp, (struct sockaddr *)&local, &len);
    b->connect_cb(b, status, (const struct sockaddr *)&local);
    if (b->closing) return;
    if (status) {
      kp_cli_bridge_decline(b, status);
      return;
    }
  } else if (status) {
    uint64_t code = KP_CLI_RESET_CONNECT + (uint64_t)-status;
    kp__cli_bridge_fail(b, status, code <= KP_CLI_RESET_CONNECT_MAX ? code : KP_CLI_RESET_CONNECT);
    return;
  }
  b->connected = true;
  uv_tcp_nodelay(&b->rd_h.tcp, 1);
  begin(b);
}

int kp_cli_bridge_connect(kp_cli_bridge_t *b, kp_stream_t *stream, const struct sockaddr *addr) {
  attach(b, stream);
  int err = tcp_init(b);
  if (err) return err;
  b->connect_req.data = b;
  return uv_tcp_connect(&b->connect_req, &b->rd_h.tcp, addr, on_connect);
}

int kp_cli_bridge_accept(kp_cli_bridge_t *b, uv_stream_t *server) {
  int err = tcp_init(b);
  if (err) return err;
  if ((err = uv_accept(server, &b->rd_h.stream))) return err;
  b->connected = true;
  uv_tcp_nodelay(&b->rd_h.tcp, 1);
  return 0;
}

void kp_cli_bridge_start(kp_cli_bridge_t *b, kp_stream_t *stream) {
  attach(b, stream);
  begin(b);
}

int kp_cli_bridge_open(kp_cli_bridge_t *b, kp_conn_t *conn) {
  kp_stream_t *s;
  int err = kp_stream_open(conn, &s);
  if (err) return err;
  kp_cli_bridge_start(b, s);
  return 0;
}

void kp_cli_bridges_open(kp_cli_bridges_t *list, kp_conn_t *conn) {
  for (kp_cli_bridge_t *b = list->head, *next; b; b = next) {
    next = b->next;
    if (b->stream || b->closing) continue;
    int err = kp_cli_bridge_open(b, conn);
    if (err) kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
  }
}

void kp_cli_bridge_abort(kp_cli_bridge_t *b, int status) {
  kp__cli_bridge_fail(b, status, KP_CLI_RESET_LOCAL);
}

void kp_cli_bridges_abort(kp_cli_bridges_t *list, const kp_conn_t *conn, int status) {
  for (kp_cli_bridge_t *b = list->head, *next; b; b = next) {
    next = b->next;
    if (!conn || b->conn == conn) kp__cli_bridge_fail(b, status, KP_CLI_RESET_LOCAL);
  }
}

void *kp_cli_bridge_get_data(const kp_cli_bridge_t *b) {
  return b->data;
}

void kp_cli_bridge_write_stream(kp_cli_bridge_t *b, kp_write_t *req, const uv_buf_t *buf) {
  if (b->closing || !b->stream) return;
  memset(req, 0, sizeof(*req));
  int err = kp_stream_write(req, b->stream, buf, 1, NULL);
  if (err) kp__cli_bridge_fail(b, err, KP_CLI_RESET_LOCAL);
}

void kp_cli_bridge_on_connect(kp_cli_bridge_t *b, kp_cli_bridge_connect_cb cb) {
  b->connect_cb = cb;
}

static char *copy(const void *data, size_t len) {
  char *p = malloc(len ? len : 1);
  if (p && len) memcpy(p, data, len);
  return p;
}

int kp_cli_bridge_preload(kp_cli_bridge_t *b, const void *to_local, size_t local_len,
                          const void *to_stream, size_t stream_len) {
  char *l = local_len ? copy(to_local, local_len) : NULL;
  char *s = stream_len ? copy(to_stream, stream_len) : NULL;
  if ((local_len && !l) || (stream_len && !s)) {
    free(l);
    free(s);
    return UV_ENOMEM;
  }
  free(b->pre_local);
  free(b->pre_stream);
  b->pre_local = l;
  b->pre_local_len = local_len;
  b->pre_stream = s;
  b->pre_stream_len = stream_len;
  return 0;
}

uv_stream_t *kp_cli_bridge_local(kp_cli_bridge_t *b) {
  return b->tcp && b->rd_open ? &b->rd_h.stream : NULL;
}

static void on_decline_shutdown(uv_shutdown_t *req, int status) {
  kp_cli_bridge_t *b = req->data;
  (void)status; /* flushed or not, it closes now */
  close_local(b, &b->rd_h, &b->rd_open, false);
}

void kp_cli_bridge_decline(kp_cli_bridge_t *b, int status) {
  if (b->closing) return;
  b->closing = true;
  b->status = status;
  if (b->stream) {
    kp_stream_end(b->stream); /* already ended or over: it closes all the same */
    kp_stream_close(b->stream, on_stream_closed);
  }
  /* A connected socket gets what was written to it first: the shutdown
   * completes after every queued write. */
  b->shutdown_req.data = b;
  if (!(b->tcp && b->connected && b->rd_open &&
        !uv_shutdown(&b->shutdown_req, &b->rd_h.stream, on_decline_shutdown)))
    close_local(b, &b->rd_h, &b->rd_open, false);
  close_local(b, &b->wr_h, &b->wr_open, false);
  maybe_free(b);
}

const char *kp_cli_bridge_why(int status, uint64_t reset_code, char *buf, size_t size) {
  if (status == KP_ERESET && reset_code > KP_CLI_RESET_CONNECT &&
      reset_code <= KP_CLI_RESET_CONNECT_MAX)
    snprintf(buf, size, "the server could not reach the service it forwards to (%s)",
             uv_strerror(-(int)(reset_code - KP_CLI_RESET_CONNECT)));
  else if (status == KP_ERESET && reset_code == KP_CLI_RESET_CONNECT)
    snprintf(buf, size, "the server could not reach the service it forwards to");
  else if (status == KP_ERESET && reset_code == KP_CLI_RESET_LOCAL)
    snprintf(buf, size, "the connection on the other side failed or was reset");
  else if (status == KP_ERESET && reset_code == KP_STREAM_REFUSED)
    snprintf(buf, size, "the peer refused the stream: too many open at once");
  else
    snprintf(buf, size, "%s", kp_strerror(status));
  return buf;
}
