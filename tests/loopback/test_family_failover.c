/* SPDX-License-Identifier: MIT */
/* A connection between two dual-stack nodes runs over IPv6; mid-transfer
 * every IPv6 datagram is dropped (ip6tables, in a network namespace of the
 * test's own): the connection moves to IPv4 (its standby link on the other
 * family's node resumes there, docs/architecture.md "Dual stack") and the
 * transfer ends byte-exact, on the same kp_conn_t, with no stream broken.
 * Both directions are checked: the client sees the move, and the server's
 * side moves too (the echo comes back over IPv4; the server follows its
 * client). family_flap takes one family away and gives it back, three
 * times, alternating: each time the pair must end on the same family.
 * family_returns takes both away, and gives IPv4 back 12 s later: the
 * standby, still looking, must find it (every 5 s by then). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/testnet.h"
#include "tests/harness/pattern.h"
#include "tests/harness/test.h"
#include "tests/loopback/echo_stream.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define DHT_NODES 8
#define TOTAL (4u << 20)
#define CHUNK (64u << 10)
#define PACE_MS 10 /* one chunk each: 6.4 MB/s, so the cut lands mid-transfer */
#define GAP_LIMIT_NS 5000000000ull

/* A family goes when this much has come back, and returns at the next
 * cut; with `both`, the other one goes too, and returns after both_ms. */
typedef struct cut_s {
  uint32_t at;
  bool v6; /* which family goes */
  bool both;
  unsigned both_ms;
} cut_t;

typedef struct pump_s {
  kp_conn_t *conn;
  kp_stream_t *stream;
  int status;
  bool connected, failed;
  kp_addr_t first_path;
  uint64_t sent, echoed, mismatches;
  uint64_t last_read_ns, max_gap_ns;
  unsigned moves_to_v4, moves_to_v6;
  kp_path_event_t last_move;
  uint32_t until;
  uv_timer_t pace;
  kp_write_t writes[TOTAL / CHUNK];
  uint8_t data[TOTAL];
} pump_t;

static void pump_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pump_t *p = kp_stream_get_data(s);
  if (n < 0) return;
  uint64_t now = uv_hrtime();
  if (p->last_read_ns && now - p->last_read_ns > p->max_gap_ns)
    p->max_gap_ns = now - p->last_read_ns;
  p->last_read_ns = now;
  p->mismatches += kp_pattern_mismatches(7, p->echoed, (const uint8_t *)buf->base, (size_t)n);
  p->echoed += (uint64_t)n;
}

static void pump_written(kp_write_t *req, int status) {
  (void)req;
  KP_CHECK_OK(status);
}

static void on_pace(uv_timer_t *t) {
  pump_t *p = t->data;
  if (p->sent >= TOTAL) {
    uv_timer_stop(t);
    return;
  }
  uv_buf_t b = uv_buf_init((char *)p->data + p->sent, CHUNK);
  KP_CHECK_OK(kp_stream_write(&p->writes[p->sent / CHUNK], p->stream, &b, 1, pump_written));
  p->sent += CHUNK;
}

static void on_path(kp_conn_t *conn, const kp_path_event_t *ev) {
  pump_t *p = kp_conn_get_data(conn);
  if (!p || !ev->remote.family) return;
  p->last_move = *ev;
  if (ev->remote.family == KP_AF_INET) p->moves_to_v4++;
  if (ev->remote.family == KP_AF_INET6) p->moves_to_v6++;
}

static void on_close(kp_conn_t *conn, int status, uint64_t code) {
  pump_t *p = kp_conn_get_data(conn);
  (void)code;
  if (p && status) p->failed = true;
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  pump_t *p = arg;
  (void)node;
  p->status = status;
  p->connected = true;
  if (status) return;
  p->conn = conn;
  p->first_path = info->path;
  kp_conn_set_data(conn, p);
  KP_CHECK_OK(kp_stream_open(conn, &p->stream));
  kp_stream_set_data(p->stream, p);
  KP_CHECK_OK(kp_stream_read_start(p->stream, pump_read));
  size_t avail;
  for (size_t off = 0; off < TOTAL; off += avail) {
    const uint8_t *chunk = kp_pattern_at(7, off, &avail);
    if (avail > TOTAL - off) avail = TOTAL - off;
    memcpy(p->data + off, chunk, avail);
  }
  KP_CHECK_OK(uv_timer_start(&p->pace, on_pace, 0, PACE_MS));
}

static bool connected(void *ctx) {
  return ((pump_t *)ctx)->connected;
}

static bool echoed_until(void *ctx) {
  pump_t *p = ctx;
  return p->failed || p->echoed >= p->until;
}

/* Every datagram of one family dropped (op 'I') or let through again ('D'). */
static int family_rule(bool v6, char op) {
  return kp_test_sh("%s -%c INPUT -p udp -j DROP", v6 ? "ip6tables" : "iptables", op);
}

/* The transfer, with each cut in turn: a family goes (all of its
 * datagrams, both ways: everything here is loopback) and comes back at
 * the next cut. */
static void run_cuts(const cut_t *cuts, size_t n, uint64_t gap_limit_ns) {
  kp_test_enter_netns();
  if (kp_test_sh("ip6tables -L INPUT -n >/dev/null 2>&1") != 0 ||
      kp_test_sh("iptables -L INPUT -n >/dev/null 2>&1") != 0)
    kp_test_skip("iptables or ip6tables not usable");
  uv_loop_t loop;
  kp_testnet_t tn;
  kp_test_dual_testnet(&loop, &tn);
  for (int i = 0; i < DHT_NODES; i++)
    KP_CHECK_OK(kp_testnet_add_stacks(&tn, KP_TESTNET_V4 | KP_TESTNET_V6, KP_NODE_AUTO, 0, NULL));
  kp_node_t *server, *client;
  KP_CHECK_OK(kp_testnet_add_stacks(&tn, KP_TESTNET_V4 | KP_TESTNET_V6, KP_NODE_AUTO, 0, &server));
  KP_CHECK_OK(kp_testnet_add_stacks(&tn, KP_TESTNET_V4 | KP_TESTNET_V6, KP_NODE_AUTO, 0, &client));
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));
  kp_keypair_t skp, ckp;
  kp_keypair_generate(&skp);
  kp_keypair_generate(&ckp);
  kp_conn_callbacks_t echo = {.on_stream = kp_test_echo_stream};
  kp_server_t *srv;
  KP_CHECK_OK(kp_server_listen(server, &skp, NULL, &echo, NULL, NULL, &srv));
  kp_testnet_run_until(&loop, NULL, NULL, 300); /* announced on both families */

  static pump_t p;
  memset(&p, 0, sizeof(p));
  KP_CHECK_OK(uv_timer_init(&loop, &p.pace));
  p.pace.data = &p;
  kp_conn_callbacks_t ccb = {.on_close = on_close, .on_path = on_path};
  KP_CHECK_OK(kp_node_connect(client, &ckp, skp.public_key, &ccb, on_connected, &p));
  KP_CHECK(kp_testnet_run_until(&loop, connected, &p, 20000));
  KP_CHECK_MSG(!p.status, "connect: %s", kp_strerror(p.status));
  KP_CHECK_MSG(p.first_path.family == KP_AF_INET6, "a dual-stack pair began on IPv4");

  uint64_t started_ns = uv_hrtime();
  char at[KP_ADDR_STRLEN];
  for (size_t i = 0; i <= n; i++) {
    p.until = i < n ? cuts[i].at : TOTAL;
    KP_CHECK(kp_testnet_run_until(&loop, echoed_until, &p, 30000));
    KP_CHECK(!p.failed);
    if (i) KP_CHECK_EQ(family_rule(cuts[i - 1].v6, 'D'), 0);
    if (i == n) break;
    KP_CHECK_EQ(family_rule(cuts[i].v6, 'I'), 0);
    printf("%s goes at %u bytes (on %s)\n",
           cuts[i].both ? "everything"
           : cuts[i].v6 ? "IPv6"
                        : "IPv4",
           cuts[i].at, kp_addr_format(&p.last_move.remote, at, sizeof(at)));
    if (cuts[i].both) {
      KP_CHECK_EQ(family_rule(!cuts[i].v6, 'I'), 0);
      kp_testnet_run_until(&loop, NULL, NULL, cuts[i].both_ms);
      KP_CHECK_EQ(family_rule(!cuts[i].v6, 'D'), 0);
      printf("%s back after %u ms\n", cuts[i].v6 ? "IPv4" : "IPv6", cuts[i].both_ms);
    }
  }
  printf("%llu of %u echoed in %.2f s, longest read gap %.2f s, moves to IPv4 %u, to IPv6 %u, "
         "now %s %s\n",
         (unsigned long long)p.echoed, TOTAL, (double)(uv_hrtime() - started_ns) / 1e9,
         (double)p.max_gap_ns / 1e9, p.moves_to_v4, p.moves_to_v6,
         p.last_move.direct ? "direct to" : "relayed via",
         kp_addr_format(&p.last_move.remote, at, sizeof(at)));
  KP_CHECK(!p.failed);
  KP_CHECK_EQ(p.echoed, TOTAL);
  KP_CHECK_EQ(p.mismatches, 0);
  /* Each cut moved it to the other family. */
  unsigned want4 = 0, want6 = 0;
  for (size_t i = 0; i < n; i++) *(cuts[i].v6 ? &want4 : &want6) += 1;
  KP_CHECK_MSG(p.moves_to_v4 >= want4 && p.moves_to_v6 >= want6,
               "moves to IPv4 %u (want %u), to IPv6 %u (want %u)", p.moves_to_v4, want4,
               p.moves_to_v6, want6);
  KP_CHECK(p.last_move.remote.family == (cuts[n - 1].v6 ? KP_AF_INET : KP_AF_INET6));
  KP_CHECK_MSG(p.max_gap_ns < gap_limit_ns, "the transfer stalled %.2f s",
               (double)p.max_gap_ns / 1e9);

  uv_close((uv_handle_t *)&p.pace, NULL);
  kp_stream_close(p.stream, NULL);
  kp_conn_close(p.conn, 0);
  kp_server_close(srv);
  kp_testnet_run_until(&loop, NULL, NULL, 100);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

void test_family_failover(void) {
  static const cut_t cuts[] = {{1u << 20, true, false, 0}};
  run_cuts(cuts, 1, GAP_LIMIT_NS);
}

void test_family_flap(void) {
  static const cut_t cuts[] = {
      {1u << 20, true, false, 0}, {2u << 20, false, false, 0}, {3u << 20, true, false, 0}};
  run_cuts(cuts, 3, GAP_LIMIT_NS);
}

void test_family_returns(void) {
  /* Both go; IPv4 is back 12 s later: the gap is those 12 s, the standby's
   * next round (one every 5 s by then, each to the next relay node: the
   * first may be one that timed out) and its punch. Measured 18 s. */
  static const cut_t cuts[] = {{1u << 20, true, true, 12000}};
  run_cuts(cuts, 1, 25000000000ull);
}
