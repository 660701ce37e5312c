/* SPDX-License-Identifier: MIT */
/* kadpunch demo, third part: what a user does with kadpunch. A small local
 * TCP service (it sends a file) sits behind a server that forwards it by
 * name, exactly as `kadpunch serve --forward files=...` does (cli_forward.c);
 * a relay runs on one more node. Two clients reach the service by the
 * server's key alone: one directly, one through the relay. Each prints the
 * NATs, the path, each phase's time, the round-trip time and the
 * download's throughput. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/testnet.h"

#define FILE_BYTES (16u << 20)

/* ---- The local service: sends FILE_BYTES, then ends ----------------------------------- */

typedef struct file_srv_s {
  uv_tcp_t tcp;
  int port;
  uint8_t *data;
} file_srv_t;

typedef struct file_conn_s {
  uv_tcp_t tcp;
  uv_write_t write;
  uv_shutdown_t shut;
} file_conn_t;

static void free_handle(uv_handle_t *h) {
  free(h->data);
}

static void file_shut(uv_shutdown_t *req, int status) {
  (void)status;
  uv_close((uv_handle_t *)req->handle, free_handle);
}

static void file_written(uv_write_t *req, int status) {
  file_conn_t *c = req->data;
  if (status || uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, file_shut))
    uv_close((uv_handle_t *)&c->tcp, free_handle);
}

static void file_accept(uv_stream_t *server, int status) {
  file_srv_t *srv = server->data;
  file_conn_t *c = calloc(1, sizeof(*c));
  if (status || !c) {
    free(c);
    return;
  }
  uv_tcp_init(server->loop, &c->tcp);
  c->tcp.data = c->write.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
    uv_close((uv_handle_t *)&c->tcp, free_handle);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)srv->data, FILE_BYTES);
  if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, file_written))
    uv_close((uv_handle_t *)&c->tcp, free_handle);
}

static int file_srv_start(uv_loop_t *loop, file_srv_t *srv) {
  struct sockaddr_in a;
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(loop, &srv->tcp);
  srv->tcp.data = srv;
  int err = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&a, 0);
  if (!err) err = uv_listen((uv_stream_t *)&srv->tcp, 16, file_accept);
  if (!err) err = uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&ss, &len);
  if (!err) srv->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return err;
}

/* ---- A client: connect by key, ask for the service, download ---------------------------- */

typedef struct fetch_s {
  bool done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  const uint8_t *expect;
  size_t received, mismatched;
  uint64_t start_ns, end_ns, srtt_us;
} fetch_t;

static void on_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

static void fetch_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  fetch_t *f = kp_stream_get_data(s);
  if (n > 0) {
    if (f->received + (size_t)n > FILE_BYTES ||
        memcmp(f->expect + f->received, buf->base, (size_t)n))
      f->mismatched++;
    f->received += (size_t)n;
    return;
  }
  kp_conn_stats_t st;
  kp_conn_stats(kp_stream_conn(s), &st);
  f->srtt_us = st.srtt_us;
  f->end_ns = uv_hrtime();
  f->done = true;
  if (n != UV_EOF) f->status = (int)n;
  kp_stream_close(s, NULL);
}

static void fetch_connected(kp_node_t *node, int status, kp_conn_t *conn,
                            const kp_connect_info_t *info, void *arg) {
  fetch_t *f = arg;
  kp_stream_t *s;
  (void)node;
  f->info = *info;
  f->conn = conn;
  f->status = status;
  f->start_ns = uv_hrtime();
  /* The service speaks first: our side of the stream just ends. */
  if (status || kp_stream_open(conn, &s) || kp_stream_end(s)) {
    f->status = status ? status : UV_EPIPE;
    f->done = true;
    return;
  }
  kp_stream_set_data(s, f);
  kp_stream_read_start(s, fetch_read);
}

static void on_host_connection(kp_server_t *server, kp_conn_t *conn, const kp_connect_info_t *info,
                               void *arg) {
  (void)server, (void)info;
  kp_conn_set_data(conn, arg); /* its streams go to the forward */
}

static bool fetch_done(void *ctx) {
  return ((fetch_t *)ctx)->done;
}

static void print_fetch(const char *who, const fetch_t *f) {
  if (f->status) {
    printf("  %-9s failed: %s\n", who, kp_strerror(f->status));
    return;
  }
  char path[KP_ADDR_STRLEN + 16], phases[48];
  kp_addr_format(&f->info.path, path, sizeof(path));
  double secs = (double)(f->end_ns - f->start_ns) / 1e9;
  snprintf(phases, sizeof(phases), "%u+%u+%u ms", f->info.lookup_ms, f->info.handshake_ms,
           f->info.punch_ms);
  printf("  %-9s %-10s %-22s %-10s %-12s %8.2f ms %9.1f MB/s%s\n", who,
         kp_punch_name(f->info.punch), path, kp_nat_type_name(f->info.local_nat), phases,
         (double)f->srtt_us / 1000.0, (double)f->received / 1e6 / secs,
         f->mismatched ? "  (bytes differ!)" : "");
}

static kp_node_t *demo_node(uv_loop_t *loop, kp_testnet_t *tn, bool relay, const char *relay_addr) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  const char *boot = tn->bootstrap;
  o.bind = "127.0.0.1:0";
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = relay ? KP_NODE_MEMBER : KP_NODE_EPHEMERAL;
  o.member_stable_ms = 0;
  o.relay = relay;
  /* The demo shows what the path carries, not the 4 MiB/s per session a
   * public relay defaults to. */
  o.relay_limits.session_rate = 1ull << 30;
  o.relay_limits.total_rate = 1ull << 32;
  o.relays = relay_addr ? &relay_addr : NULL;
  o.relay_count = relay_addr ? 1 : 0;
  o.relay_only = relay_addr != NULL;
  kp_node_t *n = NULL;
  return kp_node_create(loop, &o, &n) ? NULL : n;
}

/* Runs one fetch from a fresh client node; 0 if every byte came. */
static int fetch(kp_testnet_t *tn, const uint8_t key[KP_PUBLIC_KEY_LEN], const char *relay,
                 const uint8_t *expect, const char *who) {
  kp_node_t *client = demo_node(tn->loop, tn, false, relay);
  if (!client) return 1;
  kp_testnet_run_until(tn->loop, NULL, NULL, 300);
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  fetch_t f = {.expect = expect};
  kp_connect_options_t opts = {.service = "files"};
  kp_conn_callbacks_t cb = {.on_close = on_conn_close};
  if (!kp_node_connect_with(client, &kp, key, &opts, &cb, fetch_connected, &f))
    kp_testnet_run_until(tn->loop, fetch_done, &f, 30000);
  if (!f.done) f.status = UV_ETIMEDOUT;
  print_fetch(who, &f);
  if (f.conn) kp_conn_close(f.conn, 0);
  kp_node_close(client, NULL);
  kp_testnet_run_until(tn->loop, NULL, NULL, 100);
  return f.status || f.mismatched || f.received != FILE_BYTES;
}

int kp_cli_demo_service(kp_testnet_t *tn) {
  uv_loop_t *loop = tn->loop;
  file_srv_t srv = {.data = malloc(FILE_BYTES)};
  kp_node_t *relay = demo_node(loop, tn, true, NULL), *host = demo_node(loop, tn, false, NULL);
  kp_cli_forward_t *fwd = NULL;
  char target[32], relay_addr[KP_ADDR_STRLEN];
  int rc = !srv.data || !relay || !host || file_srv_start(loop, &srv);
  if (!rc) {
    for (size_t i = 0; i < FILE_BYTES; i++) srv.data[i] = (uint8_t)(i * 2654435761u >> 13);
    snprintf(target, sizeof(target), "127.0.0.1:%d", srv.port);
    rc = kp_cli_forward_new(loop, target, "demo", &fwd);
  }
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  kp_server_t *server = NULL;
  kp_conn_callbacks_t scb = {.on_stream = kp_cli_forward_stream, .on_close = on_conn_close};
  if (!rc) rc = kp_server_listen(host, &kp, NULL, &scb, on_host_connection, fwd, &server) != 0;
  if (!rc) {
    kp_addr_t ra;
    kp_node_local_addr(relay, &ra);
    kp_addr_format(&ra, relay_addr, sizeof(relay_addr));
    char key[KP_KEY_TEXT_LEN + 1];
    kp_key_to_text(kp.public_key, key);
    printf("\n  a service by key: %s\n  forwards \"files\" (a TCP server on %s sending 16 MiB);"
           " a relay runs on %s\n  (its per-session limit lifted for the demo). Two clients "
           "download it by that key:\n\n",
           key, target, relay_addr);
    printf("  %-9s %-10s %-22s %-10s %-12s %11s %14s\n", "client", "path", "to", "its NAT",
           "phases", "rtt", "download");
    kp_testnet_run_until(loop, NULL, NULL, 1500); /* announced */
    rc = fetch(tn, kp.public_key, NULL, srv.data, "direct");
    rc |= fetch(tn, kp.public_key, relay_addr, srv.data, "relayed");
    printf("\n  %s\n", rc ? "a download failed" : "both downloads arrived byte-exact");
  }
  kp_keypair_wipe(&kp);
  if (server) kp_server_close(server);
  if (fwd) kp_cli_forward_stop(fwd);
  if (relay) kp_node_close(relay, NULL);
  if (host) kp_node_close(host, NULL);
  if (srv.port) uv_close((uv_handle_t *)&srv.tcp, NULL);
  kp_testnet_run_until(loop, NULL, NULL, 200);
  if (fwd) kp_cli_forward_free(fwd);
  free(srv.data);
  return rc;
}
