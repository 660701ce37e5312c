/* SPDX-License-Identifier: MIT */
/* Proxies on real sockets: a loopback testnet, a node running a proxy, and
 * connections by key where the client, the server or both speak through
 * it. Each carries 4 MiB byte-exact both ways (an echo); the proxied side's
 * path is an allocation on the proxy's address, the proxy forwarded it
 * all, and what it forwarded never contains the plaintext. */
#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"
#include "node/node_proxy.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/echo_stream.h"
#include "tests/loopback/splice.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

static const char MARKER[] = "kadpunch plaintext marker 0123456789 "; /* 37 bytes */

typedef struct echo_s {
  bool done;
  int status;
  kp_connect_info_t info;
  kp_conn_t *conn;
  kp_stream_t *stream;
  kp_write_t write;
  uint8_t *data;
  size_t len, echoed, mismatched;
} echo_t;

static void on_conn_close(kp_conn_t *conn, int status, uint64_t code) {
  (void)conn, (void)status, (void)code;
}

static kp_conn_t *server_conn;
static kp_connect_info_t server_info;

static void on_server_connection(kp_server_t *server, kp_conn_t *conn,
                                 const kp_connect_info_t *info, void *arg) {
  (void)server, (void)arg;
  server_conn = conn;
  server_info = *info;
}

static void client_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  echo_t *r = kp_stream_get_data(s);
  if (n <= 0) return;
  if (r->echoed + (size_t)n > r->len || memcmp(r->data + r->echoed, buf->base, (size_t)n))
    r->mismatched++;
  r->echoed += (size_t)n;
}

static void on_connected(kp_node_t *node, int status, kp_conn_t *conn,
                         const kp_connect_info_t *info, void *arg) {
  echo_t *r = arg;
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
  KP_CHECK_OK(kp_stream_read_start(r->stream, client_read));
}

static bool echo_done(void *ctx) {
  echo_t *r = ctx;
  return r->done && (r->status || r->echoed >= r->len);
}

/* A server on node answering with an echo, under a fresh key (*skp),
 * announced by the time it returns. */
static kp_server_t *serve_echo(uv_loop_t *loop, kp_node_t *node, kp_keypair_t *skp) {
  kp_keypair_generate(skp);
  kp_conn_callbacks_t scb = {.on_stream = kp_test_echo_stream, .on_close = on_conn_close};
  kp_server_t *srv;
  server_conn = NULL;
  KP_CHECK_OK(kp_server_listen(node, skp, NULL, &scb, on_server_connection, NULL, &srv));
  kp_testnet_run_until(loop, NULL, NULL, 1500);
  return srv;
}

/* The echo's connection, its server and both nodes closed, and a moment
 * for the goodbyes to reach the proxy; r->data freed. */
static void echo_end(uv_loop_t *loop, echo_t *r, kp_server_t *srv, kp_node_t *server,
                     kp_node_t *client) {
  kp_stream_close(r->stream, NULL);
  kp_conn_close(r->conn, 0);
  if (server_conn) kp_conn_close(server_conn, 0);
  kp_server_close(srv);
  kp_node_close(server, NULL);
  kp_node_close(client, NULL);
  kp_testnet_run_until(loop, NULL, NULL, 200);
  free(r->data);
  r->data = NULL;
}

/* Connects client to skp's server by key and echoes r->len bytes, all of
 * them back byte-exact; the caller closes r->stream and r->conn and frees
 * r->data. */
static void echo_run(uv_loop_t *loop, kp_node_t *client, const kp_keypair_t *skp, echo_t *r) {
  kp_keypair_t ckp;
  kp_keypair_generate(&ckp);
  r->data = malloc(r->len);
  for (size_t i = 0; i < r->len; i++) r->data[i] = (uint8_t)MARKER[i % (sizeof(MARKER) - 1)];
  kp_conn_callbacks_t ccb = {.on_close = on_conn_close};
  KP_CHECK_OK(kp_node_connect(client, &ckp, skp->public_key, &ccb, on_connected, r));
  KP_CHECK(kp_testnet_run_until(loop, echo_done, r, 30000));
  KP_CHECK_MSG(r->status == 0, "%s", kp_err_name(r->status));
  KP_CHECK_EQ(r->echoed, r->len);
  KP_CHECK_EQ(r->mismatched, 0);
}

static bool is_member(void *ctx) {
  return kp_node_is_member(ctx);
}

/* The link is over TCP, its session up. */
static bool proxied_over_tcp(void *ctx) {
  kp_node_proxy_info_t pi;
  kp_node_proxy_info(ctx, &pi);
  return pi.up && pi.tcp;
}

/* The link is back over UDP, its session up. */
static bool proxied_over_udp(void *ctx) {
  kp_node_proxy_info_t pi;
  kp_node_proxy_info(ctx, &pi);
  return pi.up && !pi.tcp;
}

static bool link_up(void *ctx) {
  kp_node_t *n = ctx;
  return kp_proxy_link_up(n->proxy_link) && n->sock.local.port != 0;
}

/* A node on bind, bootstrapped at boot, through proxy (or none: then
 * private is not read), its proxy session up when it returns. */
static kp_node_t *node_on(uv_loop_t *loop, const char *bind, const char *boot, bool member,
                          const char *proxy, bool private) {
  kp_node_options_t o;
  kp_node_options_init(&o);
  o.bind = bind;
  o.bootstrap = &boot;
  o.bootstrap_count = 1;
  o.member_stable_ms = 0;
  o.mode = member ? KP_NODE_MEMBER : KP_NODE_EPHEMERAL;
  o.proxy = proxy;
  o.proxy_private = private;
  kp_node_t *n;
  KP_CHECK_OK(kp_node_create(loop, &o, &n));
  if (proxy) KP_CHECK(kp_testnet_run_until(loop, link_up, n, 10000));
  return n;
}

static kp_node_t *make_node(uv_loop_t *loop, const char *boot, const char *proxy, bool member) {
  char bind[32] = "127.0.0.1:0";
  if (member) snprintf(bind, sizeof(bind), "127.0.0.1:%d", kp_testnet_free_port());
  /* These tests are of the proxy path: the connection must not move
   * direct under them (nat.proxy_upgrade tests that it does). */
  return node_on(loop, bind, boot, member, proxy, true);
}

/* How a proxied client reaches its proxy: over UDP; over TCP as asked
 * ("tcp:"); from where UDP to the proxy is lost (the splices' port: its
 * UDP splice closed) and only TCP gets through; or lost until the link is
 * over TCP, then spliced to the proxy too (UDP unblocked); or spliced
 * until the link is up over UDP, then lost. */
typedef enum { OVER_UDP, OVER_TCP, UDP_BLOCKED, UDP_RETURNS, UDP_LOST } transport_t;

static const char *const TRANSPORT_NAMES[] = {"", " over TCP", " (UDP blocked: over TCP)",
                                              " (UDP blocked, then back: over UDP)",
                                              " (UDP lost: over TCP)"};

/* The link over TCP (UDP blocked). UDP gets through now, but only small
 * datagrams: the link's first trial session (5 s after its connection
 * came up) is not welcomed, and costs the link nothing; it stays up over
 * TCP. */
static void udp_returns(uv_loop_t *loop, kp_node_t *client, kp_udp_splice_t *sp) {
  kp_addr_t over_tcp = client->sock.local; /* its allocation through the TCP session */
  sp->max_len = 200;
  kp_udp_splice_open(sp);
  uint64_t unblocked = uv_now(loop);
  kp_testnet_run_until(loop, proxied_over_udp, client, 11000);
  kp_node_proxy_info_t pi;
  kp_node_proxy_info(client, &pi);
  printf("small datagrams only, 11 s: %" PRIu64 " too long for the path; the session over %s, "
         "%s\n",
         sp->too_long, pi.tcp ? "TCP" : "UDP", pi.up ? "up" : "down");
  KP_CHECK(sp->too_long > 0 && pi.tcp && pi.up);
  KP_CHECK(pi.udp_trials >= 1 && pi.moves_to_udp == 0 && pi.tcp_trials == 0);
  /* Every datagram gets through: the next trial (10 s after the first
   * gave up, 20 s after UDP opened) is welcomed, and the link is back
   * over UDP. */
  sp->max_len = 0;
  KP_CHECK(kp_testnet_run_until(loop, proxied_over_udp, client, 30000));
  printf("UDP unblocked: the session back over UDP after %llu ms\n",
         (unsigned long long)(uv_now(loop) - unblocked));
  /* The node's socket is at a new allocation: a rebinding. */
  kp_testnet_run_until(loop, NULL, NULL, 500);
  KP_CHECK(client->sock.local.port && !kp_addr_eq(&client->sock.local, &over_tcp));
  uint32_t tried = pi.udp_trials;
  kp_node_proxy_info(client, &pi);
  KP_CHECK(pi.udp_trials > tried && pi.moves_to_udp == 1 && pi.moves_to_tcp == 0);
}

/* The link over UDP. UDP is blocked now (the network changed under it):
 * its proxy falls silent, a trial session over TCP is welcomed, and the
 * link speaks over TCP. */
static void udp_lost(uv_loop_t *loop, kp_node_t *client, kp_udp_splice_t *sp) {
  kp_node_proxy_info_t pi;
  kp_node_proxy_info(client, &pi);
  KP_CHECK(pi.up && !pi.tcp);
  kp_addr_t over_udp = client->sock.local;
  kp_udp_splice_close(sp);
  uint64_t lost = uv_now(loop);
  /* Silence is noticed within a ping (15 s) and 5 s; the trial 5 s on. */
  KP_CHECK(kp_testnet_run_until(loop, proxied_over_tcp, client, 45000));
  printf("UDP lost: the session over TCP after %llu ms\n",
         (unsigned long long)(uv_now(loop) - lost));
  kp_testnet_run_until(loop, NULL, NULL, 500);
  KP_CHECK(client->sock.local.port && !kp_addr_eq(&client->sock.local, &over_udp));
  kp_node_proxy_info(client, &pi);
  KP_CHECK(pi.tcp_trials >= 1 && pi.moves_to_tcp == 1 && pi.udp_trials == 0);
}

/* Runs one echo with the client and/or the server proxied. */
static void run_via(bool client_proxied, bool server_proxied, transport_t transport) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 20, 60000, &tn);
  kp_node_t *pxnode = make_node(&loop, tn.bootstrap, NULL, true);
  KP_CHECK(kp_testnet_run_until(&loop, is_member, pxnode, 20000));
  kp_proxy_service_t *svc;
  KP_CHECK_OK(kp_proxy_service_create(pxnode, NULL, &svc));
  kp_addr_t px_addr;
  char px_text[KP_ADDR_STRLEN + KP_KEY_TEXT_LEN + 2], key_text[KP_KEY_TEXT_LEN + 1];
  kp_node_local_addr(pxnode, &px_addr);
  kp_key_to_text(kp_proxy_service_key(svc), key_text);
  /* The server names the proxy by key and address; the client by address. */
  char addr_text[KP_ADDR_STRLEN];
  kp_addr_format(&px_addr, addr_text, sizeof(addr_text));
  snprintf(px_text, sizeof(px_text), "%s@%s", key_text, addr_text);

  kp_node_t *server = make_node(&loop, tn.bootstrap, server_proxied ? px_text : NULL, false);
  char client_text[KP_ADDR_STRLEN + 8];
  snprintf(client_text, sizeof(client_text), "%s%s", transport == OVER_TCP ? "tcp:" : "",
           addr_text);
  kp_tcp_splice_t splice;
  kp_udp_splice_t udp_splice;
  bool spliced = transport >= UDP_BLOCKED;
  if (spliced) {
    int port = kp_testnet_free_port();
    kp_udp_splice_start(&loop, &udp_splice, port, px_addr.port);
    if (transport == UDP_LOST) kp_udp_splice_open(&udp_splice);
    kp_tcp_splice_start(&loop, &splice, port, px_addr.port);
    snprintf(client_text, sizeof(client_text), "127.0.0.1:%d", port);
  }
  uint64_t start = uv_now(&loop);
  kp_node_t *client = make_node(&loop, tn.bootstrap, client_proxied ? client_text : NULL, false);
  uint64_t up_ms = uv_now(&loop) - start;
  if (spliced && transport != UDP_LOST) {
    /* Through the splice: over TCP, once UDP had its chance (5 s). */
    kp_node_proxy_info_t pi;
    kp_node_proxy_info(client, &pi);
    KP_CHECK(pi.tcp && pi.up && splice.accepted == 1);
    printf("UDP to the proxy lost: its session up over TCP after %llu ms\n",
           (unsigned long long)up_ms);
  }
  if (transport == UDP_RETURNS) udp_returns(&loop, client, &udp_splice);
  if (transport == UDP_LOST) {
    KP_CHECK_EQ(splice.accepted, 0); /* no trial over TCP while UDP gets through */
    udp_lost(&loop, client, &udp_splice);
    KP_CHECK_EQ(splice.accepted, 1);
  }
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  kp_keypair_t skp;
  kp_server_t *srv = serve_echo(&loop, server, &skp);
  echo_t r = {.len = 4 << 20};
  echo_run(&loop, client, &skp, &r);
  /* Who sees what: a proxied side is seen at an allocation of the proxy's
   * (its address, another port); the client's info says it is proxied. */
  KP_CHECK_EQ(r.info.proxy.family != 0, client_proxied);
  kp_addr_t client_px; /* where the client was told its proxy is */
  KP_CHECK_OK(kp_addr_parse(&client_px, client_text + (transport == OVER_TCP ? 4 : 0)));
  if (client_proxied) {
    KP_CHECK(kp_addr_eq(&r.info.proxy, &client_px));
    kp_node_proxy_info_t pi; /* over UDP where UDP works; TCP as asked, or found */
    kp_node_proxy_info(client, &pi);
    KP_CHECK_EQ(pi.tcp, transport == OVER_TCP || transport == UDP_BLOCKED || transport == UDP_LOST);
    /* The echo's 4 MiB back came as PASSes: over UDP each one was handed
     * to the connection where it lay, in the socket's scratch; over TCP
     * each was copied out of the connection's frames. */
    uint64_t in_place, copied;
    kp_proxy_link_rx_counts(client->proxy_link, &in_place, &copied);
    bool over_udp = transport == OVER_UDP || transport == UDP_RETURNS;
    KP_CHECK_MSG(over_udp ? in_place > r.len / 1500 / 2
                          : in_place == 0 && copied > r.len / 1500 / 2,
                 "%" PRIu64 " in place, %" PRIu64 " copied", in_place, copied);
  }
  if (server_proxied) {
    KP_CHECK(kp_addr_same_ip(&r.info.path, &px_addr) && r.info.path.port != px_addr.port);
    KP_CHECK(kp_addr_eq(&r.info.path, &server->sock.local)); /* the server's allocation */
  }
  if (client_proxied) KP_CHECK(kp_addr_eq(&server_info.path, &client->sock.local));
  kp_proxy_counters_t pc;
  kp_proxy_service_counters(svc, &pc);
  printf("client %s%s, server %s: 4 MiB echoed via %s; the proxy: %u sessions, %u allocations, "
         "%" PRIu64 " datagrams out, %" PRIu64 " in, %" PRIu64 " dropped; path %s\n",
         client_proxied ? "proxied" : "direct", TRANSPORT_NAMES[transport],
         server_proxied ? "proxied" : "direct", addr_text, pc.sessions, pc.allocs, pc.sent,
         pc.received, pc.dropped, kp_punch_name(r.info.punch));
  /* (And a session left silent, until it expires.) */
  unsigned sessions = (unsigned)client_proxied + (unsigned)server_proxied;
  KP_CHECK(pc.sessions >= sessions && pc.sessions <= sessions + (transport == UDP_LOST));
  KP_CHECK(pc.sent_bytes > r.len && pc.received_bytes > r.len); /* the streams went through it */
  KP_CHECK_EQ(pc.forged + pc.replayed, 0);
  if (transport == UDP_RETURNS) {
    /* UDP blocked again: a link that fell once takes the silence as that,
     * and goes over TCP again. */
    kp_udp_splice_close(&udp_splice);
    uint64_t blocked_at = uv_now(&loop);
    KP_CHECK(kp_testnet_run_until(&loop, proxied_over_tcp, client, 20000));
    printf("UDP blocked again: the session over TCP again after %llu ms\n",
           (unsigned long long)(uv_now(&loop) - blocked_at));
  }
  echo_end(&loop, &r, srv, server, client);
  /* The sessions said goodbye: their allocations are gone (but those of
   * a session left silent, until they expire). */
  kp_proxy_service_counters(svc, &pc);
  if (transport != UDP_RETURNS && transport != UDP_LOST) KP_CHECK_EQ(pc.allocs, 0);
  if (transport == UDP_BLOCKED || transport == UDP_LOST)
    KP_CHECK(splice.bytes > r.len); /* the streams went through it */
  if (transport == UDP_RETURNS) {
    /* Through the UDP splice: 4 MiB both ways is some 6000 datagrams. */
    KP_CHECK(udp_splice.datagrams > 2 * (r.len / 1500));
    KP_CHECK(splice.bytes < r.len);
  }
  if (spliced) {
    kp_tcp_splice_stop(&splice);
    kp_udp_splice_stop(&udp_splice);
  }
  kp_node_close(pxnode, NULL); /* closes its proxy */
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
}

static void run(bool client_proxied, bool server_proxied) {
  run_via(client_proxied, server_proxied, OVER_UDP);
}

static void test_connect_proxied(void) {
  run(true, false);
}

/* A client whose UDP may be blocked reaches its proxy over TCP. */
static void test_connect_proxied_tcp(void) {
  run_via(true, false, OVER_TCP);
}

/* A client whose UDP to its proxy is lost goes over TCP by itself. */
static void test_udp_blocked_goes_tcp(void) {
  run_via(true, false, UDP_BLOCKED);
}

/* ... and back to UDP once UDP gets through again (not while only small
 * datagrams do). */
static void test_tcp_returns_to_udp(void) {
  run_via(true, false, UDP_RETURNS);
}

/* A client whose UDP stops getting through to its proxy, the link up
 * over UDP, goes over TCP. */
static void test_udp_lost_goes_tcp(void) {
  run_via(true, false, UDP_LOST);
}

static void test_serve_proxied(void) {
  run(false, true);
}

static void test_both_proxied(void) {
  run(true, true);
}

typedef struct found_s {
  unsigned count, matching, done;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  char text[KP_ADDR_STRLEN];
} found_t;

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  found_t *f = arg;
  (void)node;
  f->count++;
  if (!memcmp(rec->public_key, f->key, KP_PUBLIC_KEY_LEN) && rec->data_len == strlen(f->text) &&
      !memcmp(rec->data, f->text, rec->data_len))
    f->matching++;
}

static void on_lookup_done(kp_node_t *node, int status, size_t n,
                           const kp_node_query_stats_t *stats, void *arg) {
  found_t *f = arg;
  (void)node, (void)status, (void)n, (void)stats;
  f->done = 1;
}

static bool lookup_done(void *ctx) {
  return ((found_t *)ctx)->done;
}

static bool has_public(void *ctx) {
  kp_addr_t a;
  return kp_node_public_addr(ctx, &a) == 0;
}

static void lookup_proxies(uv_loop_t *loop, kp_node_t *from, found_t *f) {
  uint8_t target[KP_ID_LEN];
  kp_target_from_topic(KP_PROXY_TOPIC, sizeof(KP_PROXY_TOPIC) - 1, target);
  f->count = f->matching = f->done = 0;
  KP_CHECK_OK(kp_node_lookup(from, target, on_record, on_lookup_done, f));
  KP_CHECK(kp_testnet_run_until(loop, lookup_done, f, 10000));
}

/* A proxy announces itself under kadpunch/proxies/v1 with its key and its
 * own address, and a lookup finds it; a record naming an address other
 * than the one it was announced from is stored nowhere (it would steer
 * peers' sessions at someone who never offered to proxy). */
static void test_announced_and_found(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 12, 20000, &tn);
  found_t f = {0};
  kp_node_t *liar = tn.nodes[5];
  kp_addr_t victim;
  kp_node_local_addr(tn.nodes[7], &victim);
  kp_addr_format(&victim, f.text, sizeof(f.text));
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t target[KP_ID_LEN];
  kp_target_from_topic(KP_PROXY_TOPIC, sizeof(KP_PROXY_TOPIC) - 1, target);
  kp_announce_t *a;
  KP_CHECK_OK(kp_node_announce(liar, target, &kp, f.text, strlen(f.text), NULL, &a));
  kp_testnet_run_until(&loop, NULL, NULL, 2000);
  kp_announce_stop(a, false);
  lookup_proxies(&loop, tn.nodes[2], &f);
  KP_CHECK_EQ(f.count, 0);

  kp_node_t *pxnode = make_node(&loop, tn.bootstrap, NULL, true);
  KP_CHECK(kp_testnet_run_until(&loop, is_member, pxnode, 20000));
  kp_proxy_service_t *svc;
  KP_CHECK_OK(kp_proxy_service_create(pxnode, NULL, &svc));
  memcpy(f.key, kp_proxy_service_key(svc), KP_PUBLIC_KEY_LEN);
  kp_addr_t pub;
  KP_CHECK(kp_testnet_run_until(&loop, has_public, pxnode, 20000));
  KP_CHECK_OK(kp_node_public_addr(pxnode, &pub));
  kp_addr_format(&pub, f.text, sizeof(f.text));
  kp_testnet_run_until(&loop, NULL, NULL, 3000); /* the service's tick announces it */
  lookup_proxies(&loop, tn.nodes[2], &f);
  printf("proxy %s found: %u record(s), %u naming its key and address\n", f.text, f.count,
         f.matching);
  KP_CHECK_EQ(f.count, 1);
  KP_CHECK_EQ(f.matching, 1);
  kp_node_close(pxnode, NULL);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
}

/* The programs: `kadpunch proxy` with an allow list, `kadpunch serve`,
 * and `kadpunch connect --proxy` (by address, and by KEY@address): the
 * message comes back byte-exact, the output and the JSON say "proxied via"
 * the proxy; a key the proxy does not allow gets a clear refusal; and
 * `serve --proxy` serves from the proxy's address. */
static void test_cli_proxied(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 20, 20000, &tn);
  char boot[64], dir[] = "/tmp/kp-proxy-XXXXXX", skey[256], ckey[256], pkey[256], out[8192];
  snprintf(boot, sizeof(boot), "%s", tn.bootstrap);
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(skey, sizeof(skey), "%s/server", dir);
  snprintf(ckey, sizeof(ckey), "%s/client", dir);
  snprintf(pkey, sizeof(pkey), "%s/proxy", dir);
  char spk[KP_KEY_TEXT_LEN + 1], cpk[KP_KEY_TEXT_LEN + 1], ppk[KP_KEY_TEXT_LEN + 1];
  kp_test_keygen(&loop, skey, spk);
  kp_test_keygen(&loop, ckey, cpk);
  kp_test_keygen(&loop, pkey, ppk);
  char pbind[64], by_key[KP_KEY_TEXT_LEN + 72], via[96];
  snprintf(pbind, sizeof(pbind), "127.0.0.1:%d", kp_testnet_free_port());
  snprintf(by_key, sizeof(by_key), "%s@%s", ppk, pbind);
  snprintf(via, sizeof(via), "proxied via %s", pbind);
  const char *proxy[] = {KP_BINARY, "proxy", "--bind",  pbind, "--bootstrap", boot, "--key", pkey,
                         "--allow", cpk,     "--allow", spk,   "--every",     "1",  NULL};
  kp_test_child_t *px = kp_test_spawn(&loop, proxy);
  KP_CHECK(kp_test_child_wait_output(&loop, px, "proxying on", 10000));
  KP_CHECK(strstr(kp_test_child_stdout(px), ppk));
  const char *serve[] = {KP_BINARY, "serve", "--key", skey, "--bootstrap", boot, NULL};
  kp_test_child_t *server = kp_test_spawn(&loop, serve);
  KP_CHECK(kp_test_child_wait_output(&loop, server, "serving", 10000));
  kp_testnet_run_until(&loop, NULL, NULL, 1000);

  static const char message[] = "through-the-proxy-0123456789abcdef";
  const char *connect[] = {KP_BINARY, "connect", spk,   "--key",       ckey, "--message",
                           message,   "--proxy", pbind, "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, connect, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(strstr(out, "connected to") && strstr(out, via) && strstr(out, "34 bytes back"),
               "%s", out);
  const char *json[] = {KP_BINARY, "connect", spk,           "--key", ckey, "--json",
                        "--proxy", by_key,    "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, json, out, sizeof(out), 30000), 0);
  char want[96];
  snprintf(want, sizeof(want), "\"proxy\":\"%s\"", pbind);
  KP_CHECK_MSG(strstr(out, "\"ok\":true") && strstr(out, "\"strategy\":\"proxied\"") &&
                   strstr(out, want) && strstr(out, "\"echo_bytes\":5"),
               "%s", out);
  /* ping speaks through the proxy as the same key (the proxy allows keys). */
  const char *ping[] = {KP_BINARY, "ping",   spk,           "--key", ckey, "--proxy",
                        pbind,     "--json", "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, ping, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(strstr(out, "\"ok\":true"), "%s", out);
  /* Found on the DHT: any proxy (auto), or this one by its key. */
  const char *autop[] = {KP_BINARY, "connect", spk,           "--key", ckey, "--proxy",
                         "auto",    "--json",  "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, autop, out, sizeof(out), 40000), 0);
  KP_CHECK_MSG(strstr(out, "\"strategy\":\"proxied\"") && strstr(out, want) &&
                   strstr(out, "found on the DHT"),
               "%s", out);
  /* A second record under the topic, at a DHT node that is no proxy (a
   * record outliving its proxy looks like this): auto asks each a KEY?,
   * puts the one that answers first and says the other did not answer. */
  kp_node_t *stale = tn.nodes[5];
  kp_addr_t stale_addr;
  kp_node_local_addr(stale, &stale_addr);
  char stale_text[KP_ADDR_STRLEN], first[KP_KEY_TEXT_LEN + 96];
  kp_addr_format(&stale_addr, stale_text, sizeof(stale_text));
  kp_keypair_t stale_kp;
  kp_keypair_generate(&stale_kp);
  uint8_t topic[KP_ID_LEN];
  kp_target_from_topic(KP_PROXY_TOPIC, sizeof(KP_PROXY_TOPIC) - 1, topic);
  kp_announce_t *stale_ann;
  KP_CHECK_OK(
      kp_node_announce(stale, topic, &stale_kp, stale_text, strlen(stale_text), NULL, &stale_ann));
  kp_testnet_run_until(&loop, NULL, NULL, 2000);
  snprintf(first, sizeof(first), "through proxy %s@%s (", ppk, pbind);
  for (int k = 0; k < 3; k++) { /* whichever the lookup finds first */
    KP_CHECK_EQ(kp_test_run_cli(&loop, autop, out, sizeof(out), 40000), 0);
    KP_CHECK_MSG(strstr(out, first) && strstr(out, "(no answer)") && strstr(out, stale_text) &&
                     strstr(out, "\"strategy\":\"proxied\"") && strstr(out, want),
                 "%s", out);
  }
  kp_announce_stop(stale_ann, false);
  const char *bykey[] = {KP_BINARY, "connect", spk,           "--key", ckey, "--proxy",
                         ppk,       "--json",  "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, bykey, out, sizeof(out), 40000), 0);
  KP_CHECK_MSG(strstr(out, "\"strategy\":\"proxied\"") && strstr(out, want), "%s", out);
  const char *nokey[] = {KP_BINARY, "connect", spk,           "--key", ckey, "--proxy",
                         cpk,       "--json",  "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, nokey, out, sizeof(out), 40000), 1);
  KP_CHECK_MSG(strstr(out, "no proxy with that key announced"), "%s", out);
  /* The server saw the client at an allocation on the proxy's address. */
  char seen[96];
  snprintf(seen, sizeof(seen), "to 127.0.0.1:");
  KP_CHECK(kp_test_child_wait_output(&loop, server, seen, 5000));
  /* A key the proxy does not allow: refused, and told so. */
  char stranger[256];
  snprintf(stranger, sizeof(stranger), "%s/stranger", dir);
  char xpk[KP_KEY_TEXT_LEN + 1];
  kp_test_keygen(&loop, stranger, xpk);
  const char *refused[] = {KP_BINARY, "connect", spk,           "--key", stranger,
                           "--proxy", pbind,     "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, refused, out, sizeof(out), 30000), 1);
  KP_CHECK_MSG(strstr(out, "refused this node: key not allowed"), "%s", out);
  KP_CHECK_EQ(kp_test_child_stop(&loop, server, 10000), 0);

  /* serve --proxy: the server speaks from the proxy; a plain client
   * reaches it there. */
  const char *pserve[] = {KP_BINARY, "serve",   "--key", skey, "--bootstrap",
                          boot,      "--proxy", by_key,  NULL};
  server = kp_test_spawn(&loop, pserve);
  KP_CHECK(kp_test_child_wait_output(&loop, server, "serving", 10000));
  kp_testnet_run_until(&loop, NULL, NULL, 1500);
  const char *plain[] = {KP_BINARY, "connect",     spk,  "--key", ckey,
                         "--json",  "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, plain, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(strstr(out, "\"ok\":true") && strstr(out, "\"echo_bytes\":5"), "%s", out);
  KP_CHECK(kp_test_child_wait_output(&loop, server, via, 5000));
  KP_CHECK_EQ(kp_test_child_stop(&loop, server, 10000), 0);
  KP_CHECK(kp_test_child_wait_output(&loop, px, "1 refused", 5000));
  KP_CHECK_EQ(kp_test_child_stop(&loop, px, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
  kp_test_sh("rm -rf %s", dir);
}

/* ---- Across families ------------------------------------------------------------------------- */

static bool both_public(void *ctx) {
  kp_node_t *n = ctx;
  kp_addr_t a;
  return n->sibling && kp_node_public_addr(n, &a) == 0 && kp_node_public_addr(n->sibling, &a) == 0;
}

/* One echo: a server whose session with the dual-stack proxy runs over
 * link_family borrows an address of the other family from it, and a
 * client of that other family only reaches it by key. */
static void bridge_one(uv_loop_t *loop, kp_testnet_t *tn, kp_node_t *pxnode,
                       kp_proxy_service_t *svc, bool link_v6) {
  kp_node_t *px_link_node = link_v6 ? pxnode->sibling : pxnode;
  char key_text[KP_KEY_TEXT_LEN + 1], px_addr[KP_ADDR_STRLEN], px_text[160];
  kp_key_to_text(kp_proxy_service_key(svc), key_text);
  kp_addr_format(&px_link_node->sock.local, px_addr, sizeof(px_addr));
  snprintf(px_text, sizeof(px_text), "%s@%s", key_text, px_addr);
  const char *bind = link_v6 ? "127.0.0.1:0" : "[::1]:0";
  const char *boot = link_v6 ? tn->bootstrap : tn->bootstrap6;
  kp_node_t *server = node_on(loop, bind, boot, false, px_text, true);
  kp_node_t *client = node_on(loop, bind, boot, false, NULL, true);
  /* The session runs over one family, the server's address is of the
   * other: an allocation on the proxy's node of that family. */
  kp_node_t *lender = link_v6 ? pxnode : pxnode->sibling;
  KP_CHECK_EQ(kp_proxy_link_addr(server->proxy_link)->family, link_v6 ? KP_AF_INET6 : KP_AF_INET);
  KP_CHECK(kp_addr_same_ip(&server->sock.local, &lender->sock.local));
  kp_testnet_run_until(loop, NULL, NULL, 1000);
  kp_keypair_t skp;
  kp_server_t *srv = serve_echo(loop, server, &skp);
  kp_proxy_counters_t before, after;
  kp_proxy_service_counters(svc, &before);
  echo_t r = {.len = 4 << 20};
  echo_run(loop, client, &skp, &r);
  /* The client met the server at its allocation, and the proxy carried
   * the echo between the families. */
  KP_CHECK(kp_addr_eq(&r.info.path, &server->sock.local));
  kp_proxy_service_counters(svc, &after);
  KP_CHECK(after.sent_bytes - before.sent_bytes > r.len &&
           after.received_bytes - before.received_bytes > r.len);
  char path[KP_ADDR_STRLEN];
  printf("server's session with the proxy over %s, its address %s: 4 MiB echoed with an %s-only "
         "client\n",
         link_v6 ? "IPv6" : "IPv4", kp_addr_format(&r.info.path, path, sizeof(path)),
         link_v6 ? "IPv4" : "IPv6");
  echo_end(loop, &r, srv, server, client);
}

/* A dual-stack proxy bridges families: an IPv6-only server borrows an
 * IPv4 address from it and an IPv4-only client reaches it by key, and the
 * other way round. It announces itself over both families, each record
 * naming its address of that family first and the other after it. */
static void test_bridges_families(void) {
  uv_loop_t loop;
  kp_testnet_t tn;
  kp_test_dual_testnet(&loop, &tn);
  for (int i = 0; i < 6; i++)
    for (unsigned stacks = KP_TESTNET_V4; stacks <= (KP_TESTNET_V4 | KP_TESTNET_V6); stacks++)
      KP_CHECK_OK(kp_testnet_add_stacks(&tn, stacks, KP_NODE_AUTO, 0, NULL));
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));
  kp_node_options_t po;
  kp_node_options_init(&po);
  char b4[32], b6[32];
  snprintf(b4, sizeof(b4), "127.0.0.1:%d", kp_testnet_free_port());
  snprintf(b6, sizeof(b6), "[::1]:%d", kp_testnet_free_port());
  po.bind = b4;
  po.bind_also = b6;
  po.member_stable_ms = 0;
  po.mode = KP_NODE_MEMBER;
  const char *boot[2] = {tn.bootstrap, tn.bootstrap6};
  po.bootstrap = boot;
  po.bootstrap_count = 2;
  kp_node_t *pxnode;
  KP_CHECK_OK(kp_node_create(&loop, &po, &pxnode));
  KP_CHECK(kp_testnet_run_until(&loop, both_public, pxnode, 20000));
  kp_proxy_service_t *svc;
  KP_CHECK_OK(kp_proxy_service_create(pxnode, NULL, &svc));
  kp_testnet_run_until(&loop, NULL, NULL, 3000); /* the service's tick announces it */

  /* Found over IPv6, naming both addresses, the IPv6 one first. */
  kp_node_t *v6only;
  KP_CHECK_OK(kp_testnet_add_stacks(&tn, KP_TESTNET_V6, KP_NODE_AUTO, 0, &v6only));
  KP_CHECK(kp_testnet_wait_joined(&tn, 20000));
  found_t f = {0};
  memcpy(f.key, kp_proxy_service_key(svc), KP_PUBLIC_KEY_LEN);
  kp_addr_t p4, p6;
  KP_CHECK_OK(kp_node_public_addr(pxnode, &p4));
  KP_CHECK_OK(kp_node_public_addr(pxnode->sibling, &p6));
  char t4[KP_ADDR_STRLEN], t6[KP_ADDR_STRLEN];
  snprintf(f.text, sizeof(f.text), "%s %s", kp_addr_format(&p6, t6, sizeof(t6)),
           kp_addr_format(&p4, t4, sizeof(t4)));
  lookup_proxies(&loop, v6only, &f);
  KP_CHECK_MSG(f.matching >= 1, "%u records, none naming %s", f.count, f.text);

  bridge_one(&loop, &tn, pxnode, svc, true);
  bridge_one(&loop, &tn, pxnode, svc, false);
  kp_proxy_counters_t pc;
  kp_proxy_service_counters(svc, &pc);
  KP_CHECK_EQ(pc.allocs, 0); /* the sessions said goodbye */
  KP_CHECK_EQ(pc.forged + pc.replayed, 0);
  kp_node_close(pxnode, NULL);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
}

/* ---- Losing every proxy ------------------------------------------------------------------------
 */

typedef struct finder_s {
  kp_node_t *node;
  uv_timer_t timer;
  unsigned asked;
} finder_t;

static void on_found(kp_node_t *node, int status, const kp_node_peer_t *peers, size_t count,
                     const kp_node_query_stats_t *stats, void *arg) {
  (void)node, (void)status, (void)peers, (void)count, (void)stats, (void)arg;
}

/* The node keeps asking the DHT something (what a busy node does), so a
 * proxy that stops answering is noticed within its 5 s. */
static void on_find_timer(uv_timer_t *t) {
  finder_t *f = t->data;
  uint8_t target[KP_ID_LEN];
  randombytes_buf(target, sizeof(target));
  if (!kp_node_find_node(f->node, target, on_found, NULL)) f->asked++;
}

static bool on_own(void *ctx) {
  return kp_proxy_link_on_own(((kp_node_t *)ctx)->proxy_link);
}

static bool through_proxy(void *ctx) {
  kp_node_t *n = ctx;
  return !kp_proxy_link_on_own(n->proxy_link) && kp_proxy_link_up(n->proxy_link);
}

static kp_node_t *proxy_node_at(uv_loop_t *loop, const char *bind, const char *boot,
                                const kp_keypair_t *id, kp_proxy_service_t **svc) {
  kp_node_t *n = node_on(loop, bind, boot, true, NULL, false);
  kp_proxy_service_options_t po;
  kp_proxy_service_options_init(&po);
  po.identity = id;
  po.announce = false;
  KP_CHECK_OK(kp_proxy_service_create(n, &po, svc));
  return n;
}

/* One connect by key from client to skp's server: 4 MiB echoed; whether it
 * says it went through a proxy. */
static bool echo_once(uv_loop_t *loop, kp_node_t *client, const kp_keypair_t *skp) {
  echo_t r = {.len = 1 << 20};
  echo_run(loop, client, skp, &r);
  kp_stream_close(r.stream, NULL);
  kp_conn_close(r.conn, 0);
  free(r.data);
  return r.info.proxy.family != 0;
}

/* A proxied node that does not keep its addresses to itself outlives its
 * only proxy: once the proxy is silent it speaks from a socket of its own
 * (its connects work, and are not called proxied), and once a proxy
 * answers at that address again it speaks through it again. */
static void test_every_proxy_lost(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 12, 60000, &tn);
  char pbind[32], px_text[160], key_text[KP_KEY_TEXT_LEN + 1];
  snprintf(pbind, sizeof(pbind), "127.0.0.1:%d", kp_testnet_free_port());
  kp_keypair_t pid;
  kp_keypair_generate(&pid);
  kp_proxy_service_t *svc;
  kp_node_t *pxnode = proxy_node_at(&loop, pbind, tn.bootstrap, &pid, &svc);
  kp_key_to_text(pid.public_key, key_text);
  snprintf(px_text, sizeof(px_text), "%s@%s", key_text, pbind);
  kp_node_t *client = node_on(&loop, "127.0.0.1:0", tn.bootstrap, false, px_text, false);
  kp_node_t *server = make_node(&loop, tn.bootstrap, NULL, false);
  kp_keypair_t skp;
  kp_server_t *srv = serve_echo(&loop, server, &skp);
  KP_CHECK(echo_once(&loop, client, &skp));

  /* The proxy goes: within its 5 s of silence the client speaks from its
   * own socket, and connects from there. */
  finder_t f = {.node = client};
  uv_timer_init(&loop, &f.timer);
  f.timer.data = &f;
  uv_timer_start(&f.timer, on_find_timer, 200, 500);
  kp_node_close(pxnode, NULL);
  uint64_t gone = uv_now(&loop);
  KP_CHECK(kp_testnet_run_until(&loop, on_own, client, 15000));
  uint64_t own_ms = uv_now(&loop) - gone;
  kp_node_proxy_info_t pi;
  kp_node_proxy_info(client, &pi);
  KP_CHECK(pi.proxied && pi.on_own && pi.falls == 1 && pi.proxy.port != 0);
  kp_addr_t own_addr = client->sock.local;
  KP_CHECK(own_addr.family == KP_AF_INET && own_addr.port != 0);
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  KP_CHECK(!echo_once(&loop, client, &skp));

  /* A proxy answers there again: back through it. */
  pxnode = proxy_node_at(&loop, pbind, tn.bootstrap, &pid, &svc);
  gone = uv_now(&loop);
  KP_CHECK(kp_testnet_run_until(&loop, through_proxy, client, 60000));
  uint64_t back_ms = uv_now(&loop) - gone;
  kp_node_proxy_info(client, &pi);
  KP_CHECK(pi.proxied && pi.up && !pi.on_own && pi.falls == 1);
  kp_testnet_run_until(&loop, NULL, NULL, 1000);
  KP_CHECK(echo_once(&loop, client, &skp));
  char text[KP_ADDR_STRLEN];
  printf("the proxy killed: speaking from %s after %llu ms, connects there; the proxy back: "
         "through it again after %llu ms (%u DHT queries meanwhile)\n",
         kp_addr_format(&own_addr, text, sizeof(text)), (unsigned long long)own_ms,
         (unsigned long long)back_ms, f.asked);
  uv_close((uv_handle_t *)&f.timer, NULL);
  kp_server_close(srv);
  kp_node_close(server, NULL);
  kp_node_close(client, NULL);
  kp_node_close(pxnode, NULL);
  kp_testnet_destroy(&tn);
  uv_run(&loop, UV_RUN_DEFAULT);
  KP_CHECK_EQ(uv_loop_close(&loop), 0);
}

static const kp_test_case_t cases[] = {
    KP_CASE(cli_proxied, loopback, 120),          KP_CASE(announced_and_found, loopback, 60),
    KP_CASE(connect_proxied, loopback, 120),      KP_CASE(serve_proxied, loopback, 120),
    KP_CASE(both_proxied, loopback, 120),         KP_CASE(connect_proxied_tcp, loopback, 120),
    KP_CASE(bridges_families, loopback, 120),     KP_CASE(every_proxy_lost, loopback, 150),
    KP_CASE(udp_blocked_goes_tcp, loopback, 120), KP_CASE(tcp_returns_to_udp, loopback, 120),
    KP_CASE(udp_lost_goes_tcp, loopback, 120),
};

KP_TEST_MAIN(cases)
