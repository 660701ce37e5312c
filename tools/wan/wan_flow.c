/* SPDX-License-Identifier: MIT */
/* wan_flow: the ends of a measurement across the emulated path (wanem),
 * one mode per run. Every mode ends by itself (bounded in time) and prints
 * one line of `key value` pairs on stdout for the scripts to read.
 *
 *   wan_flow udp-echo BIND                      echo datagrams (for udp-ping)
 *   wan_flow udp-ping DEST [--count N] [--interval-ms MS]
 *                                               round trips: min, median, p90, max
 *   wan_flow udp-sink BIND [--idle-ms MS]       count numbered datagrams
 *   wan_flow udp-blast DEST --mbit R --seconds T [--size B]
 *                                               numbered datagrams, paced at R
 *   wan_flow tcp-sink BIND --seconds T          goodput over T s from the first byte
 *   wan_flow tcp-send DEST [--cc NAME] [--max-seconds T]
 *   wan_flow kp-sink BIND --peer ADDR --seconds T [--cipher aes|chacha]
 *   wan_flow kp-send BIND --peer ADDR [--cipher aes|chacha] [--max-seconds T]
 *   wan_flow banner BIND [--max-seconds T]      a TCP service that speaks first
 *                                               (as sshd does), then drains
 *   wan_flow ttfb [--max-seconds T] -- COMMAND...
 *                                               runs `kadpunch connect --stdio
 *                                               --verbose`: time to "connected"
 *                                               on stderr, to the first byte
 *                                               on stdout
 *
 * The sinks measure: a receiver's goodput is what its application read in
 * the T seconds after the first byte (slow start included), so TCP and
 * kadpunch are timed the same way. kadpunch runs on fixed keys and ids
 * (this is a benchmark; the handshake is timed by ttfb). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kadpunch.h"

#define MAX_DGRAM 1472

static struct {
  int count, interval_ms, idle_ms, size;
  double mbit, seconds, max_seconds;
  const char *cc, *peer;
  kp_cipher_t cipher;
  bool verbose;
} opt = {.count = 200,
         .interval_ms = 10,
         .idle_ms = 1500,
         .size = MAX_DGRAM,
         .seconds = 10,
         .max_seconds = 60};

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

_Noreturn static void die(const char *what) {
  fprintf(stderr, "wan_flow: %s: %s\n", what, strerror(errno));
  exit(1);
}

static struct sockaddr_in parse_addr(const char *s) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof(host)) {
    fprintf(stderr, "wan_flow: bad address %s\n", s);
    exit(2);
  }
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "wan_flow: bad address %s\n", s);
    exit(2);
  }
  return sa;
}

/* Receivers say when they listen (stderr, so stdout keeps its one line):
 * the scripts start the sender only then. */
static void say_ready(void) {
  fprintf(stderr, "listening\n");
}

static int udp_bound(const char *bind_addr) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int big = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  if (bind_addr) {
    struct sockaddr_in sa = parse_addr(bind_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) die("bind");
  }
  return fd;
}

/* ---- UDP: round trips, loss, rate ---------------------------------------------------- */

typedef struct {
  uint64_t seq, sent_us;
} probe_t;

static int udp_echo(const char *bind_addr) {
  int fd = udp_bound(bind_addr);
  say_ready();
  uint8_t buf[2048];
  uint64_t end = now_us() + (uint64_t)(opt.max_seconds * 1e6);
  while (now_us() < end) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    struct sockaddr_in from;
    socklen_t fl = sizeof(from);
    ssize_t n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
    if (n > 0) sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
  }
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int udp_ping(const char *dest) {
  int fd = udp_bound(NULL);
  struct sockaddr_in to = parse_addr(dest);
  uint64_t *rtts = calloc((size_t)opt.count, sizeof(*rtts));
  int got = 0;
  uint64_t start = now_us(), next_send = start;
  int sent = 0;
  uint64_t deadline = UINT64_MAX;
  while (now_us() < deadline) {
    uint64_t now = now_us();
    if (sent < opt.count && now >= next_send) {
      probe_t p = {(uint64_t)sent, now};
      sendto(fd, &p, sizeof(p), 0, (struct sockaddr *)&to, sizeof(to));
      sent++;
      next_send += (uint64_t)opt.interval_ms * 1000;
      if (sent == opt.count) deadline = now + 2000000; /* stragglers: 2 s */
    }
    struct pollfd pf = {fd, POLLIN, 0};
    int wait_ms = sent < opt.count ? (int)((next_send > now ? next_send - now : 0) / 1000) : 50;
    if (poll(&pf, 1, wait_ms) <= 0) continue;
    probe_t p;
    if (recv(fd, &p, sizeof(p), 0) == sizeof(p) && got < opt.count)
      rtts[got++] = now_us() - p.sent_us;
  }
  qsort(rtts, (size_t)got, sizeof(*rtts), cmp_u64);
  printf("sent %d received %d rtt_min_us %llu rtt_p50_us %llu rtt_p90_us %llu rtt_max_us %llu\n",
         sent, got, got ? (unsigned long long)rtts[0] : 0ull,
         got ? (unsigned long long)rtts[got / 2] : 0ull,
         got ? (unsigned long long)rtts[got * 9 / 10] : 0ull,
         got ? (unsigned long long)rtts[got - 1] : 0ull);
  free(rtts);
  return 0;
}

static int udp_sink(const char *bind_addr) {
  int fd = udp_bound(bind_addr);
  say_ready();
  uint8_t buf[2048];
  uint64_t received = 0, bytes = 0, reordered = 0, max_seq = 0, first = 0, last = 0, gaps = 0;
  bool any = false;
  uint64_t end = now_us() + (uint64_t)(opt.max_seconds * 1e6);
  while (now_us() < end) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, any ? opt.idle_ms : 200) <= 0) {
      if (any) break; /* quiet for idle-ms after traffic: done */
      continue;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < (ssize_t)sizeof(uint64_t)) continue;
    uint64_t seq;
    memcpy(&seq, buf, sizeof(seq));
    uint64_t t = now_us();
    if (!any) first = t;
    last = t;
    if (any && seq < max_seq) reordered++;
    if (any ? seq > max_seq + 1 : seq > 0) gaps++; /* a run of missing datagrams begins */
    if (!any || seq > max_seq) max_seq = seq;
    any = true;
    received++;
    bytes += (uint64_t)n;
  }
  double secs = (double)(last - first) / 1e6;
  printf("received %llu bytes %llu max_seq %llu reordered %llu gaps %llu seconds %.3f mbit %.2f\n",
         (unsigned long long)received, (unsigned long long)bytes, (unsigned long long)max_seq,
         (unsigned long long)reordered, (unsigned long long)gaps, secs,
         secs > 0 ? (double)bytes * 8 / secs / 1e6 : 0);
  return 0;
}

static int udp_blast(const char *dest) {
  int fd = udp_bound(NULL);
  struct sockaddr_in to = parse_addr(dest);
  if (connect(fd, (struct sockaddr *)&to, sizeof(to))) die("connect");
  uint8_t buf[2048] = {0};
  size_t size = (size_t)opt.size;
  if (size < sizeof(uint64_t) || size > MAX_DGRAM) size = MAX_DGRAM;
  double per_us = opt.mbit * 1e6 / 8 / 1e6 / (double)size; /* datagrams per us */
  uint64_t start = now_us(), end = start + (uint64_t)(opt.seconds * 1e6), seq = 0;
  for (uint64_t now; (now = now_us()) < end;) {
    uint64_t due = (uint64_t)((double)(now - start) * per_us);
    while (seq < due) {
      memcpy(buf, &seq, sizeof(seq));
      if (send(fd, buf, size, 0) < 0 && errno != ENOBUFS && errno != EAGAIN) die("send");
      seq++;
    }
    struct timespec ts = {0, 200000};
    nanosleep(&ts, NULL);
  }
  printf("sent %llu bytes %llu\n", (unsigned long long)seq, (unsigned long long)(seq * size));
  return 0;
}

/* ---- TCP ------------------------------------------------------------------------------ */

static void print_goodput(uint64_t bytes, double secs, uint64_t first_after_us) {
  printf("bytes %llu seconds %.3f mbit %.2f mbyte_s %.3f first_byte_ms %.1f\n",
         (unsigned long long)bytes, secs, (double)bytes * 8 / secs / 1e6,
         (double)bytes / secs / 1e6, (double)first_after_us / 1000);
}

static int tcp_sink(const char *bind_addr) {
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sa = parse_addr(bind_addr);
  if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1)) die("tcp listen");
  say_ready();
  struct pollfd p = {ls, POLLIN, 0};
  if (poll(&p, 1, (int)(opt.max_seconds * 1000)) <= 0) {
    fprintf(stderr, "wan_flow: tcp-sink: nobody connected\n");
    return 1;
  }
  int s = accept(ls, NULL, NULL);
  if (s < 0) die("accept");
  uint64_t accepted = now_us(), first = 0, bytes = 0, end = UINT64_MAX;
  static uint8_t buf[1 << 18];
  for (;;) {
    uint64_t now = now_us();
    if (now >= end || now > accepted + (uint64_t)(opt.max_seconds * 1e6)) break;
    struct pollfd q = {s, POLLIN, 0};
    uint64_t left = (end == UINT64_MAX ? 1000000 : end - now) / 1000 + 1;
    if (poll(&q, 1, (int)left) <= 0) continue;
    ssize_t n = read(s, buf, sizeof(buf));
    if (n <= 0) break;
    if (!first) {
      first = now_us();
      end = first + (uint64_t)(opt.seconds * 1e6);
    }
    bytes += (uint64_t)n;
  }
  if (!first) return 1;
  print_goodput(bytes, opt.seconds, first - accepted);
  /* A reset, not a FIN: the sender stops at once instead of draining. */
  struct linger lg = {1, 0};
  setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(s);
  return 0;
}

static int tcp_send(const char *dest) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (opt.cc && setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, opt.cc, (socklen_t)strlen(opt.cc))) {
    fprintf(stderr, "wan_flow: TCP congestion control %s: %s\n", opt.cc, strerror(errno));
    return 3;
  }
  struct sockaddr_in sa = parse_addr(dest);
  uint64_t end = now_us() + (uint64_t)(opt.max_seconds * 1e6);
  /* The sink may start a moment after us: retry refused connects briefly. */
  while (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
    if (errno != ECONNREFUSED || now_us() > end) die("tcp connect");
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    if (opt.cc) setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, opt.cc, (socklen_t)strlen(opt.cc));
    usleep(20000);
  }
  static uint8_t buf[1 << 18];
  memset(buf, 0xa5, sizeof(buf));
  signal(SIGPIPE, SIG_IGN);
  uint64_t sent = 0;
  while (now_us() < end) {
    struct pollfd p = {s, POLLOUT, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    ssize_t n = write(s, buf, sizeof(buf));
    if (n <= 0) break;
    sent += (uint64_t)n;
  }
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  if (!getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len))
    fprintf(stderr, "tcp %s: rtt %u us, cwnd %u, total retrans %u, sent %llu\n",
            opt.cc ? opt.cc : "default", ti.tcpi_rtt, ti.tcpi_snd_cwnd, ti.tcpi_total_retrans,
            (unsigned long long)sent);
  close(s);
  return 0;
}

/* ---- kadpunch --------------------------------------------------------------------------- */

typedef struct {
  uv_loop_t *loop;
  kp_conn_t *conn;
  kp_stream_t *stream;
  uv_timer_t timer;
  uint64_t start, first, bytes, end;
  uint64_t per_second[120];
  bool done;
} kp_run_t;

static kp_run_t run;
static uint8_t block[1 << 20];

static void conn_options(kp_conn_options_t *o, bool initiator) {
  kp_conn_options_init(o);
  o->initiator = initiator;
  o->local_id = initiator ? 1 : 2;
  o->remote_id = initiator ? 2 : 1;
  o->cipher = opt.cipher;
  memset(o->tx_key, initiator ? 0x11 : 0x22, 32);
  memset(o->rx_key, initiator ? 0x22 : 0x11, 32);
  if (kp_addr_parse(&o->remote, opt.peer)) {
    fprintf(stderr, "wan_flow: bad --peer %s\n", opt.peer ? opt.peer : "(none)");
    exit(2);
  }
}

static kp_endpoint_t *endpoint(const char *bind_addr) {
  kp_endpoint_t *ep;
  int err = kp_endpoint_create(run.loop, bind_addr, &ep);
  if (err) {
    fprintf(stderr, "wan_flow: endpoint %s: %s\n", bind_addr, kp_strerror(err));
    exit(1);
  }
  return ep;
}

static void print_kp_stats(const char *who) {
  kp_conn_stats_t st;
  kp_conn_stats(run.conn, &st);
  fprintf(stderr,
          "kadpunch %s: srtt %llu us (min %llu), cwnd %llu, sent %llu, lost %llu, "
          "retransmitted frames %llu, window cuts %llu, timeouts %llu, mtu %u\n",
          who, (unsigned long long)st.srtt_us, (unsigned long long)st.min_rtt_us,
          (unsigned long long)st.cwnd, (unsigned long long)st.packets_sent,
          (unsigned long long)st.packets_lost, (unsigned long long)st.retransmits,
          (unsigned long long)st.congestion_events, (unsigned long long)st.probe_timeouts, st.mtu);
}

static void sink_stop(void) {
  if (run.done) return;
  run.done = true;
  if (run.first) print_goodput(run.bytes, opt.seconds, run.first - run.start);
  if (opt.verbose) {
    print_kp_stats("receiver");
    fprintf(stderr, "kadpunch receiver, Mbit/s each second:");
    for (unsigned k = 0; k < opt.seconds && k < 120; k++)
      fprintf(stderr, " %.1f", (double)run.per_second[k] * 8 / 1e6);
    fprintf(stderr, "\n");
  }
  fflush(stdout);
  kp_conn_close(run.conn, 0); /* tells the sender to stop */
  uv_timer_stop(&run.timer);
  uv_stop(run.loop);
}

static void sink_read(kp_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  (void)s;
  if (nread <= 0) return;
  uint64_t now = now_us();
  if (!run.first) {
    run.first = now;
    run.end = now + (uint64_t)(opt.seconds * 1e6);
    uv_timer_start(&run.timer, (uv_timer_cb)sink_stop, (uint64_t)(opt.seconds * 1000), 0);
  }
  if (now < run.end) run.bytes += (uint64_t)nread;
  /* Per second, for --verbose. */
  unsigned k = (unsigned)((now - run.first) / 1000000);
  if (k < sizeof(run.per_second) / sizeof(run.per_second[0])) run.per_second[k] += (uint64_t)nread;
}

static void sink_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn;
  kp_stream_read_start(s, sink_read);
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "wan_flow: no data in time\n");
  uv_stop(run.loop);
}

static int kp_sink(const char *bind_addr) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  run.loop = &loop;
  kp_endpoint_t *ep = endpoint(bind_addr);
  kp_conn_options_t o;
  conn_options(&o, false);
  kp_conn_callbacks_t cb = {sink_stream, NULL, NULL, NULL};
  int err = kp_conn_open(ep, &o, &cb, &run.conn);
  if (err) return fprintf(stderr, "wan_flow: %s\n", kp_strerror(err)), 1;
  uv_timer_init(&loop, &run.timer);
  uv_timer_start(&run.timer, on_deadline, (uint64_t)(opt.max_seconds * 1000), 0);
  run.start = now_us();
  say_ready();
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = run.done ? 0 : 1;
  kp_conn_close(run.conn, 0);
  kp_endpoint_close(ep, NULL);
  uv_close((uv_handle_t *)&run.timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  return rc;
}

static void send_more(kp_stream_t *s);

static void sent_cb(kp_write_t *req, int status) {
  (void)status;
  free(req);
}

static void send_more(kp_stream_t *s) {
  while (!run.done && kp_stream_is_writable(s)) {
    kp_write_t *req = malloc(sizeof(*req));
    uv_buf_t b = uv_buf_init((char *)block, 256 << 10);
    if (!req || kp_stream_write(req, s, &b, 1, sent_cb)) {
      free(req);
      return;
    }
  }
}

static void send_closed(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
  if (opt.verbose) print_kp_stats("sender");
  run.done = true;
  uv_stop(run.loop);
}

static int kp_send(const char *bind_addr) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  run.loop = &loop;
  kp_endpoint_t *ep = endpoint(bind_addr);
  kp_conn_options_t o;
  conn_options(&o, true);
  kp_conn_callbacks_t cb = {NULL, send_closed, NULL, NULL};
  int err = kp_conn_open(ep, &o, &cb, &run.conn);
  if (err || (err = kp_stream_open(run.conn, &run.stream)))
    return fprintf(stderr, "wan_flow: %s\n", kp_strerror(err)), 1;
  kp_stream_set_drain_cb(run.stream, send_more);
  send_more(run.stream);
  uv_timer_init(&loop, &run.timer);
  uv_timer_start(&run.timer, on_deadline, (uint64_t)(opt.max_seconds * 1000), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  kp_stream_close(run.stream, NULL);
  kp_conn_close(run.conn, 0);
  kp_endpoint_close(ep, NULL);
  uv_close((uv_handle_t *)&run.timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  return 0;
}

/* ---- connect --stdio: connect time and first byte ------------------------------------------ */

static int banner(const char *bind_addr) {
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in sa = parse_addr(bind_addr);
  if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 8)) die("tcp listen");
  say_ready();
  signal(SIGPIPE, SIG_IGN);
  uint64_t end = now_us() + (uint64_t)(opt.max_seconds * 1e6);
  while (now_us() < end) {
    struct pollfd p = {ls, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    int s = accept(ls, NULL, NULL);
    if (s < 0) continue;
    static const char hello[] = "SSH-2.0-wan_flow\r\n";
    if (write(s, hello, sizeof(hello) - 1) < 0) {
      close(s);
      continue;
    }
    /* Drain until the client ends (bounded by the run's deadline). */
    char buf[4096];
    for (;;) {
      struct pollfd q = {s, POLLIN, 0};
      if (now_us() >= end || poll(&q, 1, 200) < 0) break;
      if (q.revents && read(s, buf, sizeof(buf)) <= 0) break;
    }
    close(s);
  }
  return 0;
}

static int ttfb(char **cmd) {
  int in[2], out[2], err[2];
  if (pipe(in) || pipe(out) || pipe(err)) die("pipe");
  uint64_t t0 = now_us();
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(in[1]), close(out[0]), close(err[0]);
    execvp(cmd[0], cmd);
    _exit(127);
  }
  close(in[0]), close(out[1]), close(err[1]);
  uint64_t connected = 0, first = 0, end = t0 + (uint64_t)(opt.max_seconds * 1e6);
  char line[4096];
  size_t used = 0;
  bool out_open = true, err_open = true;
  while ((!connected || !first) && (out_open || err_open) && now_us() < end) {
    struct pollfd p[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    if (poll(p, 2, 100) <= 0) continue;
    uint64_t now = now_us();
    if (p[0].revents) {
      char b[256];
      ssize_t n = read(out[0], b, sizeof(b));
      if (n <= 0)
        out_open = false;
      else if (!first)
        first = now;
    }
    if (p[1].revents) {
      ssize_t n = read(err[0], line + used, sizeof(line) - 1 - used);
      if (n <= 0) {
        err_open = false;
      } else {
        used += (size_t)n;
        line[used] = 0;
        if (!connected && strstr(line, "connected to")) connected = now;
        if (opt.verbose) fwrite(line + used - (size_t)n, 1, (size_t)n, stderr);
        if (used > sizeof(line) / 2) { /* keep the tail: the marker may straddle */
          memmove(line, line + used - 64, 64);
          used = 64;
        }
      }
    }
  }
  close(in[1]); /* our end of the session: the client ends its side and exits */
  int status = 0;
  for (int i = 0; i < 50 && waitpid(pid, &status, WNOHANG) == 0; i++) usleep(100000);
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  if (!connected || !first) {
    printf("connect_ms - ttfb_ms -\n");
    return 1;
  }
  printf("connect_ms %.1f ttfb_ms %.1f\n", (double)(connected - t0) / 1000,
         (double)(first - t0) / 1000);
  return 0;
}

/* ---- main --------------------------------------------------------------------------------------
 */

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"count", required_argument, 0, 'n'},       {"interval-ms", required_argument, 0, 'i'},
      {"idle-ms", required_argument, 0, 'I'},     {"size", required_argument, 0, 'z'},
      {"mbit", required_argument, 0, 'm'},        {"seconds", required_argument, 0, 's'},
      {"max-seconds", required_argument, 0, 'M'}, {"cc", required_argument, 0, 'c'},
      {"peer", required_argument, 0, 'p'},        {"cipher", required_argument, 0, 'C'},
      {"verbose", no_argument, 0, 'v'},           {0, 0, 0, 0}};
  if (argc < 3) goto usage;
  /* MODE ADDR [options], or ttfb [options] -- COMMAND... */
  const char *mode = argv[1];
  bool is_ttfb = !strcmp(mode, "ttfb");
  const char *arg = is_ttfb ? NULL : argv[2];
  optind = is_ttfb ? 2 : 3;
  opt.cipher = kp_cipher_preferred();
  for (int c; (c = getopt_long(argc, argv, "+", longopts, NULL)) != -1;) {
    switch (c) {
      case 'n': opt.count = atoi(optarg); break;
      case 'i': opt.interval_ms = atoi(optarg); break;
      case 'I': opt.idle_ms = atoi(optarg); break;
      case 'z': opt.size = atoi(optarg); break;
      case 'm': opt.mbit = atof(optarg); break;
      case 's': opt.seconds = atof(optarg); break;
      case 'M': opt.max_seconds = atof(optarg); break;
      case 'c': opt.cc = optarg; break;
      case 'p': opt.peer = optarg; break;
      case 'C':
        opt.cipher = !strcmp(optarg, "aes") ? KP_CIPHER_AES256_GCM : KP_CIPHER_CHACHA20_POLY1305;
        break;
      case 'v': opt.verbose = true; break;
      default: goto usage;
    }
  }
  if (opt.count < 1) opt.count = 1;
  memset(block, 0xa5, sizeof(block));
  if (is_ttfb) {
    if (optind >= argc) goto usage;
    return ttfb(argv + optind);
  }
  if (!strcmp(mode, "udp-echo")) return udp_echo(arg);
  if (!strcmp(mode, "udp-ping")) return udp_ping(arg);
  if (!strcmp(mode, "udp-sink")) return udp_sink(arg);
  if (!strcmp(mode, "udp-blast")) return udp_blast(arg);
  if (!strcmp(mode, "tcp-sink")) return tcp_sink(arg);
  if (!strcmp(mode, "tcp-send")) return tcp_send(arg);
  if (!strcmp(mode, "kp-sink")) return kp_sink(arg);
  if (!strcmp(mode, "kp-send")) return kp_send(arg);
  if (!strcmp(mode, "banner")) return banner(arg);
usage:
  fprintf(stderr, "usage: wan_flow udp-echo|udp-ping|udp-sink|udp-blast|tcp-sink|tcp-send|"
                  "kp-sink|kp-send|banner ADDR [options]\n"
                  "       wan_flow ttfb [options] -- COMMAND...\n");
  return 2;
}
