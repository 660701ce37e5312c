/* SPDX-License-Identifier: MIT */
/* bench_relay: what a blind relay costs, as a printed table
 * (docs/benchmarks.md).
 *
 *   bench_relay [--mib 256] [--packets 10000000]
 *
 * 1. The relay's state machine alone: datagrams forwarded per second on
 *    one core, 1024 sessions, 1200-byte datagrams from random peers.
 * 2. A stream on loopback, connected by key on a small testnet: --mib MiB
 *    from client to server over the direct (LAN) path, then the same with
 *    the client set to relay_only through `kadpunch relay` running as its
 *    own process (so the relay has a core of its own, as on a real host).
 *    Throughput and the connection's smoothed RTT for each. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>

#include "node/testnet.h"
#include "relay/relay.h"

static uint8_t block[256 << 10];

/* ---- 1. The state machine ------------------------------------------------------ */

static double forward_rate(uint64_t packets) {
  kp_relay_config_t cfg;
  kp_relay_config_defaults(&cfg);
  cfg.pair_rate = 1u << 30;
  cfg.session_rate = cfg.total_rate = 1ull << 50;
  cfg.sessions_per_ip = cfg.pending_per_ip = 1u << 20;
  kp_relay_t *r;
  kp_rng_t rng = kp_rng_system();
  if (kp_relay_new(&cfg, &rng, &r)) return 0;
  enum { SESSIONS = 1024 };
  static kp_addr_t peers[2 * SESSIONS];
  uint8_t msg[KP_RELAY_CTRL_LEN], reply[KP_RELAY_CTRL_LEN], data[1200] = {0x41};
  kp_addr_t to, other;
  for (unsigned i = 0; i < SESSIONS; i++) {
    for (int side = 0; side < 2; side++) {
      kp_addr_t *a = &peers[2 * i + (unsigned)side];
      kp_addr_set_v4(a, 0xc6336400u + (i % 200), (uint16_t)(1024 + 2 * i + (unsigned)side));
      uint8_t secret[64] = {0};
      kp_relay_pair_t pair;
      kp_relay_ctrl_t c;
      memcpy(secret, &i, sizeof(i));
      kp_relay_pair_derive(secret, &pair);
      kp_relay_pair_request(&pair, (uint8_t)side, &c);
      kp_relay_ctrl_encode(&c, msg);
      kp_relay_input(r, a, msg, sizeof(msg), 0, &to, &other, reply);
    }
  }
  uint64_t forwarded = 0, t0 = uv_hrtime();
  uint32_t x = 1;
  for (uint64_t n = 0; n < packets; n++) {
    x = x * 1664525u + 1013904223u;
    forwarded += kp_relay_input(r, &peers[x % (2 * SESSIONS)], data, sizeof(data), 1, &to, &other,
                                reply) == KP_RELAY_FORWARD;
  }
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  kp_relay_free(r);
  return forwarded == packets ? (double)packets / secs : 0;
}

/* ---- 2. A stream, direct and relayed ------------------------------------------- */

typedef struct xfer_s {
  uint64_t total, written, received;
  bool connected, failed, done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  uint64_t start_ns, end_ns;
  uint64_t srtt_us;
} xfer_t;

static xfer_t *current;

static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

static void rx_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n > 0) current->received += (uint64_t)n;
  if (n < 0 || current->received >= current->total) {
    if (!current->done) {
      current->done = true;
      current->end_ns = uv_hrtime();
      kp_conn_stats_t st;
      kp_conn_stats(kp_stream_conn(s), &st);
      current->srtt_us = st.srtt_us;
    }
    if (n < 0) kp_stream_close(s, NULL);
  }
}

static void on_server_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  kp_stream_read_start(s, rx_read);
}

static void on_server_conn(kp_server_t *server, kp_conn_t *conn, const kp_connect_info_t *info,
                           void *arg) {
  (void)server, (void)conn, (void)info, (void)arg;
}

static void tx_written(kp_write_t *req, int status) {
  (void)status;
  free(req);
}

static void tx_feed(kp_stream_t *s) {
  xfer_t *x = kp_stream_get_data(s);
  while (x->written < x->total && kp_stream_is_writable(s)) {
    uint64_t n = x->total - x->written;
    if (n > sizeof(block)) n = sizeof(block);
    kp_write_t *req = calloc(1, sizeof(*req));
    uv_buf_t b = uv_buf_init((char *)block, (unsigned)n);
    if (!req || kp_stream_write(req, s, &b, 1, tx_written)) {
      free(req);
      x->failed = true;
      return;
    }
    x->written += n;
  }
  if (x->written == x->total) kp_stream_end(s);
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  xfer_t *x = arg;
  (void)node;
  x->connected = true;
  x->status = status;
  x->info = *info;
  x->conn = conn;
  if (status || kp_stream_open(conn, &x->stream)) {
    x->failed = true;
    return;
  }
  kp_stream_set_data(x->stream, x);
  kp_stream_set_drain_cb(x->stream, tx_feed);
  x->start_ns = uv_hrtime();
  tx_feed(x->stream);
}

static bool xfer_over(void *ctx) {
  xfer_t *x = ctx;
  return x->failed || x->done || (x->connected && x->status);
}

/* How the client reaches the relay: not at all (direct), UDP, TCP. */
typedef enum { VIA_NONE, VIA_UDP, VIA_TCP } via_t;

static kp_node_t *make_node(uv_loop_t *loop, const char *boot, const char *relay, via_t via) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  bool relay_only = via == VIA_UDP;
  o.tcp_relay = via == VIA_TCP ? relay : NULL;
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = KP_NODE_EPHEMERAL;
  o.relays = relay ? &relay : NULL;
  o.relay_count = relay ? 1 : 0;
  o.relay_only = relay_only;
  kp_node_t *n;
  return kp_node_create(loop, &o, &n) ? NULL : n;
}

static bool run(uv_loop_t *loop, kp_testnet_t *tn, const char *relay, via_t via, uint64_t bytes,
                xfer_t *x) {
  kp_node_t *server = make_node(loop, tn->bootstrap, NULL, VIA_NONE);
  kp_node_t *client = make_node(loop, tn->bootstrap, relay, via);
  if (!server || !client) return false;
  kp_testnet_run_until(loop, NULL, NULL, 500);
  kp_keypair_t skp, ckp;
  kp_keypair_generate(&skp);
  kp_keypair_generate(&ckp);
  kp_conn_callbacks_t scb = {.on_stream = on_server_stream, .on_close = on_close};
  kp_server_t *srv;
  if (kp_server_listen(server, &skp, NULL, &scb, on_server_conn, NULL, &srv)) return false;
  kp_testnet_run_until(loop, NULL, NULL, 1000);
  memset(x, 0, sizeof(*x));
  x->total = bytes;
  current = x;
  kp_conn_callbacks_t ccb = {.on_close = on_close};
  if (kp_node_connect(client, &ckp, skp.public_key, &ccb, on_connected, x)) return false;
  kp_testnet_run_until(loop, xfer_over, x, 120000);
  bool ok = x->done && !x->failed && !x->status;
  if (x->stream) kp_stream_close(x->stream, NULL);
  if (x->conn) kp_conn_close(x->conn, 0);
  kp_server_close(srv);
  kp_node_close(server, NULL);
  kp_node_close(client, NULL);
  kp_testnet_run_until(loop, NULL, NULL, 200);
  return ok;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"mib", required_argument, 0, 'm'}, {"packets", required_argument, 0, 'p'}, {0, 0, 0, 0}};
  uint64_t mib = 256, packets = 10000000;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    if (c == 'm')
      mib = strtoull(optarg, NULL, 10);
    else if (c == 'p')
      packets = strtoull(optarg, NULL, 10);
    else {
      fprintf(stderr, "usage: bench_relay [--mib N] [--packets N]\n");
      return 2;
    }
  }
  if (!mib || !packets) return 2;
  memset(block, 0xa5, sizeof(block));
  double pps = forward_rate(packets);
  printf(
      "relay state machine: %.2f M datagrams/s forwarded on one core (1024 sessions, 1200 B)\n\n",
      pps / 1e6);
  fflush(stdout);

  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t to;
  kp_testnet_options_init(&to);
  to.size = 10;
  kp_testnet_t tn;
  if (kp_testnet_create(&loop, &to, &tn) || !kp_testnet_wait_joined(&tn, 30000)) {
    fprintf(stderr, "bench_relay: the testnet did not come up\n");
    return 1;
  }
  char relay_addr[32];
  snprintf(relay_addr, sizeof(relay_addr), "127.0.0.1:%d", kp_testnet_free_port());
  pid_t pid = fork();
  if (pid == 0) {
    execl(KP_BINARY, KP_BINARY, "relay", "--bind", relay_addr, "--bootstrap", tn.bootstrap,
          "--session-rate", "1099511627776", "--total-rate", "1099511627776", "--every", "3600",
          (char *)NULL);
    _exit(127);
  }
  kp_testnet_run_until(&loop, NULL, NULL, 1500);
  xfer_t rows[3];
  uint64_t bytes = mib << 20;
  bool oks[3];
  const char *names[] = {"direct", "relayed, client on UDP", "relayed, client on TCP"};
  for (int i = 0; i < 3; i++) oks[i] = run(&loop, &tn, relay_addr, (via_t)i, bytes, &rows[i]);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  printf("%-28s %10s %10s %10s  %s\n", "stream on loopback", "MB/s", "vs direct", "srtt us",
         "path");
  double direct = 0;
  for (int i = 0; i < 3; i++) {
    xfer_t *x = &rows[i];
    if (!oks[i]) {
      printf("%-28s failed (%s)\n", names[i], x->status ? kp_strerror(x->status) : "transfer");
      continue;
    }
    double rate = (double)x->received / 1e6 / ((double)(x->end_ns - x->start_ns) / 1e9);
    if (i == 0) direct = rate;
    printf("%-28s %10.1f %9.0f%% %10llu  %s%s\n", names[i], rate,
           direct ? 100.0 * rate / direct : 0.0, (unsigned long long)x->srtt_us,
           kp_punch_name(x->info.punch), x->info.relay_tcp ? " over TCP" : "");
  }
  kp_testnet_destroy(&tn);
  kp_testnet_run_until(&loop, NULL, NULL, 500); /* bounded: closes finish */
  return oks[0] && oks[1] && oks[2] ? 0 : 1;
}
