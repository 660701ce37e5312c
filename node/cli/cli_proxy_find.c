/* SPDX-License-Identifier: MIT */
/* --proxy auto and --proxy KEY: the proxy is looked up on the DHT (the
 * topic proxies announce under, docs/protocol.md "Proxying") from a plain
 * node first. That node shows this host's address to DHT nodes, never to
 * a peer; the connection itself then goes through the proxy found. With
 * auto, up to KP_CLI_PROXIES of them, in the order the lookup found them:
 * the first is used, the others are where the node goes if it stops
 * answering. A proxy carries one's traffic, so none is used unless asked
 * for. */
#include <string.h>

#include "node/cli/cli.h"

#define TOPIC "kadpunch/proxies/v1"
#define FIND_MS 15000

typedef struct find_s {
  bool any, done;
  unsigned found;
  uint8_t key[KP_PUBLIC_KEY_LEN];
  uint8_t keys[KP_CLI_PROXIES][KP_PUBLIC_KEY_LEN];
  char out[KP_CLI_PROXY_TEXT];
} find_t;

bool kp_cli_proxy_by_dht(const char *proxy) {
  return !strcmp(proxy, "auto") || (strlen(proxy) == KP_KEY_TEXT_LEN && !strchr(proxy, ':'));
}

static void on_record(kp_node_t *node, const kp_record_t *rec, void *arg) {
  find_t *f = arg;
  char text[KP_ADDR_STRLEN], key[KP_KEY_TEXT_LEN + 1];
  kp_addr_t addr, local;
  if (f->found == (f->any ? KP_CLI_PROXIES : 1) || !rec->data || !rec->data_len ||
      rec->data_len >= sizeof(text))
    return;
  if (!f->any && memcmp(rec->public_key, f->key, KP_PUBLIC_KEY_LEN)) return;
  for (unsigned i = 0; i < f->found; i++)
    if (!memcmp(f->keys[i], rec->public_key, KP_PUBLIC_KEY_LEN)) return; /* another copy */
  memcpy(text, rec->data, rec->data_len);
  text[rec->data_len] = '\0';
  kp_node_local_addr(node, &local);
  if (kp_addr_parse(&addr, text) || addr.family != local.family) return;
  kp_key_to_text(rec->public_key, key);
  size_t used = strlen(f->out);
  snprintf(f->out + used, sizeof(f->out) - used, "%s%s@%s", used ? "," : "", key, text);
  memcpy(f->keys[f->found++], rec->public_key, KP_PUBLIC_KEY_LEN);
}

static void on_done(kp_node_t *node, int status, size_t found, const kp_node_query_stats_t *stats,
                    void *arg) {
  find_t *f = arg;
  (void)node, (void)status, (void)found, (void)stats;
  f->done = true;
}

static bool finished(void *ctx) {
  find_t *f = ctx;
  return f->done || f->found == (f->any ? KP_CLI_PROXIES : 1);
}

int kp_cli_proxy_find(const kp_cli_net_t *net, const char *cmd, char *out, size_t cap) {
  find_t f = {.any = !strcmp(net->proxy, "auto")};
  if (!f.any && kp_key_from_text(net->proxy, f.key))
    return kp_cli_usage_error(cmd, "--proxy: '%s' is not HOST:PORT, KEY@HOST:PORT, KEY or auto",
                              net->proxy);
  kp_cli_net_t plain = *net;
  plain.proxy = NULL;
  kp_cli_session_t s;
  int rc = kp_cli_session_open(&s, &plain, cmd);
  if (rc) return rc;
  uint8_t target[KP_ID_LEN];
  kp_target_from_topic(TOPIC, sizeof(TOPIC) - 1, target);
  int err = kp_node_lookup(s.node, target, on_record, on_done, &f);
  if (!err) kp_cli_session_run(&s, finished, &f, FIND_MS);
  bool signalled = s.signalled;
  rc = kp_cli_session_close(&s);
  if (signalled) return KP_EXIT_FAIL;
  if (err || !f.found || strlen(f.out) >= cap) {
    fprintf(stderr, "kadpunch %s: %s on the DHT%s%s\n", cmd,
            f.any ? "no proxy announced" : "no proxy with that key announced", err ? ": " : "",
            err ? kp_strerror(err) : "");
    return KP_EXIT_FAIL;
  }
  snprintf(out, cap, "%s", f.out);
  fprintf(stderr, "kadpunch %s: through proxy %s (found on the DHT)\n", cmd, f.out);
  return rc;
}
