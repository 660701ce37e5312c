/* SPDX-License-Identifier: MIT */
/* bench_dht: DHT figures, printed as tables (docs/benchmarks.md).
 *
 *   bench_dht [--sizes 100,1000,5000] [--lookups 200] [--seconds 2] [--runs 5]
 *
 * Part 1, per network size n: real UDP nodes on 127.0.0.1 in this process.
 * Time to create them, time until all have joined (members with their join
 * lookups done), lookup latency (median, p99), requests and hops per lookup,
 * accuracy against the brute-force truth, and resident memory per node
 * (RSS growth over the empty process, divided by n).
 *
 * Part 2: requests one node serves per second on one core. The node runs in
 * a child process pinned to CPU 0 with a routing table of 200 entries (a
 * network of a few thousand nodes); a load generator pinned to CPU 1 keeps a
 * window of requests in flight with recvmmsg/sendmmsg and counts replies. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/rng.h"
#include "dht/dht_id.h"
#include "dht/dht_internal.h"
#include "node/node_internal.h"
#include "node/testnet.h"

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* ---- Part 1: networks ---------------------------------------------------- */

static void bench_network(size_t n, unsigned lookups) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  long rss0 = rss_kb();
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = n;
  o.seed = n;
  kp_testnet_t tn;
  uint64_t t0 = uv_hrtime();
  int err = kp_testnet_create(&loop, &o, &tn);
  if (err) {
    printf("%-6zu cannot create: %s\n", n, kp_strerror(err));
    return;
  }
  double create_ms = (double)(uv_hrtime() - t0) / 1e6;
  /* The join is CPU work (n x ~330 requests on this one loop), so on a
   * busy machine it takes longer; memory is measured once it is over, or
   * marked "!" if it never was (join lookups in flight, ~9 KB each). */
  bool joined = kp_testnet_wait_joined(&tn, 120000 + 60 * (unsigned)n);
  double converge_s = (double)(uv_hrtime() - t0) / 1e9;
  /* Steady state: what the nodes hold, not the allocator's high-water mark
   * from the join lookups (glibc keeps freed heap until trimmed). */
  malloc_trim(0);
  long rss1 = rss_kb();

  uint64_t *lat = calloc(lookups, sizeof(*lat));
  unsigned requests = 0, hops = 0, exact = 0;
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, n + 1);
  kp_rng_t rng = kp_rng_seeded(&st);
  for (unsigned i = 0; i < lookups; i++) {
    kp_node_t *from = tn.nodes[kp_rng_below(&rng, (uint32_t)n)];
    uint8_t target[KP_ID_LEN], want[KP_DHT_K][KP_ID_LEN];
    kp_node_peer_t got[KP_DHT_K];
    size_t count = 0;
    kp_node_query_stats_t qs = {0};
    kp_rng_fill(&rng, target, sizeof(target));
    err = kp_testnet_find(&tn, from, target, got, &count, &qs, 10000);
    size_t w = kp_testnet_true_closest(&tn, target, from, want);
    bool same = !err && count == w;
    for (size_t j = 0; same && j < w; j++) same = !memcmp(got[j].id, want[j], KP_ID_LEN);
    exact += same;
    lat[i] = qs.duration_us;
    requests += qs.requests;
    hops += qs.hops;
  }
  qsort(lat, lookups, sizeof(*lat), cmp_u64);
  printf("%-6zu %9.1f ms %7.1f us %8.2f s%s %8.2f ms %8.2f ms %9.1f %6.2f %7.1f%% %8.1f KB\n", n,
         create_ms, create_ms * 1000 / (double)n, converge_s, joined ? " " : "!",
         (double)lat[lookups / 2] / 1000, (double)lat[(lookups * 99) / 100] / 1000,
         (double)requests / lookups, (double)hops / lookups, 100.0 * exact / lookups,
         (double)(rss1 - rss0) / (double)n);
  fflush(stdout);
  free(lat);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* ---- Part 2: one node under load ------------------------------------------ */

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

static void on_stop(uv_signal_t *sig, int signum) {
  (void)signum;
  uv_stop(sig->loop);
}

/* The serving node: a member with a table of `entries` nodes. */
static void serve(int port_fd) {
  pin(0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  o.mode = KP_NODE_MEMBER;
  kp_node_t *node;
  if (kp_node_create(&loop, &o, &node)) _exit(1);
  kp_dht_t *dht = kp__node_dht(node);
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 77);
  for (uint32_t i = 0; i < 4000 && dht->table.count < 200; i++) {
    kp_addr_t a;
    uint8_t id[KP_ID_LEN];
    kp_addr_set_v4(&a, (10u << 24) | (i + 1), 4000);
    kp_dht_id_from_addr(&a, id);
    kp_dht_table_add(&dht->table, id, &a, kp__dht_seconds(uv_now(&loop)), NULL);
  }
  kp_addr_t local;
  kp_node_local_addr(node, &local);
  if (write(port_fd, &local.port, sizeof(local.port)) != sizeof(local.port)) _exit(1);
  close(port_fd);
  uv_signal_t sig;
  uv_signal_init(&loop, &sig);
  uv_signal_start(&sig, on_stop, SIGTERM);
  uv_run(&loop, UV_RUN_DEFAULT);
  _exit(0);
}

static size_t encode_request(uint8_t command, uint16_t tid, const kp_addr_t *to,
                             const uint8_t *token, const uint8_t *target, uint8_t *buf) {
  kp_dht_msg_t m = {0};
  size_t len = 0;
  m.type = KP_DHT_REQUEST;
  m.tid = tid;
  m.to = *to;
  m.command = command;
  if (token) {
    m.has_token = true;
    memcpy(m.token, token, 32);
  }
  if (target) {
    m.has_target = true;
    memcpy(m.target, target, KP_ID_LEN);
  }
  kp_dht_msg_encode_min(&m, token ? 0 : KP_DHT_MAX_DATAGRAM, buf, KP_DHT_MAX_DATAGRAM, &len);
  return len;
}

/* Keeps `window` requests in flight for `seconds`; returns replies/s. */
static double blast(const kp_addr_t *server, uint8_t command, double seconds, unsigned window) {
  pin(1);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_storage ss;
  socklen_t sl = kp_addr_to_sockaddr(server, &ss);
  connect(fd, (struct sockaddr *)&ss, sl);
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));

  /* A first PING, unproven, to learn our token: later requests carry it,
   * as a node that has talked to this one before would. */
  uint8_t buf[KP_DHT_MAX_DATAGRAM], token[32];
  struct timeval wait = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof(wait));
  ssize_t got = -1;
  for (int tries = 0; tries < 5 && got <= 0; tries++) { /* a datagram can be lost */
    size_t len = encode_request(KP_DHT_CMD_PING, 1, server, NULL, NULL, buf);
    send(fd, buf, len, 0);
    got = recv(fd, buf, sizeof(buf), 0);
  }
  kp_dht_msg_t reply;
  if (got <= 0 || kp_dht_msg_decode(buf, (size_t)got, KP_AF_INET, &reply) || !reply.has_token)
    return -1;
  memcpy(token, reply.token, 32);

  enum { B = 64 };
  uint8_t out[B][128], in[B][KP_DHT_MAX_DATAGRAM];
  struct mmsghdr omsg[B], imsg[B];
  struct iovec oiov[B], iiov[B];
  uint8_t target[KP_ID_LEN];
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 5);
  kp_rng_t rng = kp_rng_seeded(&st);
  for (int i = 0; i < B; i++) {
    kp_rng_fill(&rng, target, sizeof(target));
    size_t l = encode_request(command, (uint16_t)i, server, token,
                              command == KP_DHT_CMD_FIND_NODE ? target : NULL, out[i]);
    oiov[i] = (struct iovec){out[i], l};
    memset(&omsg[i], 0, sizeof(omsg[i]));
    omsg[i].msg_hdr.msg_iov = &oiov[i];
    omsg[i].msg_hdr.msg_iovlen = 1;
    iiov[i] = (struct iovec){in[i], sizeof(in[i])};
    memset(&imsg[i], 0, sizeof(imsg[i]));
    imsg[i].msg_hdr.msg_iov = &iiov[i];
    imsg[i].msg_hdr.msg_iovlen = 1;
  }
  /* The generator spins (MSG_DONTWAIT) on its own core: a blocked receiver
   * would make the server pay for waking it up on every reply batch. */
  uint64_t replies = 0, inflight = 0, start = uv_hrtime(), end = start + (uint64_t)(seconds * 1e9);
  uint64_t warm = start + 300000000ull, counted_from = 0, counted = 0, last_reply = start;
  while (uv_hrtime() < end) {
    while (inflight + B <= window) {
      int n = sendmmsg(fd, omsg, B, MSG_DONTWAIT);
      if (n <= 0) break;
      inflight += (unsigned)n;
    }
    int n = recvmmsg(fd, imsg, B, MSG_DONTWAIT, NULL);
    if (n <= 0) {
      if (uv_hrtime() - last_reply > 200000000ull) inflight = 0; /* losses: refill the window */
      continue;
    }
    last_reply = uv_hrtime();
    replies += (unsigned)n;
    inflight = inflight > (unsigned)n ? inflight - (unsigned)n : 0;
    uint64_t now = uv_hrtime();
    if (now >= warm) {
      if (!counted_from) counted_from = now, counted = replies;
    }
  }
  close(fd);
  uint64_t t = uv_hrtime() - counted_from;
  return (double)(replies - counted) / ((double)t / 1e9);
}

/* CPU seconds (user + system) a process has used so far. */
static double cpu_seconds(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may contain spaces */
  unsigned long utime = 0, stime = 0;
  if (!p ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
    return 0;
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* One load run against the server; returns replies/s and the server's busy
 * fraction over the run. */
static double load_run(pid_t server_pid, const kp_addr_t *server, uint8_t command, double seconds,
                       double *busy) {
  double cpu0 = cpu_seconds(server_pid);
  uint64_t t0 = uv_hrtime();
  int rpipe[2];
  if (pipe(rpipe)) return -1;
  /* The load runs in a child, so the parent's CPU is not counted. */
  *busy = 0;
  pid_t gen = fork();
  if (gen == 0) {
    close(rpipe[0]);
    double r = blast(server, command, seconds, 1024);
    if (write(rpipe[1], &r, sizeof(r)) != sizeof(r)) _exit(1);
    _exit(0);
  }
  close(rpipe[1]);
  double rate = -1;
  if (read(rpipe[0], &rate, sizeof(rate)) != sizeof(rate)) rate = -1;
  close(rpipe[0]);
  waitpid(gen, NULL, 0);
  *busy = (cpu_seconds(server_pid) - cpu0) / ((double)(uv_hrtime() - t0) / 1e9);
  return rate;
}

static void bench_serving(double seconds, unsigned runs) {
  int pipefd[2];
  if (pipe(pipefd)) return;
  pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    serve(pipefd[1]);
  }
  close(pipefd[1]);
  uint16_t port = 0;
  if (read(pipefd[0], &port, sizeof(port)) != sizeof(port)) {
    printf("server failed to start\n");
    return;
  }
  close(pipefd[0]);
  kp_addr_t server;
  kp_addr_set_v4(&server, 0x7f000001, port);
  static const struct {
    const char *name;
    uint8_t command;
  } kinds[] = {{"PING", KP_DHT_CMD_PING}, {"FIND_NODE", KP_DHT_CMD_FIND_NODE}};
  printf("\none node serving (pinned to CPU 0; load generator on CPU 1), %u runs of %.1f s:\n\n",
         runs, seconds);
  printf("%-10s %14s %14s %12s\n", "request", "median/s", "best/s", "server CPU");
  for (size_t k = 0; k < 2; k++) {
    double rates[32], busy = 0, b = 0;
    for (unsigned r = 0; r < runs; r++) {
      rates[r] = load_run(pid, &server, kinds[k].command, seconds, &b);
      busy += b / runs;
    }
    qsort(rates, runs, sizeof(rates[0]), cmp_double);
    printf("%-10s %14.0f %14.0f %11.0f%%\n", kinds[k].name, rates[runs / 2], rates[runs - 1],
           busy * 100);
    fflush(stdout);
  }
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"sizes", required_argument, 0, 's'},   {"lookups", required_argument, 0, 'l'},
      {"seconds", required_argument, 0, 't'}, {"runs", required_argument, 0, 'r'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  char sizes_default[] = "100,1000,5000";
  char *sizes = sizes_default;
  unsigned lookups = 200;
  double seconds = 2;
  unsigned runs = 5;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 's': sizes = optarg; break;
      case 'l': lookups = (unsigned)atoi(optarg); break;
      case 't': seconds = atof(optarg); break;
      case 'r': runs = (unsigned)atoi(optarg); break;
      default:
        fprintf(stderr, "usage: bench_dht [--sizes 100,1000,5000] [--lookups N] [--seconds S] "
                        "[--runs N]\n");
        return 2;
    }
  }
  if (!lookups) lookups = 1;
  if (!runs || runs > 32) runs = 5;
  raise_fd_limit();
  printf("kadpunch DHT benchmark: nodes on 127.0.0.1, one process, one loop\n\n");
  printf("%-6s %12s %10s %10s %11s %11s %9s %6s %8s %11s\n", "nodes", "create", "per node",
         "joined", "lookup p50", "lookup p99", "requests", "hops", "exact", "RSS/node");
  for (char *tok = strtok(sizes, ","); tok; tok = strtok(NULL, ","))
    bench_network((size_t)atol(tok), lookups);
  bench_serving(seconds, runs);
  return 0;
}
