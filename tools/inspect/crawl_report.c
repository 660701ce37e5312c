/* SPDX-License-Identifier: MIT */
/* What a crawl found, summarised: counts, round-trip percentiles, how
 * evenly the ids cover the keyspace; as text and as JSON. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tools/inspect/crawl.h"

double kp_crawl_ring_pos(const uint8_t id[KP_ID_LEN]) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | id[i];
  return (double)v / 18446744073709551616.0;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n sorted values. */
static double rank(const float *v, size_t n, double q) {
  size_t r = (size_t)(q * (double)n + 0.999999);
  return v[(r ? r : 1) - 1];
}

static void rtts(const kp_crawl_t *c, kp_crawl_summary_t *s, float *v) {
  size_t n = 0;
  for (size_t i = 0; i < c->count; i++)
    if (c->nodes[i].rtt_ms >= 0) v[n++] = c->nodes[i].rtt_ms;
  s->rtt_samples = n;
  if (!n) return;
  qsort(v, n, sizeof(*v), cmp_float);
  s->p50 = rank(v, n, 0.50);
  s->p90 = rank(v, n, 0.90);
  s->p99 = rank(v, n, 0.99);
  s->max = v[n - 1];
}

/* Sectors of the id space that hold an answering node, and the widest
 * stretch of the ring between two neighbouring ones. */
static void coverage(const kp_crawl_t *c, kp_crawl_summary_t *s, uint64_t *pos) {
  size_t n = 0;
  for (size_t i = 0; i < c->count; i++) {
    if (c->nodes[i].state != KP_CRAWL_ANSWERED) continue;
    uint64_t v = 0;
    for (int b = 0; b < 8; b++) v = v << 8 | c->nodes[i].id[b];
    pos[n++] = v;
  }
  unsigned bits = 2;
  while (bits < 12 && ((size_t)4 << (bits + 1)) <= n) bits++;
  s->sectors = 1u << bits;
  qsort(pos, n, sizeof(*pos), cmp_u64);
  uint64_t last_sector = UINT64_MAX, widest = 0, at = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t sector = pos[i] >> (64 - bits);
    s->covered += sector != last_sector;
    last_sector = sector;
    /* The gap after pos[i], to the next id round the ring (unsigned
     * arithmetic wraps exactly as the ring does). */
    uint64_t gap = (i + 1 < n ? pos[i + 1] : pos[0]) - pos[i];
    if (n == 1) gap = UINT64_MAX;
    if (gap > widest) widest = gap, at = pos[i];
  }
  s->largest_gap = n ? (double)widest / 18446744073709551616.0 : 1;
  s->gap_at = (double)at / 18446744073709551616.0;
  double h = 0; /* the mean largest of n random gaps is H(n) / n */
  for (size_t i = 1; i <= n; i++) h += 1.0 / (double)i;
  s->expected_gap = n ? h / (double)n : 1;
}

int kp_crawl_summarise(const kp_crawl_t *c, kp_crawl_summary_t *s) {
  memset(s, 0, sizeof(*s));
  for (size_t i = 0; i < c->count; i++) {
    const kp_crawl_node_t *n = &c->nodes[i];
    s->found++;
    s->answered += n->state == KP_CRAWL_ANSWERED;
    s->members += n->member;
    s->relays += n->relay;
    s->proxies += n->proxy;
    s->silent += n->state == KP_CRAWL_SILENT;
    s->unasked += n->state == KP_CRAWL_NEW;
    if (n->state == KP_CRAWL_ANSWERED && n->hops > s->max_hops) s->max_hops = n->hops;
  }
  uint64_t end = c->ended_ns ? c->ended_ns : uv_hrtime();
  s->duration_s = (double)(end - c->started_ns) / 1e9;
  float *v = kp_malloc((c->count ? c->count : 1) * sizeof(*v));
  uint64_t *pos = kp_malloc((c->count ? c->count : 1) * sizeof(*pos));
  if (v && pos) {
    rtts(c, s, v);
    coverage(c, s, pos);
  }
  kp_free(v);
  kp_free(pos);
  return v && pos ? 0 : UV_ENOMEM;
}

static const char *state_name(uint8_t state) {
  return state == KP_CRAWL_ANSWERED ? "answered" : state == KP_CRAWL_SILENT ? "silent" : "unasked";
}

static bool complete(const kp_crawl_t *c) {
  return !c->stopped_by && !c->over_max_nodes;
}

void kp_crawl_print_text(const kp_crawl_t *c, const kp_crawl_summary_t *s, const char *from,
                         bool list) {
  printf("crawl from %s: %.1f s, %s\n", from, s->duration_s,
         complete(c)         ? "complete (nobody left to ask)"
         : c->over_max_nodes ? "incomplete: more nodes than --max-nodes"
                             : c->stopped_by);
  printf("%-12s %zu found: %zu answered (%zu members, %zu without an id), %zu silent, %zu not "
         "asked\n",
         "nodes", s->found, s->answered, s->members, s->answered - s->members, s->silent,
         s->unasked);
  printf("%-12s %zu of them announced as blind relays (kadpunch/relays/v1)\n", "relays", s->relays);
  printf("%-12s %zu of them announced as proxies (kadpunch/proxies/v1)\n", "proxies", s->proxies);
  printf("%-12s %d on %zu nodes (nodes speaking another version drop our requests unanswered)\n",
         "protocol", KP_DHT_VERSION, s->answered);
  printf("%-12s %llu FIND_NODE (%llu answered, %llu timed out), %llu datagrams, at most %u/s\n",
         "requests", (unsigned long long)c->requests, (unsigned long long)c->answers,
         (unsigned long long)c->timeouts, (unsigned long long)s->datagrams, c->o.rate);
  if (s->rtt_samples)
    printf("%-12s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms (%zu nodes)\n", "round trip", s->p50,
           s->p90, s->p99, s->max, s->rtt_samples);
  printf("%-12s %u of %u sectors hold nodes; widest gap %.2f%% of the ring at %.4f "
         "(%.2f%% expected of as many random ids)\n",
         "id space", s->covered, s->sectors, 100 * s->largest_gap, s->gap_at,
         100 * s->expected_gap);
  printf("%-12s at most %u referrals from the starting nodes\n", "depth", s->max_hops);
  if (!list) return;
  printf("\n  %-16s  %-26s  %-8s  %-6s  %8s  %4s\n", "NODE ID", "ADDRESS", "STATE", "MEMBER",
         "RTT ms", "HOPS");
  for (size_t i = 0; i < c->count; i++) {
    const kp_crawl_node_t *n = &c->nodes[i];
    char hex[17], addr[KP_ADDR_STRLEN], rtt[16] = "-";
    if (n->rtt_ms >= 0) snprintf(rtt, sizeof(rtt), "%.2f", n->rtt_ms);
    printf("  %s  %-26s  %-8s  %-6s  %8s  %4u\n", kp_inspect_hex(n->id, 8, hex),
           kp_addr_format(&n->addr, addr, sizeof(addr)), state_name(n->state),
           n->member ? "yes" : "no", rtt, n->hops);
  }
}

static void json_summary(kp_jw_t *w, const kp_crawl_t *c, const kp_crawl_summary_t *s) {
  kp_jw_key(w, "rtt_ms");
  kp_jw_obj(w);
  kp_jw_ku64(w, "samples", s->rtt_samples);
  kp_jw_knum(w, "p50", s->rtt_samples ? s->p50 : NAN, 3);
  kp_jw_knum(w, "p90", s->rtt_samples ? s->p90 : NAN, 3);
  kp_jw_knum(w, "p99", s->rtt_samples ? s->p99 : NAN, 3);
  kp_jw_knum(w, "max", s->rtt_samples ? s->max : NAN, 3);
  kp_jw_obj_end(w);
  kp_jw_key(w, "coverage");
  kp_jw_obj(w);
  kp_jw_ku64(w, "sectors", s->sectors);
  kp_jw_ku64(w, "covered", s->covered);
  kp_jw_knum(w, "largest_gap", s->largest_gap, 6);
  kp_jw_knum(w, "gap_at", s->gap_at, 6);
  kp_jw_knum(w, "expected_gap", s->expected_gap, 6);
  kp_jw_obj_end(w);
  kp_jw_key(w, "versions");
  kp_jw_obj(w);
  kp_jw_ku64(w, "1", s->answered);
  kp_jw_obj_end(w);
  (void)c;
}

int kp_crawl_print_json(const kp_crawl_t *c, const kp_crawl_summary_t *s, const char *from) {
  kp_jw_t w;
  kp_jw_init(&w, 256u << 20);
  kp_jw_obj(&w);
  kp_jw_kstr(&w, "bootstrap", from);
  kp_jw_kbool(&w, "complete", complete(c));
  kp_jw_kstr(&w, "stopped_by", c->over_max_nodes && !c->stopped_by ? "max-nodes" : c->stopped_by);
  kp_jw_knum(&w, "duration_ms", s->duration_s * 1000, 1);
  kp_jw_ku64(&w, "requests", c->requests);
  kp_jw_ku64(&w, "answers", c->answers);
  kp_jw_ku64(&w, "timeouts", c->timeouts);
  kp_jw_ku64(&w, "datagrams", s->datagrams);
  kp_jw_ku64(&w, "rate", c->o.rate);
  kp_jw_ku64(&w, "found", s->found);
  kp_jw_ku64(&w, "answered", s->answered);
  kp_jw_ku64(&w, "members", s->members);
  kp_jw_ku64(&w, "relays", s->relays);
  kp_jw_ku64(&w, "proxies", s->proxies);
  kp_jw_ku64(&w, "silent", s->silent);
  kp_jw_ku64(&w, "unasked", s->unasked);
  kp_jw_ku64(&w, "not_tracked", c->over_max_nodes);
  kp_jw_ku64(&w, "max_hops", s->max_hops);
  json_summary(&w, c, s);
  kp_jw_key(&w, "nodes");
  kp_jw_arr(&w);
  for (size_t i = 0; i < c->count; i++) {
    const kp_crawl_node_t *n = &c->nodes[i];
    kp_jw_obj(&w);
    kp_jw_khex(&w, "id", n->id, KP_ID_LEN);
    kp_inspect_jw_addr(&w, "addr", &n->addr);
    kp_jw_kstr(&w, "state", state_name(n->state));
    kp_jw_kbool(&w, "member", n->member);
    kp_jw_kbool(&w, "relay", n->relay);
    kp_jw_kbool(&w, "proxy", n->proxy);
    kp_jw_knum(&w, "rtt_ms", n->rtt_ms >= 0 ? n->rtt_ms : NAN, 3);
    kp_jw_ku64(&w, "hops", n->hops);
    kp_jw_obj_end(&w);
  }
  kp_jw_arr_end(&w);
  kp_jw_obj_end(&w);
  return kp_inspect_print_json(&w, "crawl");
}
