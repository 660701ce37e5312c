/* SPDX-License-Identifier: MIT */
/* bench_proxy: what a proxy costs, as a printed table (docs/benchmarks.md,
 * "Proxying"), next to a direct and a relayed stream.
 *
 *   bench_proxy [--mib 256] [--packets 2000000] [--rounds 1] [--shared]
 *
 * 1. The proxy's state machine alone, on one core, 1200-byte datagrams:
 *    SENDs opened and sent from an allocation, and arrivals sealed into
 *    RECVs (each one ChaCha20-Poly1305 operation: the session's); then the
 *    same to and from a bound destination, as PASS (no crypto).
 * 2. A stream on loopback, connected by key on a small testnet: --mib MiB
 *    from a client in this process to a server in a process of its own,
 *    direct (the LAN path), through `kadpunch relay` (relay_only), and with
 *    the client speaking through `kadpunch proxy`, each relay or proxy a
 *    process too, with its rate limits lifted. The two endpoints share
 *    core 0 in every row and the relay and the proxy have core 1, as a
 *    forwarder on a host of its own: the ends get the same CPU whatever
 *    carries their stream (--shared: every process on any core).
 *    Throughput, the sender's smoothed RTT, losses and window cuts, the
 *    connect time and its datagrams, each process's share of a core and
 *    the endpoints' CPU seconds per GB. With --rounds N the three rows run
 *    N times, interleaved, and each row's rate and endpoint CPU per GB are
 *    also given over its own round's direct one, as medians: the direct
 *    row moves with whatever else the machine runs. */
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
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
  kp_proxy_io_t io = {NULL, px_send, px_open, px_alloc_send, px_close, NULL};
  kp_proxy_client_io_t cio = {NULL, cl_send, cl_opened, cl_recv, cl_closed, cl_down, NULL};
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

/* The server runs in a process of its own, as on a host of its own: per
 * row it is told a bootstrap address, a key and a byte count, listens,
 * says it is ready, and reads until it has them all. */
typedef struct serve_cmd_s {
  char bootstrap[64];
  kp_keypair_t key;
  uint64_t total;
} serve_cmd_t;

typedef struct serve_said_s {
  char what; /* 'R' ready, 'D' done, 'F' failed */
  uint64_t received, end_ns, cpu_ns;
} serve_said_t;

static int cmd_fd = -1, said_fd = -1; /* the parent's ends */

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

static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

/* ---- The server process */

typedef struct rx_s {
  uint64_t total, received, start_cpu_ns, end_ns, cpu_ns;
  bool done, failed;
} rx_t;

static rx_t rx;

static void rx_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  if (n > 0) rx.received += (uint64_t)n;
  if (n < 0 || rx.received >= rx.total) {
    if (!rx.done) {
      rx.done = true;
      rx.failed = rx.received < rx.total;
      rx.end_ns = uv_hrtime();
      rx.cpu_ns = cpu_ns(getpid()) - rx.start_cpu_ns;
    }
    if (n < 0) kp_stream_close(s, NULL);
  }
}

static void on_server_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  if (!rx.start_cpu_ns) rx.start_cpu_ns = cpu_ns(getpid());
  kp_stream_read_start(s, rx_read);
}

static void on_server_conn(kp_server_t *server, kp_conn_t *conn, const kp_connect_info_t *info,
                           void *arg) {
  (void)server, (void)conn, (void)info, (void)arg;
}

static bool rx_over(void *ctx) {
  (void)ctx;
  return rx.done;
}

static void say(int fd, const serve_said_t *m) {
  if (write(fd, m, sizeof(*m)) != (ssize_t)sizeof(*m)) _exit(1);
}

/* One row's server; what it says goes to fd. */
static void serve_row(const serve_cmd_t *cmd, int fd) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  memset(&rx, 0, sizeof(rx));
  rx.total = cmd->total;
  serve_said_t m = {.what = 'F'};
  kp_node_t *node = make_node(&loop, cmd->bootstrap, NULL, NULL);
  kp_conn_callbacks_t scb = {.on_stream = on_server_stream, .on_close = on_close};
  kp_server_t *srv = NULL;
  if (!node || kp_server_listen(node, &cmd->key, NULL, &scb, on_server_conn, NULL, &srv)) {
    say(fd, &m);
  } else {
    kp_testnet_run_until(&loop, NULL, NULL, 1000); /* announced */
    m.what = 'R';
    say(fd, &m);
    kp_testnet_run_until(&loop, rx_over, NULL, 120000);
    m = (serve_said_t){.what = rx.done && !rx.failed ? 'D' : 'F',
                       .received = rx.received,
                       .end_ns = rx.end_ns,
                       .cpu_ns = rx.cpu_ns};
    say(fd, &m);
    kp_testnet_run_until(&loop, NULL, NULL, 100); /* the stream's end reaches the client */
  }
  if (srv) kp_server_close(srv);
  if (node) kp_node_close(node, NULL);
  kp_testnet_run_until(&loop, NULL, NULL, 200); /* bounded: closes finish */
  uv_loop_close(&loop);
}

/* Forks the server process: rows until the parent closes its pipe. */
static pid_t fork_server(void) {
  int cmd_pipe[2], said_pipe[2];
  if (pipe(cmd_pipe) || pipe(said_pipe)) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(cmd_pipe[1]);
    close(said_pipe[0]);
    serve_cmd_t cmd;
    while (read(cmd_pipe[0], &cmd, sizeof(cmd)) == (ssize_t)sizeof(cmd))
      serve_row(&cmd, said_pipe[1]);
    _exit(0);
  }
  close(cmd_pipe[0]);
  close(said_pipe[1]);
  cmd_fd = cmd_pipe[1];
  said_fd = said_pipe[0];
  fcntl(said_fd, F_SETFL, O_NONBLOCK); /* read from inside the loop's waits */
  return pid;
}

/* ---- The client, in the bench process */

typedef struct xfer_s {
  uint64_t total, written;
  bool connected, failed;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  serve_said_t said; /* the server's last word */
  uint64_t start_ns;
  uint64_t srtt_us;
  uint64_t lost, sent, cong; /* the sender's: packets lost of packets sent; window reductions */
  uint64_t connect_start_ns, connect_ns;
  /* CPU time over the transfer (/proc/PID/schedstat): this process (the
   * client), the server's and the relay or proxy process, if any */
  pid_t server, forwarder;
  uint64_t self_cpu_ns, fwd_cpu_ns;
} xfer_t;

static bool server_said(void *ctx) {
  xfer_t *x = ctx;
  serve_said_t m;
  if (read(said_fd, &m, sizeof(m)) != (ssize_t)sizeof(m)) return false;
  x->said = m;
  return true;
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
  return x->failed || (x->connected && x->status) || server_said(x);
}

typedef enum { DIRECT, RELAYED, PROXIED } via_t;

static bool run(uv_loop_t *loop, kp_testnet_t *tn, via_t via, const char *relay, const char *proxy,
                pid_t forwarder, uint64_t bytes, xfer_t *x) {
  memset(x, 0, sizeof(*x));
  x->total = bytes;
  x->forwarder = forwarder;
  kp_node_t *client =
      make_node(loop, tn->bootstrap, via == RELAYED ? relay : NULL, via == PROXIED ? proxy : NULL);
  if (!client) return false;
  serve_cmd_t cmd;
  memset(&cmd, 0, sizeof(cmd));
  snprintf(cmd.bootstrap, sizeof(cmd.bootstrap), "%s", tn->bootstrap);
  kp_keypair_generate(&cmd.key);
  cmd.total = bytes;
  bool ok = write(cmd_fd, &cmd, sizeof(cmd)) == (ssize_t)sizeof(cmd) &&
            kp_testnet_run_until(loop, server_said, x, 20000) && x->said.what == 'R';
  kp_keypair_t ckp;
  kp_keypair_generate(&ckp);
  kp_conn_callbacks_t ccb = {.on_close = on_close};
  x->connect_start_ns = uv_hrtime();
  if (ok && !kp_node_connect(client, &ckp, cmd.key.public_key, &ccb, on_connected, x)) {
    kp_testnet_run_until(loop, xfer_over, x, 120000);
    ok = x->said.what == 'D' && !x->failed && !x->status;
  } else {
    ok = false;
  }
  if (ok) {
    x->self_cpu_ns = cpu_ns(getpid()) - x->self_cpu_ns;
    if (x->forwarder) x->fwd_cpu_ns = cpu_ns(x->forwarder) - x->fwd_cpu_ns;
    kp_conn_stats_t st;
    kp_conn_stats(x->conn, &st);
    x->srtt_us = st.srtt_us;
    x->lost = st.packets_lost, x->sent = st.packets_sent;
    x->cong = st.congestion_events;
  }
  /* A failed row: the server process may still be waiting for its bytes;
   * it gives up by itself, and says so. */
  if (x->said.what == 'R') kp_testnet_run_until(loop, server_said, x, 130000);
  if (x->stream) kp_stream_close(x->stream, NULL);
  if (x->conn) kp_conn_close(x->conn, 0);
  kp_node_close(client, NULL);
  kp_testnet_run_until(loop, NULL, NULL, 200);
  return ok;
}

/* Keeps pid (0: this process) to one core. */
static int pin(pid_t pid, int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  return sched_setaffinity(pid, sizeof(set), &set);
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

/* One round's table; rates[i]: row i's MB/s (0: failed); ends[i]: CPU
 * seconds of both endpoints per GB. */
static void print_rows(const xfer_t *rows, const bool *oks, double rates[3], double ends[3]) {
  printf("%-24s %7s %9s %8s %6s %6s %10s %9s %7s %7s %7s %9s %9s  %s\n", "stream on loopback",
         "MB/s", "vs direct", "srtt us", "lost", "cwnd-", "connect ms", "datagrams", "client",
         "server", "fwd", "ends s/GB", "MB/s/fwd", "path");
  for (int i = 0; i < 3; i++) {
    const xfer_t *x = &rows[i];
    rates[i] = ends[i] = 0;
    if (!oks[i]) {
      printf("%-24s failed (%s)\n", NAMES[i], x->status ? kp_strerror(x->status) : "transfer");
      continue;
    }
    double wall = (double)(x->said.end_ns - x->start_ns);
    double rate = rates[i] = (double)x->said.received / 1e6 / (wall / 1e9);
    double client = 100.0 * (double)x->self_cpu_ns / wall;
    double server = 100.0 * (double)x->said.cpu_ns / wall;
    double fwd = 100.0 * (double)x->fwd_cpu_ns / wall;
    ends[i] = (double)(x->self_cpu_ns + x->said.cpu_ns) / 1e9 / ((double)x->said.received / 1e9);
    char per_core[32] = "-";
    if (x->forwarder && x->fwd_cpu_ns)
      snprintf(per_core, sizeof(per_core), "%.0f", rate * 100.0 / fwd);
    printf("%-24s %7.1f %8.0f%% %8llu %5.2f%% %6llu %10.2f %9u %6.0f%% %6.0f%% %6.0f%% %9.2f "
           "%9s  %s%s\n",
           NAMES[i], rate, rates[0] ? 100.0 * rate / rates[0] : 0.0, (unsigned long long)x->srtt_us,
           x->sent ? 100.0 * (double)x->lost / (double)x->sent : 0.0, (unsigned long long)x->cong,
           (double)x->connect_ns / 1e6, x->info.datagrams, client, server, fwd, ends[i], per_core,
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

static void print_spread(const char *what, double v[2][20], uint64_t rounds) {
  printf("  %-22s relayed %4.0f%% (%.0f-%.0f%%), proxied %4.0f%% (%.0f-%.0f%%)\n", what,
         100 * median(v[0], rounds), 100 * min_of(v[0], rounds), 100 * max_of(v[0], rounds),
         100 * median(v[1], rounds), 100 * min_of(v[1], rounds), 100 * max_of(v[1], rounds));
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {{"mib", required_argument, 0, 'm'},
                                           {"packets", required_argument, 0, 'p'},
                                           {"rounds", required_argument, 0, 'r'},
                                           {"shared", no_argument, 0, 's'},
                                           {0, 0, 0, 0}};
  uint64_t mib = 256, packets = 2000000, rounds = 1;
  bool shared = false;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    if (c == 'm')
      mib = strtoull(optarg, NULL, 10);
    else if (c == 'p')
      packets = strtoull(optarg, NULL, 10);
    else if (c == 'r')
      rounds = strtoull(optarg, NULL, 10);
    else if (c == 's')
      shared = true;
    else {
      fprintf(stderr, "usage: bench_proxy [--mib N] [--packets N] [--rounds N] [--shared]\n");
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

  /* The endpoints on core 0 in every row, a forwarder on core 1: the same
   * CPU for the ends whatever carries their stream (--shared: anywhere). */
  bool pinned = !shared && sysconf(_SC_NPROCESSORS_ONLN) >= 2 && !pin(0, 0);
  pid_t server_pid = fork_server(); /* before any loop: it makes its own */
  if (server_pid < 0) {
    fprintf(stderr, "bench_proxy: cannot start the server process\n");
    return 1;
  }
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
  if (pinned) {
    pin(relay_pid, 1);
    pin(proxy_pid, 1);
  }
  printf("%s\n\n", pinned ? "the endpoints on core 0, the relay and the proxy on core 1"
                          : "every process on any core");
  kp_testnet_run_until(&loop, NULL, NULL, 1500);
  uint64_t bytes = mib << 20;
  bool all_ok = true;
  double ratios[2][20], costs[2][20]; /* each row's over the direct one's: rate; ends s/GB */
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
    double ends[3];
    print_rows(rows, oks, rates, ends);
    all_ok = all_ok && oks[0] && oks[1] && oks[2];
    ratios[0][r] = rates[0] > 0 ? rates[1] / rates[0] : 0;
    ratios[1][r] = rates[0] > 0 ? rates[2] / rates[0] : 0;
    for (int k = 0; k < 2; k++) costs[k][r] = ends[0] > 0 ? ends[k + 1] / ends[0] : 0;
  }
  kill(relay_pid, SIGTERM);
  kill(proxy_pid, SIGTERM);
  close(cmd_fd); /* the server process ends */
  waitpid(relay_pid, NULL, 0);
  waitpid(proxy_pid, NULL, 0);
  waitpid(server_pid, NULL, 0);
  if (rounds > 1) {
    printf("\nover %llu rounds, each row's over the same round's direct one (median; range):\n",
           (unsigned long long)rounds);
    print_spread("rate", ratios, rounds);
    print_spread("endpoints' CPU per GB", costs, rounds);
  }
  kp_testnet_destroy(&tn);
  kp_testnet_run_until(&loop, NULL, NULL, 500); /* bounded: closes finish */
  return all_ok ? 0 : 1;
}
