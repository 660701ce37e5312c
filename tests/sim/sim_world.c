/* SPDX-License-Identifier: MIT */
#include "tests/sim/sim_world.h"

#include <malloc.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dht/dht_id.h"

#define PORT 4000
#define SETTLE_MS 60000 /* a reachable host up this long (after member_stable) must have joined */

typedef struct host_s {
  kp_sim_world_t *world;
  kp_sim_dht_node_t *node; /* NULL until it arrives */
  kp_sim_nat_t *nat;       /* its own NAT (freed when it leaves), or its carrier's */
  uint8_t kind;
  bool bootstrap;
  uint64_t born;
} host_t;

typedef struct cgnat_s {
  kp_sim_nat_t *nat;
  unsigned hosts; /* inside addresses handed out */
} cgnat_t;

struct kp_sim_world_s {
  kp_sim_world_opts_t o;
  kp_sim_t *sim;
  kp_rng_seeded_t rng; /* the world's own draws: kinds, addresses, sessions */
  kp_dht_config_t cfg;
  host_t *hosts;
  size_t count;
  kp_sim_dht_node_t **husks; /* nodes that left: freed after the simulator */
  size_t husk_count, husk_cap;
  uint32_t next_block; /* /24s handed out so far */
  uint32_t *shared;    /* shared /24s and how full each is */
  uint8_t *shared_fill;
  size_t shared_count;
  cgnat_t *cgnats;
  size_t cgnat_count, cgnat_cap;
  uint64_t departed;
  uint64_t serial; /* seeds for nodes */
};

void kp_sim_world_opts_init(kp_sim_world_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->nodes = 10000;
  o->seed = 1;
  o->bootstrap = 4;
  o->join_ms = 120000;
  /* About a third of the hosts reachable unsolicited, the rest behind NATs
   * and firewalls (docs/benchmarks.md, "The DHT at scale"). */
  o->share[KP_WORLD_PUBLIC] = 0.25;
  o->share[KP_WORLD_FULL_CONE] = 0.10;
  o->share[KP_WORLD_FIREWALLED] = 0.05;
  o->share[KP_WORLD_RESTRICTED] = 0.35;
  o->share[KP_WORLD_SYMMETRIC] = 0.15;
  o->share[KP_WORLD_CGNAT] = 0.10;
  o->shared_prefix = 0.2;
  o->cgnat_hosts = 50;
  o->loss = 0.005;
  o->nat_timeout_ms = 120000;
  /* Mainline DHT sessions: half under 200 minutes, 3% over 9000 (Wang and
   * Kangasharju, P2P 2013): a Weibull of shape 0.4 and that median. */
  o->session_shape = 0.4;
  o->session_scale_min = 500;
  o->member_stable_ms = 20000;
}

static uint64_t draw(kp_sim_world_t *w) {
  return kp_rng_seeded_next(&w->rng);
}

static double uniform01(kp_sim_world_t *w) {
  /* (0, 1]: safe under a log. */
  return ((double)(draw(w) >> 11) + 1) / 9007199254740992.0;
}

/* ---- Addresses ------------------------------------------------------------ */

static bool special_octet(unsigned o) {
  return o == 0 || o == 10 || o == 100 || o == 127 || o == 169 || o == 172 || o == 192 ||
         o == 198 || o == 203 || o >= 224;
}

/* The j-th public /24 (host order, .0), skipping private, loopback,
 * documentation and multicast space. */
static uint32_t block(uint32_t j) {
  unsigned octet = 0, index = j / 65536;
  for (;;) {
    do octet++;
    while (special_octet(octet));
    if (index-- == 0) break;
  }
  return (uint32_t)octet << 24 | (j % 65536) << 8;
}

/* A public IP for a new host: a /24 of its own, or one shared with others
 * (a hosting provider, a campus, an ISP's pool). */
static uint32_t public_ip(kp_sim_world_t *w) {
  if (w->shared_count && uniform01(w) <= w->o.shared_prefix) {
    size_t i = draw(w) % w->shared_count;
    if (w->shared_fill[i] < 254) return w->shared[i] | ++w->shared_fill[i];
    w->shared[i] = block(w->next_block++); /* full: a fresh one takes its place */
    w->shared_fill[i] = 1;
    return w->shared[i] | 1;
  }
  return block(w->next_block++) | 1;
}

/* One-way latency: each end's access link (hashed from its IP, so a host
 * keeps its own; mostly short, a long tail) plus up to 10 ms across the
 * core. Between 4 and about 130 ms, half under 35. */
static unsigned access_ms(const kp_addr_t *a) {
  uint64_t h = (uint64_t)a->ip[0] << 24 | (uint64_t)a->ip[1] << 16 | a->ip[2] << 8 | a->ip[3];
  h *= 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  double u = (double)(h >> 11) / 9007199254740992.0;
  return 2 + (unsigned)(58 * u * u);
}

static unsigned latency(void *ctx, const kp_addr_t *from, const kp_addr_t *to, kp_rng_t *rng) {
  (void)ctx;
  return access_ms(from) + access_ms(to) + kp_rng_below(rng, 11);
}

/* ---- Hosts arriving and leaving --------------------------------------------------- */

static kp_sim_world_kind_t draw_kind(kp_sim_world_t *w) {
  double u = uniform01(w), sum = 0;
  for (int k = 0; k < KP_WORLD_KINDS; k++) {
    sum += w->o.share[k];
    if (u <= sum) return (kp_sim_world_kind_t)k;
  }
  return KP_WORLD_PUBLIC;
}

/* Weibull(shape, scale) minutes in ms; `residual`: the time left of a
 * session already under way at a random moment (the population at the
 * start), whose length is Gamma(1/shape)^(1/shape) times the scale. */
static double gamma_draw(kp_sim_world_t *w, double a);

static uint64_t session_ms(kp_sim_world_t *w, bool residual) {
  double k = w->o.session_shape, scale = w->o.session_scale_min * 60000.0;
  double x = residual ? pow(gamma_draw(w, 1 / k), 1 / k) : pow(-log(uniform01(w)), 1 / k);
  double ms = scale * x;
  return ms < 1000 ? 1000 : ms > 1e12 ? (uint64_t)1e12 : (uint64_t)ms;
}

/* Marsaglia and Tsang's method (a >= 1), with a Box-Muller normal. */
static double gamma_draw(kp_sim_world_t *w, double a) {
  double d = a - 1.0 / 3, c = 1 / sqrt(9 * d);
  for (;;) {
    double z = sqrt(-2 * log(uniform01(w))) * cos(2 * M_PI * uniform01(w));
    double v = 1 + c * z;
    if (v <= 0) continue;
    v = v * v * v;
    double u = uniform01(w);
    if (log(u) < 0.5 * z * z + d - d * v + d * log(v)) return d * v;
  }
}

static kp_sim_nat_t *carrier_nat(kp_sim_world_t *w, kp_addr_t *inside) {
  cgnat_t *c = w->cgnat_count ? &w->cgnats[w->cgnat_count - 1] : NULL;
  if (!c || c->hosts >= w->o.cgnat_hosts) {
    if (w->cgnat_count == w->cgnat_cap) {
      w->cgnat_cap = w->cgnat_cap ? w->cgnat_cap * 2 : 16;
      w->cgnats = realloc(w->cgnats, w->cgnat_cap * sizeof(*w->cgnats));
      if (!w->cgnats) abort();
    }
    c = &w->cgnats[w->cgnat_count++];
    kp_addr_t pub;
    kp_addr_set_v4(&pub, block(w->next_block++) | 1, 0);
    c->nat = kp_sim_nat_new(w->sim, &pub, KP_SIM_MAP_CONSISTENT, KP_SIM_FILTER_PORT);
    kp_sim_nat_set_timeout(c->nat, w->o.nat_timeout_ms);
    c->hosts = 0;
  }
  /* Inside addresses in 100.64.0.0/10, never reused: a newcomer behind the
   * same carrier is a new host. */
  uint32_t n = ++c->hosts;
  kp_addr_set_v4(inside, 100u << 24 | 64u << 16 | n << 2, PORT);
  return c->nat;
}

static void depart(void *ctx, uint64_t now);

static void arrive(void *ctx, uint64_t now) {
  host_t *h = ctx;
  kp_sim_world_t *w = h->world;
  kp_addr_t addr, boot, pub;
  bool first = w->serial < w->o.nodes;
  h->born = now;
  h->nat = NULL;
  h->kind = h->bootstrap ? KP_WORLD_PUBLIC : draw_kind(w);
  kp_dht_config_t c = w->cfg;
  c.mode = h->bootstrap ? KP_NODE_MEMBER : KP_NODE_AUTO;
  if (h->kind == KP_WORLD_CGNAT) {
    h->nat = carrier_nat(w, &addr);
  } else {
    kp_addr_set_v4(&pub, public_ip(w), PORT);
    addr = pub;
    if (h->kind == KP_WORLD_FIREWALLED) {
      h->nat = kp_sim_nat_new(w->sim, &pub, KP_SIM_MAP_NONE, KP_SIM_FILTER_PORT);
    } else if (h->kind != KP_WORLD_PUBLIC) {
      kp_sim_mapping_t map =
          h->kind == KP_WORLD_SYMMETRIC ? KP_SIM_MAP_RANDOM : KP_SIM_MAP_CONSISTENT;
      kp_sim_filter_t filter =
          h->kind == KP_WORLD_FULL_CONE ? KP_SIM_FILTER_OPEN : KP_SIM_FILTER_PORT;
      h->nat = kp_sim_nat_new(w->sim, &pub, map, filter);
      kp_addr_parse(&addr, "192.168.1.2:4000");
    }
    if (h->nat) kp_sim_nat_set_timeout(h->nat, w->o.nat_timeout_ms);
  }
  h->node = kp_sim_dht_node_new(w->sim, &addr, h->nat, &c, w->o.seed * 1000003u + w->serial++);
  if (w->o.swarms) kp_sim_dht_node_add_swarm(h->node, NULL);
  if (!h->bootstrap) {
    /* Two of the well-known bootstrap nodes, as a client ships a list. */
    for (int i = 0; i < 2; i++) {
      host_t *b = &w->hosts[draw(w) % w->o.bootstrap];
      boot = *kp_sim_socket_addr(b->node->sock);
      kp_dht_add_bootstrap(h->node->dht, &boot, now);
    }
    kp_sim_dht_node_kick(h->node);
  }
  if (!h->bootstrap && w->o.session_scale_min > 0)
    kp_sim_timer(w->sim, now + session_ms(w, first), depart, h);
}

static void depart(void *ctx, uint64_t now) {
  host_t *h = ctx;
  kp_sim_world_t *w = h->world;
  kp_sim_dht_node_free(h->node);
  if (w->husk_count == w->husk_cap) {
    w->husk_cap = w->husk_cap ? w->husk_cap * 2 : 256;
    w->husks = realloc(w->husks, w->husk_cap * sizeof(*w->husks));
    if (!w->husks) abort();
  }
  w->husks[w->husk_count++] = h->node;
  if (h->nat && h->kind != KP_WORLD_CGNAT) kp_sim_nat_free(h->nat);
  h->node = NULL;
  h->nat = NULL;
  w->departed++;
  arrive(h, now); /* a newcomer, elsewhere, with a session of its own */
}

/* ---- The world --------------------------------------------------------------- */

kp_sim_world_t *kp_sim_world_new(const kp_sim_world_opts_t *o) {
  kp_sim_world_t *w = calloc(1, sizeof(*w));
  if (!w) abort();
  w->o = *o;
  if (!w->o.bootstrap) w->o.bootstrap = 1;
  if (w->o.nodes < w->o.bootstrap) w->o.nodes = w->o.bootstrap;
  kp_rng_seeded_init(&w->rng, o->seed ^ 0x5eed);
  w->sim = kp_sim_new(o->seed);
  kp_sim_link_t link = {.latency_min_ms = 10, .latency_max_ms = 30, .loss = o->loss};
  kp_sim_set_link(w->sim, &link);
  kp_sim_set_latency(w->sim, latency, w);
  kp_dht_config_defaults(&w->cfg);
  w->cfg.member_stable_ms = o->member_stable_ms;
  w->count = w->o.nodes;
  w->hosts = calloc(w->count, sizeof(*w->hosts));
  w->shared_count = w->o.nodes / 50 + 1;
  w->shared = calloc(w->shared_count, sizeof(*w->shared));
  w->shared_fill = calloc(w->shared_count, 1);
  if (!w->hosts || !w->shared || !w->shared_fill) abort();
  for (size_t i = 0; i < w->shared_count; i++) w->shared[i] = block(w->next_block++);
  for (size_t i = 0; i < w->count; i++) {
    host_t *h = &w->hosts[i];
    h->world = w;
    h->bootstrap = i < w->o.bootstrap;
    if (h->bootstrap)
      arrive(h, 0);
    else
      kp_sim_timer(w->sim, (uint64_t)(i - w->o.bootstrap) * w->o.join_ms / w->count, arrive, h);
  }
  return w;
}

void kp_sim_world_free(kp_sim_world_t *w) {
  for (size_t i = 0; i < w->count; i++)
    if (w->hosts[i].node) kp_sim_dht_node_free(w->hosts[i].node);
  kp_sim_free(w->sim); /* and with it every NAT */
  for (size_t i = 0; i < w->count; i++) free(w->hosts[i].node);
  for (size_t i = 0; i < w->husk_count; i++) free(w->husks[i]);
  free(w->husks);
  free(w->hosts);
  free(w->shared);
  free(w->shared_fill);
  free(w->cgnats);
  free(w);
}

kp_sim_t *kp_sim_world_sim(kp_sim_world_t *w) {
  return w->sim;
}

void kp_sim_world_run(kp_sim_world_t *w, uint64_t ms) {
  kp_sim_run_until(w->sim, kp_sim_now(w->sim) + ms);
}

static bool can_join(const host_t *h) {
  return h->kind == KP_WORLD_PUBLIC || h->kind == KP_WORLD_FULL_CONE;
}

static bool settled(const kp_sim_world_t *w) {
  uint64_t now = kp_sim_now(w->sim), age = w->o.member_stable_ms + SETTLE_MS;
  for (size_t i = 0; i < w->count; i++) {
    const host_t *h = &w->hosts[i];
    if (!h->node || !can_join(h) || now - h->born < age) continue;
    if (!kp_dht_is_joined(h->node->dht)) return false;
  }
  return true;
}

bool kp_sim_world_run_settled(kp_sim_world_t *w, uint64_t within_ms) {
  uint64_t end = kp_sim_now(w->sim) + within_ms;
  /* Everyone has arrived first. */
  uint64_t arrived = w->o.join_ms + w->o.member_stable_ms + SETTLE_MS;
  if (kp_sim_now(w->sim) < arrived && arrived < end) kp_sim_run_until(w->sim, arrived);
  while (!settled(w)) {
    if (kp_sim_now(w->sim) >= end) return false;
    kp_sim_run_until(w->sim, kp_sim_now(w->sim) + 1000);
  }
  return true;
}

void kp_sim_world_census(const kp_sim_world_t *w, kp_sim_world_census_t *c) {
  memset(c, 0, sizeof(*c));
  for (size_t i = 0; i < w->count; i++) {
    const host_t *h = &w->hosts[i];
    if (!h->node) continue;
    c->live++;
    c->by_kind[h->kind]++;
    c->reachable += can_join(h);
    c->members += kp_dht_is_member(h->node->dht);
    c->joined += kp_dht_is_joined(h->node->dht);
    c->table_entries += kp_dht_table(h->node->dht)->count;
  }
  c->departed = w->departed;
}

kp_sim_dht_node_t *kp_sim_world_random_node(kp_sim_world_t *w) {
  for (int tries = 0; tries < 1000; tries++) {
    host_t *h = &w->hosts[draw(w) % w->count];
    if (h->node) return h->node;
  }
  return NULL;
}

/* The k live members closest to target (but skip), by brute force: their
 * ids in ids[] and, if nodes is not NULL, the nodes. A member answers
 * lookups with its id from the moment it is one, before its join lookups
 * have run, so it belongs to the truth from then. */
static size_t closest(const kp_sim_world_t *w, const uint8_t target[KP_ID_LEN],
                      const kp_sim_dht_node_t *skip, uint8_t ids[][KP_ID_LEN],
                      kp_sim_dht_node_t **nodes, size_t k) {
  size_t n = 0;
  for (size_t i = 0; i < w->count && k; i++) {
    kp_sim_dht_node_t *node = w->hosts[i].node;
    uint8_t id[KP_ID_LEN];
    if (!node || node == skip || !kp_dht_is_member(node->dht)) continue;
    kp_dht_id(node->dht, id);
    if (n == k && kp_dht_id_cmp(target, id, ids[k - 1]) >= 0) continue;
    size_t at = n < k ? n : k - 1;
    while (at > 0 && kp_dht_id_cmp(target, id, ids[at - 1]) < 0) {
      memcpy(ids[at], ids[at - 1], KP_ID_LEN);
      if (nodes) nodes[at] = nodes[at - 1];
      at--;
    }
    memcpy(ids[at], id, KP_ID_LEN);
    if (nodes) nodes[at] = node;
    if (n < k) n++;
  }
  return n;
}

size_t kp_sim_world_truth(const kp_sim_world_t *w, const uint8_t target[KP_ID_LEN],
                          const kp_sim_dht_node_t *skip, uint8_t out[][KP_ID_LEN], size_t k) {
  return closest(w, target, skip, out, NULL, k);
}

size_t kp_sim_world_closest(const kp_sim_world_t *w, const uint8_t target[KP_ID_LEN],
                            kp_sim_dht_node_t **out, size_t k) {
  uint8_t(*ids)[KP_ID_LEN] = malloc(k * KP_ID_LEN + 1);
  if (!ids) abort();
  size_t n = closest(w, target, NULL, ids, out, k);
  free(ids);
  return n;
}

/* ---- Lookups ------------------------------------------------------------------ */

typedef struct probe_s {
  kp_sim_world_t *w;
  kp_sim_world_lookups_t *out;
  kp_sim_dht_node_t *from;
  uint8_t target[KP_ID_LEN];
  uint64_t started;
  bool busy;
} probe_t;

static void start_probe(probe_t *p);

static void on_probe_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *res,
                          size_t count, uint64_t now) {
  probe_t *p = arg;
  p->busy = false;
  if (status == KP_ECANCELED) return; /* its node left: it does not count */
  kp_sim_world_lookups_t *o = p->out;
  uint8_t want[KP_DHT_K][KP_ID_LEN];
  size_t n = kp_sim_world_truth(p->w, p->target, p->from, want, KP_DHT_K);
  bool same = status == 0 && count == n;
  for (size_t i = 0; same && i < n; i++) same = !memcmp(res[i].id, want[i], KP_ID_LEN);
  const kp_dht_query_stats_t *st = kp_dht_query_stats(q);
  o->lookups++;
  o->exact += same;
  o->failed += status != 0;
  o->hops += st->hops;
  o->requests += st->requests;
  o->ms += now - p->started;
}

static void start_probe(probe_t *p) {
  for (int tries = 0; tries < 100; tries++) {
    p->from = kp_sim_world_random_node(p->w);
    if (!p->from) return;
    for (int i = 0; i < KP_ID_LEN; i++) p->target[i] = (uint8_t)draw(p->w);
    kp_dht_query_opts_t opts = {.on_done = on_probe_done, .arg = p};
    p->started = kp_sim_now(p->w->sim);
    if (kp_dht_query_start(p->from->dht, p->target, &opts, p->started, NULL) == 0) {
      p->busy = true;
      kp_sim_dht_node_kick(p->from);
      return;
    }
  }
}

void kp_sim_world_lookups(kp_sim_world_t *w, unsigned n, unsigned parallel,
                          kp_sim_world_lookups_t *out) {
  memset(out, 0, sizeof(*out));
  if (!parallel) parallel = 1;
  probe_t *probes = calloc(parallel, sizeof(*probes));
  if (!probes) abort();
  for (;;) {
    unsigned busy = 0;
    for (unsigned i = 0; i < parallel; i++) busy += probes[i].busy;
    /* A lookup whose node left mid-way does not count: another replaces it. */
    for (unsigned i = 0; i < parallel && out->lookups + busy < n; i++) {
      probe_t *p = &probes[i];
      if (p->busy) continue;
      p->w = w;
      p->out = out;
      start_probe(p);
      busy += p->busy;
    }
    if (out->lookups >= n || !busy) break;
    kp_sim_run_until(w->sim, kp_sim_now(w->sim) + 50);
  }
  free(probes);
}

/* ---- Memory: what the DHT state machines hold -------------------------------------- */

/* glibc's malloc: the usable size plus the chunk header is what an
 * allocation costs. Test code: a process-wide counter is fine here. */
static uint64_t dht_bytes;

static size_t cost(void *p) {
  return p ? malloc_usable_size(p) + sizeof(size_t) : 0;
}

static void *count_malloc(size_t n) {
  void *p = malloc(n);
  dht_bytes += cost(p);
  return p;
}

static void *count_calloc(size_t a, size_t b) {
  void *p = calloc(a, b);
  dht_bytes += cost(p);
  return p;
}

static void *count_realloc(void *old, size_t n) {
  size_t before = cost(old);
  void *p = realloc(old, n);
  if (p || !n) dht_bytes += cost(p) - before;
  return p;
}

static void count_free(void *p) {
  dht_bytes -= cost(p);
  free(p);
}

void kp_sim_world_count_memory(void) {
  kp_replace_allocator(count_malloc, count_realloc, count_calloc, count_free);
}

uint64_t kp_sim_world_dht_bytes(void) {
  return dht_bytes;
}
