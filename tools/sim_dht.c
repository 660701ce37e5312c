/* SPDX-License-Identifier: MIT */
/* sim_dht: a DHT population of n nodes on the simulator, in one process on
 * a virtual clock (tests/sim/sim_world.h: the NAT mix, latency, loss and
 * session lengths), with its figures printed per phase:
 *
 *   sim_dht [--nodes 100000] [--seed 1] [--lookups 1000] [--parallel 50]
 *           [--churn-minutes 10] [--session-median-min 200] [--no-churn]
 *           [--join-ms-per-node 10] [--loss 0.005] [--nat-timeout-s 120]
 *
 * Phases: the population arrives and settles; lookups; the network runs on
 * under churn; lookups again. Each lookup goes from a random live node to a
 * random target and is exact when its 20 closest equal the 20 closest live
 * members found by brute force over the whole population. Memory per node
 * is what the DHT state machines hold (counted by their allocator), and,
 * apart, the whole process's resident set (simulator included).
 *
 * The last line reads `N nodes: P% exact, H hops, R requests, M bytes/node`. */
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/sim/sim_world.h"

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

typedef struct totals_s {
  kp_sim_world_lookups_t all;
  double bytes_per_node;
} totals_t;

static double t0;
static long rss0;

static void census_line(kp_sim_world_t *w, const char *phase, totals_t *t) {
  kp_sim_world_census_t c;
  kp_sim_world_census(w, &c);
  malloc_trim(0);
  double bytes = c.live ? (double)kp_sim_world_dht_bytes() / (double)c.live : 0;
  double rss = c.live ? (double)(rss_kb() - rss0) * 1024 / (double)c.live : 0;
  t->bytes_per_node = bytes;
  printf("%-8s t=%5.0fs virtual %7.1fs wall | nodes %zu (reachable %zu), members %zu, joined %zu, "
         "left %llu | table %.1f entries | DHT %.0f bytes/node, process %.0f bytes/node\n",
         phase, (double)kp_sim_now(kp_sim_world_sim(w)) / 1000, wall_s() - t0, c.live, c.reachable,
         c.members, c.joined, (unsigned long long)c.departed,
         c.live ? (double)c.table_entries / (double)c.live : 0, bytes, rss);
  fflush(stdout);
}

static void lookups_line(kp_sim_world_t *w, const char *phase, unsigned n, unsigned parallel,
                         totals_t *t) {
  kp_sim_world_lookups_t l;
  kp_sim_world_lookups(w, n, parallel, &l);
  unsigned k = l.lookups ? l.lookups : 1;
  printf("%-8s t=%5.0fs virtual %7.1fs wall | %u lookups: %.2f%% exact, %u failed, %.2f hops, "
         "%.1f requests, %.0f ms\n",
         phase, (double)kp_sim_now(kp_sim_world_sim(w)) / 1000, wall_s() - t0, l.lookups,
         100.0 * l.exact / k, l.failed, (double)l.hops / k, (double)l.requests / k,
         (double)l.ms / k);
  fflush(stdout);
  t->all.lookups += l.lookups;
  t->all.exact += l.exact;
  t->all.failed += l.failed;
  t->all.hops += l.hops;
  t->all.requests += l.requests;
  t->all.ms += l.ms;
}

static void usage(void) {
  fprintf(stderr, "usage: sim_dht [--nodes N] [--seed S] [--lookups N] [--parallel N]\n"
                  "               [--churn-minutes M] [--session-median-min M] [--no-churn]\n"
                  "               [--join-ms-per-node MS] [--loss P] [--nat-timeout-s S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {{"nodes", required_argument, 0, 'n'},
                                           {"seed", required_argument, 0, 's'},
                                           {"lookups", required_argument, 0, 'l'},
                                           {"parallel", required_argument, 0, 'p'},
                                           {"churn-minutes", required_argument, 0, 'c'},
                                           {"session-median-min", required_argument, 0, 'm'},
                                           {"no-churn", no_argument, 0, 'N'},
                                           {"join-ms-per-node", required_argument, 0, 'j'},
                                           {"loss", required_argument, 0, 'L'},
                                           {"nat-timeout-s", required_argument, 0, 'T'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  kp_sim_world_opts_t o;
  kp_sim_world_opts_init(&o);
  o.nodes = 100000;
  unsigned lookups = 1000, parallel = 50, churn_min = 10;
  double join_ms_per_node = 10, median = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
      case 'n': o.nodes = (size_t)atol(optarg); break;
      case 's': o.seed = (uint64_t)atoll(optarg); break;
      case 'l': lookups = (unsigned)atoi(optarg); break;
      case 'p': parallel = (unsigned)atoi(optarg); break;
      case 'c': churn_min = (unsigned)atoi(optarg); break;
      case 'm': median = atof(optarg); break;
      case 'N': o.session_scale_min = 0; break;
      case 'j': join_ms_per_node = atof(optarg); break;
      case 'L': o.loss = atof(optarg); break;
      case 'T': o.nat_timeout_ms = (unsigned)(atof(optarg) * 1000); break;
      default: usage();
    }
  }
  if (o.nodes < 10 || !lookups) usage();
  /* A Weibull's median is scale * ln(2)^(1/shape). */
  if (median > 0 && o.session_scale_min > 0)
    o.session_scale_min = median / pow(log(2), 1 / o.session_shape);
  o.join_ms = (unsigned)(join_ms_per_node * (double)o.nodes);

  kp_sim_world_count_memory();
  rss0 = rss_kb();
  t0 = wall_s();
  printf("sim_dht: %zu nodes, seed %llu, arriving over %.0f s; sessions %s; loss %.1f%%\n", o.nodes,
         (unsigned long long)o.seed, o.join_ms / 1000.0,
         o.session_scale_min > 0 ? "Weibull" : "endless", o.loss * 100);
  if (o.session_scale_min > 0)
    printf("         session shape %.2f, median %.0f min\n", o.session_shape,
           o.session_scale_min * pow(log(2), 1 / o.session_shape));
  fflush(stdout);

  totals_t t = {0};
  kp_sim_world_t *w = kp_sim_world_new(&o);
  bool ok = kp_sim_world_run_settled(w, o.join_ms + 30 * 60000ull);
  census_line(w, ok ? "joined" : "joined!", &t);
  lookups_line(w, "lookups", lookups, parallel, &t);
  if (o.session_scale_min > 0 && churn_min) {
    kp_sim_world_run(w, churn_min * 60000ull);
    census_line(w, "churn", &t);
    lookups_line(w, "lookups", lookups, parallel, &t);
  }
  double bytes = t.bytes_per_node;
  kp_sim_world_census_t cs;
  kp_sim_world_census(w, &cs);
  unsigned k = t.all.lookups ? t.all.lookups : 1;
  printf("hops %.2f against log2(n/20) = %.2f (n = %zu joined members)\n", (double)t.all.hops / k,
         cs.joined > 20 ? log2((double)cs.joined / 20) : 0, cs.joined);
  printf("%zu nodes: %.2f%% exact, %.2f hops, %.1f requests, %.0f bytes/node\n", o.nodes,
         100.0 * t.all.exact / k, (double)t.all.hops / k, (double)t.all.requests / k, bytes);
  kp_sim_world_free(w);
  return 0;
}
