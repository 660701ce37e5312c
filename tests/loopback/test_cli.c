/* SPDX-License-Identifier: MIT */
/* The two programs as a new user meets them: -h and -V everywhere, keygen
 * showing an existing key, a bootstrap name that does not resolve said at
 * once, `kadpunch lookup KEY` finding what `kadpunch-inspect lookup KEY`
 * finds, and both ends of one connection naming its path alike. Every
 * program is started here and stopped by its PID. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/harness/test.h"
#include "tests/loopback/test_metrics.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

#define NODES 12

static int run(const char *const *argv, char *out, size_t cap) {
  return kp_test_run_cli(NULL, argv, out, cap, 10000);
}

/* -h on every command of both programs prints its usage and exits 0; -V
 * prints the version. */
static void test_help_and_version(void) {
  static const char *const kadpunch[] = {"demo",   "dht-node", "keygen", "announce", "lookup",
                                         "put",    "get",      "serve",  "connect",  "pair",
                                         "invite", "daemon",   "relay"};
  static const char *const inspect[] = {"ping",  "find-node", "lookup",  "nat",
                                        "crawl", "table",     "records", "stats"};
  char out[16384], want[64];
  for (size_t i = 0; i < sizeof(kadpunch) / sizeof(kadpunch[0]); i++) {
    const char *argv[] = {KP_BINARY, kadpunch[i], "-h", NULL};
    KP_CHECK_MSG(run(argv, out, sizeof(out)) == 0 && strstr(out, "usage: kadpunch "),
                 "kadpunch %s -h: %s", kadpunch[i], out);
  }
  for (size_t i = 0; i < sizeof(inspect) / sizeof(inspect[0]); i++) {
    const char *argv[] = {KP_INSPECT, inspect[i], "-h", NULL};
    KP_CHECK_MSG(run(argv, out, sizeof(out)) == 0 && strstr(out, "usage: kadpunch-inspect "),
                 "kadpunch-inspect %s -h: %s", inspect[i], out);
  }
  const char *programs[] = {KP_BINARY, KP_INSPECT};
  const char *names[] = {"kadpunch ", "kadpunch-inspect "};
  for (size_t i = 0; i < 2; i++) {
    snprintf(want, sizeof(want), "%s%s", names[i], kp_version_string());
    const char *v[] = {programs[i], "-V", NULL}, *h[] = {programs[i], "-h", NULL};
    KP_CHECK_MSG(run(v, out, sizeof(out)) == 0 && strstr(out, want), "%s -V: %s", programs[i], out);
    KP_CHECK_MSG(run(h, out, sizeof(out)) == 0 && strstr(out, "usage:"), "%s", out);
  }
}

/* keygen --public prints the public key of an existing file and changes
 * nothing; a missing file is said with what to do. */
static void test_keygen_public(void) {
  char dir[] = "/tmp/kp-cli-XXXXXX", key[64], out[4096], pk[KP_KEY_TEXT_LEN + 1];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(key, sizeof(key), "%s/key", dir);
  const char *make[] = {KP_BINARY, "keygen", "-o", key, NULL};
  KP_CHECK_EQ(run(make, out, sizeof(out)), 0);
  memcpy(pk, out, KP_KEY_TEXT_LEN);
  pk[KP_KEY_TEXT_LEN] = '\0';
  struct stat before, after;
  KP_CHECK_EQ(stat(key, &before), 0);
  const char *show[] = {KP_BINARY, "keygen", "--public", "-o", key, NULL};
  KP_CHECK_EQ(run(show, out, sizeof(out)), 0);
  KP_CHECK_MSG(!strncmp(out, pk, KP_KEY_TEXT_LEN) && out[KP_KEY_TEXT_LEN] == '\n', "%s", out);
  KP_CHECK_EQ(stat(key, &after), 0);
  KP_CHECK(before.st_ino == after.st_ino && before.st_mtime == after.st_mtime);
  /* The default path, from $KADPUNCH_KEY. */
  setenv("KADPUNCH_KEY", key, 1);
  const char *dflt[] = {KP_BINARY, "keygen", "--public", NULL};
  KP_CHECK_EQ(run(dflt, out, sizeof(out)), 0);
  unsetenv("KADPUNCH_KEY");
  KP_CHECK_MSG(!strncmp(out, pk, KP_KEY_TEXT_LEN), "%s", out);
  const char *missing[] = {KP_BINARY, "keygen", "--public", "-o", "/nonexistent/key", NULL};
  KP_CHECK_EQ(run(missing, out, sizeof(out)), 2);
  KP_CHECK_MSG(strstr(out, "no such key file (create one: kadpunch keygen"), "%s", out);
  kp_test_sh("rm -rf %s", dir);
}

/* A --bootstrap name that does not resolve: exit 2 at once, naming it
 * (not a 10 s wait for answers that cannot come). */
static void test_bootstrap_unresolvable_fails_fast(void) {
  char out[4096];
  const char *cmds[][3] = {
      {"lookup", "some-topic", NULL},
      {"connect", "1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy", NULL},
      {"serve", NULL, NULL}};
  for (size_t i = 0; i < 3; i++) {
    const char *argv[8] = {KP_BINARY};
    size_t n = 1;
    for (size_t j = 0; j < 3 && cmds[i][j]; j++) argv[n++] = cmds[i][j];
    argv[n++] = "--bootstrap";
    argv[n++] = "127.0.0.1:9,no-such-host.invalid:49737";
    argv[n] = NULL;
    uint64_t t0 = kp_test_now_ms();
    int rc = run(argv, out, sizeof(out));
    uint64_t ms = kp_test_now_ms() - t0;
    KP_CHECK_MSG(rc == 2 && strstr(out, "cannot resolve no-such-host.invalid") && ms < 5000,
                 "%s: exit %d after %llu ms: %s", cmds[i][0], rc, (unsigned long long)ms, out);
  }
}

typedef struct fx_s {
  uv_loop_t loop;
  kp_testnet_t tn;
  char dir[32], skey[64], ckey[64], spk[KP_KEY_TEXT_LEN + 1], cpk[KP_KEY_TEXT_LEN + 1];
  char by_name[64]; /* the bootstrap node as localhost:PORT */
  kp_test_child_t *server;
  char out[16384];
} fx_t;

static void fx_up(fx_t *f) {
  memset(f, 0, sizeof(*f));
  uv_loop_init(&f->loop);
  kp_test_testnet_up(&f->loop, NODES, 20000, &f->tn);
  snprintf(f->dir, sizeof(f->dir), "/tmp/kp-cli-XXXXXX");
  KP_CHECK(mkdtemp(f->dir) != NULL);
  snprintf(f->skey, sizeof(f->skey), "%s/server", f->dir);
  snprintf(f->ckey, sizeof(f->ckey), "%s/client", f->dir);
  kp_test_keygen(&f->loop, f->skey, f->spk);
  kp_test_keygen(&f->loop, f->ckey, f->cpk);
  /* A name, resolved by the program: the first node of the list. */
  const char *colon = strchr(f->tn.bootstrap, ':');
  KP_CHECK(colon != NULL);
  snprintf(f->by_name, sizeof(f->by_name), "localhost:%d", atoi(colon + 1));
  const char *argv[] = {KP_BINARY,  "serve",  "--key",       f->skey, "--bootstrap",
                        f->by_name, "--bind", "127.0.0.1:0", NULL};
  f->server = kp_test_spawn(&f->loop, argv);
  KP_CHECK(kp_test_child_wait_output(&f->loop, f->server, "serving", 15000));
  KP_CHECK(kp_test_wait_announced(&f->loop, f->tn.bootstrap, f->spk, 20000));
}

static void fx_down(fx_t *f) {
  KP_CHECK_EQ(kp_test_child_stop(&f->loop, f->server, 10000), 0);
  kp_testnet_destroy(&f->tn);
  kp_test_check_loop_closes(&f->loop);
  kp_test_sh("rm -rf %s", f->dir);
}

/* `kadpunch lookup KEY` finds the peer's own announcement, as
 * `kadpunch-inspect lookup KEY` does; --topic still means the topic. */
static void test_lookup_key_parity(void) {
  fx_t f;
  fx_up(&f);
  const char *inspect[] = {KP_INSPECT, "lookup", f.spk, "--bootstrap", f.tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, inspect, f.out, sizeof(f.out), 20000), 0);
  KP_CHECK_MSG(strstr(f.out, f.spk), "kadpunch-inspect: %s", f.out);
  const char *lookup[] = {KP_BINARY, "lookup", f.spk, "--bootstrap", f.by_name, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, lookup, f.out, sizeof(f.out), 20000), 0);
  KP_CHECK_MSG(strstr(f.out, f.spk) && strstr(f.out, "1 peer found"), "kadpunch: %s", f.out);
  const char *topic[] = {KP_BINARY, "lookup", f.spk, "--topic", "--bootstrap", f.by_name, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, topic, f.out, sizeof(f.out), 20000), 0);
  KP_CHECK_MSG(strstr(f.out, "0 peers found"), "kadpunch --topic: %s", f.out);
  fx_down(&f);
}

/* A node has one family: given only IPv6 bootstrap nodes and no --bind,
 * serve and connect make IPv6 nodes (not "invalid address"), and connect
 * by key over ::1. */
static void test_ipv6_bootstrap_default_bind(void) {
  fx_t f;
  memset(&f, 0, sizeof(f));
  uv_loop_init(&f.loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = NODES;
  o.host = "::1";
  KP_CHECK_OK(kp_testnet_create(&f.loop, &o, &f.tn));
  KP_CHECK(kp_testnet_wait_joined(&f.tn, 20000));
  KP_CHECK(f.tn.bootstrap[0] == '[');
  snprintf(f.dir, sizeof(f.dir), "/tmp/kp-cli-XXXXXX");
  KP_CHECK(mkdtemp(f.dir) != NULL);
  snprintf(f.skey, sizeof(f.skey), "%s/server", f.dir);
  kp_test_keygen(&f.loop, f.skey, f.spk);
  const char *serve[] = {KP_BINARY, "serve", "--key", f.skey, "--bootstrap", f.tn.bootstrap, NULL};
  f.server = kp_test_spawn(&f.loop, serve);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "serving", 15000));
  kp_testnet_run_until(&f.loop, NULL, NULL, 1000); /* the announcement lands */
  const char *connect[] = {KP_BINARY,     "connect",      f.spk, "--json",
                           "--bootstrap", f.tn.bootstrap, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, connect, f.out, sizeof(f.out), 20000), 0);
  KP_CHECK_MSG(strstr(f.out, "\"ok\":true") && strstr(f.out, "\"path\":\"[::1]:"), "connect: %s",
               f.out);
  fx_down(&f);
}

/* The word after "path" in a connection's info block. */
static void path_word(const char *text, char out[32]) {
  const char *at = strstr(text, "  path        ");
  KP_CHECK_MSG(at != NULL, "no path line in: %s", text);
  at += strlen("  path        ");
  size_t n = strcspn(at, " \n");
  KP_CHECK(n < 32);
  memcpy(out, at, n);
  out[n] = '\0';
}

/* One connection, two ends, one name for its path. */
static void test_path_named_alike(void) {
  fx_t f;
  fx_up(&f);
  const char *argv[] = {KP_BINARY, "connect",     f.spk,     "--key",
                        f.ckey,    "--bootstrap", f.by_name, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, argv, f.out, sizeof(f.out), 30000), 0);
  char client[32], server[32];
  path_word(f.out, client);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, "  path        ", 5000));
  path_word(strstr(kp_test_child_stdout(f.server), "connection from"), server);
  KP_CHECK_MSG(!strcmp(client, server), "connect says path %s, serve says path %s", client, server);
  KP_CHECK_MSG(!strcmp(client, "lan"), "on loopback: %s", client);
  fx_down(&f);
}

static void write_text(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  KP_CHECK(fp != NULL);
  fputs(text, fp);
  fclose(fp);
}

/* The config file gives the bootstrap nodes, the key and named hosts:
 * `kadpunch connect laptop` with no other option reaches the server (its
 * service from the host line); a name it does not hold, and a broken
 * file, are said with the file and line, exit 2. */
static void test_config_named_host(void) {
  fx_t f;
  fx_up(&f);
  char cfg[96], text[512];
  snprintf(cfg, sizeof(cfg), "%s/config", f.dir);
  snprintf(text, sizeof(text),
           "# a test network\nbootstrap %s\nkey %s\nhost laptop key %s service echo\n", f.by_name,
           f.ckey, f.spk);
  write_text(cfg, text);
  setenv("KADPUNCH_CONFIG", cfg, 1);
  unsetenv("KADPUNCH_BOOTSTRAP");
  unsetenv("KADPUNCH_KEY");
  const char *named[] = {KP_BINARY, "connect", "laptop", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, named, f.out, sizeof(f.out), 30000), 0);
  KP_CHECK_MSG(strstr(f.out, "connected to") && strstr(f.out, f.spk) && strstr(f.out, "echo"), "%s",
               f.out);
  KP_CHECK(kp_test_child_wait_output(&f.loop, f.server, f.cpk, 5000)); /* the config's key */
  const char *unknown[] = {KP_BINARY, "connect", "desktop", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, unknown, f.out, sizeof(f.out), 10000), 2);
  KP_CHECK_MSG(strstr(f.out, "'desktop': no host of that name") && strstr(f.out, cfg), "%s", f.out);
  write_text(cfg, "bootstrap 127.0.0.1:1\nhost laptop\n");
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, named, f.out, sizeof(f.out), 10000), 2);
  KP_CHECK_MSG(strstr(f.out, "config:2: host laptop: no key"), "%s", f.out);
  /* Help needs no configuration. */
  const char *help[] = {KP_BINARY, "connect", "--help", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&f.loop, help, f.out, sizeof(f.out), 10000), 0);
  unsetenv("KADPUNCH_CONFIG");
  fx_down(&f);
}

/* "2026-12-02T11:53:02.276+0000 " at p. */
static bool stamped(const char *p) {
  static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddd+dddd ";
  for (size_t i = 0; i + 1 < sizeof(shape); i++) {
    char want = shape[i], got = p[i];
    if (want == 'd' ? (got < '0' || got > '9') : i == 23 ? (got != '+' && got != '-') : got != want)
      return false;
  }
  return true;
}

/* Outside journald every event line and node log line starts with the
 * time; under journald (JOURNAL_STREAM) none does, and the node's log
 * lines carry syslog priorities instead. */
static void test_log_timestamps(void) {
  uv_loop_t loop;
  kp_testnet_t tn;
  uv_loop_init(&loop);
  kp_test_testnet_up(&loop, 4, 20000, &tn);
  const char *argv[] = {KP_BINARY,     "serve", "--bootstrap", tn.bootstrap, "--bind",
                        "127.0.0.1:0", "--log", "info",        NULL};
  unsetenv("JOURNAL_STREAM");
  kp_test_child_t *c = kp_test_spawn(&loop, argv);
  KP_CHECK(kp_test_child_wait_output(&loop, c, "no relay found", 15000));
  const char *out = kp_test_child_stdout(c);
  KP_CHECK_MSG(stamped(out) && !strncmp(out + 29, "serving ", 8), "%s", out);
  /* The node's log line (stderr) has the time in front too. */
  KP_CHECK(kp_test_child_wait_output(&loop, c, " kadpunch[info] ", 100));
  KP_CHECK_EQ(kp_test_child_stop(&loop, c, 10000), 0);

  setenv("JOURNAL_STREAM", "8:12345", 1);
  c = kp_test_spawn(&loop, argv);
  KP_CHECK(kp_test_child_wait_output(&loop, c, "no relay found", 15000));
  unsetenv("JOURNAL_STREAM");
  out = kp_test_child_stdout(c);
  KP_CHECK_MSG(!strncmp(out, "serving ", 8), "%s", out);
  KP_CHECK(kp_test_child_wait_output(&loop, c, "<6>", 100));
  KP_CHECK(!kp_test_child_wait_output(&loop, c, "kadpunch[info]", 100));
  KP_CHECK_EQ(kp_test_child_stop(&loop, c, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

static const kp_test_case_t cases[] = {
    KP_CASE(help_and_version, unit, 60),
    KP_CASE(keygen_public, unit, 30),
    KP_CASE(bootstrap_unresolvable_fails_fast, loopback, 30),
    KP_CASE(lookup_key_parity, loopback, 90),
    KP_CASE(path_named_alike, loopback, 90),
    KP_CASE(config_named_host, loopback, 90),
    KP_CASE(metrics_exposition, loopback, 90),
    KP_CASE(metrics_http_errors, loopback, 60),
    KP_CASE(metrics_proxy, loopback, 90),
    KP_CASE(log_timestamps, loopback, 60),
    KP_CASE(ipv6_bootstrap_default_bind, loopback, 90),
};

KP_TEST_MAIN(cases)
