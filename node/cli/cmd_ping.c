/* SPDX-License-Identifier: MIT */
/* kadpunch ping: is a peer reachable, how, and how far: a connection made
 * and closed again, no stream opened (its services are not touched), like
 * `tailscale ping`. */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "node/cli/cli.h"

static const char help[] =
    "usage: kadpunch ping KEY|HOST [--count N] [--interval S] [options]\n"
    "\n"
    "Connects to the peer (a key, or a host the config file names) the way\n"
    "`kadpunch connect` does and says whether it got through, the path (lan,\n"
    "open, simultaneous, birthday, relayed) and its address, each phase's time\n"
    "and the round trip measured on the connection; then closes it. No stream\n"
    "is opened: the peer's services (echo, forwards, SOCKS) are not touched,\n"
    "so it works against any server. --count repeats it.\n"
    "\n"
    "options:\n"
    "  --count N               this many times (default 1, at most 1000)\n"
    "  --interval S            seconds between them (default 1)\n"
    "  --key FILE              our key file (default $KADPUNCH_KEY, the config\n"
    "                          file's, else ~/.kadpunch/key; without one, a\n"
    "                          throwaway key: a server with an allow list refuses it)\n"
    "  --service NAME          ask for this service (default: the host's, else the\n"
    "                          server's first)\n"
    "  --json                  one JSON object per ping, then a summary\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch ping laptop --count 5\n"
    "  kadpunch ping 1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy --json\n"
    "\n"
    "exit codes: 0 reached at least once, 1 never (the reasons are printed:\n"
    "not found, refused, no direct path, timeout), 2 bad options or key\n";

/* How long to wait for the round-trip sample after connecting (the ack of
 * an empty datagram). */
#define RTT_WAIT_MS 2000

typedef struct ping_s {
  bool done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
} ping_t;

/* The peer ended it first (with no data: we closed it ourselves). */
static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  ping_t *p = kp_conn_get_data(conn);
  (void)status, (void)code;
  if (!p) return;
  p->conn = NULL;
  kp_conn_close(conn, 0);
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  ping_t *p = arg;
  (void)node;
  p->done = true;
  p->status = status;
  p->info = *info;
  p->conn = status ? NULL : conn;
  if (!status) kp_conn_set_data(conn, p);
}

static bool ping_done(void *ctx) {
  return ((ping_t *)ctx)->done;
}

static bool have_rtt(void *ctx) {
  ping_t *p = ctx;
  kp_conn_stats_t st;
  if (!p->conn) return true;
  kp_conn_stats(p->conn, &st);
  return st.min_rtt_us > 0; /* a sample: the smoothed RTT is measured, not assumed */
}

typedef struct run_s {
  const char *name, *service;
  bool json;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  char key_text[KP_KEY_TEXT_LEN + 1];
  unsigned sent, reached;
  uint64_t rtt_min, rtt_max, rtt_sum;
} run_t;

static void report(run_t *r, unsigned seq, const ping_t *p, uint64_t rtt_us) {
  char addr[KP_ADDR_STRLEN];
  kp_addr_format(&p->info.path, addr, sizeof(addr));
  if (r->json) {
    printf("{\"seq\":%u,\"ok\":%s,\"peer\":\"%s\"", seq, p->status ? "false" : "true", r->key_text);
    if (p->status) printf(",\"error\":\"%s\"", kp_err_name(p->status));
    if (!p->status)
      printf(",\"path\":\"%s\",\"address\":\"%s\",\"lookup_ms\":%u,\"handshake_ms\":%u,"
             "\"punch_ms\":%u,\"rtt_us\":%" PRIu64,
             kp_punch_name(p->info.punch), addr, p->info.lookup_ms, p->info.handshake_ms,
             p->info.punch_ms, rtt_us);
    printf("}\n");
  } else if (p->status) {
    printf("ping %u: %s: %s\n", seq, r->name, kp_strerror(p->status));
  } else {
    char rtt[32] = "no sample yet";
    if (rtt_us) snprintf(rtt, sizeof(rtt), "%.2f ms", (double)rtt_us / 1000.0);
    printf("ping %u: %s reached: path %s%s to %s, lookup %u ms, handshake %u ms, punch %u ms, "
           "rtt %s\n",
           seq, r->name, kp_punch_name(p->info.punch), p->info.relay_tcp ? " over TCP" : "", addr,
           p->info.lookup_ms, p->info.handshake_ms, p->info.punch_ms, rtt);
  }
  fflush(stdout);
}

/* One ping on the session's node. */
static void ping_once(kp_cli_session_t *s, run_t *r, const kp_keypair_t *kp, unsigned seq) {
  ping_t p = {0};
  kp_connect_options_t opts = {.service = r->service};
  kp_conn_callbacks_t cb = {.on_close = on_close};
  r->sent++;
  int err = kp_node_connect_with(s->node, kp, r->key, &opts, &cb, on_connected, &p);
  if (err) {
    p.status = err;
  } else if (!kp_cli_session_run(s, ping_done, &p, 30000)) {
    p.status = s->signalled ? UV_ECANCELED : UV_ETIMEDOUT;
  }
  uint64_t rtt = 0;
  if (!p.status && p.conn) {
    /* An empty datagram: the transport acknowledges it (a round-trip
     * sample), and serve hands it to no service (docs/protocol.md). */
    kp_conn_datagram_send(p.conn, "", 0);
    kp_cli_session_run(s, have_rtt, &p, RTT_WAIT_MS);
    kp_conn_stats_t st;
    if (p.conn) kp_conn_stats(p.conn, &st), rtt = st.min_rtt_us ? st.srtt_us : 0;
  }
  report(r, seq, &p, rtt);
  if (!p.status) {
    r->reached++;
    if (rtt && (!r->rtt_min || rtt < r->rtt_min)) r->rtt_min = rtt;
    if (rtt > r->rtt_max) r->rtt_max = rtt;
    r->rtt_sum += rtt;
  }
  if (p.conn) {
    kp_conn_set_data(p.conn, NULL);
    kp_conn_close(p.conn, 0);
  }
  if (!p.done && !err) {
    /* Timed out or interrupted: the late answer must not find p. */
    bool was = s->signalled;
    s->signalled = false;
    kp_cli_session_run(s, ping_done, &p, 15000);
    s->signalled = was;
    if (p.conn) kp_conn_close(p.conn, 0);
  }
}

static void summary(const run_t *r) {
  if (r->json) {
    printf("{\"sent\":%u,\"reached\":%u,\"rtt_min_us\":%" PRIu64 ",\"rtt_avg_us\":%" PRIu64
           ",\"rtt_max_us\":%" PRIu64 "}\n",
           r->sent, r->reached, r->rtt_min, r->reached ? r->rtt_sum / r->reached : 0, r->rtt_max);
    return;
  }
  printf("%u ping%s, %u reached", r->sent, r->sent == 1 ? "" : "s", r->reached);
  if (r->reached)
    printf("; rtt min/avg/max %.2f/%.2f/%.2f ms", (double)r->rtt_min / 1000,
           (double)(r->rtt_sum / r->reached) / 1000, (double)r->rtt_max / 1000);
  printf("\n");
}

int kp_cli_ping(int argc, char **argv) {
  static const struct option longopts[] = {{"count", required_argument, 0, 'c'},
                                           {"interval", required_argument, 0, 'i'},
                                           {"key", required_argument, 0, 'k'},
                                           {"service", required_argument, 0, 's'},
                                           {"json", no_argument, 0, 'j'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_EPHEMERAL);
  run_t r = {0};
  const char *key_path = NULL;
  unsigned long count = 1, interval = 1;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'c':
        if (!kp_cli_parse_uint(optarg, 1, 1000, &count))
          return kp_cli_usage_error("ping", "--count '%s': 1 to 1000", optarg);
        break;
      case 'i':
        if (!kp_cli_parse_uint(optarg, 0, 3600, &interval))
          return kp_cli_usage_error("ping", "--interval '%s': seconds, 0 to 3600", optarg);
        break;
      case 'k': key_path = optarg; break;
      case 's':
        if (!kp_service_name_ok(optarg))
          return kp_cli_usage_error("ping", "--service '%s': not a service name", optarg);
        r.service = optarg;
        break;
      case 'j': r.json = true; break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(&net, c, optarg, "ping"))) return rc;
    }
  }
  if (optind >= argc) return kp_cli_usage_error("ping", "give the peer's KEY or a HOST name");
  r.name = argv[optind++];
  if (optind < argc) return kp_cli_usage_error("ping", "unexpected argument '%s'", argv[optind]);
  if ((rc = kp_cli_peer(r.name, r.key, &r.service, "ping"))) return rc;
  kp_key_to_text(r.key, r.key_text);
  kp_keypair_t kp;
  if ((rc = kp_cli_identity(key_path, &kp, "ping"))) return rc;
  kp_cli_session_t s;
  net.identity = &kp; /* what a proxy sees (its --allow list names keys) */
  if ((rc = kp_cli_session_open(&s, &net, "ping"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  for (unsigned i = 1; i <= count && !s.signalled; i++) {
    ping_once(&s, &r, &kp, i);
    if (i < count && interval) kp_cli_session_run(&s, NULL, NULL, (unsigned)interval * 1000);
  }
  kp_keypair_wipe(&kp);
  summary(&r);
  s.signalled = false;
  kp_cli_session_run(&s, NULL, NULL, 100); /* the closes reach the peer */
  rc = kp_cli_session_close(&s);
  return r.reached ? rc : KP_EXIT_FAIL;
}
