/* SPDX-License-Identifier: MIT */
/* A server's bounds on what its clients hold: connections per client key
 * and per client IP (refused, with the reason, past them; counted again
 * once one ends), and the received data all of a node's connections may
 * hold, whatever their windows. */
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

typedef struct attempt_s {
  bool done;
  int status;
  kp_conn_t *conn;
} attempt_t;

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  attempt_t *a = arg;
  (void)node, (void)info;
  a->done = true;
  a->status = status;
  a->conn = conn;
}

static bool done(void *arg) {
  return ((attempt_t *)arg)->done;
}

static int connect_once(uv_loop_t *loop, kp_node_t *client, const kp_keypair_t *kp,
                        const uint8_t server_key[KP_PUBLIC_KEY_LEN], attempt_t *a) {
  memset(a, 0, sizeof(*a));
  KP_CHECK_OK(kp_node_connect(client, kp, server_key, NULL, on_connected, a));
  kp_testnet_run_until(loop, done, a, 20000);
  KP_CHECK(a->done);
  return a->status;
}

static kp_node_t *client_at(uv_loop_t *loop, kp_testnet_t *tn, const char *ip) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  char bind[64];
  snprintf(bind, sizeof(bind), "%s:%d", ip, kp_testnet_free_port());
  const char *boot = tn->bootstrap;
  o.bind = bind;
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = KP_NODE_EPHEMERAL;
  kp_node_t *n;
  KP_CHECK_OK(kp_node_create(loop, &o, &n));
  kp_testnet_run_until(loop, NULL, NULL, 500);
  return n;
}

static void on_server_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

void test_connection_caps(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 10, 20000, &tn);
  kp_keypair_t skp, k1, k2, k3;
  kp_keypair_generate(&skp), kp_keypair_generate(&k1), kp_keypair_generate(&k2),
      kp_keypair_generate(&k3);
  kp_conn_callbacks_t cb = {.on_close = on_server_conn_close};
  kp_server_t *server;
  KP_CHECK_OK(kp_server_listen(tn.nodes[4], &skp, NULL, &cb, NULL, NULL, &server));
  kp_server_limits_t limits = {.conns_per_key = 2, .conns_per_ip = 3};
  kp_server_set_limits(server, &limits);
  kp_testnet_run_until(&loop, NULL, NULL, 1500); /* announced */
  kp_node_t *a = client_at(&loop, &tn, "127.0.0.20"), *b = client_at(&loop, &tn, "127.0.0.20");
  kp_node_t *c = client_at(&loop, &tn, "127.0.0.21");
  attempt_t at[8];
  /* One key: two, then refused. */
  KP_CHECK_OK(connect_once(&loop, a, &k1, skp.public_key, &at[0]));
  KP_CHECK_OK(connect_once(&loop, a, &k1, skp.public_key, &at[1]));
  KP_CHECK_ERR(connect_once(&loop, a, &k1, skp.public_key, &at[2]), KP_ECONNLIMIT);
  /* Another key from the same IP: one more (three from the IP), then
   * refused; another IP is not held back. */
  KP_CHECK_OK(connect_once(&loop, b, &k2, skp.public_key, &at[3]));
  KP_CHECK_ERR(connect_once(&loop, b, &k2, skp.public_key, &at[4]), KP_ECONNLIMIT);
  KP_CHECK_OK(connect_once(&loop, c, &k3, skp.public_key, &at[5]));
  /* One of the key's connections ends: it may have one again. */
  kp_conn_close(at[0].conn, 0);
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  KP_CHECK_OK(connect_once(&loop, a, &k1, skp.public_key, &at[6]));
  kp_conn_close(at[1].conn, 0);
  kp_conn_close(at[3].conn, 0);
  kp_conn_close(at[5].conn, 0);
  kp_conn_close(at[6].conn, 0);
  kp_server_close(server);
  kp_node_close(a, NULL), kp_node_close(b, NULL), kp_node_close(c, NULL);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* ---- The receive budget ------------------------------------------------------------ */

typedef struct holder_s {
  kp_stream_t *stream;
  uint64_t sent;
  kp_write_t writes[64];
  unsigned nwrites;
} holder_t;

static kp_stream_t *server_streams[4];
static unsigned server_stream_count;

static void on_server_stream(kp_conn_t *conn, kp_stream_t *s) {
  (void)conn; /* never read: everything sent stays with the server */
  if (server_stream_count < 4) server_streams[server_stream_count++] = s;
}

static void written(kp_write_t *w, int status) {
  (void)w, (void)status;
}

static uint8_t payload[1 << 20];

/* A client writes more than the budget into a stream the server never
 * reads, on two connections: what the server's node holds stays within its
 * budget, and the connections live on (the rest waits at the sender). */
void test_rx_budget_bounded(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 8, 20000, &tn);
  kp_node_options_t o;
  kp_node_options_init(&o);
  char bind[64];
  snprintf(bind, sizeof(bind), "127.0.0.1:%d", kp_testnet_free_port());
  const char *boot = tn.bootstrap;
  o.bind = bind;
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.rx_budget = 1u << 20;
  kp_node_t *snode;
  KP_CHECK_OK(kp_node_create(&loop, &o, &snode));
  kp_keypair_t skp, ck;
  kp_keypair_generate(&skp), kp_keypair_generate(&ck);
  kp_conn_callbacks_t cb = {.on_stream = on_server_stream, .on_close = on_server_conn_close};
  kp_server_t *server;
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  KP_CHECK_OK(kp_server_listen(snode, &skp, NULL, &cb, NULL, NULL, &server));
  kp_testnet_run_until(&loop, NULL, NULL, 1500);
  kp_node_t *client = client_at(&loop, &tn, "127.0.0.30");
  attempt_t at[2];
  holder_t h[2];
  memset(h, 0, sizeof(h));
  memset(payload, 0x33, sizeof(payload));
  for (int i = 0; i < 2; i++) {
    KP_CHECK_OK(connect_once(&loop, client, &ck, skp.public_key, &at[i]));
    KP_CHECK_OK(kp_stream_open(at[i].conn, &h[i].stream));
    for (int k = 0; k < 3; k++) { /* 3 MiB each, past the 2 MiB stream window */
      uv_buf_t buf = uv_buf_init((char *)payload, sizeof(payload));
      KP_CHECK_OK(kp_stream_write(&h[i].writes[k], h[i].stream, &buf, 1, written));
    }
  }
  uint64_t held_max = 0;
  for (int t = 0; t < 30; t++) {
    kp_testnet_run_until(&loop, NULL, NULL, 100);
    kp_node_stats_t st;
    kp_node_stats(snode, &st);
    if (st.rx_held > held_max) held_max = st.rx_held;
  }
  kp_conn_stats_t cs;
  kp_conn_stats(at[0].conn, &cs);
  printf("rx budget 1 MiB: the server held at most %" PRIu64 " bytes; %" PRIu64
         " stream bytes got in on the first connection\n",
         held_max, cs.stream_bytes_sent);
  KP_CHECK(held_max <= (1u << 20));
  KP_CHECK(held_max >= (1u << 20) / 2); /* it did fill: the bound, not the windows, held */
  for (int i = 0; i < 2; i++) {
    kp_stream_close(h[i].stream, NULL);
    kp_conn_close(at[i].conn, 0);
  }
  for (unsigned i = 0; i < server_stream_count; i++) kp_stream_close(server_streams[i], NULL);
  kp_server_close(server);
  kp_node_close(client, NULL);
  kp_node_close(snode, NULL);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}
