/* SPDX-License-Identifier: MIT */
/* bench_swarm: announce and lookup on a loopback network, printed as a table
 * (docs/benchmarks.md).
 *
 *   bench_swarm [--nodes 1000] [--ops 100]
 *
 * One network of real UDP nodes in this process. Then, one at a time so each
 * is measured alone: announces from random nodes under random topics (time
 * to the first round's end: lookup of the closest nodes plus the commit to
 * them; requests counted on the announcing node), and a lookup of each topic
 * from another random node (time to its first record and to its end). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/rng.h"
#include "node/testnet.h"

typedef struct {
  bool done;
  int status;
} announce_wait_t;

static void on_announce(kp_announce_t *a, int status, unsigned stored) {
  announce_wait_t *w = kp_announce_get_data(a);
  (void)stored;
  if (!w || w->done) return; /* a later round (small networks re-announce early) */
  w->done = true;
  w->status = status;
}

static bool announce_done(void *ctx) {
  return ((announce_wait_t *)ctx)->done;
}

typedef struct {
  bool done;
  int status;
  size_t found;
  uint64_t start_ns, first_ns, end_ns;
  kp_node_query_stats_t stats;
} lookup_wait_t;

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  lookup_wait_t *w = arg;
  (void)node, (void)rec;
  if (!w->first_ns) w->first_ns = uv_hrtime();
}

static void on_lookup(kp_node_t *node, int status, size_t found, const kp_node_query_stats_t *st,
                      void *arg) {
  lookup_wait_t *w = arg;
  (void)node;
  w->done = true;
  w->status = status;
  w->found = found;
  w->stats = *st;
  w->end_ns = uv_hrtime();
}

static bool lookup_done(void *ctx) {
  return ((lookup_wait_t *)ctx)->done;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
  qsort(v, n, sizeof(*v), cmp_double);
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static double mean(const double *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += v[i];
  return n ? s / (double)n : 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"nodes", required_argument, 0, 'n'}, {"ops", required_argument, 0, 'o'}, {0, 0, 0, 0}};
  size_t nodes = 1000, ops = 100;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    if (c == 'n')
      nodes = (size_t)atol(optarg);
    else if (c == 'o')
      ops = (size_t)atol(optarg);
    else {
      fprintf(stderr, "usage: bench_swarm [--nodes N] [--ops N]\n");
      return 2;
    }
  }
  if (nodes < 30 || !ops) return 2;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = nodes;
  o.seed = 7;
  kp_testnet_t tn;
  if (kp_testnet_create(&loop, &o, &tn) || !kp_testnet_wait_joined(&tn, 120000)) {
    fprintf(stderr, "bench_swarm: the network did not form\n");
    return 1;
  }
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 8);
  kp_rng_t rng = kp_rng_seeded(&st);

  double *ann_ms = calloc(ops, sizeof(double)), *ann_req = calloc(ops, sizeof(double));
  double *lk_ms = calloc(ops, sizeof(double)), *lk_first = calloc(ops, sizeof(double));
  double *lk_req = calloc(ops, sizeof(double));
  kp_announce_t **handles = calloc(ops, sizeof(*handles));
  uint8_t(*targets)[KP_ID_LEN] = calloc(ops, KP_ID_LEN);
  size_t ok_lookups = 0, found = 0;
  for (size_t i = 0; i < ops; i++) {
    kp_node_t *n = tn.nodes[kp_rng_below(&rng, (uint32_t)nodes)];
    kp_keypair_t kp;
    kp_keypair_generate(&kp);
    kp_rng_fill(&rng, targets[i], KP_ID_LEN);
    kp_node_stats_t before, after;
    kp_node_stats(n, &before);
    announce_wait_t w = {0};
    uint64_t t0 = uv_hrtime();
    if (kp_node_announce(n, targets[i], &kp, NULL, 0, on_announce, &handles[i])) return 1;
    kp_announce_set_data(handles[i], &w);
    kp_testnet_run_until(&loop, announce_done, &w, 30000);
    ann_ms[i] = (double)(uv_hrtime() - t0) / 1e6;
    kp_node_stats(n, &after);
    ann_req[i] = (double)(after.requests_out - before.requests_out);
    kp_announce_set_data(handles[i], NULL);
  }
  for (size_t i = 0; i < ops; i++) {
    lookup_wait_t w = {0};
    w.start_ns = uv_hrtime();
    kp_node_t *from = tn.nodes[kp_rng_below(&rng, (uint32_t)nodes)];
    if (kp_node_lookup(from, targets[i], on_record, on_lookup, &w)) return 1;
    kp_testnet_run_until(&loop, lookup_done, &w, 30000);
    ok_lookups += w.done && w.status == 0;
    found += w.found >= 1;
    lk_ms[i] = (double)(w.end_ns - w.start_ns) / 1e6;
    lk_first[i] = w.first_ns ? (double)(w.first_ns - w.start_ns) / 1e6 : lk_ms[i];
    lk_req[i] = w.stats.requests;
  }
  printf("kadpunch swarm benchmark: %zu nodes on 127.0.0.1, %zu announces then %zu lookups\n\n",
         nodes, ops, ops);
  printf("%-10s %12s %12s %14s %16s\n", "operation", "median", "p99", "requests", "first result");
  printf("%-10s %9.2f ms %9.2f ms %14.1f %16s\n", "announce", pct(ann_ms, ops, 0.5),
         pct(ann_ms, ops, 0.99), mean(ann_req, ops), "-");
  printf("%-10s %9.2f ms %9.2f ms %14.1f %13.2f ms\n", "lookup", pct(lk_ms, ops, 0.5),
         pct(lk_ms, ops, 0.99), mean(lk_req, ops), pct(lk_first, ops, 0.5));
  printf("\n%zu/%zu lookups found their announcer\n", found, ops);
  for (size_t i = 0; i < ops; i++) kp_announce_stop(handles[i], false);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return found == ops && ok_lookups == ops ? 0 : 1;
}
