/* SPDX-License-Identifier: MIT */
/* The kadpunch program forwarding TCP by key, on loopback: `serve --forward`
 * in front of a TCP server in this process, `connect --listen` in front of
 * TCP clients in this process, `connect --stdio` on pipes and files, and
 * ssh through it as a ProxyCommand. Every byte is checked (a pattern per
 * TCP connection); every program is started here and stopped by its PID. */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/harness/pattern.h"
#include "tests/harness/test.h"
#include "tests/loopback/stdio_child.h"
#include "tests/loopback/tcp_peers.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define NODES 12
#define MIB (1024 * 1024)

/* The programs a case started and has not stopped: a failed check exits at
 * once, and they must not outlive it. Killed by PID, from atexit. */
static int running[4];

static void kill_running(void) {
  for (size_t i = 0; i < 4; i++)
    if (running[i] > 0) kill(running[i], SIGKILL);
}

static kp_test_child_t *track(kp_test_child_t *c) {
  static bool registered;
  if (!registered) atexit(kill_running);
  registered = true;
  for (size_t i = 0; i < 4; i++)
    if (!running[i]) {
      running[i] = kp_test_child_pid(c);
      return c;
    }
  KP_CHECK_MSG(false, "more than 4 programs at once");
  return c;
}

static int stop(uv_loop_t *loop, kp_test_child_t *c) {
  int pid = kp_test_child_pid(c);
  int status = kp_test_child_stop(loop, c, 10000);
  for (size_t i = 0; i < 4; i++)
    if (running[i] == pid) running[i] = 0;
  return status;
}

/* A testnet, a server and a client key, and the programs of a case. */
typedef struct fx_s {
  uv_loop_t loop;
  kp_testnet_t tn;
  char dir[32], skey[256], ckey[256], spk[KP_KEY_TEXT_LEN + 1], cpk[KP_KEY_TEXT_LEN + 1];
  kp_tcp_server_t srv;
  kp_test_child_t *server, *client;
  int port; /* where the client listens */
} fx_t;

static void fx_up(fx_t *f) {
  memset(f, 0, sizeof(*f));
  /* A TCP connection reset under a write is an error here, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_init(&f->loop);
  kp_test_testnet_up(&f->loop, NODES, 20000, &f->tn);
  snprintf(f->dir, sizeof(f->dir), "/tmp/kp-fwd-XXXXXX");
  KP_CHECK(mkdtemp(f->dir) != NULL);
  snprintf(f->skey, sizeof(f->skey), "%s/server", f->dir);
  snprintf(f->ckey, sizeof(f->ckey), "%s/client", f->dir);
  kp_test_keygen(&f->loop, f->skey, f->spk);
  kp_test_keygen(&f->loop, f->ckey, f->cpk);
}

/* `kadpunch serve --key skey --bootstrap B` and extra (NULL-terminated). */
static kp_test_child_t *fx_serve(fx_t *f, const char *const *extra) {
  const char *argv[24] = {KP_BINARY, "serve", "--key", f->skey, "--bootstrap", f->tn.bootstrap};
  size_t n = 6;
  for (size_t i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  kp_test_child_t *c = track(kp_test_spawn(&f->loop, argv));
  KP_CHECK(kp_test_child_wait_output(&f->loop, c, "serving", 10000));
  /* Give the announcement a moment to be stored. */
  kp_testnet_run_until(&f->loop, NULL, NULL, 1000);
  return c;
}

/* A TCP echo server here and `serve --forward` in front of it. */
static void fx_serve_forward(fx_t *f, kp_tcp_mode_t mode) {
  f->srv.mode = mode;
  kp_tcp_server_start(&f->loop, &f->srv);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", f->srv.port);
  const char *extra[] = {"--forward", target, "--allow", f->cpk, NULL};
  f->server = fx_serve(f, extra);
}

/* `connect --listen 127.0.0.1:0`: waits until connected; port gets the
 * port it printed. */
static void fx_listen(fx_t *f) {
  const char *argv[] = {KP_BINARY,  "connect",     f->spk,        "--key",         f->ckey,
                        "--listen", "127.0.0.1:0", "--bootstrap", f->tn.bootstrap, NULL};
  f->client = track(kp_test_spawn(&f->loop, argv));
  KP_CHECK(kp_test_child_wait_output(&f->loop, f->client, "connected to", 20000));
  const char *out = kp_test_child_stdout(f->client);
  const char *at = strstr(out, "listening on 127.0.0.1:");
  KP_CHECK_MSG(at && strstr(out, f->spk), "%s", out);
  f->port = atoi(at + strlen("listening on 127.0.0.1:"));
  KP_CHECK(f->port > 0);
}

static void fx_down(fx_t *f) {
  if (f->client) KP_CHECK_EQ(stop(&f->loop, f->client), 0);
  if (f->server) KP_CHECK_EQ(stop(&f->loop, f->server), 0);
  if (f->srv.port) kp_tcp_server_stop(&f->srv);
  kp_testnet_destroy(&f->tn);
  kp_test_check_loop_closes(&f->loop);
  kp_test_sh("rm -rf %s", f->dir);
}

typedef struct clients_s {
  kp_tcp_client_t *c;
  size_t n;
} clients_t;

/* Every client got EOF (or failed) and is closed. */
static bool clients_done(void *ctx) {
  clients_t *cs = ctx;
  for (size_t i = 0; i < cs->n; i++)
    if (!cs->c[i].closed) return false;
  return true;
}

static void check_echoed(const kp_tcp_client_t *c, uint64_t len) {
  KP_CHECK_MSG(!c->error && c->eof && c->received == len && c->mismatches == 0,
               "client %" PRIu64 ": error %s, eof %d, %" PRIu64 " of %" PRIu64
               " bytes back, %" PRIu64 " wrong",
               c->tx_id, c->error ? uv_strerror(c->error) : "none", c->eof, c->received, len,
               c->mismatches);
}

/* Kilobytes of resident memory of a process. */
static long rss_kib(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  FILE *fp = fopen(path, "r");
  long kib = -1;
  while (fp && fgets(line, sizeof(line), fp))
    if (!strncmp(line, "VmRSS:", 6)) kib = atol(line + 6);
  if (fp) fclose(fp);
  return kib;
}

/* ---- Cases ------------------------------------------------------------------------- */

/* 100 MB each way through one TCP connection, byte-exact; and a second
 * --listen on the same port fails with exit 1 and says why. */
static void test_bulk(void) {
  fx_t f;
  fx_up(&f);
  fx_serve_forward(&f, KP_TCP_ECHO);
  fx_listen(&f);
  const uint64_t len = 100 * 1000 * 1000;
  kp_tcp_client_t *c = calloc(1, sizeof(*c));
  clients_t cs = {c, 1};
  uint64_t t0 = kp_test_now_ms();
  kp_tcp_client_start(&f.loop, c, f.port, 1, len, 1, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 60000));
  uint64_t ms = kp_test_now_ms() - t0;
  check_echoed(c, len);
  printf("100 MB echoed through serve --forward / connect --listen in %" PRIu64
         " ms (%.1f MB/s each way)\n",
         ms, (double)len / 1e3 / (double)(ms ? ms : 1));
  free(c);

  char busy[64], out[4096];
  snprintf(busy, sizeof(busy), "127.0.0.1:%d", f.port);
  const char *again[] = {KP_BINARY, "connect",     f.spk,          "--listen",
                         busy,      "--bootstrap", f.tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, again, out, sizeof(out), 20000), 1);
  KP_CHECK_MSG(strstr(out, "cannot listen on") && strstr(out, "address already in use"), "%s", out);
  fx_down(&f);
}

/* 50 TCP connections at once, multiplexed on one kadpunch connection. */
static void test_many(void) {
  enum { N = 50, LEN = 256 * 1024 };
  fx_t f;
  fx_up(&f);
  fx_serve_forward(&f, KP_TCP_ECHO);
  fx_listen(&f);
  kp_tcp_client_t *c = calloc(N, sizeof(*c));
  clients_t cs = {c, N};
  for (size_t i = 0; i < N; i++)
    kp_tcp_client_start(&f.loop, &c[i], f.port, 100 + i, LEN, 100 + i, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 30000));
  for (size_t i = 0; i < N; i++) check_echoed(&c[i], LEN);
  KP_CHECK_EQ(f.srv.accepted, N);
  /* One kadpunch connection carried them all. */
  const char *out = kp_test_child_stdout(f.server), *first = strstr(out, "connection from");
  KP_CHECK_MSG(first && !strstr(first + 1, "connection from"), "%s", out);
  free(c);
  fx_down(&f);
}

/* The client shuts its side down first and still gets all the server
 * sends after that, then EOF; the server saw the request end (EOF). */
static void test_half_close(void) {
  fx_t f;
  fx_up(&f);
  f.srv.request_id = 7;
  f.srv.reply_id = 8;
  f.srv.reply_len = 3 * MIB;
  fx_serve_forward(&f, KP_TCP_REPLY_AFTER_EOF);
  fx_listen(&f);
  kp_tcp_client_t c;
  clients_t cs = {&c, 1};
  kp_tcp_client_start(&f.loop, &c, f.port, 7, 100 * 1024, 8, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 20000));
  KP_CHECK(c.shut);
  check_echoed(&c, 3 * MIB);
  KP_CHECK_EQ(f.srv.request_bytes, 100 * 1024);
  KP_CHECK_EQ(f.srv.request_mismatches, 0);
  fx_down(&f);
}

static bool heard_banner(void *ctx) {
  kp_tcp_client_t *c = ctx;
  return c->received >= 10 || c->closed;
}

/* A service that speaks first (SMTP, say) is heard by a client that sends
 * nothing: opening the stream is enough for the server to connect. */
static void test_server_first(void) {
  fx_t f;
  fx_up(&f);
  f.srv.banner = "220 hello\r\n";
  fx_serve_forward(&f, KP_TCP_BANNER);
  fx_listen(&f);
  kp_tcp_client_t c;
  clients_t cs = {&c, 1};
  kp_tcp_client_start_silent(&f.loop, &c, f.port);
  KP_CHECK(kp_testnet_run_until(&f.loop, heard_banner, &c, 10000));
  KP_CHECK_MSG(c.received == 11 && !c.error, "%" PRIu64 " bytes", c.received);
  kp_tcp_client_close(&c);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 5000));
  fx_down(&f);
}

typedef struct stall_s {
  kp_tcp_client_t *c;
  uint64_t last;
  uint64_t since;
} stall_t;

/* The slow client has sent nothing for 500 ms: everything is full. */
static bool stalled(void *ctx) {
  stall_t *s = ctx;
  uint64_t now = kp_test_now_ms();
  if (s->c->written != s->last) {
    s->last = s->c->written;
    s->since = now;
  }
  return s->c->written > 0 && now - s->since >= 500;
}

/* One TCP connection that stops reading fills its own path and no more:
 * another on the same kadpunch connection moves 16 MiB meanwhile, the
 * programs' memory stays bounded, and the slow one completes once it
 * reads again. */
static void test_slow_reader(void) {
  const uint64_t slow_len = 128 * MIB, fast_len = 16 * MIB;
  fx_t f;
  fx_up(&f);
  fx_serve_forward(&f, KP_TCP_ECHO);
  fx_listen(&f);
  kp_tcp_client_t *slow = calloc(1, sizeof(*slow)), *fast = calloc(1, sizeof(*fast));
  kp_tcp_client_start(&f.loop, slow, f.port, 1, slow_len, 1, false);
  stall_t st = {slow, 0, kp_test_now_ms()};
  KP_CHECK(kp_testnet_run_until(&f.loop, stalled, &st, 20000));
  KP_CHECK_MSG(slow->written < slow_len, "the slow reader never stalled");
  uint64_t stalled_at = slow->written;

  uint64_t t0 = kp_test_now_ms();
  clients_t cs = {fast, 1};
  kp_tcp_client_start(&f.loop, fast, f.port, 2, fast_len, 2, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 20000));
  check_echoed(fast, fast_len);
  long srss = rss_kib(kp_test_child_pid(f.server)), crss = rss_kib(kp_test_child_pid(f.client));
  printf("slow reader stalled after %" PRIu64 " KiB sent; 16 MiB echoed beside it in %" PRIu64
         " ms; RSS serve %ld KiB, connect %ld KiB\n",
         stalled_at / 1024, kp_test_now_ms() - t0, srss, crss);
  KP_CHECK(slow->written < slow_len && slow->received == 0);
#if !defined(__SANITIZE_ADDRESS__)
  /* (AddressSanitizer's quarantine keeps freed memory: no bound there.) */
  KP_CHECK(srss > 0 && srss < 64 * 1024 && crss > 0 && crss < 64 * 1024);
#endif

  cs.c = slow;
  kp_tcp_client_set_reading(slow, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 30000));
  check_echoed(slow, slow_len);
  free(slow);
  free(fast);
  fx_down(&f);
}

static bool got_some(void *ctx) {
  kp_tcp_client_t *c = ctx;
  return c->received >= MIB || c->closed;
}

/* The server goes away in the middle of a transfer: the TCP connection
 * through it is reset (not ended: that would pass for a complete
 * transfer), both programs stay up (and exit cleanly later), and the
 * client connects again on the next TCP connection, to the server back on
 * the same key. */
static void test_reconnect(void) {
  fx_t f;
  fx_up(&f);
  fx_serve_forward(&f, KP_TCP_ECHO);
  fx_listen(&f);
  kp_tcp_client_t c;
  clients_t cs = {&c, 1};
  kp_tcp_client_start(&f.loop, &c, f.port, 1, 1024 * MIB, 1, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, got_some, &c, 10000));
  KP_CHECK(!c.closed);

  KP_CHECK_EQ(stop(&f.loop, f.server), 0);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.client, "the next TCP connection connects again",
                                     35000));
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 5000));
  KP_CHECK_MSG(c.error == UV_ECONNRESET || c.error == UV_EPIPE, "eof %d, error %s", c.eof,
               c.error ? uv_strerror(c.error) : "none");
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", f.srv.port);
  const char *extra[] = {"--forward", target, NULL};
  f.server = fx_serve(&f, extra);
  kp_tcp_client_start(&f.loop, &c, f.port, 2, 64 * 1024, 2, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 30000));
  check_echoed(&c, 64 * 1024);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.client, "connected again to", 1000));
  fx_down(&f);
}

/* --stdio on real pipes (as ssh gives them) against the echo service,
 * let in by --allow-file; then on regular files. stdout carries exactly
 * the echo; exit 0. */
static void test_stdio_echo(void) {
  fx_t f;
  fx_up(&f);
  char allow[300];
  snprintf(allow, sizeof(allow), "%s/allowed", f.dir);
  FILE *fp = fopen(allow, "w");
  fprintf(fp, "# who may connect\n\n  %s   # the test client\n%s\n", f.cpk, f.spk);
  fclose(fp);
  const char *extra[] = {"--allow-file", allow, NULL};
  f.server = fx_serve(&f, extra);
  const char *argv[] = {KP_BINARY, "connect",   f.spk,         "--stdio",      "--key",
                        f.ckey,    "--verbose", "--bootstrap", f.tn.bootstrap, NULL};

  kp_stdio_child_t *p = kp_stdio_child_spawn(&f.loop, argv, 9, 4 * MIB, true);
  KP_CHECK_EQ(kp_stdio_child_wait(&f.loop, p, 30000), 0);
  KP_CHECK_MSG(p->received == 4 * MIB && p->mismatches == 0,
               "%" PRIu64 " bytes, %" PRIu64 " wrong; stderr: %s", p->received, p->mismatches,
               p->err);
  KP_CHECK_MSG(strstr(p->err, "connected to"), "%s", p->err);
  kp_stdio_child_free(p);

  char in[300], outp[300];
  snprintf(in, sizeof(in), "%s/in", f.dir);
  snprintf(outp, sizeof(outp), "%s/out", f.dir);
  kp_stdio_write_pattern_file(in, 10, MIB);
  KP_CHECK_EQ(kp_stdio_child_files(&f.loop, argv, in, outp, 30000), 0);
  kp_stdio_check_pattern_file(outp, 10, MIB);
  fx_down(&f);
}

/* Failures on --stdio say why and exit 1, with stdin still open: the
 * service behind --forward refuses; a key not allowed is refused. */
static void test_stdio_refused(void) {
  fx_t f;
  fx_up(&f);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", kp_test_free_tcp_port());
  const char *extra[] = {"--forward", target, "--allow", f.cpk, NULL};
  f.server = fx_serve(&f, extra);
  const char *argv[] = {KP_BINARY, "connect",     f.spk,          "--stdio", "--key",
                        f.ckey,    "--bootstrap", f.tn.bootstrap, NULL};
  kp_stdio_child_t *p = kp_stdio_child_spawn(&f.loop, argv, 1, 0, false);
  KP_CHECK_EQ(kp_stdio_child_wait(&f.loop, p, 30000), 1);
  KP_CHECK_MSG(strstr(p->err, "could not reach the service") &&
                   strstr(p->err, uv_strerror(UV_ECONNREFUSED)) && p->received == 0,
               "%s", p->err);
  kp_stdio_child_free(p);

  const char *stranger[] = {KP_BINARY,          "connect",     f.spk,          "--stdio", "--key",
                            "/nonexistent/key", "--bootstrap", f.tn.bootstrap, NULL};
  p = kp_stdio_child_spawn(&f.loop, stranger, 1, 0, false);
  KP_CHECK_EQ(kp_stdio_child_wait(&f.loop, p, 30000), 2);
  kp_stdio_child_free(p);
  setenv("KADPUNCH_KEY", "/nonexistent/key", 1); /* a throwaway key, not on the list */
  const char *throwaway[] = {KP_BINARY,     "connect",      f.spk, "--stdio",
                             "--bootstrap", f.tn.bootstrap, NULL};
  p = kp_stdio_child_spawn(&f.loop, throwaway, 1, 0, false);
  KP_CHECK_EQ(kp_stdio_child_wait(&f.loop, p, 30000), 1);
  unsetenv("KADPUNCH_KEY");
  KP_CHECK_MSG(strstr(p->err, kp_strerror(KP_ENOTALLOWED)) && p->received == 0, "%s", p->err);
  kp_stdio_child_free(p);
  fx_down(&f);
}

/* A tunnel started before its server (at boot, say): connect --listen
 * says the peer is not there, keeps its port, and the first TCP
 * connection accepted once the server runs gets through. */
static void test_listen_waits_for_server(void) {
  fx_t f;
  fx_up(&f);
  const char *argv[] = {KP_BINARY,  "connect",     f.spk,         "--key",        f.ckey,
                        "--listen", "127.0.0.1:0", "--bootstrap", f.tn.bootstrap, NULL};
  f.client = track(kp_test_spawn(&f.loop, argv));
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.client, "still listening", 30000));
  const char *out = kp_test_child_stdout(f.client);
  const char *at = strstr(out, "listening on 127.0.0.1:");
  KP_CHECK_MSG(at, "%s", out);
  f.port = atoi(at + strlen("listening on 127.0.0.1:"));
  /* Still there a moment later. */
  kp_testnet_run_until(&f.loop, NULL, NULL, 500);
  KP_CHECK_EQ(kill(kp_test_child_pid(f.client), 0), 0);
  fx_serve_forward(&f, KP_TCP_ECHO);
  kp_tcp_client_t c;
  clients_t cs = {&c, 1};
  kp_tcp_client_start(&f.loop, &c, f.port, 3, 64 * 1024, 3, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 30000));
  check_echoed(&c, 64 * 1024);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.client, "connected to", 1000));
  fx_down(&f);
}

/* kadpunch ping against a forwarding server: reached, its path and a
 * measured round trip, three times; the service behind it never sees a
 * connection. A key nobody serves: exit 1 with the reason. */
static void test_ping_any_server(void) {
  fx_t f;
  fx_up(&f);
  fx_serve_forward(&f, KP_TCP_ECHO);
  char out[8192];
  const char *argv[] = {KP_BINARY, "ping",       f.spk, "--key",       f.ckey,         "--count",
                        "3",       "--interval", "0",   "--bootstrap", f.tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, argv, out, sizeof(out), 30000), 0);
  for (int i = 1; i <= 3; i++) {
    char want[160];
    snprintf(want, sizeof(want), "ping %d: %s reached: path lan to 127.0.0.1:", i, f.spk);
    KP_CHECK_MSG(strstr(out, want), "%s", out);
  }
  KP_CHECK_MSG(strstr(out, "3 pings, 3 reached; rtt min/avg/max") && !strstr(out, "no sample"),
               "%s", out);
  KP_CHECK_EQ(f.srv.accepted, 0);
  const char *json[] = {KP_BINARY, "ping",        f.spk,          "--key", f.ckey,
                        "--json",  "--bootstrap", f.tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, json, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(strstr(out, "{\"seq\":1,\"ok\":true") && strstr(out, "\"path\":\"lan\"") &&
                   strstr(out, "{\"sent\":1,\"reached\":1"),
               "%s", out);
  KP_CHECK_EQ(f.srv.accepted, 0);
  /* Refused (not on the allow list): said, exit 1. */
  const char *stranger[] = {KP_BINARY, "ping",        f.spk,          "--key",
                            f.skey,    "--bootstrap", f.tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, stranger, out, sizeof(out), 30000), 1);
  KP_CHECK_MSG(strstr(out, kp_strerror(KP_ENOTALLOWED)) && strstr(out, "1 ping, 0 reached"), "%s",
               out);
  fx_down(&f);
}

/* kadpunch status reads a running serve's and a connect --listen's live
 * connection over their control sockets: peer, service, path, bytes. */
static void test_status_lists_connections(void) {
  fx_t f;
  fx_up(&f);
  f.srv.mode = KP_TCP_ECHO;
  kp_tcp_server_start(&f.loop, &f.srv);
  char target[64], ssock[128], csock[128], out[8192];
  snprintf(target, sizeof(target), "ssh=127.0.0.1:%d", f.srv.port);
  snprintf(ssock, sizeof(ssock), "%s/s.sock", f.dir);
  snprintf(csock, sizeof(csock), "%s/c.sock", f.dir);
  const char *extra[] = {"--forward", target, "--allow", f.cpk, "--control", ssock, NULL};
  f.server = fx_serve(&f, extra);
  const char *argv[] = {KP_BINARY, "connect",     f.spk,          "--key",
                        f.ckey,    "--listen",    "127.0.0.1:0",  "--control",
                        csock,     "--bootstrap", f.tn.bootstrap, NULL};
  f.client = track(kp_test_spawn(&f.loop, argv));
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.client, "connected to", 20000));
  const char *at = strstr(kp_test_child_stdout(f.client), "listening on 127.0.0.1:");
  KP_CHECK(at);
  f.port = atoi(at + strlen("listening on 127.0.0.1:"));
  kp_tcp_client_t c;
  clients_t cs = {&c, 1};
  kp_tcp_client_start(&f.loop, &c, f.port, 4, 100000, 4, true);
  KP_CHECK(kp_testnet_run_until(&f.loop, clients_done, &cs, 20000));
  check_echoed(&c, 100000);

  const char *sjson[] = {KP_BINARY, "status", "--control", ssock, "--json", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, sjson, out, sizeof(out), 10000), 0);
  char want[128];
  snprintf(want, sizeof(want), "\"peer\":\"%s\"", f.cpk);
  KP_CHECK_MSG(strstr(out, "\"count\":1") && strstr(out, want) &&
                   strstr(out, "\"service\":\"ssh\"") && strstr(out, "\"path\":\"lan\"") &&
                   strstr(out, "\"bytes_in\":100000") && strstr(out, "\"bytes_out\":100000"),
               "%s", out);
  const char *ctext[] = {KP_BINARY, "status", "--control", csock, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, ctext, out, sizeof(out), 10000), 0);
  snprintf(want, sizeof(want), "%.16s...", f.spk);
  KP_CHECK_MSG(strstr(out, "1 connection\n") && strstr(out, want) && strstr(out, " lan ") &&
                   strstr(out, "97.7 KiB"),
               "%s", out);
  char missing[128];
  snprintf(missing, sizeof(missing), "%s/none.sock", f.dir);
  const char *none[] = {KP_BINARY, "status", "--control", missing, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, none, out, sizeof(out), 10000), 1);
  KP_CHECK_MSG(strstr(out, "no kadpunch node is running"), "%s", out);
  /* Its end is one line with who, what, how long and how much. */
  KP_CHECK_EQ(stop(&f.loop, f.client), 0);
  f.client = NULL;
  snprintf(want, sizeof(want), "connection closed: %s, service ssh, ", f.cpk);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, want, 5000));
  KP_CHECK_MSG(strstr(kp_test_child_stdout(f.server), "100000 bytes in, 100000 out"), "%s",
               kp_test_child_stdout(f.server));
  fx_down(&f);
}

/* ssh -o ProxyCommand='kadpunch connect %h --stdio' KEY reaches the TCP
 * service behind serve --forward: its banner arrives there, ours at it;
 * and so does `ssh laptop` with what `kadpunch ssh-config` wrote. */
static void test_ssh_proxycommand(void) {
  if (access("/usr/bin/ssh", X_OK)) kp_test_skip("no /usr/bin/ssh");
  fx_t f;
  fx_up(&f);
  f.srv.banner = "SSH-2.0-kadpunch_test\r\n";
  fx_serve_forward(&f, KP_TCP_BANNER);
  char proxy[1024], out[8192];
  snprintf(proxy, sizeof(proxy), "ProxyCommand=%s connect %%h --stdio --key %s --bootstrap %s",
           KP_BINARY, f.ckey, f.tn.bootstrap);
  const char *argv[] = {"/usr/bin/ssh",
                        "-v",
                        "-F",
                        "/dev/null",
                        "-o",
                        proxy,
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "ConnectTimeout=20",
                        f.spk,
                        "true",
                        NULL};
  int rc = kp_test_run_cli(&f.loop, argv, out, sizeof(out), 30000);
  /* Both banners crossed; then the service hung up (it speaks no SSH). */
  KP_CHECK_MSG(rc == 255 && strstr(f.srv.heard, "SSH-2.0-OpenSSH") &&
                   strstr(out, "remote software version kadpunch_test"),
               "ssh exited %d: %s; heard: %s", rc, out, f.srv.heard);

  /* The same through a named host: `kadpunch ssh-config` writes ssh's
   * configuration, and `ssh laptop` uses it as it is. */
  char cfg[300], sshcfg[300], text[512];
  snprintf(cfg, sizeof(cfg), "%s/config", f.dir);
  snprintf(sshcfg, sizeof(sshcfg), "%s/ssh_config", f.dir);
  FILE *fp = fopen(cfg, "w");
  fprintf(fp, "bootstrap %s\nkey %s\nhost laptop key %s\n", f.tn.bootstrap, f.ckey, f.spk);
  fclose(fp);
  setenv("KADPUNCH_CONFIG", cfg, 1);
  const char *gen[] = {KP_BINARY, "ssh-config", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, gen, out, sizeof(out), 10000), 0);
  unsetenv("KADPUNCH_CONFIG"); /* ssh gets it from the ProxyCommand */
  snprintf(text, sizeof(text),
           "Host laptop\n    ProxyCommand env KADPUNCH_CONFIG='%s' '%s' connect "
           "laptop --stdio\n",
           cfg, KP_BINARY);
  KP_CHECK_MSG(strstr(out, text), "%s", out);
  fp = fopen(sshcfg, "w");
  fputs(out, fp);
  fclose(fp);
  f.srv.heard_len = 0;
  f.srv.heard[0] = '\0';
  const char *named[] = {"/usr/bin/ssh",
                         "-v",
                         "-F",
                         sshcfg,
                         "-o",
                         "BatchMode=yes",
                         "-o",
                         "StrictHostKeyChecking=no",
                         "-o",
                         "UserKnownHostsFile=/dev/null",
                         "-o",
                         "ConnectTimeout=20",
                         "laptop",
                         "true",
                         NULL};
  rc = kp_test_run_cli(&f.loop, named, out, sizeof(out), 30000);
  KP_CHECK_MSG(rc == 255 && strstr(f.srv.heard, "SSH-2.0-OpenSSH") &&
                   strstr(out, "remote software version kadpunch_test"),
               "ssh laptop exited %d: %s; heard: %s", rc, out, f.srv.heard);
  fx_down(&f);
}

/* Bad options: a clear message and exit 2, before any network. */
static void test_bad_options(void) {
  char dir[] = "/tmp/kp-fwd-XXXXXX", bad[300], out[4096];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(bad, sizeof(bad), "%s/allowed", dir);
  FILE *fp = fopen(bad, "w");
  fprintf(fp, "# ok so far\n\nnot-a-key\n");
  fclose(fp);
  kp_keypair_t kp;
  char key[KP_KEY_TEXT_LEN + 1];
  kp_keypair_generate(&kp);
  kp_key_to_text(kp.public_key, key);
  const struct {
    const char *args[6];
    const char *says;
  } cases[] = {
      {{"serve", "--forward", "no-port"}, "expected HOST:PORT"},
      {{"serve", "--forward", "127.0.0.1:0"}, "port must be 1 to 65535"},
      {{"serve", "--forward", "127.0.0.1:65536"}, "port must be 1 to 65535"},
      {{"serve", "--forward", "[::1:22"}, "expected HOST:PORT"},
      {{"serve", "--forward", "::1:22"}, "expected HOST:PORT"},
      {{"serve", "--allow-file", "/nonexistent/allowed"}, "No such file"},
      {{"serve", "--allow-file", dir}, "Is a directory"},
      {{"serve", "--allow-file", bad}, ":3: not a public key: 'not-a-key'"},
      {{"connect", key, "--listen", "nowhere"}, "expected ADDR:PORT"},
      {{"connect", key, "--listen", "127.0.0.1"}, "expected ADDR:PORT"},
      {{"connect", key, "--listen", "1", "--stdio"}, "not both"},
      {{"connect", key, "--stdio", "--json"}, "--json, --message and --wait-direct go without"},
      {{"connect", key, "--listen", "1", "--wait-direct", "5"}, "--wait-direct go without"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *argv[12] = {KP_BINARY};
    size_t n = 1;
    for (size_t j = 0; j < 6 && cases[i].args[j]; j++) argv[n++] = cases[i].args[j];
    argv[n++] = "--bootstrap";
    argv[n++] = "127.0.0.1:9";
    argv[n] = NULL;
    KP_CHECK_EQ(kp_test_run_cli(NULL, argv, out, sizeof(out), 5000), 2);
    KP_CHECK_MSG(strstr(out, cases[i].says), "%s %s: %s", cases[i].args[0], cases[i].args[1], out);
  }
  kp_test_sh("rm -rf %s", dir);
}

static const kp_test_case_t cases[] = {
    KP_CASE(bulk, loopback, 90),
    KP_CASE(many, loopback, 60),
    KP_CASE(half_close, loopback, 60),
    KP_CASE(server_first, loopback, 60),
    KP_CASE(slow_reader, loopback, 90),
    KP_CASE(reconnect, loopback, 90),
    KP_CASE(stdio_echo, loopback, 60),
    KP_CASE(stdio_refused, loopback, 60),
    KP_CASE(ssh_proxycommand, loopback, 60),
    KP_CASE(listen_waits_for_server, loopback, 90),
    KP_CASE(ping_any_server, loopback, 90),
    KP_CASE(status_lists_connections, loopback, 90),
    KP_CASE(bad_options, loopback, 30),
};

KP_TEST_MAIN(cases)
