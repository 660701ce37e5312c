/* SPDX-License-Identifier: MIT */
/* SOCKS through a peer and UDP services, on loopback, with the kadpunch
 * program: `serve --socks` and `connect --socks` in front of TCP servers
 * and SOCKS clients in this process; `serve --forward-udp` and `connect
 * --listen-udp` in front of a UDP echo, driven by udp_pump. Every program
 * is started here and stopped by its PID. */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "node/cli/cli_socks_codec.h"
#include "tests/harness/test.h"
#include "tests/loopback/socks_peers.h"
#include "tests/loopback/tcp_peers.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define NODES 12
#define MAX_CHILDREN 4

static int running[MAX_CHILDREN];

static void kill_running(void) {
  for (size_t i = 0; i < MAX_CHILDREN; i++)
    if (running[i] > 0) kill(running[i], SIGKILL);
}

static kp_test_child_t *track(kp_test_child_t *c) {
  static bool registered;
  if (!registered) atexit(kill_running);
  registered = true;
  for (size_t i = 0; i < MAX_CHILDREN; i++)
    if (!running[i]) {
      running[i] = kp_test_child_pid(c);
      return c;
    }
  KP_CHECK_MSG(false, "more than %d programs at once", MAX_CHILDREN);
  return c;
}

static int stop(uv_loop_t *loop, kp_test_child_t *c) {
  int pid = kp_test_child_pid(c);
  int status = kp_test_child_stop(loop, c, 10000);
  for (size_t i = 0; i < MAX_CHILDREN; i++)
    if (running[i] == pid) running[i] = 0;
  return status;
}

typedef struct fx_s {
  uv_loop_t loop;
  kp_testnet_t tn;
  char dir[32], skey[256], ckey[256], control[256], spk[KP_KEY_TEXT_LEN + 1],
      cpk[KP_KEY_TEXT_LEN + 1];
  kp_tcp_server_t srv;
  kp_test_child_t *server, *client, *echo;
  int port;      /* where the client listens (TCP for --socks, UDP for --listen-udp) */
  int echo_port; /* the UDP echo's */
} fx_t;

static void fx_up(fx_t *f) {
  memset(f, 0, sizeof(*f));
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&f->loop);
  kp_test_testnet_up(&f->loop, NODES, 20000, &f->tn);
  snprintf(f->dir, sizeof(f->dir), "/tmp/kp-socks-XXXXXX");
  KP_CHECK(mkdtemp(f->dir) != NULL);
  snprintf(f->skey, sizeof(f->skey), "%s/server", f->dir);
  snprintf(f->ckey, sizeof(f->ckey), "%s/client", f->dir);
  snprintf(f->control, sizeof(f->control), "%s/control.sock", f->dir);
  kp_test_keygen(&f->loop, f->skey, f->spk);
  kp_test_keygen(&f->loop, f->ckey, f->cpk);
}

/* `kadpunch serve` with extra (NULL-terminated), only our client let in. */
static void fx_serve(fx_t *f, const char *const *extra) {
  const char *argv[32] = {KP_BINARY,       "serve",   "--key", f->skey,     "--bootstrap",
                          f->tn.bootstrap, "--allow", f->cpk,  "--control", f->control};
  size_t n = 10;
  for (size_t i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  f->server = track(kp_test_spawn(&f->loop, argv));
  KP_CHECK(kp_test_child_wait_output(&f->loop, f->server, "serving", 10000));
  KP_CHECK(kp_test_wait_announced(&f->loop, f->tn.bootstrap, f->spk, 20000));
}

/* `kadpunch connect KEY MODE 127.0.0.1:0 [extra]`: waits until connected;
 * port gets the one it printed after `says`. */
static void fx_connect(fx_t *f, const char *mode, const char *says, const char *const *extra) {
  const char *argv[24] = {KP_BINARY, "connect",     f->spk,        "--key",        f->ckey,
                          mode,      "127.0.0.1:0", "--bootstrap", f->tn.bootstrap};
  size_t n = 9;
  for (size_t i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  f->client = track(kp_test_spawn(&f->loop, argv));
  KP_CHECK(kp_test_child_wait_output(&f->loop, f->client, "connected to", 20000));
  const char *out = kp_test_child_stdout(f->client), *at = strstr(out, says);
  KP_CHECK_MSG(at, "%s", out);
  f->port = atoi(at + strlen(says));
  KP_CHECK(f->port > 0);
}

static void fx_down(fx_t *f) {
  if (f->client) KP_CHECK_EQ(stop(&f->loop, f->client), 0);
  if (f->server) KP_CHECK_EQ(stop(&f->loop, f->server), 0);
  if (f->echo) stop(&f->loop, f->echo); /* killed: it never exits by itself */
  if (f->srv.port) kp_tcp_server_stop(&f->srv);
  kp_testnet_destroy(&f->tn);
  kp_test_check_loop_closes(&f->loop);
  kp_test_sh("rm -rf %s", f->dir);
}

/* A TCP echo here, serve --socks allowing it (and extra rules), connect
 * --socks. */
static void fx_socks(fx_t *f, const char *const *rules) {
  f->srv.mode = KP_TCP_ECHO;
  kp_tcp_server_start(&f->loop, &f->srv);
  char allow[64];
  snprintf(allow, sizeof(allow), "127.0.0.1:%d", f->srv.port);
  const char *extra[16] = {"--socks", "--socks-allow", allow};
  size_t n = 3;
  for (size_t i = 0; rules && rules[i]; i++) {
    extra[n++] = "--socks-allow";
    extra[n++] = rules[i];
  }
  extra[n] = NULL;
  fx_serve(f, extra);
  fx_connect(f, "--socks", "socks on 127.0.0.1:", NULL);
}

typedef struct socks_set_s {
  kp_socks_client_t *c;
  size_t n;
} socks_set_t;

static bool all_closed(void *ctx) {
  socks_set_t *s = ctx;
  for (size_t i = 0; i < s->n; i++)
    if (!s->c[i].closed) return false;
  return true;
}

/* ---- Cases ----------------------------------------------------------------------------------- */

/* 50 SOCKS connections at once (40 by address, 10 by a name the server
 * resolves), each echoing 256 KiB byte-exact, all streams of one
 * kadpunch connection. */
static void test_socks_many(void) {
  enum { N = 50, LEN = 256 * 1024 };
  fx_t f;
  fx_up(&f);
  fx_socks(&f, NULL);
  kp_socks_client_t *c = calloc(N, sizeof(*c));
  for (size_t i = 0; i < N; i++) {
    c[i].out_len = kp_socks_connect_request(c[i].out, i < 40 ? "127.0.0.1" : "localhost",
                                            (uint16_t)f.srv.port);
    c[i].tx_id = 100 + i;
    c[i].tx_len = LEN;
    kp_socks_client_start(&f.loop, &c[i], f.port);
  }
  socks_set_t set = {c, N};
  uint64_t t0 = kp_test_now_ms();
  KP_CHECK(kp_testnet_run_until(&f.loop, all_closed, &set, 30000));
  for (size_t i = 0; i < N; i++)
    KP_CHECK_MSG(
        c[i].rep == 0 && c[i].eof && !c[i].error && c[i].received == LEN && !c[i].mismatches,
        "client %zu: reply %d, eof %d, error %s, %" PRIu64 " bytes back, %" PRIu64 " wrong", i,
        c[i].rep, c[i].eof, c[i].error ? uv_strerror(c[i].error) : "none", c[i].received,
        c[i].mismatches);
  printf("%d SOCKS connections echoed %d KiB each in %" PRIu64 " ms\n", N, LEN / 1024,
         kp_test_now_ms() - t0);
  KP_CHECK_EQ(f.srv.accepted, N);
  const char *out = kp_test_child_stdout(f.server), *first = strstr(out, "connection from");
  KP_CHECK_MSG(first && !strstr(first + 1, "connection from"), "%s", out);
  free(c);
  fx_down(&f);
}

typedef struct refusal_s {
  const char *dst;
  int port; /* 0: the echo's */
  uint8_t cmd;
  int want;           /* the reply code */
  const char *logged; /* what serve (or, for what it refuses itself, connect) says */
} refusal_t;

/* Destinations outside the rules get "connection not allowed by ruleset",
 * whether named, IPv4 or IPv6; a name that does not resolve, a port that
 * refuses, a command streams do not carry get theirs; the server says
 * why on stderr each time. A name rule never opens loopback. */
static void test_socks_refusals(void) {
  fx_t f;
  fx_up(&f);
  int closed = kp_test_free_tcp_port();
  char closed_rule[64];
  snprintf(closed_rule, sizeof(closed_rule), "127.0.0.1:%d", closed);
  const char *rules[] = {closed_rule, "localhost:1-65535", "10.255.255.0/24:80", NULL};
  fx_socks(&f, rules);
  const refusal_t cases[] = {
      {"127.0.0.1", 1, KP_CLI_SOCKS_CONNECT, KP_CLI_SOCKS_NOT_ALLOWED, "127.0.0.1:1 refused"},
      {"::1", 0, KP_CLI_SOCKS_CONNECT, KP_CLI_SOCKS_NOT_ALLOWED, "[::1]:"},
      {"203.0.113.9", 80, KP_CLI_SOCKS_CONNECT, KP_CLI_SOCKS_NOT_ALLOWED, "203.0.113.9:80"},
      {"localhost", 2, KP_CLI_SOCKS_CONNECT, KP_CLI_SOCKS_NOT_ALLOWED, "localhost:2 refused"},
      {"no-such-host.invalid", 80, KP_CLI_SOCKS_CONNECT, KP_CLI_SOCKS_HOST_UNREACHABLE,
       "no-such-host.invalid:80 refused: host unreachable"},
      {"127.0.0.1", closed, KP_CLI_SOCKS_CONNECT, KP_CLI_SOCKS_REFUSED,
       "failed: connection refused"},
      {"127.0.0.1", 0, KP_CLI_SOCKS_BIND, KP_CLI_SOCKS_BAD_COMMAND, "command 2: command not"},
  };
  enum { N = sizeof(cases) / sizeof(cases[0]) };
  kp_socks_client_t c[N];
  memset(c, 0, sizeof(c));
  for (size_t i = 0; i < N; i++) {
    int port = cases[i].port ? cases[i].port : f.srv.port;
    c[i].out_len = kp_socks_connect_request(c[i].out, cases[i].dst, (uint16_t)port);
    c[i].out[4] = cases[i].cmd; /* after the greeting: VER CMD */
    c[i].tx_len = 1024;
    kp_socks_client_start(&f.loop, &c[i], f.port);
  }
  socks_set_t set = {c, N};
  KP_CHECK(kp_testnet_run_until(&f.loop, all_closed, &set, 20000));
  for (size_t i = 0; i < N; i++) {
    KP_CHECK_MSG(c[i].rep == cases[i].want, "%s: reply %d, wanted %d", cases[i].dst, c[i].rep,
                 cases[i].want);
    KP_CHECK_MSG(c[i].eof || c[i].error, "%s: still open", cases[i].dst);
    kp_test_child_t *who = cases[i].cmd == KP_CLI_SOCKS_CONNECT ? f.server : f.client;
    KP_CHECK_MSG(kp_test_child_wait_output(&f.loop, who, cases[i].logged, 2000), "no log line '%s'",
                 cases[i].logged);
  }
  KP_CHECK_EQ(f.srv.accepted, 0);
  fx_down(&f);
}

typedef struct bad_s {
  uint8_t bytes[40];
  size_t len;
  const uint8_t *want; /* what comes back before the close */
  size_t want_len;
} bad_t;

/* Runs one malformed exchange: sends the bytes, ends its side, and checks
 * that exactly want came back before the connection closed. */
static void malformed(fx_t *f, const uint8_t *bytes, size_t len, const uint8_t *want,
                      size_t want_len, bool eof_after) {
  kp_socks_client_t c;
  memset(&c, 0, sizeof(c));
  memcpy(c.out, bytes, len);
  c.out_len = len;
  c.eof_after = eof_after;
  kp_socks_client_start(&f->loop, &c, f->port);
  socks_set_t set = {&c, 1};
  KP_CHECK(kp_testnet_run_until(&f->loop, all_closed, &set, 10000));
  KP_CHECK_MSG(c.in_len == want_len && !memcmp(c.in, want, want_len),
               "%zu bytes sent (first %02x): %zu back, wanted %zu", len, len ? bytes[0] : 0,
               c.in_len, want_len);
  KP_CHECK(c.eof || c.error);
}

/* Every truncation of a greeting and of requests for IPv4, IPv6 and a
 * name; bad versions; bad address types; no acceptable method; names no
 * host has; bytes that are not SOCKS at all: each gets its error reply or
 * a closed socket, never a success, and connect --socks carries on. */
static void test_socks_malformed(void) {
  fx_t f;
  fx_up(&f);
  fx_socks(&f, NULL);
  const uint8_t ok_greet[] = {5, 0}, none[1] = {0};
  uint8_t req[3][64];
  size_t req_len[3];
  req_len[0] = kp_socks_connect_request(req[0], "10.1.2.3", 80);
  req_len[1] = kp_socks_connect_request(req[1], "fd00::1", 80);
  req_len[2] = kp_socks_connect_request(req[2], "web.lan", 80);
  unsigned runs = 0;
  for (int r = 0; r < 3; r++) {
    for (size_t n = 0; n < req_len[r]; n++, runs++)
      malformed(&f, req[r], n, n < 3 ? none : ok_greet, n < 3 ? 0 : 2, true);
  }
  uint8_t reply_atyp[10], reply_fail[10];
  kp_cli_socks_put_reply(reply_atyp, KP_CLI_SOCKS_BAD_ADDRESS, NULL);
  kp_cli_socks_put_reply(reply_fail, KP_CLI_SOCKS_FAILURE, NULL);
  uint8_t greet_atyp[13];
  memcpy(greet_atyp, ok_greet, 2);
  memcpy(greet_atyp + 2, reply_atyp, 10);
  uint8_t greet_fail[12];
  memcpy(greet_fail, ok_greet, 2);
  memcpy(greet_fail + 2, reply_fail, 10);
  const uint8_t no_method[] = {5, 0xff};
  const bad_t bad[] = {
      {{4, 1, 0, 80, 127, 0, 0, 1, 0}, 9, none, 0},                    /* SOCKS4 */
      {{5, 1, 2}, 3, no_method, 2},                                    /* username only */
      {{5, 0}, 2, no_method, 2},                                       /* no methods at all */
      {{5, 1, 0, 4, 1, 0, 1, 10, 1, 2, 3, 0, 80}, 13, ok_greet, 2},    /* request version 4 */
      {{5, 1, 0, 5, 1, 0, 0, 10, 1, 2, 3, 0, 80}, 13, greet_atyp, 12}, /* type 0 */
      {{5, 1, 0, 5, 1, 0, 2, 10, 1, 2, 3, 0, 80}, 13, greet_atyp, 12}, /* type 2 */
      {{5, 1, 0, 5, 1, 0, 5, 10, 1, 2, 3, 0, 80}, 13, greet_atyp, 12}, /* type 5 */
      {{5, 1, 0, 5, 1, 0, 0xff, 0, 80}, 9, greet_atyp, 12},            /* type 255 */
      {{5, 1, 0, 5, 1, 0, 3, 0, 0, 80}, 10, greet_fail, 12},           /* an empty name */
      {{5, 1, 0, 5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 80}, 13, greet_fail, 12},
      {{5, 1, 0, 5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80}, 13, greet_fail, 12},
      {{'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P'}, 10, none, 0},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++, runs++)
    malformed(&f, bad[i].bytes, bad[i].len, bad[i].want, bad[i].want_len, false);
  /* Still serving, and no malformed request reached the peer. */
  kp_socks_client_t c;
  memset(&c, 0, sizeof(c));
  c.out_len = kp_socks_connect_request(c.out, "127.0.0.1", (uint16_t)f.srv.port);
  c.tx_id = 7;
  c.tx_len = 64 * 1024;
  kp_socks_client_start(&f.loop, &c, f.port);
  socks_set_t set = {&c, 1};
  KP_CHECK(kp_testnet_run_until(&f.loop, all_closed, &set, 10000));
  KP_CHECK(c.rep == 0 && c.received == c.tx_len && !c.mismatches);
  KP_CHECK(!strstr(kp_test_child_stdout(f.server), "refused"));
  printf("%u malformed exchanges answered or closed; a good one after them works\n", runs);
  fx_down(&f);
}

/* ---- UDP ----------------------------------------------------------------------------------------
 */

static void fx_udp(fx_t *f, const char *const *serve_extra) {
  char echo_at[64];
  int port = kp_test_free_udp_port();
  snprintf(echo_at, sizeof(echo_at), "127.0.0.1:%d", port);
  const char *echo_argv[] = {KP_UDP_ECHO, echo_at, NULL};
  f->echo = track(kp_test_spawn(&f->loop, echo_argv));
  KP_CHECK(kp_test_child_wait_output(&f->loop, f->echo, "udp echo on", 5000));
  char fwd[80];
  snprintf(fwd, sizeof(fwd), "echo=%s", echo_at);
  const char *extra[16] = {"--forward-udp", fwd};
  size_t n = 2;
  for (size_t i = 0; serve_extra && serve_extra[i]; i++) extra[n++] = serve_extra[i];
  extra[n] = NULL;
  fx_serve(f, extra);
  const char *cextra[] = {"--service", "echo", NULL};
  fx_connect(f, "--listen-udp", "listening on udp 127.0.0.1:", cextra);
  f->echo_port = port;
}

/* udp_pump through ADDR:PORT; out gets its line. */
static int pump(fx_t *f, int port, const char *count, const char *window, char *out, size_t cap) {
  char to[64];
  snprintf(to, sizeof(to), "127.0.0.1:%d", port);
  const char *argv[] = {KP_UDP_PUMP, to, count, "200", window, "30000", NULL};
  return kp_test_run_cli(&f->loop, argv, out, cap, 40000);
}

/* 10,000 datagrams echoed through connect --listen-udp and serve
 * --forward-udp: every one back, none reordered, none doubled; next to
 * the same echo reached directly. */
static void test_udp_echo(void) {
  fx_t f;
  fx_up(&f);
  fx_udp(&f, NULL);
  char out[512], direct[512];
  int rc = pump(&f, f.port, "10000", "64", out, sizeof(out));
  KP_CHECK_MSG(rc == 0 && strstr(out, "received 10000 lost 0 reordered 0 duplicates 0 corrupt 0"),
               "%s", out);
  printf("through kadpunch: %s", out);
  KP_CHECK_EQ(pump(&f, f.echo_port, "10000", "64", direct, sizeof(direct)), 0);
  printf("direct:           %s", direct);
  fx_down(&f);
}

/* One answer line from serve's control socket. */
static void control_ask(const char *path, char *out, size_t cap) {
  const char *request = "{\"cmd\":\"serve\"}\n";
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
  KP_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  KP_CHECK(write(fd, request, strlen(request)) == (ssize_t)strlen(request));
  size_t n = 0;
  while (n + 1 < cap && !memchr(out, '\n', n)) {
    ssize_t r = read(fd, out + n, cap - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  out[n] = '\0';
  close(fd);
}

static long counter(const char *json, const char *name) {
  char key[64];
  snprintf(key, sizeof(key), "\"%s\":", name);
  const char *at = strstr(json, key);
  KP_CHECK_MSG(at, "no %s in %s", name, json);
  return atol(at + strlen(key));
}

typedef struct senders_s {
  uv_udp_t sock[300];
  unsigned sent, replies;
} senders_t;

static void on_send_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  static char b[256];
  (void)h, (void)hint;
  *buf = uv_buf_init(b, sizeof(b));
}

static void on_reply(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags) {
  senders_t *s = h->data;
  (void)buf, (void)from, (void)flags;
  if (n > 0) s->replies++;
}

static bool all_replied(void *ctx) {
  senders_t *s = ctx;
  return s->replies >= s->sent;
}

/* 300 senders, 50 at a time (a burst of 300 would find the connection's
 * datagram queue full, by design): each gets its answer, the server holds
 * at most 256 flows of the connection (the least recently used give way);
 * with --udp-idle 1 every flow is gone two seconds after the last
 * datagram. */
static void test_udp_flows_bounded(void) {
  fx_t f;
  fx_up(&f);
  const char *extra[] = {"--udp-idle", "1", NULL};
  fx_udp(&f, extra);
  senders_t *s = calloc(1, sizeof(*s));
  struct sockaddr_in to;
  uv_ip4_addr("127.0.0.1", f.port, &to);
  for (int i = 0; i < 300; i++) {
    uv_udp_init(&f.loop, &s->sock[i]);
    s->sock[i].data = s;
    uv_udp_recv_start(&s->sock[i], on_send_alloc, on_reply);
    uv_buf_t b = uv_buf_init("flow", 4);
    KP_CHECK(uv_udp_try_send(&s->sock[i], &b, 1, (const struct sockaddr *)&to) == 4);
    s->sent++;
    if (s->sent % 50 == 0) KP_CHECK(kp_testnet_run_until(&f.loop, all_replied, s, 5000));
  }
  char json[4096];
  control_ask(f.control, json, sizeof(json));
  long open = counter(json, "udp_flows"), evicted = counter(json, "udp_flows_evicted");
  printf("300 senders: %u answered; the server holds %ld flows, %ld evicted\n", s->replies, open,
         evicted);
  KP_CHECK_EQ(s->replies, 300);
  KP_CHECK_MSG(open == 256 && evicted == 44, "%s", json);
  kp_testnet_run_until(&f.loop, NULL, NULL, 2500);
  control_ask(f.control, json, sizeof(json));
  KP_CHECK_MSG(counter(json, "udp_flows") == 0 && counter(json, "udp_flows_idle") >= 256, "%s",
               json);
  for (int i = 0; i < 300; i++) uv_close((uv_handle_t *)&s->sock[i], NULL);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  KP_CHECK_EQ(stop(&f.loop, f.client), 0);
  f.client = NULL;
  free(s);
  fx_down(&f);
}

/* ---- UDP ASSOCIATE -------------------------------------------------------------------------- */

static int udp_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_usec = 500000};
  KP_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

/* Sends payload to dst_port through the association at relay; returns the
 * answer's payload length (-1: none within 500 ms), checking its header
 * names dst_port as the source. */
static int associate_echo(int fd, const struct sockaddr_in *relay, int dst_port,
                          const char *payload) {
  uint8_t d[512] = {0, 0, 0, 1, 127, 0, 0, 1, (uint8_t)(dst_port >> 8), (uint8_t)dst_port};
  size_t n = strlen(payload);
  memcpy(d + 10, payload, n);
  KP_CHECK(sendto(fd, d, 10 + n, 0, (const struct sockaddr *)relay, sizeof(*relay)) ==
           (ssize_t)(10 + n));
  uint8_t r[512];
  ssize_t got = recv(fd, r, sizeof(r), 0);
  if (got < 0) return -1;
  kp_cli_socks_addr_t src;
  KP_CHECK_EQ(kp_cli_socks_parse_udp(r, (size_t)got, &src), 10);
  KP_CHECK(src.type == KP_CLI_SOCKS_ATYP_IPV4 && src.port == dst_port);
  KP_CHECK(got - 10 == (ssize_t)n && !memcmp(r + 10, payload, n));
  return (int)(got - 10);
}

/* UDP ASSOCIATE through connect --socks: datagrams to an allowed
 * destination come back with its address; one to a destination outside
 * the allow list is dropped and logged at the server; one from another
 * port of the program's host is dropped; closing the TCP connection ends
 * the association. */
static void test_socks_udp_associate(void) {
  fx_t f;
  fx_up(&f);
  char echo_at[64], allow[64];
  int echo_port = kp_test_free_udp_port();
  snprintf(echo_at, sizeof(echo_at), "127.0.0.1:%d", echo_port);
  const char *echo_argv[] = {KP_UDP_ECHO, echo_at, NULL};
  f.echo = track(kp_test_spawn(&f.loop, echo_argv));
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.echo, "udp echo on", 5000));
  snprintf(allow, sizeof(allow), "127.0.0.1:%d", echo_port);
  const char *extra[] = {"--socks", "--socks-allow", allow, NULL};
  fx_serve(&f, extra);
  fx_connect(&f, "--socks", "socks on 127.0.0.1:", NULL);

  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)f.port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_sec = 5};
  setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  KP_CHECK(connect(tcp, (struct sockaddr *)&to, sizeof(to)) == 0);
  const uint8_t ask[] = {5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0};
  KP_CHECK(write(tcp, ask, sizeof(ask)) == (ssize_t)sizeof(ask));
  uint8_t ans[12];
  size_t got = 0;
  while (got < sizeof(ans)) {
    ssize_t r = read(tcp, ans + got, sizeof(ans) - got);
    KP_CHECK(r > 0);
    got += (size_t)r;
  }
  KP_CHECK(ans[0] == 5 && ans[1] == 0 && ans[2] == 5 && ans[3] == 0 && ans[5] == 1);
  struct sockaddr_in relay = {.sin_family = AF_INET};
  memcpy(&relay.sin_addr, ans + 6, 4);
  memcpy(&relay.sin_port, ans + 10, 2);

  int fd = udp_socket(), other = udp_socket();
  unsigned back = 0;
  for (int i = 0; i < 100; i++) {
    char msg[32];
    snprintf(msg, sizeof(msg), "datagram %d", i);
    if (associate_echo(fd, &relay, echo_port, msg) > 0) back++;
  }
  KP_CHECK_MSG(back >= 99, "%u of 100 came back", back);
  KP_CHECK_EQ(associate_echo(fd, &relay, echo_port + 1, "not allowed"), -1);
  char refused[96];
  snprintf(refused, sizeof(refused), "datagrams to 127.0.0.1:%d refused", echo_port + 1);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, refused, 2000));
  KP_CHECK_EQ(associate_echo(other, &relay, echo_port, "from elsewhere"), -1);
  close(tcp);
  kp_testnet_run_until(&f.loop, NULL, NULL, 300);
  KP_CHECK_EQ(associate_echo(fd, &relay, echo_port, "after the end"), -1);
  printf("UDP ASSOCIATE: %u of 100 datagrams echoed; refused, foreign and late ones dropped\n",
         back);
  close(fd);
  close(other);
  fx_down(&f);
}

/* ---- A flood of half-sent requests -------------------------------------------------------- */

typedef struct flood_s {
  kp_conn_t *conn[2];
  int status[2];
  unsigned connected, refused, other_end;
  kp_write_t writes[2][200];
} flood_t;

static void on_flood_read(kp_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  flood_t *fl = kp_stream_get_data(s);
  (void)buf;
  if (n > 0) return;
  if (n == KP_ERESET && kp_stream_reset_code(s) == KP_STREAM_REFUSED)
    fl->refused++;
  else
    fl->other_end++;
  kp_stream_close(s, NULL);
}

static void on_flood_conn(kp_node_t *node, int status, kp_conn_t *conn,
                          const kp_connect_info_t *info, void *arg) {
  flood_t *fl = arg;
  (void)node, (void)info;
  unsigned i = fl->connected++;
  fl->status[i] = status;
  fl->conn[i] = conn;
}

static bool flood_connected(void *ctx) {
  return ((flood_t *)ctx)->connected == 2;
}

static bool flood_refused(void *ctx) {
  return ((flood_t *)ctx)->refused >= 144;
}

/* Two connections of a client that speaks the kadpunch protocol itself
 * open 200 streams each and send one byte of a request on each: the server
 * holds 256 such requests in all and refuses the other 144 streams at
 * once; when the flooder goes, so do its requests, and a whole request
 * is served. */
static void test_socks_requests_bounded(void) {
  fx_t f;
  fx_up(&f);
  fx_socks(&f, NULL);
  kp_keypair_t kp;
  uint8_t server_key[KP_PUBLIC_KEY_LEN];
  KP_CHECK_OK(kp_key_file_read(f.ckey, &kp));
  KP_CHECK_OK(kp_key_from_text(f.spk, server_key));
  flood_t *fl = calloc(1, sizeof(*fl));
  kp_connect_options_t o = {.service = "socks"};
  kp_conn_callbacks_t cb = {0};
  for (int i = 0; i < 2; i++)
    KP_CHECK_OK(
        kp_node_connect_with(f.tn.nodes[1 + i], &kp, server_key, &o, &cb, on_flood_conn, fl));
  KP_CHECK(kp_testnet_run_until(&f.loop, flood_connected, fl, 20000));
  KP_CHECK(fl->status[0] == 0 && fl->status[1] == 0);
  static const char ver[1] = {5};
  for (int i = 0; i < 2; i++) {
    for (int k = 0; k < 200; k++) {
      kp_stream_t *s;
      KP_CHECK_OK(kp_stream_open(fl->conn[i], &s));
      kp_stream_set_data(s, fl);
      uv_buf_t b = uv_buf_init((char *)ver, 1);
      KP_CHECK_OK(kp_stream_write(&fl->writes[i][k], s, &b, 1, NULL));
      KP_CHECK_OK(kp_stream_read_start(s, on_flood_read));
    }
  }
  KP_CHECK(kp_testnet_run_until(&f.loop, flood_refused, fl, 5000));
  char json[4096];
  control_ask(f.control, json, sizeof(json));
  printf("400 half-sent requests: %u refused at once; the server holds %ld\n", fl->refused,
         counter(json, "socks_pending"));
  KP_CHECK_EQ(fl->refused, 144);
  KP_CHECK_MSG(counter(json, "socks_pending") == 256, "%s", json);
  /* The flooder goes: its requests go with it, and a whole request from
   * connect --socks gets through. */
  for (int i = 0; i < 2; i++) kp_conn_close(fl->conn[i], 0);
  kp_testnet_run_until(&f.loop, NULL, NULL, 500);
  control_ask(f.control, json, sizeof(json));
  KP_CHECK_MSG(counter(json, "socks_pending") == 0, "%s", json);
  kp_socks_client_t c;
  memset(&c, 0, sizeof(c));
  c.out_len = kp_socks_connect_request(c.out, "127.0.0.1", (uint16_t)f.srv.port);
  c.tx_id = 3;
  c.tx_len = 4096;
  kp_socks_client_start(&f.loop, &c, f.port);
  socks_set_t set = {&c, 1};
  KP_CHECK(kp_testnet_run_until(&f.loop, all_closed, &set, 15000));
  KP_CHECK(c.rep == 0 && c.received == c.tx_len && !c.mismatches);
  kp_keypair_wipe(&kp);
  fx_down(&f);
  free(fl);
}

/* The daemon's config file says the same as serve's options. */
static void test_socks_daemon_config(void) {
  char dir[] = "/tmp/kp-socksd-XXXXXX", conf[300], out[4096];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(conf, sizeof(conf), "%s/kadpunch.conf", dir);
  FILE *fp = fopen(conf, "w");
  fprintf(fp,
          "bootstrap = 127.0.0.1:9\nstate = %s/state\nsocks = yes\n"
          "socks-allow = 192.168.1.0/24:22,80\nsocks-allow = nas.lan:445\n"
          "forward-udp = dns 127.0.0.1:53\nudp-idle = 30\n",
          dir);
  fclose(fp);
  const char *check[] = {KP_BINARY, "daemon", "--config", conf, "--check", NULL};
  KP_CHECK_EQ(kp_test_run_cli(NULL, check, out, sizeof(out), 5000), 0);
  KP_CHECK_MSG(strstr(out, "--socks --socks-allow 192.168.1.0/24:22,80 --socks-allow nas.lan:445 "
                           "--forward-udp dns=127.0.0.1:53 --udp-idle 30"),
               "%s", out);
  fp = fopen(conf, "a");
  fprintf(fp, "socks-allow = 192.168.1.0/33:22\n");
  fclose(fp);
  KP_CHECK_EQ(kp_test_run_cli(NULL, check, out, sizeof(out), 5000), 2);
  KP_CHECK_MSG(strstr(out, "--socks-allow: '192.168.1.0/33:22'"), "%s", out);
  const char *bad[][4] = {{"serve", "--socks-allow", "10.0.0.1:22", NULL},
                          {"serve", "--socks", "--socks-allow", "10.0.0.1"},
                          {"serve", "--forward-udp", "nowhere", NULL},
                          {"connect", "--socks", "1", "--listen-udp"}};
  const char *says[] = {"--socks-allow goes with --socks", "expected ADDRESS[/PREFIX]:PORTS",
                        "expected HOST:PORT", "not both"};
  kp_keypair_t kp;
  char key[KP_KEY_TEXT_LEN + 1];
  kp_keypair_generate(&kp);
  kp_key_to_text(kp.public_key, key);
  for (size_t i = 0; i < 4; i++) {
    const char *argv[12] = {KP_BINARY};
    size_t n = 1;
    for (size_t j = 0; j < 4 && bad[i][j]; j++) {
      argv[n++] = bad[i][j];
      if (i == 3 && j == 0) argv[n++] = key;
    }
    if (i == 3) argv[n++] = "2";
    argv[n++] = "--bootstrap";
    argv[n++] = "127.0.0.1:9";
    argv[n] = NULL;
    KP_CHECK_EQ(kp_test_run_cli(NULL, argv, out, sizeof(out), 5000), 2);
    KP_CHECK_MSG(strstr(out, says[i]), "%s", out);
  }
  kp_test_sh("rm -rf %s", dir);
}

static const kp_test_case_t cases[] = {
    KP_CASE(socks_many, loopback, 90),          KP_CASE(socks_refusals, loopback, 60),
    KP_CASE(socks_malformed, loopback, 90),     KP_CASE(udp_echo, loopback, 90),
    KP_CASE(udp_flows_bounded, loopback, 60),   KP_CASE(socks_udp_associate, loopback, 60),
    KP_CASE(socks_daemon_config, loopback, 30), KP_CASE(socks_requests_bounded, loopback, 60),
};
KP_TEST_MAIN(cases)
