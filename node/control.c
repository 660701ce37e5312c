/* SPDX-License-Identifier: MIT */
/* The control socket's server: the unix socket, connections, framing (one
 * JSON request per line, one JSON answer per line) and the command table.
 * The built-in commands live in control_cmds.c. */
#include "node/control.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "node/node_internal.h"

/* Answers queued on one connection before it stops being read. */
#define PENDING_MAX 4
#define IDLE_MS 60000
#define NAME_MAX_LEN 32

typedef struct conn_s conn_t;

typedef struct command_s {
  char name[NAME_MAX_LEN];
  kp_control_fn fn;
  void *ctx;
} command_t;

struct kp_control_s {
  uv_loop_t *loop;
  uv_pipe_t listener;
  bool listener_open;
  bool closing;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  conn_t *conns;     /* every connection, refused ones included, until freed */
  unsigned accepted; /* connections counted against KP_CONTROL_MAX_CONNS */
  command_t cmds[KP_CONTROL_MAX_COMMANDS];
  unsigned cmd_count;
};

struct conn_s {
  uv_pipe_t pipe;
  uv_timer_t idle;
  kp_control_t *ctl;
  conn_t *prev, *next;
  unsigned open;   /* handles not yet closed (pipe, timer) */
  unsigned writes; /* answers queued */
  bool counted, reading, eof, closing, close_after_write;
  size_t in_len;
  char in[KP_CONTROL_MAX_REQUEST + 1];
};

typedef struct answer_s {
  uv_write_t req;
  conn_t *conn;
  char *text;
} answer_t;

static void maybe_free(kp_control_t *c) {
  if (c->closing && !c->listener_open && !c->conns) kp_free(c);
}

/* ---- Connections ------------------------------------------------------------ */

static void on_conn_handle_closed(uv_handle_t *h) {
  conn_t *k = h->data;
  if (--k->open) return;
  kp_control_t *c = k->ctl;
  if (k->prev)
    k->prev->next = k->next;
  else
    c->conns = k->next;
  if (k->next) k->next->prev = k->prev;
  if (k->counted) c->accepted--;
  kp_free(k);
  maybe_free(c);
}

static void conn_close(conn_t *k) {
  if (k->closing) return;
  k->closing = true;
  uv_close((uv_handle_t *)&k->pipe, on_conn_handle_closed);
  uv_close((uv_handle_t *)&k->idle, on_conn_handle_closed);
}

static void process(conn_t *k);

static void on_written(uv_write_t *req, int status) {
  answer_t *a = req->data;
  conn_t *k = a->conn;
  (void)status;
  kp_free(a->text);
  kp_free(a);
  k->writes--;
  if (k->closing) return;
  if (k->close_after_write && !k->writes) {
    conn_close(k);
    return;
  }
  process(k);
}

static void send_text(conn_t *k, kp_jw_t *w) {
  kp_jw_raw(w, "\n", 1);
  answer_t *a = w->failed ? NULL : kp_malloc(sizeof(*a));
  if (!a) {
    kp_jw_free(w);
    conn_close(k); /* out of memory: the client sees the connection end */
    return;
  }
  size_t len;
  a->text = kp_jw_release(w, &len);
  a->conn = k;
  a->req.data = a;
  uv_buf_t buf = uv_buf_init(a->text, (unsigned)len);
  if (uv_write(&a->req, (uv_stream_t *)&k->pipe, &buf, 1, on_written)) {
    kp_free(a->text);
    kp_free(a);
    conn_close(k);
    return;
  }
  k->writes++;
}

static void error_answer(kp_jw_t *w, const char *cmd, const char *message) {
  kp_jw_reset(w);
  kp_jw_obj(w);
  kp_jw_kbool(w, "ok", false);
  kp_jw_kstr(w, "cmd", cmd);
  kp_jw_kstr(w, "error", message);
  kp_jw_obj_end(w);
}

static const command_t *find_command(const kp_control_t *c, const char *name) {
  for (unsigned i = 0; i < c->cmd_count; i++)
    if (!strcmp(c->cmds[i].name, name)) return &c->cmds[i];
  return NULL;
}

static void handle_line(conn_t *k, const char *line, size_t len) {
  kp_jw_t w;
  kp_jw_init(&w, KP_CONTROL_MAX_ANSWER);
  kp_json_t *req = NULL;
  char msg[128];
  int err = kp_json_parse(line, len, &req, NULL);
  const char *cmd = req ? kp_json_get_str(req, "cmd") : NULL;
  const command_t *command = cmd ? find_command(k->ctl, cmd) : NULL;
  if (err) {
    error_answer(&w, NULL, err == UV_ENOMEM ? kp_strerror(err) : "the request is not JSON");
  } else if (!cmd) {
    error_answer(&w, NULL, "the request is not an object with a string \"cmd\"");
  } else if (!command) {
    snprintf(msg, sizeof(msg), "unknown command '%.64s' (try {\"cmd\":\"commands\"})", cmd);
    error_answer(&w, cmd, msg);
  } else {
    int rc = command->fn(command->ctx, req, line, len, &w);
    if (rc < 0 || w.failed)
      error_answer(&w, cmd, rc < 0 ? kp_strerror(rc) : "the answer would be too large");
  }
  kp_json_free(req);
  send_text(k, &w);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn_t *k = h->data;
  (void)suggested;
  *buf = uv_buf_init(k->in + k->in_len, (unsigned)(KP_CONTROL_MAX_REQUEST - k->in_len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* Reads while there is room for more input and for more answers. */
static void set_reading(conn_t *k) {
  bool want = !k->closing && !k->eof && !k->close_after_write && k->writes < PENDING_MAX &&
              k->in_len < KP_CONTROL_MAX_REQUEST;
  if (want == k->reading) return;
  k->reading = want;
  if (want)
    uv_read_start((uv_stream_t *)&k->pipe, on_alloc, on_read);
  else
    uv_read_stop((uv_stream_t *)&k->pipe);
}

/* Answers every complete line buffered, as far as the queue allows. */
static void process(conn_t *k) {
  while (!k->closing && !k->close_after_write && k->writes < PENDING_MAX) {
    char *nl = memchr(k->in, '\n', k->in_len);
    /* At the end of input, what is left is the last request. */
    if (!nl && k->eof && k->in_len) nl = k->in + k->in_len;
    if (!nl) break;
    size_t n = (size_t)(nl - k->in), used = n < k->in_len ? n + 1 : n;
    if (n && k->in[n - 1] == '\r') n--;
    k->in[n] = '\0';
    if (strspn(k->in, " \t") < n) handle_line(k, k->in, n);
    memmove(k->in, k->in + used, k->in_len - used);
    k->in_len -= used;
  }
  if (!k->closing && !k->close_after_write && k->in_len == KP_CONTROL_MAX_REQUEST &&
      !memchr(k->in, '\n', k->in_len)) {
    kp_jw_t w;
    kp_jw_init(&w, 0);
    char msg[96];
    snprintf(msg, sizeof(msg), "request longer than %d bytes", KP_CONTROL_MAX_REQUEST);
    error_answer(&w, NULL, msg);
    send_text(k, &w);
    k->close_after_write = true;
  }
  if (k->closing) return;
  if ((k->eof || k->close_after_write) && !k->in_len && !k->writes) {
    conn_close(k);
    return;
  }
  set_reading(k);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn_t *k = s->data;
  (void)buf;
  if (n == 0) return;
  if (n < 0) {
    if (n != UV_EOF) {
      conn_close(k);
      return;
    }
    k->eof = true;
  } else {
    k->in_len += (size_t)n;
    uv_timer_again(&k->idle);
  }
  process(k);
}

static void on_idle(uv_timer_t *t) {
  conn_close(t->data);
}

static void refuse(conn_t *k) {
  static const char busy[] = "{\"ok\":false,\"cmd\":null,\"error\":\"too many control "
                             "connections\"}\n";
  uv_buf_t b = uv_buf_init((char *)busy, sizeof(busy) - 1);
  uv_try_write((uv_stream_t *)&k->pipe, &b, 1); /* best effort: it is closed either way */
  conn_close(k);
}

static void on_connection(uv_stream_t *server, int status) {
  kp_control_t *c = server->data;
  if (status < 0 || c->closing) return;
  conn_t *k = kp_calloc(1, sizeof(*k));
  if (!k) return; /* the connection waits in the backlog */
  k->ctl = c;
  uv_pipe_init(c->loop, &k->pipe, 0);
  uv_timer_init(c->loop, &k->idle);
  k->pipe.data = k->idle.data = k;
  k->open = 2;
  k->next = c->conns;
  if (c->conns) c->conns->prev = k;
  c->conns = k;
  if (uv_accept(server, (uv_stream_t *)&k->pipe)) {
    conn_close(k);
    return;
  }
  if (c->accepted >= KP_CONTROL_MAX_CONNS) {
    refuse(k);
    return;
  }
  k->counted = true;
  c->accepted++;
  uv_timer_start(&k->idle, on_idle, IDLE_MS, IDLE_MS);
  set_reading(k);
}

/* ---- The socket ------------------------------------------------------------- */

/* A socket at path that nobody listens on is left over from a process that
 * died: remove it. Anything else at path is not ours to touch. */
static int clear_stale(const char *path) {
  struct stat st;
  if (lstat(path, &st)) return errno == ENOENT ? 0 : uv_translate_sys_error(errno);
  if (!S_ISSOCK(st.st_mode)) return UV_EEXIST;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path, path, strlen(path) + 1);
  int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
  int e = errno;
  close(fd);
  if (rc == 0 || e == EAGAIN || e == EINPROGRESS) return UV_EADDRINUSE;
  if (e != ECONNREFUSED) return uv_translate_sys_error(e);
  if (unlink(path) && errno != ENOENT) return uv_translate_sys_error(errno);
  return 0;
}

static void on_listener_closed(uv_handle_t *h) {
  kp_control_t *c = h->data;
  c->listener_open = false;
  maybe_free(c);
}

static int commands(void *ctx, const kp_json_t *request, const char *line, size_t len,
                    kp_jw_t *out) {
  const kp_control_t *c = ctx;
  (void)request, (void)line, (void)len;
  kp_jw_obj(out);
  kp_jw_kbool(out, "ok", true);
  kp_jw_kstr(out, "cmd", "commands");
  kp_jw_key(out, "commands");
  kp_jw_arr(out);
  for (unsigned i = 0; i < c->cmd_count; i++) kp_jw_str(out, c->cmds[i].name);
  kp_jw_arr_end(out);
  kp_jw_obj_end(out);
  return 0;
}

int kp_control_start(kp_node_t *node, const char *path, kp_control_t **out) {
  *out = NULL;
  if (!node || !path || !*path) return UV_EINVAL;
  if (strlen(path) >= sizeof(((kp_control_t *)0)->path)) return UV_ENAMETOOLONG;
  int err = clear_stale(path);
  if (err) return err;
  kp_control_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return UV_ENOMEM;
  c->loop = node->loop;
  memcpy(c->path, path, strlen(path) + 1);
  if ((err = kp_control_add(c, "commands", commands, c)) ||
      (err = kp__control_add_builtins(c, node))) {
    kp_free(c);
    return err;
  }
  uv_pipe_init(c->loop, &c->listener, 0);
  c->listener.data = c;
  c->listener_open = true;
  bool bound = false;
  err = uv_pipe_bind(&c->listener, path);
  /* Owner-only before listening: until listen() a connect is refused, so
   * the moment between bind (mode from the umask) and chmod lets nobody in. */
  if (!err) {
    bound = true;
    if (chmod(path, 0600)) err = uv_translate_sys_error(errno);
  }
  /* A deep backlog absorbs a burst of clients; past KP_CONTROL_MAX_CONNS
   * they are accepted only to be told to come back later. */
  if (!err) err = uv_listen((uv_stream_t *)&c->listener, 128, on_connection);
  if (err) {
    if (bound) unlink(path);
    c->closing = true;
    uv_close((uv_handle_t *)&c->listener, on_listener_closed);
    return err;
  }
  *out = c;
  return 0;
}

int kp_control_add(kp_control_t *c, const char *cmd, kp_control_fn fn, void *ctx) {
  if (!c || !cmd || !*cmd || strlen(cmd) >= NAME_MAX_LEN || !fn) return UV_EINVAL;
  command_t *slot = (command_t *)find_command(c, cmd);
  if (!slot) {
    if (c->cmd_count == KP_CONTROL_MAX_COMMANDS) return KP_ELIMIT;
    slot = &c->cmds[c->cmd_count++];
  }
  memcpy(slot->name, cmd, strlen(cmd) + 1);
  slot->fn = fn;
  slot->ctx = ctx;
  return 0;
}

const char *kp_control_path(const kp_control_t *c) {
  return c->path;
}

void kp_control_close(kp_control_t *c) {
  if (!c || c->closing) return;
  c->closing = true;
  unlink(c->path);
  uv_close((uv_handle_t *)&c->listener, on_listener_closed);
  for (conn_t *k = c->conns; k; k = k->next) conn_close(k);
}
