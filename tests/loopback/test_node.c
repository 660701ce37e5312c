/* SPDX-License-Identifier: MIT */
/* node/: kp_node on real sockets. Testnets of hundreds of nodes on IPv4 and
 * IPv6 loopback, a node behind a real (iptables) firewall, error paths,
 * lifecycle, and the kadpunch program itself. */
#include <unistd.h>

#include "common/rng.h"
#include "dht/dht_id.h"
#include "node/node_internal.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"

/* An allocator that fails after a budget, to prove create is all or nothing. */
static long alloc_budget = -1;
static long alloc_live = 0;

static void *fail_malloc(size_t n) {
  if (alloc_budget == 0) return NULL;
  if (alloc_budget > 0) alloc_budget--;
  void *p = malloc(n);
  if (p) alloc_live++;
  return p;
}
static void *fail_realloc(void *p, size_t n) {
  if (!p) return fail_malloc(n);
  if (alloc_budget == 0) return NULL;
  if (alloc_budget > 0) alloc_budget--;
  return realloc(p, n);
}
static void *fail_calloc(size_t c, size_t n) {
  if (alloc_budget == 0) return NULL;
  if (alloc_budget > 0) alloc_budget--;
  void *p = calloc(c, n);
  if (p) alloc_live++;
  return p;
}
static void fail_free(void *p) {
  if (p) alloc_live--;
  free(p);
}

static void test_alloc_failure_create(void) {
  KP_CHECK_EQ(kp_replace_allocator(NULL, realloc, calloc, free), UV_EINVAL);
  KP_CHECK_OK(kp_replace_allocator(fail_malloc, fail_realloc, fail_calloc, fail_free));
  /* For every allocation count, creating a node either succeeds or fails
   * with UV_ENOMEM leaving nothing behind: no memory, no open handle. */
  bool succeeded = false;
  for (long budget = 0; budget < 50 && !succeeded; budget++) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    kp_node_options_t o;
    kp_node_options_init(&o);
    o.bind = "127.0.0.1:0";
    kp_node_t *node = (kp_node_t *)1;
    alloc_budget = budget;
    int err = kp_node_create(&loop, &o, &node);
    alloc_budget = -1;
    if (err) {
      KP_CHECK_EQ(err, UV_ENOMEM);
      KP_CHECK(node == NULL);
    } else {
      succeeded = true;
      kp_node_close(node, NULL);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    KP_CHECK_EQ(uv_loop_close(&loop), 0);
    KP_CHECK_MSG(alloc_live == 0, "budget %ld: %ld allocations leaked", budget, alloc_live);
  }
  KP_CHECK(succeeded);
  kp_replace_allocator(malloc, realloc, calloc, free);
}

static void check_loop_closes(uv_loop_t *loop) {
  kp_test_check_loop_closes(loop);
}

static void test_create_errors(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_node_options_t o;
  kp_node_t *node;
  static const char *bad_binds[] = {"nope", "1.2.3.4:99999", "", "[::1"};
  for (size_t i = 0; i < 4; i++) {
    kp_node_options_init(&o);
    o.bind = bad_binds[i];
    node = (kp_node_t *)1;
    KP_CHECK_ERR(kp_node_create(&loop, &o, &node), KP_EBADADDR);
    KP_CHECK(node == NULL);
  }
  kp_node_options_init(&o);
  o.request_timeout_ms = 0;
  KP_CHECK_ERR(kp_node_create(&loop, &o, &node), KP_ECONFIG);
  kp_node_options_init(&o);
  o.mode = (kp_node_mode_t)7;
  KP_CHECK_ERR(kp_node_create(&loop, &o, &node), KP_ECONFIG);

  /* A port in use. */
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  kp_node_t *first;
  KP_CHECK_OK(kp_node_create(&loop, &o, &first));
  kp_addr_t taken;
  char text[KP_ADDR_STRLEN];
  kp_node_local_addr(first, &taken);
  o.bind = kp_addr_format(&taken, text, sizeof(text));
  KP_CHECK_ERR(kp_node_create(&loop, &o, &node), UV_EADDRINUSE);

  /* Bootstrap entries that are no address at all, or of the other family. */
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  const char *bad_boot[] = {"[::1]:5"};
  o.bootstrap = bad_boot;
  o.bootstrap_count = 1;
  KP_CHECK_ERR(kp_node_create(&loop, &o, &node), KP_EBADADDR);
  const char *no_port[] = {"10.0.0.1"};
  KP_CHECK_ERR(kp_node_bootstrap(first, no_port, 1), KP_EBADADDR);
  const char *junk[] = {"no-port-here"};
  KP_CHECK_ERR(kp_node_bootstrap(first, junk, 1), KP_EBADADDR);

  kp_node_close(first, NULL);
  check_loop_closes(&loop);
}

typedef struct {
  int find_calls;
  int find_status;
  int close_calls;
  int order; /* 1 if the find callback came before the close callback */
} lifecycle_t;

static void on_find(kp_node_t *node, int status, const kp_node_peer_t *peers, size_t count,
                    const kp_node_query_stats_t *stats, void *arg) {
  lifecycle_t *l = arg;
  (void)node, (void)peers, (void)count, (void)stats;
  l->find_calls++;
  l->find_status = status;
  if (l->close_calls == 0) l->order = 1;
}

static void on_close(kp_node_t *node) {
  lifecycle_t *l = kp_node_get_data(node);
  l->close_calls++;
}

static void test_close_cancels(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  const char *boot[] = {"127.0.0.1:9", "localhost:9"}; /* nobody there */
  o.bootstrap = boot;
  o.bootstrap_count = 2;
  kp_node_t *node;
  KP_CHECK_OK(kp_node_create(&loop, &o, &node));
  lifecycle_t l = {0};
  kp_node_set_data(node, &l);
  uint8_t target[KP_ID_LEN] = {0};
  KP_CHECK_OK(kp_node_find_node(node, target, on_find, &l));
  uv_run(&loop, UV_RUN_NOWAIT);
  KP_CHECK_EQ(l.find_calls, 0); /* never from inside the call */
  kp_node_close(node, on_close);
  kp_node_close(node, on_close); /* a second close is ignored */
  KP_CHECK_EQ(l.find_calls, 0);
  KP_CHECK_ERR(kp_node_find_node(node, target, on_find, &l), UV_EINVAL);
  check_loop_closes(&loop);
  KP_CHECK_EQ(l.find_calls, 1);
  KP_CHECK_EQ(l.find_status, UV_ECANCELED);
  KP_CHECK_EQ(l.close_calls, 1);
  KP_CHECK_EQ(l.order, 1);
}

/* A node that could never use a mapping does not ask for one: bound to
 * loopback, or bound to every address with only loopback bootstrap nodes
 * (a local testnet must not talk to the host's gateway), or over IPv6. */
static void test_port_mapping_not_asked(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const char *binds[] = {"127.0.0.1:0", "0.0.0.0:0", "[::]:0"};
  const char *boot4[] = {"127.0.0.1:9", "localhost:9"}, *boot6[] = {"[::1]:9"};
  for (size_t i = 0; i < 3; i++) {
    kp_node_options_t o;
    kp_node_options_init(&o);
    KP_CHECK(o.port_mapping); /* on by default */
    o.bind = binds[i];
    o.bootstrap = i == 2 ? boot6 : boot4;
    o.bootstrap_count = i == 2 ? 1 : 2;
    kp_node_t *node;
    KP_CHECK_OK(kp_node_create(&loop, &o, &node));
    kp_port_mapping_t m;
    kp_node_port_mapping(node, &m);
    KP_CHECK_MSG(m.state == KP_PORT_MAPPING_OFF && !node->portmap && !node->portmap_hold,
                 "bound to %s: state %d", binds[i], (int)m.state);
    kp_node_close(node, NULL);
  }
  check_loop_closes(&loop);
}

/* The datagrams a node holds for the gateway's first answer are bounded:
 * a flood of 1000 keeps 64 and counts the rest as dropped, and a node that
 * closes while holding frees them. */
static void test_port_mapping_hold_bounded(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = "127.0.0.1:0";
  kp_node_t *node;
  KP_CHECK_OK(kp_node_create(&loop, &o, &node));
  node->portmap_hold = true; /* as kp__node_portmap_start sets it when it asks */
  kp_addr_t to;
  KP_CHECK_OK(kp_addr_parse(&to, "127.0.0.1:9"));
  uint8_t data[1400] = {0x11};
  uint64_t drops = node->drops_other;
  for (int i = 0; i < 1000; i++)
    KP_CHECK(kp__node_portmap_hold(node, KP_DHT_SOCK_MAIN, &to, data, sizeof(data)));
  KP_CHECK_EQ(node->held_count, 64u);
  KP_CHECK_EQ(node->drops_other - drops, 936u);
  kp_node_close(node, NULL);
  KP_CHECK(!node->portmap_hold);
  check_loop_closes(&loop);
}

static unsigned exact_lookups(kp_testnet_t *tn, unsigned lookups, uint64_t seed,
                              double *mean_requests) {
  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, seed);
  kp_rng_t rng = kp_rng_seeded(&st);
  unsigned ok = 0, requests = 0;
  for (unsigned i = 0; i < lookups; i++) {
    kp_node_t *from = tn->nodes[kp_rng_below(&rng, (uint32_t)tn->count)];
    uint8_t target[KP_ID_LEN], want[KP_DHT_K][KP_ID_LEN];
    kp_node_peer_t got[KP_DHT_K];
    size_t count;
    kp_node_query_stats_t qs;
    kp_rng_fill(&rng, target, sizeof(target));
    int err = kp_testnet_find(tn, from, target, got, &count, &qs, 10000);
    size_t n = kp_testnet_true_closest(tn, target, from, want);
    bool same = !err && count == n;
    for (size_t j = 0; same && j < n; j++) same = !memcmp(got[j].id, want[j], KP_ID_LEN);
    ok += same;
    requests += qs.requests;
  }
  if (mean_requests) *mean_requests = (double)requests / lookups;
  return ok;
}

static void testnet_accuracy(const char *host) {
  kp_test_raise_fd_limit(4096);
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = 200;
  o.host = host;
  o.seed = 200;
  kp_testnet_t tn;
  int err = kp_testnet_create(&loop, &o, &tn);
  if (err == UV_EADDRNOTAVAIL || err == UV_EAFNOSUPPORT) {
    check_loop_closes(&loop);
    kp_test_skip("this machine has no such loopback address");
  }
  KP_CHECK_OK(err);
  KP_CHECK_MSG(kp_testnet_wait_joined(&tn, 30000), "%zu of 200 joined", kp_testnet_joined(&tn));
  double requests;
  unsigned ok = exact_lookups(&tn, 50, 201, &requests);
  printf("%s: %u/50 lookups returned the true 20 closest; %.1f requests each\n", host, ok,
         requests);
  KP_CHECK(ok >= 50); /* >= 99% of 50 */
  kp_testnet_destroy(&tn);
  check_loop_closes(&loop);
}

static void test_testnet_ipv4(void) {
  testnet_accuracy("127.0.0.1");
}

static void test_testnet_ipv6(void) {
  testnet_accuracy("::1");
}

static bool node_is_member(void *ctx) {
  return kp_node_is_member(ctx);
}

static bool natcheck_failed_twice(void *ctx) {
  return kp_dht_nat(kp__node_dht(ctx))->reach_fails >= 2;
}

static void test_firewalled_stays_ephemeral(void) {
  /* A private network namespace: the iptables rule below cannot touch the
   * host, and vanishes with this process. */
  kp_test_enter_netns();
  if (kp_test_sh("iptables -L INPUT -n >/dev/null 2>&1") != 0) kp_test_skip("iptables not usable");
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = 30;
  kp_testnet_t tn;
  KP_CHECK_OK(kp_testnet_create(&loop, &o, &tn));
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));

  /* Two newcomers; one behind a stateful firewall that drops inbound UDP
   * it did not ask for (exactly what a PING_NAT answer from a second port
   * is). */
  kp_node_t *walled, *control;
  KP_CHECK_OK(kp_testnet_add(&tn, KP_NODE_AUTO, 0, &walled));
  kp_addr_t a;
  kp_node_local_addr(walled, &a);
  KP_CHECK_EQ(
      kp_test_sh("iptables -A INPUT -p udp --dport %u -m conntrack --ctstate NEW -j DROP", a.port),
      0);
  KP_CHECK_OK(kp_testnet_add(&tn, KP_NODE_AUTO, 0, &control));
  KP_CHECK(kp_testnet_run_until(&loop, node_is_member, control, 10000));
  /* Two PING_NAT checks (each up to three tries of a second) both fail. */
  KP_CHECK(kp_testnet_run_until(&loop, natcheck_failed_twice, walled, 20000));
  KP_CHECK(!kp_node_is_member(walled));
  kp_node_stats_t st;
  kp_node_stats(walled, &st);
  KP_CHECK(st.timeouts >= 2);
  /* Its queries still work: it is a client, not a member. */
  uint8_t target[KP_ID_LEN] = {9};
  size_t count;
  KP_CHECK_OK(kp_testnet_find(&tn, walled, target, NULL, &count, NULL, 10000));
  KP_CHECK_EQ(count, KP_DHT_K);
  kp_testnet_destroy(&tn);
  check_loop_closes(&loop);
}

static void test_bootstrap_by_name(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = 20;
  kp_testnet_t tn;
  KP_CHECK_OK(kp_testnet_create(&loop, &o, &tn));
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));
  kp_addr_t boot;
  kp_node_local_addr(tn.nodes[0], &boot);
  char name[64];
  snprintf(name, sizeof(name), "localhost:%u", boot.port);
  const char *list[] = {name};
  kp_node_options_t no;
  kp_node_options_init(&no);
  no.bind = "127.0.0.1:0";
  no.member_stable_ms = 0;
  no.bootstrap = list;
  no.bootstrap_count = 1;
  kp_node_t *n;
  KP_CHECK_OK(kp_node_create(&loop, &no, &n));
  KP_CHECK(kp_testnet_run_until(&loop, node_is_member, n, 10000));
  kp_node_stats_t st;
  kp_node_stats(n, &st);
  KP_CHECK(st.table_size >= 10);
  KP_CHECK(st.requests_out > 0 && st.responses_in > 0);
  kp_node_close(n, NULL);
  kp_testnet_destroy(&tn);
  check_loop_closes(&loop);
}

/* ---- The program ------------------------------------------------------------ */

static void test_cli_dht_node(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const char *argv[] = {KP_BINARY, "dht-node", "--bind", "127.0.0.1:0", "--member", NULL};
  kp_test_child_t *c = kp_test_spawn(&loop, argv);
  KP_CHECK(kp_test_child_wait_output(&loop, c, "table", 10000));
  char out[256];
  KP_CHECK_EQ(kp_test_child_stop(&loop, c, 10000), 0);
  (void)out;
  check_loop_closes(&loop);
}

/* --bind twice, one of each family: a dual-stack node, on both. */
static void test_cli_dht_node_dual(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const char *argv[] = {KP_BINARY, "dht-node", "--bind",   "127.0.0.1:0",
                        "--bind",  "[::1]:0",  "--member", NULL};
  kp_test_child_t *c = kp_test_spawn(&loop, argv);
  KP_CHECK(kp_test_child_wait_output(&loop, c, "table", 10000));
  const char *out = kp_test_child_stdout(c);
  KP_CHECK_MSG(strstr(out, "dht node on 127.0.0.1:") && strstr(out, " and [::1]:"), "%s", out);
  KP_CHECK_EQ(kp_test_child_stop(&loop, c, 10000), 0);
  check_loop_closes(&loop);
}

static void test_cli_errors(void) {
  char out[8192];
  static const struct {
    const char *args[6];
    int rc;
    const char *says;
  } cases[] = {
      {{"dht-node", "--bind", "nonsense"}, 2, "cannot start on nonsense: invalid address"},
      {{"dht-node", "--stable-ms", "soon"}, 2, "--stable-ms wants milliseconds"},
      {{"dht-node", "--log", "loud"}, 2, "unknown log level"},
      {{"dht-node", "extra"}, 2, "unexpected argument"},
      {{"dht-node", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"}, 2, "invalid configuration"},
      {{"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {{"demo", "--nodes", "1"}, 2, "--nodes wants"},
      {{"dht-node", "--help"}, 0, "exit codes"},
      {{"version"}, 0, "kadpunch 0."},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *argv[8] = {KP_BINARY};
    for (int j = 0; j < 6 && cases[i].args[j]; j++) argv[j + 1] = cases[i].args[j];
    int rc = kp_test_run_cli(NULL, argv, out, sizeof(out), 20000);
    KP_CHECK_MSG(rc == cases[i].rc, "%s: exit %d, want %d:\n%s", cases[i].args[0], rc, cases[i].rc,
                 out);
    KP_CHECK_MSG(strstr(out, cases[i].says), "%s: output lacks '%s':\n%s", cases[i].args[0],
                 cases[i].says, out);
  }
}

static void test_cli_demo(void) {
  char out[32768];
  const char *argv[] = {KP_BINARY, "demo", "--nodes", "60", "--lookups", "5", NULL};
  int rc = kp_test_run_cli(NULL, argv, out, sizeof(out), 60000);
  KP_CHECK_MSG(rc == 0, "exit %d:\n%s", rc, out);
  KP_CHECK(strstr(out, "5/5 lookups returned exactly the true 20 closest nodes"));
  KP_CHECK_MSG(strstr(out, "5/5 clients connected by key and got their 1 MiB back byte-exact"),
               "%s", out);
  /* The service by key: direct and relayed downloads, byte-exact. */
  KP_CHECK_MSG(strstr(out, "both downloads arrived byte-exact") &&
                   strstr(out, "  relayed   relayed"),
               "%s", out);
}

static const kp_test_case_t cases[] = {
    KP_CASE(alloc_failure_create, unit, 30),
    KP_CASE(create_errors, loopback, 20),
    KP_CASE(close_cancels, loopback, 20),
    KP_CASE(port_mapping_not_asked, loopback, 20),
    KP_CASE(port_mapping_hold_bounded, loopback, 20),
    KP_CASE(testnet_ipv4, loopback, 120),
    KP_CASE(testnet_ipv6, loopback, 120),
    KP_CASE(dual_stack_testnet, loopback, 180),
    KP_CASE(family_failover, loopback, 120),
    KP_CASE(family_flap, loopback, 120),
    KP_CASE(family_returns, loopback, 120),
    KP_CASE(firewalled_stays_ephemeral, loopback, 60),
    KP_CASE(bootstrap_by_name, loopback, 60),
    KP_CASE(cli_dht_node, loopback, 30),
    KP_CASE(cli_dht_node_dual, loopback, 30),
    KP_CASE(cli_errors, loopback, 30),
    KP_CASE(cli_demo, loopback, 60),
    KP_CASE(swarm_survives_churn, loopback, 300),
    KP_CASE(cli_keygen, loopback, 30),
    KP_CASE(cli_swarm_commands, loopback, 120),
    KP_CASE(cli_serve_connect, loopback, 120),
    KP_CASE(handshake_flood, loopback, 120),
    KP_CASE(connection_caps, loopback, 60),
    KP_CASE(rx_budget_bounded, loopback, 60),
};

KP_TEST_MAIN(cases)
