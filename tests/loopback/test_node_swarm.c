/* SPDX-License-Identifier: MIT */
/* Swarms through kp_node on real sockets: a 1000-node network that loses
 * 30% of its nodes, and the announce/lookup/put/get/keygen commands. */
#include <sys/stat.h>
#include <unistd.h>

#include "common/rng.h"
#include "dht/dht_id.h"
#include "node/testnet.h"
#include "tests/harness/test.h"
#include "tests/loopback/test_node.h"
#include "tests/loopback/testnet_up.h"

/* ---- Helpers ------------------------------------------------------------- */

typedef struct {
  int rounds;
  int status;
} announce_state_t;

static void on_announce(kp_announce_t *a, int status, unsigned stored) {
  announce_state_t *st = kp_announce_get_data(a);
  (void)stored;
  st->rounds++;
  st->status = status;
}

typedef struct {
  int rounds_wanted;
  announce_state_t *st;
} rounds_t;

static bool has_rounds(void *ctx) {
  rounds_t *r = ctx;
  return r->st->rounds >= r->rounds_wanted;
}

typedef struct {
  const uint8_t *key;
  int pending;
  int found;
} lookups_t;

static void count_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  lookups_t *l = arg;
  (void)node;
  if (!memcmp(rec->public_key, l->key, KP_PUBLIC_KEY_LEN)) l->found++;
}

static void lookup_finished(kp_node_t *node, int status, size_t found,
                            const kp_node_query_stats_t *stats, void *arg) {
  lookups_t *l = arg;
  (void)node, (void)status, (void)found, (void)stats;
  l->pending--;
}

static bool lookups_done(void *ctx) {
  return ((lookups_t *)ctx)->pending == 0;
}

static void on_closed(kp_node_t *node) {
  int *pending = kp_node_get_data(node);
  (*pending)--;
}

static bool none_left(void *ctx) {
  return *(int *)ctx == 0;
}

void test_swarm_survives_churn(void) {
  kp_test_raise_fd_limit(4096);
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_options_t o;
  kp_testnet_options_init(&o);
  o.size = 1000;
  o.seed = 1000;
  kp_testnet_t tn;
  KP_CHECK_OK(kp_testnet_create(&loop, &o, &tn));
  /* Generous: under AddressSanitizer a thousand joins on one core take a while. */
  KP_CHECK_MSG(kp_testnet_wait_joined(&tn, 150000), "%zu of 1000 joined", kp_testnet_joined(&tn));

  kp_rng_seeded_t st;
  kp_rng_seeded_init(&st, 1001);
  kp_rng_t rng = kp_rng_seeded(&st);
  size_t announcer_index = 1 + kp_rng_below(&rng, 999);
  kp_node_t *announcer = tn.nodes[announcer_index];
  kp_keypair_t kp;
  kp_keypair_generate(&kp);
  uint8_t target[KP_ID_LEN];
  kp_target_from_key(kp.public_key, target);
  announce_state_t ast = {0};
  kp_announce_t *a;
  KP_CHECK_OK(kp_node_announce(announcer, target, &kp, "here", 4, on_announce, &a));
  kp_announce_set_data(a, &ast);
  rounds_t one = {1, &ast};
  KP_CHECK(kp_testnet_run_until(&loop, has_rounds, &one, 10000));
  KP_CHECK_OK(ast.status);

  /* A lookup from a random node finds it. */
  lookups_t l = {kp.public_key, 1, 0};
  KP_CHECK_OK(kp_node_lookup(tn.nodes[kp_rng_below(&rng, 1000)], target, count_record,
                             lookup_finished, &l));
  KP_CHECK(kp_testnet_run_until(&loop, lookups_done, &l, 10000));
  KP_CHECK_EQ(l.found, 1);

  /* Kill 30% of the nodes: 8 of the 20 that store the record (among them the
   * first relay), then others at random; never the announcer. */
  kp_addr_t relays[KP_RECORD_MAX_RELAYS];
  KP_CHECK_EQ(kp_announce_relays(a, relays, 3), 3);
  uint8_t closest[KP_DHT_K][KP_ID_LEN];
  KP_CHECK_EQ(kp_testnet_true_closest(&tn, target, NULL, closest), KP_DHT_K);
  int pending = 0, killed = 0, holders_killed = 0;
  for (size_t i = 0; i < tn.count && killed < 300; i++) {
    kp_node_t *n = tn.nodes[i];
    if (!n || n == announcer) continue;
    kp_addr_t addr;
    kp_node_local_addr(n, &addr);
    bool holder = false;
    for (int k = 0; k < 8; k++) holder |= !memcmp(kp_node_id(n), closest[k], KP_ID_LEN);
    if (kp_addr_eq(&addr, &relays[0])) holder = true;
    if (!holder) continue;
    kp_node_set_data(n, &pending);
    kp_node_close(n, on_closed);
    tn.nodes[i] = NULL;
    pending++, killed++, holders_killed++;
  }
  while (killed < 300) {
    size_t i = kp_rng_below(&rng, (uint32_t)tn.count);
    kp_node_t *n = tn.nodes[i];
    if (!n || n == announcer) continue;
    kp_node_set_data(n, &pending);
    kp_node_close(n, on_closed);
    tn.nodes[i] = NULL;
    pending++, killed++;
  }
  KP_CHECK(holders_killed >= 8);
  KP_CHECK(kp_testnet_run_until(&loop, none_left, &pending, 10000));

  /* The announcer refreshes (on its own it would within 20 s, when its
   * keepalive finds the dead relay): a new round over the surviving nodes. */
  kp_announce_refresh(a);
  rounds_t two = {2, &ast};
  KP_CHECK(kp_testnet_run_until(&loop, has_rounds, &two, 60000));
  KP_CHECK_OK(ast.status);

  /* 100 lookups from random surviving nodes, 20 at a time. */
  int found = 0;
  for (int batch = 0; batch < 5; batch++) {
    lookups_t lb = {kp.public_key, 0, 0};
    for (int i = 0; i < 20; i++) {
      kp_node_t *from;
      do from = tn.nodes[kp_rng_below(&rng, (uint32_t)tn.count)];
      while (!from);
      KP_CHECK_OK(kp_node_lookup(from, target, count_record, lookup_finished, &lb));
      lb.pending++;
    }
    KP_CHECK(kp_testnet_run_until(&loop, lookups_done, &lb, 60000));
    found += lb.found;
  }
  printf("after losing 30%% of 1000 nodes (%d of them holders): %d/100 lookups found the peer\n",
         holders_killed, found);
  KP_CHECK(found >= 99);
  kp_announce_stop(a, false);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* ---- The commands ------------------------------------------------------------ */

void test_cli_keygen(void) {
  char dir[] = "/tmp/kp-keygen-XXXXXX", path[256], out[4096];
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof(path), "%s/id", dir);
  const char *argv[] = {KP_BINARY, "keygen", "-o", path, NULL};
  KP_CHECK_EQ(kp_test_run_cli(NULL, argv, out, sizeof(out), 10000), 0);
  struct stat st;
  KP_CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
  kp_keypair_t kp;
  KP_CHECK_OK(kp_key_file_read(path, &kp));
  char text[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(kp.public_key, text);
  KP_CHECK_MSG(!strncmp(out, text, KP_KEY_TEXT_LEN), "printed %s, file has %s", out, text);
  /* Never replaced by accident. */
  KP_CHECK_EQ(kp_test_run_cli(NULL, argv, out, sizeof(out), 10000), 1);
  KP_CHECK(strstr(out, "exists; not replacing it"));
  const char *force[] = {KP_BINARY, "keygen", "-o", path, "--force", NULL};
  KP_CHECK_EQ(kp_test_run_cli(NULL, force, out, sizeof(out), 10000), 0);
  KP_CHECK(strncmp(out, text, KP_KEY_TEXT_LEN) != 0);
  /* A key others can read is refused, with what to do about it. */
  KP_CHECK(chmod(path, 0644) == 0);
  const char *announce[] = {KP_BINARY, "announce",    "x",           "--key",
                            path,      "--bootstrap", "127.0.0.1:9", NULL};
  KP_CHECK_EQ(kp_test_run_cli(NULL, announce, out, sizeof(out), 10000), 2);
  KP_CHECK(strstr(out, "readable by group or others") && strstr(out, "chmod 600"));
  /* Not a key at all. */
  FILE *f = fopen(path, "w");
  fputs("-----BEGIN OPENSSH PRIVATE KEY-----\n", f);
  fclose(f);
  chmod(path, 0600);
  KP_CHECK_EQ(kp_test_run_cli(NULL, announce, out, sizeof(out), 10000), 2);
  KP_CHECK(strstr(out, "not a kadpunch key file"));
  kp_test_sh("rm -rf %s", dir);
}

void test_cli_swarm_commands(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 30, 20000, &tn);
  char boot[64], dir[] = "/tmp/kp-cli-XXXXXX", key[256], out[8192];
  snprintf(boot, sizeof(boot), "%s", tn.bootstrap);
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(key, sizeof(key), "%s/key", dir);
  const char *keygen[] = {KP_BINARY, "keygen", "-o", key, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, keygen, out, sizeof(out), 10000), 0);
  char pk[KP_KEY_TEXT_LEN + 1];
  memcpy(pk, out, KP_KEY_TEXT_LEN);
  pk[KP_KEY_TEXT_LEN] = '\0';

  /* An announcer in the background; a lookup sees it, with its data. */
  const char *announce[] = {KP_BINARY, "announce", "room-9",      "--key", key,
                            "--data",  "hi",       "--bootstrap", boot,    NULL};
  kp_test_child_t *child = kp_test_spawn(&loop, announce);
  KP_CHECK(kp_test_child_wait_output(&loop, child, "stored on", 10000));
  const char *lookup[] = {KP_BINARY, "lookup", "room-9", "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, lookup, out, sizeof(out), 20000), 0);
  KP_CHECK_MSG(strstr(out, pk) && strstr(out, "data hi") && strstr(out, "1 peer found"), "%s", out);
  const char *lookup_json[] = {KP_BINARY, "lookup", "room-9", "--json", "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, lookup_json, out, sizeof(out), 20000), 0);
  char want[128];
  snprintf(want, sizeof(want), "{\"key\":\"%s\",\"relays\":[\"", pk);
  KP_CHECK_MSG(strstr(out, want) && strstr(out, "\"data\":\"hi\"}") && strstr(out, "{\"found\":1,"),
               "%s", out);
  /* SIGTERM: it withdraws and exits 0; the lookup then comes back empty. */
  KP_CHECK_EQ(kp_test_child_stop(&loop, child, 10000), 0);
  KP_CHECK_EQ(kp_test_run_cli(&loop, lookup, out, sizeof(out), 20000), 0);
  KP_CHECK_MSG(strstr(out, "0 peers found"), "%s", out);

  /* Values: immutable by hash; mutable by key and salt, with CAS. */
  const char *put[] = {KP_BINARY, "put", "some bytes", "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, put, out, sizeof(out), 20000), 0);
  char hash[KP_KEY_TEXT_LEN + 1];
  memcpy(hash, out, KP_KEY_TEXT_LEN);
  hash[KP_KEY_TEXT_LEN] = '\0';
  const char *get[] = {KP_BINARY, "get", hash, "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, get, out, sizeof(out), 20000), 0);
  KP_CHECK_MSG(!strncmp(out, "some bytes", 10), "%s", out);
  const char *mput1[] = {KP_BINARY, "put", "--mutable",   "--key", key, "--salt",
                         "s",       "v1",  "--bootstrap", boot,    NULL};
  const char *mput2[] = {KP_BINARY, "put", "--mutable",   "--key", key, "--salt",
                         "s",       "v2",  "--bootstrap", boot,    NULL};
  const char *mstale[] = {KP_BINARY, "put", "--mutable",   "--key", key,
                          "--salt",  "s",   "--seq",       "1",     "--cas",
                          "0",       "v0",  "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, mput1, out, sizeof(out), 20000), 0);
  KP_CHECK(strstr(out, "seq 1"));
  KP_CHECK_EQ(kp_test_run_cli(&loop, mput2, out, sizeof(out), 20000), 0);
  KP_CHECK(strstr(out, "seq 2"));
  KP_CHECK_EQ(kp_test_run_cli(&loop, mstale, out, sizeof(out), 20000), 1);
  KP_CHECK_MSG(strstr(out, "compare-and-swap"), "%s", out);
  const char *mget[] = {KP_BINARY, "get",         "--mutable", pk,  "--salt",
                        "s",       "--bootstrap", boot,        NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, mget, out, sizeof(out), 20000), 0);
  KP_CHECK_MSG(strstr(out, "v2") && strstr(out, "seq 2"), "%s", out);
  const char *missing[] = {KP_BINARY, "get",         "--mutable", pk,  "--salt",
                           "none",    "--bootstrap", boot,        NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, missing, out, sizeof(out), 20000), 1);
  KP_CHECK(strstr(out, "not found"));

  /* Errors: no bootstrap, nobody there, bad arguments. */
  const char *nobody[] = {KP_BINARY, "lookup", "x", "--bootstrap", "127.0.0.1:9", NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, nobody, out, sizeof(out), 30000), 1);
  KP_CHECK(strstr(out, "no DHT node answered"));
  const char *bad[] = {KP_BINARY, "get", "not-a-hash", "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, bad, out, sizeof(out), 10000), 2);
  kp_test_sh("rm -rf %s", dir);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
}

/* kadpunch serve / connect: a connect by key prints the NATs, the path and
 * the phases and gets its message echoed; --json parses as one object; a
 * key outside --allow gets the refusal reason and exit code 1. */
void test_cli_serve_connect(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  kp_testnet_t tn;
  kp_test_testnet_up(&loop, 20, 20000, &tn);
  char boot[64], dir[] = "/tmp/kp-cli-XXXXXX", skey[256], ckey[256], out[8192];
  snprintf(boot, sizeof(boot), "%s", tn.bootstrap);
  KP_CHECK(mkdtemp(dir) != NULL);
  snprintf(skey, sizeof(skey), "%s/server", dir);
  snprintf(ckey, sizeof(ckey), "%s/client", dir);
  char spk[KP_KEY_TEXT_LEN + 1], cpk[KP_KEY_TEXT_LEN + 1];
  kp_test_keygen(&loop, skey, spk);
  kp_test_keygen(&loop, ckey, cpk);

  const char *serve[] = {KP_BINARY, "serve",       "--key", skey, "--allow",
                         cpk,       "--bootstrap", boot,    NULL};
  kp_test_child_t *server = kp_test_spawn(&loop, serve);
  KP_CHECK(kp_test_child_wait_output(&loop, server, "serving", 10000));
  /* Give the announcement a moment to be stored. */
  kp_testnet_run_until(&loop, NULL, NULL, 1000);

  const char *connect[] = {KP_BINARY,   "connect",   spk,           "--key", ckey,
                           "--message", "ping-1234", "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, connect, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(strstr(out, "connected to") && strstr(out, "9 bytes back") &&
                   strstr(out, "lookup") && strstr(out, "handshake") && strstr(out, "punch") &&
                   strstr(out, "nat ") && strstr(out, "path "),
               "%s", out);
  const char *json[] = {KP_BINARY, "connect",     spk,  "--key", ckey,
                        "--json",  "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, json, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(out[0] == '{' && strstr(out, "\"ok\":true") && strstr(out, "\"strategy\":\"") &&
                   strstr(out, "\"echo_bytes\":5"),
               "%s", out);
  /* A throwaway key is not on the list. */
  const char *stranger[] = {KP_BINARY,          "connect",     spk,  "--key",
                            "/nonexistent/key", "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, stranger, out, sizeof(out), 30000), 2);
  setenv("KADPUNCH_KEY", "/nonexistent/key", 1);
  const char *refused[] = {KP_BINARY, "connect", spk, "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, refused, out, sizeof(out), 30000), 1);
  unsetenv("KADPUNCH_KEY");
  KP_CHECK_MSG(strstr(out, "not allowed"), "%s", out);
  /* Through a blind relay (kadpunch relay) when asked to: the path says so. */
  char rbind[64];
  snprintf(rbind, sizeof(rbind), "127.0.0.1:%d", kp_testnet_free_port());
  const char *relay[] = {KP_BINARY, "relay",   "--bind", rbind, "--bootstrap",
                         boot,      "--every", "1",      NULL};
  kp_test_child_t *relay_child = kp_test_spawn(&loop, relay);
  KP_CHECK(kp_test_child_wait_output(&loop, relay_child, "relaying on", 10000));
  const char *via[] = {KP_BINARY, "connect", spk,           "--key", ckey, "--relay-only",
                       "--relay", rbind,     "--bootstrap", boot,    NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, via, out, sizeof(out), 30000), 0);
  KP_CHECK_MSG(strstr(out, "relayed to") && strstr(out, "9 bytes back") == NULL &&
                   strstr(out, "5 bytes back"),
               "%s", out);
  KP_CHECK(kp_test_child_wait_output(&loop, relay_child, "1 paired", 5000));
  KP_CHECK_EQ(kp_test_child_stop(&loop, relay_child, 10000), 0);
  /* Nobody announced this key. */
  const char *nobody[] = {KP_BINARY, "connect", cpk, "--bootstrap", boot, NULL};
  KP_CHECK_EQ(kp_test_run_cli(&loop, nobody, out, sizeof(out), 30000), 1);
  KP_CHECK_MSG(strstr(out, kp_strerror(KP_EPEERNOTFOUND)), "%s", out);
  KP_CHECK_EQ(kp_test_child_stop(&loop, server, 10000), 0);
  kp_testnet_destroy(&tn);
  kp_test_check_loop_closes(&loop);
  kp_test_sh("rm -rf %s", dir);
}
