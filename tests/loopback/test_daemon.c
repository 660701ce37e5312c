/* SPDX-License-Identifier: MIT */
/* The kadpunch program as a service, on loopback: `kadpunch daemon` from a
 * config file with its state directory, one-time invitations (`kadpunch
 * invite`, `kadpunch connect CODE`), device info and named services, the
 * allow list re-read on SIGHUP, and the errors a bad config or key file
 * gets. Every program is started here and stopped by its PID. */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/harness/test.h"
#include "tests/loopback/tcp_peers.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define NODES 12

static int server_pid;

static void kill_server(void) {
  if (server_pid > 0) kill(server_pid, SIGKILL);
}

typedef struct fx_s {
  uv_loop_t loop;
  kp_testnet_t tn;
  char dir[32], cfg[128], state[128], ckey[128], ckey2[128];
  char cpk[KP_KEY_TEXT_LEN + 1], cpk2[KP_KEY_TEXT_LEN + 1], spk[KP_KEY_TEXT_LEN + 1];
  kp_test_child_t *server;
  char out[16384];
} fx_t;

static void fx_up(fx_t *f) {
  memset(f, 0, sizeof(*f));
  static bool registered;
  if (!registered) atexit(kill_server);
  registered = true;
  uv_loop_init(&f->loop);
  kp_test_testnet_up(&f->loop, NODES, 20000, &f->tn);
  snprintf(f->dir, sizeof(f->dir), "/tmp/kp-dmn-XXXXXX");
  KP_CHECK(mkdtemp(f->dir) != NULL);
  snprintf(f->cfg, sizeof(f->cfg), "%s/kadpunch.conf", f->dir);
  snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
  snprintf(f->ckey, sizeof(f->ckey), "%s/client", f->dir);
  snprintf(f->ckey2, sizeof(f->ckey2), "%s/client2", f->dir);
  kp_test_keygen(&f->loop, f->ckey, f->cpk);
  kp_test_keygen(&f->loop, f->ckey2, f->cpk2);
}

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  KP_CHECK(fp != NULL);
  fputs(text, fp);
  fclose(fp);
}

/* The daemon, from a config with extra lines; spk gets its key. */
static void fx_daemon(fx_t *f, const char *extra) {
  char text[2048];
  snprintf(text, sizeof(text),
           "# a test daemon\nstate = %s\nbootstrap = %s\nbind = 127.0.0.1:0\nlog = warn\n%s",
           f->state, f->tn.bootstrap, extra);
  write_file(f->cfg, text);
  const char *argv[] = {KP_BINARY, "daemon", "--config", f->cfg, NULL};
  f->server = kp_test_spawn(&f->loop, argv);
  server_pid = kp_test_child_pid(f->server);
  KP_CHECK(kp_test_child_wait_output(&f->loop, f->server, "serving", 15000));
  const char *at = strstr(kp_test_child_stdout(f->server), "serving ");
  KP_CHECK(at);
  memcpy(f->spk, at + 8, KP_KEY_TEXT_LEN);
  KP_CHECK(kp_test_wait_announced(&f->loop, f->tn.bootstrap, f->spk, 20000));
}

/* `kadpunch connect TARGET --key KEY --bootstrap B [extra]`: exit status. */
static int fx_connect(fx_t *f, const char *target, const char *key, const char *extra) {
  const char *argv[12] = {KP_BINARY, "connect",     target,         "--key",
                          key,       "--bootstrap", f->tn.bootstrap};
  size_t n = 7;
  if (extra) argv[n++] = extra;
  argv[n] = NULL;
  return kp_test_run_cli(&f->loop, argv, f->out, sizeof(f->out), 30000);
}

/* One request on a control socket, the answer line into out. */
static void control_ask(const char *path, const char *request, char *out, size_t cap) {
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

static void fx_down(fx_t *f) {
  if (f->server) KP_CHECK_EQ(kp_test_child_stop(&f->loop, f->server, 10000), 0);
  server_pid = 0;
  kp_testnet_destroy(&f->tn);
  kp_test_check_loop_closes(&f->loop);
  char cmd[96];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
  KP_CHECK_EQ(system(cmd), 0);
}

/* An invitation lets one client in, once; that client stays in (its key
 * is in state/allow); a second use, a late one and a stranger are each
 * refused with their reason. */
static void test_invite_once(void) {
  fx_t f;
  fx_up(&f);
  fx_daemon(&f, "");
  /* The key was made on first start, 0600. */
  char path[256];
  struct stat st;
  snprintf(path, sizeof(path), "%s/key", f.state);
  KP_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, NULL), 1);
  KP_CHECK_MSG(strstr(f.out, "not allowed"), "%s", f.out);

  const char *inv[] = {KP_BINARY, "invite", "--config", f.cfg, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, inv, f.out, sizeof(f.out), 10000), 0);
  char code[KP_INVITE_TEXT_LEN + 1];
  memcpy(code, f.out, KP_INVITE_TEXT_LEN);
  code[KP_INVITE_TEXT_LEN] = '\0';
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey, NULL), 0);
  KP_CHECK_MSG(strstr(f.out, "paired with"), "%s", f.out);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey2, NULL), 1);
  KP_CHECK_MSG(strstr(f.out, "already used"), "%s", f.out);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, NULL), 0); /* in for good */
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey2, NULL), 1);

  const char *late[] = {KP_BINARY, "invite", "--config", f.cfg, "--expires", "1", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, late, f.out, sizeof(f.out), 10000), 0);
  memcpy(code, f.out, KP_INVITE_TEXT_LEN);
  kp_testnet_run_until(&f.loop, NULL, NULL, 2100);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey2, NULL), 1);
  KP_CHECK_MSG(strstr(f.out, "expired"), "%s", f.out);

  /* The control socket: owner-only, and it counts what happened. */
  char sock[256], answer[4096];
  snprintf(sock, sizeof(sock), "%s/control.sock", f.state);
  KP_CHECK(stat(sock, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
  control_ask(sock, "{\"cmd\":\"serve\"}\n", answer, sizeof(answer));
  KP_CHECK_MSG(strstr(answer, "\"ok\":true") && strstr(answer, "\"invited\":1") &&
                   strstr(answer, f.spk),
               "%s", answer);
  control_ask(sock, "{\"cmd\":\"table\"}\n", answer, sizeof(answer));
  KP_CHECK_MSG(strstr(answer, "\"ok\":true"), "%s", answer);
  /* A code for another server's key proves nothing here. */
  code[0] = code[0] == 'y' ? 'b' : 'y';
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey2, NULL), 1);
  fx_down(&f);
}

/* Named services: the client picks one (or gets the first); an unknown
 * name is refused with its reason; --info shows the device. */
static void test_services_and_info(void) {
  fx_t f;
  fx_up(&f);
  kp_tcp_server_t echo = {.mode = KP_TCP_ECHO};
  kp_tcp_server_start(&f.loop, &echo);
  char extra[512];
  snprintf(extra, sizeof(extra),
           "allow = %s\nforward = alpha 127.0.0.1:%d\nforward = beta 127.0.0.1:%d\n"
           "name = test-box\ninfo = everyone\n",
           f.cpk, echo.port, echo.port);
  fx_daemon(&f, extra);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, "--info"), 0);
  KP_CHECK_MSG(strstr(f.out, "device      test-box, kadpunch") && strstr(f.out, "alpha beta"), "%s",
               f.out);
  /* Refused, but info = everyone: it still says who it is. */
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey2, "--info"), 1);
  KP_CHECK_MSG(strstr(f.out, "not allowed") && strstr(f.out, "test-box"), "%s", f.out);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, "--service=beta"), 0);
  KP_CHECK_MSG(strstr(f.out, "echo        5 bytes"), "%s", f.out);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, "--service=gamma"), 1);
  KP_CHECK_MSG(strstr(f.out, "no service by that name"), "%s", f.out);
  kp_tcp_server_stop(&echo);
  fx_down(&f);
}

/* SIGHUP re-reads the allow list: a key added to the file gets in. */
static void test_sighup_reload(void) {
  fx_t f;
  fx_up(&f);
  char allow[160], extra[256];
  snprintf(allow, sizeof(allow), "%s/allowed", f.dir);
  write_file(allow, "# nobody yet\n");
  snprintf(extra, sizeof(extra), "allow-file = %s\n", allow);
  fx_daemon(&f, extra);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, NULL), 1);
  char line[128];
  snprintf(line, sizeof(line), "%s # added\n", f.cpk);
  write_file(allow, line);
  kill(kp_test_child_pid(f.server), SIGHUP);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "reloaded the allow list: 1 keys", 5000));
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, NULL), 0);
  fx_down(&f);
}

/* `kadpunch invite ARGS...` (NULL-terminated after the program): exit
 * status; code gets the invitation printed first. */
static int fx_invite(fx_t *f, const char *const *args, char code[KP_INVITE_TEXT_LEN + 1]) {
  const char *argv[12] = {KP_BINARY, "invite"};
  size_t n = 2;
  for (size_t i = 0; args[i]; i++) argv[n++] = args[i];
  argv[n] = NULL;
  int rc = kp_test_run_cli(&f->loop, argv, f->out, sizeof(f->out), 10000);
  memcpy(code, f->out, KP_INVITE_TEXT_LEN);
  code[KP_INVITE_TEXT_LEN] = '\0';
  return rc;
}

/* `kadpunch connect TARGET --bootstrap B` with the key from $HOME. */
static int fx_connect_home(fx_t *f, const char *target) {
  const char *argv[] = {KP_BINARY, "connect", target, "--bootstrap", f->tn.bootstrap, NULL};
  return kp_test_run_cli(&f->loop, argv, f->out, sizeof(f->out), 30000);
}

/* HOME is dir/home (made); KADPUNCH_KEY unset: the default key path is
 * dir/home/.kadpunch/key. */
static void fx_home(fx_t *f, char *home, size_t cap) {
  snprintf(home, cap, "%s/home", f->dir);
  KP_CHECK_EQ(mkdir(home, 0700), 0);
  setenv("HOME", home, 1);
  unsetenv("KADPUNCH_KEY");
}

/* Pairing against a server whose service is a TCP forward (the common
 * case: ssh) says it worked and exits 0: getting in is the answer, no
 * echo is asked of a service that does not echo. */
static void test_pairing_says_paired(void) {
  fx_t f;
  fx_up(&f);
  kp_tcp_server_t ssh = {.mode = KP_TCP_BANNER, .banner = "SSH-2.0-OpenSSH_9.2\r\n"};
  kp_tcp_server_start(&f.loop, &ssh);
  char extra[128], code[KP_INVITE_TEXT_LEN + 1], want[160];
  snprintf(extra, sizeof(extra), "forward = ssh 127.0.0.1:%d\n", ssh.port);
  fx_daemon(&f, extra);
  const char *args[] = {"--config", f.cfg, NULL};
  KP_CHECK_EQ(fx_invite(&f, args, code), 0);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey, NULL), 0);
  snprintf(want, sizeof(want), "paired with %s: it lets you in from now on", f.spk);
  KP_CHECK_MSG(strstr(f.out, want) && !strstr(f.out, "protocol error"), "%s", f.out);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "allowed from now on", 5000));
  /* In for good: the same key gets a stream to the service now. */
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, "--info"), 0);
  /* --json says so too. */
  KP_CHECK_EQ(fx_invite(&f, args, code), 0);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey2, "--json"), 0);
  KP_CHECK_MSG(strstr(f.out, "\"ok\":true,\"paired\":true"), "%s", f.out);
  kp_tcp_server_stop(&ssh);
  fx_down(&f);
}

/* A client with no key file that redeems an invitation gets a key file
 * made for it (0600), and that key is the one let in: the next connect,
 * still without --key, gets in. */
static void test_invite_without_key_keeps_a_key(void) {
  fx_t f;
  fx_up(&f);
  char home[96], key[160], code[KP_INVITE_TEXT_LEN + 1];
  const char *old_home = getenv("HOME");
  char saved[512];
  snprintf(saved, sizeof(saved), "%s", old_home ? old_home : "/");
  fx_daemon(&f, "");
  fx_home(&f, home, sizeof(home));
  const char *args[] = {"--config", f.cfg, NULL};
  KP_CHECK_EQ(fx_invite(&f, args, code), 0);
  KP_CHECK_EQ(fx_connect_home(&f, code), 0);
  KP_CHECK_MSG(strstr(f.out, "paired with") && strstr(f.out, "made one") &&
                   !strstr(f.out, "throwaway"),
               "%s", f.out);
  snprintf(key, sizeof(key), "%s/.kadpunch/key", home);
  struct stat st;
  KP_CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600);
  KP_CHECK_EQ(fx_connect_home(&f, f.spk), 0);
  KP_CHECK_MSG(strstr(f.out, "connected to"), "%s", f.out);
  setenv("HOME", saved, 1);
  fx_down(&f);
}

/* `serve --state DIR` (its key from the default path) and `invite --state
 * DIR` agree on the key: the invitation is for the key served, and it
 * lets the client in. */
static void test_state_dir_one_key(void) {
  fx_t f;
  fx_up(&f);
  char home[96], code[KP_INVITE_TEXT_LEN + 1], pk[KP_KEY_TEXT_LEN + 1];
  const char *old_home = getenv("HOME");
  char saved[512];
  snprintf(saved, sizeof(saved), "%s", old_home ? old_home : "/");
  fx_home(&f, home, sizeof(home));
  const char *keygen[] = {KP_BINARY, "keygen", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, keygen, f.out, sizeof(f.out), 10000), 0);
  memcpy(pk, f.out, KP_KEY_TEXT_LEN);
  pk[KP_KEY_TEXT_LEN] = '\0';
  KP_CHECK_EQ(mkdir(f.state, 0700), 0);
  const char *serve[] = {KP_BINARY,      "serve",  "--state",     f.state, "--bootstrap",
                         f.tn.bootstrap, "--bind", "127.0.0.1:0", NULL};
  f.server = kp_test_spawn(&f.loop, serve);
  server_pid = kp_test_child_pid(f.server);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "serving", 15000));
  KP_CHECK_MSG(strstr(kp_test_child_stdout(f.server), pk), "%s", kp_test_child_stdout(f.server));
  kp_testnet_run_until(&f.loop, NULL, NULL, 1000);
  const char *args[] = {"--state", f.state, "--json", NULL};
  KP_CHECK_EQ(fx_invite(&f, args, code), 0);
  KP_CHECK_MSG(strstr(f.out, pk), "invitation for another key than %s: %s", pk, f.out);
  memcpy(code, strstr(f.out, "\"code\":\"") + 8, KP_INVITE_TEXT_LEN);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey, NULL), 0);
  KP_CHECK_MSG(strstr(f.out, "paired with") && strstr(f.out, pk), "%s", f.out);
  setenv("HOME", saved, 1);
  fx_down(&f);
}

/* Invitations made by the running daemon over its control socket work;
 * a server without a state directory says it keeps none; and a state
 * directory the server cannot use is reported as that (on the server's
 * side, naming the file), never as "overloaded". */
static void test_invite_through_control(void) {
  fx_t f;
  fx_up(&f);
  fx_daemon(&f, "");
  char sock[256], code[KP_INVITE_TEXT_LEN + 1];
  snprintf(sock, sizeof(sock), "%s/control.sock", f.state);
  const char *args[] = {"--control", sock, NULL};
  KP_CHECK_EQ(fx_invite(&f, args, code), 0);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey, NULL), 0);
  KP_CHECK_MSG(strstr(f.out, "paired with") && strstr(f.out, f.spk), "%s", f.out);
  KP_CHECK_EQ(fx_connect(&f, f.spk, f.ckey, NULL), 0);
  const char *json[] = {"--control", sock, "--json", "--expires", "60", NULL};
  KP_CHECK_EQ(fx_invite(&f, json, code), 0);
  KP_CHECK_MSG(strstr(f.out, f.spk) && strstr(f.out, "\"expires\":"), "%s", f.out);
  memcpy(code, strstr(f.out, "\"code\":\"") + 8, KP_INVITE_TEXT_LEN);

  /* The lock file replaced by something the server cannot open. */
  char lock[256];
  snprintf(lock, sizeof(lock), "%s/invites.lock", f.state);
  KP_CHECK_EQ(unlink(lock), 0);
  KP_CHECK_EQ(mkdir(lock, 0700), 0);
  KP_CHECK_EQ(fx_connect(&f, code, f.ckey2, NULL), 1);
  KP_CHECK_MSG(!strstr(f.out, "overloaded"), "%s", f.out);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "invitations cannot be redeemed", 5000));
  KP_CHECK_EQ(fx_invite(&f, args, code), 1);
  KP_CHECK_MSG(strstr(f.out, "invites") && strstr(f.out, "says"), "%s", f.out);
  fx_down(&f);

  /* No state directory: nothing to keep invitations in. */
  fx_up(&f);
  snprintf(sock, sizeof(sock), "%s/serve.sock", f.dir);
  const char *serve[] = {KP_BINARY,     "serve",        "--key",  f.ckey2,       "--control", sock,
                         "--bootstrap", f.tn.bootstrap, "--bind", "127.0.0.1:0", NULL};
  f.server = kp_test_spawn(&f.loop, serve);
  server_pid = kp_test_child_pid(f.server);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "serving", 15000));
  KP_CHECK_EQ(fx_invite(&f, args, code), 1);
  KP_CHECK_MSG(strstr(f.out, "keeps no invitations"), "%s", f.out);
  fx_down(&f);
}

typedef struct notify_s {
  int fd;
  char got[1024]; /* every datagram so far, '|' between them */
} notify_t;

static bool notified(void *ctx) {
  notify_t *n = ctx;
  char buf[256];
  ssize_t r;
  while ((r = recv(n->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
    buf[r] = '\0';
    size_t len = strlen(n->got);
    snprintf(n->got + len, sizeof(n->got) - len, "%s|", buf);
  }
  return false;
}

/* Waits until the datagrams so far hold text. */
static bool wait_notify(fx_t *f, notify_t *n, const char *text) {
  for (int i = 0; i < 100 && !strstr(n->got, text); i++)
    kp_testnet_run_until(&f->loop, notified, n, 50);
  return strstr(n->got, text) != NULL;
}

/* Type=notify: the daemon says READY=1 on $NOTIFY_SOCKET once it serves
 * (and its key), RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at
 * the end. */
static void test_notify_ready(void) {
  fx_t f;
  fx_up(&f);
  notify_t n = {.fd = socket(AF_UNIX, SOCK_DGRAM, 0)};
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", f.dir);
  KP_CHECK(n.fd >= 0 && bind(n.fd, (struct sockaddr *)&a, sizeof(a)) == 0);
  setenv("NOTIFY_SOCKET", a.sun_path, 1);
  fx_daemon(&f, "");
  unsetenv("NOTIFY_SOCKET");
  KP_CHECK_MSG(wait_notify(&f, &n, "READY=1\nSTATUS=serving ") && strstr(n.got, f.spk), "%s",
               n.got);
  kill(kp_test_child_pid(f.server), SIGHUP);
  KP_CHECK_MSG(wait_notify(&f, &n, "RELOADING=1|READY=1\nSTATUS=serving; the allow list"), "%s",
               n.got);
  /* One SIGTERM, and the exit it asks for (a second one, once the daemon
   * has let go of its handlers, would kill it). */
  KP_CHECK_EQ(kp_test_child_stop(&f.loop, f.server, 10000), 0);
  f.server = NULL;
  server_pid = 0;
  KP_CHECK_MSG(wait_notify(&f, &n, "STOPPING=1"), "%s", n.got);
  close(n.fd);
  fx_down(&f);
}

static void expect_usage(const char *const *argv, const char *says) {
  char out[4096];
  int rc = kp_test_run_cli(NULL, argv, out, sizeof(out), 10000);
  KP_CHECK_MSG(rc == 2 && strstr(out, says), "exit %d, wanted '%s' in: %s", rc, says, out);
}

/* A bad config, a key file others can read, a damaged key: a clear
 * message naming the problem, exit 2, nothing started. */
static void test_config_errors(void) {
  char dir[32] = "/tmp/kp-dmc-XXXXXX", cfg[96], key[96];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(cfg, sizeof(cfg), "%s/c.conf", dir);
  snprintf(key, sizeof(key), "%s/key", dir);
  const char *daemon[] = {KP_BINARY, "daemon", "--config", cfg, "--check", NULL};
  write_file(cfg, "bootstrap = 127.0.0.1:1\ncolour = blue\n");
  expect_usage(daemon, "c.conf:2: unknown setting 'colour'");
  write_file(cfg, "bootstrap 127.0.0.1:1\n");
  expect_usage(daemon, "c.conf:1: expected `name = value`");
  write_file(cfg, "forward = web 127.0.0.1:99999\n");
  expect_usage(daemon, "the port must be 1 to 65535");
  write_file(cfg, "info = sometimes\n");
  expect_usage(daemon, "nobody, allowed or everyone");
  const char *missing[] = {KP_BINARY, "daemon", "--config", "/nonexistent/k.conf", NULL};
  expect_usage(missing, "No such file");
  char text[256];
  snprintf(text, sizeof(text), "state = %s\nbootstrap = 127.0.0.1:1\n", dir);
  write_file(cfg, text);
  char out[4096];
  KP_CHECK_EQ(kp_test_run_cli(NULL, daemon, out, sizeof(out), 10000), 0);
  /* A key file the group can read: refused, with what to do. */
  const char *keygen[] = {KP_BINARY, "keygen", "-o", key, NULL};
  KP_CHECK_EQ(kp_test_run_cli(NULL, keygen, out, sizeof(out), 10000), 0);
  KP_CHECK_EQ(chmod(key, 0640), 0);
  const char *serve[] = {KP_BINARY, "serve", "--key", key, "--bootstrap", "127.0.0.1:1", NULL};
  expect_usage(serve, "chmod 600");
  write_file(key, "not a key at all\n");
  KP_CHECK_EQ(chmod(key, 0600), 0);
  expect_usage(serve, "not a kadpunch key");
  const char *invite[] = {KP_BINARY, "invite", "--state", "/nonexistent", NULL};
  KP_CHECK_EQ(kp_test_run_cli(NULL, invite, out, sizeof(out), 10000) != 0, true);
  snprintf(text, sizeof(text), "rm -rf %s", dir);
  KP_CHECK_EQ(system(text), 0);
}

static const kp_test_case_t cases[] = {
    KP_CASE(invite_once, loopback, 120),
    KP_CASE(services_and_info, loopback, 90),
    KP_CASE(sighup_reload, loopback, 90),
    KP_CASE(config_errors, loopback, 30),
    KP_CASE(pairing_says_paired, loopback, 120),
    KP_CASE(invite_without_key_keeps_a_key, loopback, 90),
    KP_CASE(state_dir_one_key, loopback, 90),
    KP_CASE(invite_through_control, loopback, 120),
    KP_CASE(notify_ready, loopback, 60),
};

KP_TEST_MAIN(cases)
