/* SPDX-License-Identifier: MIT */
/* kadpunch-inspect against loopback testnets: the crawl finds every node,
 * the network commands report what the testnet really is, their JSON has
 * the shapes docs/inspect.md documents, and the command line fails the way
 * its --help says. The control socket's cases are in
 * test_inspect_control.c. */
#include <string.h>

#include "common/alloc.h"
#include "dht/dht_id.h"
#include "node/node_internal.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/inspect_run.h"
#include "tests/loopback/inspect_shapes.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

static char *hex(const uint8_t *p, size_t n, char *buf) {
  return kp_dht_id_hex(p, n, buf);
}

/* Runs kadpunch-inspect with args and expects exit 0 and JSON. */
static kp_json_t *run_json(uv_loop_t *loop, const char *const *args, kp_it_result_t *r) {
  const char *argv[24] = {KP_INSPECT};
  for (size_t i = 0; args[i]; i++) argv[i + 1] = args[i];
  kp_it_run(loop, argv, 60000, 0, r);
  KP_CHECK_MSG(r->status == 0, "%s: exit %d\nstdout: %s\nstderr: %s", args[0], r->status, r->out,
               r->err);
  return kp_it_json(r->out, r->out_len);
}

/* Runs it for its text and expects exit 0 and `says` in it. */
static void run_text(uv_loop_t *loop, const char *const *args, const char *says) {
  const char *argv[24] = {KP_INSPECT};
  for (size_t i = 0; args[i]; i++) argv[i + 1] = args[i];
  kp_it_result_t r;
  kp_it_run(loop, argv, 60000, 0, &r);
  KP_CHECK_MSG(r.status == 0 && strstr(r.out, says), "%s: exit %d, want 0 and '%s'\n%s\n%s",
               args[0], r.status, says, r.out, r.err);
  kp_it_result_free(&r);
}

/* ---- crawl ------------------------------------------------------------------ */

static const kp_json_t *node_by_addr(const kp_json_t *nodes, const char *addr) {
  for (const kp_json_t *n = nodes->child; n; n = n->next)
    if (!strcmp(kp_json_get_str(n, "addr"), addr)) return n;
  return NULL;
}

static void check_crawl(const kp_json_t *j, const kp_testnet_t *tn) {
  kp_it_shape(j, KP_IT_CRAWL, "crawl");
  kp_it_shape(kp_json_get(j, "rtt_ms"), KP_IT_CRAWL_RTT, "crawl.rtt_ms");
  kp_it_shape(kp_json_get(j, "coverage"), KP_IT_CRAWL_COVERAGE, "crawl.coverage");
  const kp_json_t *nodes = kp_json_get(j, "nodes");
  for (const kp_json_t *n = nodes->child; n; n = n->next) kp_it_shape(n, KP_IT_CRAWL_NODE, "node");
  KP_CHECK(kp_json_get_bool(j, "complete", false));
  KP_CHECK_EQ(kp_json_get_num(j, "found", 0), tn->count);
  KP_CHECK_EQ(kp_json_get_num(j, "answered", 0), tn->count);
  KP_CHECK_EQ(kp_json_get_num(j, "members", 0), tn->count);
  KP_CHECK_EQ(nodes->len, tn->count);
  /* Every node of the testnet, by address, with its id. */
  for (size_t i = 0; i < tn->count; i++) {
    char addr[KP_ADDR_STRLEN], id[2 * KP_ID_LEN + 1];
    kp_addr_t a;
    kp_node_local_addr(tn->nodes[i], &a);
    const kp_json_t *n = node_by_addr(nodes, kp_addr_format(&a, addr, sizeof(addr)));
    KP_CHECK_MSG(n, "the crawl missed node %zu (%s)", i, addr);
    KP_CHECK(!strcmp(kp_json_get_str(n, "state"), "answered"));
    KP_CHECK(kp_json_get_bool(n, "member", false));
    KP_CHECK(!strcmp(kp_json_get_str(n, "id"), hex(kp_node_id(tn->nodes[i]), KP_ID_LEN, id)));
  }
}

static void test_crawl_finds_every_node(void) {
  kp_test_raise_fd_limit(4096);
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  uint64_t t0 = kp_test_now_ms();
  kp_test_testnet_up(&loop, 300, 40000, &tn);
  printf("300 nodes joined in %llu ms\n", (unsigned long long)(kp_test_now_ms() - t0));
  char svg_path[128];
  snprintf(svg_path, sizeof(svg_path), "%s/dht.svg", kp_it_dir());
  const char *args[] = {"crawl", "--bootstrap", tn.bootstrap, "--rate", "2000",   "--parallel",
                        "100",   "--json",      "--quiet",    "--svg",  svg_path, NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(&loop, args, &r);
  check_crawl(j, &tn);
  printf("crawl of %zu nodes: %.0f ms, %.0f requests (%.0f datagrams), rtt p50 %.3f p99 %.3f ms, "
         "%.0f/%.0f sectors\n",
         tn.count, kp_json_get_num(j, "duration_ms", 0), kp_json_get_num(j, "requests", 0),
         kp_json_get_num(j, "datagrams", 0), kp_json_get_num(kp_json_get(j, "rtt_ms"), "p50", 0),
         kp_json_get_num(kp_json_get(j, "rtt_ms"), "p99", 0),
         kp_json_get_num(kp_json_get(j, "coverage"), "covered", 0),
         kp_json_get_num(kp_json_get(j, "coverage"), "sectors", 0));
  /* The drawing: well-formed, one mark per node found. */
  char *svg = kp_it_read_file(svg_path, NULL);
  KP_CHECK(svg != NULL);
  KP_CHECK_EQ(kp_it_svg_nodes(svg), tn.count);
  free(svg);
  kp_json_free(j);
  kp_it_result_free(&r);
  /* The same as tables; bounded by requests, it stops early and says so. */
  const char *text[] = {"crawl", "--bootstrap", tn.bootstrap, "--rate", "2000", "--quiet", NULL};
  run_text(&loop, text, "300 found: 300 answered (300 members");
  const char *bounded[] = {"crawl", "--bootstrap", tn.bootstrap, "--max-requests",
                           "50",    "--json",      "--quiet",    NULL};
  j = run_json(&loop, bounded, &r);
  KP_CHECK(!kp_json_get_bool(j, "complete", true));
  KP_CHECK(!strcmp(kp_json_get_str(j, "stopped_by"), "max-requests"));
  KP_CHECK(kp_json_get_num(j, "requests", 0) <= 50);
  kp_json_free(j);
  kp_it_result_free(&r);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* ---- ping, find-node, lookup, nat ------------------------------------------------ */

static void check_ping(uv_loop_t *loop, const kp_testnet_t *tn) {
  char addr[KP_ADDR_STRLEN], id[2 * KP_ID_LEN + 1];
  kp_addr_t a;
  kp_node_local_addr(tn->nodes[5], &a);
  kp_addr_format(&a, addr, sizeof(addr));
  const char *args[] = {"ping", addr, "--count", "2", "--interval", "10", "--json", NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(loop, args, &r);
  kp_it_shape(j, KP_IT_PING, "ping");
  kp_it_shape(kp_json_get(j, "rtt_ms"), KP_IT_PING_RTT, "ping.rtt_ms");
  for (const kp_json_t *p = kp_json_get(j, "pings")->child; p; p = p->next)
    kp_it_shape(p, KP_IT_PING_EACH, "ping.pings[]");
  KP_CHECK_EQ(kp_json_get_num(j, "replies", 0), 2);
  KP_CHECK(kp_json_get_bool(j, "member", false));
  KP_CHECK(!strcmp(kp_json_get_str(j, "id"), hex(kp_node_id(tn->nodes[5]), KP_ID_LEN, id)));
  KP_CHECK(!strncmp(kp_json_get_str(j, "seen_as"), "127.0.0.1:", 10));
  kp_json_free(j);
  kp_it_result_free(&r);
  const char *text[] = {"ping", addr, "--count", "1", NULL};
  run_text(loop, text, "a member: the id matches its address");
}

static void check_find(uv_loop_t *loop, kp_testnet_t *tn) {
  char target[2 * KP_ID_LEN + 1], want_hex[2 * KP_ID_LEN + 1];
  hex(kp_node_id(tn->nodes[7]), KP_ID_LEN, target);
  const char *args[] = {"find-node", target, "--bootstrap", tn->bootstrap, "--json", NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(loop, args, &r);
  kp_it_shape(j, KP_IT_FIND, "find-node");
  KP_CHECK(!strcmp(kp_json_get_str(j, "kind"), "id"));
  /* The true 20 closest members, in order (the inspector is none). */
  uint8_t want[KP_DHT_K][KP_ID_LEN];
  size_t n = kp_testnet_true_closest(tn, kp_node_id(tn->nodes[7]), NULL, want);
  const kp_json_t *nodes = kp_json_get(j, "nodes");
  KP_CHECK_EQ(nodes->len, n);
  size_t i = 0;
  for (const kp_json_t *node = nodes->child; node; node = node->next, i++) {
    kp_it_shape(node, KP_IT_FIND_NODE, "find-node.nodes[]");
    KP_CHECK(!strcmp(kp_json_get_str(node, "id"), hex(want[i], KP_ID_LEN, want_hex)));
  }
  KP_CHECK_EQ(kp_json_get_num(nodes->child, "shared_bits", 0), 256);
  kp_json_free(j);
  kp_it_result_free(&r);
  const char *text[] = {"find-node", "some topic", "--bootstrap", tn->bootstrap, NULL};
  run_text(loop, text, "20 closest in");
}

static void check_lookup(uv_loop_t *loop, kp_testnet_t *tn) {
  char key[KP_KEY_TEXT_LEN + 1];
  uint8_t target[KP_ID_LEN];
  kp_target_from_topic("inspect-room", 12, target);
  kp_announce_t *a = kp_it_announce(tn, tn->nodes[3], target, "hello", key);
  const char *args[] = {"lookup", "inspect-room", "--bootstrap", tn->bootstrap, "--json", NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(loop, args, &r);
  kp_it_shape(j, KP_IT_LOOKUP, "lookup");
  kp_it_shape(kp_json_get(j, "signatures"), KP_IT_LOOKUP_SIGNATURES, "lookup.signatures");
  const kp_json_t *recs = kp_json_get(j, "records");
  KP_CHECK_EQ(recs->len, 1);
  kp_it_shape(recs->child, KP_IT_LOOKUP_RECORD, "lookup.records[]");
  KP_CHECK(!strcmp(kp_json_get_str(recs->child, "public_key"), key));
  KP_CHECK(!strcmp(kp_json_get_str(recs->child, "data"), "hello"));
  KP_CHECK(kp_json_get(recs->child, "relays")->len > 0);
  KP_CHECK(kp_json_get_num(kp_json_get(j, "signatures"), "valid", 0) >= 1);
  KP_CHECK_EQ(kp_json_get_num(kp_json_get(j, "signatures"), "rejected", 1), 0);
  kp_json_free(j);
  kp_it_result_free(&r);
  const char *text[] = {"lookup", key, "--bootstrap", tn->bootstrap, NULL};
  run_text(loop, text, "0 records; signatures checked");
  kp_announce_stop(a, false);
}

static void check_nat(uv_loop_t *loop, const kp_testnet_t *tn) {
  const char *args[] = {"nat",         "--bootstrap", tn->bootstrap, "--bind",
                        "127.0.0.1:0", "--json",      NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(loop, args, &r);
  kp_it_shape(j, KP_IT_NAT, "nat");
  const kp_json_t *v4 = kp_json_get(j, "ipv4"), *v6 = kp_json_get(j, "ipv6");
  kp_it_shape(v4, KP_IT_NAT_FAMILY, "nat.ipv4");
  kp_it_shape(kp_json_get(v4, "unsolicited"), KP_IT_NAT_UNSOLICITED, "nat.ipv4.unsolicited");
  /* A testnet on loopback: the inspector never asks the host's gateway. */
  kp_it_shape(kp_json_get(v4, "port_mapping"), KP_IT_NAT_PORT_MAPPING, "nat.ipv4.port_mapping");
  const char *pm_state = kp_json_get_str(kp_json_get(v4, "port_mapping"), "state");
  KP_CHECK(pm_state && !strcmp(pm_state, "off"));
  for (const kp_json_t *s = kp_json_get(v4, "samples")->child; s; s = s->next)
    kp_it_shape(s, KP_IT_NAT_SAMPLE, "nat.ipv4.samples[]");
  kp_it_shape(v6, KP_IT_NAT_V6, "nat.ipv6");
  /* Loopback: our own address, the same towards everyone, and open. */
  KP_CHECK(kp_json_get_bool(v4, "answered", false));
  KP_CHECK(!kp_json_get_bool(v4, "behind_nat", true));
  KP_CHECK(!strcmp(kp_json_get_str(v4, "mapping"), "endpoint-independent"));
  KP_CHECK(!strcmp(kp_json_get_str(v4, "nat_type"), "open"));
  KP_CHECK(kp_json_get_num(kp_json_get(v4, "unsolicited"), "reached", 0) >= 1);
  KP_CHECK(kp_json_get(v4, "samples")->len >= 2);
  kp_json_free(j);
  kp_it_result_free(&r);
  const char *text[] = {"nat", "--bootstrap", tn->bootstrap, NULL};
  run_text(loop, text, "this machine's own address: no NAT");
}

static void test_net_commands(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 40, 20000, &tn);
  check_ping(&loop, &tn);
  check_find(&loop, &tn);
  check_lookup(&loop, &tn);
  check_nat(&loop, &tn);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* ---- The command line ------------------------------------------------------------ */

static void test_usage(void) {
  static const struct {
    const char *args[6];
    int rc;
    const char *says;
  } cases[] = {
      {{"--help"}, 0, "exit codes"},
      {{"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {{"ping"}, 2, "give the node to ping"},
      {{"ping", "nonsense"}, 2, "is not HOST:PORT"},
      {{"ping", "127.0.0.1:9", "--count", "0"}, 2, "--count wants"},
      {{"find-node", "x"}, 2, "no bootstrap node"},
      {{"find-node"}, 2, "a TARGET is required"},
      {{"lookup", "x", "--log", "loud"}, 2, "unknown log level"},
      {{"nat", "extra"}, 2, "unexpected argument"},
      {{"crawl"}, 2, "--bootstrap HOST:PORT"},
      {{"crawl", "--bootstrap", "127.0.0.1:9", "--rate", "0"}, 2, "--rate wants"},
      {{"table", "--bogus"}, 2, "unknown option"},
      {{"version"}, 0, "kadpunch-inspect 0."},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *argv[8] = {KP_INSPECT};
    for (int k = 0; k < 6 && cases[i].args[k]; k++) argv[k + 1] = cases[i].args[k];
    uv_loop_t loop;
    uv_loop_init(&loop);
    kp_it_result_t r;
    kp_it_run(&loop, argv, 20000, 0, &r);
    KP_CHECK_MSG(r.status == cases[i].rc &&
                     (strstr(r.out, cases[i].says) || strstr(r.err, cases[i].says)),
                 "%s: exit %d (want %d), output lacks '%s':\n%s%s", cases[i].args[0], r.status,
                 cases[i].rc, cases[i].says, r.out, r.err);
    kp_it_result_free(&r);
    kp_test_check_loop_closes(&loop);
  }
  /* Every subcommand documents its examples and exit codes. */
  static const char *const subcommands[] = {"ping",  "find-node", "lookup",  "nat",
                                            "crawl", "table",     "records", "stats"};
  for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
    const char *argv[] = {KP_INSPECT, subcommands[i], "--help", NULL};
    uv_loop_t loop;
    uv_loop_init(&loop);
    kp_it_result_t r;
    kp_it_run(&loop, argv, 20000, 0, &r);
    KP_CHECK_MSG(r.status == 0 && strstr(r.out, "examples:") && strstr(r.out, "exit codes:"),
                 "%s --help: exit %d\n%s", subcommands[i], r.status, r.out);
    kp_it_result_free(&r);
    kp_test_check_loop_closes(&loop);
  }
}

void test_control_socket(void);
void test_control_errors(void);
void test_control_in_dht_node(void);
void test_json_codec(void);

/* How many times needle occurs in hay. */
static size_t occurrences(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

/* A relay among the nodes: the crawl marks it (JSON, the table, a square
 * in the picture), and the picture draws the widest gap of the ring. */
static void test_crawl_marks_relays(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 16, 20000, &tn);
  const char *relay[] = {KP_BINARY,     "relay",      "--bind", "127.0.0.1:0",
                         "--bootstrap", tn.bootstrap, NULL};
  kp_test_child_t *rc = kp_test_spawn(&loop, relay);
  KP_CHECK(kp_test_child_wait_output(&loop, rc, "relaying on ", 15000));
  const char *at = strstr(kp_test_child_stdout(rc), "relaying on ") + strlen("relaying on ");
  char addr[KP_ADDR_STRLEN];
  snprintf(addr, sizeof(addr), "%.*s", (int)strcspn(at, "\n"), at);
  kp_testnet_run_until(&loop, NULL, NULL, 3000); /* its announcement lands */
  char svg_path[128];
  snprintf(svg_path, sizeof(svg_path), "%s/relays.svg", kp_it_dir());
  const char *args[] = {"crawl",   "--bootstrap", tn.bootstrap, "--json",
                        "--quiet", "--svg",       svg_path,     NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(&loop, args, &r);
  KP_CHECK_EQ(kp_json_get_num(j, "relays", -1), 1);
  size_t relays = 0;
  for (const kp_json_t *n = kp_json_get(j, "nodes")->child; n; n = n->next) {
    if (!kp_json_get_bool(n, "relay", false)) continue;
    relays++;
    KP_CHECK_MSG(!strcmp(kp_json_get_str(n, "addr"), addr), "%s is no relay (%s is)",
                 kp_json_get_str(n, "addr"), addr);
  }
  KP_CHECK_EQ(relays, 1);
  char *svg = kp_it_read_file(svg_path, NULL);
  KP_CHECK(svg != NULL);
  KP_CHECK_EQ(kp_it_svg_nodes(svg), (size_t)kp_json_get_num(j, "found", 0));
  KP_CHECK_EQ(occurrences(svg, "<rect class=\"relay\""), 1);
  KP_CHECK_EQ(occurrences(svg, "<path class=\"gap\""), 1);
  KP_CHECK(strstr(svg, ", 1 relays, 0 proxies), widest gap "));
  KP_CHECK_EQ(occurrences(svg, "<path class=\"proxy\""), 0);
  free(svg);
  kp_json_free(j);
  kp_it_result_free(&r);
  const char *text[] = {"crawl", "--bootstrap", tn.bootstrap, "--quiet", NULL};
  run_text(&loop, text, "1 of them announced as blind relays");
  KP_CHECK_EQ(kp_test_child_stop(&loop, rc, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* A proxy and a relay among the nodes: the crawl marks each as what it
 * announced (JSON, the table, a diamond and a square in the picture), and
 * neither as the other. */
static void test_crawl_marks_proxies(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 16, 20000, &tn);
  const char *proxy[] = {KP_BINARY,     "proxy",      "--bind", "127.0.0.1:0",
                         "--bootstrap", tn.bootstrap, NULL};
  const char *relay[] = {KP_BINARY,     "relay",      "--bind", "127.0.0.1:0",
                         "--bootstrap", tn.bootstrap, NULL};
  kp_test_child_t *pc = kp_test_spawn(&loop, proxy), *rc = kp_test_spawn(&loop, relay);
  KP_CHECK(kp_test_child_wait_output(&loop, pc, "proxying on ", 15000));
  KP_CHECK(kp_test_child_wait_output(&loop, rc, "relaying on ", 15000));
  const char *at = strstr(kp_test_child_stdout(pc), "proxying on ") + strlen("proxying on ");
  char addr[KP_ADDR_STRLEN];
  snprintf(addr, sizeof(addr), "%.*s", (int)strcspn(at, ",\n"), at);
  kp_testnet_run_until(&loop, NULL, NULL, 3000); /* the announcements land */
  char svg_path[128];
  snprintf(svg_path, sizeof(svg_path), "%s/proxies.svg", kp_it_dir());
  const char *args[] = {"crawl",   "--bootstrap", tn.bootstrap, "--json",
                        "--quiet", "--svg",       svg_path,     NULL};
  kp_it_result_t r;
  kp_json_t *j = run_json(&loop, args, &r);
  KP_CHECK_EQ(kp_json_get_num(j, "proxies", -1), 1);
  KP_CHECK_EQ(kp_json_get_num(j, "relays", -1), 1);
  size_t proxies = 0;
  for (const kp_json_t *n = kp_json_get(j, "nodes")->child; n; n = n->next) {
    if (!kp_json_get_bool(n, "proxy", false)) continue;
    proxies++;
    KP_CHECK_MSG(!strcmp(kp_json_get_str(n, "addr"), addr), "%s is no proxy (%s is)",
                 kp_json_get_str(n, "addr"), addr);
    KP_CHECK(!kp_json_get_bool(n, "relay", true));
  }
  KP_CHECK_EQ(proxies, 1);
  char *svg = kp_it_read_file(svg_path, NULL);
  KP_CHECK(svg != NULL);
  KP_CHECK_EQ(kp_it_svg_nodes(svg), (size_t)kp_json_get_num(j, "found", 0));
  KP_CHECK_EQ(occurrences(svg, "<path class=\"proxy\""), 1);
  KP_CHECK_EQ(occurrences(svg, "<rect class=\"relay\""), 1);
  KP_CHECK(strstr(svg, ", 1 relays, 1 proxies), widest gap "));
  free(svg);
  kp_json_free(j);
  kp_it_result_free(&r);
  const char *text[] = {"crawl", "--bootstrap", tn.bootstrap, "--quiet", NULL};
  run_text(&loop, text, "1 of them announced as proxies (kadpunch/proxies/v1)");
  KP_CHECK_EQ(kp_test_child_stop(&loop, pc, 10000), 0);
  KP_CHECK_EQ(kp_test_child_stop(&loop, rc, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

static const kp_test_case_t cases[] = {
    KP_CASE(json_codec, unit, 10),
    KP_CASE(crawl_finds_every_node, loopback, 90),
    KP_CASE(crawl_marks_relays, loopback, 90),
    KP_CASE(crawl_marks_proxies, loopback, 90),
    KP_CASE(net_commands, loopback, 60),
    KP_CASE(usage, loopback, 30),
    KP_CASE(control_socket, loopback, 30),
    KP_CASE(control_errors, loopback, 30),
    KP_CASE(control_in_dht_node, loopback, 30),
};

KP_TEST_MAIN(cases)
