/* SPDX-License-Identifier: MIT */
/* bench_connect: connect latency by key on a loopback testnet, printed as a
 * table (docs/benchmarks.md).
 *
 *   bench_connect [--nodes 100] [--runs 50] [--host 127.0.0.1|::1|both]
 *
 * On each host (both, the default: 127.0.0.1, then ::1; the same figures
 * over IPv4 and IPv6)
 * One network of real UDP nodes in this process and a server listening on a
 * key. Each connect is timed from kp_node_connect() to the open connection
 * (kp_conn_t ready for streams: the data plane needs no handshake of its
 * own), and its datagrams counted on the client's sockets:
 * - fresh: a client node created just before, not yet bootstrapped (its
 *   join, the lookup, the handshake, the punch: everything);
 * - bootstrapped: a client node that has joined the DHT;
 * - reused: that node connecting to the same key again (it remembers the
 *   relay node and skips the lookup).
 * A stream then echoes a few bytes, so every connect is checked to work. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"
#include "node/testnet.h"

typedef struct result_s {
  bool done;
  int status;
  kp_conn_t *conn;
  kp_connect_info_t info;
  uint64_t end_ns;
  bool echoed;
  kp_write_t write;
} result_t;

static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

static void echo_written(kp_write_t *req, int status) {
  (void)status;
  free(req);
}

static void echo_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    kp_stream_end(s);
    kp_stream_close(s, NULL);
    return;
  }
  kp_write_t *w = calloc(1, sizeof(*w) + (size_t)n);
  memcpy(w + 1, buf->base, (size_t)n);
  uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
  if (kp_stream_write(w, s, &b, 1, echo_written)) free(w);
}

static void on_server_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  kp_stream_read_start(s, echo_read);
}

static void on_server_conn(kp_server_t *server, kp_conn_t *conn, const kp_connect_info_t *info,
                           void *arg) {
  (void)server, (void)conn, (void)info, (void)arg;
}

static void on_client_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  result_t *r = kp_stream_get_data(s);
  (void)buf;
  if (n > 0) r->echoed = true;
  if (n < 0) kp_stream_close(s, NULL);
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  result_t *r = arg;
  (void)node;
  r->end_ns = uv_hrtime();
  r->done = true;
  r->status = status;
  r->info = *info;
  r->conn = conn;
  if (status) return;
  kp_stream_t *s;
  static char ping[] = "ping";
  uv_buf_t b = uv_buf_init(ping, 4);
  if (kp_stream_open(conn, &s)) return;
  kp_stream_set_data(s, r);
  kp_stream_write(&r->write, s, &b, 1, NULL);
  kp_stream_end(s);
  kp_stream_read_start(s, on_client_read);
}

static bool result_done(void *ctx) {
  return ((result_t *)ctx)->done;
}

static bool result_echoed(void *ctx) {
  return ((result_t *)ctx)->echoed;
}

static uint64_t datagrams_out(kp_node_t *node) {
  return node->sock.stats.packets_out;
}

typedef struct series_s {
  const char *name;
  double ms[1000];
  double datagrams[1000];
  unsigned n, failed;
} series_t;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
  if (!n) return 0;
  qsort(v, n, sizeof(*v), cmp_double);
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

/* One connect from node: its time and datagrams into s. */
static void measure(uv_loop_t *loop, kp_node_t *node, const kp_keypair_t *self,
                    const uint8_t server_key[KP_PUBLIC_KEY_LEN], uint64_t start_ns,
                    uint64_t start_out, series_t *s) {
  result_t r = {0};
  kp_conn_callbacks_t cb = {.on_close = on_close};
  if (kp_node_connect(node, self, server_key, &cb, on_connected, &r) ||
      !kp_testnet_run_until(loop, result_done, &r, 30000) || r.status) {
    if (r.done && r.status) fprintf(stderr, "%s: %s\n", s->name, kp_strerror(r.status));
    s->failed++;
    if (r.conn) kp_conn_close(r.conn, 0);
    return;
  }
  uint64_t out = datagrams_out(node) - start_out;
  if (!kp_testnet_run_until(loop, result_echoed, &r, 5000)) s->failed++;
  s->ms[s->n] = (double)(r.end_ns - start_ns) / 1e6;
  s->datagrams[s->n] = (double)out;
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr, "%s: %.2f ms, %u out, hp %u, lookup %u hs %u punch %u %s\n", s->name,
            (double)(r.end_ns - start_ns) / 1e6, (unsigned)out, r.info.datagrams, r.info.lookup_ms,
            r.info.handshake_ms, r.info.punch_ms, kp_punch_name(r.info.punch));
  s->n++;
  kp_conn_close(r.conn, 0);
  kp_testnet_run_until(loop, NULL, NULL, 20);
}

/* Each IPv4 client on its own loopback address, as each would have its own
 * IP on a real network (nodes rate-limit per source IP); IPv6 has one
 * loopback address, ::1, and every client shares it. */
static kp_node_t *client_node(uv_loop_t *loop, const char *boot) {
  static unsigned next;
  char bind[32];
  next++;
  if (strchr(boot, '['))
    snprintf(bind, sizeof(bind), "[::1]:0");
  else
    snprintf(bind, sizeof(bind), "127.0.%u.%u:0", 1 + next / 250, 1 + next % 250);
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = bind;
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = KP_NODE_EPHEMERAL;
  kp_node_t *node;
  if (kp_node_create(loop, &o, &node)) return NULL;
  return node;
}

static bool node_ready(void *ctx) {
  kp_node_t *node = ctx;
  kp_addr_t pub;
  return kp_node_public_addr(node, &pub) == 0 && kp_node_table(node, NULL, 0) >= 20;
}

static void close_node(uv_loop_t *loop, kp_node_t *node) {
  kp_node_close(node, NULL);
  kp_testnet_run_until(loop, NULL, NULL, 20);
}

static bool run_host(const char *host, unsigned nodes, unsigned runs) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t to;
  kp_testnet_options_init(&to);
  to.size = nodes;
  to.host = host;
  kp_testnet_t tn;
  if (kp_testnet_create(&loop, &to, &tn) || !kp_testnet_wait_joined(&tn, 60000)) {
    fprintf(stderr, "bench_connect: the testnet did not come up\n");
    return false;
  }
  const char *boot = tn.bootstrap;

  kp_keypair_t server_kp, client_kp;
  kp_keypair_generate(&server_kp);
  kp_keypair_generate(&client_kp);
  kp_node_t *server_node = client_node(&loop, boot);
  kp_testnet_run_until(&loop, node_ready, server_node, 10000);
  kp_conn_callbacks_t scb = {.on_stream = on_server_stream, .on_close = on_close};
  kp_server_t *server;
  if (!server_node ||
      kp_server_listen(server_node, &server_kp, NULL, &scb, on_server_conn, NULL, &server)) {
    fprintf(stderr, "bench_connect: the server did not start\n");
    return false;
  }
  kp_testnet_run_until(&loop, NULL, NULL, 2000); /* the announcement lands */

  series_t fresh = {.name = "fresh client"}, boot_s = {.name = "bootstrapped client"},
           reused = {.name = "reused client"};
  for (unsigned i = 0; i < runs; i++) {
    uint64_t t0 = uv_hrtime();
    kp_node_t *node = client_node(&loop, boot);
    if (!node) return false;
    measure(&loop, node, &client_kp, server_kp.public_key, t0, 0, &fresh);
    close_node(&loop, node);
  }
  for (unsigned i = 0; i < runs; i++) {
    kp_node_t *node = client_node(&loop, boot);
    if (!node) return false;
    kp_testnet_run_until(&loop, node_ready, node, 10000);
    measure(&loop, node, &client_kp, server_kp.public_key, uv_hrtime(), datagrams_out(node),
            &boot_s);
    measure(&loop, node, &client_kp, server_kp.public_key, uv_hrtime(), datagrams_out(node),
            &reused);
    close_node(&loop, node);
  }

  printf("connect by key on a %u-node loopback testnet on %s, %u runs each (to an open "
         "connection)\n\n",
         nodes, host, runs);
  printf("%-22s %10s %10s %14s %8s\n", "client", "median ms", "p99 ms", "datagrams p50", "failed");
  series_t *all[] = {&fresh, &boot_s, &reused};
  for (int i = 0; i < 3; i++) {
    series_t *s = all[i];
    double med = pct(s->ms, s->n, 0.5), p99 = pct(s->ms, s->n, 0.99);
    printf("%-22s %10.2f %10.2f %14.0f %8u\n", s->name, med, p99, pct(s->datagrams, s->n, 0.5),
           s->failed);
  }
  kp_server_close(server);
  close_node(&loop, server_node);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  kp_keypair_wipe(&server_kp);
  kp_keypair_wipe(&client_kp);
  printf("\n");
  return !(fresh.failed + boot_s.failed + reused.failed);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {{"nodes", required_argument, 0, 'n'},
                                           {"runs", required_argument, 0, 'r'},
                                           {"host", required_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *host = "both";
  unsigned nodes = 100, runs = 50;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    if (c == 'n')
      nodes = (unsigned)atoi(optarg);
    else if (c == 'r')
      runs = (unsigned)atoi(optarg);
    else if (c == 'h')
      host = optarg;
    else {
      fprintf(stderr, "usage: bench_connect [--nodes N] [--runs N] [--host 127.0.0.1|::1|both]\n");
      return 2;
    }
  }
  if (strcmp(host, "both") && strcmp(host, "127.0.0.1") && strcmp(host, "::1")) {
    fprintf(stderr, "bench_connect: --host 127.0.0.1, ::1 or both\n");
    return 2;
  }
  if (runs < 1 || runs > 1000 || nodes < 10) {
    fprintf(stderr, "bench_connect: --runs 1..1000, --nodes >= 10\n");
    return 2;
  }
  bool ok = true;
  if (strcmp(host, "::1")) ok = run_host("127.0.0.1", nodes, runs) && ok;
  if (strcmp(host, "127.0.0.1")) ok = run_host("::1", nodes, runs) && ok;
  return ok ? 0 : 1;
}
