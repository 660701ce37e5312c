/* SPDX-License-Identifier: MIT */
/* kadpunch demo, second part: connecting by key. A server listens on a
 * fresh key pair on one node of the demo's network; clients on other nodes
 * find it by that key alone, shake hands through the DHT, punch, and send
 * 1 MiB through an encrypted stream that the server echoes back. */
#include <stdlib.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/testnet.h"

#define ECHO_BYTES (1024 * 1024)

typedef struct demo_client_s {
  bool done, echoed;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  kp_write_t write;
  uint8_t *data;
  size_t received, mismatched;
  uint64_t start_ns, connected_ns, echoed_ns;
} demo_client_t;

static void on_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

static void on_server_connection(kp_server_t *server, kp_conn_t *conn,
                                 const kp_connect_info_t *info, void *arg) {
  (void)server, (void)info, (void)arg;
  kp_conn_set_data(conn, NULL);
}

static void on_echo(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  demo_client_t *c = kp_stream_get_data(s);
  if (n > 0) {
    size_t len = (size_t)n;
    if (c->received + len > ECHO_BYTES || memcmp(c->data + c->received, buf->base, len))
      c->mismatched++;
    c->received += len;
    return;
  }
  c->echoed_ns = uv_hrtime();
  c->echoed = true;
  kp_stream_close(s, NULL);
  c->stream = NULL;
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  demo_client_t *c = arg;
  (void)node;
  c->connected_ns = uv_hrtime();
  c->done = true;
  c->status = status;
  c->info = *info;
  c->conn = conn;
  if (status) return;
  uv_buf_t b = uv_buf_init((char *)c->data, ECHO_BYTES);
  if (kp_stream_open(conn, &c->stream) || kp_stream_write(&c->write, c->stream, &b, 1, NULL) ||
      kp_stream_end(c->stream)) {
    c->status = UV_EPIPE;
    return;
  }
  kp_stream_set_data(c->stream, c);
  kp_stream_read_start(c->stream, on_echo);
}

static bool client_done(void *ctx) {
  demo_client_t *c = ctx;
  return c->done && (c->status || c->echoed);
}

static void print_connect(unsigned i, kp_node_t *from, const demo_client_t *c) {
  kp_addr_t a;
  char addr[KP_ADDR_STRLEN];
  kp_node_local_addr(from, &a);
  kp_addr_format(&a, addr, sizeof(addr));
  if (c->status) {
    printf("  %-4u %-22s failed: %s\n", i + 1, addr, kp_strerror(c->status));
    return;
  }
  double connect_ms = (double)(c->connected_ns - c->start_ns) / 1e6;
  double echo_s = (double)(c->echoed_ns - c->connected_ns) / 1e9;
  char phases[32];
  snprintf(phases, sizeof(phases), "%u+%u+%u ms", c->info.lookup_ms, c->info.handshake_ms,
           c->info.punch_ms);
  printf("  %-4u %-22s %-10s %-8s %7.2f ms  %-16s %6u  %7.1f MB/s%s\n", i + 1, addr,
         kp_nat_type_name(c->info.local_nat), kp_punch_name(c->info.punch), connect_ms, phases,
         c->info.datagrams, 2.0 * ECHO_BYTES / 1e6 / echo_s,
         c->mismatched || c->received != ECHO_BYTES ? "  BAD" : "");
}

int kp_cli_demo_connects(struct kp_testnet_s *tn, unsigned connects, const kp_rng_t *rng) {
  uv_loop_t *loop = tn->loop;
  kp_keypair_t server_kp;
  kp_keypair_generate(&server_kp);
  kp_node_t *server_node = tn->nodes[1 + kp_rng_below(rng, (uint32_t)(tn->count - 1))];
  kp_conn_callbacks_t scb = {.on_stream = kp_cli_echo_stream, .on_close = on_conn_close};
  kp_server_t *server;
  int err =
      kp_server_listen(server_node, &server_kp, NULL, &scb, on_server_connection, NULL, &server);
  if (err) {
    printf("\n  cannot listen: %s\n", kp_strerror(err));
    return KP_EXIT_FAIL;
  }
  char key[KP_KEY_TEXT_LEN + 1], addr[KP_ADDR_STRLEN];
  kp_addr_t a;
  kp_key_to_text(server_kp.public_key, key);
  kp_node_local_addr(server_node, &a);
  printf("\n  connect by key: a server listens on %s\n  (on node %s, an echo "
         "service); clients know only the key.\n",
         key, kp_addr_format(&a, addr, sizeof(addr)));
  kp_testnet_run_until(loop, NULL, NULL, 500); /* the announcement lands */
  printf("\n  %-4s %-22s %-10s %-8s %10s  %-16s %6s  %12s\n", "#", "client", "its NAT", "path",
         "connect", "lookup+hs+punch", "dgrams", "1 MiB echo");
  uint8_t *data = malloc(ECHO_BYTES);
  unsigned ok = 0;
  if (!data) return KP_EXIT_FAIL;
  kp_rng_fill(rng, data, ECHO_BYTES);
  for (unsigned i = 0; i < connects; i++) {
    kp_node_t *from;
    do from = tn->nodes[kp_rng_below(rng, (uint32_t)tn->count)];
    while (from == server_node);
    demo_client_t c = {.data = data, .start_ns = uv_hrtime()};
    kp_keypair_t client_kp;
    kp_keypair_generate(&client_kp);
    kp_conn_callbacks_t ccb = {.on_close = on_conn_close};
    err = kp_node_connect(from, &client_kp, server_kp.public_key, &ccb, on_connected, &c);
    kp_keypair_wipe(&client_kp);
    if (err) c.status = err, c.done = true;
    if (!err && !kp_testnet_run_until(loop, client_done, &c, 30000)) c.status = UV_ETIMEDOUT;
    print_connect(i, from, &c);
    ok += !c.status && !c.mismatched && c.received == ECHO_BYTES;
    if (c.conn) kp_conn_close(c.conn, 0);
    kp_testnet_run_until(loop, NULL, NULL, 20);
  }
  printf("\n  %u/%u clients connected by key and got their 1 MiB back byte-exact\n", ok, connects);
  kp_server_close(server);
  kp_keypair_wipe(&server_kp);
  free(data);
  return ok == connects ? KP_EXIT_OK : KP_EXIT_FAIL;
}
