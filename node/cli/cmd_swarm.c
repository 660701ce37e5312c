/* SPDX-License-Identifier: MIT */
/* kadpunch announce / lookup: join a swarm, find who is in one. */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "node/cli/cli.h"

/* ---- announce ---------------------------------------------------------------- */

static const char announce_help[] =
    "usage: kadpunch announce TOPIC [options]\n"
    "       kadpunch announce --self [options]\n"
    "\n"
    "Announces this peer's public key under TOPIC (any text), or under its own\n"
    "key with --self, and keeps the announcement fresh (re-announcing every 10\n"
    "minutes, sooner in a small network, and whenever a relay node leaves)\n"
    "until SIGINT or SIGTERM, when it\n"
    "withdraws it. Prints each round: how many nodes stored it, and the relays.\n"
    "\n"
    "options:\n"
    "  --key FILE              key file (default $KADPUNCH_KEY, else ~/.kadpunch/key;\n"
    "                          without one, a throwaway key is used and printed)\n"
    "  --data TEXT             up to 128 bytes published with the announcement\n"
    "  --self                  announce under our own key instead of a topic\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch announce chat-room-7 --bootstrap 203.0.113.7:49737\n"
    "  kadpunch announce --self --key ~/.kadpunch/key\n"
    "\n"
    "exit codes: 0 stopped by a signal, 1 the network failed, 2 bad options or key\n";

typedef struct {
  kp_cli_session_t *s;
  kp_announce_t *a;
  char key[KP_KEY_TEXT_LEN + 1];
  const char *what;
} announce_state_t;

static void on_announce(kp_announce_t *a, int status, unsigned stored) {
  announce_state_t *st = kp_announce_get_data(a);
  if (status == UV_ECANCELED) return;
  if (status) {
    printf("announce %s: failed (%s); retrying\n", st->what, kp_strerror(status));
    fflush(stdout);
    return;
  }
  kp_addr_t relays[KP_RECORD_MAX_RELAYS];
  size_t n = kp_announce_relays(a, relays, KP_RECORD_MAX_RELAYS);
  printf("announced %s under %s: stored on %u nodes; relays", st->key, st->what, stored);
  for (size_t i = 0; i < n && i < KP_RECORD_MAX_RELAYS; i++) {
    char text[KP_ADDR_STRLEN];
    printf(" %s", kp_addr_format(&relays[i], text, sizeof(text)));
  }
  printf("\n");
  fflush(stdout);
}

static void on_announce_signal(kp_cli_session_t *s) {
  announce_state_t *st = s->data;
  printf("stopping: withdrawing the announcement\n");
  fflush(stdout);
  if (st->a) kp_announce_stop(st->a, true);
  st->a = NULL;
}

int kp_cli_announce(int argc, char **argv) {
  static const struct option longopts[] = {{"key", required_argument, 0, 'k'},
                                           {"data", required_argument, 0, 'd'},
                                           {"self", no_argument, 0, 's'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_AUTO);
  const char *key_path = NULL, *data = NULL;
  bool self = false;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'k': key_path = optarg; break;
      case 'd': data = optarg; break;
      case 's': self = true; break;
      case 'h': fputs(announce_help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(&net, c, optarg, "announce"))) return rc;
    }
  }
  const char *topic = optind < argc ? argv[optind++] : NULL;
  if (optind < argc)
    return kp_cli_usage_error("announce", "unexpected argument '%s'", argv[optind]);
  if (self == (topic != NULL)) return kp_cli_usage_error("announce", "give a TOPIC or --self");
  if (data && strlen(data) > KP_RECORD_MAX_DATA)
    return kp_cli_usage_error("announce", "--data is longer than %d bytes", KP_RECORD_MAX_DATA);

  kp_keypair_t kp;
  if ((rc = kp_cli_identity(key_path, &kp, "announce"))) return rc;
  announce_state_t st = {0};
  kp_key_to_text(kp.public_key, st.key);
  st.what = topic ? topic : "its own key";
  uint8_t target[KP_ID_LEN];
  if (topic)
    kp_target_from_topic(topic, strlen(topic), target);
  else
    kp_target_from_key(kp.public_key, target);

  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "announce"))) {
    kp_keypair_wipe(&kp);
    return rc;
  }
  st.s = &s;
  s.data = &st;
  s.on_signal = on_announce_signal;
  int err =
      kp_node_announce(s.node, target, &kp, data, data ? strlen(data) : 0, on_announce, &st.a);
  kp_keypair_wipe(&kp);
  if (err) {
    fprintf(stderr, "kadpunch announce: %s\n", kp_strerror(err));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  kp_announce_set_data(st.a, &st);
  kp_cli_session_run(&s, NULL, NULL, 0);
  /* Give the withdrawal a moment to reach the nodes before closing. */
  s.signalled = false;
  kp_cli_session_run(&s, NULL, NULL, 1000);
  return kp_cli_session_close(&s);
}

/* ---- lookup ------------------------------------------------------------------ */

static const char lookup_help[] =
    "usage: kadpunch lookup TOPIC [options]\n"
    "       kadpunch lookup --key-of PUBKEY [options]\n"
    "\n"
    "Finds the peers announced under TOPIC (or a peer announced under its own\n"
    "key) and prints each as its verified record arrives: public key, relay\n"
    "nodes, data. Then a summary. A TOPIC that is a public key (52 z-base-32\n"
    "characters) looks up that peer's own announcement, as --key-of does and\n"
    "as `kadpunch-inspect lookup` does; --topic takes it as a topic name.\n"
    "\n"
    "options:\n"
    "  --key-of PUBKEY         look up a peer's own announcement\n"
    "  --topic                 TOPIC is a topic even if it reads as a key\n"
    "  --json                  one JSON object per line: each record\n"
    "                          {\"key\":...,\"relays\":[...],\"data\":...}, then\n"
    "                          {\"found\":N,\"requests\":N,\"ms\":X}\n" KP_CLI_NET_HELP "\n"
    "examples:\n"
    "  kadpunch lookup chat-room-7 --bootstrap 203.0.113.7:49737\n"
    "  kadpunch lookup --key-of 1kbqs8tc39zasouiojo73fmb83iynjt7ppdn835bskst4nf4yrqy --json\n"
    "\n"
    "exit codes: 0 the lookup ran (peers found or not), 1 the network failed,\n"
    "2 bad options\n";

typedef struct {
  bool done, json;
  int status;
  size_t found;
  kp_node_query_stats_t stats;
} lookup_state_t;

/* A JSON string of arbitrary bytes: quotes, backslashes and anything
 * outside printable ASCII escaped. */
static void json_bytes(const uint8_t *p, size_t n) {
  putchar('"');
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '"' || p[i] == '\\')
      printf("\\%c", p[i]);
    else if (p[i] < 0x20 || p[i] > 0x7e)
      printf("\\u%04x", p[i]);
    else
      putchar(p[i]);
  }
  putchar('"');
}

static void record_json(const kp_record_t *rec, const char *key) {
  printf("{\"key\":\"%s\",\"relays\":[", key);
  for (size_t i = 0; i < rec->relay_count; i++) {
    char text[KP_ADDR_STRLEN];
    printf("%s\"%s\"", i ? "," : "", kp_addr_format(&rec->relays[i], text, sizeof(text)));
  }
  printf("],\"data\":");
  json_bytes(rec->data, rec->data_len);
  printf("}\n");
  fflush(stdout);
}

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  lookup_state_t *st = arg;
  (void)node;
  char key[KP_KEY_TEXT_LEN + 1];
  kp_key_to_text(rec->public_key, key);
  if (st->json) {
    record_json(rec, key);
    return;
  }
  printf("%s  relays", key);
  for (size_t i = 0; i < rec->relay_count; i++) {
    char text[KP_ADDR_STRLEN];
    printf(" %s", kp_addr_format(&rec->relays[i], text, sizeof(text)));
  }
  if (rec->data_len) printf("  data %.*s", (int)rec->data_len, (const char *)rec->data);
  printf("\n");
  fflush(stdout);
}

static void on_lookup_done(kp_node_t *node, int status, size_t found,
                           const kp_node_query_stats_t *stats, void *arg) {
  lookup_state_t *st = arg;
  (void)node;
  st->done = true;
  st->status = status;
  st->found = found;
  st->stats = *stats;
}

static bool lookup_done(void *ctx) {
  return ((lookup_state_t *)ctx)->done;
}

int kp_cli_lookup(int argc, char **argv) {
  static const struct option longopts[] = {{"key-of", required_argument, 0, 'K'},
                                           {"topic", no_argument, 0, 't'},
                                           {"json", no_argument, 0, 'j'},
                                           {"help", no_argument, 0, 'h'},
                                           KP_CLI_NET_OPTIONS,
                                           {0, 0, 0, 0}};
  kp_cli_net_t net;
  kp_cli_net_init(&net, KP_NODE_EPHEMERAL);
  const char *key_of = NULL;
  bool json = false, force_topic = false;
  int c, rc;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'K': key_of = optarg; break;
      case 't': force_topic = true; break;
      case 'j': json = true; break;
      case 'h': fputs(lookup_help, stdout); return KP_EXIT_OK;
      default:
        if ((rc = kp_cli_net_option(&net, c, optarg, "lookup"))) return rc;
    }
  }
  const char *topic = optind < argc ? argv[optind++] : NULL;
  if (optind < argc) return kp_cli_usage_error("lookup", "unexpected argument '%s'", argv[optind]);
  if (!topic == !key_of) return kp_cli_usage_error("lookup", "give a TOPIC or --key-of PUBKEY");
  uint8_t pk[KP_PUBLIC_KEY_LEN];
  if (topic && !force_topic && strlen(topic) == KP_KEY_TEXT_LEN && !kp_key_from_text(topic, pk)) {
    key_of = topic; /* the peer's own announcement, as kadpunch-inspect reads it */
    topic = NULL;
  }
  uint8_t target[KP_ID_LEN];
  if ((rc = kp_cli_target(topic, key_of, target, "lookup"))) return rc;

  kp_cli_session_t s;
  if ((rc = kp_cli_session_open(&s, &net, "lookup"))) return rc;
  lookup_state_t st = {.json = json};
  int err = kp_node_lookup(s.node, target, on_record, on_lookup_done, &st);
  if (!err) kp_cli_session_run(&s, lookup_done, &st, 60000);
  if (err || !st.done || st.status) {
    fprintf(stderr, "kadpunch lookup: %s\n",
            kp_strerror(err       ? err
                        : st.done ? st.status
                                  : UV_ETIMEDOUT));
    kp_cli_session_close(&s);
    return KP_EXIT_FAIL;
  }
  if (json)
    printf("{\"found\":%zu,\"requests\":%u,\"ms\":%.1f}\n", st.found, st.stats.requests,
           (double)st.stats.duration_us / 1000);
  else
    printf("%zu peer%s found; %u requests, %.1f ms\n", st.found, st.found == 1 ? "" : "s",
           st.stats.requests, (double)st.stats.duration_us / 1000);
  return kp_cli_session_close(&s);
}
