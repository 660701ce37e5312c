/* SPDX-License-Identifier: MIT */
/* kadpunch proxy: a DHT member that lends peers a public endpoint (a
 * proxy, docs/protocol.md "Proxying"), blind, and says what it carries. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>

#include "node/cli/cli.h"
#include "node/cli/cli_metrics.h"
#include "node/control.h"
#include "node/node_proxy.h"
#include "proxy/proxy.h"

static const char help[] =
    "usage: kadpunch proxy [options]\n"
    "\n"
    "Runs a DHT member node that is also a proxy: a peer that cannot keep a\n"
    "NAT mapping, or does not want to show its address, opens a session to the\n"
    "proxy's key (`kadpunch connect --proxy` or `kadpunch serve --proxy`) and\n"
    "speaks from allocations on the proxy's address. The proxy forwards the\n"
    "peer's sealed datagrams unopened: it holds no key of the peer's\n"
    "connections. It sends only to addresses that answered (and DHT messages\n"
    "and a few probes to the others), never to loopback or private addresses\n"
    "from a public one. It announces itself on the DHT (kadpunch/proxies/v1).\n"
    "Prints its counters every few seconds while they change; stops cleanly on\n"
    "SIGINT or SIGTERM.\n"
    "\n"
    "options:\n"
    "  --key FILE              the proxy's identity (default: $KADPUNCH_KEY or\n"
    "                          ~/.kadpunch/key if it exists, else a fresh one)\n"
    "  --allow KEY             only this peer key may use the proxy (repeatable)\n"
    "  --allow-file FILE       only the keys in FILE (one per line, # comments)\n"
    "  --max-sessions N        peers at once (default 256)\n"
    "  --max-allocs N          allocations (sockets) in all (default 512)\n"
    "  --allocs-per-key N      allocations one peer key may hold (default 4)\n"
    "  --per-ip N              sessions and allocations one IP (IPv6: /64) may hold (default 16)\n"
    "  --lifetime S            an allocation not refreshed ends after this (default 600)\n"
    "  --max-lifetime S        any allocation ends after this (default 86400)\n"
    "  --alloc-rate BYTES      per allocation and direction, per second (default 8388608)\n"
    "  --quota BYTES           what one allocation may carry in all (default: no quota)\n"
    "  --total-rate BYTES      for all allocations, per second (default 67108864)\n"
    "  --every S               print the counters at most this often (default 5)\n"
    "  --control PATH          a control socket (0600) for kadpunch-inspect: table,\n"
    "                          records, stats\n"
    "  --metrics ADDR:PORT     Prometheus metrics over HTTP at /metrics, the proxy's\n"
    "                          with the node's (docs/metrics.md; PORT alone is\n"
    "                          127.0.0.1:PORT)\n" KP_CLI_NET_HELP "\n"
    "The node needs a public address (its peers must reach it). Bound to an\n"
    "address of each family (--bind twice), it lends addresses of both, whichever\n"
    "family a peer reaches it over: an IPv6-only peer becomes an IPv4 node.\n"
    "\n"
    "examples:\n"
    "  kadpunch proxy --bind 203.0.113.9:49737 --bootstrap 203.0.113.7:49737\n"
    "  kadpunch proxy --bind 203.0.113.9:49737 --bind [2001:db8::9]:49737 \\\n"
    "      --bootstrap 203.0.113.7:49737,[2001:db8::7]:49737\n"
    "  kadpunch connect KEY --proxy 203.0.113.9:49737\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 the network failed, 2 bad options\n";

typedef struct proxy_cli_s {
  kp_proxy_service_t *svc;
  uv_timer_t timer;
  kp_proxy_counters_t last;
} proxy_cli_t;

static void print_counters(kp_proxy_service_t *svc, const kp_proxy_counters_t *c) {
  kp_proxy_stats_t st;
  kp__proxy_service_stats(svc, &st);
  printf(
      "proxy: %u sessions, %u allocations; %" PRIu64 " welcomed, %" PRIu64 " refused; %" PRIu64
      " datagrams (%" PRIu64 " bytes) sent, %" PRIu64 " (%" PRIu64 " bytes) received (%" PRIu64
      " unsealed, to and from bound addresses), %" PRIu64 " not let through (%" PRIu64
      " to unproven addresses, %" PRIu64 " from unpermitted IPs, %" PRIu64 " over a rate, %" PRIu64
      " with stale tokens, %" PRIu64 " other); %" PRIu64 " forged, %" PRIu64 " replayed\n",
      c->sessions, c->allocs, c->welcomed, c->refused, c->sent, c->sent_bytes, c->received,
      c->received_bytes, st.passed, c->dropped, st.drops[KP_PROXY_DROP_UNPROVEN],
      st.drops[KP_PROXY_DROP_PERMIT], st.drops[KP_PROXY_DROP_RATE], st.drops[KP_PROXY_DROP_STALE],
      st.drops[KP_PROXY_DROP_SCOPE] + st.drops[KP_PROXY_DROP_TOO_BIG] +
          st.drops[KP_PROXY_DROP_NO_ALLOC],
      c->forged, c->replayed);
  fflush(stdout);
}

static void on_timer(uv_timer_t *t) {
  proxy_cli_t *p = t->data;
  kp_proxy_counters_t c;
  kp_proxy_service_counters(p->svc, &c);
  if (memcmp(&c, &p->last, sizeof(c))) print_counters(p->svc, &c);
  p->last = c;
}

static int parse_u64(const char *arg, unsigned long min, unsigned long max, uint64_t *out,
                     const char *what) {
  unsigned long v;
  if (!kp_cli_parse_uint(arg, min, max, &v))
    return kp_cli_usage_error("proxy", "%s wants %lu..%lu, got '%s'", what, min, max, arg);
  *out = v;
  return 0;
}

static int parse_unsigned(const char *arg, unsigned long max, unsigned *out, const char *what) {
  uint64_t v = 0;
  int rc = parse_u64(arg, 1, max, &v, what);
  if (!rc) *out = (unsigned)v;
  return rc;
}

/* What the options say besides the node's and the limits. */
typedef struct proxy_opts_s {
  const char *key_path, *control, *metrics;
  uint64_t every_s;
} proxy_opts_t;

static int parse_options(int argc, char **argv, kp_cli_net_t *net, kp_proxy_limits_t *l,
                         kp_cli_allow_t *allow, proxy_opts_t *o) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"allow", required_argument, 0, 'a'},
                                           {"allow-file", required_argument, 0, 'A'},
                                           {"max-sessions", required_argument, 0, 'm'},
                                           {"max-allocs", required_argument, 0, 'M'},
                                           {"allocs-per-key", required_argument, 0, 'K'},
                                           {"per-ip", required_argument, 0, 'P'},
                                           {"lifetime", required_argument, 0, 'l'},
                                           {"max-lifetime", required_argument, 0, 'L'},
                                           {"alloc-rate", required_argument, 0, 'r'},
                                           {"quota", required_argument, 0, 'q'},
                                           {"total-rate", required_argument, 0, 't'},
                                           {"every", required_argument, 0, 'e'},
                                           {"control", required_argument, 0, 'C'},
                                           {"metrics", required_argument, 0, 'X'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  int c, rc = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 'k': o->key_path = optarg; break;
      case 'a': rc = kp_cli_allow_key(allow, optarg, "proxy"); break;
      case 'A': rc = kp_cli_allow_file(allow, optarg, "proxy"); break;
      case 'm': rc = parse_unsigned(optarg, 65535, &l->max_sessions, "--max-sessions"); break;
      case 'M': rc = parse_unsigned(optarg, 65534, &l->max_allocs, "--max-allocs"); break;
      case 'K':
        rc = parse_unsigned(optarg, 1u << 16, &l->allocs_per_key, "--allocs-per-key");
        break;
      case 'P': rc = parse_unsigned(optarg, 1u << 16, &l->per_ip, "--per-ip"); break;
      case 'l': rc = parse_unsigned(optarg, 7 * 86400, &l->lifetime_s, "--lifetime"); break;
      case 'L':
        rc = parse_unsigned(optarg, 365 * 86400, &l->max_lifetime_s, "--max-lifetime");
        break;
      case 'r': rc = parse_u64(optarg, 1024, 1ul << 40, &l->alloc_rate, "--alloc-rate"); break;
      case 'q': rc = parse_u64(optarg, 1024, 1ul << 50, &l->alloc_quota, "--quota"); break;
      case 't': rc = parse_u64(optarg, 1024, 1ul << 40, &l->total_rate, "--total-rate"); break;
      case 'e': rc = parse_u64(optarg, 1, 3600, &o->every_s, "--every"); break;
      case 'C': o->control = optarg; break;
      case 'X': o->metrics = optarg; break;
      case 'h': fputs(help, stdout); return -1;
      default: rc = kp_cli_net_option(net, c, optarg, "proxy");
    }
    if (rc) return rc;
  }
  if (optind < argc) return kp_cli_usage_error("proxy", "unexpected argument '%s'", argv[optind]);
  return 0;
}

int kp_cli_proxy(int argc, char **argv) {
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_MEMBER);
  net.bind = "0.0.0.0:49737";
  kp_proxy_service_options_t po;
  kp_proxy_service_options_init(&po);
  kp_cli_allow_t allow = {0};
  proxy_opts_t o = {.every_s = 5};
  int rc = parse_options(argc, argv, &net, &po.limits, &allow, &o);
  if (rc) {
    kp_cli_allow_free(&allow);
    return rc < 0 ? KP_EXIT_OK : rc;
  }
  kp_keypair_t kp;
  if ((rc = kp_cli_identity(o.key_path, &kp, "proxy"))) {
    kp_cli_allow_free(&allow);
    return rc;
  }
  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "proxy"))) {
    kp_keypair_wipe(&kp);
    kp_cli_allow_free(&allow);
    return rc;
  }
  po.identity = &kp;
  if (allow.restricted) {
    po.allow = (const uint8_t(*)[KP_PUBLIC_KEY_LEN])allow.keys;
    po.allow_count = allow.count;
  }
  proxy_cli_t p = {0};
  int err = kp_proxy_service_create(s.node, &po, &p.svc);
  kp_keypair_wipe(&kp);
  kp_cli_allow_free(&allow);
  if (err) {
    fprintf(stderr, "kadpunch proxy: cannot start the proxy: %s\n", kp_strerror(err));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  char text[2 * KP_ADDR_STRLEN + 8], key[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp_proxy_service_key(p.svc), key);
  printf("proxying on %s, key %s\n", kp_cli_local_addrs(s.node, text, sizeof(text)), key);
  if (po.allow) printf("allowed: %zu key(s)\n", po.allow_count);
  fflush(stdout);
  uv_timer_init(&s.loop, &p.timer);
  p.timer.data = &p;
  uv_timer_start(&p.timer, on_timer, o.every_s * 1000, o.every_s * 1000);
  kp_control_t *ctl = NULL;
  kp_cli_metrics_t *m = NULL;
  signal(SIGPIPE, SIG_IGN); /* a control client that hangs up is not a signal */
  if (o.control && (err = kp_control_start(s.node, o.control, &ctl))) {
    fprintf(stderr, "kadpunch proxy: control socket %s: %s\n", o.control, kp_strerror(err));
    rc = KP_EXIT_FAIL;
  }
  if (!rc && o.metrics)
    rc = kp_cli_metrics_start(&s.loop, s.node, o.metrics, "proxy", kp_cli_metrics_proxy, p.svc, &m);
  if (!rc) kp_cli_session_run(&s, NULL, NULL, 0);
  if (ctl) kp_control_close(ctl); /* before the node it reads */
  kp_cli_metrics_close(m);
  kp_proxy_counters_t last;
  kp_proxy_service_counters(p.svc, &last);
  print_counters(p.svc, &last);
  uv_close((uv_handle_t *)&p.timer, NULL);
  kp_proxy_service_close(p.svc, NULL);
  int closed = kp_cli_session_close(&s);
  return rc ? rc : closed;
}
