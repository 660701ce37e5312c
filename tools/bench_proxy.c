/* SPDX-License-Identifier: MIT */
/* bench_proxy: what a proxy costs, as a printed table (docs/benchmarks.md,
 * "Proxying"), next to a direct and a relayed stream.
 *
 *   bench_proxy [--mib 256] [--packets 2000000] [--rounds 1]
 *
 * 1. The proxy's state machine alone, on one core, 1200-byte datagrams:
 *    SENDs opened and sent from an allocation, and arrivals sealed into
 *    RECVs (each one ChaCha20-Poly1305 operation: the session's); then the
 *    same to and from a bound destination, as PASS (no crypto).
 * 2. A stream on loopback, connected by key on a small testnet: --mib MiB
 *    from client to server direct (the LAN path), through `kadpunch relay`
 *    (relay_only), and with the client speaking through `kadpunch proxy`,
 *    each relay or proxy its own process (a core of its own, as on a real
 *    host) with its rate limits lifted. Throughput, the connection's
 *    smoothed RTT, the connect time and its datagrams for each. With
 *    --rounds N the three rows run N times, interleaved, and each row's
 *    rate is also given over its own round's direct one, as a median: the
 *    direct row moves with whatever else the machine runs. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "node/testnet.h"
#include "proxy/proxy.h"
#include "proxy/proxy_client.h"

static uint8_t block[256 << 10];

/* ---- 1. The state machine ------------------------------------------------------------------- */

#define BATCH 4096

typedef struct sm_s {
  kp_proxy_t *px;
  kp_proxy_client_t *cl;
  kp_addr_t peer;
  uint8_t (*captured)[1500];
  size_t *lens;
  unsigned n;
  bool capture;
  uint64_t sent, recv;
} sm_t;

static sm_t SM;

static void px_send(void *ctx, const kp_addr_t *to, const uint8_t *data, size_t len) {
  (void)ctx, (void)to;
  if (SM.capture) {
    SM.recv++;
    return;
  }
  kp_proxy_client_input(SM.cl, data, len, 1);
}
static int px_open(void *ctx, unsigned slot, uint8_t family, kp_addr_t *bound) {
  (void)ctx, (void)family;
  kp_addr_set_v4(bound, 0xcb007101u, (uint16_t)(40000 + slot));
  return 0;
}
static void px_alloc_send(void *ctx, unsigned slot, const kp_addr_t *to, const uint8_t *d,
                          size_t len) {
  (void)ctx, (void)slot, (void)to, (void)d, (void)len;
  SM.sent++;
}
static void px_close(void *ctx, unsigned slot) {
  (void)ctx, (void)slot;
}
static void cl_send(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  if (SM.capture && SM.n < BATCH) {
    memcpy(SM.captured[SM.n], data, len);
    SM.lens[SM.n++] = len;
    return;
  }
  kp_proxy_input(SM.px, &SM.peer, data, len, 1);
}
static void cl_opened(void *c, unsigned ch, const kp_addr_t *a) {
  (void)c, (void)ch, (void)a;
}
static void cl_recv(void *c, unsigned ch, const kp_addr_t *f, const uint8_t *d, size_t n) {
  (void)c, (void)ch, (void)f, (void)d, (void)n;
}
static void cl_closed(void *c, unsigned ch, uint8_t r) {
  (void)c, (void)ch, (void)r;
}
static void cl_down(void *c, uint8_t r) {
  (void)c, (void)r;
}

/* Datagrams per second through the proxy: the peer's (*out) and arrivals
 * for it (*in); sealed (SEND, RECV) or, once the destination is bound, as
 * PASS. */
static void forward_rates(uint64_t packets, bool bound, double *out, double *in) {
  kp_proxy_config_t cfg;
  kp_proxy_config_defaults(&cfg);
  cfg.alloc_rate = cfg.total_rate = 1ull << 50;
  cfg.alloc_pps = 1ull << 40;
  kp_rng_t rng = kp_rng_system();
  kp_keypair_t pk, ck;
  kp_keypair_generate(&pk);
  kp_keypair_generate(&ck);
  kp_proxy_io_t io = {NULL, px_send, px_open, px_alloc_send, px_close};
  kp_proxy_client_io_t cio = {NULL, cl_send, cl_opened, cl_recv, cl_closed, cl_down};
  *out = *in = 0;
  SM.capture = false;
  SM.n = 0;
  SM.captured = malloc(sizeof(*SM.captured) * BATCH);
  SM.lens = malloc(sizeof(*SM.lens) * BATCH);
  kp_addr_set_v4(&SM.peer, 0xc6336407u, 5000);
  if (!SM.captured || !SM.lens || kp_proxy_new(&cfg, &pk, &rng, &io, &SM.px) ||
      kp_proxy_client_new(&ck, pk.public_key, &rng, &cio, 1, &SM.cl))
    return;
  kp_addr_t self;
  kp_addr_set_v4(&self, 0xcb007101u, 4000);
  kp_proxy_set_local(SM.px, &self, NULL);
  kp_proxy_client_tick(SM.cl, 1);
  kp_proxy_client_open(SM.cl, 0, KP_AF_INET, 1);
  kp_addr_t dest;
  kp_addr_set_v4(&dest, 0xc6336409u, 7000);
  uint8_t data[1200];
  memset(data, 0x41, sizeof(data));
  data[0] = 0x50;
  kp_proxy_client_send(SM.cl, 0, &dest, data, 61, 1); /* a probe: a permit */
  kp_proxy_alloc_input(SM.px, 0, &dest, data, 61, 1); /* its answer: proven */
  data[0] = 0x41;
  for (int i = 0; bound && i < 20; i++) { /* a connection's first datagrams: a binding */
    kp_proxy_client_send(SM.cl, 0, &dest, data, 1200, 1);
    kp_proxy_alloc_input(SM.px, 0, &dest, data, 1200, 1);
  }
  SM.sent = SM.recv = 0;
  uint64_t out_ns = 0, in_ns = 0;
  SM.capture = true;
  for (uint64_t done = 0; done < packets; done += BATCH) {
    SM.n = 0;
    for (unsigned i = 0; i < BATCH; i++) kp_proxy_client_send(SM.cl, 0, &dest, data, 1200, 1);
    uint64_t t0 = uv_hrtime();
    /* PASSes to one address are the same bytes (no counter): one buffer,
     * as the relay's figure is taken. Sealed DATA each differ. */
    for (unsigned i = 0; i < SM.n; i++)
      kp_proxy_input(SM.px, &SM.peer, SM.captured[bound ? 0 : i], SM.lens[i], 1);
    uint64_t t1 = uv_hrtime();
    for (unsigned i = 0; i < BATCH; i++) kp_proxy_alloc_input(SM.px, 0, &dest, data, 1200, 1);
    out_ns += t1 - t0;
    in_ns += uv_hrtime() - t1;
  }
  uint64_t n = (packets + BATCH - 1) / BATCH * BATCH;
  if (SM.sent >= n) *out = (double)n / ((double)out_ns / 1e9);
  if (SM.recv >= n) *in = (double)n / ((double)in_ns / 1e9);
  kp_proxy_client_stats_t cs;
  kp_proxy_client_stats(SM.cl, &cs);
  if (bound != (cs.passed >= n)) *out = *in = 0; /* not the path asked for */
  kp_proxy_client_free(SM.cl);
  kp_proxy_free(SM.px);
  free(SM.captured);
  free(SM.lens);
}

/* ---- 2. Streams on loopback ----------------------------------------------------------------- */

typedef struct xfer_s {
  uint64_t total, written, received;
  bool connected, failed, done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  uint64_t start_ns, end_ns;
  uint64_t srtt_us;
  uint64_t lost, sent, cong; /* the sender's: packets lost of packets sent; window reductions */
  uint64_t connect_start_ns, connect_ns;
  /* CPU time over the transfer (/proc/PID/schedstat): this process (both
   * endpoints) and the relay or proxy process, if any */
  pid_t forwarder;
  uint64_t self_cpu_ns, fwd_cpu_ns;
} xfer_t;

/* Nanoseconds pid has run on a CPU (0: unknown). */
static uint64_t cpu_ns(pid_t pid) {
  char path[64];
  unsigned long long ns = 0;
  snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  if (fscanf(f, "%llu", &ns) != 1) ns = 0;
  fclose(f);
  return ns;
}

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
      current->self_cpu_ns = cpu_ns(getpid()) - current->self_cpu_ns;
      if (current->forwarder)
        current->fwd_cpu_ns = cpu_ns(current->forwarder) - current->fwd_cpu_ns;
      kp_conn_stats_t st;
      kp_conn_stats(kp_stream_conn(s), &st);
      current->srtt_us = st.srtt_us;
      if (current->conn) {
        kp_conn_stats(current->conn, &st);
        current->lost = st.packets_lost, current->sent = st.packets_sent;
        current->cong = st.congestion_events;
        fprintf(stderr, "DBG cwnd %llu inflight %llu min_rtt %llu srtt %llu mtu %u\n",
                (unsigned long long)st.cwnd, (unsigned long long)st.bytes_in_flight,
                (unsigned long long)st.min_rtt_us, (unsigned long long)st.srtt_us, st.mtu);
      }
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
  x->connect_ns = uv_hrtime() - x->connect_start_ns;
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
  x->self_cpu_ns = cpu_ns(getpid());
  if (x->forwarder) x->fwd_cpu_ns = cpu_ns(x->forwarder);
  tx_feed(x->stream);
}

static bool xfer_over(void *ctx) {
  xfer_t *x = ctx;
  return x->failed || x->done || (x->connected && x->status);
}

typedef enum { DIRECT, RELAYED, PROXIED } via_t;

static bool dht_reached(void *ctx) {
  kp_node_stats_t st;
  kp_node_stats(ctx, &st);
  return st.responses_in > 0;
}

static kp_node_t *make_node(uv_loop_t *loop, const char *boot, const char *relay,
                            const char *proxy) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = KP_NODE_EPHEMERAL;
  o.relays = relay ? &relay : NULL;
  o.relay_count = relay ? 1 : 0;
  o.relay_only = relay != NULL;
  o.proxy = proxy;
  o.proxy_private = true; /* the proxied path itself, not the direct one it would move to */
  kp_node_t *n;
  if (kp_node_create(loop, &o, &n)) return NULL;
  kp_testnet_run_until(loop, dht_reached, n, 10000);
  return n;
}

static bool run(uv_loop_t *loop, kp_testnet_t *tn, via_t via, const char *relay, const char *proxy,
                pid_t forwarder, uint64_t bytes, xfer_t *x) {
  kp_node_t *server = make_node(loop, tn->bootstrap, NULL, NULL);
  kp_node_t *client =
      make_node(loop, tn->bootstrap, via == RELAYED ? relay : NULL, via == PROXIED ? proxy : NULL);
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
  x->forwarder = forwarder;
  current = x;
  kp_conn_callbacks_t ccb = {.on_close = on_close};
  x->connect_start_ns = uv_hrtime();
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

static pid_t spawn(const char *const *argv) {
  pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  return pid;
}

static const char *const NAMES[] = {"direct", "relayed (client on UDP)", "proxied client"};

/* One round's table; rates[i]: row i's MB/s (0: failed). */
static void print_rows(const xfer_t *rows, const bool *oks, double rates[3]) {
  printf("%-26s %9s %10s %9s %7s %6s %11s %10s %9s %9s %12s  %s\n", "stream on loopback", "MB/s",
         "vs direct", "srtt us", "lost", "cwnd-", "connect ms", "datagrams", "ends cpu", "fwd cpu",
         "MB/s/fwd core", "path");
  for (int i = 0; i < 3; i++) {
    const xfer_t *x = &rows[i];
    rates[i] = 0;
    if (!oks[i]) {
      printf("%-26s failed (%s)\n", NAMES[i], x->status ? kp_strerror(x->status) : "transfer");
      continue;
    }
    double wall = (double)(x->end_ns - x->start_ns);
    double rate = rates[i] = (double)x->received / 1e6 / (wall / 1e9);
    double ends = 100.0 * (double)x->self_cpu_ns / wall, fwd = 100.0 * (double)x->fwd_cpu_ns / wall;
    char per_core[32] = "-";
    if (x->forwarder && x->fwd_cpu_ns)
      snprintf(per_core, sizeof(per_core), "%.0f", rate * 100.0 / fwd);
    printf("%-26s %9.1f %9.0f%% %9llu %6.2f%% %6llu %11.2f %10u %8.0f%% %8.0f%% %12s  %s%s\n",
           NAMES[i], rate, rates[0] ? 100.0 * rate / rates[0] : 0.0,
           (unsigned long long)x->srtt_us, x->sent ? 100.0 * (double)x->lost / (double)x->sent : 0.0,
           (unsigned long long)x->cong, (double)x->connect_ns / 1e6, x->info.datagrams, ends, fwd, per_core,
           kp_punch_name(x->info.punch), x->info.proxy.family ? ", proxied" : "");
  }
  fflush(stdout);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, uint64_t n) {
  qsort(v, n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double min_of(const double *v, uint64_t n) {
  double m = v[0];
  for (uint64_t i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
  return m;
}

static double max_of(const double *v, uint64_t n) {
  double m = v[0];
  for (uint64_t i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
  return m;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {{"mib", required_argument, 0, 'm'},
                                           {"packets", required_argument, 0, 'p'},
                                           {"rounds", required_argument, 0, 'r'},
                                           {0, 0, 0, 0}};
  uint64_t mib = 256, packets = 2000000, rounds = 1;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    if (c == 'm')
      mib = strtoull(optarg, NULL, 10);
    else if (c == 'p')
      packets = strtoull(optarg, NULL, 10);
    else if (c == 'r')
      rounds = strtoull(optarg, NULL, 10);
    else {
      fprintf(stderr, "usage: bench_proxy [--mib N] [--packets N] [--rounds N]\n");
      return 2;
    }
  }
  if (!mib || !packets || !rounds || rounds > 20) return 2;
  memset(block, 0xa5, sizeof(block));
  double out, in, pass_out, pass_in;
  forward_rates(packets, false, &out, &in);
  forward_rates(packets, true, &pass_out, &pass_in);
  printf("proxy state machine, one core, 1200 B     out of an allocation   into it\n"
         "  sealed (SEND, RECV: ChaCha20-Poly1305)   %8.2f M/s %12.2f M/s\n"
         "  bound (PASS: unsealed)                   %8.2f M/s %12.2f M/s\n\n",
         out / 1e6, in / 1e6, pass_out / 1e6, pass_in / 1e6);
  fflush(stdout);

  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t to;
  kp_testnet_options_init(&to);
  to.size = 10;
  kp_testnet_t tn;
  if (kp_testnet_create(&loop, &to, &tn) || !kp_testnet_wait_joined(&tn, 30000)) {
    fprintf(stderr, "bench_proxy: the testnet did not come up\n");
    return 1;
  }
  char relay_addr[32], proxy_addr[32];
  snprintf(relay_addr, sizeof(relay_addr), "127.0.0.1:%d", kp_testnet_free_port());
  snprintf(proxy_addr, sizeof(proxy_addr), "127.0.0.1:%d", kp_testnet_free_port());
  const char *relay_argv[] = {KP_BINARY,
                              "relay",
                              "--bind",
                              relay_addr,
                              "--bootstrap",
                              tn.bootstrap,
                              "--session-rate",
                              "1099511627776",
                              "--total-rate",
                              "1099511627776",
                              "--every",
                              "3600",
                              NULL};
  const char *proxy_argv[] = {KP_BINARY,
                              "proxy",
                              "--bind",
                              proxy_addr,
                              "--bootstrap",
                              tn.bootstrap,
                              "--alloc-rate",
                              "1099511627776",
                              "--total-rate",
                              "1099511627776",
                              "--every",
                              "3600",
                              NULL};
  pid_t relay_pid = spawn(relay_argv), proxy_pid = spawn(proxy_argv);
  kp_testnet_run_until(&loop, NULL, NULL, 1500);
  uint64_t bytes = mib << 20;
  bool all_ok = true;
  double ratios[2][20];
  for (uint64_t r = 0; r < rounds; r++) {
    xfer_t rows[3];
    bool oks[3];
    for (int i = 0; i < 3; i++)
      oks[i] = run(&loop, &tn, (via_t)i, relay_addr, proxy_addr,
                   i == RELAYED   ? relay_pid
                   : i == PROXIED ? proxy_pid
                                  : 0,
                   bytes, &rows[i]);
    double rates[3];
    print_rows(rows, oks, rates);
    all_ok = all_ok && oks[0] && oks[1] && oks[2];
    ratios[0][r] = rates[0] > 0 ? rates[1] / rates[0] : 0;
    ratios[1][r] = rates[0] > 0 ? rates[2] / rates[0] : 0;
  }
  kill(relay_pid, SIGTERM);
  kill(proxy_pid, SIGTERM);
  waitpid(relay_pid, NULL, 0);
  waitpid(proxy_pid, NULL, 0);
  if (rounds > 1)
    printf("\nover %llu rounds, each row's rate over the same round's direct one: relayed %.0f%% "
           "(median; %.0f-%.0f%%), proxied %.0f%% (%.0f-%.0f%%)\n",
           (unsigned long long)rounds, 100 * median(ratios[0], rounds),
           100 * min_of(ratios[0], rounds), 100 * max_of(ratios[0], rounds),
           100 * median(ratios[1], rounds), 100 * min_of(ratios[1], rounds),
           100 * max_of(ratios[1], rounds));
  kp_testnet_destroy(&tn);
  kp_testnet_run_until(&loop, NULL, NULL, 500); /* bounded: closes finish */
  return all_ok ? 0 : 1;
}
