/* SPDX-License-Identifier: MIT */
/* The client's configuration file (node/cli/cli_config.c): what it reads,
 * the file and line of each mistake, which files win, and bad bytes. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/cli/cli_config.h"
#include "tests/harness/test.h"

#define KEY_A "1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy"

static kp_cli_config_t cfg;
static char err[512];

static int parse(const char *text) {
  err[0] = '\0';
  return kp_cli_config_parse(&cfg, text, strlen(text), "cfg", "/home/u", err, sizeof(err));
}

/* Every setting, in both spellings, with comments and blank lines. */
static void test_parse_settings(void) {
  kp_cli_config_init(&cfg);
  KP_CHECK_EQ(parse("# a comment\n"
                    "\n"
                    "bootstrap dht.example.org:49737, 203.0.113.7:49737,[2001:db8::1]:49737\n"
                    "relay = 203.0.113.9:49737   # trailing comment\n"
                    "relay=relay.example.org:4000\n"
                    "key ~/.kadpunch/other\n"
                    "host laptop key " KEY_A " service ssh\n"
                    "\thost nas.home key " KEY_A "\r\n"),
              0);
  KP_CHECK_MSG(
      !strcmp(cfg.bootstrap, "dht.example.org:49737,203.0.113.7:49737,[2001:db8::1]:49737"), "%s",
      cfg.bootstrap);
  KP_CHECK_EQ(cfg.relay_count, 2);
  KP_CHECK(!strcmp(cfg.relays[0], "203.0.113.9:49737"));
  KP_CHECK(!strcmp(cfg.relays[1], "relay.example.org:4000"));
  KP_CHECK_MSG(!strcmp(cfg.key, "/home/u/.kadpunch/other"), "%s", cfg.key);
  KP_CHECK_EQ(cfg.host_count, 2);
  const kp_cli_host_t *h = kp_cli_config_host(&cfg, "laptop");
  uint8_t key[KP_PUBLIC_KEY_LEN];
  KP_CHECK_OK(kp_key_from_text(KEY_A, key));
  KP_CHECK(h && !memcmp(h->key, key, sizeof(key)) && !strcmp(h->service, "ssh"));
  h = kp_cli_config_host(&cfg, "nas.home");
  KP_CHECK(h && !h->service[0]);
  KP_CHECK(kp_cli_config_host(&cfg, "desktop") == NULL);
}

/* A later file replaces what it sets and keeps the rest; a host of the
 * same name is replaced, others are added. */
static void test_later_file_wins(void) {
  kp_cli_config_init(&cfg);
  KP_CHECK_EQ(parse("bootstrap a.example:1\nrelay r1.example:1\nrelay r2.example:2\n"
                    "key /etc/kadpunch/key\nhost laptop key " KEY_A " service ssh\n"),
              0);
  KP_CHECK_EQ(parse("bootstrap b.example:2\nhost laptop key " KEY_A " service web\n"
                    "host nas key " KEY_A "\n"),
              0);
  KP_CHECK(!strcmp(cfg.bootstrap, "b.example:2"));
  KP_CHECK_EQ(cfg.relay_count, 2); /* not set by the second file */
  KP_CHECK(!strcmp(cfg.key, "/etc/kadpunch/key"));
  KP_CHECK_EQ(cfg.host_count, 2);
  KP_CHECK(!strcmp(kp_cli_config_host(&cfg, "laptop")->service, "web"));
  KP_CHECK_EQ(parse("relay r3.example:3\n"), 0);
  KP_CHECK_EQ(cfg.relay_count, 1);
}

/* Each mistake: -1, and the file, the line and what is wrong. */
static void test_parse_errors(void) {
  static char long_line[2100];
  memset(long_line, 'x', sizeof(long_line) - 1);
  memcpy(long_line, "key ", 4);
  const struct {
    const char *text, *says;
  } cases[] = {
      {"colour blue\n", "cfg:1: unknown setting 'colour'"},
      {"\n\nbootstrap\n", "cfg:3: bootstrap: give HOST:PORT"},
      {"bootstrap ,\n", "cfg:1: bootstrap: give HOST:PORT"},
      {"bootstrap 203.0.113.7\n", "cfg:1: bootstrap '203.0.113.7': expected HOST:PORT"},
      {"bootstrap a:0\n", "bootstrap 'a:0'"},
      {"bootstrap a:65536\n", "bootstrap 'a:65536'"},
      {"bootstrap 2001:db8::1:5\n", "expected HOST:PORT"},
      {"bootstrap [2001:db8::1:5\n", "expected HOST:PORT"},
      {"relay\n", "cfg:1: relay: expected one HOST:PORT"},
      {"relay a:1 b:2\n", "relay: expected one HOST:PORT"},
      {"relay a:1\nrelay a:2\nrelay a:3\nrelay a:4\nrelay a:5\n", "cfg:5: relay: at most 4"},
      {"key\n", "key: expected one FILE"},
      {"host\n", "host: expected"},
      {"host laptop\n", "cfg:1: host laptop: no key"},
      {"host laptop key\n", "host laptop: 'key' needs a value"},
      {"host laptop key nope\n", "host laptop: 'nope' is not a public key"},
      {"host laptop key " KEY_A " service bad/name\n", "service 'bad/name'"},
      {"host laptop key " KEY_A " colour red\n", "unknown word 'colour'"},
      {"host -x key " KEY_A "\n", "host '-x': a name is"},
      {"host " KEY_A " key " KEY_A "\n", "that is a key"},
      {"host a b c d e f g h i\n", "too many words"},
      {long_line, "cfg:1: line too long"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kp_cli_config_init(&cfg);
    KP_CHECK_MSG(parse(cases[i].text) == -1 && strstr(err, cases[i].says),
                 "case %zu: wanted '%s', got '%s'", i, cases[i].says, err);
  }
  /* A NUL inside: not a text file. */
  kp_cli_config_init(&cfg);
  KP_CHECK_EQ(kp_cli_config_parse(&cfg, "key a\0b\n", 8, "cfg", NULL, err, sizeof(err)), -1);
  KP_CHECK_MSG(strstr(err, "cfg:1: a NUL byte"), "%s", err);
  /* The host table is bounded. */
  kp_cli_config_init(&cfg);
  char line[128];
  for (int i = 0; i < KP_CLI_CONFIG_HOSTS_MAX; i++) {
    snprintf(line, sizeof(line), "host h%d key %s\n", i, KEY_A);
    KP_CHECK_EQ(parse(line), 0);
  }
  KP_CHECK_EQ(parse("host one-too-many key " KEY_A "\n"), -1);
  KP_CHECK_MSG(strstr(err, "at most 256 hosts"), "%s", err);
  KP_CHECK_EQ(parse("host h7 key " KEY_A " service again\n"), 0); /* replacing is fine */
}

/* Random bytes and mutated good files: an answer every time (0 or an
 * error naming a line), never a crash or an overrun (run under ASan in CI). */
static void test_bad_bytes(void) {
  const char *good = "bootstrap a.example:1,b.example:2\nrelay r.example:3\nkey ~/k\n"
                     "host laptop key " KEY_A " service ssh\n";
  char buf[4096];
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int round = 0; round < 20000; round++) {
    size_t len;
    if (round % 2) {
      len = strlen(good);
      memcpy(buf, good, len);
      for (int m = 0; m < 4; m++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        buf[(seed >> 33) % len] = (char)(seed >> 17);
      }
    } else {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      len = (seed >> 40) % sizeof(buf);
      for (size_t i = 0; i < len; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (char)(seed >> 56);
      }
    }
    kp_cli_config_init(&cfg);
    err[0] = '\0';
    int rc = kp_cli_config_parse(&cfg, buf, len, "fuzz", "/h", err, sizeof(err));
    KP_CHECK(rc == 0 || (rc == -1 && !strncmp(err, "fuzz:", 5)));
    KP_CHECK(cfg.host_count <= KP_CLI_CONFIG_HOSTS_MAX && cfg.relay_count <= 4);
    KP_CHECK(strlen(cfg.bootstrap) < sizeof(cfg.bootstrap));
  }
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  KP_CHECK(f != NULL);
  fputs(text, f);
  fclose(f);
}

/* Which files: $KADPUNCH_CONFIG alone when set; else the XDG file before
 * ~/.kadpunch/config (the first there is); a file that exists but cannot
 * be read is an error, a missing one is not. */
static void test_load_order(void) {
  char dir[] = "/tmp/kp-cfg-XXXXXX", path[256], xdg[128];
  KP_CHECK(mkdtemp(dir) != NULL);
  char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
  setenv("HOME", dir, 1);
  unsetenv("XDG_CONFIG_HOME");
  unsetenv("KADPUNCH_CONFIG");
  kp_cli_config_t *c = calloc(1, sizeof(*c));
  /* Nothing at all: fine, empty (unless this machine has /etc's). */
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), 0);
  kp_test_sh("mkdir -p %s/.kadpunch %s/.config/kadpunch %s/xdg/kadpunch", dir, dir, dir);
  snprintf(path, sizeof(path), "%s/.kadpunch/config", dir);
  write_text(path, "host old key " KEY_A "\n");
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), 0);
  KP_CHECK(kp_cli_config_host(c, "old") != NULL);
  snprintf(path, sizeof(path), "%s/.config/kadpunch/config", dir);
  write_text(path, "host new key " KEY_A "\nkey ~/k\n");
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), 0);
  KP_CHECK(kp_cli_config_host(c, "new") && !kp_cli_config_host(c, "old"));
  KP_CHECK_MSG(!strncmp(c->key, dir, strlen(dir)) && !strcmp(c->key + strlen(dir), "/k"), "%s",
               c->key);
  snprintf(xdg, sizeof(xdg), "%s/xdg", dir);
  setenv("XDG_CONFIG_HOME", xdg, 1);
  snprintf(path, sizeof(path), "%s/kadpunch/config", xdg);
  write_text(path, "host xdg key " KEY_A "\n");
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), 0);
  KP_CHECK(kp_cli_config_host(c, "xdg") && !kp_cli_config_host(c, "new"));
  write_text(path, "host xdg key " KEY_A "\nbogus\n");
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), -1);
  KP_CHECK_MSG(strstr(err, "xdg/kadpunch/config:2: unknown setting 'bogus'"), "%s", err);
  snprintf(path, sizeof(path), "%s/.kadpunch/config", dir);
  setenv("KADPUNCH_CONFIG", path, 1);
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), 0);
  KP_CHECK(kp_cli_config_host(c, "old") && !kp_cli_config_host(c, "xdg"));
  setenv("KADPUNCH_CONFIG", "/nonexistent/config", 1);
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), -1);
  KP_CHECK_MSG(strstr(err, "/nonexistent/config ($KADPUNCH_CONFIG): no such file"), "%s", err);
  /* A directory where the file should be. */
  snprintf(path, sizeof(path), "%s/xdg", dir);
  setenv("KADPUNCH_CONFIG", path, 1);
  KP_CHECK_EQ(kp_cli_config_load(c, err, sizeof(err)), -1);
  unsetenv("KADPUNCH_CONFIG");
  unsetenv("XDG_CONFIG_HOME");
  if (old_home) setenv("HOME", old_home, 1);
  free(old_home);
  free(c);
  kp_test_sh("rm -rf %s", dir);
}

static const kp_test_case_t cases[] = {
    KP_CASE(parse_settings, unit, 10), KP_CASE(later_file_wins, unit, 10),
    KP_CASE(parse_errors, unit, 10),   KP_CASE(bad_bytes, unit, 60),
    KP_CASE(load_order, unit, 10),
};

KP_TEST_MAIN(cases)
