/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect crawl: the whole DHT, walked from a bootstrap node. */
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tools/inspect/crawl.h"

static const char help[] =
    "usage: kadpunch-inspect crawl --bootstrap HOST:PORT [options]\n"
    "\n"
    "Walks the whole DHT: asks every node it hears of for the nodes it knows\n"
    "(FIND_NODE for the node's own id, then for a random id in each of its top\n"
    "buckets, so every bucket of every table is seen), at a bounded rate, until\n"
    "nobody is left to ask. Then reports the nodes found, how many answered and\n"
    "are members, round-trip percentiles, and how evenly the ids cover the\n"
    "keyspace. Progress goes to stderr while it runs. The crawl costs about\n"
    "nodes x (log2(nodes / 20) + 3) requests.\n"
    "\n"
    "options:\n"
    "  --rate N                requests per second (default 200, at most 5000)\n"
    "  --parallel N            requests in flight (default 64, at most 200)\n"
    "  --timeout S             stop after S seconds (default 600)\n"
    "  --max-requests N        stop after N requests (default 2000000)\n"
    "  --max-nodes N           track at most N nodes (default 100000)\n"
    "  --buckets N             bucket probes per node (default: from the network's size)\n"
    "  --svg FILE              draw the network: nodes on the keyspace ring by id,\n"
    "                          coloured by round trip\n"
    "  --list                  list every node (the JSON always does)\n"
    "  --quiet                 no progress on stderr\n" KP_INSPECT_NET_HELP "\n"
    "examples:\n"
    "  kadpunch-inspect crawl --bootstrap 203.0.113.7:49737 --svg dht.svg\n"
    "  kadpunch-inspect crawl --bootstrap 203.0.113.7:49737 --rate 50 --json > dht.json\n"
    "\n"
    "exit codes: 0 the crawl ran (complete, or stopped by a bound or a signal:\n"
    "the report says which), 1 no node answered (or the network failed),\n"
    "2 bad options\n";

typedef struct args_s {
  kp_inspect_opts_t o;
  kp_crawl_opts_t c;
  const char *svg;
  bool list, quiet;
} args_t;

typedef struct progress_s {
  bool quiet, tty;
  uint64_t last_ns;
} progress_t;

static void on_tick(kp_crawl_t *c) {
  progress_t *p = c->data;
  uint64_t now = uv_hrtime();
  if (p->quiet) return;
  if (!c->finished && now - p->last_ns < (p->tty ? 250000000u : 5000000000u)) return;
  p->last_ns = now;
  size_t answered = 0, silent = 0;
  for (size_t i = 0; i < c->count; i++) {
    answered += c->nodes[i].state == KP_CRAWL_ANSWERED;
    silent += c->nodes[i].state == KP_CRAWL_SILENT;
  }
  fprintf(stderr,
          "%scrawl: %zu nodes, %zu answered, %zu silent; %llu requests, %u in flight; "
          "%.1f s%s",
          p->tty ? "\r" : "", c->count, answered, silent, (unsigned long long)c->requests,
          c->inflight, (double)(now - c->started_ns) / 1e9, p->tty ? "\033[K" : "\n");
  if (p->tty && c->finished) fputc('\n', stderr);
}

static int parse_number(const char *name, const char *arg, unsigned long min, unsigned long max,
                        unsigned long *out) {
  if (kp_inspect_parse_uint(arg, min, max, out)) return 0;
  return kp_inspect_usage("crawl", "%s wants a number from %lu to %lu, got '%s'", name, min, max,
                          arg);
}

static int parse(int argc, char **argv, args_t *a) {
  static const struct option longopts[] = {{"rate", required_argument, 0, 'r'},
                                           {"parallel", required_argument, 0, 'p'},
                                           {"timeout", required_argument, 0, 't'},
                                           {"max-requests", required_argument, 0, 'R'},
                                           {"max-nodes", required_argument, 0, 'N'},
                                           {"buckets", required_argument, 0, 'b'},
                                           {"svg", required_argument, 0, 's'},
                                           {"list", no_argument, 0, 'l'},
                                           {"quiet", no_argument, 0, 'q'},
                                           KP_INSPECT_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  unsigned long v;
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'r': rc = parse_number("--rate", optarg, 1, 5000, &v), a->c.rate = (unsigned)v; break;
      case 'p':
        rc = parse_number("--parallel", optarg, 1, 200, &v), a->c.parallel = (unsigned)v;
        break;
      case 't':
        rc = parse_number("--timeout", optarg, 1, 86400, &v), a->c.timeout_ms = (unsigned)v * 1000;
        break;
      case 'R':
        rc = parse_number("--max-requests", optarg, 1, 100000000, &v), a->c.max_requests = v;
        break;
      case 'N':
        rc = parse_number("--max-nodes", optarg, 1, 10000000, &v), a->c.max_nodes = (unsigned)v;
        break;
      case 'b': rc = parse_number("--buckets", optarg, 0, 64, &v), a->c.buckets = (int)v; break;
      case 's': a->svg = optarg; break;
      case 'l': a->list = true; break;
      case 'q': a->quiet = true; break;
      case 'h': fputs(help, stdout); return -1;
      default: rc = kp_inspect_option(&a->o, c, optarg);
    }
  }
  if (!rc && optind < argc)
    rc = kp_inspect_usage("crawl", "unexpected argument '%s'", argv[optind]);
  if (!rc && !a->o.bootstrap[0])
    rc = kp_inspect_usage("crawl", "give the node to start from: --bootstrap HOST:PORT");
  return rc;
}

/* The starting nodes: the bootstrap list, resolved now. */
static int seeds(const args_t *a, kp_addr_t *out, size_t cap, size_t *n) {
  char text[1024];
  snprintf(text, sizeof(text), "%s", a->o.bootstrap);
  *n = 0;
  for (char *tok = strtok(text, ","); tok && *n < cap; tok = strtok(NULL, ",")) {
    int err = kp_inspect_resolve(tok, &out[*n]);
    if (err)
      return kp_inspect_usage("crawl", "bootstrap '%s': not HOST:PORT or does not resolve (%s)",
                              tok, kp_strerror(err));
    if (!*n || out[*n].family == out[0].family) (*n)++;
  }
  return 0;
}

/* Runs the crawl to its end; the caller reports. */
static int crawl(const args_t *a, const kp_addr_t *seed, size_t n, kp_crawl_t *c,
                 uint64_t *datagrams) {
  kp_inspect_session_t s;
  int err = kp_inspect_session_open(&s, &a->o, seed[0].family, NULL, 0, 0);
  if (err) return kp_inspect_session_error(&a->o, err);
  progress_t p = {.quiet = a->quiet, .tty = isatty(2)};
  kp_node_stats_t before, after;
  kp_node_stats(s.node, &before);
  err = kp_crawl_start(c, &s, seed, n, &a->c);
  if (err) {
    kp_inspect_session_close(&s);
    return kp_inspect_fail("crawl", "%s", kp_strerror(err));
  }
  c->on_tick = on_tick;
  c->data = &p;
  /* The crawl's own timeout ends it; the margin only guards this loop. */
  kp_inspect_session_run(&s, kp_crawl_finished, c, a->c.timeout_ms + 5000);
  kp_crawl_stop(c, s.signalled ? "signal" : "timeout");
  c->on_tick = NULL;
  if (!s.signalled) kp_crawl_mark_relays(c, &s);
  if (!s.signalled) kp_crawl_mark_proxies(c, &s);
  kp_node_stats(s.node, &after);
  *datagrams = after.requests_out - before.requests_out;
  return kp_inspect_session_close(&s);
}

int kp_inspect_crawl(int argc, char **argv) {
  args_t a = {0};
  kp_inspect_opts_init(&a.o, "crawl");
  kp_crawl_opts_init(&a.c);
  int rc = parse(argc, argv, &a);
  if (rc) return rc < 0 ? KP_EXIT_OK : rc;
  kp_addr_t seed[16];
  size_t n;
  if ((rc = seeds(&a, seed, 16, &n))) return rc;
  kp_crawl_t *c = kp_calloc(1, sizeof(*c));
  if (!c) return kp_inspect_fail("crawl", "out of memory");
  kp_crawl_summary_t sum;
  uint64_t datagrams = 0;
  rc = crawl(&a, seed, n, c, &datagrams);
  if (!rc && kp_crawl_summarise(c, &sum)) rc = kp_inspect_fail("crawl", "out of memory");
  if (!rc && !sum.answered) {
    rc = kp_inspect_fail("crawl", "no node answered (bootstrap: %s)", a.o.bootstrap);
  } else if (!rc) {
    sum.datagrams = datagrams;
    if (a.o.json)
      rc = kp_crawl_print_json(c, &sum, a.o.bootstrap);
    else
      kp_crawl_print_text(c, &sum, a.o.bootstrap, a.list);
    if (!rc && a.svg) rc = kp_crawl_svg(c, &sum, a.o.bootstrap, a.svg);
  }
  kp_crawl_free(c);
  kp_free(c);
  return rc;
}
