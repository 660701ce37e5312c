/* SPDX-License-Identifier: MIT */
/* Connect by key, in one process: a small DHT on loopback, a server that
 * listens on a fresh key pair and echoes what it reads, and a client that
 * knows nothing but that public key. The client finds the server through
 * the DHT, shakes hands, punches (on loopback: at once), opens a stream,
 * and checks that its message comes back byte for byte.
 *
 * Built against an installed libkadpunch:
 *
 *   cc echo.c $(pkg-config --cflags --libs kadpunch) -o echo && ./echo
 *
 * or with CMake (examples/CMakeLists.txt: find_package(kadpunch)).
 * Exit code 0 when the echo came back, 1 otherwise. */
#include <kadpunch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODES 8           /* DHT members besides the server and the client */
#define TRIES 50          /* connect attempts, 200 ms apart */
#define DEADLINE_MS 30000 /* the whole run */
#define MESSAGE "hello, peer: found by key, reached through the NAT"

static uv_loop_t loop;
static kp_node_t *nodes[NODES + 2]; /* the members, then the server's and the client's */
static size_t open_nodes;
static kp_keypair_t server_keys, client_keys;
static kp_server_t *server;
static kp_conn_t *client_conn;
static uv_timer_t retry_timer, deadline_timer;
static unsigned tries;
static char echoed[sizeof(MESSAGE)];
static size_t echoed_len;
static int exit_code = 1;

static void finish(int code);

/* ---- The server: echo every stream ---------------------------------------- */

typedef struct echo_write_s {
  kp_write_t req;
  char data[];
} echo_write_t;

static void echo_written(kp_write_t *req, int status) {
  (void)status;
  free(req->data);
}

static void echo_read(kp_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) { /* the client finished (or went away): so do we */
    kp_stream_end(stream);
    kp_stream_close(stream, NULL);
    return;
  }
  echo_write_t *w = malloc(sizeof(*w) + (size_t)n);
  if (!w) {
    kp_stream_reset(stream, 0);
    return;
  }
  memset(&w->req, 0, sizeof(w->req));
  w->req.data = w;
  memcpy(w->data, buf->base, (size_t)n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (kp_stream_write(&w->req, stream, &b, 1, echo_written)) free(w);
}

static void server_stream(kp_conn_t *conn, kp_stream_t *stream) {
  (void)conn;
  kp_stream_read_start(stream, echo_read);
}

static void server_conn_closed(kp_conn_t *conn, int status, uint64_t code) {
  (void)status;
  (void)code;
  kp_conn_close(conn, 0);
}

/* ---- The client: send, read the echo, compare ------------------------------ */

static kp_write_t message_write;

static void client_read(kp_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    size_t room = sizeof(echoed) - echoed_len;
    size_t take = (size_t)n < room ? (size_t)n : room;
    memcpy(echoed + echoed_len, buf->base, take);
    echoed_len += take;
    return;
  }
  kp_stream_close(stream, NULL);
  bool same = n == KP_EOF && echoed_len == strlen(MESSAGE) && !memcmp(echoed, MESSAGE, echoed_len);
  printf("client: echo %s (%zu bytes)\n", same ? "byte-exact" : "wrong", echoed_len);
  finish(same ? 0 : 1);
}

static bool finished;

static void client_conn_closed(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn;
  (void)code;
  if (status && !finished) fprintf(stderr, "client: connection over: %s\n", kp_strerror(status));
}

static void try_connect(uv_timer_t *timer);

static void connected(kp_node_t *node, int status, kp_conn_t *conn, const kp_connect_info_t *info,
                      void *arg) {
  (void)node;
  (void)arg;
  if (status) {
    /* Right after start the announcement may not be stored yet. */
    if (status == KP_EPEERNOTFOUND && ++tries < TRIES) {
      uv_timer_start(&retry_timer, try_connect, 200, 0);
      return;
    }
    fprintf(stderr, "client: connect failed: %s\n", kp_strerror(status));
    finish(1);
    return;
  }
  client_conn = conn;
  char path[KP_ADDR_STRLEN];
  printf("client: connected by key (%s path to %s, %u ms)\n", kp_punch_name(info->punch),
         kp_addr_format(&info->path, path, sizeof(path)),
         info->lookup_ms + info->handshake_ms + info->punch_ms);
  kp_stream_t *stream;
  if (kp_stream_open(conn, &stream)) {
    finish(1);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)MESSAGE, (unsigned)strlen(MESSAGE));
  kp_stream_write(&message_write, stream, &b, 1, NULL);
  kp_stream_end(stream);
  kp_stream_read_start(stream, client_read);
}

static void try_connect(uv_timer_t *timer) {
  (void)timer;
  static const kp_conn_callbacks_t callbacks = {.on_close = client_conn_closed};
  int err = kp_node_connect(nodes[NODES + 1], &client_keys, server_keys.public_key, &callbacks,
                            connected, NULL);
  if (err) {
    fprintf(stderr, "client: %s\n", kp_strerror(err));
    finish(1);
  }
}

/* ---- Setting up and tearing down ---------------------------------------------- */

static void node_closed(kp_node_t *node) {
  (void)node;
  open_nodes--;
}

static void deadline(uv_timer_t *timer) {
  (void)timer;
  fprintf(stderr, "no echo within %d ms\n", DEADLINE_MS);
  finish(1);
}

static void finish(int code) {
  if (finished) return;
  finished = true;
  exit_code = code;
  if (client_conn) kp_conn_close(client_conn, 0);
  if (server) kp_server_close(server);
  for (size_t i = 0; i < NODES + 2; i++)
    if (nodes[i]) kp_node_close(nodes[i], node_closed);
  uv_close((uv_handle_t *)&retry_timer, NULL);
  uv_close((uv_handle_t *)&deadline_timer, NULL);
}

static int start_node(size_t i, kp_node_mode_t mode, const char *bootstrap) {
  kp_node_options_t opts;
  kp_node_options_init(&opts);
  opts.bind = "127.0.0.1:0";
  opts.mode = mode;
  if (bootstrap) {
    opts.bootstrap = &bootstrap;
    opts.bootstrap_count = 1;
  }
  int err = kp_node_create(&loop, &opts, &nodes[i]);
  if (err) {
    fprintf(stderr, "node %zu: %s\n", i, kp_strerror(err));
    return err;
  }
  open_nodes++;
  return 0;
}

int main(void) {
  printf("libkadpunch %s\n", kp_version_string());
  uv_loop_init(&loop);
  uv_timer_init(&loop, &retry_timer);
  uv_timer_init(&loop, &deadline_timer);
  uv_timer_start(&deadline_timer, deadline, DEADLINE_MS, 0);

  /* The DHT: node 0 is everyone's bootstrap node. */
  char bootstrap[KP_ADDR_STRLEN];
  kp_addr_t addr;
  int err = start_node(0, KP_NODE_MEMBER, NULL);
  if (!err) err = kp_node_local_addr(nodes[0], &addr);
  if (!err) kp_addr_format(&addr, bootstrap, sizeof(bootstrap));
  for (size_t i = 1; !err && i < NODES; i++) err = start_node(i, KP_NODE_MEMBER, bootstrap);
  if (!err) err = start_node(NODES, KP_NODE_MEMBER, bootstrap);        /* the server's */
  if (!err) err = start_node(NODES + 1, KP_NODE_EPHEMERAL, bootstrap); /* the client's */

  /* The server listens on its key; the client knows only the public half. */
  kp_keypair_generate(&server_keys);
  kp_keypair_generate(&client_keys);
  static const kp_conn_callbacks_t server_callbacks = {.on_stream = server_stream,
                                                       .on_close = server_conn_closed};
  if (!err)
    err =
        kp_server_listen(nodes[NODES], &server_keys, NULL, &server_callbacks, NULL, NULL, &server);
  if (!err) {
    char key[KP_KEY_TEXT_LEN + 1];
    kp_key_to_text(server_keys.public_key, key);
    printf("server: listening on %s\n", key);
    uv_timer_start(&retry_timer, try_connect, 200, 0);
  } else {
    fprintf(stderr, "setting up: %s\n", kp_strerror(err));
    finish(1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  kp_keypair_wipe(&server_keys);
  kp_keypair_wipe(&client_keys);
  return open_nodes ? 1 : exit_code;
}
