/* SPDX-License-Identifier: MIT */
/* bench_stream: one data-plane connection on loopback, as a printed table
 * (docs/benchmarks.md).
 *
 *   bench_stream [--mib 1024] [--quick] [--row N] [--verbose]
 *
 * Each row is a fresh pair of processes: a receiver that reads every stream
 * to its end, and a sender that writes --mib MiB spread over the row's
 * streams and stops the clock when the receiver has it all. CPU time is
 * each process's user + system time over the run, per GB carried. The
 * netns rows run in a network namespace of their own whose loopback splits
 * GSO batches into datagrams (as a real link does) and drops a share of
 * them at random (iptables statistic; needs root). Plain TCP over loopback,
 * same bytes, same processes, is the last row. */
#include <arpa/inet.h>
#include <getopt.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kadpunch.h"

typedef struct {
  const char *name;
  kp_cipher_t cipher;
  unsigned streams;
  unsigned mtu;
  bool netns;  /* in a namespace whose loopback splits GSO batches */
  double loss; /* (then) the share of datagrams it drops */
  bool tcp;
} row_t;

typedef struct {
  double seconds, sender_cpu, receiver_cpu;
  bool ok;
} result_t;

static uint64_t total_bytes = 1024ull << 20;
static bool verbose;
static uint8_t block[1 << 20]; /* what every write sends */

static double cpu_seconds(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

_Noreturn static void die(const char *what, int err) {
  fprintf(stderr, "bench_stream: %s: %s\n", what, err < 0 ? kp_strerror(err) : strerror(err));
  exit(1);
}

/* ---- The receiver ------------------------------------------------------------- */

typedef struct {
  uv_loop_t *loop;
  unsigned streams_done, streams;
  uint64_t received;
} receiver_t;

static void rx_read(kp_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  receiver_t *r = kp_conn_get_data(kp_stream_conn(s));
  (void)buf;
  if (nread > 0) {
    r->received += (uint64_t)nread;
    return;
  }
  if (nread != UV_EOF) die("receiver read", (int)nread);
  kp_stream_end(s);
  kp_stream_close(s, NULL);
  r->streams_done++;
}

static void rx_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  kp_stream_read_start(s, rx_read);
}

static void rx_closed(kp_conn_t *conn, int status, uint64_t code) {
  receiver_t *r = kp_conn_get_data(conn);
  (void)code;
  if (status != KP_ECLOSED) die("receiver connection", status);
  uv_stop(r->loop);
}

/* ---- The sender ------------------------------------------------------------------ */

typedef struct sender_s sender_t;
typedef struct {
  sender_t *snd;
  kp_stream_t *s;
  uint64_t total, written, acked;
  bool eof;
} tx_stream_t;

struct sender_s {
  uv_loop_t *loop;
  tx_stream_t *tx;
  unsigned streams, done;
};

static void tx_feed(tx_stream_t *t);

static void tx_written(kp_write_t *req, int status) {
  tx_stream_t *t = req->data;
  if (status) die("sender write", status);
  t->acked += req->private_.end - req->private_.start;
  free(req);
}

static void tx_drain(kp_stream_t *s) {
  tx_feed(kp_stream_get_data(s));
}

static void tx_feed(tx_stream_t *t) {
  while (t->written < t->total && kp_stream_is_writable(t->s)) {
    uint64_t n = t->total - t->written;
    if (n > 256 << 10) n = 256 << 10;
    kp_write_t *req = malloc(sizeof(*req));
    if (!req) die("malloc", ENOMEM);
    req->data = t;
    uv_buf_t buf = uv_buf_init((char *)block, (unsigned)n);
    int err = kp_stream_write(req, t->s, &buf, 1, tx_written);
    if (err) die("sender write", err);
    t->written += n;
  }
  if (t->written == t->total) kp_stream_end(t->s);
}

/* The receiver ends its side after reading ours to the end: that EOF says
 * all of it arrived. */
static void tx_read(kp_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tx_stream_t *t = kp_stream_get_data(s);
  (void)buf;
  if (nread == UV_EOF) {
    t->eof = true;
    if (++t->snd->done == t->snd->streams) uv_stop(t->snd->loop);
  } else if (nread < 0) {
    die("sender read", (int)nread);
  }
}

/* ---- One row ------------------------------------------------------------------------ */

static void conn_options(kp_conn_options_t *o, const row_t *row, bool initiator, uint16_t port) {
  kp_conn_options_init(o);
  o->initiator = initiator;
  o->local_id = initiator ? 1 : 2;
  o->remote_id = initiator ? 2 : 1;
  o->cipher = row->cipher;
  /* Fixed keys: this is a benchmark, not a secret. */
  memset(o->tx_key, initiator ? 0x11 : 0x22, 32);
  memset(o->rx_key, initiator ? 0x22 : 0x11, 32);
  kp_addr_parse(&o->remote, "127.0.0.1:0");
  o->remote.port = port;
  o->mtu = row->mtu;
  o->no_mtu_probe = true;
}

static kp_endpoint_t *bind_endpoint(uv_loop_t *loop, uint16_t *port) {
  kp_endpoint_t *ep;
  int err = kp_endpoint_create(loop, "127.0.0.1:0", &ep);
  if (err) die("endpoint", err);
  kp_addr_t a;
  kp_endpoint_local_addr(ep, &a);
  *port = a.port;
  return ep;
}

/* Exchanges ports over the pipes (ours out, theirs in). */
static uint16_t swap_ports(int out, int in, uint16_t mine) {
  uint16_t theirs;
  if (write(out, &mine, sizeof(mine)) != sizeof(mine) ||
      read(in, &theirs, sizeof(theirs)) != sizeof(theirs))
    die("pipe", errno);
  return theirs;
}

static void run_receiver(const row_t *row, int out, int in) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uint16_t mine, theirs;
  kp_endpoint_t *ep = bind_endpoint(&loop, &mine);
  theirs = swap_ports(out, in, mine);
  receiver_t r = {&loop, 0, row->streams, 0};
  kp_conn_options_t o;
  conn_options(&o, row, false, theirs);
  kp_conn_callbacks_t cb = {rx_stream, rx_closed, NULL, NULL};
  kp_conn_t *conn;
  int err = kp_conn_open(ep, &o, &cb, &conn);
  if (err) die("receiver connection", err);
  kp_conn_set_data(conn, &r);
  double cpu0 = cpu_seconds(RUSAGE_SELF);
  uv_run(&loop, UV_RUN_DEFAULT); /* until the sender closes */
  double cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
  if (write(out, &cpu, sizeof(cpu)) != sizeof(cpu)) die("pipe", errno);
  _exit(0);
}

static result_t run_sender(const row_t *row, int out, int in) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uint16_t mine, theirs;
  kp_endpoint_t *ep = bind_endpoint(&loop, &mine);
  theirs = swap_ports(out, in, mine);
  kp_conn_options_t o;
  conn_options(&o, row, true, theirs);
  kp_conn_callbacks_t cb = {NULL, NULL, NULL, NULL};
  kp_conn_t *conn;
  int err = kp_conn_open(ep, &o, &cb, &conn);
  if (err) die("sender connection", err);
  sender_t snd = {&loop, calloc(row->streams, sizeof(tx_stream_t)), row->streams, 0};
  double cpu0 = cpu_seconds(RUSAGE_SELF);
  uint64_t t0 = uv_hrtime();
  for (unsigned i = 0; i < row->streams; i++) {
    tx_stream_t *t = &snd.tx[i];
    t->snd = &snd;
    t->total = total_bytes / row->streams;
    if ((err = kp_stream_open(conn, &t->s))) die("open", err);
    kp_stream_set_data(t->s, t);
    kp_stream_set_drain_cb(t->s, tx_drain);
    kp_stream_read_start(t->s, tx_read);
    tx_feed(t);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  result_t res = {(double)(uv_hrtime() - t0) / 1e9, cpu_seconds(RUSAGE_SELF) - cpu0, 0, true};
  if (verbose) {
    kp_conn_stats_t st;
    kp_conn_stats(conn, &st);
    fprintf(stderr,
            "  sender: srtt %llu us (min %llu), cwnd %llu, sent %llu (%llu bytes), received %llu, "
            "lost %llu, retransmitted frames %llu, window cuts %llu, timeouts %llu\n",
            (unsigned long long)st.srtt_us, (unsigned long long)st.min_rtt_us,
            (unsigned long long)st.cwnd, (unsigned long long)st.packets_sent,
            (unsigned long long)st.bytes_sent, (unsigned long long)st.packets_received,
            (unsigned long long)st.packets_lost, (unsigned long long)st.retransmits,
            (unsigned long long)st.congestion_events, (unsigned long long)st.probe_timeouts);
  }
  kp_conn_close(conn, 0);
  for (unsigned i = 0; i < row->streams; i++) kp_stream_close(snd.tx[i].s, NULL);
  kp_endpoint_close(ep, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  free(snd.tx);
  if (read(in, &res.receiver_cpu, sizeof(double)) != sizeof(double)) res.ok = false;
  return res;
}

/* ---- TCP, for scale ------------------------------------------------------------------ */

static void tcp_receiver(int out, int in) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1) ||
      getsockname(ls, (struct sockaddr *)&sa, &len))
    die("tcp listen", errno);
  swap_ports(out, in, ntohs(sa.sin_port));
  int s = accept(ls, NULL, NULL);
  double cpu0 = cpu_seconds(RUSAGE_SELF);
  static uint8_t buf[1 << 18];
  while (read(s, buf, sizeof(buf)) > 0) {
  }
  close(s);
  double cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
  if (write(out, &cpu, sizeof(cpu)) != sizeof(cpu)) die("pipe", errno);
  _exit(0);
}

static result_t tcp_sender(int out, int in) {
  uint16_t port = swap_ports(out, in, 0);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {
      .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(s, (struct sockaddr *)&sa, sizeof(sa))) die("tcp connect", errno);
  double cpu0 = cpu_seconds(RUSAGE_SELF);
  uint64_t t0 = uv_hrtime();
  for (uint64_t sent = 0; sent < total_bytes;) {
    size_t n = total_bytes - sent < 256 << 10 ? (size_t)(total_bytes - sent) : 256 << 10;
    ssize_t w = write(s, block, n);
    if (w <= 0) die("tcp write", errno);
    sent += (uint64_t)w;
  }
  shutdown(s, SHUT_WR);
  result_t res = {0, 0, 0, true};
  if (read(in, &res.receiver_cpu, sizeof(double)) != sizeof(double)) res.ok = false;
  res.seconds = (double)(uv_hrtime() - t0) / 1e9; /* the receiver has read it all */
  res.sender_cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
  close(s);
  return res;
}

/* ---- Memory per connection ---------------------------------------------------------- */

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Opens n idle connections on one endpoint (each with its keys, cipher
 * state and first round of packets built) and reports the growth of the
 * resident set per connection. */
static void memory_per_connection(unsigned n, kp_cipher_t cipher) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uint16_t port;
  kp_endpoint_t *ep = bind_endpoint(&loop, &port);
  row_t row = {"", cipher, 1, 1200, false, 0, false};
  malloc_trim(0);
  long before = rss_kb();
  for (unsigned i = 0; i < n; i++) {
    kp_conn_options_t o;
    conn_options(&o, &row, true, 9); /* to a port nobody serves */
    o.local_id = 100 + i;
    kp_conn_t *c;
    int err = kp_conn_open(ep, &o, NULL, &c);
    if (err) die("connection", err);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  malloc_trim(0);
  long after = rss_kb();
  printf("\nan idle connection (%s): %.1f KB (%u connections on one endpoint)\n",
         cipher == KP_CIPHER_AES256_GCM ? "AES-256-GCM" : "ChaCha20-Poly1305",
         (double)(after - before) * 1024 / n / 1000, n);
  kp_endpoint_close(ep, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* Runs a row in a child process of its own (loss rows get a namespace). */
static result_t run_row(const row_t *row) {
  int res_pipe[2];
  if (pipe(res_pipe)) die("pipe", errno);
  pid_t runner = fork();
  if (runner == 0) {
    close(res_pipe[0]);
    if (row->netns) {
      /* Loopback hands GSO batches over whole; a real link splits them
       * before the wire, and so does this namespace's loopback (so the
       * loss rule sees, and drops, single datagrams). */
      char cmd[256];
      snprintf(cmd, sizeof(cmd),
               "ip link set lo up && ip link set dev lo gso_max_segs 1 && iptables -A INPUT -i lo "
               "-p udp -m statistic --mode random --probability %.4f -j DROP",
               row->loss);
      if (unshare(CLONE_NEWNET) || system(cmd)) _exit(2);
    }
    int a[2], b[2];
    if (pipe(a) || pipe(b)) _exit(1);
    pid_t rx = fork();
    if (rx == 0) {
      if (row->tcp) tcp_receiver(a[1], b[0]);
      run_receiver(row, a[1], b[0]);
    }
    result_t res = row->tcp ? tcp_sender(b[1], a[0]) : run_sender(row, b[1], a[0]);
    waitpid(rx, NULL, 0);
    if (write(res_pipe[1], &res, sizeof(res)) != sizeof(res)) _exit(1);
    _exit(0);
  }
  close(res_pipe[1]);
  result_t res = {0, 0, 0, false};
  int status;
  if (read(res_pipe[0], &res, sizeof(res)) != sizeof(res)) res.ok = false;
  close(res_pipe[0]);
  waitpid(runner, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 2) res.ok = false, res.seconds = -1;
  return res;
}

int main(int argc, char **argv) {
  bool quick = false;
  int only = -1;
  static const struct option longopts[] = {{"mib", required_argument, NULL, 'm'},
                                           {"quick", no_argument, NULL, 'q'},
                                           {"row", required_argument, NULL, 'r'},
                                           {"verbose", no_argument, NULL, 'v'},
                                           {NULL, 0, NULL, 0}};
  for (int c; (c = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
    if (c == 'm')
      total_bytes = strtoull(optarg, NULL, 10) << 20;
    else if (c == 'q')
      quick = true;
    else if (c == 'r')
      only = atoi(optarg);
    else if (c == 'v')
      verbose = true;
    else
      return 2;
  }
  if (quick) total_bytes = 64ull << 20;
  memset(block, 0xa5, sizeof(block));
  signal(SIGPIPE, SIG_IGN);
  kp_cipher_t best = kp_cipher_preferred();
  const row_t rows[] = {
      {"kadpunch", best, 1, 1472, false, 0, false},
      {"kadpunch", KP_CIPHER_CHACHA20_POLY1305, 1, 1472, false, 0, false},
      {"kadpunch", best, 8, 1472, false, 0, false},
      {"kadpunch", best, 1, 1200, false, 0, false},
      {"kadpunch", best, 8, 1200, false, 0, false},
      {"kadpunch, netns", best, 1, 1472, true, 0, false},
      {"kadpunch, 1% loss", best, 1, 1472, true, 0.01, false},
      {"kadpunch, 5% loss", best, 1, 1472, true, 0.05, false},
      {"TCP (kernel)", 0, 1, 0, false, 0, true},
  };
  printf("%llu MiB per row, one connection on loopback, sender and receiver in two processes\n\n",
         (unsigned long long)(total_bytes >> 20));
  printf("%-20s %-18s %7s %9s %9s %13s %13s\n", "transport", "cipher", "streams", "datagram",
         "MB/s", "send CPU s/GB", "recv CPU s/GB");
  for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
    const row_t *r = &rows[i];
    if (only >= 0 && (size_t)only != i) continue;
    result_t res = run_row(r);
    const char *cipher = r->tcp                              ? "none"
                         : r->cipher == KP_CIPHER_AES256_GCM ? "AES-256-GCM"
                                                             : "ChaCha20-Poly1305";
    char dgram[16];
    snprintf(dgram, sizeof(dgram), r->tcp ? "-" : "%u", r->mtu);
    if (!res.ok) {
      printf("%-20s %-18s %7u %9s %9s\n", r->name, cipher, r->streams, dgram,
             res.seconds < 0 ? "(no root)" : "failed");
      continue;
    }
    double gb = (double)total_bytes / 1e9;
    printf("%-20s %-18s %7u %9s %9.0f %13.2f %13.2f\n", r->name, cipher, r->streams, dgram,
           (double)total_bytes / 1e6 / res.seconds, res.sender_cpu / gb, res.receiver_cpu / gb);
  }
  if (only < 0) {
    memory_per_connection(10000, KP_CIPHER_CHACHA20_POLY1305);
    if (best == KP_CIPHER_AES256_GCM) memory_per_connection(10000, best);
  }
  return 0;
}
