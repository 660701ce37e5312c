/* SPDX-License-Identifier: MIT */
/* The DHT at scale on the simulator (tests/sim/sim_world.h): a population
 * of 10,000 with the internet's NAT mix, under churn, and eclipse attacks on
 * it from one /24 and from one port-grinding IP. Deterministic from the
 * seeds used here; KP_SIM_SEED=n runs them from another (to check that a
 * result does not hang on one seed). */
#include <math.h>
#include <sodium.h>

#include "dht/dht_id.h"
#include "dht/dht_swarm.h"
#include "tests/harness/test.h"
#include "tests/sim/sim_world.h"
#include "tests/unit/test_dht.h"

#define SEC 1000ull
#define MINUTE (60 * SEC)

/* Under AddressSanitizer the simulator runs several times slower: the CI's
 * ASan build runs these populations at a third of the size (the figures
 * they are held to do not depend on it). */
#if defined(__SANITIZE_ADDRESS__)
#define SCALE_NODES 3000
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SCALE_NODES 3000
#endif
#endif
#ifndef SCALE_NODES
#define SCALE_NODES 10000
#endif

static uint64_t seed_or(uint64_t seed) {
  const char *s = getenv("KP_SIM_SEED");
  return s && *s ? strtoull(s, NULL, 10) : seed;
}

/* ---- A sybil farm ----------------------------------------------------------
 *
 * The attacker of docs/protocol.md, "Eclipse limits": it grinds addresses it
 * holds (every port of one IP, or many ports of every IP of a /24) for the
 * ids closest to a target, offline, and runs a node at each. Its nodes answer
 * everything as members would, but every list of nodes they give is their
 * own, and they keep no record: a target surrounded by them is hidden. */

#define FARM_MAX 48

typedef struct farm_s {
  kp_sim_t *sim;
  uint8_t target[KP_ID_LEN];
  size_t count;
  kp_addr_t addrs[FARM_MAX]; /* closest to target first */
  uint8_t ids[FARM_MAX][KP_ID_LEN];
  kp_sim_socket_t *socks[FARM_MAX];
  unsigned answered;
} farm_t;

/* Keeps the FARM_MAX ids closest to the target among ips x ports. */
static void farm_grind(farm_t *f, uint32_t first_ip, unsigned ips, unsigned ports) {
  for (unsigned i = 0; i < ips; i++) {
    for (unsigned p = 0; p < ports; p++) {
      kp_addr_t a;
      uint8_t id[KP_ID_LEN];
      kp_addr_set_v4(&a, first_ip + i, (uint16_t)(1024 + p));
      kp_dht_id_from_addr(&a, id);
      if (f->count == FARM_MAX && kp_dht_id_cmp(f->target, id, f->ids[FARM_MAX - 1]) >= 0) continue;
      size_t at = f->count < FARM_MAX ? f->count : FARM_MAX - 1;
      while (at > 0 && kp_dht_id_cmp(f->target, id, f->ids[at - 1]) < 0) {
        memcpy(f->ids[at], f->ids[at - 1], KP_ID_LEN);
        f->addrs[at] = f->addrs[at - 1];
        at--;
      }
      memcpy(f->ids[at], id, KP_ID_LEN);
      f->addrs[at] = a;
      if (f->count < FARM_MAX) f->count++;
    }
  }
}

static void farm_recv(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                      size_t len, uint64_t now) {
  farm_t *f = ctx;
  kp_dht_msg_t m;
  (void)now;
  if (kp_dht_msg_decode(data, len, KP_AF_INET, &m) || m.type != KP_DHT_REQUEST ||
      m.command == KP_DHT_CMD_PING_NAT)
    return;
  size_t me = 0;
  while (me < f->count && f->socks[me] != sock) me++;
  kp_dht_msg_t r = {0};
  uint8_t nodes[KP_DHT_K * KP_ADDR_COMPACT_V4], buf[KP_DHT_MAX_DATAGRAM];
  r.type = KP_DHT_RESPONSE;
  r.tid = m.tid;
  r.to = *from;
  r.command = m.command;
  r.has_id = true;
  memcpy(r.id, f->ids[me], KP_ID_LEN);
  r.has_token = true;
  memset(r.token, 0x77, sizeof(r.token));
  if (m.has_target) {
    for (size_t i = 0; i < f->count && r.nodes_len / KP_ADDR_COMPACT_V4 < KP_DHT_K; i++)
      if (i != me) r.nodes_len += kp_addr_encode_compact(&f->addrs[i], nodes + r.nodes_len);
    r.nodes = nodes;
  }
  /* An announce is "stored", a lookup finds nothing: the record is gone. */
  if (!kp_dht_msg_encode(&r, buf, sizeof(buf), &len)) kp_sim_send(sock, from, buf, len);
  f->answered++;
}

static void farm_start(farm_t *f, kp_sim_t *sim) {
  f->sim = sim;
  for (size_t i = 0; i < f->count; i++)
    f->socks[i] = kp_sim_socket_new(sim, &f->addrs[i], NULL, farm_recv, f);
}

/* Each farm node introduces itself (a FIND_NODE for the target, with its
 * id) to the honest members closest to the target, which, checking its
 * address, ping it back and take it in where their limits allow. */
static void farm_reach(farm_t *f, kp_sim_world_t *w) {
  kp_sim_dht_node_t *honest[64];
  size_t n = kp_sim_world_closest(w, f->target, honest, 64);
  for (size_t i = 0; i < f->count; i++) {
    for (size_t j = 0; j < n; j++) {
      kp_dht_msg_t m = {0};
      uint8_t buf[KP_DHT_MAX_DATAGRAM];
      size_t len;
      m.type = KP_DHT_REQUEST;
      m.tid = (uint16_t)(i * 64 + j);
      m.to = kp_dht_nat(honest[j]->dht)->public_addr;
      m.command = KP_DHT_CMD_FIND_NODE;
      m.has_id = true;
      memcpy(m.id, f->ids[i], KP_ID_LEN);
      m.has_target = true;
      memcpy(m.target, f->target, KP_ID_LEN);
      KP_CHECK_OK(kp_dht_msg_encode_min(&m, 300, buf, sizeof(buf), &len));
      kp_sim_send(f->socks[i], &m.to, buf, len);
    }
  }
}

/* How many of a lookup's results the farm holds (all its addresses share
 * their first three bytes: one /24, or one IP). */
static size_t farm_share(const farm_t *f, const kp_dht_result_t *res, size_t count) {
  size_t n = 0;
  for (size_t i = 0; i < count; i++) n += !memcmp(res[i].addr.ip, f->addrs[0].ip, 3);
  return n;
}

/* ---- Waiting on the network --------------------------------------------------- */

typedef struct {
  bool done;
  int status;
  size_t count;
  kp_dht_result_t res[KP_DHT_K];
} query_wait_t;

static void on_query_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *res,
                          size_t count, uint64_t now) {
  query_wait_t *w = arg;
  (void)q, (void)now;
  w->done = true;
  w->status = status;
  w->count = count;
  memcpy(w->res, res, count * sizeof(*res));
}

static bool query_finished(void *ctx) {
  return ((query_wait_t *)ctx)->done;
}

typedef struct {
  bool done;
  int status;
  const uint8_t *key; /* the record wanted */
  bool found;
} swarm_wait_t;

static void on_record(void *arg, const kp_record_t *rec) {
  swarm_wait_t *w = arg;
  if (!memcmp(rec->public_key, w->key, KP_PUBLIC_KEY_LEN)) w->found = true;
}

static void on_swarm_done(void *arg, int status, size_t found, const kp_dht_query_stats_t *st) {
  swarm_wait_t *w = arg;
  (void)found, (void)st;
  w->done = true;
  w->status = status;
}

static bool swarm_finished(void *ctx) {
  return ((swarm_wait_t *)ctx)->done;
}

typedef struct {
  int rounds;
  int status;
  unsigned stored;
} announce_wait_t;

static void on_announced(void *arg, int status, unsigned stored) {
  announce_wait_t *w = arg;
  w->rounds++;
  w->status = status;
  w->stored = stored;
}

static bool announced(void *ctx) {
  return ((announce_wait_t *)ctx)->rounds > 0;
}

/* ---- Eclipse ------------------------------------------------------------------- */

/* One attack: a farm ground (ips x ports from first_ip) around the target
 * of a server's key, the server announcing, honest lookups of that target
 * from random nodes. `closer` of the farm's ids must be closer to the
 * target than every honest member: without limits, the farm would hold at
 * least that many of the k-set. */
static void eclipse(kp_sim_world_t *w, uint8_t key_seed, uint32_t first_ip, unsigned ips,
                    unsigned ports, size_t closer) {
  kp_sim_t *sim = kp_sim_world_sim(w);
  farm_t *f = calloc(1, sizeof(*f));
  kp_keypair_t kp;
  uint8_t seed[KP_SEED_LEN];
  memset(seed, key_seed, sizeof(seed));
  kp_keypair_from_seed(&kp, seed);
  kp_target_from_key(kp.public_key, f->target);
  farm_grind(f, first_ip, ips, ports);
  uint8_t honest[1][KP_ID_LEN];
  KP_CHECK_EQ(kp_sim_world_truth(w, f->target, NULL, honest, 1), 1);
  KP_CHECK(kp_dht_id_cmp(f->target, f->ids[closer - 1], honest[0]) < 0);
  farm_start(f, sim);
  farm_reach(f, w);
  kp_sim_run_until(sim, kp_sim_now(sim) + 10 * SEC);
  KP_CHECK(f->answered > 0); /* honest nodes checked on it */

  /* The server announces its key; its own lookup obeys the limits too. */
  kp_sim_dht_node_t *server = kp_sim_world_random_node(w);
  announce_wait_t aw = {0};
  KP_CHECK_OK(kp_dht_swarm_announce(server->swarm, f->target, &kp, NULL, 0, on_announced, &aw,
                                    kp_sim_now(sim), NULL));
  kp_sim_dht_node_kick(server);
  KP_CHECK(kp_sim_run_while(sim, kp_sim_now(sim) + MINUTE, announced, &aw));
  KP_CHECK_OK(aw.status);

  /* Honest lookups of the target: the farm holds at most its prefix's
   * share of each k-set, and the honest announcer is found. */
  size_t most = 0, seen = 0;
  for (int i = 0; i < 30; i++) {
    kp_sim_dht_node_t *from = kp_sim_world_random_node(w);
    query_wait_t q = {0};
    kp_dht_query_opts_t opts = {.on_done = on_query_done, .arg = &q};
    KP_CHECK_OK(kp_dht_query_start(from->dht, f->target, &opts, kp_sim_now(sim), NULL));
    kp_sim_dht_node_kick(from);
    KP_CHECK(kp_sim_run_while(sim, kp_sim_now(sim) + MINUTE, query_finished, &q));
    KP_CHECK_OK(q.status);
    size_t share = farm_share(f, q.res, q.count);
    if (share > most) most = share;
    seen += share;
  }
  for (int i = 0; i < 10; i++) {
    kp_sim_dht_node_t *from = kp_sim_world_random_node(w);
    swarm_wait_t sw = {.key = kp.public_key};
    KP_CHECK_OK(kp_dht_swarm_lookup(from->swarm, f->target, on_record, on_swarm_done, &sw,
                                    kp_sim_now(sim)));
    kp_sim_dht_node_kick(from);
    KP_CHECK(kp_sim_run_while(sim, kp_sim_now(sim) + MINUTE, swarm_finished, &sw));
    KP_CHECK_MSG(sw.found, "lookup %d did not find the announcer", i);
  }
  printf("farm of %zu ids: at most %zu of %d in any lookup's 20 closest (%zu in 30 lookups)\n",
         f->count, most, KP_DHT_K, seen);
  KP_CHECK_MSG(most * 10 <= KP_DHT_K, "the farm held %zu of a k-set", most);
  KP_CHECK(seen > 0); /* the attack did reach the lookups: the limit held it */
  for (size_t i = 0; i < f->count; i++) kp_sim_socket_free(f->socks[i]);
  free(f);
}

void test_eclipse_one_prefix(void) {
  kp_sim_world_opts_t o;
  kp_sim_world_opts_init(&o);
  o.nodes = SCALE_NODES;
  o.seed = seed_or(141);
  o.join_ms = (unsigned)(o.nodes * 6);
  o.session_scale_min = 0; /* nobody leaves: the attack is the point here */
  o.swarms = true;
  kp_sim_world_t *w = kp_sim_world_new(&o);
  KP_CHECK(kp_sim_world_run_settled(w, o.join_ms + 10 * MINUTE));

  /* One /24 (45.67.89.0/24), 4096 ports of each of its addresses: a
   * million ids, a k-set of its own many times over. */
  eclipse(w, 1, 45u << 24 | 67u << 16 | 89u << 8, 256, 4096, KP_DHT_K);
  /* One IP (46.1.2.3), every port: some twenty ids closer than any honest
   * member's. */
  eclipse(w, 2, 46u << 24 | 1u << 16 | 2u << 8 | 3u, 1, 64511, 3);
  kp_sim_world_free(w);
}

/* ---- The population under churn ----------------------------------------------------- */

/* SCALE_NODES nodes (a third of them reachable), sessions with a median of
 * an hour (shorter than the mainline DHT's, to see more of them end):
 * lookups from random nodes to random targets find exactly the 20 closest
 * live members, when it has formed and after ten minutes of churn. */
void test_sim_10k(void) {
  kp_sim_world_opts_t o;
  kp_sim_world_opts_init(&o);
  o.nodes = SCALE_NODES;
  o.seed = seed_or(151);
  o.join_ms = (unsigned)(o.nodes * 6);
  o.session_scale_min = 60 / pow(log(2), 1 / o.session_shape);
  kp_sim_world_t *w = kp_sim_world_new(&o);
  KP_CHECK(kp_sim_world_run_settled(w, o.join_ms + 10 * MINUTE));
  kp_sim_world_census_t c;
  kp_sim_world_census(w, &c);
  KP_CHECK(c.joined * 10 >= c.reachable * 9);
  kp_sim_world_lookups_t l;
  kp_sim_world_lookups(w, 200, 20, &l);
  printf("%zu nodes, %zu joined members: %u/%u lookups exact, %.2f hops, %.1f requests\n", c.live,
         c.joined, l.exact, l.lookups, (double)l.hops / l.lookups, (double)l.requests / l.lookups);
  KP_CHECK_EQ(l.failed, 0);
  KP_CHECK(l.exact * 100 >= l.lookups * 99);

  uint64_t departed = c.departed;
  kp_sim_world_run(w, 10 * MINUTE);
  kp_sim_world_census(w, &c);
  kp_sim_world_lookups(w, 200, 20, &l);
  printf("after %llu sessions ended and as many began: %u/%u lookups exact\n",
         (unsigned long long)(c.departed - departed), l.exact, l.lookups);
  KP_CHECK(c.departed - departed >= o.nodes / 200); /* churn did happen */
  KP_CHECK_EQ(l.failed, 0);
  KP_CHECK(l.exact * 100 >= l.lookups * 99);
  kp_sim_world_free(w);
}
