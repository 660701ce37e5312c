/* SPDX-License-Identifier: MIT */
/* kadpunch relay: a DHT member that also relays, blind, for peers that
 * cannot punch a direct path, and says what it carries. */
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_metrics.h"
#include "node/control.h"

static const char help[] =
    "usage: kadpunch relay [options]\n"
    "\n"
    "Runs a DHT member node that also relays for peers with no direct path\n"
    "between them (both behind random NATs, say). Peers pair at the relay with\n"
    "a token derived from their handshake; it forwards their datagrams, which\n"
    "stay end-to-end encrypted: it reads nothing and forwards only between\n"
    "peers that paired. It announces itself on the DHT, so servers find it and\n"
    "name it to their clients. Peers whose UDP is blocked reach it over TCP on\n"
    "the same port number (kadpunch connect --tcp-relay). Prints its counters\n"
    "every few seconds while they change; stops cleanly on SIGINT or SIGTERM.\n"
    "\n"
    "options:\n"
    "  --max-sessions N        relayed connections at once (default 1024)\n"
    "  --session-rate BYTES    per connection and direction, per second (default 4194304)\n"
    "  --total-rate BYTES      for all connections, per second (default 67108864)\n"
    "  --idle S                end a connection idle this long (default 600)\n"
    "  --lifetime S            end any connection after this long (default 86400)\n"
    "  --sessions-per-ip N     connections one IP (IPv6: /64) may be part of (default 32)\n"
    "  --tcp-links-per-ip N    TCP peers one IP may be at once (default 16)\n"
    "  --every S               print the counters at most this often (default 5)\n"
    "  --control PATH          a control socket (0600) for kadpunch-inspect: table,\n"
    "                          records, stats (with the relay's counters)\n"
    "  --metrics ADDR:PORT     Prometheus metrics over HTTP at /metrics\n"
    "                          (docs/metrics.md; PORT alone is 127.0.0.1:PORT)\n" KP_CLI_NET_HELP
    "\n"
    "The node needs a public address (the relay's peers must reach it).\n"
    "\n"
    "examples:\n"
    "  kadpunch relay --bind 203.0.113.9:49737 --bootstrap 203.0.113.7:49737\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 the network failed, 2 bad options\n";

typedef struct relay_cli_s {
  kp_cli_session_t *s;
  uv_timer_t timer;
  kp_relay_counters_t last;
} relay_cli_t;

static void print_counters(const kp_relay_counters_t *c) {
  kp_cli_stamp(stdout);
  printf("relay: %u sessions; %" PRIu64 " paired, %" PRIu64 " datagrams (%" PRIu64
         " bytes) forwarded, %" PRIu64 " over rate; refused %" PRIu64 " full, %" PRIu64
         " too many attempts, %" PRIu64 " over an IP's share; %" PRIu64
         " expired; TCP: %u peers, %" PRIu64 " refused, %" PRIu64 " closed unread, %" PRIu64
         " datagrams not let through\n",
         c->sessions, c->paired, c->forwarded, c->forwarded_bytes, c->dropped_rate, c->refused_full,
         c->refused_attempts, c->refused_ip_limit, c->expired, c->tcp_links, c->tcp_refused,
         c->tcp_stalled, c->tcp_drops);
  fflush(stdout);
}

static void on_timer(uv_timer_t *t) {
  relay_cli_t *r = t->data;
  kp_relay_counters_t c;
  if (kp_node_relay_counters(r->s->node, &c)) return;
  if (memcmp(&c, &r->last, sizeof(c))) print_counters(&c);
  r->last = c;
}

static int parse_u64(const char *arg, unsigned long min, unsigned long max, uint64_t *out,
                     const char *what) {
  unsigned long v;
  if (!kp_cli_parse_uint(arg, min, max, &v))
    return kp_cli_usage_error("relay", "%s wants %lu..%lu, got '%s'", what, min, max, arg);
  *out = v;
  return 0;
}

int kp_cli_relay(int argc, char **argv) {
  static const struct option longopts[] = {{"max-sessions", required_argument, 0, 'm'},
                                           {"session-rate", required_argument, 0, 's'},
                                           {"total-rate", required_argument, 0, 't'},
                                           {"idle", required_argument, 0, 'i'},
                                           {"lifetime", required_argument, 0, 'l'},
                                           {"every", required_argument, 0, 'e'},
                                           {"sessions-per-ip", required_argument, 0, 'P'},
                                           {"tcp-links-per-ip", required_argument, 0, 'T'},
                                           {"control", required_argument, 0, 'C'},
                                           {"metrics", required_argument, 0, 'M'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_MEMBER);
  net.bind = "0.0.0.0:49737";
  net.run_relay = true;
  uint64_t v = 0, every_s = 5;
  const char *control = NULL, *metrics = NULL;
  int c, rc = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'm':
        if (!(rc = parse_u64(optarg, 1, 1u << 20, &v, "--max-sessions")))
          net.relay_limits.max_sessions = (unsigned)v;
        break;
      case 's':
        rc = parse_u64(optarg, 1024, 1ul << 40, &net.relay_limits.session_rate, "--session-rate");
        break;
      case 't':
        rc = parse_u64(optarg, 1024, 1ul << 40, &net.relay_limits.total_rate, "--total-rate");
        break;
      case 'i':
        if (!(rc = parse_u64(optarg, 1, 7 * 86400, &v, "--idle")))
          net.relay_limits.idle_ms = (unsigned)v * 1000;
        break;
      case 'l':
        if (!(rc = parse_u64(optarg, 1, 365 * 86400, &v, "--lifetime")))
          net.relay_limits.lifetime_ms = v * 1000;
        break;
      case 'e': rc = parse_u64(optarg, 1, 3600, &every_s, "--every"); break;
      case 'P':
        if (!(rc = parse_u64(optarg, 1, 1u << 20, &v, "--sessions-per-ip")))
          net.relay_limits.sessions_per_ip = (unsigned)v;
        break;
      case 'T':
        if (!(rc = parse_u64(optarg, 1, 4096, &v, "--tcp-links-per-ip")))
          net.relay_limits.tcp_links_per_ip = (unsigned)v;
        break;
      case 'C': control = optarg; break;
      case 'M': metrics = optarg; break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default: rc = kp_cli_net_option(&net, c, optarg, "relay");
    }
    if (rc) return rc;
  }
  if (optind < argc) return kp_cli_usage_error("relay", "unexpected argument '%s'", argv[optind]);
  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "relay"))) return rc;
  char text[KP_CLI_ADDRS_LEN];
  printf("relaying on %s\n", kp_cli_local_addrs(s.node, text, sizeof(text)));
  fflush(stdout);
  relay_cli_t r = {.s = &s};
  uv_timer_init(&s.loop, &r.timer);
  r.timer.data = &r;
  uv_timer_start(&r.timer, on_timer, every_s * 1000, every_s * 1000);
  kp_control_t *ctl = NULL;
  kp_cli_metrics_t *m = NULL;
  signal(SIGPIPE, SIG_IGN); /* a control client that hangs up is not a signal */
  int err = control ? kp_control_start(s.node, control, &ctl) : 0;
  if (err) {
    fprintf(stderr, "kadpunch relay: control socket %s: %s\n", control, kp_strerror(err));
    rc = KP_EXIT_FAIL;
  }
  if (!rc && metrics) rc = kp_cli_metrics_start(&s.loop, s.node, metrics, "relay", NULL, NULL, &m);
  if (!rc) kp_cli_session_run(&s, NULL, NULL, 0);
  if (ctl) kp_control_close(ctl); /* before the node it reads */
  kp_cli_metrics_close(m);
  kp_relay_counters_t last;
  if (!kp_node_relay_counters(s.node, &last)) print_counters(&last);
  uv_close((uv_handle_t *)&r.timer, NULL);
  int closed = kp_cli_session_close(&s);
  return rc ? rc : closed;
}
