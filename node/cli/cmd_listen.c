/* SPDX-License-Identifier: MIT */
/* kadpunch connect KEY --listen ADDR:PORT: a local TCP port forwarded to a
 * peer running `kadpunch serve --forward`. One encrypted connection, made
 * at start, carries every TCP connection accepted on the port as a stream
 * of its own (cli_bridge.c). When that connection dies its TCP connections
 * are reset, and the next one accepted connects again: attempts follow what
 * users do, so a dead peer costs one attempt per TCP connection, never a
 * loop of them.
 *
 * --socks and --listen-udp run on the same one connection (cli_socks.h):
 * a SOCKS5 port whose CONNECTs are streams of it and whose UDP ASSOCIATEs
 * ride its datagrams, or a UDP port whose senders' datagrams do. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_bridge.h"
#include "node/cli/cli_conns.h"
#include "node/cli/cli_socks.h"
#include "node/control.h"

/* TCP connections at once (each is a file descriptor); more are reset as
 * soon as they are accepted. The server takes 256 streams at once per
 * connection and refuses the rest. */
#define MAX_TCP 1000
#define BACKLOG 128
/* The first connect ends by itself (lookup, handshake, punch and relay
 * each time out); this is only a backstop. */
#define FIRST_CONNECT_MS 60000

typedef struct listen_s {
  const kp_cli_connect_args_t *a;
  kp_cli_session_t s;
  kp_keypair_t kp;
  uv_tcp_t server;
  kp_cli_bridges_t bridges;
  kp_conn_t *conn;
  bool connecting, stopping;
  bool first_done;
  bool connected_once; /* "connected again" from then on */
  int first_status;
  kp_cli_socks_client_t *socks; /* --socks */
  kp_cli_udp_listen_t *udp;     /* --listen-udp */
  bool server_open;
  kp_control_t *control; /* --control: `kadpunch status` reads conns */
  kp_cli_conns_t conns;
  kp_cli_conn_t entry; /* the one connection, while it lives */
} listen_t;

static void start_connect(listen_t *l);

/* "PORT", "localhost:PORT", "IP:PORT" or "[IPv6]:PORT". */
static bool parse_listen(const char *text, struct sockaddr_storage *out) {
  unsigned long port;
  kp_addr_t addr;
  memset(out, 0, sizeof(*out));
  if (kp_cli_parse_uint(text, 0, 65535, &port) ||
      (!strncmp(text, "localhost:", 10) && kp_cli_parse_uint(text + 10, 0, 65535, &port)))
    return !uv_ip4_addr("127.0.0.1", (int)port, (struct sockaddr_in *)out);
  /* kp_addr_parse takes a bare IP too: a port is required here. */
  const char *colon = strrchr(text, ':');
  if (kp_addr_parse(&addr, text) || !colon || (text[0] == '[' && colon[-1] != ']')) return false;
  if (addr.family == KP_AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)out;
    a->sin_family = AF_INET;
    a->sin_port = htons(addr.port);
    memcpy(&a->sin_addr, addr.ip, 4);
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(addr.port);
    memcpy(&a->sin6_addr, addr.ip, 16);
  }
  return true;
}

/* An invitation the peer refused stays refused: nothing to wait for. */
static bool invitation_spent(int status) {
  return status == KP_EINVITE || status == KP_EINVITEUSED || status == KP_EINVITEEXPIRED;
}

static void on_bridge_done(kp_cli_bridge_t *b, int status, uint64_t reset_code) {
  listen_t *l = kp_cli_bridge_get_data(b);
  char why[160];
  if (!status || status == UV_ECANCELED || l->stopping) return;
  fprintf(stderr, "kadpunch connect: a forwarded TCP connection ended: %s\n",
          kp_cli_bridge_why(status, reset_code, why, sizeof(why)));
  fflush(stderr);
}

static void on_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  listen_t *l = kp_conn_get_data(conn);
  (void)code;
  if (!l->stopping) kp_cli_print_conn_stats(stderr, "kadpunch connect: ", conn);
  if (!l->stopping) kp_cli_conns_print_closed(stderr, &l->conns, &l->entry, status);
  kp_cli_conns_remove(&l->conns, &l->entry);
  if (!l->stopping)
    fprintf(stderr,
            "kadpunch connect: the connection to %s ended: %s (the next TCP connection "
            "connects again)\n",
            l->a->key_text, status ? kp_strerror(status) : "closed");
  kp_cli_bridges_abort(&l->bridges, conn, UV_ECANCELED);
  if (l->socks) kp_cli_socks_client_conn_closed(l->socks, conn);
  kp_conn_close(conn, 0);
  if (l->conn == conn) l->conn = NULL;
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  listen_t *l = arg;
  bool first = !l->first_done;
  (void)node;
  l->connecting = false;
  l->first_done = true;
  if (first) l->first_status = status;
  if (status) {
    if (!l->stopping) kp_cli_print_connect_error(l->a->key_text, status, info);
    if (!l->stopping && !invitation_spent(status))
      fprintf(stderr, "kadpunch connect: still listening: the next TCP connection connects "
                      "again\n");
    fflush(stderr);
    /* Whoever waited for this connection is told by a reset. */
    kp_cli_bridges_abort(&l->bridges, NULL, UV_ECANCELED);
    if (l->socks) kp_cli_socks_client_conn_failed(l->socks, status);
    return;
  }
  l->conn = conn;
  kp_conn_set_data(conn, l);
  kp_cli_conns_add(&l->conns, &l->entry, conn, info, l->a->opts.service, true);
  if (l->stopping) {
    kp_conn_close(conn, 0);
    return;
  }
  kp_cli_stamp(stdout);
  printf("%s %s\n", l->connected_once ? "connected again to" : "connected to", l->a->key_text);
  l->connected_once = true;
  kp_cli_print_info(stdout, info, true);
  fflush(stdout);
  kp_cli_bridges_open(&l->bridges, conn);
  if (l->socks) kp_cli_socks_client_connected(l->socks, conn);
}

static void on_conn_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  listen_t *l = kp_conn_get_data(conn);
  if (l && l->entry.conn == conn) kp_cli_conns_path(&l->entry, ev);
  kp_cli_print_path_change(conn, ev);
}

static void on_conn_datagram(kp_conn_t *conn, const uint8_t *data, size_t len) {
  listen_t *l = kp_conn_get_data(conn);
  if (l && l->socks) kp_cli_socks_client_datagram(l->socks, data, len);
  if (l && l->udp) kp_cli_udp_listen_datagram(l->udp, data, len);
}

/* kp_cli_link_t.conn: the connection, or NULL after starting to make it. */
static kp_conn_t *link_conn(void *ctx) {
  listen_t *l = ctx;
  if (!l->conn) start_connect(l);
  return l->conn;
}

static void start_connect(listen_t *l) {
  if (l->connecting || l->conn || l->stopping) return;
  kp_conn_callbacks_t cb = {
      .on_close = on_conn_close, .on_path = on_conn_path, .on_datagram = on_conn_datagram};
  int err =
      kp_node_connect_with(l->s.node, &l->kp, l->a->server_key, &l->a->opts, &cb, on_connected, l);
  if (err) {
    fprintf(stderr, "kadpunch connect: %s\n", kp_strerror(err));
    kp_cli_bridges_abort(&l->bridges, NULL, UV_ECANCELED);
    return;
  }
  l->connecting = true;
}

static void on_tcp_connection(uv_stream_t *server, int status) {
  listen_t *l = server->data;
  kp_cli_bridge_t *b;
  if (l->socks && !status) {
    kp_cli_socks_client_accept(l->socks, server);
    return;
  }
  if (status || kp_cli_bridge_new(server->loop, &l->bridges, on_bridge_done, l, &b)) {
    fprintf(stderr, "kadpunch connect: accepting a TCP connection: %s\n",
            uv_strerror(status ? status : UV_ENOMEM));
    return;
  }
  int err = kp_cli_bridge_accept(b, server);
  if (!err && (l->stopping || l->bridges.count > MAX_TCP)) err = UV_EMFILE;
  if (!err && l->conn) err = kp_cli_bridge_open(b, l->conn);
  if (err) {
    kp_cli_bridge_abort(b, err);
    return;
  }
  /* Not connected: it waits, and connecting starts unless it runs. */
  start_connect(l);
}

/* Binds, listens and says where. Returns 0 or an exit code. */
static int listen_tcp(listen_t *l, const struct sockaddr *addr) {
  uv_tcp_init(&l->s.loop, &l->server);
  l->server.data = l;
  l->server_open = true;
  int err = uv_tcp_bind(&l->server, addr, 0);
  if (!err) err = uv_listen((uv_stream_t *)&l->server, BACKLOG, on_tcp_connection);
  struct sockaddr_storage bound;
  int len = sizeof(bound);
  if (!err) err = uv_tcp_getsockname(&l->server, (struct sockaddr *)&bound, &len);
  char text[64];
  kp_cli_sockaddr_format(err ? (const struct sockaddr_storage *)addr : &bound, text);
  if (err) {
    fprintf(stderr, "kadpunch connect: cannot listen on %s: %s\n", text, uv_strerror(err));
    return KP_EXIT_FAIL;
  }
  if (l->socks)
    printf("socks on %s, through %s\n", text, l->a->key_text);
  else
    printf("listening on %s, forwarding to %s\n", text, l->a->key_text);
  fflush(stdout);
  return 0;
}

static bool first_done(void *ctx) {
  return ((listen_t *)ctx)->first_done;
}

static int stop(listen_t *l, int rc) {
  l->stopping = true;
  if (l->control) kp_control_close(l->control); /* before the node it reads */
  l->control = NULL;
  kp_cli_bridges_abort(&l->bridges, NULL, UV_ECANCELED);
  if (l->socks) kp_cli_socks_client_stop(l->socks);
  if (l->udp) kp_cli_udp_listen_stop(l->udp);
  if (l->conn) kp_cli_print_conn_stats(stderr, "kadpunch connect: ", l->conn);
  if (l->conn) kp_conn_close(l->conn, 0);
  if (l->server_open && !uv_is_closing((uv_handle_t *)&l->server))
    uv_close((uv_handle_t *)&l->server, NULL);
  /* Let the close reach the peer. */
  l->s.signalled = false;
  kp_cli_session_run(&l->s, NULL, NULL, 100);
  kp_keypair_wipe(&l->kp);
  int closed = kp_cli_session_close(&l->s);
  kp_cli_socks_client_free(l->socks);
  kp_cli_udp_listen_free(l->udp);
  return rc ? rc : closed;
}

/* --listen-udp: the UDP port instead of a TCP one. */
static int listen_udp(listen_t *l, const struct sockaddr *addr) {
  kp_cli_link_t link = {link_conn, l};
  char bound[64], text[64];
  int err = kp_cli_udp_listen_new(&l->s.loop, addr, &link, &l->udp, bound);
  if (err) {
    fprintf(stderr, "kadpunch connect: cannot listen on udp %s: %s\n",
            kp_cli_sockaddr_format((const struct sockaddr_storage *)addr, text), uv_strerror(err));
    return KP_EXIT_FAIL;
  }
  printf("listening on udp %s, forwarding to %s\n", bound, l->a->key_text);
  fflush(stdout);
  return 0;
}

int kp_cli_connect_listen(kp_cli_connect_args_t *a) {
  struct sockaddr_storage addr;
  const char *opt = a->socks ? "--socks" : a->listen_udp ? "--listen-udp" : "--listen";
  const char *where = a->socks ? a->socks : a->listen_udp ? a->listen_udp : a->listen;
  if (!parse_listen(where, &addr))
    return kp_cli_usage_error("connect", "%s '%s': expected ADDR:PORT, localhost:PORT or PORT", opt,
                              where);
  signal(SIGPIPE, SIG_IGN);
  listen_t *l = calloc(1, sizeof(*l));
  if (!l) return KP_EXIT_FAIL;
  l->a = a;
  int rc = kp_cli_identity(a->key_path, &l->kp, "connect");
  a->net.identity = &l->kp; /* what a proxy sees */
  if (!rc && (rc = kp_cli_session_open(&l->s, &a->net, "connect"))) kp_keypair_wipe(&l->kp);
  if (rc) {
    free(l);
    return rc;
  }
  kp_cli_link_t link = {link_conn, l};
  kp_cli_conns_init(&l->conns, &l->s.loop);
  int err = a->control ? kp_control_start(l->s.node, a->control, &l->control) : 0;
  if (!err && l->control) err = kp_cli_conns_control(l->control, &l->conns);
  if (err) {
    fprintf(stderr, "kadpunch connect: control socket %s: %s\n", a->control, kp_strerror(err));
    rc = stop(l, KP_EXIT_FAIL);
  } else if (a->socks && kp_cli_socks_client_new(&l->s.loop, &link, &l->socks)) {
    rc = stop(l, KP_EXIT_FAIL);
  } else if ((rc = a->listen_udp ? listen_udp(l, (const struct sockaddr *)&addr)
                                 : listen_tcp(l, (const struct sockaddr *)&addr))) {
    rc = stop(l, rc);
  } else {
    /* A peer not there yet (a tunnel started at boot, before the server)
     * is no reason to stop: the port stays, and each TCP connection
     * accepted tries again. Only a refused invitation ends it. */
    start_connect(l);
    kp_cli_session_run(&l->s, first_done, l, FIRST_CONNECT_MS);
    if (l->first_done && invitation_spent(l->first_status)) {
      rc = stop(l, KP_EXIT_FAIL);
    } else {
      kp_cli_session_run(&l->s, NULL, NULL, 0);
      rc = stop(l, KP_EXIT_OK);
    }
  }
  free(l);
  return rc;
}
