/* SPDX-License-Identifier: MIT */
/* The DHT state machine on the simulator: many nodes, a virtual clock, NAT
 * and firewall models, loss. Deterministic from the seeds used here. */
#include "dht/dht_id.h"
#include "dht/dht_internal.h"
#include "tests/harness/test.h"
#include "tests/sim/sim_dht.h"
#include "tests/unit/test_dht.h"

#define SEC 1000ull
#define MINUTE (60 * SEC)

static kp_dht_config_t sim_config(void) {
  kp_dht_config_t c;
  kp_dht_config_defaults(&c);
  c.member_stable_ms = 0;
  return c;
}

static void join_all(kp_sim_dht_net_t *net, uint64_t within_ms) {
  bool ok = kp_sim_dht_net_run_joined(net, within_ms);
  KP_CHECK_MSG(ok, "only %zu of %zu nodes joined", kp_sim_dht_net_joined(net), net->count);
}

/* ---- Lookups ----------------------------------------------------------- */

typedef struct {
  bool done;
  int status;
  size_t count;
  kp_dht_result_t results[KP_DHT_K];
  kp_dht_query_stats_t stats;
  unsigned replies;
} lookup_t;

static void on_lookup_reply(void *arg, kp_dht_query_t *q, const kp_dht_msg_t *reply,
                            const kp_addr_t *from, uint64_t now) {
  (void)q, (void)reply, (void)from, (void)now;
  ((lookup_t *)arg)->replies++;
}

static void on_lookup_done(void *arg, kp_dht_query_t *q, int status, const kp_dht_result_t *res,
                           size_t count, uint64_t now) {
  lookup_t *l = arg;
  (void)now;
  l->done = true;
  l->status = status;
  l->count = count;
  memcpy(l->results, res, count * sizeof(*res));
  l->stats = *kp_dht_query_stats(q);
}

static bool lookup_done(void *ctx) {
  return ((lookup_t *)ctx)->done;
}

static lookup_t run_query(kp_sim_dht_node_t *from, const uint8_t target[KP_ID_LEN], uint8_t command,
                          const uint8_t *value, size_t len) {
  lookup_t l = {0};
  kp_dht_query_opts_t opts = {.command = command,
                              .value = value,
                              .value_len = len,
                              .on_reply = on_lookup_reply,
                              .on_done = on_lookup_done,
                              .arg = &l};
  KP_CHECK_OK(kp_dht_query_start(from->dht, target, &opts, kp_sim_now(from->sim), NULL));
  kp_sim_dht_node_kick(from);
  KP_CHECK(kp_sim_run_while(from->sim, kp_sim_now(from->sim) + 60 * SEC, lookup_done, &l));
  return l;
}

static lookup_t run_lookup(kp_sim_dht_node_t *from, const uint8_t target[KP_ID_LEN]) {
  return run_query(from, target, 0, NULL, 0);
}

/* The up-to-k members closest to target, by brute force. */
static size_t truth(const kp_sim_dht_net_t *net, const uint8_t target[KP_ID_LEN],
                    const kp_sim_dht_node_t *skip, uint8_t out[KP_DHT_K][KP_ID_LEN]) {
  size_t n = 0;
  for (size_t i = 0; i < net->count; i++) {
    kp_sim_dht_node_t *node = net->nodes[i];
    uint8_t id[KP_ID_LEN];
    if (node == skip || !node->dht || !kp_dht_is_member(node->dht)) continue;
    kp_dht_id(node->dht, id);
    size_t at = n < KP_DHT_K ? n : KP_DHT_K;
    while (at > 0 && kp_dht_id_cmp(target, id, out[at - 1]) < 0) {
      if (at < KP_DHT_K) memcpy(out[at], out[at - 1], KP_ID_LEN);
      at--;
    }
    if (at < KP_DHT_K) memcpy(out[at], id, KP_ID_LEN);
    if (n < KP_DHT_K) n++;
  }
  return n;
}

static bool exact(const kp_sim_dht_net_t *net, const lookup_t *l, const uint8_t *target,
                  const kp_sim_dht_node_t *from) {
  uint8_t want[KP_DHT_K][KP_ID_LEN];
  size_t n = truth(net, target, from, want);
  if (l->status || l->count != n) return false;
  for (size_t i = 0; i < n; i++)
    if (memcmp(l->results[i].id, want[i], KP_ID_LEN)) return false;
  return true;
}

static unsigned accuracy(kp_sim_dht_net_t *net, unsigned lookups, uint64_t seed,
                         double *mean_requests) {
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, seed);
  kp_rng_t rng = kp_rng_seeded(&st);
  unsigned ok = 0, requests = 0;
  for (unsigned i = 0; i < lookups; i++) {
    kp_sim_dht_node_t *from = net->nodes[kp_rng_below(&rng, (uint32_t)net->count)];
    uint8_t target[KP_ID_LEN];
    kp_rng_fill(&rng, target, sizeof(target));
    lookup_t l = run_lookup(from, target);
    ok += exact(net, &l, target, from);
    requests += l.stats.requests;
  }
  if (mean_requests) *mean_requests = (double)requests / lookups;
  return ok;
}

void test_sim_lookup_accuracy(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(11), 1000, 5, &c, 11);
  join_all(&net, 2 * MINUTE);
  double requests;
  unsigned ok = accuracy(&net, 100, 12, &requests);
  printf("1000 nodes: %u/100 lookups exact, %.1f requests per lookup\n", ok, requests);
  KP_CHECK(ok >= 99);
  KP_CHECK(requests < 40);
  kp_sim_dht_net_destroy(&net);
}

void test_sim_loss(void) {
  kp_sim_t *sim = kp_sim_new(21);
  kp_sim_link_t link = {
      .latency_min_ms = 20, .latency_max_ms = 80, .loss = 0.05, .duplicate = 0.02};
  kp_sim_set_link(sim, &link);
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, sim, 300, 10, &c, 21);
  join_all(&net, 3 * MINUTE);
  unsigned ok = accuracy(&net, 100, 22, NULL);
  printf("300 nodes, 5%% loss, 2%% duplication: %u/100 lookups exact\n", ok);
  KP_CHECK(ok >= 95);
  kp_sim_dht_net_destroy(&net);
}

/* ---- Membership ---------------------------------------------------------- */

static kp_sim_dht_node_t *add_node(kp_sim_dht_net_t *net, const char *addr_text, kp_sim_nat_t *nat,
                                   const kp_dht_config_t *c, uint64_t seed) {
  kp_addr_t addr, boot;
  kp_addr_parse(&addr, addr_text);
  kp_sim_dht_node_t *n = kp_sim_dht_node_new(net->sim, &addr, nat, c, seed);
  kp_sim_dht_addr(0, &boot);
  kp_dht_add_bootstrap(n->dht, &boot, kp_sim_now(net->sim));
  kp_sim_dht_node_kick(n);
  return n;
}

/* Everything addressed to ctx's IP is lost unless it comes from ctx2. */
typedef struct only_from_s {
  kp_addr_t to_ip, from;
} only_from_t;

static bool drop_unless_from(void *ctx, const kp_addr_t *from, const kp_addr_t *to,
                             const uint8_t *data, size_t len) {
  const only_from_t *o = ctx;
  (void)data, (void)len;
  return kp_addr_same_ip(to, &o->to_ip) && !kp_addr_eq(from, &o->from);
}

/* A node behind a random NAT whose join hears one reporter of its address
 * (every other node's answer lost): its NAT's kind is unknown, and a
 * connection it makes would punch as if its mapping were stable. It looks
 * itself up again, after 1 s, doubling, until a second reporter tells it
 * its NAT is random; eight times at most. */
void test_sim_nat_second_reporter(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(37), 10, 0, &c, 37);
  join_all(&net, MINUTE);
  kp_addr_t pub;
  kp_addr_parse(&pub, "198.51.100.70:0");
  kp_sim_nat_t *nat = kp_sim_nat_new(net.sim, &pub, KP_SIM_MAP_RANDOM, KP_SIM_FILTER_PORT);
  only_from_t only = {.to_ip = pub, .from = *kp_sim_socket_addr(net.nodes[0]->sock)};
  kp_sim_set_drop(net.sim, drop_unless_from, &only);
  c.mode = KP_NODE_EPHEMERAL;
  kp_sim_dht_node_t *n = add_node(&net, "192.168.7.2:4000", nat, &c, 38);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 3 * SEC);
  KP_CHECK_EQ(kp_dht_nat(n->dht)->type, KP_NAT_UNKNOWN);
  KP_CHECK_EQ(kp_dht_nat(n->dht)->count, 1);
  /* A short loss, healed between tries (nothing in flight would bring the
   * others' answers without the next): it hears them. */
  for (int i = 0; i < 100 && (n->dht->bootstrap_query || n->dht->reporters_next == UINT64_MAX); i++)
    kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 100);
  KP_CHECK(!n->dht->bootstrap_query && n->dht->reporters_next != UINT64_MAX);
  uint64_t healed = kp_sim_now(net.sim);
  kp_sim_set_drop(net.sim, NULL, NULL);
  while (kp_dht_nat(n->dht)->type == KP_NAT_UNKNOWN && kp_sim_now(net.sim) < healed + 30 * SEC)
    kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 100);
  printf("NAT known %" PRIu64 " ms after the answers came through\n", kp_sim_now(net.sim) - healed);
  KP_CHECK_EQ(kp_dht_nat(n->dht)->type, KP_NAT_RANDOM);
  KP_CHECK(kp_sim_now(net.sim) - healed <= 10 * SEC);

  /* A loss that lasts (or a network whose nodes share one host): eight
   * tries in about four minutes, then none until the network changes. */
  kp_dht_network_changed(n->dht, kp_sim_now(net.sim));
  kp_sim_set_drop(net.sim, drop_unless_from, &only);
  kp_sim_dht_node_kick(n);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 5 * MINUTE);
  KP_CHECK_EQ(kp_dht_nat(n->dht)->type, KP_NAT_UNKNOWN);
  KP_CHECK_EQ(n->dht->reporters_tries, 8);
  uint64_t sent = n->datagrams_out;
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 5 * MINUTE);
  sent = n->datagrams_out - sent;
  printf("then %" PRIu64 " datagrams in 5 minutes\n", sent);
  KP_CHECK_EQ(n->dht->reporters_tries, 8);
  KP_CHECK(sent <= 40); /* no lookups (tens of requests each): PING_NATs and pings */
  kp_sim_set_drop(net.sim, NULL, NULL);
  kp_sim_dht_node_free(n);
  kp_sim_dht_net_destroy(&net);
  free(n);
}

void test_sim_membership_firewall(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(31), 30, 0, &c, 31);
  join_all(&net, MINUTE);

  /* A host with a public address behind a stateful firewall: it can talk to
   * anyone, but PING_NAT answers from a port it never sent to are dropped. */
  kp_addr_t pub;
  kp_addr_parse(&pub, "198.51.100.50:0");
  kp_sim_nat_t *fw = kp_sim_nat_new(net.sim, &pub, KP_SIM_MAP_NONE, KP_SIM_FILTER_PORT);
  kp_sim_dht_node_t *f = add_node(&net, "198.51.100.50:4000", fw, &c, 99);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 2 * MINUTE);
  KP_CHECK(!kp_dht_is_member(f->dht));
  KP_CHECK_EQ(f->membership_changes, 0);
  KP_CHECK(kp_dht_nat(f->dht)->reach_fails >= 2);
  KP_CHECK(kp_dht_nat(f->dht)->has_public); /* it knows its address, just not reachable */
  /* An ephemeral node still queries fine. */
  uint8_t target[KP_ID_LEN];
  kp_dht_id(net.nodes[7]->dht, target);
  lookup_t l = run_lookup(f, target);
  KP_CHECK(exact(&net, &l, target, f));
  /* And nobody put it in a table. */
  for (size_t i = 0; i < net.count; i++) {
    const kp_dht_table_t *t = kp_dht_table(net.nodes[i]->dht);
    for (uint32_t e = 0; e < t->count; e++) {
      kp_addr_t a;
      kp_dht_entry_addr(t, kp_dht_table_at(t, e), &a);
      KP_CHECK(!kp_addr_same_ip(&a, &pub));
    }
  }

  /* The firewall opens: the next check (the back-off doubles from 30 s to
   * 5 minutes) passes. */
  kp_sim_nat_set_filter(fw, KP_SIM_FILTER_OPEN);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 5 * MINUTE);
  KP_CHECK(kp_dht_is_member(f->dht));
  KP_CHECK_EQ(f->membership_changes, 1);

  /* It closes again: the periodic re-check (every 5 min) finds out. */
  kp_sim_nat_set_filter(fw, KP_SIM_FILTER_PORT);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 12 * MINUTE);
  KP_CHECK(!kp_dht_is_member(f->dht));
  KP_CHECK_EQ(f->membership_changes, 2);
  kp_sim_dht_node_free(f);
  kp_sim_dht_net_destroy(&net);
  free(f);
}

/* A member behind a NAT that filters nothing is reachable only while its
 * mapping lives, and NATs forget an idle one (here after a minute). With
 * nothing else to send, the member pings someone every 25 s, so a network
 * that leaves it alone for minutes still finds it there. */
typedef struct {
  int status;
  bool done;
} ping_result_t;

static void on_ping_result(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                           const kp_addr_t *from, uint64_t now) {
  ping_result_t *r = arg;
  (void)req, (void)resp, (void)from, (void)now;
  r->status = status;
  r->done = true;
}

static bool ping_done(void *ctx) {
  return ((ping_result_t *)ctx)->done;
}

void test_sim_member_keeps_nat_open(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  c.refresh_ms = 24 * 60 * MINUTE; /* a quiet network: no bucket refreshes */
  kp_sim_dht_net_init(&net, kp_sim_new(131), 20, 0, &c, 131);
  join_all(&net, MINUTE);
  kp_addr_t pub;
  kp_addr_parse(&pub, "198.51.100.60:4000");
  kp_sim_nat_t *nat = kp_sim_nat_new(net.sim, &pub, KP_SIM_MAP_CONSISTENT, KP_SIM_FILTER_OPEN);
  kp_sim_nat_set_timeout(nat, 60 * SEC);
  kp_sim_dht_node_t *m = add_node(&net, "192.168.5.2:4000", nat, &c, 132);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 2 * MINUTE);
  KP_CHECK(kp_dht_is_member(m->dht));
  /* Left alone two minutes at a time, it still answers. */
  for (int i = 0; i < 5; i++) {
    kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 2 * MINUTE);
    ping_result_t r = {0};
    KP_CHECK_OK(kp_dht_request(net.nodes[1]->dht, &pub, KP_DHT_CMD_PING, NULL, NULL, 0, NULL,
                               on_ping_result, &r, kp_sim_now(net.sim), NULL));
    kp_sim_dht_node_kick(net.nodes[1]);
    KP_CHECK(kp_sim_run_while(net.sim, kp_sim_now(net.sim) + 10 * SEC, ping_done, &r));
    KP_CHECK_MSG(r.status == 0, "round %d: the member behind the NAT did not answer", i);
  }
  KP_CHECK(kp_dht_is_member(m->dht));
  kp_sim_dht_node_free(m);
  kp_sim_dht_net_destroy(&net);
  free(m);
}

void test_sim_membership_moves(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(41), 30, 0, &c, 41);
  join_all(&net, MINUTE);
  kp_sim_dht_node_t *m = net.nodes[5];
  KP_CHECK(kp_dht_is_member(m->dht));
  unsigned before = m->membership_changes;

  /* The host moves to another address (a new network): peers report the
   * new address, it leaves membership, proves itself again and rejoins
   * under the id of its new address. */
  kp_addr_t moved, moved_alt;
  kp_addr_parse(&moved, "10.200.0.1:4000");
  kp_addr_parse(&moved_alt, "10.200.0.1:4001");
  kp_sim_socket_move(m->sock, &moved, NULL);
  kp_sim_socket_move(m->alt, &moved_alt, NULL);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 20 * MINUTE);
  KP_CHECK(kp_dht_is_member(m->dht));
  KP_CHECK(m->membership_changes >= before + 2);
  uint8_t id[KP_ID_LEN], expect[KP_ID_LEN];
  kp_dht_id(m->dht, id);
  kp_dht_id_from_addr(&moved, expect);
  KP_CHECK_MEM(id, expect, KP_ID_LEN);
  kp_sim_dht_net_destroy(&net);
}

void test_sim_suspend(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(51), 40, 0, &c, 51);
  join_all(&net, MINUTE);
  kp_sim_dht_node_t *n = net.nodes[3];
  unsigned before = n->membership_changes;
  /* Every machine sleeps ten minutes; each notices the jump, forgets what
   * it knew of its address, re-proves reachability and rejoins. */
  kp_sim_jump(net.sim, kp_sim_now(net.sim) + 10 * MINUTE);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 10);
  KP_CHECK(!kp_dht_is_member(n->dht));
  join_all(&net, MINUTE);
  KP_CHECK_EQ(n->membership_changes, before + 2);
  KP_CHECK(accuracy(&net, 20, 52, NULL) >= 19);
  kp_sim_dht_net_destroy(&net);
}

/* ---- Routing table upkeep ------------------------------------------------ */

static kp_sim_dht_node_t *member_at(kp_sim_t *sim, const kp_addr_t *addr, unsigned k,
                                    uint64_t seed) {
  kp_dht_config_t c = sim_config();
  c.mode = KP_NODE_MEMBER;
  c.k = k;
  return kp_sim_dht_node_new(sim, addr, NULL, &c, seed);
}

static void ignore(void *arg, kp_dht_req_t *req, int status, const kp_dht_msg_t *resp,
                   const kp_addr_t *from, uint64_t now) {
  (void)arg, (void)req, (void)status, (void)resp, (void)from, (void)now;
}

static void ping_quiet(kp_sim_dht_node_t *from, kp_sim_dht_node_t *to) {
  KP_CHECK_OK(kp_dht_request(from->dht, kp_sim_socket_addr(to->sock), KP_DHT_CMD_PING, NULL, NULL,
                             0, NULL, ignore, NULL, kp_sim_now(from->sim), NULL));
  kp_sim_dht_node_kick(from);
}

static bool has_addr(kp_sim_dht_node_t *n, const kp_addr_t *addr) {
  uint8_t id[KP_ID_LEN];
  kp_dht_id_from_addr(addr, id);
  const kp_dht_entry_t *e = kp_dht_table_find(kp_dht_table(n->dht), id);
  return e && kp_dht_entry_is(kp_dht_table(n->dht), e, addr);
}

static bool has(kp_sim_dht_node_t *n, kp_sim_dht_node_t *other) {
  return has_addr(n, kp_sim_socket_addr(other->sock));
}

typedef struct {
  kp_addr_t from;
  unsigned count;
} pings_from_t;

/* Counts the PING requests one address sends. */
static void count_pings(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                        size_t len) {
  pings_from_t *p = ctx;
  kp_dht_msg_t m;
  (void)to;
  if (kp_addr_eq(from, &p->from) && !kp_dht_msg_decode(data, len, KP_AF_INET, &m) &&
      m.type == KP_DHT_REQUEST && m.command == KP_DHT_CMD_PING)
    p->count++;
}

void test_sim_full_bucket(void) {
  kp_sim_t *sim = kp_sim_new(61);
  kp_addr_t a_addr;
  kp_addr_parse(&a_addr, "10.1.0.1:4000");
  kp_sim_dht_node_t *a = member_at(sim, &a_addr, 2, 1);
  uint8_t a_id[KP_ID_LEN];
  kp_dht_id(a->dht, a_id);
  /* Three nodes in A's bucket 0 (first bit differs from A's id). */
  kp_sim_dht_node_t *b[3];
  unsigned found = 0;
  for (uint16_t port = 5000; found < 3; port += 2) {
    kp_addr_t addr;
    uint8_t id[KP_ID_LEN];
    kp_addr_set_v4(&addr, (10u << 24) | (2u << 16) | 1, port);
    kp_dht_id_from_addr(&addr, id);
    if (kp_dht_id_prefix_len(a_id, id) == 0) b[found++] = member_at(sim, &addr, 2, 2 + port);
  }
  kp_addr_t addrs[3];
  for (int i = 0; i < 3; i++) addrs[i] = *kp_sim_socket_addr(b[i]->sock);
  ping_quiet(b[0], a);
  kp_sim_run_until(sim, kp_sim_now(sim) + 2 * SEC);
  ping_quiet(b[1], a);
  kp_sim_run_until(sim, kp_sim_now(sim) + 2 * SEC);
  KP_CHECK(has(a, b[0]) && has(a, b[1]));

  /* A third, while both were heard from within five minutes: the bucket
   * is full of good nodes and the newcomer is dropped, without a ping. */
  pings_from_t pings = {a_addr, 0};
  kp_sim_set_tap(sim, count_pings, &pings);
  ping_quiet(b[2], a);
  kp_sim_run_until(sim, kp_sim_now(sim) + 5 * SEC);
  kp_sim_set_tap(sim, NULL, NULL);
  KP_CHECK(has(a, b[0]) && has(a, b[1]) && !has(a, b[2]));
  KP_CHECK_EQ(pings.count, 0);

  /* One of them dies. A, idle, pings the entry heard from longest ago every
   * 25 s (which keeps a NAT open, and checks on its table): the dead one
   * fails and goes, and the newcomer, once it has proved its address,
   * takes the slot. */
  int dead = 0;
  kp_sim_dht_node_free(b[dead]);
  kp_sim_run_until(sim, kp_sim_now(sim) + 2 * MINUTE);
  KP_CHECK(!has_addr(a, &addrs[dead]) && has_addr(a, &addrs[1 - dead]));
  ping_quiet(b[2], a);
  kp_sim_run_until(sim, kp_sim_now(sim) + 5 * SEC);
  KP_CHECK(has_addr(a, &addrs[1 - dead]) && has(a, b[2]));

  kp_sim_dht_node_free(a);
  for (int i = 0; i < 3; i++)
    if (i != dead) kp_sim_dht_node_free(b[i]);
  kp_sim_free(sim);
  free(a);
  for (int i = 0; i < 3; i++) free(b[i]);
}

/* ---- No amplification ---------------------------------------------------- */

#define MAX_SEEN 200000

typedef struct {
  kp_addr_t from, to;
  uint16_t tid;
  uint16_t len;
} seen_req_t;

typedef struct {
  seen_req_t *reqs;
  size_t count;
  size_t checked;
  size_t violations;
} amp_t;

static void amp_tap(void *ctx, const kp_addr_t *from, const kp_addr_t *to, const uint8_t *data,
                    size_t len) {
  amp_t *a = ctx;
  kp_dht_msg_t m;
  if (kp_dht_msg_decode(data, len, KP_AF_INET, &m)) return;
  if (m.type == KP_DHT_REQUEST) {
    if (m.has_token || a->count == MAX_SEEN) return; /* proven requests may get more */
    seen_req_t *r = &a->reqs[a->count++];
    r->from = *from;
    r->to = *to;
    r->tid = m.tid;
    r->len = (uint16_t)len;
    return;
  }
  kp_addr_t responder = *from;
  if (m.command == KP_DHT_CMD_PING_NAT) responder.port--; /* answered from the alt port */
  for (size_t i = a->count; i-- > 0;) {
    seen_req_t *r = &a->reqs[i];
    if (r->tid != m.tid || !kp_addr_eq(&r->to, &responder) || !kp_addr_eq(&r->from, to)) continue;
    a->checked++;
    if (len > r->len) a->violations++;
    break;
  }
}

typedef struct {
  size_t got;
  size_t len;
  size_t unknown_command; /* replies saying so, whatever order they came in */
  kp_dht_msg_t msg;
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
} raw_t;

static void raw_recv(void *ctx, kp_sim_socket_t *sock, const kp_addr_t *from, const uint8_t *data,
                     size_t len, uint64_t now) {
  raw_t *r = ctx;
  (void)sock, (void)from, (void)now;
  r->got++;
  r->len = len;
  memcpy(r->buf, data, len);
  kp_dht_msg_t m;
  if (!kp_dht_msg_decode(data, len, KP_AF_INET, &m) && m.error == KP_DHT_ERR_UNKNOWN_COMMAND)
    r->unknown_command++;
}

void test_sim_no_amplification(void) {
  kp_sim_t *sim = kp_sim_new(71);
  amp_t amp = {calloc(MAX_SEEN, sizeof(seen_req_t)), 0, 0, 0};
  kp_sim_set_tap(sim, amp_tap, &amp);
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, sim, 200, 2, &c, 71);
  join_all(&net, MINUTE);
  accuracy(&net, 20, 72, NULL);
  printf("%zu replies to unproven requests checked\n", amp.checked);
  KP_CHECK(amp.checked > 1000);
  KP_CHECK_EQ(amp.violations, 0);

  /* Hand-made minimal requests without padding: the replies shrink to fit,
   * dropping the closer nodes, then the token and id. */
  raw_t raw = {0};
  kp_addr_t me;
  kp_addr_parse(&me, "10.99.0.1:7000");
  kp_sim_socket_t *s = kp_sim_socket_new(sim, &me, NULL, raw_recv, &raw);
  uint8_t cmds[] = {KP_DHT_CMD_PING, KP_DHT_CMD_FIND_NODE, KP_DHT_CMD_PING_NAT, 33};
  for (size_t i = 0; i < sizeof(cmds); i++) {
    kp_dht_msg_t m = {0};
    m.type = KP_DHT_REQUEST;
    m.tid = (uint16_t)(900 + i);
    m.to = *kp_sim_socket_addr(net.nodes[1]->sock);
    m.command = cmds[i];
    m.has_target = cmds[i] == KP_DHT_CMD_FIND_NODE;
    uint8_t buf[KP_DHT_MAX_DATAGRAM];
    size_t len;
    KP_CHECK_OK(kp_dht_msg_encode(&m, buf, sizeof(buf), &len));
    raw.got = 0;
    kp_sim_send(s, &m.to, buf, len);
    kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
    KP_CHECK_EQ(raw.got, 1);
    KP_CHECK_MSG(raw.len <= len, "command %u: %zu-byte request got a %zu-byte reply", cmds[i], len,
                 raw.len);
    kp_dht_msg_t reply;
    KP_CHECK_OK(kp_dht_msg_decode(raw.buf, raw.len, KP_AF_INET, &reply));
    KP_CHECK_EQ(reply.tid, m.tid);
  }
  free(amp.reqs);
  kp_sim_dht_net_destroy(&net);
}

/* ---- DOWN_HINT, bootstrap, bad input ------------------------------------------ */

static size_t holders(kp_sim_dht_net_t *net, const kp_addr_t *x) {
  size_t n = 0;
  for (size_t i = 0; i < net->count; i++)
    if (net->nodes[i]->dht && has_addr(net->nodes[i], x)) n++;
  return n;
}

void test_sim_down_hint(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  c.refresh_ms = 24 * 60 * MINUTE; /* no background lookups to find the dead node for us */
  kp_sim_dht_net_init(&net, kp_sim_new(81), 60, 0, &c, 81);
  join_all(&net, MINUTE);
  kp_sim_dht_node_t *x = net.nodes[10];
  uint8_t xid[KP_ID_LEN];
  kp_dht_id(x->dht, xid);
  kp_addr_t xaddr = *kp_sim_socket_addr(x->sock);
  size_t before = holders(&net, &xaddr);
  KP_CHECK(before > 5);
  kp_sim_dht_node_free(x);

  /* A lookup of the dead node's id: whoever named it to us gets a hint and
   * re-checks it; the stale-entry pings (every 10 min) are nowhere near. */
  run_lookup(net.nodes[20], xid);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 10 * SEC);
  size_t after = holders(&net, &xaddr);
  printf("nodes holding the dead node: %zu before, %zu after one lookup\n", before, after);
  KP_CHECK(after < before);
  kp_sim_dht_net_destroy(&net);
}

void test_sim_bootstrap_retry(void) {
  kp_sim_t *sim = kp_sim_new(91);
  kp_dht_config_t c = sim_config();
  kp_addr_t boot;
  kp_sim_dht_addr(0, &boot);
  /* Nobody at the bootstrap address yet. */
  kp_addr_t addr;
  kp_addr_parse(&addr, "10.50.0.1:4000");
  kp_sim_dht_node_t *n = kp_sim_dht_node_new(sim, &addr, NULL, &c, 5);
  kp_dht_add_bootstrap(n->dht, &boot, kp_sim_now(sim));
  kp_sim_dht_node_kick(n);
  kp_sim_run_until(sim, 30 * SEC);
  uint64_t sent = n->datagrams_out;
  KP_CHECK(!kp_dht_is_joined(n->dht));
  /* Retried with back-off: more than one attempt, far fewer than one a second. */
  KP_CHECK_MSG(sent >= 6 && sent <= 20, "%" PRIu64 " datagrams in 30 s", sent);

  /* The network appears; the node finds it on a later retry. */
  kp_sim_dht_net_t net;
  kp_sim_dht_net_init(&net, sim, 10, 0, &c, 92);
  bool joined = false;
  for (int i = 0; i < 120 && !joined; i++) {
    kp_sim_run_until(sim, kp_sim_now(sim) + SEC);
    joined = kp_dht_is_joined(n->dht);
  }
  KP_CHECK(joined);
  kp_sim_dht_node_free(n);
  kp_sim_dht_net_destroy(&net);
  free(n);
}

void test_sim_bad_input_counted(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(101), 5, 0, &c, 101);
  join_all(&net, MINUTE);
  kp_sim_dht_node_t *target = net.nodes[2];
  raw_t raw = {0};
  kp_addr_t me;
  kp_addr_parse(&me, "10.99.0.2:7000");
  kp_sim_socket_t *s = kp_sim_socket_new(net.sim, &me, NULL, raw_recv, &raw);
  const kp_addr_t *to = kp_sim_socket_addr(target->sock);

  kp_dht_msg_t ping = {0};
  ping.type = KP_DHT_REQUEST;
  ping.to = *to;
  uint8_t good[KP_DHT_MAX_DATAGRAM], bad[1400];
  size_t glen;
  KP_CHECK_OK(kp_dht_msg_encode(&ping, good, sizeof(good), &glen));

  kp_dht_stats_t st0, st;
  kp_dht_stats(target->dht, &st0);
  kp_sim_send(s, to, good, glen - 1); /* truncated */
  memcpy(bad, good, glen);
  bad[1] = 9; /* version 9 */
  kp_sim_send(s, to, bad, glen);
  memset(bad, 0x9b, sizeof(bad)); /* oversize */
  kp_sim_send(s, to, bad, 1300);
  bad[0] = 0xc1; /* reserved msgpack byte */
  kp_sim_send(s, to, bad, 10);
  memcpy(bad, good, glen);
  bad[2] = 7; /* type 7 */
  kp_sim_send(s, to, bad, glen);
  /* A request claiming an id that is not the hash of its address. */
  kp_dht_msg_t liar = ping;
  liar.has_id = true;
  memset(liar.id, 0x5a, KP_ID_LEN);
  size_t llen;
  KP_CHECK_OK(kp_dht_msg_encode(&liar, bad, sizeof(bad), &llen));
  kp_sim_send(s, to, bad, llen);
  /* A command nobody registered. */
  kp_dht_msg_t unknown = ping;
  unknown.command = 50;
  KP_CHECK_OK(kp_dht_msg_encode(&unknown, bad, sizeof(bad), &llen));
  kp_sim_send(s, to, bad, llen);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + SEC);

  kp_dht_stats(target->dht, &st);
  KP_CHECK_EQ(st.drops_truncated - st0.drops_truncated, 1);
  KP_CHECK_EQ(st.drops_version - st0.drops_version, 1);
  KP_CHECK_EQ(st.drops_too_big - st0.drops_too_big, 1);
  KP_CHECK_EQ(st.drops_malformed - st0.drops_malformed, 1);
  KP_CHECK_EQ(st.drops_field - st0.drops_field, 1);
  KP_CHECK_EQ(st.drops_bad_id - st0.drops_bad_id, 1);
  KP_CHECK_EQ(st.drops_command - st0.drops_command, 1);
  /* The liar is answered as the non-member it is (and not put in a table);
   * the unknown command gets an error reply. */
  KP_CHECK_EQ(raw.got, 2);
  KP_CHECK_EQ(raw.unknown_command, 1);
  KP_CHECK(kp_dht_table(target->dht)->count < 5);
  for (uint32_t e = 0; e < kp_dht_table(target->dht)->count; e++)
    KP_CHECK(!kp_dht_entry_is(kp_dht_table(target->dht),
                              kp_dht_table_at(kp_dht_table(target->dht), e), &me));
  /* And the node still works. */
  uint8_t t[KP_ID_LEN] = {1};
  lookup_t l = run_lookup(net.nodes[1], t);
  KP_CHECK_OK(l.status);
  kp_sim_dht_net_destroy(&net);
}

typedef struct {
  kp_sim_dht_node_t *node;
  uint64_t before;
} requests_seen_t;

static bool request_arrived(void *ctx) {
  requests_seen_t *r = ctx;
  kp_dht_stats_t st;
  kp_dht_stats(r->node->dht, &st);
  return st.requests_in > r->before;
}

/* A request with a valid id but no token for its address puts nobody in a
 * table: the receiver pings the address first, and only an answer from
 * there (with the ping's random tid) proves it. A sender that cannot
 * receive at the address it claims (a spoofer) never gets in. */
void test_sim_requester_proves_address(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(121), 10, 0, &c, 121);
  join_all(&net, MINUTE);
  kp_sim_dht_node_t *target = net.nodes[3];
  const kp_addr_t *to = kp_sim_socket_addr(target->sock);

  /* The spoofer sends from S, whose answers it never sees. */
  raw_t deaf = {0};
  kp_addr_t spoofed;
  kp_addr_parse(&spoofed, "10.99.0.7:7000");
  kp_sim_socket_t *s = kp_sim_socket_new(net.sim, &spoofed, NULL, raw_recv, &deaf);
  kp_dht_msg_t ping = {0};
  ping.type = KP_DHT_REQUEST;
  ping.tid = 77;
  ping.to = *to;
  ping.has_id = true;
  kp_dht_id_from_addr(&spoofed, ping.id);
  uint8_t buf[KP_DHT_MAX_DATAGRAM];
  size_t len;
  KP_CHECK_OK(kp_dht_msg_encode_min(&ping, 200, buf, sizeof(buf), &len));
  kp_sim_send(s, to, buf, len);
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 10 * SEC);
  KP_CHECK(!has_addr(target, &spoofed));
  /* Its reply, and the pings that asked for proof: one and one retry. */
  KP_CHECK_MSG(deaf.got >= 2 && deaf.got <= 3, "%zu datagrams to the spoofed address", deaf.got);

  /* A real member at M is pinged the same way, answers, and is in. */
  kp_addr_t m_addr;
  kp_addr_parse(&m_addr, "10.99.0.8:7000");
  kp_sim_dht_node_t *m = member_at(net.sim, &m_addr, KP_DHT_K, 122);
  kp_dht_stats_t st;
  kp_dht_stats(target->dht, &st);
  requests_seen_t seen = {target, st.requests_in};
  ping_quiet(m, target);
  KP_CHECK(kp_sim_run_while(net.sim, kp_sim_now(net.sim) + SEC, request_arrived, &seen));
  KP_CHECK(!has(target, m)); /* not on the strength of its request alone */
  kp_sim_run_until(net.sim, kp_sim_now(net.sim) + 2 * SEC);
  KP_CHECK(has(target, m));
  kp_sim_dht_node_free(m);
  kp_sim_dht_net_destroy(&net);
  free(m);
}

/* ---- The extension point and the commit step ------------------------------- */

#define CMD_STORE 20

typedef struct {
  unsigned requests;
  unsigned with_valid_token;
  unsigned with_target;
} store_t;

static void on_store(void *ctx, kp_dht_t *dht, const kp_dht_request_t *req, uint64_t now) {
  store_t *s = ctx;
  s->requests++;
  s->with_valid_token += req->token_valid;
  s->with_target += req->msg->has_target;
  kp_dht_reply_to_t rt;
  kp_dht_reply_to_init(&rt, req);
  kp_dht_reply(dht, &rt, (const uint8_t *)"stored", 6, 0, now);
}

typedef struct {
  unsigned ok, failed, nodes;
  bool done;
} commit_result_t;

static void on_commit_node(void *arg, const kp_dht_result_t *node, int status,
                           const kp_dht_msg_t *reply) {
  commit_result_t *r = arg;
  (void)node;
  r->nodes++;
  if (status == 0) KP_CHECK(reply && reply->value_len == 6);
}

static void on_commit_done(void *arg, unsigned ok, unsigned failed, uint64_t now) {
  (void)now;

  commit_result_t *r = arg;
  r->ok = ok;
  r->failed = failed;
  r->done = true;
}

static bool commit_done(void *ctx) {
  return ((commit_result_t *)ctx)->done;
}

void test_sim_extension_commit(void) {
  kp_sim_dht_net_t net;
  kp_dht_config_t c = sim_config();
  kp_sim_dht_net_init(&net, kp_sim_new(111), 80, 0, &c, 111);
  join_all(&net, MINUTE);
  store_t stores[80] = {{0}};
  for (size_t i = 0; i < net.count; i++) {
    KP_CHECK_OK(kp_dht_register(net.nodes[i]->dht, CMD_STORE, on_store, &stores[i], 16));
    KP_CHECK_EQ(kp_dht_register(net.nodes[i]->dht, CMD_STORE, on_store, &stores[i], 16), KP_EEXIST);
  }
  KP_CHECK_EQ(kp_dht_register(net.nodes[0]->dht, 3, on_store, NULL, 0), KP_EINVAL);

  /* A query with our command: every visited node's handler answers, and
   * closer nodes still come back so the query converges. */
  uint8_t target[KP_ID_LEN];
  memset(target, 0x77, sizeof(target));
  kp_sim_dht_node_t *from = net.nodes[33];
  lookup_t l = run_query(from, target, CMD_STORE, (const uint8_t *)"v", 1);
  KP_CHECK_OK(l.status);
  KP_CHECK(exact(&net, &l, target, from));
  unsigned handled = 0, tokened = 0;
  for (size_t i = 0; i < net.count; i++)
    handled += stores[i].requests, tokened += stores[i].with_valid_token;
  KP_CHECK(handled >= KP_DHT_K);
  KP_CHECK_EQ(tokened, 0);

  /* Commit to the k closest with the tokens they gave: each handler sees a
   * valid token this time. */
  commit_result_t cr = {0};
  KP_CHECK_OK(kp_dht_commit(from->dht, l.results, l.count, CMD_STORE, target, (const uint8_t *)"v",
                            1, 0, on_commit_node, on_commit_done, &cr, kp_sim_now(net.sim), NULL));
  kp_sim_dht_node_kick(from);
  KP_CHECK(kp_sim_run_while(net.sim, kp_sim_now(net.sim) + MINUTE, commit_done, &cr));
  KP_CHECK_EQ(cr.ok, KP_DHT_K);
  KP_CHECK_EQ(cr.failed, 0);
  KP_CHECK_EQ(cr.nodes, KP_DHT_K);
  tokened = 0;
  for (size_t i = 0; i < net.count; i++) tokened += stores[i].with_valid_token;
  KP_CHECK_EQ(tokened, KP_DHT_K);
  kp_sim_dht_net_destroy(&net);
}
