/* SPDX-License-Identifier: MIT */
/* kadpunch demo: the main job. Builds a DHT of real nodes on loopback in
 * this process, waits until they have all joined, runs lookups from random
 * nodes and checks each against the brute-force truth, then connects by key
 * (demo_connect.c). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "node/cli/cli.h"
#include "node/testnet.h"

static const char help[] =
    "usage: kadpunch demo [options]\n"
    "\n"
    "Starts a DHT of real UDP nodes on loopback (one bootstrap node, the rest\n"
    "joining on their own), waits until every node is a routing-table member,\n"
    "then looks up random ids from random nodes and checks that each lookup\n"
    "returns exactly the true 20 closest nodes. Then a server listens on a new\n"
    "key pair and clients on other nodes connect to it by that key alone:\n"
    "lookup, handshake through the DHT, hole punch, and 1 MiB echoed through\n"
    "an encrypted stream.\n"
    "\n"
    "options:\n"
    "  --nodes N     network size (default 300)\n"
    "  --lookups N   lookups to run (default 20)\n"
    "  --connects N  connects by key to run (default 5)\n"
    "  --ipv6        use ::1 instead of 127.0.0.1\n"
    "  --seed N      deterministic choice of nodes and targets\n"
    "\n"
    "exit codes: 0 every lookup exact and every connect echoed, 1 something\n"
    "failed, 2 bad options\n";

static double ms_since(uint64_t t0) {
  return (double)(uv_hrtime() - t0) / 1e6;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void print_tables(const kp_testnet_t *tn) {
  uint32_t *sizes = calloc(tn->count, sizeof(*sizes));
  if (!sizes) return;
  for (size_t i = 0; i < tn->count; i++) {
    kp_node_stats_t st;
    kp_node_stats(tn->nodes[i], &st);
    sizes[i] = st.table_size;
  }
  qsort(sizes, tn->count, sizeof(*sizes), cmp_u32);
  printf("  routing tables:    %u to %u entries (median %u)\n", sizes[0], sizes[tn->count - 1],
         sizes[tn->count / 2]);
  free(sizes);
}

static int run_lookups(kp_testnet_t *tn, unsigned lookups, kp_rng_t *rng) {
  uint64_t *lat = calloc(lookups, sizeof(*lat));
  unsigned exact = 0, failed = 0, requests = 0, hops = 0;
  if (!lat) return KP_EXIT_FAIL;
  printf("\n  %-4s %-22s %-10s %-6s %-5s %-9s %s\n", "#", "from", "target", "exact", "hops",
         "requests", "time");
  for (unsigned i = 0; i < lookups; i++) {
    kp_node_t *from = tn->nodes[kp_rng_below(rng, (uint32_t)tn->count)];
    uint8_t target[KP_ID_LEN], truth[KP_DHT_K][KP_ID_LEN];
    kp_node_peer_t got[KP_DHT_K];
    size_t count = 0;
    kp_node_query_stats_t st = {0};
    kp_rng_fill(rng, target, sizeof(target));
    int err = kp_testnet_find(tn, from, target, got, &count, &st, 10000);
    size_t want = kp_testnet_true_closest(tn, target, from, truth);
    unsigned match = 0;
    for (size_t j = 0; j < count && j < want; j++) match += !memcmp(got[j].id, truth[j], KP_ID_LEN);
    bool ok = !err && count == want && match == want;
    exact += ok;
    failed += err != 0;
    lat[i] = st.duration_us;
    requests += st.requests;
    hops += st.hops;
    kp_addr_t a;
    char addr[KP_ADDR_STRLEN], hex[9];
    kp_node_local_addr(from, &a);
    if (err) {
      printf("  %-4u %-22s %s..  failed: %s\n", i + 1, kp_addr_format(&a, addr, sizeof(addr)),
             kp_cli_hex(target, 4, hex), kp_strerror(err));
      continue;
    }
    printf("  %-4u %-22s %s.. %2u/%-3zu %-5u %-9u %.2f ms\n", i + 1,
           kp_addr_format(&a, addr, sizeof(addr)), kp_cli_hex(target, 4, hex), match, want, st.hops,
           st.requests, (double)st.duration_us / 1000);
  }
  qsort(lat, lookups, sizeof(*lat), cmp_u64);
  printf("\n  %u/%u lookups returned exactly the true %d closest nodes\n", exact, lookups,
         KP_DHT_K);
  printf("  latency median %.2f ms, p99 %.2f ms; %.1f requests and %.1f hops per lookup\n",
         (double)lat[lookups / 2] / 1000, (double)lat[(lookups * 99) / 100] / 1000,
         (double)requests / lookups, (double)hops / lookups);
  free(lat);
  return exact == lookups && !failed ? KP_EXIT_OK : KP_EXIT_FAIL;
}

int kp_cli_demo(int argc, char **argv) {
  static const struct option longopts[] = {{"nodes", required_argument, 0, 'n'},
                                           {"lookups", required_argument, 0, 'l'},
                                           {"connects", required_argument, 0, 'c'},
                                           {"ipv6", no_argument, 0, '6'},
                                           {"seed", required_argument, 0, 's'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  kp_testnet_options_t opts;
  kp_testnet_options_init(&opts);
  opts.size = 300;
  unsigned long lookups = 20, connects = 5, v;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'n':
        if (!kp_cli_parse_uint(optarg, 2, 10000, &v))
          return kp_cli_usage_error("demo", "--nodes wants 2..10000, got '%s'", optarg);
        opts.size = v;
        break;
      case 'l':
        if (!kp_cli_parse_uint(optarg, 1, 100000, &lookups))
          return kp_cli_usage_error("demo", "--lookups wants 1..100000, got '%s'", optarg);
        break;
      case 'c':
        if (!kp_cli_parse_uint(optarg, 0, 1000, &connects))
          return kp_cli_usage_error("demo", "--connects wants 0..1000, got '%s'", optarg);
        break;
      case '6': opts.host = "::1"; break;
      case 's':
        if (!kp_cli_parse_uint(optarg, 1, UINT32_MAX, &v))
          return kp_cli_usage_error("demo", "--seed wants a positive number, got '%s'", optarg);
        opts.seed = v;
        break;
      case 'h': fputs(help, stdout); return KP_EXIT_OK;
      default: return kp_cli_usage_error("demo", "unknown option");
    }
  }
  if (optind < argc) return kp_cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);

  kp_rng_seeded_t seeded;
  kp_rng_seeded_init(&seeded, opts.seed ? opts.seed : uv_hrtime());
  kp_rng_t rng = kp_rng_seeded(&seeded);

  printf("kadpunch demo: a Kademlia DHT of %zu UDP nodes on %s, all in this process\n\n", opts.size,
         opts.host);
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  uint64_t t0 = uv_hrtime();
  int err = kp_testnet_create(&loop, &opts, &tn);
  if (err) {
    fprintf(stderr, "kadpunch demo: cannot create the network: %s\n", kp_strerror(err));
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return KP_EXIT_FAIL;
  }
  double created = ms_since(t0);
  printf("  created:           %zu nodes in %.1f ms (%.1f us per node), bootstrap node %s\n",
         tn.count, created, created * 1000 / (double)tn.count, tn.bootstrap);
  int rc = KP_EXIT_OK;
  if (!kp_testnet_wait_joined(&tn, 30000)) {
    printf("  joined:            only %zu of %zu nodes joined within 30 s\n",
           kp_testnet_joined(&tn), tn.count);
    rc = KP_EXIT_FAIL;
  } else {
    printf("  joined:            all %zu nodes are members with filled tables after %.2f s\n",
           tn.count, ms_since(t0) / 1000);
    print_tables(&tn);
    rc = run_lookups(&tn, (unsigned)lookups, &rng);
    int crc = kp_cli_demo_connects(&tn, (unsigned)connects, &rng);
    if (!rc) rc = crc;
    crc = kp_cli_demo_service(&tn);
    if (!rc) rc = crc;
  }
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}
