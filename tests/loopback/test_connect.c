/* SPDX-License-Identifier: MIT */
/* Connecting by key on real sockets: a 100-node loopback testnet, 20
 * connects between random nodes, each carrying data byte-exact both ways
 * (an echo), and a refused key. */
#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "node/node_internal.h"
#include "node/relay_service_internal.h"
#include "node/testnet.h"
#include "relay/uv/tunnel.h"
#include "tests/harness/pattern.h"
#include "tests/harness/test.h"
#include "tests/loopback/echo_stream.h"
#include "tests/loopback/testnet_up.h"

#define NODES 100
#define PAIRS 20
#define PAYLOAD (64 * 1024)

typedef struct pair_s {
  kp_keypair_t server_kp, client_kp;
  kp_server_t *server;
  kp_conn_t *client_conn, *server_conn;
  kp_stream_t *client_stream;
  int status;
  bool connected, failed;
  kp_connect_info_t info;
  uint64_t echoed; /* bytes the client read back, checked */
  uint64_t mismatches;
  kp_write_t write;
  bool server_refuses;
  uint8_t data[PAYLOAD]; /* written zero-copy: must live until acknowledged */
} pair_t;

/* Server side: echo every stream. */
static void on_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

static void on_server_connection(kp_server_t *server, kp_conn_t *conn,
                                 const kp_connect_info_t *info, void *arg) {
  pair_t *p = arg;
  (void)server, (void)info;
  p->server_conn = conn;
}

static int firewall(kp_server_t *server, const kp_client_hello_t *hello, void *arg) {
  pair_t *p = arg;
  (void)server, (void)hello;
  return p->server_refuses ? KP_ENOTALLOWED : 0;
}

/* Client side. */
static void client_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pair_t *p = kp_stream_get_data(s);
  if (n < 0) return;
  p->mismatches += kp_pattern_mismatches((uint64_t)(uintptr_t)p, p->echoed,
                                         (const uint8_t *)buf->base, (size_t)n);
  p->echoed += (uint64_t)n;
}

static void client_written(kp_write_t *req, int status) {
  (void)req;
  KP_CHECK_OK(status);
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  pair_t *p = arg;
  (void)node;
  p->status = status;
  p->info = *info;
  if (status) {
    p->failed = true;
    return;
  }
  p->connected = true;
  p->client_conn = conn;
  KP_CHECK_OK(kp_stream_open(conn, &p->client_stream));
  kp_stream_set_data(p->client_stream, p);
  KP_CHECK_OK(kp_stream_read_start(p->client_stream, client_read));
  uint8_t *data = p->data;
  size_t avail;
  for (size_t off = 0; off < PAYLOAD;) {
    const uint8_t *chunk = kp_pattern_at((uint64_t)(uintptr_t)p, off, &avail);
    if (avail > PAYLOAD - off) avail = PAYLOAD - off;
    memcpy(data + off, chunk, avail);
    off += avail;
  }
  uv_buf_t b = uv_buf_init((char *)data, PAYLOAD);
  KP_CHECK_OK(kp_stream_write(&p->write, p->client_stream, &b, 1, client_written));
}

typedef struct {
  pair_t *pairs;
  size_t n;
} all_t;

static bool all_done(void *ctx) {
  all_t *a = ctx;
  for (size_t i = 0; i < a->n; i++)
    if (!a->pairs[i].failed && a->pairs[i].echoed < PAYLOAD) return false;
  return true;
}

static void test_connect_testnet(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = NODES;
  kp_testnet_t tn;
  KP_CHECK_OK(kp_testnet_create(&loop, &o, &tn));
  KP_CHECK(kp_testnet_wait_joined(&tn, 60000));

  static pair_t pairs[PAIRS];
  kp_conn_callbacks_t server_cb = {.on_stream = kp_test_echo_stream, .on_close = on_conn_close};
  kp_conn_callbacks_t client_cb = {.on_close = on_conn_close};
  for (size_t i = 0; i < PAIRS; i++) {
    pair_t *p = &pairs[i];
    crypto_sign_keypair(p->server_kp.public_key, p->server_kp.secret_key);
    crypto_sign_keypair(p->client_kp.public_key, p->client_kp.secret_key);
    /* Distinct servers (one key each); clients anywhere else. */
    kp_node_t *sn = tn.nodes[1 + i];
    KP_CHECK_OK(kp_server_listen(sn, &p->server_kp, firewall, &server_cb, on_server_connection, p,
                                 &p->server));
  }
  kp_testnet_run_until(&loop, NULL, NULL, 1500); /* announcements land */
  for (size_t i = 0; i < PAIRS; i++) {
    kp_node_t *cn = tn.nodes[1 + PAIRS + (randombytes_uniform(NODES - 1 - PAIRS))];
    KP_CHECK_OK(kp_node_connect(cn, &pairs[i].client_kp, pairs[i].server_kp.public_key, &client_cb,
                                on_connected, &pairs[i]));
  }
  all_t a = {pairs, PAIRS};
  KP_CHECK(kp_testnet_run_until(&loop, all_done, &a, 30000));
  for (size_t i = 0; i < PAIRS; i++) {
    pair_t *p = &pairs[i];
    KP_CHECK_MSG(p->connected, "pair %zu: %s", i, kp_err_name(p->status));
    KP_CHECK_EQ(p->echoed, PAYLOAD);
    KP_CHECK_EQ(p->mismatches, 0);
    printf("pair %2zu: %-12s lookup %u ms, handshake %u ms, punch %u ms, %u datagrams\n", i,
           kp_punch_name(p->info.punch), p->info.lookup_ms, p->info.handshake_ms, p->info.punch_ms,
           p->info.datagrams);
  }

  /* A refused key hears why. */
  pair_t *r = &pairs[0];
  r->server_refuses = true;
  r->connected = r->failed = false;
  KP_CHECK_OK(kp_node_connect(tn.nodes[NODES - 1], &r->client_kp, r->server_kp.public_key,
                              &client_cb, on_connected, r));
  all_t one = {r, 1};
  r->echoed = 0;
  KP_CHECK(kp_testnet_run_until(&loop, all_done, &one, 10000));
  KP_CHECK_EQ(r->status, KP_ENOTALLOWED);

  for (size_t i = 0; i < PAIRS; i++) {
    if (pairs[i].client_stream) kp_stream_close(pairs[i].client_stream, NULL);
    if (pairs[i].client_conn) kp_conn_close(pairs[i].client_conn, 0);
    if (pairs[i].server_conn) kp_conn_close(pairs[i].server_conn, 0);
    kp_server_close(pairs[i].server);
  }
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* One connect to completion (echo checked); closes what it opened. */
static void connect_once(uv_loop_t *loop, kp_node_t *from, pair_t *p) {
  kp_conn_callbacks_t client_cb = {.on_close = on_conn_close};
  p->connected = p->failed = false;
  p->echoed = p->mismatches = 0;
  KP_CHECK_OK(
      kp_node_connect(from, &p->client_kp, p->server_kp.public_key, &client_cb, on_connected, p));
  all_t one = {p, 1};
  KP_CHECK(kp_testnet_run_until(loop, all_done, &one, 20000));
  KP_CHECK_MSG(p->connected, "%s", kp_err_name(p->status));
  KP_CHECK_EQ(p->echoed, PAYLOAD);
  KP_CHECK_EQ(p->mismatches, 0);
  kp_stream_close(p->client_stream, NULL);
  kp_conn_close(p->client_conn, 0);
  p->client_stream = NULL;
  p->client_conn = NULL;
  if (p->server_conn) kp_conn_close(p->server_conn, 0);
  p->server_conn = NULL;
}

/* A second connect to a key goes straight to the relay node the first one
 * used (no lookup); when that node is gone, the connect looks the key up
 * again and still gets through. */
static void test_connect_remembers_relay(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 40, 60000, &tn);
  kp_conn_callbacks_t server_cb = {.on_stream = kp_test_echo_stream, .on_close = on_conn_close};
  static pair_t p;
  kp_node_t *client = tn.nodes[tn.count - 1];
  size_t relay_index = 0;
  /* A key whose relay node is neither the bootstrap node nor the server. */
  for (int attempt = 0; attempt < 10 && relay_index < 2; attempt++) {
    if (p.server) kp_server_close(p.server);
    crypto_sign_keypair(p.server_kp.public_key, p.server_kp.secret_key);
    crypto_sign_keypair(p.client_kp.public_key, p.client_kp.secret_key);
    KP_CHECK_OK(kp_server_listen(tn.nodes[1], &p.server_kp, firewall, &server_cb,
                                 on_server_connection, &p, &p.server));
    kp_testnet_run_until(&loop, NULL, NULL, 1000);
    connect_once(&loop, client, &p);
    KP_CHECK(p.info.lookup_ms > 0 || p.info.datagrams > 6);
    for (size_t i = 0; i < tn.count; i++) {
      kp_addr_t a;
      if (tn.nodes[i] && !kp_node_local_addr(tn.nodes[i], &a) && kp_addr_eq(&a, &p.info.relay))
        relay_index = i;
    }
  }
  KP_CHECK(relay_index >= 2);
  unsigned first = p.info.datagrams;
  /* Straight to the remembered relay node: its handshake and a punch, 4
   * datagrams. On a loaded machine the node may be slow to answer, and
   * the connect rightly looks the key up after all (CI saw 10 once): one
   * of three connects must go straight there. */
  bool straight = false;
  for (int attempt = 0; attempt < 3 && !straight; attempt++) {
    connect_once(&loop, client, &p);
    printf("first connect %u datagrams, again %u (relay remembered)\n", first, p.info.datagrams);
    straight = p.info.datagrams <= 6;
  }
  KP_CHECK(straight);
  kp_testnet_kill(&tn, relay_index);
  connect_once(&loop, client, &p);
  printf("after the relay node left: %u datagrams (looked up again)\n", p.info.datagrams);
  KP_CHECK(p.info.datagrams > 6);
  kp_server_close(p.server);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

/* ---- Relayed ---------------------------------------------------------------------- */

static const char MARKER[] = "kadpunch plaintext marker 0123456789 "; /* 37 bytes */

typedef struct tap_s {
  uint64_t datagrams, bytes, marker_hits;
} tap_t;

static void relay_tap(void *ctx, const uint8_t *data, size_t len) {
  tap_t *t = ctx;
  t->datagrams++;
  t->bytes += len;
  if (memmem(data, len, MARKER, 16)) t->marker_hits++;
}

typedef struct relayed_s {
  bool done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  kp_write_t write;
  uint8_t *data;
  size_t len, echoed, mismatched;
} relayed_t;

static void relayed_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  relayed_t *r = kp_stream_get_data(s);
  if (n <= 0) return;
  if (r->echoed + (size_t)n > r->len || memcmp(r->data + r->echoed, buf->base, (size_t)n))
    r->mismatched++;
  r->echoed += (size_t)n;
}

static void relayed_connected(kp_node_t *node, int status, kp_conn_t *conn,
                              const kp_connect_info_t *info, void *arg) {
  relayed_t *r = arg;
  (void)node;
  r->done = true;
  r->status = status;
  r->info = *info;
  r->conn = conn;
  if (status) return;
  uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);
  KP_CHECK_OK(kp_stream_open(conn, &r->stream));
  kp_stream_set_data(r->stream, r);
  KP_CHECK_OK(kp_stream_write(&r->write, r->stream, &b, 1, NULL));
  KP_CHECK_OK(kp_stream_end(r->stream));
  KP_CHECK_OK(kp_stream_read_start(r->stream, relayed_read));
}

static bool relayed_done(void *ctx) {
  relayed_t *r = ctx;
  return r->done && (r->status || r->echoed >= r->len);
}

static bool is_member(void *ctx) {
  return kp_node_is_member(ctx);
}

static kp_node_t *make_node_tcp(uv_loop_t *loop, const char *boot, const char *tcp_relay) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.mode = KP_NODE_EPHEMERAL;
  o.tcp_relay = tcp_relay;
  kp_node_t *n;
  KP_CHECK_OK(kp_node_create(loop, &o, &n));
  return n;
}

static kp_node_t *make_node(uv_loop_t *loop, const char *boot, bool relay, bool relay_only) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  char port[32];
  o.bind = "127.0.0.1:0";
  if (relay) {
    snprintf(port, sizeof(port), "127.0.0.1:%d", kp_testnet_free_port());
    o.bind = port;
  }
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.member_stable_ms = 0;
  o.mode = relay ? KP_NODE_MEMBER : KP_NODE_EPHEMERAL;
  o.relay = relay;
  o.relay_only = relay_only;
  kp_node_t *n;
  KP_CHECK_OK(kp_node_create(loop, &o, &n));
  return n;
}

static bool tunnel_back(void *ctx) {
  kp_tunnel_stats_t ts;
  kp_tunnel_stats(((kp_node_t *)ctx)->tunnel, &ts);
  return ts.connected && ts.redials >= 1;
}

/* The relay drops the client's TCP connection: the client dials again by
 * itself, and a new connection by key works over the new one. */
static void redial_and_connect_again(uv_loop_t *loop, kp_node_t *relay, kp_node_t *client,
                                     const kp_keypair_t *ckp, const uint8_t *server_key) {
  kp_relay_service_drop_links(relay->relay_service);
  KP_CHECK(kp_testnet_run_until(loop, tunnel_back, client, 10000));
  relayed_t again = {.len = 64 << 10};
  again.data = malloc(again.len);
  memset(again.data, 0x5a, again.len);
  kp_conn_callbacks_t ccb = {.on_close = on_conn_close};
  KP_CHECK_OK(kp_node_connect(client, ckp, server_key, &ccb, relayed_connected, &again));
  KP_CHECK(kp_testnet_run_until(loop, relayed_done, &again, 30000));
  KP_CHECK_MSG(again.status == 0, "%s", kp_err_name(again.status));
  KP_CHECK(again.echoed == again.len && !again.mismatched);
  printf("the relay dropped the TCP connection: redialled, connected again, 64 KiB echoed\n");
  kp_stream_close(again.stream, NULL);
  kp_conn_close(again.conn, 0);
  free(again.data);
}

/* Through a blind relay found on the DHT: the server discovers it and
 * names it, the client (relay_only) pairs there, 4 MiB echo byte-exact, and
 * nothing the relay forwarded contains the plaintext. With tcp, the client
 * has no UDP of its own: it reaches the DHT and the relay over TCP. */
static void run_relayed(bool tcp) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 30, 60000, &tn);
  kp_node_t *relay = make_node(&loop, tn.bootstrap, true, false);
  tap_t tap = {0};
  kp_relay_service_set_tap(relay->relay_service, relay_tap, &tap);
  KP_CHECK(kp_testnet_run_until(&loop, is_member, relay, 20000));
  kp_testnet_run_until(&loop, NULL, NULL, 2500); /* it announces itself */
  kp_node_t *server = make_node(&loop, tn.bootstrap, false, false);
  kp_addr_t relay_addr;
  char relay_text[KP_ADDR_STRLEN];
  kp_node_local_addr(relay, &relay_addr);
  kp_addr_format(&relay_addr, relay_text, sizeof(relay_text));
  kp_node_t *client = tcp ? make_node_tcp(&loop, tn.bootstrap, relay_text)
                          : make_node(&loop, tn.bootstrap, false, true);
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  kp_keypair_t skp, ckp;
  kp_keypair_generate(&skp);
  kp_keypair_generate(&ckp);
  kp_conn_callbacks_t scb = {.on_stream = kp_test_echo_stream, .on_close = on_conn_close};
  kp_server_t *srv;
  static pair_t unused;
  KP_CHECK_OK(kp_server_listen(server, &skp, NULL, &scb, on_server_connection, &unused, &srv));
  kp_testnet_run_until(&loop, NULL, NULL, 1500); /* announced; relays found */
  relayed_t r = {.len = 4 << 20};
  r.data = malloc(r.len);
  for (size_t i = 0; i < r.len; i++) r.data[i] = (uint8_t)MARKER[i % (sizeof(MARKER) - 1)];
  kp_conn_callbacks_t ccb = {.on_close = on_conn_close};
  KP_CHECK_OK(kp_node_connect(client, &ckp, skp.public_key, &ccb, relayed_connected, &r));
  KP_CHECK(kp_testnet_run_until(&loop, relayed_done, &r, 30000));
  KP_CHECK_MSG(r.status == 0, "%s", kp_err_name(r.status));
  KP_CHECK_EQ(r.info.punch, KP_PUNCH_RELAYED);
  KP_CHECK_EQ(r.info.relay_tcp, tcp);
  KP_CHECK(kp_addr_eq(&r.info.path, &relay_addr));
  KP_CHECK_EQ(r.echoed, r.len);
  KP_CHECK_EQ(r.mismatched, 0);
  kp_relay_counters_t rc;
  KP_CHECK_OK(kp_node_relay_counters(relay, &rc));
  printf("relayed%s: %" PRIu64 " datagrams, %" PRIu64
         " bytes through the relay; plaintext seen %" PRIu64 " times\n",
         tcp ? " (client over TCP)" : "", tap.datagrams, tap.bytes, tap.marker_hits);
  KP_CHECK(tap.bytes > 2 * r.len); /* both ways went through it */
  KP_CHECK_EQ(tap.marker_hits, 0);
  KP_CHECK_EQ(rc.paired, 1);
  KP_CHECK_EQ(rc.tcp_links, tcp ? 1u : 0u);
  kp_stream_close(r.stream, NULL);
  kp_conn_close(r.conn, 0);
  if (tcp) redial_and_connect_again(&loop, relay, client, &ckp, skp.public_key);
  if (unused.server_conn) kp_conn_close(unused.server_conn, 0);
  kp_server_close(srv);
  kp_node_close(relay, NULL);
  kp_node_close(server, NULL);
  kp_node_close(client, NULL);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(r.data);
}

static void test_connect_relayed(void) {
  run_relayed(false);
}

static bool relays_found(void *ctx) {
  const kp_node_t *node = ctx;
  return !node->relay_lookup && node->found_count > 0;
}

/* A server that starts before any relay has announced (a network coming up
 * all at once): its first lookup of the relay topic finds none, so it looks
 * again, backing off, and names the relay once it is there. Without the
 * retry it would offer no relay for ten minutes, and a client that cannot
 * punch would fail. */
static void test_connect_relay_found_later(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 20, 60000, &tn);
  kp_node_t *server = make_node(&loop, tn.bootstrap, false, false);
  kp_keypair_t skp, ckp;
  kp_keypair_generate(&skp);
  kp_keypair_generate(&ckp);
  kp_conn_callbacks_t scb = {.on_stream = kp_test_echo_stream, .on_close = on_conn_close};
  kp_server_t *srv;
  static pair_t unused;
  KP_CHECK_OK(kp_server_listen(server, &skp, NULL, &scb, on_server_connection, &unused, &srv));
  kp_testnet_run_until(&loop, NULL, NULL, 1500); /* the first lookup: no relay yet */
  KP_CHECK_EQ(server->found_count, 0);
  kp_node_t *relay = make_node(&loop, tn.bootstrap, true, false);
  KP_CHECK(kp_testnet_run_until(&loop, is_member, relay, 20000));
  uint64_t up = kp__node_now(server);
  KP_CHECK(kp_testnet_run_until(&loop, relays_found, server, 30000));
  printf("the relay announced; the server found it %" PRIu64 " ms after it became a member\n",
         kp__node_now(server) - up);
  kp_node_t *client = make_node(&loop, tn.bootstrap, false, true);
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  relayed_t r = {.len = 256 << 10};
  r.data = malloc(r.len);
  memset(r.data, 0x3c, r.len);
  kp_conn_callbacks_t ccb = {.on_close = on_conn_close};
  KP_CHECK_OK(kp_node_connect(client, &ckp, skp.public_key, &ccb, relayed_connected, &r));
  KP_CHECK(kp_testnet_run_until(&loop, relayed_done, &r, 30000));
  KP_CHECK_MSG(r.status == 0, "%s", kp_err_name(r.status));
  KP_CHECK_EQ(r.info.punch, KP_PUNCH_RELAYED);
  kp_addr_t relay_addr;
  kp_node_local_addr(relay, &relay_addr);
  KP_CHECK(kp_addr_eq(&r.info.path, &relay_addr));
  KP_CHECK_EQ(r.echoed, r.len);
  KP_CHECK_EQ(r.mismatched, 0);
  kp_stream_close(r.stream, NULL);
  kp_conn_close(r.conn, 0);
  if (unused.server_conn) kp_conn_close(unused.server_conn, 0);
  kp_server_close(srv);
  kp_node_close(relay, NULL);
  kp_node_close(server, NULL);
  kp_node_close(client, NULL);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(r.data);
}

static bool all_links_seen(void *ctx) {
  kp_relay_counters_t rc;
  kp_node_relay_counters(ctx, &rc);
  return rc.tcp_links + rc.tcp_refused >= 60;
}

/* A flood of TCP peers at a relay: 60 connections at one that takes 40,
 * 16 channels each. It holds 40 links and at most 512 allocations (file
 * descriptors), refuses the rest (counted), and tears everything down when
 * they go; nothing crashes, nothing leaks. */
static void test_relay_tcp_flood(void) {
  enum { FLOOD = 60, LINKS = 40 };
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 8, 30000, &tn);
  kp_node_options_t o;
  kp_node_options_init(&o);
  char port[32];
  snprintf(port, sizeof(port), "127.0.0.1:%d", kp_testnet_free_port());
  o.bind = port;
  o.relay = true;
  o.relay_limits.tcp_links = LINKS;
  kp_node_t *relay;
  KP_CHECK_OK(kp_node_create(&loop, &o, &relay));
  kp_addr_t ra;
  kp_node_local_addr(relay, &ra);
  struct sockaddr_storage ss;
  socklen_t slen = kp_addr_to_sockaddr(&ra, &ss);
  static int fds[FLOOD];
  for (int i = 0; i < FLOOD; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    KP_CHECK(fds[i] >= 0);
    connect(fds[i], (struct sockaddr *)&ss, slen); /* EINPROGRESS */
  }
  /* Each peer opens its channels as soon as its connection is up (data is
   * what completes a connection the accept queue had no room for). */
  static uint16_t opened[FLOOD];
  kp_relay_counters_t rc;
  uint8_t frame[KP_TUNNEL_FRAME_MAX];
  for (int round = 0; round < 75 && !all_links_seen(relay); round++) {
    for (int i = 0; i < FLOOD; i++)
      while (opened[i] < KP_TUNNEL_CHANNELS) {
        kp_tunnel_frame_t f = {.type = KP_TUNNEL_OPEN, .channel = opened[i]};
        size_t n = kp_tunnel_frame_encode(&f, frame);
        if (write(fds[i], frame, n) != (ssize_t)n) break; /* not up yet, or refused */
        opened[i]++;
      }
    kp_testnet_run_until(&loop, NULL, NULL, 200);
  }
  KP_CHECK_OK(kp_node_relay_counters(relay, &rc));
  KP_CHECK_MSG(all_links_seen(relay), "%u links, %" PRIu64 " refused", rc.tcp_links,
               rc.tcp_refused);
  kp_testnet_run_until(&loop, NULL, NULL, 1500);
  KP_CHECK_OK(kp_node_relay_counters(relay, &rc));
  printf("TCP flood: %u links held, %" PRIu64 " refused, %u allocations\n", rc.tcp_links,
         rc.tcp_refused, relay->relay_service->tcp_allocs);
  KP_CHECK(rc.tcp_links <= LINKS && rc.tcp_refused >= FLOOD - LINKS);
  KP_CHECK(relay->relay_service->tcp_allocs <= 512);
  for (int i = 0; i < FLOOD; i++) close(fds[i]);
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  KP_CHECK_OK(kp_node_relay_counters(relay, &rc));
  KP_CHECK_EQ(rc.tcp_links, 0);
  KP_CHECK_EQ(relay->relay_service->tcp_allocs, 0);
  kp_node_close(relay, NULL);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

static void test_connect_relayed_tcp(void) {
  run_relayed(true);
}

static const kp_test_case_t cases[] = {
    KP_CASE(connect_testnet, loopback, 120), KP_CASE(connect_remembers_relay, loopback, 120),
    KP_CASE(connect_relayed, loopback, 120), KP_CASE(connect_relayed_tcp, loopback, 120),
    KP_CASE(relay_tcp_flood, loopback, 60),  KP_CASE(connect_relay_found_later, loopback, 90),
};

KP_TEST_MAIN(cases)
